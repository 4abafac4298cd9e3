//! Crash safety: a large `generate` is killed with SIGKILL and SIGTERM at many points, and so are
//! `certs renew all` and `token create` on a 40-node RSA bundle. After every interruption the
//! cluster directory is the complete previous bundle or the complete new one, never a mix, the
//! state is never torn, no secret is left outside the bundle's state and tarballs (SIGTERM: at
//! once; SIGKILL: once the next command, `verify`, has swept), and the bundle verifies. Every
//! pair of writers run at once is serialised by the one lock, losing nothing; a held lock
//! refuses every writer with the same message.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;

const WORKERS: usize = 40;
const KILL_POINTS: usize = 50;

/// The two configs differ in the leaves' validity, so a run with the one the bundle was not made
/// with signs every leaf again and rewrites every node: real work from start to end.
fn config(validity: &str) -> String {
    let mut s = format!(
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nclusterName: kill\nkubernetesVersion: v1.34.1\nencryptionAlgorithm: ECDSA-P256\ncertificateValidityPeriod: {validity}\n---\napiVersion: kubebundle.dev/v1alpha1\nkind: Inventory\nnodes:\n",
    );
    for i in 1..=3 {
        s += &format!("- {{name: cp{i}, address: 10.3.0.{i}, roles: [control-plane, etcd]}}\n");
    }
    for i in 0..WORKERS {
        s += &format!("- {{name: w{i}, address: 10.3.1.{}, roles: [worker]}}\n", i + 1);
    }
    s
}

const CONFIGS: [&str; 2] = ["kill-a.yaml", "kill-b.yaml"];

fn generate_cmd(dir: &Path, config: &str) -> Command {
    let mut c = hermetic(bin(), dir);
    c.current_dir(dir)
        .args(["generate", "--unpacked", "--config", config, "--out", "out"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// path → hash of the bytes, for every file under `root`.
fn digest(root: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                std::fs::read(&p).unwrap_or_default().hash(&mut h);
                out.insert(p.strip_prefix(root).unwrap().display().to_string(), h.finish());
            }
        }
    }
    out
}

/// A complete bundle: every node of plan.json has its whole tree and a tarball that unpacks
/// to exactly those files, join.txt is there, and the state holds the original CA and keys.
fn check_complete(cluster: &Path, state: &BTreeMap<String, Vec<u8>>) -> Result<(), String> {
    let plan: serde_json::Value = serde_json::from_slice(&std::fs::read(cluster.join("plan.json")).map_err(|e| format!("plan.json: {e}"))?)
        .map_err(|e| e.to_string())?;
    let nodes = plan["nodes"].as_array().ok_or("plan.json has no nodes")?;
    if nodes.len() != WORKERS + 3 {
        return Err(format!("{} nodes in plan.json", nodes.len()));
    }
    for n in nodes {
        let name = n["name"].as_str().ok_or("node without a name")?;
        let files: Vec<&str> = n["files"].as_array().ok_or("no files")?.iter().filter_map(|f| f["path"].as_str()).collect();
        for f in &files {
            if !cluster.join("nodes").join(name).join(f).is_file() {
                return Err(format!("{name}: {f} is missing from the tree"));
            }
        }
        let mut bytes = Vec::new();
        std::fs::File::open(cluster.join(format!("nodes/{name}.tar.gz")))
            .and_then(|f| f.take(10 << 20).read_to_end(&mut bytes))
            .map_err(|e| format!("{name}.tar.gz: {e}"))?;
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
        let mut in_tar = 0;
        for e in archive.entries().map_err(|e| format!("{name}.tar.gz: {e}"))? {
            let e = e.map_err(|e| format!("{name}.tar.gz: {e}"))?;
            if e.header().entry_type().is_file() {
                in_tar += 1;
            }
        }
        if in_tar != files.len() {
            return Err(format!("{name}.tar.gz holds {in_tar} files, the plan {}", files.len()));
        }
    }
    if !cluster.join("join.txt").is_file() {
        return Err("join.txt is missing".into());
    }
    for (rel, bytes) in state {
        if std::fs::read(cluster.join("state").join(rel)).ok().as_ref() != Some(bytes) {
            return Err(format!("state/{rel} changed or is missing: the state is torn"));
        }
    }
    Ok(())
}

