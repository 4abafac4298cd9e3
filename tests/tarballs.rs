//! A bundle as `generate` writes it by default: one tarball per node and no unpacked trees. Every
//! command that works on a bundle (verify, certs check-expiration, certs renew, token) reads and
//! updates the tarballs; what they hold is read back here with the real `tar` and `openssl`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;

const NOW: &str = "2026-03-01T00:00:00Z";

fn setup(prefix: &str) -> tempfile::TempDir {
    let tmp = temp_dir(prefix);
    let text = live_config(
        "tb",
        &[("cp1", "10.6.0.1", "control-plane, etcd"), ("cp2", "10.6.0.2", "control-plane, etcd"), ("w1", "10.6.0.11", "worker")],
    );
    std::fs::write(tmp.path().join("tb.yaml"), text).unwrap();
    let run = kubebundle(tmp.path(), &["generate", "--config", "tb.yaml", "--out", "out", "--now", NOW], &[]);
    assert!(run.ok(), "{}", run.describe());
    tmp
}

/// Every file of a node's tarball, extracted by `tar` into a fresh directory.
fn untar(tgz: &Path) -> BTreeMap<String, Vec<u8>> {
    let dest = tempfile::tempdir().unwrap();
    let mut c = std::process::Command::new("tar");
    c.arg("-xzf").arg(tgz).arg("-C").arg(dest.path());
    let r = run_cmd(c);
    assert!(r.ok(), "{}", r.describe());
    file_bytes(dest.path())
}

fn not_after(pem: &[u8], scratch: &Path) -> String {
    let f = scratch.join("cert.pem");
    std::fs::write(&f, pem).unwrap();
    let r = openssl(&["x509", "-noout", "-enddate", "-in", f.to_str().unwrap()]);
    assert!(r.ok(), "{}", r.describe());
    r.stdout.trim().trim_start_matches("notAfter=").to_string()
}

fn leaf_record_cert(cluster: &Path, node: &str, id: &str) -> String {
    let leaves: serde_json::Value = serde_json::from_slice(&std::fs::read(cluster.join("state/leaves.json")).unwrap()).unwrap();
    let found = leaves["leaves"].as_array().unwrap().iter().find(|l| l["node"] == node && l["id"] == id);
    found.and_then(|l| l["cert"].as_str()).unwrap_or_else(|| panic!("no record with a certificate for {node}/{id}")).to_string()
}

