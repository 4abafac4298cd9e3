//! The bad-input corpus: every case of `tests/bad-inputs/cases.tsv` is run through the real
//! binary, and each must be refused the way the manifest says: the exit code, a fragment of
//! stderr that names the problem, a position (`file:line:col`) or field path so the user can
//! find it, no panic, and nothing written.
//!
//! Manifest lines are `file<TAB>exit<TAB>fragment[<TAB>extra args]`; `#` starts a comment.
//! A file is run as `kubebundle generate --config FILE --out OUT --now 2026-01-01T00:00:00Z EXTRA...`.
//! Special names, set up by this test:
//! - `@generated-10mb`: a config padded to more than 10 MiB (not committed), refused in < 5 s;
//! - `@missing`: a --config path that does not exist;
//! - `@unreadable`: a directory given as --config (the tests run as root, where mode 000
//!   files are still readable);
//! - `@usage`: the extra args alone are the command line (`{config}` is a valid config,
//!   `{out}` the out dir);
//! - `@foreign-out`: OUT/kubernetes/ already holds a file kubebundle did not write;
//! - `@other-cluster-out`: OUT/kubernetes/state/cluster.yaml says `clusterName: other`.
//!
//! Every case runs under `prlimit --as=2000000000` when prlimit exists, so an alias bomb that
//! expands in memory dies (and fails the case) instead of swapping the machine.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kubebundle");
const NOW: &str = "2026-01-01T00:00:00Z";
const CASE_TIMEOUT: Duration = Duration::from_secs(20);
/// Alias bombs and the 10 MiB file must be refused at least this fast.
const QUICK: Duration = Duration::from_secs(5);
/// The address-space ceiling of every run (prlimit --as).
const ADDRESS_SPACE: &str = "2000000000";
const MIN_CASES: usize = 200;
const SPECIALS: [&str; 6] = ["@generated-10mb", "@missing", "@unreadable", "@usage", "@foreign-out", "@other-cluster-out"];

/// A small valid config (ECDSA, so a run that wrongly goes through stays fast).
const VALID_CONFIG: &str = "apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
clusterName: kubernetes
kubernetesVersion: v1.34.1
encryptionAlgorithm: ECDSA-P256
---
apiVersion: kubebundle.dev/v1alpha1
kind: Inventory
nodes:
- name: cp1
  address: 10.9.0.11
  roles: [control-plane, etcd]
- name: worker1
  address: 10.9.0.21
  roles: [worker]
";

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("bad-inputs")
}

#[derive(Debug, Clone)]
struct Case {
    line: usize,
    file: String,
    exit: i32,
    fragment: String,
    extra: String,
}

impl Case {
    fn label(&self) -> String {
        if self.extra.is_empty() {
            format!("cases.tsv:{} {}", self.line, self.file)
        } else {
            format!("cases.tsv:{} {} [{}]", self.line, self.file, self.extra)
        }
    }

    /// Alias bombs and the oversized file are the cases that must be refused quickly.
    fn must_be_quick(&self) -> bool {
        self.file == "@generated-10mb" || self.file.starts_with("bomb-")
    }

    /// Problems with the file as a whole, which may be reported with its path alone.
    fn file_level(&self) -> bool {
        ["@generated-10mb", "@missing", "@unreadable"].contains(&self.file.as_str())
            || self.file.starts_with("empty-")
            || self.file.starts_with("enc-")
    }
}

fn read_manifest() -> Vec<Case> {
    let path = corpus_dir().join("cases.tsv");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut cases = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() || raw.starts_with('#') {
            continue;
        }
        let cols: Vec<&str> = raw.split('\t').collect();
        assert!((3..=4).contains(&cols.len()), "cases.tsv:{line}: expected 3 or 4 tab-separated columns, got {}: {raw:?}", cols.len());
        let exit = cols[1].trim().parse().unwrap_or_else(|_| panic!("cases.tsv:{line}: exit code {:?} is not a number", cols[1]));
        assert!(!cols[2].is_empty(), "cases.tsv:{line}: empty fragment");
        cases.push(Case {
            line,
            file: cols[0].trim().to_string(),
            exit,
            fragment: cols[2].to_string(),
            extra: cols.get(3).map(|s| s.trim().to_string()).unwrap_or_default(),
        });
    }
    cases
}

