//! Acceptance tests of the CLI's behaviour around the PKI: the embedded example config,
//! SOURCE_DATE_EPOCH, re-runs on an existing output, bad input, usage errors and running
//! without a network.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::checks;
use common::model::{CP_ETCD, WORKER};
use common::*;

fn small_model(name: &str) -> Model {
    Model::ecdsa(name, vec![Node::new("cp1", "10.2.0.11", CP_ETCD), Node::new("w1", "10.2.0.21", WORKER)])
}

// ------------------------------------------------------------------------------------------
// The embedded example config.

/// Without --config, `generate` uses the embedded example (3 control planes cp1..cp3 with
/// control-plane+etcd, 2 workers), says so on stderr, writes to ./out/<clusterName>/, and the
/// result passes every check; `config print-defaults` prints that config and it is valid input.
/// HOME stays untouched.
#[test]
fn default_config_generates_and_prints() {
    let dir = temp_dir("defaults");
    let mut f = Failures::new();
    let pd = kubebundle(dir.path(), &["config", "print-defaults"], &[]);
    assert!(pd.ok(), "config print-defaults failed: {}", pd.describe());
    let cfg = dir.path().join("defaults.yaml");
    std::fs::write(&cfg, &pd.stdout).unwrap();
    let docs = yaml_file_to_json(dir.path(), &cfg).unwrap_or_else(|e| panic!("kubectl cannot read print-defaults output: {e}"));
    let model = Model::from_documents(&docs, NOW_UNIX).unwrap_or_else(|e| panic!("print-defaults output: {e}"));
    let cps: Vec<&str> = model.nodes.iter().filter(|n| n.is_cp()).map(|n| n.name.as_str()).collect();
    f.eq("control planes of the example", &vec!["cp1", "cp2", "cp3"], &cps);
    f.check(model.control_planes().iter().all(|n| n.is_etcd()), || "example control planes are not etcd members".into());
    f.eq("workers of the example", &2, &model.nodes.iter().filter(|n| n.roles == WORKER).count());

    let plan = kubebundle(dir.path(), &["plan", "--config", cfg.to_str().unwrap()], &[]);
    f.check(plan.ok(), || format!("plan --config <print-defaults output>: {}", plan.describe()));

    let now = rfc3339(NOW_UNIX);
    let run = kubebundle(dir.path(), &["generate", "--unpacked", "--now", &now], &[]);
    if !run.ok() {
        panic!("generate without --config failed: {}", run.describe());
    }
    let err = run.stderr.to_lowercase();
    f.check(err.contains("example") || err.contains("embedded") || err.contains("default"), || {
        format!("stderr does not say the embedded example config is used: {:?}", run.stderr)
    });
    let out = dir.path().join("out");
    let cluster = out.join(&model.cluster_name);
    f.check(cluster.is_dir(), || format!("no out/{} (out holds {:?})", model.cluster_name, list_dir(&out)));
    if cluster.is_dir() {
        let g =
            Generated { dir: temp_dir("defaults-holder"), config_path: cfg.clone(), out: out.clone(), cluster, run, model: model.clone() };
        let all = checks::check_all(&g);
        f.list.extend(all.list);
        f.notes.extend(all.notes);
    }
    let home: Vec<String> = walk(&dir.path().join(".home")).into_keys().collect();
    f.check(home.is_empty(), || format!("generate wrote into HOME: {home:?}"));
    f.finish("default_config_generates_and_prints");
}

// ------------------------------------------------------------------------------------------
// The clock.

/// SOURCE_DATE_EPOCH fixes the clock when --now is absent: notBefore = epoch - 5 min on every
/// cert, tarball mtimes = epoch, token expiration = epoch + 24h; a custom
/// caCertificateValidityPeriod (5 years) is honoured.
#[test]
fn source_date_epoch_fixes_the_clock() {
    let mut m = small_model("kb-sde");
    m.now = NOW_UNIX + 12_345;
    m.ca_validity = Some("43800h".into());
    let dir = temp_dir("sde");
    let cfg = dir.path().join("cluster.yaml");
    std::fs::write(&cfg, m.to_yaml()).unwrap();
    let out = dir.path().join("out");
    let epoch = m.now.to_string();
    let run = kubebundle(
        dir.path(),
        &["generate", "--unpacked", "--config", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()],
        &[("SOURCE_DATE_EPOCH", epoch.as_str())],
    );
    assert!(run.ok(), "{}", run.describe());
    let g = Generated { cluster: out.join(&m.cluster_name), dir, config_path: cfg, out, run, model: m };
    checks::check_all(&g).finish("source_date_epoch_fixes_the_clock");
}

// ------------------------------------------------------------------------------------------
// Re-runs.

fn snapshot(root: &Path) -> BTreeMap<String, Vec<u8>> {
    walk(root)
        .into_iter()
        .filter_map(|(k, e)| match e {
            Entry::File { bytes, .. } => Some((k, bytes)),
            _ => None,
        })
        .collect()
}

