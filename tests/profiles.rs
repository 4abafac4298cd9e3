//! The built-in profiles (kubeadm, hardway, binary) end to end, through the CLI: the embedded
//! example generated with each profile passes `kubebundle verify`, whose `references` check
//! vouches for every file a unit, kubeconfig, KubeletConfiguration, kubeadm config or the
//! kube-apiserver patch names; tampered copies fail it with an ERROR row naming the referencing
//! file. Then the content of the per-node KubeletConfiguration, the kubeadm Join/Init
//! configurations (token and file discovery) and the kube-apiserver JSON patch.

mod common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::Value;

use common::checks::{discovery_hash, parse_cert_pem};
use common::*;

const PROFILES: [&str; 3] = ["kubeadm", "hardway", "binary"];
/// The embedded example's nodes.
const NODES: [(&str, &str, bool); 5] = [
    ("cp1", "10.0.0.11", true),
    ("cp2", "10.0.0.12", true),
    ("cp3", "10.0.0.13", true),
    ("worker1", "10.0.0.21", false),
    ("worker2", "10.0.0.22", false),
];
const ENDPOINT: &str = "k8s-api.example.internal:6443";

// =============================================================================================
// Configs and bundles

/// `kubebundle config print-defaults`: the embedded example.
fn embedded_example() -> String {
    let tmp = temp_dir("defaults");
    let r = kubebundle(tmp.path(), &["config", "print-defaults"], &[]);
    assert!(r.ok(), "config print-defaults failed: {}", r.describe());
    r.stdout
}

/// The embedded example with ECDSA-P256, `Inventory.profile: <profile>` and `edits` (each
/// `from` must occur exactly once).
fn example(profile: &str, edits: &[(&str, &str)]) -> String {
    let mut text = embedded_example();
    let profile_line = format!("profile: {profile}");
    let mut all: Vec<(&str, &str)> =
        vec![("encryptionAlgorithm: RSA-2048", "encryptionAlgorithm: ECDSA-P256"), ("profile: kubeadm", &profile_line)];
    all.extend_from_slice(edits);
    for (from, to) in all {
        assert_eq!(text.matches(from).count(), 1, "the embedded example should hold {from:?} once:\n{text}");
        text = text.replacen(from, to, 1);
    }
    text
}

struct Bundle {
    tmp: tempfile::TempDir,
    /// `out/kubernetes`
    cluster: PathBuf,
    plan: Value,
}

/// `kubebundle generate --config <config> --out <tmp>/out --now <fixed> EXTRA`.
fn generate(prefix: &str, config: &str, extra: &[&str]) -> Bundle {
    let tmp = temp_dir(prefix);
    let cfg = tmp.path().join("cluster.yaml");
    std::fs::write(&cfg, config).expect("write config");
    let out = tmp.path().join("out");
    let now = rfc3339(NOW_UNIX);
    let mut args = vec!["generate", "--unpacked", "--config", cfg.to_str().unwrap(), "--out", out.to_str().unwrap(), "--now", now.as_str()];
    args.extend_from_slice(extra);
    let r = kubebundle(tmp.path(), &args, &[]);
    assert!(r.ok(), "generate failed: {}\n--- config ---\n{config}", r.describe());
    let cluster = out.join("kubernetes");
    let plan_text = std::fs::read_to_string(cluster.join("plan.json")).expect("plan.json");
    let plan = serde_json::from_str(&plan_text).expect("plan.json is JSON");
    Bundle { tmp, cluster, plan }
}

impl Bundle {
    fn node(&self, name: &str) -> PathBuf {
        self.cluster.join("nodes").join(name)
    }

    /// The node's path (relative to its root) of an artifact, from plan.json.
    fn path_of(&self, node: &str, artifact: &str) -> Option<String> {
        let n = self.plan["nodes"].as_array()?.iter().find(|n| n["name"] == node)?;
        n["files"].as_array()?.iter().find(|f| f["artifact"] == artifact).and_then(|f| f["path"].as_str()).map(String::from)
    }

    /// The absolute path on the node (`/` + the planned path); panics when it is not planned.
    fn abs(&self, node: &str, artifact: &str) -> String {
        format!("/{}", self.path_of(node, artifact).unwrap_or_else(|| panic!("plan.json has no {artifact} for {node}")))
    }

    /// (path, artifact) of every file planned for the node.
    fn files(&self, node: &str) -> Vec<(String, String)> {
        let n = self.plan["nodes"].as_array().unwrap().iter().find(|n| n["name"] == node).unwrap_or_else(|| panic!("no node {node}"));
        n["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["path"].as_str().unwrap().to_string(), f["artifact"].as_str().unwrap().to_string()))
            .collect()
    }

    /// `kubebundle verify PATH`, run in the bundle's temp dir.
    fn verify(&self, path: &Path) -> Verified {
        verify(self.tmp.path(), path)
    }

    fn read(&self, node: &str, rel: &str) -> String {
        let p = self.node(node).join(rel);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
    }

    /// A copy of the whole bundle (modes kept) to tamper with.
    fn copy(&self, name: &str) -> PathBuf {
        let dest = self.tmp.path().join(unique_name(name));
        let mut c = Command::new("cp");
        c.arg("-a").arg(&self.cluster).arg(&dest);
        let r = run_cmd(c);
        assert!(r.ok(), "cp failed: {}", r.describe());
        dest
    }
}

/// Every YAML document of a file, as JSON.
fn yaml_docs(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text).unwrap_or_else(|e| panic!("invalid YAML: {e}\n{text}"))
}

fn yaml_doc(text: &str) -> Value {
    let docs = yaml_docs(text);
    assert_eq!(docs.len(), 1, "expected one YAML document:\n{text}");
    docs.into_iter().next().unwrap()
}

fn doc_of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind} document, found {}: {docs:?}", found.len());
    found[0]
}

/// `--flag=value` pairs of an argv (after argv[0]).
fn flags(argv: &[String]) -> Vec<(String, String)> {
    argv[1..]
        .iter()
        .filter_map(|a| a.strip_prefix("--"))
        .map(|a| match a.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (a.to_string(), "true".to_string()),
        })
        .collect()
}

/// Replaces `from` (which must occur exactly once) in a file.
fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert_eq!(text.matches(from).count(), 1, "{} should hold {from:?} once:\n{text}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).expect("write edited file");
}

/// The `n`th address of a subnet (`10.96.0.0/12`, 10 → 10.96.0.10).
fn nth_address(cidr: &str, n: u32) -> String {
    let net: IpAddr = cidr.split('/').next().unwrap().parse().expect("subnet address");
    match net {
        IpAddr::V4(a) => std::net::Ipv4Addr::from(u32::from(a) + n).to_string(),
        IpAddr::V6(a) => std::net::Ipv6Addr::from(u128::from(a) + u128::from(n)).to_string(),
    }
}

// =============================================================================================
// kubebundle verify, through its table

#[derive(Debug, Clone)]
struct Row {
    severity: String,
    node: String,
    file: String,
    check: String,
    message: String,
}

struct Verified {
    run: Run,
    rows: Vec<Row>,
}

/// `kubebundle verify PATH --now <the generation clock>` and its table, run in `cwd` (where the
/// hermetic HOME goes: never inside a bundle).
fn verify(cwd: &Path, path: &Path) -> Verified {
    let now = rfc3339(NOW_UNIX);
    let run = kubebundle(cwd, &["verify", path.to_str().unwrap(), "--now", &now], &[]);
    let mut rows = Vec::new();
    for line in run.stdout.lines() {
        let mut rest = line;
        let mut cells = Vec::new();
        for _ in 0..4 {
            let t = rest.trim_start();
            let end = t.find(char::is_whitespace).unwrap_or(t.len());
            cells.push(t[..end].to_string());
            rest = &t[end..];
        }
        if !["ERROR", "WARNING", "OK"].contains(&cells[0].as_str()) {
            continue;
        }
        let [severity, node, file, check]: [String; 4] = cells.try_into().unwrap();
        rows.push(Row { severity, node, file, check, message: rest.trim().to_string() });
    }
    Verified { run, rows }
}

impl Verified {
    fn errors(&self) -> Vec<&Row> {
        self.rows.iter().filter(|r| r.severity == "ERROR").collect()
    }
    /// The `references` rows of one referencing file.
    fn refs(&self, file: &str) -> Vec<&Row> {
        self.rows.iter().filter(|r| r.check == "references" && r.file == file).collect()
    }
    fn has_ref(&self, severity: &str, file: &str, message: &str) -> bool {
        self.refs(file).iter().any(|r| r.severity == severity && r.message == message)
    }
    fn summary(&self) -> &str {
        self.run.stdout.lines().last().unwrap_or_default()
    }
    fn show_refs(&self, file: &str) -> String {
        let rows: Vec<String> = self.refs(file).iter().map(|r| format!("{} {}", r.severity, r.message)).collect();
        format!("references rows of {file}:\n  {}\n--- errors ---\n{}", rows.join("\n  "), self.show_errors())
    }
    fn show_errors(&self) -> String {
        let e: Vec<String> = self.errors().iter().map(|r| format!("{} {} {} {}", r.node, r.file, r.check, r.message)).collect();
        format!("{}\n{}", e.join("\n"), self.run.stderr)
    }
}

// =============================================================================================
// 1. Every profile's example bundle verifies, every reference OK

