//! `kubebundle certs renew`: re-issue certificates in place, keeping subjects, SANs and keys.
//!
//! What `kubeadm certs renew` does, offline, on a kubeadm `/etc/kubernetes`, a kubebundle node
//! tree or a whole kubebundle bundle:
//!
//! - a leaf keeps its key (a fresh one of the same algorithm and size with `new_key`), its
//!   subject, SANs, key usages and EKUs; it gets a new serial, notBefore = now − 5 min and
//!   notAfter = now + validity, and is signed by the existing CA of the same tree;
//! - a kubeconfig's client certificate is renewed by rewriting only the base64 value of
//!   `client-certificate-data` (and `client-key-data` with a new key), or the file its
//!   `client-certificate` names;
//! - a CA is re-issued from its own key with the same subject and Subject Key Identifier, so
//!   every existing leaf still verifies and the discovery hash stays the same; it replaces the
//!   old certificate everywhere it was (pki files and kubeconfigs' certificate-authority-data).
//!
//! Everything is computed in memory first, under the lock every writer takes (a bundle's, also
//! for a node tree inside it; else a lock on the tree's directory). Every file about to change
//! is copied into a private directory, renamed whole to `kubebundle-backup-<now>/` beside the
//! bundle or tree. A bundle (or a node tree inside one) is then a transaction like `generate`:
//! the new bundle is staged beside it (hard links for the files that do not change, the changed
//! files and re-packed tarballs written anew) and swapped in atomically. A tree that is not in a
//! bundle (`/etc/kubernetes`) has each file replaced atomically, keeping its mode and owner.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod,
    KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::public_key::PublicKey;

use crate::config::KeyAlgorithm;
use crate::pki::catalog;
use crate::pki::issue::random_serial;
use crate::pki::keys::{pem_encode, Key};

/// What to renew, where, and how.
#[derive(Debug, Clone)]
pub struct RenewArgs {
    pub dir: PathBuf,
    /// `all`, kubeadm leaf names, or CA names (`ca`, `front-proxy-ca`, `etcd-ca`).
    pub targets: Vec<String>,
    pub new_key: bool,
    pub validity: Duration,
    pub dry_run: bool,
    pub now: OffsetDateTime,
}

/// One renewed certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewed {
    /// kubeadm's name; `<node>/<name>` inside a bundle, `state/<ca>` for a bundle's CA.
    pub name: String,
    /// The file that holds it (the `.crt`, or the kubeconfig).
    pub path: PathBuf,
    pub old_not_after: OffsetDateTime,
    pub new_not_after: OffsetDateTime,
    pub new_key: bool,
}

#[derive(Debug, Clone, Default)]
pub struct RenewReport {
    pub renewed: Vec<Renewed>,
    /// None for a dry run.
    pub backup_dir: Option<PathBuf>,
    /// Components to restart, in this order: etcd, kube-apiserver, kube-controller-manager,
    /// kube-scheduler, kubelet, kube-proxy (only those affected).
    pub restart: Vec<&'static str>,
    /// Node tarballs re-packed (bundle only).
    pub repacked: Vec<PathBuf>,
    /// Every file that was (or, for a dry run, would be) replaced.
    pub changed_files: Vec<PathBuf>,
    pub dry_run: bool,
    /// The components run as systemd units (a hardway or binary profile), not static pods.
    pub systemd: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("{path} is not a kubeadm or kubebundle tree: it has neither pki/ and *.conf, etc/kubernetes, nor nodes/ with state/\n  hint: pass /etc/kubernetes, a node tree OUT/<cluster>/nodes/<node>, or a bundle OUT/<cluster>")]
    NotATree { path: String },
    #[error("nothing to renew: name `all`, certificates (apiserver, admin.conf, …) or a CA (ca, front-proxy-ca, etcd-ca)")]
    NoTargets,
    #[error("unknown certificate {name:?}\n  hint: use `all` or one of: {known}")]
    UnknownTarget { name: String, known: String },
    #[error("{name} is not in {dir}\n  hint: `kubebundle certs check-expiration --dir {dir}` lists what is there")]
    Missing { name: String, dir: String },
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("{name} ({path}): {message}")]
    Cert { name: String, path: String, message: String },
    #[error("{name}: its CA {ca} has no private key ({key}): the CA is externally managed: kubebundle cannot renew it\n  hint: have the owner of the CA sign a new certificate")]
    ExternallyManaged { name: String, ca: String, key: String },
    #[error("{name}: renewed until {leaf} it would outlive its CA {ca}, which expires at {ca_end}\n  hint: renew the CA first (`kubebundle certs renew {ca}`), or pass a shorter --validity")]
    OutlivesCa { name: String, ca: String, leaf: String, ca_end: String },
    #[error("--validity {hours}h from {now} is past the year 9999\n  hint: pass a shorter --validity")]
    Validity { hours: u64, now: String },
    #[error("the backup directory {path} already exists\n  hint: move it away, or run again with another --now")]
    BackupExists { path: String },
    #[error("cannot write {path}: {message}\n  hint: check that the directory is writable (run as the files' owner or root); files written before this one are backed up in {backup}")]
    Write { path: String, message: String, backup: String },
    #[error("cannot back up {path} before changing it: {message}\n  hint: check that the parent of the directory is writable; nothing was changed")]
    Backup { path: String, message: String },
    #[error(transparent)]
    Output(#[from] crate::bundle::output::OutputError),
    #[error(transparent)]
    State(#[from] crate::bundle::state::StateError),
}

// =============================================================================================
// The catalogue

const COMPONENTS: [&str; 6] = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"];
const ETCD: u8 = 1;
const APISERVER: u8 = 2;
const CONTROLLER_MANAGER: u8 = 4;
const SCHEDULER: u8 = 8;
const KUBELET: u8 = 16;
const KUBE_PROXY: u8 = 32;

#[derive(Clone, Copy)]
enum Place {
    /// certificate and key, relative to the pki directory.
    Pki(&'static str, &'static str),
    /// a kubeconfig in the directory of kubeconfigs.
    Kubeconfig(&'static str),
    /// certificate and key, relative to the node root (kubebundle nodes only).
    Root(&'static str, &'static str),
}

struct Leaf {
    name: &'static str,
    place: Place,
    ca: &'static str,
    restart: u8,
}

const LEAVES: &[Leaf] = &[
    Leaf { name: "apiserver", place: Place::Pki("apiserver.crt", "apiserver.key"), ca: "ca", restart: APISERVER },
    Leaf {
        name: "apiserver-kubelet-client",
        place: Place::Pki("apiserver-kubelet-client.crt", "apiserver-kubelet-client.key"),
        ca: "ca",
        restart: APISERVER,
    },
    Leaf {
        name: "front-proxy-client",
        place: Place::Pki("front-proxy-client.crt", "front-proxy-client.key"),
        ca: "front-proxy-ca",
        restart: APISERVER,
    },
    Leaf {
        name: "apiserver-etcd-client",
        place: Place::Pki("apiserver-etcd-client.crt", "apiserver-etcd-client.key"),
        ca: "etcd-ca",
        restart: APISERVER,
    },
    Leaf { name: "etcd-server", place: Place::Pki("etcd/server.crt", "etcd/server.key"), ca: "etcd-ca", restart: ETCD },
    Leaf { name: "etcd-peer", place: Place::Pki("etcd/peer.crt", "etcd/peer.key"), ca: "etcd-ca", restart: ETCD },
    Leaf {
        name: "etcd-healthcheck-client",
        place: Place::Pki("etcd/healthcheck-client.crt", "etcd/healthcheck-client.key"),
        ca: "etcd-ca",
        restart: ETCD,
    },
    Leaf { name: "admin.conf", place: Place::Kubeconfig("admin.conf"), ca: "ca", restart: 0 },
    Leaf { name: "super-admin.conf", place: Place::Kubeconfig("super-admin.conf"), ca: "ca", restart: 0 },
    Leaf { name: "controller-manager.conf", place: Place::Kubeconfig("controller-manager.conf"), ca: "ca", restart: CONTROLLER_MANAGER },
    Leaf { name: "scheduler.conf", place: Place::Kubeconfig("scheduler.conf"), ca: "ca", restart: SCHEDULER },
    Leaf { name: "kubelet.conf", place: Place::Kubeconfig("kubelet.conf"), ca: "ca", restart: KUBELET },
    Leaf {
        name: "kubelet-serving",
        place: Place::Root("var/lib/kubelet/pki/kubelet.crt", "var/lib/kubelet/pki/kubelet.key"),
        ca: "ca",
        restart: KUBELET,
    },
    // kube-proxy run by a unit (hardway, binary); absent from kubeadm trees.
    Leaf { name: "kube-proxy.conf", place: Place::Kubeconfig("kube-proxy.conf"), ca: "ca", restart: KUBE_PROXY },
];

struct CaEntry {
    name: &'static str,
    crt: &'static str,
    key: &'static str,
    restart: u8,
}

const CAS: &[CaEntry] = &[
    CaEntry { name: "ca", crt: "ca.crt", key: "ca.key", restart: APISERVER | CONTROLLER_MANAGER | SCHEDULER | KUBELET },
    CaEntry { name: "front-proxy-ca", crt: "front-proxy-ca.crt", key: "front-proxy-ca.key", restart: APISERVER | CONTROLLER_MANAGER },
    CaEntry { name: "etcd-ca", crt: "etcd/ca.crt", key: "etcd/ca.key", restart: ETCD | APISERVER },
];

fn ca_entry(name: &str) -> Option<&'static CaEntry> {
    CAS.iter().find(|c| c.name == name)
}

// =============================================================================================
// The trees

/// One tree of kubeconfigs and pki/.
struct Tree {
    /// `""`, or `"<node>/"` inside a bundle.
    prefix: String,
    /// The node root (holding etc/kubernetes), when known.
    root: Option<PathBuf>,
    /// The directory of kubeconfigs (etc/kubernetes).
    confs: PathBuf,
    pki: PathBuf,
    /// The node's name and tarball, inside a bundle.
    tarball: Option<PathBuf>,
    /// A bundle node's files by artifact id (from plan.json), for any profile's layout.
    layout: Option<BTreeMap<String, PathBuf>>,
}

impl Tree {
    /// Where the tree keeps `artifact`: per its profile when known, else at kubeadm's `default`.
    fn file(&self, artifact: &str, default: impl FnOnce() -> Option<PathBuf>) -> Option<PathBuf> {
        match &self.layout {
            Some(l) => l.get(artifact).cloned(),
            None => default(),
        }
    }

    /// Every kubeconfig of the tree.
    fn kubeconfigs(&self) -> Vec<PathBuf> {
        let mut here: Vec<PathBuf> = match &self.layout {
            Some(l) => l
                .iter()
                .filter(|(a, _)| catalog::kubeconfig(a).is_some() || a.as_str() == "discovery.conf")
                .map(|(_, p)| p.clone())
                .collect(),
            None => std::fs::read_dir(&self.confs)
                .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "conf") && p.is_file()).collect())
                .unwrap_or_default(),
        };
        here.sort();
        here
    }
}

