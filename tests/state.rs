//! The state knows what it holds (state/manifest.yaml) and its records are verified before use:
//! a lost, unreadable or changed secret refuses every run (exit 1, nothing written), naming the
//! file, what depends on it, a verified copy and `kubebundle state restore`, which puts it back so
//! the next `generate` writes byte-identical tarballs; `--force` replaces the state and keeps the
//! old one in a backup; a leaf record whose key or certificate is wrong is never shipped.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;

const NOW: &str = "2026-01-01T00:00:00Z";
const LATER: &str = "2026-01-02T00:00:00Z";

fn config() -> String {
    live_config(
        "st",
        &[
            ("cp1", "10.7.0.11", "control-plane, etcd"),
            ("cp2", "10.7.0.12", "control-plane, etcd"),
            ("cp3", "10.7.0.13", "control-plane, etcd"),
            ("w1", "10.7.0.21", "worker"),
        ],
    )
}

fn sha256(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Every file under `dir` (relative path → sha256).
fn digests(dir: &Path) -> BTreeMap<String, String> {
    file_bytes(dir).into_iter().map(|(p, b)| (p, sha256(&b))).collect()
}

fn tarballs(bundle: &Path) -> BTreeMap<String, String> {
    digests(&bundle.join("nodes")).into_iter().filter(|(p, _)| p.ends_with(".tar.gz")).collect()
}

/// A generated bundle in `dir/out/st`, with its config in `dir/st.yaml`.
struct Work {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Work {
    fn new(prefix: &str, text: &str) -> Work {
        let tmp = temp_dir(prefix);
        let dir = tmp.path().to_path_buf();
        std::fs::write(dir.join("st.yaml"), text).unwrap();
        let w = Work { _tmp: tmp, dir };
        let run = w.generate(&[]);
        assert!(run.ok(), "{}", run.describe());
        w
    }
    fn out(&self) -> PathBuf {
        self.dir.join("out")
    }
    fn bundle(&self) -> PathBuf {
        self.dir.join("out/st")
    }
    fn state(&self, rel: &str) -> PathBuf {
        self.bundle().join("state").join(rel)
    }
    fn generate(&self, extra: &[&str]) -> Run {
        self.generate_at(NOW, extra)
    }
    fn generate_at(&self, now: &str, extra: &[&str]) -> Run {
        let mut args = vec!["generate", "--config", "st.yaml", "--out", "out", "--now", now];
        args.extend_from_slice(extra);
        kubebundle(&self.dir, &args, &[])
    }
    fn restore(&self, extra: &[&str]) -> Run {
        let mut args = vec!["state", "restore", "--dir", "out/st", "--now", LATER];
        args.extend_from_slice(extra);
        kubebundle(&self.dir, &args, &[])
    }
    fn set_config(&self, text: &str) {
        std::fs::write(self.dir.join("st.yaml"), text).unwrap();
    }
    fn leaves(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.state("leaves.json")).unwrap()).unwrap()
    }
    fn set_leaves(&self, v: &serde_json::Value) {
        std::fs::write(self.state("leaves.json"), serde_json::to_vec_pretty(v).unwrap()).unwrap();
    }
}

fn record<'v>(leaves: &'v mut serde_json::Value, node: &str, id: &str) -> &'v mut serde_json::Value {
    leaves["leaves"].as_array_mut().unwrap().iter_mut().find(|l| l["node"] == node && l["id"] == id).unwrap()
}

/// Asserts a refusal: exit 1, every `needles` in stderr, and nothing under OUT changed.
fn assert_refused(w: &Work, run: &Run, before: &BTreeMap<String, String>, needles: &[&str]) {
    assert_eq!(run.code, Some(1), "{}", run.describe());
    for n in needles {
        assert!(run.stderr.contains(n), "the refusal does not say {n:?}:\n{}", run.stderr);
    }
    let after = digests(&w.out());
    assert!(after == *before, "a refused run changed files under out/: {:?}", changed(before, &after));
}

fn changed(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).cloned().collect()
}

