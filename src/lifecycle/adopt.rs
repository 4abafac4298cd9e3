//! `kubebundle adopt`: builds a bundle's state from a running cluster kubebundle did not make,
//! out of one control plane's tree (a host root, its `/etc/kubernetes` or `/etc/k8s`, an
//! extracted tarball), read through the node-tree model like `certs check-expiration` reads it:
//! the CAs (with their keys where the tree holds them, else as external CAs; an intermediate with
//! the chain its file carries), the service-account key pair, the encryption keys the API server
//! reads, any bootstrap token the tree holds and, for the control plane the config names, its own
//! leaf certificates where they are what the plan wants. It writes `OUT/<clusterName>/state` as
//! `generate` would (its manifest recording every secret) plus `state/adopted.yaml`, which says
//! what was taken from which file (with the file's SHA-256), as one transaction under the
//! bundle's lock, and it only ever reads the tree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use zeroize::Zeroizing;

use super::LifecycleError;
use crate::bundle::output;
use crate::bundle::state::cluster::{self, ClusterRecord, EtcdRecord};
use crate::bundle::state::manifest as sm;
use crate::bundle::state::{self, EncryptionKey, Token};
use crate::clock::Clock;
use crate::config::{Config, EncryptionProvider, Host, TokenSpec};
use crate::pki::import::{self as input, ImportError, Input};
use crate::pki::issue::Authority;
use crate::pki::keys::Key;
use crate::tree::kubeconfig::Kubeconfig;
use crate::tree::node::{node_path, Mount, NodeTree, TreeError};
use crate::tree::target::{locate, Target};

/// What adopt writes beside the state's secrets: where each one came from.
pub const ADOPTED_FILE: &str = "adopted.yaml";

pub struct AdoptArgs {
    /// The control plane's tree: a host root, /etc/kubernetes or /etc/k8s, an extracted tarball.
    pub dir: PathBuf,
    /// OUT: the state goes to OUT/<clusterName>/state.
    pub out: PathBuf,
    /// The layout of `dir` (a built-in profile or a file); None: recognised.
    pub profile: Option<PathBuf>,
    /// Replace an existing bundle's state (kept in a backup).
    pub force: bool,
    /// The tree's API server encrypts nothing: record a new aescbc key anyway.
    pub new_encryption_key: bool,
    /// The certificates above the tree's CAs (PEM, any order, for any of them): the root of an
    /// intermediate CA is on no node.
    pub chain: Option<PathBuf>,
}

/// One thing the state took from the tree. Never a secret: the file's digest, not its content.
#[derive(Clone, Serialize)]
pub struct Source {
    /// What it is (`ca certificate`, `sa key`, `encryption key key1`, `bootstrap token abcdef`).
    pub what: String,
    /// The file it came from, as on disk (or `<tarball>:<path>`).
    pub file: String,
    /// SHA-256 (hex) of that file.
    pub sha256: String,
    /// Where it went in the state (relative to state/), or "" for nothing written.
    #[serde(rename = "stateFile")]
    pub state_file: String,
}

/// What adopt did, for the command's output.
pub struct Adopted {
    pub sources: Vec<Source>,
    pub lines: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AdoptedFile<'a> {
    adopted: String,
    tree: String,
    layout: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
    sources: &'a [Source],
}

fn input(msg: String) -> LifecycleError {
    LifecycleError::Input(msg)
}

/// The value of `--flag=VALUE` (or `--flag VALUE`) in a manifest, unit or patch.
fn flag_value(text: &str, flag: &str) -> Option<String> {
    let clean = |w: &str| w.trim_start_matches("- ").trim_matches(|c| c == '"' || c == '\'' || c == ',' || c == '\\').to_string();
    let words: Vec<String> = text.split_whitespace().map(clean).collect();
    let eq = format!("{flag}=");
    for (i, w) in words.iter().enumerate() {
        if let Some(v) = w.strip_prefix(&eq) {
            return Some(v.to_string());
        }
        if w == flag {
            return words.get(i + 1).cloned();
        }
    }
    None
}

/// The kube-apiserver's own files that say how it starts: its static pod manifest (kubeadm),
/// its unit (hardway, binary) and the kubeadm patch kubebundle ships.
const APISERVER_SPECS: [&str; 3] = ["etc/kubernetes/manifests/kube-apiserver.yaml", "kube-apiserver.service", "kube-apiserver-patch"];

/// The providers of an EncryptionConfiguration, per resource list, in order.
#[derive(serde::Deserialize)]
struct EncryptionConfiguration {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    resources: Vec<EncryptedResources>,
}

#[derive(serde::Deserialize)]
struct EncryptedResources {
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    providers: Vec<Provider>,
}

#[derive(serde::Deserialize)]
struct Provider {
    aescbc: Option<ProviderKeys>,
    aesgcm: Option<ProviderKeys>,
    secretbox: Option<ProviderKeys>,
    identity: Option<serde::de::IgnoredAny>,
    kms: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct ProviderKeys {
    #[serde(default)]
    keys: Vec<NamedSecret>,
}

#[derive(serde::Deserialize)]
struct NamedSecret {
    name: String,
    secret: String,
}

impl Drop for NamedSecret {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.secret.zeroize();
    }
}

impl Provider {
    fn name(&self) -> &'static str {
        match self {
            p if p.aescbc.is_some() => "aescbc",
            p if p.aesgcm.is_some() => "aesgcm",
            p if p.secretbox.is_some() => "secretbox",
            p if p.kms.is_some() => "kms",
            p if p.identity.is_some() => "identity",
            _ => "an unknown provider",
        }
    }
}

