//! `rotate ca <ca|front-proxy-ca|etcd-ca>`: a CA replaced by a new one while the cluster runs,
//! in the three phases of the upstream manual procedure (reference lifecycle.md §3, §7):
//!
//! - `start` makes the new CA (`state/pki/<ca>-next.{crt,key}`, the same subject as generate's CA,
//!   the config's algorithm unless `--algorithm`); every trust anchor then holds both, the CA that
//!   signs first (`State::trust_pem`: CA files, kubeconfigs' certificate-authority-data,
//!   discovery.conf, cluster-info, join.txt's pins); no leaf changes.
//! - `switch` makes it the CA (`pki/<ca>.{crt,key}`): every leaf and kubeconfig client
//!   certificate is issued again by it (same key unless `--new-key`), the controller-manager signs
//!   with it; the old certificate stays trusted as `pki/<ca>-previous.crt`, the old key is
//!   archived.
//! - `finish` drops the old certificate from every trust anchor (archived, never deleted).
//!
//! `abort` after `start` archives the new CA and gives back the pre-start bundle. The trust
//! bundle is data in one place (`State::trust_pem`), which every anchor is rendered from; while
//! the cluster CA rotates, the controller-manager's signing certificate is its own single-CA file
//! (`cluster-signing-ca.crt`: Kubernetes refuses a bundle there).

use super::{archive, manifest_of, set_manifest, Change, Material, Options, Rollout, RolloutContext, RotateError, Step};
use crate::bundle::pipeline::StateEdit;
use crate::bundle::state::manifest as sm;
use crate::bundle::state::rotations::{Rotation, Rotations};
use crate::bundle::state::{ca_next_paths, ca_paths, ca_previous_path, State, StateError};
use crate::pki::issue::{self, Authority};

/// The rotation of one CA.
pub struct CaMaterial {
    /// The CA's catalogue id, also the rotation's material in rotations.yaml.
    pub id: &'static str,
    /// `ca <id>`: the words after `kubebundle rotate`.
    pub command: &'static str,
}

pub static CLUSTER_CA: CaMaterial = CaMaterial { id: "ca", command: "ca ca" };
pub static FRONT_PROXY_CA: CaMaterial = CaMaterial { id: "front-proxy-ca", command: "ca front-proxy-ca" };
pub static ETCD_CA: CaMaterial = CaMaterial { id: "etcd-ca", command: "ca etcd-ca" };

/// How a rotation names a CA: its CN, the start of its public key's SHA-256 and its end.
fn describe(auth: &Authority) -> String {
    format!(
        "{} sha256:{} (until {})",
        cn_of(&auth.cert.der),
        &sm::sha256_hex(&auth.spki_der())[..16],
        crate::clock::rfc3339(auth.not_after)
    )
}

fn cn_of(der: &[u8]) -> String {
    x509_parser::parse_x509_certificate(der)
        .ok()
        .and_then(|(_, c)| c.subject().iter_common_name().next().and_then(|n| n.as_str().ok().map(str::to_string)))
        .unwrap_or_default()
}

fn drop_file(state: &mut State, edit: &mut StateEdit, rel: &str) {
    archive(state, edit, rel);
    state.files.0.remove(rel);
    edit.remove.push(rel.to_string());
}

/// The step for the kubeconfigs kubelets wrote at TLS bootstrap: the kubelet copied the CA data of
/// its bootstrap kubeconfig into it once and never rewrites it, so the node's trust bundle
/// (its ca.crt, from the tarball) is put there by hand, on each such node, before its kubelet
/// restarts; else the kubelet refuses the API server once the new CA signs its certificate
/// (lifecycle.md §3, step 9b).
fn bootstrapped_kubeconfigs(ctx: &RolloutContext) -> String {
    let mut text = "on each node whose kubelet joined by TLS bootstrap, before its kubelet restarts: put the node's ca.crt into the certificate-authority-data of the kubeconfig that kubelet wrote (it keeps the CA it bootstrapped with and no tarball holds it; without this the kubelet refuses the API server once the new CA signs its certificate):".to_string();
    for k in &ctx.bootstrapped {
        text.push_str(&format!(
            "\n     {}: sed -i \"s|^\\( *certificate-authority-data:\\).*|\\1 $(base64 -w0 {})|\" {}",
            k.node, k.ca, k.kubeconfig
        ));
    }
    text
}