struct Layout {
    trees: Vec<Tree>,
    /// A bundle's nodes (unpacked copies of those kept only as tarballs).
    nodes: Option<crate::lifecycle::nodes::NodeTrees>,
    /// A bundle's state/pki.
    state_pki: Option<PathBuf>,
    /// Kubeconfigs outside the trees that may hold a CA (a bundle's discovery.conf).
    extra_confs: Vec<PathBuf>,
}

fn is_bundle(dir: &Path) -> bool {
    dir.join("nodes").is_dir() && (dir.join("state").is_dir() || dir.join("plan.json").is_file())
}

fn layout(dir: &Path) -> Result<Layout, RenewError> {
    let not_a_tree = || RenewError::NotATree { path: dir.display().to_string() };
    if !dir.is_dir() {
        return Err(not_a_tree());
    }
    if is_bundle(dir) {
        let names = crate::bundle::plan::bundle_node_names(dir);
        let nodes = crate::lifecycle::nodes::NodeTrees::open(dir, |n| names.as_ref().is_none_or(|l| l.contains(n)))
            .map_err(|message| RenewError::Read { path: dir.join("nodes").display().to_string(), message })?;
        // With plan.json, each node's files are where its profile put them.
        let layouts = crate::bundle::plan::bundle_layouts(dir, |n| nodes.roots.get(n).cloned());
        let trees = nodes
            .roots
            .iter()
            .filter(|(name, root)| layouts.as_ref().map_or(root.join("etc/kubernetes").is_dir(), |l| l.contains_key(*name)))
            .map(|(name, root)| {
                let tarball = dir.join("nodes").join(format!("{name}.tar.gz"));
                Tree {
                    prefix: format!("{name}/"),
                    confs: root.join("etc/kubernetes"),
                    pki: root.join("etc/kubernetes/pki"),
                    tarball: tarball.is_file().then_some(tarball),
                    root: Some(root.clone()),
                    layout: layouts.as_ref().and_then(|l| l.get(name).cloned()),
                }
            })
            .collect();
        let state_pki = Some(dir.join("state/pki")).filter(|p| p.is_dir());
        let extra_confs = Some(dir.join("discovery.conf")).into_iter().filter(|p| p.is_file()).collect();
        return Ok(Layout { trees, nodes: Some(nodes), state_pki, extra_confs });
    }
    let (root, etc) = if dir.join("etc/kubernetes").is_dir() {
        (Some(dir.to_path_buf()), dir.join("etc/kubernetes"))
    } else if dir.join("pki").is_dir() {
        let root = dir.ends_with("etc/kubernetes").then(|| dir.parent().and_then(Path::parent).map(Path::to_path_buf)).flatten();
        (root, dir.to_path_buf())
    } else {
        return Err(not_a_tree());
    };
    // A kubebundle node: its tarball beside it, re-packed too.
    let tarball = root.as_ref().and_then(|r| {
        let name = r.file_name()?.to_string_lossy().into_owned();
        let t = r.parent()?.join(format!("{name}.tar.gz"));
        (r.parent()?.file_name()? == "nodes" && t.is_file()).then_some(t)
    });
    let tree = Tree { prefix: String::new(), pki: etc.join("pki"), confs: etc, root, tarball, layout: None };
    Ok(Layout { trees: vec![tree], nodes: None, state_pki: None, extra_confs: Vec::new() })
}

// =============================================================================================
// Files, read through the changes already computed

struct Work<'a> {
    args: &'a RenewArgs,
    /// New content of every file to replace.
    changes: BTreeMap<PathBuf, Vec<u8>>,
    renewed: Vec<Renewed>,
    restart: u8,
}

fn present(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

impl Work<'_> {
    fn read(&self, path: &Path) -> Result<Vec<u8>, RenewError> {
        if let Some(b) = self.changes.get(path) {
            return Ok(b.clone());
        }
        std::fs::read(path).map_err(|e| RenewError::Read { path: path.display().to_string(), message: crate::util::io_words(&e) })
    }

    fn read_text(&self, path: &Path) -> Result<String, RenewError> {
        String::from_utf8(self.read(path)?)
            .map_err(|_| RenewError::Read { path: path.display().to_string(), message: "not UTF-8 text".into() })
    }
}

/// A CA ready to sign.
struct Signer {
    name: String,
    der: Vec<u8>,
    key: Key,
    not_after: OffsetDateTime,
}

fn first_cert_der(name: &str, path: &Path, text: &str) -> Result<Vec<u8>, RenewError> {
    let err = |message: String| RenewError::Cert { name: name.to_string(), path: path.display().to_string(), message };
    let blocks = pem::parse_many(text).map_err(|e| err(format!("not PEM: {e}")))?;
    let mut certs = blocks.into_iter().filter(|b| b.tag() == "CERTIFICATE");
    let first = certs.next().ok_or_else(|| err("holds no CERTIFICATE block".into()))?;
    Ok(first.contents().to_vec())
}

fn parse_cert<'d>(name: &str, path: &Path, der: &'d [u8]) -> Result<X509Certificate<'d>, RenewError> {
    x509_parser::parse_x509_certificate(der).map(|(_, c)| c).map_err(|e| RenewError::Cert {
        name: name.to_string(),
        path: path.display().to_string(),
        message: format!("unreadable certificate: {e}"),
    })
}