/// The encryption keys of an EncryptionConfiguration, when it has a shape `generate` writes
/// (secrets: entries of aescbc, aesgcm or secretbox with 32-byte keys, each provider once, then
/// identity or nothing): every key with its provider, in order (the first one encrypts). Anything
/// else is refused with what differs: the state could not reproduce it, and a control plane
/// generate makes would then store Secrets differently from the running ones.
fn encryption_keys(bytes: &[u8], shown: &str) -> Result<Vec<EncryptionKey>, LifecycleError> {
    let text = std::str::from_utf8(bytes).map_err(|_| input(format!("{shown}: not text, so not an EncryptionConfiguration")))?;
    let conf: EncryptionConfiguration = serde_saphyr::from_str(text)
        .map_err(|e| input(format!("{shown}: not an EncryptionConfiguration ({})", e.to_string().lines().next().unwrap_or_default())))?;
    if conf.kind != "EncryptionConfiguration" {
        return Err(input(format!("{shown}: kind is {:?}, not EncryptionConfiguration", conf.kind)));
    }
    let hint = "  hint: adopt takes the shapes generate and rotate write (resources: [secrets], providers: aescbc, aesgcm or secretbox with 32-byte keys, each provider once, then identity); make the cluster's configuration that shape first (lifecycle.md §6 orders such a change), then adopt again";
    let [res] = conf.resources.as_slice() else {
        return Err(input(format!("{shown}: {} resource lists; adopt takes one, for secrets\n{hint}", conf.resources.len())));
    };
    if res.resources != ["secrets"] {
        return Err(input(format!("{shown}: resources[0].resources is {:?}; adopt takes [secrets] alone\n{hint}", res.resources)));
    }
    let names: Vec<&str> = res.providers.iter().map(Provider::name).collect();
    let keyed = names.strip_suffix(&["identity"]).unwrap_or(&names);
    let local = |n: &&str| EncryptionProvider::parse(n).is_some();
    let once = keyed.iter().enumerate().all(|(i, n)| !keyed[..i].contains(n));
    if keyed.is_empty() || !keyed.iter().all(local) || !once {
        let what = match names.first() {
            Some(&"identity") => "identity comes first: the API servers store Secrets unencrypted".to_string(),
            _ => format!("the providers are {}", names.join(", ")),
        };
        return Err(input(format!("{shown}: {what}; the state holds keys of aescbc, aesgcm or secretbox, each provider once, listed first (then identity)\n{hint}")));
    }
    let mut out: Vec<EncryptionKey> = Vec::new();
    for (p, name) in res.providers.iter().zip(keyed) {
        let provider = EncryptionProvider::parse(name).unwrap_or_default();
        let keys = [&p.aescbc, &p.aesgcm, &p.secretbox].into_iter().flatten().flat_map(|k| k.keys.iter()).collect::<Vec<_>>();
        if keys.is_empty() {
            return Err(input(format!("{shown}: {name} has no keys\n{hint}")));
        }
        for k in keys {
            if sm::decode_secret(&k.secret).is_none() {
                return Err(input(format!(
                    "{shown}: {name} key {:?} is not base64 of 32 bytes; the state holds 32-byte keys only\n{hint}",
                    k.name
                )));
            }
            if out.iter().any(|o| o.name == k.name) {
                return Err(input(format!("{shown}: two keys are named {:?}\n{hint}", k.name)));
            }
            out.push(EncryptionKey { name: k.name.clone(), secret: k.secret.clone(), provider });
        }
    }
    Ok(out)
}

/// The SANs of the first certificate in `pem_bytes`: (DNS names, IP addresses).
fn sans(pem_bytes: &[u8]) -> Option<(Vec<String>, Vec<std::net::IpAddr>)> {
    use x509_parser::prelude::GeneralName;
    let block = pem::parse_many(pem_bytes).ok()?.into_iter().find(|b| b.tag() == "CERTIFICATE")?;
    let (_, cert) = x509_parser::parse_x509_certificate(block.contents()).ok()?;
    let (mut dns, mut ips) = (Vec::new(), Vec::new());
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                GeneralName::IPAddress(b) if b.len() == 4 => ips.push(std::net::IpAddr::from(<[u8; 4]>::try_from(*b).ok()?)),
                GeneralName::IPAddress(b) if b.len() == 16 => ips.push(std::net::IpAddr::from(<[u8; 16]>::try_from(*b).ok()?)),
                _ => {}
            }
        }
    }
    Some((dns, ips))
}

fn host_in(host: &Host, (dns, ips): &(Vec<String>, Vec<std::net::IpAddr>)) -> bool {
    match host {
        Host::Ip(ip) => ips.contains(ip),
        Host::Dns(d) => dns.iter().any(|n| n.eq_ignore_ascii_case(d)),
    }
}

fn host_text(host: &Host) -> String {
    match host {
        Host::Ip(ip) => ip.to_string(),
        Host::Dns(d) => d.clone(),
    }
}

/// Reads the control plane's tree as the lifecycle commands do.
fn read_tree(args: &AdoptArgs) -> Result<NodeTree, LifecycleError> {
    let dir = &args.dir;
    let shown = dir.display().to_string();
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(input(format!(
                "--dir {shown} is not a directory\n  hint: give a control plane's root (/), its /etc/kubernetes or /etc/k8s, or a directory its tarball was extracted into"
            )))
        }
        Err(e) => return Err(input(format!("--dir {shown}: {}", crate::util::io_words(&e)))),
    }
    let candidates = crate::lifecycle::expiry::candidates(args.profile.as_deref()).map_err(|e| input(format!("--profile: {e}")))?;
    let mount = match locate(dir) {
        Target::Bundle(b) => {
            return Err(input(format!(
                "--dir {}: a kubebundle bundle, which has a state already\n  hint: adopt reads a running control plane's tree; a bundle's state is used as it is (generate, state restore)",
                b.display()
            )))
        }
        Target::BundleNode { dir, .. } => Mount::root(&dir),
        Target::Host(m) => m,
    };
    NodeTree::read_host(mount, None, &candidates).map_err(|e| match e {
        TreeError::Unrecognised { path, why } => input(format!(
            "--dir {path}: {why}\n  hint: give a control plane's root (/), its /etc/kubernetes or /etc/k8s, or a directory its tarball was extracted into; --profile names the layout when it is none of the built-in ones"
        )),
        TreeError::Read { path, why } => LifecycleError::Refused(format!("cannot read {path}: {why}")),
    })
}

