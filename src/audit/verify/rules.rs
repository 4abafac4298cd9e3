//! verify's own rules: what a node may hold and how secrets are kept. Files are recognised by
//! their content (a key by the certificate or public key it belongs to, a document by its kind),
//! never by their path or by what plan.json says they are, and a node's control-plane and etcd
//! roles are taken only when its own certificates prove them (and plan.json, when there is one,
//! agrees). plan.json and profiles add expectations (paths, SANs, modes of other files); they
//! never relax these rules.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use zeroize::Zeroizing;

use super::{
    BundleFacts, NodeInfo, Scope, Severity, TreeFile, Verifier, B64, CHECK_JOIN_TOKEN, CHECK_KUBELET, CHECK_PRIVILEGE, CHECK_ROLES,
};
use crate::audit::facts::*;

// =============================================================================================
// Roles

/// A role that gives a node more than a worker holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Role {
    ControlPlane,
    Etcd,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::ControlPlane => "control-plane",
            Role::Etcd => "etcd",
        }
    }
}

fn roles_text(roles: &BTreeSet<Role>) -> String {
    if roles.is_empty() {
        "worker only".into()
    } else {
        roles.iter().map(|r| r.name()).collect::<Vec<_>>().join(", ")
    }
}

// =============================================================================================
// What a file holds

