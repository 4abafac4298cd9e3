//! `kubebundle verify`: an audit of a bundle, a node tarball or a node root.
//!
//! The input is read once into memory (`Tree`: relative path → bytes and mode; a tarball is
//! never extracted), each node is described by plan.json when one is found and inferred from
//! its own certificates otherwise, and every check adds findings (errors, warnings and the
//! checks that passed) to a `Report`. Malformed input is a finding, never a panic.

mod manifests;
mod rules;
mod tokens;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;
use time::OffsetDateTime;

use super::facts::*;
use super::references;
use crate::pki::catalog::{self, CertEntry, CommonName, Credential, SanRule, Signer};
use crate::pki::token;
use crate::tree::layout::{builtin_profiles, Layout};
use crate::tree::node::NodeTree;
use crate::tree::profile::{self, Artifact, Profile};

/// How long before expiry a certificate is reported as a warning by default.
pub const DEFAULT_WARN_WITHIN: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// The certificatesDir used when there is no plan.
const DEFAULT_PKI: &str = "etc/kubernetes/pki";

pub struct VerifyArgs {
    pub path: PathBuf,
    pub now: OffsetDateTime,
    pub warn_within: std::time::Duration,
    /// Accept tarballs kubebundle did not pack (no digest in their gzip header); every file of
    /// such a tarball that is not in the plan is then an error.
    pub foreign: bool,
}

impl VerifyArgs {
    pub fn new(path: impl Into<PathBuf>, now: OffsetDateTime) -> VerifyArgs {
        VerifyArgs { path: path.into(), now, warn_within: DEFAULT_WARN_WITHIN, foreign: false }
    }
}

const WHAT_TO_PASS: &str = "pass a bundle directory (out/<clusterName>, holding plan.json and nodes/), a node tarball \
(nodes/<node>.tar.gz) or a node root (a directory holding etc/kubernetes, such as nodes/<node>)";

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read {path}: {source}\n  hint: {WHAT_TO_PASS}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} is not a bundle, a node tarball or a node root\n  hint: {WHAT_TO_PASS}")]
    NotABundle { path: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
    Ok,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Warning => "WARNING",
            Severity::Ok => "OK",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// The node's name, or `-` for findings about the bundle as a whole.
    pub node: String,
    /// The file, relative to what was passed (`nodes/cp1.tar.gz:etc/...` for a tarball entry).
    pub path: String,
    /// One of the `CHECK_*` names.
    pub check: &'static str,
    pub message: String,
}

pub const CHECK_ARCHIVE: &str = "archive";
pub const CHECK_FORMAT: &str = "format";
pub const CHECK_PLAN: &str = "plan";
pub const CHECK_CHAIN: &str = "chain";
pub const CHECK_KEY: &str = "key";
pub const CHECK_SANS: &str = "sans";
pub const CHECK_EKU: &str = "eku";
pub const CHECK_SUBJECT: &str = "subject";
pub const CHECK_EXPIRY: &str = "expiry";
pub const CHECK_MODE: &str = "mode";
pub const CHECK_PRIVILEGE: &str = "least-privilege";
pub const CHECK_KUBECONFIG: &str = "kubeconfig";
pub const CHECK_HASH: &str = "discovery-hash";
pub const CHECK_ENCRYPTION: &str = "encryption";
pub const CHECK_REFERENCES: &str = "references";
/// The control-plane and etcd roles a node's own certificates prove (and plan.json gives).
pub const CHECK_ROLES: &str = "roles";
/// KubeletConfiguration: anonymous authentication off, Webhook authorization, no read-only port.
pub const CHECK_KUBELET: &str = "kubelet-config";
/// manifests/cluster-info.yaml: the state's CA, the endpoint, a JWS per token that verifies.
pub const CHECK_CLUSTER_INFO: &str = "cluster-info";
/// Bootstrap-token Secrets: well-formed, the state's, unexpired.
pub const CHECK_TOKEN_SECRET: &str = "bootstrap-token";
/// The token join.txt and the nodes' join files carry: known, unexpired, authenticating.
pub const CHECK_JOIN_TOKEN: &str = "join-token";

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }

    pub fn count(&self, severity: Severity) -> usize {
        self.findings.iter().filter(|f| f.severity == severity).count()
    }

    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.severity == Severity::Error)
    }

    /// Columns SEVERITY NODE FILE CHECK MESSAGE, aligned, then a summary line. Every cell is
    /// escaped (`escape`): a file name or message read from the input cannot move the cursor,
    /// recolour the terminal or start a line of its own.
    pub fn render_table(&self) -> String {
        let head = ["SEVERITY", "NODE", "FILE", "CHECK"];
        let rows: Vec<([String; 4], String)> = self
            .findings
            .iter()
            .map(|f| ([f.severity.label(), f.node.as_str(), f.path.as_str(), f.check].map(escape), escape(&f.message)))
            .collect();
        let mut widths = head.map(str::len);
        for (cells, _) in &rows {
            for (w, cell) in widths.iter_mut().zip(cells) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: [&str; 4], message: &str| {
            let mut s = String::new();
            for (cell, w) in cells.iter().zip(widths) {
                s += cell;
                s += &" ".repeat(w - cell.chars().count() + 2);
            }
            s += message;
            s.trim_end().to_string() + "\n"
        };
        let mut out = line(head, "MESSAGE");
        for (cells, message) in &rows {
            // One line per finding: escaping keeps a newline from breaking the columns.
            out += &line(cells.each_ref().map(String::as_str), message);
        }
        let plural = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        out += &format!(
            "{}, {}, {}\n",
            plural(self.count(Severity::Error), "error", "errors"),
            plural(self.count(Severity::Warning), "warning", "warnings"),
            plural(self.count(Severity::Ok), "check passed", "checks passed")
        );
        out
    }
}

/// `kind` of verify's JSON report (README "Machine-readable output").
pub const JSON_KIND: &str = "VerifyReport";

/// verify's JSON report: the errors and warnings (the checks that passed are only counted).
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportJson<'a> {
    /// What was verified, as given.
    pub path: String,
    /// The time expiry was checked for (RFC 3339, UTC).
    pub now: String,
    pub findings: Vec<FindingJson<'a>>,
    pub summary: Summary,
}

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FindingJson<'a> {
    /// `error` or `warning`.
    pub severity: &'static str,
    pub node: &'a str,
    pub file: &'a str,
    pub check: &'static str,
    pub message: &'a str,
}

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub errors: usize,
    pub warnings: usize,
    pub checks_passed: usize,
}

impl Report {
    /// The report as `-o json` prints it (`util::report::json` with `JSON_KIND`). Texts are as
    /// found (JSON escapes control characters itself).
    pub fn to_json(&self, path: &str, now: OffsetDateTime) -> ReportJson<'_> {
        ReportJson {
            path: path.to_string(),
            now: crate::clock::rfc3339(now),
            findings: self
                .findings
                .iter()
                .filter(|f| f.severity != Severity::Ok)
                .map(|f| FindingJson {
                    severity: if f.severity == Severity::Error { "error" } else { "warning" },
                    node: &f.node,
                    file: &f.path,
                    check: f.check,
                    message: &f.message,
                })
                .collect(),
            summary: Summary {
                errors: self.count(Severity::Error),
                warnings: self.count(Severity::Warning),
                checks_passed: self.count(Severity::Ok),
            },
        }
    }
}

// =============================================================================================
// Entry point

pub fn verify(args: &VerifyArgs) -> Result<Report, VerifyError> {
    let path = &args.path;
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| VerifyError::Read { path: shown.clone(), source })?;
    let mut v = Verifier {
        now: args.now,
        warn_within: args.warn_within,
        foreign: args.foreign,
        findings: Vec::new(),
        spki_cache: Default::default(),
    };
    if meta.is_file() {
        let name = file_name(path);
        let mut magic = [0u8; 2];
        let is_gzip = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && magic == [0x1f, 0x8b];
        if !(name.ends_with(".tar.gz") || name.ends_with(".tgz") || is_gzip) {
            return Err(VerifyError::NotABundle { path: shown });
        }
        let bytes = std::fs::read(path).map_err(|source| VerifyError::Read { path: shown.clone(), source })?;
        let stem = name.trim_end_matches(".tar.gz").trim_end_matches(".tgz").to_string();
        // <bundle>/nodes/<node>.tar.gz → <bundle>/plan.json
        let plan_path = path.parent().and_then(Path::parent).map(|b| b.join("plan.json"));
        let tarball = Tarball { mode: meta.permissions().mode() & 0o7777, packed: crate::tree::tarball::has_digest(&bytes) };
        let (loaded, layout) = load_tarball_as_node(path, &bytes);
        v.single_node(loaded, layout, &stem, &name, plan_path.as_deref(), Some(tarball));
    } else if meta.is_dir() {
        if path.join("plan.json").is_file() && path.join("nodes").is_dir() {
            v.bundle(path);
        } else if path.join("etc/kubernetes").is_dir() || path.join("etc").is_dir() && looks_like_root(path) {
            let stem = file_name(path);
            let plan_path = path.parent().and_then(Path::parent).map(|b| b.join("plan.json"));
            let (loaded, layout) = load_dir_as_node(path);
            v.single_node(loaded, layout, &stem, &stem, plan_path.as_deref(), None);
        } else {
            return Err(VerifyError::NotABundle { path: shown });
        }
    } else {
        return Err(VerifyError::NotABundle { path: shown });
    }
    let mut findings = v.findings;
    findings.sort_by(|a, b| (&a.node, &a.path, a.check, a.severity, &a.message).cmp(&(&b.node, &b.path, b.check, b.severity, &b.message)));
    findings.dedup();
    Ok(Report { findings })
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// A root whose certificatesDir is elsewhere still has some kubelet file, or the hardway
/// profile's /etc/k8s, or systemd units.
fn looks_like_root(p: &Path) -> bool {
    ["var/lib/kubelet", "etc/k8s", "etc/systemd/system"].iter().any(|d| p.join(d).is_dir())
}

