//! Reading a CA someone else made (`kubebundle ca import`): PEM files and HashiCorp Vault PKI
//! `-format=json` responses (the `{"data":{...}}` envelope or the bare data: `certificate`,
//! `issuing_ca`, `ca_chain`, `private_key`), and the checks a CA must pass before a bundle is
//! signed with it: it is a CA with keyCertSign, its key is its own and one kubeadm loads, and its
//! chain verifies up to a self-signed root. Pure: the caller reads the files and writes the state.

use x509_parser::certificate::X509Certificate;

use super::keys::{pem_encode, Key};

/// One input file: its name (for messages) and its text.
pub struct Input<'a> {
    pub name: &'a str,
    pub text: &'a str,
}

/// The key the state already holds for the CA (`kubebundle ca csr` made it), used when neither
/// --key nor --cert gives one.
pub struct StateKey<'a> {
    pub input: Input<'a>,
    /// What it is, for a refusal ("the key `kubebundle ca csr` made, waiting in").
    pub about: &'a str,
    /// How to fix a certificate issued for another key.
    pub hint: &'a str,
}

/// What an input file holds.
#[derive(Default)]
struct Parsed {
    /// DER certificates, in file order (Vault: `certificate`, then `issuing_ca`, then `ca_chain`).
    certs: Vec<Vec<u8>>,
    /// A private key: (PEM label, DER).
    key: Option<(String, zeroize::Zeroizing<Vec<u8>>)>,
}

/// A CA ready to go into the state: the signing CA and its key, and the certificates above it.
pub struct CaImport {
    /// PEM of the signing CA (one certificate; LF line endings, whatever the input used).
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    /// PEM of its key, in the input's format (PKCS#1, SEC1 or PKCS#8), re-encoded the same way;
    /// None for an external CA (no key given, none in the state).
    pub key_pem: Option<zeroize::Zeroizing<String>>,
    /// The issuers above it, the signing CA's issuer first, up to the self-signed root (empty when
    /// the CA is a root itself).
    pub chain: Vec<Vec<u8>>,
    /// The CA's notBefore and notAfter.
    pub not_before: time::OffsetDateTime,
    pub not_after: time::OffsetDateTime,
    /// The key is the state's own (`StateKey`): no key was given.
    pub key_from_state: bool,
}

impl CaImport {
    /// The chain as one PEM file (empty when there is none).
    pub fn chain_pem(&self) -> String {
        self.chain.iter().map(|d| pem_encode("CERTIFICATE", d)).collect()
    }
}

/// Why an input was refused: each message names the file and says what to give instead.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The input is wrong (not a CA, not its key, a chain that does not verify, a format or key
    /// type kubeadm cannot use).
    #[error("{0}")]
    Input(String),
}

fn input(msg: String) -> ImportError {
    ImportError::Input(msg)
}

const ED25519: &str = "1.3.101.112";

/// Reads one file: PEM blocks, or a Vault JSON response.
fn parse(file: &Input<'_>) -> Result<Parsed, ImportError> {
    let trimmed = file.text.trim_start();
    if trimmed.starts_with('{') {
        return parse_vault(file);
    }
    if !trimmed.starts_with("-----BEGIN") && !trimmed.is_empty() && !file.text.contains("-----BEGIN") {
        return Err(input(format!(
            "{}: neither PEM nor a Vault JSON response\n  hint: give PEM files (-----BEGIN CERTIFICATE-----), or Vault's `-format=json` output of the call that issued the CA",
            file.name
        )));
    }
    parse_pem(file.name, file.text, "")
}

fn parse_pem(name: &str, text: &str, field: &str) -> Result<Parsed, ImportError> {
    let at = if field.is_empty() { name.to_string() } else { format!("{name}: {field}") };
    let blocks = pem::parse_many(text).map_err(|_| {
        input(format!("{at}: the PEM does not parse (a damaged or truncated block)\n  hint: give the file as the signer wrote it"))
    })?;
    if blocks.is_empty() {
        let trimmed = text.trim();
        let b64 = !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=\n\r".contains(&b));
        return Err(input(if b64 {
            format!("{at}: base64 DER, not PEM (Vault's format=der)\n  hint: ask Vault for PEM (format=pem, the default) and give its -format=json output")
        } else {
            format!("{at}: holds no PEM block\n  hint: give PEM (-----BEGIN CERTIFICATE-----) or a Vault -format=json response")
        }));
    }
    let mut out = Parsed::default();
    for b in blocks {
        match b.tag() {
            "CERTIFICATE" => out.certs.push(b.contents().to_vec()),
            "RSA PRIVATE KEY" | "EC PRIVATE KEY" | "PRIVATE KEY" => {
                if out.key.is_some() {
                    return Err(input(format!("{at}: holds more than one private key\n  hint: give the CA's key alone")));
                }
                out.key = Some((b.tag().to_string(), zeroize::Zeroizing::new(b.contents().to_vec())));
            }
            // openssl ecparam -genkey writes the curve before the key.
            "EC PARAMETERS" => {}
            "ENCRYPTED PRIVATE KEY" => {
                return Err(input(format!(
                    "{at}: the private key is encrypted\n  hint: decrypt it first (`openssl pkey -in KEY -out plain.key`) and keep the result as safe as the CA"
                )))
            }
            other => return Err(input(format!("{at}: unexpected PEM block {other:?}\n  hint: give certificates and a private key"))),
        }
    }
    Ok(out)
}

