//! `kubebundle certs check-expiration`: expiry of every certificate in a kubeadm or kubebundle tree.
//!
//! What `kubeadm certs check-expiration` reports, read offline from a directory: one row per
//! leaf certificate (files under `pki/` and client certificates of kubeconfigs) and one per CA,
//! with kubeadm's names, expiry, residual time, signing CA and "externally managed" flag, plus a
//! status that also covers a broken chain (the leaf's signature does not verify against its CA)
//! and an unreadable file. Nothing here prints or panics: bad input becomes a status.
//!
//! ## Output schema (`-o json` / `-o yaml`)
//!
//! One object, keys in camelCase. The schema is versioned by `apiVersion`; fields are only ever
//! added.
//!
//! | key | type | meaning |
//! |---|---|---|
//! | `apiVersion` | string | `kubebundle.dev/v1alpha1` |
//! | `kind` | string | `CertificateExpirationReport` |
//! | `now` | string | the time the check was made for (RFC 3339, UTC; `--now` or the clock) |
//! | `warnWithinSeconds` | integer | `--warn-within`, in seconds |
//! | `certificates` | list of Certificate | leaf certificates, in kubeadm's order (per node for a bundle) |
//! | `certificateAuthorities` | list of Certificate | `ca`, `etcd-ca`, `front-proxy-ca` (those present) |
//!
//! Certificate:
//!
//! | key | type | meaning |
//! |---|---|---|
//! | `name` | string | kubeadm's name (`apiserver`, `admin.conf`, `etcd-ca`, …); in a bundle directory prefixed with the node: `cp1/apiserver` |
//! | `path` | string | the file read: the `.crt`, or the kubeconfig holding the certificate (or the file its `client-certificate` names) |
//! | `expires` | string | notAfter, RFC 3339 UTC; `""` when unreadable |
//! | `expiresUnix` | integer | notAfter in Unix seconds; `0` when unreadable |
//! | `residualSeconds` | integer | `expiresUnix − now`, negative once expired; `0` when unreadable |
//! | `residual` | string | kubeadm's short form: `45s`, `12m`, `5h`, `364d`, `9y`; `<invalid>` once expired or when unreadable |
//! | `certificateAuthority` | string | the signing CA's name (`ca`, `etcd-ca`, `front-proxy-ca`); `""` for a CA |
//! | `externallyManaged` | boolean | kubeadm's rule: the signing CA's key (for a CA: its own key) is absent from where the tree's layout keeps it (`caKey` is `absent`) |
//! | `status` | string | `ok`, `warning` (expires within `warnWithinSeconds`, or not valid yet), `expired`, `invalid-chain` (does not verify against its CA, or the CA is missing), `unreadable` (file or kubeconfig cannot be read or parsed) |
//! | `detail` | string | why the status is not `ok`; `""` when it is |
//! | `kubeletRotated` | boolean | the kubelet rotates it itself: its certificates in `/var/lib/kubelet/pki` (`kubelet-client-current.pem` and the dated file it links to, `kubelet-server-current.pem`, a self-signed `kubelet.crt`), and kubelet.conf when it names them |
//! | `caKey` | string | where the signing CA's key (for a CA: its own) is: `node` (in the tree, where its layout keeps it), `state` (the bundle's state), `control-planes` (the layout keeps it on the control planes, not on this node), `bundle-only` (the layout keeps it on no node, only in the bundle's state, as hardway does with front-proxy-ca and etcd-ca), `absent` (not where the layout keeps it: externally managed). Only `absent` is externally managed |
//!
//! Exit code (`ExpiryReport::exit_code`): 0 all ok, 3 something is `warning`, 4 something is
//! `expired`, `invalid-chain` or `unreadable`.
//!
//! `-o prometheus` writes the node-exporter textfile format: for every certificate and CA,
//! `kubebundle_certificate_expiry_timestamp_seconds{name,path,ca,kind}` (notAfter, Unix seconds;
//! omitted for an unreadable file) and `kubebundle_certificate_chain_valid{name,path,ca,kind}`
//! (1, or 0 for `invalid-chain` and `unreadable`), `kind` being `certificate` or
//! `certificate-authority`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use crate::tree::certs::{CaKey, Site, CAS};
use crate::tree::node::{Mount, NodeTree, TreeError};
use crate::tree::target::{locate, Target};
use crate::util::text::escape;

/// `apiVersion` of the JSON/YAML report: every report's (`util::report`).
pub use crate::util::report::API_VERSION;
/// `kind` of the JSON/YAML report.
pub const KIND: &str = "CertificateExpirationReport";
/// No certificate or kubeconfig comes near this; larger files are refused unread.
const MAX_FILE: u64 = 4 << 20;

