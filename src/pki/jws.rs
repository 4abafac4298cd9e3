//! The detached JWS that `kubeadm join` token discovery verifies on cluster-info (reference §9):
//! HS256 over base64url(header) "." base64url(content), keyed by the token secret.

use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;

/// `header..signature` for `content`, signed with token `id` and its `secret`.
pub fn detached(content: &[u8], id: &str, secret: &str) -> String {
    // Exactly {"alg":"HS256","kid":"<id>"}: verifiers compare the whole string.
    let header = format!(r#"{{"alg":"HS256","kid":{}}}"#, serde_json::Value::from(id));
    let header_b64 = B64URL.encode(header.as_bytes());
    let signing_input = format!("{header_b64}.{}", B64URL.encode(content));
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let sig = hmac::sign(&key, signing_input.as_bytes());
    format!("{header_b64}..{}", B64URL.encode(sig.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproduces_the_reference_vectors() {
        let content = "Hello from the other side. I must have called a thousand times.";
        assert_eq!(
            detached(content.as_bytes(), "joshua", "my voice is my passcode"),
            "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..VShe2taLd-YTrmWuRkcL_8QTNDHYxQIEBsAYYiIj1_8"
        );
        assert_eq!(
            detached(b"", "joshua", "my voice is my passcode"),
            "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..7Ui1ALizW4jXphVUB7xUqC9vLYLL9RZeOFfVLoB7Tgk"
        );
        assert_eq!(
            detached(content.as_bytes(), "joshua", ""),
            "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..UfkqvDGiIFxrMnFseDj9LYJOLNrvjW8aHhF71mvvAs8"
        );
    }
}
