//! `cargo bench --bench bundle`: the physical floor (one key, per algorithm), then whole bundles made
//! by the release CLI as a child process (wall time and peak RSS); on the fresh 1,000-worker bundle,
//! `certs check-expiration`, `certs renew all` and every phase of `rotate sa` and `rotate encryption`
//! side by side with the generate that made it; then
//! a re-run and one node added to that state. A plain binary (harness = false) so it needs no extra crates; it prints Markdown tables.
//!
//! Environment:
//! - `KUBEBUNDLE_BENCH_DIR`: where the out dirs go (a fresh subdirectory of it, all removed at the end);
//!   default a fresh directory under `target/bench-out/`. The file system matters (ext4 vs tmpfs).
//! - `KUBEBUNDLE_BENCH_MAX_N`: largest worker count to run (default: all, up to 10000).
//! - `KUBEBUNDLE_BENCH_ALGS`: comma list of algorithms (default `RSA-2048,ECDSA-P256`).
//!
//! Without `--bench` (`cargo test --benches`) it is a smoke run: ECDSA-P256 with no workers.
//! Each row also shows how many cores something other than the child kept busy meanwhile: on a
//! shared 2-core machine that says whether the row can be trusted.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kubebundle::config::KeyAlgorithm;
use kubebundle::pki::keys::Key;
use serde::Deserialize;

const NOW: &str = "2026-01-01T00:00:00Z";
/// The single-key floor: name (as in the config), algorithm, samples.
const KEYGEN: [(&str, KeyAlgorithm, usize); 4] = [
    ("RSA-2048", KeyAlgorithm::Rsa2048, 200),
    ("RSA-3072", KeyAlgorithm::Rsa3072, 10),
    ("ECDSA-P256", KeyAlgorithm::EcdsaP256, 2000),
    ("ECDSA-P384", KeyAlgorithm::EcdsaP384, 1000),
];
const SIZES: [usize; 5] = [0, 10, 100, 1000, 10000];
/// Only ECDSA-P256 runs the 10,000-worker bundle.
const BIG: usize = 10000;
/// The size whose state gets one more node.
const GROW: usize = 1000;

fn median<T: Ord + Copy>(mut v: Vec<T>) -> T {
    v.sort();
    v[v.len() / 2]
}

/// Milliseconds below a second, seconds above.
fn dur(d: Duration) -> String {
    match d.as_secs_f64() {
        s if s < 0.01 => format!("{:.3} ms", s * 1e3),
        s if s < 1.0 => format!("{:.1} ms", s * 1e3),
        s => format!("{s:.2} s"),
    }
}

fn cores_used(c: f64) -> String {
    format!("{c:.2} cores")
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The one table printer: a header row and rows of cells, as Markdown.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    println!("\n| {} |", header.join(" | "));
    println!("|{}", "---|".repeat(header.len()));
    for row in rows {
        let cells: Vec<String> = row.iter().map(|c| c.replace('|', "\\|")).collect();
        println!("| {} |", cells.join(" | "));
    }
}

/// One key at a time: the median and the mean of `samples` key generations.
fn keygen_times(alg: KeyAlgorithm, samples: usize) -> (Duration, Duration) {
    let times: Vec<Duration> = (0..samples)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(Key::generate(alg).expect("keygen"));
            t.elapsed()
        })
        .collect();
    let mean = times.iter().sum::<Duration>() / samples.max(1) as u32;
    (median(times), mean)
}

/// Every core making keys at once: wall time × cores ÷ keys, what one key costs a core when all
/// of them are busy (a shared or frequency-scaled core is slower than a lone one).
fn keygen_all_cores(alg: KeyAlgorithm, samples: usize, cores: usize) -> Duration {
    let per_core = samples.div_ceil(cores).max(1);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..cores {
            s.spawn(|| {
                for _ in 0..per_core {
                    std::hint::black_box(Key::generate(alg).expect("keygen"));
                }
            });
        }
    });
    (t.elapsed() * cores as u32) / (per_core * cores) as u32
}