// =============================================================================================
// Input: a node's files in memory

type TreeFile = crate::tree::FileEntry;

/// A node's files and what was refused while reading them.
type Loaded = crate::tree::tarball::Unpacked;

/// A node read through the node-tree model, with its layout: the plan's when given, else the
/// built-in profile it matches (the kubeadm layout when it matches none, so every file is still
/// judged by its content).
fn from_tree(tree: Result<NodeTree, crate::tree::node::TreeError>, fallback: impl FnOnce() -> Loaded) -> (Loaded, Option<Layout>) {
    match tree {
        Ok(t) => {
            let layout = t.layout.clone();
            let (files, problems) = t.into_files();
            (Loaded { files, problems }, Some(layout))
        }
        Err(_) => (fallback(), None),
    }
}

fn load_tarball(bytes: &[u8]) -> Loaded {
    crate::tree::tarball::unpack(bytes)
}

/// A tarball, its layout recognised.
fn load_tarball_as_node(path: &Path, bytes: &[u8]) -> (Loaded, Option<Layout>) {
    from_tree(NodeTree::from_tarball(path, bytes, None, &builtin_profiles()), || load_tarball(bytes))
}

/// Every file under a node root (links and devices are findings, never followed), its layout
/// recognised.
fn load_dir_as_node(root: &Path) -> (Loaded, Option<Layout>) {
    let tree = NodeTree::walk_dir(root, None, &builtin_profiles());
    from_tree(tree, || {
        let (files, problems) = NodeTree::walk_files(root);
        Loaded { files, problems }
    })
}

fn load_dir(root: &Path) -> Loaded {
    let (files, problems) = NodeTree::walk_files(root);
    Loaded { files, problems }
}

// =============================================================================================
// plan.json, read into our own small types

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PlanDoc {
    #[serde(default)]
    control_plane_endpoint: String,
    /// `local` or `external`.
    #[serde(default)]
    etcd: String,
    #[serde(default)]
    nodes: Vec<PlanNode>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PlanNode {
    name: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    files: Vec<PlanFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PlanFile {
    path: String,
    mode: String,
    artifact: String,
    #[serde(default)]
    server: Option<String>,
    #[serde(default)]
    certificate: Option<PlanCert>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PlanCert {
    #[serde(default)]
    common_name: String,
    #[serde(default)]
    sans: Vec<String>,
}

fn read_plan(path: &Path) -> Result<PlanDoc, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    serde_json::from_slice(&text).map_err(|e| format!("not a kubebundle plan: {e}"))
}

// =============================================================================================
// Certificates

// =============================================================================================
// Kubeconfigs

// =============================================================================================
// The encryption config

#[derive(Debug, Default, Deserialize)]
struct EncryptionDoc {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    resources: Vec<EncryptionResource>,
}

#[derive(Debug, Default, Deserialize)]
struct EncryptionResource {
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    providers: Vec<BTreeMap<String, EncryptionProvider>>,
}

#[derive(Debug, Default, Deserialize)]
struct EncryptionProvider {
    #[serde(default)]
    keys: Vec<EncryptionKey>,
}

#[derive(Debug, Default, Deserialize)]
struct EncryptionKey {
    #[serde(default)]
    name: String,
    #[serde(default)]
    secret: String,
}

/// An EncryptionConfiguration that encrypts secrets first, with keys of a valid size.
fn encryption_problems(bytes: &[u8]) -> Vec<String> {
    let doc: EncryptionDoc =
        match std::str::from_utf8(bytes).map_err(|e| e.to_string()).and_then(|t| serde_saphyr::from_str(t).map_err(|e| e.to_string())) {
            Ok(d) => d,
            Err(e) => return vec![format!("not an EncryptionConfiguration: {e}")],
        };
    let mut problems = Vec::new();
    if doc.kind != "EncryptionConfiguration" {
        problems.push(format!("kind is {:?}, want EncryptionConfiguration", doc.kind));
    }
    let secrets = doc.resources.iter().find(|r| r.resources.iter().any(|x| x == "secrets" || x == "*.*"));
    match secrets.and_then(|r| r.providers.first()).and_then(|p| p.iter().next()) {
        None => problems.push("no provider for secrets: they are stored unencrypted".into()),
        Some((name, _)) if name == "identity" => {
            problems.push("the first provider for secrets is identity: they are stored unencrypted".into())
        }
        Some(_) => {}
    }
    for r in &doc.resources {
        for (name, provider) in r.providers.iter().flatten() {
            let sizes: &[usize] = match name.as_str() {
                "aescbc" | "aesgcm" => &[16, 24, 32],
                "secretbox" => &[32],
                _ => continue,
            };
            if provider.keys.is_empty() {
                problems.push(format!("{name} has no keys"));
            }
            for k in &provider.keys {
                match B64.decode(k.secret.trim()) {
                    Ok(b) if sizes.contains(&b.len()) => {}
                    Ok(b) => problems.push(format!("{name} key {:?} is {} bytes; want {sizes:?}", k.name, b.len())),
                    Err(_) => problems.push(format!("{name} key {:?} is not base64", k.name)),
                }
            }
        }
    }
    problems
}

// =============================================================================================
// Nodes

/// What the checks know about a node: from plan.json, or inferred from its files.
struct NodeInfo {
    name: String,
    addresses: Vec<IpAddr>,
    roles: BTreeSet<String>,
    /// Kubeconfig server hosts (without a plan) or the controlPlaneEndpoint host (with one).
    endpoint_hosts: BTreeSet<String>,
    /// path → what belongs there.
    layout: BTreeMap<String, Expected>,
    /// The profile the layout comes from (for messages).
    profile: String,
    from_plan: bool,
    external_etcd: bool,
}

#[derive(Clone)]
struct Expected {
    artifact: Option<Artifact>,
    artifact_id: String,
    mode: u32,
    /// The plan's roles for this file are unknown; without a plan, the profile's.
    roles: Vec<String>,
    server: Option<String>,
    common_name: Option<String>,
    sans: Option<Vec<String>>,
}

impl NodeInfo {
    fn is_cp(&self) -> bool {
        self.roles.contains("control-plane")
    }

    fn path_of(&self, artifact_id: &str) -> Option<&str> {
        self.layout.iter().find(|(_, e)| e.artifact_id == artifact_id).map(|(p, _)| p.as_str())
    }
}

impl Expected {
    /// What a profile line says about a file: its artifact, mode and roles.
    fn new(artifact_id: &str, mode: &str, roles: Vec<String>) -> Expected {
        Expected {
            artifact: profile::artifact(artifact_id),
            artifact_id: artifact_id.to_string(),
            mode: profile::parse_mode(mode).unwrap_or(0o600),
            roles,
            server: None,
            common_name: None,
            sans: None,
        }
    }
}

fn from_plan(plan: &PlanDoc, node: &PlanNode) -> NodeInfo {
    let layout = node
        .files
        .iter()
        .map(|f| {
            let e = Expected {
                server: f.server.clone(),
                common_name: f.certificate.as_ref().map(|c| c.common_name.clone()),
                sans: f.certificate.as_ref().map(|c| c.sans.clone()),
                ..Expected::new(&f.artifact, &f.mode, Vec::new())
            };
            (f.path.clone(), e)
        })
        .collect();
    NodeInfo {
        name: node.name.clone(),
        addresses: node.address.parse().into_iter().collect(),
        roles: node.roles.iter().cloned().collect(),
        endpoint_hosts: [endpoint_host(&plan.control_plane_endpoint)].into_iter().filter(|h| !h.is_empty()).collect(),
        layout,
        profile: "plan.json".into(),
        from_plan: true,
        external_etcd: plan.etcd == "external",
    }
}

/// What a layout says about every path: each file's artifact, mode and roles (the kubeadm
/// profile's, with certificatesDir at /etc/kubernetes/pki, when none is known).
fn layout_expectations(layout: Option<&Layout>, node: &str) -> (String, BTreeMap<String, Expected>) {
    let fallback;
    let layout = match layout {
        Some(l) => l,
        None => match Profile::builtin("kubeadm") {
            Ok(p) => {
                fallback = Layout::of_profile(&p, DEFAULT_PKI, Some(node));
                &fallback
            }
            Err(_) => return ("kubeadm".into(), BTreeMap::new()),
        },
    };
    let entries = layout
        .entries
        .iter()
        .map(|e| {
            let exp = Expected {
                artifact: profile::artifact(&e.artifact),
                artifact_id: e.artifact.clone(),
                mode: e.mode,
                roles: e.roles.clone(),
                server: None,
                common_name: None,
                sans: None,
            };
            (e.path.clone(), exp)
        })
        .collect();
    (layout.profile.clone(), entries)
}

/// Each control plane's apiserver.crt in `<bundle>/nodes/<node>/` (the unpacked tree), else in
/// its tarball.
fn sibling_apiservers(bundle: &Path, plan: &PlanDoc) -> Vec<(String, CertInfo)> {
    let mut out = Vec::new();
    for n in plan.nodes.iter().filter(|n| n.roles.iter().any(|r| r == "control-plane")) {
        let Some(f) = n.files.iter().find(|f| f.artifact == "apiserver.crt") else { continue };
        let nodes = bundle.join("nodes");
        let bytes = std::fs::read(nodes.join(&n.name).join(&f.path)).ok().or_else(|| {
            let bytes = std::fs::read(nodes.join(format!("{}.tar.gz", n.name))).ok()?;
            crate::tree::tarball::unpack(&bytes).files.get(&f.path).map(|e| e.bytes.to_vec())
        });
        if let Some(c) = bytes.and_then(|b| CertInfo::from_pem(&b).ok()) {
            out.push((format!("{}'s apiserver.crt", n.name), c));
        }
    }
    out
}

fn infer(files: &BTreeMap<String, TreeFile>, fallback_name: &str, layout: Option<&Layout>) -> NodeInfo {
    let (profile_name, expected) = layout_expectations(layout, fallback_name);
    let path_of = |artifact: &str| expected.iter().find(|(_, e)| e.artifact_id == artifact).map(|(p, _)| p.clone());
    let cert_at = |artifact: &str| path_of(artifact).and_then(|p| files.get(&p)).and_then(|f| CertInfo::from_pem(&f.bytes).ok());
    let kube_at = |artifact: &str| path_of(artifact).and_then(|p| files.get(&p)).and_then(|f| parse_kubeconfig(&f.bytes).ok());
    let mut roles = BTreeSet::new();
    if path_of("apiserver.crt").is_some_and(|p| files.contains_key(&p)) {
        roles.insert("control-plane".to_string());
    }
    if path_of("etcd-server.crt").is_some_and(|p| files.contains_key(&p)) {
        roles.insert("etcd".to_string());
    }
    if roles.is_empty() {
        roles.insert("worker".to_string());
    }
    let serving = cert_at("kubelet-serving.crt");
    let kubelet_client =
        kube_at("kubelet.conf").and_then(|k| k.cert_pem).and_then(|p| CertInfo::from_pem(&p).ok()).or_else(|| cert_at("kubelet.conf.crt"));
    let etcd_server = cert_at("etcd-server.crt");
    let name = [&serving, &kubelet_client]
        .into_iter()
        .flatten()
        .find_map(|c| c.cn.strip_prefix("system:node:").map(str::to_string))
        .or_else(|| etcd_server.as_ref().map(|c| c.cn.clone()))
        // Other layouts: the kubelet serving certificate wherever it is.
        .or_else(|| {
            files
                .values()
                .filter(|f| f.bytes.starts_with(b"-----BEGIN CERTIFICATE-----"))
                .filter_map(|f| CertInfo::from_pem(&f.bytes).ok())
                .filter(|c| c.server_auth && !c.is_ca)
                .find_map(|c| c.cn.strip_prefix("system:node:").map(str::to_string))
        })
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| fallback_name.to_string());
    let addresses: Vec<IpAddr> = match (&serving, &etcd_server) {
        (Some(s), _) => s.ips.clone(),
        (None, Some(e)) => e.ips.iter().filter(|i| !i.is_loopback()).copied().collect(),
        _ => Vec::new(),
    };
    let endpoint_hosts = expected
        .iter()
        .filter(|(_, e)| matches!(e.artifact, Some(Artifact::Kubeconfig(_))))
        .filter_map(|(p, _)| files.get(p))
        .filter_map(|f| parse_kubeconfig(&f.bytes).ok())
        .filter_map(|k| url_host(&k.server).map(|(_, h)| h))
        .collect();
    // Without a recognised layout, the kubeadm one with the node's own name in `{node}` paths.
    let expected = if layout.is_none() { layout_expectations(None, &name).1 } else { expected };
    NodeInfo { layout: expected, profile: profile_name, name, addresses, roles, endpoint_hosts, from_plan: false, external_etcd: false }
}

// =============================================================================================
// The checks

/// A tarball as found on disk.
#[derive(Clone, Copy)]
struct Tarball {
    mode: u32,
    /// It carries kubebundle's digest header.
    packed: bool,
}

/// Facts from the whole bundle that a node's checks use.
#[derive(Default)]
struct BundleFacts {
    /// The state's service-account public key (DER SubjectPublicKeyInfo).
    state_sa: Option<Vec<u8>>,
    /// Every bootstrap token the bundle knows (state/tokens.yaml and the Secret manifests), by id;
    /// None outside a bundle.
    tokens: Option<BTreeMap<String, tokens::KnownToken>>,
    /// (label, certificate) of every node's ca.crt.
    node_cas: Vec<(String, CertInfo)>,
    /// (label, certificate) of every control plane's apiserver.crt.
    apiservers: Vec<(String, CertInfo)>,
    /// CA id → the state's certificate.
    state_cas: BTreeMap<&'static str, CertInfo>,
    /// CA id → its trust bundle in the state: the CA, then during a rotation the next
    /// (`pki/<ca>-next.crt`) or previous (`pki/<ca>-previous.crt`) CA: what every anchor holds.
    state_trust: BTreeMap<&'static str, Vec<CertInfo>>,
    /// CA id → the issuers above an imported CA (its issuer first, up to the root), from the
    /// state's chain file; absent for a self-signed CA.
    state_chains: BTreeMap<&'static str, Vec<CertInfo>>,
    /// The hashes join.txt gives.
    join_hashes: Option<BTreeSet<String>>,
}

struct Verifier {
    now: OffsetDateTime,
    warn_within: std::time::Duration,
    /// `--foreign`: tarballs without kubebundle's digest header are accepted, strictly.
    foreign: bool,
    findings: Vec<Finding>,
    /// SHA-256 of a private key's PEM → its public key, so each key is parsed once.
    spki_cache: std::collections::HashMap<Vec<u8>, Option<Vec<u8>>>,
}

/// Findings of one node tree: node name and the prefix of every path.
struct Scope<'a> {
    node: &'a str,
    prefix: &'a str,
}

