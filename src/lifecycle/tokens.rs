//! `kubebundle token create|list|delete` on a bundle: the state's bootstrap tokens, kept in step
//! with their Secret manifests, join.txt and (when the join token changes) every
//! bootstrap-kubelet.conf and kubeadm-join.yaml and their nodes' tarballs. Changes go through the same lock, staging
//! directory and atomic swap as `generate`: the staged bundle is made of hard links to the old
//! one, and only the files that change are written anew.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use time::OffsetDateTime;

use crate::bundle::materialize::{
    bootstrap_kubeconfig, join_text, kubeadm_join, token_manifests, token_secret, token_secret_path, JoinInfo,
};
use crate::bundle::output::{self, OutputError};
use crate::bundle::plan::JoinPlan;
use crate::bundle::render::{RenderError, Renderer};
use crate::bundle::state::{self, StateError, Token};
use crate::clock::Clock;
use crate::config::validate::is_token_group;
use crate::config::DEFAULT_TOKEN_GROUP;
use crate::pki::token;
use crate::util::text::escape;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{dir} is not a kubebundle bundle ({reason})\n  hint: pass --dir OUT/<clusterName>, the directory generate wrote")]
    NotABundle { dir: String, reason: String },
    /// A refusal: the command ran and will not do it (exit 1).
    #[error("{0}")]
    Invalid(String),
    /// A wrong argument: an unknown usage, group or token id (exit 2, like a usage error).
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Render(#[from] RenderError),
}

/// What `token create` makes.
pub struct NewToken {
    /// Zero: never expires.
    pub ttl: Duration,
    pub description: Option<String>,
    pub usages: Vec<String>,
    pub groups: Vec<String>,
}

/// The bundle's cluster name, control-plane endpoint, version and CA, read from its own files.
struct Bundle {
    dir: PathBuf,
    cluster: String,
    join: JoinInfo,
    ca_pem: Vec<u8>,
    plan: serde_json::Value,
}

fn open(dir: &Path) -> Result<Bundle, TokenError> {
    let not = |reason: String| TokenError::NotABundle { dir: dir.display().to_string(), reason };
    // The state's recorded secrets are checked before anything is read from it.
    crate::bundle::state::check::check_bundle(dir)?;
    let plan: serde_json::Value =
        std::fs::read(dir.join("plan.json")).map_err(|e| not(format!("plan.json: {}", crate::util::io_words(&e)))).and_then(|b| {
            serde_json::from_slice(&b).map_err(|e| not(format!("plan.json is not JSON (line {}, column {})", e.line(), e.column())))
        })?;
    let field = |k: &str| plan[k].as_str().map(str::to_string).ok_or_else(|| not(format!("plan.json has no {k}")));
    let cluster = field("clusterName")?;
    // The cluster CA's trust bundle (during a CA rotation, old and new: join.txt pins both).
    let ca_pem = crate::bundle::state::trust_bundle_pem(&dir.join("state"), "ca")
        .map_err(|e| not(format!("state/pki/ca.crt: {}", crate::util::io_words(&e))))?;
    let blocks = ::pem::parse_many(&ca_pem).map_err(|_| not("state/pki/ca.crt is not a PEM certificate".into()))?;
    let mut hashes = Vec::new();
    for b in blocks.iter().filter(|b| b.tag() == "CERTIFICATE") {
        let (_, cert) =
            x509_parser::parse_x509_certificate(b.contents()).map_err(|_| not("state/pki/ca.crt is not a valid certificate".into()))?;
        hashes.push(token::discovery_hash(cert.public_key().raw));
    }
    if hashes.is_empty() {
        return Err(not("state/pki/ca.crt is not a PEM certificate".into()));
    }
    let join = JoinInfo {
        cluster_name: cluster.clone(),
        kubernetes_version: field("kubernetesVersion")?,
        endpoint: field("controlPlaneEndpoint")?,
        hashes,
    };
    output::check_owner(dir, &cluster)?;
    Ok(Bundle { dir: dir.to_path_buf(), cluster, join, ca_pem, plan })
}

fn ttl_left(expires: &str, now: OffsetDateTime) -> String {
    match (!expires.is_empty()).then(|| OffsetDateTime::parse(expires, &time::format_description::well_known::Rfc3339).ok()).flatten() {
        None => "<forever>".into(),
        Some(e) if e <= now => "<expired>".into(),
        Some(e) => {
            let secs = (e - now).whole_seconds();
            if secs >= 48 * 3600 {
                format!("{}d", secs / 86_400)
            } else if secs >= 3600 {
                format!("{}h", secs / 3600)
            } else {
                format!("{}m", secs / 60)
            }
        }
    }
}