/// 3 stacked control planes and `workers` workers that join with a pre-issued certificate.
fn config(alg: &str, workers: usize) -> String {
    let mut s = format!(
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nclusterName: bench\nkubernetesVersion: v1.34.1\n\
         controlPlaneEndpoint: api.bench.example:6443\nencryptionAlgorithm: {alg}\n---\n\
         apiVersion: kubebundle.dev/v1alpha1\nkind: Inventory\nworkerJoin: certificate\nnodes:\n"
    );
    for i in 1..=3 {
        s += &format!("- {{name: cp{i}, address: 10.0.0.{i}, roles: [control-plane, etcd]}}\n");
    }
    // 10.x.y.z with y and z in 1..=254: unique, never a .0 or .255 address.
    for i in 0..workers {
        let (x, y, z) = (1 + i / (254 * 254), 1 + (i / 254) % 254, 1 + i % 254);
        s += &format!("- {{name: w{i}, address: 10.{x}.{y}.{z}, roles: [worker]}}\n");
    }
    s
}

/// The bench process's own resident set, from /proc/self/status (KiB).
fn own_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// CPU time the whole machine has spent busy (not idle or waiting on I/O), from /proc/stat.
fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy: u64 = ticks.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, t)| t).sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Duration::from_secs_f64(busy as f64 / hz)
}

fn timeval(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
}

/// CPU time of this process so far.
fn self_cpu() -> Duration {
    // SAFETY: rusage is plain old data; getrusage only writes it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: usage is valid for writes.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    timeval(usage.ru_utime) + timeval(usage.ru_stime)
}

struct Run {
    wall: Duration,
    /// The child's `ru_maxrss` (KiB on Linux).
    peak_kib: u64,
    /// The bench process's own RSS when it spawned the child (KiB): a floor under `peak_kib`.
    spawn_rss_kib: u64,
    /// Cores kept busy by everything but the child during the run (other processes, steal).
    others: f64,
}

/// The one child runner: `kubebundle generate` into `out`, timed from spawn to reap, with the
/// child's peak RSS and CPU time from `wait4`. A failed run is run again with its stderr kept,
/// and its first line is the error.
///
/// The kernel carries the spawning process's peak RSS into the child at exec (`ru_maxrss` is
/// per process, and a posix_spawn/fork child starts on the parent's memory), so the bench's own
/// peak is first reset to its current RSS (`clear_refs` 5); that RSS is the floor of the figure.
fn run_generate(bin: &Path, config: &Path, out: &Path) -> Result<Run, String> {
    let args: Vec<std::ffi::OsString> =
        vec!["generate".into(), "--config".into(), config.into(), "--out".into(), out.into(), "--now".into(), NOW.into()];
    run_child(bin, &args, &[0])
}

/// One run of the release binary with `args` (stdout and stderr dropped), measured as
/// `run_generate` describes; an exit code outside `ok` is a failure (the run is repeated with
/// its stderr kept, for the message).
fn run_child(bin: &Path, args: &[std::ffi::OsString], ok: &[i32]) -> Result<Run, String> {
    let command = || {
        let mut c = Command::new(bin);
        c.args(args).stdin(Stdio::null()).stdout(Stdio::null());
        c
    };
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let spawn_rss_kib = own_rss_kib();
    let busy = machine_busy();
    let t = Instant::now();
    let child = command().stderr(Stdio::null()).spawn().expect("spawn kubebundle");
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; all zeros is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: pid is our own unreaped child; status and usage are valid for writes.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        assert!(err.kind() == std::io::ErrorKind::Interrupted, "wait4({pid}): {err}");
    }
    let wall = t.elapsed();
    let child_cpu = timeval(usage.ru_utime) + timeval(usage.ru_stime);
    let others = (machine_busy().saturating_sub(busy).as_secs_f64() - child_cpu.as_secs_f64()).max(0.0) / wall.as_secs_f64();
    // Reaped by wait4 above: the handle must not wait again (dropping a Child does not).
    drop(child);
    if !(libc::WIFEXITED(status) && ok.contains(&libc::WEXITSTATUS(status))) {
        let again = command().output().expect("spawn kubebundle");
        let stderr = String::from_utf8_lossy(&again.stderr);
        return Err(format!("wait status {status:#x}: {}", stderr.lines().next().unwrap_or("no message")));
    }
    Ok(Run { wall, peak_kib: usage.ru_maxrss as u64, spawn_rss_kib, others })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Plan {
    certificate_authorities: Vec<serde::de::IgnoredAny>,
    nodes: Vec<PlanNode>,
}