const WHAT_DIR_IS: &str = "pass a node's root (/, or the directory a node tarball was extracted into), \
/etc/kubernetes or /etc/k8s (the root is found above them), a kubeadm directory of kubeconfigs with pki/ inside, \
a certificatesDir (holding ca.crt), a kubebundle node tree (OUT/<cluster>/nodes/<node>), \
a kubebundle state directory (OUT/<cluster>/state) or a whole kubebundle bundle (OUT/<cluster>); \
--profile FILE reads a layout of your own";

pub struct ExpiryArgs {
    pub dir: PathBuf,
    pub now: OffsetDateTime,
    pub warn_within: Duration,
    /// `--profile NAME|FILE`: read the tree with this layout only, instead of recognising it
    /// among the built-in ones.
    pub profile: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExpiryError {
    #[error("cannot read {path}: {}\n  hint: {WHAT_DIR_IS}", crate::util::io_words(source))]
    Read { path: String, source: std::io::Error },
    #[error("{path} is not a node tree kubebundle knows: {why}\n  hint: {WHAT_DIR_IS}")]
    Unrecognised { path: String, why: String },
    #[error("cannot read {path}: {why}")]
    Unreadable { path: String, why: String },
    #[error("{0}")]
    Profile(String),
    #[error("{path} is not a directory\n  hint: {WHAT_DIR_IS}")]
    NotADirectory { path: String },
    #[error("{path} holds no Kubernetes certificates{also}\n  hint: {WHAT_DIR_IS}")]
    NoCertificates { path: String, also: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Ok,
    Warning,
    Expired,
    InvalidChain,
    Unreadable,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Expired => "expired",
            Status::InvalidChain => "invalid-chain",
            Status::Unreadable => "unreadable",
        }
    }

