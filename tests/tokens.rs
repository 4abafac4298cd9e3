//! `kubebundle token create|list|delete` keep the state, the Secret manifests, join.txt and the
//! workers' bootstrap-kubelet.conf and kubeadm-join.yaml (and tarballs) in step, and never show a secret in `list`.

mod common;

use std::path::Path;

use common::*;

const NOW: &str = "2026-03-01T00:00:00Z";

fn token_cmd(dir: &Path, args: &[&str]) -> Run {
    let mut a = vec!["token"];
    a.extend_from_slice(args);
    a.extend(["--dir", "out/tok", "--now", NOW]);
    kubebundle(dir, &a, &[])
}

fn tokens_in(text: &str) -> Vec<String> {
    find_tokens(text)
}

#[test]
fn tokens_are_created_listed_and_deleted_in_step_with_the_bundle() {
    let tmp = temp_dir("tokens");
    let dir = tmp.path();
    let text = live_config("tok", &[("cp1", "10.5.0.1", "control-plane, etcd"), ("w1", "10.5.0.11", "worker")]);
    std::fs::write(dir.join("tok.yaml"), &text).unwrap();
    let gen = kubebundle(dir, &["generate", "--unpacked", "--config", "tok.yaml", "--out", "out", "--now", NOW], &[]);
    assert!(gen.ok(), "{}", gen.describe());
    let cluster = dir.join("out/tok");
    let first = tokens_in(&std::fs::read_to_string(cluster.join("join.txt")).unwrap())[0].clone();
    let first_id = first.split('.').next().unwrap().to_string();
    let before = file_bytes(&cluster);

    // list: ids, never secrets.
    let list = token_cmd(dir, &["list"]);
    assert!(list.ok(), "{}", list.describe());
    assert!(list.stdout.starts_with("ID ") && list.stdout.contains(&first_id), "{}", list.stdout);
    assert!(!list.stdout.contains(first.split('.').nth(1).unwrap()), "list shows a secret");

    // create: a new token with its Secret; the join token and the workers' files do not change.
    let created = token_cmd(dir, &["create", "--ttl", "2h", "--description", "for w2", "--print-join-command"]);
    assert!(created.ok(), "{}", created.describe());
    let new = tokens_in(&created.stdout).into_iter().find(|t| *t != first).expect("the join command holds the new token");
    let new_id = new.split('.').next().unwrap().to_string();
    let after = file_bytes(&cluster);
    let secret = cluster.join(format!("manifests/bootstrap-token-{new_id}.yaml"));
    let manifest = std::fs::read_to_string(&secret).expect("the new Secret manifest");
    assert!(manifest.contains("type: bootstrap.kubernetes.io/token"));
    assert_eq!(mode_of(&secret), Some(0o600));
    assert!(std::fs::read_to_string(cluster.join("state/tokens.yaml")).unwrap().contains(&new));
    // cluster-info gains the new token's JWS; nothing else but the state's token list changes.
    let cluster_info = std::fs::read_to_string(cluster.join("manifests/cluster-info.yaml")).unwrap();
    assert!(cluster_info.contains(&format!("jws-kubeconfig-{new_id}")), "{cluster_info}");
    for (path, bytes) in &before {
        if path != "state/tokens.yaml" && path != "manifests/cluster-info.yaml" {
            assert_eq!(after.get(path), Some(bytes), "{path} changed when a token was created");
        }
    }
    let list = token_cmd(dir, &["list"]);
    assert!(list.stdout.contains(&new_id) && list.stdout.contains("2h") && list.stdout.contains("for w2"), "{}", list.stdout);
    assert!(!list.stdout.contains(new.split('.').nth(1).unwrap()), "list shows a secret");

    // A later generate keeps the created token.
    let again = kubebundle(dir, &["generate", "--unpacked", "--config", "tok.yaml", "--out", "out", "--now", NOW], &[]);
    assert!(again.ok(), "{}", again.describe());
    assert!(std::fs::read_to_string(cluster.join("state/tokens.yaml")).unwrap().contains(&new));

    // delete the join token: the new one takes its place in join.txt and bootstrap-kubelet.conf.
    let deleted = token_cmd(dir, &["delete", &first_id]);
    assert!(deleted.ok(), "{}", deleted.describe());
    assert!(!cluster.join(format!("manifests/bootstrap-token-{first_id}.yaml")).exists());
    let cluster_info = std::fs::read_to_string(cluster.join("manifests/cluster-info.yaml")).unwrap();
    assert!(!cluster_info.contains(&format!("jws-kubeconfig-{first_id}")), "a deleted token still signs cluster-info");
    let join = std::fs::read_to_string(cluster.join("join.txt")).unwrap();
    assert!(join.contains(&new) && !join.contains(&first), "{join}");
    let boot = std::fs::read_to_string(cluster.join("nodes/w1/etc/kubernetes/bootstrap-kubelet.conf")).unwrap();
    assert!(boot.contains(&new) && !boot.contains(&first), "{boot}");
    // kubeadm-join.yaml holds the join token twice (discovery and TLS bootstrap); the tarball
    // follows the tree (verify_bundle compares them).
    let kubeadm_join = std::fs::read_to_string(cluster.join("nodes/w1/etc/kubernetes/kubeadm-join.yaml")).unwrap();
    assert_eq!(kubeadm_join.matches(&new).count(), 2, "{kubeadm_join}");
    assert!(!kubeadm_join.contains(&first), "{kubeadm_join}");
    assert_eq!(mode_of(&cluster.join("nodes/w1/etc/kubernetes/kubeadm-join.yaml")), Some(0o600));
    verify_bundle(&cluster, Some(NOW)).unwrap_or_else(|e| panic!("{e}"));

    // The last token workers can join with cannot be deleted (a refusal, exit 1); an unknown id
    // or a bad group is a wrong argument (exit 2).
    let refused = token_cmd(dir, &["delete", &new_id]);
    assert_eq!(refused.code, Some(1), "{}", refused.describe());
    assert!(refused.stderr.contains("only one workers can join with"), "{}", refused.stderr);
    let unknown = token_cmd(dir, &["delete", "zzzzzz"]);
    assert_eq!(unknown.code, Some(2), "{}", unknown.describe());
    assert!(unknown.stderr.contains("no token with id"), "{}", unknown.stderr);
    let bad = token_cmd(dir, &["create", "--groups", "admins"]);
    assert_eq!(bad.code, Some(2), "{}", bad.describe());
    assert!(bad.stderr.contains("invalid group"), "{}", bad.stderr);
}
