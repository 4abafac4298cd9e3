//! The live boot shared by tests/live_hardway.rs, tests/live_binary.rs (`layout`) and
//! tests/live_kubeadm.rs: the real Kubernetes v1.32 binaries of ../shared/k8s (see its README)
//! started from the units (hardway, binary) or the static pod manifests that the real kubeadm
//! writes (kubeadm) of node trees that kubebundle generated, extracted into temporary roots as an
//! installer would.
//!
//! What a test changes, and why (nothing else of the units or static pods' commands is touched):
//! - every absolute path is rebased into the root: the units' and commands' flags, the paths of
//!   the files those flags name (a kubeconfig's client-certificate/client-key, a
//!   KubeProxyConfiguration's kubeconfig: on a host these are the same absolute paths, here they
//!   must lead into the root too), and the kubelet's default --root-dir/--cert-dir (absolute
//!   defaults, not in the unit); a static pod's hostPath volumes mount each host path at the
//!   same path, so the same rebasing holds for its command;
//! - argv[0] is the installed binary (`K8S_BIN`, Debian's etcd);
//! - every process runs in a private network namespace (`nsenter` into one that `unshare --net`
//!   holds): there the units' fixed ports (2379, 2380, 2381, 6443, 10257, 10259, 10250) and the
//!   node's 127.0.x.y address (or a TEST-NET address added to its lo, `Netns::add_address`) are
//!   free whatever else runs on the machine, so no port and no kubeconfig server is rewritten,
//!   and kube-proxy's iptables rules stay out of the host's;
//! - the worker's kubelet gets, in a copy of its KubeletConfiguration, exactly what a kubelet
//!   without a container runtime needs to finish TLS bootstrap (../shared/k8s/README.md); it
//!   exits before it registers its Node, so the test registers it with the kubelet's new
//!   credentials (kube-proxy looks its node's address up there);
//! - kube-proxy gets, in a copy of its KubeProxyConfiguration, `conntrack.maxPerCore: 0`:
//!   nf_conntrack_max is read-only outside the host's initial network namespace.
//!
//! Every process is stopped by its PID when the test ends, also on failure (`Proc`'s Drop).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::checks::parse_cert_pem;
use crate::common::*;

/// The binaries the live tests start, from K8S_BIN.
pub const K8S_BINARIES: [&str; 5] = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"];

const INSTALL: &str = "install them with `export K8S_BIN=$(../shared/k8s/install.sh \"$PWD/target/k8s\")` from the repository \
     (.ci/run does it; see ../shared/k8s/README.md)";

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A missing prerequisite: a failure under CI=true (or when K8S_BIN is set), else a loud skip.
fn missing(what: String) -> Option<Tools> {
    if ci() || std::env::var_os("K8S_BIN").is_some() {
        panic!("{what}");
    }
    eprintln!("NOTE: live test skipped (CI is not true): {what}");
    None
}

/// Where the binaries are.
pub struct Tools {
    /// K8S_BIN: kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy.
    pub k8s: PathBuf,
    pub etcd: PathBuf,
    /// iptables-restore and iptables-save, which kube-proxy's iptables mode runs.
    pub iptables: bool,
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]).map(|d| d.join(name)).find(|p| p.is_file())
}

impl Tools {
    /// K8S_BIN (default: target/k8s of this repository, where .ci/run installs them), etcd,
    /// root (network namespaces), unshare, nsenter and ip.
    pub fn find() -> Option<Tools> {
        Tools::find_with(&[])
    }

    /// `find`, and `extra` binaries of K8S_BIN too (`kubeadm`).
    pub fn find_with(extra: &[&str]) -> Option<Tools> {
        let dir =
            std::env::var_os("K8S_BIN").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/k8s"));
        let absent: Vec<&str> = K8S_BINARIES.iter().chain(extra).copied().filter(|b| !dir.join(b).is_file()).collect();
        if !absent.is_empty() {
            return missing(format!("the Kubernetes binaries {} are not in K8S_BIN={}: {INSTALL}", absent.join(", "), dir.display()));
        }
        let Some(etcd) = on_path("etcd") else {
            return missing("etcd is not installed: apt-get install etcd-server etcd-client (.ci/run does it)".into());
        };
        let tools: Vec<&str> = ["unshare", "nsenter", "ip"].into_iter().filter(|t| on_path(t).is_none()).collect();
        if !tools.is_empty() {
            return missing(format!("{} missing: apt-get install util-linux iproute2 (.ci/run does it)", tools.join(", ")));
        }
        let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX);
        if uid != 0 {
            return missing(format!("the live tests run as root (uid {uid}): they need network namespaces and the kubelet needs root"));
        }
        let iptables = on_path("iptables-restore").is_some() && on_path("iptables-save").is_some();
        Some(Tools { k8s: dir, etcd: etcd.canonicalize().unwrap_or(etcd), iptables })
    }

    /// The installed binary for a unit's argv[0] (`/usr/local/bin/<name>`).
    fn binary(&self, argv0: &str) -> PathBuf {
        let name = argv0.rsplit('/').next().unwrap_or(argv0);
        if name == "etcd" {
            self.etcd.clone()
        } else {
            self.k8s.join(name)
        }
    }
}

// =============================================================================================
// The network namespace

/// A private network namespace, held by `unshare --net sleep`; commands enter it with nsenter
/// (which execs them: the PID is the program's own).
pub struct Netns {
    holder: Proc,
}

impl Netns {
    pub fn new(scratch: &Path) -> Netns {
        let mut c = Command::new("unshare");
        c.args(["--net", "--", "sleep", "3600"]);
        let mut holder = Proc::spawn("netns", c, scratch.join("netns.log"));
        let pid = holder.child.id();
        let ours = std::fs::read_link("/proc/self/ns/net").ok();
        let entered = wait_for(Duration::from_secs(5), || {
            let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
            (theirs.is_some() && theirs != ours).then_some(())
        });
        if entered.is_none() {
            let status = holder.child.try_wait().ok().flatten();
            panic!(
                "`unshare --net` did not make a network namespace (exit {status:?}): {}\n  the live tests need root with CAP_SYS_ADMIN",
                holder.log_text()
            );
        }
        let ns = Netns { holder };
        let up = ns.run("ip", &["link", "set", "lo", "up"]);
        assert!(up.ok(), "cannot bring lo up in the test's network namespace: {}", up.describe());
        ns
    }

    /// Adds `address` to the namespace's lo (a node address outside 127.0.0.0/8, which lo
    /// does not answer for by itself).
    pub fn add_address(&self, address: &str) {
        let prefix = if address.contains(':') { 128 } else { 32 };
        let r = self.run("ip", &["addr", "add", &format!("{address}/{prefix}"), "dev", "lo"]);
        assert!(r.ok(), "cannot add {address} to lo in the test's network namespace: {}", r.describe());
    }

    /// Adds `address` to an interface of the namespace that is not a loopback (one end of a veth
    /// pair, both ends up): kubeadm without `--config` picks the node's address from such an
    /// interface (client-go's ChooseHostInterface skips lo) and fails without one.
    pub fn add_host_address(&self, address: &str) {
        if !self.run("ip", &["link", "show", "kb-host"]).ok() {
            for args in [
                &["link", "add", "kb-host", "type", "veth", "peer", "name", "kb-peer"][..],
                &["link", "set", "kb-host", "up"],
                &["link", "set", "kb-peer", "up"],
            ] {
                let r = self.run("ip", args);
                assert!(r.ok(), "cannot make a veth pair in the test's network namespace: {}", r.describe());
            }
        }
        let prefix = if address.contains(':') { 128 } else { 32 };
        let r = self.run("ip", &["addr", "add", &format!("{address}/{prefix}"), "dev", "kb-host"]);
        assert!(r.ok(), "cannot add {address} to kb-host in the test's network namespace: {}", r.describe());
    }

    /// `program` run inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/proc/{}/ns/net", self.holder.child.id())).arg("--").arg(program);
        c
    }

    pub fn run(&self, program: &str, args: &[&str]) -> Run {
        let mut c = self.command(program);
        c.args(args).env("LC_ALL", "C");
        run_cmd(c)
    }
}

// =============================================================================================
// Units, paths, rebasing

/// A unit's ExecStart argv, from the root.
pub fn unit_argv(root: &Path, unit: &str) -> Vec<String> {
    let path = root.join("etc/systemd/system").join(format!("{unit}.service"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read the unit {}: {e}", path.display()));
    exec_start(&text)
}

/// `p` under `root` (`/etc/x` → `<root>/etc/x`).
pub fn under(root: &Path, p: &str) -> String {
    format!("{}{p}", root.display())
}

/// argv with every absolute path (each flag value and argument starting with `/`) moved under
/// `root`; argv[0] is left for the caller to map.
pub fn rebase(argv: &[String], root: &Path) -> Vec<String> {
    let mut out = vec![argv[0].clone()];
    for a in &argv[1..] {
        out.push(match a.split_once('=') {
            Some((k, v)) if k.starts_with("--") && v.starts_with('/') => format!("{k}={}", under(root, v)),
            _ if a.starts_with('/') => under(root, a),
            _ => a.clone(),
        });
    }
    out
}

/// The value of `--name=value` in an argv.
pub fn flag<'a>(argv: &'a [String], name: &str) -> Option<&'a str> {
    let prefix = format!("--{name}=");
    argv.iter().find_map(|a| a.strip_prefix(prefix.as_str()))
}

