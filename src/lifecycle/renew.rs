//! `kubebundle certs renew`: re-issue certificates in place, keeping subjects, SANs and keys.
//!
//! What `kubeadm certs renew` does, offline, on any node tree kubebundle reads (kubeadm, hardway,
//! binary or a profile of your own: a live host, an extracted root, `/etc/kubernetes`), a node
//! tree inside a bundle, or a whole bundle. The tree is read through the node-tree model
//! (`crate::tree`): its layout says where each certificate, key and kubeconfig is.
//!
//! - a leaf keeps its key (a fresh one of the same algorithm and size with `new_key`), its
//!   subject, SANs, key usages and EKUs; it gets a new serial, notBefore = now − 5 min and
//!   notAfter = now + validity, and is signed by its CA: the tree's own where the layout keeps
//!   its key there, else the bundle's state;
//! - a kubeconfig's client certificate is renewed by rewriting only the base64 value of
//!   `client-certificate-data` (and `client-key-data` with a new key), or the file its
//!   `client-certificate` names (the kubelet's `kubelet-client-current.pem`: the dated file the
//!   link points to is replaced, the link stays);
//! - a CA is re-issued from its own key with the same subject and Subject Key Identifier, so
//!   every existing leaf still verifies and the discovery hash stays the same; it replaces the
//!   old certificate in every file that holds it (CA files, trust bundles, every kubeconfig's
//!   certificate-authority-data, discovery.conf), and in a bundle its state and cluster-info
//!   (signed again by every signing token). On a live host the report says what must follow
//!   on the other nodes and in the cluster.
//!
//! A certificate whose CA key the layout keeps off the node (hardway's front-proxy-ca and
//! etcd-ca, any CA key on a worker) is not renewed there: `all` lists it with where to renew it,
//! naming it is refused. A CA key missing from where the layout keeps it is an externally
//! managed CA (kubeadm's external-CA mode): the CA itself is refused; each wanted certificate it
//! signs gets a CSR for its current key with its subject, SANs and usages instead — on a bundle
//! under `csr/<node>/` (`external_requests`), on a node tree beside it as kubeadm's `certs
//! generate-csr` places them, or in `--csr-dir` — while the others are renewed in the same run;
//! `import-signed` takes the signed certificates back (on a node tree through `install_signed`,
//! with the same edits and writes as a renewal).
//!
//! Everything is computed in memory first, under the lock every writer takes (a bundle's, also
//! for a node tree inside it; else a lock on the tree's directory). Every file about to change
//! is backed up into a private directory renamed whole to `kubebundle-backup-<now>/` beside the
//! bundle or tree (a bundle's backup hard-links the files it replaces: they are never modified in
//! place). A bundle (or a node tree inside one) is then a transaction like `generate`: the new
//! bundle is staged beside it (hard links for the files that do not change, the changed files
//! and re-packed tarballs written anew) and swapped in atomically. A tree that is not in a bundle
//! has each file replaced atomically through the model, keeping its mode and owner.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rayon::prelude::*;
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
use crate::pki::derive::{DeterministicSigner, Rfc6979Signer};
use crate::pki::issue::random_serial;
use crate::pki::keys::{pem_encode, Key};
use crate::tree::certs::{CaKey, Place, Site, CAS};
use crate::tree::kubeconfig::{decode, edit_data, replace_data, Kubeconfig};
use crate::tree::node::{NodeTree, Origin, TreeError};
use crate::tree::target::{locate, Target};

/// What to renew, where, and how.
#[derive(Debug, Clone)]
pub struct RenewArgs {
    pub dir: PathBuf,
    /// `all`, the catalogue's leaf names (kubeadm's), or CA names (`ca`, `front-proxy-ca`, `etcd-ca`).
    pub targets: Vec<String>,
    pub new_key: bool,
    pub validity: Duration,
    pub dry_run: bool,
    pub now: OffsetDateTime,
    /// `--profile NAME|FILE`: the tree's layout, instead of recognising it.
    pub profile: Option<PathBuf>,
    /// `--csr-dir DIR` (node trees): the CSRs of an external CA's certificates go there, laid out
    /// as a bundle's `csr/<node>/` (relative to /etc/kubernetes), instead of beside each
    /// certificate in the tree.
    pub csr_dir: Option<PathBuf>,
}

/// One renewed certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewed {
    /// kubeadm's name; `<node>/<name>` inside a bundle, `state/<ca>` for a bundle's CA.
    pub name: String,
    /// The file that holds it (the `.crt`, the kubeconfig, or the file a link points to;
    /// `<tarball>:<path>` inside a bundle).
    pub path: PathBuf,
    pub old_not_after: OffsetDateTime,
    pub new_not_after: OffsetDateTime,
    pub new_key: bool,
}

/// A certificate `all` did not renew here, and why (its CA key is kept off the node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub name: String,
    pub why: String,
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
    /// What `all` left alone: certificates whose CA key the layout keeps off this node.
    pub skipped: Vec<Skipped>,
    /// After a CA renewed on a live host: what must follow on the other nodes and in the cluster.
    pub follow_up: Vec<String>,
    /// External-CA mode: the CSRs written instead of signing (`OUT/<cluster>/csr/<node>/...`;
    /// in a node tree beside each certificate, or in `--csr-dir`).
    pub requests: Vec<PathBuf>,
    /// On a node tree, for each of `requests`: the certificate's name and when it expires.
    pub requested: Vec<(String, OffsetDateTime)>,
}

#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("{path} is not a directory kubebundle can renew in\n  hint: pass a node's root (/ or an extracted tarball), /etc/kubernetes or /etc/k8s, a node tree OUT/<cluster>/nodes/<node>, or a bundle OUT/<cluster>")]
    NotATree { path: String },
    #[error("{path} is not a node tree kubebundle knows: {why}\n  hint: pass a node's root (/ or the directory a node tarball was extracted into), /etc/kubernetes or /etc/k8s, a bundle OUT/<cluster>, or --profile FILE for a layout of your own")]
    Unrecognised { path: String, why: String },
    #[error("{0}")]
    Profile(String),
    #[error("nothing to renew: name `all`, certificates (apiserver, admin.conf, …) or a CA (ca, front-proxy-ca, etcd-ca)")]
    NoTargets,
    #[error("unknown certificate {name:?}\n  hint: use `all` or one of: {known}")]
    UnknownTarget { name: String, known: String },
    #[error("{name} is not in {dir}\n  hint: `kubebundle certs check-expiration --dir {dir}` lists what is there")]
    Missing { name: String, dir: String },
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("{name} ({path}): {message}\n  hint: put back the file from a backup (kubebundle-backup-*) or from the node's tarball, then run again")]
    Cert { name: String, path: String, message: String },
    #[error("{name}: its CA {ca} has no private key ({key}): the CA is externally managed: kubebundle cannot renew it\n  hint: have the owner of the CA sign a new certificate")]
    ExternallyManaged { name: String, ca: String, key: String },
    #[error("{name}: {why}\n  hint: {hint}")]
    OffNode { name: String, why: String, hint: String },
    #[error("{name}: its CA {ca} is external (its key is not in the tree): --new-key would replace the key its current certificate needs before {ca}'s owner signs a new one; nothing was written\n  hint: renew without --new-key: the CSR asks for a certificate for the current key")]
    ExternalNewKey { name: String, ca: String },
    #[error("--csr-dir is for node trees: {dir} is a bundle, whose CSRs go to its csr/ directory\n  hint: drop --csr-dir")]
    CsrDirOnBundle { dir: String },
    #[error("nothing in {dir} can be renewed there:\n{list}\n  hint: renew them where their CA keys are: in the bundle (`kubebundle certs renew all --dir OUT/<cluster>`, then deploy the node's tarball again) or on a control plane holding the keys")]
    NothingHere { dir: String, list: String },
    #[error("{name}: renewed until {leaf} it would outlive its CA {ca}, which expires at {ca_end}\n  hint: renew the CA first (`kubebundle certs renew {ca}`), or pass a shorter --validity")]
    OutlivesCa { name: String, ca: String, leaf: String, ca_end: String },
    #[error("--validity {hours}h from {now} is past the year 9999\n  hint: pass a shorter --validity")]
    Validity { hours: u64, now: String },
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
// What each certificate makes restart

const COMPONENTS: [&str; 6] = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"];
const ETCD: u8 = 1;
const APISERVER: u8 = 2;
const CONTROLLER_MANAGER: u8 = 4;
const SCHEDULER: u8 = 8;
const KUBELET: u8 = 16;
const KUBE_PROXY: u8 = 32;

/// The components that read a leaf of the catalogue.
fn leaf_restart(id: &str) -> u8 {
    match id {
        "apiserver" | "apiserver-kubelet-client" | "front-proxy-client" | "apiserver-etcd-client" => APISERVER,
        "etcd-server" | "etcd-peer" | "etcd-healthcheck-client" => ETCD,
        "controller-manager.conf" => CONTROLLER_MANAGER,
        "scheduler.conf" => SCHEDULER,
        "kubelet.conf" | "kubelet-serving" => KUBELET,
        "kube-proxy.conf" => KUBE_PROXY,
        _ => 0,
    }
}

/// The components that trust a CA (kube-proxy when the tree runs it from a unit with a kubeconfig).
fn ca_restart(ca: &str, kube_proxy: bool) -> u8 {
    match ca {
        "ca" => APISERVER | CONTROLLER_MANAGER | SCHEDULER | KUBELET | if kube_proxy { KUBE_PROXY } else { 0 },
        "front-proxy-ca" => APISERVER | CONTROLLER_MANAGER,
        "etcd-ca" => ETCD | APISERVER,
        _ => 0,
    }
}

/// The names `renew` takes: the catalogue's leaves (kubeadm's names) and the CAs.
fn known() -> String {
    let mut v = crate::tree::certs::leaf_order();
    v.extend(["ca", "front-proxy-ca", "etcd-ca"]);
    v.join(", ")
}

struct Wanted {
    /// Leaf names, `all` giving every one.
    leaves: BTreeSet<String>,
    all: bool,
    /// Named explicitly (a missing one is an error).
    explicit: BTreeSet<String>,
    /// In the order kubeadm renews them.
    cas: Vec<&'static str>,
}

