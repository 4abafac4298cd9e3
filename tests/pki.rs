//! Acceptance tests of the generated PKI: every certificate, key, kubeconfig, token, encryption
//! config and tarball, checked with openssl, kubectl and tar against
//! shared/reference/kubernetes-pki.md.
//!
//! The main cluster (ECDSA-P256, v1.34.1, three stacked control planes one of them IPv6, a
//! worker and an etcd-only node) is generated once per test binary and only read by the tests
//! that share it. Tests that change an output directory make their own.

mod common;

use std::sync::OnceLock;

use common::checks::{self, Ctx};
use common::model::{CP_ETCD, ETCD_ONLY, WORKER};
use common::*;

fn main_model() -> Model {
    let mut m = Model::ecdsa(
        "kb-main",
        vec![
            Node::new("cp1", "10.0.0.11", CP_ETCD).sans(&["cp1.kb-main.example"]),
            Node::new("cp2", "10.0.0.12", CP_ETCD),
            // kube-apiserver needs a control plane's address in the family of the first service
            // subnet (IPv4 here): IPv6 appears in certSANs and as the address of the etcd-only
            // member, which runs no kube-apiserver.
            Node::new("cp3", "10.0.0.13", CP_ETCD),
            Node::new("w1", "10.0.0.21", WORKER).sans(&["w1.kb-main.example", "192.0.2.21"]),
            Node::new("e1", "fd00::31", ETCD_ONLY),
        ],
    );
    m.control_plane_endpoint = Some("api.kb-main.example:6443".into());
    // "kubernetes" and 10.96.0.1 repeat built-in SANs: the output must de-duplicate them.
    // A wildcard name is a valid SAN too.
    m.cert_sans = vec![
        "extra.kb-main.example".into(),
        "192.0.2.50".into(),
        "fd00::50".into(),
        "kubernetes".into(),
        "10.96.0.1".into(),
        "*.apps.kb-main.example".into(),
    ];
    m.etcd_server_sans = vec!["etcd.kb-main.example".into()];
    m.etcd_peer_sans = vec!["10.0.0.99".into()];
    // A custom leaf validity; the CA keeps the default 10 years.
    m.cert_validity = Some("4380h".into());
    m
}

/// The main cluster lives as long as the test process (statics are not dropped), so its temp dir
/// is left behind; dirs of earlier runs older than an hour are removed here.
fn remove_stale_main_dirs() {
    let Ok(rd) = std::fs::read_dir(env!("CARGO_TARGET_TMPDIR")) else { return };
    for e in rd.flatten() {
        let old = e.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).is_some_and(|age| age.as_secs() > 3600);
        if old && e.file_name().to_string_lossy().starts_with("kb-main-") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn main_cluster() -> &'static Generated {
    static MAIN: OnceLock<Result<Generated, String>> = OnceLock::new();
    match MAIN.get_or_init(|| {
        remove_stale_main_dirs();
        generate_model("main", &main_model())
    }) {
        Ok(g) => g,
        Err(e) => panic!("the shared main cluster could not be generated:\n{e}"),
    }
}

/// Runs `check` on the main cluster with a scratch dir and reports every failure.
fn on_main(test: &str, check: impl FnOnce(&Ctx, &mut Failures)) {
    let g = main_cluster();
    let scratch = temp_dir("scratch");
    let ctx = Ctx::new(g, scratch.path());
    let mut f = Failures::new();
    check(&ctx, &mut f);
    f.finish(test);
}

// ------------------------------------------------------------------------------------------
// Main cluster, one aspect per test.

/// Acceptance 1–3: every certificate file of every node tree and of state/ verifies against
/// the right CA (`openssl verify -x509_strict`), has the reference's CN, O, SANs, KeyUsage,
/// EKU, BasicConstraints, AKI/SKI, validity and algorithm (x509-parser and `openssl x509
/// -text`), and its key reads with `openssl pkey`, has the right PEM label and matches it.
#[test]
fn main_certificates_and_keys_match_reference() {
    on_main("main_certificates_and_keys_match_reference", |ctx, f| {
        checks::check_state(ctx, f);
        checks::check_node_certs(ctx, f);
    });
}

