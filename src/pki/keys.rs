//! Private keys: generation with aws-lc-rs, and PEM files in kubeadm's formats
//! (RSA: PKCS#1 "RSA PRIVATE KEY"; EC: SEC1 "EC PRIVATE KEY"; public keys: PKIX "PUBLIC KEY").

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING};
use rcgen::{KeyPair, PublicKeyData, SignatureAlgorithm, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_RSA_SHA256};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};
use zeroize::Zeroizing;

/// The key algorithms kubeadm's `encryptionAlgorithm` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum KeyAlgorithm {
    #[serde(rename = "RSA-2048")]
    Rsa2048,
    #[serde(rename = "RSA-3072")]
    Rsa3072,
    #[serde(rename = "RSA-4096")]
    Rsa4096,
    #[serde(rename = "ECDSA-P256")]
    EcdsaP256,
    #[serde(rename = "ECDSA-P384")]
    EcdsaP384,
}

impl KeyAlgorithm {
    pub const ALL: [(&'static str, KeyAlgorithm); 5] = [
        ("RSA-2048", KeyAlgorithm::Rsa2048),
        ("RSA-3072", KeyAlgorithm::Rsa3072),
        ("RSA-4096", KeyAlgorithm::Rsa4096),
        ("ECDSA-P256", KeyAlgorithm::EcdsaP256),
        ("ECDSA-P384", KeyAlgorithm::EcdsaP384),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, a)| *a == self).map(|(n, _)| *n).unwrap_or("?")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key generation failed for {0}")]
    Generate(&'static str),
    #[error("{0}")]
    Parse(String),
}

/// A private key with its PEM file content.
pub struct Key {
    pub pair: KeyPair,
    pem: Zeroizing<String>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key([secret elided])")
    }
}

/// Which of kubebundle's algorithms a public key is (RSA by modulus size, ECDSA by curve).
pub fn algorithm_of(key: &x509_parser::public_key::PublicKey<'_>) -> Option<KeyAlgorithm> {
    match key {
        x509_parser::public_key::PublicKey::RSA(r) => match r.key_size() {
            2048 => Some(KeyAlgorithm::Rsa2048),
            3072 => Some(KeyAlgorithm::Rsa3072),
            4096 => Some(KeyAlgorithm::Rsa4096),
            _ => None,
        },
        x509_parser::public_key::PublicKey::EC(ec) => match ec.key_size() {
            256 => Some(KeyAlgorithm::EcdsaP256),
            384 => Some(KeyAlgorithm::EcdsaP384),
            _ => None,
        },
        _ => None,
    }
}

/// The public half of a private key as its own fields give it: PKCS#1's modulus and exponent
/// (as an RSAPublicKey), or the public point an EC key (SEC1) carries, with its curve when named.
#[derive(Debug, PartialEq, Eq)]
pub enum PublicHalf {
    Rsa(Vec<u8>),
    Ec { curve: Option<Vec<u64>>, point: Vec<u8> },
}

const RSA_ENCRYPTION: [u64; 7] = [1, 2, 840, 113549, 1, 1, 1];
const EC_PUBLIC_KEY: [u64; 6] = [1, 2, 840, 10045, 2, 1];

fn pkcs1_public(der: &[u8]) -> Option<PublicHalf> {
    let (n, e) = yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            r.next().read_u8()?;
            let n = r.next().read_der()?;
            let e = r.next().read_der()?;
            for _ in 0..6 {
                r.next().read_der()?;
            }
            Ok((n, e))
        })
    })
    .ok()?;
    Some(PublicHalf::Rsa(yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_der(&n);
            w.next().write_der(&e);
        })
    })))
}

fn sec1_public(der: &[u8]) -> Option<Option<PublicHalf>> {
    yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            r.next().read_u8()?;
            r.next().read_bytes()?;
            let curve = r.read_optional(|r| r.read_tagged(yasna::Tag::context(0), |r| r.read_oid()))?;
            let point = r.read_optional(|r| r.read_tagged(yasna::Tag::context(1), |r| r.read_bitvec_bytes()))?;
            Ok(point.map(|(point, _)| PublicHalf::Ec { curve: curve.map(|c| c.components().clone()), point }))
        })
    })
    .ok()
}