/// The references a file of the tree makes, as the OK messages the check must print for them:
/// every `--flag=/path` of a unit (except etcd's data dir), the file fields of a KubeletConfiguration,
/// a kubeconfig, a JoinConfiguration, and the kube-apiserver patch's flags.
fn expected_ok_messages(b: &Bundle, node: &str, rel: &str, artifact: &str) -> Vec<String> {
    let text = b.read(node, rel);
    let mut out = Vec::new();
    let kubelet = |doc: &Value, out: &mut Vec<String>| {
        for (field, kind) in [
            ("authentication.x509.clientCAFile", "a CA certificate"),
            ("tlsCertFile", "a serving certificate"),
            ("tlsPrivateKeyFile", "a private key"),
        ] {
            let v = field.split('.').fold(doc, |v, k| &v[k]);
            if let Some(p) = v.as_str() {
                out.push(format!("KubeletConfiguration {field} {p}: {kind}"));
            }
        }
    };
    if rel.ends_with(".service") {
        let argv = exec_start(&text);
        let bin = argv[0].rsplit('/').next().unwrap().to_string();
        for (k, v) in flags(&argv) {
            if v.starts_with('/') && k != "data-dir" {
                out.push(format!("{bin} --{k} {v}: "));
            }
        }
    } else if artifact == "kubelet-config" {
        kubelet(&yaml_doc(&text), &mut out);
    } else if artifact == "kube-proxy-config" {
        let p = yaml_doc(&text)["clientConnection"]["kubeconfig"].as_str().expect("clientConnection.kubeconfig").to_string();
        out.push(format!("KubeProxyConfiguration clientConnection.kubeconfig {p}: a kubeconfig"));
    } else if artifact == "kubeadm-init" {
        kubelet(doc_of_kind(&yaml_docs(&text), "KubeletConfiguration"), &mut out);
    } else if artifact == "kubeadm-join" {
        let doc = yaml_doc(&text);
        out.push(format!("JoinConfiguration caCertPath {}: a CA certificate", doc["caCertPath"].as_str().unwrap()));
        if let Some(p) = doc["discovery"]["file"]["kubeConfigPath"].as_str() {
            out.push(format!("JoinConfiguration discovery.file.kubeConfigPath {p}: a kubeconfig"));
        }
    } else if artifact == "kube-apiserver-patch" {
        for op in yaml_doc(&text).as_array().expect("a JSON patch is a list") {
            if let Some((k, v)) = op["value"].as_str().and_then(|s| s.strip_prefix("--")).and_then(|s| s.split_once('=')) {
                out.push(format!("kube-apiserver --{k} {v}: "));
            }
        }
    } else if text.contains("kind: Config") {
        let doc = yaml_doc(&text);
        let user = &doc["users"][0]["user"];
        for (field, kind) in [("client-certificate", "a client certificate"), ("client-key", "a private key")] {
            if let Some(p) = user[field].as_str() {
                out.push(format!("Config user.{field} {p}: {kind}"));
            }
        }
        if let Some(p) = doc["clusters"][0]["cluster"]["certificate-authority"].as_str() {
            out.push(format!("Config cluster.certificate-authority {p}: a CA certificate"));
        }
    }
    out
}

#[test]
fn every_profile_verifies_with_every_reference_ok() {
    let mut f = Failures::new();
    for profile in PROFILES {
        let b = generate(&format!("refs-{profile}"), &example(profile, &[]), &[]);
        f.eq(&format!("{profile}: plan.json profile"), &Value::from(profile), &b.plan["profile"]);
        let v = b.verify(&b.cluster);
        f.check(v.run.ok() && v.errors().is_empty(), || format!("{profile}: verify should pass:\n{}", v.show_errors()));
        f.check(v.summary().starts_with("0 errors"), || format!("{profile}: summary {:?}", v.summary()));

        // The first control plane, a joining one and a worker: each referencing file has an OK
        // row for each of its references, in the tree and in the tarball, and nothing else.
        for node in ["cp1", "cp2", "worker1"] {
            let mut referencing = 0;
            for (rel, artifact) in b.files(node) {
                let expected = expected_ok_messages(&b, node, &rel, &artifact);
                if expected.is_empty() {
                    continue;
                }
                referencing += 1;
                for file in [format!("nodes/{node}/{rel}"), format!("nodes/{node}.tar.gz:{rel}")] {
                    let rows = v.refs(&file);
                    for want in &expected {
                        let ok = if want.ends_with(": ") {
                            rows.iter().any(|r| r.severity == "OK" && r.message.starts_with(want.as_str()))
                        } else {
                            rows.iter().any(|r| r.severity == "OK" && r.message == *want)
                        };
                        f.check(ok, || format!("{profile}: no OK references row {want:?}\n{}", v.show_refs(&file)));
                    }
                    let bad: Vec<&&Row> = rows.iter().filter(|r| r.severity != "OK").collect();
                    f.check(bad.is_empty(), || format!("{profile}: {file}: non-OK references rows {bad:?}"));
                    // Units' kubelet --kubeconfig on a TLS-bootstrapping node is the one row not
                    // naming a file of the tree; every other row is one of the expected ones.
                    f.check(rows.len() >= expected.len(), || format!("{profile}: {file}: {} rows for {expected:?}", rows.len()));
                }
            }
            f.check(referencing > 0, || format!("{profile}: {node} has no referencing file"));
        }

        // Units per role (kubeadm runs its control plane as static pods and kube-proxy as a
        // DaemonSet, so none there).
        for (node, want) in [
            ("cp1", &["etcd", "kube-apiserver", "kube-controller-manager", "kube-proxy", "kube-scheduler", "kubelet"][..]),
            ("worker1", &["kube-proxy", "kubelet"][..]),
        ] {
            let mut units: Vec<String> = b
                .files(node)
                .into_iter()
                .filter_map(|(p, _)| p.strip_prefix("etc/systemd/system/").and_then(|u| u.strip_suffix(".service")).map(String::from))
                .collect();
            units.sort();
            let want: Vec<String> = if profile == "kubeadm" { vec![] } else { want.iter().map(|s| s.to_string()).collect() };
            f.eq(&format!("{profile}: units of {node}"), &want, &units);
        }

        // Some references spelled out.
        let concrete: Vec<(&str, &str, String)> = match profile {
            "hardway" => vec![
                ("cp1", "etc/systemd/system/kube-apiserver.service", "kube-apiserver --tls-cert-file /etc/k8s/kube-apiserver/certs/apiserver.crt: a serving certificate".into()),
                ("cp1", "etc/systemd/system/kube-apiserver.service", "kube-apiserver --tls-private-key-file /etc/k8s/kube-apiserver/certs/apiserver.key: a private key".into()),
                ("cp1", "etc/systemd/system/kube-apiserver.service", "kube-apiserver --etcd-certfile /etc/k8s/kube-apiserver/certs/etcd/client.crt: a client certificate".into()),
                ("cp1", "etc/systemd/system/kube-apiserver.service", "kube-apiserver --encryption-provider-config /etc/k8s/kube-apiserver/encryption-config.yaml: an EncryptionConfiguration".into()),
                ("cp1", "etc/systemd/system/kube-apiserver.service", "kube-apiserver --service-account-key-file /etc/k8s/kube-apiserver/certs/sa.pub: a public key".into()),
                ("cp1", "etc/systemd/system/etcd.service", "etcd --cert-file /etc/k8s/etcd/certs/server.crt: a serving certificate".into()),
                ("cp1", "etc/systemd/system/etcd.service", "etcd --peer-cert-file /etc/k8s/etcd/certs/peer.crt: a peer certificate".into()),
                ("cp1", "etc/systemd/system/etcd.service", "etcd --trusted-ca-file /etc/k8s/shared/etcd-ca.crt: a CA certificate".into()),
                ("cp1", "etc/systemd/system/kube-controller-manager.service", "kube-controller-manager --cluster-signing-key-file /etc/k8s/kube-controller-manager/certs/ca.key: a private key".into()),
                ("cp1", "etc/systemd/system/kube-controller-manager.service", "kube-controller-manager --kubeconfig /etc/k8s/kube-controller-manager/kubeconfig: a kubeconfig".into()),
                ("cp1", "etc/systemd/system/kube-scheduler.service", "kube-scheduler --kubeconfig /etc/k8s/kube-scheduler/kubeconfig: a kubeconfig".into()),
                ("cp1", "etc/systemd/system/kubelet.service", "kubelet --config /etc/k8s/kubelet/config.yaml: a KubeletConfiguration".into()),
                ("cp1", "etc/systemd/system/kubelet.service", "kubelet --kubeconfig /etc/k8s/kubelet/kubeconfig: a kubeconfig".into()),
                ("cp1", "etc/k8s/kubelet/config.yaml", "KubeletConfiguration tlsCertFile /etc/k8s/kubelet/certs/kubelet.crt: a serving certificate".into()),
                ("worker1", "etc/systemd/system/kubelet.service", "kubelet --bootstrap-kubeconfig /etc/k8s/kubelet/bootstrap-kubeconfig: a kubeconfig".into()),
                ("worker1", "etc/systemd/system/kubelet.service", "kubelet --kubeconfig /etc/k8s/kubelet/kubeconfig: written by the kubelet after TLS bootstrap".into()),
                ("worker1", "etc/k8s/kubelet/config.yaml", "KubeletConfiguration authentication.x509.clientCAFile /etc/k8s/shared/ca.crt: a CA certificate".into()),
                ("cp1", "etc/systemd/system/kube-proxy.service", "kube-proxy --config /etc/k8s/kube-proxy/config.yaml: a KubeProxyConfiguration".into()),
                ("worker1", "etc/systemd/system/kube-proxy.service", "kube-proxy --config /etc/k8s/kube-proxy/config.yaml: a KubeProxyConfiguration".into()),
                ("worker1", "etc/k8s/kube-proxy/config.yaml", "KubeProxyConfiguration clientConnection.kubeconfig /etc/k8s/kube-proxy/kubeconfig: a kubeconfig".into()),
            ],
            "binary" => vec![
                ("cp1", "etc/systemd/system/kube-apiserver.service", "kube-apiserver --tls-cert-file /etc/kubernetes/pki/kube-apiserver.crt: a serving certificate".into()),
                ("cp1", "etc/systemd/system/kube-apiserver.service", "kube-apiserver --kubelet-client-certificate /etc/kubernetes/pki/kube-apiserver-kubelet-client.crt: a client certificate".into()),
                ("cp1", "etc/systemd/system/etcd.service", "etcd --cert-file /etc/kubernetes/pki/etcd-server.crt: a serving certificate".into()),
                ("cp1", "etc/systemd/system/kube-scheduler.service", "kube-scheduler --kubeconfig /etc/kubernetes/kube-scheduler.kubeconfig: a kubeconfig".into()),
                ("cp1", "etc/kubernetes/admin.kubeconfig", "Config user.client-certificate /etc/kubernetes/pki/admin.crt: a client certificate".into()),
                ("cp1", "etc/kubernetes/kube-controller-manager.kubeconfig", "Config user.client-key /etc/kubernetes/pki/kube-controller-manager.key: a private key".into()),
                ("cp1", "etc/kubernetes/kubelet.kubeconfig", "Config user.client-certificate /etc/kubernetes/pki/cp1-client.crt: a client certificate".into()),
                ("cp1", "etc/kubernetes/kubelet-config.yaml", "KubeletConfiguration tlsCertFile /etc/kubernetes/pki/cp1.crt: a serving certificate".into()),
                ("worker1", "etc/kubernetes/kubelet-config.yaml", "KubeletConfiguration tlsCertFile /etc/kubernetes/pki/worker1.crt: a serving certificate".into()),
                ("worker1", "etc/systemd/system/kubelet.service", "kubelet --bootstrap-kubeconfig /etc/kubernetes/bootstrap-kubelet.kubeconfig: a kubeconfig".into()),
                ("cp1", "etc/systemd/system/kube-proxy.service", "kube-proxy --config /etc/kubernetes/kube-proxy-config.yaml: a KubeProxyConfiguration".into()),
                ("worker1", "etc/kubernetes/kube-proxy-config.yaml", "KubeProxyConfiguration clientConnection.kubeconfig /etc/kubernetes/kube-proxy.kubeconfig: a kubeconfig".into()),
                ("worker1", "etc/kubernetes/kube-proxy.kubeconfig", "Config user.client-certificate /etc/kubernetes/pki/kube-proxy.crt: a client certificate".into()),
                ("worker1", "etc/kubernetes/kube-proxy.kubeconfig", "Config user.client-key /etc/kubernetes/pki/kube-proxy.key: a private key".into()),
            ],
            _ => vec![
                ("cp1", "etc/kubernetes/patches/kube-apiserver+json.yaml", "kube-apiserver --encryption-provider-config /etc/kubernetes/encryption/encryption-config.yaml: an EncryptionConfiguration".into()),
                ("cp1", "var/lib/kubelet/config.yaml", "KubeletConfiguration tlsCertFile /var/lib/kubelet/pki/kubelet.crt: a serving certificate".into()),
                ("cp1", "etc/kubernetes/kubeadm-init.yaml", "KubeletConfiguration authentication.x509.clientCAFile /etc/kubernetes/pki/ca.crt: a CA certificate".into()),
                ("cp2", "etc/kubernetes/kubeadm-join.yaml", "JoinConfiguration caCertPath /etc/kubernetes/pki/ca.crt: a CA certificate".into()),
                ("worker1", "etc/kubernetes/kubeadm-join.yaml", "JoinConfiguration caCertPath /etc/kubernetes/pki/ca.crt: a CA certificate".into()),
                ("worker1", "var/lib/kubelet/config.yaml", "KubeletConfiguration tlsPrivateKeyFile /var/lib/kubelet/pki/kubelet.key: a private key".into()),
            ],
        };
        for (node, rel, msg) in &concrete {
            for file in [format!("nodes/{node}/{rel}"), format!("nodes/{node}.tar.gz:{rel}")] {
                f.check(v.has_ref("OK", &file, msg), || format!("{profile}: no OK row {msg:?}\n{}", v.show_refs(&file)));
            }
        }

        // Each tarball and each node root (plan.json two levels up) verified on its own: the
        // same references, FILE relative to what was passed.
        for node in ["cp1", "worker1"] {
            for (what, path) in [("tarball", b.cluster.join("nodes").join(format!("{node}.tar.gz"))), ("node root", b.node(node))] {
                let tv = b.verify(&path);
                f.check(tv.run.ok() && tv.errors().is_empty(), || format!("{profile}: verify of {node}'s {what}: {}", tv.run.describe()));
                for (_, rel, msg) in concrete.iter().filter(|c| c.0 == node) {
                    f.check(tv.has_ref("OK", rel, msg), || {
                        format!("{profile}: verify of {node}'s {what}: no OK row {msg:?}\n{}", tv.show_refs(rel))
                    });
                }
            }
        }
    }
    f.finish("every_profile_verifies_with_every_reference_ok");
}

