//! The state manifest, `state/manifest.yaml`: every long-lived secret the state has ever held (the
//! CAs, the service-account key, each encryption key), by id, with SHA-256 digests and the time it
//! was recorded. Every command that loads a bundle's state checks each recorded secret against its
//! file first and refuses when one is missing, unreadable or changed (`restore` names the verified
//! copies and puts them back); a secret is created only when the state never recorded it.

use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::files::{ca_next_paths, ca_paths, StateError};

pub const MANIFEST_FILE: &str = "manifest.yaml";

const HEADER: &str = "\
# kubebundle state manifest: every long-lived secret this state has held (the CAs, the
# service-account key, each encryption key), with the SHA-256 of the secret (and of a key's public
# key) and when it was recorded. Every run checks each one against its file and refuses when one is
# missing or changed; `kubebundle state restore --dir <bundle>` puts it back from a verified copy.
# Written by kubebundle: do not edit (see the README, \"The state\").
";

/// One recorded secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Entry {
    /// `ca`, `front-proxy-ca`, `etcd-ca`, `sa` or `encryption-key/<name>`.
    pub id: String,
    /// The file that holds it, relative to the state directory.
    pub file: String,
    /// SHA-256 (hex) of the key file's bytes; of the decoded secret for an encryption key.
    pub sha256: String,
    /// SHA-256 (hex) of the public key (DER SubjectPublicKeyInfo), for the CAs and sa.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_sha256: Option<String>,
    /// RFC 3339: when the state first recorded it.
    pub recorded: String,
    /// A CA key `kubebundle ca csr` made, waiting for the certificate its CSR is signed into
    /// (`ca import`): its certificate is not missing, it is not there yet; its key file removed
    /// drops it (generate then makes a CA of its own).
    #[serde(default, skip_serializing_if = "is_false")]
    pub awaiting_certificate: bool,
    /// An external CA (external-CA mode): the state holds its certificate (`file`, whose SHA-256
    /// is `sha256`) and never its key.
    #[serde(default, skip_serializing_if = "is_false")]
    pub external: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub secrets: Vec<Entry>,
}

