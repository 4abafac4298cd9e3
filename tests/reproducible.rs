//! Reproducible bundles: the same state, config and clock give byte-identical files and tarballs
//! (RSA and ECDSA, whose signatures are RFC 6979 deterministic), from the state alone; a seeded
//! run needs no state at all; `generate --check` reports drift without writing.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;

const NOW: &str = "2026-01-01T00:00:00Z";

fn config(alg: &str) -> String {
    live_config(
        "repro",
        &[
            ("cp1", "10.8.0.11", "control-plane, etcd"),
            ("cp2", "10.8.0.12", "control-plane, etcd"),
            ("w1", "10.8.0.21", "worker"),
            ("w2", "10.8.0.22", "worker"),
        ],
    )
    .replace("encryptionAlgorithm: ECDSA-P256", &format!("encryptionAlgorithm: {alg}"))
}

fn sha256(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Every file under `dir`: relative path → sha256.
fn digests(dir: &Path) -> BTreeMap<String, String> {
    file_bytes(dir).into_iter().map(|(p, b)| (p, sha256(&b))).collect()
}

fn generate_in(dir: &Path, config: &str, extra: &[&str]) -> Run {
    std::fs::write(dir.join("cluster.yaml"), config).unwrap();
    let mut args = vec!["generate", "--config", "cluster.yaml", "--out", "out", "--now", NOW];
    args.extend_from_slice(extra);
    kubebundle(dir, &args, &[])
}

/// Generates once, copies only the state to a fresh directory and generates there: every file of
/// the two bundles must have the same sha256 (tarballs included).
fn same_state_gives_identical_bundles(alg: &str) {
    let a = temp_dir("repro-a");
    let run = generate_in(a.path(), &config(alg), &[]);
    assert!(run.ok(), "{}", run.describe());
    let b = temp_dir("repro-b");
    copy_dir(&a.path().join("out/repro/state"), &b.path().join("out/repro/state"));
    // The records keep each leaf's key and issue time but not the certificate, so every leaf is
    // signed again and must come out the same.
    let records = b.path().join("out/repro/state/leaves.json");
    let mut leaves: serde_json::Value = serde_json::from_slice(&std::fs::read(&records).unwrap()).unwrap();
    for l in leaves["leaves"].as_array_mut().unwrap() {
        assert!(l.as_object_mut().unwrap().remove("cert").is_some(), "a record without its certificate: {l}");
    }
    std::fs::write(&records, serde_json::to_vec(&leaves).unwrap()).unwrap();
    let run = generate_in(b.path(), &config(alg), &[]);
    assert!(run.ok(), "{}", run.describe());
    assert!(run.stderr.contains("0 kept from the previous bundle"), "{}", run.stderr);
    let (da, db) = (digests(&a.path().join("out/repro")), digests(&b.path().join("out/repro")));
    assert!(da.keys().filter(|p| p.ends_with(".tar.gz")).count() == 4, "{da:?}");
    assert!(da.keys().any(|p| p.ends_with(".crt")));
    let differ: Vec<&String> = da.keys().filter(|p| da.get(*p) != db.get(*p)).collect();
    assert!(differ.is_empty(), "{alg}: these files differ between the two runs: {differ:?}");
    assert_eq!(da.len(), db.len(), "{alg}");
}

#[test]
fn rsa_bundles_from_the_same_state_are_byte_identical() {
    same_state_gives_identical_bundles("RSA-2048");
}

#[test]
fn ecdsa_bundles_from_the_same_state_are_byte_identical() {
    same_state_gives_identical_bundles("ECDSA-P256");
    same_state_gives_identical_bundles("ECDSA-P384");
}

#[test]
fn check_reports_no_change_then_names_what_a_config_edit_changes() {
    let t = temp_dir("repro-check");
    let text = config("ECDSA-P256");
    let run = generate_in(t.path(), &text, &[]);
    assert!(run.ok(), "{}", run.describe());
    let cluster = t.path().join("out/repro");
    let before = file_bytes(t.path());

    // A clean re-run: nothing would change, exit 0, nothing written.
    let clean = generate_in(t.path(), &text, &["--check"]);
    assert_eq!(clean.code, Some(0), "{}", clean.describe());
    assert!(clean.stdout.contains("up to date"), "{}", clean.stdout);

    // A new pod subnet changes the controller-manager's view of the cluster: the ClusterConfiguration
    // manifest and the control planes' kubeadm-init.yaml and tarballs.
    let edited = text.replace("kubernetesVersion: v1.34.1", "kubernetesVersion: v1.34.1\nnetworking: {podSubnet: 10.250.0.0/16}");
    let drift = generate_in(t.path(), &edited, &["--check"]);
    assert_eq!(drift.code, Some(1), "{}", drift.describe());
    for f in ["manifests/kubeadm-config.yaml", "nodes/cp1.tar.gz"] {
        assert!(drift.stdout.contains(&format!("would change  {f}")), "{f} not named:\n{}", drift.stdout);
    }
    assert!(!drift.stdout.contains("nodes/w1.tar.gz"), "a worker does not see the pod subnet:\n{}", drift.stdout);
    assert!(drift.stderr.contains("would change"), "{}", drift.stderr);
    // --check wrote nothing (cluster.yaml is the test's own file).
    let mut after = file_bytes(t.path());
    after.remove("cluster.yaml");
    let mut before = before;
    before.remove("cluster.yaml");
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>());
    assert!(before == after, "--check changed a file");

    // A removed node is named too.
    let fewer = text.replace("- {name: w2, address: \"10.8.0.22\", roles: [worker]}\n", "");
    let removed = generate_in(t.path(), &fewer, &["--check"]);
    assert_eq!(removed.code, Some(1), "{}", removed.describe());
    assert!(removed.stdout.contains("would remove  nodes/w2.tar.gz"), "{}", removed.stdout);
    assert!(cluster.join("nodes/w2.tar.gz").is_file());
}