// =============================================================================================
// 2. Tampered references fail verify, naming the referencing file

struct Break {
    what: &'static str,
    node: &'static str,
    /// The referencing file (relative to the node root) and the edit made to it.
    file: &'static str,
    edits: Vec<(String, String)>,
    /// Files copied into the node's tree first: (from node, its path, path in this node).
    copies: Vec<(&'static str, String, String)>,
    /// The ERROR row's message (exact), or its parts when `exact` is false.
    expect: Vec<String>,
    exact: bool,
    /// Also re-pack the node's tarball from the tampered tree, and verify the node root and
    /// tarball on their own.
    repack: bool,
}

fn brk(what: &'static str, node: &'static str, file: &'static str, edits: &[(&str, &str)], expect: &str) -> Break {
    Break {
        what,
        node,
        file,
        edits: edits.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
        copies: vec![],
        expect: vec![expect.to_string()],
        exact: true,
        repack: false,
    }
}

impl Break {
    fn parts(mut self, parts: &[&str]) -> Break {
        self.expect = parts.iter().map(|s| s.to_string()).collect();
        self.exact = false;
        self
    }
    fn copy(mut self, from_node: &'static str, from: &str, to: &str) -> Break {
        self.copies.push((from_node, from.to_string(), to.to_string()));
        self
    }
    fn repack(mut self) -> Break {
        self.repack = true;
        self
    }
}

fn matches(b: &Break, message: &str) -> bool {
    if b.exact {
        b.expect.iter().all(|e| message == e)
    } else {
        b.expect.iter().all(|e| message.contains(e.as_str()))
    }
}

fn run_breaks(profile: &str, breaks: Vec<Break>) {
    let b = generate(&format!("break-{profile}"), &example(profile, &[]), &[]);
    let mut f = Failures::new();
    // One working copy; each case's changes are undone after it.
    let copy = b.copy(&format!("{profile}-tampered"));
    for c in breaks {
        let label = format!("{profile}/{} ({} {})", c.what, c.node, c.file);
        let root = copy.join("nodes").join(c.node);
        let tgz = copy.join("nodes").join(format!("{}.tar.gz", c.node));
        let saved = [(root.join(c.file), std::fs::read(root.join(c.file)).unwrap()), (tgz.clone(), std::fs::read(&tgz).unwrap())];
        for (from_node, from, to) in &c.copies {
            std::fs::copy(copy.join("nodes").join(from_node).join(from), root.join(to)).expect("copy a file into the tree");
        }
        for (from, to) in &c.edits {
            edit(&root.join(c.file), from, to);
        }
        if c.repack {
            // With kubebundle's own pack: a tarball re-packed by another tool lacks the digest
            // header, which verify refuses without --foreign.
            let tree = kubebundle::bundle::output::read_tree(&root).expect("read the tampered tree");
            std::fs::write(&tgz, kubebundle::tree::tarball::tar_gz(&tree, 0).expect("pack")).expect("write the tarball");
        }

        // The bundle: the tree's copy of the file has the ERROR row.
        let v = b.verify(&copy);
        f.check(!v.run.ok() && v.run.code.is_some(), || format!("{label}: verify should exit non-zero: {}", v.run.describe()));
        let tree_file = format!("nodes/{}/{}", c.node, c.file);
        let hit = v.refs(&tree_file).iter().any(|r| r.severity == "ERROR" && r.node == c.node && matches(&c, &r.message));
        f.check(hit, || format!("{label}: no ERROR references row on {tree_file} with {:?}\n{}", c.expect, v.show_refs(&tree_file)));
        let tgz_file = format!("nodes/{}.tar.gz:{}", c.node, c.file);
        if c.repack {
            // The re-packed tarball says the same, and tree and tarball agree.
            let hit = v.refs(&tgz_file).iter().any(|r| r.severity == "ERROR" && matches(&c, &r.message));
            f.check(hit, || format!("{label}: no ERROR references row on {tgz_file}\n{}", v.show_refs(&tgz_file)));
            let archive: Vec<&Row> = v.errors().into_iter().filter(|r| r.check == "archive").collect();
            f.check(archive.is_empty(), || format!("{label}: archive errors after re-packing: {archive:?}"));
            // The tarball alone: FILE is relative to it.
            let tv = b.verify(&copy.join("nodes").join(format!("{}.tar.gz", c.node)));
            let hit = tv.refs(c.file).iter().any(|r| r.severity == "ERROR" && matches(&c, &r.message));
            f.check(!tv.run.ok() && hit, || format!("{label}: verify of the tarball alone: {}", tv.show_refs(c.file)));
            // The node root alone, FILE relative to it.
            let rv = b.verify(&root);
            let hit = rv.refs(c.file).iter().any(|r| r.severity == "ERROR" && matches(&c, &r.message));
            f.check(!rv.run.ok() && hit, || format!("{label}: verify of the node root alone: {}", rv.run.describe()));
        } else {
            // The untouched tarball keeps its OK rows; the difference is an archive error.
            let bad = v.refs(&tgz_file).iter().any(|r| r.severity == "ERROR");
            f.check(!bad, || format!("{label}: the untouched tarball has ERROR references rows\n{}", v.show_refs(&tgz_file)));
            let differs = v
                .errors()
                .iter()
                .any(|r| r.check == "archive" && r.message.contains(&format!("{} differs from the unpacked tree", c.file)));
            f.check(differs, || format!("{label}: no archive error for the edited {}", c.file));
        }

        for (path, bytes) in &saved {
            std::fs::write(path, bytes).expect("restore a tampered file");
        }
        for (_, _, to) in &c.copies {
            std::fs::remove_file(root.join(to)).expect("remove a copied file");
        }
    }
    // Undone, the copy verifies again.
    let v = b.verify(&copy);
    f.check(v.run.ok(), || format!("{profile}: the restored copy does not verify: {}", v.show_errors()));
    f.finish(&format!("breaking references ({profile})"));
}

#[test]
fn broken_references_fail_verify_hardway() {
    let api = "etc/systemd/system/kube-apiserver.service";
    let etcd = "etc/systemd/system/etcd.service";
    let kubelet = "etc/systemd/system/kubelet.service";
    run_breaks(
        "hardway",
        vec![
            // (a) a flag naming a file that does not exist.
            brk(
                "missing tls cert",
                "cp1",
                api,
                &[("--tls-cert-file=/etc/k8s/kube-apiserver/certs/apiserver.crt", "--tls-cert-file=/etc/k8s/kube-apiserver/certs/missing.crt")],
                "kube-apiserver --tls-cert-file /etc/k8s/kube-apiserver/certs/missing.crt is not in the tree: a serving certificate is missing",
            )
            .repack(),
            // (b) a serving-cert flag naming a client certificate.
            brk(
                "client cert served",
                "cp1",
                api,
                &[("--tls-cert-file=/etc/k8s/kube-apiserver/certs/apiserver.crt", "--tls-cert-file=/etc/k8s/kube-apiserver/certs/kubelet/client.crt")],
                "",
            )
            .parts(&["kube-apiserver --tls-cert-file /etc/k8s/kube-apiserver/certs/kubelet/client.crt must be a serving certificate", "no serverAuth extended key usage"]),
            // (c) etcd serving another member's certificate (with its own key): SANs miss 10.0.0.11.
            brk(
                "other member's etcd cert",
                "cp1",
                etcd,
                &[
                    ("--cert-file=/etc/k8s/etcd/certs/server.crt", "--cert-file=/etc/k8s/etcd/certs/cp2-server.crt"),
                    ("--key-file=/etc/k8s/etcd/certs/server.key", "--key-file=/etc/k8s/etcd/certs/cp2-server.key"),
                ],
                "etcd --cert-file /etc/k8s/etcd/certs/cp2-server.crt must be a serving certificate: its SANs do not cover 10.0.0.11",
            )
            .copy("cp2", "etc/k8s/etcd/certs/server.crt", "etc/k8s/etcd/certs/cp2-server.crt")
            .copy("cp2", "etc/k8s/etcd/certs/server.key", "etc/k8s/etcd/certs/cp2-server.key"),
            // (e) a key flag naming another key.
            brk(
                "mismatched key",
                "cp1",
                api,
                &[("--tls-private-key-file=/etc/k8s/kube-apiserver/certs/apiserver.key", "--tls-private-key-file=/etc/k8s/kube-apiserver/certs/front-proxy/client.key")],
                "kube-apiserver --tls-cert-file /etc/k8s/kube-apiserver/certs/apiserver.crt must be a serving certificate: its key is not /etc/k8s/kube-apiserver/certs/front-proxy/client.key",
            ),
            brk(
                "peer cert without serverAuth",
                "cp1",
                etcd,
                &[("--peer-cert-file=/etc/k8s/etcd/certs/peer.crt", "--peer-cert-file=/etc/k8s/etcd/certs/healthcheck-client.crt")],
                "",
            )
            .parts(&["etcd --peer-cert-file /etc/k8s/etcd/certs/healthcheck-client.crt must be a peer certificate", "no serverAuth extended key usage"]),
            brk(
                "leaf as trusted CA",
                "cp1",
                etcd,
                &[("--trusted-ca-file=/etc/k8s/shared/etcd-ca.crt", "--trusted-ca-file=/etc/k8s/etcd/certs/server.crt")],
                "etcd --trusted-ca-file /etc/k8s/etcd/certs/server.crt must be a CA certificate: the certificate is not a CA",
            ),
            brk(
                "kubeconfig as kubelet config",
                "worker1",
                kubelet,
                &[("--config=/etc/k8s/kubelet/config.yaml", "--config=/etc/k8s/kubelet/bootstrap-kubeconfig")],
                "kubelet --config /etc/k8s/kubelet/bootstrap-kubeconfig must be a KubeletConfiguration: it is a Config, not a KubeletConfiguration",
            ),
            // Without --bootstrap-kubeconfig the worker's kubelet kubeconfig must be shipped.
            brk(
                "no bootstrap kubeconfig",
                "worker1",
                kubelet,
                &[("  --bootstrap-kubeconfig=/etc/k8s/kubelet/bootstrap-kubeconfig \\\n", "")],
                "kubelet --kubeconfig /etc/k8s/kubelet/kubeconfig is not in the tree: a kubeconfig is missing",
            ),
            // kube-proxy: its unit naming the kubelet's configuration, its configuration a
            // kubeconfig that is not there.
            brk(
                "kubelet config as kube-proxy config",
                "worker1",
                "etc/systemd/system/kube-proxy.service",
                &[("--config=/etc/k8s/kube-proxy/config.yaml", "--config=/etc/k8s/kubelet/config.yaml")],
                "kube-proxy --config /etc/k8s/kubelet/config.yaml must be a KubeProxyConfiguration: it is a KubeletConfiguration, not a KubeProxyConfiguration",
            )
            .repack(),
            brk(
                "kube-proxy kubeconfig missing",
                "cp2",
                "etc/k8s/kube-proxy/config.yaml",
                &[("kubeconfig: \"/etc/k8s/kube-proxy/kubeconfig\"", "kubeconfig: \"/etc/k8s/kube-proxy/gone\"")],
                "KubeProxyConfiguration clientConnection.kubeconfig /etc/k8s/kube-proxy/gone is not in the tree: a kubeconfig is missing",
            ),
        ],
    );
}

#[test]
fn broken_references_fail_verify_binary() {
    let api = "etc/systemd/system/kube-apiserver.service";
    run_breaks(
        "binary",
        vec![
            // (a)
            brk(
                "missing tls cert",
                "cp1",
                api,
                &[("--tls-cert-file=/etc/kubernetes/pki/kube-apiserver.crt", "--tls-cert-file=/etc/kubernetes/pki/missing.crt")],
                "kube-apiserver --tls-cert-file /etc/kubernetes/pki/missing.crt is not in the tree: a serving certificate is missing",
            )
            .repack(),
            // (b)
            brk(
                "client cert served",
                "cp1",
                api,
                &[("--tls-cert-file=/etc/kubernetes/pki/kube-apiserver.crt", "--tls-cert-file=/etc/kubernetes/pki/kube-apiserver-kubelet-client.crt")],
                "",
            )
            .parts(&["kube-apiserver --tls-cert-file /etc/kubernetes/pki/kube-apiserver-kubelet-client.crt must be a serving certificate", "no serverAuth extended key usage"]),
            // (c)
            brk(
                "other member's etcd cert",
                "cp1",
                "etc/systemd/system/etcd.service",
                &[
                    ("--cert-file=/etc/kubernetes/pki/etcd-server.crt", "--cert-file=/etc/kubernetes/pki/cp2-etcd-server.crt"),
                    ("--key-file=/etc/kubernetes/pki/etcd-server.key", "--key-file=/etc/kubernetes/pki/cp2-etcd-server.key"),
                ],
                "etcd --cert-file /etc/kubernetes/pki/cp2-etcd-server.crt must be a serving certificate: its SANs do not cover 10.0.0.11",
            )
            .copy("cp2", "etc/kubernetes/pki/etcd-server.crt", "etc/kubernetes/pki/cp2-etcd-server.crt")
            .copy("cp2", "etc/kubernetes/pki/etcd-server.key", "etc/kubernetes/pki/cp2-etcd-server.key"),
            // (d) a kubeconfig's client-certificate path.
            brk(
                "kubeconfig cert missing",
                "cp1",
                "etc/kubernetes/kube-scheduler.kubeconfig",
                &[("client-certificate: /etc/kubernetes/pki/kube-scheduler.crt", "client-certificate: /etc/kubernetes/pki/kube-scheduler-gone.crt")],
                "Config user.client-certificate /etc/kubernetes/pki/kube-scheduler-gone.crt is not in the tree: a client certificate is missing",
            )
            .repack(),
            brk(
                "kubeconfig with a serving cert",
                "cp1",
                "etc/kubernetes/admin.kubeconfig",
                &[("client-certificate: /etc/kubernetes/pki/admin.crt", "client-certificate: /etc/kubernetes/pki/kube-apiserver.crt")],
                "",
            )
            .parts(&["Config user.client-certificate /etc/kubernetes/pki/kube-apiserver.crt must be a client certificate", "no clientAuth extended key usage"]),
            // (e) mismatched pairs, in a kubeconfig and in a unit.
            brk(
                "kubeconfig key mismatch",
                "cp1",
                "etc/kubernetes/kube-controller-manager.kubeconfig",
                &[("client-key: /etc/kubernetes/pki/kube-controller-manager.key", "client-key: /etc/kubernetes/pki/kube-scheduler.key")],
                "Config user.client-certificate /etc/kubernetes/pki/kube-controller-manager.crt must be a client certificate: its key is not /etc/kubernetes/pki/kube-scheduler.key",
            ),
            brk(
                "unit key mismatch",
                "cp1",
                api,
                &[("--kubelet-client-key=/etc/kubernetes/pki/kube-apiserver-kubelet-client.key", "--kubelet-client-key=/etc/kubernetes/pki/front-proxy-client.key")],
                "kube-apiserver --kubelet-client-certificate /etc/kubernetes/pki/kube-apiserver-kubelet-client.crt must be a client certificate: its key is not /etc/kubernetes/pki/front-proxy-client.key",
            ),
            // A worker's kubelet serving another node's certificate.
            brk(
                "other node's kubelet cert",
                "worker1",
                "etc/kubernetes/kubelet-config.yaml",
                &[
                    ("tlsCertFile: \"/etc/kubernetes/pki/worker1.crt\"", "tlsCertFile: \"/etc/kubernetes/pki/worker2.crt\""),
                    ("tlsPrivateKeyFile: \"/etc/kubernetes/pki/worker1.key\"", "tlsPrivateKeyFile: \"/etc/kubernetes/pki/worker2.key\""),
                ],
                "KubeletConfiguration tlsCertFile /etc/kubernetes/pki/worker2.crt must be a serving certificate: its SANs do not cover 10.0.0.21",
            )
            .copy("worker2", "etc/kubernetes/pki/worker2.crt", "etc/kubernetes/pki/worker2.crt")
            .copy("worker2", "etc/kubernetes/pki/worker2.key", "etc/kubernetes/pki/worker2.key"),
            // kube-proxy's kubeconfig naming the kubelet's serving certificate as its client one.
            brk(
                "kube-proxy kubeconfig with a serving cert",
                "worker1",
                "etc/kubernetes/kube-proxy.kubeconfig",
                &[
                    ("client-certificate: /etc/kubernetes/pki/kube-proxy.crt", "client-certificate: /etc/kubernetes/pki/worker1.crt"),
                    ("client-key: /etc/kubernetes/pki/kube-proxy.key", "client-key: /etc/kubernetes/pki/worker1.key"),
                ],
                "",
            )
            .parts(&["Config user.client-certificate /etc/kubernetes/pki/worker1.crt must be a client certificate", "no clientAuth extended key usage"]),
        ],
    );
}

#[test]
fn broken_references_fail_verify_kubeadm() {
    let patch = "etc/kubernetes/patches/kube-apiserver+json.yaml";
    let kubelet = "var/lib/kubelet/config.yaml";
    run_breaks(
        "kubeadm",
        vec![
            // (a) the JSON patch's flag, and the KubeletConfiguration's tlsCertFile.
            brk(
                "patch flag missing file",
                "cp1",
                patch,
                &[(
                    "--encryption-provider-config=/etc/kubernetes/encryption/encryption-config.yaml",
                    "--encryption-provider-config=/etc/kubernetes/encryption/missing.yaml",
                )],
                "kube-apiserver --encryption-provider-config /etc/kubernetes/encryption/missing.yaml is not in the tree: an EncryptionConfiguration is missing",
            )
            .repack(),
            brk(
                "kubelet tlsCertFile missing",
                "worker1",
                kubelet,
                &[("tlsCertFile: \"/var/lib/kubelet/pki/kubelet.crt\"", "tlsCertFile: \"/var/lib/kubelet/pki/missing.crt\"")],
                "KubeletConfiguration tlsCertFile /var/lib/kubelet/pki/missing.crt is not in the tree: a serving certificate is missing",
            ),
            brk(
                "patch flag names a kubeconfig",
                "cp2",
                patch,
                &[("--encryption-provider-config=/etc/kubernetes/encryption/encryption-config.yaml", "--encryption-provider-config=/etc/kubernetes/admin.conf")],
                "",
            )
            .parts(&["kube-apiserver --encryption-provider-config /etc/kubernetes/admin.conf must be an EncryptionConfiguration", "it is a Config"]),
            // (b)
            brk(
                "client cert served",
                "cp1",
                kubelet,
                &[("tlsCertFile: \"/var/lib/kubelet/pki/kubelet.crt\"", "tlsCertFile: \"/etc/kubernetes/pki/apiserver-kubelet-client.crt\"")],
                "",
            )
            .parts(&["KubeletConfiguration tlsCertFile /etc/kubernetes/pki/apiserver-kubelet-client.crt must be a serving certificate", "no serverAuth extended key usage"]),
            // (c) another node's kubelet serving certificate (with its key): SANs miss 10.0.0.11.
            brk(
                "other node's kubelet cert",
                "cp1",
                kubelet,
                &[
                    ("tlsCertFile: \"/var/lib/kubelet/pki/kubelet.crt\"", "tlsCertFile: \"/var/lib/kubelet/pki/cp2.crt\""),
                    ("tlsPrivateKeyFile: \"/var/lib/kubelet/pki/kubelet.key\"", "tlsPrivateKeyFile: \"/var/lib/kubelet/pki/cp2.key\""),
                ],
                "KubeletConfiguration tlsCertFile /var/lib/kubelet/pki/cp2.crt must be a serving certificate: its SANs do not cover 10.0.0.11",
            )
            .copy("cp2", "var/lib/kubelet/pki/kubelet.crt", "var/lib/kubelet/pki/cp2.crt")
            .copy("cp2", "var/lib/kubelet/pki/kubelet.key", "var/lib/kubelet/pki/cp2.key"),
            // (e)
            brk(
                "mismatched key",
                "cp1",
                kubelet,
                &[("tlsPrivateKeyFile: \"/var/lib/kubelet/pki/kubelet.key\"", "tlsPrivateKeyFile: \"/etc/kubernetes/pki/apiserver.key\"")],
                "KubeletConfiguration tlsCertFile /var/lib/kubelet/pki/kubelet.crt must be a serving certificate: its key is not /etc/kubernetes/pki/apiserver.key",
            ),
            // The JoinConfiguration's caCertPath naming a leaf, and the init config's KubeletConfiguration.
            brk(
                "join caCertPath not a CA",
                "worker1",
                "etc/kubernetes/kubeadm-join.yaml",
                &[("caCertPath: \"/etc/kubernetes/pki/ca.crt\"", "caCertPath: \"/var/lib/kubelet/pki/kubelet.crt\"")],
                "JoinConfiguration caCertPath /var/lib/kubelet/pki/kubelet.crt must be a CA certificate: the certificate is not a CA",
            ),
            brk(
                "init clientCAFile not a CA",
                "cp1",
                "etc/kubernetes/kubeadm-init.yaml",
                &[("clientCAFile: \"/etc/kubernetes/pki/ca.crt\"", "clientCAFile: \"/etc/kubernetes/pki/front-proxy-client.crt\"")],
                "KubeletConfiguration authentication.x509.clientCAFile /etc/kubernetes/pki/front-proxy-client.crt must be a CA certificate: the certificate is not a CA",
            ),
        ],
    );
}

// =============================================================================================
// 3. KubeletConfiguration per node

/// The top-level fields where two documents differ: `field: a vs b`.
fn diff_fields(a: &Value, b: &Value) -> String {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else { return format!("{a} vs {b}") };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let diffs: Vec<String> =
        keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).map(|k| format!("{k}: {:?} vs {:?}", a.get(k), b.get(k))).collect();
    diffs.join("; ")
}

