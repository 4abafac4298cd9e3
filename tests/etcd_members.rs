//! An etcd member added to, then removed from, a running one-member hardway etcd, with the
//! steps `generate` prints. Each member runs from its own unit's ExecStart as rendered (paths
//! rebased into its node's temp root, argv[0] the installed etcd), in its own network namespace
//! (`unshare --net`), the two joined by a veth pair: there each unit's fixed ports and loopback
//! listeners (127.0.0.1:2379, 2381) are its own, as on two hosts, and nothing is rewritten.
//!
//! Needs etcd and etcdctl (Debian's etcd-server and etcd-client), root, unshare, nsenter and ip.
//! A missing etcd fails loudly (KUBEBUNDLE_SKIP_ETCD=1 skips on purpose); missing namespaces
//! fail under CI=true and are a loud skip otherwise.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const CLUSTER: &str = "etcdjoin";
/// (node, address) of the first member and of the one added later.
const FIRST: (&str, &str) = ("etcd1", "10.77.0.1");
const SECOND: (&str, &str) = ("etcd2", "10.77.0.2");

/// A private network namespace held by `unshare --net sleep`; commands enter it with nsenter.
struct Netns {
    holder: Proc,
}

impl Netns {
    fn new(scratch: &Path, name: &str) -> Netns {
        let mut c = Command::new("unshare");
        c.args(["--net", "--", "sleep", "3600"]);
        let holder = Proc::spawn(name, c, scratch.join(format!("{name}.log")));
        let pid = holder.child.id();
        let ours = std::fs::read_link("/proc/self/ns/net").ok();
        let entered = wait_for(Duration::from_secs(5), || {
            let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
            (theirs.is_some() && theirs != ours).then_some(())
        });
        assert!(entered.is_some(), "`unshare --net` made no network namespace: {}", holder.log_text());
        let ns = Netns { holder };
        ns.ok("ip", &["link", "set", "lo", "up"]);
        ns
    }

    fn pid(&self) -> u32 {
        self.holder.child.id()
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/proc/{}/ns/net", self.pid())).arg("--").arg(program);
        c
    }

    fn run(&self, program: &str, args: &[String]) -> Run {
        let mut c = self.command(program);
        c.args(args).env("LC_ALL", "C").env("ETCDCTL_API", "3");
        run_cmd(c)
    }

    fn ok(&self, program: &str, args: &[&str]) {
        let r = self.run(program, &args.iter().map(|a| a.to_string()).collect::<Vec<_>>());
        assert!(r.ok(), "{}", r.describe());
    }
}

/// Two namespaces joined by a veth pair, `FIRST`'s address in the first, `SECOND`'s in the other.
fn two_hosts(scratch: &Path) -> (Netns, Netns) {
    let (a, b) = (Netns::new(scratch, "host1"), Netns::new(scratch, "host2"));
    a.ok("ip", &["link", "add", "kb1", "type", "veth", "peer", "name", "kb2", "netns", &b.pid().to_string()]);
    a.ok("ip", &["addr", "add", &format!("{}/24", FIRST.1), "dev", "kb1"]);
    b.ok("ip", &["addr", "add", &format!("{}/24", SECOND.1), "dev", "kb2"]);
    a.ok("ip", &["link", "set", "kb1", "up"]);
    b.ok("ip", &["link", "set", "kb2", "up"]);
    (a, b)
}

/// Root, unshare, nsenter and ip; a failure under CI=true, else a loud skip.
fn namespaces_available() -> bool {
    let on_path = |name: &str| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]).any(|d| d.join(name).is_file())
    };
    let missing: Vec<&str> = ["unshare", "nsenter", "ip"].into_iter().filter(|t| !on_path(t)).collect();
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX);
    let why = match (missing.is_empty(), uid == 0) {
        (true, true) => return true,
        (false, _) => format!("{} missing: apt-get install util-linux iproute2", missing.join(", ")),
        (true, false) => format!("network namespaces need root (uid {uid})"),
    };
    assert!(!std::env::var("CI").is_ok_and(|v| v == "true"), "{why}");
    eprintln!("NOTE: etcd membership test skipped (CI is not true): {why}");
    false
}

