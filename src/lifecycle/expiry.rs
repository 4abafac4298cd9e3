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
//! | `externallyManaged` | boolean | kubeadm's rule: the signing CA's key (for a CA: its own key) is absent |
//! | `status` | string | `ok`, `warning` (expires within `warnWithinSeconds`, or not valid yet), `expired`, `invalid-chain` (does not verify against its CA, or the CA is missing), `unreadable` (file or kubeconfig cannot be read or parsed) |
//! | `detail` | string | why the status is not `ok`; `""` when it is |
//!
//! Exit code (`ExpiryReport::exit_code`): 0 all ok, 3 something is `warning`, 4 something is
//! `expired`, `invalid-chain` or `unreadable`.
//!
//! `-o prometheus` writes the node-exporter textfile format: for every certificate and CA,
//! `kubebundle_certificate_expiry_timestamp_seconds{name,path,ca,kind}` (notAfter, Unix seconds;
//! omitted for an unreadable file) and `kubebundle_certificate_chain_valid{name,path,ca,kind}`
//! (1, or 0 for `invalid-chain` and `unreadable`), `kind` being `certificate` or
//! `certificate-authority`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use crate::pki::catalog;
use crate::util::text::escape;

/// `apiVersion` of the JSON/YAML report.
pub const API_VERSION: &str = "kubebundle.dev/v1alpha1";
/// `kind` of the JSON/YAML report.
pub const KIND: &str = "CertificateExpirationReport";
/// No certificate or kubeconfig comes near this; larger files are refused unread.
const MAX_FILE: u64 = 4 << 20;

const WHAT_DIR_IS: &str = "pass a kubeadm directory such as /etc/kubernetes (pki/ and the *.conf kubeconfigs), \
a certificatesDir (holding ca.crt), a kubebundle node root (OUT/<cluster>/nodes/<node>) or its etc/kubernetes, \
a kubebundle state directory (OUT/<cluster>/state) or a whole kubebundle bundle (OUT/<cluster>)";

