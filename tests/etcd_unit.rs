//! The hardway profile's etcd unit, run as rendered: a one-node cluster on a loopback address,
//! the node's tarball extracted into a temp root, and etcd started with the unit's ExecStart
//! argv where only absolute paths are moved under that root (the binary too: a symlink to the
//! installed etcd). Clients then use the certificates of the same tree.
//!
//! Needs `etcd` and `etcdctl` (Debian's etcd-server and etcd-client). A missing etcd fails the
//! test loudly; set KUBEBUNDLE_SKIP_ETCD=1 to skip it on purpose. The unit's ports are fixed
//! (2379, 2380, 2381 on 127.0.1.7 and 127.0.0.1): a busy one fails the test with a message.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const CLUSTER: &str = "etcdunit";
const NODE: &str = "solo1";
const ADDRESS: &str = "127.0.1.7";

/// The installed etcd binary, found on PATH.
fn real_etcd() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join("etcd")).find(|p| p.is_file()).and_then(|p| p.canonicalize().ok()).expect("etcd on PATH")
}

/// The value of `--flag=value` in an argv.
fn flag<'a>(argv: &'a [String], name: &str) -> &'a str {
    let prefix = format!("--{name}=");
    argv.iter().find_map(|a| a.strip_prefix(prefix.as_str())).unwrap_or_else(|| panic!("no --{name} in {argv:?}"))
}

/// argv with every absolute path (argv[0], and each flag value starting with `/`) moved under
/// `root`; every other argument as it is.
fn rebase(argv: &[String], root: &Path) -> Vec<String> {
    let under = |p: &str| format!("{}{p}", root.display());
    let mut out = vec![under(&argv[0])];
    for a in &argv[1..] {
        out.push(match a.split_once('=') {
            Some((k, v)) if k.starts_with("--") && v.starts_with('/') => format!("{k}={}", under(v)),
            _ if a.starts_with('/') => under(a),
            _ => a.clone(),
        });
    }
    out
}

/// host:port of each URL of a comma-separated list (`https://[::1]:2379` → `[::1]:2379`).
fn url_addrs(list: &str) -> Vec<SocketAddr> {
    list.split(',')
        .map(|u| {
            let hp = u.split_once("://").map(|(_, r)| r).unwrap_or(u).split('/').next().unwrap();
            hp.parse().unwrap_or_else(|e| panic!("{u}: not an IP:port URL: {e}"))
        })
        .collect()
}