/// The public half of a PEM private key (PKCS#1, SEC1 or PKCS#8) read from the key's own fields,
/// without loading the key, so thousands of recorded keys are checked against their
/// certificates in microseconds. `Ok(None)` when the key does not carry it (an EC key without its
/// optional public key); an error when the key does not parse.
pub fn public_half(text: &str) -> Result<Option<PublicHalf>, String> {
    let parsed = pem::parse(text).map_err(|_| "it is not a PEM private key".to_string())?;
    let der = parsed.contents();
    let half = match parsed.tag() {
        "RSA PRIVATE KEY" => pkcs1_public(der).map(Some),
        "EC PRIVATE KEY" => sec1_public(der),
        "PRIVATE KEY" => {
            let (alg, params, inner) = yasna::parse_der(der, |r| {
                r.read_sequence(|r| {
                    r.next().read_u8()?;
                    let (alg, params) = r.next().read_sequence(|r| {
                        let alg = r.next().read_oid()?;
                        let params = r.read_optional(|r| r.read_der())?.and_then(|d| yasna::parse_der(&d, |r| r.read_oid()).ok());
                        Ok((alg, params))
                    })?;
                    let inner = r.next().read_bytes()?;
                    r.read_optional(|r| r.read_der())?;
                    r.read_optional(|r| r.read_der())?;
                    Ok((alg, params, inner))
                })
            })
            .map_err(|_| "its PKCS#8 structure does not parse".to_string())?;
            if alg.components().as_slice() == RSA_ENCRYPTION {
                pkcs1_public(&inner).map(Some)
            } else if alg.components().as_slice() == EC_PUBLIC_KEY {
                sec1_public(&inner).map(|h| match h {
                    Some(PublicHalf::Ec { curve: None, point }) => {
                        Some(PublicHalf::Ec { curve: params.as_ref().map(|p| p.components().clone()), point })
                    }
                    other => other,
                })
            } else {
                None
            }
        }
        other => return Err(format!("unexpected PEM block {other:?}")),
    };
    half.ok_or_else(|| "its key structure does not parse".to_string())
}

/// Whether `half` is the public key of a certificate (its SubjectPublicKeyInfo).
pub fn half_matches(half: &PublicHalf, spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> bool {
    let alg: Option<Vec<u64>> = spki.algorithm.algorithm.iter().map(|i| i.collect());
    match half {
        PublicHalf::Rsa(der) => alg.as_deref() == Some(&RSA_ENCRYPTION[..]) && spki.subject_public_key.data.as_ref() == der.as_slice(),
        PublicHalf::Ec { curve, point } => {
            let param: Option<Vec<u64>> =
                spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).and_then(|o| o.iter().map(|i| i.collect()));
            alg.as_deref() == Some(&EC_PUBLIC_KEY[..])
                && curve.as_ref().is_none_or(|c| param.as_ref() == Some(c))
                && spki.subject_public_key.data.as_ref() == point.as_slice()
        }
    }
}

pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(label, der), config)
}

/// The PKCS#1 RSAPrivateKey inside a PKCS#8 PrivateKeyInfo.
fn pkcs8_inner(pkcs8: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let inner = yasna::parse_der(pkcs8, |r| {
        r.read_sequence(|r| {
            r.next().read_u8()?;
            r.next().read_der()?; // AlgorithmIdentifier
            r.next().read_bytes()
        })
    })
    .map_err(|e| KeyError::Parse(format!("malformed PKCS#8 key: {e}")))?;
    Ok(Zeroizing::new(inner))
}