fn wanted(targets: &[String]) -> Result<Wanted, RenewError> {
    if targets.is_empty() {
        return Err(RenewError::NoTargets);
    }
    let leaves_known = crate::tree::certs::leaf_order();
    let mut w = Wanted { leaves: BTreeSet::new(), all: false, explicit: BTreeSet::new(), cas: Vec::new() };
    for t in targets {
        if t == "all" {
            w.all = true;
        } else if let Some(ca) = ["ca", "front-proxy-ca", "etcd-ca"].into_iter().find(|c| c == t) {
            if !w.cas.contains(&ca) {
                w.cas.push(ca);
            }
        } else if leaves_known.contains(&t.as_str()) {
            w.leaves.insert(t.clone());
            w.explicit.insert(t.clone());
        } else {
            return Err(RenewError::UnknownTarget { name: t.clone(), known: known() });
        }
    }
    w.cas.sort_by_key(|c| ["ca", "front-proxy-ca", "etcd-ca"].iter().position(|x| x == c));
    Ok(w)
}

impl Wanted {
    fn leaf(&self, site: &Site) -> bool {
        // `all` leaves alone what the kubelet rotates and no kubeconfig names (it renews those itself).
        let standalone_rotated = site.rotated && !matches!(site.place, Place::Referenced { .. });
        (self.all && !standalone_rotated) || self.leaves.contains(&site.name)
    }
}

// =============================================================================================
// Signers

/// A CA ready to sign.
struct Signer {
    name: String,
    /// The CA certificate (DER) and its PEM text as the tree holds it.
    der: Vec<u8>,
    key: Key,
    /// The RFC 6979 signer of an ECDSA key, made once (None for RSA).
    ec: Option<Rfc6979Signer>,
    not_after: OffsetDateTime,
}

impl Signer {
    fn load(name: &str, crt_shown: &str, crt: &[u8], key_shown: &str, key: &[u8]) -> Result<Signer, RenewError> {
        let text = |what: &str, b: &[u8]| {
            String::from_utf8(b.to_vec()).map_err(|_| RenewError::Read { path: what.to_string(), message: "not PEM text".into() })
        };
        let der = first_cert_der(name, crt_shown, &text(crt_shown, crt)?)?;
        let key = load_key(name, key_shown, &text(key_shown, key)?)?;
        let x = parse_cert(name, crt_shown, &der)?;
        if x.public_key().raw != key.spki_der().as_slice() {
            return Err(RenewError::Cert {
                name: name.to_string(),
                path: crt_shown.to_string(),
                message: "the CA key does not match the CA certificate".into(),
            });
        }
        let not_after = x.validity().not_after.to_datetime();
        let ec = Rfc6979Signer::try_from_key(&key).map_err(|e| RenewError::Cert {
            name: name.to_string(),
            path: key_shown.to_string(),
            message: e.to_string(),
        })?;
        Ok(Signer { name: name.to_string(), der, key, ec, not_after })
    }
}

fn first_cert_der(name: &str, path: &str, text: &str) -> Result<Vec<u8>, RenewError> {
    let err = |message: String| RenewError::Cert { name: name.to_string(), path: path.to_string(), message };
    let blocks = pem::parse_many(text).map_err(|_| err("not PEM: a BEGIN/END block is broken or its base64 does not decode".into()))?;
    let mut certs = blocks.into_iter().filter(|b| b.tag() == "CERTIFICATE");
    let first = certs.next().ok_or_else(|| err("holds no CERTIFICATE block".into()))?;
    Ok(first.contents().to_vec())
}

fn parse_cert<'d>(name: &str, path: &str, der: &'d [u8]) -> Result<X509Certificate<'d>, RenewError> {
    x509_parser::parse_x509_certificate(der).map(|(_, c)| c).map_err(|_| RenewError::Cert {
        name: name.to_string(),
        path: path.to_string(),
        message: "not a readable X.509 certificate: the DER inside its PEM block does not parse".into(),
    })
}

fn load_key(name: &str, path: &str, text: &str) -> Result<Key, RenewError> {
    Key::from_pem(text).map_err(|e| RenewError::Cert { name: name.to_string(), path: path.to_string(), message: e.to_string() })
}

/// A bundle's CAs, from its state (`state/pki`), each renewed in memory when asked.
struct StateCas {
    pki: PathBuf,
    signers: BTreeMap<&'static str, Signer>,
    /// The CA certificates as the state holds them (old PEM, DER), for finding their copies.
    old: BTreeMap<&'static str, Vec<u8>>,
}

fn state_files(ca: &str) -> (&'static str, &'static str) {
    match ca {
        "ca" => ("ca.crt", "ca.key"),
        "front-proxy-ca" => ("front-proxy-ca.crt", "front-proxy-ca.key"),
        _ => ("etcd/ca.crt", "etcd/ca.key"),
    }
}

impl StateCas {
    fn load(pki: &Path) -> Result<StateCas, RenewError> {
        let mut signers = BTreeMap::new();
        let mut old = BTreeMap::new();
        for ca in CAS {
            let (crt, key) = state_files(ca);
            let (crt, key) = (pki.join(crt), pki.join(key));
            let Ok(crt_bytes) = std::fs::read(&crt) else { continue };
            let Ok(key_bytes) = std::fs::read(&key).map(zeroize::Zeroizing::new) else { continue };
            let s = Signer::load(ca, &crt.display().to_string(), &crt_bytes, &key.display().to_string(), &key_bytes)?;
            old.insert(ca, s.der.clone());
            signers.insert(ca, s);
        }
        Ok(StateCas { pki: pki.to_path_buf(), signers, old })
    }
}

// =============================================================================================
// One node tree: what changes in it

struct TreeWork<'t> {
    tree: &'t NodeTree,
    /// `""`, or `"<node>/"` inside a bundle.
    prefix: String,
    /// Path in the tree → new content.
    changes: BTreeMap<String, Vec<u8>>,
    renewed: Vec<Renewed>,
    skipped: Vec<Skipped>,
    restart: u8,
    /// The tree's own CAs (cert + key in the tree), loaded when first needed.
    own: BTreeMap<&'static str, Signer>,
    /// (catalogue id, new certificate PEM, new key PEM) of each renewed leaf, for the state's records.
    records: Vec<(String, String, Option<String>)>,
    /// A leaf whose CA key is absent from the tree (external CA) gets a CSR (node trees; a
    /// bundle's go to its csr/ from its state's records).
    csr_mode: bool,
    /// The CSRs written instead of signing.
    requests: Vec<Csr>,
}

/// A leaf's certificate (DER, the first block) and private key (PEM), as the tree holds them.
struct Material {
    der: Vec<u8>,
    key_pem: zeroize::Zeroizing<String>,
}

/// A CSR for an external CA's leaf, in the tree.
struct Csr {
    /// The certificate's name (kubeadm's).
    name: String,
    /// Where it goes in the tree.
    rel: String,
    /// The file it is written beside, whose owner it takes.
    beside: String,
    pem: Vec<u8>,
    /// When the certificate it renews expires.
    not_after: OffsetDateTime,
}

