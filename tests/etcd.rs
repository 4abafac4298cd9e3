//! The bundle on a real 3-member etcd cluster over mutual TLS, on loopback only: the members run
//! from each node's extracted tarball exactly as an installer lays it out.
//!
//! Needs `etcd` and `etcdctl` (Debian's etcd-server and etcd-client, installed by .ci/run). A
//! missing etcd fails the test loudly; set KUBEBUNDLE_SKIP_ETCD=1 to skip it on purpose.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const IPS: [&str; 3] = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
const NODES: [&str; 3] = ["cp1", "cp2", "cp3"];

struct Member {
    name: &'static str,
    ip: &'static str,
    client_port: u16,
    peer_port: u16,
}

impl Member {
    fn client_url(&self) -> String {
        format!("https://{}:{}", self.ip, self.client_port)
    }
    fn peer_url(&self) -> String {
        format!("https://{}:{}", self.ip, self.peer_port)
    }
}

fn members() -> Vec<Member> {
    NODES.iter().zip(IPS).map(|(name, ip)| Member { name, ip, client_port: free_port(ip), peer_port: free_port(ip) }).collect()
}

/// Starts one member from its node root; `peer_root` is where its peer cert comes from
/// (another node's root in the negative control).
fn start_member(dir: &Path, m: &Member, all: &[Member], root: &Path, peer_root: &Path) -> Proc {
    let pki = root.join("etc/kubernetes/pki/etcd");
    let peer_pki = peer_root.join("etc/kubernetes/pki/etcd");
    let initial: Vec<String> = all.iter().map(|o| format!("{}={}", o.name, o.peer_url())).collect();
    let mut c = Command::new("etcd");
    c.arg("--name")
        .arg(m.name)
        .arg("--data-dir")
        .arg(dir.join(format!("data-{}", m.name)))
        .args(["--listen-client-urls", &m.client_url(), "--advertise-client-urls", &m.client_url()])
        .args(["--listen-peer-urls", &m.peer_url(), "--initial-advertise-peer-urls", &m.peer_url()])
        .args(["--initial-cluster", &initial.join(","), "--initial-cluster-state", "new", "--initial-cluster-token", "kubebundle-test"])
        .arg("--cert-file")
        .arg(pki.join("server.crt"))
        .arg("--key-file")
        .arg(pki.join("server.key"))
        .arg("--trusted-ca-file")
        .arg(pki.join("ca.crt"))
        .arg("--client-cert-auth")
        .arg("--peer-cert-file")
        .arg(peer_pki.join("peer.crt"))
        .arg("--peer-key-file")
        .arg(peer_pki.join("peer.key"))
        .arg("--peer-trusted-ca-file")
        .arg(pki.join("ca.crt"))
        .arg("--peer-client-cert-auth");
    Proc::spawn(m.name, c, dir.join(format!("{}.log", m.name)))
}

fn extract_roots(dir: &Path, cluster: &Path) -> Vec<PathBuf> {
    NODES
        .iter()
        .map(|n| {
            let root = dir.join(format!("root-{n}"));
            extract(&cluster.join(format!("nodes/{n}.tar.gz")), &root);
            root
        })
        .collect()
}

fn bundle(dir: &Path, name: &str) -> PathBuf {
    let nodes: Vec<(&str, &str, &str)> = NODES.iter().zip(IPS).map(|(n, ip)| (*n, ip, "control-plane, etcd")).collect();
    generate_live(dir, name, &live_config(name, &nodes))
}

/// A bundle for cp1..cp3, each tarball extracted into its own root, and the three members
/// started; member i takes its peer certificate from root `peer_of[i]`.
struct Running {
    tmp: tempfile::TempDir,
    roots: Vec<PathBuf>,
    members: Vec<Member>,
    procs: Vec<Proc>,
}

fn start_cluster(name: &str, peer_of: [usize; 3]) -> Running {
    let tmp = temp_dir(name);
    let dir = tmp.path();
    let cluster = bundle(dir, name);
    let roots = extract_roots(dir, &cluster);
    let members = members();
    let procs = members.iter().enumerate().map(|(i, m)| start_member(dir, m, &members, &roots[i], &roots[peer_of[i]])).collect();
    Running { tmp, roots, members, procs }
}

fn logs(procs: &[Proc]) -> String {
    procs.iter().map(|p| format!("--- {} ---\n{}", p.name, truncate(&p.log_text(), 3000))).collect::<Vec<_>>().join("\n")
}