fn real_etcd() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join("etcd")).find(|p| p.is_file()).and_then(|p| p.canonicalize().ok()).expect("etcd on PATH")
}

fn config(nodes: &[(&str, &str)]) -> String {
    let roles: Vec<(&str, &str, &str)> =
        nodes.iter().map(|(n, a)| (*n, *a, if *n == FIRST.0 { "control-plane, etcd" } else { "etcd" })).collect();
    live_config(CLUSTER, &roles).replace("kind: Inventory\n", "kind: Inventory\nprofile: hardway\n")
}

/// `generate` with the real clock (etcd checks certificates against it); the bundle verifies.
fn generate(dir: &Path, nodes: &[(&str, &str)]) -> Run {
    std::fs::write(dir.join("c.yaml"), config(nodes)).unwrap();
    let r = kubebundle(dir, &["generate", "--unpacked", "--config", "c.yaml", "--out", "out"], &[]);
    assert!(r.ok(), "{}", r.describe());
    verify_bundle(&dir.join("out").join(CLUSTER), None).unwrap_or_else(|e| panic!("{e}"));
    r
}

/// The value of `--name=value` in an argv.
fn flag<'a>(argv: &'a [String], name: &str) -> &'a str {
    let prefix = format!("--{name}=");
    argv.iter().find_map(|a| a.strip_prefix(prefix.as_str())).unwrap_or_else(|| panic!("no --{name} in {argv:?}"))
}

/// Every `--flag=/abs` value moved under `root`.
fn rebase(argv: &[String], root: &Path) -> Vec<String> {
    argv.iter()
        .map(|a| match a.split_once('=') {
            Some((k, v)) if k.starts_with("--") && v.starts_with('/') => format!("{k}={}{v}", root.display()),
            _ => a.clone(),
        })
        .collect()
}

/// The command a printed step line runs: from `etcdctl` to the end or a `#` comment.
fn printed_command(line: &str) -> Vec<String> {
    let from = line.find("etcdctl ").unwrap_or_else(|| panic!("no etcdctl in {line:?}"));
    line[from..].split('#').next().unwrap().split_whitespace().map(String::from).collect()
}

/// The step lines `generate` printed after the line starting with `head`.
fn block<'a>(stderr: &'a str, head: &str) -> Vec<&'a str> {
    let mut lines = stderr.lines().skip_while(|l| !l.starts_with(head));
    let first = lines.next().unwrap_or_else(|| panic!("no line starting {head:?} in:\n{stderr}"));
    std::iter::once(first).chain(lines.take_while(|l| l.starts_with("  "))).collect()
}

/// The member's node tree, extracted from its tarball into `root` as an installer would.
fn install(cluster: &Path, node: &str, root: &Path) -> Vec<String> {
    extract(&cluster.join("nodes").join(format!("{node}.tar.gz")), root);
    exec_start(&std::fs::read_to_string(root.join("etc/systemd/system/etcd.service")).expect("the etcd unit"))
}

/// etcd from its unit's argv, in `ns`.
fn start(ns: &Netns, argv: &[String], root: &Path, log: PathBuf) -> Proc {
    assert_eq!(argv[0], "/usr/local/bin/etcd");
    let mut cmd = ns.command(real_etcd());
    cmd.args(&rebase(argv, root)[1..]).env_remove("NOTIFY_SOCKET");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ETCD_") {
            cmd.env_remove(k);
        }
    }
    Proc::spawn("etcd", cmd, log)
}

/// etcdctl on a member's host with its own healthcheck client (from the unit's CA and the tree).
fn etcdctl_on(ns: &Netns, root: &Path, endpoint: &str, args: &[&str]) -> Run {
    let certs = root.join("etc/k8s/etcd/certs");
    let mut a = vec![
        format!("--endpoints={endpoint}"),
        format!("--cacert={}", root.join("etc/k8s/shared/etcd-ca.crt").display()),
        format!("--cert={}", certs.join("healthcheck-client.crt").display()),
        format!("--key={}", certs.join("healthcheck-client.key").display()),
        "--dial-timeout=3s".into(),
        "--command-timeout=5s".into(),
    ];
    a.extend(args.iter().map(|s| s.to_string()));
    ns.run("etcdctl", &a)
}