/// A node's address of the example (10.0.0.N), or its IPv6 twin (fd00::N).
fn address_in(address: &str, v6: bool) -> String {
    if v6 {
        format!("fd00::{}", address.rsplit('.').next().unwrap_or_default())
    } else {
        address.to_string()
    }
}

/// Checks every node's KubeletConfiguration (and the one in kubeadm-init.yaml) of a bundle.
fn check_kubelet_configs(f: &mut Failures, label: &str, b: &Bundle, dns: &str, domain: &str, serving: bool) {
    check_kubelet_configs_at(f, label, b, dns, domain, serving, false)
}

/// `check_kubelet_configs` for a bundle whose nodes have the IPv6 twins of the example's addresses (`v6`).
fn check_kubelet_configs_at(f: &mut Failures, label: &str, b: &Bundle, dns: &str, domain: &str, serving: bool, v6: bool) {
    // kubeadm join replaces the node's file with the kubelet-config ConfigMap's: they must agree.
    let kubeadm = b.plan["profile"].as_str().is_some_and(|p| p.starts_with("kubeadm"));
    let config_map = kubeadm.then(|| {
        let cm =
            yaml_doc(&std::fs::read_to_string(b.cluster.join("manifests/kubelet-config.yaml")).expect("manifests/kubelet-config.yaml"));
        yaml_doc(cm["data"]["kubelet"].as_str().expect("data.kubelet"))
    });
    for (node, address, _) in NODES {
        let address = &address_in(address, v6);
        let Some(rel) = b.path_of(node, "kubelet-config") else {
            f.fail(format!("{label}: no kubelet-config planned for {node}"));
            continue;
        };
        let mut docs = vec![(rel.clone(), yaml_doc(&b.read(node, &rel)))];
        if let Some(init) = b.path_of(node, "kubeadm-init") {
            docs.push((init.clone(), doc_of_kind(&yaml_docs(&b.read(node, &init)), "KubeletConfiguration").clone()));
        }
        let l = format!("{label}: {node}");
        f.eq(&format!("{l}: mode of {rel}"), &Some(0o644), &mode_of(&b.node(node).join(&rel)));
        if let Some(cm) = &config_map {
            f.check(*cm == docs[0].1, || {
                format!(
                    "{l}: {rel} differs from manifests/kubelet-config.yaml's KubeletConfiguration, which `kubeadm join` writes over it: {}",
                    diff_fields(&docs[0].1, cm)
                )
            });
        }
        for (file, k) in &docs {
            let l = format!("{l}: {file}");
            f.eq(&format!("{l}: kind"), &Value::from("KubeletConfiguration"), &k["kind"]);
            f.eq(&format!("{l}: apiVersion"), &Value::from("kubelet.config.k8s.io/v1beta1"), &k["apiVersion"]);
            f.eq(&format!("{l}: rotateCertificates"), &Value::from(true), &k["rotateCertificates"]);
            f.eq(&format!("{l}: clusterDNS"), &serde_json::json!([dns]), &k["clusterDNS"]);
            f.eq(&format!("{l}: clusterDomain"), &Value::from(domain), &k["clusterDomain"]);
            f.eq(&format!("{l}: clientCAFile"), &Value::from(b.abs(node, "ca.crt")), &k["authentication"]["x509"]["clientCAFile"]);
            f.eq(&format!("{l}: anonymous auth"), &Value::from(false), &k["authentication"]["anonymous"]["enabled"]);
            if serving {
                f.eq(&format!("{l}: serverTLSBootstrap"), &Value::from(false), &k["serverTLSBootstrap"]);
                f.eq(&format!("{l}: tlsCertFile"), &Value::from(b.abs(node, "kubelet-serving.crt")), &k["tlsCertFile"]);
                f.eq(&format!("{l}: tlsPrivateKeyFile"), &Value::from(b.abs(node, "kubelet-serving.key")), &k["tlsPrivateKeyFile"]);
            } else {
                f.eq(&format!("{l}: serverTLSBootstrap"), &Value::from(true), &k["serverTLSBootstrap"]);
                f.eq(&format!("{l}: tlsCertFile"), &Value::Null, &k["tlsCertFile"]);
                f.eq(&format!("{l}: tlsPrivateKeyFile"), &Value::Null, &k["tlsPrivateKeyFile"]);
            }
        }
        // The files named are in the tree: the cluster CA and this node's serving certificate.
        let ca = std::fs::read(b.node(node).join(b.abs(node, "ca.crt").trim_start_matches('/'))).expect("ca.crt in the tree");
        let state_ca = std::fs::read(b.cluster.join("state/pki/ca.crt")).expect("state ca.crt");
        f.check(ca == state_ca, || format!("{l}: clientCAFile is not the cluster CA"));
        if serving {
            let crt = b.node(node).join(b.abs(node, "kubelet-serving.crt").trim_start_matches('/'));
            match std::fs::read(&crt).map_err(|e| e.to_string()).and_then(|p| parse_cert_pem(&p)) {
                Ok(c) => {
                    f.eq(&format!("{l}: serving cert CN"), &vec![format!("system:node:{node}")], &c.cns);
                    f.check(c.eku.is_some_and(|e| e.0), || format!("{l}: serving cert without serverAuth"));
                    f.check(c.san_ips.contains(&address.parse().unwrap()), || {
                        format!("{l}: serving cert SANs {:?} miss {address}", c.san_ips)
                    });
                }
                Err(e) => f.fail(format!("{l}: {}: {e}", crt.display())),
            }
        } else {
            let serving_files: Vec<String> =
                b.files(node).into_iter().filter(|(_, a)| a.starts_with("kubelet-serving")).map(|(p, _)| p).collect();
            f.check(serving_files.is_empty(), || format!("{l}: serving files planned without the profile lines: {serving_files:?}"));
        }
    }
}