fn load_key(name: &str, path: &Path, text: &str) -> Result<Key, RenewError> {
    Key::from_pem(text).map_err(|e| RenewError::Cert { name: name.to_string(), path: path.display().to_string(), message: e.to_string() })
}

impl Work<'_> {
    /// The CA `ca` that signs `name` in `tree`: the tree's own (cert + key), else the bundle's
    /// state/pki when the tree holds the same certificate (or none).
    fn signer(&self, name: &str, tree: &Tree, state_pki: Option<&Path>, ca: &str) -> Result<Signer, RenewError> {
        let entry = ca_entry(ca).ok_or_else(|| RenewError::Missing { name: ca.to_string(), dir: tree.pki.display().to_string() })?;
        let own_crt = tree.file(&format!("{ca}.crt"), || Some(tree.pki.join(entry.crt))).unwrap_or_else(|| tree.pki.join(entry.crt));
        let own_key = tree.file(&format!("{ca}.key"), || Some(tree.pki.join(entry.key))).unwrap_or_else(|| tree.pki.join(entry.key));
        let mut dir = None;
        if present(&own_crt) && present(&own_key) {
            dir = Some((own_crt.clone(), own_key.clone()));
        } else if let Some(state) = state_pki {
            let (s_crt, s_key) = (state.join(entry.crt), state.join(entry.key));
            let same = !present(&own_crt) || self.read(&own_crt)? == self.read(&s_crt).unwrap_or_default();
            if present(&s_crt) && present(&s_key) && same {
                dir = Some((s_crt, s_key));
            }
        }
        let Some((crt, key)) = dir else {
            if present(&own_crt) {
                return Err(RenewError::ExternallyManaged {
                    name: name.to_string(),
                    ca: ca.to_string(),
                    key: own_key.display().to_string(),
                });
            }
            return Err(RenewError::Missing { name: format!("{ca} (the CA of {name})"), dir: tree.pki.display().to_string() });
        };
        let der = first_cert_der(ca, &crt, &self.read_text(&crt)?)?;
        let key = load_key(ca, &key, &self.read_text(&key)?)?;
        let x = parse_cert(ca, &crt, &der)?;
        if x.public_key().raw != key.spki_der().as_slice() {
            return Err(RenewError::Cert {
                name: ca.to_string(),
                path: crt.display().to_string(),
                message: "the CA key does not match the CA certificate".into(),
            });
        }
        let not_after = x.validity().not_after.to_datetime();
        Ok(Signer { name: ca.to_string(), der, key, not_after })
    }
}

// =============================================================================================
// Certificates

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// The subject as rcgen's DistinguishedName, attribute types and string types kept, in order.
fn copy_dn(x: &X509Certificate<'_>) -> Result<DistinguishedName, String> {
    let mut dn = DistinguishedName::new();
    let mut seen = BTreeSet::new();
    for rdn in x.subject().iter() {
        let mut attrs = rdn.iter();
        let (Some(attr), None) = (attrs.next(), attrs.next()) else {
            return Err("the subject has a multi-valued RDN, which kubebundle cannot copy".into());
        };
        let oid: Vec<u64> = attr.attr_type().iter().ok_or("the subject has an unreadable attribute type")?.collect();
        if !seen.insert(oid.clone()) {
            return Err(format!("the subject repeats the attribute {}, which kubebundle cannot copy", attr.attr_type()));
        }
        let data = attr.attr_value().data;
        let text = || std::str::from_utf8(data).map_err(|_| "the subject has a value that is not text".to_string());
        let bad = |e: rcgen::Error| format!("the subject has a value rcgen cannot encode: {e}");
        let value = match attr.attr_value().header.tag() {
            Tag::PrintableString => DnValue::PrintableString(text()?.try_into().map_err(bad)?),
            Tag::Utf8String => DnValue::Utf8String(text()?.to_string()),
            Tag::Ia5String => DnValue::Ia5String(text()?.try_into().map_err(bad)?),
            Tag::T61String => DnValue::TeletexString(text()?.try_into().map_err(bad)?),
            other => return Err(format!("the subject has a value of ASN.1 type {other} that kubebundle cannot copy")),
        };
        dn.push(DnType::from_oid(&oid), value);
    }
    Ok(dn)
}

fn copy_sans(x: &X509Certificate<'_>) -> Result<Vec<SanType>, String> {
    let Some(ext) = x.subject_alternative_name().map_err(|e| format!("unreadable subjectAltName: {e}"))? else {
        return Ok(Vec::new());
    };
    let ia5 = |s: &str| s.try_into().map_err(|e: rcgen::Error| format!("subjectAltName {s:?}: {e}"));
    ext.value
        .general_names
        .iter()
        .map(|g| match g {
            GeneralName::DNSName(d) => Ok(SanType::DnsName(ia5(d)?)),
            GeneralName::RFC822Name(m) => Ok(SanType::Rfc822Name(ia5(m)?)),
            GeneralName::URI(u) => Ok(SanType::URI(ia5(u)?)),
            GeneralName::IPAddress(b) => match b.len() {
                4 => Ok(SanType::IpAddress(IpAddr::from(<[u8; 4]>::try_from(*b).map_err(|_| "bad IP SAN")?))),
                16 => Ok(SanType::IpAddress(IpAddr::from(<[u8; 16]>::try_from(*b).map_err(|_| "bad IP SAN")?))),
                n => Err(format!("an IP address SAN of {n} bytes")),
            },
            other => Err(format!("a subjectAltName kubebundle cannot copy: {other:?}")),
        })
        .collect()
}

fn copy_key_usages(x: &X509Certificate<'_>) -> Result<Vec<KeyUsagePurpose>, String> {
    let Some(ku) = x.key_usage().map_err(|e| format!("unreadable keyUsage: {e}"))? else { return Ok(Vec::new()) };
    let ku = ku.value;
    let all = [
        (ku.digital_signature(), KeyUsagePurpose::DigitalSignature),
        (ku.non_repudiation(), KeyUsagePurpose::ContentCommitment),
        (ku.key_encipherment(), KeyUsagePurpose::KeyEncipherment),
        (ku.data_encipherment(), KeyUsagePurpose::DataEncipherment),
        (ku.key_agreement(), KeyUsagePurpose::KeyAgreement),
        (ku.key_cert_sign(), KeyUsagePurpose::KeyCertSign),
        (ku.crl_sign(), KeyUsagePurpose::CrlSign),
        (ku.encipher_only(), KeyUsagePurpose::EncipherOnly),
        (ku.decipher_only(), KeyUsagePurpose::DecipherOnly),
    ];
    Ok(all.into_iter().filter(|(on, _)| *on).map(|(_, k)| k).collect())
}

fn copy_ekus(x: &X509Certificate<'_>) -> Result<Vec<ExtendedKeyUsagePurpose>, String> {
    let Some(eku) = x.extended_key_usage().map_err(|e| format!("unreadable extendedKeyUsage: {e}"))? else { return Ok(Vec::new()) };
    let e = eku.value;
    let mut v: Vec<ExtendedKeyUsagePurpose> = [
        (e.any, ExtendedKeyUsagePurpose::Any),
        (e.server_auth, ExtendedKeyUsagePurpose::ServerAuth),
        (e.client_auth, ExtendedKeyUsagePurpose::ClientAuth),
        (e.code_signing, ExtendedKeyUsagePurpose::CodeSigning),
        (e.email_protection, ExtendedKeyUsagePurpose::EmailProtection),
        (e.time_stamping, ExtendedKeyUsagePurpose::TimeStamping),
        (e.ocsp_signing, ExtendedKeyUsagePurpose::OcspSigning),
    ]
    .into_iter()
    .filter(|(on, _)| *on)
    .map(|(_, k)| k)
    .collect();
    for oid in &e.other {
        v.push(ExtendedKeyUsagePurpose::Other(oid.iter().ok_or("an unreadable extendedKeyUsage OID")?.collect()));
    }
    Ok(v)
}