/// What one file holds, recognised by its content.
#[derive(Default)]
pub(super) struct Scan {
    /// Certificates: PEM blocks, and the client-certificate-data of kubeconfigs.
    pub certs: Vec<CertInfo>,
    /// Private keys (PEM blocks, client-key-data), each by its public key (None: unreadable).
    pub keys: Vec<Option<Vec<u8>>>,
    /// PUBLIC KEY blocks (DER SubjectPublicKeyInfo).
    pub public_keys: Vec<Vec<u8>>,
    /// YAML documents with a `kind`, and those a ConfigMap holds in its data.
    pub docs: Vec<serde_json::Value>,
    /// Bootstrap tokens in credential fields (kubeconfig users, kubeadm configs): (token, field).
    pub tokens: Vec<(Zeroizing<String>, &'static str)>,
    /// What makes the file a secret (it must then be 0600).
    pub secret: Option<&'static str>,
}

/// Reads what `bytes` holds. `spki_of` turns a private key's PEM into its public key.
pub(super) fn scan(path: &str, bytes: &[u8], spki_of: &mut dyn FnMut(&[u8]) -> Option<Vec<u8>>) -> Scan {
    let mut s = Scan::default();
    let is_pem = bytes.windows(11).any(|w| w == b"-----BEGIN ");
    if is_pem {
        if let Ok(blocks) = pem::parse_many(bytes) {
            for b in &blocks {
                match b.tag() {
                    "CERTIFICATE" => s.certs.extend(CertInfo::from_der(b.contents()).ok()),
                    t if t.ends_with("PRIVATE KEY") => {
                        let one = Zeroizing::new(pem::encode(b));
                        s.keys.push(spki_of(one.as_bytes()));
                    }
                    "PUBLIC KEY" => s.public_keys.push(b.contents().to_vec()),
                    _ => {}
                }
            }
        }
        if s.keys.is_empty() && bytes.windows(16).any(|w| w == b"PRIVATE KEY-----") {
            s.keys.push(None);
        }
    }
    let text = std::str::from_utf8(bytes).ok();
    let mut credentials = false;
    if let Some(text) = text.filter(|_| !is_pem && !path.ends_with(".service")) {
        for doc in documents(text) {
            credentials |= read_doc(&doc, &mut s, spki_of);
            if doc.get("kind").and_then(|k| k.as_str()) == Some("ConfigMap") {
                // kube-system/kubelet-config holds a KubeletConfiguration, cluster-info a kubeconfig.
                for v in doc.get("data").and_then(|d| d.as_object()).into_iter().flat_map(|d| d.values()) {
                    for inner in v.as_str().map(documents).unwrap_or_default() {
                        if inner.get("kind").is_some() {
                            credentials |= read_doc(&inner, &mut s, spki_of);
                            s.docs.push(inner);
                        }
                    }
                }
            }
            if doc.get("kind").is_some() {
                s.docs.push(doc);
            }
        }
    }
    let kind_is = |k: &str| s.docs.iter().any(|d| d.get("kind").and_then(|x| x.as_str()) == Some(k));
    s.secret = if !s.keys.is_empty() {
        Some("a private key")
    } else if credentials {
        Some("a kubeconfig with credentials")
    } else if kind_is("EncryptionConfiguration") {
        Some("an encryption configuration")
    } else if kind_is("Secret") {
        Some("a Secret")
    } else if !s.tokens.is_empty() || text.is_some_and(contains_token) {
        Some("a bootstrap token")
    } else {
        None
    };
    s
}

/// Collects a document's certificates, keys and tokens; true for a kubeconfig with credentials.
fn read_doc(doc: &serde_json::Value, s: &mut Scan, spki_of: &mut dyn FnMut(&[u8]) -> Option<Vec<u8>>) -> bool {
    let str_at =
        |v: &serde_json::Value, dotted: &str| dotted.split('.').try_fold(v, |v, k| v.get(k)).and_then(|v| v.as_str()).map(str::to_string);
    let mut credentials = false;
    match doc.get("kind").and_then(|k| k.as_str()) {
        Some("Config") => {
            for user in doc.get("users").and_then(|u| u.as_array()).into_iter().flatten() {
                let Some(u) = user.get("user") else { continue };
                credentials |= ["client-key-data", "client-key", "token", "tokenFile", "password"].iter().any(|k| u.get(*k).is_some());
                if let Some(pem) = str_at(u, "client-certificate-data").and_then(|d| B64.decode(d.trim()).ok()) {
                    s.certs.extend(CertInfo::all_from_pem(&pem).unwrap_or_default());
                }
                if let Some(key) = str_at(u, "client-key-data") {
                    let pem = Zeroizing::new(B64.decode(key.trim()).unwrap_or_default());
                    s.keys.push(spki_of(&pem));
                }
                if let Some(t) = str_at(u, "token") {
                    s.tokens.push((Zeroizing::new(t), "token"));
                }
            }
        }
        Some("JoinConfiguration") => {
            for (field, name) in [
                ("discovery.bootstrapToken.token", "discovery.bootstrapToken.token"),
                ("discovery.tlsBootstrapToken", "discovery.tlsBootstrapToken"),
            ] {
                if let Some(t) = str_at(doc, field) {
                    s.tokens.push((Zeroizing::new(t), name));
                }
            }
        }
        Some("InitConfiguration") => {
            for t in doc.get("bootstrapTokens").and_then(|b| b.as_array()).into_iter().flatten() {
                if let Some(t) = str_at(t, "token") {
                    s.tokens.push((Zeroizing::new(t), "bootstrapTokens[].token"));
                }
            }
        }
        _ => {}
    }
    credentials
}

/// Whether `text` holds something of the form of a bootstrap token (`[a-z0-9]{6}.[a-z0-9]{16}`,
/// not part of a longer word).
pub(super) fn contains_token(text: &str) -> bool {
    let b = text.as_bytes();
    let tok = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let word = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_' | b'/' | b'+');
    let mut i = 0;
    while i + 23 <= b.len() {
        let ok = b[i + 6] == b'.'
            && b[i..i + 6].iter().all(|c| tok(*c))
            && b[i + 7..i + 23].iter().all(|c| tok(*c))
            && (i == 0 || !word(b[i - 1]))
            && b.get(i + 23).is_none_or(|c| !word(*c));
        if ok {
            return true;
        }
        i += 1;
    }
    false
}

// =============================================================================================
// Who may hold what: the rule table

/// How a rule recognises what it is about.
#[derive(Debug, Clone, Copy)]
pub(super) enum Recognised {
    /// A private key whose public key is a CA certificate's (the state's, or one in the tree).
    CaKey,
    /// A private key whose public key is the service-account key (state/pki/sa.pub, or a PUBLIC
    /// KEY in the tree).
    SaKey,
    /// A YAML document of this kind.
    Document(&'static str),
    /// The key of a certificate in one of these groups (O), not signed by the etcd or the
    /// front-proxy CA (for those, O means nothing to the API server).
    KeyInGroup(&'static [&'static str]),
    /// A certificate, or the key of one, naming another node: CN `system:node:<other>`, or an
    /// etcd member certificate (signed by the etcd CA) whose CN is not this node.
    OtherNode,
    /// The key of a certificate with one of these CNs.
    KeyOfName(&'static [&'static str]),
    /// The key of a certificate signed by this CA.
    KeyOfSigner(&'static str),
    /// A private key of no certificate or public key verify can place, or of a certificate none
    /// of the known CAs signed.
    UnplacedKey,
}

/// One rule of least privilege: what it recognises, and which trusted roles may hold it.
pub(super) struct HoldRule {
    pub id: &'static str,
    pub what: &'static str,
    pub recognised: Recognised,
    /// The roles that may hold it; empty: no node may.
    pub roles: &'static [Role],
    pub why: &'static str,
}

const CP: &[Role] = &[Role::ControlPlane];

/// The rules, in order: the first that recognises a key, certificate or document decides who may
/// hold it. Anything no rule recognises (the node's own kubelet and etcd-member files, CA
/// certificates, bootstrap tokens) may be held by every node.
pub(super) const HOLD_RULES: &[HoldRule] = &[
    HoldRule {
        id: "ca-key",
        what: "a CA's private key",
        recognised: Recognised::CaKey,
        roles: CP,
        why: "it signs certificates every component of the cluster trusts",
    },
    HoldRule {
        id: "sa-key",
        what: "the service-account signing key",
        recognised: Recognised::SaKey,
        roles: CP,
        why: "it signs service-account tokens, so it can impersonate every pod",
    },
    HoldRule {
        id: "encryption-config",
        what: "the encryption configuration",
        recognised: Recognised::Document("EncryptionConfiguration"),
        roles: CP,
        why: "its keys decrypt every Secret stored in etcd",
    },
    HoldRule {
        id: "cluster-admin",
        what: "a cluster-admin credential",
        recognised: Recognised::KeyInGroup(&["system:masters", "kubeadm:cluster-admins"]),
        roles: CP,
        why: "it holds every permission in the cluster",
    },
    HoldRule {
        id: "other-node",
        what: "another node's identity",
        recognised: Recognised::OtherNode,
        roles: &[],
        why: "a node holds only its own identity, else it can act as the other node",
    },
    HoldRule {
        id: "control-plane-key",
        what: "a control-plane component's key",
        recognised: Recognised::KeyOfName(&[
            "kube-apiserver",
            "kube-apiserver-kubelet-client",
            "kube-apiserver-etcd-client",
            "front-proxy-client",
            "system:kube-controller-manager",
            "system:kube-scheduler",
        ]),
        roles: CP,
        why: "it acts as the API server, the controller manager or the scheduler",
    },
    HoldRule {
        id: "front-proxy-key",
        what: "a front-proxy client key",
        recognised: Recognised::KeyOfSigner("front-proxy-ca"),
        roles: CP,
        why: "the API server lets its holder act as any user",
    },
    HoldRule {
        id: "etcd-key",
        what: "an etcd member's key",
        recognised: Recognised::KeyOfSigner("etcd-ca"),
        roles: &[Role::Etcd],
        why: "it reads and writes etcd, where every Secret is stored",
    },
    HoldRule {
        id: "unplaced-key",
        what: "a private key of no certificate of this node",
        recognised: Recognised::UnplacedKey,
        roles: CP,
        why: "a node without the control-plane role holds only the keys of its own certificates, signed by the cluster's CAs",
    },
];

/// A CA certificate verify knows: the state's (in a bundle), or one in the node's tree.
struct KnownCa<'a> {
    /// `ca`, `front-proxy-ca`, `etcd-ca`, or `unknown`.
    id: &'static str,
    label: String,
    cert: &'a CertInfo,
    from_state: bool,
}