/// The bytes of `artifact` in the tree, with its path; a file the tree names but cannot read is
/// refused (exit 1: the command ran and could not read it).
fn artifact<'t>(tree: &'t NodeTree, artifact: &str) -> Result<Option<(String, &'t [u8])>, LifecycleError> {
    if let Some((p, f)) = tree.artifact(artifact) {
        return Ok(Some((p.to_string(), &f.bytes[..])));
    }
    if let Some((p, why)) = tree.layout.paths_of(artifact).find_map(|p| tree.problems.iter().find(|(q, _)| q == p)) {
        return Err(LifecycleError::Refused(format!(
            "{}: {why}; nothing was written\n  hint: run adopt as a user that can read the control plane's keys (root), or copy the tree somewhere readable first",
            tree.show(p)
        )));
    }
    Ok(None)
}

fn text<'a>(bytes: &'a [u8], shown: &str, what: &str) -> Result<&'a str, LifecycleError> {
    std::str::from_utf8(bytes).map_err(|_| input(format!("{shown}: not PEM text, so not {what}")))
}

/// Checks that the config describes the cluster of the tree: the cluster's name and API server
/// endpoint its admin kubeconfig holds, the endpoint and the `kubernetes` Service IP among the
/// API server certificate's SANs, and stacked or external etcd. Each mismatch names both sides.
fn check_config(config: &Config, tree: &NodeTree, dir: &Path) -> Result<(), LifecycleError> {
    let mut wrong = Vec::new();
    let src = &config.source;
    if let Some((p, bytes)) = artifact(tree, "admin.conf")? {
        let shown = tree.show(&p);
        let kc = Kubeconfig::parse(bytes).map_err(|e| input(format!("{shown}: {e}")))?;
        let cluster = kc
            .current_context
            .as_deref()
            .and_then(|c| kc.contexts.iter().find(|x| x.name == c))
            .and_then(|c| kc.clusters.iter().find(|x| x.name == c.context.cluster))
            .or_else(|| kc.clusters.first());
        if let Some(c) = cluster {
            if c.name != config.cluster_name {
                wrong.push(format!(
                    "{src}: ClusterConfiguration.clusterName is {:?}, but {shown} names the cluster {:?} (clusters[].name)",
                    config.cluster_name, c.name
                ));
            }
            let want = config.control_plane_endpoint.url();
            if c.cluster.server.trim_end_matches('/') != want {
                let field = if config.endpoint_defaulted {
                    "the API server endpoint (no controlPlaneEndpoint: the init node's address and bindPort)"
                } else {
                    "ClusterConfiguration.controlPlaneEndpoint"
                };
                wrong.push(format!(
                    "{src}: {field} gives {want}, but {shown} reaches the API server at {} (clusters[].cluster.server)",
                    c.cluster.server
                ));
            }
        }
    }
    if let Some((p, bytes)) = artifact(tree, "apiserver.crt")? {
        let shown = tree.show(&p);
        if let Some(names) = sans(bytes) {
            let host = &config.control_plane_endpoint.host;
            if !host_in(host, &names) {
                wrong.push(format!(
                    "{src}: the API server endpoint {} is not among the SANs of {shown}: nodes joining it would refuse its certificate",
                    host_text(host)
                ));
            }
            let service_ip = config.api_service_ip();
            if !names.1.contains(&service_ip) {
                wrong.push(format!(
                    "{src}: ClusterConfiguration.networking.serviceSubnet {} gives the kubernetes Service IP {service_ip}, which {shown} does not hold among its SANs (it has {})",
                    config.service_subnets.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(","),
                    names.1.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
    let etcd_ca = tree.artifact("etcd-ca.crt").map(|(p, _)| tree.show(p));
    let etcd_member = tree.artifact("etcd-server.crt").map(|(p, _)| tree.show(p));
    match (config.local_etcd(), etcd_ca, etcd_member) {
        (true, None, _) => wrong.push(format!(
            "{src}: ClusterConfiguration.etcd is local (stacked), but the tree holds no etcd CA ({})",
            tree.layout.path_of("etcd-ca.crt").map(|p| tree.show(p)).unwrap_or_else(|| "etcd-ca.crt".into())
        )),
        (false, _, Some(member)) => wrong.push(format!(
            "{src}: ClusterConfiguration.etcd is external, but the tree is a stacked etcd member ({member}): give the config its etcd.local"
        )),
        _ => {}
    }
    if !wrong.is_empty() {
        return Err(input(format!(
            "{} does not describe the cluster of {}; nothing was written:\n  - {}\n  hint: adopt with the kubeadm config the cluster was made with (kubectl -n kube-system get cm kubeadm-config -o jsonpath='{{.data.ClusterConfiguration}}'), plus an Inventory naming its nodes; nodes generated from another config would not join it",
            config.source,
            dir.display(),
            wrong.join("\n  - ")
        )));
    }
    Ok(())
}

/// The tree's EncryptionConfiguration: the one the API server's `--encryption-provider-config`
/// names (static pod manifest, unit, kubeadm patch), else the layout's own place. None when the
/// API server reads none.
fn find_encryption(tree: &mut NodeTree) -> Result<Option<(String, String)>, LifecycleError> {
    for spec in APISERVER_SPECS {
        let rel = match tree.layout.path_of(spec) {
            Some(p) => p.to_string(),
            None if spec.contains('/') => spec.to_string(),
            None => continue,
        };
        tree.read_named(&rel, "the kube-apiserver");
        let Some(f) = tree.get(&rel) else { continue };
        let Some(path) = flag_value(&String::from_utf8_lossy(&f.bytes), "--encryption-provider-config") else { continue };
        let Some(target) = node_path("", &path) else {
            return Err(input(format!("{}: --encryption-provider-config={path} is not a path kubebundle can follow", tree.show(&rel))));
        };
        tree.read_named(&target, &rel);
        return Ok(Some((target, tree.show(&rel))));
    }
    if let Some((p, _)) = tree.artifact("encryption-config") {
        return Ok(Some((p.to_string(), "the layout".into())));
    }
    Ok(None)
}

/// Bootstrap tokens the tree holds: a bootstrap kubeconfig's user token, a kubeadm join
/// configuration's discovery and TLS bootstrap tokens.
fn find_tokens(tree: &NodeTree) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut add = |token: &str, path: &str| {
        if crate::pki::token::is_valid(token) && !out.iter().any(|(t, _)| t == token) {
            out.push((token.to_string(), path.to_string()));
        }
    };
    if let Some((p, f)) = tree.artifact("bootstrap-kubelet.conf") {
        if let Ok(kc) = Kubeconfig::parse(&f.bytes) {
            for u in &kc.users {
                if let Some(t) = u.user.token.as_deref() {
                    add(t, p);
                }
            }
        }
    }
    if let Some((p, f)) = tree.artifact("kubeadm-join") {
        for line in String::from_utf8_lossy(&f.bytes).lines() {
            let l = line.trim();
            for key in ["token:", "tlsBootstrapToken:"] {
                if let Some(v) = l.strip_prefix(key) {
                    add(v.trim().trim_matches(|c| c == '"' || c == '\''), p);
                }
            }
        }
    }
    out
}

/// The control plane of `config` the tree is: the one its kubelet certificate names, else the
/// one whose name and address the API server certificate's SANs hold.
fn own_node(config: &Config, tree: &NodeTree) -> Option<String> {
    if let Some(n) = tree.name.as_deref().and_then(|name| config.control_planes().find(|n| n.name == name)) {
        return Some(n.name.clone());
    }
    let names = tree.artifact("apiserver.crt").and_then(|(_, f)| sans(&f.bytes))?;
    config.control_planes().find(|n| names.1.contains(&n.address) && names.0.contains(&n.name)).map(|n| n.name.clone())
}

/// The tree's leaf certificates (with their keys) that are what the plan wants for `node`, as
/// leaf records: generate keeps each one as it is (`bundle::reuse::judge` decides, as for a
/// record of its own). The others are left out, and generate issues them anew with new keys;
/// the lines say which and why.
fn import_leaves(
    config: &Config,
    tree: &NodeTree,
    node: &str,
    authorities: &BTreeMap<String, Authority>,
    clock: &Clock,
) -> Result<(state::LeafRecords, Vec<String>), LifecycleError> {
    use crate::tree::certs::Place;
    let plan = crate::bundle::pipeline::make_plan(config).map_err(|e| input(e.to_string()))?;
    let specs = plan.leaf_certificates();
    let mut records = state::LeafRecords::new();
    let (mut kept, mut anew) = (Vec::new(), Vec::new());
    for site in tree.certificates() {
        let Some(entry) = site.entry.filter(|_| !site.is_ca && !site.rotated) else { continue };
        let Some(ca) = site.ca.and_then(|c| authorities.get(c)) else { continue };
        let Some(spec) = specs.iter().find(|s| s.id == entry.id && s.node.as_deref() == Some(node)) else {
            anew.push(format!("{} ({}: not in the plan for {node})", entry.id, tree.show(site.place.path())));
            continue;
        };
        let key = match &site.place {
            Place::File { key: Some(k), .. } | Place::Referenced { key: Some(k), .. } => tree.get(k).map(|f| f.bytes.to_vec()),
            Place::Embedded { conf } => tree
                .get(conf)
                .and_then(|f| Kubeconfig::parse(&f.bytes).ok())
                .and_then(|kc| kc.current_user().and_then(|u| u.client_key_data.clone()))
                .and_then(|d| crate::tree::kubeconfig::decode("client-key-data", Some(&d)).ok().flatten()),
            _ => None,
        };
        let (Some(key), Ok(cert)) = (key.and_then(|k| String::from_utf8(k).ok()), tree.cert_pem(&site)) else {
            anew.push(format!("{} ({}: its key is not beside it)", entry.id, tree.show(site.place.path())));
            continue;
        };
        let Some(block) = pem::parse_many(&cert).ok().and_then(|b| b.into_iter().find(|b| b.tag() == "CERTIFICATE")) else { continue };
        let not_before =
            x509_parser::parse_x509_certificate(block.contents()).map(|(_, c)| c.validity().not_before.timestamp()).unwrap_or(0);
        let record = state::LeafRecord {
            key_pem: Zeroizing::new(key),
            issued: not_before,
            cert_pem: Some(crate::pki::keys::pem_encode("CERTIFICATE", block.contents())),
        };
        match crate::bundle::reuse::judge(spec, &record, ca, config, clock) {
            Ok(Some(_)) => {
                kept.push(entry.id.to_string());
                records.insert((node.to_string(), entry.id.to_string()), record);
            }
            Ok(None) => anew.push(format!(
                "{} (its subject, SANs, usages, key algorithm or validity period is not what the plan wants, or it ends within 30 days)",
                entry.id
            )),
            Err(bad) => anew.push(format!("{} ({})", entry.id, bad.message)),
        }
    }
    let mut lines = Vec::new();
    if !kept.is_empty() {
        lines.push(format!("leaf certificates of {node} taken as they are (generate packs them unchanged): {}", kept.join(", ")));
    }
    if !anew.is_empty() {
        lines.push(format!("leaf certificates of {node} generate issues anew, with new keys: {}", anew.join("; ")));
    }
    Ok((records, lines))
}

/// `kubebundle adopt`.
pub fn adopt(config: &Config, args: &AdoptArgs, clock: &Clock) -> Result<Adopted, LifecycleError> {
    let mut tree = read_tree(args)?;
    let roles = tree.roles();
    let layout_name = tree.layout.profile.clone();
    if !roles.contains("control-plane") {
        return Err(input(format!(
            "--dir {}: a {} node of the {layout_name} layout without an API server certificate ({}), so not a control plane's: it holds no service-account key and no CA key\n  hint: give the tree of a control plane",
            args.dir.display(),
            roles.iter().cloned().collect::<Vec<_>>().join(", "),
            tree.layout.path_of("apiserver.crt").map(|p| tree.show(p)).unwrap_or_default()
        )));
    }
    check_config(config, &tree, &args.dir)?;
    let mut lines = Vec::new();
    let now = crate::clock::rfc3339(clock.now);
    let mut sources: Vec<Source> = Vec::new();
    let mut files: Vec<(String, Zeroizing<Vec<u8>>)> = Vec::new();
    let mut m = sm::Manifest::default();
    let source = |what: String, shown: String, bytes: &[u8], state_file: &str| Source {
        what,
        file: shown,
        sha256: sm::sha256_hex(bytes),
        state_file: state_file.to_string(),
    };

    // The CAs: each one's certificate (its chain after it, if any) and its key where the layout
    // keeps it; a CA without its key is an external CA.
    let leaves_end = clock.now + config.cert_validity;
    let words = format!("certificateValidityPeriod {} from now", crate::util::duration::format_go(config.cert_validity));
    let mut external = Vec::new();
    let mut ca_spki = Vec::new();
    let mut authorities: BTreeMap<String, Authority> = BTreeMap::new();
    // The issuers above an intermediate CA: --chain (its root is on no node), and the ones the
    // tree's serving certificates carry after themselves (kubebundle's and kubeadm's layouts).
    let mut chain_text = match &args.chain {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| input(format!("--chain {}: cannot be read as PEM text ({})", p.display(), crate::util::io_words(&e))))?,
        None => String::new(),
    };
    for serving in ["apiserver.crt", "etcd-server.crt", "etcd-peer.crt", "kubelet-serving.crt"] {
        if let Some((_, f)) = tree.artifact(serving) {
            let blocks = pem::parse_many(&f.bytes[..]).unwrap_or_default();
            chain_text.extend(
                blocks
                    .iter()
                    .skip(1)
                    .filter(|b| b.tag() == "CERTIFICATE")
                    .map(|b| crate::pki::keys::pem_encode("CERTIFICATE", b.contents())),
            );
        }
    }
    let chain_name = match &args.chain {
        Some(p) => format!("--chain {} (with the certificates the tree's serving certificates carry)", p.display()),
        None => "the certificates the tree's serving certificates carry".to_string(),
    };
    for id in crate::lifecycle::ca::CA_IDS {
        if id == "etcd-ca" && !config.local_etcd() {
            continue;
        }
        let Some((crt_rel, crt_bytes)) = artifact(&tree, &format!("{id}.crt"))? else {
            return Err(input(format!(
                "--dir {}: the tree holds no {id} certificate ({}), which a control plane of the {layout_name} layout holds\n  hint: give a control plane's whole tree",
                args.dir.display(),
                tree.layout.path_of(&format!("{id}.crt")).map(|p| tree.show(p)).unwrap_or_else(|| format!("{id}.crt"))
            )));
        };
        let crt_shown = tree.show(&crt_rel);
        let key = artifact(&tree, &format!("{id}.key"))?;
        let key_shown = key.as_ref().map(|(p, _)| tree.show(p)).unwrap_or_default();
        let cert_text = text(crt_bytes, &crt_shown, "a CA certificate")?;
        let key_text = key.as_ref().map(|(_, b)| text(b, &key_shown, "a private key")).transpose()?;
        let ca = input::read_ca(
            &Input { name: &crt_shown, text: cert_text },
            key_text.map(|t| Input { name: &key_shown, text: t }).as_ref(),
            (!chain_text.is_empty()).then_some(Input { name: &chain_name, text: &chain_text }).as_ref(),
            None,
            leaves_end,
            &words,
        )
        .map_err(|e| match e {
            ImportError::Input(m) => {
                input(m.replace("give the CA certificate as the signer wrote it", "give the tree the cluster runs with"))
            }
        })?;
        let (crt, keyp) = state::ca_paths(id);
        let spki = x509_parser::parse_x509_certificate(&ca.cert_der).map(|(_, c)| c.public_key().raw.to_vec()).unwrap_or_default();
        files.push((crt.clone(), Zeroizing::new(ca.cert_pem.clone().into_bytes())));
        sources.push(source(format!("{id} certificate"), crt_shown.clone(), crt_bytes, &crt));
        match (&ca.key_pem, &key) {
            (Some(k), Some((_, bytes))) => {
                m.record(sm::key_entry(id, &keyp, k.as_bytes(), &spki, &now));
                files.push((keyp.clone(), Zeroizing::new(k.as_bytes().to_vec())));
                sources.push(source(format!("{id} key"), key_shown.clone(), bytes, &keyp));
            }
            _ => {
                m.record(sm::external_entry(id, &crt, ca.cert_pem.as_bytes(), &spki, &now));
                let place = match tree.ca_key(id) {
                    crate::tree::certs::CaKey::Absent(p) => format!("not at {}, where the {layout_name} layout keeps it", tree.show(&p)),
                    _ => format!("the {layout_name} layout keeps it on no node"),
                };
                external.push(format!(
                    "{id}: its key is {place}: recorded as an external CA (generate writes CSRs for its certificates; with the key, `kubebundle ca import {id} --cert {} --key KEY --config ...` makes it a CA the bundle signs with)",
                    args.out.join(&config.cluster_name).join("state").join(&crt).display()
                ));
            }
        }
        if !ca.chain.is_empty() {
            let chain_rel = state::ca_chain_path(id);
            files.push((chain_rel.clone(), Zeroizing::new(ca.chain_pem().into_bytes())));
            sources.push(source(
                format!("{id} chain ({} certificate(s) up to its root)", ca.chain.len()),
                crt_shown.clone(),
                crt_bytes,
                &chain_rel,
            ));
        }
        let auth = match &ca.key_pem {
            Some(k) => Key::from_pem(k).map_err(|e| e.to_string()).and_then(|k| Authority::from_pem(id, &ca.cert_pem, k)),
            None => Authority::external(id, &ca.cert_pem),
        };
        let mut auth = auth.map_err(|e| input(format!("{crt_shown}: {e}")))?;
        auth.chain = ca.chain.clone();
        authorities.insert(id.to_string(), auth);
        ca_spki.push((id, spki));
    }

    // The service-account key pair.
    let Some((sa_rel, sa_bytes)) = artifact(&tree, "sa.key")? else {
        return Err(input(format!(
            "--dir {}: the tree holds no service-account key ({}), which every control plane of the {layout_name} layout holds\n  hint: give a control plane's whole tree",
            args.dir.display(),
            tree.layout.path_of("sa.key").map(|p| tree.show(p)).unwrap_or_else(|| "sa.key".into())
        )));
    };
    let sa_shown = tree.show(&sa_rel);
    let sa_text = text(sa_bytes, &sa_shown, "a private key")?;
    let sa = Key::from_pem(sa_text).map_err(|e| {
        input(format!("{sa_shown}: not an RSA or ECDSA private key ({e})\n  hint: the kube-controller-manager's --service-account-private-key-file is the file to give"))
    })?;
    m.record(sm::key_entry("sa", sm::SA_KEY, sa_text.as_bytes(), &sa.spki_der(), &now));
    files.push((sm::SA_KEY.into(), Zeroizing::new(sa_text.as_bytes().to_vec())));
    sources.push(source("sa key".into(), sa_shown.clone(), sa_bytes, sm::SA_KEY));
    match artifact(&tree, "sa.pub")? {
        Some((p, bytes)) => {
            if sm::public_key_der(bytes).as_deref() != Some(sa.spki_der().as_slice()) {
                return Err(input(format!(
                    "{}: not the public key of {sa_shown}: the API server would verify tokens with another key than the one that signs them\n  hint: make it the key's own (`openssl pkey -in {sa_shown} -pubout`), or give the tree the cluster really runs with",
                    tree.show(&p)
                )));
            }
            sources.push(source("sa public key".into(), tree.show(&p), bytes, sm::SA_PUB));
        }
        None => lines.push(format!("sa.pub: none in the tree; derived from {sa_shown}")),
    }
    files.push((sm::SA_PUB.into(), Zeroizing::new(sa.public_pem().into_bytes())));

    // The encryption keys, from where the API server reads them.
    let keys = match find_encryption(&mut tree)? {
        Some((rel, named_by)) => {
            let shown = tree.show(&rel);
            let Some(f) = tree.get(&rel) else {
                let why = tree.problems.iter().find(|(p, _)| *p == rel).map(|(_, w)| w.clone()).unwrap_or_else(|| "missing".into());
                return Err(LifecycleError::Refused(format!(
                    "{shown} ({named_by} names it as --encryption-provider-config): {why}; nothing was written\n  hint: without it every Secret of the cluster would be unreadable to the control planes generate makes; run adopt where it can be read (as root)"
                )));
            };
            let keys = encryption_keys(&f.bytes, &shown)?;
            for k in &keys {
                let what = format!("encryption key {} ({})", k.name, k.provider.name());
                sources.push(source(what, shown.clone(), &f.bytes, state::ENCRYPTION_FILE));
            }
            keys
        }
        None if args.new_encryption_key => {
            let bytes = crate::pki::source::new_secret32(config.seed.as_deref(), "encryption/key1");
            let secret = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes.as_ref());
            lines.push(
                "encryption: the API server reads no --encryption-provider-config; made a new aescbc key key1 (--new-encryption-key): the control planes generate makes encrypt Secrets with it, so every running control plane must take the bundle's encryption configuration before one of them starts"
                    .into(),
            );
            vec![EncryptionKey { name: "key1".into(), secret, provider: EncryptionProvider::Aescbc }]
        }
        None => {
            let looked: Vec<String> = APISERVER_SPECS
                .iter()
                .filter_map(|s| if s.contains('/') { Some(tree.show(s)) } else { tree.layout.path_of(s).map(|p| tree.show(p)) })
                .collect();
            return Err(input(format!(
                "--dir {}: the kube-apiserver reads no --encryption-provider-config (looked in {}): the cluster stores Secrets unencrypted, and generate would give the control planes it makes an encryption key the running API servers do not have; nothing was written\n  hint: give --new-encryption-key to record a new aescbc key, knowing that every running control plane must take the bundle's encryption configuration before a new one starts (a cluster with one control plane: deploy its tarball); or enable encryption at rest on the cluster first and adopt again",
                args.dir.display(),
                looked.join(", ")
            )));
        }
    };
    for k in &keys {
        m.record(sm::encryption_entry(&k.name, &k.secret, &now));
    }
    files.push((state::ENCRYPTION_FILE.into(), Zeroizing::new(state::encryption_file_text(&keys).into_bytes())));

    // Bootstrap tokens: the tree tells nothing of their expiry, so they get kubeadm's default
    // time to live from now (the Secret manifest generate writes sets it on the cluster).
    let found = find_tokens(&tree);
    if found.is_empty() {
        lines.push("bootstrap tokens: none in the tree; generate makes new ones (short-lived: 24h unless the config's bootstrapTokens say otherwise), whose Secrets are manifests/bootstrap-token-<id>.yaml, to apply to the cluster".into());
    } else {
        let spec = TokenSpec::kubeadm_default();
        let mut usages = spec.usages.clone();
        usages.sort();
        let expires = crate::clock::rfc3339(clock.now + crate::config::DEFAULT_TOKEN_TTL);
        let tokens: Vec<Token> = found
            .iter()
            .map(|(t, _)| Token {
                token: t.clone(),
                description: None,
                expires: Some(expires.clone()),
                usages: usages.clone(),
                groups: spec.groups.clone(),
                from_config: false,
                created: false,
            })
            .collect();
        for (t, p) in &found {
            let id = t.split('.').next().unwrap_or_default();
            let bytes = tree.get(p).map(|f| f.bytes.to_vec()).unwrap_or_default();
            sources.push(source(format!("bootstrap token {id}"), tree.show(p), &bytes, state::TOKENS_FILE));
            lines.push(format!(
                "bootstrap token {id}: recorded with kubeadm's usages and groups, expiring {expires} (the tree does not say when the cluster's Secret ends; apply manifests/bootstrap-token-{id}.yaml after generate so the cluster agrees)"
            ));
        }
        files.push((state::TOKENS_FILE.into(), Zeroizing::new(state::tokens_yaml(&tokens)?.into_bytes())));
    }

    // The control plane the tree belongs to keeps its own leaf certificates where they are what
    // the plan wants for it: generate then packs them as they are.
    let node = own_node(config, &tree);
    if let Some(n) = &node {
        lines.push(format!("the tree is control plane {n} of {} (its kubelet certificate, or its name and address among its API server certificate's SANs)", config.source));
    }
    let (records, leaf_lines) = match &node {
        Some(name) => import_leaves(config, &tree, name, &authorities, clock)?,
        None => (state::LeafRecords::new(), vec![format!(
            "leaf certificates: the tree's node is none of the control planes of {} (neither its kubelet certificate nor its API server certificate's SANs name one), so none is taken: generate issues every node its own",
            config.source
        )]),
    };
    if !records.is_empty() {
        files.push((state::LEAVES_FILE.into(), Zeroizing::new(state::leaves_json(&records))));
        for (n, id) in records.keys() {
            if let Some(site) = tree.certificates().into_iter().find(|s| s.entry.is_some_and(|e| e.id == id.as_str())) {
                let path = site.place.path().to_string();
                let bytes = tree.get(&path).map(|f| f.bytes.to_vec()).unwrap_or_default();
                sources.push(source(format!("leaf {n}/{id}"), tree.show(&path), &bytes, state::LEAVES_FILE));
            }
        }
    }
    lines.extend(leaf_lines);

    // Which cluster this is, its init node and the etcd members that run: every etcd node of the
    // config is taken as a running member (nodes added by later runs join it).
    let etcd_nodes: Vec<(String, String)> = config
        .nodes
        .iter()
        .filter(|n| n.roles.etcd && config.local_etcd())
        .map(|n| (n.name.clone(), cluster::peer_url(n.address)))
        .collect();
    let record = ClusterRecord {
        cluster_name: config.cluster_name.clone(),
        init_node: Some(config.first_control_plane().name.clone()),
        etcd: (!etcd_nodes.is_empty()).then(|| EtcdRecord { formed: true, members: cluster::founding(&etcd_nodes) }),
    };
    files.push((state::MARKER_FILE.into(), Zeroizing::new(record.text().into_bytes())));
    files.push((sm::MANIFEST_FILE.into(), Zeroizing::new(m.text().into_bytes())));
    let adopted = AdoptedFile {
        adopted: now.clone(),
        tree: args.dir.display().to_string(),
        layout: &layout_name,
        node: node.as_deref().or(tree.name.as_deref()),
        sources: &sources,
    };
    let header = "# Written by `kubebundle adopt`: the files this state was built from (no secret is in this file).\n";
    let body = serde_saphyr::to_string(&adopted).map_err(|e| LifecycleError::Refused(format!("cannot write {ADOPTED_FILE}: {e}")))?;
    files.push((ADOPTED_FILE.into(), Zeroizing::new(format!("{header}{body}").into_bytes())));

    // The bundle: refused when it exists (unless --force), checked before the lock file is made
    // (a refusal writes nothing), and again under it.
    let cluster_dir = args.out.join(&config.cluster_name);
    let existing = |dir: &Path| std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(false);
    output::check_owner(&cluster_dir, &config.cluster_name)?;
    let refuse_existing = || {
        LifecycleError::Refused(format!(
            "{} already holds a bundle of cluster {:?} (its state/ has its own CAs and keys); nothing was written\n  hint: adopt into another --out; or give --force to replace that state with the adopted one (the old state is kept in {}/kubebundle-backup-<time>/state/, and the bundle's other files are dropped: the next generate writes them anew)",
            cluster_dir.display(),
            config.cluster_name,
            args.out.display()
        ))
    };
    if existing(&cluster_dir) && !args.force {
        return Err(refuse_existing());
    }
    let lock = output::lock(&args.out, &config.cluster_name)?;
    let real = lock.dir().to_path_buf();
    output::check_owner(&real, &config.cluster_name)?;
    let had = existing(&real);
    if had && !args.force {
        return Err(refuse_existing());
    }
    output::sweep_around(&cluster_dir);
    let parent = real.parent().unwrap_or(&args.out).to_path_buf();
    let staging = output::stage(&parent, &real.file_name().unwrap_or_default().to_string_lossy())?;
    let sroot = staging.path().join("state");
    for (rel, bytes) in &files {
        let path = sroot.join(rel);
        if let Some(dir) = path.parent() {
            output::make_dirs(dir, 0o700)?;
        }
        output::write_file(&path, bytes, 0o600)?;
    }
    let mut done = Vec::new();
    if had && real.join("state").is_dir() {
        // --force: the old state is kept whole beside the bundle, as `generate --force` keeps it.
        let staged = output::PrivateDir::new(&parent, ".kubebundle-backup-")?;
        output::copy_tree(&real.join("state"), &staged.path().join("state"))?;
        let backup = staged.publish_backup(&parent, clock.now)?;
        let shown = args.out.join(backup.file_name().unwrap_or_default());
        done.push(format!(
            "replaced the state of {} (--force): the previous one is kept in {}",
            cluster_dir.display(),
            shown.join("state").display()
        ));
    }
    output::commit(staging, &real)?;
    lock.keep();

    let state_dir = cluster_dir.join("state");
    done.push(format!(
        "adopted cluster {:?} from {} ({layout_name} layout{}) into {}",
        config.cluster_name,
        args.dir.display(),
        tree.name.as_deref().map(|n| format!(", node {n}")).unwrap_or_default(),
        state_dir.display()
    ));
    if let Some((_, spki)) = ca_spki.iter().find(|(id, _)| *id == "ca") {
        done.push(format!("discovery hash: {}", crate::pki::token::discovery_hash(spki)));
    }
    done.extend(external);
    done.extend(lines);
    done.push(format!("{} records where each secret came from", state_dir.join(ADOPTED_FILE).display()));
    done.push(format!(
        "next: `kubebundle generate --config {} --out {}` makes the nodes of the config with the cluster's own CAs; `kubebundle verify {}` audits them",
        config.source,
        args.out.display(),
        cluster_dir.display()
    ));
    Ok(Adopted { sources, lines: done })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_found_in_manifests_units_and_patches() {
        let pod =
            "spec:\n  containers:\n  - command:\n    - kube-apiserver\n    - --encryption-provider-config=/etc/kubernetes/enc/enc.yaml\n";
        assert_eq!(flag_value(pod, "--encryption-provider-config").as_deref(), Some("/etc/kubernetes/enc/enc.yaml"));
        let unit = "ExecStart=/usr/local/bin/kube-apiserver \\\n  --encryption-provider-config=/etc/k8s/e.yaml \\\n";
        assert_eq!(flag_value(unit, "--encryption-provider-config").as_deref(), Some("/etc/k8s/e.yaml"));
        let patch = "- op: add\n  value: \"--encryption-provider-config=/etc/kubernetes/encryption/encryption-config.yaml\"\n";
        assert_eq!(flag_value(patch, "--encryption-provider-config").as_deref(), Some("/etc/kubernetes/encryption/encryption-config.yaml"));
        assert_eq!(flag_value("--other=1", "--encryption-provider-config"), None);
    }

    #[test]
    fn only_the_shape_generate_writes_is_adopted() {
        let key = "c2VjcmV0IGlzIHNlY3VyZSwgSSB0aGluayBzbyEhISE=";
        let ok = format!("kind: EncryptionConfiguration\napiVersion: apiserver.config.k8s.io/v1\nresources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys:\n      - {{name: k2, secret: {key}}}\n      - {{name: k1, secret: {key}}}\n  - identity: {{}}\n");
        let keys = encryption_keys(ok.as_bytes(), "e.yaml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(keys.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["k2", "k1"]);
        let identity_first = ok.replace("  - identity: {}\n", "").replace("  - aescbc:", "  - identity: {}\n  - aescbc:");
        let e = encryption_keys(identity_first.as_bytes(), "e.yaml").map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("e.yaml") && e.contains("aescbc"), "{e}");
        // A rotation's in-between shape: aescbc's key first, a secretbox key second.
        let two = ok.replace("      - {name: k1", "  - secretbox:\n      keys:\n      - {name: k1");
        let keys = encryption_keys(two.as_bytes(), "e.yaml").unwrap_or_else(|e| panic!("{e}"));
        let got: Vec<_> = keys.iter().map(|k| (k.name.as_str(), k.provider)).collect();
        assert_eq!(got, [("k2", EncryptionProvider::Aescbc), ("k1", EncryptionProvider::Secretbox)]);
        let twice = two.replace("secretbox", "aescbc");
        let e = encryption_keys(twice.as_bytes(), "e.yaml").map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("the providers are aescbc, aescbc, identity"), "{e}");
        let kms = ok.replace("  - identity: {}\n", "  - kms: {name: x}\n  - identity: {}\n");
        let e = encryption_keys(kms.as_bytes(), "e.yaml").map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("aescbc, kms, identity"), "{e}");
        let short = ok.replace(key, "c2hvcnQ=");
        let e = encryption_keys(short.as_bytes(), "e.yaml").map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("k2") && e.contains("32 bytes"), "{e}");
        let maps = ok.replace("[secrets]", "[secrets, configmaps]");
        assert!(encryption_keys(maps.as_bytes(), "e.yaml").is_err());
    }
}
