//! What a re-run keeps from the previous bundle: a leaf certificate and its key are reused while
//! they still fit the plan (same subject, SANs, usages, algorithm, validity period), are signed by
//! the current CA and have more than `RENEW_WITHIN` left; a node whose files come out identical
//! keeps its tarball byte for byte. So adding a node, or re-running, changes nothing else.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use x509_parser::prelude::*;
use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::config::{Config, KeyAlgorithm};
use crate::output::FileTree;
use crate::pki::catalog::{Credential, Eku};
use crate::pki::issue::{Authority, CertSpec, Issued};
use crate::pki::keys::Key;
use crate::pki::signature::{self, IssuerKey, Signed};
use crate::plan::Plan;
use crate::profile::{self, Artifact};

/// A leaf this close to its end is issued anew rather than reused.
pub const RENEW_WITHIN: Duration = Duration::from_secs(30 * 24 * 3600);

/// The previous bundle: the leaves found in its node trees, and where the trees are (a node's
/// tree and tarball are read again only when its tarball may be kept, so memory does not grow
/// with the fleet).
#[derive(Default)]
pub struct Previous {
    cluster_dir: Option<std::path::PathBuf>,
    leaves: BTreeMap<(String, String), (String, Zeroizing<String>)>,
}

impl Previous {
    /// Reads `cluster_dir/nodes/*` for the nodes of `plan`; missing or odd files are simply
    /// not reused.
    pub fn read(cluster_dir: &Path, plan: &Plan) -> Previous {
        let mut prev = Previous::default();
        for node in &plan.nodes {
            let root = cluster_dir.join("nodes").join(&node.name);
            if !root.is_dir() {
                continue;
            }
            let tree = crate::output::read_tree(&root);
            let text = |path: &str| tree.get(path).and_then(|f| String::from_utf8(f.bytes.to_vec()).ok());
            for f in &node.files {
                match profile::artifact(&f.artifact) {
                    Some(Artifact::CertPem(e)) if !e.is_ca() => {
                        let key_path = node.files.iter().find(|k| k.artifact == format!("{}.key", e.id)).map(|k| k.path.as_str());
                        if let (Some(cert), Some(key)) = (text(&f.path), key_path.and_then(text)) {
                            prev.leaves.insert((node.name.clone(), e.id.to_string()), (cert, Zeroizing::new(key)));
                        }
                    }
                    Some(Artifact::Kubeconfig(k)) if k.credential == Credential::Certificate => {
                        let Some(file) = tree.get(&f.path) else { continue };
                        let Ok(kc) = crate::kubeconfig::Kubeconfig::parse(&file.bytes) else { continue };
                        let Some(user) = kc.current_user() else { continue };
                        let decode =
                            |v: Option<&str>| crate::kubeconfig::decode("", v).ok().flatten().and_then(|b| String::from_utf8(b).ok());
                        if let (Some(cert), Some(key)) =
                            (decode(user.client_certificate_data.as_deref()), decode(user.client_key_data.as_deref()))
                        {
                            prev.leaves.insert((node.name.clone(), k.id.to_string()), (cert, Zeroizing::new(key)));
                        }
                    }
                    _ => {}
                }
            }
        }
        prev.cluster_dir = Some(cluster_dir.to_path_buf());
        prev
    }

    /// The previous tree and tarball of `node` (their paths) when the tree on disk holds exactly
    /// `tree` and the tarball exists: the node did not change.
    pub fn unchanged(&self, node: &str, tree: &FileTree) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
        let nodes = self.cluster_dir.as_ref()?.join("nodes");
        let (root, tarball) = (nodes.join(node), nodes.join(format!("{node}.tar.gz")));
        (root.is_dir() && tarball.is_file() && crate::output::read_tree(&root).same_as(tree)).then_some((root, tarball))
    }

    /// The previous tarball of `node` when the node did not change.
    pub fn tarball_if_unchanged(&self, node: &str, tree: &FileTree) -> Option<Vec<u8>> {
        self.unchanged(node, tree).and_then(|(_, tarball)| std::fs::read(tarball).ok())
    }

    /// The previous certificate and key for `spec`, when they may be used again as they are.
    pub fn leaf(&self, spec: &CertSpec, ca: &Authority, config: &Config, clock: &Clock) -> Option<(Issued, Key)> {
        let (cert_pem, key_pem) = self.leaves.get(&(spec.node.clone()?, spec.id.clone()))?;
        let der = ::pem::parse(cert_pem).ok().filter(|p| p.tag() == "CERTIFICATE")?.contents().to_vec();
        let key = Key::from_pem(key_pem).ok()?;
        fits(spec, &der, &key, ca, config, clock).then(|| (Issued { pem: cert_pem.clone(), der }, key))
    }
}