/// `state restore`, then `generate`: every tarball as before the loss, the bundle verifies.
fn assert_restored(w: &Work, pristine_tarballs: &BTreeMap<String, String>, restored: &[&str]) -> Run {
    let run = w.restore(&[]);
    assert!(run.ok(), "{}", run.describe());
    for r in restored {
        assert!(run.stdout.contains(r), "restore does not say {r:?}:\n{}", run.stdout);
    }
    assert!(!run.stdout.contains("PRIVATE KEY") && !run.stderr.contains("PRIVATE KEY"), "a secret in the output");
    // The restored state gives the bundle as it is: nothing would change.
    let check = w.generate(&["--check"]);
    assert_eq!(check.code, Some(0), "after the restore: {}", check.describe());
    let gen = w.generate(&[]);
    assert!(gen.ok(), "{}", gen.describe());
    assert!(gen.stderr.contains("0 issued"), "{}", gen.stderr);
    assert_eq!(tarballs(&w.bundle()), *pristine_tarballs, "the tarballs differ after restore + generate");
    verify_bundle(&w.bundle(), Some(NOW)).unwrap_or_else(|e| panic!("{e}"));
    run
}

fn tgz(node: &str, path: &str) -> String {
    format!("out/st/nodes/{node}.tar.gz:{path}")
}

const RESTORE: &str = "kubebundle state restore --dir out/st";
const FORCE_BREAKS: &str = "every node must be redeployed";

/// A fresh copy of `pristine`'s out dir in a new work dir.
fn copy_of(pristine: &Work, prefix: &str) -> Work {
    let tmp = temp_dir(prefix);
    let dir = tmp.path().to_path_buf();
    std::fs::copy(pristine.dir.join("st.yaml"), dir.join("st.yaml")).unwrap();
    let status = std::process::Command::new("cp").arg("-a").arg(pristine.out()).arg(dir.join("out")).status().unwrap();
    assert!(status.success());
    Work { _tmp: tmp, dir }
}

/// An ECDSA P-256 key (PEM) that belongs to no bundle.
fn foreign_key(dir: &Path) -> Vec<u8> {
    let path = dir.join("foreign.key");
    let r = openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", path.to_str().unwrap()]);
    assert!(r.ok(), "{}", r.describe());
    std::fs::read(path).unwrap()
}

/// A self-signed CA certificate for a key of its own, with the cluster CA's name.
fn foreign_ca_cert(dir: &Path) -> Vec<u8> {
    let (key, crt) = (dir.join("other-ca.key"), dir.join("other-ca.crt"));
    let r = openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=kubernetes",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-days",
        "3650",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        crt.to_str().unwrap(),
    ]);
    assert!(r.ok(), "{}", r.describe());
    std::fs::read(crt).unwrap()
}

#[test]
fn the_manifest_records_every_long_lived_secret_and_a_rerun_changes_nothing() {
    let w = Work::new("state-manifest", &config());
    let text = std::fs::read_to_string(w.state("manifest.yaml")).unwrap();
    assert!(text.starts_with("# kubebundle state manifest"), "{text}");
    let mode = std::fs::metadata(w.state("manifest.yaml")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Entry {
        id: String,
        file: String,
        sha256: String,
        public_key_sha256: Option<String>,
        recorded: String,
    }
    #[derive(serde::Deserialize)]
    struct M {
        secrets: Vec<Entry>,
    }
    let m: M = serde_saphyr::from_str(&text).unwrap();
    let ids: Vec<&str> = m.secrets.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["ca", "encryption-key/key1", "etcd-ca", "front-proxy-ca", "sa"]);
    for e in &m.secrets {
        assert_eq!(e.recorded, NOW, "{}", e.id);
        if e.id.starts_with("encryption-key/") {
            let enc = std::fs::read_to_string(w.state("encryption.yaml")).unwrap();
            let secret = enc.lines().find_map(|l| l.trim().strip_prefix("secret: ")).unwrap();
            use base64::Engine;
            let raw = base64::engine::general_purpose::STANDARD.decode(secret.trim_matches('"')).unwrap();
            assert_eq!(e.sha256, sha256(&raw), "{}", e.id);
            continue;
        }
        assert_eq!(e.sha256, sha256(&std::fs::read(w.state(&e.file)).unwrap()), "{}", e.id);
        // The public key's digest, as openssl computes it from the key file.
        let der = openssl(&["pkey", "-in", w.state(&e.file).to_str().unwrap(), "-pubout", "-outform", "DER"]);
        assert!(der.ok(), "{}", der.describe());
        assert_eq!(e.public_key_sha256.as_deref(), Some(sha256(&der.stdout_bytes).as_str()), "{}", e.id);
    }
    let before = digests(&w.bundle());
    let again = w.generate_at("2026-01-01T06:00:00Z", &[]);
    assert!(again.ok(), "{}", again.describe());
    assert_eq!(digests(&w.bundle()), before, "a re-run changed files");
    let check = w.generate(&["--check"]);
    assert_eq!(check.code, Some(0), "{}", check.describe());
}