#[test]
fn sigkill_at_any_point_leaves_the_old_or_the_new_bundle() {
    let tmp = temp_dir("kill");
    let dir = tmp.path();
    std::fs::write(dir.join(CONFIGS[0]), config("8760h")).unwrap();
    std::fs::write(dir.join(CONFIGS[1]), config("8000h")).unwrap();
    let cluster = dir.join("out/kill");

    // A complete first bundle, and the time a full re-run takes.
    let first = run_cmd(generate_cmd(dir, CONFIGS[0]));
    assert!(first.ok(), "{}", first.describe());
    let state: BTreeMap<String, Vec<u8>> =
        ["pki/ca.crt", "pki/ca.key", "pki/front-proxy-ca.key", "pki/etcd/ca.key", "pki/sa.key", "encryption.yaml"]
            .iter()
            .map(|r| (r.to_string(), std::fs::read(cluster.join("state").join(r)).unwrap()))
            .collect();
    check_complete(&cluster, &state).expect("the first bundle is complete");
    let start = Instant::now();
    let second = run_cmd(generate_cmd(dir, CONFIGS[1]));
    assert!(second.ok(), "{}", second.describe());
    // A run that finishes before its kill point shows the machine is faster now than this first
    // measure: later points then come sooner.
    let mut full = start.elapsed();
    // Each run uses the config the bundle on disk was not made with.
    let mut next = 0;

    let mut previous = digest(&cluster);
    let (mut killed, mut finished, mut swapped) = (0, 0, 0);
    for k in 0..KILL_POINTS {
        // Every other point is a SIGTERM, which must leave no private directory at all.
        let signal = if k % 2 == 0 { libc::SIGKILL } else { libc::SIGTERM };
        let delay = full.mul_f64((k as f64 + 0.5) / KILL_POINTS as f64);
        let before = private_dirs(dir);
        let mut child = generate_cmd(dir, CONFIGS[next]).spawn().expect("spawn generate");
        std::thread::sleep(delay);
        let done = child.try_wait().expect("try_wait").is_some();
        if !done {
            send(&child, signal);
            killed += 1;
        }
        let status = child.wait().expect("wait");
        if done {
            assert!(status.success(), "kill point {k}: the run failed on its own");
            finished += 1;
            full = full.min(delay.mul_f64(0.9));
        } else {
            check_status(&status, signal).unwrap_or_else(|e| panic!("kill point {k}: {e}"));
        }
        if signal == libc::SIGTERM {
            let left = new_private_dirs(dir, &before);
            assert!(left.is_empty(), "kill point {k}: SIGTERM left {left:?}");
        }
        let now = digest(&cluster);
        if now != previous {
            // Not the old bundle: it must be the complete new one.
            check_complete(&cluster, &state).unwrap_or_else(|e| panic!("kill point {k} ({delay:?}): a torn bundle: {e}"));
            swapped += 1;
            previous = now;
            next = 1 - next;
        }
    }
    eprintln!("{KILL_POINTS} kill points over {full:?}: {killed} killed, {finished} finished, {swapped} new bundles");
    assert!(killed >= KILL_POINTS * 3 / 4, "only {killed} runs were killed: the kill points missed the run");
    // The next run cleans up whatever the killed runs left beside the bundle.
    let last = run_cmd(generate_cmd(dir, CONFIGS[next]));
    assert!(last.ok(), "{}", last.describe());
    check_complete(&cluster, &state).expect("the last bundle is complete");
    let left: Vec<String> =
        std::fs::read_dir(dir.join("out")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    let mut left = left;
    left.sort();
    assert_eq!(left, [".kubebundle-kill.lock", "kill"], "leftovers beside the bundle");
}

#[test]
fn a_second_concurrent_run_is_refused_by_the_lock() {
    let tmp = temp_dir("lock");
    let dir = tmp.path();
    std::fs::write(dir.join(CONFIGS[0]), config("8760h")).unwrap();
    std::fs::write(dir.join(CONFIGS[1]), config("8000h")).unwrap();
    let first = run_cmd(generate_cmd(dir, CONFIGS[0]));
    assert!(first.ok(), "{}", first.describe());
    // Start a run, and a second one while the first holds the lock (retry if the first
    // happened to finish before the second started). Whichever takes the lock first runs; the
    // other must be refused.
    for round in 0..10 {
        // Each round re-signs every leaf (the other config than the bundle's), so it takes a while.
        let config = CONFIGS[1 - round % 2];
        let a = generate_cmd(dir, config).spawn().expect("spawn");
        std::thread::sleep(Duration::from_millis(20));
        let b = run_cmd(generate_cmd(dir, config));
        let a = a.wait_with_output().expect("wait");
        let a_err = String::from_utf8_lossy(&a.stderr).into_owned();
        let refused = match (a.status.success(), b.ok()) {
            (true, true) => continue,
            (true, false) => (b.code, b.stderr.clone()),
            (false, true) => (a.status.code(), a_err),
            (false, false) => panic!("both runs failed:\n{a_err}\n{}", b.describe()),
        };
        assert_eq!(refused.0, Some(1), "{}", refused.1);
        assert!(refused.1.contains("another kubebundle command is writing"), "wrong reason: {}", refused.1);
        return;
    }
    panic!("the two runs never overlapped");
}

// =============================================================================================
// Shared helpers of the tests below

fn send(child: &std::process::Child, signal: i32) {
    // SAFETY: kill takes a pid and a signal number; the child has not been waited for yet.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill({}, {signal}) failed", child.id());
}

/// How a run that was sent `signal` may end: killed by it, or (SIGTERM, once the handler is
/// installed) exited with 128 + SIGTERM after its cleanup, or finished just before it.
fn check_status(status: &std::process::ExitStatus, signal: i32) -> Result<(), String> {
    let ok = status.signal() == Some(signal) || status.success() || (signal == libc::SIGTERM && status.code() == Some(128 + libc::SIGTERM));
    if ok {
        Ok(())
    } else {
        Err(format!("after signal {signal} the run ended with {status:?}"))
    }
}

/// The private directories under `root` that `before` did not list: what a run made and left.
/// A SIGTERM may come before the run swept what an earlier SIGKILLed run left (the sweep is the
/// next run's job, checked at the end); what the terminated run made itself must be gone.
fn new_private_dirs(root: &Path, before: &[String]) -> Vec<String> {
    private_dirs(root).into_iter().filter(|d| !before.contains(d)).collect()
}

/// Every `.kubebundle*` directory under `root`: staging, scratch, backups or archives in the
/// making. None may outlive the command that made it.
fn private_dirs(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if !ft.is_dir() {
                continue;
            }
            if e.file_name().to_string_lossy().starts_with(".kubebundle") {
                found.push(e.path().strip_prefix(root).unwrap().display().to_string());
            } else {
                stack.push(e.path());
            }
        }
    }
    found.sort();
    found
}