    /// Exit code contribution: 0, 3 (warning) or 4 (expired, broken chain, unreadable).
    fn severity(self) -> i32 {
        match self {
            Status::Ok => 0,
            Status::Warning => 3,
            Status::Expired | Status::InvalidChain | Status::Unreadable => 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertStatus {
    pub name: String,
    pub path: String,
    pub expires: String,
    pub expires_unix: i64,
    pub residual_seconds: i64,
    pub residual: String,
    pub certificate_authority: String,
    pub externally_managed: bool,
    pub status: Status,
    pub detail: String,
    /// The kubelet rotates it itself (`/var/lib/kubelet/pki`: kubelet-client-current.pem, the
    /// serving pair it makes); kubelet.conf naming kubelet-client-current.pem is one.
    pub kubelet_rotated: bool,
    /// Where the signing CA's key is (a CA's own key, for a CA): `node` (in the tree, where its
    /// layout keeps it), `state` (the bundle's state), `control-planes` (its layout keeps it on
    /// the control planes, not this node), `bundle-only` (on no node: only in the bundle's state)
    /// or `absent` (not where its layout keeps it: externally managed).
    pub ca_key: &'static str,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpiryReport {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub now: String,
    pub warn_within_seconds: u64,
    pub certificates: Vec<CertStatus>,
    pub certificate_authorities: Vec<CertStatus>,
    /// What the rows do not say: an imported CA's root (or an intermediate above it) that
    /// expires before the CA itself.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
    Prometheus,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "table" | "text" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "yaml" => Ok(Format::Yaml),
            "prometheus" => Ok(Format::Prometheus),
            other => Err(format!("unknown output format {other:?}: use table, json, yaml or prometheus")),
        }
    }
}

/// `--warn-within`: one parser for every command (whole days such as `30d`, or a Go duration).
pub use crate::util::duration::parse_warn_within;

impl ExpiryReport {
    /// 0 when everything is fine, 3 when something expires within `warn_within` (or is not valid
    /// yet), 4 when something has expired, a chain is broken or a file is unreadable.
    pub fn exit_code(&self) -> i32 {
        self.certificates.iter().chain(&self.certificate_authorities).map(|c| c.status.severity()).max().unwrap_or(0)
    }

    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Table => self.render_table(),
            Format::Json => match serde_json::to_string_pretty(self) {
                Ok(s) => s + "\n",
                Err(e) => format!("{{\"error\": {:?}}}\n", e.to_string()),
            },
            Format::Yaml => serde_saphyr::to_string(self).unwrap_or_else(|e| format!("# cannot render YAML: {e}\n")),
            Format::Prometheus => self.render_prometheus(),
        }
    }

    fn render_table(&self) -> String {
        let problems: Vec<&CertStatus> =
            self.certificates.iter().chain(&self.certificate_authorities).filter(|c| c.status != Status::Ok).collect();
        let with_status = !problems.is_empty();
        let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
        let expires = |c: &CertStatus| if c.status == Status::Unreadable { "<unreadable>".to_string() } else { table_date(c.expires_unix) };

        let mut head: Vec<String> =
            ["CERTIFICATE", "EXPIRES", "RESIDUAL TIME", "CERTIFICATE AUTHORITY", "EXTERNALLY MANAGED"].map(String::from).to_vec();
        if with_status {
            head.push("STATUS".into());
        }
        let mut rows = vec![head];
        for c in &self.certificates {
            let mut row =
                vec![c.name.clone(), expires(c), c.residual.clone(), c.certificate_authority.clone(), yes_no(c.externally_managed)];
            if with_status {
                row.push(c.status.label().into());
            }
            rows.push(row);
        }
        let mut out = tabulate(&rows);
        out.push('\n');

        let mut head: Vec<String> = ["CERTIFICATE AUTHORITY", "EXPIRES", "RESIDUAL TIME", "EXTERNALLY MANAGED"].map(String::from).to_vec();
        if with_status {
            head.push("STATUS".into());
        }
        let mut rows = vec![head];
        for c in &self.certificate_authorities {
            let mut row = vec![c.name.clone(), expires(c), c.residual.clone(), yes_no(c.externally_managed)];
            if with_status {
                row.push(c.status.label().into());
            }
            rows.push(row);
        }
        out += &tabulate(&rows);

        // Expiry speaks for itself in the table; other reasons get a line each.
        let notes: Vec<&CertStatus> = problems
            .into_iter()
            .filter(|c| match c.status {
                Status::InvalidChain | Status::Unreadable => true,
                Status::Warning => c.residual_seconds > i64::try_from(self.warn_within_seconds).unwrap_or(i64::MAX),
                Status::Ok | Status::Expired => false,
            })
            .collect();
        if !notes.is_empty() {
            out.push('\n');
            for c in notes {
                out +=
                    &format!("{}: {}: {} ({})\n", escape(&c.name), c.status.label(), escape(&c.detail.replace('\n', " ")), escape(&c.path));
            }
        }
        // Keys the layout keeps elsewhere, and certificates the kubelet rotates: one line each.
        let mut off: Vec<(&str, &str)> = self
            .certificates
            .iter()
            .filter(|c| !c.certificate_authority.is_empty())
            .map(|c| (c.certificate_authority.as_str(), c.ca_key))
            .chain(self.certificate_authorities.iter().map(|c| (c.name.rsplit('/').next().unwrap_or(&c.name), c.ca_key)))
            .filter(|(_, k)| *k == "control-planes" || *k == "bundle-only")
            .collect();
        off.sort();
        off.dedup();
        let rotated: Vec<&str> = self.certificates.iter().filter(|c| c.kubelet_rotated).map(|c| c.name.as_str()).collect();
        if !off.is_empty() || !rotated.is_empty() {
            out.push('\n');
        }
        for (ca, at) in off {
            let (where_, renew) = if at == "control-planes" {
                ("on the control planes, not on this node", "on a control plane or in the bundle")
            } else {
                (
                    "on no node, only in the bundle's state",
                    "in the bundle (`kubebundle certs renew ... --dir OUT/<cluster>`), then deploy the files",
                )
            };
            out += &format!(
                "{}: not externally managed: this node's layout keeps its key {where_}; renew what it signs {renew}\n",
                escape(ca)
            );
        }
        if !rotated.is_empty() {
            out += &format!("kubelet-rotated (the kubelet renews them itself while it runs): {}\n", escape(&rotated.join(", ")));
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for n in &self.notes {
                out += &format!("{}\n", escape(n));
            }
        }
        out
    }

    fn render_prometheus(&self) -> String {
        const EXPIRY: &str = "kubebundle_certificate_expiry_timestamp_seconds";
        const CHAIN: &str = "kubebundle_certificate_chain_valid";
        let all = || {
            self.certificates
                .iter()
                .map(|c| (c, "certificate"))
                .chain(self.certificate_authorities.iter().map(|c| (c, "certificate-authority")))
        };
        let labels = |c: &CertStatus, kind: &str| {
            format!(
                "name=\"{}\",path=\"{}\",ca=\"{}\",kind=\"{}\"",
                escape_label(&c.name),
                escape_label(&c.path),
                escape_label(&c.certificate_authority),
                kind
            )
        };
        let mut out = String::new();
        out += &format!("# HELP {EXPIRY} Time the certificate expires (notAfter), in Unix seconds.\n# TYPE {EXPIRY} gauge\n");
        for (c, kind) in all() {
            if c.status != Status::Unreadable {
                out += &format!("{EXPIRY}{{{}}} {}\n", labels(c, kind), c.expires_unix);
            }
        }
        out +=
            &format!("# HELP {CHAIN} 1 when the certificate is readable and verifies against its CA, 0 otherwise.\n# TYPE {CHAIN} gauge\n");
        for (c, kind) in all() {
            let valid = !matches!(c.status, Status::InvalidChain | Status::Unreadable);
            out += &format!("{CHAIN}{{{}}} {}\n", labels(c, kind), u8::from(valid));
        }
        out
    }
}