/// YAML text with every scalar value that is an absolute path (`key: "/x"`, `key: /x`) moved
/// under `root` (values already under it are kept).
pub fn rebase_yaml_paths(text: &str, root: &Path) -> String {
    let prefix = root.display().to_string();
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let rewritten = body.split_once(": ").and_then(|(key, value)| {
            let v = value.trim();
            let path = match v.strip_prefix('"') {
                Some(_) => serde_json::from_str::<String>(v).ok()?,
                None => v.to_string(),
            };
            (path.starts_with('/') && !path.starts_with(&prefix))
                .then(|| format!("{key}: {}", serde_json::to_string(&under(root, &path)).unwrap_or_default()))
        });
        match rewritten {
            Some(r) => {
                out.push_str(&r);
                if line.ends_with('\n') {
                    out.push('\n');
                }
            }
            None => out.push_str(line),
        }
    }
    out
}

/// Rebases, in place, the file references of the tree's kubeconfigs and KubeProxyConfiguration
/// (the files the started components read that name other files by absolute path).
pub fn rebase_references(root: &Path) {
    for (rel, bytes) in file_bytes(root) {
        let Ok(text) = String::from_utf8(bytes) else { continue };
        let kind = text.lines().find_map(|l| l.strip_prefix("kind: ")).map(|k| k.trim().trim_matches('"').to_string());
        if matches!(kind.as_deref(), Some("Config" | "KubeProxyConfiguration")) {
            let path = root.join(&rel);
            let rebased = rebase_yaml_paths(&text, root);
            if rebased != text {
                std::fs::write(&path, rebased).unwrap_or_else(|e| panic!("cannot rewrite {}: {e}", path.display()));
            }
        }
    }
}

// =============================================================================================
// The bundle

/// One node of the bundle's plan.json: artifact → (path relative to the root, the file's entry).
pub struct PlannedNode {
    pub name: String,
    pub address: String,
    pub files: BTreeMap<String, Value>,
}

impl PlannedNode {
    /// The node's path (relative to its root) of an artifact.
    pub fn rel(&self, artifact: &str) -> String {
        self.files
            .get(artifact)
            .and_then(|f| f["path"].as_str())
            .unwrap_or_else(|| panic!("plan.json has no {artifact} for {}", self.name))
            .to_string()
    }

    /// Every kubeconfig the node holds, with the user it must authenticate as: (artifact,
    /// path, CN, O). For bootstrap-kubelet.conf the CN is empty (the token's user).
    pub fn kubeconfigs(&self) -> Vec<(String, String, String, Vec<String>)> {
        self.files
            .iter()
            .filter(|(a, f)| a.ends_with(".conf") && f["path"].is_string() && a.as_str() != "discovery.conf")
            .map(|(a, f)| {
                let c = &f["certificate"];
                let orgs = c["organizations"].as_array().map(|o| o.iter().filter_map(|s| s.as_str().map(String::from)).collect());
                (
                    a.clone(),
                    f["path"].as_str().unwrap().to_string(),
                    c["commonName"].as_str().unwrap_or("").to_string(),
                    orgs.unwrap_or_default(),
                )
            })
            .collect()
    }
}

/// A generated bundle of one control plane (+ etcd) and one worker, both extracted.
pub struct Bundle {
    pub tools: Tools,
    pub tmp: tempfile::TempDir,
    /// out/<cluster>
    pub cluster: PathBuf,
    pub cp: PlannedNode,
    pub worker: PlannedNode,
    /// The extracted tarballs.
    pub cp_root: PathBuf,
    pub worker_root: PathBuf,
    /// Where logs and scratch files go.
    pub scratch: PathBuf,
}

impl Bundle {
    /// `kubebundle generate` of `profile` for (name, address) of a control plane + etcd member
    /// and a worker, ECDSA-P256, at the real time (the binaries check validity against it);
    /// both tarballs extracted. None when the binaries are missing outside CI.
    pub fn generate(profile: &str, cluster_name: &str, cp: (&str, &str), worker: (&str, &str)) -> Option<Bundle> {
        Bundle::generate_with(Tools::find()?, profile, cluster_name, cp, worker, |config| config)
    }

    /// `generate` with `tools` found by the caller and the config text edited by `edit` (e.g.
    /// another `kubernetesVersion`).
    pub fn generate_with(
        tools: Tools,
        profile: &str,
        cluster_name: &str,
        cp: (&str, &str),
        worker: (&str, &str),
        edit: impl FnOnce(String) -> String,
    ) -> Option<Bundle> {
        let tmp = temp_dir(&format!("live-{profile}"));
        let dir = tmp.path().to_path_buf();
        let config = edit(bundle_config(profile, cluster_name, cp, worker));
        let config_path = dir.join("cluster.yaml");
        std::fs::write(&config_path, &config).unwrap();
        let now = real_now();
        let out = dir.join("out");
        let r =
            kubebundle(&dir, &["generate", "--config", config_path.to_str().unwrap(), "--out", out.to_str().unwrap(), "--now", &now], &[]);
        assert!(r.ok(), "generate failed: {}", r.describe());
        Some(Bundle::open(tools, tmp, &out.join(cluster_name), cp.0, worker.0, &now))
    }

