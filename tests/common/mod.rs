//! Shared helpers for kubebundle's integration tests.
//!
//! Everything here is hermetic: each run gets its own temp dir, a fixed clock (`--now`), a
//! private HOME and KUBECONFIG (so `~/.kube` is never read or written), and no network.
//! Certificates are checked with `openssl`, kubeconfigs and manifests are parsed with `kubectl`,
//! tarballs are listed and unpacked with `tar`.
#![allow(dead_code)]

pub mod checks;
pub mod corp;
pub mod model;
pub mod rotation;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use model::{Model, Node, Role};

/// The fixed clock every test run uses (unless the test is about the clock).
pub const NOW_UNIX: i64 = 1_748_779_200; // 2025-06-01T12:00:00Z
pub const BACKDATE_SECS: i64 = 300;
pub const HOUR: i64 = 3600;
pub const DAY: i64 = 24 * HOUR;

/// How long one command may run before the test gives up on it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(150);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kubebundle")
}

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures")
}

pub fn fixture(name: &str) -> String {
    let p = fixtures_dir().join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", p.display()))
}

// ---------------------------------------------------------------------------------------------
// Time

/// (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn split_ts(ts: i64) -> (i64, u32, u32, i64, i64, i64) {
    let days = ts.div_euclid(DAY);
    let secs = ts.rem_euclid(DAY);
    let (y, m, d) = civil_from_days(days);
    (y, m, d, secs / 3600, (secs % 3600) / 60, secs % 60)
}

/// `2025-06-01T12:00:00Z`
pub fn rfc3339(ts: i64) -> String {
    let (y, m, d, hh, mm, ss) = split_ts(ts);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// `2025-06-01 12:00:00`, what `TZ=UTC tar --full-time -tv` prints.
pub fn tar_time(ts: i64) -> String {
    let (y, m, d, hh, mm, ss) = split_ts(ts);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}")
}

/// Go duration strings as kubeadm writes them: `8760h`, `24h0m0s`, `90m`, `30s`.
pub fn parse_go_duration(s: &str) -> Option<i64> {
    let mut total = 0i64;
    let mut num = String::new();
    if s.is_empty() {
        return None;
    }
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
        } else {
            let n: i64 = num.parse().ok()?;
            num.clear();
            total += n * match c {
                'h' => 3600,
                'm' => 60,
                's' => 1,
                _ => return None,
            };
        }
    }
    if !num.is_empty() {
        return None;
    }
    Some(total)
}

// ---------------------------------------------------------------------------------------------
// Collecting failures: a test reports everything that is wrong, not only the first thing.

#[derive(Default)]
pub struct Failures {
    pub list: Vec<String>,
    pub notes: Vec<String>,
}

impl Failures {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn fail(&mut self, msg: impl Into<String>) {
        self.list.push(msg.into());
    }
    pub fn note(&mut self, msg: impl Into<String>) {
        self.notes.push(msg.into());
    }
    pub fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) -> bool {
        if !ok {
            self.list.push(msg());
        }
        ok
    }
    pub fn eq<T: PartialEq + Debug + ?Sized>(&mut self, what: &str, expected: &T, actual: &T) -> bool {
        if expected != actual {
            self.list.push(format!("{what}: expected {expected:?}, got {actual:?}"));
            false
        } else {
            true
        }
    }
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
    /// Panics with every collected failure.
    pub fn finish(self, test: &str) {
        for n in &self.notes {
            eprintln!("note: {n}");
        }
        if !self.list.is_empty() {
            let mut msg = format!("{test}: {} failure(s):\n", self.list.len());
            for (i, f) in self.list.iter().enumerate() {
                if i == 150 {
                    msg.push_str(&format!("  ... and {} more\n", self.list.len() - 150));
                    break;
                }
                msg.push_str(&format!("  - {f}\n"));
            }
            panic!("{msg}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running commands

#[derive(Debug, Clone)]
pub struct Run {
    pub cmdline: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub stdout_bytes: Vec<u8>,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
    pub fn describe(&self) -> String {
        format!(
            "`{}` exited with {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmdline,
            self.code,
            truncate(&self.stdout, 4000),
            truncate(&self.stderr, 4000)
        )
    }
}

pub fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        s.to_string()
    } else {
        let mut end = n;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}... [{} more bytes]", &s[..end], s.len() - end)
    }
}

