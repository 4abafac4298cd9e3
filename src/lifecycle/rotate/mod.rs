//! `kubebundle rotate <material> <start|switch|finish|abort>` and `rotate status`: a staged
//! replacement of a long-lived secret, one phase at a time (reference lifecycle.md §3–7).
//!
//! The phase lives in the state (`state/rotations.yaml`, see `bundle::state::rotations`), and
//! the in-between material (a second encryption key, `pki/sa-next.key`, `pki/sa-previous.pub`)
//! is recorded in `state/manifest.yaml` like every other secret, so every later run (`generate`
//! included) renders the bundle of the phase the state is in, and the state check treats that
//! material as recorded, never as changed.
//!
//! Each phase is one transaction exactly like `generate` (`pipeline::build_with`): under the
//! bundle's lock, the state is loaded and checked, the material's phase changes it
//! (`Material::apply`), the pipeline renders every tarball, manifests/ and join.txt from the
//! changed state, and the whole bundle is swapped in at once; what a phase replaces is archived in
//! a backup beside the bundle (`kubebundle-backup-<time>/state/`), never deleted. The phase then
//! says what to roll out, found by comparing every node's tarball before and after (which nodes,
//! which files), and which components to restart, in which order (the material's `Rollout`).
//!
//! A material is one implementation of `Material` (`encryption`, `sa`, and each CA: `ca`).

pub mod ca;
pub mod encryption;
pub mod sa;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::bundle::pipeline::{self, GenerateError, StateEdit};
use crate::bundle::state::manifest::{self as sm, Manifest};
use crate::bundle::state::rotations::{self, Phase, Rotation, Rotations, ROTATIONS_FILE};
use crate::bundle::state::{State, StateError};
use crate::clock::Clock;
use crate::config::{Config, EncryptionProvider};

/// A phase command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Start,
    Switch,
    Finish,
    Abort,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Start => "start",
            Step::Switch => "switch",
            Step::Finish => "finish",
            Step::Abort => "abort",
        }
    }

    /// The phase a rotation must be in for this step (None: no rotation of it may be open).
    fn needs(self) -> Option<Phase> {
        match self {
            Step::Start => None,
            Step::Switch | Step::Abort => Some(Phase::Started),
            Step::Finish => Some(Phase::Switched),
        }
    }

    /// The phase the step leaves the rotation in.
    fn leads_to(self) -> Phase {
        match self {
            Step::Start => Phase::Started,
            Step::Switch => Phase::Switched,
            Step::Finish => Phase::Finished,
            Step::Abort => Phase::Aborted,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// The command line is wrong (exit 2).
    #[error("{0}")]
    Usage(String),
    /// `--out` holds no bundle of the config's cluster (exit 2).
    #[error("{0}")]
    NotABundle(String),
    /// A phase out of order, a second start, an abort after switch (exit 1, nothing written).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Generate(#[from] GenerateError),
}

/// What a material's phase did to the state.
pub struct Change {
    /// The rotation's old and new material, for its record (only read at `start`).
    pub old: String,
    pub new: String,
    /// One line: what the phase did.
    pub summary: String,
    /// State files removed, and the old ones to archive.
    pub edit: StateEdit,
}

/// Which components restart, in which order, after a phase's files are in place, and what
/// else the operator does then.
pub struct Rollout {
    /// Components to restart, in order, each on every control plane one at a time.
    pub restart: Vec<&'static str>,
    /// What to do after the restarts (a command to run, how long to wait), before the next phase.
    pub then: Vec<String>,
}

/// What the phase commands need besides the state.
pub struct Options {
    /// `rotate encryption start --provider`.
    pub provider: Option<EncryptionProvider>,
    /// `rotate ca <ca> start --algorithm`: the new CA's key algorithm.
    pub algorithm: Option<crate::config::KeyAlgorithm>,
    /// `rotate ca <ca> switch --new-key`: the re-issued leaves get new keys.
    pub new_key: bool,
    pub config: Config,
    /// RFC 3339 of the run's clock.
    pub now: String,
    /// The run's clock.
    pub at: time::OffsetDateTime,
}

/// One kind of long-lived material that rotates in phases.
pub trait Material: Sync {
    /// Its name in rotations.yaml (and on the command line, unless `command` says otherwise).
    fn id(&self) -> &'static str;
    /// The words after `kubebundle rotate` that name it (`ca front-proxy-ca`).
    fn command(&self) -> &'static str {
        self.id()
    }
    /// For people: "the encryption key".
    fn what(&self) -> &'static str;
    /// Changes the loaded state for `step` (`open`: the rotation in progress, None for start).
    /// `history` are the material's earlier rotations.
    fn apply(
        &self,
        step: Step,
        state: &mut State,
        open: Option<&Rotation>,
        history: &Rotations,
        opts: &Options,
    ) -> Result<Change, RotateError>;
    /// The recorded secrets (manifest ids) the step drops anyway, so it runs without them when
    /// they are lost: `abort` drops the rotation's new key, which nothing used yet.
    fn may_be_lost(&self, _step: Step, _open: &Rotation) -> Vec<String> {
        Vec::new()
    }
    /// What the operator restarts and does after the phase's files are in place.
    fn rollout(&self, step: Step, rotation: &Rotation, ctx: &RolloutContext) -> Rollout;
}