impl<'t> TreeWork<'t> {
    fn new(tree: &'t NodeTree, prefix: String) -> TreeWork<'t> {
        TreeWork {
            tree,
            prefix,
            changes: BTreeMap::new(),
            renewed: Vec::new(),
            skipped: Vec::new(),
            restart: 0,
            own: BTreeMap::new(),
            records: Vec::new(),
            csr_mode: false,
            requests: Vec::new(),
        }
    }

    /// A file's content as this run leaves it.
    fn read(&self, rel: &str) -> Result<Vec<u8>, RenewError> {
        if let Some(b) = self.changes.get(rel) {
            return Ok(b.clone());
        }
        match self.tree.files.get(rel) {
            Some(f) => Ok(f.bytes.to_vec()),
            None => Err(RenewError::Read {
                path: self.tree.show(rel),
                message: self.tree.problems.iter().find(|(p, _)| p == rel).map(|(_, w)| w.clone()).unwrap_or_else(|| "missing".into()),
            }),
        }
    }

    fn text(&self, rel: &str) -> Result<String, RenewError> {
        String::from_utf8(self.read(rel)?).map_err(|_| RenewError::Read { path: self.tree.show(rel), message: "not UTF-8 text".into() })
    }

    /// Where a file is shown in the report: the file on disk a link points to, else the tree's path.
    fn shown(&self, rel: &str) -> PathBuf {
        match (&self.tree.origin, self.tree.files.get(rel).and_then(|f| f.real.as_ref())) {
            (Origin::Host(_), Some(real)) => real.clone(),
            _ => PathBuf::from(self.tree.show(rel)),
        }
    }

    /// The tree's own CA `ca`, when its layout keeps the key here (the certificate as this run leaves it).
    fn own_signer(&mut self, ca: &'static str) -> Result<Option<&Signer>, RenewError> {
        if !self.own.contains_key(ca) {
            let CaKey::Here(key) = self.tree.ca_key(ca) else { return Ok(None) };
            let Some((crt, _)) = self.tree.artifact(&format!("{ca}.crt")) else { return Ok(None) };
            let crt = crt.to_string();
            let s = Signer::load(ca, &self.tree.show(&crt), &self.read(&crt)?, &self.tree.show(&key), &self.read(&key)?)?;
            self.own.insert(ca, s);
        }
        Ok(self.own.get(ca))
    }

    /// Why a leaf signed by `ca` cannot be renewed in this tree (None: it can).
    fn unsignable(&self, site: &Site, ca: &str, state: Option<&StateCas>) -> Option<RenewError> {
        match self.tree.ca_key(ca) {
            CaKey::Here(_) => None,
            _ if state.is_some_and(|s| s.signers.contains_key(ca)) => None,
            CaKey::Absent(key) => Some(RenewError::ExternallyManaged {
                name: format!("{}{}", self.prefix, site.name),
                ca: ca.to_string(),
                key: self.tree.show(&key),
            }),
            CaKey::OffNode { on_other_nodes } => Some(RenewError::OffNode {
                name: format!("{}{}", self.prefix, site.name),
                why: format!("signed by {ca}, whose key the {} layout keeps {}", self.tree.layout.profile, off_node(on_other_nodes)),
                hint: format!("renew it where the key is: `kubebundle certs renew {} --dir OUT/<cluster>`, then deploy this node's tarball again (or copy the renewed file here)", site.name),
            }),
        }
    }

    /// A leaf's certificate (the DER of the first block) and private key (PEM), where the tree
    /// keeps them: a kubeconfig's data, or its files (the kubelet's pair is one file).
    fn material(&self, site: &Site) -> Result<Material, RenewError> {
        let name = format!("{}{}", self.prefix, site.name);
        let shown = self.tree.show(site.place.path());
        let err = |message: String| RenewError::Cert { name: name.clone(), path: shown.clone(), message };
        match &site.place {
            Place::Broken { why, .. } => Err(err(why.clone())),
            Place::Embedded { conf } => {
                let text = self.text(conf)?;
                let doc = Kubeconfig::parse(text.as_bytes()).map_err(err)?;
                let user = doc.current_user().ok_or_else(|| err("the kubeconfig has no user".into()))?;
                let cert_pem = decode("client-certificate-data", user.client_certificate_data.as_deref())
                    .map_err(err)?
                    .ok_or_else(|| err("no client-certificate-data".into()))?;
                let key_pem = decode("client-key-data", user.client_key_data.as_deref())
                    .map_err(err)?
                    .ok_or_else(|| err("the user has client-certificate-data but no client-key-data".into()))?;
                let cert_text = String::from_utf8(cert_pem).map_err(|_| err("client-certificate-data is not PEM".into()))?;
                let key_pem = zeroize::Zeroizing::new(String::from_utf8(key_pem).map_err(|_| err("client-key-data is not PEM".into()))?);
                let der = first_cert_der(&name, &shown, &cert_text)?;
                Ok(Material { der, key_pem })
            }
            Place::File { crt, key } | Place::Referenced { crt, key, .. } => {
                let key = match (&site.place, key) {
                    (_, Some(k)) => k.clone(),
                    (Place::Referenced { .. }, None) => crt.clone(),
                    (_, None) => return Err(err("its private key is not in the tree (the layout places none beside it)".into())),
                };
                let der = first_cert_der(&name, &shown, &self.text(crt)?)?;
                let key_text = zeroize::Zeroizing::new(self.text(&key)?);
                let key_block = pem::parse_many(key_text.as_bytes())
                    .map_err(|_| {
                        err(format!("{}: not PEM: a BEGIN/END block is broken or its base64 does not decode", self.tree.show(&key)))
                    })?
                    .into_iter()
                    .find(|b| b.tag().ends_with("PRIVATE KEY"))
                    .ok_or_else(|| err(format!("{} holds no private key", self.tree.show(&key))))?;
                let key_pem = zeroize::Zeroizing::new(pem_encode(key_block.tag(), key_block.contents()));
                Ok(Material { der, key_pem })
            }
        }
    }

    /// Puts the certificate `new_pem` where the site keeps the one `m` read (its other blocks, a
    /// chain after it, and the rest of the file stay), and `new_key` in place of its key; returns
    /// the file that holds it.
    fn put_cert(&mut self, site: &Site, m: &Material, new_pem: &str, new_key: Option<&str>) -> Result<String, RenewError> {
        let name = format!("{}{}", self.prefix, site.name);
        let shown = self.tree.show(site.place.path());
        let err = |message: String| RenewError::Cert { name: name.clone(), path: shown.clone(), message };
        let swap = |b: &[u8]| edit_pem(b, |tag, d| (tag == "CERTIFICATE" && d == m.der.as_slice()).then(|| new_pem.to_string()));
        match &site.place {
            Place::Broken { why, .. } => Err(err(why.clone())),
            Place::Embedded { conf } => {
                let text = self.text(conf)?;
                let one_line = "kubebundle edits only a client-certificate-data value written on one line";
                let mut out = edit_data(&text, "client-certificate-data", swap).ok_or_else(|| err(one_line.into()))?;
                if let Some(k) = new_key {
                    out = replace_data(&out, "client-key-data", m.key_pem.as_bytes(), k.as_bytes())
                        .ok_or_else(|| err("kubebundle edits only a client-key-data value written on one line".into()))?;
                }
                self.changes.insert(conf.clone(), out.into_bytes());
                Ok(conf.clone())
            }
            Place::File { crt, key } | Place::Referenced { crt, key, .. } => {
                let replaced = swap(&self.read(crt)?).ok_or_else(|| err("the certificate block could not be replaced".into()))?;
                // The kubelet's pair is one file: certificate and key.
                let key = key.as_ref().unwrap_or(crt);
                match new_key {
                    Some(k) if key == crt => {
                        let both = edit_pem(&replaced, |tag, _| tag.ends_with("PRIVATE KEY").then(|| k.to_string())).unwrap_or(replaced);
                        self.changes.insert(crt.clone(), both);
                    }
                    Some(k) => {
                        self.changes.insert(crt.clone(), replaced);
                        self.changes.insert(key.clone(), k.as_bytes().to_vec());
                    }
                    None => {
                        self.changes.insert(crt.clone(), replaced);
                    }
                }
                Ok(crt.clone())
            }
        }
    }

    /// Re-issues one leaf with `signer`.
    fn renew_site(&mut self, site: &Site, signer: &Signer, args: &RenewArgs) -> Result<(), RenewError> {
        let name = format!("{}{}", self.prefix, site.name);
        let shown = self.tree.show(site.place.path());
        let m = self.material(site)?;
        let new = renew_leaf(&name, &shown, &m.der, &m.key_pem, signer, args)?;
        let rel = self.put_cert(site, &m, &new.pem, new.key_pem.as_deref())?;
        self.note(site, &rel, &new);
        self.restart |= leaf_restart(site.entry.map(|e| e.id).unwrap_or(&site.name));
        Ok(())
    }

    /// External CA (its key is not in the tree): a CSR for the leaf instead of a new certificate,
    /// for its current key, asking for what the certificate holds (subject, SANs, usages), where
    /// kubeadm's `certs generate-csr` puts it: `<base>.csr` beside the certificate and its key,
    /// `<kubeconfig>.csr` beside a kubeconfig (also one naming the kubelet's rotated pair).
    fn request_site(&mut self, site: &Site, ca: &str, args: &RenewArgs) -> Result<(), RenewError> {
        let name = format!("{}{}", self.prefix, site.name);
        let shown = self.tree.show(site.place.path());
        let err = |message: String| RenewError::Cert { name: name.clone(), path: shown.clone(), message };
        if args.new_key {
            return Err(RenewError::ExternalNewKey { name, ca: ca.to_string() });
        }
        let m = self.material(site)?;
        let x = parse_cert(&name, &shown, &m.der)?;
        let key = load_key(&name, &shown, &m.key_pem)?;
        if x.public_key().raw != key.spki_der().as_slice() {
            return Err(err(
                "the private key does not match the certificate: a CSR for it would not give a certificate for this key".into()
            ));
        }
        let der = leaf_request_like(&x, &key).map_err(err)?;
        let (rel, beside) = match &site.place {
            Place::Embedded { conf } => (format!("{conf}.csr"), conf.clone()),
            Place::Referenced { conf, .. } if site.rotated => (format!("{conf}.csr"), conf.clone()),
            other => {
                let crt = other.path();
                let base = [".crt", ".pem"].iter().find_map(|s| crt.strip_suffix(s)).unwrap_or(crt);
                (format!("{base}.csr"), crt.to_string())
            }
        };
        self.requests.push(Csr {
            name,
            rel,
            beside,
            pem: pem_encode("CERTIFICATE REQUEST", &der).into_bytes(),
            not_after: x.validity().not_after.to_datetime(),
        });
        Ok(())
    }

    fn note(&mut self, site: &Site, rel: &str, new: &NewCert) {
        self.renewed.push(Renewed {
            name: format!("{}{}", self.prefix, site.name),
            path: self.shown(rel),
            old_not_after: new.old_not_after,
            new_not_after: new.new_not_after,
            new_key: new.key_pem.is_some(),
        });
        if let Some(e) = site.entry {
            self.records.push((e.id.to_string(), new.pem.clone(), new.key_pem.clone()));
        }
    }

    /// Puts `new_pem` wherever the tree holds the CA certificate `old_der`: PEM files (a trust
    /// bundle keeps its other certificates) and kubeconfigs' certificate-authority-data.
    fn replace_ca(&mut self, old_der: &[u8], new_pem: &str) {
        let paths: Vec<String> = self.tree.files.keys().cloned().collect();
        for rel in paths {
            let Ok(bytes) = self.read(&rel) else { continue };
            if let Some(new) = with_ca_replaced(&bytes, old_der, new_pem) {
                self.changes.insert(rel, new);
            }
        }
    }

    /// Renews the tree's own CA `ca` from the key the tree holds.
    fn renew_own_ca(&mut self, ca: &'static str, args: &RenewArgs) -> Result<(), RenewError> {
        let name = format!("{}{ca}", self.prefix);
        let Some((crt, _)) = self.tree.artifact(&format!("{ca}.crt")) else {
            return Err(RenewError::Missing { name, dir: self.tree.show("") });
        };
        let crt = crt.to_string();
        let key = match self.tree.ca_key(ca) {
            CaKey::Here(k) => k,
            CaKey::Absent(k) => return Err(RenewError::ExternallyManaged { name: name.clone(), ca: ca.to_string(), key: self.tree.show(&k) }),
            CaKey::OffNode { on_other_nodes } => {
                return Err(RenewError::OffNode {
                    name,
                    why: format!("the {} layout keeps {ca}'s key {}", self.tree.layout.profile, off_node(on_other_nodes)),
                    hint: format!("renew it where the key is (`kubebundle certs renew {ca} --dir OUT/<cluster>`, or on a control plane holding it), then copy {} here", self.tree.show(&crt)),
                })
            }
        };
        let shown = self.tree.show(&crt);
        let text = self.text(&crt)?;
        let der = first_cert_der(ca, &shown, &text)?;
        let key_text = zeroize::Zeroizing::new(self.text(&key)?);
        let k = load_key(ca, &self.tree.show(&key), &key_text)?;
        let new = renew_ca_cert(ca, &shown, &der, &k, args)?;
        self.replace_ca(&der, &new.pem);
        self.own.remove(ca);
        self.renewed.push(Renewed {
            name,
            path: self.shown(&crt),
            old_not_after: new.old_not_after,
            new_not_after: new.new_not_after,
            new_key: false,
        });
        let kube_proxy = self.tree.artifact("kube-proxy.conf").is_some();
        self.restart |= ca_restart(ca, kube_proxy);
        Ok(())
    }

    /// Renews the leaves `want` names, each with its tree's CA or the bundle's state.
    fn renew_leaves(&mut self, want: &Wanted, state: Option<&StateCas>, args: &RenewArgs) -> Result<BTreeSet<String>, RenewError> {
        let mut found = BTreeSet::new();
        for site in self.tree.certificates().into_iter().filter(|s| !s.is_ca && want.leaf(s)) {
            found.insert(site.name.clone());
            // A link outside the tree that cannot be read: reported and skipped, never fatal.
            if let Place::Broken { path, why } = &site.place {
                if self.tree.outside.contains(path) && !want.explicit.contains(&site.name) {
                    self.skipped.push(Skipped { name: format!("{}{}", self.prefix, site.name), why: why.clone() });
                    continue;
                }
            }
            let Some(ca) = site.ca else {
                // The kubelet's self-signed serving certificate: the kubelet makes a new one.
                self.skipped.push(Skipped {
                    name: format!("{}{}", self.prefix, site.name),
                    why: "the kubelet's own self-signed serving certificate: remove it and restart the kubelet for a new one".into(),
                });
                continue;
            };
            if let Some(e) = self.unsignable(&site, ca, state) {
                match e {
                    RenewError::OffNode { name, why, .. } if !want.explicit.contains(&site.name) => {
                        self.skipped.push(Skipped { name, why });
                        continue;
                    }
                    // External CA: a CSR instead (kubeadm's external-CA mode).
                    RenewError::ExternallyManaged { .. } if self.csr_mode => {
                        self.request_site(&site, ca, args)?;
                        continue;
                    }
                    e => return Err(e),
                }
            }
            // The bundle's CA (its state), else the tree's own where its layout keeps the key here.
            if let Some(signer) = state.and_then(|s| s.signers.get(ca)) {
                self.renew_site(&site, signer, args)?;
            } else if self.own_signer(ca)?.is_some() {
                let signer = self.own.remove(ca).ok_or_else(|| RenewError::Missing { name: ca.to_string(), dir: self.tree.show("") })?;
                let r = self.renew_site(&site, &signer, args);
                self.own.insert(ca, signer);
                r?;
            }
        }
        Ok(found)
    }
}

fn off_node(on_other_nodes: bool) -> &'static str {
    if on_other_nodes {
        "on the control planes, not on this node"
    } else {
        "on no node, only in the bundle's state"
    }
}