const STATE_FILES: &[&str] = &[
    "state/pki/ca.crt",
    "state/pki/ca.key",
    "state/pki/front-proxy-ca.crt",
    "state/pki/front-proxy-ca.key",
    "state/pki/etcd/ca.crt",
    "state/pki/etcd/ca.key",
    "state/pki/sa.key",
    "state/pki/sa.pub",
    "state/encryption.yaml",
    "state/tokens.yaml",
];

/// Cluster-wide files every old node keeps byte-identical across re-runs.
fn shared_files_of(m: &Model, n: &Node) -> Vec<String> {
    let mut v: Vec<String> = m.cert_files(n).into_iter().filter(|c| c.is_ca).flat_map(|c| [Some(c.crt), c.key]).flatten().collect();
    if n.is_cp() {
        v.push("etc/kubernetes/pki/sa.key".into());
        v.push("etc/kubernetes/pki/sa.pub".into());
        v.push(checks::ENCRYPTION_CONFIG.into());
    }
    v.into_iter().map(|p| format!("nodes/{}/{p}", n.name)).collect()
}

/// Acceptance 10: a second `generate` on the same out dir keeps the CAs, sa key pair,
/// encryption key and tokens byte-identical; adding nodes to the inventory only adds files
/// (the old nodes' CA, sa and encryption files are unchanged) and the new nodes' certs verify
/// against the existing CAs. `--force` then replaces the state, consistently.
#[test]
fn rerun_keeps_state_and_adding_nodes_only_adds_files() {
    let m1 = small_model("kb-rerun");
    let mut g = generate_model("rerun", &m1).unwrap_or_else(|e| panic!("{e}"));
    let mut f = Failures::new();
    let first = snapshot(&g.cluster);
    let hash1 = checks::discovery_hash(&g.state("pki/ca.crt")).unwrap();

    // Same inventory again.
    if let Err(e) = g.regenerate(m1.clone(), &m1.to_yaml()) {
        panic!("second generate on the same out dir failed: {e}");
    }
    let second = snapshot(&g.cluster);
    let mut keep: Vec<String> = STATE_FILES.iter().map(|s| s.to_string()).collect();
    for n in &m1.nodes {
        keep.extend(shared_files_of(&m1, n));
    }
    for p in &keep {
        f.check(first.contains_key(p) && first.get(p) == second.get(p), || format!("re-run changed or lost {p}"));
    }
    let removed: Vec<&String> = first.keys().filter(|k| !second.contains_key(*k)).collect();
    f.check(removed.is_empty(), || format!("re-run removed {removed:?}"));

    // Add a control plane and a worker.
    let mut m2 = m1.clone();
    m2.nodes.push(Node::new("cp2", "10.2.0.12", CP_ETCD));
    m2.nodes.push(Node::new("w2", "10.2.0.22", WORKER));
    if let Err(e) = g.regenerate(m2.clone(), &m2.to_yaml()) {
        panic!("generate with two more nodes failed: {e}");
    }
    let third = snapshot(&g.cluster);
    for p in &keep {
        f.check(second.contains_key(p) && second.get(p) == third.get(p), || format!("adding nodes changed or lost {p}"));
    }
    let removed: Vec<&String> = second.keys().filter(|k| !third.contains_key(*k)).collect();
    f.check(removed.is_empty(), || format!("adding nodes removed {removed:?}"));
    let added: Vec<&String> = third.keys().filter(|k| !second.contains_key(*k)).collect();
    let new_prefixes = ["nodes/cp2/", "nodes/w2/", "nodes/cp2.tar.gz", "nodes/w2.tar.gz"];
    let stray: Vec<&&String> = added.iter().filter(|k| !new_prefixes.iter().any(|p| k.starts_with(p))).collect();
    f.check(stray.is_empty(), || format!("adding nodes added files outside the new nodes: {stray:?}"));
    f.check(added.iter().any(|k| k.starts_with("nodes/cp2/")) && added.iter().any(|k| k.starts_with("nodes/w2/")), || {
        "the new nodes' trees are missing".into()
    });
    f.eq("discovery hash after adding nodes", &Ok(hash1.clone()), &checks::discovery_hash(&g.state("pki/ca.crt")));
    // Everything, including the new nodes against the kept CAs, passes the full checks.
    let all = checks::check_all(&g);
    f.list.extend(all.list.into_iter().map(|s| format!("after adding nodes: {s}")));
    f.check(!g.node_dir("cp2").join("etc/kubernetes/super-admin.conf").exists(), || "a joined control plane got super-admin.conf".into());

    // --force replaces the long-lived state, and the bundle stays consistent.
    let now = rfc3339(NOW_UNIX);
    let run = kubebundle(
        g.root(),
        &[
            "generate",
            "--unpacked",
            "--config",
            g.config_path.to_str().unwrap(),
            "--out",
            g.out.to_str().unwrap(),
            "--now",
            &now,
            "--force",
        ],
        &[],
    );
    if run.ok() {
        let fourth = snapshot(&g.cluster);
        f.check(fourth.get("state/pki/ca.key") != third.get("state/pki/ca.key"), || "--force kept the CA key".into());
        let all = checks::check_all(&g);
        f.list.extend(all.list.into_iter().map(|s| format!("after --force: {s}")));
    } else {
        f.fail(format!("generate --force failed: {}", run.describe()));
    }
    f.finish("rerun_keeps_state_and_adding_nodes_only_adds_files");
}