/// What a private key belongs to.
enum KeyOf<'a> {
    Ca(&'a KnownCa<'a>),
    Sa(String),
    Cert { cert: &'a CertInfo, signer: Option<&'static str> },
    Nothing,
}

/// One thing a node holds, as the rules see it.
enum Item<'a> {
    Key(KeyOf<'a>),
    Cert { cert: &'a CertInfo, signer: Option<&'static str> },
    Doc(&'a str),
}

fn ca_id_of_cn(cn: &str) -> &'static str {
    crate::pki::catalog::CERTS
        .iter()
        .filter(|e| e.is_ca())
        .find(|e| matches!(e.common_name, crate::pki::catalog::CommonName::Fixed(n) if n == cn))
        .map(|e| e.id)
        .unwrap_or("unknown")
}

/// The CA whose certificate an artifact is (`ca.crt` → `ca`).
fn ca_id_of_artifact(artifact: &str) -> Option<&'static str> {
    let id = artifact.strip_suffix(".crt")?;
    crate::pki::catalog::CERTS.iter().find(|e| e.is_ca() && e.id == id).map(|e| e.id)
}

fn signed_by(cert: &CertInfo, ca: &CertInfo) -> bool {
    cert.der != ca.der && cert.issuer_raw == ca.subject_raw && signature_ok(cert, ca).is_ok()
}