/// What a rollout's instructions may name.
pub struct RolloutContext {
    /// `kubebundle rotate <material>`, and the command's own --config/--out flags, for "next:".
    pub again: Again,
    /// A control plane's admin kubeconfig path on its host (for kubectl commands), if any.
    pub admin_kubeconfig: Option<String>,
    /// The nodes whose kubelet joins by TLS bootstrap (they get bootstrap-kubelet.conf).
    pub bootstrapped: Vec<BootstrappedKubelet>,
}

/// A node whose kubelet wrote its own kubeconfig at TLS bootstrap: the kubelet copied the CA
/// data of bootstrap-kubelet.conf into it, and nothing updates it after (no tarball holds it).
pub struct BootstrappedKubelet {
    pub node: String,
    /// The kubelet's --kubeconfig on the node (absolute).
    pub kubeconfig: String,
    /// The node's cluster CA file (absolute): the trust bundle while the cluster CA rotates.
    pub ca: String,
}

/// The nodes of `plan` that get bootstrap-kubelet.conf, with where the profile puts the
/// kubelet's own kubeconfig (`NodePlan::layout`, also for a file the node does not receive).
fn bootstrapped_kubelets(config: &Config, plan: Option<&crate::tree::bundle::PlanDoc>) -> Vec<BootstrappedKubelet> {
    let Some(plan) = plan else { return Vec::new() };
    let Ok(profile) = crate::tree::profile::Profile::load(&config.profile, config.base_dir.as_deref()) else { return Vec::new() };
    let layouts = crate::bundle::plan::plan(config, &profile);
    plan.nodes
        .iter()
        .filter(|n| n.files.iter().any(|f| f.artifact == "bootstrap-kubelet.conf"))
        .filter_map(|n| {
            let ca = n.files.iter().find(|f| f.artifact == "ca.crt")?;
            let kubeconfig = layouts.node(&n.name)?.layout.get("kubelet.conf")?.clone();
            Some(BootstrappedKubelet { node: n.name.clone(), kubeconfig, ca: format!("/{}", ca.path) })
        })
        .collect()
}

/// A phase command of the same material with the same flags (`again.step("switch")`).
#[derive(Clone)]
pub struct Again {
    pub material: &'static str,
    pub flags: String,
}

impl Again {
    pub fn step(&self, step: &str) -> String {
        format!("kubebundle rotate {} {step}{}", self.material, self.flags)
    }
}

/// The materials, by id.
pub fn material(id: &str) -> Option<&'static dyn Material> {
    match id {
        "encryption" => Some(&encryption::Encryption),
        "sa" => Some(&sa::ServiceAccount),
        "ca" => Some(&ca::CLUSTER_CA),
        "front-proxy-ca" => Some(&ca::FRONT_PROXY_CA),
        "etcd-ca" => Some(&ca::ETCD_CA),
        _ => None,
    }
}

pub const MATERIALS: [&str; 5] = ["encryption", "sa", "ca", "front-proxy-ca", "etcd-ca"];

/// The words after `kubebundle rotate` for a material of rotations.yaml (`ca etcd-ca`).
pub fn command_of(material_id: &str) -> String {
    material(material_id).map(|m| m.command().to_string()).unwrap_or_else(|| material_id.to_string())
}