/// Each loss: refused with exit 1, naming the file, what depends on it, a verified copy and
/// `state restore`, writing nothing; `generate --check` and `token create` refuse too; then
/// `state restore` + `generate` give every tarball as before.
#[test]
fn every_lost_or_changed_secret_is_refused_then_restored() {
    let pristine = Work::new("state-pristine", &config());
    let tarballs0 = tarballs(&pristine.bundle());
    let state0 = digests(&pristine.bundle().join("state"));
    let scratch = temp_dir("state-scratch");
    let other_key = foreign_key(scratch.path());
    let other_ca = foreign_ca_cert(scratch.path());

    type Break = Box<dyn Fn(&Work)>;
    let cases: Vec<(&str, Break, Vec<String>, Vec<&str>)> = vec![
        (
            "encryption.yaml missing",
            Box::new(|w: &Work| std::fs::remove_file(w.state("encryption.yaml")).unwrap()),
            vec![
                "out/st/state/encryption.yaml is missing".into(),
                "every Secret the API servers encrypted with key1 becomes unreadable".into(),
                tgz("cp1", "etc/kubernetes/encryption/encryption-config.yaml"),
            ],
            vec!["restored encryption key key1 in state/encryption.yaml from out/st/nodes/cp1.tar.gz"],
        ),
        (
            "sa.key missing",
            Box::new(|w: &Work| std::fs::remove_file(w.state("pki/sa.key")).unwrap()),
            vec![
                "out/st/state/pki/sa.key is missing".into(),
                "every service-account token becomes invalid".into(),
                tgz("cp1", "etc/kubernetes/pki/sa.key"),
            ],
            vec!["restored state/pki/sa.key", "from out/st/nodes/cp1.tar.gz:etc/kubernetes/pki/sa.key (SHA-256 verified)"],
        ),
        (
            "sa.key replaced by another key",
            Box::new(move |w: &Work| std::fs::write(w.state("pki/sa.key"), &other_key).unwrap()),
            vec![
                "out/st/state/pki/sa.key changed".into(),
                "every service-account token becomes invalid".into(),
                tgz("cp2", "etc/kubernetes/pki/sa.key"),
            ],
            vec!["restored state/pki/sa.key", "kept the files it replaced in out/kubebundle-backup-20260102T000000Z/state"],
        ),
        (
            "ca.crt and ca.key missing",
            Box::new(|w: &Work| {
                std::fs::remove_file(w.state("pki/ca.crt")).unwrap();
                std::fs::remove_file(w.state("pki/ca.key")).unwrap();
            }),
            vec![
                "out/st/state/pki/ca.key is missing".into(),
                "out/st/state/pki/ca.crt is missing".into(),
                "every node's certificates and kubeconfigs (and join discovery) stop being trusted".into(),
                tgz("cp1", "etc/kubernetes/pki/ca.key"),
                tgz("cp1", "etc/kubernetes/pki/ca.crt"),
            ],
            vec!["restored state/pki/ca.key", "restored state/pki/ca.crt"],
        ),
        (
            "ca.key replaced",
            Box::new({
                let k = foreign_key(scratch.path());
                move |w: &Work| std::fs::write(w.state("pki/ca.key"), &k).unwrap()
            }),
            vec![
                "out/st/state/pki/ca.key changed: it is not the key the state recorded".into(),
                "stop being trusted".into(),
                tgz("cp1", "etc/kubernetes/pki/ca.key"),
            ],
            vec!["restored state/pki/ca.key"],
        ),
        (
            "ca.crt replaced by a certificate of another key",
            Box::new(move |w: &Work| std::fs::write(w.state("pki/ca.crt"), &other_ca).unwrap()),
            vec![
                "out/st/state/pki/ca.crt changed: it is a certificate for another key than the recorded CA key".into(),
                "stop being trusted".into(),
                tgz("cp1", "etc/kubernetes/pki/ca.crt"),
            ],
            vec!["restored state/pki/ca.crt"],
        ),
        (
            "state/pki/etcd/ removed",
            Box::new(|w: &Work| std::fs::remove_dir_all(w.state("pki/etcd")).unwrap()),
            vec![
                "out/st/state/pki/etcd/ca.key is missing".into(),
                "every etcd member's and API server's etcd certificates stop being trusted".into(),
                tgz("cp1", "etc/kubernetes/pki/etcd/ca.key"),
            ],
            vec!["restored state/pki/etcd/ca.key", "restored state/pki/etcd/ca.crt"],
        ),
        (
            "front-proxy-ca.crt does not parse",
            Box::new(|w: &Work| std::fs::write(w.state("pki/front-proxy-ca.crt"), "not a certificate\n").unwrap()),
            vec![
                "out/st/state/pki/front-proxy-ca.crt does not parse".into(),
                "front-proxy client certificates".into(),
                tgz("cp1", "etc/kubernetes/pki/front-proxy-ca.crt"),
            ],
            vec!["restored state/pki/front-proxy-ca.crt"],
        ),
        (
            "encryption.yaml does not parse",
            Box::new(|w: &Work| std::fs::write(w.state("encryption.yaml"), "keys: {{{\n").unwrap()),
            vec![
                "out/st/state/encryption.yaml does not parse".into(),
                "encrypted with key1 becomes unreadable".into(),
                tgz("cp1", "etc/kubernetes/encryption/encryption-config.yaml"),
            ],
            vec!["restored encryption key key1"],
        ),
        (
            "the whole state/ removed while nodes/ exist",
            Box::new(|w: &Work| std::fs::remove_dir_all(w.bundle().join("state")).unwrap()),
            vec![
                "out/st/state is missing, but out/st has node tarballs".into(),
                "the state of this bundle was lost".into(),
                "out/st/state/pki/ca.key is missing".into(),
                "every service-account token becomes invalid".into(),
                tgz("cp1", "etc/kubernetes/pki/ca.key"),
                tgz("cp1", "etc/kubernetes/pki/sa.key"),
            ],
            vec![
                "recorded the state's 5 secrets in state/manifest.yaml (it had no manifest)",
                "rebuilt state/leaves.json from the node tarballs",
                "rebuilt state/tokens.yaml from manifests/",
            ],
        ),
    ];
    let mut failures = Vec::new();
    for (name, break_it, needles, restored) in &cases {
        let w = copy_of(&pristine, "state-case");
        break_it(&w);
        let before = digests(&w.out());
        let mut needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        needles.extend([RESTORE, "nothing was written", FORCE_BREAKS]);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let run = w.generate(&[]);
            assert_refused(&w, &run, &before, &needles);
            // The same refusal for --check (its exit code is --check's own), token create and renew.
            let check = w.generate(&["--check"]);
            assert!(check.code != Some(0) && check.stderr.contains(RESTORE), "--check: {}", check.describe());
            let token = kubebundle(&w.dir, &["token", "create", "--dir", "out/st", "--now", NOW], &[]);
            assert_refused(&w, &token, &before, &[RESTORE]);
            let renew = kubebundle(&w.dir, &["certs", "renew", "apiserver", "--dir", "out/st", "--now", NOW], &[]);
            assert_refused(&w, &renew, &before, &[RESTORE]);
            assert_restored(&w, &tarballs0, restored);
            if !name.starts_with("the whole state") {
                let state = digests(&w.bundle().join("state"));
                assert!(state == state0, "the state differs from before the loss: {:?}", changed(&state0, &state));
            }
        }));
        if let Err(e) = result {
            let msg = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
            failures.push(format!("{name}: {msg}"));
        }
    }
    assert!(failures.is_empty(), "{} case(s) failed:\n{}", failures.len(), failures.join("\n\n"));
}

