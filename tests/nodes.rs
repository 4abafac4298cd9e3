//! Adding and removing nodes by editing the Inventory and re-running `generate`: a new node is
//! signed by the existing CAs, a removed node's files are moved out of the bundle (and the run
//! says so), and nothing else changes: every other file keeps its checksum. The init node (the
//! control plane with super-admin.conf and kubeadm-init.yaml) is kept whatever the Inventory's
//! order; removing it is refused unless initNode or --init-node names the next one.

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

/// A cluster config with `cluster` lines added to the ClusterConfiguration and `inventory`
/// lines to the Inventory.
fn shaped(cluster: &str, inventory: &str, nodes: &[(&str, &str, &str)]) -> String {
    config(nodes)
        .replace("encryptionAlgorithm: ECDSA-P256\n", &format!("encryptionAlgorithm: ECDSA-P256\n{cluster}"))
        .replace("kind: Inventory\n", &format!("kind: Inventory\n{inventory}"))
}

/// `generate` with `extra` arguments, as it ends (no assertion).
fn try_generate(dir: &Path, text: &str, now: &str, out: &str, extra: &[&str]) -> Run {
    std::fs::write(dir.join("grow.yaml"), text).unwrap();
    let mut args = vec!["generate", "--unpacked", "--config", "grow.yaml", "--out", out, "--now", now];
    args.extend_from_slice(extra);
    kubebundle(dir, &args, &[])
}

/// The regular files of a node's tarball.
fn tarball_files(cluster: &Path, node: &str) -> std::collections::BTreeSet<String> {
    let listed = common::checks::list_tarball(&cluster.join(format!("nodes/{node}.tar.gz"))).unwrap_or_else(|e| panic!("{e}"));
    listed.into_iter().filter(|e| e.kind == '-').map(|e| e.name).collect()
}

/// The 1-based line of `kind: Inventory` in a config text.
fn inventory_line(text: &str) -> usize {
    text.lines().position(|l| l == "kind: Inventory").expect("an Inventory") + 1
}

/// The files of `before` that differ in `after` (or are gone), and those `after` adds.
fn changed(before: &std::collections::BTreeMap<String, Vec<u8>>, after: &std::collections::BTreeMap<String, Vec<u8>>) -> Vec<String> {
    let mut out: Vec<String> = before.iter().filter(|(p, b)| after.get(*p) != Some(*b)).map(|(p, _)| p.clone()).collect();
    out.extend(after.keys().filter(|p| !before.contains_key(*p)).cloned());
    out.sort();
    out
}