/// Acceptance 5 (+1–3 for the embedded client certs): every kubeconfig parses with
/// `kubectl config view --raw`, has one cluster/context/user of the §5 shape, CA data equal to
/// ca.crt, user = CN, the right server URL, and a client cert/key pair that verifies.
#[test]
fn main_kubeconfigs_match_reference() {
    on_main("main_kubeconfigs_match_reference", checks::check_node_kubeconfigs);
}

/// Least privilege and modes of every node tree: exact file sets per role, super-admin.conf only
/// on the first control plane, no foreign keys, CA copies equal to state/, 0755 dirs, 0644 certs,
/// 0600 keys/kubeconfigs/encryption config; state/ 0700 and 0600.
#[test]
fn main_node_trees_least_privilege_and_modes() {
    on_main("main_node_trees_least_privilege_and_modes", |ctx, f| {
        checks::check_cluster_layout(ctx, f);
        checks::check_node_trees(ctx, f);
    });
}

/// Acceptance 4 and 6: the join commands carry the endpoint, a well-formed token that has a
/// Secret, and the discovery hash openssl computes; discovery.conf holds server and CA only;
/// the Secret manifests have the §7 fields.
#[test]
fn main_join_discovery_and_tokens() {
    on_main("main_join_discovery_and_tokens", |ctx, f| {
        checks::check_join_and_discovery(ctx, f);
        checks::check_tokens(ctx, f);
    });
}

/// Acceptance 7: aescbc key1 of 32 bytes then identity, identical on every control plane.
#[test]
fn main_encryption_config() {
    on_main("main_encryption_config", |ctx, f| {
        let s = checks::check_encryption(ctx, f);
        f.check(s.is_some(), || "no aescbc secret found".into());
    });
}

/// No two artifacts share a private key; no CA repeats a serial.
#[test]
fn main_keys_and_serials_are_unique() {
    on_main("main_keys_and_serials_are_unique", checks::check_uniqueness);
}

/// Acceptance 9: each node's tarball lists (tar -tvz) with relative, sorted entries, uid/gid 0,
/// mtime = run clock, right modes, only the node's own keys, and unpacks to the node's tree.
#[test]
fn main_tarballs_match_trees() {
    on_main("main_tarballs_match_trees", checks::check_tarballs);
}

/// §2: kubeadm writes DNS SANs sorted and IP SANs in insertion order (service IP, advertise
/// address, endpoint IP, certSANs), both de-duplicated.
#[test]
fn main_san_order_matches_kubeadm() {
    on_main("main_san_order_matches_kubeadm", |ctx, f| {
        let m = ctx.model;
        for name in ["cp2", "cp3"] {
            let n = m.node(name);
            let root = ctx.root(n);
            let cases = [
                ("etc/kubernetes/pki/apiserver.crt", m.apiserver_sans(n, false)),
                ("etc/kubernetes/pki/etcd/server.crt", m.etcd_sans(n, &m.etcd_server_sans)),
                ("etc/kubernetes/pki/etcd/peer.crt", m.etcd_sans(n, &m.etcd_peer_sans)),
            ];
            for (p, want) in cases {
                match read(&root.join(p)).map(|b| checks::parse_cert_pem(&b)) {
                    Some(Ok(c)) => {
                        f.eq(&format!("{name}:{p}: DNS SANs in order"), &want.dns, &c.san_dns);
                        f.eq(&format!("{name}:{p}: IP SANs in order"), &want.ips, &c.san_ips);
                    }
                    other => f.fail(format!("{name}:{p}: unreadable: {:?}", other.map(|r| r.err()))),
                }
            }
        }
    });
}