/// Private directories the commands unpack tarballs into must not outlive them.
fn assert_no_scratch_left(out: &Path) {
    let left: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".kubebundle-nodes-"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn the_default_bundle_holds_tarballs_only_and_verifies() {
    let tmp = setup("tb-verify");
    let cluster = tmp.path().join("out/tb");
    let mut entries: Vec<String> =
        std::fs::read_dir(cluster.join("nodes")).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    entries.sort();
    assert_eq!(entries, ["cp1.tar.gz", "cp2.tar.gz", "w1.tar.gz"]);
    for e in &entries {
        assert_eq!(mode_of(&cluster.join("nodes").join(e)), Some(0o600), "{e}");
    }
    let files = untar(&cluster.join("nodes/w1.tar.gz"));
    assert!(files.contains_key("etc/kubernetes/pki/ca.crt") && files.contains_key("var/lib/kubelet/config.yaml"), "{:?}", files.keys());
    let v = kubebundle(tmp.path(), &["verify", "out/tb", "--now", NOW], &[]);
    assert!(v.ok(), "{}", v.describe());
    assert!(v.stdout.contains("nodes/cp1.tar.gz:etc/kubernetes/pki/apiserver.crt"), "{}", v.stdout);
    assert!(v.stdout.contains(" 0 errors") || v.stdout.starts_with("0 errors") || v.stdout.contains("\n0 errors"), "{}", v.stdout);
}

#[test]
fn check_expiration_reads_each_certificate_from_its_tarball() {
    let tmp = setup("tb-expiry");
    let r = kubebundle(tmp.path(), &["certs", "check-expiration", "--dir", "out/tb", "--now", NOW, "-o", "json"], &[]);
    assert!(r.ok(), "{}", r.describe());
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let certs = report["certificates"].as_array().unwrap();
    let apiserver = certs.iter().find(|c| c["name"] == "cp1/apiserver").expect("cp1/apiserver is listed");
    assert!(apiserver["path"].as_str().unwrap().ends_with("out/tb/nodes/cp1.tar.gz:etc/kubernetes/pki/apiserver.crt"), "{apiserver}");
    assert!(certs.iter().any(|c| c["name"] == "w1/kubelet-serving"), "{}", r.stdout);
    // The embedded example's validity: one year from the run's clock, less nothing.
    assert!(apiserver["expires"].as_str().unwrap().starts_with("2027-03-01"), "{apiserver}");
    assert_no_scratch_left(&tmp.path().join("out"));
}

#[test]
fn renew_repacks_the_tarballs_and_the_next_generate_keeps_the_renewal() {
    let tmp = setup("tb-renew");
    let cluster = tmp.path().join("out/tb");
    let later = "2026-06-01T00:00:00Z";
    let before = untar(&cluster.join("nodes/cp1.tar.gz"));
    let w1_before = std::fs::read(cluster.join("nodes/w1.tar.gz")).unwrap();

    let r = kubebundle(tmp.path(), &["certs", "renew", "apiserver", "--dir", "out/tb", "--now", later], &[]);
    assert!(r.ok(), "{}", r.describe());
    assert!(r.stdout.contains("nodes/cp1.tar.gz:etc/kubernetes/pki/apiserver.crt"), "{}", r.stdout);
    assert!(r.stdout.contains("re-packed"), "{}", r.stdout);
    assert_no_scratch_left(&tmp.path().join("out"));

    let after = untar(&cluster.join("nodes/cp1.tar.gz"));
    let crt = "etc/kubernetes/pki/apiserver.crt";
    assert_ne!(before[crt], after[crt], "apiserver.crt was not renewed in the tarball");
    assert!(not_after(&after[crt], tmp.path()).starts_with("Jun  1"), "{}", not_after(&after[crt], tmp.path()));
    // Only the renewed file changed in the tarball; the key is kept; w1 is untouched.
    for (path, bytes) in &before {
        if path != crt {
            assert_eq!(after.get(path), Some(bytes), "{path} changed");
        }
    }
    assert_eq!(std::fs::read(cluster.join("nodes/w1.tar.gz")).unwrap(), w1_before);
    // The state records the renewed certificate, so generate keeps it.
    assert_eq!(leaf_record_cert(&cluster, "cp1", "apiserver").as_bytes(), after[crt].as_slice());
    let tarball = std::fs::read(cluster.join("nodes/cp1.tar.gz")).unwrap();
    let again = kubebundle(tmp.path(), &["generate", "--config", "tb.yaml", "--out", "out", "--now", later], &[]);
    assert!(again.ok(), "{}", again.describe());
    assert_eq!(std::fs::read(cluster.join("nodes/cp1.tar.gz")).unwrap(), tarball, "generate undid the renewal");
    let v = kubebundle(tmp.path(), &["verify", "out/tb", "--now", later], &[]);
    assert!(v.ok(), "{}", v.describe());
}

#[test]
fn a_new_join_token_is_written_into_the_tarballs() {
    let tmp = setup("tb-token");
    let cluster = tmp.path().join("out/tb");
    let tok = |args: &[&str]| {
        let mut a = vec!["token"];
        a.extend_from_slice(args);
        a.extend(["--dir", "out/tb", "--now", NOW]);
        kubebundle(tmp.path(), &a, &[])
    };
    let first = find_tokens(&std::fs::read_to_string(cluster.join("join.txt")).unwrap())[0].clone();
    let created = tok(&["create", "--print-join-command"]);
    assert!(created.ok(), "{}", created.describe());
    let new = find_tokens(&created.stdout).into_iter().find(|t| *t != first).expect("a new token");
    let deleted = tok(&["delete", first.split('.').next().unwrap()]);
    assert!(deleted.ok(), "{}", deleted.describe());

    let w1 = untar(&cluster.join("nodes/w1.tar.gz"));
    let boot = String::from_utf8(w1["etc/kubernetes/bootstrap-kubelet.conf"].clone()).unwrap();
    assert!(boot.contains(&new) && !boot.contains(&first), "{boot}");
    let join = String::from_utf8(w1["etc/kubernetes/kubeadm-join.yaml"].clone()).unwrap();
    assert!(join.contains(&new) && !join.contains(&first), "{join}");
    assert_eq!(mode_of(&cluster.join("nodes/w1.tar.gz")), Some(0o600));
    let names: Vec<String> =
        std::fs::read_dir(cluster.join("nodes")).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| n.ends_with(".tar.gz")), "token wrote node trees: {names:?}");
    let v = kubebundle(tmp.path(), &["verify", "out/tb", "--now", NOW], &[]);
    assert!(v.ok(), "{}", v.describe());
}

