//! The state's files: their names and formats (leaves.json, tokens.yaml, encryption.yaml,
//! cluster.yaml), the tokens and the errors of reading them.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zeroize::Zeroizing;

pub const ENCRYPTION_FILE: &str = "encryption.yaml";
pub const TOKENS_FILE: &str = "tokens.yaml";
/// Names the cluster the directory belongs to (see `output::check_owner`).
pub const MARKER_FILE: &str = "cluster.yaml";
/// Every node's leaf keys and when each leaf was issued: with them a run re-issues
/// byte-identical certificates from the state alone.
pub const LEAVES_FILE: &str = "leaves.json";

/// A leaf certificate's key and the run clock it was first issued at (the certificate follows
/// from these, the CA and the plan), and the certificate itself, so a run that would issue it
/// again keeps it without signing (and `certs renew` records its renewals here).
pub struct LeafRecord {
    pub key_pem: Zeroizing<String>,
    /// Unix seconds of the issuing run's clock.
    pub issued: i64,
    /// The certificate (PEM) as the bundle holds it.
    pub cert_pem: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeafEntry {
    node: String,
    id: String,
    issued: i64,
    key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cert: Option<String>,
}

impl Drop for LeafEntry {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.key.zeroize();
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeavesFile {
    leaves: Vec<LeafEntry>,
}

/// (node, certificate id) → its record.
pub type LeafRecords = BTreeMap<(String, String), LeafRecord>;

/// The state's leaf records file for `records`.
pub fn leaves_json(records: &LeafRecords) -> Vec<u8> {
    let leaves = records
        .iter()
        .map(|((node, id), r)| LeafEntry {
            node: node.clone(),
            id: id.clone(),
            issued: r.issued,
            key: r.key_pem.to_string(),
            cert: r.cert_pem.clone(),
        })
        .collect();
    let mut out = serde_json::to_vec_pretty(&LeavesFile { leaves }).unwrap_or_default();
    out.push(b'\n');
    out
}

pub fn read_leaves(dir: &Path) -> Result<LeafRecords, StateError> {
    let Some(text) = read_opt(dir, LEAVES_FILE)? else { return Ok(LeafRecords::new()) };
    let text = Zeroizing::new(text);
    let f: LeavesFile = serde_json::from_str(&text).map_err(|e| {
        bad(dir, LEAVES_FILE, e.to_string(), "restore it from a backup, or delete it: the leaves are then issued anew with new keys")
    })?;
    Ok(f.leaves
        .iter()
        .map(|e| {
            let record = LeafRecord { key_pem: Zeroizing::new(e.key.clone()), issued: e.issued, cert_pem: e.cert.clone() };
            ((e.node.clone(), e.id.clone()), record)
        })
        .collect())
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: {message}\n  hint: {hint}")]
    Bad { path: String, message: String, hint: String },
    /// A recorded secret is missing, unreadable or changed, or the state is incomplete or lost:
    /// the message names each file, what depends on it, its verified copies and the fixes.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Key(#[from] crate::pki::keys::KeyError),
    #[error(transparent)]
    Issue(#[from] crate::pki::issue::IssueError),
}

/// Where each CA lives inside the state directory (kubeadm's names, so the state is a pki tree).
pub fn ca_paths(id: &str) -> (String, String) {
    match id {
        "etcd-ca" => ("pki/etcd/ca.crt".into(), "pki/etcd/ca.key".into()),
        other => (format!("pki/{other}.crt"), format!("pki/{other}.key")),
    }
}

/// Where a CA rotation keeps the new CA (`rotate ca <id> start`, until `switch`), beside the CA.
pub fn ca_next_paths(id: &str) -> (String, String) {
    match id {
        "etcd-ca" => ("pki/etcd/ca-next.crt".into(), "pki/etcd/ca-next.key".into()),
        other => (format!("pki/{other}-next.crt"), format!("pki/{other}-next.key")),
    }
}

/// Where a CA rotation keeps the old CA's certificate after `switch` (trusted until `finish`).
pub fn ca_previous_path(id: &str) -> String {
    match id {
        "etcd-ca" => "pki/etcd/ca-previous.crt".into(),
        other => format!("pki/{other}-previous.crt"),
    }
}

/// CA `id`'s trust bundle as a bundle's state holds it: `pki/<id>.crt` (the CA that signs),
/// then during a rotation `pki/<id>-next.crt` or `pki/<id>-previous.crt` (see `State::trust_pem`).
/// For commands that rewrite trust files from the state on disk (token create|delete).
pub fn trust_bundle_pem(state_dir: &Path, id: &str) -> std::io::Result<Vec<u8>> {
    let mut pem = std::fs::read(state_dir.join(ca_paths(id).0))?;
    for extra in [ca_next_paths(id).0, ca_previous_path(id)] {
        if let Ok(more) = std::fs::read(state_dir.join(extra)) {
            if !pem.ends_with(b"\n") {
                pem.push(b'\n');
            }
            pem.extend(more);
        }
    }
    Ok(pem)
}

/// Where an imported CA's issuers are kept (its issuer first, up to the root): beside the CA, so
/// `pki/ca.crt` stays the signing CA alone (kubeadm takes the first certificate of ca.crt as the
/// CA, and the controller-manager's signing file must hold exactly one).
pub fn ca_chain_path(id: &str) -> String {
    match id {
        "etcd-ca" => "pki/etcd/ca-chain.crt".into(),
        other => format!("pki/{other}-chain.crt"),
    }
}

/// Reads the chain file of CA `id` into `auth` (nothing when there is none) and checks that it
/// is `auth`'s: each certificate signed by the next, ending at a self-signed root.
pub fn load_chain(dir: &Path, id: &str, auth: &mut crate::pki::issue::Authority) -> Result<Option<String>, StateError> {
    let rel = ca_chain_path(id);
    let hint = "put back the chain file `kubebundle ca import` wrote (a backup, or import the CA again with --chain)";
    let Some(text) = read_opt(dir, &rel)? else {
        // Only an imported intermediate has issuers; without them its serving certificates
        // would silently lose their chain.
        let self_signed = x509_parser::parse_x509_certificate(&auth.cert.der).is_ok_and(|(_, c)| crate::pki::import::signed_by(&c, &c));
        if !self_signed {
            return Err(bad(dir, &rel, format!("is missing, and {id} is an intermediate CA: its chain up to the root is needed"), hint));
        }
        return Ok(None);
    };
    let ders = crate::pki::import::chain_ders(&text).map_err(|e| bad(dir, &rel, e, hint))?;
    let mut child = auth.cert.der.clone();
    for der in &ders {
        let ok = match (x509_parser::parse_x509_certificate(&child), x509_parser::parse_x509_certificate(der)) {
            (Ok((_, c)), Ok((_, p))) => crate::pki::import::signed_by(&c, &p),
            _ => false,
        };
        if !ok {
            return Err(bad(dir, &rel, format!("it is not the chain of {id}: a certificate in it did not sign the one below"), hint));
        }
        child = der.clone();
    }
    let root_ok = x509_parser::parse_x509_certificate(&child).is_ok_and(|(_, c)| crate::pki::import::signed_by(&c, &c));
    if !ders.is_empty() && !root_ok {
        return Err(bad(dir, &rel, "it does not end at a self-signed root", hint));
    }
    auth.chain = ders;
    Ok(Some(text))
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Token {
    pub token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// RFC 3339, absent for a token that never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    pub usages: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// True when the config wrote the token itself (it is then not kept between runs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_config: bool,
    /// True when `kubebundle token create` made it: kept by later runs until it expires or
    /// `token delete` removes it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub created: bool,
}

impl Drop for Token {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.token.zeroize();
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({}.<secret>)", self.id())
    }
}

impl Token {
    pub fn id(&self) -> &str {
        self.token.split('.').next().unwrap_or("")
    }

    pub fn secret(&self) -> &str {
        self.token.split('.').nth(1).unwrap_or("")
    }

    pub fn expired(&self, now: OffsetDateTime) -> bool {
        self.expires
            .as_deref()
            .and_then(|e| OffsetDateTime::parse(e, &time::format_description::well_known::Rfc3339).ok())
            .is_some_and(|t| t <= now)
    }

    pub fn authenticates(&self) -> bool {
        self.usages.iter().any(|u| u == "authentication")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<Token>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EncryptionFile {
    pub(crate) keys: Vec<EncryptionKey>,
}

/// The text of `state/encryption.yaml` for `keys`, in order (the first one encrypts).
pub fn encryption_file_text(keys: &[EncryptionKey]) -> String {
    serde_saphyr::to_string(&EncryptionFile { keys: keys.to_vec() }).unwrap_or_default()
}

/// The keys of `state/encryption.yaml`, in order.
pub fn parse_encryption(text: &str) -> Result<Vec<EncryptionKey>, String> {
    serde_saphyr::from_str::<EncryptionFile>(text).map(|f| f.keys).map_err(|e| e.to_string())
}

/// The text of `state/encryption.yaml` for (name, secret) pairs, in order.
pub fn encryption_yaml(keys: &[(String, Zeroizing<String>)]) -> String {
    let keys = keys
        .iter()
        .map(|(name, secret)| EncryptionKey { name: name.clone(), secret: secret.to_string(), provider: Default::default() })
        .collect();
    serde_saphyr::to_string(&EncryptionFile { keys }).unwrap_or_default()
}

/// The text of `state/cluster.yaml`.
pub fn marker_text(cluster: &str) -> String {
    format!("# Written by kubebundle: this directory holds cluster {cluster:?}.\nclusterName: {cluster}\n")
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionKey {
    pub name: String,
    /// base64 of 32 random bytes.
    pub secret: String,
    /// The EncryptionConfiguration provider the key belongs to (absent: aescbc, so a state made
    /// before providers were chosen reads as it was written).
    #[serde(default, skip_serializing_if = "is_aescbc")]
    pub provider: crate::config::EncryptionProvider,
}

fn is_aescbc(p: &crate::config::EncryptionProvider) -> bool {
    *p == crate::config::EncryptionProvider::Aescbc
}

impl Drop for EncryptionKey {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.secret.zeroize();
    }
}

pub(crate) fn bad(dir: &Path, rel: &str, message: impl Into<String>, hint: &str) -> StateError {
    StateError::Bad { path: dir.join(rel).display().to_string(), message: message.into(), hint: hint.to_string() }
}

pub(crate) fn read_opt(dir: &Path, rel: &str) -> Result<Option<String>, StateError> {
    match std::fs::read(dir.join(rel)) {
        Ok(b) => String::from_utf8(b)
            .map(Some)
            .map_err(|_| bad(dir, rel, "not UTF-8 text", "restore it from a backup, or run with --force to replace it")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(bad(dir, rel, e.to_string(), "check the permissions of the state directory")),
    }
}

/// The join token: the first token that authenticates and has not expired at `now` (generate
/// and `token create|delete` both choose it so).
pub fn join_token(tokens: &[Token], now: OffsetDateTime) -> Option<&Token> {
    tokens.iter().find(|t| t.authenticates() && !t.expired(now))
}

/// Reads `state/tokens.yaml` (an absent file holds no tokens).
pub fn read_tokens(state_dir: &Path) -> Result<Vec<Token>, StateError> {
    match read_opt(state_dir, TOKENS_FILE)? {
        Some(text) => serde_saphyr::from_str::<TokensFile>(&text)
            .map(|f| f.tokens)
            .map_err(|e| bad(state_dir, TOKENS_FILE, e.to_string(), "fix or delete the file; a new token is then made")),
        None => Ok(Vec::new()),
    }
}

/// The text of `state/tokens.yaml`.
pub fn tokens_yaml(tokens: &[Token]) -> Result<String, StateError> {
    #[derive(Serialize)]
    struct Out<'a> {
        tokens: &'a [Token],
    }
    serde_saphyr::to_string(&Out { tokens }).map_err(|e| StateError::Config(format!("cannot write tokens.yaml: {e}")))
}