/// What makes a file hold a secret: a private key, a kubeconfig's client key, a bootstrap
/// token, or an encryption configuration. Gzip files are read unpacked.
fn secret_in(bytes: &[u8]) -> Option<String> {
    let mut data = bytes.to_vec();
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        if flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).is_ok() {
            data = out;
        }
    }
    let text = String::from_utf8_lossy(&data);
    for needle in ["PRIVATE KEY", "client-key-data", "EncryptionConfiguration", "aescbc"] {
        if text.contains(needle) {
            return Some(needle.to_string());
        }
    }
    find_tokens(&text).first().map(|_| "a bootstrap token".to_string())
}

/// Files holding a secret anywhere under the test's directory `root` except where the bundle
/// `out/<cluster>` keeps them: `state/`, `nodes/*.tar.gz`, and, by design, `join.txt` and the
/// bootstrap-token Secret manifests; and a finished renew's `out/kubebundle-backup-*`.
fn secrets_outside(root: &Path, cluster: &str) -> Vec<String> {
    let allowed = |rel: &str| {
        let Some(inside) = rel.strip_prefix(&format!("out/{cluster}/")) else {
            return rel.starts_with("out/kubebundle-backup-");
        };
        inside.starts_with("state/")
            || inside == "join.txt"
            || (inside.starts_with("manifests/bootstrap-token-") && inside.ends_with(".yaml"))
            || inside.strip_prefix("nodes/").is_some_and(|n| !n.contains('/') && n.ends_with(".tar.gz"))
    };
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if !ft.is_file() || allowed(&rel) {
                continue;
            }
            if let Some(what) = std::fs::read(&p).ok().and_then(|b| secret_in(&b)) {
                found.push(format!("{rel} ({what})"));
            }
        }
    }
    found.sort();
    found
}

