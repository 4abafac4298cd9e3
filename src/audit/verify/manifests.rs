//! A bundle's `manifests/`, `join.txt` and bootstrap tokens: every bootstrap-token Secret is
//! well-formed, matches `state/tokens.yaml` and has not expired; cluster-info holds the state's CA,
//! the controlPlaneEndpoint and a JWS per token that verifies with that token; join.txt names a
//! known, unexpired token that authenticates. Token secrets never reach a message: tokens are
//! named by their id.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use base64::Engine;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::rules::{self, Scan};
use super::tokens::{token_status, KnownToken};
use super::{
    BundleFacts, PlanDoc, Scope, Severity, Verifier, B64, CHECK_CLUSTER_INFO, CHECK_JOIN_TOKEN, CHECK_KUBELET, CHECK_MODE,
    CHECK_TOKEN_SECRET,
};
use crate::audit::facts::*;
use crate::clock::rfc3339;
use crate::pki::token;

const TOKEN_TYPE: &str = "bootstrap.kubernetes.io/token";
/// cluster-bootstrap's BootstrapGroupPattern: `\Asystem:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]\z`.
const GROUP_PREFIX: &str = "system:bootstrappers:";
const USAGES: &[&str] = &["authentication", "signing"];

fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

/// state/tokens.yaml, read with our own lenient types.
fn state_tokens(dir: &Path) -> Result<Option<BTreeMap<String, KnownToken>>, String> {
    let path = dir.join("state/tokens.yaml");
    let text = match std::fs::read(&path) {
        Ok(b) => Zeroizing::new(String::from_utf8(b).map_err(|_| "not UTF-8 text".to_string())?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read: {e}")),
    };
    let doc: serde_json::Value = serde_saphyr::from_str(&text).map_err(|_| "not a tokens file (YAML with a tokens list)".to_string())?;
    let list = doc.get("tokens").and_then(|t| t.as_array()).ok_or("no tokens list")?;
    let mut out = BTreeMap::new();
    for (i, t) in list.iter().enumerate() {
        let value = Zeroizing::new(t.get("token").and_then(|v| v.as_str()).unwrap_or_default().to_string());
        if !token::is_valid(&value) {
            return Err(format!("tokens[{i}].token is not a bootstrap token"));
        }
        let expires = match t.get("expires").and_then(|v| v.as_str()) {
            None => None,
            Some(e) => Some(parse_time(e).ok_or_else(|| format!("tokens[{i}].expires {e:?} is not an RFC 3339 time"))?),
        };
        let strings = |k: &str| -> Vec<String> {
            t.get(k).and_then(|v| v.as_array()).into_iter().flatten().filter_map(|v| v.as_str()).map(str::to_string).collect()
        };
        let (id, secret) = value.split_once('.').unwrap_or_default();
        out.insert(
            id.to_string(),
            KnownToken {
                secret: Zeroizing::new(secret.to_string()),
                expires,
                usages: strings("usages").into_iter().collect(),
                groups: strings("groups"),
                from: "state/tokens.yaml".into(),
            },
        );
    }
    Ok(Some(out))
}

/// A bootstrap-token Secret: the token it defines, or every way it is malformed.
fn read_secret(doc: &serde_json::Value, file_stem: &str) -> Result<(String, KnownToken), Vec<String>> {
    let mut p = Vec::new();
    let s = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    if s(doc, "apiVersion").as_deref() != Some("v1") {
        p.push(format!("apiVersion is {}, want v1", doc.get("apiVersion").cloned().unwrap_or_default()));
    }
    if s(doc, "type").as_deref() != Some(TOKEN_TYPE) {
        p.push(format!("type is {}, want {TOKEN_TYPE}", doc.get("type").cloned().unwrap_or_default()));
    }
    let meta = doc.get("metadata").cloned().unwrap_or_default();
    if s(&meta, "namespace").as_deref() != Some("kube-system") {
        p.push(format!("namespace is {}, want kube-system", meta.get("namespace").cloned().unwrap_or_default()));
    }
    let name = s(&meta, "name").unwrap_or_default();
    // data holds base64, stringData plain text; kubectl apply accepts either.
    let mut data: BTreeMap<String, Zeroizing<String>> = BTreeMap::new();
    for (k, v) in doc.get("data").and_then(|d| d.as_object()).into_iter().flatten() {
        match v.as_str().and_then(|x| B64.decode(x.trim()).ok()).and_then(|b| String::from_utf8(b).ok()) {
            Some(text) => {
                data.insert(k.clone(), Zeroizing::new(text));
            }
            None => p.push(format!("data.{k} is not base64 of UTF-8 text")),
        }
    }
    for (k, v) in doc.get("stringData").and_then(|d| d.as_object()).into_iter().flatten() {
        data.insert(k.clone(), Zeroizing::new(v.as_str().unwrap_or_default().to_string()));
    }
    let lower = |t: &str, n: usize| t.len() == n && t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let id = data.get("token-id").map(|v| v.to_string()).unwrap_or_default();
    if !lower(&id, 6) {
        p.push(if data.contains_key("token-id") { "token-id is not 6 characters of [a-z0-9]".into() } else { "no token-id".into() });
    } else if name != format!("bootstrap-token-{id}") {
        p.push(format!("name is {name:?}, want \"bootstrap-token-{id}\" (the API server finds a token by this name)"));
    }
    if !file_stem.is_empty() && file_stem != format!("bootstrap-token-{id}") && lower(&id, 6) {
        p.push(format!("the file is named {file_stem}.yaml, but holds token {id}"));
    }
    let secret = data.get("token-secret").cloned().unwrap_or_default();
    if !lower(&secret, 16) {
        p.push(if data.contains_key("token-secret") {
            "token-secret is not 16 characters of [a-z0-9]".into()
        } else {
            "no token-secret".into()
        });
    }
    let expires = match data.get("expiration") {
        None => None,
        Some(e) => match parse_time(e) {
            Some(t) => Some(t),
            None => {
                p.push(format!("expiration {:?} is not an RFC 3339 time", e.as_str()));
                None
            }
        },
    };
    let mut usages = BTreeSet::new();
    for (k, v) in &data {
        let Some(u) = k.strip_prefix("usage-bootstrap-") else {
            if !["token-id", "token-secret", "expiration", "description", "auth-extra-groups"].contains(&k.as_str()) {
                p.push(format!("unknown key {k:?}"));
            }
            continue;
        };
        if !USAGES.contains(&u) {
            p.push(format!("unknown usage {k:?} (known: usage-bootstrap-authentication, usage-bootstrap-signing)"));
        } else if v.as_str() != "true" {
            p.push(format!("{k} is {:?}; only \"true\" enables it", v.as_str()));
        } else {
            usages.insert(u.to_string());
        }
    }
    if usages.is_empty() {
        p.push("no usage-bootstrap-authentication or usage-bootstrap-signing: the token does nothing".into());
    }
    let groups: Vec<String> = data.get("auth-extra-groups").map(|g| g.split(',').map(str::to_string).collect()).unwrap_or_default();
    for g in &groups {
        let rest = g.strip_prefix(GROUP_PREFIX).unwrap_or_default();
        let ok = g.starts_with(GROUP_PREFIX)
            && !rest.is_empty()
            && rest.len() <= 256
            && rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b':' || b == b'-')
            && rest.bytes().last().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !ok {
            p.push(format!("auth-extra-groups {g:?} is not system:bootstrappers:<[a-z0-9:-]> ending in [a-z0-9]"));
        }
    }
    if !p.is_empty() {
        return Err(p);
    }
    Ok((id, KnownToken { secret, expires, usages, groups, from: String::new() }))
}

