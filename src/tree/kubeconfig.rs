//! Reading kubeconfigs (the shape of reference §5), for `verify` and `certs check-expiration`.
//! kubebundle writes kubeconfigs from `templates/kubeconfig.yaml`; this is only the reader.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub struct Kubeconfig {
    #[serde(default, deserialize_with = "null_is_empty")]
    pub clusters: Vec<NamedCluster>,
    #[serde(default, deserialize_with = "null_is_empty")]
    pub contexts: Vec<NamedContext>,
    #[serde(default, rename = "current-context")]
    pub current_context: Option<String>,
    #[serde(default, deserialize_with = "null_is_empty")]
    pub users: Vec<NamedUser>,
}

/// client-go writes an empty list as `null` (`users: null` in a kubeconfig without users).
fn null_is_empty<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Default, Deserialize)]
pub struct NamedCluster {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub cluster: Cluster,
}

#[derive(Debug, Default, Deserialize)]
pub struct Cluster {
    #[serde(default)]
    pub server: String,
    #[serde(default, rename = "certificate-authority-data")]
    pub certificate_authority_data: Option<String>,
    #[serde(default, rename = "certificate-authority")]
    pub certificate_authority: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct NamedContext {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub context: Context,
}

#[derive(Debug, Default, Deserialize)]
pub struct Context {
    #[serde(default)]
    pub cluster: String,
    #[serde(default)]
    pub user: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct NamedUser {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub user: User,
}

#[derive(Debug, Default, Deserialize)]
pub struct User {
    #[serde(default, rename = "client-certificate-data")]
    pub client_certificate_data: Option<String>,
    #[serde(default, rename = "client-certificate")]
    pub client_certificate: Option<String>,
    #[serde(default, rename = "client-key-data")]
    pub client_key_data: Option<String>,
    #[serde(default, rename = "client-key")]
    pub client_key: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
}

impl Kubeconfig {
    pub fn parse(bytes: &[u8]) -> Result<Kubeconfig, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "the kubeconfig is not UTF-8 text".to_string())?;
        serde_saphyr::from_str(text).map_err(|e| format!("not a kubeconfig: {}", e.to_string().lines().next().unwrap_or_default()))
    }

    /// The current context's user, else the only (or first) one.
    pub fn current_user(&self) -> Option<&User> {
        let wanted =
            self.current_context.as_deref().and_then(|cc| self.contexts.iter().find(|c| c.name == cc)).map(|c| c.context.user.as_str());
        wanted.and_then(|u| self.users.iter().find(|n| n.name == u)).or(self.users.first()).map(|u| &u.user)
    }
}

/// Byte ranges of the values of `key:` lines (`  key: value`), with the value as written.
pub fn yaml_values<'t>(text: &'t str, key: &str) -> Vec<(std::ops::Range<usize>, &'t str)> {
    let mut out = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let trimmed = body.trim_start();
        let trimmed = trimmed.strip_prefix("- ").unwrap_or(trimmed);
        let start_of_key = body.len() - trimmed.len();
        if let Some(rest) = trimmed.strip_prefix(key).and_then(|r| r.strip_prefix(':')) {
            let value = rest.trim();
            if !value.is_empty() {
                let lead = rest.len() - rest.trim_start().len();
                let start = offset + start_of_key + key.len() + 1 + lead;
                out.push((start..start + value.len(), value));
            }
        }
        offset += line.len();
    }
    out
}

/// A YAML scalar without its quotes.
pub fn unquote(v: &str) -> &str {
    v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\''))).unwrap_or(v)
}

/// Replaces the value of the first `key:` line whose value decodes to `old` with base64(`new`):
/// the rest of the file stays byte for byte (kubeconfigs are edited, never re-rendered).
pub fn replace_data(text: &str, key: &str, old: &[u8], new: &[u8]) -> Option<String> {
    let (range, _) = yaml_values(text, key).into_iter().find(|(_, v)| B64.decode(unquote(v)).is_ok_and(|d| d == old))?;
    let mut out = String::with_capacity(text.len() + 64);
    out.push_str(&text[..range.start]);
    out.push_str(&B64.encode(new));
    out.push_str(&text[range.end..]);
    Some(out)
}

/// Rewrites every `key:` value whose decoded bytes `edit` changes (None: left as it is).
pub fn edit_data(text: &str, key: &str, edit: impl Fn(&[u8]) -> Option<Vec<u8>>) -> Option<String> {
    let mut out = String::with_capacity(text.len() + 64);
    let mut at = 0;
    let mut changed = false;
    for (range, v) in yaml_values(text, key) {
        let Ok(decoded) = B64.decode(unquote(v)) else { continue };
        let Some(new) = edit(&decoded) else { continue };
        out.push_str(&text[at..range.start]);
        out.push_str(&B64.encode(new));
        at = range.end;
        changed = true;
    }
    out.push_str(&text[at..]);
    changed.then_some(out)
}

/// Decodes a `*-data` field (base64, whitespace tolerated).
pub fn decode(what: &str, value: Option<&str>) -> Result<Option<Vec<u8>>, String> {
    value
        .map(|v| {
            let compact: String = v.chars().filter(|c| !c.is_whitespace()).collect();
            B64.decode(compact).map_err(|e| format!("{what} is not base64: {e}"))
        })
        .transpose()
}
