//! Issuing certificates with rcgen: the only place that builds X.509 structures.

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyUsagePurpose, SanType, SerialNumber,
};
use serde::Serialize;
use time::OffsetDateTime;

use super::catalog::{Eku, Signer};
use super::derive::{DeterministicSigner, Rfc6979Signer};
use super::keys::{pem_encode, Key};
use crate::clock::Clock;
use crate::util::version::KubeVersion;

/// Everything that defines one certificate, resolved for its node. Holds no secrets.
/// DNS names and IPs in the order they are written: DNS names first, then IPs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AltNames {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

impl AltNames {
    pub fn add_dns(&mut self, name: &str) {
        if !self.dns.iter().any(|d| d == name) {
            self.dns.push(name.to_string());
        }
    }

    pub fn add_ip(&mut self, ip: IpAddr) {
        if !self.ips.contains(&ip) {
            self.ips.push(ip);
        }
    }

    /// `DNS:a`, `IP:1.2.3.4` strings, as in `openssl x509 -text` and the plan.
    pub fn to_strings(&self) -> Vec<String> {
        self.dns.iter().map(|d| format!("DNS:{d}")).chain(self.ips.iter().map(|i| format!("IP:{i}"))).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.dns.is_empty() && self.ips.is_empty()
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertSpec {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub common_name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub organizations: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", rename = "sans")]
    pub san_strings: Vec<String>,
    #[serde(skip)]
    pub sans: AltNames,
    #[serde(skip_serializing_if = "Vec::is_empty", rename = "extendedKeyUsages")]
    pub usages: Vec<Eku>,
    pub is_ca: bool,
    pub signer: Signer,
    #[serde(serialize_with = "serialize_hours")]
    pub validity: Duration,
}

fn serialize_hours<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::util::duration::format_go(*d))
}

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("{id}: {message}")]
    Build { id: String, message: String },
    #[error("{id}: the certificate would expire at {} but its CA {ca} expires at {}; a leaf must never outlive its CA\n  hint: renew the CA from its own key, which keeps every issued certificate and the discovery hash valid: `kubebundle certs renew {ca} --dir OUT/<clusterName>`, then run generate again; or shorten certificateValidityPeriod", crate::clock::rfc3339(*.leaf), crate::clock::rfc3339(*.ca_end))]
    OutlivesCa { id: String, ca: String, leaf: OffsetDateTime, ca_end: OffsetDateTime },
}

/// A signed certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    pub der: Vec<u8>,
    pub pem: String,
}

/// A CA ready to sign: its certificate and key.
pub struct Authority {
    pub id: String,
    pub cert: Issued,
    /// None for an external CA (its key is kept elsewhere): its leaves are requested by CSR.
    pub key: Option<Key>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// The certificate's subject (DER), which every certificate it signs names as issuer.
    pub subject_der: Vec<u8>,
    /// An imported CA's issuers (DER), its own issuer first, up to the self-signed root; empty
    /// for a root (every CA kubebundle makes is one).
    pub chain: Vec<Vec<u8>>,
    /// The RFC 6979 signer of an ECDSA CA key, made once (reading the key costs more than a
    /// signature); None for RSA, whose PKCS#1 v1.5 signatures are deterministic already.
    signer: Option<Rfc6979Signer>,
}