fn healthy(ns: &Netns, root: &Path, endpoint: &str, etcd: &mut Proc) -> bool {
    wait_for(Duration::from_secs(15), || {
        if let Ok(Some(status)) = etcd.child.try_wait() {
            panic!("etcd exited with {status}:\n{}", truncate(&etcd.log_text(), 4000));
        }
        let r = etcdctl_on(ns, root, endpoint, &["endpoint", "health"]);
        (r.ok() && (r.stdout.clone() + &r.stderr).contains(&format!("{endpoint} is healthy"))).then_some(())
    })
    .is_some()
}

/// `member list` lines: (id, status, name).
fn members(ns: &Netns, root: &Path, endpoint: &str) -> Vec<(String, String, String)> {
    let r = etcdctl_on(ns, root, endpoint, &["member", "list"]);
    assert!(r.ok(), "{}", r.describe());
    r.stdout
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(", ").collect();
            (f[0].to_string(), f[1].to_string(), f[2].to_string())
        })
        .collect()
}

/// A node's files in the bundle: its tarball and its unpacked tree.
fn node_files(cluster: &Path, node: &str) -> BTreeMap<String, Vec<u8>> {
    let mut files = file_bytes(&cluster.join("nodes").join(node));
    files.insert("tarball".into(), std::fs::read(cluster.join("nodes").join(format!("{node}.tar.gz"))).unwrap());
    files
}