impl CaMaterial {
    fn what_ca(&self) -> &'static str {
        match self.id {
            "ca" => "the cluster CA",
            "front-proxy-ca" => "the front-proxy CA",
            _ => "the etcd CA",
        }
    }

    /// The new CA: generate's CA certificate for this id (same subject and extensions), with a
    /// new key of `--algorithm` or the config's algorithm, valid from the run's clock.
    fn make(&self, opts: &Options) -> Result<Authority, RotateError> {
        let config = &opts.config;
        let entry = crate::pki::catalog::cert(self.id).ok_or_else(|| RotateError::Usage(format!("unknown CA {}", self.id)))?;
        let spec = crate::bundle::plan::cert_spec(entry, config, None);
        let alg = opts.algorithm.unwrap_or(config.algorithm);
        let key = crate::pki::source::new_key(None, alg, &format!("ca/{}-next", self.id)).map_err(StateError::from)?;
        let clock = crate::clock::Clock { now: opts.at };
        let validity = issue::Validity::for_ca(&clock, &config.kubernetes_version, config.ca_validity);
        // A serial of its own even where kubeadm gave CAs serial 0 (≤ 1.27): two CAs with the
        // same subject are trusted side by side.
        let serial =
            issue::derived_serial(&key, &[b"ca", self.id.as_bytes(), b"next", &validity.not_before.unix_timestamp().to_be_bytes()]);
        let cert = issue::issue(&spec, &key, None, &validity, serial).map_err(StateError::from)?;
        Authority::new(self.id, cert, key, validity.not_before, validity.not_after)
            .map_err(|e| RotateError::Refused(format!("the new {} does not load: {e}\n  hint: report this", self.id)))
    }

    /// A CA kubebundle cannot replace by minting one: external (no key) or imported with a chain.
    fn refuse_foreign(&self, auth: &Authority) -> Result<(), RotateError> {
        let why = if auth.is_external() {
            "is external (the state holds its certificate, not its key): its signer, not kubebundle, makes its successor"
        } else if !auth.chain.is_empty() {
            "is an imported intermediate (state/pki/*-chain.crt): its successor must come from the same root"
        } else {
            return Ok(());
        };
        Err(RotateError::Refused(format!(
            "rotate {} start: {} {why}; nothing was written\n  hint: have your root (or the external signer) issue the new CA, then `kubebundle ca import {} --cert new.crt [--key new.key] --chain root.crt --force`, and roll the bundle out; or follow the external signer's own rotation",
            self.command,
            self.what_ca(),
            self.id
        )))
    }
}