impl Authority {
    /// Whether `cert` names this CA as its issuer and verifies under its key.
    pub fn signed(&self, cert: &x509_parser::certificate::X509Certificate<'_>) -> bool {
        let Ok((_, ca_cert)) = x509_parser::parse_x509_certificate(&self.cert.der) else { return false };
        let issuer_key = ca_cert.public_key();
        let curve = issuer_key.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).map(|o| o.to_id_string());
        cert.issuer() == ca_cert.subject()
            && super::signature::verify(
                &super::signature::Signed {
                    tbs: cert.tbs_certificate.as_ref(),
                    signature: &cert.signature_value.data,
                    algorithm: &cert.signature_algorithm.algorithm.to_id_string(),
                },
                &super::signature::IssuerKey {
                    algorithm: &issuer_key.algorithm.algorithm.to_id_string(),
                    curve: curve.as_deref(),
                    key: &issuer_key.subject_public_key.data,
                },
            )
            .is_ok()
    }

    pub fn new(id: &str, cert: Issued, key: Key, not_before: OffsetDateTime, not_after: OffsetDateTime) -> Result<Authority, String> {
        let signer = Rfc6979Signer::try_from_key(&key).map_err(|e| e.to_string())?;
        let (_, x509) = x509_parser::parse_x509_certificate(&cert.der).map_err(|e| format!("unreadable certificate: {e}"))?;
        let subject_der = x509.subject().as_raw().to_vec();
        Ok(Authority { id: id.to_string(), cert, key: Some(key), not_before, not_after, subject_der, chain: Vec::new(), signer })
    }

    /// An external CA: its certificate alone (external-CA mode), whose key is kept elsewhere.
    pub fn external(id: &str, cert_pem: &str) -> Result<Authority, String> {
        let parsed = pem::parse(cert_pem).map_err(|e| format!("not a PEM certificate: {e}"))?;
        let der = parsed.contents().to_vec();
        let (_, x509) = x509_parser::parse_x509_certificate(&der).map_err(|e| format!("unreadable certificate: {e}"))?;
        if !x509.is_ca() {
            return Err("the certificate is not a CA (BasicConstraints CA:FALSE)".into());
        }
        let not_before = x509.validity().not_before.to_datetime();
        let not_after = x509.validity().not_after.to_datetime();
        let subject_der = x509.subject().as_raw().to_vec();
        let cert = Issued { der, pem: cert_pem.to_string() };
        Ok(Authority { id: id.to_string(), cert, key: None, not_before, not_after, subject_der, chain: Vec::new(), signer: None })
    }

    /// Whether this CA's key is kept elsewhere (external-CA mode).
    pub fn is_external(&self) -> bool {
        self.key.is_none()
    }

    /// The CA's public key (DER SubjectPublicKeyInfo), from its certificate.
    pub fn spki_der(&self) -> Vec<u8> {
        x509_parser::parse_x509_certificate(&self.cert.der).map(|(_, c)| c.public_key().raw.to_vec()).unwrap_or_default()
    }

    pub fn from_pem(id: &str, cert_pem: &str, key: Key) -> Result<Authority, String> {
        let parsed = pem::parse(cert_pem).map_err(|e| format!("not a PEM certificate: {e}"))?;
        if parsed.tag() != "CERTIFICATE" {
            return Err(format!("expected a CERTIFICATE PEM block, found {:?}", parsed.tag()));
        }
        let der = parsed.contents().to_vec();
        let (_, x509) = x509_parser::parse_x509_certificate(&der).map_err(|e| format!("unreadable certificate: {e}"))?;
        if !x509.is_ca() {
            return Err("the certificate is not a CA (BasicConstraints CA:FALSE)".into());
        }
        if pem::parse_many(cert_pem).map(|b| b.len()).unwrap_or(0) > 1 {
            return Err(format!(
                "holds more than one certificate: the state keeps the signing CA alone in it, and its issuers in {}",
                CHAIN_FILE_HINT
            ));
        }
        if x509.public_key().raw != key.spki_der().as_slice() {
            return Err("the CA key does not match the CA certificate".into());
        }
        let not_before = x509.validity().not_before.to_datetime();
        let not_after = x509.validity().not_after.to_datetime();
        Authority::new(id, Issued { der, pem: cert_pem.to_string() }, key, not_before, not_after)
    }
}

const CHAIN_FILE_HINT: &str = "the chain file beside it (ca-chain.crt, front-proxy-ca-chain.crt, etcd/ca-chain.crt)";

impl Authority {
    /// What a serving certificate carries after itself so that a client trusting the root can
    /// build the chain: the signing CA and every intermediate above it, the root left out. Empty
    /// for a CA that is a root.
    pub fn intermediates_pem(&self) -> String {
        if self.chain.is_empty() {
            return String::new();
        }
        let mut out = pem_encode("CERTIFICATE", &self.cert.der);
        for der in &self.chain[..self.chain.len() - 1] {
            out.push_str(&pem_encode("CERTIFICATE", der));
        }
        out
    }
}

/// A random positive serial below 2^63, never zero.
pub fn random_serial() -> Vec<u8> {
    loop {
        let mut b = [0u8; 8];
        aws_lc_rs::rand::fill(&mut b).expect("the system RNG works");
        if let Some(s) = positive_serial(b) {
            return s;
        }
    }
}

fn positive_serial(mut b: [u8; 8]) -> Option<Vec<u8>> {
    b[0] &= 0x7f;
    b.iter().any(|x| *x != 0).then(|| b.to_vec())
}

