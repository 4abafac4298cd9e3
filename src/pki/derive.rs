//! Deterministic generation: every secret of a bundle derived from one 32-byte master seed.
//!
//! Each artifact has a label ("key/ca", "key/cp1/apiserver", "token/0", "encryption/key1", ...).
//! [`Seed::derive`] turns (seed, label) into 32 bytes with HMAC-SHA256, and [`Seed::rng`] seeds a
//! ChaCha20 stream from them; [`key_from_rng`], [`token_from_rng`] and [`bytes_from_rng`] turn that
//! stream into a key, a bootstrap token or raw key material. The same seed and label always give
//! the same bytes, and labels are independent of one another (the order in which artifacts are
//! generated does not matter).
//!
//! Keys come out in kubeadm's file formats (RSA: PKCS#1 "RSA PRIVATE KEY"; EC: SEC1 "EC PRIVATE KEY").
//!
//! Certificates signed with ECDSA also need a deterministic nonce to be reproducible: aws-lc (what
//! `rcgen::KeyPair` signs with) draws a random one. [`Rfc6979Signer`] signs with RFC 6979 nonces
//! instead, through the RustCrypto `ecdsa` crate (`p256`/`p384`'s `ecdsa::SigningKey`: kubebundle
//! does no nonce, point or scalar arithmetic of its own), and plugs into rcgen wherever a `KeyPair`
//! would (`self_signed`, `Issuer::new`, `Issuer::from_ca_cert_der`). [`DeterministicSigner`] picks
//! it for EC keys and keeps the key's own `KeyPair` for RSA keys, whose PKCS#1 v1.5 signatures are
//! already deterministic.
//!
//! The derivations depend on the exact algorithms of `rsa` 0.9 (prime search), `p256`/`p384` 0.13
//! (scalar sampling, and `ecdsa` 0.16's RFC 6979 signing) and `rand_chacha` 0.3; the known-answer
//! tests below fail if an upgrade changes what a seed produces or how a key signs.

use std::path::Path;

use aws_lc_rs::hmac;
use p256::pkcs8::DecodePrivateKey;
use rand_chacha::rand_core::{CryptoRng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rcgen::{KeyPair, PublicKeyData, SignatureAlgorithm, SigningKey, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384};
use rsa::pkcs1::EncodeRsaPrivateKey;
use zeroize::{Zeroize, Zeroizing};

use super::keys::KeyAlgorithm;
use super::keys::{pem_encode, Key, KeyError};

/// Prefix of every HMAC message, so a seed used by a later scheme (v2) never yields the same bytes.
const DOMAIN: &str = "kubebundle/v1/";

const TOKEN_ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// The 32-byte master secret. Wiped from memory when dropped; `Debug` never shows it.
pub struct Seed([u8; 32]);

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seed([secret elided])")
    }
}

impl Drop for Seed {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl Seed {
    /// A seed from its 32 bytes (e.g. for tests, or a seed held by another secret store).
    pub fn from_bytes(bytes: [u8; 32]) -> Seed {
        Seed(bytes)
    }

    /// Reads a seed file: exactly 32 raw bytes, or 64 hexadecimal characters (either case)
    /// optionally followed by one newline. The error says what was found, never the content.
    ///
    /// 32 bytes that are all hexadecimal digits are refused: that is a 16-byte seed written as hex
    /// (`openssl rand -hex 16`), not 32 random bytes, which are all hex digits with probability 2^-113.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Seed, String> {
        let path = path.as_ref();
        let data = Zeroizing::new(
            std::fs::read(path).map_err(|e| format!("cannot read the seed file {}: {}", path.display(), crate::util::io_words(&e)))?,
        );
        Seed::parse(&data).map_err(|found| {
            format!(
                "{}: {found}; expected a seed of exactly 32 raw bytes, or 64 hexadecimal characters optionally followed by one newline \
                 (e.g. `head -c 32 /dev/urandom > seed` or `openssl rand -hex 32 > seed`)",
                path.display()
            )
        })
    }

    /// The file content as a seed, or a description of what it holds instead.
    fn parse(data: &[u8]) -> Result<Seed, String> {
        if data.len() == 32 && data.iter().all(|b| b.is_ascii_hexdigit()) {
            return Err("found 32 hexadecimal characters, i.e. a 16-byte seed".into());
        }
        if data.len() == 32 {
            let mut b = [0u8; 32];
            b.copy_from_slice(data);
            return Ok(Seed(b));
        }
        let text = data.strip_suffix(b"\n").unwrap_or(data);
        if text.len() != 64 {
            let what = if data.is_empty() {
                "the file is empty".to_string()
            } else if text.iter().all(|b| b.is_ascii_hexdigit()) {
                format!("found {} hexadecimal characters", text.len())
            } else if text.ends_with(b"\r") || text.ends_with(b"\n") {
                format!("found {} bytes ending with more than one newline or a CR", data.len())
            } else {
                format!("found {} bytes", data.len())
            };
            return Err(what);
        }
        let mut b = Zeroizing::new([0u8; 32]);
        for (i, pair) in text.chunks(2).enumerate() {
            let nibble = |pos: usize| {
                let c = text[pos];
                (c as char).to_digit(16).map(|d| d as u8).ok_or_else(|| match c {
                    b'\r' | b'\n' => format!("found 64 characters with a line break at position {} (a seed is one line)", pos + 1),
                    c if c.is_ascii_graphic() || c == b' ' => {
                        format!("found 64 characters, but {:?} at position {} is not hexadecimal", c as char, pos + 1)
                    }
                    _ => format!("found 64 bytes that are not hexadecimal text (byte {} is 0x{c:02x})", pos + 1),
                })
            };
            debug_assert_eq!(pair.len(), 2);
            b[i] = (nibble(2 * i)? << 4) | nibble(2 * i + 1)?;
        }
        Ok(Seed(*b))
    }

