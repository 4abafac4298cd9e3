//! Adding and removing nodes by editing the Inventory and re-running `generate`: a new node is
//! signed by the existing CAs, a removed node's files are moved out of the bundle (and the run
//! says so), and nothing else changes: every other file keeps its checksum.

mod common;

use std::path::Path;

use common::*;

fn config(nodes: &[(&str, &str, &str)]) -> String {
    let mut s = String::from(
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nclusterName: grow\nkubernetesVersion: v1.34.1\nencryptionAlgorithm: ECDSA-P256\n---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nbootstrapTokens:\n- token: abcdef.0123456789abcdef\n  ttl: 0s\n---\napiVersion: kubebundle.dev/v1alpha1\nkind: Inventory\nnodes:\n",
    );
    for (n, a, r) in nodes {
        s += &format!("- {{name: {n}, address: {a}, roles: [{r}]}}\n");
    }
    s
}

fn generate(dir: &Path, text: &str, now: &str) -> Run {
    std::fs::write(dir.join("grow.yaml"), text).unwrap();
    let run = kubebundle(dir, &["generate", "--unpacked", "--config", "grow.yaml", "--out", "out", "--now", now], &[]);
    assert!(run.ok(), "{}", run.describe());
    verify_bundle(&dir.join("out/grow"), Some(now)).unwrap_or_else(|e| panic!("{e}"));
    run
}

#[test]
fn adding_and_removing_nodes_changes_nothing_else() {
    let tmp = temp_dir("nodes");
    let dir = tmp.path();
    let base = [("cp1", "10.4.0.1", "control-plane, etcd"), ("w1", "10.4.0.11", "worker"), ("w2", "10.4.0.12", "worker")];
    generate(dir, &config(&base), "2026-03-01T00:00:00Z");
    let cluster = dir.join("out/grow");
    let before = file_bytes(&cluster);

    // A re-run a day later with the same inventory changes no file at all.
    let again = generate(dir, &config(&base), "2026-03-02T00:00:00Z");
    assert!(again.stderr.contains("0 issued"), "{}", again.stderr);
    assert_eq!(file_bytes(&cluster), before, "a plain re-run changed files");

    // Adding w3: only w3's files (and plan.json and the state's leaf records, which list it) are
    // new; nothing else changes.
    let mut grown = base.to_vec();
    grown.push(("w3", "10.4.0.13", "worker"));
    let run = generate(dir, &config(&grown), "2026-03-03T00:00:00Z");
    let after = file_bytes(&cluster);
    for (path, bytes) in &before {
        if path != "plan.json" && path != "state/leaves.json" {
            assert_eq!(after.get(path), Some(bytes), "{path} changed when w3 was added");
        }
    }
    let added: Vec<&String> = after.keys().filter(|p| !before.contains_key(*p)).collect();
    assert!(!added.is_empty() && added.iter().all(|p| p.starts_with("nodes/w3")), "unexpected new files: {added:?}");
    assert!(run.stderr.contains("issued"), "{}", run.stderr);
    // w3's certificates are signed by the existing CA.
    let ca = cluster.join("state/pki/ca.crt");
    let v = openssl(&[
        "verify",
        "-attime",
        "1772582400",
        "-CAfile",
        ca.to_str().unwrap(),
        cluster.join("nodes/w3/var/lib/kubelet/pki/kubelet.crt").to_str().unwrap(),
    ]);
    assert!(v.ok(), "{}", v.describe());

    // Removing w2: its tree and tarball move out of the bundle, the run says so, the rest stays.
    let run = generate(dir, &config(&grown.iter().copied().filter(|n| n.0 != "w2").collect::<Vec<_>>()), "2026-03-04T00:00:00Z");
    assert!(run.stderr.contains("node w2 is no longer in the Inventory"), "{}", run.stderr);
    let moved = dir.join("out/.removed/grow/w2-20260304T000000Z");
    assert_eq!(std::fs::read(moved.join("w2.tar.gz")).ok().as_ref(), after.get("nodes/w2.tar.gz"), "the moved tarball");
    assert_eq!(
        std::fs::read(moved.join("w2/var/lib/kubelet/pki/kubelet.key")).ok().as_ref(),
        after.get("nodes/w2/var/lib/kubelet/pki/kubelet.key"),
        "the moved tree"
    );
    let last = file_bytes(&cluster);
    assert!(!last.keys().any(|p| p.starts_with("nodes/w2")), "w2 is still in the bundle");
    for (path, bytes) in &after {
        if path != "plan.json" && path != "state/leaves.json" && !path.starts_with("nodes/w2") {
            assert_eq!(last.get(path), Some(bytes), "{path} changed when w2 was removed");
        }
    }

    // --force starts over: a new CA, so every node's files change.
    let forced = kubebundle(
        dir,
        &["generate", "--unpacked", "--config", "grow.yaml", "--out", "out", "--now", "2026-03-05T00:00:00Z", "--force"],
        &[],
    );
    assert!(forced.ok(), "{}", forced.describe());
    assert_ne!(file_bytes(&cluster).get("nodes/cp1/etc/kubernetes/pki/ca.crt"), last.get("nodes/cp1/etc/kubernetes/pki/ca.crt"));
}
