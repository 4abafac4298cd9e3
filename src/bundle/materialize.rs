//! Plan + State → files: every leaf is issued (in parallel), every kubeconfig, encryption
//! config, token Secret and join file rendered from `templates/`.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use minijinja::context;
use rayon::prelude::*;

use crate::bundle::plan::{JoinPlan, NodePlan, Plan, PlannedFile};
use crate::bundle::render::{RenderError, Renderer};
use crate::bundle::reuse::RENEW_WITHIN;
use crate::bundle::state::{LeafRecord, LeafRecords, State, Token};
use crate::clock::Clock;
use crate::config::Config;
use crate::pki::catalog::Credential;
use crate::pki::catalog::{self, RenderedKind};
use crate::pki::issue::{self, CertSpec};
use crate::pki::keys::Key;
use crate::pki::token::discovery_hash;
use crate::tree::profile::{self, Artifact};
use crate::tree::FileTree;
use zeroize::Zeroizing;

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
    /// A node file the profile cannot render (it names a file the profile does not place): a
    /// profile error.
    #[error("{0}")]
    Profile(String),
    #[error(transparent)]
    Output(#[from] crate::bundle::output::OutputError),
    /// A leaf record that must not be used (and that the run would not re-issue anyway).
    #[error(
        "{file}: {name}: {message}\n  hint: delete that record (or its cert field) from {file} and run again: the leaf is then issued anew"
    )]
    Record { file: String, name: String, message: String },
}

/// Takes each node's files as soon as they are rendered (writing them, or comparing them with
/// what is on disk), so no more than a few node trees are in memory at once whatever the fleet
/// size. Called from several threads.
pub type NodeSink<'s> = dyn Fn(&str, FileTree) -> Result<(), MaterializeError> + Sync + 's;

/// The generated part of a bundle (everything but the state).
pub struct Bundle {
    /// The nodes whose files went to the sink, in plan order, and how many files they hold.
    pub node_names: Vec<String>,
    pub node_files: usize,
    /// join.txt, discovery.conf, manifests/...
    pub top: FileTree,
    /// State files this run writes besides the state's own (the leaf records).
    pub state_files: FileTree,
    /// The join commands (they hold a token), printed at the end of the run.
    pub join_text: zeroize::Zeroizing<String>,
    pub discovery_hash: String,
    /// Leaf certificates kept from the previous bundle, and issued by this run.
    pub reused: usize,
    pub issued: usize,
    /// Leaf records that were not used (each re-issued with a new key), one line each.
    pub warnings: Vec<String>,
    /// External-CA mode: the CSRs (relative to `OUT/<clusterName>/csr/`) of the leaves that wait
    /// for their signed certificates. When there are any, no node is rendered.
    pub csrs: FileTree,
    pub awaiting: usize,
    /// What the run did to the bundle's files (set by the pipeline once the new bundle is staged).
    pub changes: crate::bundle::output::Changes,
}

type LeafId = (Option<String>, String);