pub struct ExpiryArgs {
    pub dir: PathBuf,
    pub now: OffsetDateTime,
    pub warn_within: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ExpiryError {
    #[error("cannot read {path}: {source}\n  hint: {WHAT_DIR_IS}")]
    Read { path: String, source: std::io::Error },
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
            Err(e) => Err(format!("not PEM: {e}")),
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

/// Something is at this path (a dangling symlink counts: reading it will say why it fails).
fn present(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

// =============================================================================================
// Kubeconfigs

/// The client certificate of a kubeconfig's current user (else its only or first user): the
/// bytes, and the file they came from when `client-certificate` names one.
fn kubeconfig_client_cert(path: &Path, root: Option<&Path>) -> Result<(Vec<u8>, Option<PathBuf>), String> {
    let doc = crate::tree::kubeconfig::Kubeconfig::parse(&read_file(path)?)?;
    let user = doc.current_user().ok_or_else(|| "the kubeconfig has no user".to_string())?;
    if let Some(pem) = crate::tree::kubeconfig::decode("client-certificate-data", user.client_certificate_data.as_deref())? {
        return Ok((pem, None));
    }
    if let Some(file) = user.client_certificate.as_deref().filter(|f| !f.is_empty()) {
        let p = Path::new(file);
        let resolved = match (p.is_absolute(), root) {
            (true, Some(root)) => root.join(p.strip_prefix("/").unwrap_or(p)),
            (true, None) => p.to_path_buf(),
            (false, _) => path.parent().unwrap_or(Path::new(".")).join(p),
        };
        let pem = read_file(&resolved).map_err(|e| format!("client-certificate {}: {e}", resolved.display()))?;
        return Ok((pem, Some(resolved)));
    }
    Err("the kubeconfig's user has no client certificate (client-certificate-data or client-certificate)".into())
}

// =============================================================================================
// The directories

/// A CA as found in a pki directory.
struct Ca {
    id: &'static str,
    crt: PathBuf,
    key_present: bool,
    certs: Result<Vec<Cert>, String>,
}

/// The CAs of one pki directory (only those whose certificate is there).
struct CaSet {
    dir: PathBuf,
    cas: Vec<Ca>,
}

/// kubeadm's CAs in its order: id, certificate and key relative to certificatesDir.
const CAS: &[(&str, &str, &str)] = &[
    ("ca", "ca.crt", "ca.key"),
    ("etcd-ca", "etcd/ca.crt", "etcd/ca.key"),
    ("front-proxy-ca", "front-proxy-ca.crt", "front-proxy-ca.key"),
];

impl CaSet {
    fn load(pki: &Path) -> CaSet {
        let mut cas = Vec::new();
        for (id, crt, key) in CAS {
            let crt = pki.join(crt);
            if !present(&crt) {
                continue;
            }
            let certs = read_file(&crt).and_then(|b| Cert::all_from_bytes(&b));
            cas.push(Ca { id, key_present: present(&pki.join(key)), crt, certs });
        }
        CaSet { dir: pki.to_path_buf(), cas }
    }

    fn get(&self, id: &str) -> Option<&Ca> {
        self.cas.iter().find(|c| c.id == id)
    }
}

/// Where a leaf certificate lives in a tree.
#[derive(Clone, Copy)]
enum Source {
    /// Relative to certificatesDir.
    Pki(&'static str),
    /// A kubeconfig in the directory of kubeconfigs.
    Kubeconfig(&'static str),
    /// Relative to the node root.
    Root(&'static str),
}

/// kubeadm's `certs check-expiration` list, in its (alphabetical) order.
const KUBEADM_LEAVES: &[(&str, Source)] = &[
    ("admin.conf", Source::Kubeconfig("admin.conf")),
    ("apiserver", Source::Pki("apiserver.crt")),
    ("apiserver-etcd-client", Source::Pki("apiserver-etcd-client.crt")),
    ("apiserver-kubelet-client", Source::Pki("apiserver-kubelet-client.crt")),
    ("controller-manager.conf", Source::Kubeconfig("controller-manager.conf")),
    ("etcd-healthcheck-client", Source::Pki("etcd/healthcheck-client.crt")),
    ("etcd-peer", Source::Pki("etcd/peer.crt")),
    ("etcd-server", Source::Pki("etcd/server.crt")),
    ("front-proxy-client", Source::Pki("front-proxy-client.crt")),
    ("scheduler.conf", Source::Kubeconfig("scheduler.conf")),
    ("super-admin.conf", Source::Kubeconfig("super-admin.conf")),
];

/// What kubebundle adds on its nodes and kubeadm does not list (the kubelet rotates its own
/// certificates on a kubeadm node; kubebundle pre-issues them, signed by the cluster CA; kube-proxy
/// runs from a unit with its own certificate on hardway and binary nodes).
const KUBEBUNDLE_LEAVES: &[(&str, Source)] = &[
    ("kubelet.conf", Source::Kubeconfig("kubelet.conf")),
    ("kubelet-serving", Source::Root("var/lib/kubelet/pki/kubelet.crt")),
    ("kube-proxy.conf", Source::Kubeconfig("kube-proxy.conf")),
];

/// One tree to check: a kubeadm /etc/kubernetes, a node's, or a certificatesDir alone.
struct Tree {
    /// `""`, or `"<node>/"` inside a bundle.
    prefix: String,
    pki: PathBuf,
    /// Where the kubeconfigs are (None for a bare certificatesDir).
    confs: Option<PathBuf>,
    /// The node root: the directory holding etc/kubernetes, when known.
    root: Option<PathBuf>,
    /// A kubebundle node: also list kubelet.conf and the kubelet serving certificate.
    kubebundle: bool,
    /// A bundle node's files by artifact id (from plan.json), for any profile's layout.
    layout: Option<BTreeMap<String, PathBuf>>,
}

impl Tree {
    /// `etc_kubernetes` is a kubeadm-style directory of kubeconfigs with pki/ inside.
    fn kubeadm(etc_kubernetes: &Path, prefix: String) -> Tree {
        let root = node_root_of(etc_kubernetes);
        let kubebundle = root.as_deref().is_some_and(is_kubebundle_node);
        Tree { prefix, pki: etc_kubernetes.join("pki"), confs: Some(etc_kubernetes.to_path_buf()), root, kubebundle, layout: None }
    }
}

/// The node root of a directory that ends in etc/kubernetes.
fn node_root_of(etc_kubernetes: &Path) -> Option<PathBuf> {
    let canon = std::fs::canonicalize(etc_kubernetes).ok()?;
    if canon.file_name()? == "kubernetes" && canon.parent()?.file_name()? == "etc" {
        let shown = etc_kubernetes.join("..").join("..");
        // Keep the path the way the user wrote it when it plainly ends in etc/kubernetes.
        let plain = etc_kubernetes.ends_with("etc/kubernetes").then(|| etc_kubernetes.parent().and_then(Path::parent)).flatten();
        return Some(plain.map(Path::to_path_buf).unwrap_or(shown));
    }
    None
}

/// A node root that kubebundle wrote: `<bundle>/nodes/<node>` beside the bundle's state,
/// plan.json or the node's tarball.
fn is_kubebundle_node(root: &Path) -> bool {
    let Ok(canon) = std::fs::canonicalize(root) else { return false };
    let (Some(name), Some(nodes)) = (canon.file_name(), canon.parent()) else { return false };
    if nodes.file_name().is_none_or(|n| n != "nodes") {
        return false;
    }
    let tarball = nodes.join(format!("{}.tar.gz", name.to_string_lossy()));
    present(&tarball) || nodes.parent().is_some_and(is_bundle)
}

/// `OUT/<cluster>`: nodes/ beside state/ or plan.json.
fn is_bundle(dir: &Path) -> bool {
    dir.join("nodes").is_dir() && (dir.join("state").is_dir() || dir.join("plan.json").is_file())
}

fn looks_like_pki(dir: &Path) -> bool {
    CAS.iter().any(|(_, crt, _)| present(&dir.join(crt)))
        || KUBEADM_LEAVES.iter().any(|(_, s)| matches!(s, Source::Pki(p) if present(&dir.join(p))))
}

// =============================================================================================
// Entry point

pub fn check_expiration(args: &ExpiryArgs) -> Result<ExpiryReport, ExpiryError> {
    let dir = &args.dir;
    let shown = dir.display().to_string();
    let meta = std::fs::metadata(dir).map_err(|source| ExpiryError::Read { path: shown.clone(), source })?;
    if !meta.is_dir() {
        return Err(ExpiryError::NotADirectory { path: shown });
    }
    // Listing it tells an unreadable directory from an empty one.
    std::fs::read_dir(dir).map_err(|source| ExpiryError::Read { path: shown.clone(), source })?;

    let mut check = Checker {
        now: args.now,
        warn: i64::try_from(args.warn_within.as_secs()).unwrap_or(i64::MAX),
        certificates: Vec::new(),
        cas: Vec::new(),
    };

    if is_bundle(dir) {
        check.bundle(dir);
    } else if dir.join("etc/kubernetes").is_dir() {
        let tree = Tree::kubeadm(&dir.join("etc/kubernetes"), String::new());
        check.tree_with_own_cas(&tree);
    } else if dir.join("pki").is_dir() {
        check.tree_with_own_cas(&Tree::kubeadm(dir, String::new()));
    } else if looks_like_pki(dir) {
        let tree = Tree { prefix: String::new(), pki: dir.clone(), confs: None, root: None, kubebundle: false, layout: None };
        check.tree_with_own_cas(&tree);
    }

    if check.certificates.is_empty() && check.cas.is_empty() {
        // OUT rather than OUT/<cluster>: name the bundles inside.
        let mut inner: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| is_bundle(p)).map(|p| p.display().to_string()).collect())
            .unwrap_or_default();
        inner.sort();
        let also = if inner.is_empty() { String::new() } else { format!(" (did you mean {}?)", inner.join(" or ")) };
        return Err(ExpiryError::NoCertificates { path: shown, also });
    }

    Ok(ExpiryReport {
        api_version: API_VERSION,
        kind: KIND,
        now: rfc3339(args.now),
        warn_within_seconds: args.warn_within.as_secs(),
        certificates: check.certificates,
        certificate_authorities: check.cas,
    })
}

struct Checker {
    now: OffsetDateTime,
    warn: i64,
    certificates: Vec<CertStatus>,
    cas: Vec<CertStatus>,
}

impl Checker {
    /// A whole bundle: the CAs of state/pki, then every node's leaves checked against them.
    /// Without state/pki each node's own CAs are used (and listed, prefixed with the node).
    fn bundle(&mut self, dir: &Path) {
        let state_pki = dir.join("state").join("pki");
        let state = state_pki.is_dir().then(|| CaSet::load(&state_pki));
        if let Some(state) = &state {
            self.list_cas(state, "");
        }
        // Nodes kept only as tarballs are read from an unpacked copy.
        let names = crate::bundle::plan::bundle_node_names(dir);
        let trees = match crate::lifecycle::nodes::NodeTrees::open(dir, |n| names.as_ref().is_none_or(|l| l.contains(n))) {
            Ok(t) => t,
            Err(e) => {
                let row = self.status("nodes".into(), &dir.join("nodes"), Err::<&Cert, _>(e), "", false, None);
                self.certificates.push(row);
                return;
            }
        };
        // With plan.json, each node's files are where its profile put them.
        let layouts = crate::bundle::plan::bundle_layouts(dir, |n| trees.roots.get(n).cloned());
        let first = self.certificates.len();
        for (name, root) in &trees.roots {
            if layouts.is_none() && !root.join("etc/kubernetes").is_dir() {
                continue;
            }
            let mut tree = Tree::kubeadm(&root.join("etc/kubernetes"), format!("{name}/"));
            tree.root = Some(root.clone());
            tree.kubebundle = true;
            tree.layout = layouts.as_ref().and_then(|l| l.get(name).cloned());
            match &state {
                Some(state) => self.leaves(&tree, state),
                None => self.tree_with_own_cas(&tree),
            }
        }
        // Paths inside an unpacked copy are shown as <bundle>/nodes/<node>.tar.gz:<path>.
        for c in self.certificates.iter_mut().skip(first) {
            c.path = trees.display(Path::new(&c.path));
        }
    }

    fn tree_with_own_cas(&mut self, tree: &Tree) {
        let cas = CaSet::load(&tree.pki);
        self.list_cas(&cas, &tree.prefix);
        self.leaves(tree, &cas);
    }

    fn list_cas(&mut self, set: &CaSet, prefix: &str) {
        for ca in &set.cas {
            let first = match &ca.certs {
                Ok(certs) => certs.first().ok_or_else(|| "no certificate".to_string()),
                Err(e) => Err(e.clone()),
            };
            let status = self.status(format!("{prefix}{}", ca.id), &ca.crt, first, "", !ca.key_present, None);
            self.cas.push(status);
        }
    }

    fn leaves(&mut self, tree: &Tree, cas: &CaSet) {
        let extra: &[(&str, Source)] = if tree.kubebundle { KUBEBUNDLE_LEAVES } else { &[] };
        for &(id, source) in KUBEADM_LEAVES.iter().chain(extra) {
            let path = match (&tree.layout, source) {
                // A profile's layout: the certificate file when the profile places one (also for
                // a kubeconfig's client certificate), else the kubeconfig.
                (Some(layout), _) => match layout.get(&format!("{id}.crt")).or_else(|| layout.get(id)) {
                    Some(p) => p.clone(),
                    None => continue,
                },
                (None, Source::Pki(rel)) => tree.pki.join(rel),
                (None, Source::Kubeconfig(file)) => match &tree.confs {
                    Some(confs) => confs.join(file),
                    None => continue,
                },
                (None, Source::Root(rel)) => match &tree.root {
                    Some(root) => root.join(rel),
                    None => continue,
                },
            };
            let source = if tree.layout.is_some() && !path.to_string_lossy().ends_with(".crt") && catalog::kubeconfig(id).is_some() {
                Source::Kubeconfig(id)
            } else if tree.layout.is_some() {
                Source::Root("")
            } else {
                source
            };
            if !present(&path) {
                continue;
            }
            let (bytes, shown_path) = match source {
                Source::Kubeconfig(_) => match kubeconfig_client_cert(&path, tree.root.as_deref()) {
                    Ok((bytes, file)) => (Ok(bytes), file.unwrap_or(path)),
                    Err(e) => (Err(e), path),
                },
                _ => (read_file(&path), path),
            };
            let cert =
                bytes.and_then(|b| Cert::all_from_bytes(&b)).and_then(|v| v.into_iter().next().ok_or_else(|| "no certificate".into()));
            let ca_id = catalog::cert(id).and_then(|e| e.signer.ca_id()).unwrap_or("ca");
            let ca = cas.get(ca_id);
            let chain = cert.as_ref().ok().and_then(|c| chain_problem(c, ca_id, ca, &cas.dir));
            let externally_managed = ca.is_none_or(|c| !c.key_present);
            let status = self.status(format!("{}{id}", tree.prefix), &shown_path, cert.as_ref(), ca_id, externally_managed, chain);
            self.certificates.push(status);
        }
    }

    fn status(
        &self,
        name: String,
        path: &Path,
        cert: Result<&Cert, impl std::fmt::Display>,
        ca: &str,
        externally_managed: bool,
        chain: Option<String>,
    ) -> CertStatus {
        let mut s = CertStatus {
            name,
            path: path.display().to_string(),
            expires: String::new(),
            expires_unix: 0,
            residual_seconds: 0,
            residual: "<invalid>".into(),
            certificate_authority: ca.to_string(),
            externally_managed,
            status: Status::Unreadable,
            detail: String::new(),
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
fn chain_problem(cert: &Cert, ca_id: &str, ca: Option<&Ca>, pki: &Path) -> Option<String> {
    let Some(ca) = ca else {
        let rel = CAS.iter().find(|(id, _, _)| *id == ca_id).map(|(_, crt, _)| *crt).unwrap_or("ca.crt");
        return Some(format!("its CA {ca_id} is missing ({} not found)", pki.join(rel).display()));
    };
    let certs = match &ca.certs {
        Ok(certs) => certs,
        Err(e) => return Some(format!("its CA {ca_id} ({}) is unreadable: {e}", ca.crt.display())),
    };
    let mut last = String::new();
    for issuer in certs {
        match cert.signed_by(issuer) {
            Ok(()) => return None,
            Err(e) => last = e,
        }
    }
    Some(format!("not signed by {ca_id} ({}): {last}", ca.crt.display()))
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
