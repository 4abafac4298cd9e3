//! Plan + State → files: every leaf is issued (in parallel), every kubeconfig, encryption
//! config, token Secret and join file rendered from `templates/`.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use minijinja::context;
use rayon::prelude::*;

use crate::clock::Clock;
use crate::config::Config;
use crate::output::FileTree;
use crate::pki::catalog::Credential;
use crate::pki::issue::{self, CertSpec, Issued};
use crate::pki::keys::Key;
use crate::pki::token::discovery_hash;
use crate::plan::{Plan, PlannedFile};
use crate::profile::{self, Artifact};
use crate::render::{RenderError, Renderer};
use crate::reuse::Previous;
use crate::state::{State, Token};

#[derive(Debug, thiserror::Error)]
pub enum MaterializeError {
    #[error(transparent)]
    Key(#[from] crate::pki::keys::KeyError),
    #[error(transparent)]
    Issue(#[from] issue::IssueError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("{0}")]
    Missing(String),
}

/// The generated part of a bundle (everything but the state).
pub struct Bundle {
    /// Node name → its files, relative to the node's /.
    pub nodes: BTreeMap<String, FileTree>,
    /// join.txt, discovery.conf, manifests/...
    pub top: FileTree,
    /// The join commands (they hold a token), printed at the end of the run.
    pub join_text: zeroize::Zeroizing<String>,
    pub discovery_hash: String,
    /// Leaf certificates kept from the previous bundle, and issued by this run.
    pub reused: usize,
    pub issued: usize,
}

type LeafId = (Option<String>, String);
type Leaves = BTreeMap<LeafId, (Issued, Key)>;

/// Every leaf of the plan: reused from the previous bundle while it still fits, else issued
/// (in parallel: key generation dominates). Also returns how many were reused.
fn issue_leaves(
    plan: &Plan,
    config: &Config,
    state: &State,
    clock: &Clock,
    previous: &Previous,
) -> Result<(Leaves, usize), MaterializeError> {
    let specs: Vec<&CertSpec> = plan.leaf_certificates();
    let leaves: Vec<(LeafId, (Issued, Key), bool)> = specs
        .par_iter()
        .map(|spec| {
            let ca_id = spec.signer.ca_id().ok_or_else(|| MaterializeError::Missing(format!("{} has no signer", spec.id)))?;
            let ca =
                state.authority(ca_id).ok_or_else(|| MaterializeError::Missing(format!("{}: CA {ca_id} is not in the state", spec.id)))?;
            let id = (spec.node.clone(), spec.id.clone());
            if let Some(kept) = previous.leaf(spec, ca, config, clock) {
                return Ok((id, kept, true));
            }
            let key = Key::generate(config.algorithm)?;
            let cert = issue::issue(
                spec,
                &key,
                Some(ca),
                &issue::Validity::for_leaf(clock, &config.kubernetes_version, config.cert_validity, ca),
                issue::random_serial(),
            )?;
            Ok((id, (cert, key), false))
        })
        .collect::<Result<_, MaterializeError>>()?;
    let reused = leaves.iter().filter(|(_, _, r)| *r).count();
    Ok((leaves.into_iter().map(|(id, l, _)| (id, l)).collect(), reused))
}

struct Ctx<'a> {
    config: &'a Config,
    state: &'a State,
    leaves: &'a Leaves,
    renderer: &'a Renderer,
    ca_data: String,
}

impl Ctx<'_> {
    fn leaf(&self, node: &str, id: &str) -> Result<&(Issued, Key), MaterializeError> {
        self.leaves
            .get(&(Some(node.to_string()), id.to_string()))
            .ok_or_else(|| MaterializeError::Missing(format!("{id} for {node} was not issued")))
    }

    fn authority(&self, id: &str) -> Result<&issue::Authority, MaterializeError> {
        self.state.authority(id).ok_or_else(|| MaterializeError::Missing(format!("CA {id} is not in the state")))
    }

    fn encryption_config(&self) -> Result<Vec<u8>, MaterializeError> {
        let keys: Vec<_> =
            self.state.encryption_keys.iter().map(|k| context! { name => k.name.clone(), secret => k.secret.clone() }).collect();
        Ok(self.renderer.render("encryption-config.yaml", context! { keys })?.into_bytes())
    }