/// A certificate found in a node: in a file or embedded in a kubeconfig.
struct FoundCert {
    /// The file (relative to the node root).
    path: String,
    entry: &'static CertEntry,
    cert: CertInfo,
    /// The private key's PEM and where it comes from.
    key: Option<(String, Vec<u8>)>,
    embedded: bool,
    expected_cn: Option<String>,
    expected_sans: Option<Vec<String>>,
}

impl Verifier {
    fn add(&mut self, s: &Scope, severity: Severity, rel: &str, check: &'static str, message: impl Into<String>) {
        let path = if rel.is_empty() { s.prefix.trim_end_matches(['/', ':']).to_string() } else { format!("{}{rel}", s.prefix) };
        self.findings.push(Finding { severity, node: s.node.to_string(), path, check, message: message.into() });
    }

    /// One tarball or node root. `plan_path` is where a bundle's plan.json would be.
    fn single_node(
        &mut self,
        mut loaded: Loaded,
        layout: Option<Layout>,
        stem: &str,
        label: &str,
        plan_path: Option<&Path>,
        tarball: Option<Tarball>,
    ) {
        for (p, _) in loaded.problems.iter_mut().filter(|(p, _)| p.is_empty()) {
            *p = label.to_string();
        }
        let plan = plan_path.filter(|p| p.is_file()).map(read_plan);
        let mut facts = BundleFacts::default();
        // In a bundle, its state and manifests say which CAs, service-account key and tokens are
        // the cluster's.
        if let Some(bundle) = plan_path.filter(|p| p.is_file()).and_then(Path::parent).filter(|b| b.join("state").is_dir()) {
            manifests::quiet_facts(bundle, &mut facts);
        }
        let info = match &plan {
            Some(Ok(doc)) => match doc.nodes.iter().find(|n| n.name == stem) {
                Some(n) => {
                    // The other control planes of the bundle vouch for this node's server URLs.
                    if let Some(bundle) = plan_path.and_then(Path::parent) {
                        facts.apiservers = sibling_apiservers(bundle, doc);
                    }
                    from_plan(doc, n)
                }
                None => {
                    let info = infer(&loaded.files, stem, layout.as_ref());
                    let s = Scope { node: &info.name, prefix: "" };
                    let msg = format!("plan.json beside the bundle has no node {stem:?}: node inferred from its certificates");
                    self.add(&s, Severity::Warning, "", CHECK_PLAN, msg);
                    info
                }
            },
            Some(Err(e)) => {
                let info = infer(&loaded.files, stem, layout.as_ref());
                let s = Scope { node: &info.name, prefix: "" };
                self.add(&s, Severity::Error, "../../plan.json", CHECK_PLAN, format!("{e}; node inferred from its certificates"));
                info
            }
            None => infer(&loaded.files, stem, layout.as_ref()),
        };
        let mut strict = false;
        if let Some(t) = tarball {
            let s = Scope { node: &info.name, prefix: "" };
            self.tarball_mode(&s, label, t.mode);
            strict = self.tarball_origin(&s, label, t.packed);
        }
        self.check_node(&info, &loaded, "", &facts, strict);
    }

    /// A tarball kubebundle did not pack (no digest in its gzip header) is an error, unless
    /// `--foreign` accepts it; true when its files are then held to the plan strictly.
    fn tarball_origin(&mut self, s: &Scope, label: &str, packed: bool) -> bool {
        if packed {
            self.add(s, Severity::Ok, label, CHECK_ARCHIVE, "packed by kubebundle (its gzip header carries the digest of its files)");
            false
        } else if self.foreign {
            let msg =
                "not packed by kubebundle (no digest in its gzip header): accepted with --foreign, every file not in the plan is an error";
            self.add(s, Severity::Warning, label, CHECK_ARCHIVE, msg);
            true
        } else {
            let msg = "not packed by kubebundle: its gzip header has no digest of its files, so it was re-packed or made elsewhere; hint: regenerate it with kubebundle generate, or pass --foreign to check a tarball made elsewhere (every file not in the plan is then an error)";
            self.add(s, Severity::Error, label, CHECK_ARCHIVE, msg);
            true
        }
    }