fn parse_vault(file: &Input<'_>) -> Result<Parsed, ImportError> {
    let value: serde_json::Value = serde_json::from_str(file.text).map_err(|e| {
        input(format!(
            "{}: not valid JSON (line {}, column {})\n  hint: give Vault's `-format=json` output as it printed it",
            file.name,
            e.line(),
            e.column()
        ))
    })?;
    let data = match value.get("data") {
        Some(d) if d.is_object() => d,
        _ => &value,
    };
    let field = |k: &str| data.get(k).filter(|v| !v.is_null());
    if data.get("certificate").is_none() && data.get("private_key").is_none() && data.get("issuing_ca").is_none() {
        return Err(input(format!(
            "{}: a JSON file without Vault's certificate, issuing_ca, ca_chain or private_key fields\n  hint: give the `-format=json` response of pki/root/generate/exported, pki/root/sign-intermediate or pki/issue",
            file.name
        )));
    }
    if field("private_key_type").and_then(|v| v.as_str()) == Some("ed25519") {
        return Err(input(format!(
            "{}: private_key_type is ed25519, which kubeadm cannot load (it reads RSA and ECDSA keys)\n  hint: issue the CA with key_type=rsa or key_type=ec",
            file.name
        )));
    }
    let mut out = Parsed::default();
    let mut take = |name: &str, v: &serde_json::Value| -> Result<(), ImportError> {
        let Some(text) = v.as_str() else {
            return Err(input(format!("{}: {name} is not a string\n  hint: give Vault's -format=json output unchanged", file.name)));
        };
        let p = parse_pem(file.name, text, name)?;
        out.certs.extend(p.certs);
        if let Some(k) = p.key {
            if out.key.is_some() {
                return Err(input(format!("{}: holds more than one private key\n  hint: give the CA's key alone", file.name)));
            }
            out.key = Some(k);
        }
        Ok(())
    };
    let first_pem = |v: &serde_json::Value| v.as_str().and_then(|t| pem::parse(t).ok()).map(|p| p.into_contents());
    if let (Some(issuing), Some(first)) = (field("issuing_ca"), field("ca_chain").and_then(|c| c.as_array()).and_then(|a| a.first())) {
        if first_pem(issuing).is_some() && first_pem(issuing) != first_pem(first) {
            return Err(input(format!(
                "{}: issuing_ca is not ca_chain[0]: the response is inconsistent\n  hint: give Vault's -format=json output unchanged",
                file.name
            )));
        }
    }
    for name in ["certificate", "issuing_ca"] {
        if let Some(v) = field(name) {
            take(name, v)?;
        }
    }
    if let Some(v) = field("ca_chain") {
        match v.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    take(&format!("ca_chain[{i}]"), item)?;
                }
            }
            None => take("ca_chain", v)?,
        }
    }
    if let Some(v) = field("private_key") {
        take("private_key", v)?;
    }
    Ok(out)
}

fn name_of(cert: &X509Certificate<'_>) -> String {
    let s = cert.subject().to_string();
    if s.is_empty() {
        "(empty subject)".into()
    } else {
        s
    }
}

/// Whether `parent`'s key signed `child` (and `parent` is named as its issuer).
pub fn signed_by(child: &X509Certificate<'_>, parent: &X509Certificate<'_>) -> bool {
    let key = parent.public_key();
    let curve = key.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).map(|o| o.to_id_string());
    child.issuer().as_raw() == parent.subject().as_raw()
        && super::signature::verify(
            &super::signature::Signed {
                tbs: child.tbs_certificate.as_ref(),
                signature: &child.signature_value.data,
                algorithm: &child.signature_algorithm.algorithm.to_id_string(),
            },
            &super::signature::IssuerKey {
                algorithm: &key.algorithm.algorithm.to_id_string(),
                curve: curve.as_deref(),
                key: &key.subject_public_key.data,
            },
        )
        .is_ok()
}

fn is_ca(cert: &X509Certificate<'_>) -> bool {
    matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca)
}