/// Every leaf of the plan, in parallel (key generation dominates). The state's record of a leaf
/// is kept as it is while its certificate still fits the plan (see `reuse::kept`); else the
/// certificate is issued again from the recorded key and issue time while they are usable, else
/// from a new key now. The serial is derived from the CA key and the leaf's identity and
/// signatures are deterministic, so the same state, plan and clock give the same bytes. Returns
/// every leaf's record (key, issue time, certificate), which the nodes' files are rendered from
/// and the next state keeps, and how many leaves were kept.
fn issue_leaves(plan: &Plan, config: &Config, state: &State, clock: &Clock) -> Result<(LeafRecords, usize, Vec<String>), MaterializeError> {
    let specs: Vec<&CertSpec> = plan.leaf_certificates();
    let version = &config.kubernetes_version;
    let new_keys = specs.iter().filter(|s| !state.leaves.contains_key(&(s.node.clone().unwrap_or_default(), s.id.clone()))).count();
    let bar = progress_bar(specs.len(), new_keys, config.algorithm);
    let tick = || {
        if let Some(b) = &bar {
            b.inc(1);
        }
    };
    let leaves_file = state.dir.join(crate::bundle::state::LEAVES_FILE).display().to_string();
    let leaves: Vec<(LeafId, LeafRecord, bool, Option<String>)> = specs
        .par_iter()
        .map(|spec| {
            let ca_id = spec.signer.ca_id().ok_or_else(|| MaterializeError::Missing(format!("{} has no signer", spec.id)))?;
            let ca =
                state.authority(ca_id).ok_or_else(|| MaterializeError::Missing(format!("{}: CA {ca_id} is not in the state", spec.id)))?;
            let node = spec.node.clone().unwrap_or_default();
            let id = (spec.node.clone(), spec.id.clone());
            let mut record = state.leaves.get(&(node.clone(), spec.id.clone()));
            // A record is checked before it is used; a bad one is refused, or dropped (a new key)
            // when the run would re-issue its leaf anyway. It is never shipped.
            let mut warning = None;
            if let Some(r) = record {
                match crate::bundle::reuse::judge(spec, r, ca, config, clock) {
                    Ok(Some(cert)) => {
                        tick();
                        let record = LeafRecord { key_pem: r.key_pem.clone(), issued: r.issued, cert_pem: Some(cert.pem) };
                        return Ok((id, record, true, None));
                    }
                    Ok(None) => {}
                    Err(bad) => {
                        let name = if node.is_empty() { spec.id.clone() } else { format!("{node}/{}", spec.id) };
                        if !bad.reissue_anyway {
                            return Err(MaterializeError::Record { file: leaves_file.clone(), name, message: bad.message });
                        }
                        warning = Some(format!(
                            "{leaves_file}: {name}: {}: issued anew with a new key (its certificate no longer fit the plan anyway)",
                            bad.message
                        ));
                        record = None;
                    }
                }
            }
            let validity_at = |issued: i64| {
                let at = Clock { now: time::OffsetDateTime::from_unix_timestamp(issued).unwrap_or(clock.now) };
                issue::Validity::for_leaf(&at, version, config.cert_validity, ca)
            };
            let usable = |issued: i64| {
                let v = validity_at(issued);
                v.not_before <= clock.now && v.not_after - clock.now > RENEW_WITHIN && v.not_after <= ca.not_after
            };
            let recorded = record
                .filter(|r| ca.is_external() || usable(r.issued))
                .and_then(|r| Key::from_pem(&r.key_pem).ok().map(|k| (k, r.issued)))
                .filter(|(k, _)| k.algorithm() == Some(config.algorithm));
            let (key, issued) = match recorded {
                Some(kept) => kept,
                None => (
                    crate::pki::source::new_key(config.seed.as_deref(), config.algorithm, &format!("{node}/{}", spec.id))?,
                    clock.now.unix_timestamp(),
                ),
            };
            if ca.is_external() {
                // External-CA mode: the key goes into the state, its CSR to the operator's signer.
                tick();
                let record = LeafRecord { key_pem: Zeroizing::new(key.private_pem().to_string()), issued, cert_pem: None };
                return Ok((id, record, false, warning));
            }
            let serial = crate::bundle::reuse::leaf_serial(ca, &node, &spec.id, &key.spki_der(), issued);
            let cert = issue::issue(spec, &key, Some(ca), &validity_at(issued), serial)?;
            tick();
            let record = LeafRecord { key_pem: Zeroizing::new(key.private_pem().to_string()), issued, cert_pem: Some(cert.pem) };
            Ok((id, record, false, warning))
        })
        .collect::<Result<_, MaterializeError>>()?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let reused = leaves.iter().filter(|l| l.2).count();
    let warnings = leaves.iter().filter_map(|l| l.3.clone()).collect();
    Ok((leaves.into_iter().map(|((node, id), record, _, _)| ((node.unwrap_or_default(), id), record)).collect(), reused, warnings))
}

/// A progress bar for the leaves, when their new keys take more than a few seconds and both
/// stdout and stderr are terminals (never in pipes, logs or CI).
fn progress_bar(leaves: usize, new_keys: usize, alg: crate::config::KeyAlgorithm) -> Option<indicatif::ProgressBar> {
    use crate::config::KeyAlgorithm::*;
    use std::io::IsTerminal;
    let per_key_ms = match alg {
        Rsa2048 => 90,
        Rsa3072 => 500,
        Rsa4096 => 2000,
        EcdsaP256 | EcdsaP384 => 0,
    };
    let estimate_ms = new_keys * per_key_ms / rayon::current_num_threads().max(1);
    if estimate_ms < 3000 || !std::io::stdout().is_terminal() || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::with_draw_target(Some(leaves as u64), indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta} left)") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(format!("issuing {leaves} certificates ({new_keys} new {} keys)", alg.name()));
    Some(bar)
}