/// `kind` of `token list -o json` (README "Machine-readable output").
pub const JSON_KIND: &str = "BootstrapTokenList";

/// `token list -o json`: the state's tokens at `now`.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenList {
    /// The clock the times left are counted from (RFC 3339, UTC).
    pub now: String,
    pub tokens: Vec<TokenInfo>,
}

/// One token, with the fields of kubeadm's `token list -o json` (BootstrapToken) that apply.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    /// The public part (before the dot).
    pub id: String,
    /// `<id>.<secret>`: only when asked (`--show-token`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    pub description: String,
    /// Time left as a Go duration (`23h0m0s`); `0s` once expired; `""` when it never expires.
    pub ttl: String,
    /// RFC 3339; `""` when it never expires.
    pub expires: String,
    pub usages: Vec<String>,
    pub groups: Vec<String>,
}

/// The state's tokens at `now`; the secret only with `show_token`.
pub fn list(dir: &Path, now: OffsetDateTime, show_token: bool) -> Result<TokenList, TokenError> {
    let b = open(dir)?;
    let tokens = state::read_tokens(&b.dir.join("state"))?;
    let info = |t: &Token| {
        let end = t.expires.as_deref().and_then(|e| OffsetDateTime::parse(e, &time::format_description::well_known::Rfc3339).ok());
        let ttl = match end {
            None => String::new(),
            Some(e) => crate::util::duration::format_go(Duration::from_secs(u64::try_from((e - now).whole_seconds()).unwrap_or(0))),
        };
        TokenInfo {
            id: t.id().to_string(),
            token: show_token.then(|| t.token.clone()),
            description: t.description.clone().unwrap_or_default(),
            ttl,
            expires: t.expires.clone().unwrap_or_default(),
            usages: t.usages.clone(),
            groups: t.groups.clone(),
        }
    };
    Ok(TokenList { now: crate::clock::rfc3339(now), tokens: tokens.iter().map(info).collect() })
}

impl TokenList {
    /// A table: id (the whole token when shown), time left, expiry, usages, description, extra
    /// groups. Every cell is escaped (a hand-edited tokens.yaml may hold anything).
    pub fn render_table(&self, now: OffsetDateTime) -> String {
        let shown = self.tokens.iter().any(|t| t.token.is_some());
        let rows: Vec<[String; 6]> = self
            .tokens
            .iter()
            .map(|t| {
                [
                    t.token.clone().unwrap_or_else(|| t.id.clone()),
                    ttl_left(t.expires.as_str(), now),
                    if t.expires.is_empty() { "<never>".into() } else { t.expires.clone() },
                    t.usages.join(","),
                    t.description.clone(),
                    t.groups.join(","),
                ]
                .map(|cell| escape(&cell).into_owned())
            })
            .collect();
        let header = [if shown { "TOKEN" } else { "ID" }, "TTL", "EXPIRES", "USAGES", "DESCRIPTION", "EXTRA GROUPS"].map(String::from);
        let widths: Vec<usize> = (0..6).map(|i| rows.iter().chain([&header]).map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
        let line = |r: &[String; 6]| {
            let cells: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
            cells.join("   ").trim_end().to_string() + "\n"
        };
        std::iter::once(&header).chain(&rows).map(line).collect()
    }
}

/// Makes a token (CSPRNG, [a-z0-9]) and returns it with the join commands that use it and the
/// expired tokens dropped on the way.
pub fn create(dir: &Path, new: NewToken, clock: &Clock) -> Result<(Token, String, Vec<Token>), TokenError> {
    for u in &new.usages {
        if !["signing", "authentication"].contains(&u.as_str()) {
            return Err(TokenError::Usage(format!("unknown usage {u:?}\n  hint: usages are signing and authentication")));
        }
    }
    if new.usages.is_empty() {
        return Err(TokenError::Usage("no usages\n  hint: use signing and/or authentication".into()));
    }
    if let Some(g) = new.groups.iter().find(|g| !is_token_group(g)) {
        return Err(TokenError::Usage(format!(
            "invalid group {g:?}\n  hint: groups must match system:bootstrappers:[a-z0-9:-]{{0,255}}[a-z0-9]"
        )));
    }
    let mut usages = new.usages.clone();
    usages.sort();
    usages.dedup();
    let expires = (!new.ttl.is_zero())
        .then(|| clock.now + new.ttl)
        .map(|t| t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default());
    let t = Token {
        token: token::generate(),
        description: new.description,
        expires,
        usages,
        groups: new.groups,
        from_config: false,
        created: true,
    };
    let made = t.clone();
    let (join, dropped) = change(dir, clock, |tokens| {
        tokens.push(t);
        Ok(())
    })?;
    let renderer = Renderer::new();
    let text = join_text(&renderer, &join, Some(&made))?;
    Ok((made, text, dropped))
}

/// Removes a token made by `token create` or generated by `generate`.
pub fn delete(dir: &Path, id: &str, clock: &Clock) -> Result<Vec<Token>, TokenError> {
    let (_, dropped) = change(dir, clock, |tokens| {
        let at = tokens.iter().position(|t| t.id() == id).ok_or_else(|| {
            TokenError::Usage(format!("no token with id {id:?}\n  hint: `kubebundle token list --dir DIR` shows the ids"))
        })?;
        if tokens[at].from_config {
            return Err(TokenError::Invalid(format!(
                "token {id} comes from the config (InitConfiguration.bootstrapTokens)\n  hint: remove it there and run generate"
            )));
        }
        // A token that has expired joins nobody: deleting it is always allowed.
        let joins = |t: &Token| t.authenticates() && !t.expired(clock.now);
        if joins(&tokens[at]) && tokens.iter().filter(|t| joins(t)).count() == 1 && uses_bootstrap_kubeconfig(dir) {
            return Err(TokenError::Invalid(format!(
                "token {id} is the only one workers can join with (their bootstrap-kubelet.conf holds it)\n  hint: `kubebundle token create` another first"
            )));
        }
        tokens.remove(at);
        Ok(())
    })?;
    Ok(dropped)
}

fn uses_bootstrap_kubeconfig(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("plan.json")).is_ok_and(|p| p.contains("\"bootstrap-kubelet.conf\""))
}