pub struct RotateArgs {
    pub material: String,
    pub step: Step,
    /// OUT: the bundle is OUT/<clusterName>.
    pub out: PathBuf,
    pub provider: Option<EncryptionProvider>,
    /// `rotate ca <ca> start --algorithm`.
    pub algorithm: Option<crate::config::KeyAlgorithm>,
    /// `rotate ca <ca> switch --new-key`.
    pub new_key: bool,
    /// The command's --config/--out as given, repeated in the "next:" lines.
    pub flags: String,
}

/// What a phase did, for the command's output.
pub struct Rotated {
    /// The state's report (created, reused, archived ...).
    pub state_report: Vec<String>,
    /// What was done and what to roll out, in order.
    pub lines: Vec<String>,
}

/// The manifest the loaded state will write.
pub(crate) fn manifest_of(state: &State) -> Result<Manifest, RotateError> {
    let text = state.files.get(sm::MANIFEST_FILE).map(|f| String::from_utf8_lossy(&f.bytes).into_owned()).unwrap_or_default();
    serde_saphyr::from_str(&text).map_err(|e| RotateError::Refused(format!("state/manifest.yaml does not parse: {e}\n  hint: report this")))
}

pub(crate) fn set_manifest(state: &mut State, m: &Manifest) {
    state.files.insert(sm::MANIFEST_FILE, m.text().into_bytes(), 0o600);
}

/// Copies a state file the phase replaces into the archive (from the state directory as loaded).
pub(crate) fn archive(state: &State, edit: &mut StateEdit, rel: &str) {
    if let Ok(bytes) = std::fs::read(state.dir.join(rel)) {
        edit.archive.insert(rel, bytes, 0o600);
    }
}

/// Refuses a step the rotation's phase does not allow, naming the phase and the fix.
fn check_order(m: &dyn Material, step: Step, open: Option<&Rotation>, again: &Again) -> Result<(), RotateError> {
    let id = m.command();
    let refused = |what: String, hint: String| {
        Err(RotateError::Refused(format!("rotate {id} {}: {what}; nothing was written\n  hint: {hint}", step.name())))
    };
    match (step.needs(), open) {
        (None, None) => Ok(()),
        (None, Some(r)) => refused(
            format!("a rotation of {} is already in progress ({} since {}: {} → {})", m.what(), r.phase.name(), r.since(), r.old, r.new),
            match r.phase {
                Phase::Started => format!(
                    "go on with `{}` (or `{}` while nothing encrypted or signed with the new one)",
                    again.step("switch"),
                    again.step("abort")
                ),
                _ => format!("finish it first: `{}`", again.step("finish")),
            },
        ),
        (Some(_), None) => refused(
            format!("no rotation of {} is in progress", m.what()),
            format!("start one with `{}` (`kubebundle rotate status` shows every rotation)", again.step("start")),
        ),
        (Some(need), Some(r)) if r.phase == need => Ok(()),
        (Some(_), Some(r)) if step == Step::Abort => refused(
            format!(
                "the rotation of {} was switched at {}: the new one has signed or encrypted things since, so going back would lose them",
                m.what(),
                r.since()
            ),
            format!(
                "finish it with `{}`, or rotate again afterwards (`{}`) to replace the new one",
                again.step("finish"),
                again.step("start")
            ),
        ),
        (Some(_), Some(r)) => refused(
            format!(
                "the rotation of {} is {} (since {}), not {}",
                m.what(),
                r.phase.name(),
                r.since(),
                step.needs().map(Phase::name).unwrap_or("")
            ),
            match r.phase {
                Phase::Started => format!("the next phase is `{}`", again.step("switch")),
                _ => format!("the next phase is `{}`", again.step("finish")),
            },
        ),
    }
}

/// Every node tarball's files, as SHA-256 digests with modes (read in memory).
type Snapshot = BTreeMap<String, BTreeMap<String, (String, u32)>>;

fn snapshot(cluster_dir: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    for name in crate::tree::bundle::node_names(&cluster_dir.join("nodes")) {
        let Ok(bytes) = std::fs::read(cluster_dir.join("nodes").join(format!("{name}.tar.gz"))) else { continue };
        let files = crate::tree::tarball::unpack(&bytes).files.into_iter().map(|(p, f)| (p, (sm::sha256_hex(&f.bytes), f.mode))).collect();
        out.insert(name, files);
    }
    out
}

