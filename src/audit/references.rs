//! The consistency check: every file that a node's systemd units, kubeconfigs, kubeadm configs,
//! KubeletConfiguration, KubeProxyConfiguration or kube-apiserver patch references exists in the
//! node's tree, holding the kind of content the reference needs. A serving certificate must have
//! serverAuth and cover the address it is served on, a client certificate clientAuth, a CA file a
//! CA, and a certificate given with its key must match it.
//!
//! What each flag or field needs is data (`UNIT_FLAGS`, `FIELDS`); the referencing files are found
//! by what they are (a `.service` with ExecStart, a YAML document's `kind`), not by the profile,
//! so the check also holds for trees kubebundle did not plan.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::facts::{documents, exec_start, key_matches, url_host, CertInfo};

/// What a referenced file must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A certificate with CA:TRUE.
    CaCert,
    /// serverAuth, and SANs covering the hosts it is served on.
    ServingCert,
    ClientCert,
    /// etcd peers are both servers and clients of each other.
    PeerCert,
    PrivateKey,
    /// A public key, or what kube-apiserver also accepts for `--service-account-key-file`.
    PublicKey,
    Kubeconfig,
    KubeletConfig,
    KubeProxyConfig,
    EncryptionConfig,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::CaCert => "a CA certificate",
            Kind::ServingCert => "a serving certificate",
            Kind::ClientCert => "a client certificate",
            Kind::PeerCert => "a peer certificate",
            Kind::PrivateKey => "a private key",
            Kind::PublicKey => "a public key",
            Kind::Kubeconfig => "a kubeconfig",
            Kind::KubeletConfig => "a KubeletConfiguration",
            Kind::KubeProxyConfig => "a KubeProxyConfiguration",
            Kind::EncryptionConfig => "an EncryptionConfiguration",
        }
    }
}