/// §4: from 1.33 a control plane's kubelet.conf talks to its own API server
/// (https://<advertiseAddress>:6443), not controlPlaneEndpoint. (The brief's item 5 says
/// controlPlaneEndpoint for every kubelet.conf; the reference is followed here.)
#[test]
fn main_control_plane_kubelet_conf_server_follows_version() {
    on_main("main_control_plane_kubelet_conf_server_follows_version", |ctx, f| {
        let m = ctx.model;
        for n in m.control_planes() {
            let p = ctx.root(n).join("etc/kubernetes/kubelet.conf");
            match checks::kubeconfig_json(ctx, &p) {
                Ok(j) => {
                    f.eq(
                        &format!("{}: kubelet.conf server (kubernetesVersion {})", n.name, m.kubernetes_version),
                        &Some(m.cp_kubelet_conf_server_reference(n)),
                        &j["clusters"][0]["cluster"]["server"].as_str().map(String::from),
                    );
                }
                Err(e) => f.fail(format!("{}: {e}", n.name)),
            }
        }
    });
}

/// Custom certificateValidityPeriod (4380h) on leaves, default 10 years on CAs, notBefore
/// backdated 5 minutes (1.31+), checked directly on two certs with openssl's dates.
#[test]
fn main_validity_periods_with_openssl_dates() {
    on_main("main_validity_periods_with_openssl_dates", |ctx, f| {
        let root = ctx.root(ctx.model.node("cp1"));
        for (p, secs) in [("etc/kubernetes/pki/ca.crt", 3650 * DAY), ("etc/kubernetes/pki/apiserver.crt", 4380 * HOUR)] {
            let r = openssl(&["x509", "-noout", "-dates", "-in", root.join(p).to_str().unwrap()]);
            let c = checks::parse_cert_pem(&read(&root.join(p)).unwrap_or_default());
            match c {
                Ok(c) => {
                    f.eq(&format!("{p}: notBefore"), &rfc3339(NOW_UNIX - BACKDATE_SECS), &rfc3339(c.not_before));
                    f.eq(&format!("{p}: notAfter"), &rfc3339(NOW_UNIX + secs), &rfc3339(c.not_after));
                }
                Err(e) => f.fail(format!("{p}: {e}")),
            }
            // 2025-06-01 12:00:00 - 5 min
            f.check(r.ok() && r.stdout.contains("notBefore=Jun  1 11:55:00 2025 GMT"), || format!("{p}: openssl -dates: {}", r.stdout));
        }
    });
}

/// `kubebundle plan` lists every node's artifacts with subjects and SANs, prints no secret and
/// writes nothing.
#[test]
fn main_plan_lists_artifacts_without_secrets() {
    let g = main_cluster();
    let m = &g.model;
    let dir = temp_dir("plan");
    let mut f = Failures::new();
    let cfg = g.config_path.to_str().unwrap();
    let json = kubebundle(dir.path(), &["plan", "--config", cfg, "-o", "json"], &[]);
    if !json.ok() {
        panic!("plan -o json failed: {}", json.describe());
    }
    let v: Result<serde_json::Value, _> = serde_json::from_str(&json.stdout);
    match v {
        Err(e) => f.fail(format!("plan -o json is not JSON: {e}\n{}", truncate(&json.stdout, 2000))),
        Ok(v) => {
            let mut strings = vec![];
            collect_strings(&v, &mut strings);
            let all = strings.join("\n");
            for want in m.nodes.iter().map(|n| n.name.as_str()).chain([
                "kube-apiserver",
                "kubernetes.default.svc.cluster.local",
                "api.kb-main.example",
                "10.96.0.1",
                "system:node:w1",
                "etcd.kb-main.example",
            ]) {
                f.check(all.contains(want), || format!("plan -o json does not mention {want:?}"));
            }
        }
    }
    let yaml = kubebundle(dir.path(), &["plan", "--config", cfg, "-o", "yaml"], &[]);
    f.check(yaml.ok(), || format!("plan -o yaml failed: {}", yaml.describe()));
    for n in &m.nodes {
        f.check(yaml.stdout.contains(&n.name), || format!("plan -o yaml does not mention node {}", n.name));
    }
    for out in [&json.stdout, &yaml.stdout] {
        f.check(!out.contains("PRIVATE KEY") && !out.contains("BEGIN CERTIFICATE"), || "plan prints key or cert material".into());
        f.check(find_tokens(out).is_empty(), || "plan prints a bootstrap token".into());
    }
    let written: Vec<String> = walk(dir.path()).into_keys().filter(|k| !k.starts_with(".home")).collect();
    f.check(written.is_empty(), || format!("plan wrote files: {written:?}"));
    f.finish("main_plan_lists_artifacts_without_secrets");
}