#[test]
fn unpacked_writes_the_trees_and_a_plain_run_drops_them() {
    let tmp = setup("tb-unpacked");
    let cluster = tmp.path().join("out/tb");
    let tarball = std::fs::read(cluster.join("nodes/cp1.tar.gz")).unwrap();
    let gen = |extra: &[&str]| {
        let mut a = vec!["generate", "--config", "tb.yaml", "--out", "out", "--now", NOW];
        a.extend_from_slice(extra);
        kubebundle(tmp.path(), &a, &[])
    };
    let check = gen(&["--unpacked", "--check"]);
    assert_eq!(check.code, Some(1), "{}", check.describe());
    assert!(check.stdout.contains("would add     nodes/cp1/etc/kubernetes/pki/apiserver.crt"), "{}", check.stdout);
    assert!(!check.stdout.contains("cp1.tar.gz"), "{}", check.stdout);

    assert!(gen(&["--unpacked"]).ok());
    // The tree is the tarball unpacked, and the tarball did not change.
    assert_eq!(file_bytes(&cluster.join("nodes/cp1")), untar(&cluster.join("nodes/cp1.tar.gz")));
    assert_eq!(std::fs::read(cluster.join("nodes/cp1.tar.gz")).unwrap(), tarball);
    assert_eq!(mode_of(&cluster.join("nodes/cp1/etc/kubernetes/pki/ca.key")), Some(0o600));

    let check = gen(&["--check"]);
    assert_eq!(check.code, Some(1), "{}", check.describe());
    assert!(check.stdout.contains("would remove  nodes/cp1/etc/kubernetes/pki/apiserver.crt"), "{}", check.stdout);
    assert!(gen(&[]).ok());
    assert!(!cluster.join("nodes/cp1").exists(), "a run without --unpacked keeps the trees");
    assert_eq!(std::fs::read(cluster.join("nodes/cp1.tar.gz")).unwrap(), tarball);
}