/// A kubebundle command in `dir`, hermetic, whose system temporary directory is `dir/tmp` (so
/// scratch directories made there are seen by the checks).
fn command(dir: &Path, args: &[&str]) -> Command {
    let mut c = hermetic(bin(), dir);
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    c.current_dir(dir).env("TMPDIR", &tmp).args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

fn run_in(dir: &Path, args: &[&str]) -> Run {
    run_cmd(command(dir, args))
}

/// `cp -a`: modes and hard links kept.
fn copy_bundle(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    let mut c = Command::new("cp");
    c.arg("-a").arg(from).arg(to);
    let r = run_cmd(c);
    assert!(r.ok(), "{}", r.describe());
}

/// notAfter (Unix seconds) of the certificate at `inner` in the tarball `path`.
fn not_after_in(path: &Path, inner: &str) -> i64 {
    let files = corp::tarball_files(path);
    let pem = files.get(inner).unwrap_or_else(|| panic!("{} holds no {inner}", path.display()));
    let (_, p) = x509_parser::pem::parse_x509_pem(pem).unwrap();
    let (_, c) = x509_parser::parse_x509_certificate(&p.contents).unwrap();
    c.validity().not_after.timestamp()
}

fn unix(text: &str) -> i64 {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap().unix_timestamp()
}

const YEAR: i64 = 8760 * 3600;

// =============================================================================================
// certs renew and token create, interrupted

const RSA_WORKERS: usize = 40;

fn rsa_config() -> String {
    let mut s = "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nclusterName: kill\nkubernetesVersion: v1.34.1\nencryptionAlgorithm: RSA-2048\n---\napiVersion: kubebundle.dev/v1alpha1\nkind: Inventory\nnodes:\n".to_string();
    for i in 1..=3 {
        s += &format!("- {{name: cp{i}, address: 10.3.0.{i}, roles: [control-plane, etcd]}}\n");
    }
    for i in 0..RSA_WORKERS {
        s += &format!("- {{name: w{i}, address: 10.3.1.{}, roles: [worker]}}\n", i + 1);
    }
    s
}

/// The clock of the generated bundle; every later clock stays within its join token's day.
const T0: &str = "2026-01-01T00:00:00Z";

fn rfc(unix: i64) -> String {
    rfc3339(unix)
}

/// One interruption: `args` run, sent `signal` after `delay` unless done. Returns whether it
/// finished, and whether its SIGTERM handler cleaned up and exited with 128 + SIGTERM. After a
/// SIGTERM no private directory may exist, before any other command runs.
fn interrupt(dir: &Path, args: &[&str], delay: Duration, signal: i32, what: &str) -> (bool, bool) {
    let before = private_dirs(dir);
    let mut child = command(dir, args).spawn().expect("spawn");
    std::thread::sleep(delay);
    let done = child.try_wait().expect("try_wait").is_some();
    if !done {
        send(&child, signal);
    }
    let out = child.wait_with_output().expect("wait");
    if done {
        assert!(out.status.success(), "{what}: the run failed on its own: {}", String::from_utf8_lossy(&out.stderr));
    } else {
        check_status(&out.status, signal).unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    if signal == libc::SIGTERM {
        let left = new_private_dirs(dir, &before);
        assert!(left.is_empty(), "{what}: SIGTERM left {left:?}");
    }
    (done, out.status.code() == Some(128 + libc::SIGTERM))
}

/// After an interruption: `verify` (which also sweeps what a SIGKILL left) passes, nothing
/// private is left, and no secret is anywhere but in the bundle's state and tarballs.
fn check_after(dir: &Path, verify_at: &str, what: &str) {
    let v = run_in(dir, &["verify", "out/kill", "--now", verify_at]);
    assert!(v.ok(), "{what}: verify failed: {}", v.describe());
    let left = private_dirs(dir);
    assert!(left.is_empty(), "{what}: left after the next command swept: {left:?}");
    let secrets = secrets_outside(dir, "kill");
    assert!(secrets.is_empty(), "{what}: secrets outside the bundle's state and tarballs: {secrets:?}");
}

/// Files whose bytes differ between two digests (added and removed ones too).
fn changed(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>) -> BTreeSet<String> {
    a.keys().chain(b.keys()).filter(|k| a.get(*k) != b.get(*k)).cloned().collect()
}

/// Every backup beside the bundle is whole: the leaf records and every node's tarball.
fn check_backups(dir: &Path, nodes: &[String]) {
    for e in std::fs::read_dir(dir.join("out")).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("kubebundle-backup-") {
            continue;
        }
        let mut want: BTreeSet<String> = nodes.iter().map(|n| format!("nodes/{n}.tar.gz")).collect();
        want.insert("state/leaves.json".into());
        let have: BTreeSet<String> = digest(&e.path()).into_keys().collect();
        assert_eq!(have, want, "{name} is not a whole backup");
    }
}

#[test]
fn renew_and_token_create_interrupted_leave_the_old_or_the_new_bundle_and_no_secret() {
    let tmp = temp_dir("kill-rsa");
    let template = tmp.path().join("template");
    std::fs::create_dir_all(&template).unwrap();
    std::fs::write(template.join("rsa.yaml"), rsa_config()).unwrap();
    let start = Instant::now();
    let g = run_in(&template, &["generate", "--config", "rsa.yaml", "--out", "out", "--now", T0]);
    assert!(g.ok(), "{}", g.describe());
    eprintln!("RSA bundle of {} nodes generated in {:?}", RSA_WORKERS + 3, start.elapsed());
    let nodes: Vec<String> = (1..=3).map(|i| format!("cp{i}")).chain((0..RSA_WORKERS).map(|i| format!("w{i}"))).collect();
    let t0 = unix(T0);

    // ---- certs renew all, each run an hour and k minutes after T0 (its own backup name).
    let dir = tmp.path().join("renew");
    copy_bundle(&template.join("out"), &dir);
    let renew_at = |k: usize| rfc(t0 + 3600 + 60 * k as i64);
    let start = Instant::now();
    let first = run_in(&dir, &["certs", "renew", "all", "--dir", "out/kill", "--now", &renew_at(0)]);
    assert!(first.ok(), "{}", first.describe());
    // The interruption points spread over the time a run takes; a run that finishes before its
    // point shows the machine is faster now than the first measure, so later points come sooner.
    let mut full = start.elapsed();
    let mut previous = digest(&dir.join("out/kill"));
    let every_tarball: BTreeSet<String> =
        nodes.iter().map(|n| format!("nodes/{n}.tar.gz")).chain(["state/leaves.json".to_string()]).collect();
    const RENEW_POINTS: usize = 20;
    let (mut interrupted, mut swapped, mut handled) = (0, 0, 0);
    for k in 0..RENEW_POINTS {
        let signal = if k % 2 == 0 { libc::SIGKILL } else { libc::SIGTERM };
        let delay = full.mul_f64((k / 2) as f64 / (RENEW_POINTS / 2) as f64 + 0.05);
        let now = renew_at(k + 1);
        let what = format!("renew point {k} (signal {signal}, {delay:?})");
        let (done, cleaned) = interrupt(&dir, &["certs", "renew", "all", "--dir", "out/kill", "--now", &now], delay, signal, &what);
        interrupted += usize::from(!done);
        if done {
            full = full.min(delay.mul_f64(0.9));
        }
        handled += usize::from(cleaned);
        check_after(&dir, &rfc(t0 + 3 * 3600), &what);
        check_backups(&dir, &nodes);
        let current = digest(&dir.join("out/kill"));
        let diff = changed(&previous, &current);
        if diff.is_empty() {
            assert!(!done, "{what}: finished but changed nothing");
            continue;
        }
        // Not the old bundle: the whole new one. Every tarball and the leaf records changed,
        // nothing else, and the renewed certificates carry this run's clock.
        assert_eq!(diff, every_tarball, "{what}: a torn bundle");
        for (node, inner) in [("cp2", "etc/kubernetes/pki/apiserver.crt"), ("w7", "var/lib/kubelet/pki/kubelet.crt")] {
            let end = not_after_in(&dir.join(format!("out/kill/nodes/{node}.tar.gz")), inner);
            assert_eq!(end, unix(&now) + YEAR, "{what}: {node}/{inner}");
        }
        assert!(dir.join(format!("out/kubebundle-backup-{}", now.replace(['-', ':'], ""))).is_dir(), "{what}: no backup");
        previous = current;
        swapped += 1;
    }
    eprintln!("renew: {RENEW_POINTS} points over {full:?}: {interrupted} interrupted ({handled} SIGTERMs handled), {swapped} new bundles");
    assert!(interrupted >= RENEW_POINTS / 2, "only {interrupted} renew runs were interrupted");
    assert!(handled > 0, "no SIGTERM reached the handler");

    // ---- token create.
    let dir = tmp.path().join("token");
    copy_bundle(&template.join("out"), &dir);
    let tokens = |dir: &Path| std::fs::read_to_string(dir.join("out/kill/state/tokens.yaml")).unwrap().matches("token:").count();
    let now = rfc(t0 + 3600);
    let start = Instant::now();
    let first = run_in(&dir, &["token", "create", "--dir", "out/kill", "--now", &now]);
    assert!(first.ok(), "{}", first.describe());
    let mut full = start.elapsed();
    let mut previous = digest(&dir.join("out/kill"));
    let mut count = tokens(&dir);
    const TOKEN_POINTS: usize = 16;
    let (mut interrupted, mut swapped) = (0, 0);
    for k in 0..TOKEN_POINTS {
        let signal = if k % 2 == 0 { libc::SIGKILL } else { libc::SIGTERM };
        let delay = full.mul_f64((k / 2) as f64 / (TOKEN_POINTS / 2) as f64 + 0.05);
        let what = format!("token point {k} (signal {signal}, {delay:?})");
        let (done, _) = interrupt(&dir, &["token", "create", "--dir", "out/kill", "--now", &now], delay, signal, &what);
        interrupted += usize::from(!done);
        if done {
            full = full.min(delay.mul_f64(0.9));
        }
        check_after(&dir, &rfc(t0 + 2 * 3600), &what);
        let current = digest(&dir.join("out/kill"));
        let diff = changed(&previous, &current);
        if diff.is_empty() {
            assert!(!done, "{what}: finished but changed nothing");
            continue;
        }
        // The whole new bundle: one more token, its Secret, cluster-info's signatures; the
        // tarballs and everything else as they were.
        assert_eq!(tokens(&dir), count + 1, "{what}: {diff:?}");
        let secrets: Vec<&String> = diff.iter().filter(|p| p.starts_with("manifests/bootstrap-token-")).collect();
        assert_eq!(secrets.len(), 1, "{what}: {diff:?}");
        assert!(current.contains_key(secrets[0].as_str()), "{what}: {diff:?}");
        let expected: BTreeSet<String> =
            ["state/tokens.yaml", "manifests/cluster-info.yaml", secrets[0].as_str()].iter().map(|s| s.to_string()).collect();
        assert!(diff.is_subset(&expected) && diff.contains("state/tokens.yaml"), "{what}: a torn bundle: {diff:?}");
        count += 1;
        previous = current;
        swapped += 1;
    }
    eprintln!("token create: {TOKEN_POINTS} points over {full:?}: {interrupted} interrupted, {swapped} new bundles");
}

// =============================================================================================
// Writers at the same time

#[derive(Clone, Copy, Debug, PartialEq)]
enum Writer {
    Generate,
    Renew,
    Create,
    Delete,
}

const WRITERS: [Writer; 4] = [Writer::Generate, Writer::Renew, Writer::Create, Writer::Delete];
const LOCK_MESSAGE: &str = "another kubebundle command is writing";

/// The small bundle the concurrency tests share: `out/pair`, made at T0, plus two tokens to
/// delete. Returns their ids.
fn pair_template(dir: &Path, unpacked: bool) -> Vec<String> {
    std::fs::write(dir.join("pair.yaml"), pair_config(None)).unwrap();
    let mut args = vec!["generate", "--config", "pair.yaml", "--out", "out", "--now", T0];
    if unpacked {
        args.push("--unpacked");
    }
    let g = run_in(dir, &args);
    assert!(g.ok(), "{}", g.describe());
    (0..2)
        .map(|_| {
            let c = run_in(dir, &["token", "create", "--dir", "out/pair", "--now", T0, "--ttl", "48h"]);
            assert!(c.ok(), "{}", c.describe());
            created_id(&c.stderr)
        })
        .collect()
}

fn pair_config(extra: Option<&str>) -> String {
    let mut nodes = vec![("cp1", "10.9.0.1", "control-plane, etcd"), ("w1", "10.9.0.11", "worker")];
    if let Some(n) = extra {
        nodes.push((n, "10.9.0.99", "worker"));
    }
    live_config("pair", &nodes)
}

fn created_id(stderr: &str) -> String {
    let rest = stderr.split("created bootstrap token ").nth(1).unwrap_or_else(|| panic!("no token id in {stderr}"));
    rest.split_whitespace().next().unwrap().to_string()
}

/// The command of writer `w`, run number `tag` (0 or 1) of a pair.
fn writer_args(w: Writer, tag: usize, delete_ids: &[String]) -> Vec<String> {
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<String>>();
    match w {
        Writer::Generate => s(&["generate", "--config", &format!("g{tag}.yaml"), "--out", "out", "--now", &rfc(unix(T0) + 3 * 3600)]),
        Writer::Renew => s(&["certs", "renew", "all", "--dir", "out/pair", "--now", &rfc(unix(T0) + 3600 * (1 + tag as i64))]),
        Writer::Create => s(&["token", "create", "--dir", "out/pair", "--now", T0, "--ttl", "48h"]),
        Writer::Delete => s(&["token", "delete", &delete_ids[tag], "--dir", "out/pair", "--now", T0]),
    }
}

struct Outcome {
    writer: Writer,
    tag: usize,
    ok: bool,
    stderr: String,
    finished: Instant,
}

fn tokens_yaml(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("out/pair/state/tokens.yaml")).unwrap()
}

