//! Config + Profile → Plan: every artifact each node receives, with resolved subjects and SANs.
//! The plan holds no secrets; `kubebundle plan` prints it and tests snapshot it.

use serde::Serialize;

use crate::config::{Config, Node, WorkerJoin};
use crate::pki::catalog::{self, CertEntry, CommonName, Scope, ServerRule};
use crate::pki::issue::CertSpec;
use crate::pki::sans;
use crate::profile::{self, Artifact, Profile};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub cluster_name: String,
    pub kubernetes_version: String,
    pub control_plane_endpoint: String,
    pub encryption_algorithm: &'static str,
    pub profile: String,
    /// The CAs, kept in the state.
    pub certificate_authorities: Vec<CertSpec>,
    pub nodes: Vec<NodePlan>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePlan {
    pub name: String,
    pub address: String,
    pub roles: Vec<&'static str>,
    pub files: Vec<PlannedFile>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedFile {
    pub path: String,
    pub mode: String,
    pub artifact: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertSpec>,
    #[serde(skip)]
    pub mode_bits: u32,
}

impl Plan {
    pub fn node(&self, name: &str) -> Option<&NodePlan> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Every leaf certificate to issue, once per (node, id), in a stable order.
    pub fn leaf_certificates(&self) -> Vec<&CertSpec> {
        let mut seen = std::collections::BTreeMap::new();
        for n in &self.nodes {
            for f in &n.files {
                if let Some(c) = f.certificate.as_ref().filter(|c| !c.is_ca) {
                    seen.entry((c.node.clone(), c.id.clone())).or_insert(c);
                }
            }
        }
        seen.into_values().collect()
    }
}

/// Does the catalogue make an entry of this scope for `node`?
pub fn in_scope(scope: Scope, node: &Node, config: &Config) -> bool {
    let cp = node.roles.control_plane;
    match scope {
        Scope::Cluster | Scope::EachNode => true,
        Scope::EachControlPlane => cp,
        Scope::FirstControlPlane => cp && node.name == config.first_control_plane().name,
        Scope::EachEtcdMember => node.roles.etcd,
        Scope::PreIssuedKubelet => cp || config.worker_join == WorkerJoin::Certificate,
        Scope::TokenJoined => !cp && config.worker_join == WorkerJoin::Token,
    }
}

fn exists(entry: &CertEntry, config: &Config) -> bool {
    config.kubernetes_version.at_least(entry.since_minor) && (!entry.local_etcd_only || config.local_etcd())
}

pub fn cert_spec(entry: &CertEntry, config: &Config, node: Option<&Node>) -> CertSpec {
    let common_name = match (entry.common_name, node) {
        (CommonName::Fixed(cn), _) => cn.to_string(),
        (CommonName::NodeName, Some(n)) => n.name.clone(),
        (CommonName::SystemNode, Some(n)) => format!("system:node:{}", n.name),
        (_, None) => String::new(),
    };
    let alt = sans::resolve(entry.sans, &common_name, config, node);
    CertSpec {
        id: entry.id.to_string(),
        node: if entry.scope == Scope::Cluster { None } else { node.map(|n| n.name.clone()) },
        organizations: entry.organizations_for(config.kubernetes_version.minor).iter().map(|s| s.to_string()).collect(),
        san_strings: alt.to_strings(),
        sans: alt,
        common_name,
        usages: entry.usages.to_vec(),
        is_ca: entry.is_ca(),
        signer: entry.signer,
        validity: if entry.is_ca() { config.ca_validity } else { config.cert_validity },
    }
}

pub fn server_url(rule: ServerRule, config: &Config, node: &Node) -> String {
    let local = || crate::config::Endpoint { host: crate::config::Host::Ip(node.address), port: config.bind_port }.url();
    match rule {
        ServerRule::Endpoint => config.control_plane_endpoint.url(),
        ServerRule::NodeLocal => local(),
        ServerRule::Kubelet if node.roles.control_plane && config.kubernetes_version.at_least(33) => local(),
        ServerRule::Kubelet => config.control_plane_endpoint.url(),
    }
}

pub fn plan(config: &Config, profile: &Profile) -> Plan {
    let pki = config.certificates_dir.trim_start_matches('/');
    let cas: Vec<CertSpec> = catalog::CERTS.iter().filter(|e| e.is_ca() && exists(e, config)).map(|e| cert_spec(e, config, None)).collect();
    let nodes = config
        .nodes
        .iter()
        .map(|node| {
            let mut files: Vec<PlannedFile> = profile
                .files
                .iter()
                .filter(|f| f.roles.iter().any(|r| node.roles.has(r)))
                .filter_map(|f| {
                    let art = profile::artifact(&f.artifact)?;
                    let (entry_ok, certificate, server) = match art {
                        Artifact::CertPem(e) | Artifact::KeyPem(e) => {
                            let ok = exists(e, config) && in_scope(e.scope, node, config);
                            let cert = matches!(art, Artifact::CertPem(_)).then(|| cert_spec(e, config, Some(node)));
                            (ok, cert, None)
                        }
                        Artifact::Kubeconfig(k) => {
                            let ok = config.kubernetes_version.at_least(k.since_minor) && in_scope(k.scope, node, config);
                            let cert = catalog::cert(k.id)
                                .filter(|_| k.credential == catalog::Credential::Certificate)
                                .map(|e| cert_spec(e, config, Some(node)));
                            (ok, cert, Some(server_url(k.server, config, node)))
                        }
                        Artifact::SaKey | Artifact::SaPub | Artifact::EncryptionConfig => (true, None, None),
                    };
                    entry_ok.then(|| PlannedFile {
                        path: f.path.replace("{pki}", pki).replace("{node}", &node.name),
                        mode: f.mode.clone(),
                        mode_bits: profile::parse_mode(&f.mode).unwrap_or(0o600),
                        artifact: f.artifact.clone(),
                        server,
                        certificate,
                    })
                })
                .collect();
            files.sort_by(|a, b| a.path.cmp(&b.path));
            NodePlan { name: node.name.clone(), address: node.address.to_string(), roles: node.roles.names(), files }
        })
        .collect();
    Plan {
        cluster_name: config.cluster_name.clone(),
        kubernetes_version: config.kubernetes_version.to_string(),
        control_plane_endpoint: config.control_plane_endpoint.host_port(),
        encryption_algorithm: config.algorithm.name(),
        profile: profile.name.clone(),
        certificate_authorities: cas,
        nodes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_default;

    fn paths(p: &Plan, node: &str) -> Vec<String> {
        p.node(node).unwrap().files.iter().map(|f| f.path.clone()).collect()
    }

    #[test]
    fn default_plan_follows_roles() {
        let c = load_default();
        let p = plan(&c, &Profile::builtin("kubeadm").unwrap());
        let cp1 = paths(&p, "cp1");
        assert!(cp1.contains(&"etc/kubernetes/super-admin.conf".to_string()));
        assert!(cp1.contains(&"etc/kubernetes/pki/etcd/peer.key".to_string()));
        assert!(!paths(&p, "cp2").contains(&"etc/kubernetes/super-admin.conf".to_string()));
        let w = paths(&p, "worker1");
        assert_eq!(
            w,
            [
                "etc/kubernetes/bootstrap-kubelet.conf",
                "etc/kubernetes/pki/ca.crt",
                "var/lib/kubelet/pki/kubelet.crt",
                "var/lib/kubelet/pki/kubelet.key"
            ]
        );
        // Per control plane: apiserver, apiserver-kubelet-client, front-proxy-client, apiserver-etcd-client,
        // 3 etcd, 4 kubeconfig clients (+super-admin on cp1), kubelet serving.
        assert_eq!(p.leaf_certificates().len(), 3 * 12 + 1 + 2);
        let cm = p.node("cp2").unwrap().files.iter().find(|f| f.artifact == "controller-manager.conf").unwrap();
        assert_eq!(cm.server.as_deref(), Some("https://10.0.0.12:6443"));
    }
}