/// Applies `edit` to the token list and rewrites, in a staged copy swapped in atomically:
/// tokens.yaml, the Secret manifests, join.txt, and (when the join token changed, or the one the
/// files hold has expired) each bootstrap-kubelet.conf and kubeadm-join.yaml and its node's tarball.
/// Tokens that expired at the command's clock are dropped with their Secret manifests (as the
/// cluster's tokencleaner drops them), and returned so the command can say so.
fn change(
    dir: &Path,
    clock: &Clock,
    edit: impl FnOnce(&mut Vec<Token>) -> Result<(), TokenError>,
) -> Result<(JoinInfo, Vec<Token>), TokenError> {
    // A link to a bundle: the directory it points to is staged beside and swapped.
    let Some(real) = output::resolve(dir)? else {
        // Nothing there: say why it is not a bundle.
        return Err(open(dir)
            .err()
            .unwrap_or_else(|| TokenError::NotABundle { dir: dir.display().to_string(), reason: "no such directory".into() }));
    };
    // The lock before anything this run rewrites is read, so a concurrent writer's change is
    // never lost.
    let lock = output::lock_dir(&real)?;
    let b = open(dir)?;
    let before = state::read_tokens(&real.join("state"))?;
    let mut tokens = before.clone();
    edit(&mut tokens)?;
    let (dropped, kept): (Vec<Token>, Vec<Token>) = tokens.into_iter().partition(|t| t.expired(clock.now));
    let tokens = kept;

    let renderer = Renderer::new();
    let out = real.parent().unwrap_or(Path::new("/"));
    let staging = output::stage(out, &real.file_name().unwrap_or_default().to_string_lossy())?;
    let root = staging.path();
    output::link_copy(&real, root)?;
    output::write_file(&root.join("state").join(state::TOKENS_FILE), state::tokens_yaml(&tokens)?.as_bytes(), 0o600)?;
    for t in before.iter().filter(|t| !tokens.iter().any(|n| n.id() == t.id())) {
        let _ = std::fs::remove_file(root.join(token_secret_path(t)));
    }
    output::ensure_dir(&root.join("manifests"), 0o700)?;
    for t in &tokens {
        output::write_file(&root.join(token_secret_path(t)), token_secret(&renderer, t)?.as_bytes(), 0o600)?;
    }
    // cluster-info's JWS and the join RBAC follow the tokens.
    let version = crate::util::version::KubeVersion::parse(&b.join.kubernetes_version).map_err(TokenError::Invalid)?;
    let server = format!("https://{}", b.join.endpoint);
    for (path, text) in token_manifests(&renderer, &server, &B64.encode(&b.ca_pem), version.minor, &tokens)? {
        output::write_file(&root.join(path), text.as_bytes(), 0o644)?;
    }
    // The join token at the command's clock; the nodes' files hold the one join.txt names (the
    // join token when they were written), so they are rewritten whenever that is another, also
    // when it merely expired since.
    let join_token = state::join_token(&tokens, clock.now);
    let written = token_in_join_txt(&dir.join("join.txt"));
    output::write_file(&root.join("join.txt"), join_text(&renderer, &b.join, join_token)?.as_bytes(), 0o600)?;

    if let (Some(t), true) = (join_token, join_token.map(|t| t.token.as_str()) != written.as_deref().map(String::as_str)) {
        let ca_data = B64.encode(&b.ca_pem);
        for node in b.plan["nodes"].as_array().into_iter().flatten() {
            let Some(name) = node["name"].as_str() else { continue };
            let file = |artifact: &str| node["files"].as_array().into_iter().flatten().find(|f| f["artifact"] == artifact);
            let path_of = |artifact: &str| file(artifact).and_then(|f| f["path"].as_str()).map(str::to_string);
            // Every file of the node that holds the join token.
            let mut rewrites: Vec<(String, String)> = Vec::new();
            if let (Some(path), Some(server)) =
                (path_of("bootstrap-kubelet.conf"), file("bootstrap-kubelet.conf").and_then(|f| f["server"].as_str()))
            {
                rewrites.push((path, bootstrap_kubeconfig(&renderer, &b.cluster, server, &ca_data, t)?));
            }
            if let Some(path) = path_of("kubeadm-join") {
                let join: JoinPlan = serde_json::from_value(node["join"].clone()).map_err(|_| TokenError::NotABundle {
                    dir: dir.display().to_string(),
                    reason: format!("plan.json: node {name} has no valid join plan"),
                })?;
                rewrites.push((path, kubeadm_join(&renderer, &join, t, &b.join.hashes)?));
            }
            if rewrites.is_empty() {
                continue;
            }
            let files: BTreeMap<String, Vec<u8>> = rewrites.into_iter().map(|(p, text)| (p, text.into_bytes())).collect();
            rewrite_node(&root.join("nodes"), name, &files, clock.unix())?;
        }
    }
    output::commit(staging, &real)?;
    lock.keep();
    Ok((b.join, dropped))
}