/// Every entry under `root` (files with bytes and mode, directories, links) and each file's inode.
fn snapshot(root: &Path) -> (BTreeMap<String, Entry>, BTreeMap<String, u64>) {
    use std::os::unix::fs::MetadataExt;
    let entries = walk(root);
    let inodes = entries
        .iter()
        .filter(|(_, e)| matches!(e, Entry::File { .. }))
        .map(|(p, _)| (p.clone(), std::fs::symlink_metadata(root.join(p)).unwrap().ino()))
        .collect();
    (entries, inodes)
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A file of the bundle replaced by new bytes (a new inode, as an editor or `tar czf` makes).
fn replace(path: &Path, bytes: &[u8], mode: u32) {
    std::fs::remove_file(path).unwrap();
    std::fs::write(path, bytes).unwrap();
    set_mode(path, mode);
}

/// `damage` breaks `target` (relative to the bundle) in a bundle written by `gen(&[])`:
/// `generate --check` names it with `why` (exit 1) and writes nothing; `generate` rewrites it to
/// the clean run's bytes at its planned mode, says so with `why`, and every other file of the
/// bundle keeps its bytes, mode and inode (tarballs and tree files are hard links).
fn repaired(tmp: &Path, extra: &[&str], target: &str, planned_mode: u32, why: &str, damage: impl FnOnce(&Path)) {
    let gen = |more: &[&str]| {
        let mut a = vec!["generate", "--config", "tb.yaml", "--out", "out", "--now", NOW];
        a.extend_from_slice(extra);
        a.extend_from_slice(more);
        kubebundle(tmp, &a, &[])
    };
    let cluster = tmp.join("out/tb");
    let (clean, clean_inodes) = snapshot(&cluster);
    let path = cluster.join(target);
    damage(&path);
    let (damaged, damaged_inodes) = snapshot(&tmp.join("out"));

    let check = gen(&["--check"]);
    assert_eq!(check.code, Some(1), "{target}: {}", check.describe());
    let lines: Vec<&str> = check.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{target}: only the damaged file drifts:\n{}", check.stdout);
    assert!(lines[0].contains(target) && lines[0].contains(why), "{target}: {why:?} not in:\n{}", check.stdout);
    assert_eq!(snapshot(&tmp.join("out")), (damaged, damaged_inodes), "{target}: --check wrote something");

    let run = gen(&[]);
    assert!(run.ok(), "{}", run.describe());
    assert!(run.stderr.contains(&format!("rewrote {target}: ")), "{target}: not listed:\n{}", run.stderr);
    let listed = run.stderr.lines().find(|l| l.starts_with(&format!("rewrote {target}: "))).unwrap();
    assert!(listed.contains(why), "{target}: {why:?} not in {listed:?}");
    assert_eq!(run.stderr.matches("rewrote ").count(), 1, "{target}: more than one file rewritten:\n{}", run.stderr);
    let (after, after_inodes) = snapshot(&cluster);
    assert_eq!(after.get(target), clean.get(target), "{target} is not the clean run's bytes");
    assert_eq!(mode_of(&path), Some(planned_mode), "{target}");
    assert_eq!(after, clean, "{target}: the bundle is not the clean one again");
    for (p, ino) in &clean_inodes {
        if p.starts_with("nodes/") && p != target {
            assert_eq!(after_inodes.get(p), Some(ino), "{p} was rewritten instead of kept (hard link) when {target} was repaired");
        }
    }
    let again = gen(&["--check"]);
    assert_eq!(again.code, Some(0), "{target}: {}", again.describe());
}

#[test]
fn a_damaged_tarball_is_named_by_check_and_rewritten_by_generate() {
    let tmp = setup("tb-damage");
    let t = tmp.path();
    let nodes = t.join("out/tb/nodes");
    let cp2 = std::fs::read(nodes.join("cp2.tar.gz")).unwrap();

    repaired(t, &[], "nodes/w1.tar.gz", 0o600, "truncated", |p| {
        let bytes = std::fs::read(p).unwrap();
        replace(p, &bytes[..bytes.len() / 2], 0o600);
    });
    repaired(t, &[], "nodes/w1.tar.gz", 0o600, "corrupt", |p| {
        let mut bytes = std::fs::read(p).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x20;
        replace(p, &bytes, 0o600);
    });
    // Re-packed with tar czf from its own files (same paths and modes, another tool's bytes).
    repaired(t, &[], "nodes/w1.tar.gz", 0o600, "re-packed", |p| {
        let root = t.join("w1-root");
        extract(p, &root);
        let mut c = std::process::Command::new("tar");
        c.arg("-czf").arg(t.join("w1-repacked.tar.gz")).arg("-C").arg(&root).args(["etc", "var"]);
        let r = run_cmd(c);
        assert!(r.ok(), "{}", r.describe());
        replace(p, &std::fs::read(t.join("w1-repacked.tar.gz")).unwrap(), 0o600);
    });
    // cp2's files under cp1's gzip header (its digest comment): the forged digest does not match.
    repaired(t, &[], "nodes/cp1.tar.gz", 0o600, "edited", |p| {
        let cp1 = std::fs::read(p).unwrap();
        let end = 10 + cp1[10..].iter().position(|b| *b == 0).unwrap() + 1;
        assert_eq!(cp1[..end].len(), cp2[..end].len());
        let mut forged = cp1[..end].to_vec();
        forged.extend_from_slice(&cp2[end..]);
        replace(p, &forged, 0o600);
    });
    repaired(t, &[], "nodes/w1.tar.gz", 0o600, "0644", |p| set_mode(p, 0o644));
}

#[test]
fn an_edited_or_chmodded_tree_file_is_named_by_check_and_rewritten_by_generate() {
    let tmp = setup("tb-tree-damage");
    let t = tmp.path();
    let run = kubebundle(t, &["generate", "--config", "tb.yaml", "--out", "out", "--now", NOW, "--unpacked"], &[]);
    assert!(run.ok(), "{}", run.describe());
    let up = &["--unpacked"][..];
    repaired(t, up, "nodes/w1/etc/kubernetes/kubeadm-join.yaml", 0o600, "edited", |p| {
        let text = std::fs::read_to_string(p).unwrap();
        // Edited in place, as an editor that keeps the inode does.
        std::fs::write(p, text + "# edited\n").unwrap();
    });
    repaired(t, up, "nodes/cp1/etc/kubernetes/pki/ca.key", 0o600, "0644", |p| set_mode(p, 0o644));
    repaired(t, up, "nodes/cp2/etc/kubernetes/pki/ca.crt", 0o644, "symbolic link", |p| {
        let copy = t.join("ca.crt");
        std::fs::copy(p, &copy).unwrap();
        std::fs::remove_file(p).unwrap();
        std::os::unix::fs::symlink(&copy, p).unwrap();
    });
    // A damaged tarball beside its tree: the tree's files are kept.
    repaired(t, up, "nodes/cp2.tar.gz", 0o600, "truncated", |p| {
        let bytes = std::fs::read(p).unwrap();
        replace(p, &bytes[..bytes.len() - 3], 0o600);
    });
}