#[test]
fn the_init_node_stays_whatever_the_order_and_moves_only_when_named() {
    let tmp = temp_dir("init-node");
    let dir = tmp.path();
    let endpoint = "controlPlaneEndpoint: lb.grow.internal:6443\n";
    let cp = "control-plane, etcd";
    let (cp1, cp2, cp3, w1) = (("cp1", "10.4.0.1", cp), ("cp2", "10.4.0.2", cp), ("cp3", "10.4.0.3", cp), ("w1", "10.4.0.11", "worker"));
    generate(dir, &shaped(endpoint, "", &[cp1, cp2, cp3, w1]), "2026-03-01T00:00:00Z");
    let cluster = dir.join("out/grow");
    let first = file_bytes(&cluster);
    let record = String::from_utf8(first["state/cluster.yaml"].clone()).unwrap();
    assert!(record.contains("\ninitNode: cp1\n"), "{record}");
    let init_files = ["etc/kubernetes/kubeadm-init.yaml", "etc/kubernetes/super-admin.conf"];
    let files = tarball_files(&cluster, "cp1");
    assert!(init_files.iter().all(|f| files.contains(*f)) && !files.contains("etc/kubernetes/kubeadm-join.yaml"), "{files:?}");

    // cp1 last in the Inventory: it stays the init node, and no file but plan.json (the node
    // order) changes.
    generate(dir, &shaped(endpoint, "", &[cp3, w1, cp2, cp1]), "2026-03-02T00:00:00Z");
    let reordered = file_bytes(&cluster);
    assert_eq!(changed(&first, &reordered), ["plan.json"], "reordering the Inventory changed files");
    let plan: serde_json::Value = serde_json::from_slice(&reordered["plan.json"]).unwrap();
    assert_eq!(plan["initNode"], "cp1");

    // cp1 removed: refused, naming it, the Inventory's line and the fix; nothing is written.
    let without = shaped(endpoint, "", &[cp3, w1, cp2]);
    let out_before = walk(&dir.join("out"));
    for extra in [&[][..], &["--check"][..]] {
        let r = try_generate(dir, &without, "2026-03-03T00:00:00Z", "out", extra);
        assert_eq!(r.code, Some(2), "{extra:?}: {}", r.describe());
        let at = format!("kubebundle: grow.yaml:{}:", inventory_line(&without));
        for want in [
            at.as_str(),
            "error: Inventory.nodes: cp1 is this cluster's init node (recorded in out/grow/state/cluster.yaml: it holds super-admin.conf and, with the kubeadm profile, runs `kubeadm init`) and is no longer in the Inventory; nothing was written",
            "hint: name the control plane that takes its place, `initNode: cp3` in the Inventory or `generate --init-node cp3`",
            "or put cp1 back",
        ] {
            assert!(r.stderr.contains(want), "{extra:?}: no {want:?} in:\n{}", r.stderr);
        }
        assert_eq!(walk(&dir.join("out")), out_before, "{extra:?}: a refused run wrote something");
    }
    // A name that is not a control plane is a usage error.
    let r = try_generate(dir, &without, "2026-03-03T00:00:00Z", "out", &["--init-node", "w1"]);
    assert_eq!(r.code, Some(2), "{}", r.describe());
    assert!(
        r.stderr.contains("--init-node \"w1\": is not a control-plane node of the Inventory") && r.stderr.contains("cp3, cp2"),
        "{}",
        r.stderr
    );
    let r = try_generate(dir, &shaped(endpoint, "initNode: cp9\n", &[cp3, w1, cp2]), "2026-03-03T00:00:00Z", "out", &[]);
    let line = inventory_line(&shaped(endpoint, "initNode: cp9\n", &[cp3, w1, cp2])) + 1;
    assert_eq!(r.code, Some(2), "{}", r.describe());
    assert!(
        r.stderr.contains(&format!("grow.yaml:{line}:11: error: Inventory.initNode: \"cp9\" is not a node of the Inventory")),
        "{}",
        r.stderr
    );
    assert_eq!(walk(&dir.join("out")), out_before, "a refused run wrote something");

    // Named by the Inventory (on a copy) or by --init-node: cp2 takes the init node's files, the
    // run says exactly which, and no other node changes (the endpoint is a load balancer).
    copy_dir(&dir.join("out"), &dir.join("out2"));
    let r = try_generate(dir, &without, "2026-03-03T00:00:00Z", "out", &["--init-node", "cp2"]);
    assert!(r.ok(), "{}", r.describe());
    let r2 = try_generate(dir, &shaped(endpoint, "initNode: cp2\n", &[cp3, w1, cp2]), "2026-03-03T00:00:00Z", "out2", &[]);
    assert!(r2.ok(), "{}", r2.describe());
    for (run, out, by) in [(&r, "out", "--init-node"), (&r2, "out2", "Inventory.initNode")] {
        let cluster = dir.join(out).join("grow");
        verify_bundle(&cluster, Some("2026-03-03T00:00:00Z")).unwrap_or_else(|e| panic!("{e}"));
        for want in [
            format!("init node: cp2 replaces cp1 as the init node (named by {by}). In the bundle:"),
            "  cp2 gains /etc/kubernetes/kubeadm-init.yaml, /etc/kubernetes/super-admin.conf; loses /etc/kubernetes/kubeadm-join.yaml\n"
                .into(),
            "  cp1 is no longer in the Inventory: its files (its super-admin.conf with them) leave the bundle\n".into(),
        ] {
            assert!(run.stderr.contains(&want), "{by}: no {want:?} in:\n{}", run.stderr);
        }
        assert!(!run.stderr.contains("API server endpoint"), "{by}: the endpoint is set, it does not move: {}", run.stderr);
        let moved = file_bytes(&cluster);
        let files = tarball_files(&cluster, "cp2");
        assert!(init_files.iter().all(|f| files.contains(*f)) && !files.contains("etc/kubernetes/kubeadm-join.yaml"), "{by}: {files:?}");
        assert!(!tarball_files(&cluster, "cp3").contains("etc/kubernetes/super-admin.conf"), "{by}");
        let expected = ["plan.json", "state/cluster.yaml", "state/leaves.json"];
        let unexpected: Vec<String> = changed(&first, &moved)
            .into_iter()
            .filter(|p| !p.starts_with("nodes/cp1") && !p.starts_with("nodes/cp2") && !expected.contains(&p.as_str()))
            .collect();
        assert!(unexpected.is_empty(), "{by}: moving the init node changed {unexpected:?}");
        let record = String::from_utf8(moved["state/cluster.yaml"].clone()).unwrap();
        assert!(record.contains("\ninitNode: cp2\n"), "{by}: {record}");
    }
    // The new init node is kept without the flag, also when state/cluster.yaml was lost and
    // `state restore` rebuilt it from plan.json.
    let before = file_bytes(&cluster);
    generate(dir, &without, "2026-03-04T00:00:00Z");
    assert_eq!(changed(&before, &file_bytes(&cluster)), Vec::<String>::new(), "a re-run after the move changed files");
    std::fs::remove_file(cluster.join("state/cluster.yaml")).unwrap();
    let r = kubebundle(dir, &["state", "restore", "--dir", "out/grow"], &[]);
    assert!(r.ok() && r.stdout.contains("init node cp2, etcd members cp2, cp3 from plan.json"), "{}", r.describe());
    assert_eq!(file_bytes(&cluster).get("state/cluster.yaml"), before.get("state/cluster.yaml"), "the rebuilt record");
    generate(dir, &without, "2026-03-05T00:00:00Z");
    assert_eq!(changed(&before, &file_bytes(&cluster)), Vec::<String>::new(), "a re-run after the restore changed files");
}