#[test]
fn kubelet_configuration_per_node() {
    let mut f = Failures::new();
    for profile in PROFILES {
        let b = generate(&format!("kubelet-{profile}"), &example(profile, &[]), &[]);
        check_kubelet_configs(&mut f, profile, &b, "10.96.0.10", "cluster.local", true);
    }
    // Other service subnets and DNS domains: clusterDNS is the subnet's 10th address.
    // An IPv6 first service subnet goes with IPv6 nodes: kube-apiserver refuses an advertise
    // address of the other family.
    for (profile, service, pod, domain) in [
        ("kubeadm", "10.100.0.0/16", "10.244.0.0/16", "corp.example"),
        ("hardway", "172.20.64.0/18", "10.244.0.0/16", "cluster.local"),
        ("binary", "fd00:10:96::/112", "fd00:10:244::/56", "k8s.internal"),
        ("kubeadm", "10.112.0.0/12,fd00:10:96::/112", "10.244.0.0/16,fd00:10:244::/56", "cluster.local"),
        ("hardway", "fd00:10:96::/112,10.112.0.0/12", "fd00:10:244::/56,10.244.0.0/16", "cluster.local"),
    ] {
        let dns = nth_address(service.split(',').next().unwrap(), 10);
        let v6 = service.starts_with("fd00");
        let service_line = format!("serviceSubnet: {service}");
        let pod_line = format!("podSubnet: {pod}");
        let domain_line = format!("dnsDomain: {domain}");
        let address_lines: Vec<(String, String)> =
            NODES.iter().map(|(_, a, _)| (format!("address: {a}"), format!("address: {}", address_in(a, v6)))).collect();
        let mut edits: Vec<(&str, &str)> = vec![
            ("serviceSubnet: 10.96.0.0/12", &service_line),
            ("podSubnet: 10.244.0.0/16", &pod_line),
            ("dnsDomain: cluster.local", &domain_line),
        ];
        if v6 {
            edits.extend(address_lines.iter().map(|(a, b)| (a.as_str(), b.as_str())));
        }
        let config = example(profile, &edits);
        let b = generate(&format!("kubelet-{profile}-subnet"), &config, &[]);
        check_kubelet_configs_at(&mut f, &format!("{profile} {service} {domain}"), &b, &dns, domain, true, v6);
        let v = b.verify(&b.cluster);
        f.check(v.run.ok(), || format!("{profile} {service}: verify: {}", v.show_errors()));
    }
    f.finish("kubelet_configuration_per_node");
}

