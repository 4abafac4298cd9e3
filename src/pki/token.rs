//! Bootstrap tokens (reference §7) and the discovery hash (§8).

use aws_lc_rs::digest;

const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// `^[a-z0-9]{6}\.[a-z0-9]{16}$`
pub fn is_valid(token: &str) -> bool {
    let ok = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    matches!(token.split_once('.'), Some((id, secret)) if ok(id, 6) && ok(secret, 16))
}

/// `n` characters drawn uniformly from [a-z0-9] by the system CSPRNG (rejection sampling,
/// so no character is more likely than another).
pub fn random_string(n: usize) -> String {
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        aws_lc_rs::rand::fill(&mut buf).expect("the system RNG works");
        for b in buf {
            // 252 = 7 * 36: bytes at or above it would favour the first characters.
            if b < 252 && out.len() < n {
                out.push(ALPHABET[(b % 36) as usize] as char);
            }
        }
    }
    out
}

pub fn generate() -> String {
    format!("{}.{}", random_string(6), random_string(16))
}

/// `sha256:<hex>` of the CA's DER SubjectPublicKeyInfo, as `--discovery-token-ca-cert-hash` wants.
pub fn discovery_hash(spki_der: &[u8]) -> String {
    let d = digest::digest(&digest::SHA256, spki_der);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_valid_and_vary() {
        let a = generate();
        assert!(is_valid(&a), "{a}");
        assert_ne!(a, generate());
        assert!(!is_valid("abcdef.0123456789abcdeF"));
        assert!(!is_valid("abcde.0123456789abcdef"));
        assert!(is_valid("abcdef.0123456789abcdef"));
    }

    #[test]
    fn characters_are_roughly_uniform() {
        let s = random_string(36_000);
        for c in ALPHABET {
            let n = s.bytes().filter(|b| b == c).count();
            assert!((700..1300).contains(&n), "{} appears {n} times", *c as char);
        }
    }
}