impl Previous {
    /// The previous bundle's certificate for `spec` when it is exactly the one this run would
    /// issue: same key, serial and notAfter, and still fitting the plan under `ca` (deterministic
    /// signatures make it byte-identical), so it is kept without signing again.
    #[allow(clippy::too_many_arguments)]
    pub fn same_leaf(
        &self,
        spec: &CertSpec,
        ca: &Authority,
        config: &Config,
        clock: &Clock,
        key: &Key,
        serial: &[u8],
        not_after: ::time::OffsetDateTime,
    ) -> Option<Issued> {
        let (issued, old_key) = self.leaf(spec, ca, config, clock)?;
        let (_, cert) = parse_x509_certificate(&issued.der).ok()?;
        let same = old_key.spki_der() == key.spki_der()
            && cert.raw_serial() == serial
            && cert.validity().not_after.timestamp() == not_after.unix_timestamp();
        same.then_some(issued)
    }
}

fn algorithm_of(cert: &X509Certificate<'_>) -> Option<KeyAlgorithm> {
    crate::pki::keys::algorithm_of(&cert.public_key().parsed().ok()?)
}

fn sans_of(cert: &X509Certificate<'_>) -> Option<(Vec<String>, Vec<std::net::IpAddr>)> {
    let (mut dns, mut ips) = (Vec::new(), Vec::new());
    if let Some(ext) = cert.subject_alternative_name().ok()? {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                GeneralName::IPAddress(b) => ips.push(match b.len() {
                    4 => std::net::IpAddr::from(<[u8; 4]>::try_from(*b).ok()?),
                    16 => std::net::IpAddr::from(<[u8; 16]>::try_from(*b).ok()?),
                    _ => return None,
                }),
                _ => return None,
            }
        }
    }
    Some((dns, ips))
}

/// Does this certificate still say exactly what the plan asks for, under the current CA?
fn fits(spec: &CertSpec, der: &[u8], key: &Key, ca: &Authority, config: &Config, clock: &Clock) -> bool {
    let (Ok((_, cert)), Ok((_, ca_cert))) = (parse_x509_certificate(der), parse_x509_certificate(&ca.cert.der)) else { return false };
    let subject_ok = cert.subject().iter_common_name().map(|a| a.as_str().ok()).collect::<Vec<_>>()
        == vec![Some(spec.common_name.as_str())]
        && cert.subject().iter_organization().map(|a| a.as_str().ok().map(str::to_string)).collect::<Vec<_>>()
            == spec.organizations.iter().map(|o| Some(o.clone())).collect::<Vec<_>>();
    let sans_ok = sans_of(&cert).is_some_and(|(dns, ips)| dns == spec.sans.dns && ips == spec.sans.ips);
    let eku_ok = cert.extended_key_usage().ok().flatten().is_some_and(|e| {
        let (server, client) = (spec.usages.contains(&Eku::ServerAuth), spec.usages.contains(&Eku::ClientAuth));
        e.value.server_auth == server && e.value.client_auth == client && e.value.other.is_empty()
    });
    let key_ok = cert.public_key().raw == key.spki_der().as_slice() && algorithm_of(&cert) == Some(config.algorithm);
    let (nb, na) = (cert.validity().not_before.to_datetime(), cert.validity().not_after.to_datetime());
    let period_ok = !config.kubernetes_version.at_least(31)
        || ((na - nb) - (config.cert_validity + crate::clock::BACKDATE)).whole_seconds().abs() <= 60;
    let time_ok = nb <= clock.now && na - clock.now > RENEW_WITHIN && na <= ca.not_after;
    let issuer_key = ca_cert.public_key();
    let curve = issuer_key.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).map(|o| o.to_id_string());
    let signed_ok = cert.issuer() == ca_cert.subject()
        && signature::verify(
            &Signed {
                tbs: cert.tbs_certificate.as_ref(),
                signature: &cert.signature_value.data,
                algorithm: &cert.signature_algorithm.algorithm.to_id_string(),
            },
            &IssuerKey {
                algorithm: &issuer_key.algorithm.algorithm.to_id_string(),
                curve: curve.as_deref(),
                key: &issuer_key.subject_public_key.data,
            },
        )
        .is_ok();
    subject_ok && sans_ok && eku_ok && key_ok && period_ok && time_ok && signed_ok
}
