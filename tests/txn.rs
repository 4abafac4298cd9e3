//! Transactions around a bundle: a bundle or output directory given as a symbolic link is
//! written through the link (the directory it points to is swapped, the link stays), a dangling
//! link is refused naming both ends; removed nodes are archived under `OUT/.removed/<cluster>/`,
//! never over an earlier archive nor into another cluster's bundle; and what killed commands
//! left (staging, scratch and backup directories whose lock nobody holds, temporary files) is
//! swept by the next command of any kind, while those in use are kept.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;

use common::*;

const T: &str = "2026-01-01T00:00:00Z";
const LATER: &str = "2026-01-01T01:00:00Z";

/// A hermetic kubebundle run in `dir` whose system temporary directory is `dir/tmp`.
fn kb(dir: &Path, args: &[&str]) -> Run {
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut c = hermetic(bin(), dir);
    c.current_dir(dir).env("TMPDIR", &tmp).args(args).stdin(Stdio::null());
    run_cmd(c)
}

fn ok(dir: &Path, args: &[&str]) -> Run {
    let r = kb(dir, args);
    assert!(r.ok(), "{}", r.describe());
    r
}

/// Writes `<file>.yaml` for cluster `cluster` with cp1 and `workers`; returns its name.
fn config_as(dir: &Path, file: &str, cluster: &str, workers: &[&str]) -> String {
    let mut nodes = vec![("cp1", "10.8.0.1".to_string(), "control-plane, etcd")];
    for (i, w) in workers.iter().enumerate() {
        nodes.push((w, format!("10.8.1.{}", i + 1), "worker"));
    }
    let nodes: Vec<(&str, &str, &str)> = nodes.iter().map(|(n, a, r)| (*n, a.as_str(), *r)).collect();
    let file = format!("{file}.yaml");
    std::fs::write(dir.join(&file), live_config(cluster, &nodes)).unwrap();
    file
}

fn config(dir: &Path, cluster: &str, workers: &[&str]) -> String {
    config_as(dir, cluster, cluster, workers)
}

