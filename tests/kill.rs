//! Crash safety: a large `generate` is killed with SIGKILL at many points. After every kill
//! the cluster directory is the complete previous bundle or the complete new one, never a
//! mix, and the state is never torn. A second concurrent run is refused by the lock.

mod common;

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
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
    let full = start.elapsed();
    // Each run uses the config the bundle on disk was not made with.
    let mut next = 0;

    let mut previous = digest(&cluster);
    let (mut killed, mut finished, mut swapped) = (0, 0, 0);
    for k in 0..KILL_POINTS {
        let delay = full.mul_f64((k as f64 + 0.5) / KILL_POINTS as f64);
        let mut child = generate_cmd(dir, CONFIGS[next]).spawn().expect("spawn generate");
        std::thread::sleep(delay);
        let done = child.try_wait().expect("try_wait").is_some();
        if !done {
            child.kill().expect("SIGKILL");
            killed += 1;
        }
        let status = child.wait().expect("wait");
        if done {
            assert!(status.success(), "kill point {k}: the run failed on its own");
            finished += 1;
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