fn subject_key_id(x: &X509Certificate<'_>) -> Option<Vec<u8>> {
    x.extensions().iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
        _ => None,
    })
}

/// The algorithm and size of a certificate's key, for `--new-key`.
fn key_algorithm(x: &X509Certificate<'_>) -> Result<KeyAlgorithm, String> {
    match x.public_key().parsed() {
        Ok(PublicKey::RSA(rsa)) => match rsa.key_size() {
            2048 => Ok(KeyAlgorithm::Rsa2048),
            3072 => Ok(KeyAlgorithm::Rsa3072),
            4096 => Ok(KeyAlgorithm::Rsa4096),
            n => Err(format!("an RSA-{n} key; --new-key makes RSA-2048, 3072 or 4096 keys only")),
        },
        Ok(PublicKey::EC(ec)) => match ec.key_size() {
            256 => Ok(KeyAlgorithm::EcdsaP256),
            384 => Ok(KeyAlgorithm::EcdsaP384),
            n => Err(format!("an EC key of {n} bits; --new-key makes P-256 and P-384 keys only")),
        },
        _ => Err("a key kubebundle cannot regenerate (RSA and ECDSA P-256/P-384 only)".into()),
    }
}

/// A fresh key like the old one, in the old file's PEM format.
fn fresh_key(x: &X509Certificate<'_>, old_pem: &str) -> Result<(Key, String), String> {
    let key = Key::generate(key_algorithm(x)?).map_err(|e| e.to_string())?;
    let label = pem::parse(old_pem).map(|p| p.tag().to_string()).unwrap_or_default();
    let pem = match label.as_str() {
        "RSA PRIVATE KEY" | "EC PRIVATE KEY" => key.private_pem().to_string(),
        "PRIVATE KEY" => pem_encode("PRIVATE KEY", &to_pkcs8(&key)?),
        other => return Err(format!("the key file holds {other:?}, not a private key")),
    };
    Ok((key, pem))
}

/// Wraps a generated key's PKCS#1 / SEC1 DER into a PKCS#8 PrivateKeyInfo.
fn to_pkcs8(key: &Key) -> Result<Vec<u8>, String> {
    let block = pem::parse(key.private_pem()).map_err(|e| e.to_string())?;
    let inner = block.contents();
    let alg: (Vec<u64>, Option<Vec<u64>>) = match block.tag() {
        "RSA PRIVATE KEY" => (vec![1, 2, 840, 113549, 1, 1, 1], None),
        "EC PRIVATE KEY" => {
            let spki = key.spki_der();
            let p384 = spki.len() > 100;
            (vec![1, 2, 840, 10045, 2, 1], Some(if p384 { vec![1, 3, 132, 0, 34] } else { vec![1, 2, 840, 10045, 3, 1, 7] }))
        }
        other => return Err(format!("cannot wrap {other:?} into PKCS#8")),
    };
    Ok(yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_u8(0);
            w.next().write_sequence(|w| {
                w.next().write_oid(&yasna::models::ObjectIdentifier::from_slice(&alg.0));
                match &alg.1 {
                    Some(curve) => w.next().write_oid(&yasna::models::ObjectIdentifier::from_slice(curve)),
                    None => w.next().write_null(),
                }
            });
            w.next().write_bytes(inner);
        })
    }))
}

/// notBefore (now − 5 min) and notAfter (now + validity), without overflowing.
fn window(args: &RenewArgs) -> Result<(OffsetDateTime, OffsetDateTime), RenewError> {
    let bad = || RenewError::Validity { hours: args.validity.as_secs() / 3600, now: rfc3339(args.now) };
    let validity = time::Duration::try_from(args.validity).map_err(|_| bad())?;
    let end = args.now.checked_add(validity).filter(|t| t.year() <= 9999).ok_or_else(bad)?;
    let start = args.now.checked_sub(time::Duration::minutes(5)).ok_or_else(bad)?;
    Ok((start, end))
}

struct NewCert {
    pem: String,
    old_not_after: OffsetDateTime,
    new_not_after: OffsetDateTime,
    /// The new key's PEM, with `--new-key`.
    key_pem: Option<String>,
}

/// Re-issues the leaf `old_der` (whose key is `key_pem`) signed by `ca`.
fn renew_leaf(name: &str, path: &Path, old_der: &[u8], key_pem: &str, ca: &Signer, args: &RenewArgs) -> Result<NewCert, RenewError> {
    let err = |message: String| RenewError::Cert { name: name.to_string(), path: path.display().to_string(), message };
    let x = parse_cert(name, path, old_der)?;
    if x.is_ca() {
        return Err(err("this is a CA certificate; renew it by its CA name (ca, front-proxy-ca, etcd-ca)".into()));
    }
    let old_key = load_key(name, path, key_pem)?;
    if x.public_key().raw != old_key.spki_der().as_slice() {
        return Err(err("the private key does not match the certificate\n  hint: pass --new-key to make a new key for it".into()));
    }
    let (key, new_key_pem) = if args.new_key {
        let (k, pem) = fresh_key(&x, key_pem).map_err(err)?;
        (k, Some(pem))
    } else {
        (old_key, None)
    };
    let (not_before, not_after) = window(args)?;
    if not_after > ca.not_after {
        return Err(RenewError::OutlivesCa {
            name: name.to_string(),
            ca: ca.name.clone(),
            leaf: rfc3339(not_after),
            ca_end: rfc3339(ca.not_after),
        });
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = copy_dn(&x).map_err(err)?;
    params.subject_alt_names = copy_sans(&x).map_err(err)?;
    params.key_usages = copy_key_usages(&x).map_err(err)?;
    params.extended_key_usages = copy_ekus(&x).map_err(err)?;
    params.is_ca = match x.basic_constraints() {
        Ok(Some(_)) => IsCa::ExplicitNoCa,
        _ => IsCa::NoCa,
    };
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    params.not_before = not_before;
    params.not_after = not_after;
    params.use_authority_key_identifier_extension = true;
    let issuer = Issuer::from_ca_cert_der(&ca.der.as_slice().into(), &ca.key.pair)
        .map_err(|e| err(format!("the CA {} cannot sign: {e}", ca.name)))?;
    let cert = params.signed_by(&key.pair, &issuer).map_err(|e| err(format!("cannot sign: {e}")))?;
    Ok(NewCert {
        pem: pem_encode("CERTIFICATE", cert.der()),
        old_not_after: x.validity().not_after.to_datetime(),
        new_not_after: not_after,
        key_pem: new_key_pem,
    })
}

/// Re-issues the CA `old_der` from its own key: same subject, SANs and SKI.
fn renew_ca_cert(name: &str, path: &Path, old_der: &[u8], key: &Key, args: &RenewArgs) -> Result<NewCert, RenewError> {
    let err = |message: String| RenewError::Cert { name: name.to_string(), path: path.display().to_string(), message };
    let x = parse_cert(name, path, old_der)?;
    if !x.is_ca() {
        return Err(err("not a CA certificate (BasicConstraints CA:FALSE)".into()));
    }
    if x.public_key().raw != key.spki_der().as_slice() {
        return Err(err("the CA key does not match the CA certificate".into()));
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = copy_dn(&x).map_err(err)?;
    params.subject_alt_names = copy_sans(&x).map_err(err)?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment, KeyUsagePurpose::KeyCertSign];
    let path_len = x.basic_constraints().ok().flatten().and_then(|b| b.value.path_len_constraint);
    params.is_ca = match path_len {
        Some(n) => IsCa::Ca(BasicConstraints::Constrained(u8::try_from(n).unwrap_or(u8::MAX))),
        None => IsCa::Ca(BasicConstraints::Unconstrained),
    };
    if let Some(ski) = subject_key_id(&x) {
        params.key_identifier_method = KeyIdMethod::PreSpecified(ski);
    }
    params.use_authority_key_identifier_extension = false;
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    (params.not_before, params.not_after) = window(args)?;
    let cert = params.self_signed(&key.pair).map_err(|e| err(format!("cannot sign: {e}")))?;
    Ok(NewCert {
        pem: pem_encode("CERTIFICATE", cert.der()),
        old_not_after: x.validity().not_after.to_datetime(),
        new_not_after: params.not_after,
        key_pem: None,
    })
}

// =============================================================================================
// Kubeconfigs: edit one value in place

/// Byte ranges of the values of `key:` lines (`  key: value`), with the value as written.
fn yaml_values<'t>(text: &'t str, key: &str) -> Vec<(std::ops::Range<usize>, &'t str)> {
    let mut out = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let trimmed = body.trim_start();
        let trimmed = trimmed.strip_prefix("- ").unwrap_or(trimmed);
        let start_of_key = body.len() - trimmed.len();
        if let Some(rest) = trimmed.strip_prefix(key).and_then(|r| r.strip_prefix(':')) {
            let value = rest.trim();
            if !value.is_empty() {
                let lead = rest.len() - rest.trim_start().len();
                let start = offset + start_of_key + key.len() + 1 + lead;
                out.push((start..start + value.len(), value));
            }
        }
        offset += line.len();
    }
    out
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\''))).unwrap_or(v)
}