#[test]
fn a_removed_encryption_key_is_restored_in_its_place() {
    let w = Work::new("state-rotation", &config());
    // key2 added in front (a rotation): the next run records it and ships both.
    let enc = std::fs::read_to_string(w.state("encryption.yaml")).unwrap();
    use base64::Engine;
    let key2 = base64::engine::general_purpose::STANDARD.encode([42u8; 32]);
    std::fs::write(w.state("encryption.yaml"), enc.replacen("keys:\n", &format!("keys:\n- name: key2\n  secret: {key2}\n"), 1)).unwrap();
    let run = w.generate(&[]);
    assert!(run.ok(), "{}", run.describe());
    assert!(
        run.stderr.contains("recorded encryption-key/key2 (encryption.yaml): it was in the state but not in its manifest"),
        "{}",
        run.stderr
    );
    let tarballs0 = tarballs(&w.bundle());
    let state0 = digests(&w.bundle().join("state"));
    // key1 removed by hand: refused.
    let two = std::fs::read_to_string(w.state("encryption.yaml")).unwrap();
    let key1_at = two.find("- name: key1").unwrap();
    std::fs::write(w.state("encryption.yaml"), &two[..key1_at]).unwrap();
    let before = digests(&w.out());
    let refused = w.generate(&[]);
    assert_refused(
        &w,
        &refused,
        &before,
        &[
            "out/st/state/encryption.yaml has no key key1",
            "every Secret the API servers encrypted with key1 becomes unreadable",
            &tgz("cp1", "etc/kubernetes/encryption/encryption-config.yaml"),
            RESTORE,
            "remove its entry from state/manifest.yaml",
        ],
    );
    assert_restored(&w, &tarballs0, &["restored encryption key key1"]);
    assert_eq!(std::fs::read_to_string(w.state("encryption.yaml")).unwrap(), two, "key order");
    let state = digests(&w.bundle().join("state"));
    assert!(state == state0, "{:?}", changed(&state0, &state));
}