    fn render_file(&self, node: &str, f: &PlannedFile) -> Result<Vec<u8>, MaterializeError> {
        let art = profile::artifact(&f.artifact).ok_or_else(|| MaterializeError::Missing(format!("unknown artifact {}", f.artifact)))?;
        Ok(match art {
            Artifact::CertPem(e) if e.is_ca() => self.authority(e.id)?.cert.pem.clone().into_bytes(),
            Artifact::KeyPem(e) if e.is_ca() => self.authority(e.id)?.key.private_pem().as_bytes().to_vec(),
            Artifact::CertPem(e) => self.leaf(node, e.id)?.0.pem.clone().into_bytes(),
            Artifact::KeyPem(e) => self.leaf(node, e.id)?.1.private_pem().as_bytes().to_vec(),
            Artifact::SaKey => self.state.sa.private_pem().as_bytes().to_vec(),
            Artifact::SaPub => self.state.sa.public_pem().into_bytes(),
            Artifact::EncryptionConfig => self.encryption_config()?,
            Artifact::Kubeconfig(k) => {
                let server = f.server.clone().unwrap_or_default();
                match k.credential {
                    Credential::BootstrapToken => {
                        let t = self.state.join_token().ok_or_else(|| {
                            MaterializeError::Missing("no bootstrap token with the authentication usage for bootstrap-kubelet.conf".into())
                        })?;
                        bootstrap_kubeconfig(self.renderer, &self.config.cluster_name, &server, &self.ca_data, t)?.into_bytes()
                    }
                    Credential::Certificate => {
                        let (c, key) = self.leaf(node, k.id)?;
                        let user = f.certificate.as_ref().map(|s| s.common_name.clone()).unwrap_or_default();
                        self.renderer
                            .render(
                                "kubeconfig.yaml",
                                context! {
                                    cluster_name => self.config.cluster_name.clone(), server, ca_data => self.ca_data.clone(), user,
                                    token => "", client_certificate_data => B64.encode(c.pem.as_bytes()),
                                    client_key_data => B64.encode(key.private_pem().as_bytes()),
                                },
                            )?
                            .into_bytes()
                    }
                }
            }
        })
    }
}

/// What join.txt says besides the token.
pub struct JoinInfo {
    pub cluster_name: String,
    pub kubernetes_version: String,
    /// host:port of the controlPlaneEndpoint.
    pub endpoint: String,
    /// `sha256:<hex>` of the CA's public key.
    pub hash: String,
}

/// join.txt for `token`, the first token that authenticates (or a note when there is none).
pub fn join_text(renderer: &Renderer, join: &JoinInfo, token: Option<&Token>) -> Result<String, RenderError> {
    match token {
        Some(t) => renderer.render(
            "join.txt",
            context! {
                cluster_name => join.cluster_name.clone(), kubernetes_version => join.kubernetes_version.clone(),
                endpoint => join.endpoint.clone(), token => t.token.clone(), hashes => vec![join.hash.clone()],
                expiration => t.expires.clone().unwrap_or_else(|| "never".into()),
            },
        ),
        None => Ok("# No bootstrap token has the authentication usage, so there is no join command.\n".to_string()),
    }
}

/// Where a token's Secret manifest goes in the bundle.
pub fn token_secret_path(t: &Token) -> String {
    format!("manifests/bootstrap-token-{}.yaml", t.id())
}

/// The bootstrap-token Secret (reference §7), for `kubectl apply`.
pub fn token_secret(renderer: &Renderer, t: &Token) -> Result<String, RenderError> {
    renderer.render(
        "bootstrap-token-secret.yaml",
        context! {
            id => t.id(), secret => t.secret(), expiration => t.expires.clone().unwrap_or_default(),
            description => t.description.clone().unwrap_or_default(), usages => t.usages.clone(), groups => t.groups.clone(),
        },
    )
}