/// Replaces the value of the `key:` line whose value decodes to `old` with base64(`new`).
fn replace_data(text: &str, key: &str, old: &[u8], new: &[u8]) -> Option<String> {
    let (range, _) = yaml_values(text, key).into_iter().find(|(_, v)| B64.decode(unquote(v)).is_ok_and(|d| d == old))?;
    let mut out = String::with_capacity(text.len() + 64);
    out.push_str(&text[..range.start]);
    out.push_str(&B64.encode(new));
    out.push_str(&text[range.end..]);
    Some(out)
}

/// Resolves a path named in a kubeconfig: relative to the kubeconfig, absolute ones under the
/// node root when the tree is not at /.
fn resolve(conf: &Path, root: Option<&Path>, file: &str) -> PathBuf {
    let p = Path::new(file);
    match (p.is_absolute(), root) {
        (true, Some(root)) => root.join(p.strip_prefix("/").unwrap_or(p)),
        (true, None) => p.to_path_buf(),
        (false, _) => conf.parent().unwrap_or(Path::new(".")).join(p),
    }
}

/// Follows symlinks (absolute targets under `root`) so the file, not the link, is replaced.
fn follow(path: &Path, root: Option<&Path>) -> PathBuf {
    let mut p = path.to_path_buf();
    for _ in 0..8 {
        match std::fs::read_link(&p) {
            Ok(target) => {
                p = if target.is_absolute() {
                    match root {
                        Some(r) => r.join(target.strip_prefix("/").unwrap_or(&target)),
                        None => target,
                    }
                } else {
                    p.parent().unwrap_or(Path::new(".")).join(target)
                };
            }
            Err(_) => break,
        }
    }
    p
}

// =============================================================================================
// Renewing

impl Work<'_> {
    fn note(&mut self, name: String, path: PathBuf, new: &NewCert) {
        self.renewed.push(Renewed {
            name,
            path,
            old_not_after: new.old_not_after,
            new_not_after: new.new_not_after,
            new_key: new.key_pem.is_some(),
        });
    }

    fn renew_leaf_in(&mut self, leaf: &Leaf, tree: &Tree, state_pki: Option<&Path>) -> Result<bool, RenewError> {
        let shown = format!("{}{}", tree.prefix, leaf.name);
        // A certificate file and its key (a kubeconfig's client certificate too, when the
        // profile places it as files), else the kubeconfig that embeds or references it.
        let files = match leaf.place {
            Place::Pki(crt, key) => tree
                .file(&format!("{}.crt", leaf.name), || Some(tree.pki.join(crt)))
                .zip(tree.file(&format!("{}.key", leaf.name), || Some(tree.pki.join(key)))),
            Place::Root(crt, key) => tree
                .file(&format!("{}.crt", leaf.name), || tree.root.as_ref().map(|r| r.join(crt)))
                .zip(tree.file(&format!("{}.key", leaf.name), || tree.root.as_ref().map(|r| r.join(key)))),
            Place::Kubeconfig(_) => tree
                .layout
                .as_ref()
                .and_then(|l| l.get(&format!("{}.crt", leaf.name)).cloned().zip(l.get(&format!("{}.key", leaf.name)).cloned())),
        };
        if let Some((crt, key)) = files {
            let (crt, key) = (follow(&crt, tree.root.as_deref()), follow(&key, tree.root.as_deref()));
            if !present(&crt) {
                return Ok(false);
            }
            let ca = self.signer(&shown, tree, state_pki, leaf.ca)?;
            let der = first_cert_der(&shown, &crt, &self.read_text(&crt)?)?;
            let key_text = self.read_text(&key)?;
            let new = renew_leaf(&shown, &crt, &der, &key_text, &ca, self.args)?;
            self.changes.insert(crt.clone(), new.pem.clone().into_bytes());
            if let Some(k) = &new.key_pem {
                self.changes.insert(key, k.clone().into_bytes());
            }
            self.note(shown, crt, &new);
        } else if let Place::Kubeconfig(file) = leaf.place {
            let Some(conf) = tree.file(leaf.name, || Some(tree.confs.join(file))).filter(|c| present(c)) else {
                return Ok(false);
            };
            self.renew_kubeconfig(&shown, &conf, tree, state_pki, leaf.ca)?;
        } else {
            return Ok(false);
        }
        self.restart |= leaf.restart;
        Ok(true)
    }

    fn renew_kubeconfig(&mut self, shown: &str, conf: &Path, tree: &Tree, state_pki: Option<&Path>, ca: &str) -> Result<(), RenewError> {
        let err = |message: String| RenewError::Cert { name: shown.to_string(), path: conf.display().to_string(), message };
        let text = self.read_text(conf)?;
        let doc = crate::tree::kubeconfig::Kubeconfig::parse(text.as_bytes()).map_err(err)?;
        let user = doc.current_user().ok_or_else(|| err("the kubeconfig has no user".into()))?;
        let signer = self.signer(shown, tree, state_pki, ca)?;
        if let Some(cert_pem) =
            crate::tree::kubeconfig::decode("client-certificate-data", user.client_certificate_data.as_deref()).map_err(err)?
        {
            let key_pem = crate::tree::kubeconfig::decode("client-key-data", user.client_key_data.as_deref())
                .map_err(err)?
                .ok_or_else(|| err("the user has client-certificate-data but no client-key-data".into()))?;
            let cert_text = String::from_utf8(cert_pem.clone()).map_err(|_| err("client-certificate-data is not PEM".into()))?;
            let key_text = String::from_utf8(key_pem.clone()).map_err(|_| err("client-key-data is not PEM".into()))?;
            let der = first_cert_der(shown, conf, &cert_text)?;
            let new = renew_leaf(shown, conf, &der, &key_text, &signer, self.args)?;
            let one_line = "kubebundle edits only a client-certificate-data value written on one line";
            let mut out =
                replace_data(&text, "client-certificate-data", &cert_pem, new.pem.as_bytes()).ok_or_else(|| err(one_line.into()))?;
            if let Some(k) = &new.key_pem {
                out = replace_data(&out, "client-key-data", &key_pem, k.as_bytes())
                    .ok_or_else(|| err("kubebundle edits only a client-key-data value written on one line".into()))?;
            }
            self.changes.insert(conf.to_path_buf(), out.into_bytes());
            self.note(shown.to_string(), conf.to_path_buf(), &new);
            return Ok(());
        }
        let Some(file) = user.client_certificate.as_deref().filter(|f| !f.is_empty()) else {
            return Err(err("the kubeconfig's user has no client certificate (client-certificate-data or client-certificate)".into()));
        };
        let root = tree.root.as_deref();
        let crt = follow(&resolve(conf, root, file), root);
        let key_file = yaml_values(&text, "client-key").into_iter().map(|(_, v)| unquote(v).to_string()).next();
        let key = key_file.map(|k| follow(&resolve(conf, root, &k), root)).unwrap_or_else(|| crt.clone());
        let crt_text = self.read_text(&crt)?;
        let der = first_cert_der(shown, &crt, &crt_text)?;
        let key_text = self.read_text(&key)?;
        let key_block = pem::parse_many(&key_text)
            .map_err(|e| err(format!("{}: not PEM: {e}", key.display())))?
            .into_iter()
            .find(|b| b.tag().ends_with("PRIVATE KEY"))
            .ok_or_else(|| err(format!("{} holds no private key", key.display())))?;
        let key_pem = pem_encode(key_block.tag(), key_block.contents());
        let new = renew_leaf(shown, &crt, &der, &key_pem, &signer, self.args)?;
        let new_key_pem = new.key_pem.clone().unwrap_or(key_pem);
        if crt == key {
            // kubelet-client-current.pem: certificate and key in one file.
            self.changes.insert(crt.clone(), format!("{}{}", new.pem, new_key_pem).into_bytes());
        } else {
            self.changes.insert(crt.clone(), new.pem.clone().into_bytes());
            if new.key_pem.is_some() {
                self.changes.insert(key, new_key_pem.into_bytes());
            }
        }
        self.note(shown.to_string(), crt, &new);
        Ok(())
    }

    /// Re-issues CA `entry` in `pki` and replaces the old certificate in every place of
    /// `trees` (and `extra_confs`) that held it.
    fn renew_ca(&mut self, entry: &CaEntry, shown: String, pki: &Path, trees: &[Tree], extra_confs: &[PathBuf]) -> Result<(), RenewError> {
        let (crt, key) = (pki.join(entry.crt), pki.join(entry.key));
        if !present(&crt) {
            return Err(RenewError::Missing { name: entry.name.to_string(), dir: pki.display().to_string() });
        }
        if !present(&key) {
            return Err(RenewError::ExternallyManaged {
                name: entry.name.to_string(),
                ca: entry.name.to_string(),
                key: key.display().to_string(),
            });
        }
        let old = self.read(&crt)?;
        let old_text = String::from_utf8(old.clone())
            .map_err(|_| RenewError::Read { path: crt.display().to_string(), message: "not PEM text".into() })?;
        let der = first_cert_der(entry.name, &crt, &old_text)?;
        let k = load_key(entry.name, &key, &self.read_text(&key)?)?;
        let new = renew_ca_cert(entry.name, &crt, &der, &k, self.args)?;
        let new_bytes = new.pem.clone().into_bytes();
        self.changes.insert(crt.clone(), new_bytes.clone());
        for tree in trees {
            let Some(copy) = tree.file(&format!("{}.crt", entry.name), || Some(tree.pki.join(entry.crt))) else { continue };
            if copy != crt && present(&copy) && self.read(&copy)? == old {
                self.changes.insert(copy, new_bytes.clone());
            }
        }
        let mut confs: Vec<PathBuf> = extra_confs.to_vec();
        for tree in trees {
            confs.extend(tree.kubeconfigs());
        }
        for conf in confs {
            let Ok(text) = self.read_text(&conf) else { continue };
            let mut current = text.clone();
            while let Some(next) = replace_data(&current, "certificate-authority-data", &old, &new_bytes) {
                current = next;
            }
            if current != text {
                self.changes.insert(conf, current.into_bytes());
            }
        }
        self.note(shown, crt, &new);
        self.restart |= entry.restart;
        Ok(())
    }
}