#[test]
fn hardway_keeps_its_init_node_and_its_endpoint_follows_it() {
    let tmp = temp_dir("init-node-hw");
    let dir = tmp.path();
    let cp = "control-plane, etcd";
    let (cp1, cp2, cp3, w1) = (("cp1", "10.4.0.1", cp), ("cp2", "10.4.0.2", cp), ("cp3", "10.4.0.3", cp), ("w1", "10.4.0.11", "worker"));
    let hardway = "profile: hardway\n";
    generate(dir, &shaped("", hardway, &[cp1, cp2, cp3, w1]), "2026-03-01T00:00:00Z");
    let cluster = dir.join("out/grow");
    let first = file_bytes(&cluster);
    let super_admin = "etc/k8s/shared/super-admin.conf";
    assert!(tarball_files(&cluster, "cp1").contains(super_admin));

    // A bundle made before the record held the init node and the etcd members: the next run takes
    // them from plan.json, says so, and writes every file as it was.
    std::fs::write(cluster.join("state/cluster.yaml"), "clusterName: grow\n").unwrap();
    let mut plan: serde_json::Value = serde_json::from_slice(&first["plan.json"]).unwrap();
    plan.as_object_mut().unwrap().retain(|k, _| k != "initNode" && k != "etcdMembers");
    std::fs::write(cluster.join("plan.json"), serde_json::to_vec_pretty(&plan).unwrap()).unwrap();
    let r = generate(dir, &shaped("", hardway, &[cp1, cp2, cp3, w1]), "2026-03-01T12:00:00Z");
    let adopted =
        "state: recorded in state/cluster.yaml from plan.json (the state had no record of them): init node cp1; etcd members cp1, cp2, cp3";
    assert!(r.stderr.contains(adopted), "{}", r.stderr);
    assert_eq!(changed(&first, &file_bytes(&cluster)), Vec::<String>::new(), "taking the record from plan.json changed files");

    // Reordered: without controlPlaneEndpoint the endpoint is the init node's address, which
    // stays cp1's, so nothing but plan.json's node order changes.
    generate(dir, &shaped("", hardway, &[w1, cp3, cp2, cp1]), "2026-03-02T00:00:00Z");
    let reordered = file_bytes(&cluster);
    assert_eq!(changed(&first, &reordered), ["plan.json"], "reordering the Inventory changed files");
    let plan: serde_json::Value = serde_json::from_slice(&reordered["plan.json"]).unwrap();
    assert_eq!((plan["initNode"].as_str(), plan["controlPlaneEndpoint"].as_str()), (Some("cp1"), Some("10.4.0.1:6443")));

    // cp1 removed: refused.
    let without = shaped("", hardway, &[w1, cp3, cp2]);
    let out_before = walk(&dir.join("out"));
    let r = try_generate(dir, &without, "2026-03-03T00:00:00Z", "out", &[]);
    assert_eq!(r.code, Some(2), "{}", r.describe());
    assert!(
        r.stderr.contains(&format!("grow.yaml:{}:", inventory_line(&without)))
            && r.stderr.contains("cp1 is this cluster's init node")
            && r.stderr.contains("`initNode: cp3` in the Inventory or `generate --init-node cp3`"),
        "{}",
        r.stderr
    );
    assert_eq!(walk(&dir.join("out")), out_before, "a refused run wrote something");

    // initNode: cp2. super-admin.conf moves to cp2, the endpoint with it; cp1's etcd member
    // must be removed from the running cluster, from cp2.
    let named = shaped("", &format!("{hardway}initNode: cp2\n"), &[w1, cp3, cp2]);
    let r = try_generate(dir, &named, "2026-03-03T00:00:00Z", "out", &[]);
    assert!(r.ok(), "{}", r.describe());
    verify_bundle(&cluster, Some("2026-03-03T00:00:00Z")).unwrap_or_else(|e| panic!("{e}"));
    for want in [
        "init node: cp2 replaces cp1 as the init node (named by Inventory.initNode). In the bundle:\n  cp2 gains /etc/k8s/shared/super-admin.conf\n",
        "  controlPlaneEndpoint is not set, so the API server endpoint is the init node's address: it changes from 10.4.0.1:6443 to 10.4.0.2:6443",
        "etcd: cp1 left the Inventory but is still a member of the running etcd cluster. Remove it, on cp2:\n",
        "  etcdctl --endpoints=https://10.4.0.2:2379 --cacert=/etc/k8s/shared/etcd-ca.crt --cert=/etc/k8s/etcd/certs/healthcheck-client.crt --key=/etc/k8s/etcd/certs/healthcheck-client.key member list\n",
        "member remove <ID>   # <ID>: the first column of the line of cp1 (https://10.4.0.1:2380)\n",
    ] {
        assert!(r.stderr.contains(want), "no {want:?} in:\n{}", r.stderr);
    }
    assert!(tarball_files(&cluster, "cp2").contains(super_admin));
    assert!(!tarball_files(&cluster, "cp3").contains(super_admin));
    let kubeconfig = String::from_utf8(file_bytes(&cluster)["nodes/w1/etc/k8s/kube-proxy/kubeconfig"].clone()).unwrap();
    let server = kubeconfig.lines().find(|l| l.trim_start().starts_with("server:")).unwrap_or_default();
    assert_eq!(server.trim(), "server: https://10.4.0.2:6443", "w1's kube-proxy kubeconfig");
    // cp2 and cp3 keep their etcd units (the cluster they formed is the same).
    let after = file_bytes(&cluster);
    for node in ["cp2", "cp3"] {
        let unit = format!("nodes/{node}/etc/systemd/system/etcd.service");
        assert_eq!(after.get(&unit), first.get(&unit), "{unit} changed");
    }
}