/// `bytes` with the CA certificate `old_der` replaced by `new_pem` in its PEM blocks and in any
/// `certificate-authority-data` it holds; None when it holds no copy.
fn with_ca_replaced(bytes: &[u8], old_der: &[u8], new_pem: &str) -> Option<Vec<u8>> {
    let swap = |b: &[u8]| edit_pem(b, |tag, d| (tag == "CERTIFICATE" && d == old_der).then(|| new_pem.to_string()));
    let mut out: Option<Vec<u8>> = None;
    if contains(bytes, b"-----BEGIN CERTIFICATE-----") {
        out = swap(bytes);
    }
    if contains(out.as_deref().unwrap_or(bytes), b"certificate-authority-data:") {
        let text = String::from_utf8(out.clone().unwrap_or_else(|| bytes.to_vec())).ok()?;
        if let Some(t) = edit_data(&text, "certificate-authority-data", |decoded| swap(decoded)) {
            out = Some(t.into_bytes());
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Replaces each PEM block of `text` for which `f(tag, der)` gives new PEM text (the rest of the
/// file stays byte for byte); None when none was replaced.
fn edit_pem(text: &[u8], f: impl Fn(&str, &[u8]) -> Option<String>) -> Option<Vec<u8>> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    let mut out = Vec::with_capacity(text.len() + 64);
    let mut at = 0;
    let mut changed = false;
    while let Some(i) = text[at..].windows(BEGIN.len()).position(|w| w == BEGIN).map(|i| at + i) {
        let Some(tag_end) = text[i + BEGIN.len()..].windows(5).position(|w| w == b"-----").map(|p| i + BEGIN.len() + p) else { break };
        let tag = String::from_utf8_lossy(&text[i + BEGIN.len()..tag_end]).into_owned();
        let end_marker = format!("-----END {tag}-----");
        let Some(e) =
            text[tag_end..].windows(end_marker.len()).position(|w| w == end_marker.as_bytes()).map(|p| tag_end + p + end_marker.len())
        else {
            break;
        };
        let replacement = pem::parse(&text[i..e]).ok().and_then(|block| f(&tag, block.contents()));
        out.extend_from_slice(&text[at..i]);
        match replacement {
            Some(new) => {
                out.extend_from_slice(new.trim_end_matches('\n').as_bytes());
                changed = true;
            }
            None => out.extend_from_slice(&text[i..e]),
        }
        at = e;
    }
    out.extend_from_slice(&text[at..]);
    changed.then_some(out)
}

// =============================================================================================
// Entry point

pub fn renew(args: &RenewArgs) -> Result<RenewReport, RenewError> {
    let want = wanted(&args.targets)?;
    // The window is checked before anything is read.
    window(args)?;
    let candidates = crate::lifecycle::expiry::candidates(args.profile.as_deref()).map_err(RenewError::Profile)?;
    let dir = args.dir.clone();
    // A link is followed (a dangling one is an error).
    if crate::bundle::output::resolve(&dir)?.is_none_or(|real| !real.is_dir()) {
        return Err(RenewError::NotATree { path: dir.display().to_string() });
    }
    let target = locate(&dir);
    if let (Target::Bundle(b) | Target::BundleNode { bundle: b, .. }, Some(_)) = (&target, &args.csr_dir) {
        return Err(RenewError::CsrDirOnBundle { dir: b.display().to_string() });
    }
    match target {
        Target::Bundle(bundle) => renew_bundle(args, &want, &bundle, None),
        Target::BundleNode { bundle, name, .. } => renew_bundle(args, &want, &bundle, Some(&name)),
        Target::Host(mount) => {
            // The lock before anything this run rewrites is read. A dry run takes none.
            let lock = if args.dry_run { None } else { Some(lock_host(&dir)?) };
            let tree = NodeTree::read_host(mount, None, &candidates).map_err(|e| match e {
                TreeError::Unrecognised { path, why } => RenewError::Unrecognised { path, why: why.to_string() },
                TreeError::Read { path, why } => RenewError::Read { path, message: why },
            })?;
            let report = renew_host(args, &want, &tree)?;
            drop(lock);
            Ok(report)
        }
    }
}

fn restart_list(bits: u8) -> Vec<&'static str> {
    COMPONENTS.iter().enumerate().filter(|(i, _)| bits & (1 << i) != 0).map(|(_, c)| *c).collect()
}

fn nothing_here(dir: &Path, skipped: &[Skipped]) -> RenewError {
    let list: Vec<String> = skipped.iter().map(|s| format!("  - {}: {}", s.name, s.why)).collect();
    RenewError::NothingHere { dir: dir.display().to_string(), list: list.join("\n") }
}

/// A live host, an extracted root or a kubeadm directory: each changed file replaced atomically.
fn renew_host(args: &RenewArgs, want: &Wanted, tree: &NodeTree) -> Result<RenewReport, RenewError> {
    let dir = &args.dir;
    let mut work = TreeWork::new(tree, String::new());
    work.csr_mode = true;
    for ca in &want.cas {
        work.renew_own_ca(ca, args)?;
    }
    let found = work.renew_leaves(want, None, args)?;
    for name in &want.explicit {
        if !found.contains(name) {
            return Err(RenewError::Missing { name: name.clone(), dir: dir.display().to_string() });
        }
    }
    if work.renewed.is_empty() && work.requests.is_empty() {
        if !work.skipped.is_empty() {
            return Err(nothing_here(dir, &work.skipped));
        }
        return Err(RenewError::Missing { name: args.targets.join(" "), dir: dir.display().to_string() });
    }
    let mut writes = tree.writes(&work.changes).map_err(|m| RenewError::Read { path: dir.display().to_string(), message: m })?;
    let changed: Vec<PathBuf> = writes.iter().map(|w| w.real.clone()).collect();
    // The CSRs: beside each certificate in the tree (kubeadm's generate-csr layout), or in --csr-dir.
    for c in &work.requests {
        let w = match &args.csr_dir {
            None => tree.new_file(&c.rel, &c.pem, 0o600, &c.beside),
            Some(d) => Ok(crate::tree::node::FileWrite {
                rel: c.rel.clone(),
                real: d.join(c.rel.strip_prefix("etc/kubernetes/").unwrap_or(&c.rel)),
                bytes: zeroize::Zeroizing::new(c.pem.clone()),
                mode: 0o600,
                uid: 0,
                gid: 0,
            }),
        };
        writes.push(w.map_err(|m| RenewError::Read { path: tree.show(&c.rel), message: m })?);
    }
    let requests: Vec<PathBuf> = writes[changed.len()..].iter().map(|w| w.real.clone()).collect();
    let mut follow_up: Vec<String> = want.cas.iter().flat_map(|ca| follow_up(tree, ca)).collect();
    if !work.requests.is_empty() {
        follow_up.push(format!(
            "external CA: {} certificate(s) were not renewed here, their CSRs wait: have each signed by its CA, keeping its extensions (`openssl ca` with copy_extensions = copy, `openssl x509 -req -copy_extensions copy`, Vault <pki>/sign/<role>), save the certificates anywhere outside the tree, then `kubebundle import-signed --dir {} SIGNED...` puts them into this tree",
            work.requests.len(),
            shell_word(&dir.display().to_string())
        ));
    }
    let mut report = RenewReport {
        renewed: std::mem::take(&mut work.renewed),
        restart: restart_list(work.restart),
        changed_files: changed,
        dry_run: args.dry_run,
        systemd: tree.layout.systemd(),
        skipped: std::mem::take(&mut work.skipped),
        follow_up,
        requests,
        requested: work.requests.iter().map(|c| (c.name.clone(), c.not_after)).collect(),
        ..RenewReport::default()
    };
    if args.dry_run {
        return Ok(report);
    }
    if let Some(d) = &args.csr_dir {
        let own = |w: &mut crate::tree::node::FileWrite| -> std::io::Result<()> {
            let parent = w.real.parent().unwrap_or(d);
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(parent)?;
            let m = std::fs::metadata(parent)?;
            (w.uid, w.gid) = (m.uid(), m.gid());
            Ok(())
        };
        for w in writes.iter_mut().skip(report.changed_files.len()) {
            own(w).map_err(|e| RenewError::Write {
                path: w.real.display().to_string(),
                message: crate::util::io_words(&e),
                backup: "nothing (no file was changed)".into(),
            })?;
        }
    }
    report.backup_dir = write_host(dir, tree, &writes, args.now)?;
    Ok(report)
}

/// `import-signed --dir TREE`: puts certificates an external CA signed (each already checked
/// against the leaf `site` it renews: the same key, subject, SANs and usages, signed by the tree's
/// CA) where the tree keeps each leaf, with renewal's own edits (the certificate block replaced,
/// a chain after it and the rest of the file kept; a kubeconfig's client-certificate-data) and
/// writes (backup beside the tree, each file replaced atomically, mode, owner and links kept).
/// The caller holds the lock (`lock_host`).
pub fn install_signed(dir: &Path, tree: &NodeTree, signed: &[(Site, String)], now: OffsetDateTime) -> Result<RenewReport, RenewError> {
    let mut work = TreeWork::new(tree, String::new());
    for (site, pem_text) in signed {
        let shown = tree.show(site.place.path());
        let m = work.material(site)?;
        let new_der = first_cert_der(&site.name, &shown, pem_text)?;
        let new = NewCert {
            pem: pem_text.clone(),
            old_not_after: parse_cert(&site.name, &shown, &m.der)?.validity().not_after.to_datetime(),
            new_not_after: parse_cert(&site.name, &shown, &new_der)?.validity().not_after.to_datetime(),
            key_pem: None,
        };
        let rel = work.put_cert(site, &m, &new.pem, None)?;
        work.note(site, &rel, &new);
        work.restart |= leaf_restart(site.entry.map(|e| e.id).unwrap_or(&site.name));
    }
    let writes = tree.writes(&work.changes).map_err(|m| RenewError::Read { path: dir.display().to_string(), message: m })?;
    let mut report = RenewReport {
        renewed: std::mem::take(&mut work.renewed),
        restart: restart_list(work.restart),
        changed_files: writes.iter().map(|w| w.real.clone()).collect(),
        systemd: tree.layout.systemd(),
        ..RenewReport::default()
    };
    report.backup_dir = write_host(dir, tree, &writes, now)?;
    Ok(report)
}

/// The lock a writer of a node tree (not in a bundle) takes: on its /etc/kubernetes when it
/// has one, else on the directory given.
pub fn lock_host(dir: &Path) -> Result<crate::bundle::output::OutputLock, crate::bundle::output::OutputError> {
    let etc = dir.join("etc/kubernetes");
    crate::bundle::output::lock_dir(if etc.is_dir() { &etc } else { dir })
}

/// Writes `writes` into the node tree `dir` (under its lock): every file about to be replaced
/// is first copied into `kubebundle-backup-<now>/` beside `dir`, then each is replaced atomically
/// through the model, keeping its mode and owner (a link stays a link). Returns where the backup
/// is (None when only new files were written).
fn write_host(
    dir: &Path,
    tree: &NodeTree,
    writes: &[crate::tree::node::FileWrite],
    now: OffsetDateTime,
) -> Result<Option<PathBuf>, RenewError> {
    let replaced: Vec<PathBuf> = writes.iter().map(|w| w.real.clone()).filter(|p| std::fs::symlink_metadata(p).is_ok()).collect();
    let backup_dir = if replaced.is_empty() {
        None
    } else {
        let parent = std::fs::canonicalize(dir).ok().and_then(|d| d.parent().map(Path::to_path_buf)).unwrap_or_else(|| dir.join(".."));
        let root = match &tree.origin {
            Origin::Host(m) if m.is_root() => Some(m.dir.clone()),
            _ => None,
        };
        Some(backup(dir, root.as_deref(), &parent, now, &replaced)?)
    };
    // What a killed run left beside the files this one replaces.
    let mut dirs: Vec<&Path> = writes.iter().filter_map(|w| w.real.parent()).collect();
    dirs.sort();
    dirs.dedup();
    for d in dirs {
        crate::bundle::output::sweep(d);
    }
    let temp = |p: &Path| -> std::io::Result<Box<dyn crate::tree::node::TempFile>> {
        crate::bundle::output::TempFile::beside(p).map(|t| Box::new(t) as Box<dyn crate::tree::node::TempFile>)
    };
    for w in writes {
        crate::tree::node::replace(w, &temp).map_err(|message| RenewError::Write {
            path: w.real.display().to_string(),
            message,
            backup: backup_dir.as_ref().map(|b| b.display().to_string()).unwrap_or_else(|| "nothing (no file was replaced)".into()),
        })?;
    }
    Ok(backup_dir)
}

/// After `ca` was renewed on one host: the other nodes' files and the cluster object that hold
/// it, with the commands that bring them in step.
fn follow_up(tree: &NodeTree, ca: &str) -> Vec<String> {
    let Some((ca_rel, _)) = tree.artifact(&format!("{ca}.crt")) else { return Vec::new() };
    let ca_path = format!("/{ca_rel}");
    let mut lines = vec![format!(
        "{ca} was renewed on this node only: every other node of the cluster still holds the old certificate (same key: it keeps working until it expires)"
    )];
    lines.push(format!("  on each other node: copy this node's {ca_path} to {ca_path} (e.g. `scp {ca_path} NODE:{ca_path}`)"));
    if ca == "ca" {
        // Every kubeconfig the layout places, on any node, may embed it.
        let mut confs: Vec<String> = tree
            .layout
            .entries
            .iter()
            .filter(|e| catalog::kubeconfig(&e.artifact).is_some() || e.artifact == "discovery.conf")
            .map(|e| format!("/{}", e.path))
            .collect();
        confs.sort();
        confs.dedup();
        let cluster = tree
            .files
            .iter()
            .filter(|(p, _)| confs.contains(&format!("/{p}")))
            .find_map(|(_, f)| Kubeconfig::parse(&f.bytes).ok()?.clusters.first().map(|c| c.name.clone()))
            .unwrap_or_else(|| "kubernetes".to_string());
        lines.push(format!(
            "  then, there, put it into each kubeconfig that embeds it: for f in {}; do [ -f \"$f\" ] && kubectl config set-cluster {} --kubeconfig=\"$f\" --certificate-authority={ca_path} --embed-certs; done",
            confs.join(" "),
            shell_word(&cluster)
        ));
        let admin = tree.artifact("admin.conf").or_else(|| tree.artifact("super-admin.conf")).map(|(p, _)| format!("/{p}"));
        let admin = admin.unwrap_or_else(|| "/etc/kubernetes/admin.conf".into());
        lines.push("  the cluster's kube-public/cluster-info ConfigMap (token discovery for kubeadm join) holds it too; update its kubeconfig, once, from this node:".into());
        lines.push(format!(
            "    kubectl --kubeconfig {admin} -n kube-public get configmap cluster-info -o yaml | sed \"s|certificate-authority-data: .*|certificate-authority-data: $(base64 -w0 {ca_path})|\" | kubectl --kubeconfig {admin} replace -f -"
        ));
        lines.push(
            "    kube-controller-manager's bootstrapsigner then signs it again for every bootstrap token (its jws-kubeconfig-<id> keys)"
                .into(),
        );
    } else {
        lines.push(format!("  the components that trust it there read it from {ca_path} when they restart"));
    }
    lines.push(format!(
        "  from the bundle instead: `kubebundle certs renew {ca} --dir OUT/<cluster>` renews it in the state, every node's tarball{} at once",
        if ca == "ca" { ", discovery.conf and cluster-info" } else { "" }
    ));
    lines
}

/// A word as the shell reads it (quoted when it needs to be).
fn shell_word(w: &str) -> String {
    if !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:/@".contains(c)) {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    }
}

/// A bundle, or one node tree in it (`only`): the state's CAs sign, every node changed is
/// re-packed, the state's records follow, and the whole is one transaction.
fn renew_bundle(args: &RenewArgs, want: &Wanted, bundle: &Path, only: Option<&str>) -> Result<RenewReport, RenewError> {
    // The lock every writer takes, before anything this run rewrites is read (none for a dry run).
    let lock = if args.dry_run { None } else { Some(crate::bundle::output::lock_dir(bundle)?) };
    // A bundle's state is checked before any of it is used: a lost or changed CA refuses, and so
    // does a bundle whose state is gone.
    crate::bundle::state::check::check_bundle(bundle)?;
    let plan = crate::tree::bundle::read_plan(bundle);
    let mut nodes = crate::tree::bundle::read_nodes(bundle, plan.as_ref(), false)
        .map_err(|message| RenewError::Read { path: bundle.join("nodes").display().to_string(), message })?;
    if let Some(name) = only {
        nodes.retain(|n| n.name == name);
    }
    if let Some(report) = external_requests(args, want, bundle, only, lock.as_ref())? {
        return Ok(report);
    }
    let state_pki = bundle.join("state/pki");
    let mut state = if state_pki.is_dir() { Some(StateCas::load(&state_pki)?) } else { None };

    // CAs first (the state's, for the whole bundle), so leaves renewed in the same run are
    // signed by the new certificate.
    let mut renewed = Vec::new();
    let mut bundle_changes: BTreeMap<PathBuf, Vec<u8>> = BTreeMap::new();
    let mut ca_swaps: Vec<(Vec<u8>, String)> = Vec::new();
    let mut restart = 0u8;
    for ca in &want.cas {
        let Some(st) = state.as_mut() else {
            return Err(RenewError::Missing { name: format!("{ca} (the bundle has no state/pki)"), dir: bundle.display().to_string() });
        };
        let (crt, key) = state_files(ca);
        let (crt, key) = (st.pki.join(crt), st.pki.join(key));
        let Some(old) = st.signers.get(*ca) else {
            if crt.is_file() {
                return Err(RenewError::ExternallyManaged {
                    name: format!("state/{ca}"),
                    ca: ca.to_string(),
                    key: key.display().to_string(),
                });
            }
            return Err(RenewError::Missing { name: ca.to_string(), dir: st.pki.display().to_string() });
        };
        let shown = crt.display().to_string();
        let new = renew_ca_cert(ca, &shown, &old.der, &old.key, args)?;
        let new_der = pem::parse(&new.pem).map(|p| p.contents().to_vec()).unwrap_or_default();
        ca_swaps.push((st.old.get(*ca).cloned().unwrap_or_default(), new.pem.clone()));
        bundle_changes.insert(crt.clone(), new.pem.clone().into_bytes());
        renewed.push(Renewed {
            name: format!("state/{ca}"),
            path: crt,
            old_not_after: new.old_not_after,
            new_not_after: new.new_not_after,
            new_key: false,
        });
        let kube_proxy = nodes.iter().any(|n| n.tree.artifact("kube-proxy.conf").is_some());
        restart |= ca_restart(ca, kube_proxy);
        if let Some(s) = st.signers.get_mut(*ca) {
            s.der = new_der;
            s.not_after = new.new_not_after;
        }
    }
    // Every node, in parallel: its copies of renewed CAs, then its leaves.
    let results: Vec<Result<(TreeWork<'_>, BTreeSet<String>), RenewError>> = nodes
        .par_iter()
        .map(|n| {
            let mut w = TreeWork::new(&n.tree, format!("{}/", n.name));
            for (old, new) in &ca_swaps {
                w.replace_ca(old, new);
            }
            let found = w.renew_leaves(want, state.as_ref(), args)?;
            Ok((w, found))
        })
        .collect();
    let mut works = Vec::new();
    let mut found = BTreeSet::new();
    for r in results {
        let (w, f) = r?;
        found.extend(f);
        works.push(w);
    }
    for name in &want.explicit {
        if !found.contains(name) {
            return Err(RenewError::Missing { name: name.clone(), dir: args.dir.display().to_string() });
        }
    }
    let mut skipped = Vec::new();
    for w in &mut works {
        renewed.append(&mut w.renewed);
        skipped.append(&mut w.skipped);
        restart |= w.restart;
    }
    if renewed.is_empty() {
        if !skipped.is_empty() {
            return Err(nothing_here(&args.dir, &skipped));
        }
        return Err(RenewError::Missing { name: args.targets.join(" "), dir: args.dir.display().to_string() });
    }
    // The bundle's own copies of the cluster CA: discovery.conf and cluster-info (its JWS signed
    // again by every signing token).
    if let Some((old, new)) = want.cas.iter().position(|c| *c == "ca").map(|i| &ca_swaps[i]) {
        let discovery = bundle.join("discovery.conf");
        if let Ok(bytes) = std::fs::read(&discovery) {
            if let Some(b) = with_ca_replaced(&bytes, old, new) {
                bundle_changes.insert(discovery, b);
            }
        }
        if let Some((path, bytes)) = cluster_info(bundle, plan.as_ref(), new)? {
            bundle_changes.insert(path, bytes);
        }
    }
    // The state records each leaf's certificate and key: keep them in step.
    let leaves_file = state_pki.with_file_name(crate::bundle::state::LEAVES_FILE);
    if let Some(bytes) = updated_leaf_records(&leaves_file, &works)? {
        bundle_changes.insert(leaves_file, bytes);
    }
    let mtime = u64::try_from(args.now.unix_timestamp()).unwrap_or(0);
    // Each changed node: its tarball packed again from the model, its unpacked tree's files.
    let node_of: BTreeMap<&str, &crate::tree::bundle::BundleNode> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    type Packed = Option<(PathBuf, Vec<u8>, Vec<(PathBuf, Vec<u8>)>)>;
    let packed: Vec<Result<Packed, RenewError>> = works
        .par_iter()
        .map(|w| {
            if w.changes.is_empty() {
                return Ok(None);
            }
            let name = w.prefix.trim_end_matches('/');
            let Some(node) = node_of.get(name) else { return Ok(None) };
            let mut tree = node.tree.file_tree();
            for (rel, bytes) in &w.changes {
                let mode = tree.get(rel).map(|f| f.mode).unwrap_or(0o600);
                tree.insert(rel, bytes.clone(), mode);
            }
            let tgz = crate::tree::tarball::tar_gz(&tree, mtime)
                .map_err(|e| RenewError::Read { path: node.tarball.display().to_string(), message: e.to_string() })?;
            let files = node.dir.iter().flat_map(|d| w.changes.iter().map(move |(rel, b)| (d.join(rel), b.clone()))).collect();
            Ok(Some((node.tarball.clone(), tgz, files)))
        })
        .collect();
    let mut tarballs = Vec::new();
    for p in packed {
        if let Some((tb, bytes, files)) = p? {
            bundle_changes.extend(files);
            tarballs.push((tb, bytes));
        }
    }
    let mut changed: Vec<PathBuf> = bundle_changes.keys().cloned().collect();
    changed.extend(tarballs.iter().map(|(t, _)| t.clone()));
    changed.sort();
    let systemd = nodes.iter().any(|n| n.tree.layout.systemd());
    let mut report = RenewReport {
        renewed,
        restart: restart_list(restart),
        changed_files: changed,
        dry_run: args.dry_run,
        systemd,
        skipped,
        repacked: tarballs.iter().map(|(t, _)| t.clone()).collect(),
        ..RenewReport::default()
    };
    if args.dry_run {
        return Ok(report);
    }
    let real = lock.as_ref().map(|l| l.dir().to_path_buf()).unwrap_or_else(|| bundle.to_path_buf());
    // Beside the bundle, never inside it.
    let mut writes: Vec<(PathBuf, Vec<u8>)> = bundle_changes.into_iter().collect();
    writes.extend(tarballs);
    let backup_dir = commit_bundle(bundle, &real, writes, args.now)?;
    report.backup_dir = Some(backup_dir);
    drop(lock);
    Ok(report)
}

/// External-CA mode on a bundle: the wanted leaves of a CA whose key the state does not hold are
/// not signed here; a CSR for each (the same key, subject, SANs and usages as its certificate) is
/// written to `OUT/<cluster>/csr/<node>/` in kubeadm's generate-csr layout, as one transaction,
/// for the CA's owner to sign; `import-signed` and `generate` take it from there. None when no
/// wanted leaf belongs to an external CA.
fn external_requests(
    args: &RenewArgs,
    want: &Wanted,
    bundle: &Path,
    only: Option<&str>,
    lock: Option<&crate::bundle::output::OutputLock>,
) -> Result<Option<RenewReport>, RenewError> {
    let state_dir = bundle.join("state");
    let Ok(Some(manifest)) = crate::bundle::state::manifest::read(&state_dir) else { return Ok(None) };
    let external: Vec<&str> =
        ["ca", "front-proxy-ca", "etcd-ca"].into_iter().filter(|c| manifest.get(c).is_some_and(|e| e.external)).collect();
    if external.is_empty() {
        return Ok(None);
    }
    if let Some(ca) = want.cas.iter().find(|c| external.contains(c)) {
        let (_, key) = state_files(ca);
        return Err(RenewError::ExternallyManaged {
            name: format!("state/{ca}"),
            ca: ca.to_string(),
            key: state_dir.join("pki").join(key).display().to_string(),
        });
    }
    let records = crate::bundle::state::read_leaves(&state_dir).map_err(|e| RenewError::Read {
        path: state_dir.join(crate::bundle::state::LEAVES_FILE).display().to_string(),
        message: e.to_string(),
    })?;
    let plan: serde_json::Value =
        std::fs::read(bundle.join("plan.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    let mut writes: Vec<(String, Vec<u8>)> = Vec::new();
    for ((node, id), r) in &records {
        let ca = catalog::cert(id).and_then(|e| e.signer.ca_id());
        if !ca.is_some_and(|c| external.contains(&c)) || only.is_some_and(|o| o != node) {
            continue;
        }
        if !(want.all || want.leaves.contains(id)) {
            continue;
        }
        let Some(pem_text) = &r.cert_pem else { continue };
        // Where its files are on the node: a certificate file first, else its kubeconfig.
        let files: Vec<String> = plan["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["name"] == node.as_str())
            .flat_map(|n| n["files"].as_array().cloned().unwrap_or_default())
            .filter(|f| f["certificate"]["id"] == id.as_str())
            .filter_map(|f| f["path"].as_str().map(str::to_string))
            .collect();
        let Some(path) = files.iter().find(|p| !p.ends_with(".conf") && !p.ends_with("kubeconfig")).or(files.first()) else { continue };
        let Some(rel) = crate::bundle::materialize::csr_path(node, path) else { continue };
        let name = format!("{node}/{id}");
        let der = pem::parse(pem_text)
            .map(|p| p.into_contents())
            .map_err(|_| RenewError::Read { path: name.clone(), message: "its recorded certificate does not parse".into() })?;
        let (_, x) = x509_parser::parse_x509_certificate(&der)
            .map_err(|_| RenewError::Read { path: name.clone(), message: "its recorded certificate does not parse".into() })?;
        let key = Key::from_pem(&r.key_pem).map_err(|e| RenewError::Read { path: name.clone(), message: e.to_string() })?;
        let csr = leaf_request_like(&x, &key).map_err(|message| RenewError::Read { path: name.clone(), message })?;
        writes.push((rel, pem_encode("CERTIFICATE REQUEST", &csr).into_bytes()));
    }
    if writes.is_empty() {
        return Ok(None);
    }
    let csr_dir = bundle.join(crate::bundle::state::CSR_DIR);
    let report = RenewReport {
        dry_run: args.dry_run,
        requests: writes.iter().map(|(rel, _)| csr_dir.join(rel)).collect(),
        follow_up: vec![format!(
            "external CA: nothing was signed here; have each CSR signed by its CA (keeping its extensions), then `kubebundle import-signed --dir {} SIGNED...` and `kubebundle generate` re-pack the nodes",
            bundle.display()
        )],
        ..RenewReport::default()
    };
    if args.dry_run {
        return Ok(Some(report));
    }
    let real = lock.map(|l| l.dir().to_path_buf()).unwrap_or_else(|| bundle.to_path_buf());
    let (parent, name) = match (real.parent(), real.file_name()) {
        (Some(p), Some(n)) => (p.to_path_buf(), n.to_string_lossy().into_owned()),
        _ => return Err(RenewError::Output(crate::bundle::output::werr(&real)(std::io::ErrorKind::InvalidInput.into()))),
    };
    let staging = crate::bundle::output::stage(&parent, &name)?;
    let skip: BTreeSet<PathBuf> = writes.iter().map(|(rel, _)| Path::new(crate::bundle::state::CSR_DIR).join(rel)).collect();
    crate::bundle::output::link_copy_except(&real, staging.path(), &skip)?;
    let root = staging.path().join(crate::bundle::state::CSR_DIR);
    crate::bundle::output::ensure_dir(&root, 0o755)?;
    for (rel, bytes) in &writes {
        let path = root.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir).map_err(crate::bundle::output::werr(dir))?;
        }
        crate::bundle::output::write_file(&path, bytes, 0o644)?;
    }
    crate::bundle::output::commit(staging, &real)?;
    Ok(Some(report))
}

/// A CSR for `key` asking for what certificate `x` holds: its subject, SANs, key usages and
/// extended key usages (as extensions, for a signer that copies them).
fn leaf_request_like(x: &X509Certificate<'_>, key: &Key) -> Result<Vec<u8>, String> {
    let mut params = CertificateParams::default();
    params.distinguished_name = copy_dn(x)?;
    params.subject_alt_names = copy_sans(x)?;
    params.key_usages = copy_key_usages(x)?;
    params.extended_key_usages = copy_ekus(x)?;
    let signer = DeterministicSigner::for_key(key).map_err(|e| e.to_string())?;
    params.serialize_request(&signer).map(|c| c.der().to_vec()).map_err(|e| e.to_string())
}

/// `manifests/cluster-info.yaml` of bundle `dir` rendered again with the CA `ca_pem` (its JWS
/// signed again by every signing token), as generate and `token create` write it.
fn cluster_info(dir: &Path, plan: Option<&crate::tree::bundle::PlanDoc>, ca_pem: &str) -> Result<Option<(PathBuf, Vec<u8>)>, RenewError> {
    let target = dir.join("manifests/cluster-info.yaml");
    if !target.is_file() {
        return Ok(None);
    }
    let bad = |path: &Path, message: String| RenewError::Read { path: path.display().to_string(), message };
    let plan_path = dir.join("plan.json");
    let plan = plan.ok_or_else(|| bad(&plan_path, "not a kubebundle plan".into()))?;
    let version = crate::util::version::KubeVersion::parse(&plan.kubernetes_version).map_err(|m| bad(&plan_path, m))?;
    let server = format!("https://{}", plan.control_plane_endpoint);
    let state_dir = dir.join("state");
    let tokens = crate::bundle::state::read_tokens(&state_dir)
        .map_err(|e| bad(&state_dir.join(crate::bundle::state::TOKENS_FILE), e.to_string()))?;
    let renderer = crate::bundle::render::Renderer::new();
    let manifests = crate::bundle::materialize::token_manifests(&renderer, &server, &B64.encode(ca_pem), version.minor, &tokens)
        .map_err(|e| bad(&target, e.to_string()))?;
    Ok(manifests.into_iter().find(|(p, _)| p == "manifests/cluster-info.yaml").map(|(_, text)| (target, text.into_bytes())))
}

/// state/leaves.json with the records of the leaves renewed (their certificate, and key with
/// --new-key), so the next `generate` keeps the renewals. None when the state has no records or
/// none changed.
fn updated_leaf_records(file: &Path, works: &[TreeWork<'_>]) -> Result<Option<Vec<u8>>, RenewError> {
    if std::fs::symlink_metadata(file).is_err() || works.iter().all(|w| w.records.is_empty()) {
        return Ok(None);
    }
    let state_dir = file.parent().unwrap_or(Path::new("."));
    let mut records = crate::bundle::state::read_leaves(state_dir)
        .map_err(|e| RenewError::Read { path: file.display().to_string(), message: e.to_string() })?;
    let mut touched = false;
    for w in works {
        let node = w.prefix.trim_end_matches('/');
        for (id, cert, key) in &w.records {
            let Some(record) = records.get_mut(&(node.to_string(), id.clone())) else { continue };
            record.cert_pem = Some(cert.clone());
            if let Some(k) = key {
                record.key_pem = zeroize::Zeroizing::new(k.clone());
            }
            touched = true;
        }
    }
    Ok(touched.then(|| crate::bundle::state::leaves_json(&records)))
}

// =============================================================================================
// Writing

/// Where `path` goes inside the backup: its path relative to DIR, else relative to the node's
/// root (`root/...`), else its absolute path under `outside/`.
fn relative_to(dir: &Path, root: Option<&Path>, path: &Path) -> PathBuf {
    let canon_dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let canon = path.parent().and_then(|p| std::fs::canonicalize(p).ok()).map(|p| p.join(path.file_name().unwrap_or_default()));
    for d in [dir, canon_dir.as_path()] {
        for p in [Some(path), canon.as_deref()].into_iter().flatten() {
            if let Ok(rel) = p.strip_prefix(d) {
                return rel.to_path_buf();
            }
        }
    }
    if let Some(rel) = root.and_then(|r| path.strip_prefix(r).ok()) {
        return Path::new("root").join(rel);
    }
    Path::new("outside").join(path.strip_prefix("/").unwrap_or(path))
}

/// Copies `files` (as they are now) into a private directory in `parent`, each at its path
/// relative to `dir`, then renames it whole to `kubebundle-backup-<now>` there (`-2`, `-3`, …
/// when that name is taken: an existing backup is never overwritten); a killed run never leaves
/// a half backup. Returns where the backup is.
fn backup(dir: &Path, root: Option<&Path>, parent: &Path, now: OffsetDateTime, files: &[PathBuf]) -> Result<PathBuf, RenewError> {
    let fail = |path: &Path, e: std::io::Error| RenewError::Backup { path: path.display().to_string(), message: e.to_string() };
    let staged = crate::bundle::output::PrivateDir::new(parent, ".kubebundle-backup-")
        .map_err(|e| RenewError::Backup { path: parent.display().to_string(), message: e.to_string() })?;
    for f in files {
        let target = staged.path().join(relative_to(dir, root, f));
        if let Some(parent) = target.parent() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(parent).map_err(|e| fail(parent, e))?;
        }
        let bytes = zeroize::Zeroizing::new(std::fs::read(f).map_err(|e| fail(f, e))?);
        let mode = std::fs::metadata(f).map_err(|e| fail(f, e))?.permissions().mode() & 0o777;
        let mut out = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&target).map_err(|e| fail(&target, e))?;
        out.write_all(&bytes).map_err(|e| fail(&target, e))?;
    }
    publish_backup(staged, parent, now)
}

fn publish_backup(staged: crate::bundle::output::PrivateDir, parent: &Path, now: OffsetDateTime) -> Result<PathBuf, RenewError> {
    staged.publish_backup(parent, now).map_err(|e| RenewError::Backup {
        path: parent.join(crate::bundle::output::backup_name(now)).display().to_string(),
        message: e.to_string(),
    })
}

/// `path` (under the bundle as given, `given`) relative to the bundle.
fn rel_in(given: &Path, real: &Path, path: &Path) -> Result<PathBuf, RenewError> {
    let outside = || RenewError::Read { path: path.display().to_string(), message: format!("not inside {}", given.display()) };
    if let Ok(rel) = path.strip_prefix(given) {
        return Ok(rel.to_path_buf());
    }
    if let Ok(rel) = path.strip_prefix(real) {
        return Ok(rel.to_path_buf());
    }
    let (parent, name) = (path.parent().ok_or_else(outside)?, path.file_name().ok_or_else(outside)?);
    let parent =
        std::fs::canonicalize(parent).map_err(|e| RenewError::Read { path: path.display().to_string(), message: e.to_string() })?;
    parent.join(name).strip_prefix(real).map(Path::to_path_buf).map_err(|_| outside())
}

/// A file to write in the staged bundle: its new bytes, with the mode and owner of the file it
/// replaces.
struct Staged {
    bytes: zeroize::Zeroizing<Vec<u8>>,
    mode: u32,
    owner: (u32, u32),
}

/// Renews a bundle as one transaction: the new bundle is staged beside it (hard links to every
/// file that does not change; the changed files written anew, with the mode and owner of the file
/// each replaces; nothing is modified in place), the backup (hard links to the replaced files,
/// which the old bundle never changes) is renamed into place beside the bundle, then the staged
/// bundle is swapped in. Returns where the backup is.
fn commit_bundle(given: &Path, real: &Path, writes: Vec<(PathBuf, Vec<u8>)>, now: OffsetDateTime) -> Result<PathBuf, RenewError> {
    let read_err =
        |path: &Path, e: std::io::Error| RenewError::Read { path: path.display().to_string(), message: crate::util::io_words(&e) };
    let werr = |path: &Path, e: std::io::Error| RenewError::Output(crate::bundle::output::werr(path)(e));
    let mut staged_files: BTreeMap<PathBuf, Staged> = BTreeMap::new();
    for (path, bytes) in writes {
        let rel = rel_in(given, real, &path)?;
        let m = std::fs::metadata(real.join(&rel)).map_err(|e| read_err(&path, e))?;
        staged_files.insert(
            rel,
            Staged { bytes: zeroize::Zeroizing::new(bytes), mode: m.permissions().mode() & 0o7777, owner: (m.uid(), m.gid()) },
        );
    }
    let (parent, name) = match (real.parent(), real.file_name()) {
        (Some(p), Some(n)) => (p, n.to_string_lossy()),
        _ => return Err(werr(real, std::io::ErrorKind::InvalidInput.into())),
    };
    let staging = crate::bundle::output::stage(parent, &name)?;
    let skip: BTreeSet<PathBuf> = staged_files.keys().cloned().collect();
    crate::bundle::output::link_copy_except(real, staging.path(), &skip)?;
    for (rel, Staged { bytes, mode, owner }) in &staged_files {
        let path = staging.path().join(rel);
        crate::bundle::output::write_file(&path, bytes, *mode)?;
        let m = std::fs::metadata(&path).map_err(|e| werr(&path, e))?;
        if (m.uid(), m.gid()) != *owner {
            std::os::unix::fs::chown(&path, Some(owner.0), Some(owner.1))
                .map_err(|e| werr(&path, std::io::Error::new(e.kind(), format!("cannot keep its owner {}:{}: {e}", owner.0, owner.1))))?;
        }
    }
    // The backup: the replaced files themselves, hard-linked (the old bundle never changes them).
    let bparent = real.parent().unwrap_or(Path::new("/"));
    let bstaged = crate::bundle::output::PrivateDir::new(bparent, ".kubebundle-backup-")
        .map_err(|e| RenewError::Backup { path: bparent.display().to_string(), message: e.to_string() })?;
    let fail = |path: &Path, e: std::io::Error| RenewError::Backup { path: path.display().to_string(), message: e.to_string() };
    let mut made: BTreeSet<PathBuf> = BTreeSet::new();
    for rel in staged_files.keys() {
        let target = bstaged.path().join(rel);
        if let Some(p) = target.parent() {
            if made.insert(p.to_path_buf()) {
                std::fs::DirBuilder::new().recursive(true).mode(0o700).create(p).map_err(|e| fail(p, e))?;
            }
        }
        let old = real.join(rel);
        if std::fs::hard_link(&old, &target).is_err() {
            let bytes = zeroize::Zeroizing::new(std::fs::read(&old).map_err(|e| fail(&old, e))?);
            let mode = std::fs::metadata(&old).map_err(|e| fail(&old, e))?.permissions().mode() & 0o777;
            let mut out =
                std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&target).map_err(|e| fail(&target, e))?;
            out.write_all(&bytes).map_err(|e| fail(&target, e))?;
        }
    }
    let backup_dir = publish_backup(bstaged, bparent, now)?;
    crate::bundle::output::commit(staging, real)?;
    Ok(backup_dir)
}

// =============================================================================================
// Certificates

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// A certificate's own public key, for signing a renewal of it without loading its private key.
struct CertKey {
    raw: Vec<u8>,
    alg: &'static rcgen::SignatureAlgorithm,
}

impl CertKey {
    fn of(x: &X509Certificate<'_>) -> Result<CertKey, String> {
        let alg = match key_algorithm(x)? {
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => &rcgen::PKCS_RSA_SHA256,
            KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        };
        Ok(CertKey { raw: x.public_key().subject_public_key.data.to_vec(), alg })
    }
}

/// The public key a renewed leaf is issued for: its own (kept), or a fresh key's.
enum SubjectKey {
    Cert(CertKey),
    Pair(rcgen::KeyPair),
}

impl rcgen::PublicKeyData for SubjectKey {
    fn der_bytes(&self) -> &[u8] {
        match self {
            SubjectKey::Cert(k) => &k.raw,
            SubjectKey::Pair(p) => p.der_bytes(),
        }
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            SubjectKey::Cert(k) => k.alg,
            SubjectKey::Pair(p) => rcgen::PublicKeyData::algorithm(p),
        }
    }
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
fn renew_leaf(name: &str, path: &str, old_der: &[u8], key_pem: &str, ca: &Signer, args: &RenewArgs) -> Result<NewCert, RenewError> {
    let err = |message: String| RenewError::Cert { name: name.to_string(), path: path.to_string(), message };
    let x = parse_cert(name, path, old_der)?;
    if x.is_ca() {
        return Err(err("this is a CA certificate; renew it by its CA name (ca, front-proxy-ca, etcd-ca)".into()));
    }
    // The key is checked against the certificate from its own fields (no key is loaded to keep
    // it): the certificate's public key is the new certificate's.
    let mismatch = || err("the private key does not match the certificate\n  hint: pass --new-key to make a new key for it".into());
    match crate::pki::keys::public_half(key_pem) {
        Ok(Some(half)) if crate::pki::keys::half_matches(&half, x.public_key()) => {}
        Ok(Some(_)) => return Err(mismatch()),
        Ok(None) => {
            if x.public_key().raw != load_key(name, path, key_pem)?.spki_der().as_slice() {
                return Err(mismatch());
            }
        }
        Err(e) => return Err(err(format!("the key is unreadable: {e}"))),
    }
    let (subject_key, new_key_pem) = if args.new_key {
        let (k, pem) = fresh_key(&x, key_pem).map_err(err)?;
        (SubjectKey::Pair(k.pair), Some(pem))
    } else {
        match CertKey::of(&x) {
            Ok(k) => (SubjectKey::Cert(k), None),
            Err(_) => (SubjectKey::Pair(load_key(name, path, key_pem)?.pair), None),
        }
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
    // Like kubeadm's leaves (and generate's): BasicConstraints CA:FALSE where the old one had
    // it, never a SubjectKeyIdentifier, even where an older certificate carried one.
    params.is_ca = IsCa::NoCa;
    if let Ok(Some(_)) = x.basic_constraints() {
        crate::pki::issue::leaf_not_a_ca(&mut params);
    }
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    params.not_before = not_before;
    params.not_after = not_after;
    params.use_authority_key_identifier_extension = true;
    let signer = match &ca.ec {
        Some(ec) => DeterministicSigner::Ecdsa(ec.clone()),
        None => DeterministicSigner::KeyPair(&ca.key.pair),
    };
    let issuer =
        Issuer::from_ca_cert_der(&ca.der.as_slice().into(), signer).map_err(|e| err(format!("the CA {} cannot sign: {e}", ca.name)))?;
    let cert = params.signed_by(&subject_key, &issuer).map_err(|e| err(format!("cannot sign: {e}")))?;
    Ok(NewCert {
        pem: pem_encode("CERTIFICATE", cert.der()),
        old_not_after: x.validity().not_after.to_datetime(),
        new_not_after: not_after,
        key_pem: new_key_pem,
    })
}

/// Re-issues the CA `old_der` from its own key: same subject, SANs and SKI.
fn renew_ca_cert(name: &str, path: &str, old_der: &[u8], key: &Key, args: &RenewArgs) -> Result<NewCert, RenewError> {
    let err = |message: String| RenewError::Cert { name: name.to_string(), path: path.to_string(), message };
    let x = parse_cert(name, path, old_der)?;
    if !x.is_ca() {
        return Err(err("not a CA certificate (BasicConstraints CA:FALSE)".into()));
    }
    if x.public_key().raw != key.spki_der().as_slice() {
        return Err(err("the CA key does not match the CA certificate".into()));
    }
    // An intermediate (an imported CA) is its issuer's to re-issue: renewing it from its own key
    // would make it a root that nothing above trusts.
    if x.issuer().as_raw() != x.subject().as_raw() {
        return Err(RenewError::OffNode {
            name: name.to_string(),
            why: format!("{path} is an intermediate CA issued by {}: kubebundle renews only the CAs it signs itself", x.issuer()),
            hint: "have its issuer re-issue it for the same key (openssl ca, Vault pki/root/sign-intermediate), then put it into the bundle's state with `kubebundle ca import`".into(),
        });
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

impl RenewReport {
    /// What was renewed, where the backup is, what to restart. Names and paths are escaped: a
    /// control character or an escape sequence in them is shown, never sent to the terminal.
    pub fn render(&self) -> String {
        use crate::util::text::escape;
        let shown = |p: &Path| escape(&p.display().to_string()).into_owned();
        let mut s = String::new();
        let verb = if self.dry_run { "would renew" } else { "renewed" };
        if self.requests.is_empty() || !self.renewed.is_empty() {
            s.push_str(&format!("{verb} {} certificate(s):\n", self.renewed.len()));
        }
        let names: Vec<String> = self.renewed.iter().map(|r| escape(&r.name).into_owned()).collect();
        let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
        for (r, name) in self.renewed.iter().zip(&names) {
            let key = if r.new_key { "  (new key)" } else { "" };
            s.push_str(&format!("  {name:width$}  {} → {}  {}{key}\n", rfc3339(r.old_not_after), rfc3339(r.new_not_after), shown(&r.path)));
        }
        if !self.skipped.is_empty() {
            s.push_str(&format!("not renewed here ({}):\n", self.skipped.len()));
            for k in &self.skipped {
                s.push_str(&format!("  {}: {}\n", escape(&k.name), escape(&k.why)));
            }
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
        if !self.requests.is_empty() {
            let verb = if self.dry_run { "would write" } else { "wrote" };
            s.push_str(&format!("{verb} {} CSR(s) instead of signing (external CA: its key is not here):\n", self.requests.len()));
            let names: Vec<String> = self.requested.iter().map(|(n, _)| escape(n).into_owned()).collect();
            let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
            for (i, p) in self.requests.iter().enumerate() {
                match (names.get(i), self.requested.get(i)) {
                    (Some(name), Some((_, end))) => s.push_str(&format!("  {name:width$}  expires {}  {}\n", rfc3339(*end), shown(p))),
                    _ => s.push_str(&format!("  {}\n", shown(p))),
                }
            }
        }
        s.push_str(&self.restart_text());
        for line in &self.follow_up {
            s.push_str(&escape(line));
            s.push('\n');
        }
        s
    }
}

impl RenewReport {
    /// What to restart, and how.
    pub fn restart_text(&self) -> String {
        let mut s = String::new();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_are_replaced_in_place_and_the_rest_kept() {
        let a = pem_encode("CERTIFICATE", b"old");
        let b = pem_encode("CERTIFICATE", b"other");
        let bundle = format!("# trust bundle\n{a}{b}");
        let new = pem_encode("CERTIFICATE", b"new");
        let out = edit_pem(bundle.as_bytes(), |tag, der| (tag == "CERTIFICATE" && der == b"old").then(|| new.clone())).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), format!("# trust bundle\n{new}{b}"));
        assert!(edit_pem(b.as_bytes(), |_, der| (der == b"old").then(|| new.clone())).is_none());
        // In a kubeconfig's certificate-authority-data, and nowhere else.
        let conf = format!("clusters:\n- cluster:\n    certificate-authority-data: {}\n    server: x\n", B64.encode(&a));
        let out = String::from_utf8(with_ca_replaced(conf.as_bytes(), b"old", &new).unwrap()).unwrap();
        assert_eq!(out, format!("clusters:\n- cluster:\n    certificate-authority-data: {}\n    server: x\n", B64.encode(&new)));
        assert!(with_ca_replaced(conf.as_bytes(), b"unrelated", &new).is_none());
    }
}