/// Manifests that follow the tokens: `cluster-info` (with one JWS per signing token, which
/// `kubeadm join` token discovery verifies) and the join RBAC (bound to the tokens' groups).
pub fn token_manifests(
    renderer: &Renderer,
    server: &str,
    ca_data: &str,
    minor: u32,
    tokens: &[Token],
) -> Result<Vec<(String, String)>, RenderError> {
    let kubeconfig = renderer.render("cluster-info-kubeconfig.yaml", context! { server, ca_data })?;
    let signatures: Vec<_> = tokens
        .iter()
        .filter(|t| t.usages.iter().any(|u| u == "signing"))
        .map(|t| context! { id => t.id(), value => crate::pki::jws::detached(kubeconfig.as_bytes(), t.id(), t.secret()) })
        .collect();
    let cluster_info = renderer.render("cluster-info.yaml", context! { kubeconfig, signatures })?;
    let mut groups: Vec<String> = tokens.iter().filter(|t| t.authenticates()).flat_map(|t| t.groups.clone()).collect();
    if groups.is_empty() {
        groups.push(crate::config::DEFAULT_TOKEN_GROUP.to_string());
    }
    groups.sort();
    groups.dedup();
    let rbac = renderer.render(
        "rbac.yaml",
        context! { bootstrap_groups => groups, cluster_admins => minor >= 29, apiserver_kubelet_client_binding => minor >= 37 },
    )?;
    Ok(vec![("manifests/cluster-info.yaml".into(), cluster_info), ("manifests/rbac.yaml".into(), rbac)])
}

/// Manifests that follow the config: `kubeadm-config` (the ClusterConfiguration, which
/// `kubeadm join` and `kubeadm upgrade` read) and `kubelet-config` (the KubeletConfiguration).
pub fn config_manifests(renderer: &Renderer, config: &Config) -> Result<Vec<(String, String)>, RenderError> {
    let v = &config.kubernetes_version;
    let api_version = if v.at_least(31) {
        "kubeadm.k8s.io/v1beta4"
    } else if v.at_least(22) {
        "kubeadm.k8s.io/v1beta3"
    } else {
        "kubeadm.k8s.io/v1beta2"
    };
    let join = |nets: &[ipnet::IpNet]| nets.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",");
    let sans = |list: &[crate::config::San]| {
        list.iter()
            .map(|s| match s {
                crate::config::Host::Ip(ip) => ip.to_string(),
                crate::config::Host::Dns(d) => d.clone(),
            })
            .collect::<Vec<_>>()
    };
    let (server_sans, peer_sans) = match &config.etcd {
        crate::config::EtcdMode::Local { server_sans, peer_sans } => (sans(server_sans), sans(peer_sans)),
        crate::config::EtcdMode::External => (vec![], vec![]),
    };
    let cluster_configuration = renderer.render(
        "cluster-configuration.yaml",
        context! {
            api_version, cluster_name => config.cluster_name.clone(), kubernetes_version => v.to_string(),
            control_plane_endpoint => config.control_plane_endpoint.host_port(), certificates_dir => config.certificates_dir.clone(),
            dns_domain => config.dns_domain.clone(), service_subnet => join(&config.service_subnets), pod_subnet => join(&config.pod_subnets),
            cert_sans => sans(&config.api_server_cert_sans), local_etcd => config.local_etcd(),
            etcd_server_sans => server_sans, etcd_peer_sans => peer_sans, v1beta4 => v.at_least(31),
            encryption_algorithm => config.algorithm.name(),
            certificate_validity => crate::util::duration::format_go(config.cert_validity),
            ca_certificate_validity => crate::util::duration::format_go(config.ca_validity),
        },
    )?;
    let kubeadm_config = renderer.render("kubeadm-config.yaml", context! { cluster_configuration })?;
    let kubelet = renderer.render("kubelet-configuration.yaml", kubelet_context(config))?;
    let kubelet_config = renderer.render("kubelet-config-map.yaml", context! { kubelet })?;
    Ok(vec![("manifests/kubeadm-config.yaml".into(), kubeadm_config), ("manifests/kubelet-config.yaml".into(), kubelet_config)])
}

