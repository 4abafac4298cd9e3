//! What the audit reads out of files, shared by its checks: certificates (`CertInfo`), keys
//! against certificates, kubeconfigs, URLs, unit ExecStart lines, YAML documents, and escaping for
//! the tables.

use std::net::IpAddr;

use time::OffsetDateTime;
use x509_parser::extensions::{GeneralName, ParsedExtension};

use crate::pki::keys::Key;
use crate::pki::token;

#[derive(Debug, Clone)]
pub(crate) struct CertInfo {
    pub(crate) der: Vec<u8>,
    pub(crate) tbs: Vec<u8>,
    pub(crate) sig_alg: String,
    pub(crate) sig: Vec<u8>,
    pub(crate) subject: String,
    pub(crate) subject_raw: Vec<u8>,
    /// The subject's O values (the groups a client certificate authenticates as).
    pub(crate) orgs: Vec<String>,
    pub(crate) issuer: String,
    pub(crate) issuer_raw: Vec<u8>,
    pub(crate) cn: String,
    pub(crate) ski: Option<Vec<u8>>,
    pub(crate) aki: Option<Vec<u8>>,
    pub(crate) spki_raw: Vec<u8>,
    pub(crate) spki_alg: String,
    pub(crate) spki_curve: Option<String>,
    pub(crate) spki_key: Vec<u8>,
    pub(crate) is_ca: bool,
    pub(crate) key_cert_sign: bool,
    pub(crate) server_auth: bool,
    pub(crate) client_auth: bool,
    /// EKU present at all.
    pub(crate) has_eku: bool,
    pub(crate) other_eku: Vec<String>,
    pub(crate) dns: Vec<String>,
    pub(crate) ips: Vec<IpAddr>,
    pub(crate) not_before: OffsetDateTime,
    pub(crate) not_after: OffsetDateTime,
}

impl CertInfo {
    pub(crate) fn from_der(der: &[u8]) -> Result<CertInfo, String> {
        let (rest, x) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("not a valid X.509 certificate: {e}"))?;
        if !rest.is_empty() {
            return Err("trailing bytes after the certificate".into());
        }
        let spki = x.public_key();
        let spki_curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| x509_parser::der_parser::oid::Oid::try_from(p.clone()).ok())
            .map(|o| o.to_id_string());
        let mut c = CertInfo {
            der: der.to_vec(),
            tbs: x.tbs_certificate.as_ref().to_vec(),
            sig_alg: x.signature_algorithm.algorithm.to_id_string(),
            sig: x.signature_value.data.to_vec(),
            subject: x.subject().to_string(),
            subject_raw: x.subject().as_raw().to_vec(),
            orgs: x.subject().iter_organization().filter_map(|a| a.as_str().ok()).map(str::to_string).collect(),
            issuer: x.issuer().to_string(),
            issuer_raw: x.issuer().as_raw().to_vec(),
            cn: x.subject().iter_common_name().next().and_then(|a| a.as_str().ok()).unwrap_or_default().to_string(),
            ski: None,
            aki: None,
            spki_raw: spki.raw.to_vec(),
            spki_alg: spki.algorithm.algorithm.to_id_string(),
            spki_curve,
            spki_key: spki.subject_public_key.data.to_vec(),
            is_ca: false,
            key_cert_sign: false,
            server_auth: false,
            client_auth: false,
            has_eku: false,
            other_eku: Vec::new(),
            dns: Vec::new(),
            ips: Vec::new(),
            not_before: x.validity().not_before.to_datetime(),
            not_after: x.validity().not_after.to_datetime(),
        };
        for ext in x.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => c.ski = Some(k.0.to_vec()),
                ParsedExtension::AuthorityKeyIdentifier(a) => c.aki = a.key_identifier.as_ref().map(|k| k.0.to_vec()),
                ParsedExtension::BasicConstraints(bc) => c.is_ca = bc.ca,
                ParsedExtension::KeyUsage(ku) => c.key_cert_sign = ku.key_cert_sign(),
                ParsedExtension::ExtendedKeyUsage(e) => {
                    c.has_eku = true;
                    c.server_auth = e.server_auth || e.any;
                    c.client_auth = e.client_auth || e.any;
                    let named = [
                        (e.code_signing, "codeSigning"),
                        (e.email_protection, "emailProtection"),
                        (e.time_stamping, "timeStamping"),
                        (e.ocsp_signing, "OCSPSigning"),
                        (e.any, "anyExtendedKeyUsage"),
                    ];
                    c.other_eku = named.iter().filter(|(on, _)| *on).map(|(_, n)| n.to_string()).collect();
                    c.other_eku.extend(e.other.iter().map(|o| o.to_id_string()));
                }
                ParsedExtension::SubjectAlternativeName(san) => {
                    for gn in &san.general_names {
                        match gn {
                            GeneralName::DNSName(d) => c.dns.push(d.to_string()),
                            GeneralName::IPAddress(b) => {
                                if let Ok(a) = <[u8; 4]>::try_from(*b) {
                                    c.ips.push(IpAddr::from(a));
                                } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                                    c.ips.push(IpAddr::from(a));
                                }
                            }
                            _ => {}
                        }
                    }
                }
                ParsedExtension::ParseError { error } => return Err(format!("malformed extension {}: {error}", ext.oid.to_id_string())),
                _ => {}
            }
        }
        Ok(c)
    }

    /// Every CERTIFICATE block of a PEM file (ca.crt may hold several).
    pub(crate) fn all_from_pem(bytes: &[u8]) -> Result<Vec<CertInfo>, String> {
        let blocks = pem::parse_many(bytes).map_err(|e| format!("not PEM: {e}"))?;
        let certs: Vec<&pem::Pem> = blocks.iter().filter(|b| b.tag() == "CERTIFICATE").collect();
        if certs.is_empty() {
            return Err("no CERTIFICATE PEM block".into());
        }
        certs.iter().map(|b| CertInfo::from_der(b.contents())).collect()
    }

    pub(crate) fn from_pem(bytes: &[u8]) -> Result<CertInfo, String> {
        let mut all = CertInfo::all_from_pem(bytes)?;
        Ok(all.remove(0))
    }

    pub(crate) fn covers_host(&self, host: &str) -> bool {
        match host.parse::<IpAddr>() {
            Ok(ip) => self.ips.contains(&ip),
            Err(_) => self.dns.iter().any(|d| dns_matches(d, host)),
        }
    }

    pub(crate) fn san_strings(&self) -> Vec<String> {
        self.dns.iter().map(|d| format!("DNS:{d}")).chain(self.ips.iter().map(|i| format!("IP:{i}"))).collect()
    }

    pub(crate) fn hash(&self) -> String {
        token::discovery_hash(&self.spki_raw)
    }
}