/// Every YAML document of a file, as JSON values.
fn docs_of(bytes: &[u8]) -> Vec<serde_json::Value> {
    std::str::from_utf8(bytes).map(documents).unwrap_or_default()
}

/// The bootstrap-token Secrets of `manifests/`: (file, document) of each.
fn secret_docs(dir: &Path) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir(dir.join("manifests"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for n in names {
        let bytes = Zeroizing::new(std::fs::read(dir.join("manifests").join(&n)).unwrap_or_default());
        for d in docs_of(&bytes) {
            let is_token = d.get("type").and_then(|t| t.as_str()) == Some(TOKEN_TYPE)
                || (d.get("kind").and_then(|k| k.as_str()) == Some("Secret")
                    && d.pointer("/metadata/name").and_then(|x| x.as_str()).is_some_and(|x| x.starts_with("bootstrap-token-")))
                || (n.starts_with("bootstrap-token-") && n.ends_with(".yaml"));
            if is_token {
                out.push((format!("manifests/{n}"), d));
            }
        }
    }
    out
}

/// CA `id`'s trust bundle in the state under bundle `dir`: `ca` (the state's certificate), then
/// the rotation's next or previous certificate when there is one.
pub(super) fn state_trust(dir: &Path, id: &str, ca: &CertInfo) -> Vec<CertInfo> {
    let state = dir.join("state");
    let mut out = vec![ca.clone()];
    for rel in [crate::bundle::state::ca_next_paths(id).0, crate::bundle::state::ca_previous_path(id)] {
        if let Some(c) = std::fs::read(state.join(rel)).ok().and_then(|b| CertInfo::from_pem(&b).ok()) {
            out.push(c);
        }
    }
    out
}

/// What a bundle beside a tarball or node root tells its checks, read without findings: the
/// state's CAs and service-account key, and the tokens.
pub(super) fn quiet_facts(dir: &Path, facts: &mut BundleFacts) {
    for (id, rel) in [("ca", "state/pki/ca.crt"), ("front-proxy-ca", "state/pki/front-proxy-ca.crt"), ("etcd-ca", "state/pki/etcd/ca.crt")]
    {
        if let Some(c) = std::fs::read(dir.join(rel)).ok().and_then(|b| CertInfo::from_pem(&b).ok()) {
            facts.state_trust.insert(id, state_trust(dir, id, &c));
            facts.state_cas.insert(id, c);
        }
        // An imported CA's chain: what the node's intermediate CA file is checked against.
        let chain = dir.join("state").join(crate::bundle::state::ca_chain_path(id));
        if let Some(chain) = std::fs::read(chain).ok().and_then(|b| CertInfo::all_from_pem(&b).ok()) {
            facts.state_chains.insert(id, chain);
        }
    }
    facts.state_sa = std::fs::read(dir.join("state/pki/sa.pub")).ok().and_then(|b| pem_public_key(&b).ok());
    let mut known = state_tokens(dir).ok().flatten();
    for (file, d) in secret_docs(dir) {
        if let Ok((id, mut t)) = read_secret(&d, file.trim_start_matches("manifests/").trim_end_matches(".yaml")) {
            t.from = file;
            known.get_or_insert_with(BTreeMap::new).entry(id).or_insert(t);
        }
    }
    facts.tokens = known;
}

impl Verifier {
    /// Modes of the bundle's own files: a file holding a secret is 0600; the state directory and
    /// every directory in it 0700, its files 0600; node tarballs 0600.
    pub(super) fn check_bundle_modes(&mut self, dir: &Path) {
        let s = Scope { node: "-", prefix: "" };
        let mode_of = |p: &Path| {
            std::fs::symlink_metadata(p).ok().map(|m| (std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777, m.file_type()))
        };
        // The top-level files and manifests/.
        let mut top: Vec<String> = ["join.txt", "discovery.conf", "plan.json"].iter().map(|s| s.to_string()).collect();
        let mut manifests: Vec<String> = std::fs::read_dir(dir.join("manifests"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| format!("manifests/{}", e.file_name().to_string_lossy()))
            .collect();
        manifests.sort();
        top.extend(manifests);
        for rel in top {
            let p = dir.join(&rel);
            let Some((mode, ft)) = mode_of(&p) else { continue };
            if !ft.is_file() {
                continue;
            }
            let bytes = Zeroizing::new(std::fs::read(&p).unwrap_or_default());
            let scan = rules::scan(&rel, &bytes, &mut |_| None);
            self.secret_mode(&s, &rel, mode, &scan);
        }
        // The state: 0700 directories, 0600 files.
        fn walk(v: &mut Verifier, s: &Scope, root: &Path, rel: &str, depth: usize) {
            let p = root.join(rel);
            let Ok(md) = std::fs::symlink_metadata(&p) else { return };
            let mode = std::os::unix::fs::PermissionsExt::mode(&md.permissions()) & 0o7777;
            let ft = md.file_type();
            if ft.is_dir() {
                if mode == 0o700 {
                    v.add(s, Severity::Ok, rel, CHECK_MODE, "0700");
                } else {
                    v.add(
                        s,
                        Severity::Error,
                        rel,
                        CHECK_MODE,
                        format!("{mode:04o}: a directory of the state, which holds every CA key; want 0700"),
                    );
                }
                let mut names: Vec<String> =
                    std::fs::read_dir(&p).into_iter().flatten().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
                names.sort();
                for n in names.into_iter().filter(|_| depth < 8) {
                    walk(v, s, root, &format!("{rel}/{n}"), depth + 1);
                }
            } else if ft.is_file() {
                if mode == 0o600 {
                    v.add(s, Severity::Ok, rel, CHECK_MODE, "0600");
                } else {
                    v.add(
                        s,
                        Severity::Error,
                        rel,
                        CHECK_MODE,
                        format!("{mode:04o}: a file of the state; want 0600 (readable by its owner only)"),
                    );
                }
            } else {
                v.add(s, Severity::Error, rel, CHECK_MODE, "not a regular file or directory: the state holds regular files only");
            }
        }
        if dir.join("state").exists() {
            walk(self, &s, dir, "state", 0);
        }
        for name in crate::tree::bundle::node_names(&dir.join("nodes")) {
            let rel = format!("nodes/{name}.tar.gz");
            if let Some((mode, _)) = mode_of(&dir.join(&rel)) {
                self.tarball_mode(&s, &rel, mode);
            }
        }
    }

    /// A node tarball on disk is 0600: it holds the node's keys.
    pub(super) fn tarball_mode(&mut self, s: &Scope, rel: &str, mode: u32) {
        if mode == 0o600 {
            self.add(s, Severity::Ok, rel, CHECK_MODE, "0600");
        } else {
            self.add(s, Severity::Error, rel, CHECK_MODE, format!("{mode:04o}: a node tarball holds the node's keys; want 0600"));
        }
    }

    /// A file holding a secret (by content) is 0600.
    pub(super) fn secret_mode(&mut self, s: &Scope, rel: &str, mode: u32, scan: &Scan) -> bool {
        let Some(what) = scan.secret else { return false };
        if mode == 0o600 {
            self.add(s, Severity::Ok, rel, CHECK_MODE, format!("0600 ({what})"));
        } else {
            self.add(
                s,
                Severity::Error,
                rel,
                CHECK_MODE,
                format!("{mode:04o}: it holds {what}, so it must be 0600 (readable by its owner only)"),
            );
        }
        true
    }

    /// `manifests/` and join.txt's token; fills `facts.tokens`.
    pub(super) fn check_manifests(&mut self, dir: &Path, facts: &mut BundleFacts, plan: Option<&PlanDoc>) {
        let s = Scope { node: "-", prefix: "" };
        let state = match state_tokens(dir) {
            Ok(t) => t,
            Err(e) => {
                self.add(&s, Severity::Error, "state/tokens.yaml", CHECK_TOKEN_SECRET, e);
                None
            }
        };
        // Each bootstrap-token Secret: well-formed, unexpired, the state's.
        let mut known: BTreeMap<String, KnownToken> = BTreeMap::new();
        let mut in_manifests = BTreeSet::new();
        for (file, doc) in secret_docs(dir) {
            let stem = file.trim_start_matches("manifests/").trim_end_matches(".yaml").to_string();
            match read_secret(&doc, &stem) {
                Err(problems) => {
                    for p in problems {
                        self.add(&s, Severity::Error, &file, CHECK_TOKEN_SECRET, format!("malformed bootstrap-token Secret: {p}"));
                    }
                }
                Ok((id, mut t)) => {
                    let mut problems = Vec::new();
                    if let Some(e) = t.expires.filter(|e| *e <= self.now) {
                        problems.push(format!(
                            "token {id} expired at {} (verify's clock: {}): the API server refuses it and its token cleaner deletes it; hint: kubebundle token delete {id} --dir <bundle>, and token create for a new one",
                            rfc3339(e),
                            rfc3339(self.now)
                        ));
                    }
                    match state.as_ref().map(|st| st.get(&id)) {
                        None => {}
                        Some(None) => {
                            problems.push(format!("token {id} is not in state/tokens.yaml: the bundle does not know this Secret"))
                        }
                        Some(Some(st)) => {
                            let mut differ = Vec::new();
                            if st.secret != t.secret {
                                differ.push("token-secret");
                            }
                            if st.expires != t.expires {
                                differ.push("expiration");
                            }
                            if st.usages != t.usages {
                                differ.push("usages");
                            }
                            if st.groups != t.groups {
                                differ.push("auth-extra-groups");
                            }
                            if !differ.is_empty() {
                                problems.push(format!("token {id}: {} differ from state/tokens.yaml", differ.join(", ")));
                            }
                        }
                    }
                    let ok = || {
                        let until = t.expires.map(rfc3339).unwrap_or_else(|| "never expires".into());
                        format!("token {id}: well-formed, the state's, valid until {until}")
                    };
                    let note = ok();
                    self.result(&s, &file, CHECK_TOKEN_SECRET, problems, || note);
                    t.from = file.clone();
                    in_manifests.insert(id.clone());
                    known.entry(id).or_insert(t);
                }
            }
        }
        if let Some(st) = state {
            for (id, t) in st {
                if !in_manifests.contains(&id) {
                    let file = format!("manifests/bootstrap-token-{id}.yaml");
                    let msg = format!("missing: token {id} of state/tokens.yaml has no bootstrap-token Secret, so the cluster will not know it; hint: re-run generate or kubebundle token create");
                    self.add(&s, Severity::Error, &file, CHECK_TOKEN_SECRET, msg);
                }
                // The state's token wins where both are there (a difference is reported above).
                known.insert(id, t);
            }
        }

        self.check_cluster_info(dir, facts, plan, &known);

        // The KubeletConfiguration that joining nodes get.
        for (file, bytes) in ["manifests/kubelet-config.yaml"].iter().filter_map(|f| std::fs::read(dir.join(f)).ok().map(|b| (*f, b))) {
            let scan = rules::scan(file, &bytes, &mut |_| None);
            let kubelet: Vec<&serde_json::Value> =
                scan.docs.iter().filter(|d| d.get("kind").and_then(|k| k.as_str()) == Some("KubeletConfiguration")).collect();
            if kubelet.is_empty() {
                self.add(&s, Severity::Error, file, CHECK_KUBELET, "no KubeletConfiguration in data.kubelet");
            }
            let problems: Vec<String> = kubelet.iter().flat_map(|d| rules::kubelet_problems(d)).collect();
            self.result(&s, file, CHECK_KUBELET, problems, || {
                "anonymous authentication off, Webhook authorization, no read-only port".into()
            });
        }

        // join.txt: the token it names.
        if let Ok(text) = std::fs::read_to_string(dir.join("join.txt")).map(Zeroizing::new) {
            let mut tokens: Vec<Zeroizing<String>> = Vec::new();
            for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
                let words: Vec<&str> = line.split_whitespace().collect();
                for (i, w) in words.iter().enumerate() {
                    for flag in ["--token", "--tls-bootstrap-token", "--discovery-token"] {
                        let value = if *w == flag {
                            words.get(i + 1).copied().unwrap_or_default()
                        } else if let Some(v) = w.strip_prefix(flag).and_then(|r| r.strip_prefix('=')) {
                            v
                        } else {
                            continue;
                        };
                        if !tokens.iter().any(|t| t.as_str() == value) {
                            tokens.push(Zeroizing::new(value.to_string()));
                        }
                    }
                }
            }
            if tokens.is_empty() {
                self.add(
                    &s,
                    Severity::Error,
                    "join.txt",
                    CHECK_JOIN_TOKEN,
                    "names no bootstrap token: there is no join command; hint: kubebundle token create --dir <bundle>",
                );
            }
            for t in &tokens {
                match token_status(t, &known, self.now, true) {
                    Ok(note) => self.add(&s, Severity::Ok, "join.txt", CHECK_JOIN_TOKEN, note),
                    Err(p) => self.add(&s, Severity::Error, "join.txt", CHECK_JOIN_TOKEN, p),
                }
            }
        }
        facts.tokens = Some(known);
    }

    fn check_cluster_info(&mut self, dir: &Path, facts: &BundleFacts, plan: Option<&PlanDoc>, known: &BTreeMap<String, KnownToken>) {
        let s = Scope { node: "-", prefix: "" };
        let file = "manifests/cluster-info.yaml";
        let bytes = match std::fs::read(dir.join(file)) {
            Ok(b) => b,
            Err(e) => {
                let msg = format!("cannot read ({e}): token discovery (kubeadm join --discovery-token-ca-cert-hash) needs cluster-info");
                self.add(&s, Severity::Error, file, CHECK_CLUSTER_INFO, msg);
                return;
            }
        };
        let docs = docs_of(&bytes);
        let Some(doc) = docs.iter().find(|d| d.get("kind").and_then(|k| k.as_str()) == Some("ConfigMap")) else {
            self.add(&s, Severity::Error, file, CHECK_CLUSTER_INFO, "not a ConfigMap");
            return;
        };
        let mut problems = Vec::new();
        let meta = |k: &str| doc.pointer(&format!("/metadata/{k}")).and_then(|v| v.as_str()).unwrap_or_default().to_string();
        if meta("name") != "cluster-info" || meta("namespace") != "kube-public" {
            problems.push(format!("is {}/{}, want kube-public/cluster-info (what kubeadm join reads)", meta("namespace"), meta("name")));
        }
        let data = doc.get("data").and_then(|d| d.as_object()).cloned().unwrap_or_default();
        let Some(kubeconfig) = data.get("kubeconfig").and_then(|k| k.as_str()) else {
            problems.push("no data.kubeconfig".into());
            self.result(&s, file, CHECK_CLUSTER_INFO, problems, String::new);
            return;
        };
        let mut notes = Vec::new();
        match parse_kubeconfig(kubeconfig.as_bytes()) {
            Err(e) => problems.push(format!("data.kubeconfig: {e}")),
            Ok(kc) => {
                // Its CA is the state's, which every node holds as ca.crt.
                let theirs = kc.ca.as_deref().map(CertInfo::all_from_pem);
                let want: Vec<(String, &CertInfo)> = match facts.state_cas.get("ca") {
                    Some(c) => vec![("state/pki/ca.crt".to_string(), c)],
                    None => facts.node_cas.iter().map(|(l, c)| (l.clone(), c)).collect(),
                };
                match theirs {
                    None => problems.push("data.kubeconfig has no certificate-authority-data".into()),
                    Some(Err(e)) => problems.push(format!("data.kubeconfig certificate-authority-data: {e}")),
                    Some(Ok(list)) => {
                        let rotating = facts.state_trust.get("ca").filter(|t| t.len() > 1);
                        if let Some(trust) = rotating {
                            if list.iter().map(|c| &c.der).eq(trust.iter().map(|c| &c.der)) {
                                notes.push("its CA data is the cluster CA's trust bundle of the rotation in progress".to_string());
                            } else {
                                problems.push(format!(
                                    "its certificate-authority-data is not the cluster CA's trust bundle of the rotation in progress ({} CAs): joining nodes would not trust both",
                                    trust.len()
                                ));
                            }
                        }
                        for (label, c) in want.iter().filter(|_| rotating.is_none()) {
                            if list.len() == 1 && list[0].der == c.der {
                                notes.push(format!("its CA is {label}"));
                            } else {
                                problems.push(format!(
                                    "its certificate-authority-data is not {label} (it holds {:?}): kubeadm join would check the discovery hash against another CA",
                                    list.first().map(|c| c.cn.as_str()).unwrap_or_default()
                                ));
                            }
                        }
                        if want.is_empty() {
                            problems.push("no state/pki/ca.crt or node ca.crt to compare its CA with".into());
                        }
                    }
                }
                // Its server is the controlPlaneEndpoint, which every API server certificate covers.
                if let Some(p) = plan {
                    let endpoint = format!("https://{}", p.control_plane_endpoint);
                    if kc.server == endpoint {
                        notes.push(format!("server {endpoint}"));
                    } else {
                        problems.push(format!(
                            "server is {:?}, the controlPlaneEndpoint gives {endpoint:?}: joining nodes would talk to another address",
                            kc.server
                        ));
                    }
                }
                if let Some((_, host)) = url_host(&kc.server) {
                    let bad: Vec<&str> = facts.apiservers.iter().filter(|(_, a)| !a.covers_host(&host)).map(|(l, _)| l.as_str()).collect();
                    if !bad.is_empty() {
                        problems.push(format!("server host {host} is not covered by {}", bad.join(", ")));
                    }
                } else {
                    problems.push(format!("server {:?} is not a URL", kc.server));
                }
            }
        }
        let ok = format!("kube-public/cluster-info: {}", notes.join(", "));
        self.result(&s, file, CHECK_CLUSTER_INFO, problems, || ok);
        // Every JWS verifies with its token.
        let mut signed = BTreeSet::new();
        for (key, value) in data.iter().filter_map(|(k, v)| k.strip_prefix("jws-kubeconfig-").map(|id| (id, v))) {
            let id = key;
            signed.insert(id.to_string());
            let value = value.as_str().unwrap_or_default();
            let shown = escape(id);
            match known.get(id) {
                None => self.add(
                    &s,
                    Severity::Error,
                    file,
                    CHECK_CLUSTER_INFO,
                    format!("jws-kubeconfig-{shown}: no token {shown} in state/tokens.yaml or manifests/, so nothing vouches for this signature"),
                ),
                Some(t) => {
                    let want = crate::pki::jws::detached(kubeconfig.as_bytes(), id, &t.secret);
                    if value == want {
                        self.add(&s, Severity::Ok, file, CHECK_CLUSTER_INFO, format!("jws-kubeconfig-{id} verifies with token {id}"));
                    } else {
                        self.add(
                            &s,
                            Severity::Error,
                            file,
                            CHECK_CLUSTER_INFO,
                            format!("jws-kubeconfig-{id} does not verify with token {id} (HS256 over data.kubeconfig): forged or stale, so kubeadm join with that token refuses cluster-info"),
                        );
                    }
                }
            }
        }
        for (id, t) in known {
            if t.usages.contains("signing") && !signed.contains(id) && t.expires.is_none_or(|e| e > self.now) {
                let msg = format!("no jws-kubeconfig-{id}: token discovery with token {id} fails until the bootstrap signer adds it");
                self.add(&s, Severity::Warning, file, CHECK_CLUSTER_INFO, msg);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(data: &[(&str, &str)]) -> serde_json::Value {
        let data: serde_json::Map<String, serde_json::Value> = data.iter().map(|(k, v)| (k.to_string(), B64.encode(v).into())).collect();
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "type": TOKEN_TYPE,
            "metadata": {"name": "bootstrap-token-abcdef", "namespace": "kube-system"}, "data": data,
        })
    }

    const GOOD: &[(&str, &str)] = &[
        ("token-id", "abcdef"),
        ("token-secret", "0123456789abcdef"),
        ("expiration", "2030-01-01T00:00:00Z"),
        ("usage-bootstrap-authentication", "true"),
        ("usage-bootstrap-signing", "true"),
        ("auth-extra-groups", "system:bootstrappers:kubeadm:default-node-token"),
    ];

    #[test]
    fn a_well_formed_secret_and_each_way_to_break_it() {
        let (id, t) = read_secret(&secret(GOOD), "bootstrap-token-abcdef").unwrap();
        assert_eq!((id.as_str(), t.secret.as_str(), t.usages.len()), ("abcdef", "0123456789abcdef", 2));
        let with = |k: &str, v: &str| {
            let mut d: Vec<(&str, &str)> = GOOD.iter().filter(|(x, _)| *x != k).copied().collect();
            if !v.is_empty() {
                d.push((k, v));
            }
            read_secret(&secret(&d), "bootstrap-token-abcdef").err().unwrap_or_default().join("; ")
        };
        assert!(with("token-id", "abc").contains("token-id is not 6 characters"));
        assert!(with("token-secret", "").contains("no token-secret"));
        assert!(with("expiration", "soon").contains("not an RFC 3339 time"));
        assert!(with("auth-extra-groups", "system:masters").contains("is not system:bootstrappers:"));
        assert!(with("auth-extra-groups", "system:bootstrappers:").contains("is not system:bootstrappers:"));
        assert!(with("usage-bootstrap-signing", "false").contains("only \"true\" enables it"));
        assert!(with("usage-bootstrap-root", "true").contains("unknown usage"));
        let mut d = secret(GOOD);
        d["metadata"]["namespace"] = "default".into();
        d["metadata"]["name"] = "bootstrap-token-zzzzzz".into();
        let p = read_secret(&d, "").unwrap_err().join("; ");
        assert!(p.contains("namespace is \"default\", want kube-system") && p.contains("want \"bootstrap-token-abcdef\""), "{p}");
        assert!(read_secret(&serde_json::json!("garbage"), "").is_err());
    }

    #[test]
    fn token_status_names_the_id_never_the_secret() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let mut known = BTreeMap::new();
        let (_, t) = read_secret(&secret(GOOD), "").unwrap();
        known.insert("abcdef".to_string(), KnownToken { from: "state/tokens.yaml".into(), ..t });
        assert!(token_status("abcdef.0123456789abcdef", &known, now, true).unwrap().starts_with("token abcdef, valid until 2030"));
        for (tok, want) in [
            ("abcdef.zzzzzzzzzzzzzzzz", "secret is not the one in state/tokens.yaml"),
            ("zzzzzz.0123456789abcdef", "token zzzzzz is in neither"),
            ("not a token", "not a bootstrap token"),
        ] {
            let e = token_status(tok, &known, now, true).unwrap_err();
            assert!(e.contains(want) && !e.contains("0123456789abcdef") && !e.contains("zzzzzzzzzzzzzzzz"), "{e}");
        }
        let later = OffsetDateTime::from_unix_timestamp(1_950_000_000).unwrap();
        assert!(token_status("abcdef.0123456789abcdef", &known, later, true).unwrap_err().contains("expired at 2030-01-01T00:00:00Z"));
    }
}