/// `manifests/cluster-info.yaml` of bundle `dir` rendered again with the renewed CA in `changes`
/// (and its JWS signed again by every signing token), as generate and `token create` write it.
fn cluster_info(dir: &Path, changes: &BTreeMap<PathBuf, Vec<u8>>, state_pki: &Path) -> Result<Option<(PathBuf, Vec<u8>)>, RenewError> {
    let target = dir.join("manifests/cluster-info.yaml");
    let Some(ca) = changes.get(&state_pki.join("ca.crt")).filter(|_| target.is_file()) else { return Ok(None) };
    let bad = |path: &Path, message: String| RenewError::Read { path: path.display().to_string(), message };
    let plan_path = dir.join("plan.json");
    let plan: serde_json::Value = std::fs::read(&plan_path)
        .map_err(|e| bad(&plan_path, e.to_string()))
        .and_then(|b| serde_json::from_slice(&b).map_err(|_| bad(&plan_path, "not a kubebundle plan".into())))?;
    let field = |k: &str| plan[k].as_str().map(str::to_string).ok_or_else(|| bad(&plan_path, format!("no {k}")));
    let version = crate::util::version::KubeVersion::parse(&field("kubernetesVersion")?).map_err(|m| bad(&plan_path, m))?;
    let server = format!("https://{}", field("controlPlaneEndpoint")?);
    let state_dir = state_pki.parent().unwrap_or(dir);
    let tokens =
        crate::bundle::state::read_tokens(state_dir).map_err(|e| bad(&state_dir.join(crate::bundle::state::TOKENS_FILE), e.to_string()))?;
    let renderer = crate::bundle::render::Renderer::new();
    let manifests = crate::bundle::materialize::token_manifests(&renderer, &server, &B64.encode(ca), version.minor, &tokens)
        .map_err(|e| bad(&target, e.to_string()))?;
    Ok(manifests.into_iter().find(|(p, _)| p == "manifests/cluster-info.yaml").map(|(_, text)| (target, text.into_bytes())))
}

// =============================================================================================
// Writing

fn backup_name(now: OffsetDateTime) -> String {
    let t = now.to_offset(time::UtcOffset::UTC);
    format!("kubebundle-backup-{:04}{:02}{:02}T{:02}{:02}{:02}Z", t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute(), t.second())
}

/// Where `path` goes inside the backup: its path relative to DIR.
fn relative_to(dir: &Path, path: &Path) -> PathBuf {
    match path.strip_prefix(dir) {
        Ok(rel) => rel.to_path_buf(),
        Err(_) => Path::new("outside").join(path.strip_prefix("/").unwrap_or(path)),
    }
}

/// Replaces `path` atomically with `bytes`, keeping its mode and owner.
fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    let mode = meta.permissions().mode() & 0o7777;
    // Locked while it lives and removed on a signal; a killed run's is swept by the next.
    let mut tmp = crate::bundle::output::TempFile::beside(path).map_err(|e| e.to_string())?;
    tmp.file.write_all(bytes).map_err(|e| e.to_string())?;
    let f = &tmp.file;
    let (uid, gid) = (meta.uid(), meta.gid());
    let tmeta = f.metadata().map_err(|e| e.to_string())?;
    if tmeta.uid() != uid || tmeta.gid() != gid {
        std::os::unix::fs::fchown(f, Some(uid), Some(gid)).map_err(|e| format!("cannot keep its owner {uid}:{gid}: {e}"))?;
    }
    f.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())?;
    f.sync_all().map_err(|e| e.to_string())?;
    tmp.persist(path).map_err(|e| e.to_string())?;
    Ok(())
}

/// Copies `files` (as they are now) into a private directory beside `backup_dir`, each at its
/// path relative to `dir`, then renames it to `backup_dir` whole: a killed run never leaves a
/// half backup, and an existing backup is never overwritten.
fn backup(dir: &Path, backup_dir: &Path, files: &[PathBuf]) -> Result<(), RenewError> {
    let fail = |path: &Path, e: std::io::Error| RenewError::Backup { path: path.display().to_string(), message: e.to_string() };
    if present(backup_dir) {
        return Err(RenewError::BackupExists { path: backup_dir.display().to_string() });
    }
    let parent = backup_dir.parent().unwrap_or(Path::new("."));
    let staged = crate::bundle::output::PrivateDir::new(parent, ".kubebundle-backup-")
        .map_err(|e| RenewError::Backup { path: backup_dir.display().to_string(), message: e.to_string() })?;
    for f in files {
        let target = staged.path().join(relative_to(dir, f));
        if let Some(parent) = target.parent() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(parent).map_err(|e| fail(parent, e))?;
        }
        let bytes = zeroize::Zeroizing::new(std::fs::read(f).map_err(|e| fail(f, e))?);
        let mode = std::fs::metadata(f).map_err(|e| fail(f, e))?.permissions().mode() & 0o777;
        let mut out = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&target).map_err(|e| fail(&target, e))?;
        out.write_all(&bytes).map_err(|e| fail(&target, e))?;
    }
    staged.publish(backup_dir).map_err(|e| match &e {
        crate::bundle::output::OutputError::Write { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists => {
            RenewError::BackupExists { path: backup_dir.display().to_string() }
        }
        _ => RenewError::Backup { path: backup_dir.display().to_string(), message: e.to_string() },
    })
}

