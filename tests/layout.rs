//! Layout check, for each built-in profile: every path the profile promises a node (as
//! `kubebundle plan` lists it) is in that node's tarball with its mode, and nothing else is: no
//! extra file, link or device, directories 0755, owner root; CA and service-account keys only on
//! control planes; the kubelet and kube-proxy units on every hardway and binary node.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::*;

/// `tar -tvzf` → path → (type and mode string, owner).
fn listing(tarball: &std::path::Path) -> BTreeMap<String, (String, String)> {
    let mut c = Command::new("tar");
    c.arg("-tvzf").arg(tarball).env("LC_ALL", "C").env("TZ", "UTC");
    let r = run_cmd(c);
    assert!(r.ok(), "tar -tvzf failed: {}", r.describe());
    r.stdout
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[5].to_string(), (f[0].to_string(), f[1].to_string()))
        })
        .collect()
}

fn mode_string(kind: char, mode: u32) -> String {
    let bits = ['r', 'w', 'x'];
    let mut s = String::from(kind);
    for i in (0..9).rev() {
        s.push(if mode & (1 << i) != 0 { bits[(8 - i) % 3] } else { '-' });
    }
    s
}

#[test]
fn tarballs_hold_exactly_what_the_profile_promises() {
    for profile in ["kubeadm", "hardway", "binary"] {
        check_profile(profile);
    }
}

/// Files only control planes may hold (CA and service-account keys), and the units every node
/// of the profile runs.
fn expectations(profile: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match profile {
        "hardway" => (
            &["etc/k8s/kube-controller-manager/certs/ca.key", "etc/k8s/shared/sa.key", "etc/k8s/kube-apiserver/certs/sa.pub"],
            &["etc/systemd/system/kubelet.service", "etc/systemd/system/kube-proxy.service"],
        ),
        "binary" => (
            &["etc/kubernetes/pki/ca.key", "etc/kubernetes/pki/sa.key", "etc/kubernetes/pki/sa.pub"],
            &["etc/systemd/system/kubelet.service", "etc/systemd/system/kube-proxy.service"],
        ),
        _ => (
            &[
                "etc/kubernetes/pki/ca.key",
                "etc/kubernetes/pki/sa.key",
                "etc/kubernetes/pki/etcd/ca.key",
                "etc/kubernetes/pki/front-proxy-ca.key",
            ],
            &[],
        ),
    }
}

fn check_profile(profile: &str) {
    let tmp = temp_dir(&format!("layout-{profile}"));
    let dir = tmp.path();
    let mut text = live_config(
        "layout",
        &[
            ("cp1", "10.1.0.1", "control-plane, etcd"),
            ("cp2", "10.1.0.2", "control-plane"),
            ("e1", "10.1.0.3", "etcd"),
            ("w1", "10.1.0.4", "worker"),
        ],
    );
    text.push_str(&format!("workerJoin: certificate\nprofile: {profile}\n"));
    let config = dir.join("layout.yaml");
    std::fs::write(&config, &text).unwrap();
    let cluster = generate_live(dir, "layout", &text);

    let plan = kubebundle(dir, &["plan", "--config", config.to_str().unwrap(), "-o", "json"], &[]);
    assert!(plan.ok(), "{}", plan.describe());
    let plan: serde_json::Value = serde_json::from_str(&plan.stdout).expect("plan json");
    let nodes = plan["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 4);
    for node in nodes {
        let name = node["name"].as_str().unwrap();
        let mut promised: BTreeMap<String, String> = BTreeMap::new();
        for f in node["files"].as_array().unwrap() {
            let path = f["path"].as_str().unwrap().to_string();
            let mode = u32::from_str_radix(f["mode"].as_str().unwrap(), 8).unwrap();
            // Every parent directory is promised too, 0755.
            let mut p = path.as_str();
            while let Some((parent, _)) = p.rsplit_once('/') {
                promised.insert(format!("{parent}/"), mode_string('d', 0o755));
                p = parent;
            }
            promised.insert(path, mode_string('-', mode));
        }
        let got = listing(&cluster.join(format!("nodes/{name}.tar.gz")));
        let got_modes: BTreeMap<String, String> = got.iter().map(|(p, (m, _))| (p.clone(), m.clone())).collect();
        assert_eq!(promised, got_modes, "{profile}: {name}: the tarball differs from the profile's promise");
        for (p, (_, owner)) in &got {
            assert_eq!(owner, "root/root", "{profile}: {name}: {p} is not owned by root");
            assert!(!p.starts_with('/') && !p.split('/').any(|s| s == ".."), "{profile}: {name}: unsafe path {p}");
        }
        // Least privilege, from the profile's own roles: only control planes hold CA or sa keys.
        let roles: Vec<&str> = node["roles"].as_array().unwrap().iter().filter_map(|r| r.as_str()).collect();
        let (secrets, units) = expectations(profile);
        for s in secrets {
            assert_eq!(got.contains_key(*s), roles.contains(&"control-plane"), "{profile}: {name} ({roles:?}) and {s}");
        }
        // Every node runs the kubelet and kube-proxy from units (hardway, binary); kubeadm
        // nodes hold no unit (kube-proxy is its DaemonSet).
        for u in units {
            assert!(got.contains_key(*u), "{profile}: {name} ({roles:?}) has no {u}");
        }
        if profile == "kubeadm" {
            let any: Vec<&String> = got.keys().filter(|p| p.contains("systemd") || p.contains("kube-proxy")).collect();
            assert!(any.is_empty(), "kubeadm: {name} holds {any:?}");
        }
    }
}