// ------------------------------------------------------------------------------------------
// Bad input and usage errors.

struct BadCase {
    name: &'static str,
    text: String,
    /// 1-based line the error must point at (file:line:col), if the brief requires a position.
    line: Option<usize>,
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle:?} not in config")) + 1
}

fn insert_after(text: &str, after: &str, new_line: &str) -> String {
    let mut out = String::new();
    let mut done = false;
    for l in text.lines() {
        out.push_str(l);
        out.push('\n');
        if !done && l.trim_end() == after {
            out.push_str(new_line);
            out.push('\n');
            done = true;
        }
    }
    assert!(done, "{after:?} not in config");
    out
}

fn bad_cases() -> Vec<BadCase> {
    let mut base = small_model("kb-bad");
    base.bootstrap_tokens = vec!["abcdef.0123456789abcdef".into()];
    base.cert_sans = vec!["api.kb-bad.example".into()];
    let good = base.to_yaml();
    let mut v = vec![];

    // Unknown field in the third document (the Inventory): the line is counted in the file.
    let t = insert_after(&good, "kind: Inventory", "bogusField: true");
    v.push(BadCase { name: "unknown field in Inventory", line: Some(line_of(&t, "bogusField")), text: t });
    // Unknown (misspelt) field nested in the ClusterConfiguration.
    let t = insert_after(&good, "networking:", "  podCIDR: \"10.0.0.0/8\"");
    v.push(BadCase { name: "unknown field in ClusterConfiguration.networking", line: Some(line_of(&t, "podCIDR")), text: t });
    // Invalid CIDRs.
    let t = good.replace("serviceSubnet: \"10.96.0.0/12\"", "serviceSubnet: \"10.96.0.0/33\"");
    v.push(BadCase { name: "serviceSubnet 10.96.0.0/33", line: Some(line_of(&t, "10.96.0.0/33")), text: t });
    let t = good.replace("podSubnet: \"10.244.0.0/16\"", "podSubnet: \"10.244.0.0\"");
    v.push(BadCase { name: "podSubnet without prefix", line: Some(line_of(&t, "podSubnet")), text: t });
    // §3: a leaf must never outlive its CA.
    let mut m = base.clone();
    m.cert_validity = Some("96360h".into());
    v.push(BadCase { name: "certificateValidityPeriod beyond the CA's", text: m.to_yaml(), line: None });
    // §2: a certSANs entry that is neither a DNS name, a wildcard nor an IP is an error for us.
    let t = good.replace("\"api.kb-bad.example\"", "\"not a valid name!\"");
    v.push(BadCase { name: "invalid certSANs entry", line: None, text: t });
    // Roles are control-plane, etcd, worker.
    let t = good.replace("roles: [worker]", "roles: [master]");
    v.push(BadCase { name: "unknown role", line: None, text: t });
    v
}

/// Acceptance 13: bad configs exit 2 (the input is wrong) with `file:line:col` on stderr (where
/// the brief asks for it: unknown fields, invalid CIDRs) and write nothing to the out dir.
#[test]
fn bad_config_exits_2_with_position_and_writes_nothing() {
    let mut f = Failures::new();
    for case in bad_cases() {
        let dir = temp_dir("bad");
        let cfg = dir.path().join("cluster.yaml");
        std::fs::write(&cfg, &case.text).unwrap();
        let out = dir.path().join("out");
        let now = rfc3339(NOW_UNIX);
        let r = kubebundle(
            dir.path(),
            &["generate", "--unpacked", "--config", cfg.to_str().unwrap(), "--out", out.to_str().unwrap(), "--now", &now],
            &[],
        );
        let l = case.name;
        f.eq(&format!("{l}: exit code"), &Some(2), &r.code);
        f.check(!r.stderr.contains("panicked at"), || format!("{l}: panicked: {}", r.stderr));
        f.check(!r.stderr.trim().is_empty(), || format!("{l}: nothing on stderr"));
        if let Some(line) = case.line {
            f.check(find_position(&r.stderr, "cluster.yaml", line).is_some(), || {
                format!("{l}: stderr lacks cluster.yaml:{line}:<col>: {:?}", r.stderr)
            });
        }
        if let Some(written) = nonempty_contents(&out) {
            f.fail(format!("{l}: wrote to the out dir: {written:?}"));
        }
        // plan refuses it the same way.
        let p = kubebundle(dir.path(), &["plan", "--config", cfg.to_str().unwrap()], &[]);
        f.eq(&format!("{l}: plan exit code"), &Some(2), &p.code);
    }
    f.finish("bad_config_exits_2_with_position_and_writes_nothing");
}

