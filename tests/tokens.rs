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

fn sha256(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Every regular file of a node tarball, read in memory: path → (sha256, mode, text).
fn tarball_files(path: &Path) -> std::collections::BTreeMap<String, (String, u32, String)> {
    use std::io::Read;
    let bytes = std::fs::read(path).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
    let mut out = std::collections::BTreeMap::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type().is_file() {
            let p = e.path().unwrap().display().to_string();
            let mode = e.header().mode().unwrap();
            let mut b = Vec::new();
            e.read_to_end(&mut b).unwrap();
            out.insert(p, (sha256(&b), mode, String::from_utf8_lossy(&b).into_owned()));
        }
    }
    out
}

/// Every file of the bundle: relative path → sha256.
fn digests(dir: &Path) -> std::collections::BTreeMap<String, String> {
    file_bytes(dir).into_iter().map(|(p, b)| (p, sha256(&b))).collect()
}

const JOIN_FILES: [&str; 2] = ["etc/kubernetes/bootstrap-kubelet.conf", "etc/kubernetes/kubeadm-join.yaml"];

#[test]
fn token_create_after_the_join_token_expired_makes_the_new_one_the_join_token_everywhere() {
    let tmp = temp_dir("tokens-expired");
    let dir = tmp.path();
    let nodes = [
        ("cp1", "10.5.1.1", "control-plane, etcd"),
        ("cp2", "10.5.1.2", "control-plane"),
        ("w1", "10.5.1.11", "worker"),
        ("w2", "10.5.1.12", "worker"),
    ];
    std::fs::write(dir.join("tok.yaml"), live_config("tok", &nodes)).unwrap();
    let gen = kubebundle(dir, &["generate", "--unpacked", "--config", "tok.yaml", "--out", "out", "--now", NOW], &[]);
    assert!(gen.ok(), "{}", gen.describe());
    let cluster = dir.join("out/tok");
    let old = tokens_in(&std::fs::read_to_string(cluster.join("join.txt")).unwrap())[0].clone();
    let before = digests(&cluster);
    let tarballs_before: Vec<_> = nodes.iter().map(|(n, ..)| tarball_files(&cluster.join(format!("nodes/{n}.tar.gz")))).collect();

    // The generated join token lives 24h; 25h later it has expired.
    let later = "2026-03-02T01:00:00Z";
    let create = |args: &[&str], now: &str| {
        let mut a = vec!["token", "create", "--dir", "out/tok", "--now", now];
        a.extend_from_slice(args);
        kubebundle(dir, &a, &[])
    };
    let created = create(&["--print-join-command", "--description", "after expiry"], later);
    assert!(created.ok(), "{}", created.describe());
    let new = tokens_in(&created.stdout).into_iter().find(|t| *t != old).expect("the join command holds the new token");
    let new_id = new.split('.').next().unwrap();
    let old_id = old.split('.').next().unwrap();
    // The expired token is dropped with its Secret, as the cluster's tokencleaner drops it.
    assert!(
        created.stderr.contains(&format!("dropped bootstrap token {old_id} and its Secret manifest: it expired at")),
        "{}",
        created.stderr
    );
    let old_secret = format!("manifests/bootstrap-token-{old_id}.yaml");
    assert!(!cluster.join(&old_secret).exists(), "the expired token's Secret is still there");
    assert!(!std::fs::read_to_string(cluster.join("state/tokens.yaml")).unwrap().contains(old_id), "tokens.yaml keeps the expired token");

    let join = std::fs::read_to_string(cluster.join("join.txt")).unwrap();
    assert!(join.contains(&new) && !join.contains(&old), "join.txt still holds the expired token:\n{join}");
    let mut holders = 0;
    for ((name, ..), was) in nodes.iter().zip(&tarballs_before) {
        let now = tarball_files(&cluster.join(format!("nodes/{name}.tar.gz")));
        assert_eq!(now.keys().collect::<Vec<_>>(), was.keys().collect::<Vec<_>>(), "{name}: other files in the tarball");
        for (path, (digest, mode, text)) in &now {
            if JOIN_FILES.contains(&path.as_str()) {
                holders += 1;
                assert!(text.contains(&new) && !text.contains(&old), "{name}:{path} does not hold the new join token:\n{text}");
                assert_eq!(*mode, 0o600, "{name}:{path}");
                // The tree holds what the tarball holds.
                assert_eq!(&sha256(&std::fs::read(cluster.join("nodes").join(name).join(path)).unwrap()), digest, "{name}/{path}");
            } else {
                assert_eq!(Some(&(digest.clone(), *mode, text.clone())), was.get(path), "{name}:{path} changed");
            }
        }
    }
    // w1 and w2: bootstrap-kubelet.conf and kubeadm-join.yaml; cp2: kubeadm-join.yaml.
    assert_eq!(holders, 5, "not every join file was found");
    let after = digests(&cluster);
    let changed: Vec<&String> = after.keys().chain(before.keys()).filter(|p| after.get(*p) != before.get(*p)).collect();
    let secret = format!("manifests/bootstrap-token-{new_id}.yaml");
    for p in &changed {
        let join_file = JOIN_FILES.iter().any(|f| p.ends_with(f));
        let repacked = ["nodes/cp2.tar.gz", "nodes/w1.tar.gz", "nodes/w2.tar.gz"].contains(&p.as_str());
        let expected =
            ["join.txt", "state/tokens.yaml", "manifests/cluster-info.yaml", secret.as_str(), old_secret.as_str()].contains(&p.as_str());
        assert!(join_file || repacked || expected, "{p} changed");
    }
    assert!(!changed.iter().any(|p| p.as_str() == "nodes/cp1.tar.gz"), "cp1 holds no join token");
    // The bundle verifies at that clock: no expired token is left anywhere.
    verify_bundle(&cluster, Some(later)).unwrap_or_else(|e| panic!("{e}"));

    // Descriptions are one line of printable text: refused with exit 2 and nothing written.
    let snapshot = digests(&cluster);
    for (bad, named) in [("two\nlines", "a newline"), ("\u{1b}[31mred", "an escape character"), ("tab\there", "a tab")] {
        let r = create(&["--description", bad], later);
        assert_eq!(r.code, Some(2), "{bad:?}: {}", r.describe());
        assert!(r.stderr.contains("--description holds") && r.stderr.contains(named), "{bad:?}: {}", r.stderr);
        assert!(r.stderr.contains("one line of printable text"), "{}", r.stderr);
        assert_eq!(digests(&cluster), snapshot, "{bad:?}: a refused token create wrote something");
    }
    // Clipped at 256 characters, with a warning.
    let long = "é".repeat(300);
    let r = create(&["--description", &long, "--print-join-command"], later);
    assert!(r.ok(), "{}", r.describe());
    assert!(r.stderr.contains("warning: --description is 300 characters long: clipped to its first 256"), "{}", r.stderr);
    let id = tokens_in(&r.stdout).into_iter().find(|t| *t != new).unwrap().split('.').next().unwrap().to_string();
    let manifest = std::fs::read_to_string(cluster.join(format!("manifests/bootstrap-token-{id}.yaml"))).unwrap();
    let b64 = manifest.lines().find_map(|l| l.trim().strip_prefix("description: ")).expect("a description in the Secret");
    use base64::Engine;
    let stored = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap();
    assert_eq!(stored, "é".repeat(256));

    // token list shows what a hand-edited tokens.yaml holds escaped, never raw.
    let tokens_yaml = cluster.join("state/tokens.yaml");
    let text = std::fs::read_to_string(&tokens_yaml).unwrap();
    std::fs::write(&tokens_yaml, text.replace("description: after expiry", "description: \"after\\e[31m expiry\\nrow\"")).unwrap();
    let list = token_cmd(dir, &["list"]);
    assert!(list.ok(), "{}", list.describe());
    assert!(!list.stdout.contains('\u{1b}'), "token list printed a raw escape: {:?}", list.stdout);
    assert!(list.stdout.contains("after\\x1b[31m expiry\\nrow"), "{}", list.stdout);
    assert_eq!(list.stdout.lines().count(), 3, "one line per token (the expired one dropped) and the header: {}", list.stdout);
}