fn collect_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        serde_json::Value::Object(o) => o.iter().for_each(|(k, x)| {
            out.push(k.clone());
            collect_strings(x, out)
        }),
        _ => {}
    }
}

// ------------------------------------------------------------------------------------------
// RSA, kept small.

/// Acceptance 8: RSA-2048 (PKCS#1 "RSA PRIVATE KEY", sha256WithRSAEncryption), one control
/// plane and one worker joining by certificate (kubelet.conf instead of bootstrap-kubelet.conf),
/// default controlPlaneEndpoint (first control plane), custom dnsDomain and a dual-stack
/// service subnet (first address of the first subnet), default validity periods.
#[test]
fn rsa2048_small_cluster_all_checks() {
    let mut m = Model::ecdsa("kb-rsa", vec![Node::new("cp1", "10.1.0.11", CP_ETCD), Node::new("w1", "10.1.0.21", WORKER)]);
    m.encryption_algorithm = Some("RSA-2048".into());
    m.worker_join = Some("certificate".into());
    m.dns_domain = Some("corp.internal".into());
    m.service_subnet = Some("10.100.0.0/16,fd00:10:96::/108".into());
    m.pod_subnet = Some("10.244.0.0/16,fd00:10:244::/56".into());
    let g = match generate_model("rsa", &m) {
        Ok(g) => g,
        Err(e) => panic!("{e}"),
    };
    let mut f = checks::check_all(&g);
    let w1 = g.node_dir("w1");
    f.check(!w1.join("etc/kubernetes/bootstrap-kubelet.conf").exists(), || {
        "w1 has bootstrap-kubelet.conf with workerJoin: certificate".into()
    });
    let api = read(&g.node_dir("cp1").join("etc/kubernetes/pki/apiserver.crt")).map(|b| checks::parse_cert_pem(&b));
    if let Some(Ok(c)) = api {
        f.check(c.san_dns.iter().any(|d| d == "kubernetes.default.svc.corp.internal"), || format!("apiserver SANs {:?}", c.san_dns));
        f.check(c.san_ips.contains(&"10.100.0.1".parse().unwrap()), || format!("apiserver IPs {:?}", c.san_ips));
    }
    f.finish("rsa2048_small_cluster_all_checks");
}

// ------------------------------------------------------------------------------------------
// Fixtures.

fn model_of_config(text: &str) -> Model {
    let dir = temp_dir("parse");
    let p = dir.path().join("config.yaml");
    std::fs::write(&p, text).unwrap();
    let docs = yaml_file_to_json(dir.path(), &p).unwrap_or_else(|e| panic!("kubectl cannot parse the test config: {e}"));
    Model::from_documents(&docs, NOW_UNIX).unwrap_or_else(|e| panic!("{e}"))
}