#[test]
fn restore_refuses_without_a_verified_copy_and_takes_backups_and_from() {
    let w = Work::new("state-nocopy", &config());
    let tarballs0 = tarballs(&w.bundle());
    let sa = std::fs::read(w.state("pki/sa.key")).unwrap();
    // A backup beside the bundle holds sa.key, and so do the control planes' tarballs.
    let backup = w.out().join("kubebundle-backup-20251201T000000Z/state/pki");
    std::fs::create_dir_all(&backup).unwrap();
    std::fs::write(backup.join("sa.key"), &sa).unwrap();
    // A backup of another state is not a verified copy.
    let stale = w.out().join("kubebundle-backup-20251231T000000Z/state/pki");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("sa.key"), foreign_key(&w.dir)).unwrap();
    std::fs::remove_file(w.state("pki/sa.key")).unwrap();
    let run = w.generate(&[]);
    assert_eq!(run.code, Some(1), "{}", run.describe());
    let listed = run.stderr.lines().find(|l| l.contains("verified copies:")).unwrap_or_default().to_string();
    assert!(listed.contains("out/kubebundle-backup-20251201T000000Z/state/pki/sa.key"), "{}", run.stderr);
    assert!(!listed.contains("20251231"), "an unverified backup was named: {}", run.stderr);
    assert!(listed.contains(&tgz("cp1", "etc/kubernetes/pki/sa.key")), "{}", run.stderr);

    // --from a tarball that cannot hold it: refused, nothing written.
    let before = digests(&w.out());
    let r = w.restore(&["--from", "out/st/nodes/w1.tar.gz"]);
    assert_eq!(r.code, Some(1), "{}", r.describe());
    assert!(r.stderr.contains("no verified copy of") && r.stderr.contains("state/pki/sa.key"), "{}", r.stderr);
    assert!(r.stderr.contains("nothing was written"), "{}", r.stderr);
    assert_eq!(digests(&w.out()), before);
    // Backups come first.
    let r = w.restore(&[]);
    assert!(r.ok(), "{}", r.describe());
    assert!(r.stdout.contains("from out/kubebundle-backup-20251201T000000Z/state/pki/sa.key"), "{}", r.stdout);
    let again = w.restore(&[]);
    assert!(again.ok() && again.stdout.contains("nothing to restore"), "{}", again.describe());
    let gen = w.generate(&[]);
    assert!(gen.ok(), "{}", gen.describe());
    assert_eq!(tarballs(&w.bundle()), tarballs0);

    // With neither backups nor tarballs holding it: refused.
    let lone = Work::new("state-lone", &config());
    std::fs::remove_file(lone.state("pki/sa.key")).unwrap();
    for node in ["cp1", "cp2", "cp3"] {
        std::fs::remove_file(lone.bundle().join(format!("nodes/{node}.tar.gz"))).unwrap();
    }
    let before = digests(&lone.out());
    let refused = lone.generate(&[]);
    assert_refused(&lone, &refused, &before, &["no verified copy found", "from your own backup of the state"]);
    let r = lone.restore(&[]);
    assert_eq!(r.code, Some(1), "{}", r.describe());
    assert!(r.stderr.contains("no verified copy of out/st/state/pki/sa.key"), "{}", r.stderr);
    assert_eq!(digests(&lone.out()), before);
    // --from a copy of the state.
    let r = lone.restore(&["--from", w.bundle().join("state").to_str().unwrap()]);
    assert_eq!(r.code, Some(1), "another bundle's sa.key is not a verified copy: {}", r.describe());

    // Without its manifest either, and no copy anywhere: the refusal names what has none.
    std::fs::remove_file(lone.state("manifest.yaml")).unwrap();
    let before = digests(&lone.out());
    let refused = lone.generate(&[]);
    assert_refused(
        &lone,
        &refused,
        &before,
        &[
            "it lacks pki/sa.key",
            "out/st/state/pki/sa.key is missing",
            "every service-account token becomes invalid",
            "no verified copy found",
        ],
    );
    // Restore refuses too, rather than record a state without sa (a later run would make one).
    let r = lone.restore(&[]);
    assert_eq!(r.code, Some(1), "{}", r.describe());
    assert!(r.stderr.contains("no copy of the service-account signing key (sa)"), "{}", r.stderr);
    assert_eq!(digests(&lone.out()), before);
}