    /// The bundle `out/<cluster>` that `generate` made at `now` in `tmp` (the test's temp dir:
    /// the roots and scratch files go there too): `verify` finds no error, the plan of the
    /// control plane `cp` and the worker `worker` read, both tarballs extracted.
    pub fn open(tools: Tools, tmp: tempfile::TempDir, cluster: &Path, cp: &str, worker: &str, now: &str) -> Bundle {
        let dir = tmp.path().to_path_buf();
        let cluster = cluster.to_path_buf();
        verify_bundle(&cluster, Some(now)).unwrap_or_else(|e| panic!("{e}"));
        let plan: Value = serde_json::from_slice(&std::fs::read(cluster.join("plan.json")).unwrap()).unwrap();
        let node = |name: &str| {
            let n = plan["nodes"].as_array().unwrap().iter().find(|n| n["name"] == name).unwrap_or_else(|| panic!("{name} in plan.json"));
            PlannedNode {
                name: name.to_string(),
                address: n["address"].as_str().unwrap().to_string(),
                files: n["files"].as_array().unwrap().iter().map(|f| (f["artifact"].as_str().unwrap().to_string(), f.clone())).collect(),
            }
        };
        let (cp_plan, worker_plan) = (node(cp), node(worker));
        let cp_root = dir.join("root-cp");
        let worker_root = dir.join("root-worker");
        extract(&cluster.join("nodes").join(format!("{cp}.tar.gz")), &cp_root);
        extract(&cluster.join("nodes").join(format!("{worker}.tar.gz")), &worker_root);
        let scratch = dir.join("scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        Bundle { tools, tmp, cluster, cp: cp_plan, worker: worker_plan, cp_root, worker_root, scratch }
    }
}

/// The config of a live bundle: `profile`, (name, address) of a control plane + etcd member and
/// of a worker, ECDSA-P256.
pub fn bundle_config(profile: &str, cluster_name: &str, cp: (&str, &str), worker: (&str, &str)) -> String {
    live_config(cluster_name, &[(cp.0, cp.1, "control-plane, etcd"), (worker.0, worker.1, "worker")])
        .replace("kind: Inventory\n", &format!("kind: Inventory\nprofile: {profile}\n"))
}

/// A live config for Kubernetes v1.32.13, the version of the real kubeadm (it refuses newer
/// control planes).
pub fn for_kubeadm(config: String) -> String {
    let pinned = config.replace("kubernetesVersion: v1.34.1\n", "kubernetesVersion: v1.32.13\n");
    assert_ne!(pinned, config, "the live config names kubernetesVersion v1.34.1");
    pinned
}

/// The real time, RFC 3339 (the binaries check validity against it).
pub fn real_now() -> String {
    rfc3339(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64)
}

/// What the boot runs on: the bundle renewed as an operator would a year on, so the control plane
/// and the worker start from re-issued certificates only. In the bundle: every CA re-issued
/// from its own key (`certs renew ca|front-proxy-ca|etcd-ca`), then every certificate (`certs
/// renew all`); the nodes' tarballs extracted again; on the control plane's root, as on a live
/// host, `certs renew ca` and `certs renew all` once more (what its layout keeps the CA keys
/// for). Each renewed bundle and root passes `kubebundle verify`, and no certificate in either
/// root is one that generate issued.
impl Bundle {
    pub fn renew(&mut self, f: &mut Failures) {
        let generated: std::collections::BTreeSet<Vec<u8>> =
            [&self.cp_root, &self.worker_root].iter().flat_map(|r| crate::common::checks::distinct_certs(r)).collect();
        let dir = self.tmp.path().to_path_buf();
        let run = |what: &str, target: &Path| {
            let r = kubebundle(&dir, &["certs", "renew", what, "--dir", target.to_str().unwrap()], &[]);
            assert!(r.ok(), "certs renew {what} --dir {}: {}", target.display(), r.describe());
            r
        };
        for what in ["ca", "front-proxy-ca", "etcd-ca", "all"] {
            run(what, &self.cluster);
        }
        verify_bundle(&self.cluster, None).unwrap_or_else(|e| panic!("the renewed bundle: {e}"));
        for (root, node) in [(&self.cp_root, &self.cp.name), (&self.worker_root, &self.worker.name)] {
            std::fs::remove_dir_all(root).unwrap();
            extract(&self.cluster.join("nodes").join(format!("{node}.tar.gz")), root);
        }
        for what in ["ca", "all"] {
            let r = run(what, &self.cp_root);
            f.note(format!("certs renew {what} on {}'s root: {}", self.cp.name, r.stdout.lines().next().unwrap_or("")));
        }
        self.verify_roots("after renewal", f);
        for root in [&self.cp_root, &self.worker_root] {
            let certs = crate::common::checks::distinct_certs(root);
            let kept = certs.iter().filter(|c| generated.contains(*c)).count();
            f.check(!certs.is_empty() && kept == 0, || {
                format!("{}: {kept} of {} certificates are still the ones generate issued", root.display(), certs.len())
            });
            f.note(format!("{}: {} certificates, every one re-issued", root.display(), certs.len()));
        }
    }
}

impl Bundle {
    /// `kubebundle verify` of each extracted tree alone (no state beside it) finds no error.
    pub fn verify_roots(&self, when: &str, f: &mut Failures) {
        for root in [&self.cp_root, &self.worker_root] {
            let r = kubebundle(self.tmp.path(), &["verify", root.to_str().unwrap()], &[]);
            f.check(r.ok() && r.stdout.contains("0 errors"), || format!("verify {} {when}: {}", root.display(), r.describe()));
        }
    }
}

/// One layout, live: generate a bundle of a control plane (+ etcd) and a worker, renew it
/// (`Bundle::renew`), boot the control plane from its own units and check it, then the
/// worker's kubelet (TLS bootstrap) and kube-proxy from theirs.
pub fn layout(profile: &str, cluster: &str, cp: (&str, &str), worker: (&str, &str), test: &str) {
    let started = Instant::now();
    let Some(mut b) = Bundle::generate(profile, cluster, cp, worker) else { return };
    let mut f = Failures::new();
    b.renew(&mut f);
    f.note(format!("{profile}: generated and renewed in {:.1?}", started.elapsed()));
    let cp = ControlPlane::boot(&b.cp_root, &b.tools, &b.cp.rel("super-admin.conf"), &b.cp.rel("ca.crt"), &b.scratch);
    f.note(format!("{profile}: control plane ready in {:.1?}", cp.boot_time));
    check_control_plane(&b, &cp, &mut f);
    // The worker's files name each other by absolute path too.
    rebase_references(&b.worker_root);
    check_kubeconfigs(&cp, &b.worker, &b.worker_root, &mut f);
    f.note(format!("{profile}: control-plane checks done at {:.1?}", started.elapsed()));
    // The kubelet first: it registers the worker's Node, which kube-proxy reads its address from.
    check_kubelet_bootstrap(&b, &cp, &unit_argv(&b.worker_root, "kubelet"), &mut f);
    f.note(format!("{profile}: kubelet TLS bootstrap done at {:.1?}", started.elapsed()));
    drop(check_kube_proxy(&b, &cp, &mut f));
    f.note(format!("{profile}: {:.1?} in all", started.elapsed()));
    f.finish(test);
}

// =============================================================================================
// Booting

/// The control-plane components, in the order they are started.
pub const CONTROL_PLANE: [&str; 4] = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"];

/// A control plane booted from a root's units or static pods, in its own network namespace.
pub struct ControlPlane {
    /// Dropped (killed) before the namespace's holder.
    pub procs: Vec<Proc>,
    pub ns: Netns,
    pub root: PathBuf,
    /// The root's super-admin kubeconfig, and its CA file.
    pub super_admin: PathBuf,
    pub ca: PathBuf,
    /// https://<address>:<port> of the apiserver, from its unit.
    pub server: String,
    pub scratch: PathBuf,
    /// How long the boot took (until /readyz said ok).
    pub boot_time: Duration,
}

/// Starts a unit of `root` inside `ns`: its ExecStart, paths rebased, argv[0] the installed
/// binary, then `edit`ed; output to `<scratch>/<unit>-<root>.log`.
pub fn start_unit(ns: &Netns, tools: &Tools, root: &Path, unit: &str, scratch: &Path, edit: impl FnOnce(&mut Vec<String>)) -> Proc {
    let argv = unit_argv(root, unit);
    assert_eq!(argv[0], format!("/usr/local/bin/{unit}"), "{unit}.service runs /usr/local/bin/{unit}");
    start_argv(ns, tools, root, unit, &argv, scratch, edit)
}

/// Starts a command line of `root`'s host (a unit's ExecStart, a static pod's command) inside
/// `ns`: paths rebased, argv[0] the installed binary, then `edit`ed; output to
/// `<scratch>/<name>-<root>.log`.
pub fn start_argv(
    ns: &Netns,
    tools: &Tools,
    root: &Path,
    name: &str,
    argv: &[String],
    scratch: &Path,
    edit: impl FnOnce(&mut Vec<String>),
) -> Proc {
    let mut run = rebase(argv, root);
    run[0] = tools.binary(&argv[0]).display().to_string();
    edit(&mut run);
    let mut cmd = ns.command(&run[0]);
    cmd.args(&run[1..]).current_dir(scratch).env_remove("NOTIFY_SOCKET").env_remove("KUBECONFIG");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ETCD_") {
            cmd.env_remove(k);
        }
    }
    let log = scratch.join(format!("{name}-{}.log", root.file_name().unwrap().to_string_lossy()));
    std::fs::write(scratch.join(format!("{name}.argv")), run.join("\n")).ok();
    Proc::spawn(name, cmd, log)
}

impl ControlPlane {
    /// Boots etcd, kube-apiserver, kube-controller-manager and kube-scheduler from the units of
    /// an extracted control-plane root (with its super-admin kubeconfig at `super_admin` and the
    /// cluster CA at `ca`, relative to the root), and waits for /readyz.
    pub fn boot(root: &Path, tools: &Tools, super_admin: &str, ca: &str, scratch: &Path) -> ControlPlane {
        let started = Instant::now();
        let ns = Netns::new(scratch);
        let commands = CONTROL_PLANE.iter().map(|unit| (unit.to_string(), unit_argv(root, unit))).collect();
        ControlPlane::boot_from(ns, started, root, tools, commands, super_admin, ca, scratch)
    }

    /// Boots the control plane from `commands` (component name, its host's argv: a unit's
    /// ExecStart, a static pod's command) in `ns`, paths rebased into `root`, and waits for
    /// /readyz; `boot_time` counts from `started`.
    #[allow(clippy::too_many_arguments)]
    pub fn boot_from(
        ns: Netns,
        started: Instant,
        root: &Path,
        tools: &Tools,
        commands: Vec<(String, Vec<String>)>,
        super_admin: &str,
        ca: &str,
        scratch: &Path,
    ) -> ControlPlane {
        rebase_references(root);
        let api = &commands.iter().find(|(name, _)| name == "kube-apiserver").expect("a kube-apiserver command").1;
        let address = flag(api, "advertise-address").expect("--advertise-address").to_string();
        let port = flag(api, "secure-port").unwrap_or("6443").to_string();
        let host = if address.contains(':') { format!("[{address}]") } else { address.clone() };
        let mut cp = ControlPlane {
            procs: Vec::new(),
            ns,
            root: root.to_path_buf(),
            super_admin: root.join(super_admin),
            ca: root.join(ca),
            server: format!("https://{host}:{port}"),
            scratch: scratch.to_path_buf(),
            boot_time: Duration::ZERO,
        };
        // All at once: each retries its server until it answers.
        for (name, argv) in &commands {
            let p = start_argv(&cp.ns, tools, root, name, argv, scratch, |_| {});
            cp.procs.push(p);
        }
        let ready = wait_for(Duration::from_secs(60), || {
            cp.assert_running();
            let r = cp.kubectl(&cp.super_admin, &["get", "--raw", "/readyz"]);
            (r.ok() && r.stdout.trim() == "ok").then_some(())
        });
        if ready.is_none() {
            let verbose = cp.kubectl(&cp.super_admin, &["get", "--raw", "/readyz?verbose"]);
            panic!("kube-apiserver never became ready (60 s): {}\n{}", verbose.describe(), cp.logs());
        }
        cp.boot_time = started.elapsed();
        cp
    }

    /// Panics with its log when a started process has exited.
    pub fn assert_running(&mut self) {
        let mut dead = Vec::new();
        for p in &mut self.procs {
            if let Ok(Some(status)) = p.child.try_wait() {
                dead.push(format!("{} exited with {status}:\n{}", p.name, tail(&p.log_text(), 3000)));
            }
        }
        assert!(dead.is_empty(), "{}", dead.join("\n"));
    }

    /// The end of every log.
    pub fn logs(&self) -> String {
        self.procs.iter().map(|p| format!("--- {} ---\n{}", p.name, tail(&p.log_text(), 2500))).collect::<Vec<_>>().join("\n")
    }

    /// kubectl with a kubeconfig, in the namespace.
    pub fn kubectl(&self, kubeconfig: &Path, args: &[&str]) -> Run {
        let mut all = vec!["--kubeconfig", kubeconfig.to_str().unwrap(), "--request-timeout=10s"];
        all.extend_from_slice(args);
        self.kubectl_args(&all)
    }

    /// kubectl with its own arguments only (KUBECONFIG points at no file), in the namespace.
    pub fn kubectl_args(&self, args: &[&str]) -> Run {
        let home = self.scratch.join(".home");
        std::fs::create_dir_all(&home).ok();
        let mut c = self.ns.command("kubectl");
        c.args(args).env("HOME", &home).env("KUBECONFIG", home.join("no-such-kubeconfig")).env("LC_ALL", "C").env("TZ", "UTC");
        run_cmd(c)
    }