/// Replaces files of one node of a staged bundle (`nodes_dir/<name>.tar.gz`, and its unpacked
/// tree when there is one) through the node-tree model: the tarball is read in memory, the
/// files changed in the view (keeping their modes; a file the node lacks is added 0600, it
/// holds the join token) and packed again with `mtime`.
fn rewrite_node(nodes_dir: &Path, name: &str, files: &BTreeMap<String, Vec<u8>>, mtime: u64) -> Result<(), OutputError> {
    let tarball = nodes_dir.join(format!("{name}.tar.gz"));
    let bad = |m: String| output::werr(&tarball)(std::io::Error::new(std::io::ErrorKind::InvalidData, m));
    let bytes = std::fs::read(&tarball).map_err(output::werr(&tarball))?;
    let node = crate::tree::node::NodeTree::from_tarball(&tarball, &bytes, None, &crate::tree::layout::builtin_profiles())
        .map_err(|e| bad(e.to_string()))?;
    if let Some((entry, why)) = node.problems.first() {
        return Err(bad(format!("{entry}: {why}")));
    }
    let mut tree = node.file_tree();
    let dir = nodes_dir.join(name);
    for (path, bytes) in files {
        let mode = tree.get(path).map(|f| f.mode).unwrap_or(0o600);
        tree.insert(path, bytes.clone(), mode);
        if dir.is_dir() {
            let target = dir.join(path);
            if let Some(parent) = target.parent() {
                output::make_dirs(parent, 0o755)?;
            }
            // A new file (write_file never writes through a hard link to the previous bundle).
            output::write_file(&target, bytes, mode)?;
        }
    }
    let packed = crate::tree::tarball::tar_gz(&tree, mtime).map_err(output::werr(&tarball))?;
    output::write_file(&tarball, &packed, 0o600)
}

/// The token join.txt's join commands use (`--token <id>.<secret>`), if any.
fn token_in_join_txt(path: &Path) -> Option<zeroize::Zeroizing<String>> {
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).ok()?);
    let after = text.split("--token ").nth(1)?;
    Some(zeroize::Zeroizing::new(after.split_whitespace().next()?.to_string()))
}

/// The default for `token create --groups`.
pub fn default_groups() -> Vec<String> {
    vec![DEFAULT_TOKEN_GROUP.to_string()]
}