/// `path` relative to the real directory `root` (its parent's links resolved, not the file's).
fn rel_in(root: &Path, path: &Path) -> Result<PathBuf, RenewError> {
    let outside = || RenewError::Read { path: path.display().to_string(), message: format!("not inside {}", root.display()) };
    let (parent, name) = (path.parent().ok_or_else(outside)?, path.file_name().ok_or_else(outside)?);
    let parent =
        std::fs::canonicalize(parent).map_err(|e| RenewError::Read { path: path.display().to_string(), message: e.to_string() })?;
    parent.join(name).strip_prefix(root).map(Path::to_path_buf).map_err(|_| outside())
}

/// A file to write in the staged bundle: its new bytes, with the mode and owner of the file it
/// replaces.
struct Staged {
    bytes: zeroize::Zeroizing<Vec<u8>>,
    mode: u32,
    owner: (u32, u32),
}

/// Renews a bundle as one transaction: the new bundle is staged beside `bundle` (hard links to
/// every file that does not change; the changed files and re-packed tarballs written anew; no
/// file is modified in place), the backup is renamed into place, then the staged bundle is
/// swapped in.
#[allow(clippy::too_many_arguments)]
fn commit_bundle(
    bundle: &Path,
    changes: &BTreeMap<PathBuf, Vec<u8>>,
    in_copy: &dyn Fn(&Path) -> bool,
    tarballs: &[(PathBuf, PathBuf)],
    changed: &[PathBuf],
    backup_dir: &Path,
    mtime: u64,
) -> Result<(), RenewError> {
    let read_err = |path: &Path, e: String| RenewError::Read { path: path.display().to_string(), message: e };
    let stat = |path: &Path| -> Result<((u32, u32), u32), RenewError> {
        let m = std::fs::metadata(path).map_err(|e| read_err(path, e.to_string()))?;
        Ok(((m.uid(), m.gid()), m.permissions().mode() & 0o7777))
    };
    let mut writes: BTreeMap<PathBuf, Staged> = BTreeMap::new();
    for (path, bytes) in changes.iter().filter(|(p, _)| !in_copy(p)) {
        let (owner, mode) = stat(path)?;
        writes.insert(rel_in(bundle, path)?, Staged { bytes: zeroize::Zeroizing::new(bytes.clone()), mode, owner });
    }
    for (root, tb) in tarballs {
        let mut tree = crate::bundle::output::read_tree(root).map_err(|e| read_err(root, e.to_string()))?;
        for (path, bytes) in changes.iter().filter(|(p, _)| p.starts_with(root)) {
            let Ok(rel) = path.strip_prefix(root) else { continue };
            let rel = rel.to_string_lossy();
            let mode = tree.get(&rel).map(|f| f.mode).unwrap_or(0o600);
            tree.insert(&rel, bytes.clone(), mode);
        }
        let packed = crate::tree::tarball::tar_gz(&tree, mtime).map_err(|e| read_err(tb, e.to_string()))?;
        let (owner, mode) = stat(tb)?;
        writes.insert(rel_in(bundle, tb)?, Staged { bytes: zeroize::Zeroizing::new(packed), mode, owner });
    }
    let werr = |path: &Path, e: std::io::Error| RenewError::Output(crate::bundle::output::werr(path)(e));
    let (parent, name) = match (bundle.parent(), bundle.file_name()) {
        (Some(p), Some(n)) => (p, n.to_string_lossy()),
        _ => return Err(werr(bundle, std::io::ErrorKind::InvalidInput.into())),
    };
    let staging = crate::bundle::output::stage(parent, &name)?;
    crate::bundle::output::link_copy(bundle, staging.path())?;
    for (rel, f) in &writes {
        let path = staging.path().join(rel);
        crate::bundle::output::write_file(&path, &f.bytes, f.mode)?;
        let m = std::fs::metadata(&path).map_err(|e| werr(&path, e))?;
        if (m.uid(), m.gid()) != f.owner {
            std::os::unix::fs::chown(&path, Some(f.owner.0), Some(f.owner.1)).map_err(|e| {
                werr(&path, std::io::Error::new(e.kind(), format!("cannot keep its owner {}:{}: {e}", f.owner.0, f.owner.1)))
            })?;
        }
    }
    backup(bundle, backup_dir, &changed.iter().map(|p| rel_in(bundle, p).map(|r| bundle.join(r))).collect::<Result<Vec<_>, _>>()?)?;
    crate::bundle::output::commit(staging, bundle)?;
    Ok(())
}

/// state/leaves.json with the records of the leaves renewed in the bundle's node trees (their
/// certificate, and key with --new-key), so the next `generate` keeps the renewals. None when the
/// state has no records or none changed.
fn updated_leaf_records(file: &Path, trees: &[Tree], changes: &BTreeMap<PathBuf, Vec<u8>>) -> Result<Option<Vec<u8>>, RenewError> {
    if !present(file) {
        return Ok(None);
    }
    let state_dir = file.parent().unwrap_or(Path::new("."));
    let mut records = crate::bundle::state::read_leaves(state_dir)
        .map_err(|e| RenewError::Read { path: file.display().to_string(), message: e.to_string() })?;
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
    let mut touched = false;
    for tree in trees {
        let (Some(layout), Some(node)) = (&tree.layout, tree.prefix.strip_suffix('/')) else { continue };
        for (artifact, path) in layout {
            let Some(bytes) = changes.get(path) else { continue };
            let (id, cert, key) = if let Some(id) = artifact.strip_suffix(".crt") {
                (id, text(bytes), None)
            } else if let Some(id) = artifact.strip_suffix(".key") {
                (id, None, text(bytes))
            } else if catalog::kubeconfig(artifact).is_some() {
                let Ok(kc) = crate::tree::kubeconfig::Kubeconfig::parse(bytes) else { continue };
                let Some(user) = kc.current_user() else { continue };
                let data = |v: Option<&str>| crate::tree::kubeconfig::decode("", v).ok().flatten().and_then(|b| String::from_utf8(b).ok());
                (artifact.as_str(), data(user.client_certificate_data.as_deref()), data(user.client_key_data.as_deref()))
            } else {
                continue;
            };
            let Some(record) = records.get_mut(&(node.to_string(), id.to_string())) else { continue };
            if let Some(c) = cert {
                record.cert_pem = Some(c);
                touched = true;
            }
            if let Some(k) = key {
                record.key_pem = zeroize::Zeroizing::new(k);
                touched = true;
            }
        }
    }
    Ok(touched.then(|| crate::bundle::state::leaves_json(&records)))
}

// =============================================================================================
// Entry point