/// One node's changes between two snapshots: files added or changed, files gone.
fn changes(before: &Snapshot, after: &Snapshot) -> BTreeMap<String, (Vec<String>, Vec<String>)> {
    let empty = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (node, files) in after {
        let old = before.get(node).unwrap_or(&empty);
        let changed: Vec<String> = files.iter().filter(|(p, f)| old.get(*p) != Some(f)).map(|(p, _)| p.clone()).collect();
        let gone: Vec<String> = old.keys().filter(|p| !files.contains_key(*p)).cloned().collect();
        if !changed.is_empty() || !gone.is_empty() {
            out.insert(node.clone(), (changed, gone));
        }
    }
    out
}

/// A phase: checked against the state's rotation, applied to the state under the bundle's lock,
/// and the bundle re-rendered as one transaction; then what to roll out.
pub fn rotate(config: &Config, args: &RotateArgs, clock: &Clock) -> Result<Rotated, RotateError> {
    let m = material(&args.material)
        .ok_or_else(|| RotateError::Usage(format!("unknown material {:?}\n  hint: rotate {}", args.material, MATERIALS.join(", "))))?;
    if args.provider.is_some() && (m.id() != "encryption" || args.step != Step::Start) {
        return Err(RotateError::Usage(
            "--provider only goes with `rotate encryption start` (the new key's provider)\n  hint: drop --provider".into(),
        ));
    }
    let is_ca = m.command() != m.id();
    if args.algorithm.is_some() && (!is_ca || args.step != Step::Start) {
        return Err(RotateError::Usage(
            "--algorithm only goes with `rotate ca <ca> start` (the new CA's key algorithm)\n  hint: drop --algorithm".into(),
        ));
    }
    if args.new_key && (!is_ca || args.step != Step::Switch) {
        return Err(RotateError::Usage(
            "--new-key only goes with `rotate ca <ca> switch` (the re-issued certificates get new keys)\n  hint: drop --new-key".into(),
        ));
    }
    let cluster_dir = args.out.join(&config.cluster_name);
    let state_dir = cluster_dir.join("state");
    if !state_dir.join(crate::bundle::state::MARKER_FILE).is_file() {
        return Err(RotateError::NotABundle(format!(
            "{} holds no bundle of cluster {:?} (no state/cluster.yaml): there is nothing to rotate\n  hint: give the --config and --out of `kubebundle generate` for that bundle, or generate it first",
            cluster_dir.display(),
            config.cluster_name
        )));
    }
    let again = Again { material: m.command(), flags: args.flags.clone() };
    // Checked before the lock for a refusal that makes nothing, and again under it.
    let open = rotations::read(&state_dir)?.open(m.id()).cloned();
    check_order(m, args.step, open.as_ref(), &again)?;
    let lost_ok = open.map(|r| m.may_be_lost(args.step, &r)).unwrap_or_default();
    let opts = Options {
        provider: args.provider,
        algorithm: args.algorithm,
        new_key: args.new_key,
        config: config.clone(),
        now: crate::clock::rfc3339(clock.now),
        at: clock.now,
    };
    let mut before = Snapshot::new();
    let mut done: Option<(Rotation, String)> = None;
    let mut edit = |state: &mut State| -> Result<StateEdit, RotateError> {
        let mut history = rotations::read(&state.dir)?;
        let open = history.open(m.id()).cloned();
        check_order(m, args.step, open.as_ref(), &again)?;
        before = snapshot(state.dir.parent().unwrap_or(&state.dir));
        let mut change = m.apply(args.step, state, open.as_ref(), &history, &opts)?;
        let record = match history.open_mut(m.id()) {
            Some(r) => {
                r.phase = args.step.leads_to();
                match args.step {
                    Step::Switch => r.switched = Some(opts.now.clone()),
                    _ => r.ended = Some(opts.now.clone()),
                }
                if !change.edit.archive.is_empty() {
                    archive(state, &mut change.edit, ROTATIONS_FILE);
                    // Where pipeline publishes the archive (beside the bundle, a link's target).
                    let real = std::fs::canonicalize(&state.dir).unwrap_or_else(|_| state.dir.clone());
                    let parent = real.parent().and_then(Path::parent).unwrap_or(Path::new("."));
                    let name = crate::bundle::output::free_backup_name(parent, clock.now);
                    r.archived = Some(format!("{name}/state"));
                    change.edit.archive_name = Some(name);
                }
                r.clone()
            }
            None => {
                let r = Rotation {
                    material: m.id().to_string(),
                    phase: Phase::Started,
                    started: opts.now.clone(),
                    switched: None,
                    ended: None,
                    old: change.old.clone(),
                    new: change.new.clone(),
                    archived: None,
                };
                history.rotations.push(r.clone());
                r
            }
        };
        state.files.insert(ROTATIONS_FILE, history.text().into_bytes(), 0o600);
        done = Some((record, change.summary));
        Ok(change.edit)
    };
    // A bundle written with --unpacked keeps its trees.
    let unpacked = crate::tree::bundle::node_names(&cluster_dir.join("nodes")).iter().any(|n| cluster_dir.join("nodes").join(n).is_dir());
    let (state, bundle, mut notes, _steps) = pipeline::build_with(config, &args.out, clock, false, unpacked, &lost_ok, &mut edit)?;
    if bundle.awaiting > 0 {
        // External-CA mode: the nodes stay as they were until the certificates are signed.
        notes.push(format!(
            "waiting for {} signed certificates (external CA): no node tarball was rewritten; sign the CSRs in {}, `kubebundle import-signed` them and run `kubebundle generate`: its tarballs are this phase's",
            bundle.awaiting,
            cluster_dir.join(crate::bundle::state::CSR_DIR).display()
        ));
    }
    let (record, summary) = done.ok_or_else(|| RotateError::Refused("the phase did not run: report this".into()))?;
    let after = snapshot(&cluster_dir);
    let changed = changes(&before, &after);
    let plan = crate::tree::bundle::read_plan(&cluster_dir);
    let admin = plan.as_ref().and_then(|p| {
        p.nodes
            .iter()
            .find(|n| n.roles.iter().any(|r| r == "control-plane"))
            .and_then(|n| n.files.iter().find(|f| f.artifact == "admin.conf").map(|f| format!("/{}", f.path)))
    });
    let bootstrapped = bootstrapped_kubelets(config, plan.as_ref());
    let ctx = RolloutContext { again: again.clone(), admin_kubeconfig: admin, bootstrapped };
    let rollout = m.rollout(args.step, &record, &ctx);
    let mut lines = vec![format!("rotate {} {}: {summary}", m.command(), args.step.name())];
    lines.push(format!(
        "wrote {} as one transaction; state/rotations.yaml records the rotation as {} at {}",
        cluster_dir.display(),
        record.phase.name(),
        opts.now
    ));
    lines.extend(notes);
    lines.extend(instructions(&cluster_dir, &changed, plan.as_ref(), &rollout));
    Ok(Rotated { state_report: state.report, lines })
}