/// Acceptance 11: the v1beta2 ClusterConfiguration of a 1.18 cluster loads with an Inventory
/// appended; 192.168.1.200:8443 is an IP SAN of the apiserver and the server of admin.conf,
/// kubelet.conf and bootstrap-kubelet.conf; the 1.18 rules apply (O system:masters, no
/// super-admin.conf, notBefore = the clock); RSA-2048 since v1beta2 has no encryptionAlgorithm.
#[test]
fn fixture_v1beta2_v1_18_generates() {
    let inv = "apiVersion: kubebundle.dev/v1alpha1\nkind: Inventory\nnodes:\n- name: cp1\n  address: 192.168.1.11\n  roles: [control-plane, etcd]\n- name: w1\n  address: 192.168.1.21\n  roles: [worker]\n";
    let text = format!("{}---\n{inv}", fixture("clusterconfiguration-v1beta2-v1.18.yaml"));
    let m = model_of_config(&text);
    assert_eq!(m.endpoint(), "192.168.1.200:8443");
    assert_eq!(m.minor(), 18);
    let plan = {
        let dir = temp_dir("plan118");
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, &text).unwrap();
        kubebundle(dir.path(), &["plan", "--config", p.to_str().unwrap(), "-o", "json"], &[])
    };
    let g = match generate("v118", &m, &text) {
        Ok(g) => g,
        Err(e) => panic!("{e}"),
    };
    let mut f = checks::check_all(&g);
    f.check(plan.ok() && plan.stdout.contains("192.168.1.200"), || format!("plan on the fixture: {}", plan.describe()));
    let cp1 = g.node_dir("cp1");
    match read(&cp1.join("etc/kubernetes/pki/apiserver.crt")).map(|b| checks::parse_cert_pem(&b)) {
        Some(Ok(c)) => {
            let ip: std::net::IpAddr = "192.168.1.200".parse().unwrap();
            f.check(c.san_ips.contains(&ip), || format!("apiserver IP SANs {:?} lack 192.168.1.200", c.san_ips));
            f.check(c.san_ips.contains(&"10.96.0.1".parse().unwrap()), || "apiserver lacks 10.96.0.1".into());
        }
        other => f.fail(format!("cp1 apiserver.crt: {:?}", other.map(|r| r.err()))),
    }
    let scratch = temp_dir("scratch");
    let ctx = Ctx::new(&g, scratch.path());
    for (node, conf) in [("cp1", "admin.conf"), ("cp1", "kubelet.conf"), ("w1", "bootstrap-kubelet.conf")] {
        let p = g.node_dir(node).join("etc/kubernetes").join(conf);
        match checks::kubeconfig_json(&ctx, &p) {
            Ok(j) => {
                f.eq(
                    &format!("{node}:{conf} server"),
                    &Some("https://192.168.1.200:8443"),
                    &j["clusters"][0]["cluster"]["server"].as_str(),
                );
            }
            Err(e) => f.fail(format!("{node}:{conf}: {e}")),
        }
    }
    let join = read_string(&g.cluster.join("join.txt")).unwrap_or_default();
    f.check(join.contains("192.168.1.200:8443"), || format!("join.txt does not use 192.168.1.200:8443:\n{join}"));
    f.check(!cp1.join("etc/kubernetes/super-admin.conf").exists(), || "super-admin.conf written for 1.18".into());
    f.finish("fixture_v1beta2_v1_18_generates");
}

/// Acceptance 11: `kubeadm config print init-defaults` (v1beta3, 1.24.0, token
/// abcdef.0123456789abcdef, node "node" at 1.2.3.4) loads with an Inventory appended; the
/// configured token is the one used; the endpoint defaults to the first control plane.
#[test]
fn fixture_v1beta3_init_defaults_generates() {
    let inv = "apiVersion: kubebundle.dev/v1alpha1\nkind: Inventory\nnodes:\n- name: node\n  address: 1.2.3.4\n  roles: [control-plane, etcd]\n- name: w1\n  address: 1.2.3.21\n  roles: [worker]\n";
    let text = format!("{}---\n{inv}", fixture("kubeadm-init-defaults-v1beta3.yaml"));
    let m = model_of_config(&text);
    assert_eq!(m.bootstrap_tokens, vec!["abcdef.0123456789abcdef".to_string()]);
    assert_eq!(m.endpoint(), "1.2.3.4:6443");
    let dir = temp_dir("plan124");
    let p = dir.path().join("c.yaml");
    std::fs::write(&p, &text).unwrap();
    let plan = kubebundle(dir.path(), &["plan", "--config", p.to_str().unwrap(), "-o", "yaml"], &[]);
    let g = match generate("v124", &m, &text) {
        Ok(g) => g,
        Err(e) => panic!("{e}"),
    };
    let mut f = checks::check_all(&g);
    f.check(plan.ok(), || format!("plan on the fixture: {}", plan.describe()));
    f.check(!plan.stdout.contains("0123456789abcdef"), || "plan prints the token secret".into());
    let join = read_string(&g.cluster.join("join.txt")).unwrap_or_default();
    f.check(join.contains("--token abcdef.0123456789abcdef") || join.contains("--token=abcdef.0123456789abcdef"), || {
        format!("join.txt does not use the configured token:\n{join}")
    });
    f.check(g.cluster.join("manifests/bootstrap-token-abcdef.yaml").is_file(), || "no manifests/bootstrap-token-abcdef.yaml".into());
    f.finish("fixture_v1beta3_init_defaults_generates");
}