/// Runs a command to completion with a timeout, stdin closed. Never panics for a non-zero exit.
/// Copies a directory of regular files as they are (modes follow the umask).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Whether the etcd suites run: etcd and etcdctl must be installed (a missing one fails loudly),
/// unless KUBEBUNDLE_SKIP_ETCD=1 skips them on purpose.
pub fn etcd_available() -> bool {
    if std::env::var("KUBEBUNDLE_SKIP_ETCD").is_ok_and(|v| v == "1") {
        eprintln!("NOTE: KUBEBUNDLE_SKIP_ETCD=1: the etcd tests are skipped on purpose");
        return false;
    }
    let ok = |p: &str, arg: &str| Command::new(p).arg(arg).output().is_ok_and(|o| o.status.success());
    assert!(
        ok("etcd", "--version") && ok("etcdctl", "version"),
        "etcd and etcdctl are needed (apt-get install etcd-server etcd-client; .ci/run does it). Set KUBEBUNDLE_SKIP_ETCD=1 to skip on purpose."
    );
    true
}

/// etcdctl (API v3) with a CA and a client cert/key pair, bounded in time.
pub fn etcdctl(endpoints: &str, ca: &Path, cert: &Path, key: &Path, args: &[&str]) -> Run {
    let mut c = Command::new("etcdctl");
    c.env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoints, "--dial-timeout", "3s", "--command-timeout", "5s"])
        .arg("--cacert")
        .arg(ca)
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .args(args);
    run_cmd(c)
}

/// The argv of a systemd unit's ExecStart, `\` continuation lines joined (written here, not taken
/// from the crate, so the tests do not read units with the code under test).
pub fn exec_start(unit: &str) -> Vec<String> {
    let mut joined = String::new();
    let mut inside = false;
    for line in unit.lines() {
        let l = line.trim();
        match l.strip_prefix("ExecStart=") {
            Some(rest) if !inside => {
                inside = true;
                joined.push_str(rest);
            }
            _ if inside => {
                joined.push(' ');
                joined.push_str(l);
            }
            _ => continue,
        }
        match joined.trim_end().strip_suffix('\\') {
            Some(j) => joined = j.to_string(),
            None => break,
        }
    }
    assert!(!joined.is_empty(), "no ExecStart in the unit:\n{unit}");
    joined.split_whitespace().map(String::from).collect()
}

pub fn run_cmd(mut cmd: Command) -> Run {
    let cmdline = format!("{cmd:?}");
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Run { cmdline, code: None, stdout: String::new(), stderr: format!("spawn failed: {e}"), stdout_bytes: vec![] },
    };
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) => {
                if start.elapsed() > COMMAND_TIMEOUT {
                    let _ = child.kill();
                    timed_out = true;
                    break child.wait().ok();
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => break None,
        }
    };
    let stdout_bytes = t_out.join().unwrap_or_default();
    let mut stderr = String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned();
    if timed_out {
        stderr.push_str(&format!("\n[test harness: killed after {COMMAND_TIMEOUT:?}]"));
    }
    Run {
        cmdline,
        code: if timed_out { None } else { status.and_then(|s| s.code()) },
        stdout: String::from_utf8_lossy(&stdout_bytes).into_owned(),
        stderr,
        stdout_bytes,
    }
}

/// A command with a hermetic environment rooted at `home`: private HOME and KUBECONFIG,
/// no SOURCE_DATE_EPOCH, UTC, C locale.
pub fn hermetic(program: &str, home: &Path) -> Command {
    let mut c = Command::new(program);
    let h = home.join(".home");
    let _ = std::fs::create_dir_all(&h);
    c.env("HOME", &h)
        .env("KUBECONFIG", h.join(".kube/config-that-does-not-exist"))
        .env_remove("SOURCE_DATE_EPOCH")
        .env("TZ", "UTC")
        .env("LC_ALL", "C");
    c
}