pub fn renew(args: &RenewArgs) -> Result<RenewReport, RenewError> {
    if args.targets.is_empty() {
        return Err(RenewError::NoTargets);
    }
    let known = || {
        let mut v: Vec<&str> = LEAVES.iter().map(|l| l.name).collect();
        v.extend(CAS.iter().map(|c| c.name));
        v.join(", ")
    };
    let mut cas: Vec<&CaEntry> = Vec::new();
    let mut leaves: Vec<&Leaf> = Vec::new();
    let mut explicit = BTreeSet::new();
    for t in &args.targets {
        if t == "all" {
            for l in LEAVES {
                if !leaves.iter().any(|x| x.name == l.name) {
                    leaves.push(l);
                }
            }
        } else if let Some(c) = ca_entry(t) {
            if !cas.iter().any(|x| x.name == c.name) {
                cas.push(c);
            }
        } else if let Some(l) = LEAVES.iter().find(|l| l.name == t) {
            explicit.insert(l.name);
            if !leaves.iter().any(|x| x.name == l.name) {
                leaves.push(l);
            }
        } else {
            return Err(RenewError::UnknownTarget { name: t.clone(), known: known() });
        }
    }
    // kubeadm's order for leaves.
    leaves.sort_by_key(|l| LEAVES.iter().position(|x| x.name == l.name));

    let dir = args.dir.clone();
    // A link is followed (a dangling one is an error); the lock every writer takes is held
    // before anything this run rewrites is read. A dry run writes nothing and takes none.
    if crate::bundle::output::resolve(&dir)?.is_none_or(|real| !real.is_dir()) {
        return Err(RenewError::NotATree { path: dir.display().to_string() });
    }
    let lock = if args.dry_run {
        None
    } else {
        let etc = dir.join("etc/kubernetes");
        Some(crate::bundle::output::lock_dir(if etc.is_dir() { &etc } else { &dir })?)
    };
    // A bundle's state is checked before any of it is used: a lost or changed CA refuses.
    if is_bundle(&dir) {
        crate::bundle::state::check::check_bundle(&dir)?;
    }
    let lay = layout(&dir)?;
    let mut work = Work { args, changes: BTreeMap::new(), renewed: Vec::new(), restart: 0 };

    // CAs first, so leaves renewed in the same run are signed by the new certificate.
    for entry in &cas {
        match &lay.state_pki {
            Some(state) => work.renew_ca(entry, format!("state/{}", entry.name), state, &lay.trees, &lay.extra_confs)?,
            None => {
                for tree in &lay.trees {
                    let shown = format!("{}{}", tree.prefix, entry.name);
                    work.renew_ca(entry, shown, &tree.pki, &lay.trees, &lay.extra_confs)?;
                }
            }
        }
    }
    // A bundle's cluster-info carries the cluster CA, signed per token: it follows a renewed CA.
    if let (Some(state_pki), true) = (&lay.state_pki, cas.iter().any(|c| c.name == "ca")) {
        if let Some((path, bytes)) = cluster_info(&dir, &work.changes, state_pki)? {
            work.changes.insert(path, bytes);
        }
    }
    for leaf in &leaves {
        let mut found = false;
        for tree in &lay.trees {
            found |= work.renew_leaf_in(leaf, tree, lay.state_pki.as_deref())?;
        }
        if !found && explicit.contains(leaf.name) {
            return Err(RenewError::Missing { name: leaf.name.to_string(), dir: dir.display().to_string() });
        }
    }
    if work.renewed.is_empty() {
        return Err(RenewError::Missing { name: args.targets.join(" "), dir: dir.display().to_string() });
    }

    // Tarballs of the node trees that change.
    let mut tarballs: Vec<(PathBuf, PathBuf)> = Vec::new();
    for tree in &lay.trees {
        if let (Some(root), Some(tb)) = (&tree.root, &tree.tarball) {
            if work.changes.keys().any(|p| p.starts_with(root)) {
                tarballs.push((root.clone(), tb.clone()));
            }
        }
    }

    // A bundle's state records each leaf's certificate and key: keep them in step.
    if let Some(state_pki) = &lay.state_pki {
        let leaves_file = state_pki.with_file_name(crate::bundle::state::LEAVES_FILE);
        if let Some(bytes) = updated_leaf_records(&leaves_file, &lay.trees, &work.changes)? {
            work.changes.insert(leaves_file, bytes);
        }
    }
    // Files of unpacked copies are not the bundle's: their tarballs are.
    let in_copy = |p: &Path| lay.nodes.as_ref().is_some_and(|n| n.in_copy(p));
    let mut changed: Vec<PathBuf> = work.changes.keys().filter(|p| !in_copy(p)).cloned().collect();
    changed.extend(tarballs.iter().map(|(_, t)| t.clone()));
    if let Some(nodes) = &lay.nodes {
        for r in &mut work.renewed {
            r.path = PathBuf::from(nodes.display(&r.path));
        }
    }
    let restart = COMPONENTS.iter().enumerate().filter(|(i, _)| work.restart & (1 << i) != 0).map(|(_, c)| *c).collect();
    let mut report = RenewReport {
        renewed: std::mem::take(&mut work.renewed),
        backup_dir: None,
        restart,
        repacked: Vec::new(),
        changed_files: changed.clone(),
        dry_run: args.dry_run,
        systemd: lay.trees.iter().any(|t| t.layout.as_ref().is_some_and(|l| l.keys().any(|a| a.ends_with(".service")))),
    };
    if args.dry_run {
        report.repacked = tarballs.into_iter().map(|(_, t)| t).collect();
        return Ok(report);
    }

    let mtime = u64::try_from(args.now.unix_timestamp()).unwrap_or(0);
    if let Some(bundle) = lock.as_ref().filter(|l| l.is_bundle()).map(|l| l.dir().to_path_buf()) {
        // Beside the bundle, never inside it.
        let backup_dir = bundle.parent().unwrap_or(Path::new("/")).join(backup_name(args.now));
        commit_bundle(&bundle, &work.changes, &in_copy, &tarballs, &changed, &backup_dir, mtime)?;
        report.backup_dir = Some(backup_dir);
        report.repacked = tarballs.into_iter().map(|(_, t)| t).collect();
        return Ok(report);
    }

    let parent = std::fs::canonicalize(&dir).ok().and_then(|d| d.parent().map(Path::to_path_buf)).unwrap_or_else(|| dir.join(".."));
    let backup_dir = parent.join(backup_name(args.now));
    backup(&dir, &backup_dir, &changed)?;
    report.backup_dir = Some(backup_dir.clone());
    let werr = |path: &Path, message: String| RenewError::Write {
        path: path.display().to_string(),
        message,
        backup: backup_dir.display().to_string(),
    };
    // What a killed run left beside the files this one replaces.
    let mut dirs: Vec<&Path> = work.changes.keys().chain(tarballs.iter().map(|(_, t)| t)).filter_map(|p| p.parent()).collect();
    dirs.sort();
    dirs.dedup();
    for d in dirs {
        crate::bundle::output::sweep(d);
    }
    for (path, bytes) in &work.changes {
        replace_file(path, bytes).map_err(|m| werr(path, m))?;
    }
    for (root, tb) in tarballs {
        let tree = crate::bundle::output::read_tree(&root)
            .map_err(|e| RenewError::Read { path: root.display().to_string(), message: e.to_string() })?;
        let bytes = crate::tree::tarball::tar_gz(&tree, mtime).map_err(|e| werr(&tb, e.to_string()))?;
        replace_file(&tb, &bytes).map_err(|m| werr(&tb, m))?;
        report.repacked.push(tb);
    }
    drop(lock);
    Ok(report)
}

impl RenewReport {
    /// What was renewed, where the backup is, what to restart. Names and paths are escaped: a
    /// control character or an escape sequence in them is shown, never sent to the terminal.
    pub fn render(&self) -> String {
        use crate::util::text::escape;
        let shown = |p: &Path| escape(&p.display().to_string()).into_owned();
        let mut s = String::new();
        let verb = if self.dry_run { "would renew" } else { "renewed" };
        s.push_str(&format!("{verb} {} certificate(s):\n", self.renewed.len()));
        let names: Vec<String> = self.renewed.iter().map(|r| escape(&r.name).into_owned()).collect();
        let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
        for (r, name) in self.renewed.iter().zip(&names) {
            let key = if r.new_key { "  (new key)" } else { "" };
            s.push_str(&format!("  {name:width$}  {} → {}  {}{key}\n", rfc3339(r.old_not_after), rfc3339(r.new_not_after), shown(&r.path)));
        }
        if self.dry_run {
            s.push_str(&format!("dry run: nothing written ({} file(s) would change)\n", self.changed_files.len()));
        }
        if let Some(b) = &self.backup_dir {
            s.push_str(&format!("backup of the {} replaced file(s): {}\n", self.changed_files.len(), shown(b)));
        }
        for t in &self.repacked {
            s.push_str(&format!("{} {}\n", if self.dry_run { "would re-pack" } else { "re-packed" }, shown(t)));
        }
        if self.restart.is_empty() {
            s.push_str("nothing to restart\n");
        } else {
            s.push_str(&format!("restart, in this order: {}\n", self.restart.join(", ")));
            if self.systemd {
                s.push_str(&format!("  (systemctl restart {})\n", self.restart.join(" ")));
            } else {
                s.push_str(
                    "  (static pods: move the manifest out of /etc/kubernetes/manifests and back; kubelet: systemctl restart kubelet)\n",
                );
            }
        }
        s
    }
}