fn is_link(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

/// Every `.kubebundle*` directory under `root`.
fn private_dirs(root: &Path) -> Vec<String> {
    walk(root)
        .into_iter()
        .filter(|(rel, e)| matches!(e, Entry::Dir { .. }) && rel.rsplit('/').next().is_some_and(|n| n.starts_with(".kubebundle")))
        .map(|(rel, _)| rel)
        .collect()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

// =============================================================================================
// Symbolic links

#[test]
fn a_bundle_that_is_a_link_is_swapped_where_it_points_and_stays_a_link() {
    let tmp = temp_dir("txn-link");
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("store/kept")).unwrap();
    std::fs::create_dir_all(dir.join("out")).unwrap();
    // A relative link, as people make them.
    std::os::unix::fs::symlink("../store/kept", dir.join("out/c")).unwrap();
    let file = config(dir, "c", &["w1", "w2"]);
    let run = ok(dir, &["generate", "--config", &file, "--out", "out", "--now", T]);
    assert!(is_link(&dir.join("out/c")), "out/c was replaced");
    assert_eq!(std::fs::read_link(dir.join("out/c")).unwrap(), Path::new("../store/kept"));
    assert!(dir.join("store/kept/state/cluster.yaml").is_file() && dir.join("store/kept/nodes/w2.tar.gz").is_file());
    // The lock is the one of the directory the link points to.
    assert_eq!(names(&dir.join("out")), ["c"], "{}", run.stderr);
    assert_eq!(names(&dir.join("store")), [".kubebundle-kept.lock", "kept"]);
    verify_bundle(&dir.join("out/c"), Some(LATER)).unwrap();

    // token create, certs renew and a generate that removes a node: all through the link.
    let created = ok(dir, &["token", "create", "--dir", "out/c", "--now", T]);
    let id = created.stderr.split("created bootstrap token ").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    assert!(std::fs::read_to_string(dir.join("store/kept/state/tokens.yaml")).unwrap().contains(&format!("token: {id}.")));
    let renewed = ok(dir, &["certs", "renew", "all", "--dir", "out/c", "--now", LATER]);
    assert!(renewed.stdout.contains("re-packed"), "{}", renewed.stdout);
    let backup = "kubebundle-backup-20260101T010000Z";
    assert!(dir.join("store").join(backup).join("nodes/cp1.tar.gz").is_file(), "the backup is beside the bundle the link points to");
    let file = config(dir, "c", &["w1"]);
    let run = ok(dir, &["generate", "--config", &file, "--out", "out", "--now", LATER]);
    assert!(run.stderr.contains("out/.removed/c/w2-20260101T010000Z"), "{}", run.stderr);
    for d in ["out/c", "store/kept"] {
        assert!(!dir.join(d).join("nodes/w2.tar.gz").exists(), "{d}");
    }
    assert!(is_link(&dir.join("out/c")));
    assert_eq!(names(&dir.join("store")), [".kubebundle-kept.lock", "kept", backup]);
    assert_eq!(private_dirs(dir), Vec::<String>::new());
    verify_bundle(&dir.join("out/c"), Some(LATER)).unwrap();
}

#[test]
fn an_out_dir_that_is_a_link_is_followed() {
    let tmp = temp_dir("txn-outlink");
    let dir = tmp.path();
    std::fs::create_dir(dir.join("real")).unwrap();
    std::os::unix::fs::symlink(dir.join("real"), dir.join("out")).unwrap();
    let file = config(dir, "c", &["w1"]);
    ok(dir, &["generate", "--config", &file, "--out", "out", "--now", T]);
    let file = config(dir, "c", &["w1", "w2"]);
    ok(dir, &["generate", "--config", &file, "--out", "out", "--now", T]);
    assert!(is_link(&dir.join("out")));
    assert_eq!(names(&dir.join("real")), [".kubebundle-c.lock", "c"]);
    assert!(dir.join("real/c/nodes/w2.tar.gz").is_file());
    verify_bundle(&dir.join("out/c"), Some(LATER)).unwrap();
}

#[test]
fn a_dangling_link_is_refused_naming_both_ends_and_nothing_is_written() {
    let tmp = temp_dir("txn-dangling");
    let dir = tmp.path();
    std::fs::create_dir(dir.join("out")).unwrap();
    std::os::unix::fs::symlink(dir.join("gone"), dir.join("out/c")).unwrap();
    std::os::unix::fs::symlink(dir.join("gone-too"), dir.join("out2")).unwrap();
    let file = config(dir, "c", &["w1"]);
    let cases: [(&[&str], &str, &str); 5] = [
        (&["generate", "--config", &file, "--out", "out", "--now", T], "out/c", "gone"),
        (&["generate", "--config", &file, "--out", "out2", "--now", T], "out2", "gone-too"),
        (&["token", "create", "--dir", "out/c", "--now", T], "out/c", "gone"),
        (&["token", "delete", "abcdef", "--dir", "out/c", "--now", T], "out/c", "gone"),
        (&["certs", "renew", "all", "--dir", "out/c", "--now", T], "out/c", "gone"),
    ];
    for (args, link, target) in cases {
        let r = kb(dir, args);
        assert_eq!(r.code, Some(2), "{args:?}: {}", r.describe());
        let want = format!(
            "kubebundle: {link} is a symbolic link to {}, which does not exist\n  hint: point the link at an existing directory",
            dir.join(target).display()
        );
        assert!(r.stderr.contains(&want), "{args:?}: {}", r.stderr);
    }
    assert!(!dir.join("gone").exists() && !dir.join("gone-too").exists());
    assert_eq!(names(&dir.join("out")), ["c"]);
}

// =============================================================================================
// Removed nodes

#[test]
fn removed_nodes_are_archived_under_out_removed_and_an_archive_is_never_overwritten() {
    let tmp = temp_dir("txn-removed");
    let dir = tmp.path();
    let with = config(dir, "grow", &["w1", "w2"]);
    ok(dir, &["generate", "--unpacked", "--config", &with, "--out", "out", "--now", T]);
    let first = std::fs::read(dir.join("out/grow/nodes/w2.tar.gz")).unwrap();
    let first_key = std::fs::read(dir.join("out/grow/nodes/w2/var/lib/kubelet/pki/kubelet.key")).unwrap();
    config_as(dir, "less", "grow", &["w1"]);
    // Remove w2, add it back, remove it again, all with the same clock.
    let gone = ok(dir, &["generate", "--unpacked", "--config", "less.yaml", "--out", "out", "--now", T]);
    let archive = dir.join("out/.removed/grow/w2-20260101T000000Z");
    assert!(
        gone.stderr.contains(&format!(
            "its files were moved out of the bundle to {}",
            Path::new("out/.removed/grow/w2-20260101T000000Z").display()
        )),
        "{}",
        gone.stderr
    );
    ok(dir, &["generate", "--unpacked", "--config", &with, "--out", "out", "--now", T]);
    let second = std::fs::read(dir.join("out/grow/nodes/w2.tar.gz")).unwrap();
    let again = ok(dir, &["generate", "--unpacked", "--config", "less.yaml", "--out", "out", "--now", T]);
    let archive2 = dir.join("out/.removed/grow/w2-20260101T000000Z-2");
    assert!(again.stderr.contains("out/.removed/grow/w2-20260101T000000Z-2"), "{}", again.stderr);
    assert_eq!(names(&dir.join("out/.removed/grow")), ["w2-20260101T000000Z", "w2-20260101T000000Z-2"]);
    // The first archive is as it was; each holds its node's tarball and tree, privately.
    assert_eq!(std::fs::read(archive.join("w2.tar.gz")).unwrap(), first);
    assert_eq!(std::fs::read(archive.join("w2/var/lib/kubelet/pki/kubelet.key")).unwrap(), first_key);
    assert_eq!(std::fs::read(archive2.join("w2.tar.gz")).unwrap(), second);
    for d in [dir.join("out/.removed"), dir.join("out/.removed/grow"), archive.clone(), archive2.clone()] {
        assert_eq!(mode_of(&d), Some(0o700), "{}", d.display());
    }
    for a in [&archive, &archive2] {
        assert_eq!(mode_of(&a.join("w2.tar.gz")), Some(0o600));
        assert_eq!(mode_of(&a.join("w2/var/lib/kubelet/pki/kubelet.key")), Some(0o600));
    }
    // Beside the bundle: only the bundle, its lock and the archives.
    assert_eq!(names(&dir.join("out")), [".kubebundle-grow.lock", ".removed", "grow"]);
    verify_bundle(&dir.join("out/grow"), Some(LATER)).unwrap();
}

#[test]
fn a_cluster_named_prod_never_writes_into_the_bundle_of_prod_removed() {
    let tmp = temp_dir("txn-prod");
    let dir = tmp.path();
    let other = config(dir, "prod.removed", &["w1"]);
    ok(dir, &["generate", "--config", &other, "--out", "out", "--now", T]);
    let before = file_bytes(&dir.join("out/prod.removed"));
    let with = config(dir, "prod", &["w1", "w2"]);
    ok(dir, &["generate", "--config", &with, "--out", "out", "--now", T]);
    config_as(dir, "less", "prod", &["w1"]);
    let run = ok(dir, &["generate", "--config", "less.yaml", "--out", "out", "--now", T]);
    assert!(run.stderr.contains("out/.removed/prod/w2-20260101T000000Z"), "{}", run.stderr);
    assert!(dir.join("out/.removed/prod/w2-20260101T000000Z/w2.tar.gz").is_file());
    assert_eq!(file_bytes(&dir.join("out/prod.removed")), before, "the bundle of cluster prod.removed changed");
    verify_bundle(&dir.join("out/prod.removed"), Some(LATER)).unwrap();
    verify_bundle(&dir.join("out/prod"), Some(LATER)).unwrap();
}

// =============================================================================================
// Leftovers of killed commands

/// What a SIGKILLed command leaves: a private directory holding a key, nobody holding its lock.
fn leave_stale(parent: &Path, name: &str) {
    let d = parent.join(name);
    std::fs::create_dir_all(d.join("state/pki")).unwrap();
    std::fs::write(d.join("state/pki/ca.key"), "-----BEGIN PRIVATE KEY-----\n").unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn what_killed_commands_left_is_swept_by_the_next_command_of_any_kind_and_what_is_in_use_is_kept() {
    let tmp = temp_dir("txn-sweep");
    let dir = tmp.path();
    let file = config(dir, "c", &["w1"]);
    ok(dir, &["generate", "--config", &file, "--out", "out", "--now", T]);
    // In use by another command: its lock is held (here by the test).
    let live = dir.join("out/.kubebundle_c_inuse");
    leave_stale(dir, "out/.kubebundle_c_inuse");
    let holder = std::fs::File::open(&live).unwrap();
    holder.lock().unwrap();
    let commands: [&[&str]; 7] = [
        &["verify", "out/c", "--now", LATER],
        &["certs", "check-expiration", "--dir", "out/c", "--now", LATER],
        &["token", "list", "--dir", "out/c"],
        &["token", "create", "--dir", "out/c", "--now", T],
        &["certs", "renew", "all", "--dir", "out/c", "--now", LATER],
        &["generate", "--config", &file, "--out", "out", "--now", LATER],
        &["generate", "--check", "--config", &file, "--out", "out", "--now", LATER],
    ];
    for (k, args) in commands.iter().enumerate() {
        let stale = [
            format!("out/.kubebundle_c_{k}stale"),
            format!("out/.kubebundle-nodes-{k}stale"),
            format!("out/.kubebundle-backup-{k}stale"),
            format!("out/.kubebundle-removed-{k}stale"),
            format!("tmp/.kubebundle-nodes-{k}stale"),
        ];
        for s in &stale {
            leave_stale(dir, s);
        }
        let r = kb(dir, args);
        assert!(r.code == Some(0) || (args.contains(&"--check") && r.code == Some(1)), "{args:?}: {}", r.describe());
        for s in &stale {
            assert!(!dir.join(s).exists(), "{args:?} left {s}");
        }
        assert!(live.join("state/pki/ca.key").is_file(), "{args:?} removed a directory in use");
    }
    drop(holder);
    ok(dir, &["verify", "out/c", "--now", LATER]);
    assert!(!live.exists(), "once its lock is released it is a leftover too");

    // A live tree (an extracted node root): a killed renew's temporary file beside a key.
    let root = dir.join("root");
    extract(&dir.join("out/c/nodes/cp1.tar.gz"), &root);
    let pki = root.join("etc/kubernetes/pki");
    let stale_tmp = pki.join(".kubebundle-tmp-apiserver.key-stale");
    std::fs::write(&stale_tmp, "-----BEGIN PRIVATE KEY-----\n").unwrap();
    let busy_tmp = pki.join(".kubebundle-tmp-apiserver.crt-busy");
    std::fs::write(&busy_tmp, "x").unwrap();
    let busy = std::fs::File::open(&busy_tmp).unwrap();
    busy.lock().unwrap();
    ok(dir, &["certs", "renew", "apiserver", "--dir", "root", "--now", LATER]);
    assert!(!stale_tmp.exists() && busy_tmp.exists());
    drop(busy);
    let left: BTreeMap<String, Entry> = walk(&root).into_iter().filter(|(rel, _)| rel.contains(".kubebundle")).collect();
    assert_eq!(left.keys().collect::<Vec<_>>(), ["etc/kubernetes/pki/.kubebundle-tmp-apiserver.crt-busy"]);
}

// =============================================================================================
// Signals

/// SIGINT, SIGTERM and SIGHUP sent while `certs renew` holds private directories (the staging
/// bundle, the backup in the making): the handler removes them and the run exits with 128 + the
/// signal, leaving the old bundle or the new one.
#[test]
fn sigint_sigterm_and_sighup_remove_every_private_directory() {
    let tmp = temp_dir("txn-signals");
    let dir = tmp.path();
    let workers: Vec<String> = (0..60).map(|i| format!("w{i}")).collect();
    let workers: Vec<&str> = workers.iter().map(String::as_str).collect();
    let file = config(dir, "c", &workers);
    ok(dir, &["generate", "--config", &file, "--out", "out", "--now", T]);
    for (n, signal) in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP].into_iter().enumerate() {
        let mut caught = false;
        for attempt in 0..20 {
            let now = format!("2026-01-01T0{n}:{attempt:02}:00Z");
            let mut c = hermetic(bin(), dir);
            c.current_dir(dir).env("TMPDIR", dir.join("tmp")).args(["certs", "renew", "all", "--dir", "out/c", "--now", &now]);
            let mut child = c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
            // Wait until the run has a private directory, then signal it.
            let seen = loop {
                if child.try_wait().unwrap().is_some() {
                    break false;
                }
                if std::fs::read_dir(dir.join("out"))
                    .unwrap()
                    .flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with(".kubebundle") && e.path().is_dir())
                {
                    break true;
                }
                std::thread::sleep(std::time::Duration::from_micros(500));
            };
            if seen {
                // SAFETY: kill takes a pid and a signal number; the child has not been waited for.
                assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
            }
            let status = child.wait().unwrap();
            assert_eq!(private_dirs(dir), Vec::<String>::new(), "signal {signal}");
            if !seen || status.success() {
                continue;
            }
            assert_eq!(status.code(), Some(128 + signal), "signal {signal}: {status:?}");
            caught = true;
            break;
        }
        assert!(caught, "signal {signal}: the runs always ended before a private directory was seen");
        verify_bundle(&dir.join("out/c"), Some("2026-01-01T05:00:00Z")).unwrap();
    }
}