/// A serial that looks random to anyone without the signing key but is the same every time the
/// same certificate is issued: HMAC-SHA256 keyed by the signer's private key over the
/// certificate's identity, cut to a positive number below 2^63. So a run re-issuing from the
/// same state writes byte-identical certificates.
pub fn derived_serial(signer: &Key, identity: &[&[u8]]) -> Vec<u8> {
    let secret = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, signer.private_pem().as_bytes());
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_ref());
    let mut counter = 0u8;
    loop {
        let mut ctx = aws_lc_rs::hmac::Context::with_key(&key);
        ctx.update(b"kubebundle/serial/v1");
        for part in identity {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        ctx.update(&[counter]);
        let tag = ctx.sign();
        let mut b = [0u8; 8];
        b.copy_from_slice(&tag.as_ref()[..8]);
        if let Some(s) = positive_serial(b) {
            return s;
        }
        counter = counter.wrapping_add(1);
    }
}

pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// kubeadm ≤1.27 started a CA at the generation time; 1.28+ backdates it by five minutes.
    pub fn for_ca(clock: &Clock, version: &KubeVersion, period: Duration) -> Validity {
        Validity { not_before: if version.at_least(28) { clock.backdated() } else { clock.now }, not_after: clock.now + period }
    }

    /// kubeadm ≤1.30 copied the CA's notBefore into leaves; 1.31+ backdates every certificate.
    pub fn for_leaf(clock: &Clock, version: &KubeVersion, period: Duration, ca: &Authority) -> Validity {
        Validity { not_before: if version.at_least(31) { clock.backdated() } else { ca.not_before }, not_after: clock.now + period }
    }
}

/// Signs `spec` for `key`. `issuer` is None for a self-signed CA.
/// What a certificate of `spec` and a request for one both say: the subject (O, then CN), every
/// SAN and the extended key usages.
fn identity_params(spec: &CertSpec) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    for o in &spec.organizations {
        dn.push(DnType::OrganizationName, o.as_str());
    }
    dn.push(DnType::CommonName, spec.common_name.as_str());
    params.distinguished_name = dn;
    params.subject_alt_names = spec
        .sans
        .dns
        .iter()
        .map(|d| Ok(SanType::DnsName(d.as_str().try_into()?)))
        .chain(spec.sans.ips.iter().map(|ip| Ok(SanType::IpAddress(*ip))))
        .collect::<Result<_, rcgen::Error>>()?;
    params.extended_key_usages = spec
        .usages
        .iter()
        .map(|u| match u {
            Eku::ServerAuth => ExtendedKeyUsagePurpose::ServerAuth,
            Eku::ClientAuth => ExtendedKeyUsagePurpose::ClientAuth,
        })
        .collect();
    Ok(params)
}

/// A leaf as kubeadm writes it: BasicConstraints CA:FALSE (critical) and no
/// SubjectKeyIdentifier (its CAs keep theirs). rcgen writes both or neither (`IsCa`), so the leaf
/// is `IsCa::NoCa` with BasicConstraints added as the extension it is (an empty SEQUENCE).
pub fn leaf_not_a_ca(params: &mut CertificateParams) {
    params.is_ca = IsCa::NoCa;
    let mut basic_constraints = CustomExtension::from_oid_content(&[2, 5, 29, 19], vec![0x30, 0x00]);
    basic_constraints.set_criticality(true);
    params.custom_extensions.push(basic_constraints);
}