#[test]
fn a_description_in_the_config_is_one_printable_line() {
    let tmp = temp_dir("tokens-description");
    let dir = tmp.path();
    let base = live_config("desc", &[("cp1", "10.5.2.1", "control-plane, etcd")]);
    let with = |description: &str| {
        base.replace(
            "---\napiVersion: kubebundle.dev/v1alpha1",
            &format!("---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nbootstrapTokens:\n- description: {description}\n  ttl: 24h\n---\napiVersion: kubebundle.dev/v1alpha1"),
        )
    };
    let gen = |text: &str| {
        std::fs::write(dir.join("desc.yaml"), text).unwrap();
        kubebundle(dir, &["generate", "--config", "desc.yaml", "--out", "out", "--now", NOW], &[])
    };
    // The description is on line 10, its value at column 16.
    for (value, named) in
        [("\"rack\\e[31m 7\"", "an escape character (U+001B) at character 5"), ("\"a\\nb\"", "a newline (U+000A) at character 2")]
    {
        let r = gen(&with(value));
        // A config error (exit 2 once config errors map to 2, issue 12's messages item).
        assert!(matches!(r.code, Some(1 | 2)), "{value}: {}", r.describe());
        assert!(r.stderr.contains("desc.yaml:10:16: error: InitConfiguration.bootstrapTokens[0].description: holds"), "{}", r.stderr);
        assert!(r.stderr.contains(named) && r.stderr.contains("one line of printable text"), "{}", r.stderr);
        assert!(!dir.join("out").exists(), "a refused config wrote something");
    }
    let r = gen(&with(&"x".repeat(300)));
    assert!(r.ok(), "{}", r.describe());
    assert!(
        r.stderr.contains(
            "desc.yaml:10:16: warning: InitConfiguration.bootstrapTokens[0].description: 300 characters long: clipped to its first 256"
        ),
        "{}",
        r.stderr
    );
    let tokens = std::fs::read_to_string(dir.join("out/desc/state/tokens.yaml")).unwrap();
    assert!(tokens.contains(&"x".repeat(256)) && !tokens.contains(&"x".repeat(257)), "{tokens}");
}