fn can_sign_certs(cert: &X509Certificate<'_>) -> bool {
    matches!(cert.key_usage(), Ok(Some(ku)) if ku.value.key_cert_sign())
}

/// Reads and checks a CA to import. `cert` is the CA (a PEM file, possibly followed by its chain,
/// or a Vault JSON response), `key` and `chain` optional files; `leaves_end` is when the
/// certificates generate would issue from it end (the CA must outlive them).
pub fn read_ca(
    cert: &Input<'_>,
    key: Option<&Input<'_>>,
    chain: Option<&Input<'_>>,
    state_key: Option<&StateKey<'_>>,
    leaves_end: time::OffsetDateTime,
    validity_words: &str,
) -> Result<CaImport, ImportError> {
    let main = parse(cert)?;
    let Some(ca_der) = main.certs.first().cloned() else {
        return Err(input(format!(
            "{}: holds no certificate\n  hint: --cert takes the CA certificate (PEM, or Vault's -format=json response)",
            cert.name
        )));
    };
    let mut pool: Vec<Vec<u8>> = main.certs[1..].to_vec();
    let mut key_found = main.key.map(|k| (cert.name.to_string(), k));
    if let Some(k) = key {
        let p = parse(k)?;
        match (p.key, &key_found) {
            (Some(found), None) => key_found = Some((k.name.to_string(), found)),
            (Some(_), Some((from, _))) => {
                return Err(input(format!(
                "{}: a private key, but {from} holds one too\n  hint: give the CA's key once: leave out --key, or give a --cert without it",
                k.name
            )))
            }
            (None, _) => {
                return Err(input(format!("{}: holds no private key\n  hint: --key takes the CA's private key (PEM)", k.name)));
            }
        }
    }
    let mut from_state = None;
    if let (None, Some(s)) = (&key_found, state_key) {
        if let Some(k) = parse(&s.input)?.key {
            key_found = Some((s.input.name.to_string(), k));
            from_state = Some(s);
        }
    }
    if let Some(c) = chain {
        let p = parse(c)?;
        if p.certs.is_empty() {
            return Err(input(format!(
                "{}: holds no certificate\n  hint: --chain takes the certificates above the CA, up to its root (PEM)",
                c.name
            )));
        }
        pool.extend(p.certs);
    }

    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).map_err(|_| {
        input(format!("{}: the first certificate does not parse\n  hint: give the CA certificate as the signer wrote it", cert.name))
    })?;
    let who = name_of(&ca);
    if !is_ca(&ca) {
        return Err(input(format!(
            "{}: {who} is not a CA (its basicConstraints do not say CA:TRUE)\n  hint: give the certificate of the CA that is to sign the cluster's certificates, not a leaf",
            cert.name
        )));
    }
    if !can_sign_certs(&ca) {
        return Err(input(format!(
            "{}: {who} may not sign certificates (its keyUsage lacks keyCertSign)\n  hint: have it issued with keyUsage critical,keyCertSign,cRLSign (Vault: key_usage of the sign-intermediate call)",
            cert.name
        )));
    }
    let spki_alg = ca.public_key().algorithm.algorithm.to_id_string();
    let supported = ca.public_key().parsed().ok().as_ref().and_then(super::keys::algorithm_of).is_some();
    if !supported {
        let what = if spki_alg == ED25519 { "an Ed25519 key".to_string() } else { format!("a key of type {spki_alg}") };
        return Err(input(format!(
            "{}: {who} has {what}, which kubeadm cannot load\n  hint: use a CA with an RSA (2048, 3072 or 4096 bits) or ECDSA (P-256, P-384) key",
            cert.name
        )));
    }

    // No key given and none in the state: external-CA mode (its key stays with its owner).
    let key_pem = match key_found {
        None => None,
        Some((key_file, (label, key_der))) => {
            if label == "PRIVATE KEY" && pkcs8_oid(&key_der).as_deref() == Some(ED25519) {
                return Err(input(format!(
                    "{key_file}: an Ed25519 private key, which kubeadm cannot load\n  hint: use a CA with an RSA or ECDSA key"
                )));
            }
            let key_pem = zeroize::Zeroizing::new(pem_encode(&label, &key_der));
            let key_obj = Key::from_pem(&key_pem).map_err(|_| {
            input(format!(
                "{key_file}: the private key cannot be read as an RSA or ECDSA (P-256, P-384) key\n  hint: give the CA's key in PEM (PKCS#1, SEC1 or PKCS#8)"
            ))
        })?;
            if key_obj.spki_der() != ca.public_key().raw {
                if let Some(s) = from_state {
                    return Err(input(format!(
                        "{}: {who} was issued for another key than the {} {}\n  hint: {}",
                        cert.name, s.about, s.input.name, s.hint
                    )));
                }
                return Err(input(format!(
                    "{key_file}: the private key does not match the certificate of {who} in {}\n  hint: give the key the CA was issued for",
                    cert.name
                )));
            }

            Some(key_pem)
        }
    };

    // The chain: from the CA up, each certificate signed by the next, ending at a self-signed root.
    let parsed: Vec<(Vec<u8>, X509Certificate<'_>)> = pool
        .iter()
        .filter(|d| **d != ca_der)
        .filter_map(|d| x509_parser::parse_x509_certificate(d).ok().map(|(_, c)| (d.clone(), c)))
        .collect();
    let mut path: Vec<Vec<u8>> = Vec::new();
    let mut current = ca.clone();
    let chain_files = match chain {
        Some(c) => c.name.to_string(),
        None => cert.name.to_string(),
    };
    for _ in 0..16 {
        if signed_by(&current, &current) {
            break;
        }
        let next = parsed.iter().find(|(d, c)| !path.contains(d) && signed_by(&current, c));
        let Some((d, c)) = next else {
            let what = if path.is_empty() { who.clone() } else { name_of(&current) };
            let given =
                if pool.is_empty() { "no chain was given".to_string() } else { format!("no certificate in {chain_files} signed it") };
            return Err(input(format!(
                "{}: the chain of {who} does not verify up to a self-signed root: {what} was issued by {}, and {given}\n  hint: give the issuing CA and every CA above it, up to the root, with --chain (PEM)",
                cert.name,
                current.issuer()
            )));
        };
        if !is_ca(c) || !can_sign_certs(c) {
            return Err(input(format!(
                "{chain_files}: {} signed {} but is not a CA that may sign certificates (basicConstraints CA:TRUE, keyUsage keyCertSign)\n  hint: give the CA certificates of the chain",
                name_of(c),
                name_of(&current)
            )));
        }
        // Its pathLenConstraint must allow the CAs below it: the signing CA and those between.
        let below = path.len() as u32 + 1;
        if let Ok(Some(bc)) = c.basic_constraints() {
            if bc.value.path_len_constraint.is_some_and(|n| n < below) {
                return Err(input(format!(
                    "{chain_files}: {} allows {} CA(s) below it (pathlen), but {below} are: the chain does not verify\n  hint: have the CA issued under a CA whose pathlen allows it, or directly under the root",
                    name_of(c),
                    bc.value.path_len_constraint.unwrap_or_default()
                )));
            }
        }
        path.push(d.clone());
        current = c.clone();
    }
    if !signed_by(&current, &current) {
        return Err(input(format!(
            "{chain_files}: the chain of {who} is longer than 16 certificates or loops\n  hint: give the chain from the CA's issuer up to its root"
        )));
    }

    let not_after = ca.validity().not_after.to_datetime();
    if not_after < leaves_end {
        return Err(input(format!(
            "{}: {who} expires at {}, before the certificates generate would issue from it end ({validity_words}: {})\n  hint: import a CA valid until at least {}, or shorten certificateValidityPeriod in the config",
            cert.name,
            crate::clock::rfc3339(not_after),
            crate::clock::rfc3339(leaves_end),
            crate::clock::rfc3339(leaves_end)
        )));
    }
    let not_before = ca.validity().not_before.to_datetime();
    Ok(CaImport {
        cert_pem: pem_encode("CERTIFICATE", &ca_der),
        cert_der: ca_der,
        key_pem,
        chain: path,
        not_before,
        not_after,
        key_from_state: from_state.is_some(),
    })
}

/// The algorithm OID of a PKCS#8 PrivateKeyInfo.
fn pkcs8_oid(der: &[u8]) -> Option<String> {
    yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            r.next().read_u8()?;
            let oid = r.next().read_sequence(|r| {
                let oid = r.next().read_oid()?;
                r.read_optional(|r| r.read_der())?;
                Ok(oid)
            })?;
            r.next().read_der()?;
            r.read_optional(|r| r.read_der())?;
            r.read_optional(|r| r.read_der())?;
            Ok(oid)
        })
    })
    .ok()
    .map(|o| o.components().iter().map(|c| c.to_string()).collect::<Vec<_>>().join("."))
}

/// The certificates of a chain file (PEM), DER, in order.
pub fn chain_ders(text: &str) -> Result<Vec<Vec<u8>>, String> {
    let blocks = pem::parse_many(text).map_err(|_| "the PEM does not parse".to_string())?;
    blocks
        .into_iter()
        .map(|b| if b.tag() == "CERTIFICATE" { Ok(b.contents().to_vec()) } else { Err(format!("unexpected PEM block {:?}", b.tag())) })
        .collect()
}