/// A user profile file without the kubelet serving certificate: the kubelet asks for one
/// (serverTLSBootstrap) and no tlsCertFile is written.
#[test]
fn kubelet_configuration_without_serving_cert_profile() {
    let tmp = temp_dir("noserving");
    let builtin =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/kubeadm.yaml")).expect("profiles/kubeadm.yaml");
    let lines: Vec<&str> = builtin.lines().collect();
    let kept: Vec<&str> = lines.iter().copied().filter(|l| !l.contains("kubelet-serving.")).collect();
    assert_eq!(lines.len() - kept.len(), 2, "profiles/kubeadm.yaml should have the two kubelet-serving lines");
    let text = kept.join("\n").replacen("name: kubeadm", "name: kubeadm-no-serving", 1) + "\n";
    let profile = tmp.path().join("no-serving.yaml");
    std::fs::write(&profile, text).unwrap();

    let b = generate("noserving", &example("kubeadm", &[]), &["--profile", profile.to_str().unwrap()]);
    let mut f = Failures::new();
    f.eq("plan.json profile", &Value::from("kubeadm-no-serving"), &b.plan["profile"]);
    check_kubelet_configs(&mut f, "no-serving", &b, "10.96.0.10", "cluster.local", false);
    for (node, _, _) in NODES {
        f.check(!b.node(node).join("var/lib/kubelet/pki/kubelet.crt").exists(), || format!("{node}: kubelet.crt shipped anyway"));
    }
    let v = b.verify(&b.cluster);
    f.check(v.run.ok(), || format!("verify: {}", v.show_errors()));
    f.finish("kubelet_configuration_without_serving_cert_profile");
}

// =============================================================================================
// 3b. kube-proxy on hardway and binary nodes