/// Label values per the Prometheus exposition format: `\`, `"` and newline escaped; any other
/// unprintable character is written as the text of its escape (`\x1b` as the four characters
/// `\`, `x`, `1`, `b`), so the file never carries an escape sequence raw.
fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for ch in v.chars() {
        match ch {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c if crate::util::text::is_unprintable(c) => s.push_str(&escape(&c.to_string()).replace('\\', "\\\\")),
            c => s.push(c),
        }
    }
    s
}

/// Go's tabwriter as kubeadm sets it up (minwidth 10, padding 3, spaces); the last column is
/// not padded, and trailing spaces are dropped.
fn tabulate(rows: &[Vec<String>]) -> String {
    // A name or path with a control character or an escape sequence is shown escaped, never raw.
    let rows: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(|c| escape(c).into_owned()).collect()).collect();
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count() + 3).max(10);
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line += cell;
            if i + 1 < row.len() {
                line += &" ".repeat(widths[i] - cell.chars().count());
            }
        }
        out += line.trim_end();
        out.push('\n');
    }
    out
}

/// kubeadm's "Jan 02, 2006 15:04 MST", in UTC.
fn table_date(unix: i64) -> String {
    let fmt = time::macros::format_description!("[month repr:short] [day], [year] [hour]:[minute] UTC");
    OffsetDateTime::from_unix_timestamp(unix).ok().and_then(|t| t.format(&fmt).ok()).unwrap_or_else(|| unix.to_string())
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// apimachinery's `duration.ShortHumanDuration`, which kubeadm prints as RESIDUAL TIME, except
/// that any negative residual is `<invalid>` (the clock here is exact, no 2-second tolerance).
pub fn short_human_duration(seconds: i64) -> String {
    if seconds < 0 {
        return "<invalid>".into();
    }
    let hours = seconds / 3600;
    if seconds < 60 {
        format!("{seconds}s")
    } else if seconds < 3600 {
        format!("{}m", seconds / 60)
    } else if hours < 24 {
        format!("{hours}h")
    } else if hours < 24 * 365 {
        format!("{}d", hours / 24)
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

// =============================================================================================
// Reading certificates

/// What the checks need from one certificate.
struct Cert {
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    tbs: Vec<u8>,
    sig_alg: String,
    sig: Vec<u8>,
    spki_alg: String,
    spki_curve: Option<String>,
    spki_key: Vec<u8>,
}

impl Cert {
    fn from_der(der: &[u8]) -> Result<Cert, String> {
        let (_, x) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("not a valid X.509 certificate: {e}"))?;
        let spki = x.public_key();
        let is_ec = spki.algorithm.algorithm.to_id_string() == "1.2.840.10045.2.1";
        let spki_curve = spki
            .algorithm
            .parameters
            .as_ref()
            .filter(|_| is_ec)
            .and_then(|p| x509_parser::der_parser::oid::Oid::try_from(p.clone()).ok())
            .map(|o| o.to_id_string());
        Ok(Cert {
            not_before: x.validity().not_before.to_datetime(),
            not_after: x.validity().not_after.to_datetime(),
            tbs: x.tbs_certificate.as_ref().to_vec(),
            sig_alg: x.signature_algorithm.algorithm.to_id_string(),
            sig: x.signature_value.data.to_vec(),
            spki_alg: spki.algorithm.algorithm.to_id_string(),
            spki_curve,
            spki_key: spki.subject_public_key.data.to_vec(),
        })
    }

    /// Every certificate of a PEM file (a CA file may hold several), or one DER certificate.
    fn all_from_bytes(bytes: &[u8]) -> Result<Vec<Cert>, String> {
        match pem::parse_many(bytes) {
            Ok(blocks) if !blocks.is_empty() => {
                let certs: Vec<&pem::Pem> = blocks.iter().filter(|b| b.tag() == "CERTIFICATE").collect();
                if certs.is_empty() {
                    return Err("no CERTIFICATE PEM block".into());
                }
                certs.iter().map(|b| Cert::from_der(b.contents())).collect()
            }
            Ok(_) if bytes.first() == Some(&0x30) => Cert::from_der(bytes).map(|c| vec![c]),
            Ok(_) => Err("no CERTIFICATE PEM block".into()),
            Err(_) => Err("not PEM: a BEGIN/END block is broken or its base64 does not decode".into()),
        }
    }

    /// Does `issuer`'s public key verify this certificate's signature?
    fn signed_by(&self, issuer: &Cert) -> Result<(), String> {
        use crate::pki::signature::{verify, IssuerKey, Signed};
        let signed = Signed { tbs: &self.tbs, signature: &self.sig, algorithm: &self.sig_alg };
        verify(&signed, &IssuerKey { algorithm: &issuer.spki_alg, curve: issuer.spki_curve.as_deref(), key: &issuer.spki_key })
    }
}

/// Reads a file of bounded size; the error says why in words.
fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| io_words(&e))?;
    let meta = f.metadata().map_err(|e| io_words(&e))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mut bytes = Vec::new();
    f.take(MAX_FILE + 1).read_to_end(&mut bytes).map_err(|e| io_words(&e))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(format!("larger than {} MiB", MAX_FILE >> 20));
    }
    Ok(bytes)
}