/// Where the hosts a serving certificate must cover come from.
#[derive(Debug, Clone, Copy)]
enum Hosts {
    None,
    /// The value of another flag of the same command (an address).
    Flag(&'static str),
    /// The hosts of the URLs another flag lists.
    UrlsOf(&'static str),
    /// The node's own addresses.
    Node,
}

/// One flag (of a binary run by a unit) or field (of a config document) naming a file.
struct Rule {
    owner: &'static str,
    name: &'static str,
    kind: Kind,
    /// The flag/field naming this certificate's key.
    key: Option<&'static str>,
    hosts: Hosts,
    /// May be absent when this other flag/field is set (the kubelet writes its kubeconfig after
    /// TLS bootstrap).
    absent_if: Option<&'static str>,
}

const fn rule(owner: &'static str, name: &'static str, kind: Kind) -> Rule {
    Rule { owner, name, kind, key: None, hosts: Hosts::None, absent_if: None }
}

const fn cert(owner: &'static str, name: &'static str, kind: Kind, key: &'static str, hosts: Hosts) -> Rule {
    Rule { owner, name, kind, key: Some(key), hosts, absent_if: None }
}

/// Flags of the binaries our units run (kubeadm's flag set), by binary name.
const UNIT_FLAGS: &[Rule] = &[
    rule("kube-apiserver", "client-ca-file", Kind::CaCert),
    rule("kube-apiserver", "encryption-provider-config", Kind::EncryptionConfig),
    rule("kube-apiserver", "etcd-cafile", Kind::CaCert),
    cert("kube-apiserver", "etcd-certfile", Kind::ClientCert, "etcd-keyfile", Hosts::None),
    rule("kube-apiserver", "etcd-keyfile", Kind::PrivateKey),
    cert("kube-apiserver", "kubelet-client-certificate", Kind::ClientCert, "kubelet-client-key", Hosts::None),
    rule("kube-apiserver", "kubelet-client-key", Kind::PrivateKey),
    cert("kube-apiserver", "proxy-client-cert-file", Kind::ClientCert, "proxy-client-key-file", Hosts::None),
    rule("kube-apiserver", "proxy-client-key-file", Kind::PrivateKey),
    rule("kube-apiserver", "requestheader-client-ca-file", Kind::CaCert),
    rule("kube-apiserver", "service-account-key-file", Kind::PublicKey),
    rule("kube-apiserver", "service-account-signing-key-file", Kind::PrivateKey),
    cert("kube-apiserver", "tls-cert-file", Kind::ServingCert, "tls-private-key-file", Hosts::Flag("advertise-address")),
    rule("kube-apiserver", "tls-private-key-file", Kind::PrivateKey),
    rule("kube-controller-manager", "authentication-kubeconfig", Kind::Kubeconfig),
    rule("kube-controller-manager", "authorization-kubeconfig", Kind::Kubeconfig),
    rule("kube-controller-manager", "kubeconfig", Kind::Kubeconfig),
    rule("kube-controller-manager", "client-ca-file", Kind::CaCert),
    rule("kube-controller-manager", "requestheader-client-ca-file", Kind::CaCert),
    rule("kube-controller-manager", "root-ca-file", Kind::CaCert),
    cert("kube-controller-manager", "cluster-signing-cert-file", Kind::CaCert, "cluster-signing-key-file", Hosts::None),
    rule("kube-controller-manager", "cluster-signing-key-file", Kind::PrivateKey),
    rule("kube-controller-manager", "service-account-private-key-file", Kind::PrivateKey),
    rule("kube-scheduler", "authentication-kubeconfig", Kind::Kubeconfig),
    rule("kube-scheduler", "authorization-kubeconfig", Kind::Kubeconfig),
    rule("kube-scheduler", "kubeconfig", Kind::Kubeconfig),
    rule("etcd", "trusted-ca-file", Kind::CaCert),
    cert("etcd", "cert-file", Kind::ServingCert, "key-file", Hosts::UrlsOf("advertise-client-urls")),
    rule("etcd", "key-file", Kind::PrivateKey),
    rule("etcd", "peer-trusted-ca-file", Kind::CaCert),
    cert("etcd", "peer-cert-file", Kind::PeerCert, "peer-key-file", Hosts::UrlsOf("initial-advertise-peer-urls")),
    rule("etcd", "peer-key-file", Kind::PrivateKey),
    rule("kubelet", "config", Kind::KubeletConfig),
    Rule { absent_if: Some("bootstrap-kubeconfig"), ..rule("kubelet", "kubeconfig", Kind::Kubeconfig) },
    rule("kubelet", "bootstrap-kubeconfig", Kind::Kubeconfig),
    rule("kube-proxy", "config", Kind::KubeProxyConfig),
    rule("kube-proxy", "kubeconfig", Kind::Kubeconfig),
];

/// Fields of config documents, by `kind` (kubeconfigs: the current user's and cluster's), as
/// dotted paths.
const FIELDS: &[Rule] = &[
    cert("Config", "user.client-certificate", Kind::ClientCert, "user.client-key", Hosts::None),
    rule("Config", "user.client-key", Kind::PrivateKey),
    rule("Config", "cluster.certificate-authority", Kind::CaCert),
    rule("KubeletConfiguration", "authentication.x509.clientCAFile", Kind::CaCert),
    cert("KubeletConfiguration", "tlsCertFile", Kind::ServingCert, "tlsPrivateKeyFile", Hosts::Node),
    rule("KubeletConfiguration", "tlsPrivateKeyFile", Kind::PrivateKey),
    rule("KubeProxyConfiguration", "clientConnection.kubeconfig", Kind::Kubeconfig),
    rule("JoinConfiguration", "caCertPath", Kind::CaCert),
    rule("JoinConfiguration", "discovery.file.kubeConfigPath", Kind::Kubeconfig),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// The referencing file.
    pub file: String,
    pub ok: bool,
    /// False for a file the bundle cannot hold (external etcd's client files).
    pub error: bool,
    pub message: String,
}

/// What the check knows about the node beyond its files.
#[derive(Debug, Default)]
pub struct NodeFacts {
    pub addresses: Vec<IpAddr>,
    /// etcd is external: the apiserver's etcd client files are the operator's, not the bundle's.
    pub external_etcd: bool,
}

/// One reference found in a file: flag/field → value, among its siblings.
struct Reference<'a> {
    file: &'a str,
    owner: String,
    /// flag or field → value, for the rules' `key`, `hosts` and `absent_if`.
    values: BTreeMap<String, String>,
}

/// Checks every reference in `files` (path relative to the node root → content).
pub fn check(files: &BTreeMap<String, &[u8]>, facts: &NodeFacts) -> Vec<Issue> {
    let mut refs = Vec::new();
    for (path, bytes) in files {
        let Ok(text) = std::str::from_utf8(bytes) else { continue };
        if path.ends_with(".service") {
            refs.extend(unit_references(path, text));
        } else if path.ends_with(".yaml") || path.ends_with(".yml") || path.ends_with(".conf") || path.ends_with("kubeconfig") {
            refs.extend(yaml_references(path, text));
        }
    }
    let mut out = Vec::new();
    for r in &refs {
        let rules: &[Rule] = if r.owner.chars().next().is_some_and(char::is_uppercase) { FIELDS } else { UNIT_FLAGS };
        for rule in rules.iter().filter(|x| x.owner == r.owner) {
            let Some(value) = r.values.get(rule.name) else { continue };
            out.extend(check_one(files, facts, r, rule, value));
        }
    }
    out
}

fn check_one(files: &BTreeMap<String, &[u8]>, facts: &NodeFacts, r: &Reference, rule: &Rule, value: &str) -> Option<Issue> {
    let what = if r.owner.chars().next().is_some_and(char::is_uppercase) {
        format!("{} {}", r.owner, rule.name)
    } else {
        format!("{} --{}", r.owner, rule.name)
    };
    let issue = |ok: bool, message: String| Issue { file: r.file.to_string(), ok, error: true, message };
    // External-CA mode: the controller-manager signs nothing (kubeadm passes both empty too).
    if value.is_empty()
        && rule.name.starts_with("cluster-signing-")
        && r.values.get(rule.name.replace("-key-", "-cert-").as_str()).is_some_and(|v| v.is_empty())
    {
        return Some(issue(true, format!("{what} is empty: external CA, the controller-manager signs no CSR")));
    }
    let Some(rel) = value.strip_prefix('/') else {
        return Some(issue(false, format!("{what} is {value:?}, not an absolute path")));
    };
    let Some(bytes) = files.get(rel) else {
        if rule.absent_if.is_some_and(|other| r.values.contains_key(other)) {
            return Some(issue(true, format!("{what} {value}: written by the kubelet after TLS bootstrap")));
        }
        let external = facts.external_etcd && r.owner == "kube-apiserver" && rule.name.starts_with("etcd-");
        return Some(Issue {
            error: !external,
            ..issue(
                false,
                if external {
                    format!("{what} {value} is not in the bundle: the external etcd's client file must be put there")
                } else {
                    format!("{what} {value} is not in the tree: {} is missing", rule.kind.describe())
                },
            )
        });
    };
    let mut problems = content_problems(bytes, rule.kind);
    if problems.is_empty() {
        if let Ok(c) = CertInfo::from_pem(bytes) {
            let hosts = match rule.hosts {
                Hosts::None => Vec::new(),
                Hosts::Flag(f) => r.values.get(f).cloned().into_iter().collect(),
                Hosts::UrlsOf(f) => {
                    r.values.get(f).map(|v| v.split(',').filter_map(|u| url_host(u).map(|(_, h)| h)).collect()).unwrap_or_default()
                }
                Hosts::Node => facts.addresses.iter().map(IpAddr::to_string).collect(),
            };
            for h in hosts.iter().filter(|h| !c.covers_host(h)) {
                problems.push(format!("its SANs do not cover {h}"));
            }
            if let Some(key) = rule.key.and_then(|k| r.values.get(k)) {
                if let Some(kb) = key.strip_prefix('/').and_then(|k| files.get(k)) {
                    match key_matches(kb, &c.spki_raw) {
                        Ok(true) => {}
                        Ok(false) => problems.push(format!("its key is not {key}")),
                        Err(_) => {} // reported for the key's own reference
                    }
                }
            }
        }
    }
    Some(if problems.is_empty() {
        issue(true, format!("{what} {value}: {}", rule.kind.describe()))
    } else {
        issue(false, format!("{what} {value} must be {}: {}", rule.kind.describe(), problems.join("; ")))
    })
}

/// Why `bytes` is not of `kind` (empty when it is).
fn content_problems(bytes: &[u8], kind: Kind) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let cert = || CertInfo::from_pem(bytes);
    let mut p = Vec::new();
    match kind {
        Kind::CaCert => match cert() {
            Ok(c) if c.is_ca => {}
            Ok(_) => p.push("the certificate is not a CA".into()),
            Err(e) => p.push(e),
        },
        Kind::ServingCert | Kind::ClientCert | Kind::PeerCert => match cert() {
            Ok(c) => {
                if c.is_ca {
                    p.push("it is a CA certificate".into());
                }
                if matches!(kind, Kind::ServingCert | Kind::PeerCert) && !c.server_auth {
                    p.push("no serverAuth extended key usage".into());
                }
                if matches!(kind, Kind::ClientCert | Kind::PeerCert) && !c.client_auth {
                    p.push("no clientAuth extended key usage".into());
                }
            }
            Err(e) => p.push(e),
        },
        Kind::PrivateKey => {
            if !text.contains("PRIVATE KEY-----") {
                p.push("no PRIVATE KEY PEM block".into());
            }
        }
        Kind::PublicKey => {
            if !(text.contains("PUBLIC KEY-----") || text.contains("PRIVATE KEY-----") || text.contains("CERTIFICATE-----")) {
                p.push("no PUBLIC KEY PEM block".into());
            }
        }
        Kind::Kubeconfig | Kind::KubeletConfig | Kind::KubeProxyConfig | Kind::EncryptionConfig => {
            let want = match kind {
                Kind::Kubeconfig => "Config",
                Kind::KubeletConfig => "KubeletConfiguration",
                Kind::KubeProxyConfig => "KubeProxyConfiguration",
                _ => "EncryptionConfiguration",
            };
            match documents(&text).first().and_then(|d| d.get("kind")).and_then(|k| k.as_str()) {
                Some(k) if k == want => {}
                Some(k) => p.push(format!("it is a {k}, not a {want}")),
                None => p.push(format!("not a YAML document of kind {want}")),
            }
        }
    }
    p
}