/// What a recorded id is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind<'a> {
    Ca(&'a str),
    Sa,
    /// The next service-account key of a rotation (`rotate sa start`), `pki/sa-next.key`.
    SaNext,
    /// The previous service-account public key of a rotation (`rotate sa switch`),
    /// `pki/sa-previous.pub`: not a secret, but tokens it signed fail without it.
    SaPrevious,
    EncryptionKey(&'a str),
    /// The new CA of a CA rotation (`rotate ca <id> start`, id `<ca>-next`): its key
    /// (`pki/ca-next.key`) and certificate (`pki/ca-next.crt`), trusted beside the CA until
    /// `switch` makes it the CA.
    CaNext(&'a str),
    /// The old CA's certificate after `rotate ca <id> switch` (id `<ca>-previous`,
    /// `pki/ca-previous.crt`): still trusted until `finish`; its key is archived.
    CaPrevious(&'a str),
}

pub const CA_IDS: [&str; 3] = ["ca", "front-proxy-ca", "etcd-ca"];

pub fn kind(id: &str) -> Option<Kind<'_>> {
    match id {
        "ca" | "front-proxy-ca" | "etcd-ca" => Some(Kind::Ca(id)),
        "sa" => Some(Kind::Sa),
        "sa-next" => Some(Kind::SaNext),
        "sa-previous" => Some(Kind::SaPrevious),
        _ => {
            if let Some(ca) = id.strip_suffix("-next").filter(|c| CA_IDS.contains(c)) {
                return Some(Kind::CaNext(ca));
            }
            if let Some(ca) = id.strip_suffix("-previous").filter(|c| CA_IDS.contains(c)) {
                return Some(Kind::CaPrevious(ca));
            }
            id.strip_prefix("encryption-key/").filter(|n| !n.is_empty()).map(Kind::EncryptionKey)
        }
    }
}

/// The manifest id of CA `ca`'s next (`next`) or previous certificate in a rotation.
pub fn ca_next_id(ca: &str) -> String {
    format!("{ca}-next")
}

pub fn ca_previous_id(ca: &str) -> String {
    format!("{ca}-previous")
}

pub const SA_KEY: &str = "pki/sa.key";
pub const SA_PUB: &str = "pki/sa.pub";
pub const SA_NEXT_KEY: &str = "pki/sa-next.key";
pub const SA_PREVIOUS_PUB: &str = "pki/sa-previous.pub";

/// The id of encryption key `name`.
pub fn encryption_id(name: &str) -> String {
    format!("encryption-key/{name}")
}

/// What the secret is, for people.
pub fn describe(id: &str) -> String {
    match kind(id) {
        Some(Kind::Ca("ca")) => "the cluster CA (ca)".into(),
        Some(Kind::Ca("front-proxy-ca")) => "the front-proxy CA (front-proxy-ca)".into(),
        Some(Kind::Ca(_)) => "the etcd CA (etcd-ca)".into(),
        Some(Kind::Sa) => "the service-account signing key (sa)".into(),
        Some(Kind::SaNext) => "the next service-account key of the rotation in progress (sa-next)".into(),
        Some(Kind::SaPrevious) => "the previous service-account public key of the rotation in progress (sa-previous)".into(),
        Some(Kind::EncryptionKey("*")) => "the encryption keys".into(),
        Some(Kind::EncryptionKey(n)) => format!("encryption key {n}"),
        Some(Kind::CaNext(ca)) => format!("the new {ca} of the CA rotation in progress ({id})"),
        Some(Kind::CaPrevious(ca)) => format!("the old {ca} certificate of the CA rotation in progress ({id})"),
        None => id.to_string(),
    }
}

/// What stops working when the secret is replaced by another.
pub fn depends(id: &str) -> String {
    match kind(id) {
        Some(Kind::Ca("ca")) => "every node's certificates and kubeconfigs (and join discovery) stop being trusted".into(),
        Some(Kind::Ca("front-proxy-ca")) => {
            "the API servers' front-proxy client certificates (and every aggregated API) stop being trusted".into()
        }
        Some(Kind::Ca(_)) => "every etcd member's and API server's etcd certificates stop being trusted".into(),
        Some(Kind::Sa) => "every service-account token becomes invalid".into(),
        Some(Kind::SaNext) => "the rotation cannot switch to it, and tokens it signed become invalid".into(),
        Some(Kind::SaPrevious) => "tokens signed before `rotate sa switch` become invalid before `rotate sa finish`".into(),
        Some(Kind::EncryptionKey("*")) => "every Secret the API servers encrypted becomes unreadable".into(),
        Some(Kind::EncryptionKey(n)) => format!("every Secret the API servers encrypted with {n} becomes unreadable"),
        Some(Kind::CaNext(ca)) => {
            format!("the rotation of {ca} cannot switch to it, and every file that trusts it must be rolled out again")
        }
        Some(Kind::CaPrevious(ca)) => {
            format!("certificates the old {ca} signed stop being trusted before `rotate ca {ca} finish` rolled out")
        }
        None => String::new(),
    }
}

/// An io error in plain words.
pub fn io_words(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::IsADirectory => "it is a directory".into(),
        _ => e.to_string(),
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of an encryption key's secret (base64 of 32 bytes), or None.
pub fn decode_secret(secret: &str) -> Option<zeroize::Zeroizing<Vec<u8>>> {
    B64.decode(secret).ok().filter(|b| b.len() == 32).map(zeroize::Zeroizing::new)
}

impl Manifest {
    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.secrets.iter().find(|e| e.id == id)
    }

    /// Records `entry` unless its id is recorded already (the first record stays).
    pub fn record(&mut self, entry: Entry) {
        if self.get(&entry.id).is_none() {
            self.secrets.push(entry);
            self.secrets.sort_by(|a, b| a.id.cmp(&b.id));
        }
    }

    /// The file's text: the header, then the entries sorted by id.
    pub fn text(&self) -> String {
        let mut m = self.clone();
        m.secrets.sort_by(|a, b| a.id.cmp(&b.id));
        let body = serde_saphyr::to_string(&m).unwrap_or_default();
        format!("{HEADER}{body}")
    }
}

/// The state's manifest, None when it has none.
pub fn read(state_dir: &Path) -> Result<Option<Manifest>, StateError> {
    let path = state_dir.join(MANIFEST_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable_manifest(&path, &io_words(&e))),
    };
    let text = String::from_utf8(bytes).map_err(|_| unreadable_manifest(&path, "it is not UTF-8 text"))?;
    let m: Manifest = serde_saphyr::from_str(&text)
        .map_err(|e| unreadable_manifest(&path, e.to_string().lines().next().unwrap_or("it does not parse")))?;
    for e in &m.secrets {
        if kind(&e.id).is_none() {
            return Err(unreadable_manifest(&path, &format!("unknown secret id {:?}", e.id)));
        }
    }
    Ok(Some(m))
}

fn unreadable_manifest(path: &Path, why: &str) -> StateError {
    StateError::Bad {
        path: path.display().to_string(),
        message: format!("the state manifest cannot be read: {why}"),
        hint: "restore it from a backup (kubebundle-backup-*/state/manifest.yaml); or delete it: a complete state is then \
               accepted as it is and recorded again, an incomplete one is refused"
            .into(),
    }
}

/// Which part of a recorded secret is at fault, and so what a restore writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The private key file (a CA's or sa.key).
    Key,
    /// A CA's certificate.
    Cert,
    /// One key of encryption.yaml.
    EncryptionKey,
    /// sa.pub, which is derived from sa.key (never copied).
    PublicKey,
}