/// Whether run `o`'s effect is in the final bundle (or, when a later run of the same kind
/// replaced it, in what that run kept of it: its backup, or the removed node's archive).
fn check_effect(dir: &Path, o: &Outcome, later: Option<&Outcome>, delete_ids: &[String]) -> Result<(), String> {
    let bundle = dir.join("out/pair");
    match o.writer {
        Writer::Create => {
            let id = created_id(&o.stderr);
            if !tokens_yaml(dir).contains(&format!("token: {id}.")) {
                return Err(format!("token {id} is not in state/tokens.yaml"));
            }
            if !bundle.join(format!("manifests/bootstrap-token-{id}.yaml")).is_file() {
                return Err(format!("token {id} has no Secret manifest"));
            }
        }
        Writer::Delete => {
            let id = &delete_ids[o.tag];
            if tokens_yaml(dir).contains(&format!("token: {id}.")) || bundle.join(format!("manifests/bootstrap-token-{id}.yaml")).exists() {
                return Err(format!("deleted token {id} is back"));
            }
        }
        Writer::Renew => {
            let at = unix(T0) + 3600 * (1 + o.tag as i64);
            // Its renewal is in the bundle, or was the input of the renewal that followed (whose
            // backup holds what it replaced).
            let tarball = match later {
                None => bundle.join("nodes/cp1.tar.gz"),
                Some(l) => dir.join(format!(
                    "out/kubebundle-backup-{}/nodes/cp1.tar.gz",
                    rfc(unix(T0) + 3600 * (1 + l.tag as i64)).replace(['-', ':'], "")
                )),
            };
            let end = not_after_in(&tarball, "etc/kubernetes/pki/apiserver.crt");
            if end != at + YEAR {
                return Err(format!("cp1/apiserver in {} ends at {}, not {}", tarball.display(), rfc(end), rfc(at + YEAR)));
            }
        }
        Writer::Generate => {
            let node = format!("g{}", o.tag);
            let kept = match later {
                None => bundle.join(format!("nodes/{node}.tar.gz")).is_file(),
                Some(_) => std::fs::read_dir(dir.join("out/.removed/pair"))
                    .map(|rd| rd.flatten().any(|e| e.file_name().to_string_lossy().starts_with(&format!("{node}-"))))
                    .unwrap_or(false),
            };
            if !kept {
                return Err(format!("node {node} is neither in the bundle nor archived by the run after"));
            }
        }
    }
    Ok(())
}