#[test]
fn force_replaces_records_and_keeps_the_old_state() {
    let w = Work::new("state-force", &config());
    let old = file_bytes(&w.bundle().join("state"));
    let run = w.generate(&["--force"]);
    assert!(run.ok(), "{}", run.describe());
    let backup = w.out().join("kubebundle-backup-20260101T000000Z/state");
    assert!(
        run.stderr.contains(&format!("the previous state was kept in {}", "out/kubebundle-backup-20260101T000000Z/state")),
        "{}",
        run.stderr
    );
    assert_eq!(file_bytes(&backup), old, "the backup is not the old state");
    for (rel, e) in walk(backup.parent().unwrap()) {
        match e {
            Entry::Dir { mode } => assert_eq!(mode, 0o700, "{rel}"),
            Entry::File { mode, .. } => assert_eq!(mode, 0o600, "{rel}"),
            _ => panic!("{rel}"),
        }
    }
    let new_key = std::fs::read(w.state("pki/ca.key")).unwrap();
    assert_ne!(Some(&new_key), old.get("pki/ca.key"), "--force kept the CA key");
    let manifest = std::fs::read_to_string(w.state("manifest.yaml")).unwrap();
    assert!(manifest.contains(&sha256(&new_key)), "the new CA key is not recorded:\n{manifest}");
    assert!(!manifest.contains(&sha256(&old["pki/ca.key"])), "the old CA key is still recorded");
    verify_bundle(&w.bundle(), Some(NOW)).unwrap();
    // A second --force at the same clock keeps its own backup beside the first.
    let again = w.generate(&["--force"]);
    assert!(again.ok(), "{}", again.describe());
    assert!(w.out().join("kubebundle-backup-20260101T000000Z-2/state/pki/ca.key").is_file());
    assert_eq!(std::fs::read(backup.join("pki/ca.key")).unwrap(), old["pki/ca.key"], "the first backup changed");

    // A bundle that lost its whole state is refused, and --force starts it over.
    std::fs::remove_dir_all(w.bundle().join("state")).unwrap();
    let refused = w.generate(&[]);
    assert_eq!(refused.code, Some(1), "{}", refused.describe());
    let forced = w.generate(&["--force"]);
    assert!(forced.ok(), "{}", forced.describe());
    assert!(w.state("manifest.yaml").is_file());
    verify_bundle(&w.bundle(), Some(NOW)).unwrap();
}