#[test]
fn a_later_clock_keeps_every_file_while_leaves_are_far_from_expiry() {
    let t = temp_dir("repro-later");
    let text = config("ECDSA-P256");
    assert!(generate_in(t.path(), &text, &[]).ok());
    let before = digests(&t.path().join("out/repro"));
    // Two months later, generated tokens renewed aside (they expire after 24h), the same bundle.
    let later = text.replace(
        "---\napiVersion: kubebundle.dev/v1alpha1",
        "---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nbootstrapTokens:\n- token: abcdef.0123456789abcdef\n  ttl: 0s\n---\napiVersion: kubebundle.dev/v1alpha1",
    );
    assert!(generate_in(t.path(), &later, &[]).ok());
    let pinned = digests(&t.path().join("out/repro"));
    let mut args = vec!["generate", "--config", "cluster.yaml", "--out", "out", "--now", "2026-03-01T00:00:00Z", "--check"];
    let check = kubebundle(t.path(), &args, &[]);
    assert_eq!(check.code, Some(0), "a later clock must not change a fitting bundle: {}", check.describe());
    args.pop();
    assert!(kubebundle(t.path(), &args, &[]).ok());
    assert_eq!(pinned, digests(&t.path().join("out/repro")));
    assert_ne!(before.get("join.txt"), pinned.get("join.txt"));
}

/// Every private key PEM of a bundle (key files and kubeconfigs' client-key-data), by path.
fn private_keys(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (path, bytes) in file_bytes(dir) {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if text.contains("PRIVATE KEY-----") {
            out.insert(path, text);
        } else if let Some(line) = text.lines().find(|l| l.trim_start().starts_with("client-key-data:")) {
            out.insert(path, line.trim().to_string());
        }
    }
    out
}