pub(crate) fn dns_matches(pattern: &str, host: &str) -> bool {
    let (p, h) = (pattern.to_ascii_lowercase(), host.trim_end_matches('.').to_ascii_lowercase());
    match p.strip_prefix("*.") {
        Some(suffix) => h.split_once('.').is_some_and(|(first, rest)| !first.is_empty() && rest == suffix),
        None => p == h,
    }
}

/// Checks `cert`'s signature with `issuer`'s public key.
pub(crate) fn signature_ok(cert: &CertInfo, issuer: &CertInfo) -> Result<(), String> {
    use crate::pki::signature::{verify, IssuerKey, Signed};
    let signed = Signed { tbs: &cert.tbs, signature: &cert.sig, algorithm: &cert.sig_alg };
    verify(&signed, &IssuerKey { algorithm: &issuer.spki_alg, curve: issuer.spki_curve.as_deref(), key: &issuer.spki_key })
}

/// Does the private key (PEM) belong to this public key (DER SubjectPublicKeyInfo)?
pub(crate) fn key_matches(key_pem: &[u8], spki_der: &[u8]) -> Result<bool, String> {
    let text = std::str::from_utf8(key_pem).map_err(|_| "the key is not PEM text".to_string())?;
    let key = Key::from_pem(text).map_err(|e| e.to_string())?;
    Ok(same_public_key(&key.spki_der(), spki_der))
}

/// Compares two SubjectPublicKeyInfos by algorithm and key bits (tolerates encoding differences
/// such as absent versus NULL RSA parameters).
pub(crate) fn same_public_key(a: &[u8], b: &[u8]) -> bool {
    use x509_parser::prelude::FromDer;
    use x509_parser::x509::SubjectPublicKeyInfo;
    match (SubjectPublicKeyInfo::from_der(a), SubjectPublicKeyInfo::from_der(b)) {
        (Ok((_, x)), Ok((_, y))) => {
            x.algorithm.algorithm == y.algorithm.algorithm && x.subject_public_key.data == y.subject_public_key.data
        }
        _ => a == b,
    }
}