/// Calibration of the checks themselves: the real tree kubeadm v1.24 wrote
/// (shared/fixtures/kubeadm-v1.24-etc-kubernetes) passes the same certificate, key and
/// kubeconfig checks, given its config and a 6-second slack for kubeadm's own clock reads.
#[test]
fn checks_accept_real_kubeadm_v1_24_tree() {
    let mut m = Model::ecdsa("kubernetes", vec![Node::new("cp1", "198.51.100.10", CP_ETCD)]);
    m.api_version = "kubeadm.k8s.io/v1beta3".into();
    m.kubernetes_version = "v1.24.0-alpha.1".into();
    m.encryption_algorithm = None;
    m.control_plane_endpoint = Some("127.0.0.1:6443".into());
    m.cert_sans = vec!["extra.example.com".into(), "10.0.0.10".into()];
    let src = fixtures_dir().join("kubeadm-v1.24-etc-kubernetes");
    let ca = checks::parse_cert_pem(&read(&src.join("pki/ca.crt")).unwrap()).unwrap();
    m.now = ca.not_before;
    let scratch = temp_dir("kubeadm");
    let root = scratch.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let cp = std::process::Command::new("cp")
        .args(["-r", src.to_str().unwrap(), root.join("etc/kubernetes").to_str().unwrap()])
        .status()
        .unwrap();
    assert!(cp.success());
    let ctx = Ctx {
        model: &m,
        cluster: scratch.path().join("no-cluster"),
        scratch: scratch.path().to_path_buf(),
        tolerance: 6,
        root_override: Some(root),
    };
    let mut f = Failures::new();
    let n = m.node("cp1").clone();
    checks::check_certs_of_node(&ctx, &n, |s| s.id != "kubelet-serving", &mut f);
    for k in m.kubeconfigs(&n) {
        checks::check_kubeconfig(&ctx, &n, &k, &mut f);
    }
    f.finish("checks_accept_real_kubeadm_v1_24_tree");
}

// ------------------------------------------------------------------------------------------
// The checks are not vacuous.