#[test]
fn three_member_etcd_cluster_runs_on_the_bundle() {
    if !etcd_available() {
        return;
    }
    let Running { tmp, roots, members: ms, procs } = start_cluster("etcd-a", [0, 1, 2]);
    let dir = tmp.path();

    let pki = roots[0].join("etc/kubernetes/pki");
    let ca = pki.join("etcd/ca.crt");
    let first = ms[0].client_url();
    let all: Vec<String> = ms.iter().map(Member::client_url).collect();
    let all = all.join(",");

    // Health of every member, with the healthcheck-client certificate.
    let hc = (pki.join("etcd/healthcheck-client.crt"), pki.join("etcd/healthcheck-client.key"));
    // A member appears in --cluster once it has published its client URL, so wait for all three.
    let all_healthy = |r: &Run| ms.iter().all(|m| (r.stdout.clone() + &r.stderr).contains(&format!("{} is healthy", m.client_url())));
    let health = wait_for(Duration::from_secs(40), || {
        let r = etcdctl(&first, &ca, &hc.0, &hc.1, &["endpoint", "health", "--cluster"]);
        (r.ok() && all_healthy(&r)).then_some(r)
    });
    assert!(health.is_some(), "the three members never all reported healthy\n{}", logs(&procs));

    // A put and a get with the apiserver's etcd client certificate, across members.
    let api = (pki.join("apiserver-etcd-client.crt"), pki.join("apiserver-etcd-client.key"));
    let put = etcdctl(&first, &ca, &api.0, &api.1, &["put", "/kubebundle/test", "hello from cp1"]);
    assert!(put.ok() && put.stdout.contains("OK"), "put failed: {}", put.describe());
    let get = etcdctl(&ms[2].client_url(), &ca, &api.0, &api.1, &["get", "/kubebundle/test", "--print-value-only"]);
    assert!(get.ok(), "get failed: {}", get.describe());
    assert_eq!(get.stdout.trim(), "hello from cp1");

    // Three started members (an unstarted member has no name and no client URLs).
    let list = etcdctl(&all, &ca, &api.0, &api.1, &["member", "list", "-w", "json"]);
    assert!(list.ok(), "member list failed: {}", list.describe());
    let json: serde_json::Value = serde_json::from_str(&list.stdout).expect("member list json");
    let started: Vec<&str> = json["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter(|m| m["clientURLs"].as_array().is_some_and(|u| !u.is_empty()))
        .filter_map(|m| m["name"].as_str())
        .collect();
    let mut names = started.clone();
    names.sort();
    assert_eq!(names, NODES, "started members: {}", list.stdout);

    // A client certificate from another bundle's etcd CA is refused, for that reason.
    let other = bundle(dir, "etcd-b");
    let other_pki = other.join("nodes/cp1/etc/kubernetes/pki");
    let r = etcdctl(
        &first,
        &ca,
        &other_pki.join("etcd/healthcheck-client.crt"),
        &other_pki.join("etcd/healthcheck-client.key"),
        &["get", "/kubebundle/test"],
    );
    assert!(!r.ok(), "a foreign etcd CA's client certificate was accepted: {}", r.describe());
    assert!(!r.stdout.contains("hello"), "a foreign client read data");
    // A client certificate signed by the cluster CA, not the etcd CA, is refused too.
    let r2 = etcdctl(
        &first,
        &ca,
        &pki.join("apiserver-kubelet-client.crt"),
        &pki.join("apiserver-kubelet-client.key"),
        &["get", "/kubebundle/test"],
    );
    assert!(!r2.ok(), "a cluster-CA client certificate was accepted by etcd: {}", r2.describe());
    assert!(!r2.stdout.contains("hello"), "a cluster-CA client read data");
    // etcd says why: it could not verify those client certificates against the etcd CA.
    let log = procs[0].log_text();
    let rejected =
        log.lines().filter(|l| l.contains("rejected connection") && l.contains("certificate signed by unknown authority")).count();
    assert!(rejected >= 2, "cp1 did not log both rejections for an unknown authority:\n{}", truncate(&log, 4000));
    drop(procs);
}

/// Negative control: a member handed another node's peer certificate. Both peers dial it and
/// refuse its certificate because 127.0.0.3 is not in its SANs. (On loopback its own outgoing
/// connections come from 127.0.0.1, which every kubeadm peer certificate lists, so those pass.)
#[test]
fn member_with_another_nodes_peer_cert_is_refused_by_its_peers() {
    if !etcd_available() {
        return;
    }
    // cp3 gets cp2's peer certificate (SANs 127.0.0.2, 127.0.0.1, ::1 — not 127.0.0.3).
    let Running { tmp: _keep, procs, .. } = start_cluster("etcd-n", [0, 1, 1]);

    let expected = "x509: certificate is valid for 127.0.0.2, 127.0.0.1, ::1, not 127.0.0.3";
    let seen = wait_for(Duration::from_secs(40), || procs[..2].iter().find(|p| p.log_text().contains(expected)).map(|p| p.name.clone()));
    assert!(seen.is_some(), "no peer refused cp3's certificate with {expected:?}\n{}", logs(&procs));
    // Both healthy members refuse to talk to cp3's peer endpoint, for that reason.
    let both = wait_for(Duration::from_secs(20), || procs[..2].iter().all(|p| p.log_text().contains(expected)).then_some(()));
    assert!(both.is_some(), "not every peer refused cp3:\n{}", logs(&procs));
    drop(procs);
}