/// How to restart `component` on `node`: its systemd unit (daemon-reload first when the unit
/// changed), or kubeadm's static pod (its manifest regenerated with the patches when the
/// component's kubeadm patch changed, came or went, else its container stopped so the kubelet
/// starts it again); kubeadm's kubelet is a host service. None: the node does not run it so
/// (kube-proxy is a DaemonSet under kubeadm).
fn restart_command(node: Option<&crate::tree::bundle::PlanNode>, component: &str, touched: &[String]) -> Option<String> {
    let unit = node.and_then(|n| n.files.iter().find(|f| f.artifact == format!("{component}.service")));
    if let Some(u) = unit {
        return Some(if touched.contains(&u.path) {
            format!("systemctl daemon-reload && systemctl restart {component}")
        } else {
            format!("systemctl restart {component}")
        });
    }
    if component == "kubelet" {
        return Some("systemctl restart kubelet".into());
    }
    if !["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"].contains(&component) {
        return None;
    }
    // kubeadm's patch of this component (`<component>+json.yaml` in the patches directory).
    let patch = touched.iter().find(|p| p.rsplit('/').next().is_some_and(|f| f.starts_with(&format!("{component}+"))));
    Some(match patch {
        Some(p) => {
            let dir = p.rsplit_once('/').map(|(d, _)| d).unwrap_or(p);
            format!(
                "kubeadm upgrade node phase control-plane --certificate-renewal=false --etcd-upgrade=false --patches /{dir}   # rewrites the static pods with the patches; the kubelet restarts them"
            )
        }
        None => format!("crictl stop $(crictl ps -q --name '^{component}$')   # static pod: the kubelet starts it again"),
    })
}