#[test]
fn a_member_joins_a_running_hardway_etcd_with_the_printed_steps_and_leaves_with_them() {
    if !etcd_available() || !namespaces_available() {
        return;
    }
    let tmp = temp_dir("etcd-members");
    let dir = tmp.path();
    let (host1, host2) = two_hosts(dir);
    let cluster = dir.join("out").join(CLUSTER);
    let (root1, root2) = (dir.join("root1"), dir.join("root2"));
    let (url1, url2) = (format!("https://{}:2379", FIRST.1), format!("https://{}:2379", SECOND.1));

    // One member, from its unit: it forms the cluster.
    generate(dir, &[FIRST]);
    let first_files = node_files(&cluster, FIRST.0);
    let argv1 = install(&cluster, FIRST.0, &root1);
    assert_eq!(flag(&argv1, "initial-cluster-state"), "new");
    assert_eq!(flag(&argv1, "initial-cluster"), format!("{}=https://{}:2380", FIRST.0, FIRST.1));
    let mut etcd1 = start(&host1, &argv1, &root1, dir.join("etcd1.log"));
    assert!(healthy(&host1, &root1, &url1, &mut etcd1), "the first member never became healthy:\n{}", truncate(&etcd1.log_text(), 4000));
    let put = etcdctl_on(&host1, &root1, &url1, &["put", "/kubebundle/joined", "before"]);
    assert!(put.ok(), "{}", put.describe());

    // A second member in the Inventory: the first member's files do not change, the new unit
    // joins (existing, both members), and the run prints the member add to run on etcd1.
    let run = generate(dir, &[FIRST, SECOND]);
    assert_eq!(node_files(&cluster, FIRST.0), first_files, "adding a member changed the first member's files");
    let steps = block(&run.stderr, &format!("etcd: {} joins the running etcd cluster", SECOND.0));
    assert!(steps[0].ends_with(&format!("Before starting etcd on {}, on {}:", SECOND.0, FIRST.0)), "{steps:?}");
    let add = printed_command(steps.iter().find(|l| l.contains(" member add ")).expect("a member add line"));
    let tail: Vec<&str> = add.iter().rev().take(3).rev().map(String::as_str).collect();
    assert_eq!(tail, ["add", SECOND.0, &format!("--peer-urls=https://{}:2380", SECOND.1)], "{add:?}");
    assert_eq!(flag(&add, "endpoints"), url1);
    for (name, artifact) in [
        ("cacert", "etc/k8s/shared/etcd-ca.crt"),
        ("cert", "etc/k8s/etcd/certs/healthcheck-client.crt"),
        ("key", "etc/k8s/etcd/certs/healthcheck-client.key"),
    ] {
        assert_eq!(flag(&add, name), format!("/{artifact}"), "{add:?}");
        assert!(root1.join(artifact).is_file(), "{artifact} is not on {}", FIRST.0);
    }
    let added = host1.run("etcdctl", &rebase(&add, &root1)[1..]);
    assert!(added.ok() && added.stdout.contains("added to cluster"), "{}", added.describe());
    let argv2 = install(&cluster, SECOND.0, &root2);
    assert_eq!(flag(&argv2, "initial-cluster-state"), "existing");
    let both = format!("{}=https://{}:2380,{}=https://{}:2380", FIRST.0, FIRST.1, SECOND.0, SECOND.1);
    assert_eq!(flag(&argv2, "initial-cluster"), both);
    assert!(steps[0].contains(&format!("--initial-cluster={both}")), "{steps:?}");
    let mut etcd2 = start(&host2, &argv2, &root2, dir.join("etcd2.log"));

    // Two healthy members, both started; the data written before is on the new one.
    for (ns, root, url, etcd) in [(&host1, &root1, &url1, &mut etcd1), (&host2, &root2, &url2, &mut etcd2)] {
        assert!(healthy(ns, root, url, etcd), "{url} never became healthy:\n{}", truncate(&etcd.log_text(), 4000));
    }
    let listed = members(&host2, &root2, &url2);
    let started: Vec<&str> = listed.iter().filter(|m| m.1 == "started").map(|m| m.2.as_str()).collect();
    assert_eq!(started.len(), 2, "member list: {listed:?}");
    assert!(started.contains(&FIRST.0) && started.contains(&SECOND.0), "member list: {listed:?}");
    let get = etcdctl_on(&host2, &root2, &url2, &["get", "/kubebundle/joined", "--print-value-only"]);
    assert_eq!(get.stdout.trim(), "before", "{}", get.describe());

    // A re-run changes nothing of either member.
    let second_files = node_files(&cluster, SECOND.0);
    let again = generate(dir, &[FIRST, SECOND]);
    assert!(!again.stderr.contains("etcd: "), "a re-run printed membership steps again:\n{}", again.stderr);
    assert_eq!((node_files(&cluster, FIRST.0), node_files(&cluster, SECOND.0)), (first_files.clone(), second_files));

    // etcd2 out of the Inventory: the run prints its removal, which works as printed.
    let run = generate(dir, &[FIRST]);
    assert_eq!(node_files(&cluster, FIRST.0), first_files, "removing a member changed the first member's files");
    let steps = block(&run.stderr, &format!("etcd: {} left the Inventory", SECOND.0));
    let list = printed_command(steps.iter().find(|l| l.contains(" member list")).expect("a member list line"));
    let remove_line = steps.iter().find(|l| l.contains(" member remove <ID>")).expect("a member remove line");
    assert!(remove_line.contains(&format!("the line of {} (https://{}:2380)", SECOND.0, SECOND.1)), "{remove_line}");
    let listed = host1.run("etcdctl", &rebase(&list, &root1)[1..]);
    assert!(listed.ok(), "{}", listed.describe());
    let id =
        listed.stdout.lines().find(|l| l.contains(&format!(", {}, ", SECOND.0))).and_then(|l| l.split(", ").next()).expect("etcd2's ID");
    let remove: Vec<String> = printed_command(remove_line).into_iter().map(|a| if a == "<ID>" { id.to_string() } else { a }).collect();
    // etcd refuses to remove a member until every member has been connected for 5 s
    // ("unhealthy cluster"): the test retries what an operator would not run that fast.
    let mut last = None;
    let removed = wait_for(Duration::from_secs(15), || {
        let r = host1.run("etcdctl", &rebase(&remove, &root1)[1..]);
        let done = r.ok() && r.stdout.contains("removed from cluster");
        last = Some(r);
        done.then_some(())
    });
    assert!(removed.is_some(), "{}", last.map(|r| r.describe()).unwrap_or_default());
    let left: Vec<String> = members(&host1, &root1, &url1).into_iter().map(|m| m.2).collect();
    assert_eq!(left, [FIRST.0], "member list after the removal");
    assert!(healthy(&host1, &root1, &url1, &mut etcd1), "the first member is not healthy after the removal");
    drop((etcd2, etcd1));
}