/// Every path under `root` with its kind, mode and content, to prove a run wrote nothing.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (bool, u32, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, (bool, u32, Vec<u8>)>) {
        let Ok(entries) = fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = fs::symlink_metadata(&path) else { continue };
            let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.is_dir() {
                out.insert(rel, (true, mode, Vec::new()));
                walk(root, &path, out);
            } else {
                out.insert(rel, (false, mode, fs::read(&path).unwrap_or_default()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn prlimit_available() -> bool {
    Command::new("prlimit")
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

struct Outcome {
    status: Option<ExitStatus>,
    stderr: String,
    elapsed: Duration,
}

/// Runs the binary with a private HOME, stdin closed, cwd `cwd`, and kills it after CASE_TIMEOUT.
fn run(args: &[String], cwd: &Path, home: &Path, scratch: &Path, limit: bool) -> Outcome {
    let stdout_path = scratch.join("stdout");
    let stderr_path = scratch.join("stderr");
    let mut cmd = if limit {
        let mut c = Command::new("prlimit");
        c.arg(format!("--as={ADDRESS_SPACE}")).arg(BIN);
        c
    } else {
        Command::new(BIN)
    };
    cmd.args(args)
        .current_dir(cwd)
        .env("HOME", home)
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("KUBECONFIG")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(fs::File::create(&stderr_path).expect("stderr file"));
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if start.elapsed() > CASE_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("waiting for {BIN}: {e}"),
        }
    };
    let elapsed = start.elapsed();
    let stderr = String::from_utf8_lossy(&fs::read(&stderr_path).unwrap_or_default()).into_owned();
    Outcome { status, stderr, elapsed }
}

/// Does `text` hold `<path>:<line>:<col>`?
fn names_position(text: &str, path: &str) -> bool {
    text.match_indices(path).any(|(i, _)| {
        let rest = &text[i + path.len()..];
        let mut parts = rest.splitn(4, ':');
        parts.next() == Some("")
            && parts.next().is_some_and(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
            && parts.next().is_some_and(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
    })
}

const FIELD_PATHS: [&str; 5] = ["ClusterConfiguration.", "InitConfiguration.", "Inventory.", "apiVersion", "kind"];

/// The profile file a case's config names (`profile: profiles/x.yaml`), if any.
fn profile_of(config: &Path) -> Option<String> {
    let text = fs::read(config).ok()?;
    let text = String::from_utf8_lossy(&text);
    text.lines().find_map(|l| l.strip_prefix("profile:")).map(|p| p.trim().trim_matches('"').to_string()).filter(|p| p.contains('/'))
}

/// A config padded with comments to more than 10 MiB.
fn ten_megabytes() -> Vec<u8> {
    let mut data = VALID_CONFIG.as_bytes().to_vec();
    let pad = b"# padding padding padding padding padding padding padding padding padding padding\n";
    while data.len() <= 10 * 1024 * 1024 {
        data.extend_from_slice(pad);
    }
    data
}

/// Runs one case; returns the report of its failures, or None when it passes.
fn check_case(case: &Case, limit: bool) -> Option<String> {
    let tmp = tempfile::Builder::new().prefix("kb-bad-input-").tempdir().expect("temp dir");
    let root = tmp.path();
    let work = root.join("work");
    let home = root.join("home");
    let scratch = root.join("scratch");
    for d in [&work, &home, &scratch] {
        fs::create_dir_all(d).expect("temp subdir");
    }
    let out = work.join("out");
    let valid = root.join("valid.yaml");
    fs::write(&valid, VALID_CONFIG).expect("valid config");

    // The command line, and the config file it names (None for usage errors).
    let (args, config): (Vec<String>, Option<PathBuf>) = match case.file.as_str() {
        "@usage" => {
            let args = case
                .extra
                .split_whitespace()
                .map(|a| a.replace("{config}", &valid.display().to_string()).replace("{out}", &out.display().to_string()))
                .collect();
            (args, None)
        }
        special => {
            let path = match special {
                "@generated-10mb" => {
                    let p = root.join("ten-megabytes.yaml");
                    fs::write(&p, ten_megabytes()).expect("10 MiB file");
                    p
                }
                "@missing" => root.join("no-such-config.yaml"),
                "@unreadable" => {
                    let p = root.join("a-directory.yaml");
                    fs::create_dir(&p).expect("directory");
                    p
                }
                "@foreign-out" => {
                    fs::create_dir_all(out.join("kubernetes")).expect("foreign out dir");
                    fs::write(out.join("kubernetes").join("notes.txt"), "meeting notes, not a cluster\n").expect("notes");
                    valid.clone()
                }
                "@other-cluster-out" => {
                    fs::create_dir_all(out.join("kubernetes").join("state")).expect("other cluster state dir");
                    fs::write(out.join("kubernetes").join("state").join("cluster.yaml"), "clusterName: other\n").expect("other state");
                    valid.clone()
                }
                name if name.starts_with('@') => return Some(format!("{}: unknown special case {name}", case.label())),
                name => corpus_dir().join(name),
            };
            let mut args: Vec<String> = vec!["generate".into(), "--config".into(), path.display().to_string()];
            args.extend(["--out".into(), out.display().to_string(), "--now".into(), NOW.into()]);
            args.extend(case.extra.split_whitespace().map(str::to_string));
            (args, Some(path))
        }
    };

    let before = snapshot(&work);
    let home_before = snapshot(&home);
    let o = run(&args, &work, &home, &scratch, limit);
    let mut fails: Vec<String> = Vec::new();
    let mut fail = |what: String| fails.push(what);

    // (3) no panic, no signal, no timeout.
    match o.status {
        None => fail(format!("still running after {CASE_TIMEOUT:?}: killed")),
        Some(s) if s.signal().is_some() => {
            fail(format!("killed by signal {} (over the {ADDRESS_SPACE}-byte address-space ceiling?)", s.signal().unwrap_or(0)))
        }
        Some(s) if s.code() == Some(101) => fail("exit code 101 (a panic)".to_string()),
        Some(_) => {}
    }
    if o.stderr.contains("panicked") {
        fail("stderr says `panicked`".to_string());
    }
    // (1) the exit code.
    if let Some(code) = o.status.and_then(|s| s.code()) {
        if code != case.exit {
            fail(format!("exit code {code}, expected {}", case.exit));
        }
    }
    // (2) the fragment, and where the problem is.
    if !o.stderr.contains(&case.fragment) {
        fail(format!("stderr lacks {:?}", case.fragment));
    }
    if let Some(path) = &config {
        let shown = path.display().to_string();
        let profile = profile_of(path);
        let located = names_position(&o.stderr, &shown)
            || FIELD_PATHS.iter().any(|f| o.stderr.contains(f))
            || profile.as_ref().is_some_and(|p| o.stderr.contains(p.as_str()))
            || (case.file_level() && o.stderr.contains(&shown))
            || (case.file.ends_with("-out") && o.stderr.contains(&out.display().to_string()));
        if !located {
            fail(format!("stderr names neither {shown}:LINE:COL nor a field path nor (for file-level problems) the file"));
        }
    }
    if case.must_be_quick() && o.elapsed > QUICK {
        fail(format!("took {:.1} s; must be refused in under {QUICK:?}", o.elapsed.as_secs_f64()));
    }
    // (3) nothing written: the work dir (holding OUT) and HOME are as before.
    let after = snapshot(&work);
    if after != before {
        let changed: BTreeSet<&PathBuf> = after.keys().chain(before.keys()).filter(|k| after.get(*k) != before.get(*k)).collect();
        let mut list: Vec<String> = changed.iter().take(8).map(|p| p.display().to_string()).collect();
        if changed.len() > 8 {
            list.push(format!("… {} in all", changed.len()));
        }
        fail(format!("the run wrote into the work dir / out dir: {}", list.join(", ")));
    }
    if snapshot(&home) != home_before {
        fail("the run wrote into HOME".to_string());
    }
    if fails.is_empty() {
        return None;
    }
    let stderr = o.stderr.trim_end();
    let mut shown: String = stderr.chars().take(1500).collect();
    if shown.len() < stderr.len() {
        shown.push_str(" …");
    }
    let reasons: Vec<String> = fails.iter().map(|f| format!("  - {f}")).collect();
    Some(format!("{}\n{}\n  stderr: {}", case.label(), reasons.join("\n"), shown.replace('\n', "\n          ")))
}

/// Every case of the manifest, in parallel on a few threads; all failures are reported at once.
#[test]
fn bad_inputs_are_refused() {
    let cases = read_manifest();
    let limit = prlimit_available();
    if !limit {
        eprintln!("note: prlimit is not installed: cases run without an address-space ceiling");
    }
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(2, 6);
    let next = AtomicUsize::new(0);
    let failures: Mutex<Vec<(usize, String)>> = Mutex::new(Vec::new());
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(case) = cases.get(i) else { break };
                if let Some(report) = check_case(case, limit) {
                    failures.lock().unwrap_or_else(|e| e.into_inner()).push((i, report));
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    failures.sort_by_key(|(i, _)| *i);
    let failed = failures.len();
    println!(
        "{} bad-input cases run in {:.1} s on {threads} threads: {} passed, {failed} failed",
        cases.len(),
        start.elapsed().as_secs_f64(),
        cases.len() - failed
    );
    if failed > 0 {
        let report: Vec<String> = failures.into_iter().map(|(_, f)| f).collect();
        panic!("{failed} of {} bad-input cases failed:\n\n{}\n", cases.len(), report.join("\n\n"));
    }
}

/// The manifest has enough cases, lists every corpus file, and every listed file exists.
#[test]
fn manifest_matches_the_corpus() {
    let dir = corpus_dir();
    let cases = read_manifest();
    let mut problems = Vec::new();
    println!("{} bad-input cases in cases.tsv", cases.len());
    if cases.len() < MIN_CASES {
        problems.push(format!("only {} cases; at least {MIN_CASES} are required", cases.len()));
    }
    let mut listed = BTreeSet::new();
    for c in &cases {
        if c.file.starts_with('@') {
            if !SPECIALS.contains(&c.file.as_str()) {
                problems.push(format!("{}: unknown special name (known: {})", c.label(), SPECIALS.join(", ")));
            }
            if c.file == "@usage" && c.exit != 2 {
                problems.push(format!("{}: a usage error exits 2", c.label()));
            }
            continue;
        }
        if !listed.insert(c.file.clone()) {
            problems.push(format!("{}: listed twice", c.label()));
        }
        if c.file.contains('/') || !dir.join(&c.file).is_file() {
            problems.push(format!("{}: no such file in tests/bad-inputs/", c.label()));
        }
    }
    for e in fs::read_dir(&dir).expect("tests/bad-inputs").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "profiles" || name == "cases.tsv" {
            continue;
        }
        if !listed.contains(&name) {
            problems.push(format!("tests/bad-inputs/{name} is not listed in cases.tsv"));
        }
    }
    // Every broken profile is used by some case, and every profile a case names exists
    // (except the one that is missing on purpose).
    let named: BTreeSet<String> = listed.iter().filter_map(|f| profile_of(&dir.join(f))).collect();
    for e in fs::read_dir(dir.join("profiles")).expect("tests/bad-inputs/profiles").flatten() {
        let rel = format!("profiles/{}", e.file_name().to_string_lossy());
        if !named.contains(&rel) {
            problems.push(format!("tests/bad-inputs/{rel} is used by no case"));
        }
    }
    for p in &named {
        if !dir.join(p).is_file() && !p.contains("no-such") {
            problems.push(format!("a case names {p}, which does not exist"));
        }
    }
    for s in SPECIALS {
        if !cases.iter().any(|c| c.file == s) {
            problems.push(format!("no {s} case"));
        }
    }
    assert!(problems.is_empty(), "cases.tsv and tests/bad-inputs/ disagree:\n{}", problems.join("\n"));
}