/// `GET path` over plain HTTP: (status line, body).
fn http_get(addr: SocketAddr, path: &str) -> Option<(String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

/// The node's path of an artifact, from plan.json.
fn planned(cluster: &Path, artifact: &str) -> String {
    let plan: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(cluster.join("plan.json")).unwrap()).unwrap();
    let node = plan["nodes"].as_array().unwrap().iter().find(|n| n["name"] == NODE).expect("the node in plan.json");
    node["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["artifact"] == artifact)
        .and_then(|f| f["path"].as_str())
        .unwrap_or_else(|| panic!("plan.json has no {artifact}"))
        .to_string()
}

#[test]
fn hardway_etcd_unit_runs_as_rendered() {
    if !etcd_available() {
        return;
    }
    let version = run_cmd({
        let mut c = Command::new("etcd");
        c.arg("--version");
        c
    });
    eprintln!("NOTE: {}", version.stdout.lines().next().unwrap_or("etcd --version printed nothing"));

    let tmp = temp_dir("etcd-unit");
    let dir = tmp.path();
    let config =
        live_config(CLUSTER, &[(NODE, ADDRESS, "control-plane, etcd")]).replace("kind: Inventory\n", "kind: Inventory\nprofile: hardway\n");
    let cluster = generate_live(dir, CLUSTER, &config);

    // The unit as rendered, and the node's tree as an installer lays it out.
    let unit_rel = "etc/systemd/system/etcd.service";
    let unit = std::fs::read_to_string(cluster.join("nodes").join(NODE).join(unit_rel)).expect("the hardway etcd unit");
    let root = dir.join("root");
    extract(&cluster.join("nodes").join(format!("{NODE}.tar.gz")), &root);
    assert_eq!(
        std::fs::read_to_string(root.join(unit_rel)).ok().as_deref(),
        Some(unit.as_str()),
        "the tarball's unit differs from the tree's"
    );
    let argv = exec_start(&unit);
    assert_eq!(argv[0], "/usr/local/bin/etcd", "the unit's binary");
    std::fs::create_dir_all(root.join("usr/local/bin")).unwrap();
    std::os::unix::fs::symlink(real_etcd(), root.join("usr/local/bin/etcd")).expect("symlink etcd");
    let run_argv = rebase(&argv, &root);
    assert_eq!(flag(&run_argv, "data-dir"), format!("{}/var/lib/etcd", root.display()));
    assert!(run_argv.iter().all(|a| !a.contains("=/etc/")), "a path left outside the root: {run_argv:?}");

    // The unit's listeners are fixed ports: they must be free.
    let client = url_addrs(flag(&argv, "listen-client-urls"));
    let peer = url_addrs(flag(&argv, "listen-peer-urls"));
    let metrics = url_addrs(flag(&argv, "listen-metrics-urls"));
    let mut wanted: Vec<SocketAddr> = client.iter().chain(&peer).chain(&metrics).copied().collect();
    wanted.sort();
    let expected: Vec<SocketAddr> =
        ["127.0.0.1:2379", "127.0.0.1:2381", "127.0.1.7:2379", "127.0.1.7:2380"].iter().map(|a| a.parse().unwrap()).collect();
    assert_eq!(wanted, expected, "the unit's listeners");
    for a in &wanted {
        if let Err(e) = TcpListener::bind(a) {
            panic!("{a} is busy ({e}): the rendered etcd unit listens there; stop whatever holds it (another etcd?) and rerun");
        }
    }

    // Start it as rendered (no systemd: NOTIFY_SOCKET unset, no ETCD_* variables).
    let mut cmd = Command::new(&run_argv[0]);
    cmd.args(&run_argv[1..]).current_dir(dir).env_remove("NOTIFY_SOCKET");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ETCD_") {
            cmd.env_remove(k);
        }
    }
    let mut etcd = Proc::spawn("etcd", cmd, dir.join("etcd.log"));

    let pki = |artifact: &str| root.join(planned(&cluster, artifact));
    let ca = root.join(flag(&argv, "trusted-ca-file").trim_start_matches('/'));
    assert_eq!(ca, pki("etcd-ca.crt"), "--trusted-ca-file is the etcd CA of the tree");
    let hc = (pki("etcd-healthcheck-client.crt"), pki("etcd-healthcheck-client.key"));
    let endpoint = format!("https://{ADDRESS}:2379");
    assert_eq!(flag(&argv, "advertise-client-urls"), endpoint);

    let health = wait_for(Duration::from_secs(10), || {
        if let Ok(Some(status)) = etcd.child.try_wait() {
            panic!(
                "etcd exited with {status} before it was healthy (an unknown or bad rendered flag?):\n{}",
                truncate(&etcd.log_text(), 4000)
            );
        }
        let r = etcdctl(&endpoint, &ca, &hc.0, &hc.1, &["endpoint", "health"]);
        (r.ok() && (r.stdout.clone() + &r.stderr).contains(&format!("{endpoint} is healthy"))).then_some(r)
    });
    assert!(health.is_some(), "etcd from the rendered unit never became healthy:\n{}", truncate(&etcd.log_text(), 4000));
    assert!(root.join("var/lib/etcd/member").is_dir(), "etcd did not use the rebased --data-dir");

    // A put and a get with the healthcheck client.
    let put = etcdctl(&endpoint, &ca, &hc.0, &hc.1, &["put", "/kubebundle/etcd-unit", "rendered"]);
    assert!(put.ok() && put.stdout.contains("OK"), "put failed: {}", put.describe());
    let get = etcdctl(&endpoint, &ca, &hc.0, &hc.1, &["get", "/kubebundle/etcd-unit", "--print-value-only"]);
    assert!(get.ok(), "get failed: {}", get.describe());
    assert_eq!(get.stdout.trim(), "rendered");

    // kube-apiserver's unit of the same node reaches it with its own etcd flags (on 127.0.0.1).
    let api = exec_start(&std::fs::read_to_string(root.join("etc/systemd/system/kube-apiserver.service")).expect("kube-apiserver unit"));
    let at = |name: &str| root.join(flag(&api, name).trim_start_matches('/'));
    let servers = flag(&api, "etcd-servers");
    let r = etcdctl(
        servers,
        &at("etcd-cafile"),
        &at("etcd-certfile"),
        &at("etcd-keyfile"),
        &["get", "/kubebundle/etcd-unit", "--print-value-only"],
    );
    assert!(r.ok() && r.stdout.trim() == "rendered", "kube-apiserver's --etcd-servers {servers} with its etcd client: {}", r.describe());

    // The metrics listener answers /health over plain HTTP.
    let (status, body) = http_get(metrics[0], "/health").unwrap_or_else(|| panic!("no answer on {}", metrics[0]));
    assert!(status.contains(" 200"), "GET /health on {}: {status}\n{body}", metrics[0]);
    assert!(body.contains("\"health\":\"true\""), "GET /health on {}: {body}", metrics[0]);

    // A client certificate of the cluster CA (not the etcd CA) is refused.
    let kubelet_client = (pki("apiserver-kubelet-client.crt"), pki("apiserver-kubelet-client.key"));
    let r = etcdctl(&endpoint, &ca, &kubelet_client.0, &kubelet_client.1, &["get", "/kubebundle/etcd-unit", "--print-value-only"]);
    assert!(!r.ok(), "a cluster-CA client certificate was accepted by etcd: {}", r.describe());
    assert!(!r.stdout.contains("rendered"), "a cluster-CA client read data: {}", r.describe());
    let logged = wait_for(Duration::from_secs(5), || {
        let log = etcd.log_text();
        log.lines().any(|l| l.contains("rejected connection") && l.contains("certificate signed by unknown authority")).then_some(())
    });
    assert!(logged.is_some(), "etcd did not log the rejection of the cluster-CA client:\n{}", truncate(&etcd.log_text(), 4000));

    drop(etcd);
}