/// Tampering with a correct bundle in ways the reference forbids makes the checks fail:
/// a world-readable key, a CA key on a worker, a cert in the wrong place, a wrong discovery
/// hash, a renamed kubeconfig user, a foreign tarball, diverging encryption configs.
#[test]
fn checks_detect_tampering() {
    let m = Model::ecdsa(
        "kb-tamper",
        vec![Node::new("cp1", "10.3.0.11", CP_ETCD), Node::new("cp2", "10.3.0.12", CP_ETCD), Node::new("w1", "10.3.0.21", WORKER)],
    );
    let g = generate_model("tamper", &m).unwrap_or_else(|e| panic!("{e}"));
    let scratch = temp_dir("scratch");
    let ctx = Ctx::new(&g, scratch.path());
    let mut f = Failures::new();
    {
        let mut clean = Failures::new();
        checks::check_node_trees(&ctx, &mut clean);
        checks::check_node_certs(&ctx, &mut clean);
        checks::check_join_and_discovery(&ctx, &mut clean);
        checks::check_node_kubeconfigs(&ctx, &mut clean);
        checks::check_tarballs(&ctx, &mut clean);
        checks::check_encryption(&ctx, &mut clean);
        if !clean.is_empty() {
            clean.finish("checks_detect_tampering (the untampered bundle must pass first)");
            return;
        }
    }
    let cp1 = g.node_dir("cp1");
    let cp2 = g.node_dir("cp2");
    let w1 = g.node_dir("w1");
    let mut detects = |what: &str, tamper: &dyn Fn(), undo: &dyn Fn(), check: fn(&Ctx, &mut Failures)| {
        tamper();
        let mut t = Failures::new();
        check(&ctx, &mut t);
        undo();
        f.check(!t.is_empty(), || format!("tampering not detected: {what}"));
    };
    use std::os::unix::fs::PermissionsExt;
    let key = w1.join("var/lib/kubelet/pki/kubelet.key");
    detects(
        "worker kubelet.key made 0644",
        &|| std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap(),
        &|| std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap(),
        checks::check_node_trees,
    );
    let stolen = w1.join("etc/kubernetes/pki/ca.key");
    detects(
        "ca.key copied onto the worker",
        &|| {
            std::fs::copy(g.state("pki/ca.key"), &stolen).unwrap();
            std::fs::set_permissions(&stolen, std::fs::Permissions::from_mode(0o600)).unwrap();
        },
        &|| std::fs::remove_file(&stolen).unwrap(),
        checks::check_node_trees,
    );
    let api = cp1.join("etc/kubernetes/pki/apiserver.crt");
    let api_bytes = std::fs::read(&api).unwrap();
    detects(
        "front-proxy-client.crt in place of apiserver.crt",
        &|| {
            std::fs::copy(cp1.join("etc/kubernetes/pki/front-proxy-client.crt"), &api).unwrap();
        },
        &|| std::fs::write(&api, &api_bytes).unwrap(),
        checks::check_node_certs,
    );
    let api2 = cp2.join("etc/kubernetes/pki/apiserver.crt");
    let api2_bytes = std::fs::read(&api2).unwrap();
    detects(
        "cp1's apiserver.crt on cp2 (wrong SANs, key mismatch)",
        &|| std::fs::write(&api2, &api_bytes).unwrap(),
        &|| std::fs::write(&api2, &api2_bytes).unwrap(),
        checks::check_node_certs,
    );
    let join = g.cluster.join("join.txt");
    let join_text = std::fs::read_to_string(&join).unwrap();
    detects(
        "wrong discovery hash",
        &|| std::fs::write(&join, join_text.replace("sha256:", "sha256:0")).unwrap(),
        &|| std::fs::write(&join, &join_text).unwrap(),
        checks::check_join_and_discovery,
    );
    let admin = cp1.join("etc/kubernetes/admin.conf");
    let admin_text = std::fs::read_to_string(&admin).unwrap();
    detects(
        "admin.conf user renamed",
        &|| std::fs::write(&admin, admin_text.replace("kubernetes-admin", "kubernetes-adm1n")).unwrap(),
        &|| std::fs::write(&admin, &admin_text).unwrap(),
        checks::check_node_kubeconfigs,
    );
    let sched = cp1.join("etc/kubernetes/scheduler.conf");
    let sched_text = std::fs::read_to_string(&sched).unwrap();
    detects(
        "scheduler.conf pointing at controlPlaneEndpoint's neighbour",
        &|| std::fs::write(&sched, sched_text.replace("10.3.0.11:6443", "10.3.0.12:6443")).unwrap(),
        &|| std::fs::write(&sched, &sched_text).unwrap(),
        checks::check_node_kubeconfigs,
    );
    let wtar = g.cluster.join("nodes/w1.tar.gz");
    let wtar_bytes = std::fs::read(&wtar).unwrap();
    detects(
        "the control plane's tarball shipped as the worker's",
        &|| {
            std::fs::copy(g.cluster.join("nodes/cp1.tar.gz"), &wtar).unwrap();
        },
        &|| std::fs::write(&wtar, &wtar_bytes).unwrap(),
        checks::check_tarballs,
    );
    let enc = cp2.join(checks::ENCRYPTION_CONFIG);
    let enc_text = std::fs::read_to_string(&enc).unwrap();
    detects(
        "cp2's encryption config differs",
        &|| std::fs::write(&enc, format!("{enc_text}# changed\n")).unwrap(),
        &|| std::fs::write(&enc, &enc_text).unwrap(),
        |c, f| {
            checks::check_encryption(c, f);
        },
    );
    f.finish("checks_detect_tampering");
}

// ------------------------------------------------------------------------------------------
// Algorithms and versions at the edges of §4.