fn unit_references<'a>(path: &'a str, text: &str) -> Option<Reference<'a>> {
    let argv = exec_start(text)?;
    let owner = argv.first()?.rsplit('/').next()?.to_string();
    let mut values = BTreeMap::new();
    let mut it = argv.iter().skip(1).peekable();
    while let Some(arg) = it.next() {
        let Some(flag) = arg.strip_prefix("--") else { continue };
        match flag.split_once('=') {
            Some((k, v)) => values.insert(k.to_string(), v.to_string()),
            None => match it.peek() {
                Some(v) if !v.starts_with("--") => values.insert(flag.to_string(), it.next().cloned().unwrap_or_default()),
                _ => values.insert(flag.to_string(), "true".into()),
            },
        };
    }
    Some(Reference { file: path, owner, values })
}

fn field<'v>(v: &'v serde_json::Value, dotted: &str) -> Option<&'v serde_json::Value> {
    dotted.split('.').try_fold(v, |v, k| v.get(k))
}

fn yaml_references<'a>(path: &'a str, text: &str) -> Vec<Reference<'a>> {
    let mut out = Vec::new();
    for doc in documents(text) {
        // A kubeadm JSON patch: its `--flag=value` strings are flags of the patched component.
        if let Some(ops) = doc.as_array() {
            let target = path.rsplit('/').next().and_then(|n| n.split(['+', '.']).next()).unwrap_or_default();
            let mut values = BTreeMap::new();
            for op in ops {
                if let Some((k, v)) =
                    op.get("value").and_then(|v| v.as_str()).and_then(|s| s.strip_prefix("--")).and_then(|s| s.split_once('='))
                {
                    values.insert(k.to_string(), v.to_string());
                }
            }
            if !values.is_empty() {
                out.push(Reference { file: path, owner: target.to_string(), values });
            }
            continue;
        }
        let Some(kind) = doc.get("kind").and_then(|k| k.as_str()) else { continue };
        let mut values = BTreeMap::new();
        if kind == "Config" {
            // The current context's user and cluster, else the first ones.
            let ctx = doc.get("current-context").and_then(|c| c.as_str()).unwrap_or_default();
            let context = doc
                .get("contexts")
                .and_then(|c| c.as_array())
                .and_then(|cs| cs.iter().find(|c| c.get("name").and_then(|n| n.as_str()) == Some(ctx)))
                .and_then(|c| c.get("context"));
            let pick = |list: &str, name: Option<&str>| {
                let items = doc.get(list).and_then(|l| l.as_array())?;
                name.and_then(|n| items.iter().find(|i| i.get("name").and_then(|x| x.as_str()) == Some(n))).or(items.first()).cloned()
            };
            let user = pick("users", context.and_then(|c| c.get("user")).and_then(|u| u.as_str()));
            let cluster = pick("clusters", context.and_then(|c| c.get("cluster")).and_then(|u| u.as_str()));
            for (prefix, item, inner) in [("user", user, "user"), ("cluster", cluster, "cluster")] {
                let Some(obj) = item.as_ref().and_then(|i| i.get(inner)).and_then(|o| o.as_object()) else { continue };
                for (k, v) in obj {
                    if let Some(s) = v.as_str() {
                        values.insert(format!("{prefix}.{k}"), s.to_string());
                    }
                }
            }
        } else {
            for r in FIELDS.iter().filter(|r| r.owner == kind) {
                if let Some(v) = field(&doc, r.name).and_then(|v| v.as_str()) {
                    values.insert(r.name.to_string(), v.to_string());
                }
            }
        }
        if !values.is_empty() {
            out.push(Reference { file: path, owner: kind.to_string(), values });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_start_joins_continuations() {
        let unit = "[Service]\nExecStart=-/usr/local/bin/etcd \\\n  --name=a \\\n  --data-dir=/var/lib/etcd\nRestart=always\n";
        assert_eq!(exec_start(unit).unwrap(), ["/usr/local/bin/etcd", "--name=a", "--data-dir=/var/lib/etcd"]);
        assert_eq!(url_host("https://[fd00::1]:2379").map(|(_, h)| h).as_deref(), Some("fd00::1"));
        assert_eq!(url_host("https://10.0.0.1:2380").map(|(_, h)| h).as_deref(), Some("10.0.0.1"));
    }
}