fn io_words(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        format!("cannot read: {e} (run as root, or as the files' owner)")
    } else {
        format!("cannot read: {e}")
    }
}

// =============================================================================================
// The CAs a tree's leaves are checked against

/// A CA as found: its certificate(s) and where its key is.
struct Ca {
    id: &'static str,
    /// The file shown.
    shown: String,
    certs: Result<Vec<Cert>, String>,
    key: KeyAt,
}

/// Where a CA's key is (the `caKey` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyAt {
    /// In the tree, where its layout keeps it.
    Node,
    /// In the bundle's state.
    State,
    /// The layout keeps it on nodes of other roles (the control planes), not this one.
    OtherNodes,
    /// The layout keeps it on no node: only in the bundle's state.
    BundleOnly,
    /// Absent from where the layout keeps it: the CA is externally managed.
    Absent,
}

impl KeyAt {
    fn label(self) -> &'static str {
        match self {
            KeyAt::Node => "node",
            KeyAt::State => "state",
            KeyAt::OtherNodes => "control-planes",
            KeyAt::BundleOnly => "bundle-only",
            KeyAt::Absent => "absent",
        }
    }
}

/// A bundle's `state/pki` CAs (kubeadm's file names).
fn state_cas(pki: &Path) -> Vec<Ca> {
    let mut cas = Vec::new();
    for (id, crt, key) in [
        ("ca", "ca.crt", "ca.key"),
        ("etcd-ca", "etcd/ca.crt", "etcd/ca.key"),
        ("front-proxy-ca", "front-proxy-ca.crt", "front-proxy-ca.key"),
    ] {
        let crt = pki.join(crt);
        if std::fs::symlink_metadata(&crt).is_err() {
            continue;
        }
        let certs = read_file(&crt).and_then(|b| Cert::all_from_bytes(&b));
        let key = if std::fs::symlink_metadata(pki.join(key)).is_ok() { KeyAt::State } else { KeyAt::Absent };
        cas.push(Ca { id, shown: crt.display().to_string(), certs, key });
    }
    cas
}

/// The CAs of a node tree, with where the layout keeps their keys; `state` (a bundle's) stands
/// in for a key the layout keeps off the node.
fn tree_cas(tree: &NodeTree, sites: &[Site], state: Option<&[Ca]>) -> Vec<Ca> {
    sites
        .iter()
        .filter(|s| s.is_ca)
        .filter_map(|s| {
            let id = CAS.iter().copied().find(|c| *c == s.name)?;
            let certs = tree.cert_pem(s).and_then(|b| Cert::all_from_bytes(&b));
            let key = key_at(tree, id, state);
            Some(Ca { id, shown: tree.show(s.place.path()), certs, key })
        })
        .collect()
}

fn key_at(tree: &NodeTree, ca: &str, state: Option<&[Ca]>) -> KeyAt {
    match tree.ca_key(ca) {
        CaKey::Here(_) => KeyAt::Node,
        CaKey::Absent(_) => KeyAt::Absent,
        CaKey::OffNode { .. } if state.is_some_and(|s| s.iter().any(|c| c.id == ca && c.key == KeyAt::State)) => KeyAt::State,
        CaKey::OffNode { on_other_nodes: true } => KeyAt::OtherNodes,
        CaKey::OffNode { on_other_nodes: false } => KeyAt::BundleOnly,
    }
}

// =============================================================================================
// Entry point

/// A `--dir` that is not a node tree: a message naming what it holds and what each layout expects.
fn unrecognised(e: TreeError) -> ExpiryError {
    match e {
        TreeError::Unrecognised { path, why } => ExpiryError::Unrecognised { path, why: why.to_string() },
        TreeError::Read { path, why } => ExpiryError::Unreadable { path, why },
    }
}

/// The profile `--profile` names (a built-in name or a file), as the only candidate layout.
pub fn candidates(profile: Option<&Path>) -> Result<Vec<crate::tree::profile::Profile>, String> {
    match profile {
        None => Ok(crate::tree::layout::builtin_profiles()),
        Some(p) => crate::tree::profile::Profile::load(&p.to_string_lossy(), None).map(|p| vec![p]).map_err(|e| e.to_string()),
    }
}