struct Ctx<'a> {
    config: &'a Config,
    state: &'a State,
    leaves: &'a LeafRecords,
    renderer: &'a Renderer,
    /// The run's clock (the join token is the first one not expired then).
    now: time::OffsetDateTime,
    /// base64 of the cluster CA's trust bundle (`State::trust_pem`).
    ca_data: String,
    /// The discovery hashes of the trust bundle, the signing CA's first.
    hashes: Vec<String>,
    /// The profile's name, for messages.
    profile: String,
    /// The etcd members, with the flags each one's unit starts etcd with.
    etcd_members: &'a [crate::bundle::state::cluster::EtcdMember],
    /// The cluster part of every node file's template context.
    cluster: minijinja::Value,
}

/// The container runtime socket kubeadm and the kubelet are pointed at.
pub const CRI_SOCKET: &str = "unix:///var/run/containerd/containerd.sock";

fn url_host(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V6(a) => format!("[{a}]"),
        a => a.to_string(),
    }
}

fn loopback(ip: std::net::IpAddr) -> &'static str {
    if ip.is_ipv6() {
        "[::1]"
    } else {
        "127.0.0.1"
    }
}

/// What units and configs need to know about the cluster.
fn cluster_context(config: &Config, external_ca: bool) -> minijinja::Value {
    let join = |nets: &[ipnet::IpNet]| nets.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",");
    let external = match &config.etcd {
        crate::config::EtcdMode::External(e) => Some(context! {
            endpoints => e.endpoints.join(","), ca_file => e.ca_file.clone(), cert_file => e.cert_file.clone(), key_file => e.key_file.clone(),
        }),
        crate::config::EtcdMode::Local { .. } => None,
    };
    let minor = config.kubernetes_version.minor;
    context! {
        name => config.cluster_name.clone(), minor, bind_port => config.bind_port, dns_domain => config.dns_domain.clone(),
        service_subnet => join(&config.service_subnets), pod_subnet => join(&config.pod_subnets),
        external_etcd => external,
        signing_duration => crate::util::duration::format_go(config.cert_validity),
        signing_duration_flag => if minor >= 19 { "cluster-signing-duration" } else { "experimental-cluster-signing-duration" },
        // External-CA mode: the controller-manager gets empty signing files, as kubeadm does.
        external_ca,
    }
}