pub fn issue(spec: &CertSpec, key: &Key, issuer: Option<&Authority>, validity: &Validity, serial: Vec<u8>) -> Result<Issued, IssueError> {
    let build = |e: rcgen::Error| IssueError::Build { id: spec.id.clone(), message: e.to_string() };
    if let Some(ca) = issuer {
        if validity.not_after > ca.not_after {
            return Err(IssueError::OutlivesCa { id: spec.id.clone(), ca: ca.id.clone(), leaf: validity.not_after, ca_end: ca.not_after });
        }
    }
    let mut params = identity_params(spec).map_err(build)?;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    if spec.is_ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment, KeyUsagePurpose::KeyCertSign];
        params.use_authority_key_identifier_extension = false;
    } else {
        leaf_not_a_ca(&mut params);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.use_authority_key_identifier_extension = true;
    }
    // Deterministic signatures (RFC 6979 for ECDSA): the same inputs give the same bytes.
    let key_error = |e: super::keys::KeyError| IssueError::Build { id: spec.id.clone(), message: e.to_string() };
    let cert = match issuer {
        None => params.self_signed(&DeterministicSigner::for_key(key).map_err(key_error)?).map_err(build)?,
        Some(ca) => {
            let signer = match (&ca.signer, &ca.key) {
                (Some(ec), _) => DeterministicSigner::Ecdsa(ec.clone()),
                (None, Some(k)) => DeterministicSigner::KeyPair(&k.pair),
                (None, None) => {
                    return Err(IssueError::Build {
                        id: spec.id.clone(),
                        message: format!("the {} CA is external: its key is not here", ca.id),
                    })
                }
            };
            let issuer = Issuer::from_ca_cert_der(&ca.cert.der.as_slice().into(), signer).map_err(build)?;
            params.signed_by(&key.pair, &issuer).map_err(build)?
        }
    };
    let der = cert.der().to_vec();
    Ok(Issued { pem: pem_encode("CERTIFICATE", &der), der })
}

/// A certificate signing request (PKCS#10, DER) for an intermediate CA named `common_name` with
/// `key`: it asks for basicConstraints CA:TRUE and keyUsage keyCertSign, cRLSign and
/// digitalSignature (both critical), so a signer that copies a request's extensions keeps them.
/// Its signature is deterministic (RFC 6979 for ECDSA): the same key gives the same bytes.
pub fn ca_request(common_name: &str, key: &Key) -> Result<Vec<u8>, IssueError> {
    let build = |message: String| IssueError::Build { id: common_name.to_string(), message };
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let signer = DeterministicSigner::for_key(key).map_err(|e| build(e.to_string()))?;
    let csr = params.serialize_request(&signer).map_err(|e| build(e.to_string()))?;
    Ok(csr.der().to_vec())
}

/// A certificate signing request (PKCS#10, DER) for the leaf `spec` with `key`, in the shape of
/// kubeadm's `certs generate-csr` (subject O and CN, every SAN) plus the key usages and extended
/// key usages the catalogue gives, so a signer that copies a request's extensions keeps them
/// (kubeadm leaves those to the signer). Like kubeadm's, it asks for no BasicConstraints and no
/// SubjectKeyIdentifier. Deterministic: the same key gives the same bytes.
pub fn leaf_request(spec: &CertSpec, key: &Key) -> Result<Vec<u8>, IssueError> {
    let build = |message: String| IssueError::Build { id: spec.id.clone(), message };
    let mut params = identity_params(spec).map_err(|e| build(e.to_string()))?;
    // NoCa: rcgen then writes neither BasicConstraints nor a SubjectKeyIdentifier into the request.
    params.is_ca = IsCa::NoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    let signer = DeterministicSigner::for_key(key).map_err(|e| build(e.to_string()))?;
    let csr = params.serialize_request(&signer).map_err(|e| build(e.to_string()))?;
    Ok(csr.der().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::keys::KeyAlgorithm;
    use x509_parser::extensions::ParsedExtension;
    use x509_parser::prelude::FromDer;

    #[test]
    fn a_ca_request_asks_for_a_ca_and_is_the_same_bytes_for_the_same_key() {
        for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::EcdsaP384, KeyAlgorithm::Rsa2048] {
            let key = Key::generate(alg).unwrap();
            let der = ca_request("front-proxy-ca", &key).unwrap();
            assert_eq!(ca_request("front-proxy-ca", &key).unwrap(), der, "{alg:?}: not deterministic");
            let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&der).unwrap();
            csr.verify_signature().unwrap();
            let info = &csr.certification_request_info;
            assert_eq!(info.subject.to_string(), "CN=front-proxy-ca");
            assert_eq!(info.subject_pki.raw, key.spki_der().as_slice());
            let exts: Vec<&ParsedExtension<'_>> = csr.requested_extensions().unwrap().collect();
            assert!(exts.iter().any(|e| matches!(e, ParsedExtension::BasicConstraints(b) if b.ca && b.path_len_constraint.is_none())));
            assert!(exts.iter().any(|e| matches!(e, ParsedExtension::KeyUsage(k)
                if k.key_cert_sign() && k.crl_sign() && k.digital_signature() && !k.key_encipherment())));
        }
    }
}