    /// HMAC-SHA256(key = seed, message = "kubebundle/v1/" + label).
    pub fn derive(&self, label: &str) -> [u8; 32] {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0);
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(DOMAIN.as_bytes());
        ctx.update(label.as_bytes());
        let tag = ctx.sign();
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// A ChaCha20 stream seeded with [`derive`](Self::derive)`(label)`.
    pub fn rng(&self, label: &str) -> ChaCha20Rng {
        let mut seed = Zeroizing::new(self.derive(label));
        ChaCha20Rng::from_seed(std::mem::take(&mut *seed))
    }
}

/// A private key drawn from `rng`, in kubeadm's PEM format: RSA as PKCS#1 "RSA PRIVATE KEY"
/// (public exponent 65537), ECDSA as SEC1 "EC PRIVATE KEY" (with the curve OID and public key,
/// like Go's `x509.MarshalECPrivateKey`). The same RNG state always gives the same key.
pub fn key_from_rng(alg: KeyAlgorithm, rng: &mut (impl CryptoRng + RngCore)) -> Result<Key, KeyError> {
    let fail = || KeyError::Generate(alg.name());
    let pem = match alg {
        KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
            let bits = match alg {
                KeyAlgorithm::Rsa2048 => 2048,
                KeyAlgorithm::Rsa3072 => 3072,
                _ => 4096,
            };
            let key = rsa::RsaPrivateKey::new(rng, bits).map_err(|_| fail())?;
            let der = key.to_pkcs1_der().map_err(|_| fail())?;
            Zeroizing::new(pem_encode("RSA PRIVATE KEY", der.as_bytes()))
        }
        KeyAlgorithm::EcdsaP256 => {
            let secret = p256::SecretKey::random(rng);
            let public = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&secret.public_key(), false);
            let mut scalar = secret.to_bytes();
            let der = sec1_der(OID_P256, &scalar, public.as_bytes());
            scalar.as_mut_slice().zeroize();
            Zeroizing::new(pem_encode("EC PRIVATE KEY", &der))
        }
        KeyAlgorithm::EcdsaP384 => {
            let secret = p384::SecretKey::random(rng);
            let public = p384::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&secret.public_key(), false);
            let mut scalar = secret.to_bytes();
            let der = sec1_der(OID_P384, &scalar, public.as_bytes());
            scalar.as_mut_slice().zeroize();
            Zeroizing::new(pem_encode("EC PRIVATE KEY", &der))
        }
    };
    Key::from_pem(&pem)
}

/// prime256v1 / secp256r1.
const OID_P256: &[u64] = &[1, 2, 840, 10045, 3, 1, 7];
/// secp384r1.
const OID_P384: &[u64] = &[1, 3, 132, 0, 34];

/// A SEC1 ECPrivateKey as Go's `x509.MarshalECPrivateKey` (so kubeadm) writes it: version 1, the
/// scalar padded to the curve size, the named curve in `[0]` and the uncompressed public point in
/// `[1]`. (RustCrypto's `to_sec1_der` leaves the curve out, and OpenSSL and Go then cannot read the key.)
fn sec1_der(curve: &[u64], scalar: &[u8], public: &[u8]) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_u8(1);
            w.next().write_bytes(scalar);
            w.next().write_tagged(yasna::Tag::context(0), |w| w.write_oid(&yasna::models::ObjectIdentifier::from_slice(curve)));
            w.next().write_tagged(yasna::Tag::context(1), |w| w.write_bitvec_bytes(public, public.len() * 8));
        })
    }))
}

/// A bootstrap token `[a-z0-9]{6}.[a-z0-9]{16}`, each character uniform over the 36 symbols
/// (bytes ≥ 252 are rejected, so there is no modulo bias).
pub fn token_from_rng(rng: &mut (impl CryptoRng + RngCore)) -> String {
    let mut chars = Zeroizing::new(Vec::with_capacity(22));
    let mut buf = Zeroizing::new([0u8; 32]);
    while chars.len() < 22 {
        rng.fill_bytes(&mut *buf);
        // 252 = 7 * 36: bytes at or above it would favour the first characters.
        let missing = 22 - chars.len();
        chars.extend(buf.iter().filter(|b| **b < 252).map(|b| TOKEN_ALPHABET[(b % 36) as usize]).take(missing));
    }
    let text = std::str::from_utf8(&chars).expect("the alphabet is ASCII");
    format!("{}.{}", &text[..6], &text[6..])
}

/// `N` bytes from `rng` (e.g. the 32-byte key of an aescbc encryption provider).
/// The caller holds a secret: wrap it in `Zeroizing` if it lives long.
pub fn bytes_from_rng<const N: usize>(rng: &mut (impl CryptoRng + RngCore)) -> [u8; N] {
    let mut out = [0u8; N];
    rng.fill_bytes(&mut out);
    out
}