#[test]
fn a_state_without_its_manifest_is_accepted_when_complete_and_refused_when_not() {
    let w = Work::new("state-nomanifest", &config());
    let tarballs0 = tarballs(&w.bundle());
    let manifest = std::fs::read(w.state("manifest.yaml")).unwrap();

    // Copied without its manifest but complete: accepted, and recorded again.
    std::fs::remove_file(w.state("manifest.yaml")).unwrap();
    let run = w.generate(&[]);
    assert!(run.ok(), "{}", run.describe());
    assert!(run.stderr.contains("recorded the state's secrets in manifest.yaml (it had no manifest)"), "{}", run.stderr);
    assert_eq!(std::fs::read(w.state("manifest.yaml")).unwrap(), manifest, "the manifest recorded again");
    assert_eq!(tarballs(&w.bundle()), tarballs0);

    // Without its manifest and incomplete: refused, naming what is missing and the copies.
    std::fs::remove_file(w.state("manifest.yaml")).unwrap();
    std::fs::remove_file(w.state("pki/sa.key")).unwrap();
    let before = digests(&w.out());
    let refused = w.generate(&[]);
    assert_refused(
        &w,
        &refused,
        &before,
        &[
            "out/st/state has no manifest (state/manifest.yaml) and is incomplete: it lacks pki/sa.key",
            "every service-account token becomes invalid",
            &tgz("cp1", "etc/kubernetes/pki/sa.key"),
            RESTORE,
            FORCE_BREAKS,
        ],
    );
    let r = assert_restored(&w, &tarballs0, &["restored state/pki/sa.key", "(it had no manifest)"]);
    assert!(r.stdout.contains("sa.key"), "{}", r.stdout);
    assert!(w.state("manifest.yaml").is_file());
}

#[test]
fn a_secret_the_state_never_held_is_created_and_recorded() {
    let external = config()
        .replace(
            "encryptionAlgorithm: ECDSA-P256\n",
            "encryptionAlgorithm: ECDSA-P256\netcd:\n  external:\n    endpoints: [https://10.7.0.5:2379]\n    caFile: /etc/etcd/ca.crt\n    certFile: /etc/etcd/client.crt\n    keyFile: /etc/etcd/client.key\n",
        )
        .replace("control-plane, etcd", "control-plane");
    let w = Work::new("state-etcd", &external);
    let manifest = std::fs::read_to_string(w.state("manifest.yaml")).unwrap();
    assert!(!manifest.contains("etcd-ca") && !w.state("pki/etcd").exists(), "{manifest}");
    let ca = std::fs::read(w.state("pki/ca.key")).unwrap();
    w.set_config(&config());
    let run = w.generate(&[]);
    assert!(run.ok(), "{}", run.describe());
    assert!(run.stderr.contains("state: created etcd-ca: the state never held it"), "{}", run.stderr);
    let manifest = std::fs::read_to_string(w.state("manifest.yaml")).unwrap();
    assert!(manifest.contains("id: etcd-ca"), "{manifest}");
    assert!(manifest.contains(&sha256(&std::fs::read(w.state("pki/etcd/ca.key")).unwrap())), "{manifest}");
    assert_eq!(std::fs::read(w.state("pki/ca.key")).unwrap(), ca, "the cluster CA changed");
    verify_bundle(&w.bundle(), Some(NOW)).unwrap();
}

#[test]
fn a_missing_sa_pub_is_rewritten_from_sa_key() {
    let w = Work::new("state-sapub", &config());
    let before = digests(&w.bundle());
    std::fs::remove_file(w.state("pki/sa.pub")).unwrap();
    let run = w.generate(&[]);
    assert!(run.ok(), "{}", run.describe());
    assert!(run.stderr.contains("rewrote pki/sa.pub from sa.key (it was missing)"), "{}", run.stderr);
    assert_eq!(digests(&w.bundle()), before);
}

// ---------------------------------------------------------------------------------------------
// Item 5: leaf records are verified before use.

