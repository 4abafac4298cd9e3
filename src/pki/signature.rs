//! Checking that a certificate was signed by a CA's key (aws-lc-rs), for `verify` and
//! `certs check-expiration`.

use aws_lc_rs::signature::{self as s, UnparsedPublicKey, VerificationAlgorithm};

const RSA: &str = "1.2.840.113549.1.1.1";
const EC: &str = "1.2.840.10045.2.1";
const ED25519: &str = "1.3.101.112";
const P256: &str = "1.2.840.10045.3.1.7";
const P384: &str = "1.3.132.0.34";
const SHA256_RSA: &str = "1.2.840.113549.1.1.11";
const SHA384_RSA: &str = "1.2.840.113549.1.1.12";
const SHA512_RSA: &str = "1.2.840.113549.1.1.13";
const ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
const ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";

/// The signed part of a certificate: its TBS bytes, signature and signature algorithm OID.
pub struct Signed<'a> {
    pub tbs: &'a [u8],
    pub signature: &'a [u8],
    pub algorithm: &'a str,
}

/// An issuer's public key: algorithm OID, curve OID (EC keys) and the raw key bits.
pub struct IssuerKey<'a> {
    pub algorithm: &'a str,
    pub curve: Option<&'a str>,
    pub key: &'a [u8],
}

/// Does `issuer` verify `signed`? The error says why in words.
pub fn verify(signed: &Signed<'_>, issuer: &IssuerKey<'_>) -> Result<(), String> {
    let alg: &'static dyn VerificationAlgorithm = match (issuer.algorithm, issuer.curve, signed.algorithm) {
        (RSA, _, SHA256_RSA) => &s::RSA_PKCS1_2048_8192_SHA256,
        (RSA, _, SHA384_RSA) => &s::RSA_PKCS1_2048_8192_SHA384,
        (RSA, _, SHA512_RSA) => &s::RSA_PKCS1_2048_8192_SHA512,
        (EC, Some(P256), ECDSA_SHA256) => &s::ECDSA_P256_SHA256_ASN1,
        (EC, Some(P256), ECDSA_SHA384) => &s::ECDSA_P256_SHA384_ASN1,
        (EC, Some(P384), ECDSA_SHA256) => &s::ECDSA_P384_SHA256_ASN1,
        (EC, Some(P384), ECDSA_SHA384) => &s::ECDSA_P384_SHA384_ASN1,
        (ED25519, _, ED25519) => &s::ED25519,
        (key, curve, sig) => {
            let curve = curve.map(|c| format!(" ({})", oid_name(c))).unwrap_or_default();
            return Err(format!("it is signed with {} but the CA key is {}{curve}", oid_name(sig), oid_name(key)));
        }
    };
    UnparsedPublicKey::new(alg, issuer.key).verify(signed.tbs, signed.signature).map_err(|_| "the signature does not verify".into())
}

/// Readable names of the algorithm OIDs kubeadm and kubebundle use.
pub fn oid_name(oid: &str) -> &str {
    match oid {
        RSA => "RSA",
        EC => "EC",
        ED25519 => "Ed25519",
        P256 => "P-256",
        P384 => "P-384",
        SHA256_RSA => "sha256WithRSAEncryption",
        SHA384_RSA => "sha384WithRSAEncryption",
        SHA512_RSA => "sha512WithRSAEncryption",
        ECDSA_SHA256 => "ecdsa-with-SHA256",
        ECDSA_SHA384 => "ecdsa-with-SHA384",
        other => other,
    }
}