#[derive(Clone)]
enum EcSigningKey {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
}

/// An ECDSA P-256/P-384 signing key for rcgen whose signatures are deterministic (RFC 6979 nonces),
/// so a certificate signed twice with the same content is byte-for-byte the same. It wraps
/// `p256`/`p384`'s `ecdsa::SigningKey` and signs through it (the `ecdsa` crate draws the nonce,
/// multiplies and reduces).
///
/// Signs with ECDSA-SHA256 on P-256 and ECDSA-SHA384 on P-384 and returns the DER (ASN.1)
/// signature, exactly as `rcgen::KeyPair` does for these curves; `algorithm()` is
/// `PKCS_ECDSA_P256_SHA256` / `PKCS_ECDSA_P384_SHA384` and `subject_public_key_info()` equals
/// the key's `spki_der()`.
#[derive(Clone)]
pub struct Rfc6979Signer {
    key: EcSigningKey,
    /// The uncompressed public point (what `KeyPair::der_bytes` returns).
    public: Vec<u8>,
    alg: &'static SignatureAlgorithm,
}

impl std::fmt::Debug for Rfc6979Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let curve = match self.key {
            EcSigningKey::P256(_) => "P-256",
            EcSigningKey::P384(_) => "P-384",
        };
        write!(f, "Rfc6979Signer({curve}, [secret elided])")
    }
}

impl Rfc6979Signer {
    /// The signer for an ECDSA key (SEC1 "EC PRIVATE KEY" or PKCS#8 "PRIVATE KEY"); None for an RSA key
    /// (and for an EC key the RustCrypto parsers reject, which [`try_from_key`](Self::try_from_key) reports).
    pub fn from_key(key: &Key) -> Option<Rfc6979Signer> {
        Self::try_from_key(key).ok().flatten()
    }

    /// Ok(None) for an RSA key; an error when an ECDSA key cannot be read or its private part
    /// does not match its public key.
    pub fn try_from_key(key: &Key) -> Result<Option<Rfc6979Signer>, KeyError> {
        let alg = key.pair.algorithm();
        let p256 = alg == &PKCS_ECDSA_P256_SHA256;
        if !p256 && alg != &PKCS_ECDSA_P384_SHA384 {
            return Ok(None);
        }
        let parsed = pem::parse(key.private_pem()).map_err(|e| KeyError::Parse(format!("not a PEM private key: {e}")))?;
        let der = Zeroizing::new(parsed.contents().to_vec());
        let bad = |e: &dyn std::fmt::Display| KeyError::Parse(format!("unreadable ECDSA key: {e}"));
        let (key_ec, public) = match (parsed.tag(), p256) {
            ("EC PRIVATE KEY", true) => p256::SecretKey::from_sec1_der(&der).map(p256_signer).map_err(|e| bad(&e))?,
            ("PRIVATE KEY", true) => p256::SecretKey::from_pkcs8_der(&der).map(p256_signer).map_err(|e| bad(&e))?,
            ("EC PRIVATE KEY", false) => p384::SecretKey::from_sec1_der(&der).map(p384_signer).map_err(|e| bad(&e))?,
            ("PRIVATE KEY", false) => p384::SecretKey::from_pkcs8_der(&der).map(p384_signer).map_err(|e| bad(&e))?,
            (other, _) => return Err(KeyError::Parse(format!("unexpected PEM block {other:?} for an ECDSA key"))),
        };
        if public != key.pair.der_bytes() {
            return Err(KeyError::Parse("the ECDSA private key does not match its public key".into()));
        }
        Ok(Some(Rfc6979Signer { key: key_ec, public, alg }))
    }
}

fn p256_signer(secret: p256::SecretKey) -> (EcSigningKey, Vec<u8>) {
    let key = p256::ecdsa::SigningKey::from(secret);
    let public = key.verifying_key().to_encoded_point(false).as_bytes().to_vec();
    (EcSigningKey::P256(key), public)
}

fn p384_signer(secret: p384::SecretKey) -> (EcSigningKey, Vec<u8>) {
    let key = p384::ecdsa::SigningKey::from(secret);
    let public = key.verifying_key().to_encoded_point(false).as_bytes().to_vec();
    (EcSigningKey::P384(key), public)
}

impl PublicKeyData for Rfc6979Signer {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

impl SigningKey for Rfc6979Signer {
    /// The ecdsa crate's deterministic signature (`SigningKey::try_sign`: SHA-256/SHA-384 digest,
    /// RFC 6979 nonce, low-S not forced), DER-encoded.
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        use p256::ecdsa::signature::Signer;
        let der = match &self.key {
            EcSigningKey::P256(k) => Signer::<p256::ecdsa::Signature>::try_sign(k, msg).map(|sig| sig.to_der().as_bytes().to_vec()),
            EcSigningKey::P384(k) => Signer::<p384::ecdsa::Signature>::try_sign(k, msg).map(|sig| sig.to_der().as_bytes().to_vec()),
        };
        der.map_err(|_| rcgen::Error::RingUnspecified)
    }
}