#[test]
fn a_bad_leaf_record_is_refused_naming_it() {
    let w = Work::new("state-leaves", &config());
    let other = Work::new("state-leaves-other", &config());
    let pristine = w.leaves();
    let theirs = other.leaves();
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "key swapped",
            Box::new(|l: &mut serde_json::Value| {
                let key = record(l, "cp2", "apiserver")["key"].clone();
                record(l, "cp1", "apiserver")["key"] = key;
            }),
            "state/leaves.json: cp1/apiserver: the key does not match its certificate",
        ),
        (
            "a certificate from another CA",
            Box::new(move |l: &mut serde_json::Value| {
                let mut t = theirs.clone();
                let foreign = record(&mut t, "cp1", "apiserver").clone();
                let r = record(l, "cp1", "apiserver");
                r["key"] = foreign["key"].clone();
                r["cert"] = foreign["cert"].clone();
            }),
            "state/leaves.json: cp1/apiserver: its certificate is not signed by the current ca CA",
        ),
        (
            "an unparseable certificate",
            Box::new(|l: &mut serde_json::Value| {
                record(l, "w1", "kubelet-serving")["cert"] =
                    "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n".into();
            }),
            "state/leaves.json: w1/kubelet-serving: its certificate does not parse",
        ),
        (
            "an unparseable key",
            Box::new(|l: &mut serde_json::Value| {
                record(l, "cp2", "etcd-peer")["key"] =
                    "-----BEGIN EC PRIVATE KEY-----\nbm90IGEga2V5\n-----END EC PRIVATE KEY-----\n".into();
            }),
            "state/leaves.json: cp2/etcd-peer: its key does not parse",
        ),
    ];
    for (name, edit, message) in cases {
        let mut l = pristine.clone();
        edit(&mut l);
        w.set_leaves(&l);
        let before = digests(&w.out());
        let run = w.generate(&[]);
        assert_eq!(run.code, Some(1), "{name}: {}", run.describe());
        assert!(run.stderr.contains(message), "{name}: {}", run.stderr);
        assert!(run.stderr.contains("hint: delete that record (or its cert field)"), "{name}: {}", run.stderr);
        assert_eq!(digests(&w.out()), before, "{name}: a refused run changed files");
    }
    // Deleting the record, as the hint says, issues the leaf anew; the bundle verifies.
    let mut l = pristine.clone();
    l["leaves"].as_array_mut().unwrap().retain(|r| !(r["node"] == "cp1" && r["id"] == "apiserver"));
    w.set_leaves(&l);
    let run = w.generate(&[]);
    assert!(run.ok(), "{}", run.describe());
    assert!(run.stderr.contains(", 1 issued"), "{}", run.stderr);
    verify_bundle(&w.bundle(), Some(NOW)).unwrap();
}

#[test]
fn a_bad_record_the_run_reissues_anyway_gives_a_warning() {
    let w = Work::new("state-leaves-warn", &config());
    let mut l = w.leaves();
    let key = record(&mut l, "cp1", "kubelet-serving")["key"].clone();
    record(&mut l, "w1", "kubelet-serving")["key"] = key.clone();
    w.set_leaves(&l);
    // w1's address changes: its serving certificate would be issued anew anyway.
    w.set_config(&config().replace("10.7.0.21", "10.7.0.31"));
    let run = w.generate(&[]);
    assert!(run.ok(), "{}", run.describe());
    assert!(
        run.stderr.contains(
            "warning: out/st/state/leaves.json: w1/kubelet-serving: the key does not match its certificate: issued anew with a new key"
        ),
        "{}",
        run.stderr
    );
    verify_bundle(&w.bundle(), Some(NOW)).unwrap();
    let after = w.leaves();
    let mut after = after.clone();
    let r = record(&mut after, "w1", "kubelet-serving");
    assert_ne!(r["key"], key, "the bad key was kept");
    // The shipped key is its certificate's.
    let dir = temp_dir("state-leaves-x");
    extract(&w.bundle().join("nodes/w1.tar.gz"), dir.path());
    let pki = dir.path().join("var/lib/kubelet/pki");
    let a = openssl(&["x509", "-in", pki.join("kubelet.crt").to_str().unwrap(), "-noout", "-pubkey"]);
    let b = openssl(&["pkey", "-in", pki.join("kubelet.key").to_str().unwrap(), "-pubout"]);
    assert!(a.ok() && b.ok() && a.stdout == b.stdout, "{}\n{}", a.describe(), b.describe());
}