pub fn check_expiration(args: &ExpiryArgs) -> Result<ExpiryReport, ExpiryError> {
    let dir = &args.dir;
    let shown = dir.display().to_string();
    let meta = std::fs::metadata(dir).map_err(|source| ExpiryError::Read { path: shown.clone(), source })?;
    if !meta.is_dir() {
        return Err(ExpiryError::NotADirectory { path: shown });
    }
    // Listing it tells an unreadable directory from an empty one.
    std::fs::read_dir(dir).map_err(|source| ExpiryError::Read { path: shown.clone(), source })?;
    let candidates = candidates(args.profile.as_deref()).map_err(ExpiryError::Profile)?;

    let check = Checker { now: args.now, warn: i64::try_from(args.warn_within.as_secs()).unwrap_or(i64::MAX) };
    let mut notes = Vec::new();
    let (certificates, cas) = match locate(dir) {
        Target::Bundle(b) => {
            let (certificates, cas) = check.bundle(&b)?;
            let (rows, n) = check.chain_rows(&b.join("state"), &cas);
            notes = n;
            notes.extend(crate::bundle::state::rotations::in_progress(&b.join("state")));
            // Each CA's issuers right below it.
            let mut merged = Vec::with_capacity(cas.len() + rows.len());
            for ca in cas {
                let above: Vec<CertStatus> = rows.iter().filter(|r| r.name.split(':').next() == Some(ca.name.as_str())).cloned().collect();
                merged.push(ca);
                merged.extend(above);
            }
            (certificates, merged)
        }
        Target::BundleNode { bundle, name, dir } => {
            let plan = crate::tree::bundle::read_plan(&bundle);
            let tree = match plan.as_ref().and_then(|p| p.layout(&name)) {
                Some(l) => NodeTree::read_listed(&dir, l),
                None => NodeTree::read_host(Mount::root(&dir), None, &candidates).map_err(unrecognised)?,
            };
            let state = state_cas(&bundle.join("state/pki"));
            check.tree(&tree, "", None, Some(&state))
        }
        Target::Host(mount) => {
            match NodeTree::read_host(mount, None, &candidates) {
                Ok(tree) => check.tree(&tree, "", None, None),
                // A directory that matches no layout: say so, unless it is OUT (name the bundles).
                Err(e) => {
                    let inner = bundles_in(dir);
                    if inner.is_empty() {
                        return Err(unrecognised(e));
                    }
                    (Vec::new(), Vec::new())
                }
            }
        }
    };

    if certificates.is_empty() && cas.is_empty() {
        let inner = bundles_in(dir);
        let also = if inner.is_empty() { String::new() } else { format!(" (did you mean {}?)", inner.join(" or ")) };
        return Err(ExpiryError::NoCertificates { path: shown, also });
    }

    Ok(ExpiryReport {
        api_version: API_VERSION,
        kind: KIND,
        now: rfc3339(args.now),
        warn_within_seconds: args.warn_within.as_secs(),
        certificates,
        certificate_authorities: cas,
        notes,
    })
}

/// The bundles directly inside `dir` (OUT rather than OUT/<cluster>).
fn bundles_in(dir: &Path) -> Vec<String> {
    let mut inner: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| crate::tree::bundle::is_bundle(p)).map(|p| p.display().to_string()).collect())
        .unwrap_or_default();
    inner.sort();
    inner
}

struct Checker {
    now: OffsetDateTime,
    warn: i64,
}

type Rows = (Vec<CertStatus>, Vec<CertStatus>);

impl Checker {
    /// A whole bundle: the CAs of state/pki, then every node's certificates checked against
    /// them (every node read in memory, in parallel). Without state/pki each node's own CAs
    /// are used (and listed, prefixed with the node).
    fn bundle(&self, dir: &Path) -> Result<Rows, ExpiryError> {
        use rayon::prelude::*;
        let state_pki = dir.join("state").join("pki");
        let state = state_pki.is_dir().then(|| state_cas(&state_pki));
        let mut cas = Vec::new();
        if let Some(state) = &state {
            cas.extend(state.iter().map(|ca| self.ca_row(ca, "")));
        }
        let plan = crate::tree::bundle::read_plan(dir);
        let nodes = match crate::tree::bundle::read_nodes(dir, plan.as_ref(), true) {
            Ok(n) => n,
            Err(e) => {
                let row = self.status("nodes".into(), &dir.join("nodes").display().to_string(), Err::<&Cert, _>(e), "", false, None);
                return Ok((vec![self.with_key(row, KeyAt::Absent, false)], cas));
            }
        };
        let per_node: Vec<Rows> = nodes.par_iter().map(|n| self.tree(&n.tree, &format!("{}/", n.name), state.as_deref(), None)).collect();
        let mut certificates = Vec::new();
        for (c, a) in per_node {
            certificates.extend(c);
            cas.extend(a);
        }
        Ok((certificates, cas))
    }