/// A recorded secret that is missing, unreadable or changed.
#[derive(Clone, Debug)]
pub struct Problem {
    pub id: String,
    /// The file at fault, relative to the state directory.
    pub file: String,
    pub part: Part,
    /// What is wrong ("is missing", "changed: ...").
    pub what: String,
    /// Whether the file exists (a restore keeps it in a backup before replacing it).
    pub present: bool,
}

/// The outcome of checking a state against its manifest.
#[derive(Default)]
pub struct Checked {
    pub problems: Vec<Problem>,
    /// sa.pub is missing while sa.key is fine: rewriting it from the key is safe.
    pub sa_pub_missing: bool,
}

enum Read {
    Missing,
    Unreadable(String),
    Bytes(zeroize::Zeroizing<Vec<u8>>),
}

fn read_file(dir: &Path, rel: &str) -> Read {
    match std::fs::read(dir.join(rel)) {
        Ok(b) => Read::Bytes(zeroize::Zeroizing::new(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Read::Missing,
        Err(e) => Read::Unreadable(io_words(&e)),
    }
}

/// The SubjectPublicKeyInfo (DER) of the first certificate in `pem`, when it parses and is a CA.
pub fn ca_cert_spki(pem_bytes: &[u8]) -> Result<(Vec<u8>, i64), String> {
    let text = std::str::from_utf8(pem_bytes).map_err(|_| "it is not PEM text".to_string())?;
    let block = pem::parse_many(text)
        .map_err(|_| "it is not PEM".to_string())?
        .into_iter()
        .find(|b| b.tag() == "CERTIFICATE")
        .ok_or_else(|| "it holds no CERTIFICATE".to_string())?;
    let (_, x) = x509_parser::parse_x509_certificate(block.contents()).map_err(|_| "its certificate does not parse".to_string())?;
    if !x.is_ca() {
        return Err("its certificate is not a CA (BasicConstraints CA:FALSE)".into());
    }
    Ok((x.public_key().raw.to_vec(), x.validity().not_after.timestamp()))
}

/// The public key (DER SubjectPublicKeyInfo) in a `PUBLIC KEY` PEM file.
pub fn public_key_der(pem_bytes: &[u8]) -> Option<Vec<u8>> {
    let block = pem::parse(std::str::from_utf8(pem_bytes).ok()?).ok()?;
    (block.tag() == "PUBLIC KEY").then(|| block.contents().to_vec())
}

/// Encryption keys (name, secret), in order; the secrets are wiped when dropped.
pub type NamedKeys = Vec<(String, zeroize::Zeroizing<String>)>;

/// The keys of the state's encryption.yaml (name, secret), in order.
pub fn encryption_keys(text: &str) -> Result<NamedKeys, String> {
    super::files::parse_encryption(text)
        .map(|keys| keys.iter().map(|k| (k.name.clone(), zeroize::Zeroizing::new(k.secret.clone()))).collect())
        .map_err(|e| e.lines().next().unwrap_or_default().to_string())
}

/// Checks every recorded secret against the state's files: a key file must have the recorded
/// digest; a CA certificate must parse, be a CA and hold the recorded public key (it may be
/// re-issued from the same key by `certs renew ca`); sa.pub must be the public key of sa.key; each
/// encryption key must be in encryption.yaml with the recorded secret.
pub fn check(state_dir: &Path, m: &Manifest) -> Checked {
    let mut out = Checked::default();
    let mut problem = |id: &str, file: &str, part: Part, what: String, present: bool| {
        out.problems.push(Problem { id: id.to_string(), file: file.to_string(), part, what, present })
    };
    // encryption.yaml's keys, or what is wrong with it (and whether it exists), read once.
    type Keys = Result<NamedKeys, (String, bool)>;
    let mut encryption: Option<Keys> = None;
    let mut sa_pub_missing = false;
    for e in &m.secrets {
        match kind(&e.id) {
            Some(Kind::SaPrevious) => match read_file(state_dir, &e.file) {
                Read::Missing => problem(&e.id, &e.file, Part::PublicKey, "is missing".into(), false),
                Read::Unreadable(why) => problem(&e.id, &e.file, Part::PublicKey, format!("cannot be read ({why})"), true),
                Read::Bytes(b) => {
                    if public_key_der(&b).map(|d| sha256_hex(&d)).as_ref() != Some(&e.sha256) {
                        problem(&e.id, &e.file, Part::PublicKey, "changed: it is not the public key the state recorded".into(), true);
                    }
                }
            },
            Some(Kind::CaPrevious(_)) => match read_file(state_dir, &e.file) {
                Read::Missing => problem(&e.id, &e.file, Part::PublicKey, "is missing".into(), false),
                Read::Unreadable(why) => problem(&e.id, &e.file, Part::PublicKey, format!("cannot be read ({why})"), true),
                Read::Bytes(b) => {
                    if ca_cert_spki(&b).map(|(d, _)| sha256_hex(&d)).as_ref() != Ok(&e.sha256) {
                        problem(&e.id, &e.file, Part::PublicKey, "changed: it is not the CA certificate the state recorded".into(), true);
                    }
                }
            },
            Some(Kind::Ca(_)) | Some(Kind::Sa) | Some(Kind::SaNext) | Some(Kind::CaNext(_)) => {
                let key_ok = match read_file(state_dir, &e.file) {
                    // A pending CA key (ca csr) removed: dropped, nothing depended on it.
                    Read::Missing if e.awaiting_certificate => continue,
                    Read::Missing => {
                        problem(&e.id, &e.file, Part::Key, "is missing".into(), false);
                        false
                    }
                    Read::Unreadable(why) => {
                        problem(&e.id, &e.file, Part::Key, format!("cannot be read ({why})"), true);
                        false
                    }
                    Read::Bytes(b) if sha256_hex(&b) != e.sha256 => {
                        problem(&e.id, &e.file, Part::Key, "changed: it is not the key the state recorded".into(), true);
                        false
                    }
                    Read::Bytes(_) => true,
                };
                let Some(spki) = &e.public_key_sha256 else { continue };
                let ca_crt = match kind(&e.id) {
                    Some(Kind::Ca(id)) => Some(ca_paths(id).0),
                    Some(Kind::CaNext(id)) => Some(ca_next_paths(id).0),
                    _ => None,
                };
                if let Some(crt) = ca_crt {
                    match read_file(state_dir, &crt) {
                        Read::Missing if e.awaiting_certificate => {}
                        Read::Missing => problem(&e.id, &crt, Part::Cert, "is missing".into(), false),
                        Read::Unreadable(why) => problem(&e.id, &crt, Part::Cert, format!("cannot be read ({why})"), true),
                        Read::Bytes(b) => match ca_cert_spki(&b) {
                            Err(why) => problem(&e.id, &crt, Part::Cert, format!("does not parse: {why}"), true),
                            Ok((der, _)) if &sha256_hex(&der) != spki => problem(
                                &e.id,
                                &crt,
                                Part::Cert,
                                "changed: it is a certificate for another key than the recorded CA key".into(),
                                true,
                            ),
                            Ok(_) => {}
                        },
                    }
                } else if key_ok && kind(&e.id) == Some(Kind::Sa) {
                    match read_file(state_dir, SA_PUB) {
                        Read::Missing => sa_pub_missing = true,
                        Read::Unreadable(why) => problem(&e.id, SA_PUB, Part::PublicKey, format!("cannot be read ({why})"), true),
                        Read::Bytes(b) => {
                            if public_key_der(&b).map(|d| sha256_hex(&d)).as_ref() != Some(spki) {
                                problem(&e.id, SA_PUB, Part::PublicKey, "is not the public key of sa.key".into(), true);
                            }
                        }
                    }
                }
            }
            Some(Kind::EncryptionKey(name)) => {
                let keys = encryption.get_or_insert_with(|| match read_file(state_dir, &e.file) {
                    Read::Missing => Err(("is missing".into(), false)),
                    Read::Unreadable(why) => Err((format!("cannot be read ({why})"), true)),
                    Read::Bytes(b) => std::str::from_utf8(&b)
                        .map_err(|_| ("does not parse: it is not UTF-8 text".to_string(), true))
                        .and_then(|t| encryption_keys(t).map_err(|why| (format!("does not parse: {why}"), true))),
                });
                let what = match keys {
                    Err((why, present)) => Some((why.clone(), *present)),
                    Ok(list) => match list.iter().find(|(n, _)| n == name) {
                        None => Some((format!("has no key {name}"), true)),
                        Some((_, s)) if decode_secret(s).map(|b| sha256_hex(&b)).as_ref() != Some(&e.sha256) => {
                            Some((format!("changed: its key {name} is not the recorded one"), true))
                        }
                        Some(_) => None,
                    },
                };
                if let Some((what, present)) = what {
                    problem(&e.id, &e.file, Part::EncryptionKey, what, present);
                }
            }
            None => {}
        }
    }
    out.sa_pub_missing = sa_pub_missing;
    out
}

/// The manifest entry of a CA or sa key file.
pub fn key_entry(id: &str, file: &str, key_bytes: &[u8], spki_der: &[u8], recorded: &str) -> Entry {
    Entry {
        id: id.to_string(),
        file: file.to_string(),
        sha256: sha256_hex(key_bytes),
        public_key_sha256: Some(sha256_hex(spki_der)),
        recorded: recorded.to_string(),
        awaiting_certificate: false,
        external: false,
    }
}

/// The manifest entry of a public key the state keeps (`sa-previous`): the SHA-256 of its DER.
pub fn public_entry(id: &str, file: &str, spki_der: &[u8], recorded: &str) -> Entry {
    Entry {
        id: id.to_string(),
        file: file.to_string(),
        sha256: sha256_hex(spki_der),
        public_key_sha256: None,
        recorded: recorded.to_string(),
        awaiting_certificate: false,
        external: false,
    }
}

/// The manifest entry of an external CA: its certificate file (the state holds no key for it).
pub fn external_entry(id: &str, crt_file: &str, cert_bytes: &[u8], spki_der: &[u8], recorded: &str) -> Entry {
    Entry { external: true, ..key_entry(id, crt_file, cert_bytes, spki_der, recorded) }
}

/// The manifest entry of encryption key `name` (its secret is base64 of 32 bytes).
pub fn encryption_entry(name: &str, secret: &str, recorded: &str) -> Entry {
    Entry {
        id: encryption_id(name),
        file: super::files::ENCRYPTION_FILE.to_string(),
        sha256: decode_secret(secret).map(|b| sha256_hex(&b)).unwrap_or_default(),
        public_key_sha256: None,
        recorded: recorded.to_string(),
        awaiting_certificate: false,
        external: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_round_trips_with_its_header_and_sorted_entries() {
        let mut m = Manifest::default();
        m.record(encryption_entry("key1", &B64.encode([7u8; 32]), "2026-01-01T00:00:00Z"));
        m.record(key_entry("ca", "pki/ca.key", b"key", b"spki", "2026-01-01T00:00:00Z"));
        // A second record of the same id keeps the first.
        m.record(key_entry("ca", "pki/ca.key", b"other", b"spki", "2027-01-01T00:00:00Z"));
        let text = m.text();
        assert!(text.starts_with("# kubebundle state manifest"), "{text}");
        let back: Manifest = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.secrets.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["ca", "encryption-key/key1"]);
        assert_eq!(back.get("ca").unwrap().sha256, sha256_hex(b"key"));
        assert_eq!(kind("encryption-key/key1"), Some(Kind::EncryptionKey("key1")));
        assert_eq!(kind("encryption-key/"), None);
    }
}