/// The operator's steps: the changed files of each node (nodes with the same changes together),
/// then the restarts in order, then what the material says.
fn instructions(
    cluster_dir: &Path,
    changed: &BTreeMap<String, (Vec<String>, Vec<String>)>,
    plan: Option<&crate::tree::bundle::PlanDoc>,
    rollout: &Rollout,
) -> Vec<String> {
    let mut lines = Vec::new();
    let mut base = 1;
    if changed.is_empty() {
        lines.push("roll out: no node file changed".into());
    } else {
        lines.push("roll out, in this order:".into());
        let mut groups: BTreeMap<&(Vec<String>, Vec<String>), Vec<&str>> = BTreeMap::new();
        for (node, c) in changed {
            groups.entry(c).or_default().push(node);
        }
        lines.push(
            "  1. put the changed files in place on each node, from its tarball (identical on every control plane where they are shared):"
                .into(),
        );
        for ((files, gone), nodes) in &groups {
            lines.push(format!("     {}: {}", nodes.join(", "), files.iter().map(|p| format!("/{p}")).collect::<Vec<_>>().join(" ")));
            lines.push(format!(
                "       tar -xzf {} -C / {}",
                cluster_dir
                    .join("nodes")
                    .join(if nodes.len() == 1 { format!("{}.tar.gz", nodes[0]) } else { "<node>.tar.gz".into() })
                    .display(),
                files.join(" ")
            ));
            if !gone.is_empty() {
                lines.push(format!("       rm -f {}", gone.iter().map(|p| format!("/{p}")).collect::<Vec<_>>().join(" ")));
            }
        }
        let cps: Vec<&str> = changed
            .keys()
            .map(String::as_str)
            .filter(|n| plan.and_then(|p| p.node(n)).is_none_or(|p| p.roles.iter().any(|r| r == "control-plane")))
            .collect();
        let mut step = 2;
        for component in &rollout.restart {
            let commands: Vec<String> = cps
                .iter()
                .filter_map(|n| {
                    let node = plan.and_then(|p| p.node(n));
                    let touched: Vec<String> = changed.get(*n).map(|c| c.0.iter().chain(&c.1).cloned().collect()).unwrap_or_default();
                    restart_command(node, component, &touched).map(|command| format!("     {n}: {command}"))
                })
                .collect();
            if commands.is_empty() {
                continue;
            }
            lines.push(format!("  {step}. restart {component} on each control plane, one at a time (the next once it is ready again):"));
            lines.extend(commands);
            step += 1;
        }
        base = step;
    }
    for (i, then) in rollout.then.iter().enumerate() {
        lines.push(format!("  {}. {then}", base + i));
    }
    lines
}

/// `rotate status`: each material's rotation in progress (phase and since when), or its last one.
pub fn status(config: &Config, out: &Path) -> Result<Vec<String>, RotateError> {
    let cluster_dir = out.join(&config.cluster_name);
    let state_dir = cluster_dir.join("state");
    if !state_dir.join(crate::bundle::state::MARKER_FILE).is_file() {
        return Err(RotateError::NotABundle(format!(
            "{} holds no bundle of cluster {:?} (no state/cluster.yaml)\n  hint: give the --config and --out of `kubebundle generate` for that bundle",
            cluster_dir.display(),
            config.cluster_name
        )));
    }
    let history = rotations::read(&state_dir)?;
    let mut lines = vec![format!("{:<14} {:<10} {:<22} {}", "MATERIAL", "PHASE", "SINCE", "ROTATION")];
    for id in MATERIALS {
        let line = match history.last(id) {
            None => format!("{id:<14} {:<10} {:<22} {}", "none", "-", "never rotated"),
            Some(r) => format!(
                "{id:<14} {:<10} {:<22} {} → {}{}",
                r.phase.name(),
                r.since(),
                crate::util::text::escape(&r.old),
                crate::util::text::escape(&r.new),
                match r.phase {
                    Phase::Started => "  (next: switch, or abort)".to_string(),
                    Phase::Switched => "  (next: finish)".to_string(),
                    _ => r.archived.as_ref().map(|a| format!("  (archived in {a})")).unwrap_or_default(),
                }
            ),
        };
        lines.push(line);
    }
    Ok(lines)
}