impl Recognised {
    /// How `item` is recognised by this rule, for the message; None when it is not.
    fn recognise(self, item: &Item, node: &str) -> Option<String> {
        let other_node = |cert: &CertInfo, signer: Option<&str>| -> Option<String> {
            let other = match cert.cn.strip_prefix("system:node:") {
                Some(n) => n.to_string(),
                None if signer == Some("etcd-ca")
                    && !cert.is_ca
                    && !["kube-etcd-healthcheck-client", "kube-apiserver-etcd-client"].contains(&cert.cn.as_str()) =>
                {
                    cert.cn.clone()
                }
                None => return None,
            };
            (other != node).then(|| format!("CN {:?} names node {other:?}, not this node {node:?}", cert.cn))
        };
        match (self, item) {
            (Recognised::CaKey, Item::Key(KeyOf::Ca(ca))) => {
                Some(format!("it is the key of the CA certificate {} (CN {:?})", ca.label, ca.cert.cn))
            }
            (Recognised::SaKey, Item::Key(KeyOf::Sa(label))) => Some(format!("it is the private half of {label}")),
            (Recognised::Document(kind), Item::Doc(k)) if *k == kind => Some(format!("a document of kind {kind}")),
            (Recognised::KeyInGroup(groups), Item::Key(KeyOf::Cert { cert, signer })) => {
                let g = cert.orgs.iter().find(|o| groups.contains(&o.as_str()))?;
                (!matches!(signer, Some("etcd-ca" | "front-proxy-ca")))
                    .then(|| format!("the key of a client certificate (CN {:?}) in group {g}", cert.cn))
            }
            (Recognised::OtherNode, Item::Cert { cert, signer }) => other_node(cert, *signer).map(|w| format!("a certificate whose {w}")),
            (Recognised::OtherNode, Item::Key(KeyOf::Cert { cert, signer })) => {
                other_node(cert, *signer).map(|w| format!("the key of a certificate whose {w}"))
            }
            (Recognised::KeyOfName(names), Item::Key(KeyOf::Cert { cert, .. })) => {
                names.contains(&cert.cn.as_str()).then(|| format!("the key of the certificate of {:?}", cert.cn))
            }
            (Recognised::KeyOfSigner(ca), Item::Key(KeyOf::Cert { cert, signer })) => {
                (*signer == Some(ca)).then(|| format!("the key of a certificate (CN {:?}) signed by {ca}", cert.cn))
            }
            (Recognised::UnplacedKey, Item::Key(KeyOf::Nothing)) => {
                Some("it belongs to no certificate or public key in this tree or the state".into())
            }
            (Recognised::UnplacedKey, Item::Key(KeyOf::Cert { cert, signer: None })) => {
                Some(format!("the key of a certificate (CN {:?}) that none of the cluster's CAs signed", cert.cn))
            }
            _ => None,
        }
    }
}

// =============================================================================================
// KubeletConfiguration: no anonymous access, Webhook authorization, no read-only port

/// What a KubeletConfiguration field (or the kubelet flag that sets it) must be.
#[derive(Debug, Clone, Copy)]
enum Allowed {
    False,
    Exactly(&'static str),
    Zero,
}

struct KubeletRule {
    /// The KubeletConfiguration field, dotted.
    field: &'static str,
    /// The kubelet flag that sets the same.
    flag: &'static str,
    allowed: Allowed,
    why: &'static str,
}

/// An absent field is fine: kubelet.config.k8s.io/v1beta1 defaults to false, Webhook and 0.
const KUBELET_RULES: &[KubeletRule] = &[
    KubeletRule {
        field: "authentication.anonymous.enabled",
        flag: "anonymous-auth",
        allowed: Allowed::False,
        why: "anyone who reaches the kubelet's port could use its API (exec, logs, pods) unauthenticated",
    },
    KubeletRule {
        field: "authorization.mode",
        flag: "authorization-mode",
        allowed: Allowed::Exactly("Webhook"),
        why: "only Webhook asks the API server (RBAC, the Node authorizer) who may use the kubelet's API",
    },
    KubeletRule {
        field: "readOnlyPort",
        flag: "read-only-port",
        allowed: Allowed::Zero,
        why: "the read-only port serves pod and node details without authentication",
    },
];

impl Allowed {
    /// Why `v` is not allowed (None when it is).
    fn problem(self, v: &serde_json::Value) -> Option<String> {
        match self {
            Allowed::False => match v {
                serde_json::Value::Bool(false) => None,
                serde_json::Value::Bool(true) => Some("is true, want false".into()),
                other => Some(format!("is {other}, not a boolean (want false)")),
            },
            Allowed::Exactly(want) => match v.as_str() {
                Some(s) if s == want => None,
                _ => Some(format!("is {v}, want {want}")),
            },
            Allowed::Zero => match v.as_i64() {
                Some(0) => None,
                Some(n) => Some(format!("is {n}, want 0 (disabled)")),
                None => Some(format!("is {v}, not a port number (want 0)")),
            },
        }
    }