#[test]
fn every_pair_of_writers_is_serialised_by_the_lock_and_loses_nothing() {
    let tmp = temp_dir("pairs");
    let template = tmp.path().join("template");
    std::fs::create_dir_all(&template).unwrap();
    let delete_ids = pair_template(&template, false);
    let refused = AtomicUsize::new(0);
    let mut pairs = Vec::new();
    for (i, a) in WRITERS.iter().enumerate() {
        for b in &WRITERS[i..] {
            pairs.push((*a, *b));
        }
    }
    assert_eq!(pairs.len(), 10);
    for (n, (a, b)) in pairs.iter().enumerate() {
        let dir = tmp.path().join(format!("pair{n}"));
        copy_bundle(&template.join("out"), &dir);
        for tag in 0..2 {
            std::fs::write(dir.join(format!("g{tag}.yaml")), pair_config(Some(&format!("g{tag}")))).unwrap();
        }
        let what = format!("{a:?} + {b:?}");
        // Both at once; each one's end is noted, the order in which their changes were made.
        let runs: Vec<(Writer, usize)> = vec![(*a, 0), (*b, 1)];
        let children: Vec<std::process::Child> = runs
            .iter()
            .map(|(w, tag)| {
                let args = writer_args(*w, *tag, &delete_ids);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                command(&dir, &args).spawn().expect("spawn")
            })
            .collect();
        let mut outcomes: Vec<Outcome> = Vec::new();
        let mut pending: Vec<(usize, std::process::Child)> = children.into_iter().enumerate().collect();
        while !pending.is_empty() {
            let mut i = 0;
            while i < pending.len() {
                if pending[i].1.try_wait().expect("try_wait").is_some() {
                    let (k, child) = pending.remove(i);
                    let out = child.wait_with_output().expect("wait");
                    let (writer, tag) = runs[k];
                    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
                    if !out.status.success() {
                        assert_eq!(out.status.code(), Some(1), "{what}: {writer:?} #{tag}: {stderr}");
                        assert!(stderr.contains(LOCK_MESSAGE), "{what}: {writer:?} #{tag} failed for another reason: {stderr}");
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    outcomes.push(Outcome { writer, tag, ok: out.status.success(), stderr, finished: Instant::now() });
                } else {
                    i += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let done: Vec<&Outcome> = outcomes.iter().filter(|o| o.ok).collect();
        assert!(!done.is_empty(), "{what}: both runs failed");
        for (i, o) in done.iter().enumerate() {
            let later = done[i + 1..].iter().copied().find(|l| l.writer == o.writer && l.finished >= o.finished);
            check_effect(&dir, o, later, &delete_ids).unwrap_or_else(|e| panic!("{what}: {:?} #{} succeeded but: {e}", o.writer, o.tag));
        }
        let v = run_in(&dir, &["verify", "out/pair", "--now", &rfc(unix(T0) + 4 * 3600)]);
        assert!(v.ok(), "{what}: {}", v.describe());
        assert!(private_dirs(&dir).is_empty(), "{what}: {:?}", private_dirs(&dir));
    }
    let refused = refused.into_inner();
    eprintln!("10 pairs of writers: {refused} run(s) refused by the lock");
    assert!(refused > 0, "no run was ever refused: the pairs never overlapped");
}

#[test]
fn a_held_lock_refuses_every_writer_at_once_with_the_same_message() {
    let tmp = temp_dir("held");
    let dir = tmp.path();
    let delete_ids = pair_template(dir, true);
    std::fs::write(dir.join("g0.yaml"), pair_config(Some("g0"))).unwrap();
    // An extracted node root, outside any bundle (for the last part).
    let root = dir.join("root");
    copy_bundle(&dir.join("out/pair/nodes/cp1"), &root);
    let real = std::fs::canonicalize(dir.join("out")).unwrap();
    let lock_path = real.join(".kubebundle-pair.lock");
    let holder = std::fs::OpenOptions::new().write(true).open(&lock_path).unwrap();
    holder.lock().unwrap();
    let before = digest(&dir.join("out"));
    let expected = format!(
        "kubebundle: {LOCK_MESSAGE} {} (it holds {})\n  hint: wait for it to finish and run this command again; the lock is released when that process ends\n",
        real.join("pair").display(),
        lock_path.display()
    );
    let mut commands: Vec<Vec<String>> = WRITERS.iter().map(|w| writer_args(*w, 0, &delete_ids)).collect();
    // A node tree inside the bundle takes the bundle's lock, and a link to the bundle too.
    std::os::unix::fs::symlink(real.join("pair"), dir.join("link")).unwrap();
    commands.push(["certs", "renew", "all", "--dir", "out/pair/nodes/cp1", "--now", T0].map(String::from).to_vec());
    commands.push(["token", "create", "--dir", "link", "--now", T0].map(String::from).to_vec());
    for args in &commands {
        let start = Instant::now();
        let r = run_in(dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(r.code, Some(1), "{args:?}: {}", r.describe());
        let message = &r.stderr[r.stderr.find("kubebundle: ").unwrap_or(0)..];
        assert_eq!(message, expected, "{args:?}");
        assert!(start.elapsed() < Duration::from_secs(20), "{args:?} waited for the lock");
    }
    assert_eq!(before, digest(&dir.join("out")), "a refused writer changed something");
    drop(holder);
    for args in &commands[..WRITERS.len()] {
        let r = run_in(dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(r.ok(), "{args:?} after the lock was released: {}", r.describe());
    }

    // A tree outside any bundle (an extracted node root): a lock on its directory itself.
    let etc = std::fs::canonicalize(root.join("cp1/etc/kubernetes")).unwrap();
    let holder = std::fs::File::open(&etc).unwrap();
    holder.lock().unwrap();
    let expected = format!(
        "kubebundle: {LOCK_MESSAGE} {} (it holds a lock on {} itself)\n  hint: wait for it to finish and run this command again; the lock is released when that process ends\n",
        etc.display(),
        etc.display()
    );
    for target in ["root/cp1", "root/cp1/etc/kubernetes"] {
        let r = run_in(dir, &["certs", "renew", "all", "--dir", target, "--now", T0]);
        assert_eq!(r.code, Some(1), "{}", r.describe());
        assert_eq!(&r.stderr[r.stderr.find("kubebundle: ").unwrap_or(0)..], expected);
    }
    assert_eq!(std::fs::read_dir(&etc).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with('.')).count(), 0);
    drop(holder);
    let r = run_in(dir, &["certs", "renew", "all", "--dir", "root/cp1", "--now", T0]);
    assert!(r.ok(), "{}", r.describe());
}