impl Ctx<'_> {
    /// A leaf's certificate and key (PEM).
    fn leaf(&self, node: &str, id: &str) -> Result<(&str, &str), MaterializeError> {
        self.leaves
            .get(&(node.to_string(), id.to_string()))
            .and_then(|r| Some((r.cert_pem.as_deref()?, r.key_pem.as_str())))
            .ok_or_else(|| MaterializeError::Missing(format!("{id} for {node} was not issued")))
    }

    fn authority(&self, id: &str) -> Result<&issue::Authority, MaterializeError> {
        self.state.authority(id).ok_or_else(|| MaterializeError::Missing(format!("CA {id} is not in the state")))
    }

    fn encryption_config(&self) -> Result<Vec<u8>, MaterializeError> {
        Ok(encryption_config(self.renderer, &self.state.encryption_keys)?.into_bytes())
    }

    /// The template context of a node's rendered files.
    fn node_context(&self, n: &NodePlan) -> Result<minijinja::Value, MaterializeError> {
        let node = self
            .config
            .nodes
            .iter()
            .find(|x| x.name == n.name)
            .ok_or_else(|| MaterializeError::Missing(format!("node {} is not in the config", n.name)))?;
        let etcd_servers = match &self.config.etcd {
            crate::config::EtcdMode::External(e) => e.endpoints.join(","),
            // A stacked member talks to its own etcd, as kubeadm sets it up.
            _ if node.roles.etcd => format!("https://{}:2379", loopback(node.address)),
            _ => self
                .config
                .nodes
                .iter()
                .filter(|m| m.roles.etcd)
                .map(|m| format!("https://{}:2379", url_host(m.address)))
                .collect::<Vec<_>>()
                .join(","),
        };
        let paths: BTreeMap<&str, String> = n.files.iter().map(|f| (f.artifact.as_str(), format!("/{}", f.path))).collect();
        // How this member's etcd starts: it formed the cluster, or joins it (see `membership`).
        let member = self.etcd_members.iter().find(|m| m.name == node.name);
        if member.is_none() && node.roles.etcd && self.config.local_etcd() {
            return Err(MaterializeError::Missing(format!("etcd member {} is not in the plan's etcd members", node.name)));
        }
        let (etcd_initial_cluster, etcd_initial_cluster_state) =
            member.map(|m| (m.initial_cluster.clone(), m.initial_cluster_state.clone())).unwrap_or_default();
        Ok(context! {
            node => context! {
                name => node.name.clone(), address => node.address.to_string(), host => url_host(node.address),
                loopback => loopback(node.address), etcd => node.roles.etcd, control_plane => node.roles.control_plane, etcd_servers,
                etcd_initial_cluster, etcd_initial_cluster_state,
            },
            paths, layout => n.layout.clone(), cluster => self.cluster.clone(), cri_socket => CRI_SOCKET,
        })
    }

    /// A node's KubeletConfiguration: its own CA file and serving certificate.
    fn kubelet_config(&self, n: &NodePlan) -> Result<String, MaterializeError> {
        // A node without ca.crt gets kubeadm's path; verify's references check then reports it.
        let ca = n.path_of("ca.crt").unwrap_or_else(|| format!("{}/ca.crt", self.config.certificates_dir));
        let serving = n.path_of("kubelet-serving.crt").zip(n.path_of("kubelet-serving.key"));
        Ok(self.renderer.render("kubelet-configuration.yaml", kubelet_context(self.config, &ca, serving))?)
    }

    fn rendered(&self, n: &NodePlan, f: &PlannedFile, r: &catalog::RenderedEntry) -> Result<String, MaterializeError> {
        let join_token = || {
            self.state.join_token(self.now).ok_or_else(|| {
                MaterializeError::Missing(format!("no bootstrap token has the authentication usage, which {} needs", f.path))
            })
        };
        Ok(match r.kind {
            RenderedKind::KubeletConfig => self.kubelet_config(n)?,
            RenderedKind::KubeadmJoin => {
                let join = n.join.as_ref().ok_or_else(|| MaterializeError::Missing(format!("{}: no join plan", n.name)))?;
                kubeadm_join(self.renderer, join, join_token()?, &self.hashes)?
            }
            RenderedKind::KubeadmInit => {
                let minor = self.config.kubernetes_version.minor;
                let patches_dir =
                    n.path_of("kube-apiserver-patch").filter(|_| minor >= 22).and_then(|p| p.rsplit_once('/').map(|(d, _)| d.to_string()));
                let mut ctx = self.node_context(n)?;
                let extra = context! {
                    api_version => crate::bundle::plan::kubeadm_api_version(minor), patches_dir, self_path => format!("/{}", f.path),
                    cluster_configuration => cluster_configuration(self.renderer, self.config)?,
                    kubelet_configuration => self.kubelet_config(n)?.trim_end().to_string(),
                };
                ctx = context! { ..ctx, ..extra };
                self.renderer.render(r.template, ctx)?
            }
            RenderedKind::DiscoveryKubeconfig => discovery_kubeconfig(self.renderer, self.config, &self.ca_data)?,
            RenderedKind::ApiserverPatch | RenderedKind::KubeProxyConfig | RenderedKind::Unit => {
                self.renderer.render(r.template, self.node_context(n)?)?
            }
        })
    }

    fn render_file(&self, n: &NodePlan, f: &PlannedFile) -> Result<Vec<u8>, MaterializeError> {
        let node = n.name.as_str();
        let art = profile::artifact(&f.artifact).ok_or_else(|| MaterializeError::Missing(format!("unknown artifact {}", f.artifact)))?;
        Ok(match art {
            // Every CA file is the CA's trust bundle: during a rotation, old and new.
            Artifact::CertPem(e) if e.is_ca() => self
                .state
                .trust_pem(e.id)
                .ok_or_else(|| MaterializeError::Missing(format!("CA {} is not in the state", e.id)))?
                .into_bytes(),
            Artifact::KeyPem(e) if e.is_ca() => match &self.authority(e.id)?.key {
                Some(k) => k.private_pem().as_bytes().to_vec(),
                None => return Err(MaterializeError::Missing(format!("{}: the {} CA is external: its key is not here", f.path, e.id))),
            },
            Artifact::CertPem(e) => {
                let mut pem = self.leaf(node, e.id)?.0.to_string();
                // A serving certificate of an imported intermediate carries the intermediates, so
                // a client that trusts the root builds the chain; under a root CA nothing changes.
                if e.usages.contains(&catalog::Eku::ServerAuth) {
                    if let Some(ca) = e.signer.ca_id() {
                        pem.push_str(&self.authority(ca)?.intermediates_pem());
                    }
                }
                pem.into_bytes()
            }
            Artifact::KeyPem(e) => self.leaf(node, e.id)?.1.as_bytes().to_vec(),
            Artifact::SaKey => self.state.sa.private_pem().as_bytes().to_vec(),
            Artifact::SaPub => self.state.sa.public_pem().into_bytes(),
            Artifact::SaNextPub => match &self.state.sa_next {
                Some(k) => k.public_pem().into_bytes(),
                None => return Err(MaterializeError::Missing(format!("{}: no service-account key rotation is in progress", f.path))),
            },
            Artifact::SaPreviousPub => match &self.state.sa_previous {
                Some(p) => p.as_bytes().to_vec(),
                None => return Err(MaterializeError::Missing(format!("{}: no service-account key rotation is in progress", f.path))),
            },
            Artifact::ClusterSigningCa => self.authority("ca")?.cert.pem.clone().into_bytes(),
            Artifact::EncryptionConfig => self.encryption_config()?,
            Artifact::Rendered(r) => self
                .rendered(n, f, r)
                .map_err(|e| match e {
                    MaterializeError::Render(e) => MaterializeError::Profile(format!(
                        "{}: error: {} for node {node} (profile {}): {}",
                        f.origin, r.id, self.profile, e.message
                    )),
                    e => e,
                })?
                .into_bytes(),
            Artifact::Kubeconfig(k) => {
                let server = f.server.clone().unwrap_or_default();
                match k.credential {
                    Credential::BootstrapToken => {
                        let t = self.state.join_token(self.now).ok_or_else(|| {
                            MaterializeError::Missing("no bootstrap token with the authentication usage for bootstrap-kubelet.conf".into())
                        })?;
                        bootstrap_kubeconfig(self.renderer, &self.config.cluster_name, &server, &self.ca_data, t)?.into_bytes()
                    }
                    Credential::Certificate => {
                        let (c, key) = self.leaf(node, k.id)?;
                        let user = f.certificate.as_ref().map(|s| s.common_name.clone()).unwrap_or_default();
                        // When the profile also places the client certificate and key as files,
                        // the kubeconfig points at them instead of embedding them.
                        let files = n.path_of(&format!("{}.crt", k.id)).zip(n.path_of(&format!("{}.key", k.id)));
                        let (client_certificate, client_key) = files.clone().unzip();
                        let embed = |v: String| if files.is_some() { String::new() } else { B64.encode(v.as_bytes()) };
                        self.renderer
                            .render(
                                "kubeconfig.yaml",
                                context! {
                                    cluster_name => self.config.cluster_name.clone(), server, ca_data => self.ca_data.clone(), user,
                                    token => "", client_certificate, client_key,
                                    client_certificate_data => embed(c.to_string()),
                                    client_key_data => embed(key.to_string()),
                                },
                            )?
                            .into_bytes()
                    }
                }
            }
        })
    }
}

