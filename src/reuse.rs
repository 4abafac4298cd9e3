//! What a re-run keeps: a leaf certificate recorded in the state is kept as it is while it still
//! fits the plan (same subject, SANs, usages, algorithm, validity period), is signed by the
//! current CA and has more than `RENEW_WITHIN` left; a node whose files come out identical keeps
//! its tarball (and unpacked tree) byte for byte. So adding a node, or re-running, changes
//! nothing else and signs nothing again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use x509_parser::prelude::*;

use crate::clock::Clock;
use crate::config::{Config, KeyAlgorithm};
use crate::output::FileTree;
use crate::pki::catalog::Eku;
use crate::pki::issue::{self, Authority, CertSpec, Issued};
use crate::pki::keys::Key;
use crate::pki::signature::{self, IssuerKey, Signed};
use crate::state::LeafRecord;

/// A leaf this close to its end is issued anew rather than reused.
pub const RENEW_WITHIN: Duration = Duration::from_secs(30 * 24 * 3600);

/// A leaf's serial: derived from the CA key and the leaf's identity, key and issue time, so the
/// same state re-issues the same certificate, and a serial that matches proves the certificate
/// came from this CA key for this key and time.
pub fn leaf_serial(ca: &Authority, node: &str, id: &str, spki: &[u8], issued: i64) -> Vec<u8> {
    issue::derived_serial(&ca.key, &[node.as_bytes(), id.as_bytes(), spki, &issued.to_be_bytes()])
}

/// A leaf record that must not be used: what is wrong with it, and whether the run would
/// re-issue the leaf anyway (its certificate no longer fits the plan, or is near its end).
#[derive(Debug)]
pub struct BadRecord {
    pub message: String,
    pub reissue_anyway: bool,
}

/// Checks the record of `spec` before it is used, and returns its certificate when it may be
/// kept as it is (None: issue it again from the record). The key must parse and be the
/// certificate's public key (read from the key's own fields, so the check costs microseconds);
/// the certificate must parse and be issued by `ca`: one this state issued has the serial
/// `leaf_serial` of its key and issue time (an HMAC keyed by the CA key), any other (a `certs
/// renew` re-issue) must verify under `ca`.
pub fn judge(spec: &CertSpec, record: &LeafRecord, ca: &Authority, config: &Config, clock: &Clock) -> Result<Option<Issued>, BadRecord> {
    let half = crate::pki::keys::public_half(&record.key_pem);
    let Some(pem) = record.cert_pem.as_deref() else {
        return match half {
            Err(why) => Err(BadRecord { message: format!("its key does not parse ({why})"), reissue_anyway: false }),
            Ok(_) => Ok(None),
        };
    };
    let unreadable = || BadRecord { message: "its certificate does not parse".into(), reissue_anyway: false };
    let der = ::pem::parse(pem).ok().filter(|p| p.tag() == "CERTIFICATE").ok_or_else(unreadable)?.into_contents();
    let (_, cert) = parse_x509_certificate(&der).map_err(|_| unreadable())?;
    let fits = fits(spec, &cert, ca, config, clock);
    let bad = |message: String| BadRecord { message, reissue_anyway: !fits };
    let matches = match half {
        Err(why) => return Err(bad(format!("its key does not parse ({why})"))),
        Ok(Some(h)) => crate::pki::keys::half_matches(&h, cert.public_key()),
        // A key that does not carry its public half is loaded.
        Ok(None) => Key::from_pem(&record.key_pem).is_ok_and(|k| k.spki_der() == cert.public_key().raw),
    };
    if !matches {
        return Err(bad("the key does not match its certificate".into()));
    }
    let spki = cert.public_key().raw;
    let node = spec.node.as_deref().unwrap_or_default();
    let ours = cert.issuer().as_raw() == ca.subject_der.as_slice()
        && cert.raw_serial() == leaf_serial(ca, node, &spec.id, spki, record.issued).as_slice();
    if !ours && !signed_by(&cert, ca) {
        return Err(bad(format!("its certificate is not signed by the current {} CA", ca.id)));
    }
    Ok(fits.then(|| Issued { pem: pem.to_string(), der }))
}

/// Where the previous bundle's nodes are, to keep a node's tarball and tree when its files did not
/// change (each is read when its node is rendered, so memory does not grow with the fleet).
#[derive(Default)]
pub struct Previous {
    nodes: Option<PathBuf>,
}

impl Previous {
    /// The bundle in `cluster_dir` (missing or odd files are simply not reused).
    pub fn at(cluster_dir: &Path) -> Previous {
        Previous { nodes: Some(cluster_dir.join("nodes")) }
    }

    /// The previous tarball of `node` (path and bytes) when it holds exactly `tree`.
    pub fn tarball(&self, node: &str, tree: &FileTree) -> Option<(PathBuf, Vec<u8>)> {
        let path = self.nodes.as_ref()?.join(format!("{node}.tar.gz"));
        let bytes = std::fs::read(&path).ok()?;
        crate::pack::holds(&bytes, tree).then_some((path, bytes))
    }

    /// The previous unpacked tree of `node` when it holds exactly `tree`.
    pub fn tree(&self, node: &str, tree: &FileTree) -> Option<PathBuf> {
        let root = self.nodes.as_ref()?.join(node);
        crate::output::read_tree(&root).is_ok_and(|old| old.same_as(tree)).then_some(root)
    }
}

/// Whether `cert` names `ca` as its issuer and verifies under its key.
pub(crate) fn signed_by(cert: &X509Certificate<'_>, ca: &Authority) -> bool {
    let Ok((_, ca_cert)) = parse_x509_certificate(&ca.cert.der) else { return false };
    let issuer_key = ca_cert.public_key();
    let curve = issuer_key.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).map(|o| o.to_id_string());
    cert.issuer() == ca_cert.subject()
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
        .is_ok()
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

/// Does this certificate still say exactly what the plan asks for, with time left under `ca`?
fn fits(spec: &CertSpec, cert: &X509Certificate<'_>, ca: &Authority, config: &Config, clock: &Clock) -> bool {
    let subject_ok = cert.subject().iter_common_name().map(|a| a.as_str().ok()).collect::<Vec<_>>()
        == vec![Some(spec.common_name.as_str())]
        && cert.subject().iter_organization().map(|a| a.as_str().ok().map(str::to_string)).collect::<Vec<_>>()
            == spec.organizations.iter().map(|o| Some(o.clone())).collect::<Vec<_>>();
    let sans_ok = sans_of(cert).is_some_and(|(dns, ips)| dns == spec.sans.dns && ips == spec.sans.ips);
    let eku_ok = cert.extended_key_usage().ok().flatten().is_some_and(|e| {
        let (server, client) = (spec.usages.contains(&Eku::ServerAuth), spec.usages.contains(&Eku::ClientAuth));
        e.value.server_auth == server && e.value.client_auth == client && e.value.other.is_empty()
    });
    let alg_ok = algorithm_of(cert) == Some(config.algorithm);
    let (nb, na) = (cert.validity().not_before.to_datetime(), cert.validity().not_after.to_datetime());
    let period_ok = !config.kubernetes_version.at_least(31)
        || ((na - nb) - (config.cert_validity + crate::clock::BACKDATE)).whole_seconds().abs() <= 60;
    let time_ok = nb <= clock.now && na - clock.now > RENEW_WITHIN && na <= ca.not_after;
    subject_ok && sans_ok && eku_ok && alg_ok && period_ok && time_ok
}