/// ECDSA-P384 (ecdsa-with-SHA384, NIST P-384 keys), available from 1.34.
#[test]
fn ecdsa_p384_all_checks() {
    let mut m = Model::ecdsa("kb-p384", vec![Node::new("cp1", "10.4.0.11", CP_ETCD), Node::new("w1", "10.4.0.21", WORKER)]);
    m.encryption_algorithm = Some("ECDSA-P384".into());
    let g = generate_model("p384", &m).unwrap_or_else(|e| panic!("{e}"));
    checks::check_all(&g).finish("ecdsa_p384_all_checks");
}

/// v1.32 (before the 1.33 switch): every control plane's kubelet.conf talks to
/// controlPlaneEndpoint; the rest as for 1.31+.
#[test]
fn v1_32_control_plane_kubelet_conf_uses_endpoint() {
    let mut m = Model::ecdsa(
        "kb-v132",
        vec![Node::new("cp1", "10.5.0.11", CP_ETCD), Node::new("cp2", "10.5.0.12", CP_ETCD), Node::new("w1", "10.5.0.21", WORKER)],
    );
    m.kubernetes_version = "v1.32.0".into();
    m.control_plane_endpoint = Some("api.kb-v132.example:6443".into());
    let g = generate_model("v132", &m).unwrap_or_else(|e| panic!("{e}"));
    let mut f = checks::check_all(&g);
    let scratch = temp_dir("scratch");
    let ctx = Ctx::new(&g, scratch.path());
    for n in m.control_planes() {
        match checks::kubeconfig_json(&ctx, &g.node_dir(&n.name).join("etc/kubernetes/kubelet.conf")) {
            Ok(j) => {
                f.eq(
                    &format!("{}: kubelet.conf server at v1.32", n.name),
                    &Some("https://api.kb-v132.example:6443"),
                    &j["clusters"][0]["cluster"]["server"].as_str(),
                );
            }
            Err(e) => f.fail(e),
        }
    }
    f.finish("v1_32_control_plane_kubelet_conf_uses_endpoint");
}

/// The 1.28/1.29 boundary with v1beta3 (RSA-2048, one control plane): 1.28 has O
/// system:masters everywhere, no super-admin.conf, CA backdated 5 min and leaves copying it;
/// 1.29 moves admin.conf and apiserver-kubelet-client to kubeadm:cluster-admins, drops O from
/// the etcd clients and adds super-admin.conf (system:masters).
#[test]
fn v1beta3_versions_1_28_and_1_29() {
    let mut f = Failures::new();
    for version in ["v1.28.4", "v1.29.0"] {
        let mut m = Model::ecdsa("kb-v128", vec![Node::new("cp1", "10.6.0.11", CP_ETCD)]);
        m.api_version = "kubeadm.k8s.io/v1beta3".into();
        m.encryption_algorithm = None;
        m.kubernetes_version = version.into();
        match generate_model("v128", &m) {
            Ok(g) => {
                let all = checks::check_all(&g);
                f.list.extend(all.list.into_iter().map(|s| format!("{version}: {s}")));
                let sa = g.node_dir("cp1").join("etc/kubernetes/super-admin.conf").exists();
                f.eq(&format!("{version}: super-admin.conf present"), &(version == "v1.29.0"), &sa);
            }
            Err(e) => f.fail(format!("{version}: {e}")),
        }
    }
    f.finish("v1beta3_versions_1_28_and_1_29");
}

/// Names Go's YAML 1.1 reads as booleans (on/no/yes) survive into kubeconfigs: the cluster
/// "on" and the node "no" come back from kubectl as strings (DESIGN: output YAML must quote
/// them).
#[test]
fn go_yaml_boolean_names_are_quoted() {
    let mut m = Model::ecdsa("on", vec![Node::new("yes", "10.7.0.11", CP_ETCD), Node::new("no", "10.7.0.21", WORKER)]);
    m.worker_join = Some("certificate".into());
    let g = generate_model("bools", &m).unwrap_or_else(|e| panic!("{e}"));
    checks::check_all(&g).finish("go_yaml_boolean_names_are_quoted");
}