    /// One node tree: its leaves checked against `chain_cas` (a bundle's state) or its own CAs,
    /// which are then listed too. `state` stands in for CA keys the layout keeps off the node.
    fn tree(&self, tree: &NodeTree, prefix: &str, chain_cas: Option<&[Ca]>, state: Option<&[Ca]>) -> Rows {
        let sites = tree.certificates();
        let own = tree_cas(tree, &sites, chain_cas.or(state));
        let cas: &[Ca] = chain_cas.unwrap_or(&own);
        let mut certificates = Vec::new();
        for site in sites.iter().filter(|s| !s.is_ca) {
            let shown = tree.show(site.place.path());
            let cert = tree
                .cert_pem(site)
                .and_then(|b| Cert::all_from_bytes(&b))
                .and_then(|v| v.into_iter().next().ok_or_else(|| "no certificate".into()));
            let (ca_id, chain, key) = match site.ca {
                Some(ca_id) => {
                    let ca = cas.iter().find(|c| c.id == ca_id);
                    let chain = cert.as_ref().ok().and_then(|c| chain_problem(c, ca_id, ca, tree));
                    let key = match (chain_cas, ca) {
                        (Some(_), Some(ca)) => ca.key,
                        (Some(_), None) => KeyAt::Absent,
                        (None, _) => key_at(tree, ca_id, state),
                    };
                    (ca_id, chain, key)
                }
                // The kubelet's self-signed serving certificate: its own key signs it.
                None => {
                    let chain = cert.as_ref().ok().and_then(|c| c.signed_by(c).err().map(|e| format!("not self-signed: {e}")));
                    ("", chain, KeyAt::Node)
                }
            };
            let row = self.status(format!("{prefix}{}", site.name), &shown, cert.as_ref(), ca_id, key == KeyAt::Absent, chain);
            certificates.push(self.with_key(row, key, site.rotated));
        }
        let ca_rows = if chain_cas.is_some() { Vec::new() } else { own.iter().map(|ca| self.ca_row(ca, prefix)).collect() };
        (certificates, ca_rows)
    }

    /// The certificates above each imported CA of a bundle's state (its chain file), as CA rows
    /// `<ca>:intermediate-<n>` and `<ca>:root`, each checked against the one below; and a note
    /// for each that ends before the CA itself (`ca_rows` are the state's CA rows).
    fn chain_rows(&self, state: &Path, ca_rows: &[CertStatus]) -> (Vec<CertStatus>, Vec<String>) {
        let mut rows = Vec::new();
        let mut notes = Vec::new();
        for id in CAS {
            let (crt, _) = crate::bundle::state::ca_paths(id);
            let path = state.join(crate::bundle::state::ca_chain_path(id));
            let Ok(bytes) = std::fs::read(&path) else { continue };
            let shown = path.display().to_string();
            let chain = match Cert::all_from_bytes(&bytes) {
                Ok(c) => c,
                Err(e) => {
                    rows.push(self.status(format!("{id}:chain"), &shown, Err::<&Cert, _>(e), "", true, None));
                    continue;
                }
            };
            let Ok(ca) = read_file(&state.join(&crt)).and_then(|b| Cert::all_from_bytes(&b)) else { continue };
            let Some(ca) = ca.into_iter().next() else { continue };
            let ca_end = ca_rows.iter().find(|r| r.name == id).map(|r| r.expires.clone()).unwrap_or_default();
            let mut below = &ca;
            for (i, c) in chain.iter().enumerate() {
                let root = i + 1 == chain.len();
                let name = if root { format!("{id}:root") } else { format!("{id}:intermediate-{}", i + 1) };
                let mut problem = below.signed_by(c).err().map(|e| format!("it did not sign the certificate below it: {e}"));
                if root && problem.is_none() {
                    problem = c.signed_by(c).err().map(|e| format!("the last certificate of the chain is not a self-signed root: {e}"));
                }
                let mut row = self.status(name.clone(), &shown, Ok::<&Cert, String>(c), "", true, problem);
                row.ca_key = KeyAt::Absent.label();
                if c.not_after < ca.not_after {
                    notes.push(format!(
                        "{name} expires at {}, before {id} itself ({ca_end}): clients that trust {} stop trusting the cluster's certificates then; have {id} re-issued under a root that outlives it",
                        rfc3339(c.not_after),
                        if root { "the root" } else { "it" }
                    ));
                }
                rows.push(row);
                below = c;
            }
        }
        (rows, notes)
    }

    fn ca_row(&self, ca: &Ca, prefix: &str) -> CertStatus {
        let first = match &ca.certs {
            Ok(certs) => certs.first().ok_or_else(|| "no certificate".to_string()),
            Err(e) => Err(e.clone()),
        };
        let row = self.status(format!("{prefix}{}", ca.id), &ca.shown, first, "", ca.key == KeyAt::Absent, None);
        self.with_key(row, ca.key, false)
    }