    fn bundle(&mut self, dir: &Path) {
        let top = Scope { node: "-", prefix: "" };
        let plan = match read_plan(&dir.join("plan.json")) {
            Ok(p) => Some(p),
            Err(e) => {
                self.add(&top, Severity::Error, "plan.json", CHECK_PLAN, format!("{e}; nodes inferred from their certificates"));
                None
            }
        };
        // Every node named by the plan, by a tree or by a tarball.
        let mut names: BTreeSet<String> = plan.iter().flat_map(|p| p.nodes.iter().map(|n| n.name.clone())).collect();
        names.extend(crate::tree::bundle::node_names(&dir.join("nodes")));
        let mut nodes = Vec::new();
        for name in &names {
            let tree_dir = dir.join("nodes").join(name);
            let tgz = dir.join("nodes").join(format!("{name}.tar.gz"));
            let tree = tree_dir.is_dir().then(|| load_dir(&tree_dir));
            let mut packed = true;
            let tarball = tgz.is_file().then(|| match std::fs::read(&tgz) {
                Ok(b) => {
                    packed = crate::tree::tarball::has_digest(&b);
                    load_tarball(&b)
                }
                Err(e) => Loaded { problems: vec![(String::new(), format!("cannot read: {e}"))], ..Loaded::default() },
            });
            let any = tree.as_ref().or(tarball.as_ref()).map(|l| &l.files);
            let planned = plan.as_ref().and_then(|p| p.nodes.iter().find(|n| &n.name == name).map(|n| (p, n)));
            let info = match (planned, any) {
                (Some((p, n)), _) => from_plan(p, n),
                (None, Some(files)) => {
                    let info = infer(files, name, None);
                    if plan.is_some() {
                        let s = Scope { node: name, prefix: "" };
                        self.add(&s, Severity::Error, &format!("nodes/{name}"), CHECK_PLAN, "not a node of plan.json: a stray node");
                    }
                    info
                }
                (None, None) => continue,
            };
            nodes.push((info, tree, tarball, packed));
        }

        let mut facts = BundleFacts::default();
        for (info, tree, tarball, _) in &nodes {
            let Some(loaded) = tree.as_ref().or(tarball.as_ref()) else { continue };
            if let Some(c) = info.path_of("ca.crt").and_then(|p| loaded.files.get(p)).and_then(|f| CertInfo::from_pem(&f.bytes).ok()) {
                facts.node_cas.push((format!("{}'s ca.crt", info.name), c));
            }
            if !info.is_cp() {
                continue;
            }
            let cert = info.path_of("apiserver.crt").and_then(|p| loaded.files.get(p)).and_then(|f| CertInfo::from_pem(&f.bytes).ok());
            if let Some(c) = cert {
                facts.apiservers.push((format!("{}'s apiserver.crt", info.name), c));
            }
        }
        // Every control plane must hold the same encryption config, or the API servers could not
        // read each other's secrets.
        let mut enc: Vec<(&str, &str, &Vec<u8>)> = Vec::new();
        for (info, tree, tarball, _) in &nodes {
            let Some(loaded) = tree.as_ref().or(tarball.as_ref()) else { continue };
            if let Some((p, f)) = info.path_of(catalog::ENCRYPTION_CONFIG).and_then(|p| loaded.files.get(p).map(|f| (p, f))) {
                enc.push((&info.name, p, &f.bytes));
            }
        }
        if let Some((first, _, bytes)) = enc.first() {
            for (name, p, other) in &enc[1..] {
                if other != bytes {
                    let s = Scope { node: name, prefix: "" };
                    let msg = format!("differs from {first}'s: every control plane needs the same encryption config");
                    self.add(&s, Severity::Error, &format!("nodes/{name}/{p}"), CHECK_ENCRYPTION, msg);
                }
            }
        }
        self.check_state(dir, &mut facts);
        self.check_join(dir, &mut facts, plan.as_ref());
        self.check_manifests(dir, &mut facts, plan.as_ref());
        self.check_bundle_modes(dir);

        for (info, tree, tarball, packed) in &nodes {
            let s = Scope { node: &info.name, prefix: "" };
            let dir_label = format!("nodes/{}", info.name);
            let tgz_label = format!("nodes/{}.tar.gz", info.name);
            // The tree is there only when the bundle was generated with --unpacked.
            if let Some(t) = tree {
                self.check_node(info, t, &format!("{dir_label}/"), &facts, false);
            }
            match tarball {
                Some(t) => {
                    let strict = self.tarball_origin(&s, &tgz_label, *packed);
                    self.check_node(info, t, &format!("{tgz_label}:"), &facts, strict)
                }
                None => self.add(&s, Severity::Error, &tgz_label, CHECK_ARCHIVE, "the node's tarball is missing"),
            }
            if let (Some(t), Some(z)) = (tree, tarball) {
                self.compare_trees(&s, &tgz_label, t, z);
            }
        }
    }

    fn compare_trees(&mut self, s: &Scope, label: &str, tree: &Loaded, tarball: &Loaded) {
        let mut problems = Vec::new();
        for (p, f) in &tarball.files {
            match tree.files.get(p) {
                None => problems.push(format!("{p} is only in the tarball")),
                Some(t) if t.bytes != f.bytes => problems.push(format!("{p} differs from the unpacked tree")),
                Some(t) if t.mode != f.mode => problems.push(format!("{p} is {:04o} in the tarball, {:04o} in the tree", f.mode, t.mode)),
                Some(_) => {}
            }
        }
        problems.extend(tree.files.keys().filter(|p| !tarball.files.contains_key(*p)).map(|p| format!("{p} is missing from the tarball")));
        if problems.is_empty() {
            self.add(s, Severity::Ok, label, CHECK_ARCHIVE, format!("same {} files as the unpacked tree", tarball.files.len()));
        }
        for p in problems {
            self.add(s, Severity::Error, label, CHECK_ARCHIVE, p);
        }
    }

    /// The state's CAs: readable, unexpired; their certificates are what every node must hold.
    fn check_state(&mut self, dir: &Path, facts: &mut BundleFacts) {
        let s = Scope { node: "-", prefix: "" };
        for (id, rel) in
            [("ca", "state/pki/ca.crt"), ("front-proxy-ca", "state/pki/front-proxy-ca.crt"), ("etcd-ca", "state/pki/etcd/ca.crt")]
        {
            let p = dir.join(rel);
            if !p.is_file() {
                if id == "ca" {
                    self.add(&s, Severity::Error, rel, CHECK_CHAIN, "the cluster CA is missing from the state");
                }
                continue;
            }
            match std::fs::read(&p).map_err(|e| e.to_string()).and_then(|b| CertInfo::from_pem(&b)) {
                Ok(c) => {
                    if let Some(entry) = catalog::cert(id) {
                        self.expiry(&s, rel, entry, &c);
                    }
                    self.check_state_chain(dir, id, &c, facts);
                    facts.state_trust.insert(id, manifests::state_trust(dir, id, &c));
                    facts.state_cas.insert(id, c);
                }
                Err(e) => self.add(&s, Severity::Error, rel, CHECK_FORMAT, e),
            }
        }
        facts.state_sa = std::fs::read(dir.join("state/pki/sa.pub")).ok().and_then(|b| pem_public_key(&b).ok());
    }