/// Every node of a hardway or binary bundle runs kube-proxy from a unit: `--config` names its
/// KubeProxyConfiguration (clusterCIDR = podSubnet, iptables, its kubeconfig), the kubeconfig
/// authenticates as system:kube-proxy with no O (the built-in system:node-proxier binding), one
/// key per node; kubeadm nodes have none of it (kubeadm runs kube-proxy as a DaemonSet).
fn check_kube_proxy(f: &mut Failures, label: &str, b: &Bundle, pod_subnet: &str) {
    let profile = b.plan["profile"].as_str().unwrap_or_default().to_string();
    let mut keys = std::collections::BTreeSet::new();
    for (node, _, _) in NODES {
        let l = format!("{label}: {node}");
        let planned: Vec<(String, String)> = b.files(node).into_iter().filter(|(_, a)| a.starts_with("kube-proxy")).collect();
        if profile == "kubeadm" {
            f.eq(&format!("{l}: kube-proxy files"), &Vec::<(String, String)>::new(), &planned);
            continue;
        }
        let (kubeconfig, config, unit) = match profile.as_str() {
            "hardway" => ("/etc/k8s/kube-proxy/kubeconfig", "/etc/k8s/kube-proxy/config.yaml", "/etc/systemd/system/kube-proxy.service"),
            _ => (
                "/etc/kubernetes/kube-proxy.kubeconfig",
                "/etc/kubernetes/kube-proxy-config.yaml",
                "/etc/systemd/system/kube-proxy.service",
            ),
        };
        for (artifact, path, mode) in
            [("kube-proxy.conf", kubeconfig, 0o600), ("kube-proxy-config", config, 0o644), ("kube-proxy.service", unit, 0o644)]
        {
            f.eq(&format!("{l}: {artifact} path"), &Some(path.trim_start_matches('/').to_string()), &b.path_of(node, artifact));
            f.eq(&format!("{l}: mode of {path}"), &Some(mode), &mode_of(&b.node(node).join(path.trim_start_matches('/'))));
        }
        // The unit: kube-proxy with its configuration, under the node's name.
        let argv = exec_start(&b.read(node, unit.trim_start_matches('/')));
        f.eq(&format!("{l}: unit binary"), "/usr/local/bin/kube-proxy", argv[0].as_str());
        f.eq(
            &format!("{l}: unit flags"),
            &vec![("config".to_string(), config.to_string()), ("hostname-override".to_string(), node.to_string())],
            &flags(&argv),
        );
        // The KubeProxyConfiguration.
        let doc = yaml_doc(&b.read(node, config.trim_start_matches('/')));
        f.eq(&format!("{l}: kind"), &Value::from("KubeProxyConfiguration"), &doc["kind"]);
        f.eq(&format!("{l}: apiVersion"), &Value::from("kubeproxy.config.k8s.io/v1alpha1"), &doc["apiVersion"]);
        f.eq(&format!("{l}: clientConnection.kubeconfig"), &Value::from(kubeconfig), &doc["clientConnection"]["kubeconfig"]);
        f.eq(&format!("{l}: clusterCIDR"), &Value::from(pod_subnet), &doc["clusterCIDR"]);
        f.eq(&format!("{l}: mode"), &Value::from("iptables"), &doc["mode"]);
        // The kubeconfig and its client certificate (embedded on hardway, files on binary).
        let kc = yaml_doc(&b.read(node, kubeconfig.trim_start_matches('/')));
        f.eq(&format!("{l}: server"), &Value::from(format!("https://{ENDPOINT}")), &kc["clusters"][0]["cluster"]["server"]);
        f.eq(&format!("{l}: user"), &Value::from("system:kube-proxy"), &kc["users"][0]["name"]);
        let user = &kc["users"][0]["user"];
        let pem = match user["client-certificate-data"].as_str() {
            Some(data) => B64.decode(data).unwrap_or_default(),
            None => {
                let crt = user["client-certificate"].as_str().unwrap_or_default();
                f.eq(&format!("{l}: client-certificate"), "/etc/kubernetes/pki/kube-proxy.crt", crt);
                f.eq(&format!("{l}: client-key"), &Value::from("/etc/kubernetes/pki/kube-proxy.key"), &user["client-key"]);
                keys.insert(std::fs::read(b.node(node).join("etc/kubernetes/pki/kube-proxy.key")).unwrap_or_default());
                std::fs::read(b.node(node).join(crt.trim_start_matches('/'))).unwrap_or_default()
            }
        };
        if let Some(k) = user["client-key-data"].as_str() {
            keys.insert(B64.decode(k).unwrap_or_default());
        }
        match parse_cert_pem(&pem) {
            Ok(c) => {
                f.eq(&format!("{l}: CN"), &vec!["system:kube-proxy".to_string()], &c.cns);
                f.eq(&format!("{l}: O"), &Vec::<String>::new(), &c.os);
                f.eq(&format!("{l}: EKU (serverAuth, clientAuth, other)"), &Some((false, true, false)), &c.eku);
            }
            Err(e) => f.fail(format!("{l}: kube-proxy's client certificate: {e}")),
        }
    }
    if profile != "kubeadm" {
        f.eq(&format!("{label}: distinct kube-proxy keys"), &NODES.len(), &keys.len());
    }
}

#[test]
fn kube_proxy_on_hardway_and_binary_nodes() {
    let mut f = Failures::new();
    for profile in PROFILES {
        let b = generate(&format!("proxy-{profile}"), &example(profile, &[]), &[]);
        check_kube_proxy(&mut f, profile, &b, "10.244.0.0/16");
    }
    // Dual-stack: clusterCIDR lists both pod subnets, as kube-proxy reads them.
    let pod = "10.244.0.0/16,fd00:10:244::/56";
    let config = example(
        "hardway",
        &[
            ("serviceSubnet: 10.96.0.0/12", "serviceSubnet: 10.96.0.0/12,fd00:10:96::/112"),
            ("podSubnet: 10.244.0.0/16", &format!("podSubnet: {pod}")),
        ],
    );
    let b = generate("proxy-dual", &config, &[]);
    check_kube_proxy(&mut f, "hardway dual-stack", &b, pod);
    let v = b.verify(&b.cluster);
    f.check(v.run.ok(), || format!("dual-stack: verify: {}", v.show_errors()));
    f.finish("kube_proxy_on_hardway_and_binary_nodes");
}

// =============================================================================================
// 4. kubeadm JoinConfiguration / InitConfiguration

/// (token, hash) of join.txt's worker command.
fn join_txt(b: &Bundle) -> (String, String) {
    let text = std::fs::read_to_string(b.cluster.join("join.txt")).expect("join.txt");
    let line = text.lines().find(|l| l.starts_with("kubeadm join ") && l.contains("--token")).expect("a kubeadm join line");
    let words: Vec<&str> = line.split_whitespace().collect();
    let after = |flag: &str| words.iter().position(|w| *w == flag).map(|i| words[i + 1].to_string()).expect(flag);
    (after("--token"), after("--discovery-token-ca-cert-hash"))
}

fn check_join_files(f: &mut Failures, b: &Bundle, discovery: &str) {
    let (token, hash) = join_txt(b);
    f.check(is_token(&token), || format!("join.txt token {token:?}"));
    let state_ca = b.cluster.join("state/pki/ca.crt");
    match discovery_hash(&state_ca) {
        Ok(h) => {
            f.eq("join.txt hash = openssl's hash of the CA", &h, &hash);
        }
        Err(e) => f.fail(e),
    }
    let ca_bytes = std::fs::read(&state_ca).unwrap();
    for (node, address, cp) in NODES {
        let root = b.node(node);
        let l = format!("{discovery}: {node}");
        let join = root.join("etc/kubernetes/kubeadm-join.yaml");
        let init = root.join("etc/kubernetes/kubeadm-init.yaml");
        let discovery_conf = root.join("etc/kubernetes/discovery.conf");
        if node == "cp1" {
            f.check(!join.exists(), || format!("{l}: the first control plane has kubeadm-join.yaml"));
            f.check(init.is_file(), || format!("{l}: no kubeadm-init.yaml"));
            f.check(!discovery_conf.exists(), || format!("{l}: the first control plane has discovery.conf"));
            continue;
        }
        f.check(!init.exists(), || format!("{l}: kubeadm-init.yaml on a joining node"));
        f.eq(&format!("{l}: mode of kubeadm-join.yaml"), &Some(0o600), &mode_of(&join));
        let Some(text) = read_string(&join) else {
            f.fail(format!("{l}: no kubeadm-join.yaml"));
            continue;
        };
        let j = yaml_doc(&text);
        f.eq(&format!("{l}: kind"), &Value::from("JoinConfiguration"), &j["kind"]);
        f.eq(&format!("{l}: apiVersion"), &Value::from("kubeadm.k8s.io/v1beta4"), &j["apiVersion"]);
        f.eq(&format!("{l}: nodeRegistration.name"), &Value::from(node), &j["nodeRegistration"]["name"]);
        f.eq(&format!("{l}: caCertPath"), &Value::from(b.abs(node, "ca.crt")), &j["caCertPath"]);
        f.eq(&format!("{l}: tlsBootstrapToken"), &Value::from(token.as_str()), &j["discovery"]["tlsBootstrapToken"]);
        if cp {
            f.eq(&format!("{l}: advertiseAddress"), &Value::from(address), &j["controlPlane"]["localAPIEndpoint"]["advertiseAddress"]);
            f.eq(&format!("{l}: bindPort"), &Value::from(6443), &j["controlPlane"]["localAPIEndpoint"]["bindPort"]);
        } else {
            f.eq(&format!("{l}: controlPlane"), &Value::Null, &j["controlPlane"]);
        }
        if discovery == "token" {
            let bt = &j["discovery"]["bootstrapToken"];
            f.eq(&format!("{l}: apiServerEndpoint"), &Value::from(ENDPOINT), &bt["apiServerEndpoint"]);
            f.eq(&format!("{l}: token"), &Value::from(token.as_str()), &bt["token"]);
            f.eq(&format!("{l}: caCertHashes"), &serde_json::json!([hash]), &bt["caCertHashes"]);
            f.eq(&format!("{l}: discovery.file"), &Value::Null, &j["discovery"]["file"]);
            f.check(!discovery_conf.exists(), || format!("{l}: discovery.conf shipped with token discovery"));
        } else {
            f.eq(
                &format!("{l}: discovery.file.kubeConfigPath"),
                &Value::from("/etc/kubernetes/discovery.conf"),
                &j["discovery"]["file"]["kubeConfigPath"],
            );
            f.eq(&format!("{l}: discovery.bootstrapToken"), &Value::Null, &j["discovery"]["bootstrapToken"]);
            let Some(conf) = read_string(&discovery_conf) else {
                f.fail(format!("{l}: no etc/kubernetes/discovery.conf"));
                continue;
            };
            let k = yaml_doc(&conf);
            f.eq(&format!("{l}: discovery.conf kind"), &Value::from("Config"), &k["kind"]);
            let cluster = &k["clusters"][0]["cluster"];
            f.eq(&format!("{l}: discovery.conf server"), &Value::from(format!("https://{ENDPOINT}")), &cluster["server"]);
            let node_ca = std::fs::read(root.join(b.abs(node, "ca.crt").trim_start_matches('/'))).unwrap();
            match cluster["certificate-authority-data"].as_str().map(|d| B64.decode(d)) {
                Some(Ok(bytes)) => {
                    f.check(bytes == node_ca, || format!("{l}: discovery.conf's CA is not the node's ca.crt"));
                    f.check(bytes == ca_bytes, || format!("{l}: discovery.conf's CA is not state/pki/ca.crt"));
                }
                other => f.fail(format!("{l}: discovery.conf certificate-authority-data: {other:?}")),
            }
            let users = k["users"].as_array().map(Vec::len).unwrap_or(0);
            f.eq(&format!("{l}: discovery.conf carries no credentials (users)"), &0, &users);
        }
    }

    // kubeadm-init.yaml on the first control plane.
    let Some(text) = read_string(&b.node("cp1").join("etc/kubernetes/kubeadm-init.yaml")) else { return };
    let docs = yaml_docs(&text);
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    f.eq("kubeadm-init.yaml documents", &vec!["InitConfiguration", "ClusterConfiguration", "KubeletConfiguration"], &kinds);
    let init = doc_of_kind(&docs, "InitConfiguration");
    f.eq("InitConfiguration apiVersion", &Value::from("kubeadm.k8s.io/v1beta4"), &init["apiVersion"]);
    f.eq("InitConfiguration advertiseAddress", &Value::from("10.0.0.11"), &init["localAPIEndpoint"]["advertiseAddress"]);
    f.eq("InitConfiguration bindPort", &Value::from(6443), &init["localAPIEndpoint"]["bindPort"]);
    f.eq("InitConfiguration nodeRegistration.name", &Value::from("cp1"), &init["nodeRegistration"]["name"]);
    f.eq("InitConfiguration patches", &Value::from("/etc/kubernetes/patches"), &init["patches"]["directory"]);
    let cc = doc_of_kind(&docs, "ClusterConfiguration");
    f.eq("ClusterConfiguration clusterName", &Value::from("kubernetes"), &cc["clusterName"]);
    f.eq("ClusterConfiguration kubernetesVersion", &Value::from("v1.34.1"), &cc["kubernetesVersion"]);
    f.eq("ClusterConfiguration controlPlaneEndpoint", &Value::from(ENDPOINT), &cc["controlPlaneEndpoint"]);
    f.eq("ClusterConfiguration certificatesDir", &Value::from("/etc/kubernetes/pki"), &cc["certificatesDir"]);
    f.eq("ClusterConfiguration serviceSubnet", &Value::from("10.96.0.0/12"), &cc["networking"]["serviceSubnet"]);
    f.eq("ClusterConfiguration encryptionAlgorithm", &Value::from("ECDSA-P256"), &cc["encryptionAlgorithm"]);
    let cm = yaml_doc(&std::fs::read_to_string(b.cluster.join("manifests/kubeadm-config.yaml")).expect("manifests/kubeadm-config.yaml"));
    let uploaded = yaml_doc(cm["data"]["ClusterConfiguration"].as_str().expect("data.ClusterConfiguration"));
    f.check(*cc == uploaded, || {
        format!("kubeadm-init.yaml's ClusterConfiguration differs from the kubeadm-config ConfigMap's:\n{cc}\n{uploaded}")
    });
    let kc = doc_of_kind(&docs, "KubeletConfiguration");
    let on_disk = yaml_doc(&b.read("cp1", "var/lib/kubelet/config.yaml"));
    f.check(*kc == on_disk, || {
        format!("kubeadm-init.yaml's KubeletConfiguration differs from var/lib/kubelet/config.yaml:\n{kc}\n{on_disk}")
    });
}

