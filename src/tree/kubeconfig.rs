//! Reading kubeconfigs (the shape of reference §5), for `verify` and `certs check-expiration`.
//! kubebundle writes kubeconfigs from `templates/kubeconfig.yaml`; this is only the reader.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub struct Kubeconfig {
    #[serde(default)]
    pub clusters: Vec<NamedCluster>,
    #[serde(default)]
    pub contexts: Vec<NamedContext>,
    #[serde(default, rename = "current-context")]
    pub current_context: Option<String>,
    #[serde(default)]
    pub users: Vec<NamedUser>,
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

/// Decodes a `*-data` field (base64, whitespace tolerated).
pub fn decode(what: &str, value: Option<&str>) -> Result<Option<Vec<u8>>, String> {
    value
        .map(|v| {
            let compact: String = v.chars().filter(|c| !c.is_whitespace()).collect();
            B64.decode(compact).map_err(|e| format!("{what} is not base64: {e}"))
        })
        .transpose()
}