#[derive(Deserialize)]
struct PlanNode {
    name: String,
    files: Vec<PlanFile>,
}

#[derive(Deserialize)]
struct PlanFile {
    #[serde(default)]
    certificate: Option<PlanCert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PlanCert {
    id: String,
    is_ca: bool,
}

/// Keys a bundle makes, from its plan.json: each leaf certificate (distinct node and certificate
/// id), each CA, and the service-account key. Also returns the node count.
fn count_keys(bundle: &Path) -> (usize, usize) {
    let file = std::fs::File::open(bundle.join("plan.json")).expect("plan.json");
    let plan: Plan = serde_json::from_reader(std::io::BufReader::new(file)).expect("plan.json parses");
    let leaves: BTreeSet<(&str, &str)> = plan
        .nodes
        .iter()
        .flat_map(|n| n.files.iter().filter_map(|f| f.certificate.as_ref()).filter(|c| !c.is_ca).map(|c| (n.name.as_str(), c.id.as_str())))
        .collect();
    (leaves.len() + plan.certificate_authorities.len() + 1, plan.nodes.len())
}

/// The mount that holds `dir` (the longest matching mount point in /proc/mounts): (fstype, mount point).
fn filesystem_of(dir: &Path) -> (String, String) {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let unescape = |s: &str| s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\");
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| (unescape(f[1]), f[2].to_string()))
        })
        .filter(|(mp, _)| dir.starts_with(mp))
        .max_by_key(|(mp, _)| Path::new(mp).components().count())
        .map(|(mp, fs)| (fs, mp))
        .unwrap_or_else(|| ("unknown".into(), "?".into()))
}

/// The lifecycle commands run on the bundle generate made from `cfg` in `out`, in order, each an
/// hour after the one before: (what, arguments, the exit codes that count as success).
fn lifecycle_commands(cfg: &Path, out: &Path) -> Vec<(String, Vec<std::ffi::OsString>, &'static [i32])> {
    let dir = out.join("bench");
    let at = |hour: usize| format!("2026-01-01T{hour:02}:00:00Z");
    let os = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
    let mut commands = vec![
        (
            "certs check-expiration".to_string(),
            os(&["certs", "check-expiration", "--dir", dir.to_str().unwrap(), "--now", &at(1)]),
            &[0, 3][..],
        ),
        ("certs renew all".to_string(), os(&["certs", "renew", "all", "--dir", dir.to_str().unwrap(), "--now", &at(1)]), &[0][..]),
    ];
    let phases = [
        ("sa", "start"),
        ("sa", "switch"),
        ("sa", "finish"),
        ("encryption", "start"),
        ("encryption", "switch"),
        ("encryption", "finish"),
        ("ca ca", "start"),
        ("ca ca", "switch"),
        ("ca ca", "finish"),
    ];
    for (hour, (material, step)) in phases.into_iter().enumerate() {
        let mut args: Vec<&str> = vec!["rotate"];
        args.extend(material.split(' '));
        let at = at(hour + 2);
        args.extend([step, "--config", cfg.to_str().unwrap(), "--out", out.to_str().unwrap(), "--now", &at]);
        commands.push((format!("rotate {material} {step}"), os(&args), &[0][..]));
    }
    // Every node's cloud-init user-data, read from the tarballs in memory.
    let export = out.join("export-bench");
    commands.push((
        "export cloud-init".to_string(),
        os(&["export", "cloud-init", "--dir", dir.to_str().unwrap(), "--out", export.to_str().unwrap()]),
        &[0][..],
    ));
    commands
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| default.to_string())
}