pub(crate) fn pem_public_key(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let p = pem::parse(bytes).map_err(|e| format!("not PEM: {e}"))?;
    if p.tag() != "PUBLIC KEY" {
        return Err(format!("expected a PUBLIC KEY PEM block, found {:?}", p.tag()));
    }
    Ok(p.contents().to_vec())
}

/// What a kubeconfig holds, decoded.
pub(crate) struct Kubeconfig {
    pub(crate) server: String,
    pub(crate) ca: Option<Vec<u8>>,
    pub(crate) cert_pem: Option<Vec<u8>>,
    /// `client-certificate`: a file path instead of data.
    pub(crate) cert_file: Option<String>,
    pub(crate) key_pem: Option<Vec<u8>>,
    pub(crate) token: Option<String>,
}

pub(crate) fn parse_kubeconfig(bytes: &[u8]) -> Result<Kubeconfig, String> {
    use crate::tree::kubeconfig::decode;
    let doc = crate::tree::kubeconfig::Kubeconfig::parse(bytes)?;
    let cluster = match doc.clusters.as_slice() {
        [one] => &one.cluster,
        [] => return Err("no cluster entry".into()),
        _ => return Err(format!("{} cluster entries; kubeadm writes one", doc.clusters.len())),
    };
    let user = doc.current_user();
    Ok(Kubeconfig {
        server: cluster.server.clone(),
        ca: decode("certificate-authority-data", cluster.certificate_authority_data.as_deref())?,
        cert_pem: decode("client-certificate-data", user.and_then(|u| u.client_certificate_data.as_deref()))?,
        cert_file: user.and_then(|u| u.client_certificate.clone()),
        key_pem: decode("client-key-data", user.and_then(|u| u.client_key_data.as_deref()))?,
        token: user.and_then(|u| u.token.clone()),
    })
}

/// `https://host:port` → (scheme, host). IPv6 hosts come without brackets.
pub(crate) fn url_host(url: &str) -> Option<(String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let host = if let Some(r) = authority.strip_prefix('[') {
        r.split_once(']')?.0.to_string()
    } else {
        authority.rsplit_once(':').map(|(h, _)| h).unwrap_or(authority).to_string()
    };
    (!host.is_empty()).then(|| (scheme.to_string(), host))
}

/// `host:port` or `[v6]:port` → host.
pub(crate) fn endpoint_host(endpoint: &str) -> String {
    url_host(&format!("https://{endpoint}")).map(|(_, h)| h).unwrap_or_else(|| endpoint.to_string())
}

/// `s` with every control character (C0, DEL, C1: newline, ESC, ...) and every bidirectional
/// override written as a Rust-style escape (`\n`, `\u{1b}`), and a backslash as `\\`, so what a
/// tarball or a file names is printed as text, never interpreted by the terminal.
pub(crate) fn escape(s: &str) -> String {
    let bidi = |c: char| matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !s.chars().any(|c| c.is_control() || bidi(c) || c == '\\') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || bidi(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// The argv of a unit's ExecStart (continuation lines joined; systemd's `-`/`@` prefixes dropped).
pub(crate) fn exec_start(unit: &str) -> Option<Vec<String>> {
    let mut joined = String::new();
    let mut in_exec = false;
    for line in unit.lines() {
        let l = line.trim();
        if !in_exec {
            match l.strip_prefix("ExecStart=") {
                Some(rest) => {
                    in_exec = true;
                    joined.push_str(rest);
                }
                None => continue,
            }
        } else {
            joined.push(' ');
            joined.push_str(l);
        }
        match joined.strip_suffix('\\') {
            Some(j) => joined = j.to_string(),
            None => break,
        }
    }
    if joined.is_empty() {
        return None;
    }
    let argv: Vec<String> = joined.split_whitespace().map(str::to_string).collect();
    let mut argv = argv;
    if let Some(first) = argv.first_mut() {
        *first = first.trim_start_matches(['-', '@', '+', '!']).to_string();
    }
    Some(argv)
}

/// Every YAML document of a file, as JSON values (unparsable documents are skipped: the file's
/// own check reports them).
pub(crate) fn documents(text: &str) -> Vec<serde_json::Value> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    for line in text.lines().chain(std::iter::once("---")) {
        if line.trim_end() == "---" {
            if !cur.trim().is_empty() {
                if let Ok(v) = serde_saphyr::from_str::<serde_json::Value>(&cur) {
                    docs.push(v);
                }
            }
            cur.clear();
        } else {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    docs
}