/// The cluster-wide KubeletConfiguration: the cluster CA for client certificates, cluster DNS at
/// the 10th address of the service subnet (as kubeadm), and the serving certificate the bundle
/// ships at /var/lib/kubelet/pki.
fn kubelet_context(config: &Config) -> minijinja::Value {
    let dns = match config.service_subnets[0].network() {
        std::net::IpAddr::V4(a) => std::net::IpAddr::V4((u32::from(a).wrapping_add(10)).into()),
        std::net::IpAddr::V6(a) => std::net::IpAddr::V6((u128::from(a).wrapping_add(10)).into()),
    };
    context! {
        client_ca_file => format!("{}/ca.crt", config.certificates_dir), cluster_dns => dns.to_string(),
        cluster_domain => config.dns_domain.clone(), tls_cert_file => "/var/lib/kubelet/pki/kubelet.crt",
        tls_private_key_file => "/var/lib/kubelet/pki/kubelet.key",
    }
}

/// bootstrap-kubelet.conf: the cluster CA and a bootstrap token.
pub fn bootstrap_kubeconfig(
    renderer: &Renderer,
    cluster_name: &str,
    server: &str,
    ca_data: &str,
    token: &Token,
) -> Result<String, RenderError> {
    renderer.render(
        "kubeconfig.yaml",
        context! {
            cluster_name => cluster_name, server => server, ca_data => ca_data, user => "tls-bootstrap-token-user",
            token => token.token.clone(), client_certificate_data => "", client_key_data => "",
        },
    )
}

pub fn materialize(config: &Config, plan: &Plan, state: &State, clock: &Clock, previous: &Previous) -> Result<Bundle, MaterializeError> {
    let renderer = Renderer::new();
    let (leaves, reused) = issue_leaves(plan, config, state, clock, previous)?;
    let ca = state.authority("ca").ok_or_else(|| MaterializeError::Missing("the cluster CA is not in the state".into()))?;
    let ctx = Ctx { config, state, leaves: &leaves, renderer: &renderer, ca_data: B64.encode(ca.cert.pem.as_bytes()) };

    let mut nodes = BTreeMap::new();
    for n in &plan.nodes {
        let mut tree = FileTree::new();
        for f in &n.files {
            tree.insert(&f.path, ctx.render_file(&n.name, f)?, f.mode_bits);
        }
        nodes.insert(n.name.clone(), tree);
    }

    let mut top = FileTree::new();
    let hash = discovery_hash(&ca.key.spki_der());
    let endpoint = config.control_plane_endpoint.host_port();
    let discovery = renderer.render(
        "kubeconfig.yaml",
        context! { cluster_name => config.cluster_name.clone(), server => config.control_plane_endpoint.url(), ca_data => ctx.ca_data.clone(), user => "" },
    )?;
    top.insert("discovery.conf", discovery.into_bytes(), 0o644);
    // What every node should hold, for `kubebundle verify` and for people (no secrets).
    let plan_json = serde_json::to_vec_pretty(plan).map_err(|e| MaterializeError::Missing(format!("plan.json: {e}")))?;
    top.insert("plan.json", plan_json, 0o644);
    for t in &state.tokens {
        top.insert(&token_secret_path(t), token_secret(&renderer, t)?.into_bytes(), 0o600);
    }
    let minor = config.kubernetes_version.minor;
    let server = config.control_plane_endpoint.url();
    for (path, text) in
        token_manifests(&renderer, &server, &ctx.ca_data, minor, &state.tokens)?.into_iter().chain(config_manifests(&renderer, config)?)
    {
        top.insert(&path, text.into_bytes(), 0o644);
    }
    let join = JoinInfo {
        cluster_name: config.cluster_name.clone(),
        kubernetes_version: config.kubernetes_version.to_string(),
        endpoint,
        hash: hash.clone(),
    };
    let join_text = join_text(&renderer, &join, state.join_token())?;
    top.insert("join.txt", join_text.clone().into_bytes(), 0o600);
    let issued = leaves.len() - reused;
    Ok(Bundle { nodes, top, join_text: zeroize::Zeroizing::new(join_text), discovery_hash: hash, reused, issued })
}