    /// `kubectl auth whoami -o json` → (username, groups).
    pub fn whoami(&self, args: &[&str]) -> Result<(String, Vec<String>), String> {
        let mut all = args.to_vec();
        all.extend(["auth", "whoami", "-o", "json"]);
        let r = self.kubectl_args(&all);
        if !r.ok() {
            return Err(r.describe());
        }
        let v: Value = serde_json::from_str(&r.stdout).map_err(|e| format!("{e}: {}", r.stdout))?;
        let info = &v["status"]["userInfo"];
        let groups = info["groups"].as_array().map(|g| g.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default();
        Ok((info["username"].as_str().unwrap_or_default().to_string(), groups))
    }

    /// Applies the bundle's manifests/ with super-admin (retried while kube-public and the
    /// other built-in objects are still being made).
    pub fn apply_manifests(&self, manifests: &Path) -> Result<Run, String> {
        let mut last = None;
        let done = wait_for(Duration::from_secs(30), || {
            let r = self.kubectl(&self.super_admin, &["apply", "-f", manifests.to_str().unwrap()]);
            let ok = r.ok();
            last = Some(r.clone());
            ok.then_some(r)
        });
        done.ok_or_else(|| last.map(|r| r.describe()).unwrap_or_default())
    }

    /// The holder of a kube-system lease, once taken.
    pub fn lease_holder(&self, name: &str, limit: Duration) -> Option<String> {
        wait_for(limit, || {
            let r = self.kubectl(&self.super_admin, &["-n", "kube-system", "get", "lease", name, "-o", "jsonpath={.spec.holderIdentity}"]);
            (r.ok() && !r.stdout.trim().is_empty()).then(|| r.stdout.trim().to_string())
        })
    }
}

pub fn tail(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut start = s.len() - n;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("[...]{}", &s[start..])
}

// =============================================================================================
// The checks

/// Against a booted control plane: the leases, a ServiceAccount token, the manifests, and every
/// kubeconfig of the control plane's tree authenticating as its user.
pub fn check_control_plane(b: &Bundle, cp: &ControlPlane, f: &mut Failures) {
    // The bundle's manifests/ (tokens, cluster-info, join RBAC, kubeadm-config, kubelet-config).
    match cp.apply_manifests(&b.cluster.join("manifests")) {
        Ok(r) => {
            for object in [
                "secret/bootstrap-token-",
                "configmap/cluster-info",
                "clusterrolebinding.rbac.authorization.k8s.io/kubeadm:kubelet-bootstrap",
            ] {
                f.check(r.stdout.contains(object), || format!("kubectl apply -f manifests/ did not apply {object}:\n{}", r.stdout));
            }
        }
        Err(e) => f.fail(format!("kubectl apply -f manifests/ with super-admin failed: {e}")),
    }

    // The leader-election leases.
    for lease in ["kube-controller-manager", "kube-scheduler"] {
        match cp.lease_holder(lease, Duration::from_secs(40)) {
            Some(holder) => f.note(format!("lease {lease} held by {holder}")),
            None => f.fail(format!("the {lease} lease was never taken:\n{}", cp.logs())),
        }
    }

    // A ServiceAccount token signed with sa.key authenticates through sa.pub.
    let sa = cp.kubectl(&cp.super_admin, &["-n", "default", "create", "serviceaccount", "kb-live"]);
    f.check(sa.ok(), || format!("create serviceaccount: {}", sa.describe()));
    let token = cp.kubectl(&cp.super_admin, &["-n", "default", "create", "token", "kb-live"]);
    if f.check(token.ok() && !token.stdout.trim().is_empty(), || format!("kubectl create token: {}", token.describe())) {
        let t = token.stdout.trim();
        match cp.whoami(&["--server", &cp.server, "--certificate-authority", cp.ca.to_str().unwrap(), "--token", t]) {
            Ok((user, _)) => {
                f.eq("the ServiceAccount token's user", "system:serviceaccount:default:kb-live", user.as_str());
            }
            Err(e) => f.fail(format!("the ServiceAccount token does not authenticate: {e}")),
        }
        // The same token with one byte of its signature changed is refused.
        // (Not the last character: its low bits may be padding.)
        let mut forged: Vec<char> = t.chars().collect();
        let i = forged.len() - 8;
        forged[i] = if forged[i] == 'A' { 'B' } else { 'A' };
        let forged: String = forged.into_iter().collect();
        let r = cp.whoami(&["--server", &cp.server, "--certificate-authority", cp.ca.to_str().unwrap(), "--token", &forged]);
        f.check(r.as_ref().is_err_and(|e| e.contains("Unauthorized")), || format!("a forged token was not refused: {r:?}"));
    }

    check_kubeconfigs(cp, &b.cp, &cp.root, f);
    // The admin kubeconfig is authorized through the kubeadm:cluster-admins binding of
    // manifests/rbac.yaml.
    let admin = cp.root.join(b.cp.rel("admin.conf"));
    let r = cp.kubectl(&admin, &["auth", "can-i", "*", "*"]);
    f.check(r.stdout.trim() == "yes", || format!("admin.conf is not cluster-admin: {}", r.describe()));
}

/// Every kubeconfig of a node's tree authenticates against the apiserver as its planned user
/// (`kubectl auth whoami`): CN and O of its client certificate; a bootstrap token's user.
pub fn check_kubeconfigs(cp: &ControlPlane, node: &PlannedNode, root: &Path, f: &mut Failures) {
    let list = node.kubeconfigs();
    f.check(!list.is_empty(), || format!("{}: no kubeconfig planned", node.name));
    for (artifact, rel, cn, orgs) in list {
        let path = root.join(&rel);
        let l = format!("{}: {rel} ({artifact})", node.name);
        match cp.whoami(&["--kubeconfig", path.to_str().unwrap()]) {
            Ok((user, groups)) => {
                if artifact == "bootstrap-kubelet.conf" {
                    f.check(user.starts_with("system:bootstrap:"), || format!("{l}: authenticated as {user:?}, not a bootstrap token"));
                    f.check(groups.iter().any(|g| g == "system:bootstrappers"), || format!("{l}: groups {groups:?}"));
                } else {
                    f.eq(&format!("{l}: user"), cn.as_str(), user.as_str());
                    for o in &orgs {
                        f.check(groups.contains(o), || format!("{l}: groups {groups:?} miss {o}"));
                    }
                }
                f.note(format!("{l} authenticates as {user} {groups:?}"));
            }
            Err(e) => f.fail(format!("{l} does not authenticate: {e}")),
        }
    }
}

/// kube-proxy from the worker's own unit against the control plane: its identity (authenticates
/// as system:kube-proxy, may list EndpointSlices through system:node-proxier), then, with
/// iptables installed, the real proxy: it syncs its EndpointSlice informer and programs a
/// Service's EndpointSlice into iptables rules in the namespace.
pub fn check_kube_proxy(b: &Bundle, cp: &ControlPlane, f: &mut Failures) -> Option<Proc> {
    let root = &b.worker_root;
    rebase_references(root);
    let kubeconfig = root.join(b.worker.rel("kube-proxy.conf"));
    match cp.whoami(&["--kubeconfig", kubeconfig.to_str().unwrap()]) {
        Ok((user, _)) => {
            f.eq("kube-proxy's kubeconfig user", "system:kube-proxy", user.as_str());
        }
        Err(e) => f.fail(format!("kube-proxy's kubeconfig does not authenticate: {e}")),
    }
    let r = cp.kubectl(&kubeconfig, &["auth", "can-i", "list", "endpointslices.discovery.k8s.io"]);
    f.check(r.stdout.trim() == "yes", || format!("system:kube-proxy may not list endpointslices: {}", r.describe()));
    let r = cp.kubectl(&kubeconfig, &["auth", "can-i", "watch", "services"]);
    f.check(r.stdout.trim() == "yes", || format!("system:kube-proxy may not watch services: {}", r.describe()));

    if !b.tools.iptables {
        let what = "iptables-restore/iptables-save are not installed (apt-get install iptables; .ci/run does it)";
        if ci() {
            f.fail(format!("kube-proxy cannot run: {what}"));
        } else {
            f.note(format!("kube-proxy was not started: {what}; its identity and RBAC were checked instead"));
        }
        return None;
    }
    let argv = unit_argv(root, "kube-proxy");
    let config = flag(&argv, "config").expect("kube-proxy --config");
    f.eq("kube-proxy --config is the planned KubeProxyConfiguration", format!("/{}", b.worker.rel("kube-proxy-config")).as_str(), config);
    // nf_conntrack_max can only be written from the host's initial network namespace (it is
    // read-only in the test's): a copy of the configuration leaves the limit as it is
    // (conntrack.maxPerCore 0). Nothing else changes.
    let original = std::fs::read_to_string(root.join(config.trim_start_matches('/'))).expect("the worker's KubeProxyConfiguration");
    let copy = cp.scratch.join("kube-proxy-config.yaml");
    std::fs::write(&copy, format!("{}conntrack:\n  maxPerCore: 0\n  min: 0\n", rebase_yaml_paths(&original, root))).unwrap();
    let copy_path = copy.display().to_string();
    let proxy_started = Instant::now();
    let mut proxy = start_unit(&cp.ns, &b.tools, root, "kube-proxy", &cp.scratch, |run| {
        for a in run.iter_mut().filter(|a| a.starts_with("--config=")) {
            *a = format!("--config={copy_path}");
        }
    });
    let synced = wait_for(Duration::from_secs(45), || {
        if let Ok(Some(status)) = proxy.child.try_wait() {
            return Some(Err(format!("kube-proxy exited with {status}")));
        }
        proxy.log_text().contains("Caches are synced for endpoint slice config").then_some(Ok(()))
    });
    match synced {
        Some(Ok(())) => f.note(
            format!("{:.1?} after its start: ", proxy_started.elapsed())
                + "kube-proxy ran from its unit and synced its EndpointSlice informer (\"Caches are synced for endpoint slice config\")",
        ),
        Some(Err(e)) => {
            f.fail(format!("{e}:\n{}", tail(&proxy.log_text(), 4000)));
            return Some(proxy);
        }
        None => {
            f.fail(format!("kube-proxy never synced its EndpointSlice informer (45 s):\n{}", tail(&proxy.log_text(), 4000)));
            return Some(proxy);
        }
    }
    // A Service and its EndpointSlice, made after the sync: the watch delivers them and
    // kube-proxy writes the DNAT to the endpoint.
    let manifest = cp.scratch.join("probe-service.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Service\nmetadata: {name: kb-probe, namespace: default}\nspec:\n  ports: [{name: http, port: 80, protocol: TCP}]\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: kb-probe-1\n  namespace: default\n  labels: {kubernetes.io/service-name: kb-probe}\n\
         addressType: IPv4\nports: [{name: http, port: 8080, protocol: TCP}]\nendpoints: [{addresses: [\"10.244.7.7\"], conditions: {ready: true}}]\n",
    )
    .unwrap();
    let r = cp.kubectl(&cp.super_admin, &["apply", "-f", manifest.to_str().unwrap()]);
    if !f.check(r.ok(), || format!("cannot create the probe Service: {}", r.describe())) {
        return Some(proxy);
    }
    let programmed = wait_for(Duration::from_secs(20), || {
        let r = cp.ns.run("iptables-save", &["-t", "nat"]);
        (r.ok() && r.stdout.contains("--to-destination 10.244.7.7:8080") && r.stdout.contains("default/kb-probe:http")).then_some(r)
    });
    match programmed {
        Some(_) => f.note("kube-proxy programmed the probe Service's EndpointSlice (DNAT to 10.244.7.7:8080) through its watch"),
        None => {
            let rules = cp.ns.run("iptables-save", &["-t", "nat"]);
            f.fail(format!(
                "kube-proxy did not program the probe EndpointSlice within 20 s:\n{}\n--- kube-proxy ---\n{}",
                tail(&rules.stdout, 3000),
                tail(&proxy.log_text(), 3000)
            ));
        }
    }
    Some(proxy)
}

/// The fields ../shared/k8s/README.md says a kubelet without a container runtime needs for a
/// synchronous TLS bootstrap, set in a copy of the node's KubeletConfiguration (paths rebased).
fn runtime_less_kubelet_config(original: &str, root: &Path, scratch: &Path, port: u16) -> String {
    let fields: [(&str, String); 8] = [
        ("rotateCertificates", "false".into()),
        ("failSwapOn", "false".into()),
        ("cgroupsPerQOS", "false".into()),
        ("enforceNodeAllocatable", "[]".into()),
        ("readOnlyPort", "0".into()),
        ("healthzPort", "0".into()),
        ("port", port.to_string()),
        ("containerRuntimeEndpoint", format!("\"unix://{}\"", scratch.join("none.sock").display())),
    ];
    let mut text: String = rebase_yaml_paths(original, root)
        .lines()
        .filter(|l| !fields.iter().any(|(k, _)| l.starts_with(&format!("{k}:"))))
        .map(|l| format!("{l}\n"))
        .collect();
    for (k, v) in fields {
        text.push_str(&format!("{k}: {v}\n"));
    }
    text
}

/// The worker's kubelet started with `argv` (its host's command line: its own unit's ExecStart,
/// kubeadm's drop-in) against the control plane: TLS bootstrap completes (`kubelet_tls_bootstrap`
/// with the kubelet's default state directory, /var/lib/kubelet), then the worker's Node is
/// registered with the kubelet's new credentials. Returns the path of kubelet-client-current.pem
/// once written.
pub fn check_kubelet_bootstrap(b: &Bundle, cp: &ControlPlane, argv: &[String], f: &mut Failures) -> Option<PathBuf> {
    let done = kubelet_tls_bootstrap(b, cp, argv, "/var/lib/kubelet", f)?;
    register_node(b, cp, &done.kubeconfig, f);
    Some(done.current)
}

/// What a kubelet's TLS bootstrap wrote (paths in the worker's root).
pub struct Bootstrapped {
    /// The kubeconfig at the kubelet's --kubeconfig.
    pub kubeconfig: PathBuf,
    /// <cert-dir>/kubelet-client-current.pem (certificate and key).
    pub current: PathBuf,
    /// The issued certificate (PEM), as the CSR's status carries it.
    pub certificate: String,
}

/// The worker's kubelet started with `argv` against the control plane, its state (--root-dir,
/// --cert-dir `<state>/pki`) in `state` (an absolute path of the node, rebased into the worker's
/// root): TLS bootstrap completes (its own CSR approved and issued, a system:node:<node>
/// certificate of the cluster CA written as kubelet-client-current.pem, the kubeconfig written
/// at --kubeconfig authenticates as that node).
pub fn kubelet_tls_bootstrap(b: &Bundle, cp: &ControlPlane, argv: &[String], state: &str, f: &mut Failures) -> Option<Bootstrapped> {
    use base64::Engine;
    let root = &b.worker_root;
    let node = &b.worker.name;
    let config = flag(argv, "config").expect("kubelet --config");
    let bootstrap = flag(argv, "bootstrap-kubeconfig").expect("the worker's kubelet command has --bootstrap-kubeconfig").to_string();
    let kubeconfig = flag(argv, "kubeconfig").expect("kubelet --kubeconfig").to_string();
    f.eq(
        "kubelet --bootstrap-kubeconfig is the planned one",
        format!("/{}", b.worker.rel("bootstrap-kubelet.conf")).as_str(),
        bootstrap.as_str(),
    );
    let original = std::fs::read_to_string(root.join(config.trim_start_matches('/'))).expect("the worker's KubeletConfiguration");
    let copy = cp.scratch.join("kubelet-config.yaml");
    std::fs::write(&copy, runtime_less_kubelet_config(&original, root, &cp.scratch, 10250)).unwrap();
    let token_id = std::fs::read_to_string(root.join(bootstrap.trim_start_matches('/')))
        .ok()
        .and_then(|t| find_tokens(&t).into_iter().next())
        .map(|t| t[..6].to_string())
        .expect("a token in the bootstrap kubeconfig");

    // The kubelet's state directories (by default /var/lib/kubelet and /var/lib/kubelet/pki):
    // rebased like the unit's own paths.
    let root_dir = under(root, state);
    let cert_dir = under(root, &format!("{state}/pki"));
    let copy_path = copy.display().to_string();
    let mut kubelet = start_argv(&cp.ns, &b.tools, root, "kubelet", argv, &cp.scratch, |run| {
        for a in run.iter_mut() {
            if a.starts_with("--config=") {
                *a = format!("--config={copy_path}");
            }
        }
        run.push(format!("--root-dir={root_dir}"));
        run.push(format!("--cert-dir={cert_dir}"));
    });
    let written = root.join(kubeconfig.trim_start_matches('/'));
    let current = Path::new(&cert_dir).join("kubelet-client-current.pem");
    let done = wait_for(Duration::from_secs(40), || (written.is_file() && current.exists()).then_some(()));
    if done.is_none() {
        let status = kubelet.child.try_wait().ok().flatten();
        f.fail(format!(
            "the kubelet did not finish TLS bootstrap within 40 s (exit {status:?}): {} or {} missing\n{}\n--- controller-manager ---\n{}",
            written.display(),
            current.display(),
            tail(&kubelet.log_text(), 4000),
            cp.procs.iter().find(|p| p.name == "kube-controller-manager").map(|p| tail(&p.log_text(), 2000)).unwrap_or_default()
        ));
        return None;
    }
    // The CSR: the bootstrap token's, approved by the controller-manager and issued with the
    // certificate the kubelet wrote (an earlier bootstrap's CSR of the same token is another).
    let pem = std::fs::read(&current).unwrap_or_default();
    let written_der = crate::common::corp::pem_certs(&pem).into_iter().next().unwrap_or_default();
    let r = cp.kubectl(&cp.super_admin, &["get", "csr", "-o", "json"]);
    let csrs: Value = serde_json::from_str(&r.stdout).unwrap_or(Value::Null);
    let user = format!("system:bootstrap:{token_id}");
    let issued = |c: &Value| {
        let pem = c["status"]["certificate"].as_str().and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok());
        pem.map(|p| String::from_utf8_lossy(&p).into_owned()).unwrap_or_default()
    };
    let csr = csrs["items"].as_array().and_then(|items| {
        items
            .iter()
            .find(|c| {
                c["spec"]["username"] == user.as_str() && crate::common::corp::pem_certs(issued(c).as_bytes()).first() == Some(&written_der)
            })
            .cloned()
    });
    let mut certificate = String::new();
    match csr {
        Some(c) => {
            let approved =
                c["status"]["conditions"].as_array().is_some_and(|cs| cs.iter().any(|x| x["type"] == "Approved" && x["status"] == "True"));
            f.check(approved, || format!("the kubelet's CSR is not approved: {}", c["status"]));
            f.eq("the CSR's signer", "kubernetes.io/kube-apiserver-client-kubelet", c["spec"]["signerName"].as_str().unwrap_or_default());
            certificate = issued(&c);
        }
        None => f.fail(format!("no CSR of {user} was issued the certificate in {}: {}", current.display(), r.describe())),
    }
    // kubelet-client-current.pem: a link to the dated file, system:node:<node> in system:nodes,
    // issued by the cluster CA of the tree.
    let link = std::fs::symlink_metadata(&current).map(|m| m.file_type().is_symlink()).unwrap_or(false);
    f.check(link, || format!("{} is not a symlink", current.display()));
    match parse_cert_pem(&pem) {
        Ok(c) => {
            f.eq("kubelet client certificate CN", &vec![format!("system:node:{node}")], &c.cns);
            f.eq("kubelet client certificate O", &vec!["system:nodes".to_string()], &c.os);
        }
        Err(e) => f.fail(format!("{}: {e}", current.display())),
    }
    // The tree's CA file is the trust anchor, root or intermediate, as for the Go clients.
    let ca = root.join(b.worker.rel("ca.crt"));
    let v = openssl(&["verify", "-partial_chain", "-CAfile", ca.to_str().unwrap(), current.to_str().unwrap()]);
    f.check(v.ok(), || format!("the kubelet's certificate does not verify against the tree's CA: {}", v.describe()));
    // The kubeconfig the kubelet wrote (at its --kubeconfig) authenticates.
    match cp.whoami(&["--kubeconfig", written.to_str().unwrap()]) {
        Ok((u, groups)) => {
            f.eq("the kubelet's written kubeconfig user", format!("system:node:{node}").as_str(), u.as_str());
            f.check(groups.iter().any(|g| g == "system:nodes"), || format!("kubelet groups {groups:?}"));
        }
        Err(e) => f.fail(format!("the kubeconfig the kubelet wrote does not authenticate: {e}")),
    }
    let log = kubelet.log_text();
    f.note(format!(
        "kubelet after bootstrap: {}",
        log.lines()
            .rev()
            .find(|l| l.contains("validate CRI") || l.contains("runtime"))
            .unwrap_or("(still running)")
            .chars()
            .take(200)
            .collect::<String>()
    ));
    drop(kubelet);
    Some(Bootstrapped { kubeconfig: written, current, certificate })
}