    /// The same for a flag's text.
    fn flag_problem(self, v: &str) -> Option<String> {
        let value = match self {
            Allowed::False => v.parse::<bool>().map(serde_json::Value::Bool).unwrap_or_else(|_| serde_json::Value::from(v)),
            Allowed::Exactly(_) => serde_json::Value::from(v),
            Allowed::Zero => v.parse::<i64>().map(serde_json::Value::from).unwrap_or_else(|_| serde_json::Value::from(v)),
        };
        self.problem(&value)
    }
}

/// Every problem of one KubeletConfiguration document.
pub(super) fn kubelet_problems(doc: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for r in KUBELET_RULES {
        let Some(v) = r.field.split('.').try_fold(doc, |v, k| v.get(k)) else { continue };
        if let Some(p) = r.allowed.problem(v) {
            out.push(format!("KubeletConfiguration {} {p}: {}", r.field, r.why));
        }
    }
    out
}

/// Every problem of a kubelet unit's flags.
fn kubelet_flag_problems(unit: &str) -> Option<Vec<String>> {
    let argv = exec_start(unit)?;
    if argv.first()?.rsplit('/').next()? != "kubelet" {
        return None;
    }
    let mut out = Vec::new();
    let mut it = argv.iter().skip(1).peekable();
    while let Some(arg) = it.next() {
        let Some(flag) = arg.strip_prefix("--") else { continue };
        let (name, value) = match flag.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => match it.peek() {
                Some(v) if !v.starts_with("--") => (flag.to_string(), it.next().cloned().unwrap_or_default()),
                _ => (flag.to_string(), "true".to_string()),
            },
        };
        for r in KUBELET_RULES.iter().filter(|r| r.flag == name) {
            if let Some(p) = r.allowed.flag_problem(&value) {
                out.push(format!("kubelet --{name} {p}: {}", r.why));
            }
        }
    }
    Some(out)
}

// =============================================================================================
// The checks