/// `kubebundle ARGS` run in `dir` (its cwd) with a hermetic environment.
pub fn kubebundle(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = hermetic(bin(), dir);
    c.current_dir(dir).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    run_cmd(c)
}

static SCRATCH_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory for a test's own files (config, output, scratch). Kept under the target
/// dir's tmp so that nothing outside the build tree is touched.
pub fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("kb-{prefix}-")).tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("create temp dir")
}

pub fn unique_name(stem: &str) -> String {
    format!("{stem}-{}", SCRATCH_COUNTER.fetch_add(1, Ordering::SeqCst))
}

pub fn openssl(args: &[&str]) -> Run {
    let mut c = Command::new("openssl");
    c.args(args).env("LC_ALL", "C").env("TZ", "UTC");
    run_cmd(c)
}

/// HMAC-SHA256 by openssl, base64url without padding (a JWS signature).
pub fn openssl_hs256(secret: &str, input: &str, scratch: &Path) -> String {
    let f = scratch.join("jws-input");
    std::fs::write(&f, input).unwrap();
    let r = openssl(&[
        "dgst",
        "-sha256",
        "-mac",
        "HMAC",
        "-macopt",
        &format!("key:{secret}"),
        "-binary",
        "-out",
        scratch.join("mac").to_str().unwrap(),
        f.to_str().unwrap(),
    ]);
    assert!(r.ok(), "{}", r.describe());
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, std::fs::read(scratch.join("mac")).unwrap())
}

/// `kubectl ARGS` with HOME and KUBECONFIG pointing into `scratch`.
pub fn kubectl(scratch: &Path, args: &[&str]) -> Run {
    let mut c = hermetic("kubectl", scratch);
    c.args(args);
    run_cmd(c)
}

