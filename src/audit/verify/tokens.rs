//! The bootstrap tokens a bundle knows (from state/tokens.yaml and the Secret manifests), and
//! whether a token a file holds is one of them, unexpired and able to join.

use std::collections::{BTreeMap, BTreeSet};

use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::clock::rfc3339;
use crate::pki::token;

/// A bootstrap token the bundle knows, from state/tokens.yaml or a Secret manifest.
pub(super) struct KnownToken {
    pub(super) secret: Zeroizing<String>,
    pub(super) expires: Option<OffsetDateTime>,
    pub(super) usages: BTreeSet<String>,
    pub(super) groups: Vec<String>,
    /// Where it was read.
    pub(super) from: String,
}

impl std::fmt::Debug for KnownToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KnownToken(<secret>, expires {:?}, usages {:?}, from {})", self.expires, self.usages, self.from)
    }
}

/// Whether `token` is one the bundle knows, unexpired at `now` and (with `join`) able to
/// authenticate: a note when it is, the problem when it is not.
pub(super) fn token_status(token: &str, known: &BTreeMap<String, KnownToken>, now: OffsetDateTime, join: bool) -> Result<String, String> {
    if !token::is_valid(token) {
        return Err("not a bootstrap token (<6 characters>.<16 characters> of [a-z0-9])".into());
    }
    let id = token_id(token);
    let Some(k) = known.get(&id) else {
        return Err(format!(
            "token {id} is in neither state/tokens.yaml nor a bootstrap-token Secret of manifests/: the cluster will not know it, so joining with it fails; hint: kubebundle token create --dir <bundle> makes a token the bundle knows"
        ));
    };
    if token.split_once('.').map(|(_, s)| s) != Some(k.secret.as_str()) {
        return Err(format!("token {id}'s secret is not the one in {}: it would not authenticate", k.from));
    }
    if let Some(t) = k.expires.filter(|t| *t <= now) {
        return Err(format!(
            "token {id} expired at {} (verify's clock: {}): the API server refuses it; hint: kubebundle token create --dir <bundle> makes a new join token",
            rfc3339(t),
            rfc3339(now)
        ));
    }
    if join && !k.usages.contains("authentication") {
        return Err(format!("token {id} lacks the authentication usage: nodes cannot join with it"));
    }
    Ok(format!("token {id}, valid until {}", k.expires.map(rfc3339).unwrap_or_else(|| "it is deleted (no expiry)".into())))
}

/// The id of something that may be a token, safe to print (never the secret).
pub(super) fn token_id(t: &str) -> String {
    match t.split_once('.') {
        Some((id, _)) if id.len() == 6 && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) => id.to_string(),
        _ => "<malformed>".to_string(),
    }
}