    fn with_key(&self, mut row: CertStatus, key: KeyAt, rotated: bool) -> CertStatus {
        row.ca_key = key.label();
        row.kubelet_rotated = rotated;
        row
    }

    fn status(
        &self,
        name: String,
        path: &str,
        cert: Result<&Cert, impl std::fmt::Display>,
        ca: &str,
        externally_managed: bool,
        chain: Option<String>,
    ) -> CertStatus {
        let mut s = CertStatus {
            name,
            path: path.to_string(),
            expires: String::new(),
            expires_unix: 0,
            residual_seconds: 0,
            residual: "<invalid>".into(),
            certificate_authority: ca.to_string(),
            externally_managed,
            status: Status::Unreadable,
            detail: String::new(),
            kubelet_rotated: false,
            ca_key: "",
        };
        let cert = match cert {
            Ok(c) => c,
            Err(e) => {
                s.detail = e.to_string();
                return s;
            }
        };
        s.expires = rfc3339(cert.not_after);
        s.expires_unix = cert.not_after.unix_timestamp();
        s.residual_seconds = s.expires_unix.saturating_sub(self.now.unix_timestamp());
        s.residual = short_human_duration(s.residual_seconds);
        let mut notes = Vec::new();
        s.status = if let Some(problem) = chain {
            notes.push(problem);
            Status::InvalidChain
        } else if s.residual_seconds < 0 {
            Status::Expired
        } else if s.residual_seconds <= self.warn || cert.not_before > self.now {
            Status::Warning
        } else {
            Status::Ok
        };
        if s.residual_seconds < 0 {
            notes.push(format!("expired on {}", s.expires));
        } else if s.residual_seconds <= self.warn {
            notes.push(format!("expires on {}, within {}", s.expires, short_human_duration(self.warn)));
        }
        if cert.not_before > self.now {
            notes.push(format!("not valid before {}", rfc3339(cert.not_before)));
        }
        s.detail = notes.join("; ");
        s
    }
}

/// Why `cert` does not chain to the CA `ca_id`, if it does not.
fn chain_problem(cert: &Cert, ca_id: &str, ca: Option<&Ca>, tree: &NodeTree) -> Option<String> {
    let Some(ca) = ca else {
        let at = tree.layout.path_of(&format!("{ca_id}.crt")).map(|p| tree.show(p)).unwrap_or_else(|| format!("{ca_id}.crt"));
        return Some(format!("its CA {ca_id} is missing ({at} not found)"));
    };
    let certs = match &ca.certs {
        Ok(certs) => certs,
        Err(e) => return Some(format!("its CA {ca_id} ({}) is unreadable: {e}", ca.shown)),
    };
    let mut last = String::new();
    for issuer in certs {
        match cert.signed_by(issuer) {
            Ok(()) => return None,
            Err(e) => last = e,
        }
    }
    Some(format!("not signed by {ca_id} ({}): {last}", ca.shown))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn residual_like_kubeadm() {
        assert_eq!(short_human_duration(-5), "<invalid>");
        assert_eq!(short_human_duration(0), "0s");
        assert_eq!(short_human_duration(59), "59s");
        assert_eq!(short_human_duration(60), "1m");
        assert_eq!(short_human_duration(3599), "59m");
        assert_eq!(short_human_duration(3600), "1h");
        assert_eq!(short_human_duration(86_399), "23h");
        assert_eq!(short_human_duration(86_400), "1d");
        assert_eq!(short_human_duration(364 * 86_400 + 5), "364d");
        assert_eq!(short_human_duration(365 * 86_400), "1y");
        assert_eq!(short_human_duration(3647 * 86_400), "9y");
    }

    #[test]
    fn table_columns_like_tabwriter() {
        let rows = vec![
            vec!["CERTIFICATE".to_string(), "X".into(), "no   ".into()],
            vec!["apiserver-kubelet-client".to_string(), "Y".into(), "yes".into()],
        ];
        let t = tabulate(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], format!("CERTIFICATE{}X{}no", " ".repeat(16), " ".repeat(9)));
        assert_eq!(lines[1].find('Y'), Some(27));
    }

    #[test]
    fn dates_and_labels() {
        assert_eq!(table_date(1_826_876_400), "Nov 22, 2027 09:40 UTC");
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape_label("x\u{1b}[31m"), "x\\\\x1b[31m");
        assert_eq!(parse_warn_within("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_warn_within("720h"), Ok(Duration::from_secs(30 * 86_400)));
        assert!(parse_warn_within("-1h").is_err());
        assert!(parse_warn_within("soon").is_err());
    }

    #[test]
    fn garbage_is_unreadable_not_a_panic() {
        for bytes in [&b""[..], b"\x30\x82", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", b"hello"] {
            assert!(Cert::all_from_bytes(bytes).is_err());
        }
    }
}