/// Parses a YAML file (one or more documents, each with apiVersion and kind) into JSON values
/// with kubectl, offline (`kubectl label --local`). The label added to metadata is removed.
pub fn yaml_file_to_json(scratch: &Path, file: &Path) -> Result<Vec<serde_json::Value>, String> {
    let r = kubectl(scratch, &["label", "--local", "-f", file.to_str().unwrap(), "kubebundle-test/parsed=yes", "-o", "json"]);
    if !r.ok() {
        return Err(r.describe());
    }
    let mut out = Vec::new();
    for v in serde_json::Deserializer::from_str(&r.stdout).into_iter::<serde_json::Value>() {
        let v = v.map_err(|e| format!("kubectl printed invalid JSON: {e}"))?;
        if v["kind"] == "List" {
            if let Some(items) = v["items"].as_array() {
                out.extend(items.iter().cloned());
            }
        } else {
            out.push(v);
        }
    }
    for v in &mut out {
        if let Some(meta) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            if let Some(labels) = meta.get_mut("labels").and_then(|l| l.as_object_mut()) {
                labels.remove("kubebundle-test/parsed");
                if labels.is_empty() {
                    meta.remove("labels");
                }
            }
            if meta.is_empty() {
                v.as_object_mut().unwrap().remove("metadata");
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Generated output

pub struct Generated {
    /// Keeps the temp dir alive.
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub out: PathBuf,
    /// `out/<clusterName>`
    pub cluster: PathBuf,
    pub run: Run,
    pub model: Model,
}

impl Generated {
    pub fn root(&self) -> &Path {
        self.dir.path()
    }
    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.cluster.join("nodes").join(node)
    }
    pub fn state(&self, rel: &str) -> PathBuf {
        self.cluster.join("state").join(rel)
    }
    /// Runs `generate` again on the same out dir, with another config text.
    pub fn regenerate(&mut self, model: Model, config_text: &str) -> Result<(), String> {
        std::fs::write(&self.config_path, config_text).map_err(|e| e.to_string())?;
        let run = run_generate(self.dir.path(), &self.config_path, &self.out, &[]);
        if !run.ok() {
            return Err(run.describe());
        }
        self.run = run;
        self.model = model;
        Ok(())
    }
}

fn run_generate(dir: &Path, config: &Path, out: &Path, extra: &[&str]) -> Run {
    let now = rfc3339(NOW_UNIX);
    let mut args =
        vec!["generate", "--unpacked", "--config", config.to_str().unwrap(), "--out", out.to_str().unwrap(), "--now", now.as_str()];
    args.extend_from_slice(extra);
    kubebundle(dir, &args, &[])
}

/// Writes `config_text` to a fresh temp dir and runs `kubebundle generate` on it with the fixed
/// clock. `model` describes what the config means (the expected facts).
pub fn generate(prefix: &str, model: &Model, config_text: &str) -> Result<Generated, String> {
    let dir = temp_dir(prefix);
    let config_path = dir.path().join("cluster.yaml");
    std::fs::write(&config_path, config_text).map_err(|e| e.to_string())?;
    let out = dir.path().join("out");
    let run = run_generate(dir.path(), &config_path, &out, &[]);
    if !run.ok() {
        return Err(format!("generate failed:\n{}\n--- config ---\n{}", run.describe(), config_text));
    }
    let cluster = out.join(&model.cluster_name);
    if !cluster.is_dir() {
        return Err(format!("generate exited 0 but {} is not a directory; out contains {:?}", cluster.display(), list_dir(&out)));
    }
    verify_bundle(&cluster, Some(&rfc3339(NOW_UNIX)))?;
    Ok(Generated { dir, config_path, out, cluster, run, model: model.clone() })
}

pub fn generate_model(prefix: &str, model: &Model) -> Result<Generated, String> {
    generate(prefix, model, &model.to_yaml())
}

// ---------------------------------------------------------------------------------------------
// File system

pub fn list_dir(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(p) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => vec![],
    };
    v.sort();
    v
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    File { mode: u32, bytes: Vec<u8> },
    Dir { mode: u32 },
    Symlink { target: String },
    Other,
}

/// Every entry under `root` (not `root` itself), keyed by its relative path with `/` separators.
pub fn walk(root: &Path) -> BTreeMap<String, Entry> {
    fn go(root: &Path, dir: &Path, out: &mut BTreeMap<String, Entry>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let Ok(md) = std::fs::symlink_metadata(&p) else { continue };
            let mode = md.permissions().mode() & 0o7777;
            if md.file_type().is_symlink() {
                let target = std::fs::read_link(&p).map(|t| t.to_string_lossy().into_owned()).unwrap_or_default();
                out.insert(rel, Entry::Symlink { target });
            } else if md.is_dir() {
                out.insert(rel, Entry::Dir { mode });
                go(root, &p, out);
            } else if md.is_file() {
                out.insert(rel, Entry::File { mode, bytes: std::fs::read(&p).unwrap_or_default() });
            } else {
                out.insert(rel, Entry::Other);
            }
        }
    }
    let mut out = BTreeMap::new();
    go(root, root, &mut out);
    out
}

pub fn mode_of(p: &Path) -> Option<u32> {
    std::fs::symlink_metadata(p).ok().map(|m| m.permissions().mode() & 0o7777)
}

pub fn read(p: &Path) -> Option<Vec<u8>> {
    std::fs::read(p).ok()
}