#[test]
fn seeded_runs_from_empty_dirs_are_identical_and_another_seed_changes_every_key() {
    let seeds = temp_dir("seeds");
    let (s1, s2) = (seeds.path().join("s1"), seeds.path().join("s2"));
    std::fs::write(&s1, [7u8; 32]).unwrap();
    std::fs::write(&s2, format!("{}\n", "a1".repeat(32))).unwrap();
    let seeded = |seed: &Path| {
        let t = temp_dir("seeded");
        let args = ["--seed-file", seed.to_str().unwrap(), "--insecure-deterministic", "--unpacked"];
        let run = generate_in(t.path(), &config("ECDSA-P256"), &args);
        assert!(run.ok(), "{}", run.describe());
        assert!(run.stderr.contains("WARNING: --insecure-deterministic"), "{}", run.stderr);
        t
    };
    let (a, b, c) = (seeded(&s1), seeded(&s1), seeded(&s2));
    let (da, db) = (digests(&a.path().join("out/repro")), digests(&b.path().join("out/repro")));
    assert_eq!(da, db, "two seeded runs from empty directories differ");
    // Another seed: every key, the tokens and the encryption key differ.
    let (ka, kc) = (private_keys(&a.path().join("out/repro")), private_keys(&c.path().join("out/repro")));
    assert!(ka.len() > 30, "{:?}", ka.keys());
    assert_eq!(ka.keys().collect::<Vec<_>>(), kc.keys().collect::<Vec<_>>());
    let shared: Vec<&String> = ka.iter().filter(|(p, k)| kc.get(*p) == Some(*k)).map(|(p, _)| p).collect();
    assert!(shared.is_empty(), "the same key under two seeds: {shared:?}");
    // Not even moved around: no key of one seed's bundle is anywhere in the other's.
    let other: std::collections::BTreeSet<&String> = kc.values().collect();
    assert!(ka.values().all(|k| !other.contains(k)), "a key appears under both seeds");
    // Different artifacts get different keys (a CA key is copied to the control planes, so
    // count the leaf keys of one node).
    let cp1: Vec<&String> = ka
        .iter()
        .filter(|(p, _)| p.starts_with("nodes/cp1/") && p.ends_with(".key") && !p.contains("ca.key") && !p.contains("sa.key"))
        .map(|(_, k)| k)
        .collect();
    let distinct: std::collections::BTreeSet<&&String> = cp1.iter().collect();
    assert!(cp1.len() >= 7 && distinct.len() == cp1.len(), "cp1's leaf keys are not all different");
    for f in ["state/tokens.yaml", "state/encryption.yaml", "join.txt"] {
        let (x, y) = (file_bytes(&a.path().join("out/repro")), file_bytes(&c.path().join("out/repro")));
        assert_ne!(x.get(f), y.get(f), "{f} is the same under two seeds");
    }
    // Verify accepts the seeded bundle.
    verify_bundle(&a.path().join("out/repro"), Some(NOW)).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_seed_needs_the_acknowledgment_and_a_fixed_clock() {
    let t = temp_dir("seed-refused");
    std::fs::write(t.path().join("seed"), [1u8; 32]).unwrap();
    std::fs::write(t.path().join("cluster.yaml"), config("ECDSA-P256")).unwrap();
    let base = ["generate", "--config", "cluster.yaml", "--out", "out", "--seed-file", "seed"];
    let no_ack = kubebundle(t.path(), &[&base[..], &["--now", NOW]].concat(), &[]);
    assert_eq!(no_ack.code, Some(2), "{}", no_ack.describe());
    assert!(no_ack.stderr.contains("--insecure-deterministic"), "{}", no_ack.stderr);
    let no_clock = kubebundle(t.path(), &[&base[..], &["--insecure-deterministic"]].concat(), &[]);
    assert_eq!(no_clock.code, Some(2), "{}", no_clock.describe());
    assert!(no_clock.stderr.contains("fixed clock"), "{}", no_clock.stderr);
    std::fs::write(t.path().join("seed"), "too short").unwrap();
    let bad = kubebundle(t.path(), &[&base[..], &["--insecure-deterministic", "--now", NOW]].concat(), &[]);
    assert_eq!(bad.code, Some(2), "{}", bad.describe());
    assert!(bad.stderr.contains("--seed-file: seed"), "{}", bad.stderr);
    assert!(!t.path().join("out").exists(), "a refused run wrote something");
}

#[test]
fn generate_after_certs_renew_keeps_the_renewed_certificates() {
    let t = temp_dir("repro-renew");
    // A token that never expires, so only the renewal could change a node's files.
    let text = config("ECDSA-P256").replace(
        "---\napiVersion: kubebundle.dev/v1alpha1",
        "---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nbootstrapTokens:\n- token: abcdef.0123456789abcdef\n  ttl: 0s\n---\napiVersion: kubebundle.dev/v1alpha1",
    );
    assert!(generate_in(t.path(), &text, &[]).ok());
    let later = "2026-10-01T00:00:00Z";
    let renew = kubebundle(t.path(), &["certs", "renew", "all", "--dir", "out/repro", "--now", later], &[]);
    assert!(renew.ok(), "{}", renew.describe());
    let renewed = digests(&t.path().join("out/repro"));
    let run = kubebundle(t.path(), &["generate", "--config", "cluster.yaml", "--out", "out", "--now", later], &[]);
    assert!(run.ok(), "{}", run.describe());
    let after = digests(&t.path().join("out/repro"));
    for (path, digest) in renewed.iter().filter(|(p, _)| p.starts_with("nodes/") && (p.ends_with(".crt") || p.ends_with(".tar.gz"))) {
        assert_eq!(after.get(path), Some(digest), "generate undid the renewal of {path}");
    }
}

#[test]
fn a_damaged_tarball_is_rewritten_as_a_clean_run_from_the_state_writes_it() {
    // A token that never expires, so a later clock changes no node file.
    let text = config("ECDSA-P256").replace(
        "---\napiVersion: kubebundle.dev/v1alpha1",
        "---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nbootstrapTokens:\n- token: abcdef.0123456789abcdef\n  ttl: 0s\n---\napiVersion: kubebundle.dev/v1alpha1",
    );
    let a = temp_dir("repro-repair-a");
    assert!(generate_in(a.path(), &text, &[]).ok());
    let kept = digests(&a.path().join("out/repro"));
    let b = temp_dir("repro-repair-b");
    copy_dir(&a.path().join("out/repro/state"), &b.path().join("out/repro/state"));

    // w2's tarball loses its end; two months later generate rewrites it with the run's clock,
    // exactly as a clean run from the same state writes it, and keeps the others as they were.
    let w2 = a.path().join("out/repro/nodes/w2.tar.gz");
    let bytes = std::fs::read(&w2).unwrap();
    std::fs::write(&w2, &bytes[..bytes.len() - 100]).unwrap();
    let later = "2026-03-01T00:00:00Z";
    let run = |dir: &Path| kubebundle(dir, &["generate", "--config", "cluster.yaml", "--out", "out", "--now", later], &[]);
    let repaired = run(a.path());
    assert!(repaired.ok(), "{}", repaired.describe());
    assert!(repaired.stderr.contains("rewrote nodes/w2.tar.gz: truncated"), "{}", repaired.stderr);
    std::fs::write(b.path().join("cluster.yaml"), &text).unwrap();
    let clean = run(b.path());
    assert!(clean.ok(), "{}", clean.describe());
    let (da, db) = (digests(&a.path().join("out/repro")), digests(&b.path().join("out/repro")));
    assert_eq!(da.get("nodes/w2.tar.gz"), db.get("nodes/w2.tar.gz"), "the repaired tarball is not the clean run's");
    assert_ne!(da.get("nodes/w2.tar.gz"), kept.get("nodes/w2.tar.gz"), "packed with the run's clock, not the old one");
    for node in ["cp1", "cp2", "w1"] {
        let p = format!("nodes/{node}.tar.gz");
        assert_eq!(da.get(&p), kept.get(&p), "{p}: an intact tarball packed at the earlier clock is kept");
    }
}