    /// An imported CA's chain (state/pki/<ca>-chain.crt): each certificate signed by the next up
    /// to a self-signed root, each one's expiry, and a warning when one above the CA ends first.
    fn check_state_chain(&mut self, dir: &Path, id: &'static str, ca: &CertInfo, facts: &mut BundleFacts) {
        let s = Scope { node: "-", prefix: "" };
        let rel = format!("state/{}", crate::bundle::state::ca_chain_path(id));
        let Ok(bytes) = std::fs::read(dir.join(&rel)) else {
            if ca.issuer_raw != ca.subject_raw {
                self.add(
                    &s,
                    Severity::Error,
                    &rel,
                    CHECK_CHAIN,
                    format!("CA {id} ({:?}) is not self-signed (issuer {:?}) and its chain file is missing", ca.cn, ca.issuer),
                );
            }
            return;
        };
        let chain = match CertInfo::all_from_pem(&bytes) {
            Ok(c) => c,
            Err(e) => return self.add(&s, Severity::Error, &rel, CHECK_FORMAT, e),
        };
        let mut problems = Vec::new();
        let mut below = ca;
        for c in &chain {
            if c.subject_raw != below.issuer_raw || signature_ok(below, c).is_err() {
                problems.push(format!("{:?} did not sign {:?}", c.subject, below.subject));
            }
            if !c.is_ca {
                problems.push(format!("{:?} is not a CA", c.subject));
            }
            below = c;
        }
        if below.issuer_raw != below.subject_raw || signature_ok(below, below).is_err() {
            problems.push(format!("it ends at {:?}, which is not a self-signed root", below.subject));
        }
        let root = chain.last().map(|c| c.subject.clone()).unwrap_or_default();
        self.result(&s, &rel, CHECK_CHAIN, problems, || format!("CA {id} ({:?}) chains up to the root {root:?}", ca.cn));
        let fmt = |t: OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.to_string());
        let warn = time::Duration::try_from(self.warn_within).unwrap_or(time::Duration::MAX);
        for (i, c) in chain.iter().enumerate() {
            let who = if i + 1 == chain.len() {
                format!("the root {:?} of {id}", c.subject)
            } else {
                format!("the intermediate {:?} above {id}", c.subject)
            };
            if c.not_after <= self.now {
                self.add(&s, Severity::Error, &rel, CHECK_EXPIRY, format!("{who} expired at {}", fmt(c.not_after)));
            } else if c.not_after - self.now <= warn {
                self.add(&s, Severity::Warning, &rel, CHECK_EXPIRY, format!("{who} expires at {}", fmt(c.not_after)));
            } else if c.not_after < ca.not_after {
                self.add(
                    &s,
                    Severity::Warning,
                    &rel,
                    CHECK_EXPIRY,
                    format!(
                        "{who} expires at {}, before {id} itself ({}): clients that trust it stop trusting the cluster's certificates then",
                        fmt(c.not_after),
                        fmt(ca.not_after)
                    ),
                );
            } else {
                self.add(&s, Severity::Ok, &rel, CHECK_EXPIRY, format!("{who} valid until {}", fmt(c.not_after)));
            }
        }
        facts.state_chains.insert(id, chain);
    }

    /// The certificates a leaf's file carries after it: each must sign the one before (an
    /// imported CA's intermediates, for clients that trust its root). A serving certificate of an
    /// imported intermediate without them is a warning.
    fn check_carried_chain(&mut self, s: &Scope, path: &str, entry: &CertEntry, bytes: &[u8], facts: &BundleFacts) {
        let Ok(all) = CertInfo::all_from_pem(bytes) else { return };
        let imported = entry.signer.ca_id().is_some_and(|ca| facts.state_chains.contains_key(ca));
        if all.len() < 2 {
            if imported && entry.usages.contains(&catalog::Eku::ServerAuth) {
                let ca = entry.signer.ca_id().unwrap_or_default();
                self.add(
                    s,
                    Severity::Warning,
                    path,
                    CHECK_CHAIN,
                    format!("{} does not carry its intermediate {ca}: a client that trusts only the root cannot build the chain", entry.id),
                );
            }
            return;
        }
        let mut problems = Vec::new();
        for pair in all.windows(2) {
            if pair[0].issuer_raw != pair[1].subject_raw || signature_ok(&pair[0], &pair[1]).is_err() {
                problems.push(format!("{:?} after {:?} did not sign it", pair[1].subject, pair[0].subject));
            }
        }
        if let Some(root) = all[1..].iter().find(|c| c.issuer_raw == c.subject_raw) {
            let message = format!(
                "{} carries the root {:?}, which a client must already trust: it only lengthens every handshake",
                entry.id, root.subject
            );
            self.add(s, Severity::Warning, path, CHECK_CHAIN, message);
        }
        let n = all.len() - 1;
        let top = all.last().map(|c| c.subject.clone()).unwrap_or_default();
        self.result(s, path, CHECK_CHAIN, problems, || format!("{} carries its chain: {n} intermediate(s), up to {top:?}", entry.id));
    }

    fn check_join(&mut self, dir: &Path, facts: &mut BundleFacts, plan: Option<&PlanDoc>) {
        let s = Scope { node: "-", prefix: "" };
        match std::fs::read_to_string(dir.join("join.txt")) {
            Err(e) => self.add(&s, Severity::Error, "join.txt", CHECK_HASH, format!("cannot read: {e}")),
            Ok(text) => {
                let words: Vec<&str> = text.split_whitespace().collect();
                let mut hashes = BTreeSet::new();
                for (i, w) in words.iter().enumerate() {
                    if let Some(v) = w.strip_prefix("--discovery-token-ca-cert-hash=") {
                        hashes.insert(v.to_string());
                    } else if *w == "--discovery-token-ca-cert-hash" {
                        hashes.insert(words.get(i + 1).copied().unwrap_or_default().to_string());
                    }
                }
                let state_ca = dir.join("state/pki/ca.crt");
                // During a rotation of the cluster CA, join.txt pins the new and the old CA.
                let expected: Option<BTreeSet<String>> = match facts.state_trust.get("ca") {
                    Some(trust) => Some(trust.iter().map(CertInfo::hash).collect()),
                    None => std::fs::read(&state_ca)
                        .ok()
                        .and_then(|b| CertInfo::all_from_pem(&b).ok())
                        .map(|all| all.iter().map(CertInfo::hash).collect()),
                };
                if hashes.is_empty() {
                    self.add(&s, Severity::Error, "join.txt", CHECK_HASH, "no --discovery-token-ca-cert-hash in join.txt");
                }
                match &expected {
                    None => self.add(
                        &s,
                        Severity::Error,
                        "join.txt",
                        CHECK_HASH,
                        "state/pki/ca.crt is unreadable: the hashes cannot be checked",
                    ),
                    Some(exp) => {
                        for h in &hashes {
                            if exp.contains(h) {
                                self.add(&s, Severity::Ok, "join.txt", CHECK_HASH, format!("{h} is the hash of state/pki/ca.crt"));
                            } else {
                                let want = exp.iter().cloned().collect::<Vec<_>>().join(", ");
                                self.add(
                                    &s,
                                    Severity::Error,
                                    "join.txt",
                                    CHECK_HASH,
                                    format!("--discovery-token-ca-cert-hash {h:?} is not the hash of state/pki/ca.crt ({want}): kubeadm join would refuse the cluster"),
                                );
                            }
                        }
                    }
                }
                facts.join_hashes = Some(hashes);
            }
        }
        // discovery.conf: the endpoint and the state's CA.
        match std::fs::read(dir.join("discovery.conf")) {
            Err(e) => self.add(&s, Severity::Warning, "discovery.conf", CHECK_KUBECONFIG, format!("cannot read: {e}")),
            Ok(bytes) => match parse_kubeconfig(&bytes) {
                Err(e) => self.add(&s, Severity::Error, "discovery.conf", CHECK_KUBECONFIG, e),
                Ok(k) => {
                    let ca_ok = match (&k.ca, facts.state_cas.get("ca")) {
                        (Some(data), Some(ca)) => CertInfo::from_pem(data).is_ok_and(|c| c.der == ca.der),
                        _ => false,
                    };
                    if ca_ok {
                        self.add(&s, Severity::Ok, "discovery.conf", CHECK_KUBECONFIG, "certificate-authority-data is state/pki/ca.crt");
                    } else {
                        self.add(
                            &s,
                            Severity::Error,
                            "discovery.conf",
                            CHECK_KUBECONFIG,
                            "certificate-authority-data is not state/pki/ca.crt",
                        );
                    }
                    if let Some(p) = plan {
                        let want = format!("https://{}", p.control_plane_endpoint);
                        if k.server != want {
                            let msg = format!("server is {:?}, the plan's controlPlaneEndpoint gives {want:?}", k.server);
                            self.add(&s, Severity::Error, "discovery.conf", CHECK_KUBECONFIG, msg);
                        }
                    }
                }
            },
        }
    }

    /// `strict`: a tarball kubebundle did not pack, whose every file must be in the plan (or,
    /// without one, the kubeadm layout).
    fn check_node(&mut self, info: &NodeInfo, loaded: &Loaded, prefix: &str, facts: &BundleFacts, strict: bool) {
        let s = Scope { node: &info.name, prefix };
        for (p, msg) in &loaded.problems {
            self.add(&s, Severity::Error, p, CHECK_ARCHIVE, msg.clone());
        }
        let files = &loaded.files;
        let scans = self.scan_files(files);
        self.check_presence(&s, info, files, strict);
        self.check_modes(&s, info, files, &scans);
        self.check_rules(&s, info, files, &scans, facts);
        self.check_references(&s, info, files, info.external_etcd);

        // CA certificates of this tree.
        let mut cas: BTreeMap<&'static str, (String, CertInfo)> = BTreeMap::new();
        for ca in catalog::CERTS.iter().filter(|e| e.is_ca()) {
            let Some(path) = info.path_of(&format!("{}.crt", ca.id)) else { continue };
            if let Some(Ok(c)) = files.get(path).map(|f| CertInfo::from_pem(&f.bytes)) {
                cas.insert(ca.id, (path.to_string(), c));
            }
        }

        let mut found = Vec::new();
        let mut kubeconfigs = Vec::new();
        for (path, f) in files {
            let Some(exp) = info.layout.get(path) else { continue };
            match exp.artifact {
                Some(Artifact::CertPem(entry)) => match CertInfo::from_pem(&f.bytes) {
                    Ok(cert) => {
                        if !entry.is_ca() {
                            self.check_carried_chain(&s, path, entry, &f.bytes, facts);
                        }
                        let key_path = info.path_of(&format!("{}.key", entry.id));
                        let key = key_path.and_then(|kp| files.get(kp).map(|k| (kp.to_string(), k.bytes.to_vec())));
                        found.push(FoundCert {
                            path: path.clone(),
                            entry,
                            cert,
                            key,
                            embedded: false,
                            expected_cn: exp.common_name.clone(),
                            expected_sans: exp.sans.clone(),
                        });
                    }
                    Err(e) => self.add(&s, Severity::Error, path, CHECK_FORMAT, format!("{} is unreadable: {e}", entry.id)),
                },
                Some(Artifact::KeyPem(entry)) => {
                    let cert_path = info.path_of(&format!("{}.crt", entry.id));
                    if !cert_path.is_some_and(|c| files.contains_key(c)) {
                        self.add(&s, Severity::Error, path, CHECK_KEY, format!("the {} key has no certificate beside it", entry.id));
                    }
                }
                Some(Artifact::Kubeconfig(k)) => match parse_kubeconfig(&f.bytes) {
                    Err(e) => self.add(&s, Severity::Error, path, CHECK_KUBECONFIG, e),
                    Ok(kc) => {
                        if k.credential == Credential::Certificate {
                            match (&kc.cert_pem, catalog::cert(k.id)) {
                                (Some(pem), Some(entry)) => match CertInfo::from_pem(pem) {
                                    Ok(cert) => found.push(FoundCert {
                                        path: path.clone(),
                                        entry,
                                        cert,
                                        key: kc.key_pem.clone().map(|k| ("client-key-data".to_string(), k)),
                                        embedded: true,
                                        expected_cn: exp.common_name.clone(),
                                        expected_sans: None,
                                    }),
                                    Err(e) => self.add(&s, Severity::Error, path, CHECK_FORMAT, format!("client-certificate-data: {e}")),
                                },
                                // A client certificate given as a file is a file of the tree, checked as
                                // such; the reference itself is checked by the consistency check.
                                _ if kc.cert_file.is_some() => {}
                                _ => self.add(&s, Severity::Error, path, CHECK_KUBECONFIG, "no client-certificate-data"),
                            }
                        }
                        kubeconfigs.push((path.clone(), k, kc, exp.server.clone()));
                    }
                },
                Some(Artifact::SaKey) => self.check_sa(&s, info, files, path),
                Some(Artifact::EncryptionConfig) => {
                    let problems = encryption_problems(&f.bytes);
                    self.result(&s, path, CHECK_ENCRYPTION, problems, || "secrets are encrypted with a well-formed key".into());
                }
                _ => {}
            }
        }

        let own_apiserver = found.iter().find(|c| c.entry.id == "apiserver" && !c.embedded).map(|c| c.cert.clone());
        for c in &found {
            self.check_cert(&s, info, c, &cas, facts);
        }
        let ca_pem = info.path_of("ca.crt").and_then(|p| files.get(p)).and_then(|f| CertInfo::from_pem(&f.bytes).ok());
        for (path, k, kc, planned_server) in &kubeconfigs {
            self.check_kubeconfig(&s, info, path, k, kc, planned_server.as_deref(), ca_pem.as_ref(), own_apiserver.as_ref(), facts);
        }
        // The node's CAs are the bundle's, and join.txt's hash fits its ca.crt.
        for (id, (path, c)) in &cas {
            if let Some(trust) = facts.state_trust.get(id).filter(|t| t.len() > 1) {
                // A rotation in progress: the file is the state's trust bundle, in its order.
                let held: Vec<Vec<u8>> = files
                    .get(path)
                    .and_then(|f| CertInfo::all_from_pem(&f.bytes).ok())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| c.der)
                    .collect();
                let want: Vec<Vec<u8>> = trust.iter().map(|c| c.der.clone()).collect();
                if held == want {
                    self.add(
                        &s,
                        Severity::Ok,
                        path,
                        CHECK_CHAIN,
                        format!("the bundle's {id} trust bundle during its rotation (the CA that signs first)"),
                    );
                } else {
                    self.add(
                        &s,
                        Severity::Error,
                        path,
                        CHECK_CHAIN,
                        format!("not the state's {id} trust bundle of the rotation in progress ({} CAs, the CA that signs first): roll out the rotation's files", want.len()),
                    );
                }
            } else if let Some(state) = facts.state_cas.get(id) {
                if state.der == c.der {
                    self.add(&s, Severity::Ok, path, CHECK_CHAIN, format!("the bundle's {id} (same as the state's)"));
                } else {
                    self.add(
                        &s,
                        Severity::Error,
                        path,
                        CHECK_CHAIN,
                        format!("not the bundle's {id}: differs from the state's certificate"),
                    );
                }
            }
            if *id == "ca" {
                if let Some(hashes) = &facts.join_hashes {
                    let h = c.hash();
                    if hashes.contains(&h) {
                        self.add(&s, Severity::Ok, path, CHECK_HASH, format!("join.txt gives this CA's hash {h}"));
                    } else {
                        self.add(
                            &s,
                            Severity::Error,
                            path,
                            CHECK_HASH,
                            format!("this CA's hash {h} is not in join.txt: kubeadm join would refuse it"),
                        );
                    }
                }
            }
        }
    }

    /// Every file a unit, kubeconfig, kubeadm config, KubeletConfiguration or patch of the tree
    /// references is in the tree, holding the right kind of content.
    fn check_references(&mut self, s: &Scope, info: &NodeInfo, files: &BTreeMap<String, TreeFile>, external_etcd: bool) {
        let contents: BTreeMap<String, &[u8]> = files.iter().map(|(p, f)| (p.clone(), f.bytes.as_slice())).collect();
        let facts = references::NodeFacts { addresses: info.addresses.clone(), external_etcd };
        for i in references::check(&contents, &facts) {
            let sev = match (i.ok, i.error) {
                (true, _) => Severity::Ok,
                (false, true) => Severity::Error,
                (false, false) => Severity::Warning,
            };
            self.add(s, sev, &i.file, CHECK_REFERENCES, i.message);
        }
    }

    /// Least privilege: the files a node holds are those it needs.
    fn check_presence(&mut self, s: &Scope, info: &NodeInfo, files: &BTreeMap<String, TreeFile>, strict: bool) {
        if info.from_plan {
            for path in files.keys() {
                if info.layout.contains_key(path) {
                    self.add(s, Severity::Ok, path, CHECK_PRIVILEGE, "planned for this node");
                } else {
                    let what = secret_kind(path, files.get(path)).map(|k| format!(" holding {k}")).unwrap_or_default();
                    let roles = info.roles.iter().cloned().collect::<Vec<_>>().join(", ");
                    self.add(
                        s,
                        Severity::Error,
                        path,
                        CHECK_PRIVILEGE,
                        format!("unexpected file{what}: not in the plan for this node (roles {roles})"),
                    );
                }
            }
            for (path, e) in &info.layout {
                if !files.contains_key(path) {
                    self.add(s, Severity::Error, path, CHECK_PRIVILEGE, format!("missing: the plan puts {} here", e.artifact_id));
                }
            }
            return;
        }
        for (path, f) in files {
            let Some(e) = info.layout.get(path) else {
                if strict {
                    let msg = format!("not a file of the {} layout, in a tarball kubebundle did not pack: refused", info.profile);
                    self.add(s, Severity::Error, path, CHECK_PRIVILEGE, msg);
                    continue;
                }
                let sev = if secret_kind(path, Some(f)).is_some() { Severity::Error } else { Severity::Warning };
                self.add(s, sev, path, CHECK_PRIVILEGE, format!("not a file of the {} layout; not checked", info.profile));
                continue;
            };
            let secret = e.artifact.is_none_or(|a| a.is_secret());
            let needed = e.roles.iter().any(|r| info.roles.contains(r));
            if secret && !needed {
                let roles = info.roles.iter().cloned().collect::<Vec<_>>().join(", ");
                self.add(
                    s,
                    Severity::Error,
                    path,
                    CHECK_PRIVILEGE,
                    format!(
                        "{} is only for {} nodes, and this node is {roles}: it must not hold this key",
                        e.artifact_id,
                        e.roles.join("/")
                    ),
                );
            } else {
                self.add(s, Severity::Ok, path, CHECK_PRIVILEGE, "needed by this node's roles");
            }
        }
    }

    /// A file whose content is a secret is 0600 whatever the plan says; the others have the
    /// plan's (or kubeadm's) mode.
    fn check_modes(&mut self, s: &Scope, info: &NodeInfo, files: &BTreeMap<String, TreeFile>, scans: &BTreeMap<String, rules::Scan>) {
        for (path, f) in files {
            if scans.get(path).is_some_and(|scan| self.secret_mode(s, path, f.mode, scan)) {
                continue;
            }
            let Some(e) = info.layout.get(path) else { continue };
            let secret = e.artifact.is_none_or(|a| a.is_secret());
            let (sev, msg) = if f.mode == e.mode {
                (Severity::Ok, format!("{:04o}", f.mode))
            } else if secret && f.mode & 0o077 != 0 {
                (Severity::Error, format!("{:04o}: a secret readable by others; want {:04o}", f.mode, e.mode))
            } else if info.from_plan || f.mode & 0o022 != 0 {
                (Severity::Error, format!("{:04o}, want {:04o}", f.mode, e.mode))
            } else {
                (Severity::Warning, format!("{:04o}, kubeadm writes {:04o}", f.mode, e.mode))
            };
            self.add(s, sev, path, CHECK_MODE, msg);
        }
    }

    fn check_sa(&mut self, s: &Scope, info: &NodeInfo, files: &BTreeMap<String, TreeFile>, key_path: &str) {
        let Some(key) = files.get(key_path) else { return };
        let Some(pub_file) = info.path_of(catalog::SA_PUB).and_then(|p| files.get(p)) else {
            self.add(s, Severity::Error, key_path, CHECK_KEY, "sa.key without sa.pub beside it");
            return;
        };
        let result = pem_public_key(&pub_file.bytes).and_then(|spki| key_matches(&key.bytes, &spki));
        match result {
            Ok(true) => self.add(s, Severity::Ok, key_path, CHECK_KEY, "matches sa.pub"),
            Ok(false) => self.add(s, Severity::Error, key_path, CHECK_KEY, "does not match sa.pub"),
            Err(e) => self.add(s, Severity::Error, key_path, CHECK_KEY, e),
        }
    }

    fn check_cert(
        &mut self,
        s: &Scope,
        info: &NodeInfo,
        c: &FoundCert,
        cas: &BTreeMap<&'static str, (String, CertInfo)>,
        facts: &BundleFacts,
    ) {
        let path = c.path.as_str();
        let what = if c.embedded { "client-certificate-data".to_string() } else { c.entry.id.to_string() };
        // 1. chain
        match c.entry.signer {
            Signer::SelfSigned => {
                let mut problems = Vec::new();
                let mut said = None;
                // An imported intermediate: signed by the first certificate of the state's chain.
                let issuer = facts.state_chains.get(c.entry.id).and_then(|chain| chain.first());
                if c.cert.issuer_raw != c.cert.subject_raw {
                    match issuer {
                        Some(i) if i.subject_raw == c.cert.issuer_raw && signature_ok(&c.cert, i).is_ok() => {
                            let rel = crate::bundle::state::ca_chain_path(c.entry.id);
                            said = Some((Severity::Ok, format!("intermediate CA {:?} signed by {:?} (state/{rel})", c.cert.cn, i.subject)));
                        }
                        Some(_) => problems
                            .push(format!("a CA whose issuer {:?} is not the one of the state's chain for {}", c.cert.issuer, c.entry.id)),
                        None if facts.tokens.is_none() => {
                            said = Some((
                                Severity::Warning,
                                format!(
                                    "intermediate CA {:?} (issuer {:?}): its chain is not in this tree; verify the bundle to check it up to its root",
                                    c.cert.cn, c.cert.issuer
                                ),
                            ));
                        }
                        None => problems.push(format!("a CA must be self-signed, but its issuer is {:?}", c.cert.issuer)),
                    }
                } else if let Err(e) = signature_ok(&c.cert, &c.cert) {
                    problems.push(format!("self-signature: {e}"));
                }
                match said {
                    Some((severity, message)) => self.add(s, severity, path, CHECK_CHAIN, message),
                    None => self.result(s, path, CHECK_CHAIN, problems, || format!("self-signed CA {:?}", c.cert.cn)),
                }
            }
            signer => {
                let ca_id = signer.ca_id().unwrap_or("ca");
                match cas.get(ca_id) {
                    None => {
                        let want = info.path_of(&format!("{ca_id}.crt")).map(str::to_string).unwrap_or_else(|| format!("{ca_id}.crt"));
                        self.add(
                            s,
                            Severity::Error,
                            path,
                            CHECK_CHAIN,
                            format!("{what} is signed by {ca_id}, but {want} is not in this tree"),
                        );
                    }
                    Some((ca_path, ca)) => {
                        let mut problems = Vec::new();
                        if let Err(e) = signature_ok(&c.cert, ca) {
                            let other =
                                cas.iter().find(|(id, (_, o))| *id != &ca_id && signature_ok(&c.cert, o).is_ok()).map(|(id, _)| *id);
                            let by = other
                                .map(|o| format!(" (it is signed by {o})"))
                                .unwrap_or_else(|| format!(" ({e}; issuer {:?})", c.cert.issuer));
                            problems.push(format!("{what} is not signed by {ca_id} {ca_path}{by}; expected CA {ca_id} ({ca_path})"));
                        }
                        if c.cert.issuer_raw != ca.subject_raw {
                            problems.push(format!("issuer {:?} is not {ca_id}'s subject {:?}", c.cert.issuer, ca.subject));
                        }
                        if let (Some(aki), Some(ski)) = (&c.cert.aki, &ca.ski) {
                            if aki != ski {
                                problems.push(format!("authority key identifier is not {ca_id}'s subject key identifier"));
                            }
                        }
                        self.result(s, path, CHECK_CHAIN, problems, || format!("{what} signed by {ca_id} ({ca_path})"));
                    }
                }
            }
        }
        // 2. key
        match &c.key {
            None if c.embedded => self.add(s, Severity::Error, path, CHECK_KEY, "no client-key-data for the client certificate"),
            None => {
                // CA certificates travel without their key to most nodes.
                if !c.entry.is_ca() {
                    self.add(s, Severity::Error, path, CHECK_KEY, format!("the {} key is missing", c.entry.id));
                }
            }
            Some((key_label, pem)) => {
                let shown = if c.embedded { key_label.clone() } else { key_label.rsplit('/').next().unwrap_or(key_label).to_string() };
                let at = if c.embedded { path.to_string() } else { key_label.clone() };
                match key_matches(pem, &c.cert.spki_raw) {
                    Ok(true) => self.add(s, Severity::Ok, &at, CHECK_KEY, format!("{shown} matches {what}")),
                    Ok(false) => self.add(
                        s,
                        Severity::Error,
                        &at,
                        CHECK_KEY,
                        format!(
                            "{shown} does not match the certificate {}: it is another certificate's key",
                            if c.embedded { "in client-certificate-data" } else { path }
                        ),
                    ),
                    Err(e) => self.add(s, Severity::Error, &at, CHECK_KEY, format!("{shown}: {e}")),
                }
            }
        }
        // 3. usages
        let mut problems = Vec::new();
        if c.entry.is_ca() {
            if !c.cert.is_ca {
                problems.push("a CA certificate without BasicConstraints CA:TRUE".to_string());
            }
            if !c.cert.key_cert_sign {
                problems.push("a CA certificate without the keyCertSign key usage".to_string());
            }
            if c.cert.has_eku {
                problems.push("a CA certificate with an extended key usage".to_string());
            }
        } else {
            if c.cert.is_ca {
                problems.push(format!("{what} is a CA (BasicConstraints CA:TRUE); a leaf must be CA:FALSE"));
            }
            for u in c.entry.usages {
                let (has, name) = match u {
                    catalog::Eku::ServerAuth => (c.cert.server_auth, "serverAuth"),
                    catalog::Eku::ClientAuth => (c.cert.client_auth, "clientAuth"),
                };
                if !has {
                    let got = [(c.cert.server_auth, "serverAuth"), (c.cert.client_auth, "clientAuth")]
                        .iter()
                        .filter(|(on, _)| *on)
                        .map(|(_, n)| *n)
                        .collect::<Vec<_>>()
                        .join(", ");
                    let got = if got.is_empty() { "none".to_string() } else { got };
                    problems.push(format!("{} needs {name}, the certificate has {got}: wrong certificate for this file", c.entry.id));
                }
            }
        }
        let ekus = eku_names(&c.cert);
        self.result(s, path, CHECK_EKU, problems, || {
            if c.entry.is_ca() {
                "CA:TRUE, keyCertSign, no EKU".into()
            } else {
                format!("CA:FALSE, {ekus}")
            }
        });
        if !c.entry.is_ca() {
            let extra: Vec<&str> = [
                (c.cert.server_auth && !c.entry.usages.contains(&catalog::Eku::ServerAuth), "serverAuth"),
                (c.cert.client_auth && !c.entry.usages.contains(&catalog::Eku::ClientAuth), "clientAuth"),
            ]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect();
            if !extra.is_empty() || !c.cert.other_eku.is_empty() {
                let all: Vec<String> = extra.iter().map(|s| s.to_string()).chain(c.cert.other_eku.iter().cloned()).collect();
                self.add(
                    s,
                    Severity::Warning,
                    path,
                    CHECK_EKU,
                    format!("{what} also allows {}, which kubeadm does not set", all.join(", ")),
                );
            }
        }
        // Subject: the catalogue's (or plan's) CN; a certificate naming another node is a leak.
        // An imported CA keeps the name its signer gave it: a CA that is the state's is its own.
        let kubeadm_cn = match c.entry.common_name {
            CommonName::Fixed(cn) => cn,
            _ => "",
        };
        if c.entry.is_ca() && c.cert.cn != kubeadm_cn && facts.state_cas.get(c.entry.id).is_some_and(|ca| ca.der == c.cert.der) {
            self.add(s, Severity::Ok, path, CHECK_SUBJECT, format!("CN {:?}: the state's {} (imported)", c.cert.cn, c.entry.id));
        } else if c.entry.is_ca() && c.cert.cn != kubeadm_cn && !facts.state_cas.contains_key(c.entry.id) {
            // A tree without the state: the CA at this place may be an imported one, whose chains
            // the leaves' own checks prove.
            let message = format!(
                "CN {:?}, not kubeadm's {kubeadm_cn:?}: a CA imported under its own name; verify the bundle to check it against the state",
                c.cert.cn
            );
            self.add(s, Severity::Ok, path, CHECK_SUBJECT, message);
        } else {
            self.check_subject(s, info, c, &what);
        }
        // 4. expiry
        self.expiry(s, path, c.entry, &c.cert);
        // 5. SANs
        if !c.embedded && matches!(c.entry.sans, SanRule::ApiServer | SanRule::EtcdServer | SanRule::EtcdPeer | SanRule::KubeletServing) {
            self.check_sans(s, info, c, facts);
        }
    }

    fn check_subject(&mut self, s: &Scope, info: &NodeInfo, c: &FoundCert, what: &str) {
        let path = c.path.as_str();
        let expected = match (&c.expected_cn, c.entry.common_name) {
            (Some(cn), _) if !cn.is_empty() => cn.clone(),
            (_, CommonName::Fixed(cn)) => cn.to_string(),
            (_, CommonName::NodeName) => info.name.clone(),
            (_, CommonName::SystemNode) => format!("system:node:{}", info.name),
        };
        if c.cert.cn == expected {
            self.add(s, Severity::Ok, path, CHECK_SUBJECT, format!("CN {expected:?}"));
            return;
        }
        let other_node = match c.entry.common_name {
            CommonName::NodeName => Some(c.cert.cn.clone()),
            CommonName::SystemNode => c.cert.cn.strip_prefix("system:node:").map(str::to_string),
            CommonName::Fixed(_) => None,
        };
        match other_node {
            Some(other) => self.add(
                s,
                Severity::Error,
                path,
                CHECK_PRIVILEGE,
                format!(
                    "{what} names node {other:?} (CN {:?}), not this node {:?}: a node must not hold another node's key",
                    c.cert.cn, info.name
                ),
            ),
            None => self.add(
                s,
                Severity::Error,
                path,
                CHECK_SUBJECT,
                format!("CN {:?}, want {expected:?}: wrong certificate for {}", c.cert.cn, c.entry.id),
            ),
        }
    }

    fn expiry(&mut self, s: &Scope, path: &str, entry: &CertEntry, c: &CertInfo) {
        let fmt = |t: OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.to_string());
        let who = if entry.is_ca() { format!("CA {} ({:?})", entry.id, c.cn) } else { entry.id.to_string() };
        let warn = time::Duration::try_from(self.warn_within).unwrap_or(time::Duration::MAX);
        let left = c.not_after - self.now;
        let days = left.whole_days();
        if c.not_before > self.now {
            self.add(s, Severity::Error, path, CHECK_EXPIRY, format!("{who} is not valid yet: notBefore {}", fmt(c.not_before)));
        } else if c.not_after <= self.now {
            self.add(s, Severity::Error, path, CHECK_EXPIRY, format!("{who} expired at {}", fmt(c.not_after)));
        } else if left <= warn {
            self.add(s, Severity::Warning, path, CHECK_EXPIRY, format!("{who} expires in {days} days, at {}", fmt(c.not_after)));
        } else {
            self.add(s, Severity::Ok, path, CHECK_EXPIRY, format!("{who} valid until {} ({days} days)", fmt(c.not_after)));
        }
    }

    fn check_sans(&mut self, s: &Scope, info: &NodeInfo, c: &FoundCert, facts: &BundleFacts) {
        let _ = facts;
        let path = c.path.as_str();
        let required: Vec<String> = match &c.expected_sans {
            Some(planned) if info.from_plan => planned.clone(),
            _ => {
                let mut r: Vec<String> = info.addresses.iter().map(|a| format!("IP:{a}")).collect();
                match c.entry.sans {
                    SanRule::ApiServer => r.extend(info.endpoint_hosts.iter().map(|h| san_of_host(h))),
                    SanRule::EtcdServer | SanRule::EtcdPeer => r.push("IP:127.0.0.1".into()),
                    _ => {}
                }
                r
            }
        };
        let have = c.cert.san_strings();
        let covered = |want: &str| -> bool {
            match want.split_once(':') {
                Some(("IP", ip)) => ip.parse::<IpAddr>().is_ok_and(|ip| c.cert.ips.contains(&ip)),
                Some(("DNS", d)) => c.cert.dns.iter().any(|x| x.eq_ignore_ascii_case(d)),
                _ => have.iter().any(|h| h == want),
            }
        };
        let missing: Vec<&String> = required.iter().filter(|w| !covered(w)).collect();
        if missing.is_empty() {
            self.add(s, Severity::Ok, path, CHECK_SANS, format!("covers {}", required.join(", ")));
        } else {
            for m in missing {
                self.add(s, Severity::Error, path, CHECK_SANS, format!("{} lacks the SAN {m} (it has {})", c.entry.id, have.join(", ")));
            }
        }
        if info.from_plan {
            let extra: Vec<&String> =
                have.iter().filter(|h| !required.iter().any(|r| r.eq_ignore_ascii_case(h) || same_ip_san(r, h))).collect();
            if !extra.is_empty() {
                let list = extra.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
                self.add(s, Severity::Warning, path, CHECK_SANS, format!("SANs not in the plan: {list}"));
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check_kubeconfig(
        &mut self,
        s: &Scope,
        info: &NodeInfo,
        path: &str,
        k: &catalog::KubeconfigEntry,
        kc: &Kubeconfig,
        planned_server: Option<&str>,
        ca: Option<&CertInfo>,
        own_apiserver: Option<&CertInfo>,
        facts: &BundleFacts,
    ) {
        let mut problems = Vec::new();
        let mut notes = Vec::new();
        // The CA it trusts is this tree's ca.crt.
        match (&kc.ca, ca) {
            (None, _) => problems.push("no certificate-authority-data".to_string()),
            (Some(_), None) => problems.push("the tree has no ca.crt to compare certificate-authority-data with".to_string()),
            (Some(data), Some(ca)) => match CertInfo::all_from_pem(data) {
                Err(e) => problems.push(format!("certificate-authority-data: {e}")),
                Ok(list) if list.iter().any(|c| c.der == ca.der) => notes.push("certificate-authority-data is ca.crt".to_string()),
                Ok(list) => problems.push(format!(
                    "certificate-authority-data is not this tree's ca.crt (it holds {:?}, another cluster's CA?): the client would not trust the API server",
                    list.first().map(|c| c.cn.as_str()).unwrap_or_default()
                )),
            },
        }
        // The server URL.
        match url_host(&kc.server) {
            None => problems.push(format!("server {:?} is not a URL", kc.server)),
            Some((scheme, host)) => {
                if scheme != "https" {
                    problems.push(format!("server {:?} is not https", kc.server));
                }
                if let Some(want) = planned_server {
                    if kc.server != want {
                        problems.push(format!("server {:?}, the plan says {want:?}", kc.server));
                    }
                }
                if info.is_cp() {
                    match own_apiserver {
                        Some(a) if a.covers_host(&host) => notes.push(format!("{host} is in this node's apiserver.crt SANs")),
                        Some(_) => problems.push(format!("server host {host} is not covered by this node's apiserver.crt SANs")),
                        None => notes.push("no apiserver.crt in this tree to check the server against".into()),
                    }
                } else if facts.apiservers.is_empty() {
                    notes.push(format!("server host {host}: no apiserver certificate available to check it against"));
                } else {
                    let bad: Vec<&str> = facts.apiservers.iter().filter(|(_, a)| !a.covers_host(&host)).map(|(l, _)| l.as_str()).collect();
                    if bad.is_empty() {
                        notes.push(format!("{host} is in every control plane's apiserver.crt SANs"));
                    } else {
                        problems.push(format!("server host {host} is not covered by {}", bad.join(", ")));
                    }
                }
            }
        }
        if k.credential == Credential::BootstrapToken {
            match kc.token.as_deref() {
                // Whether the bundle knows it and it is unexpired: the join-token check.
                Some(t) if token::is_valid(t) => notes.push("a bootstrap token of the right form".into()),
                Some(_) => problems.push("the token is not a bootstrap token (<6 chars>.<16 chars> of [a-z0-9])".into()),
                None => problems.push("no bootstrap token".into()),
            }
        }
        self.result(s, path, CHECK_KUBECONFIG, problems, || notes.join("; "));
    }

    /// One Ok finding when `problems` is empty, else one error each.
    fn result(&mut self, s: &Scope, path: &str, check: &'static str, problems: Vec<String>, ok: impl FnOnce() -> String) {
        if problems.is_empty() {
            self.add(s, Severity::Ok, path, check, ok());
        }
        for p in problems {
            self.add(s, Severity::Error, path, check, p);
        }
    }
}

fn eku_names(c: &CertInfo) -> String {
    let v: Vec<&str> =
        [(c.server_auth, "serverAuth"), (c.client_auth, "clientAuth")].iter().filter(|(on, _)| *on).map(|(_, n)| *n).collect();
    if v.is_empty() {
        "no EKU".into()
    } else {
        v.join(", ")
    }
}

fn san_of_host(h: &str) -> String {
    match h.parse::<IpAddr>() {
        Ok(ip) => format!("IP:{ip}"),
        Err(_) => format!("DNS:{h}"),
    }
}

fn same_ip_san(a: &str, b: &str) -> bool {
    match (a.strip_prefix("IP:").and_then(|x| x.parse::<IpAddr>().ok()), b.strip_prefix("IP:").and_then(|x| x.parse::<IpAddr>().ok())) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// What kind of secret a file outside the layout holds, if any.
fn secret_kind(path: &str, f: Option<&TreeFile>) -> Option<&'static str> {
    let text = f.map(|f| String::from_utf8_lossy(&f.bytes).into_owned()).unwrap_or_default();
    if text.contains("PRIVATE KEY-----") {
        Some("a private key")
    } else if text.contains("client-key-data") {
        Some("a kubeconfig with a client key")
    } else if path.ends_with(".key") {
        Some("a key")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_hosts() {
        assert_eq!(url_host("https://lb.example.com:6443"), Some(("https".into(), "lb.example.com".into())));
        assert_eq!(url_host("https://[fd00::11]:6443"), Some(("https".into(), "fd00::11".into())));
        assert_eq!(url_host("https://10.0.0.1"), Some(("https".into(), "10.0.0.1".into())));
        assert_eq!(url_host("nonsense"), None);
        assert_eq!(endpoint_host("[fd00::1]:6443"), "fd00::1");
        assert_eq!(endpoint_host("k8s.example:6443"), "k8s.example");
    }

    #[test]
    fn wildcards_match_one_label() {
        assert!(dns_matches("*.example.com", "a.example.com"));
        assert!(!dns_matches("*.example.com", "a.b.example.com"));
        assert!(dns_matches("API.example.com", "api.example.com"));
    }

    #[test]
    fn table_is_aligned_with_a_summary() {
        let f = |severity, node: &str, path: &str, check, message: &str| Finding {
            severity,
            node: node.into(),
            path: path.into(),
            check,
            message: message.into(),
        };
        let r = Report {
            findings: vec![
                f(Severity::Error, "cp1", "etc/kubernetes/pki/ca.key", CHECK_MODE, "0644"),
                f(Severity::Ok, "worker-long", "a", CHECK_CHAIN, "fine"),
            ],
        };
        let t = r.render_table();
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("SEVERITY  NODE         FILE"), "{t}");
        assert_eq!(lines[1].find("cp1"), lines[0].find("NODE"));
        assert_eq!(lines[2].find("chain"), lines[0].find("CHECK"));
        assert_eq!(lines[3], "1 error, 0 warnings, 1 check passed");
        assert!(r.has_errors());
    }

    #[test]
    fn cells_are_escaped() {
        assert_eq!(escape("etc/a b"), "etc/a b");
        assert_eq!(escape("a\nb\u{1b}[31m\u{202e}\\"), "a\\nb\\u{1b}[31m\\u{202e}\\\\");
        let r = Report {
            findings: vec![Finding {
                severity: Severity::Error,
                node: "n\r".into(),
                path: "x\ny".into(),
                check: CHECK_ARCHIVE,
                message: "m\u{7}".into(),
            }],
        };
        let t = r.render_table();
        assert_eq!(t.lines().count(), 3, "{t}");
        assert!(t.contains("n\\r") && t.contains("x\\ny") && t.contains("m\\u{7}") && !t.contains('\u{7}'), "{t}");
    }

    #[test]
    fn garbage_is_a_finding_not_a_panic() {
        let l = load_tarball(b"\x1f\x8bnot really");
        assert!(!l.problems.is_empty());
        assert!(CertInfo::from_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err());
        assert!(parse_kubeconfig(b"clusters: 3").is_err());
        assert!(key_matches(b"\xff\xfe", b"").is_err());
    }
}