pub fn read_string(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

/// `None` if `out` does not exist or is an empty directory; otherwise what it contains.
pub fn nonempty_contents(out: &Path) -> Option<Vec<String>> {
    if !out.exists() {
        return None;
    }
    let all: Vec<String> = walk(out).keys().cloned().collect();
    if all.is_empty() {
        None
    } else {
        Some(all)
    }
}

// ---------------------------------------------------------------------------------------------
// Bootstrap tokens

pub fn is_token(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 23 && b[6] == b'.' && b.iter().enumerate().all(|(i, c)| i == 6 || c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// Every substring of `text` that looks like a bootstrap token (`[a-z0-9]{6}.[a-z0-9]{16}`),
/// not part of a longer run of such characters.
pub fn find_tokens(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let tokch = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 23 <= b.len() {
        let cand = &text[i..i + 23];
        let before_ok = i == 0 || !(tokch(b[i - 1]) || b[i - 1] == b'.');
        let after_ok = i + 23 == b.len() || !(tokch(b[i + 23]) || b[i + 23] == b'.');
        if before_ok && after_ok && is_token(cand) {
            out.push(cand.to_string());
            i += 23;
        } else {
            i += 1;
        }
    }
    out
}

/// Looks for `<file_name>:<line>:<col>` in `text` and returns the column if found.
pub fn find_position(text: &str, file_name: &str, line: usize) -> Option<u64> {
    let pat = format!("{file_name}:{line}:");
    let mut start = 0;
    while let Some(i) = text[start..].find(&pat) {
        let after = &text[start + i + pat.len()..];
        let digits: String = after.chars().take_while(|c| c.is_ascii_digit()).collect();
        if !digits.is_empty() {
            return digits.parse().ok();
        }
        start += i + pat.len();
    }
    None
}

/// Writes `config_text` into `dir` and generates with the real clock, for tests whose tools
/// (etcd, kubectl) check validity against the real time. Returns `out/<cluster_name>`.
pub fn generate_live(dir: &Path, cluster_name: &str, config_text: &str) -> PathBuf {
    let config = dir.join(format!("{cluster_name}.yaml"));
    std::fs::write(&config, config_text).expect("write config");
    let out = dir.join("out");
    let run = kubebundle(dir, &["generate", "--unpacked", "--config", config.to_str().unwrap(), "--out", out.to_str().unwrap()], &[]);
    assert!(run.ok(), "generate failed: {}", run.describe());
    let cluster = out.join(cluster_name);
    verify_bundle(&cluster, None).unwrap_or_else(|e| panic!("{e}"));
    cluster
}

/// Every bundle the tests generate must pass `kubebundle verify` (at the clock it was made with).
pub fn verify_bundle(cluster: &Path, now: Option<&str>) -> Result<(), String> {
    let mut args = vec!["verify", cluster.to_str().unwrap()];
    if let Some(n) = now {
        args.extend(["--now", n]);
    }
    let run = kubebundle(cluster.parent().unwrap(), &args, &[]);
    if run.ok() {
        Ok(())
    } else {
        let errors: Vec<&str> = run.stdout.lines().filter(|l| l.starts_with("ERROR")).take(20).collect();
        Err(format!("kubebundle verify failed on {}:\n{}\n{}", cluster.display(), errors.join("\n"), run.stderr))
    }
}

/// A config for an ECDSA-P256 cluster of the given (name, address, roles) nodes.
pub fn live_config(cluster_name: &str, nodes: &[(&str, &str, &str)]) -> String {
    let mut s = format!(
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nclusterName: {cluster_name}\nkubernetesVersion: v1.34.1\nencryptionAlgorithm: ECDSA-P256\n---\napiVersion: kubebundle.dev/v1alpha1\nkind: Inventory\nnodes:\n"
    );
    for (name, address, roles) in nodes {
        s += &format!("- {{name: {name}, address: \"{address}\", roles: [{roles}]}}\n");
    }
    s
}

/// Unpacks `tarball` into a fresh `dest` with the system tar, as an installer would.
pub fn extract(tarball: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).expect("create root");
    let mut c = Command::new("tar");
    c.arg("-xzf").arg(tarball).arg("-C").arg(dest);
    let run = run_cmd(c);
    assert!(run.ok(), "tar failed: {}", run.describe());
}

/// A free TCP port on `ip` (bound, read, released).
pub fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0)).and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind a free port")
}

/// A started process that is killed by its pid and reaped when dropped, also when a test panics.
pub struct Proc {
    pub name: String,
    pub child: std::process::Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Proc {
        let file = std::fs::File::create(&log).expect("create log");
        let err = file.try_clone().expect("clone log handle");
        cmd.stdin(Stdio::null()).stdout(file).stderr(err);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc { name: name.to_string(), child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL to this child's own pid; wait reaps it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it returns Some or `limit` passes.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every file under `root`, by relative path, with its bytes (to compare checksums).
pub fn file_bytes(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let (Ok(rel), Ok(bytes)) = (p.strip_prefix(root), std::fs::read(&p)) {
                out.insert(rel.display().to_string(), bytes);
            }
        }
    }
    out
}