fn main() {
    let start = Instant::now();
    let smoke = !std::env::args().any(|a| a == "--bench");
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_kubebundle"));
    let profile_dir = bin.parent().and_then(Path::file_name).and_then(|n| n.to_str()).unwrap_or("");
    assert!(smoke || profile_dir == "release", "{} is not a release build: run `cargo bench --bench bundle`", bin.display());

    let max_n: usize =
        env_or("KUBEBUNDLE_BENCH_MAX_N", if smoke { "0" } else { "10000" }).trim().parse().expect("KUBEBUNDLE_BENCH_MAX_N: a number");
    let algs: Vec<&str> = env_or("KUBEBUNDLE_BENCH_ALGS", if smoke { "ECDSA-P256" } else { "RSA-2048,ECDSA-P256" })
        .split(',')
        .map(|a| {
            let a = a.trim();
            KEYGEN.iter().map(|k| k.0).find(|n| n.eq_ignore_ascii_case(a)).unwrap_or_else(|| panic!("KUBEBUNDLE_BENCH_ALGS: unknown {a:?}"))
        })
        .collect();

    // 1. The floor: one key.
    let mut floor = std::collections::BTreeMap::new();
    let mut rows = Vec::new();
    for (name, alg, samples) in KEYGEN {
        let samples = if smoke { 1 } else { samples };
        let (busy, own, t) = (machine_busy(), self_cpu(), Instant::now());
        let (m, mean) = keygen_times(alg, samples);
        let others = machine_busy().saturating_sub(busy).saturating_sub(self_cpu() - own).as_secs_f64() / t.elapsed().as_secs_f64();
        let busy_cores = keygen_all_cores(alg, samples, cores);
        floor.insert(name, (m, mean));
        rows.push(vec![name.to_string(), dur(m), dur(mean), dur(busy_cores), samples.to_string(), cores_used(others)]);
    }
    let all_cores = format!("per key, {cores} cores at once");
    print_table(&["algorithm", "keygen median", "mean", &all_cores, "samples", "others' CPU"], &rows);

    // Out dirs: a fresh directory, removed when `root` drops.
    let base = match std::env::var_os("KUBEBUNDLE_BENCH_DIR") {
        Some(d) => PathBuf::from(d),
        None => bin.parent().and_then(Path::parent).expect("target dir").join("bench-out"),
    };
    std::fs::create_dir_all(&base).expect("bench dir");
    let root = tempfile::Builder::new().prefix("bundle-").tempdir_in(&base).expect("bench temp dir");
    let (fstype, mount) = filesystem_of(root.path());
    let write_config = |alg: &str, n: usize| {
        let path = root.path().join(format!("{alg}-{n}.yaml"));
        std::fs::write(&path, config(alg, n)).expect("write config");
        path
    };

    // 2.–4. Whole bundles, each into a fresh out dir; the 1,000-worker one then gets a re-run and one more worker.
    let mut bundles = Vec::new();
    let mut grow = Vec::new();
    let mut lifecycle = Vec::new();
    let mut all_runs = Vec::new();
    for &alg in &algs {
        for n in SIZES.into_iter().filter(|&n| n <= max_n && (n < BIG || alg == "ECDSA-P256")) {
            let cfg = write_config(alg, n);
            let repeats = if n <= 100 { 3 } else { 1 };
            let (mut runs, mut keys_nodes, mut failed) = (Vec::new(), (0, 0), None);
            for r in 0..repeats {
                let out = root.path().join(format!("{alg}-{n}-out{r}"));
                match run_generate(&bin, &cfg, &out) {
                    Ok(run) => {
                        eprintln!("bench: {alg} 3 + {n}, run {}: {} {}", r + 1, dur(run.wall), mib(run.peak_kib));
                        keys_nodes = count_keys(&out.join("bench"));
                        runs.push(run);
                    }
                    Err(e) => failed = Some(e),
                }
                if n == GROW && failed.is_none() && r == 0 {
                    // The lifecycle on the bundle just made, each command an hour after the one before.
                    let generated = runs.last().map(|g: &Run| g.wall);
                    for (what, args, ok) in lifecycle_commands(&cfg, &out) {
                        let mut row = vec![alg.to_string(), format!("3 + {n}"), generated.map(dur).unwrap_or_default(), what.clone()];
                        match run_child(&bin, &args, ok) {
                            Ok(run) => {
                                eprintln!("bench: {alg} 3 + {n}, {what}: {} {}", dur(run.wall), mib(run.peak_kib));
                                let ratio =
                                    generated.map(|g| format!("{:.2}", run.wall.as_secs_f64() / g.as_secs_f64())).unwrap_or_default();
                                row.extend([dur(run.wall), ratio, mib(run.peak_kib), cores_used(run.others)]);
                                all_runs.push(run);
                            }
                            Err(e) => row.extend([format!("failed: {e}"), "—".into(), "—".into(), "—".into()]),
                        }
                        lifecycle.push(row);
                    }
                }
                if n == GROW && failed.is_none() {
                    for (what, cfg) in [("re-run, no change", cfg.clone()), ("add 1 worker", write_config(alg, n + 1))] {
                        let mut row = vec![alg.into(), format!("3 + {n}"), what.into()];
                        match run_generate(&bin, &cfg, &out) {
                            Ok(run) => {
                                eprintln!("bench: {alg} 3 + {n}, {what}: {} {}", dur(run.wall), mib(run.peak_kib));
                                row.extend([dur(run.wall), mib(run.peak_kib), cores_used(run.others)]);
                                all_runs.push(run);
                            }
                            Err(e) => row.extend([format!("failed: {e}"), "—".into(), "—".into()]),
                        }
                        grow.push(row);
                    }
                }
                // Out dirs are kept until the end: on an ext4 without a journal, inodes freed in
                // the last ~30 s are skipped when new ones are allocated, so deleting a bundle
                // would slow down the next run's file creation (by 10× here) and measure that.
                if failed.is_some() {
                    break;
                }
            }
            let mut row = vec![alg.into(), n.to_string()];
            if let Some(e) = failed {
                eprintln!("bench: {alg} 3 + {n} failed: {e}");
                row.extend([
                    format!("{}", n + 3),
                    "—".into(),
                    "—".into(),
                    format!("failed: {e}"),
                    "—".into(),
                    "—".into(),
                    "—".into(),
                    "—".into(),
                    "—".into(),
                ]);
            } else {
                let (keys, nodes) = keys_nodes;
                let wall = median(runs.iter().map(|r| r.wall).collect());
                let f = floor[alg].0.mul_f64(keys as f64 / cores as f64);
                let by_mean = floor[alg].1.mul_f64(keys as f64 / cores as f64);
                row.extend([
                    nodes.to_string(),
                    keys.to_string(),
                    if repeats > 1 { format!("median of {repeats}") } else { "1".into() },
                    dur(wall),
                    mib(median(runs.iter().map(|r| r.peak_kib).collect())),
                    dur(f),
                    format!("{:.2}", wall.as_secs_f64() / f.as_secs_f64()),
                    format!("{:.2}", wall.as_secs_f64() / by_mean.as_secs_f64()),
                    cores_used(runs.iter().map(|r| r.others).fold(0.0, f64::max)),
                ]);
            }
            bundles.push(row);
            all_runs.extend(runs);
        }
    }
    let floor_col = format!("floor (keys × keygen median ÷ {cores} cores)");
    let others_col = "others' CPU (max)";
    print_table(
        &[
            "algorithm",
            "workers",
            "nodes",
            "keys",
            "runs",
            "wall",
            "peak RSS",
            &floor_col,
            "wall ÷ floor",
            "wall ÷ (keys × mean ÷ cores)",
            others_col,
        ],
        &bundles,
    );
    if !lifecycle.is_empty() {
        print_table(
            &["algorithm", "bundle (control planes + workers)", "fresh generate", "command", "wall", "÷ generate", "peak RSS", others_col],
            &lifecycle,
        );
    }
    if !grow.is_empty() {
        print_table(&["algorithm", "state (control planes + workers)", "run on the same out dir", "wall", "peak RSS", others_col], &grow);
    }
    println!(
        "\nBinary: {}. Out dirs: {} ({fstype}, mounted at {mount}).\n\
         Peak RSS is the child's ru_maxrss; the bench itself held at most {} when spawning (the floor of that figure).\n\
         Others' CPU: cores busy with anything but the child during a run (other processes, kernel I/O threads, VM steal); near 0 means an otherwise idle machine.",
        bin.display(),
        root.path().display(),
        mib(all_runs.iter().map(|r| r.spawn_rss_kib).max().unwrap_or(0)),
    );
    drop(root);
    println!("Total bench time: {}.", dur(start.elapsed()));
}