/// The deterministic way to sign with a [`Key`]: RFC 6979 for ECDSA keys, the key's own
/// `KeyPair` for RSA keys (PKCS#1 v1.5 signatures carry no randomness). Use it wherever rcgen
/// takes the issuer's key: `params.self_signed(&signer)`, `Issuer::from_ca_cert_der(&der, &signer)`.
pub enum DeterministicSigner<'a> {
    /// An ECDSA P-256/P-384 key, signing with RFC 6979 nonces.
    Ecdsa(Rfc6979Signer),
    /// An RSA key, signing through aws-lc (PKCS#1 v1.5, deterministic by construction).
    KeyPair(&'a KeyPair),
}

impl std::fmt::Debug for DeterministicSigner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeterministicSigner::Ecdsa(s) => write!(f, "DeterministicSigner::Ecdsa({s:?})"),
            DeterministicSigner::KeyPair(_) => f.write_str("DeterministicSigner::KeyPair([secret elided])"),
        }
    }
}

impl<'a> DeterministicSigner<'a> {
    /// The deterministic signer for `key`; an error only for an ECDSA key the RustCrypto parsers reject.
    pub fn for_key(key: &'a Key) -> Result<DeterministicSigner<'a>, KeyError> {
        Ok(match Rfc6979Signer::try_from_key(key)? {
            Some(s) => DeterministicSigner::Ecdsa(s),
            None => DeterministicSigner::KeyPair(&key.pair),
        })
    }
}

impl PublicKeyData for DeterministicSigner<'_> {
    fn der_bytes(&self) -> &[u8] {
        match self {
            DeterministicSigner::Ecdsa(s) => s.der_bytes(),
            DeterministicSigner::KeyPair(p) => p.der_bytes(),
        }
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        match self {
            DeterministicSigner::Ecdsa(s) => s.algorithm(),
            DeterministicSigner::KeyPair(p) => p.algorithm(),
        }
    }
}