#[test]
fn kubeadm_join_configuration_token_discovery() {
    let b = generate("join-token", &example("kubeadm", &[]), &[]);
    let mut f = Failures::new();
    f.eq("plan.json discovery", &Value::from("token"), &b.plan["discovery"]);
    check_join_files(&mut f, &b, "token");
    f.finish("kubeadm_join_configuration_token_discovery");
}

#[test]
fn kubeadm_join_configuration_file_discovery() {
    let b = generate("join-file", &example("kubeadm", &[("discovery: token", "discovery: file")]), &[]);
    let mut f = Failures::new();
    f.eq("plan.json discovery", &Value::from("file"), &b.plan["discovery"]);
    check_join_files(&mut f, &b, "file");
    let v = b.verify(&b.cluster);
    f.check(v.run.ok(), || format!("verify: {}", v.show_errors()));
    for node in ["cp2", "worker1"] {
        let file = format!("nodes/{node}/etc/kubernetes/kubeadm-join.yaml");
        let msg = "JoinConfiguration discovery.file.kubeConfigPath /etc/kubernetes/discovery.conf: a kubeconfig";
        f.check(v.has_ref("OK", &file, msg), || v.show_refs(&file));
    }
    // Without the discovery file the reference fails.
    let copy = b.copy("join-file-broken");
    std::fs::remove_file(copy.join("nodes/worker1/etc/kubernetes/discovery.conf")).unwrap();
    let v = b.verify(&copy);
    let file = "nodes/worker1/etc/kubernetes/kubeadm-join.yaml";
    let msg = "JoinConfiguration discovery.file.kubeConfigPath /etc/kubernetes/discovery.conf is not in the tree: a kubeconfig is missing";
    f.check(!v.run.ok() && v.has_ref("ERROR", file, msg), || v.show_refs(file));
    f.finish("kubeadm_join_configuration_file_discovery");
}

// =============================================================================================
// 5. The kubeadm kube-apiserver patch

#[test]
fn kubeadm_apiserver_patch_mounts_the_encryption_config() {
    let mut f = Failures::new();
    let b = generate("patch", &example("kubeadm", &[]), &[]);
    check_patch(
        &mut f,
        "kubeadm",
        &b,
        "/etc/kubernetes/patches/kube-apiserver+json.yaml",
        "/etc/kubernetes/encryption/encryption-config.yaml",
    );
    // A profile file putting both elsewhere: the patch, its mount and kubeadm's patches
    // directory follow.
    let tmp = temp_dir("patch-profile");
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/kubeadm.yaml")).unwrap();
    let mut moved = text.clone();
    for (from, to) in [
        ("path: etc/kubernetes/patches/kube-apiserver+json.yaml", "path: etc/kubeadm/patches/kube-apiserver+json.yaml"),
        ("path: etc/kubernetes/encryption/encryption-config.yaml", "path: etc/kubernetes/secrets-at-rest/enc.yaml"),
    ] {
        assert_eq!(moved.matches(from).count(), 1, "profiles/kubeadm.yaml should hold {from:?} once");
        moved = moved.replacen(from, to, 1);
    }
    let profile = tmp.path().join("moved.yaml");
    std::fs::write(&profile, moved).unwrap();
    let b = generate("patch-moved", &example("kubeadm", &[]), &["--profile", profile.to_str().unwrap()]);
    check_patch(&mut f, "moved", &b, "/etc/kubeadm/patches/kube-apiserver+json.yaml", "/etc/kubernetes/secrets-at-rest/enc.yaml");
    let v = b.verify(&b.cluster);
    f.check(v.run.ok(), || format!("moved: verify: {}", v.show_errors()));
    f.finish("kubeadm_apiserver_patch_mounts_the_encryption_config");
}

/// The kube-apiserver patch of every control plane (none on workers) at `patch_path`, adding
/// `--encryption-provider-config=<enc_path>` and mounting its directory; kubeadm's init and join
/// configs name the patch's directory.
fn check_patch(f: &mut Failures, label: &str, b: &Bundle, patch_path: &str, enc_path: &str) {
    for (node, _, cp) in NODES {
        let l = format!("{label}: {node}");
        let planned = b.path_of(node, "kube-apiserver-patch").map(|p| format!("/{p}"));
        if !cp {
            f.eq(&format!("{l}: kube-apiserver patch on a worker"), &None, &planned);
            continue;
        }
        f.eq(&format!("{l}: patch path"), &Some(patch_path.to_string()), &planned);
        let rel = patch_path.trim_start_matches('/');
        let p = b.node(node).join(rel);
        let enc = b.abs(node, "encryption-config");
        f.eq(&format!("{l}: encryption config path"), &enc_path, &enc.as_str());
        f.check(b.node(node).join(enc.trim_start_matches('/')).is_file(), || format!("{l}: {enc} is not in the tree"));
        let dir = enc.rsplit_once('/').map(|(d, _)| d.to_string()).unwrap();
        let Some(text) = read_string(&p) else {
            f.fail(format!("{l}: no {rel}"));
            continue;
        };
        let patch = yaml_doc(&text);
        let Some(ops) = patch.as_array() else {
            f.fail(format!("{l}: the patch is not a list: {patch}"));
            continue;
        };
        for op in ops {
            f.eq(&format!("{l}: op"), &Value::from("add"), &op["op"]);
        }
        let at = |path: &str| -> Vec<&Value> { ops.iter().filter(|o| o["path"] == path).map(|o| &o["value"]).collect() };
        f.eq(
            &format!("{l}: command ops"),
            &vec![&Value::from(format!("--encryption-provider-config={enc}"))],
            &at("/spec/containers/0/command/-"),
        );
        let volumes = at("/spec/volumes/-");
        let mounts = at("/spec/containers/0/volumeMounts/-");
        f.eq(&format!("{l}: volume ops"), &1, &volumes.len());
        f.eq(&format!("{l}: volumeMount ops"), &1, &mounts.len());
        if let (Some(vol), Some(mnt)) = (volumes.first(), mounts.first()) {
            f.eq(&format!("{l}: hostPath"), &Value::from(dir.as_str()), &vol["hostPath"]["path"]);
            f.eq(&format!("{l}: mountPath"), &Value::from(dir.as_str()), &mnt["mountPath"]);
            f.check(vol["name"].is_string() && vol["name"] == mnt["name"], || {
                format!("{l}: volume {} and mount {} names differ", vol["name"], mnt["name"])
            });
            f.eq(&format!("{l}: readOnly"), &Value::from(true), &mnt["readOnly"]);
        }
        f.eq(&format!("{l}: ops"), &3, &ops.len());
    }
    // The init and join configs point kubeadm at the patch's directory.
    let dir = Value::from(patch_path.rsplit_once('/').unwrap().0);
    let init = yaml_docs(&b.read("cp1", "etc/kubernetes/kubeadm-init.yaml"));
    f.eq(&format!("{label}: init patches"), &dir, &doc_of_kind(&init, "InitConfiguration")["patches"]["directory"]);
    for node in ["cp2", "cp3"] {
        let join = yaml_doc(&b.read(node, "etc/kubernetes/kubeadm-join.yaml"));
        f.eq(&format!("{label}: {node} join patches"), &dir, &join["patches"]["directory"]);
    }
}