impl Material for CaMaterial {
    fn id(&self) -> &'static str {
        self.id
    }

    fn command(&self) -> &'static str {
        self.command
    }

    fn what(&self) -> &'static str {
        self.what_ca()
    }

    fn apply(
        &self,
        step: Step,
        state: &mut State,
        open: Option<&Rotation>,
        _history: &Rotations,
        opts: &Options,
    ) -> Result<Change, RotateError> {
        let id = self.id;
        let mut manifest = manifest_of(state)?;
        let mut edit = StateEdit::default();
        let lost = |what: String| {
            RotateError::Refused(format!(
                "the state no longer holds {what} of the rotation of {id} in progress; nothing was written\n  hint: restore it from a backup (`kubebundle state restore`)"
            ))
        };
        let current = state.authority(id).ok_or_else(|| {
            RotateError::Usage(format!(
                "the state holds no {id} (the config's etcd is external?): there is nothing to rotate\n  hint: rotate ca, front-proxy-ca, or etcd-ca with a local etcd"
            ))
        })?;
        if step == Step::Start {
            self.refuse_foreign(current)?;
        }
        let current = describe(current);
        let (crt, key) = ca_paths(id);
        let (next_crt, next_key) = ca_next_paths(id);
        let prev = ca_previous_path(id);
        let mut ids = (String::new(), String::new());
        let summary = match step {
            Step::Start => {
                let next = self.make(opts)?;
                let pem = next.key.as_ref().map(|k| k.private_pem().as_bytes().to_vec()).unwrap_or_default();
                manifest.record(sm::key_entry(&sm::ca_next_id(id), &next_key, &pem, &next.spki_der(), &opts.now));
                state.files.insert(&next_crt, next.cert.pem.clone().into_bytes(), 0o600);
                state.files.insert(&next_key, pem, 0o600);
                ids = (current.clone(), describe(&next));
                let summary = format!(
                    "made the new {id} {} ({}): every trust anchor now holds the old and the new CA (the old one first: it still signs every certificate){}",
                    ids.1,
                    opts.algorithm.unwrap_or(opts.config.algorithm).name(),
                    if id == "ca" { "; join.txt pins both" } else { "" }
                );
                state.ca_next.insert(id.to_string(), next);
                summary
            }
            Step::Switch => {
                let next = state.ca_next.remove(id).ok_or_else(|| lost(format!("state/{next_key}")))?;
                let old = state.authorities.insert(id.to_string(), next).ok_or_else(|| lost(format!("state/{crt}")))?;
                for rel in [crt.as_str(), key.as_str(), sm::MANIFEST_FILE] {
                    archive(state, &mut edit, rel);
                }
                drop_file(state, &mut edit, &next_crt);
                drop_file(state, &mut edit, &next_key);
                let new = &state.authorities[id];
                let new_pem = new.key.as_ref().map(|k| k.private_pem().as_bytes().to_vec()).unwrap_or_default();
                state.files.insert(&crt, new.cert.pem.clone().into_bytes(), 0o600);
                state.files.insert(&key, new_pem.clone(), 0o600);
                state.files.insert(&prev, old.cert.pem.clone().into_bytes(), 0o600);
                manifest.secrets.retain(|e| e.id != id && e.id != sm::ca_next_id(id));
                manifest.record(sm::key_entry(id, &key, &new_pem, &new.spki_der(), &opts.now));
                manifest.record(sm::public_entry(&sm::ca_previous_id(id), &prev, &old.spki_der(), &opts.now));
                // Every leaf the old CA signed is issued again by the new one, now: with its
                // recorded key (a new one with --new-key).
                let mut reissued = 0;
                let at = opts.at.unix_timestamp();
                state.leaves.retain(|_, r| {
                    let signed = r
                        .cert_pem
                        .as_deref()
                        .and_then(|p| ::pem::parse(p).ok())
                        .is_some_and(|p| x509_parser::parse_x509_certificate(p.contents()).is_ok_and(|(_, c)| old.signed(&c)));
                    if signed {
                        reissued += 1;
                        r.cert_pem = None;
                        r.issued = at;
                    }
                    !(signed && opts.new_key)
                });
                let summary = format!(
                    "{} now signs: {reissued} certificates issued again by it ({}), the controller-manager signs with it; the old {id} {} stays trusted everywhere (pki/{}) and its key is archived",
                    describe(new),
                    if opts.new_key { "with new keys" } else { "with their keys" },
                    describe(&old),
                    prev.trim_start_matches("pki/")
                );
                state.ca_previous.insert(id.to_string(), old.cert.pem.clone());
                summary
            }
            Step::Finish => {
                state.ca_previous.remove(id).ok_or_else(|| lost(format!("state/{prev}")))?;
                archive(state, &mut edit, sm::MANIFEST_FILE);
                drop_file(state, &mut edit, &prev);
                manifest.secrets.retain(|e| e.id != sm::ca_previous_id(id));
                format!(
                    "dropped the old {id} {} from every trust anchor and from join.txt: only {} is trusted (the old certificate and key are archived, not deleted)",
                    open.map(|r| r.old.as_str()).unwrap_or_default(),
                    current
                )
            }
            Step::Abort => {
                let next = state.ca_next.remove(id).ok_or_else(|| lost(format!("state/{next_key}")))?;
                archive(state, &mut edit, sm::MANIFEST_FILE);
                drop_file(state, &mut edit, &next_crt);
                drop_file(state, &mut edit, &next_key);
                manifest.secrets.retain(|e| e.id != sm::ca_next_id(id));
                format!(
                    "dropped the new {id} {} (archived, not deleted): {} alone is trusted again, every file as before start",
                    describe(&next),
                    current
                )
            }
        };
        set_manifest(state, &manifest);
        Ok(Change { old: ids.0, new: ids.1, summary, edit })
    }

    fn rollout(&self, step: Step, rotation: &Rotation, ctx: &RolloutContext) -> Rollout {
        let kubeconfig = ctx.admin_kubeconfig.as_deref().map(|k| format!(" --kubeconfig {k}")).unwrap_or_default();
        // Who reads what (lifecycle.md §3): the controller-manager first (its --root-ca-file
        // feeds every namespace's kube-root-ca.crt), then the API servers and the scheduler, then
        // every node's kubelet and kube-proxy.
        let restart: Vec<&'static str> = match self.id {
            "ca" => vec!["kube-controller-manager", "kube-apiserver", "kube-scheduler", "kubelet", "kube-proxy"],
            "front-proxy-ca" => vec!["kube-apiserver", "kube-controller-manager"],
            _ => vec!["etcd", "kube-apiserver"],
        };
        let nodes = match self.id {
            "ca" => "then on every other node: `systemctl restart kubelet` (and kube-proxy where a unit runs it), one node at a time"
                .to_string(),
            "etcd-ca" => {
                "then etcd on every other etcd member, one at a time, each once `etcdctl endpoint health --cluster` is healthy".to_string()
            }
            _ => String::new(),
        };
        let cluster_info = format!(
            "publish the cluster CA's trust bundle to joining nodes: kubectl{kubeconfig} apply -f manifests/cluster-info.yaml (from the bundle; the controller-manager signs it again for every token)"
        );
        let mut then: Vec<String> = Vec::new();
        // Each API server adds its client CAs and request-header CAs to the ConfigMap the
        // controller-manager, the scheduler and aggregated API servers read them from, and never
        // removes one (kubernetes#82429): once a CA leaves the trust, the ConfigMap is made
        // again from the restarted API servers' flags.
        if matches!(self.id, "ca" | "front-proxy-ca") && matches!(step, Step::Finish | Step::Abort) {
            then.push(format!(
                "once every API server restarted, drop the {} CA from what they publish to the other components (the API servers add CAs to kube-system/extension-apiserver-authentication and never remove one; deleted, it is written again at once from their flags, and the controller-manager, the scheduler and aggregated API servers reload it): `kubectl{kubeconfig} -n kube-system delete configmap extension-apiserver-authentication`",
                if step == Step::Finish { "old" } else { "aborted new" }
            ));
        }
        // The trust of the nodes' kubelets changes at start, finish and abort.
        if self.id == "ca" && step != Step::Switch && !ctx.bootstrapped.is_empty() {
            then.push(bootstrapped_kubeconfigs(ctx));
        }
        if !nodes.is_empty() {
            then.push(nodes);
        }
        match step {
            Step::Start | Step::Abort => {
                if self.id == "ca" {
                    then.push(cluster_info);
                    then.push(
                        "restart the pods that talk to the API server with in-cluster config (the controller-manager updated every namespace's kube-root-ca.crt): e.g. `kubectl rollout restart` of DaemonSets and Deployments".into(),
                    );
                }
                if step == Step::Start {
                    then.push(format!(
                        "once every component and node trusts both CAs (all of them restarted): `{}`",
                        ctx.again.step("switch")
                    ));
                } else {
                    then.push(format!("the rotation is aborted; start again with `{}`", ctx.again.step("start")));
                }
            }
            Step::Switch => {
                if self.id == "ca" {
                    then.push(
                        "hand out the new kubeconfigs (admin.conf …): the old ones keep working until finish; kubelets that joined by TLS bootstrap hold client certificates the old CA signed: let them rotate (rotateCertificates) or renew them before finish".into(),
                    );
                }
                then.push(format!(
                    "once every certificate signed by {} was replaced everywhere: `{}`",
                    rotation.old,
                    ctx.again.step("finish")
                ));
            }
            Step::Finish => {
                if self.id == "ca" {
                    then.push(cluster_info);
                }
                then.push(format!(
                    "the rotation is finished: once everything restarted, certificates signed by {} are refused; keep the state's new {} key as safe as the others",
                    rotation.old, self.id
                ));
            }
        }
        Rollout { restart, then }
    }
}