impl SigningKey for DeterministicSigner<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match self {
            DeterministicSigner::Ecdsa(s) => s.sign(msg),
            DeterministicSigner::KeyPair(p) => p.sign(msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P384_SHA384_ASN1};
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose, SanType,
        SerialNumber,
    };
    use std::ffi::OsStr;
    use std::io::Write;
    use time::macros::datetime;

    fn seed() -> Seed {
        Seed::from_bytes(*b"0123456789abcdef0123456789abcdef")
    }

    /// RSA-2048 from seed() and "key/sa", generated once: RSA key generation takes ~20 s in an
    /// unoptimised (debug) build.
    fn rsa_sa() -> &'static Key {
        static KEY: std::sync::OnceLock<Key> = std::sync::OnceLock::new();
        KEY.get_or_init(|| key_from_rng(KeyAlgorithm::Rsa2048, &mut seed().rng("key/sa")).unwrap())
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn sha256_hex(b: &[u8]) -> String {
        hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b).as_ref())
    }

    fn write_temp(content: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content).unwrap();
        f
    }

    #[test]
    fn seed_debug_hides_the_secret() {
        let s = Seed::from_bytes([0xab; 32]);
        let shown = format!("{s:?}");
        assert_eq!(shown, "Seed([secret elided])");
        assert!(!shown.contains("ab") && !shown.contains("171"));
    }

    #[test]
    fn seed_files_raw_and_hex() {
        let raw: [u8; 32] = std::array::from_fn(|i| (i * 7 + 1) as u8);
        let hex_text = hex(&raw);
        let expected = Seed::from_bytes(raw).derive("x");
        for content in
            [raw.to_vec(), hex_text.clone().into_bytes(), format!("{hex_text}\n").into_bytes(), hex_text.to_uppercase().into_bytes()]
        {
            let f = write_temp(&content);
            assert_eq!(Seed::from_file(f.path()).unwrap().derive("x"), expected, "{content:?}");
        }
        // A raw seed may contain any byte, including '\n' and hex digits.
        let f = write_temp(b"0123456789abcdef0123456789abcde\n");
        assert_eq!(Seed::from_file(f.path()).unwrap().derive("x"), Seed::from_bytes(*b"0123456789abcdef0123456789abcde\n").derive("x"));
    }

    #[test]
    fn seed_file_errors_say_what_was_found() {
        let h = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "the file is empty"),
            (vec![7; 31], "found 31 bytes"),
            (vec![7; 33], "found 33 bytes"),
            (h.as_bytes()[..62].to_vec(), "found 62 hexadecimal characters"),
            (h.as_bytes()[..32].to_vec(), "found 32 hexadecimal characters, i.e. a 16-byte seed"),
            (format!("{}\n", &h[..32]).into_bytes(), "found 32 hexadecimal characters"),
            (format!("{h}00").into_bytes(), "found 66 hexadecimal characters"),
            (format!("{h}\n\n").into_bytes(), "more than one newline or a CR"),
            (format!("{h}\r\n").into_bytes(), "more than one newline or a CR"),
            (format!("{}g", &h[..63]).into_bytes(), "'g' at position 64 is not hexadecimal"),
            (format!("{}\x01", &h[..63]).into_bytes(), "byte 64 is 0x01"),
        ];
        for (content, found) in cases {
            let f = write_temp(&content);
            let err = Seed::from_file(f.path()).unwrap_err();
            assert!(err.contains(found), "{content:?}: {err}");
            assert!(err.contains("expected a seed of exactly 32 raw bytes, or 64 hexadecimal characters"), "{err}");
            assert!(err.contains(&f.path().display().to_string()), "{err}");
        }
        let missing = Seed::from_file(Path::new("/nonexistent/kubebundle-seed")).unwrap_err();
        assert!(missing.contains("cannot read the seed file /nonexistent/kubebundle-seed"), "{missing}");
    }

    #[test]
    fn derive_is_hmac_sha256_with_the_domain_prefix() {
        let s = seed();
        // Known answer, checked with:
        // printf 'kubebundle/v1/key/ca' | openssl dgst -sha256 -mac HMAC -macopt key:0123456789abcdef0123456789abcdef
        assert_eq!(hex(&s.derive("key/ca")), "ebad61dd2a4d084ba0e4521c54c3ae9892443e43dc800bdf60ffe185f79b26d1");
        assert_eq!(s.derive("key/ca"), seed().derive("key/ca"));
        assert_ne!(s.derive("key/ca"), s.derive("key/ca2"));
        assert_ne!(s.derive("token/0"), s.derive("token/1"));
        assert_ne!(s.derive("key/ca"), Seed::from_bytes([1; 32]).derive("key/ca"));
    }

    #[test]
    fn rng_streams_follow_the_label() {
        let s = seed();
        let a: [u8; 64] = bytes_from_rng(&mut s.rng("encryption/key1"));
        let b: [u8; 64] = bytes_from_rng(&mut s.rng("encryption/key1"));
        let c: [u8; 64] = bytes_from_rng(&mut s.rng("encryption/key2"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut r = s.rng("encryption/key1");
        let first: [u8; 32] = bytes_from_rng(&mut r);
        let second: [u8; 32] = bytes_from_rng(&mut r);
        assert_eq!(first, a[..32]);
        assert_eq!(second, a[32..]);
    }

    #[test]
    fn ec_keys_are_deterministic_and_in_kubeadm_format() {
        for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::EcdsaP384] {
            let a = key_from_rng(alg, &mut seed().rng("key/ca")).unwrap();
            let b = key_from_rng(alg, &mut seed().rng("key/ca")).unwrap();
            let c = key_from_rng(alg, &mut seed().rng("key/front-proxy-ca")).unwrap();
            assert!(a.private_pem().starts_with("-----BEGIN EC PRIVATE KEY-----\n"), "{alg:?}");
            assert_eq!(a.private_pem(), b.private_pem());
            assert_ne!(a.private_pem(), c.private_pem());
            assert_ne!(a.spki_der(), c.spki_der());
            let expected = if alg == KeyAlgorithm::EcdsaP256 { &PKCS_ECDSA_P256_SHA256 } else { &PKCS_ECDSA_P384_SHA384 };
            assert_eq!(a.pair.algorithm(), expected);
            let again = Key::from_pem(a.private_pem()).unwrap();
            assert_eq!(again.spki_der(), a.spki_der());
            // The SEC1 structure Go's x509.MarshalECPrivateKey writes: the curve is named in [0].
            let (curve, size) = if alg == KeyAlgorithm::EcdsaP256 { (OID_P256, 32) } else { (OID_P384, 48) };
            let der = pem::parse(a.private_pem()).unwrap().contents().to_vec();
            let (version, scalar, oid, public) = yasna::parse_der(&der, |r| {
                r.read_sequence(|r| {
                    let version = r.next().read_u8()?;
                    let scalar = r.next().read_bytes()?;
                    let oid = r.next().read_tagged(yasna::Tag::context(0), |r| r.read_oid())?;
                    let public = r.next().read_tagged(yasna::Tag::context(1), |r| r.read_bitvec_bytes())?;
                    Ok((version, scalar, oid, public))
                })
            })
            .unwrap();
            assert_eq!((version, scalar.len(), oid.components().as_slice()), (1, size, curve));
            assert_eq!(public.0, a.pair.der_bytes());
        }
    }

    #[test]
    fn rsa_keys_are_deterministic_and_in_kubeadm_format() {
        // Generated here and (independently, maybe on another thread) in rsa_sa().
        let a = key_from_rng(KeyAlgorithm::Rsa2048, &mut seed().rng("key/sa")).unwrap();
        let b = rsa_sa();
        assert!(a.private_pem().starts_with("-----BEGIN RSA PRIVATE KEY-----\n"));
        assert_eq!(a.private_pem(), b.private_pem());
        assert_eq!(a.pair.algorithm(), &rcgen::PKCS_RSA_SHA256);
        // 2048-bit modulus: SPKI of 294 bytes, as for any RSA-2048 key with e = 65537.
        assert_eq!(a.spki_der().len(), 294);
        // (Another label gives another stream, so another key: see rng_streams_follow_the_label.)
    }

    /// Known answers: a dependency upgrade that changes what a seed produces must fail here,
    /// since it would silently change every key of a re-generated bundle.
    #[test]
    fn derived_keys_known_answers() {
        let fp = |alg, label| sha256_hex(&key_from_rng(alg, &mut seed().rng(label)).unwrap().spki_der());
        // SHA-256 of the SPKI; `openssl pkey -pubout -outform DER | sha256sum` on the written keys agrees.
        assert_eq!(fp(KeyAlgorithm::EcdsaP256, "key/ca"), "d363e031c1f4d1fccdfdd4b8ad7b57d64af339bcf988a15eb39164097449ce83");
        assert_eq!(fp(KeyAlgorithm::EcdsaP384, "key/ca"), "bd084aa96fefc9c7f93e7552f3d1407c96a4f798b8cbe9da3951cae880ff66d4");
        assert_eq!(sha256_hex(&rsa_sa().spki_der()), "45becef88acb6c7f9525c061f154a250dfa53aac475652e8b35d752d818840eb");
        assert_eq!(token_from_rng(&mut seed().rng("token/0")), "64ezyq.d2bhhxr7fse36lez");
    }

    #[test]
    fn tokens_have_the_bootstrap_shape_and_are_deterministic() {
        let s = seed();
        let t = token_from_rng(&mut s.rng("token/0"));
        assert!(crate::pki::token::is_valid(&t), "{t}");
        assert_eq!(t, token_from_rng(&mut s.rng("token/0")));
        assert_ne!(t, token_from_rng(&mut s.rng("token/1")));
        for i in 0..200 {
            let t = token_from_rng(&mut s.rng(&format!("token/{i}")));
            let (id, secret) = t.split_once('.').unwrap();
            assert_eq!((id.len(), secret.len()), (6, 16), "{t}");
            assert!(t.bytes().all(|b| b == b'.' || b.is_ascii_lowercase() || b.is_ascii_digit()), "{t}");
        }
    }

    #[test]
    fn token_characters_are_uniform() {
        let mut r = seed().rng("uniformity");
        let mut counts = [0usize; 36];
        for _ in 0..2000 {
            for b in token_from_rng(&mut r).bytes().filter(|b| *b != b'.') {
                counts[TOKEN_ALPHABET.iter().position(|c| *c == b).unwrap()] += 1;
            }
        }
        // 44 000 characters, 1222 expected per symbol, standard deviation ~35.
        for (i, n) in counts.iter().enumerate() {
            assert!((1050..1400).contains(n), "{} appears {n} times", TOKEN_ALPHABET[i] as char);
        }
    }

    /// An RNG that returns only bytes ≥ 252 for a while: all of them must be rejected.
    struct Biased(usize);
    impl RngCore for Biased {
        fn next_u32(&mut self) -> u32 {
            rand_chacha::rand_core::impls::next_u32_via_fill(self)
        }
        fn next_u64(&mut self) -> u64 {
            rand_chacha::rand_core::impls::next_u64_via_fill(self)
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for b in dest {
                *b = if self.0 > 0 { 252 + (self.0 % 4) as u8 } else { 0 };
                self.0 = self.0.saturating_sub(1);
            }
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_chacha::rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }
    impl CryptoRng for Biased {}

    #[test]
    fn token_rejects_biased_bytes() {
        assert_eq!(token_from_rng(&mut Biased(100)), "aaaaaa.aaaaaaaaaaaaaaaa");
    }

    fn verify_alg(signer: &Rfc6979Signer) -> &'static aws_lc_rs::signature::EcdsaVerificationAlgorithm {
        if signer.algorithm() == &PKCS_ECDSA_P256_SHA256 {
            &ECDSA_P256_SHA256_ASN1
        } else {
            &ECDSA_P384_SHA384_ASN1
        }
    }

    /// A key of `alg` from its private scalar, in the SEC1 form kubebundle writes.
    fn key_from_scalar(alg: KeyAlgorithm, scalar: &[u8]) -> Key {
        let (curve, public) = match alg {
            KeyAlgorithm::EcdsaP256 => {
                let k = p256::SecretKey::from_slice(scalar).unwrap();
                (OID_P256, p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&k.public_key(), false).as_bytes().to_vec())
            }
            _ => {
                let k = p384::SecretKey::from_slice(scalar).unwrap();
                (OID_P384, p384::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&k.public_key(), false).as_bytes().to_vec())
            }
        };
        Key::from_pem(&pem_encode("EC PRIVATE KEY", &sec1_der(curve, scalar, &public))).unwrap()
    }

    fn unhex(h: &str) -> Vec<u8> {
        (0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap()).collect()
    }

    /// The signer gives RFC 6979's own answers (Appendix A.2.5, P-256 with SHA-256, and A.2.6,
    /// P-384 with SHA-384, message "sample"): (r, s) in the DER the certificates carry.
    #[test]
    fn signer_gives_the_rfc6979_test_vectors() {
        let cases = [
            (
                KeyAlgorithm::EcdsaP256,
                "c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721",
                "efd48b2aacb6a8fd1140dd9cd45e81d69d2c877b56aaf991c34d0ea84eaf3716",
                "f7cb1c942d657c41d436c7a1b6e29f65f3e900dbb9aff4064dc4ab2f843acda8",
            ),
            (
                KeyAlgorithm::EcdsaP384,
                "6b9d3dad2e1b8c1c05b19875b6659f4de23c3b667bf297ba9aa47740787137d896d5724e4c70a825f872c9ea60d2edf5",
                "94edbb92a5ecb8aad4736e56c691916b3f88140666ce9fa73d64c4ea95ad133c81a648152e44acf96e36dd1e80fabe46",
                "99ef4aeb15f178cea1fe40db2603138f130e740a19624526203b6351d0a3a94fa329c145786e679e7b82c71a38628ac8",
            ),
        ];
        for (alg, x, r, s) in cases {
            let signer = Rfc6979Signer::from_key(&key_from_scalar(alg, &unhex(x))).unwrap();
            let der = signer.sign(b"sample").unwrap();
            let rs = match alg {
                KeyAlgorithm::EcdsaP256 => p256::ecdsa::Signature::from_der(&der).unwrap().to_bytes().to_vec(),
                _ => p384::ecdsa::Signature::from_der(&der).unwrap().to_bytes().to_vec(),
            };
            assert_eq!(hex(&rs), format!("{r}{s}"), "{alg:?}");
        }
    }

    #[test]
    fn rfc6979_signatures_are_deterministic_and_verify() {
        for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::EcdsaP384] {
            let key = key_from_rng(alg, &mut seed().rng("key/ca")).unwrap();
            let signer = Rfc6979Signer::from_key(&key).unwrap();
            assert_eq!(signer.subject_public_key_info(), key.spki_der());
            assert_eq!(signer.der_bytes(), key.pair.der_bytes());
            let msg = b"tbsCertificate bytes";
            let a = signer.sign(msg).unwrap();
            let b = signer.sign(msg).unwrap();
            assert_eq!(a, b, "{alg:?}");
            assert_ne!(a, signer.sign(b"another message").unwrap());
            UnparsedPublicKey::new(verify_alg(&signer), key.pair.der_bytes()).verify(msg, &a).unwrap();
            assert!(UnparsedPublicKey::new(verify_alg(&signer), key.pair.der_bytes()).verify(b"tampered", &a).is_err());
            // And with openssl: `openssl dgst -sha256|-sha384 -verify PUB -signature SIG MSG`.
            let digest = if alg == KeyAlgorithm::EcdsaP256 { "-sha256" } else { "-sha384" };
            let (public, sig, data) = (write_temp(key.public_pem().as_bytes()), write_temp(&a), write_temp(msg));
            let openssl = |data: &Path| {
                let args = [OsStr::new("dgst"), OsStr::new(digest), OsStr::new("-verify"), public.path().as_os_str()];
                let more = [OsStr::new("-signature"), sig.path().as_os_str(), data.as_os_str()];
                std::process::Command::new("openssl").args(args).args(more).output().expect("openssl is installed")
            };
            let ok = openssl(data.path());
            assert!(ok.status.success() && ok.stdout.starts_with(b"Verified OK"), "{alg:?}: {ok:?}");
            assert!(!openssl(write_temp(b"tampered").path()).status.success(), "{alg:?}");
            // aws-lc (rcgen::KeyPair) draws a random nonce: this is why the signer exists.
            assert_ne!(key.pair.sign(msg).unwrap(), key.pair.sign(msg).unwrap());
        }
    }

    /// Two constructions from nothing but the seed give the same signature, and it is the RFC 6979
    /// one: the expected values come from Python `cryptography` 48 (`ec.ECDSA(hashes.SHA256(),
    /// deterministic_signing=True)`, SHA384 for P-384) signing with the same PEM key.
    #[test]
    fn rfc6979_is_stable_across_independent_constructions() {
        let cases = [
            (
                KeyAlgorithm::EcdsaP256,
                Seed::from_bytes([42; 32]),
                "key/etcd/ca",
                "ea538c004f6c103b3b4ccc87586831845530796bb20315971a56ee1293298063",
            ),
            (KeyAlgorithm::EcdsaP384, seed(), "key/ca", "ac9ec3c8cb0412d9fc9f355efe2081fc59dbe6cb309d5781898792fc26873730"),
        ];
        for (alg, s, label, expected) in cases {
            let sign = || {
                let key = key_from_rng(alg, &mut s.rng(label)).unwrap();
                let reread = Key::from_pem(key.private_pem()).unwrap();
                Rfc6979Signer::from_key(&reread).unwrap().sign(b"same message").unwrap()
            };
            let first = sign();
            assert_eq!(first, sign(), "{alg:?}");
            assert_eq!(sha256_hex(&first), expected, "{alg:?}");
        }
    }

    #[test]
    fn signer_reads_pkcs8_and_refuses_rsa() {
        for (alg, curve) in [(KeyAlgorithm::EcdsaP256, "P-256"), (KeyAlgorithm::EcdsaP384, "P-384")] {
            let key = Key::generate(alg).unwrap();
            let pkcs8 = Key::from_pem(&pkcs8_pem(&key)).unwrap();
            assert!(pkcs8.private_pem().starts_with("-----BEGIN PRIVATE KEY-----\n"));
            let from_sec1 = Rfc6979Signer::from_key(&key).unwrap();
            let from_pkcs8 = Rfc6979Signer::from_key(&pkcs8).unwrap();
            assert_eq!(from_pkcs8.subject_public_key_info(), key.spki_der());
            assert_eq!(from_sec1.sign(b"m").unwrap(), from_pkcs8.sign(b"m").unwrap());
            assert_eq!(format!("{from_sec1:?}"), format!("Rfc6979Signer({curve}, [secret elided])"));
        }
        let rsa = rsa_sa();
        assert!(Rfc6979Signer::from_key(rsa).is_none());
        assert!(Rfc6979Signer::try_from_key(rsa).unwrap().is_none());
        let d = DeterministicSigner::for_key(rsa).unwrap();
        assert!(matches!(d, DeterministicSigner::KeyPair(_)));
        // RSA PKCS#1 v1.5 through aws-lc is deterministic already.
        assert_eq!(d.sign(b"m").unwrap(), d.sign(b"m").unwrap());
        assert_eq!(d.subject_public_key_info(), rsa.spki_der());
    }

    /// The same SEC1 key re-wrapped as PKCS#8 v1 by aws-lc (what `openssl pkcs8 -topk8 -nocrypt` writes).
    fn pkcs8_pem(key: &Key) -> String {
        use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING};
        let der = pem::parse(key.private_pem()).unwrap().contents().to_vec();
        let alg =
            if key.pair.algorithm() == &PKCS_ECDSA_P256_SHA256 { &ECDSA_P256_SHA256_ASN1_SIGNING } else { &ECDSA_P384_SHA384_ASN1_SIGNING };
        let pkcs8 = EcdsaKeyPair::from_private_key_der(alg, &der).unwrap().to_pkcs8v1().unwrap();
        pem_encode("PRIVATE KEY", pkcs8.as_ref())
    }

    fn ca_params() -> CertificateParams {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "kubernetes");
        p.distinguished_name = dn;
        p.serial_number = Some(SerialNumber::from_slice(&[0x01, 0x02, 0x03, 0x04]));
        p.not_before = datetime!(2025-01-01 00:00:00 UTC);
        p.not_after = datetime!(2035-01-01 00:00:00 UTC);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment, KeyUsagePurpose::KeyCertSign];
        p.use_authority_key_identifier_extension = false;
        p
    }

    fn leaf_params() -> CertificateParams {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "kube-apiserver");
        p.distinguished_name = dn;
        p.serial_number = Some(SerialNumber::from_slice(&[0x05, 0x06, 0x07, 0x08]));
        p.not_before = datetime!(2025-01-01 00:00:00 UTC);
        p.not_after = datetime!(2026-01-01 00:00:00 UTC);
        p.subject_alt_names =
            vec![SanType::DnsName("kubernetes.default".try_into().unwrap()), SanType::IpAddress("10.96.0.1".parse().unwrap())];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        p.use_authority_key_identifier_extension = true;
        p
    }

    /// A CA and a leaf built from the seed alone, the way `pki::issue::issue` builds them.
    fn build_chain(ca_alg: KeyAlgorithm, leaf_alg: KeyAlgorithm) -> (Vec<u8>, Vec<u8>) {
        let s = Seed::from_bytes([9; 32]);
        let ca_key = key_from_rng(ca_alg, &mut s.rng("key/ca")).unwrap();
        chain_for(&ca_key, leaf_alg)
    }

    fn chain_for(ca_key: &Key, leaf_alg: KeyAlgorithm) -> (Vec<u8>, Vec<u8>) {
        let leaf_key = key_from_rng(leaf_alg, &mut Seed::from_bytes([9; 32]).rng("key/cp1/apiserver")).unwrap();
        let signer = DeterministicSigner::for_key(ca_key).unwrap();
        let ca = ca_params().self_signed(&signer).unwrap();
        let issuer = Issuer::from_ca_cert_der(ca.der(), &signer).unwrap();
        let leaf = leaf_params().signed_by(&leaf_key.pair, &issuer).unwrap();
        (ca.der().to_vec(), leaf.der().to_vec())
    }

    #[test]
    fn certificates_signed_with_the_signer_are_reproducible_and_valid() {
        for (ca_alg, leaf_alg) in [(KeyAlgorithm::EcdsaP256, KeyAlgorithm::EcdsaP256), (KeyAlgorithm::EcdsaP384, KeyAlgorithm::EcdsaP256)] {
            let (ca, leaf) = build_chain(ca_alg, leaf_alg);
            let (ca2, leaf2) = build_chain(ca_alg, leaf_alg);
            assert_eq!(ca, ca2, "{ca_alg:?}");
            assert_eq!(leaf, leaf2, "{ca_alg:?}");
            let (_, ca_x) = x509_parser::parse_x509_certificate(&ca).unwrap();
            let (_, leaf_x) = x509_parser::parse_x509_certificate(&leaf).unwrap();
            ca_x.verify_signature(None).unwrap();
            leaf_x.verify_signature(Some(ca_x.public_key())).unwrap();
            assert_eq!(leaf_x.issuer(), ca_x.subject());
            // Independently of x509-parser: the signature over the TBS bytes, with aws-lc.
            let alg = if ca_alg == KeyAlgorithm::EcdsaP256 { &ECDSA_P256_SHA256_ASN1 } else { &ECDSA_P384_SHA384_ASN1 };
            UnparsedPublicKey::new(alg, &ca_x.public_key().subject_public_key.data)
                .verify(leaf_x.tbs_certificate.as_ref(), &leaf_x.signature_value.data)
                .unwrap();
        }
    }

    #[test]
    fn rsa_ca_through_the_deterministic_signer_is_reproducible() {
        let (ca, leaf) = chain_for(rsa_sa(), KeyAlgorithm::EcdsaP256);
        let reread = Key::from_pem(rsa_sa().private_pem()).unwrap();
        assert_eq!((ca.clone(), leaf.clone()), chain_for(&reread, KeyAlgorithm::EcdsaP256));
        let (_, ca_x) = x509_parser::parse_x509_certificate(&ca).unwrap();
        let (_, leaf_x) = x509_parser::parse_x509_certificate(&leaf).unwrap();
        leaf_x.verify_signature(Some(ca_x.public_key())).unwrap();
    }
}