impl Key {
    pub fn generate(alg: KeyAlgorithm) -> Result<Key, KeyError> {
        let fail = || KeyError::Generate(alg.name());
        match alg {
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
                let size = match alg {
                    KeyAlgorithm::Rsa2048 => KeySize::Rsa2048,
                    KeyAlgorithm::Rsa3072 => KeySize::Rsa3072,
                    _ => KeySize::Rsa4096,
                };
                let kp = aws_lc_rs::rsa::KeyPair::generate(size).map_err(|_| fail())?;
                let pkcs8 = Zeroizing::new(kp.as_der().map_err(|_| fail())?.as_ref().to_vec());
                let pkcs1 = pkcs8_inner(&pkcs8)?;
                Key::from_der(PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(pkcs1.as_slice())), &PKCS_RSA_SHA256, "RSA PRIVATE KEY")
            }
            KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => {
                let (sign, rc) = if alg == KeyAlgorithm::EcdsaP256 {
                    (&ECDSA_P256_SHA256_ASN1_SIGNING, &PKCS_ECDSA_P256_SHA256)
                } else {
                    (&ECDSA_P384_SHA384_ASN1_SIGNING, &PKCS_ECDSA_P384_SHA384)
                };
                let kp = EcdsaKeyPair::generate(sign).map_err(|_| fail())?;
                let sec1 = Zeroizing::new(kp.private_key().as_der().map_err(|_| fail())?.as_ref().to_vec());
                Key::from_der(PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(sec1.as_slice())), rc, "EC PRIVATE KEY")
            }
        }
    }

    fn from_der(der: PrivateKeyDer<'_>, alg: &'static SignatureAlgorithm, label: &str) -> Result<Key, KeyError> {
        let pem = Zeroizing::new(pem_encode(label, der.secret_der()));
        let pair = KeyPair::from_der_and_sign_algo(&der, alg).map_err(|e| KeyError::Parse(format!("unusable key: {e}")))?;
        Ok(Key { pair, pem })
    }

    /// Reads a PEM private key (PKCS#1, SEC1 or PKCS#8), keeping the file's bytes as they are.
    pub fn from_pem(text: &str) -> Result<Key, KeyError> {
        let parsed = pem::parse(text).map_err(|e| KeyError::Parse(format!("not a PEM private key: {e}")))?;
        let der = parsed.contents();
        let pair = match parsed.tag() {
            "RSA PRIVATE KEY" => {
                KeyPair::from_der_and_sign_algo(&PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der)), &PKCS_RSA_SHA256).ok()
            }
            "EC PRIVATE KEY" => [&PKCS_ECDSA_P256_SHA256, &PKCS_ECDSA_P384_SHA384]
                .into_iter()
                .find_map(|alg| KeyPair::from_der_and_sign_algo(&PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(der)), alg).ok()),
            "PRIVATE KEY" => [&PKCS_RSA_SHA256, &PKCS_ECDSA_P256_SHA256, &PKCS_ECDSA_P384_SHA384]
                .into_iter()
                .find_map(|alg| KeyPair::from_der_and_sign_algo(&PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)), alg).ok()),
            other => return Err(KeyError::Parse(format!("unexpected PEM block {other:?}; expected a private key"))),
        };
        let pair =
            pair.ok_or_else(|| KeyError::Parse("unsupported private key: kubebundle reads RSA and ECDSA P-256/P-384 keys".into()))?;
        Ok(Key { pair, pem: Zeroizing::new(text.to_string()) })
    }

    pub fn private_pem(&self) -> &str {
        &self.pem
    }

    /// DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> Vec<u8> {
        self.pair.subject_public_key_info()
    }

    /// The key's algorithm (RSA by modulus size, ECDSA by curve).
    pub fn algorithm(&self) -> Option<KeyAlgorithm> {
        use x509_parser::prelude::FromDer;
        let spki = self.spki_der();
        let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki).ok()?;
        algorithm_of(&info.parsed().ok()?)
    }

    pub fn public_pem(&self) -> String {
        pem_encode("PUBLIC KEY", &self.spki_der())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_labels_and_round_trip() {
        for (alg, label) in [
            (KeyAlgorithm::EcdsaP256, "EC PRIVATE KEY"),
            (KeyAlgorithm::EcdsaP384, "EC PRIVATE KEY"),
            (KeyAlgorithm::Rsa2048, "RSA PRIVATE KEY"),
        ] {
            let k = Key::generate(alg).unwrap();
            assert!(k.private_pem().starts_with(&format!("-----BEGIN {label}-----\n")), "{alg:?}");
            let again = Key::from_pem(k.private_pem()).unwrap();
            assert_eq!(again.spki_der(), k.spki_der());
            assert!(k.public_pem().starts_with("-----BEGIN PUBLIC KEY-----\n"));
        }
    }

    #[test]
    fn the_public_half_read_from_the_key_matches_its_own_spki_and_no_other() {
        use x509_parser::prelude::FromDer;
        for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::EcdsaP384, KeyAlgorithm::Rsa2048] {
            let (a, b) = (Key::generate(alg).unwrap(), Key::generate(alg).unwrap());
            let half = public_half(a.private_pem()).unwrap().expect("kubebundle's keys carry their public half");
            let (own, other) = (a.spki_der(), b.spki_der());
            let spki = |der: &[u8]| x509_parser::x509::SubjectPublicKeyInfo::from_der(der).unwrap().1.subject_public_key.data.to_vec();
            let parse = |der: &[u8]| half_matches(&half, &x509_parser::x509::SubjectPublicKeyInfo::from_der(der).unwrap().1);
            assert!(parse(&own), "{alg:?}");
            assert!(!parse(&other), "{alg:?}");
            assert_ne!(spki(&own), spki(&other));
        }
        // PKCS#8 keys, as aws-lc writes them.
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let ec = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let rsa = aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048).unwrap().as_der().unwrap().as_ref().to_vec();
        for der in [ec.as_ref().to_vec(), rsa] {
            let pem = pem_encode("PRIVATE KEY", &der);
            let spki = Key::from_pem(&pem).unwrap().spki_der();
            let half = public_half(&pem).unwrap().expect("PKCS#8 keys carry their public half");
            assert!(half_matches(&half, &x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki).unwrap().1));
        }
        assert!(public_half("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n").is_err());
        assert!(public_half("not a key").is_err());
    }
}