/// The EncryptionConfiguration of `keys`, in their order: the first key encrypts, every key
/// decrypts. Consecutive keys of one provider share its entry (a rotation's new key of the same
/// provider is a second key of that entry, as the Kubernetes docs order it); a key of another
/// provider gets its own entry, in the same order; `identity` stays last.
pub fn encryption_config(renderer: &Renderer, keys: &[crate::bundle::state::EncryptionKey]) -> Result<String, RenderError> {
    let mut providers: Vec<(&'static str, Vec<minijinja::Value>)> = Vec::new();
    for k in keys {
        let key = context! { name => k.name.clone(), secret => k.secret.clone() };
        match providers.last_mut() {
            Some((name, list)) if *name == k.provider.name() => list.push(key),
            _ => providers.push((k.provider.name(), vec![key])),
        }
    }
    let providers: Vec<_> = providers.into_iter().map(|(name, keys)| context! { name, keys }).collect();
    renderer.render("encryption-config.yaml", context! { providers })
}

/// What join.txt says besides the token.
pub struct JoinInfo {
    pub cluster_name: String,
    pub kubernetes_version: String,
    /// host:port of the controlPlaneEndpoint.
    pub endpoint: String,
    /// `sha256:<hex>` of the CA's public key (of each CA of its trust bundle during a rotation).
    pub hashes: Vec<String>,
}

/// join.txt for `token`, the first token that authenticates (or a note when there is none).
pub fn join_text(renderer: &Renderer, join: &JoinInfo, token: Option<&Token>) -> Result<String, RenderError> {
    match token {
        Some(t) => renderer.render(
            "join.txt",
            context! {
                cluster_name => join.cluster_name.clone(), kubernetes_version => join.kubernetes_version.clone(),
                endpoint => join.endpoint.clone(), token => t.token.clone(), hashes => join.hashes.clone(),
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

/// The ClusterConfiguration document, as kubeadm-config holds it and kubeadm-init.yaml starts with.
pub fn cluster_configuration(renderer: &Renderer, config: &Config) -> Result<String, RenderError> {
    let v = &config.kubernetes_version;
    let join = |nets: &[ipnet::IpNet]| nets.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",");
    let sans = |list: &[crate::config::San]| {
        list.iter()
            .map(|s| match s {
                crate::config::Host::Ip(ip) => ip.to_string(),
                crate::config::Host::Dns(d) => d.clone(),
            })
            .collect::<Vec<_>>()
    };
    let (server_sans, peer_sans, external) = match &config.etcd {
        crate::config::EtcdMode::Local { server_sans, peer_sans } => (sans(server_sans), sans(peer_sans), None),
        crate::config::EtcdMode::External(e) => (
            vec![],
            vec![],
            Some(context! {
                endpoints => e.endpoints.clone(), ca_file => e.ca_file.clone(), cert_file => e.cert_file.clone(), key_file => e.key_file.clone(),
            }),
        ),
    };
    renderer.render(
        "cluster-configuration.yaml",
        context! {
            api_version => crate::bundle::plan::kubeadm_api_version(v.minor), cluster_name => config.cluster_name.clone(), kubernetes_version => v.to_string(),
            control_plane_endpoint => config.control_plane_endpoint.host_port(), certificates_dir => config.certificates_dir.clone(),
            dns_domain => config.dns_domain.clone(), service_subnet => join(&config.service_subnets), pod_subnet => join(&config.pod_subnets),
            cert_sans => sans(&config.api_server_cert_sans), local_etcd => config.local_etcd(), external_etcd => external,
            etcd_server_sans => server_sans, etcd_peer_sans => peer_sans, v1beta4 => v.at_least(31),
            encryption_algorithm => config.algorithm.name(),
            certificate_validity => crate::util::duration::format_go(config.cert_validity),
            ca_certificate_validity => crate::util::duration::format_go(config.ca_validity),
        },
    )
}

/// Manifests that follow the config: `kubeadm-config` (the ClusterConfiguration, which
/// `kubeadm join` and `kubeadm upgrade` read) and `kubelet-config` (`kubelet`: the
/// KubeletConfiguration that `kubeadm join` writes on every joining node, so the first control
/// plane's, as `kubeadm init` would upload it).
pub fn config_manifests(renderer: &Renderer, config: &Config, kubelet: String) -> Result<Vec<(String, String)>, RenderError> {
    let cluster_configuration = cluster_configuration(renderer, config)?;
    let kubeadm_config = renderer.render("kubeadm-config.yaml", context! { cluster_configuration })?;
    let kubelet_config = renderer.render("kubelet-config-map.yaml", context! { kubelet })?;
    Ok(vec![("manifests/kubeadm-config.yaml".into(), kubeadm_config), ("manifests/kubelet-config.yaml".into(), kubelet_config)])
}

/// A KubeletConfiguration: the cluster CA for client certificates, cluster DNS at the 10th
/// address of the service subnet (as kubeadm), and the serving certificate when the node has
/// one (else the kubelet asks for one with serverTLSBootstrap).
fn kubelet_context(config: &Config, client_ca_file: &str, serving: Option<(String, String)>) -> minijinja::Value {
    let dns = match config.service_subnets[0].network() {
        std::net::IpAddr::V4(a) => std::net::IpAddr::V4((u32::from(a).wrapping_add(10)).into()),
        std::net::IpAddr::V6(a) => std::net::IpAddr::V6((u128::from(a).wrapping_add(10)).into()),
    };
    let (tls_cert_file, tls_private_key_file) = serving.unwrap_or_default();
    context! {
        client_ca_file, cluster_dns => dns.to_string(), cluster_domain => config.dns_domain.clone(), tls_cert_file, tls_private_key_file,
        container_runtime_endpoint => if config.kubernetes_version.at_least(27) { CRI_SOCKET } else { "" },
    }
}

/// A node's JoinConfiguration (`kubeadm join --config`), with the join token.
pub fn kubeadm_join(renderer: &Renderer, join: &JoinPlan, token: &Token, hashes: &[String]) -> Result<String, RenderError> {
    let join = minijinja::Value::from(minijinja::value::Serde(join));
    renderer
        .render("kubeadm-join.yaml", context! { join, token => token.token.clone(), hashes => hashes.to_vec(), cri_socket => CRI_SOCKET })
}

/// A kubeconfig holding only the cluster: its endpoint and CA (discovery.conf, for
/// `kubeadm join --discovery-file`).
fn discovery_kubeconfig(renderer: &Renderer, config: &Config, ca_data: &str) -> Result<String, RenderError> {
    renderer.render(
        "kubeconfig.yaml",
        context! { cluster_name => config.cluster_name.clone(), server => config.control_plane_endpoint.url(), ca_data, user => "" },
    )
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

pub fn materialize(config: &Config, plan: &Plan, state: &State, clock: &Clock, sink: &NodeSink) -> Result<Bundle, MaterializeError> {
    let renderer = Renderer::new();
    let (leaves, reused, warnings) = issue_leaves(plan, config, state, clock)?;
    let (csrs, awaiting) = leaf_requests(plan, &leaves)?;
    if awaiting > 0 {
        // Nothing unsigned is packed: the keys go into the state, the CSRs to the signer.
        let mut state_files = FileTree::new();
        state_files.insert(crate::bundle::state::LEAVES_FILE, crate::bundle::state::leaves_json(&leaves), 0o600);
        return Ok(Bundle {
            node_names: Vec::new(),
            node_files: 0,
            top: FileTree::new(),
            state_files,
            join_text: zeroize::Zeroizing::new(String::new()),
            discovery_hash: String::new(),
            reused,
            issued: 0,
            warnings,
            csrs,
            awaiting,
            changes: Default::default(),
        });
    }
    let ca = state.authority("ca").ok_or_else(|| MaterializeError::Missing("the cluster CA is not in the state".into()))?;
    let hashes: Vec<String> = state.trust_spkis("ca").iter().map(|k| discovery_hash(k)).collect();
    let hash = hashes.first().cloned().unwrap_or_default();
    let trust = state.trust_pem("ca").unwrap_or_else(|| ca.cert.pem.clone());
    let ctx = Ctx {
        config,
        state,
        leaves: &leaves,
        renderer: &renderer,
        now: clock.now,
        ca_data: B64.encode(trust.as_bytes()),
        hashes: hashes.clone(),
        profile: plan.profile.clone(),
        etcd_members: &plan.etcd_members,
        cluster: cluster_context(config, ca.is_external()),
    };

    plan.nodes.par_iter().try_for_each(|n| {
        let mut tree = FileTree::new();
        for f in &n.files {
            tree.insert(&f.path, ctx.render_file(n, f)?, f.mode_bits);
        }
        sink(&n.name, tree)
    })?;
    let node_names = plan.nodes.iter().map(|n| n.name.clone()).collect();
    let node_files = plan.nodes.iter().map(|n| n.files.len()).sum();
    let first = plan
        .node(&config.first_control_plane().name)
        .ok_or_else(|| MaterializeError::Missing("the first control plane is not in the plan".into()))?;
    let kubelet = ctx.kubelet_config(first)?;
    let ca_data = ctx.ca_data;
    // The leaf records go to their file and are dropped before plan.json is made: with tens of
    // thousands of nodes both are tens of megabytes.
    let issued = leaves.len() - reused;
    let mut state_files = FileTree::new();
    state_files.insert(crate::bundle::state::LEAVES_FILE, crate::bundle::state::leaves_json(&leaves), 0o600);
    drop(leaves);

    let mut top = FileTree::new();
    let endpoint = config.control_plane_endpoint.host_port();
    top.insert("discovery.conf", discovery_kubeconfig(&renderer, config, &ca_data)?.into_bytes(), 0o644);
    // What every node should hold, for `kubebundle verify` and for people (no secrets).
    let plan_json = serde_json::to_vec_pretty(plan).map_err(|e| MaterializeError::Missing(format!("plan.json: {e}")))?;
    top.insert("plan.json", plan_json, 0o644);
    for t in &state.tokens {
        top.insert(&token_secret_path(t), token_secret(&renderer, t)?.into_bytes(), 0o600);
    }
    let minor = config.kubernetes_version.minor;
    let server = config.control_plane_endpoint.url();
    for (path, text) in token_manifests(&renderer, &server, &ca_data, minor, &state.tokens)?
        .into_iter()
        .chain(config_manifests(&renderer, config, kubelet)?)
    {
        top.insert(&path, text.into_bytes(), 0o644);
    }
    let join =
        JoinInfo { cluster_name: config.cluster_name.clone(), kubernetes_version: config.kubernetes_version.to_string(), endpoint, hashes };
    let join_text = join_text(&renderer, &join, state.join_token(clock.now))?;
    top.insert("join.txt", join_text.clone().into_bytes(), 0o600);
    Ok(Bundle {
        node_names,
        node_files,
        top,
        state_files,
        join_text: zeroize::Zeroizing::new(join_text),
        discovery_hash: hash,
        reused,
        issued,
        warnings,
        csrs: FileTree::new(),
        awaiting: 0,
        changes: Default::default(),
    })
}

/// Where a leaf's CSR goes in `csr/<node>/`, as kubeadm's `certs generate-csr` lays them out
/// (relative to /etc/kubernetes): `<base>.csr` beside where its `.key` goes, a kubeconfig's
/// client certificate as `<name>.conf.csr`.
pub fn csr_path(node: &str, file_path: &str) -> Option<String> {
    let rel = file_path.strip_prefix("etc/kubernetes/").unwrap_or(file_path);
    let base = match [".key", ".crt", "-key.pem", ".pem"].iter().find_map(|s| rel.strip_suffix(s)) {
        Some(b) => format!("{b}.csr"),
        None => format!("{rel}.csr"),
    };
    Some(format!("{node}/{base}"))
}

/// The CSR of every leaf whose record has no certificate (its CA is external), at the path of
/// each node file that holds its key (a key file, else a kubeconfig), and how many leaves wait.
fn leaf_requests(plan: &Plan, leaves: &LeafRecords) -> Result<(FileTree, usize), MaterializeError> {
    let mut tree = FileTree::new();
    let mut done = std::collections::BTreeSet::new();
    for n in &plan.nodes {
        let files = n.files.iter().filter_map(|f| f.certificate.as_ref().filter(|c| !c.is_ca).map(|c| (f, c)));
        // Certificate files first: a leaf with its own files gets its CSR beside them, not beside a kubeconfig.
        let (keys, others): (Vec<_>, Vec<_>) = files.partition(|(f, _)| !f.path.ends_with(".conf") && !f.path.ends_with("kubeconfig"));
        for (f, c) in keys.into_iter().chain(others) {
            let rid = (c.node.clone().unwrap_or_default(), c.id.clone());
            let Some(record) = leaves.get(&rid) else { continue };
            if record.cert_pem.is_some() || done.contains(&rid) {
                continue;
            }
            let Some(path) = csr_path(&n.name, &f.path) else { continue };
            let key = Key::from_pem(&record.key_pem)?;
            let der = issue::leaf_request(c, &key)?;
            tree.insert(&path, crate::pki::keys::pem_encode("CERTIFICATE REQUEST", &der).into_bytes(), 0o644);
            done.insert(rid);
        }
    }
    let awaiting = leaves.values().filter(|r| r.cert_pem.is_none()).count();
    Ok((tree, awaiting))
}