/// The worker's Node object, as the kubelet registers it once its runtime answers (the test's
/// kubelet exits before), made with the kubelet's new credentials (`kubeconfig`): the Node
/// authorizer and NodeRestriction let system:node:<node> create its own Node and set its
/// addresses, and refuse another node's. kube-proxy reads its node's address from it.
pub fn register_node(b: &Bundle, cp: &ControlPlane, kubeconfig: &Path, f: &mut Failures) {
    let node = &b.worker.name;
    let node_yaml = cp.scratch.join("node.yaml");
    std::fs::write(
        &node_yaml,
        format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: {node}\n  labels: {{kubernetes.io/hostname: {node}}}\n\
             status:\n  addresses: [{{type: InternalIP, address: \"{}\"}}, {{type: Hostname, address: {node}}}]\n",
            b.worker.address
        ),
    )
    .unwrap();
    let r = cp.kubectl(kubeconfig, &["create", "-f", node_yaml.to_str().unwrap()]);
    f.check(r.ok(), || format!("the kubelet's credentials cannot register node {node}: {}", r.describe()));
    // Another node's object is refused to them.
    let other = cp.scratch.join("other-node.yaml");
    std::fs::write(&other, "apiVersion: v1\nkind: Node\nmetadata:\n  name: kb-other-node\n").unwrap();
    let r = cp.kubectl(kubeconfig, &["create", "-f", other.to_str().unwrap()]);
    f.check(!r.ok() && r.stderr.contains("Forbidden"), || format!("node {node} could create another node's object: {}", r.describe()));
}

// =============================================================================================
// kubeadm

/// `kubeadm <args> --rootfs <root>` inside the namespace.
pub fn kubeadm(ns: &Netns, tools: &Tools, root: &Path, args: &[&str]) -> Run {
    let mut c = ns.command(tools.k8s.join("kubeadm"));
    c.args(args).arg("--rootfs").arg(root).env("LC_ALL", "C").env_remove("KUBECONFIG");
    run_cmd(c)
}

/// The lines of a kubeadm phase's output that name what it did (`[certs] ...`).
pub fn said(r: &Run, phase: &str) -> Vec<String> {
    let tag = format!("[{phase}] ");
    r.stdout.lines().chain(r.stderr.lines()).filter_map(|l| l.strip_prefix(tag.as_str())).map(str::to_string).collect()
}

/// A static pod manifest's containers[0] command + args, and the check that each absolute path
/// in it lies under a volumeMount whose hostPath is the same path (so the pod sees the host's
/// file at the path it names, and rebasing it into the root is right).
pub fn static_pod_command(root: &Path, pod: &str, f: &mut Failures) -> Vec<String> {
    let path = root.join("etc/kubernetes/manifests").join(format!("{pod}.yaml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("kubeadm wrote no {}: {e}", path.display()));
    let v: Value = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let c = &v["spec"]["containers"][0];
    let argv: Vec<String> =
        c["command"].as_array().into_iter().chain(c["args"].as_array()).flatten().filter_map(|a| a.as_str().map(String::from)).collect();
    assert!(!argv.is_empty(), "{}: no command", path.display());
    let host_paths: BTreeMap<&str, &str> = v["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|vol| Some((vol["name"].as_str()?, vol["hostPath"]["path"].as_str()?)))
        .collect();
    let mounts: Vec<(&str, &str)> = c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| Some((m["mountPath"].as_str()?, host_paths.get(m["name"].as_str()?).copied()?)))
        .collect();
    let mut checked = 0;
    for a in &argv[1..] {
        for value in a.split_once('=').map(|(_, v)| v).unwrap_or(a).split(',') {
            if !value.starts_with('/') {
                continue;
            }
            let mount = mounts.iter().find(|(m, _)| value == *m || value.starts_with(&format!("{}/", m.trim_end_matches('/'))));
            match mount {
                Some((m, host)) => {
                    checked += 1;
                    f.eq(&format!("{pod}: the hostPath mounted at {m} (for {a})"), *m, *host);
                }
                None => f.fail(format!("{pod}: {a} names {value}, which no volumeMount of the static pod holds")),
            }
        }
    }
    f.check(checked > 0, || format!("{pod}: no absolute path in its command: {argv:?}"));
    f.note(format!("{pod}: {checked} paths of its command, each in a hostPath volume mounted at the same path"));
    argv
}

/// The worker's kubelet command line as kubeadm's drop-in (10-kubeadm.conf) runs it:
/// `/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS`, the
/// last being what `kubeadm join` writes to /var/lib/kubelet/kubeadm-flags.env from the node's
/// JoinConfiguration: `--hostname-override` (its nodeRegistration.name is not the test machine's
/// hostname) and its kubeletExtraArgs.
pub fn kubeadm_kubelet_argv(b: &Bundle) -> Vec<String> {
    let join = b.worker_root.join(b.worker.rel("kubeadm-join"));
    let text = std::fs::read_to_string(&join).unwrap_or_else(|e| panic!("{}: {e}", join.display()));
    let v: Value = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", join.display()));
    let registration = &v["nodeRegistration"];
    let mut argv: Vec<String> = [
        "/usr/bin/kubelet",
        "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
        "--kubeconfig=/etc/kubernetes/kubelet.conf",
        "--config=/var/lib/kubelet/config.yaml",
    ]
    .map(String::from)
    .to_vec();
    argv.push(format!("--hostname-override={}", registration["name"].as_str().expect("nodeRegistration.name")));
    for arg in registration["kubeletExtraArgs"].as_array().into_iter().flatten() {
        argv.push(format!("--{}={}", arg["name"].as_str().unwrap_or_default(), arg["value"].as_str().unwrap_or_default()));
    }
    argv
}

/// `kubeadm init phase control-plane all` and `init phase etcd local` on `root` with its own
/// `config` (both must succeed): the static pods' commands, in the order the components start
/// (each checked by `static_pod_command`), and the control-plane phase's output.
pub fn kubeadm_static_pods(ns: &Netns, tools: &Tools, root: &Path, config: &str, f: &mut Failures) -> (Run, Vec<(String, Vec<String>)>) {
    let control_plane = kubeadm(ns, tools, root, &["init", "phase", "control-plane", "all", "--config", config]);
    assert!(control_plane.ok(), "kubeadm init phase control-plane all: {}", control_plane.describe());
    let r = kubeadm(ns, tools, root, &["init", "phase", "etcd", "local", "--config", config]);
    assert!(r.ok(), "kubeadm init phase etcd local: {}", r.describe());
    let commands = CONTROL_PLANE.iter().map(|p| (p.to_string(), static_pod_command(root, p, f))).collect();
    (control_plane, commands)
}

impl Bundle {
    /// A network namespace for the bundle's two nodes: the control plane's address on lo, the
    /// worker's on a non-loopback interface (`Netns::add_host_address`, for `kubeadm join`).
    pub fn netns(&self) -> Netns {
        let ns = Netns::new(&self.scratch);
        ns.add_address(&self.cp.address);
        ns.add_host_address(&self.worker.address);
        ns
    }

    /// The control plane booted in `ns` from the static pods' `commands` (`kubeadm_static_pods`)
    /// of its root, with its super-admin.conf and cluster CA; `boot_time` counts from `started`.
    pub fn boot_static_pods(&self, ns: Netns, started: Instant, commands: Vec<(String, Vec<String>)>) -> ControlPlane {
        let (admin, ca) = (self.cp.rel("super-admin.conf"), self.cp.rel("ca.crt"));
        ControlPlane::boot_from(ns, started, &self.cp_root, &self.tools, commands, &admin, &ca, &self.scratch)
    }
}

/// The certificates (and keys) of a control plane, as kubeadm names them.
pub const KUBEADM_LEAVES: [&str; 7] = [
    "apiserver",
    "apiserver-kubelet-client",
    "front-proxy-client",
    "etcd/server",
    "etcd/peer",
    "etcd/healthcheck-client",
    "apiserver-etcd-client",
];

/// What `kubeadm init phase certs all` says when every file of a control plane exists: the 3
/// CAs, the 7 certificates and the sa key "Using existing".
pub fn certs_all_existing() -> Vec<String> {
    let mut expected: Vec<String> =
        ["ca", "front-proxy-ca", "etcd/ca"].iter().map(|c| format!("Using existing {c} certificate authority")).collect();
    expected.extend(KUBEADM_LEAVES.iter().map(|c| format!("Using existing {c} certificate and key on disk")));
    expected.push("Using the existing \"sa\" key".into());
    expected
}

/// The checks of `kubeadm join phase preflight` that fail on a worker's extracted root (no
/// container runtime, kubelet, system binaries or /proc in it; the test machine's hostname),
/// not on the files the tarball holds.
pub const JOIN_HOST_CHECKS: [&str; 11] = [
    "FileExisting-ip",
    "FileExisting-iptables",
    "FileExisting-mount",
    "FileExisting-nsenter",
    "FileExisting-ethtool",
    "FileExisting-tc",
    "FileExisting-touch",
    "SystemVerification",
    "Hostname",
    "KubeletVersion",
    "FileContent--proc-sys-net-ipv4-ip_forward",
];

/// The worker command line of join.txt: the arguments after `kubeadm join` (the endpoint,
/// `--token`, every `--discovery-token-ca-cert-hash`).
pub fn join_txt_worker_args(cluster: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(cluster.join("join.txt")).expect("join.txt");
    let line = text
        .lines()
        .find(|l| l.starts_with("kubeadm join ") && !l.contains("--control-plane") && !l.contains("--discovery-file"))
        .unwrap_or_else(|| panic!("join.txt has no worker command:\n{text}"));
    line.split_whitespace().skip(2).map(String::from).collect()
}

/// The values of `--name V` in an argument list.
pub fn flag_values(args: &[String], name: &str) -> Vec<String> {
    args.windows(2).filter(|w| w[0] == format!("--{name}")).map(|w| w[1].clone()).collect()
}

/// What kubeadm prints (-v=1) when token discovery validated cluster-info against the pins.
pub fn discovery_validated(endpoint: &str) -> String {
    format!("[discovery] Cluster info signature and contents are valid and TLS certificate validates against pinned roots, will use API Server \"{endpoint}\"")
}

/// The worker's `kubeadm join` token discovery with the real kubeadm, against the running
/// control plane (the bundle's manifests/ applied: the token, cluster-info with its JWS, the join
/// RBAC, kubeadm-config): `kubeadm join phase preflight` (`--ignore-preflight-errors=all`: the
/// worker's root has no container runtime or kubelet) with the worker's own JoinConfiguration,
/// then with join.txt's worker command line. Each time kubeadm validates cluster-info's JWS and
/// its CA against the pinned hash(es) and reads the ClusterConfiguration from kubeadm-config;
/// the worker's tree is unchanged. With the pins replaced by `wrong` (another CA's hash) kubeadm
/// refuses, naming the key of the CA that cluster-info carries. Returns join.txt's pins.
pub fn check_join_discovery(b: &Bundle, cp: &ControlPlane, wrong: &str, f: &mut Failures) -> Vec<String> {
    let root = &b.worker_root;
    let before = file_bytes(root);
    let args = join_txt_worker_args(&b.cluster);
    let endpoint = args.first().cloned().unwrap_or_default();
    let pins = flag_values(&args, "discovery-token-ca-cert-hash");
    f.check(!pins.is_empty(), || format!("join.txt's worker command pins no hash: {args:?}"));
    let config = format!("/{}", b.worker.rel("kubeadm-join"));
    let preflight = |extra: &[String], ignore: &str| {
        let mut all: Vec<&str> = vec!["join", "phase", "preflight"];
        all.extend(extra.iter().map(String::as_str));
        let ignore = format!("--ignore-preflight-errors={ignore}");
        all.extend([ignore.as_str(), "-v=1"]);
        kubeadm(&cp.ns, &b.tools, root, &all)
    };
    // With the JoinConfiguration only the host's checks are ignored on the command line (kubeadm
    // takes no `all` beside a config's own list): the files the tarball holds must be in that list.
    let runs = [
        ("the worker's JoinConfiguration", vec!["--config".to_string(), config], JOIN_HOST_CHECKS.join(",")),
        ("join.txt's worker command", args.clone(), "all".to_string()),
    ];
    for (what, extra, ignore) in runs {
        let r = preflight(&extra, &ignore);
        let all = format!("{}\n{}", r.stdout, r.stderr);
        let validated = discovery_validated(&endpoint);
        if f.check(r.ok() && all.contains(&validated), || {
            format!("kubeadm join phase preflight with {what}: no {validated:?}, exit {:?}:\n{}", r.code, tail(&all, 3000))
        }) {
            f.note(format!("kubeadm join phase preflight with {what}: {validated}"));
        }
        let read = "[preflight] Reading configuration from the \"kubeadm-config\" ConfigMap in namespace \"kube-system\"...";
        f.check(all.contains(read), || format!("kubeadm join phase preflight with {what} did not read kubeadm-config:\n{all}"));
    }
    f.check(file_bytes(root) == before, || "kubeadm join phase preflight changed the worker's tree".into());

    // Another CA's hash in place of every pin: refused, naming the CA cluster-info carries.
    let mut wrong_args: Vec<String> = Vec::new();
    for a in &args {
        let replaced = if pins.contains(a) { wrong.to_string() } else { a.clone() };
        wrong_args.push(replaced);
    }
    let r = preflight(&wrong_args, "all");
    let all = format!("{}\n{}", r.stdout, r.stderr);
    let carried: Vec<&String> = pins.iter().filter(|p| all.contains(p.as_str())).collect();
    f.check(
        !r.ok()
            && all.contains("cluster CA found in cluster-info ConfigMap is invalid")
            && all.contains("are pinned")
            && !carried.is_empty(),
        || format!("kubeadm join phase preflight with the pin {wrong} was not refused naming the CA's key {pins:?}: {}", r.describe()),
    );
    f.note(format!(
        "kubeadm join phase preflight pinning {wrong}: {}",
        all.lines().find(|l| l.contains("are pinned")).unwrap_or_default().trim()
    ));
    pins
}

/// The certificates (DER) a TLS server at `address` (host:port) sends, inside the namespace
/// (`openssl s_client -showcerts`).
pub fn served_chain(ns: &Netns, address: &str) -> Result<Vec<Vec<u8>>, String> {
    let r = ns.run("openssl", &["s_client", "-connect", address, "-showcerts"]);
    let certs = crate::common::corp::pem_certs(r.stdout.as_bytes());
    if certs.is_empty() {
        return Err(format!("openssl s_client -connect {address} got no certificate: {}", r.describe()));
    }
    Ok(certs)
}

/// What the control plane's servers send (`served_chain`): for each (name, port, its certificate
/// file relative to the control plane's root, the corporate intermediate that signed it), the
/// shipped file (the leaf, then that intermediate), and the served leaf verifies with `openssl
/// verify -CAfile root -untrusted intermediate` but not with the root alone.
pub fn check_served_chains(
    cp: &ControlPlane,
    address: &str,
    corp: &crate::common::corp::Corp,
    servers: &[(&str, u16, String, &str)],
    f: &mut Failures,
) {
    for (server, port, file, intermediate) in servers {
        let at = format!("{address}:{port}");
        let chain = match served_chain(&cp.ns, &at) {
            Ok(c) => c,
            Err(e) => {
                f.fail(format!("{server}: {e}"));
                continue;
            }
        };
        let shipped = crate::common::corp::pem_certs(&std::fs::read(cp.root.join(file)).unwrap_or_default());
        f.eq(&format!("{server} serves its shipped {file}"), &shipped, &chain);
        f.check(chain.len() == 2 && chain[1] == corp.der(intermediate), || {
            format!("{server} does not serve the intermediate {intermediate} after its leaf ({} certificates)", chain.len())
        });
        let v = corp.verify(&cp.scratch, &chain[0], Some(&corp.path(intermediate)));
        f.check(v.ok() && v.stdout.trim().ends_with(": OK"), || {
            format!("{server}'s served leaf does not verify up to the root: {}", v.describe())
        });
        let alone = corp.verify(&cp.scratch, &chain[0], None);
        f.check(!alone.ok(), || format!("{server}'s served leaf verified with the root alone: {}", alone.describe()));
        f.note(format!(
            "{server} at {at} serves {file} (leaf + {intermediate}); openssl verify -CAfile root -untrusted {intermediate}: OK"
        ));
    }
}

/// kubectl with `kubeconfig` but trusting `root` alone (`--certificate-authority`, which replaces
/// the kubeconfig's CA data): the served intermediate completes the chain; authenticates as `user`.
pub fn check_trusting_root(cp: &ControlPlane, kubeconfig: &Path, root: &str, user: &str, f: &mut Failures) {
    match cp.whoami(&["--kubeconfig", kubeconfig.to_str().unwrap(), "--certificate-authority", root]) {
        Ok((u, _)) => {
            if f.eq(&format!("{}'s user, kubectl trusting {root} alone", kubeconfig.display()), user, u.as_str()) {
                f.note(format!(
                    "kubectl trusting the corporate root alone accepts the served chain: {} authenticates as {u}",
                    kubeconfig.display()
                ));
            }
        }
        Err(e) => f.fail(format!("kubectl trusting {root} alone refused the served chain: {e}")),
    }
}

// =============================================================================================
// Rotation (`kubebundle rotate`): a phase rolled out to the running control plane as printed

impl ControlPlane {
    /// Stops `component` (by its PID) and starts it again from `root`'s unit, as `systemctl
    /// restart` would, then waits for /readyz.
    pub fn restart_unit(&mut self, tools: &Tools, component: &str) {
        let at = self.procs.iter().position(|p| p.name == component).unwrap_or_else(|| panic!("{component} is not running"));
        drop(self.procs.remove(at));
        let p = start_unit(&self.ns, tools, &self.root, component, &self.scratch, |_| {});
        self.procs.push(p);
        let ready = wait_for(Duration::from_secs(60), || {
            self.revive(tools);
            let r = self.kubectl(&self.super_admin, &["get", "--raw", "/readyz"]);
            (r.ok() && r.stdout.trim() == "ok").then_some(())
        });
        assert!(ready.is_some(), "{component} restarted but the apiserver never became ready again:\n{}", self.logs());
    }

    /// What the units' `Restart=on-failure` does: a component that exited while kube-apiserver
    /// restarted (the controller-manager exits on a "forbidden" while the new apiserver's RBAC
    /// warms up) is started again from its unit. Returns the names of those restarted.
    pub fn revive(&mut self, tools: &Tools) -> Vec<String> {
        let mut revived = Vec::new();
        for i in 0..self.procs.len() {
            if let Ok(Some(_)) = self.procs[i].child.try_wait() {
                let name = self.procs[i].name.clone();
                let old = self.procs[i].log.clone();
                let _ = std::fs::rename(&old, old.with_extension(format!("log.{}", revived.len() + 1)));
                self.procs[i] = start_unit(&self.ns, tools, &self.root, &name, &self.scratch, |_| {});
                revived.push(name);
            }
        }
        revived
    }
}

impl ControlPlane {
    /// Who the apiserver takes a front proxy's request for: a SelfSubjectReview POSTed (curl, in
    /// the namespace) with the client certificate `cert` and key `key` (relative to the root or
    /// absolute) and `X-Remote-User: user`, the server checked against the root's cluster CA. The
    /// request-header authenticator answers for `user` when it trusts the certificate
    /// (--requestheader-client-ca-file, --requestheader-allowed-names); else the username the
    /// other authenticators give (system:anonymous), or Err with what the apiserver said.
    pub fn requestheader_user(&self, cert: &Path, key: &Path, user: &str) -> Result<String, String> {
        let url = format!("{}/apis/authentication.k8s.io/v1/selfsubjectreviews", self.server);
        let header = format!("X-Remote-User: {user}");
        let r = self.ns.run(
            "curl",
            &[
                "-sS",
                "--max-time",
                "10",
                "--cacert",
                self.ca.to_str().unwrap(),
                "--cert",
                self.root.join(cert).to_str().unwrap(),
                "--key",
                self.root.join(key).to_str().unwrap(),
                "-H",
                &header,
                "-H",
                "Content-Type: application/json",
                "-X",
                "POST",
                "--data",
                r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#,
                &url,
            ],
        );
        let v: Value = serde_json::from_str(&r.stdout).map_err(|e| format!("{e}: {}", r.describe()))?;
        match v["status"]["userInfo"]["username"].as_str() {
            Some(u) => Ok(u.to_string()),
            None => Err(format!("{} {}", v["code"], v["message"].as_str().unwrap_or(&r.stdout))),
        }
    }
}

/// `kubebundle rotate <material> <step> [extra]` on the bundle (its config and OUT), then its
/// printed roll-out done on the roots of the control plane and the worker exactly as printed: each
/// `tar -xzf <node>.tar.gz -C / FILES` line for one of them extracts those files from its tarball
/// into its root, each `rm -f` removes them, each `<node>: sed -i ...` line (the kubeconfig a
/// bootstrapped kubelet wrote) runs in `sh` on its root, each component of the `restart
/// <component> on each control plane` steps is restarted from its unit, in the printed order, and
/// then the printed `kubectl ... delete configmap extension-apiserver-authentication` runs with
/// the control plane's admin kubeconfig.
/// Returns the command's run.
pub fn rotate_and_roll_out(b: &Bundle, cp: &mut ControlPlane, material: &str, step: &str, extra: &[&str], f: &mut Failures) -> Run {
    let dir = b.tmp.path();
    let config = dir.join("cluster.yaml");
    let out = dir.join("out");
    // `material` may be two words (`ca etcd-ca`).
    let mut args = vec!["rotate"];
    args.extend(material.split(' '));
    args.extend([step, "--config", config.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    args.extend_from_slice(extra);
    let r = kubebundle(dir, &args, &[]);
    assert!(r.ok(), "rotate {material} {step}: {}", r.describe());
    let roots = [(&b.cp.name, cp.root.clone()), (&b.worker.name, b.worker_root.clone())];
    let mut restarts = Vec::new();
    let mut later: Vec<String> = Vec::new();
    let mut group: Vec<String> = Vec::new();
    for line in r.stdout.lines() {
        let t = line.trim();
        // "cp1, cp2: /etc/a /etc/b": the nodes the next tar/rm lines are for.
        if let Some((nodes, _)) = t.split_once(": /") {
            group = nodes.split(", ").map(str::to_string).collect();
        }
        if let Some(rest) = t.strip_prefix("tar -xzf ") {
            let files: Vec<&str> = rest.split_once(" -C / ").expect("tar ... -C / FILES").1.split(' ').collect();
            for (node, root) in roots.iter().filter(|(n, _)| group.contains(n)) {
                let mut c = Command::new("tar");
                c.arg("-xzf").arg(b.cluster.join("nodes").join(format!("{node}.tar.gz"))).arg("-C").arg(root).args(&files);
                let x = run_cmd(c);
                assert!(x.ok(), "the printed roll-out: {}", x.describe());
                // The extracted files name each other by absolute path, as on the node.
                rebase_references(root);
                f.note(format!("rotate {material} {step}: extracted {} from {node}'s tarball", files.join(" ")));
            }
        } else if let Some(rest) = t.strip_prefix("rm -f ") {
            for (_, root) in roots.iter().filter(|(n, _)| group.contains(n)) {
                for p in rest.split(' ') {
                    std::fs::remove_file(root.join(p.trim_start_matches('/'))).unwrap_or_else(|e| panic!("rm {p}: {e}"));
                }
            }
        } else if let Some((node, root, command)) =
            roots.iter().find_map(|(n, root)| t.strip_prefix(&format!("{n}: sed -i ")).map(|c| (n, root, format!("sed -i {c}"))))
        {
            // The printed command, its absolute paths moved into the node's root.
            let rebased =
                command.replace(" /etc/", &format!(" {}/etc/", root.display())).replace(" /var/", &format!(" {}/var/", root.display()));
            let mut c = Command::new("sh");
            c.arg("-c").arg(&rebased);
            let x = run_cmd(c);
            f.check(x.ok(), || format!("rotate {material} {step}: {node}: {rebased}: {}", x.describe()));
            f.note(format!("rotate {material} {step}: ran on {node}: {command}"));
        } else if let Some(command) = t
            .split_once("`kubectl ")
            .map(|(_, c)| c.trim_end_matches('`'))
            .filter(|c| c.contains("delete configmap extension-apiserver-authentication"))
        {
            // Run after the restarts, as printed.
            later.push(command.to_string());
        } else if let Some((_, rest)) =
            t.split_once(". restart ").filter(|(n, r)| n.parse::<u32>().is_ok() && r.contains(" on each control plane"))
        {
            restarts.push(rest.split(' ').next().unwrap().to_string());
        }
    }
    for component in &restarts {
        // The test's control plane runs etcd and the control-plane components, no kubelet.
        if !cp.procs.iter().any(|p| &p.name == component) {
            f.note(format!("rotate {material} {step}: {component} does not run in this test"));
            continue;
        }
        cp.restart_unit(&b.tools, component);
        f.note(format!("rotate {material} {step}: restarted {component}"));
    }
    // `kubectl --kubeconfig <the control plane's admin.conf> ...`, run with it.
    for command in &later {
        let words: Vec<&str> = command.split(' ').collect();
        assert_eq!(words.first(), Some(&"--kubeconfig"), "the printed kubectl names its kubeconfig: {command}");
        let kubeconfig = cp.root.join(words[1].trim_start_matches('/'));
        let x = cp.kubectl(&kubeconfig, &words[2..]);
        f.check(x.ok(), || format!("rotate {material} {step}: kubectl {command}: {}", x.describe()));
        f.note(format!("rotate {material} {step}: ran kubectl {command}"));
    }
    // The controller-manager settles (takes its lease again) before the test goes on.
    let settled = wait_for(Duration::from_secs(30), || {
        for name in cp.revive(&b.tools) {
            f.note(format!("rotate {material} {step}: {name} exited while kube-apiserver restarted; started again (Restart=on-failure)"));
        }
        cp.lease_holder("kube-controller-manager", Duration::from_secs(2))
    });
    f.check(settled.is_some(), || format!("rotate {material} {step}: kube-controller-manager holds no lease:\n{}", cp.logs()));
    r
}