impl Verifier {
    /// Reads what every file of a node holds (each key parsed once per run).
    pub(super) fn scan_files(&mut self, files: &BTreeMap<String, TreeFile>) -> BTreeMap<String, Scan> {
        let cache = &mut self.spki_cache;
        let mut spki_of = |pem: &[u8]| -> Option<Vec<u8>> {
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, pem).as_ref().to_vec();
            cache
                .entry(digest)
                .or_insert_with(|| {
                    let text = std::str::from_utf8(pem).ok()?;
                    crate::pki::keys::Key::from_pem(text).ok().map(|k| k.spki_der())
                })
                .clone()
        };
        files.iter().map(|(p, f)| (p.clone(), scan(p, &f.bytes, &mut spki_of))).collect()
    }

    /// The rules above for one node: its trusted roles, what it may hold, its
    /// KubeletConfigurations and the bootstrap tokens it carries.
    pub(super) fn check_rules(
        &mut self,
        s: &Scope,
        info: &NodeInfo,
        files: &BTreeMap<String, TreeFile>,
        scans: &BTreeMap<String, Scan>,
        facts: &BundleFacts,
    ) {
        // The CAs: the state's first, then those of the tree.
        let mut known: Vec<KnownCa> = facts
            .state_cas
            .iter()
            .map(|(id, c)| KnownCa {
                id,
                label: format!("state/pki/{}", if *id == "etcd-ca" { "etcd/ca.crt".to_string() } else { format!("{id}.crt") }),
                cert: c,
                from_state: true,
            })
            .collect();
        // Roots and intermediates (an imported CA need not be self-signed). The first CA of a file
        // the layout places a CA at is that CA, whatever its name (an imported CA keeps the one
        // its issuer gave it): those first, before the same CA carried after a leaf; others are
        // known by kubeadm's names.
        let placed = |path: &String| info.layout.get(path).and_then(|e| ca_id_of_artifact(&e.artifact_id));
        let mut found: Vec<(Option<&'static str>, &String, &CertInfo)> = Vec::new();
        for (path, scan) in scans {
            for (i, c) in scan.certs.iter().enumerate().filter(|(_, c)| c.is_ca) {
                found.push((placed(path).filter(|_| i == 0), path, c));
            }
        }
        found.sort_by_key(|(id, _, _)| id.is_none());
        for (placed, path, c) in found {
            if known.iter().any(|k| k.cert.der == c.der) {
                continue;
            }
            let id = facts
                .state_cas
                .iter()
                .find(|(_, st)| st.spki_raw == c.spki_raw)
                .map(|(id, _)| *id)
                .or(placed)
                .unwrap_or_else(|| ca_id_of_cn(&c.cn));
            known.push(KnownCa { id, label: format!("{}{path}", s.prefix), cert: c, from_state: false });
        }
        let signer_of = |cert: &CertInfo| known.iter().find(|k| signed_by(cert, k.cert)).map(|k| k.id);
        // Roles are proven with the state's CAs when there is a state, else with the tree's.
        let has_state = known.iter().any(|k| k.from_state);
        let trusted =
            |id: &str, cert: &CertInfo| known.iter().filter(|k| k.from_state == has_state && k.id == id).any(|k| signed_by(cert, k.cert));

        let name = info.name.as_str();
        let mut proof: BTreeMap<Role, String> = BTreeMap::new();
        for (path, scan) in scans {
            for c in scan.certs.iter().filter(|c| !c.is_ca && c.server_auth) {
                if c.cn == "kube-apiserver" && c.dns.iter().any(|d| d.eq_ignore_ascii_case(name)) && trusted("ca", c) {
                    proof.entry(Role::ControlPlane).or_insert_with(|| path.clone());
                }
                if c.cn == name && c.client_auth && trusted("etcd-ca", c) {
                    proof.entry(Role::Etcd).or_insert_with(|| path.clone());
                }
            }
        }
        let mut roles = BTreeSet::new();
        for (role, needs) in [
            (
                Role::ControlPlane,
                "kube-apiserver serving certificate for this node (CN kube-apiserver, serverAuth, DNS:<node>) signed by the cluster CA",
            ),
            (Role::Etcd, "etcd member certificate for this node (CN <node>, serverAuth and clientAuth) signed by the etcd CA"),
        ] {
            let planned = info.roles.contains(role.name());
            match (proof.get(&role), info.from_plan) {
                (Some(_), true) if !planned => {}
                (Some(_), _) => {
                    roles.insert(role);
                }
                (None, true) if planned => self.add(
                    s,
                    Severity::Error,
                    "",
                    CHECK_ROLES,
                    format!(
                        "plan.json gives {name} the {} role, but its files hold no {}: the node is judged without that role",
                        role.name(),
                        needs.replace("<node>", name)
                    ),
                ),
                (None, _) => {}
            }
        }
        let proven: Vec<String> = proof.iter().filter(|(r, _)| roles.contains(*r)).map(|(r, p)| format!("{} ({p})", r.name())).collect();
        let basis =
            if info.from_plan { "plan.json and the node's own certificates agree" } else { "proven by the node's own certificates" };
        let msg = if proven.is_empty() { format!("worker only: {basis}") } else { format!("{}: {basis}", proven.join(", ")) };
        self.add(s, Severity::Ok, "", CHECK_ROLES, msg);

        // Who may hold what.
        let mut sa: Vec<(String, &Vec<u8>)> = facts.state_sa.iter().map(|k| ("state/pki/sa.pub".to_string(), k)).collect();
        for (path, scan) in scans {
            sa.extend(scan.public_keys.iter().map(|k| (format!("{}{path}", s.prefix), k)));
        }
        let certs: Vec<&CertInfo> = scans.values().flat_map(|s| s.certs.iter()).collect();
        let mut violations: BTreeMap<(String, &'static str), String> = BTreeMap::new();
        let mut items_seen = 0usize;
        for (path, scan) in scans {
            let mut items: Vec<Item> = Vec::new();
            for spki in &scan.keys {
                let of = match spki {
                    None => KeyOf::Nothing,
                    Some(k) => {
                        if let Some(ca) = known.iter().find(|c| same_public_key(k, &c.cert.spki_raw)) {
                            KeyOf::Ca(ca)
                        } else if let Some((label, _)) = sa.iter().find(|(_, p)| same_public_key(k, p)) {
                            KeyOf::Sa(label.clone())
                        } else if let Some(c) = certs.iter().find(|c| same_public_key(k, &c.spki_raw)) {
                            KeyOf::Cert { cert: c, signer: signer_of(c) }
                        } else {
                            KeyOf::Nothing
                        }
                    }
                };
                items.push(Item::Key(of));
            }
            items.extend(scan.certs.iter().map(|c| Item::Cert { cert: c, signer: signer_of(c) }));
            items.extend(scan.docs.iter().filter_map(|d| d.get("kind").and_then(|k| k.as_str())).map(Item::Doc));
            items_seen += items.len();
            for item in &items {
                let Some((rule, how)) = HOLD_RULES.iter().find_map(|r| r.recognised.recognise(item, name).map(|how| (r, how))) else {
                    continue;
                };
                if rule.roles.iter().any(|r| roles.contains(r)) {
                    continue;
                }
                let who = match rule.roles {
                    [] => "no node may hold it".to_string(),
                    rs => format!("only a node with the {} role may hold it", rs.iter().map(|r| r.name()).collect::<Vec<_>>().join(" or ")),
                };
                violations.entry((path.clone(), rule.id)).or_insert_with(|| {
                    format!(
                        "{} ({how}): {who}, as {}; this node's trusted roles: {} [rule {}]",
                        rule.what,
                        rule.why,
                        roles_text(&roles),
                        rule.id
                    )
                });
            }
        }
        if violations.is_empty() {
            self.add(
                s,
                Severity::Ok,
                "",
                CHECK_PRIVILEGE,
                format!("none of {items_seen} keys, certificates and documents is beyond its trusted roles ({})", roles_text(&roles)),
            );
        }
        for ((path, _), msg) in violations {
            self.add(s, Severity::Error, &path, CHECK_PRIVILEGE, msg);
        }

        // KubeletConfigurations, wherever they are, and kubelet units' flags.
        for (path, scan) in scans {
            let mut problems = Vec::new();
            let mut seen = false;
            for d in scan.docs.iter().filter(|d| d.get("kind").and_then(|k| k.as_str()) == Some("KubeletConfiguration")) {
                seen = true;
                problems.extend(kubelet_problems(d));
            }
            if path.ends_with(".service") {
                if let Some(p) = files.get(path).and_then(|f| std::str::from_utf8(&f.bytes).ok()).and_then(kubelet_flag_problems) {
                    seen = true;
                    problems.extend(p);
                }
            }
            if seen {
                self.result(s, path, CHECK_KUBELET, problems, || {
                    "anonymous authentication off, Webhook authorization, no read-only port".into()
                });
            }
        }

        // Bootstrap tokens the node carries (bootstrap-kubelet.conf, kubeadm-join.yaml): known to
        // the bundle, unexpired, able to authenticate.
        let Some(known) = &facts.tokens else { return };
        for (path, scan) in scans {
            for (token, field) in &scan.tokens {
                match super::tokens::token_status(token, known, self.now, true) {
                    Ok(note) => self.add(s, Severity::Ok, path, CHECK_JOIN_TOKEN, format!("{field}: {note}")),
                    Err(p) => self.add(s, Severity::Error, path, CHECK_JOIN_TOKEN, format!("{field}: {p}")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_found_only_as_whole_words() {
        assert!(contains_token("kubeadm join x --token abcdef.0123456789abcdef --discovery"));
        assert!(contains_token("token: \"abcdef.0123456789abcdef\""));
        assert!(!contains_token("host abcdef.0123456789abcdef.example.com"));
        assert!(!contains_token("xabcdef.0123456789abcdef"));
        assert!(!contains_token("abcdef.0123456789abcdeF"));
        assert!(!contains_token("eyJhbGciOiJIUzI1NiIsImtpZCI6ImtwZ2syZiJ9..QEvtBbE2J-CpJW0Ifg8D8mEj93"));
    }

    #[test]
    fn kubelet_rules_hold_for_documents_and_flags() {
        let doc = |y: &str| documents(y).remove(0);
        assert!(kubelet_problems(&doc("kind: KubeletConfiguration\n")).is_empty(), "absent fields are v1beta1's safe defaults");
        let ok =
            "kind: KubeletConfiguration\nauthentication: {anonymous: {enabled: false}}\nauthorization: {mode: Webhook}\nreadOnlyPort: 0\n";
        assert!(kubelet_problems(&doc(ok)).is_empty());
        let bad = "kind: KubeletConfiguration\nauthentication: {anonymous: {enabled: true}}\nauthorization: {mode: AlwaysAllow}\nreadOnlyPort: 10255\n";
        let p = kubelet_problems(&doc(bad));
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].starts_with("KubeletConfiguration authentication.anonymous.enabled is true, want false: "), "{p:?}");
        assert!(p[1].starts_with("KubeletConfiguration authorization.mode is \"AlwaysAllow\", want Webhook"), "{p:?}");
        assert!(p[2].starts_with("KubeletConfiguration readOnlyPort is 10255, want 0"), "{p:?}");
        let odd = "kind: KubeletConfiguration\nauthentication: {anonymous: {enabled: \"no\"}}\nreadOnlyPort: ten\n";
        assert_eq!(kubelet_problems(&doc(odd)).len(), 2, "malformed values are problems, not panics");

        let unit = "[Service]\nExecStart=/usr/local/bin/kubelet \\\n  --config=/etc/k8s/kubelet/config.yaml \\\n  --anonymous-auth \\\n  --authorization-mode AlwaysAllow \\\n  --read-only-port=10255\n";
        let p = kubelet_flag_problems(unit).unwrap();
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].starts_with("kubelet --anonymous-auth is true, want false"), "{p:?}");
        let fine = "[Service]\nExecStart=/usr/local/bin/kubelet --config=/c.yaml --anonymous-auth=false --read-only-port=0\n";
        assert_eq!(kubelet_flag_problems(fine), Some(vec![]));
        assert_eq!(kubelet_flag_problems("[Service]\nExecStart=/usr/local/bin/etcd --anonymous-auth\n"), None);
    }

    #[test]
    fn the_rule_table_is_well_formed() {
        let ids: BTreeSet<&str> = HOLD_RULES.iter().map(|r| r.id).collect();
        assert_eq!(ids.len(), HOLD_RULES.len(), "rule ids are unique");
        // The secrets the issue names are control-plane only; another node's identity is nobody's.
        for id in ["ca-key", "sa-key", "encryption-config", "cluster-admin"] {
            assert_eq!(HOLD_RULES.iter().find(|r| r.id == id).unwrap().roles, &[Role::ControlPlane], "{id}");
        }
        assert!(HOLD_RULES.iter().find(|r| r.id == "other-node").unwrap().roles.is_empty());
        assert_eq!(HOLD_RULES.iter().find(|r| r.id == "etcd-key").unwrap().roles, &[Role::Etcd]);
    }

    #[test]
    fn secrets_are_recognised_by_content() {
        let mut none = |_: &[u8]| None;
        let s = scan("x", b"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n", &mut none);
        assert_eq!(s.secret, Some("a private key"));
        let kc = "apiVersion: v1\nkind: Config\nusers:\n- name: u\n  user: {token: abcdef.0123456789abcdef}\n";
        let s = scan("anything.txt", kc.as_bytes(), &mut none);
        assert_eq!(s.secret, Some("a kubeconfig with credentials"));
        assert_eq!(s.tokens.len(), 1);
        let enc = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources: []\n";
        assert_eq!(scan("e", enc.as_bytes(), &mut none).secret, Some("an encryption configuration"));
        let join = "kind: JoinConfiguration\ndiscovery:\n  bootstrapToken: {token: abcdef.0123456789abcdef}\n  tlsBootstrapToken: abcdef.0123456789abcdef\n";
        let s = scan("j", join.as_bytes(), &mut none);
        assert_eq!((s.secret, s.tokens.len()), (Some("a bootstrap token"), 2));
        let cm = "kind: ConfigMap\ndata:\n  kubelet: \"kind: KubeletConfiguration\\nreadOnlyPort: 10255\\n\"\n";
        let s = scan("m", cm.as_bytes(), &mut none);
        assert!(s.docs.iter().any(|d| d["kind"] == "KubeletConfiguration"), "a ConfigMap's documents are read too");
        assert_eq!(s.secret, None);
        assert_eq!(scan("d", b"kind: Config\nclusters: []\n", &mut none).secret, None);
        // Garbage is nothing, not a panic.
        assert_eq!(scan("g", b"\xff\xfe-----BEGIN \x00", &mut none).secret, None);
    }
}