/// Usage errors exit 2 and write nothing.
#[test]
fn usage_errors_exit_2() {
    let mut f = Failures::new();
    let cases: &[&[&str]] =
        &[&["generate", "--no-such-flag"], &["plan", "-o", "xml"], &["no-such-command"], &["generate", "--now", "yesterday"], &[]];
    for args in cases {
        let dir = temp_dir("usage");
        let r = kubebundle(dir.path(), args, &[]);
        f.eq(&format!("kubebundle {args:?}: exit code"), &Some(2), &r.code);
        let written: Vec<String> = walk(dir.path()).into_keys().filter(|k| !k.starts_with(".home")).collect();
        f.check(written.is_empty(), || format!("kubebundle {args:?} wrote {written:?}"));
    }
    f.finish("usage_errors_exit_2");
}

/// A missing --config file is a bad config (exit 2), not a crash.
#[test]
fn missing_config_file_exits_2() {
    let dir = temp_dir("missing");
    let out = dir.path().join("out");
    let r = kubebundle(dir.path(), &["generate", "--config", "does-not-exist.yaml", "--out", out.to_str().unwrap()], &[]);
    assert_eq!(r.code, Some(2), "{}", r.describe());
    assert!(r.stderr.contains("cannot read config file does-not-exist.yaml: no such file or directory"), "{}", r.describe());
    assert!(nonempty_contents(&out).is_none());
}

// ------------------------------------------------------------------------------------------
// No network.

/// Acceptance 12: `generate` succeeds inside a network namespace with no interfaces up
/// (`unshare --net`), so it never looks anything up.
#[test]
fn generate_succeeds_without_network() {
    let probe = run_cmd({
        let mut c = std::process::Command::new("unshare");
        c.args(["--net", "true"]);
        c
    });
    if !probe.ok() {
        let msg = format!(
            "`unshare --net true` does not work here (need root or user namespaces), so the no-network test cannot run: {}",
            probe.describe()
        );
        if std::env::var_os("CI").is_some() {
            panic!("{msg}");
        }
        eprintln!("SKIPPED generate_succeeds_without_network: {msg}");
        return;
    }
    let m = small_model("kb-nonet");
    let dir = temp_dir("nonet");
    let cfg = dir.path().join("cluster.yaml");
    std::fs::write(&cfg, m.to_yaml()).unwrap();
    let out = dir.path().join("out");
    let now = rfc3339(NOW_UNIX);
    let mut c = hermetic("unshare", dir.path());
    c.current_dir(dir.path()).args([
        "--net",
        bin(),
        "generate",
        "--unpacked",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--now",
        &now,
    ]);
    let run = run_cmd(c);
    assert!(run.ok(), "generate in `unshare --net` failed: {}", run.describe());
    let g = Generated { cluster: out.join(&m.cluster_name), dir, config_path: cfg, out, run, model: m };
    let mut f = Failures::new();
    let scratch = temp_dir("scratch");
    let ctx = checks::Ctx::new(&g, scratch.path());
    checks::check_cluster_layout(&ctx, &mut f);
    checks::check_node_certs(&ctx, &mut f);
    f.finish("generate_succeeds_without_network");
}

// ------------------------------------------------------------------------------------------
// Exit codes, durations and closed pipes.

/// A small bundle (ECDSA, one control plane, one worker) and copies of it to break or change.
struct Codes {
    g: Generated,
    now: String,
    /// A directory that is not a bundle.
    empty: std::path::PathBuf,
    /// A config with a type error (bindPort: six).
    bad_config: std::path::PathBuf,
    /// A copy of the bundle for renew and token.
    copy: std::path::PathBuf,
}

fn codes(prefix: &str) -> Codes {
    let g = generate_model(prefix, &small_model(&unique_name("kb-codes"))).unwrap_or_else(|e| panic!("{e}"));
    let dir = g.root().to_path_buf();
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let bad_config = dir.join("bad.yaml");
    std::fs::write(&bad_config, "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nlocalAPIEndpoint: {bindPort: six}\n")
        .unwrap();
    let copy = dir.join("copy").join(&g.model.cluster_name);
    copy_dir(&g.cluster, &copy);
    Codes { g, now: rfc3339(NOW_UNIX), empty, bad_config, copy }
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// The exit codes of every command (README "Exit codes"), one assertion per command and code:
/// 0 success, 1 the command ran and refused or failed, 2 the input is wrong (usage, config or
/// profile error, a path that is not what the command takes), `generate --check` 1 for drift
/// and 2 for any error, `certs check-expiration` 0 / 3 / 4 and 2.
#[test]
fn exit_codes_of_every_command() {
    let c = codes("codes");
    let dir = c.g.root();
    let cluster = c.g.model.cluster_name.clone();
    let (cfg, out, bundle, empty, bad, copy, now) =
        (s(&c.g.config_path), s(&c.g.out), s(&c.g.cluster), s(&c.empty), s(&c.bad_config), s(&c.copy), c.now.clone());
    let in_a_year = rfc3339(NOW_UNIX + 340 * DAY);
    let in_two_years = rfc3339(NOW_UNIX + 2 * 365 * DAY);
    // An out dir whose OUT/<cluster> kubebundle did not write.
    let foreign = dir.join("foreign");
    std::fs::create_dir_all(foreign.join(&cluster)).unwrap();
    std::fs::write(foreign.join(&cluster).join("notes.txt"), "not a cluster\n").unwrap();
    // A bundle whose state cannot be read (tokens.yaml is not YAML).
    let broken_out = dir.join("broken");
    let broken = broken_out.join(&cluster);
    copy_dir(&c.g.cluster, &broken);
    std::fs::write(broken.join("state/tokens.yaml"), "garbage\n").unwrap();
    // A bundle with a truncated tarball (verify finds errors).
    let torn = dir.join("torn").join(&cluster);
    copy_dir(&c.g.cluster, &torn);
    let w1 = torn.join("nodes/w1.tar.gz");
    std::fs::write(&w1, &std::fs::read(&w1).unwrap()[..100]).unwrap();
    // A config with one more worker (drift).
    let mut more = c.g.model.clone();
    more.nodes.push(Node::new("w2", "10.2.0.22", WORKER));
    let more_cfg = dir.join("more.yaml");
    std::fs::write(&more_cfg, more.to_yaml()).unwrap();
    let (broken_out, broken, torn, more_cfg, foreign) = (s(&broken_out), s(&broken), s(&torn), s(&more_cfg), s(&foreign));

    let mut f = Failures::new();
    let mut expect = |what: &str, args: &[&str], code: i32, words: &str| -> Run {
        let r = kubebundle(dir, args, &[]);
        f.eq(&format!("{what}: exit code of `kubebundle {}`", args.join(" ")), &Some(code), &r.code);
        let both = format!("{}{}", r.stdout, r.stderr);
        f.check(both.contains(words), || format!("{what}: the output lacks {words:?}: {}", r.describe()));
        f.check(!r.stderr.contains("panicked"), || format!("{what}: panicked: {}", r.stderr));
        r
    };
    let g = |extra: &[&str], config: &str, out: &str| -> Vec<String> {
        let mut v: Vec<String> = ["generate", "--unpacked", "--config", config, "--out", out, "--now", &now].map(String::from).to_vec();
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let owned = |v: &[&str]| -> Vec<String> { v.iter().map(|a| a.to_string()).collect() };
    macro_rules! run {
        ($what:expr, $args:expr, $code:expr, $words:expr) => {{
            let v: Vec<String> = $args;
            let a: Vec<&str> = v.iter().map(String::as_str).collect();
            expect($what, &a, $code, $words)
        }};
    }

    // generate
    run!("generate: written", g(&[], &cfg, &out), 0, "wrote ");
    run!("generate: refused (a directory kubebundle did not write)", g(&[], &cfg, &foreign), 1, "was not written by kubebundle");
    run!("generate: config error", g(&[], &bad, &out), 2, "bindPort: expected an integer 1–65535, got `six`");
    // generate --check
    run!("generate --check: up to date", g(&["--check"], &cfg, &out), 0, "up to date");
    run!("generate --check: drift", g(&["--check"], &more_cfg, &out), 1, "would add     nodes/w2.tar.gz");
    run!("generate --check: config error", g(&["--check"], &bad, &out), 2, "bindPort");
    run!("generate --check: unreadable state", g(&["--check"], &cfg, &broken_out), 2, "tokens.yaml");
    run!("generate --check: usage error", g(&["--check", "--seed-file", &cfg], &cfg, &out), 2, "add --insecure-deterministic");
    // plan
    run!("plan: printed", owned(&["plan", "--config", &cfg]), 0, "certificateAuthorities");
    run!("plan: config error", owned(&["plan", "--config", &bad]), 2, "bindPort");
    // verify
    let verify = |path: &str, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["verify", path, "--now", &now].map(String::from).to_vec();
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    run!("verify: no errors", verify(&bundle, &[]), 0, "0 errors");
    run!("verify: errors found", verify(&torn, &[]), 1, "verify found");
    run!("verify: not a bundle", verify(&empty, &[]), 2, "is not a bundle, a node tarball or a node root");
    run!("verify: no such path", verify(&format!("{empty}/nothing"), &[]), 2, "cannot read");
    run!("verify: bad --warn-within", verify(&bundle, &["--warn-within", "soon"]), 2, "--warn-within \"soon\"");
    // certs check-expiration
    let expiry =
        |path: &str, at: &str| -> Vec<String> { ["certs", "check-expiration", "--dir", path, "--now", at].map(String::from).to_vec() };
    run!("check-expiration: all fine", expiry(&bundle, &now), 0, "CERTIFICATE");
    run!("check-expiration: a warning", expiry(&bundle, &in_a_year), 3, "warning");
    run!("check-expiration: expired", expiry(&bundle, &in_two_years), 4, "expired");
    // A directory that matches no layout (issue 13: the message names what it found and what
    // each layout expects).
    run!("check-expiration: not a tree", expiry(&empty, &now), 2, "matches no layout: found nothing a layout names; kubeadm expects");
    // certs renew
    let renew = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["certs", "renew"].map(String::from).to_vec();
        v.extend(extra.iter().map(|x| x.to_string()));
        v.extend(["--now".to_string(), now.clone()]);
        v
    };
    run!("renew: renewed", renew(&["apiserver", "--dir", &copy]), 0, "apiserver");
    run!(
        "renew: refused (it would outlive its CA)",
        renew(&["apiserver", "--dir", &copy, "--validity", "100000h"]),
        1,
        "would outlive its CA"
    );
    run!("renew: unknown certificate", renew(&["apiserverr", "--dir", &copy]), 2, "unknown certificate \"apiserverr\"");
    run!("renew: not a tree", renew(&["all", "--dir", &empty]), 2, "matches no layout: found nothing a layout names; kubeadm expects");
    run!("renew: --validity too long", renew(&["all", "--dir", &copy, "--validity", "999999999999h"]), 2, "is too long");
    // token
    let token = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec!["token".into()];
        v.extend(extra.iter().map(|x| x.to_string()));
        v.extend(["--now".to_string(), now.clone()]);
        v
    };
    let made = run!("token create: made", token(&["create", "--dir", &copy]), 0, "created bootstrap token");
    run!("token create: refused (unreadable state)", token(&["create", "--dir", &broken]), 1, "tokens.yaml");
    run!("token create: bad group", token(&["create", "--dir", &copy, "--groups", "admins"]), 2, "invalid group \"admins\"");
    run!("token create: not a bundle", token(&["create", "--dir", &empty]), 2, "is not a kubebundle bundle");
    let listed = run!("token list: listed", token(&["list", "--dir", &copy]), 0, "ID");
    run!("token list: unreadable state", token(&["list", "--dir", &broken]), 1, "tokens.yaml");
    run!("token list: not a bundle", token(&["list", "--dir", &empty]), 2, "is not a kubebundle bundle");
    let new_id = made.stderr.split("created bootstrap token ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or("").to_string();
    let old_id =
        listed.stdout.lines().skip(1).filter_map(|l| l.split_whitespace().next()).find(|id| *id != new_id).unwrap_or("").to_string();
    run!("token delete: deleted", token(&["delete", &new_id, "--dir", &copy]), 0, "deleted bootstrap token");
    run!(
        "token delete: refused (the last join token)",
        token(&["delete", &old_id, "--dir", &copy]),
        1,
        "the only one workers can join with"
    );
    run!("token delete: unknown id", token(&["delete", "zzzzzz", "--dir", &copy]), 2, "no token with id \"zzzzzz\"");
    // config print-defaults
    run!("config print-defaults: printed", owned(&["config", "print-defaults"]), 0, "kind: Inventory");
    run!("config print-defaults: usage error", owned(&["config", "print-defaults", "extra"]), 2, "unexpected argument");
    f.finish("exit_codes_of_every_command");
}

/// Every command's --help states its exit codes.
#[test]
fn help_states_the_exit_codes() {
    let dir = temp_dir("help");
    let mut f = Failures::new();
    for (args, words) in [
        (&["--help"][..], "Exit codes (every command): 0 success; 1 the command ran and refused or failed"),
        (&["generate", "--help"], "Exit codes: 0 written (--check: up to date); 1 refused or failed"),
        (&["plan", "--help"], "Exit codes: 0 printed; 1 the output could not be written; 2 usage, config or profile error."),
        (&["verify", "--help"], "Exit codes: 0 no errors (warnings allowed); 1 errors found"),
        (&["certs", "check-expiration", "--help"], "Exit codes: 0 all fine; 3 something expires within --warn-within"),
        (&["certs", "renew", "--help"], "Exit codes: 0 renewed (--dry-run: listed); 1 refused or failed"),
        (&["token", "create", "--help"], "Exit codes: 0 done; 1 refused or failed"),
        (&["token", "list", "--help"], "Exit codes: 0 listed; 1 the state cannot be read; 2 usage error"),
        (&["token", "delete", "--help"], "Exit codes: 0 done; 1 refused or failed"),
        (&["config", "print-defaults", "--help"], "Exit codes: 0 printed; 1 the output could not be written; 2 usage error."),
        (&["ca", "import", "--help"], "Exit codes: 0 imported (or already in the state); 1 refused or failed"),
        (&["ca", "csr", "--help"], "Exit codes: 0 written (or already there: the same CSR for the same key);"),
        (&["import-signed", "--help"], "Exit codes: 0 recorded (or already there); 1 refused or failed"),
        (&["adopt", "--help"], "Exit codes: 0 adopted; 1 refused or failed: OUT/<clusterName> already holds a bundle"),
        (&["rotate", "encryption", "--help"], "Exit codes: 0 the phase was written (status: printed); 1 refused or failed, nothing"),
        (&["rotate", "sa", "--help"], "a phase out of order (switch before start, finish before switch)"),
        (&["rotate", "status", "--help"], "Exit codes: 0 printed; 1 the state cannot be read; 2 usage or config error"),
    ] {
        let r = kubebundle(dir.path(), args, &[]);
        f.eq(&format!("kubebundle {}: exit code", args.join(" ")), &Some(0), &r.code);
        let text = r.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
        f.check(text.contains(words), || format!("kubebundle {}: --help lacks {words:?}:\n{}", args.join(" "), r.stdout));
    }
    f.finish("help_states_the_exit_codes");
}

/// `--warn-within` is one language in `verify` and `certs check-expiration`: whole days (30d)
/// or a Go duration, not negative, at most the longest Go duration; both accept and refuse the
/// same forms, with the same message.
#[test]
fn warn_within_is_the_same_in_verify_and_check_expiration() {
    let c = codes("warn-within");
    let dir = c.g.root();
    let (bundle, now) = (s(&c.g.cluster), c.now.clone());
    let mut f = Failures::new();
    for w in ["30d", "720h", "1h30m", "90s", "0", "0d", "106751d", "2562047h"] {
        let arg = format!("--warn-within={w}");
        let v = kubebundle(dir, &["verify", &bundle, "--now", &now, &arg], &[]);
        f.eq(&format!("verify {arg}: exit code"), &Some(0), &v.code);
        let x = kubebundle(dir, &["certs", "check-expiration", "--dir", &bundle, "--now", &now, &arg], &[]);
        f.check(matches!(x.code, Some(0 | 3)), || format!("check-expiration {arg} must be accepted: {}", x.describe()));
    }
    for (w, words) in [
        ("soon", "is not a duration such as 30d, 720h or 1h30m"),
        ("-1h", "is negative"),
        ("1.5d", "is not a duration such as 30d, 720h or 1h30m"),
        ("30", "is not a duration such as 30d, 720h or 1h30m"),
        ("d", "is not a duration such as 30d, 720h or 1h30m"),
        ("30D", "is not a duration such as 30d, 720h or 1h30m"),
        ("106752d", "is too long: a duration is at most 2562047h (about 292 years)"),
        ("2562048h", "is too long: a duration is at most 2562047h (about 292 years)"),
        ("99999999999999999999d", "is too long: a duration is at most 2562047h (about 292 years)"),
    ] {
        let arg = format!("--warn-within={w}");
        let want = format!("kubebundle: --warn-within {w:?} {words}\n");
        let v = kubebundle(dir, &["verify", &bundle, "--now", &now, &arg], &[]);
        let x = kubebundle(dir, &["certs", "check-expiration", "--dir", &bundle, "--now", &now, &arg], &[]);
        for (cmd, r) in [("verify", &v), ("check-expiration", &x)] {
            f.eq(&format!("{cmd} {arg}: exit code"), &Some(2), &r.code);
            f.eq(&format!("{cmd} {arg}: stderr"), &want, &r.stderr);
            f.check(r.stdout.is_empty(), || format!("{cmd} {arg}: printed {:?}", r.stdout));
        }
    }
    f.finish("warn_within_is_the_same_in_verify_and_check_expiration");
}

/// `certs renew --validity` past the longest duration says it is too long (not "not a positive
/// duration", no overflow), exits 2 and changes nothing; the longest duration itself is taken
/// (and then refused for outliving the CA). `token create --ttl` likewise.
#[test]
fn validity_overflow_is_too_long_and_changes_nothing() {
    let c = codes("validity");
    let dir = c.g.root();
    let (copy, now) = (s(&c.copy), c.now.clone());
    let parent = c.copy.parent().unwrap().parent().unwrap().to_path_buf();
    let before = file_bytes(&parent);
    let mut f = Failures::new();
    for v in ["999999999999h", "2562048h", "99999999999999999999h"] {
        let r = kubebundle(dir, &["certs", "renew", "all", "--dir", &copy, "--validity", v, "--now", &now], &[]);
        f.eq(&format!("--validity {v}: exit code"), &Some(2), &r.code);
        f.eq(
            &format!("--validity {v}: stderr"),
            &format!("kubebundle: --validity {v:?} is too long: a duration is at most 2562047h (about 292 years)\n  hint: certificates last 8760h (a year) by default, CAs 87600h (ten years)\n"),
            &r.stderr,
        );
    }
    let r = kubebundle(dir, &["token", "create", "--dir", &copy, "--ttl", "99999999999h", "--now", &now], &[]);
    f.eq("--ttl 99999999999h: exit code", &Some(2), &r.code);
    f.check(r.stderr.starts_with("kubebundle: --ttl \"99999999999h\" is too long: a duration is at most 2562047h"), || r.describe());
    f.check(file_bytes(&parent) == before, || "a refused --validity or --ttl changed a file".into());
    let beside: Vec<String> = list_dir(c.copy.parent().unwrap());
    f.eq("beside the bundle (no backup directory)", &vec![c.g.model.cluster_name.clone()], &beside);
    let r = kubebundle(dir, &["certs", "renew", "apiserver", "--dir", &copy, "--validity", "2562047h", "--now", &now], &[]);
    f.eq("--validity 2562047h: exit code", &Some(1), &r.code);
    f.check(r.stderr.contains("would outlive its CA") && !r.stderr.contains("too long"), || r.describe());
    f.finish("validity_overflow_is_too_long_and_changes_nothing");
}

/// Runs kubebundle with standard output a pipe whose reader is already gone.
fn into_closed_pipe(dir: &Path, args: &[&str]) -> Run {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let mut c = hermetic(bin(), dir);
    c.current_dir(dir).args(args).stdin(std::process::Stdio::null()).stdout(writer).stderr(std::process::Stdio::piped());
    let o = c.output().expect("run kubebundle");
    Run {
        cmdline: format!("kubebundle {} > closed pipe", args.join(" ")),
        code: o.status.code(),
        stdout: String::new(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        stdout_bytes: Vec::new(),
    }
}

/// Output into a closed pipe (`kubebundle verify DIR | head -1`) ends quietly: the exit code and
/// standard error are those of a run whose output is read (no panic, no "Broken pipe"), and
/// `generate` still writes its bundle.
#[test]
fn closed_pipe_ends_quietly() {
    let c = codes("pipe");
    let dir = c.g.root();
    let (cfg, bundle, copy, now) = (s(&c.g.config_path), s(&c.g.cluster), s(&c.copy), c.now.clone());
    let out = s(&dir.join("out"));
    let mut f = Failures::new();
    let commands: Vec<Vec<&str>> = vec![
        vec!["verify", &bundle, "--now", &now],
        vec!["config", "print-defaults"],
        vec!["plan", "--config", &cfg],
        vec!["plan", "--config", &cfg, "-o", "json"],
        vec!["token", "list", "--dir", &copy, "--now", &now],
        vec!["certs", "check-expiration", "--dir", &bundle, "--now", &now, "-o", "json"],
        vec!["certs", "check-expiration", "--dir", &bundle, "--now", &now],
        vec!["generate", "--unpacked", "--config", &cfg, "--out", &out, "--now", &now, "--check"],
        vec!["certs", "renew", "all", "--dir", &copy, "--now", &now, "--dry-run"],
    ];
    for args in &commands {
        let read = kubebundle(dir, args, &[]);
        f.check(!read.stdout.is_empty(), || format!("`kubebundle {}` prints nothing: {}", args.join(" "), read.describe()));
        let closed = into_closed_pipe(dir, args);
        let l = format!("kubebundle {} | (closed)", args.join(" "));
        f.eq(&format!("{l}: exit code"), &read.code, &closed.code);
        f.eq(&format!("{l}: stderr"), &read.stderr, &closed.stderr);
        for bad in ["panicked", "Broken pipe", "failed printing"] {
            f.check(!closed.stderr.contains(bad), || format!("{l}: stderr says {bad:?}: {}", closed.stderr));
        }
    }
    // generate prints the join commands last: the bundle is written all the same.
    let fresh = dir.join("fresh");
    let closed = into_closed_pipe(dir, &["generate", "--config", &cfg, "--out", &s(&fresh), "--now", &now]);
    f.eq("generate | (closed): exit code", &Some(0), &closed.code);
    for bad in ["panicked", "Broken pipe", "failed printing"] {
        f.check(!closed.stderr.contains(bad), || format!("generate | (closed): stderr says {bad:?}: {}", closed.stderr));
    }
    if let Err(e) = verify_bundle(&fresh.join(&c.g.model.cluster_name), Some(&now)) {
        f.fail(format!("generate into a closed pipe: {e}"));
    }
    f.finish("closed_pipe_ends_quietly");
}
