//! The generate pipeline, for one cluster directory `OUT/<clusterName>`: plan → state →
//! materialize → write/pack (`build`), or the same compared with what is on disk and written
//! nowhere (`check`, for `generate --check`).

use std::path::{Path, PathBuf};

use crate::bundle::materialize::{self, Bundle, MaterializeError};
use crate::bundle::membership::{self, MembershipError, Recorded};
use crate::bundle::output::{self, OutputError};
use crate::bundle::plan::{self, Plan};
use crate::bundle::reuse::{self, Judged, NodeReport, Previous};
use crate::bundle::state::{State, StateError};
use crate::clock::Clock;
use crate::config::Config;
use crate::tree::profile::{Profile, ProfileError};
use crate::tree::tarball;

/// Why a generate run failed (the CLI maps each to its exit code).
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Materialize(#[from] MaterializeError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Membership(#[from] MembershipError),
}

/// The plan of a first run (`kubebundle plan`): the config's init node, a new etcd cluster.
pub fn make_plan(config: &Config) -> Result<Plan, GenerateError> {
    let mut plan = make_plan_with(config, plan::founding_members(config))?;
    // A first run has no rotation in progress.
    drop_rotation_files(&mut plan, false, false, false);
    Ok(plan)
}

fn make_plan_with(config: &Config, etcd: Vec<crate::bundle::state::cluster::EtcdMember>) -> Result<Plan, GenerateError> {
    let profile = Profile::load(&config.profile, config.base_dir.as_deref())?;
    profile.check_expanded(config.certificates_dir.trim_start_matches('/'))?;
    Ok(plan::plan_with(config, &profile, etcd))
}

/// Decides the init node and the etcd members from what the bundle recorded (`--force` starts
/// over), plans, loads the state and materializes; each node's files go to `sink` as they are
/// made, with what the previous bundle holds of them. Returns the state, the bundle and what the
/// operator must do on the running cluster (see `membership`).
fn render<E: From<GenerateError>>(
    config: &Config,
    cluster_dir: &Path,
    clock: &Clock,
    force: bool,
    sink: &(dyn Fn(&Previous, &str, crate::tree::FileTree) -> Result<(), materialize::MaterializeError> + Sync),
    lost_ok: &[String],
    edit: &mut dyn FnMut(&mut State) -> Result<(), E>,
) -> Result<(State, Bundle, Vec<String>), Failed<E>> {
    let state_dir = cluster_dir.join("state");
    let recorded = if force { None } else { Recorded::read(cluster_dir, &config.cluster_name).map_err(MembershipError::from)? };
    let decision = membership::decide(config, recorded.as_ref(), &state_dir)?;
    let mut config = config.clone();
    let by = config.init_node_by.clone().unwrap_or_else(|| format!("{}", state_dir.join(crate::bundle::state::MARKER_FILE).display()));
    if !config.set_init_node(&decision.init_node, &by) {
        return Err(MembershipError::Refused(format!(
            "the init node {} is not a control plane of the config: report this",
            decision.init_node
        ))
        .into());
    }
    let config = &config;
    let mut plan = make_plan_with(config, decision.etcd.clone())?;
    let mut state = State::load_tolerating(&state_dir, config, &plan.certificate_authorities, clock, force, lost_ok)?;
    // A lifecycle command changes the state it loaded (a rotation's phase) before the bundle is
    // rendered from it.
    edit(&mut state).map_err(Failed::Edit)?;
    drop_external_ca_keys(&mut plan, &state);
    let ca_rotating = state.ca_next.contains_key("ca") || state.ca_previous.contains_key("ca");
    drop_rotation_files(&mut plan, state.sa_next.is_some(), state.sa_previous.is_some(), ca_rotating);
    state.report.extend(decision.recorded(recorded.as_ref()));
    let record = decision.record(&config.cluster_name).text();
    state.files.insert(crate::bundle::state::MARKER_FILE, record.into_bytes(), 0o600);
    // A re-run keeps the nodes that did not change (`--force` starts over).
    let previous = if force { Previous::default() } else { Previous::at(cluster_dir) };
    let bundle = materialize::materialize(config, &plan, &state, clock, &|name, tree| sink(&previous, name, tree))?;
    let steps = decision.steps(config, &plan, recorded.as_ref());
    Ok((state, bundle, steps))
}

/// A failure of the pipeline, or of the lifecycle command's edit of the state.
pub enum Failed<E> {
    Generate(GenerateError),
    Edit(E),
}

impl<E: From<GenerateError>> Failed<E> {
    fn into_error(self) -> E {
        match self {
            Failed::Generate(g) => E::from(g),
            Failed::Edit(e) => e,
        }
    }
}

macro_rules! failed_from {
    ($($t:ty),*) => {$(
        impl<E> From<$t> for Failed<E> {
            fn from(e: $t) -> Self {
                Failed::Generate(GenerateError::from(e))
            }
        }
    )*};
}
failed_from!(ProfileError, StateError, MaterializeError, OutputError, MembershipError);

impl<E> From<GenerateError> for Failed<E> {
    fn from(e: GenerateError) -> Self {
        Failed::Generate(e)
    }
}

/// The files of a rotation in progress (`lifecycle::rotate`) go only to bundles whose state holds
/// them: a profile places them, and every other run leaves them out.
fn drop_rotation_files(plan: &mut Plan, sa_next: bool, sa_previous: bool, ca_rotating: bool) {
    use crate::tree::profile::{self, Artifact};
    for n in &mut plan.nodes {
        n.files.retain(|f| match profile::artifact(&f.artifact) {
            Some(Artifact::SaNextPub) => sa_next,
            Some(Artifact::SaPreviousPub) => sa_previous,
            Some(Artifact::ClusterSigningCa) => ca_rotating,
            Some(Artifact::Rendered(r)) if r.id == "kube-controller-manager-patch" => ca_rotating,
            _ => true,
        });
    }
}

/// External-CA mode: a CA whose key the state does not hold has no key file on any node (kubeadm
/// detects external CA by the key's absence).
fn drop_external_ca_keys(plan: &mut Plan, state: &State) {
    use crate::tree::profile::{self, Artifact};
    let external: Vec<&str> = state.authorities.values().filter(|a| a.is_external()).map(|a| a.id.as_str()).collect();
    if external.is_empty() {
        return;
    }
    for n in &mut plan.nodes {
        n.files.retain(|f| !matches!(profile::artifact(&f.artifact), Some(Artifact::KeyPem(e)) if e.is_ca() && external.contains(&e.id)));
    }
}

/// plan → state → materialize → write/pack for one cluster directory (`OUT/<clusterName>`).
/// The whole new directory (state and bundle) is built beside the old one and swapped in
/// atomically, under a lock on that directory. `unpacked` also writes each node's tree. When
/// `OUT/<clusterName>` is a symbolic link, the directory it points to is the bundle: the new one
/// is built beside that directory and exchanged with it, and the link stays.
/// Returns the state, the bundle, lines for the run's summary (node files kept, updated and
/// repaired; nodes moved out) and what the operator must do on the running cluster (etcd
/// members to add or remove, a new init node).
pub fn build(
    config: &Config,
    out: &Path,
    clock: &Clock,
    force: bool,
    unpacked: bool,
) -> Result<(State, Bundle, Vec<String>, Vec<String>), GenerateError> {
    build_with(config, out, clock, force, unpacked, &[], &mut |_| Ok::<_, GenerateError>(StateEdit::default()))
}

/// What `build` returns: the state, the bundle, the run's summary lines and the operator's steps.
pub type Built = (State, Bundle, Vec<String>, Vec<String>);

/// What a lifecycle command changed in the state it loaded (see `build_with`).
#[derive(Default)]
pub struct StateEdit {
    /// State files (relative to `state/`) the new state no longer holds.
    pub remove: Vec<String>,
    /// Old state files to keep in a backup beside the bundle (`kubebundle-backup-<time>/state/`),
    /// the way `generate --force` keeps a replaced state: archived, never deleted.
    pub archive: crate::tree::FileTree,
    /// The backup's name beside the bundle (`output::free_backup_name`), when the command records it.
    pub archive_name: Option<String>,
}

/// `build`, with `edit` changing the state once it is loaded and checked, under the bundle's
/// lock, before anything is rendered from it: a lifecycle command (a rotation's phase) is then one
/// transaction exactly like generate, and the bundle it writes is complete for the edited state.
/// `edit` returns the state files to remove and to archive. The recorded secrets `lost_ok` names
/// may be missing or changed (see `State::load_tolerating`).
pub fn build_with<E: From<GenerateError>>(
    config: &Config,
    out: &Path,
    clock: &Clock,
    force: bool,
    unpacked: bool,
    lost_ok: &[String],
    edit: &mut dyn FnMut(&mut State) -> Result<StateEdit, E>,
) -> Result<Built, E> {
    build_inner(config, out, clock, force, unpacked, lost_ok, edit).map_err(Failed::into_error)
}

fn build_inner<E: From<GenerateError>>(
    config: &Config,
    out: &Path,
    clock: &Clock,
    force: bool,
    unpacked: bool,
    lost_ok: &[String],
    edit: &mut dyn FnMut(&mut State) -> Result<StateEdit, E>,
) -> Result<Built, Failed<E>> {
    let cluster_dir = out.join(&config.cluster_name);
    // Checked before the lock file is made (so a refusal writes nothing), and again under it.
    // A bundle whose state was lost is refused (it must not get new CAs), unless --force starts
    // its state over.
    let owner = |dir: &Path| match force && crate::bundle::state::check::lost_state_of(dir, &config.cluster_name) {
        true => Ok(()),
        false => output::check_owner(dir, &config.cluster_name),
    };
    if !force {
        crate::bundle::state::check::refuse_lost(&cluster_dir, Some(&config.cluster_name))?;
    }
    owner(&cluster_dir)?;
    let lock = output::lock(out, &config.cluster_name)?;
    // The bundle the lock is for: a link's target. Messages keep the path as given.
    let real = lock.dir().to_path_buf();
    if !force {
        crate::bundle::state::check::refuse_lost(&cluster_dir, Some(&config.cluster_name))?;
    }
    owner(&real)?;
    output::sweep_around(&out.join(&config.cluster_name));

    let (parent, name) = (real.parent().unwrap_or(out), real.file_name().unwrap_or_default().to_string_lossy());
    let staging = output::stage(parent, &name)?;
    let root = staging.path();
    output::ensure_dir(&root.join("nodes"), 0o700)?;
    // Each node's tarball (and tree) is written as soon as it is rendered, and dropped. A
    // previous tarball (or tree file) that is exactly what this run writes is kept by hard link:
    // nothing is packed, written or, after the swap, freed. Anything else is rewritten, and
    // reported when it was not this run's own change (truncated, corrupt, edited, re-packed, a
    // wrong mode).
    let report = NodeReport::default();
    let write_node = |previous: &Previous, name: &str, tree: crate::tree::FileTree| {
        let rel = format!("nodes/{name}.tar.gz");
        let path = root.join(&rel);
        let (judged, linked) = reuse::link_if_same(previous.tarball(name).as_deref(), &path, |p| reuse::judge_tarball(p, &tree));
        let node_unchanged = matches!(judged, Judged::Same { .. });
        match judged {
            Judged::Same { mode: 0o600, .. } if linked => report.kept(),
            Judged::Same { mode, bytes } => {
                if linked {
                    std::fs::remove_file(&path).map_err(output::werr(&path))?;
                }
                output::write_file(&path, &bytes, 0o600)?;
                match mode {
                    0o600 => report.kept(),
                    m => report.repaired(rel, format!("mode {m:04o}, a tarball is 0600")),
                }
            }
            other => {
                output::write_file(&path, &tarball::tar_gz(&tree, clock.unix()).map_err(output::werr(&path))?, 0o600)?;
                match other {
                    Judged::Differs(Some(why)) => report.repaired(rel, why),
                    Judged::Differs(None) => report.updated(rel),
                    _ => report.new_tarball(),
                }
            }
        }
        if unpacked {
            let dir = root.join("nodes").join(name);
            output::ensure_dir(&dir, 0o755)?;
            for d in tree.dirs() {
                output::ensure_dir(&dir.join(d), 0o755)?;
            }
            let old = previous.tree(name, &tree);
            for (p, f) in tree.iter() {
                let to = dir.join(p);
                let from = old.as_ref().and_then(|o| o.file(p));
                let (judged, linked) = reuse::link_if_same(from.as_deref(), &to, |at| reuse::judge_file(at, &f.bytes, f.mode));
                let why = match judged {
                    Judged::Same { mode, .. } if mode == f.mode && linked => continue,
                    Judged::Same { mode, .. } => (mode != f.mode).then(|| format!("mode {mode:04o}, planned {:04o}", f.mode)),
                    // The node's files did not change, so this one was changed after it was written.
                    Judged::Differs(None) if node_unchanged => Some("edited: not the bytes kubebundle wrote".to_string()),
                    Judged::Differs(why) => why,
                    Judged::Absent => None,
                };
                if linked {
                    std::fs::remove_file(&to).map_err(output::werr(&to))?;
                }
                output::write_file(&to, &f.bytes, f.mode)?;
                if let Some(why) = why {
                    report.repaired(format!("nodes/{name}/{p}"), why);
                }
            }
        }
        Ok(())
    };
    let mut edited = StateEdit::default();
    let (mut state, mut bundle, steps) = render(config, &cluster_dir, clock, force, &write_node, lost_ok, &mut |state: &mut State| {
        edited = edit(state)?;
        Ok(())
    })?;
    // The state: whatever the old one held, then every file this run uses. `--force` starts a
    // new state and keeps the old one in a backup beside the bundle.
    if state.dir.is_dir() && !force {
        output::copy_tree(&state.dir, &root.join("state"))?;
    }
    for rel in &edited.remove {
        match std::fs::remove_file(root.join("state").join(rel)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Failed::from(output::werr(&root.join("state").join(rel))(e))),
            _ => {}
        }
    }
    output::write_tree(&root.join("state"), &state.files, 0o700)?;
    output::write_tree(&root.join("state"), &bundle.state_files, 0o700)?;
    let moved = if bundle.awaiting > 0 {
        // External-CA mode: the leaves' keys are in the state, their CSRs go to the signer; the
        // previous nodes stay as they were.
        output::ensure_dir(&root.join(crate::bundle::state::CSR_DIR), 0o755)?;
        output::write_tree(&root.join(crate::bundle::state::CSR_DIR), &bundle.csrs, 0o755)?;
        let old_nodes = cluster_dir.join("nodes");
        if old_nodes.is_dir() {
            output::copy_tree(&old_nodes, &root.join("nodes"))?;
        }
        Vec::new()
    } else {
        // manifests/ holds the token Secrets: 0700 like every directory of secrets.
        output::write_tree(root, &bundle.top, 0o700)?;
        move_out_removed_nodes(out, &config.cluster_name, &cluster_dir, &bundle, clock)?
    };
    let mut removed: Vec<String> = moved
        .iter()
        .map(|(name, dest)| {
            format!("node {name} is no longer in the Inventory: its files were moved out of the bundle to {}", dest.display())
        })
        .collect();
    bundle.changes.moved_out = moved;
    // The staged nodes (in external-CA mode, while certificates wait, the previous ones).
    let staged_nodes = crate::tree::bundle::node_names(&root.join("nodes"));
    removed.extend(write_exports(config, root, &cluster_dir, &real, &staged_nodes)?);
    if force && output::list_files(&state.dir).is_ok_and(|f| !f.is_empty()) {
        let staged = output::PrivateDir::new(parent, ".kubebundle-backup-")?;
        output::copy_tree(&state.dir, &staged.path().join("state"))?;
        let backup = staged.publish_backup(parent, clock.now)?;
        // Shown beside the bundle as given (the same directory unless the bundle is a link).
        let shown = cluster_dir.parent().unwrap_or(out).join(backup.file_name().unwrap_or_default());
        state.report.push(format!("the previous state was kept in {} (--force replaced it)", shown.join("state").display()));
    }
    if !edited.archive.is_empty() {
        let staged = output::PrivateDir::new(parent, ".kubebundle-backup-")?;
        output::write_tree(&staged.path().join("state"), &edited.archive, 0o700)?;
        let backup = match &edited.archive_name {
            Some(name) => {
                staged.publish(&parent.join(name))?;
                parent.join(name)
            }
            None => staged.publish_backup(parent, clock.now)?,
        };
        let shown = cluster_dir.parent().unwrap_or(out).join(backup.file_name().unwrap_or_default());
        state.report.push(format!("kept the replaced state files in {}", shown.join("state").display()));
    }
    // What this run writes, keeps and drops, judged against the bundle it replaces.
    let moved_out = std::mem::take(&mut bundle.changes.moved_out);
    bundle.changes = output::changes(&real, root)?;
    bundle.changes.moved_out = moved_out;
    output::commit(staging, &real)?;
    lock.keep();
    let mut notes = report.lines(20);
    notes.extend(removed);
    Ok((state, bundle, notes, steps))
}

/// One file generate writes into `export/<format>/`.
struct ExportJob {
    format: crate::export::Format,
    file: String,
    node: String,
    opts: crate::export::Options,
    gzip: bool,
}

/// What generate writes into `export/`: every node in each format `Inventory.export` names (with
/// its `exportRuncmd`), and every file `kubebundle export` recorded in the bundle `old` that this
/// run replaces (`export::Record`: the same node and options, so a user's export follows the new
/// tarballs instead of going stale or vanishing; a file of a node that left the bundle is
/// dropped), with the records to write beside them. The Inventory's choice wins for its formats.
fn export_jobs(config: &Config, old: &Path, nodes: &[String]) -> (Vec<ExportJob>, Vec<(crate::export::Format, crate::export::Record)>) {
    use crate::export::{Format, Options, Record};
    let named: Vec<Format> = config.export.iter().filter_map(|f| Format::parse(f)).collect();
    let mut jobs = Vec::new();
    for &format in &named {
        for node in nodes {
            let opts = Options { runcmd: config.export_runcmd };
            jobs.push(ExportJob { format, file: format.file_name(node), node: node.clone(), opts, gzip: false });
        }
    }
    let mut records = Vec::new();
    for format in [Format::CloudInit, Format::Ignition].into_iter().filter(|f| !named.contains(f)) {
        let Some(mut record) = Record::read(&old.join("export").join(format.name())) else { continue };
        record.files.retain(|file, r| {
            // Only names `kubebundle export` gives, for nodes the bundle still has.
            let expected = format.file_name(&r.node) + if r.gzip { ".gz" } else { "" };
            *file == expected && nodes.contains(&r.node)
        });
        for (file, r) in &record.files {
            let opts = Options { runcmd: r.runcmd };
            jobs.push(ExportJob { format, file: file.clone(), node: r.node.clone(), opts, gzip: r.gzip });
        }
        records.push((format, record));
    }
    (jobs, records)
}

/// Writes `export_jobs` into the staged bundle `root`, each node read back from its staged tarball
/// in memory (directories 0700, files 0600: they hold the nodes' keys), so the exports are always
/// the bundle's. Returns the size warnings, naming the files as they will be (`shown` is the
/// bundle as given).
fn write_exports(config: &Config, root: &Path, shown: &Path, old: &Path, names: &[String]) -> Result<Vec<String>, GenerateError> {
    let (jobs, records) = export_jobs(config, old, names);
    if jobs.is_empty() && records.is_empty() {
        return Ok(Vec::new());
    }
    let plan = crate::tree::bundle::read_plan(root);
    let nodes =
        crate::tree::bundle::read_nodes(root, plan.as_ref(), false).map_err(|e| MaterializeError::Missing(format!("export: {e}")))?;
    let mut warnings = Vec::new();
    output::ensure_dir(&root.join("export"), 0o700)?;
    for (format, record) in &records {
        let dir = root.join("export").join(format.name());
        output::ensure_dir(&dir, 0o700)?;
        output::write_file(&dir.join(crate::export::RECORD_FILE), &record.to_bytes(), 0o600)?;
    }
    for job in &jobs {
        let Some(node) = nodes.iter().find(|n| n.name == job.node) else { continue };
        let dir = root.join("export").join(job.format.name());
        output::ensure_dir(&dir, 0o700)?;
        let rel = format!("export/{}/{}", job.format.name(), job.file);
        let base = shown.join(&rel).display().to_string();
        let base = if job.gzip { base.trim_end_matches(".gz").to_string() } else { base };
        let exported = crate::export::export_file(&node.tree, job.format, job.opts, job.gzip, &base);
        output::write_file(&dir.join(&job.file), &exported.bytes, 0o600)?;
        warnings.extend(exported.warning.map(|w| format!("warning: {w}")));
    }
    Ok(warnings)
}

/// The `--check` line for a file of the bundle judged against what a run would write there with
/// `mode` (None: the same). `edited` says a differing file was changed after it was written.
fn drift_line(rel: &str, judged: Judged, mode: u32, edited: bool) -> Option<String> {
    match judged {
        Judged::Absent => Some(format!("would add     {rel}")),
        Judged::Same { mode: old, .. } if old == mode => None,
        Judged::Same { mode: old, .. } => Some(format!("would chmod   {rel} ({old:04o} → {mode:04o})")),
        Judged::Differs(None) if edited => Some(format!("would change  {rel} (edited: not the bytes kubebundle wrote)")),
        Judged::Differs(None) => Some(format!("would change  {rel}")),
        Judged::Differs(Some(why)) => Some(format!("would change  {rel} ({why})")),
    }
}

/// How a file on disk compares with what a run would write there (None: the same).
fn drift(path: &Path, rel: &str, bytes: &[u8], mode: u32) -> Option<String> {
    drift_line(rel, reuse::judge_file(path, bytes, mode), mode, false)
}

/// `generate --check`: every file (relative to OUT/<clusterName>) a run would add, change or
/// remove, computed without writing anything. A tarball is up to date only when it holds exactly
/// what the run writes (see `tarball::compare`) and its mode is 0600; one that is not says why.
pub fn check(config: &Config, out: &Path, clock: &Clock, unpacked: bool) -> Result<Vec<String>, GenerateError> {
    let cluster_dir = out.join(&config.cluster_name);
    output::sweep_around(&cluster_dir);
    crate::bundle::state::check::refuse_lost(&cluster_dir, Some(&config.cluster_name))?;
    output::check_owner(&cluster_dir, &config.cluster_name)?;
    let changes = std::sync::Mutex::new(Vec::new());
    let seen = std::sync::Mutex::new(std::collections::BTreeSet::new());
    // The nodes' files, kept only when there are exports to write (rendered from them below).
    let exporting = !config.export.is_empty()
        || [crate::export::Format::CloudInit, crate::export::Format::Ignition]
            .iter()
            .any(|f| cluster_dir.join("export").join(f.name()).join(crate::export::RECORD_FILE).is_file());
    let trees = std::sync::Mutex::new(Vec::new());
    let compare_node = |_: &Previous, name: &str, tree: crate::tree::FileTree| {
        let mut found = Vec::new();
        let mut names = Vec::new();
        let rel = format!("nodes/{name}.tar.gz");
        let judged = reuse::judge_tarball(&cluster_dir.join(&rel), &tree);
        let node_unchanged = matches!(judged, Judged::Same { .. });
        found.extend(drift_line(&rel, judged, 0o600, false));
        names.push(rel);
        if unpacked {
            for (p, f) in tree.iter() {
                let rel = format!("nodes/{name}/{p}");
                let judged = reuse::judge_file(&cluster_dir.join(&rel), &f.bytes, f.mode);
                found.extend(drift_line(&rel, judged, f.mode, node_unchanged));
                names.push(rel);
            }
        }
        changes.lock().unwrap_or_else(|e| e.into_inner()).extend(found);
        seen.lock().unwrap_or_else(|e| e.into_inner()).extend(names);
        if exporting {
            trees.lock().unwrap_or_else(|e| e.into_inner()).push((name.to_string(), tree));
        }
        Ok(())
    };
    let (state, bundle, _) =
        render::<GenerateError>(config, &cluster_dir, clock, false, &compare_node, &[], &mut |_| Ok(())).map_err(Failed::into_error)?;
    let mut changes = changes.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut seen = seen.into_inner().unwrap_or_else(|e| e.into_inner());
    for tree in [&state.files, &bundle.state_files] {
        for (p, f) in tree.iter() {
            let rel = format!("state/{p}");
            changes.extend(drift(&cluster_dir.join(&rel), &rel, &f.bytes, f.mode));
        }
    }
    for (p, f) in bundle.top.iter() {
        changes.extend(drift(&cluster_dir.join(p), p, &f.bytes, f.mode));
        seen.insert(p.clone());
    }
    if exporting && bundle.awaiting == 0 {
        // What `write_exports` writes: each node read as the bundle's tarball gives it, with its plan's layout.
        let plan: Option<crate::tree::bundle::PlanDoc> = bundle.top.get("plan.json").and_then(|f| serde_json::from_slice(&f.bytes).ok());
        let candidates = crate::tree::layout::builtin_profiles();
        let mut nodes = Vec::new();
        for (name, tree) in trees.into_inner().unwrap_or_else(|e| e.into_inner()) {
            let origin = crate::tree::node::Origin::Tarball(cluster_dir.join(format!("nodes/{name}.tar.gz")));
            let layout = plan.as_ref().and_then(|p| p.layout(&name));
            let Ok(mut node) = crate::tree::node::NodeTree::from_files(origin, tree.0, Vec::new(), layout, &candidates) else { continue };
            node.name = Some(name.clone());
            nodes.push(node);
        }
        let (jobs, records) = export_jobs(config, &cluster_dir, &bundle.node_names);
        for (format, record) in &records {
            let rel = format!("export/{}/{}", format.name(), crate::export::RECORD_FILE);
            changes.extend(drift(&cluster_dir.join(&rel), &rel, &record.to_bytes(), 0o600));
            seen.insert(rel);
        }
        for job in &jobs {
            let Some(node) = nodes.iter().find(|n| n.name.as_deref() == Some(job.node.as_str())) else { continue };
            let rel = format!("export/{}/{}", job.format.name(), job.file);
            let exported = crate::export::export_file(node, job.format, job.opts, job.gzip, &rel);
            changes.extend(drift(&cluster_dir.join(&rel), &rel, &exported.bytes, 0o600));
            seen.insert(rel);
        }
    }
    if bundle.awaiting > 0 {
        for (p, f) in bundle.csrs.iter() {
            let rel = format!("{}/{p}", crate::bundle::state::CSR_DIR);
            changes.extend(drift(&cluster_dir.join(&rel), &rel, &f.bytes, f.mode));
            seen.insert(rel);
        }
        for (rel, _) in output::list_files(&cluster_dir).unwrap_or_default() {
            if rel.starts_with("nodes/") {
                seen.insert(rel);
            }
        }
        changes.push(format!(
            "waiting for   {} signed certificates (external CA): their CSRs are in {}; run `kubebundle import-signed --dir {} SIGNED...`",
            bundle.awaiting,
            cluster_dir.join(crate::bundle::state::CSR_DIR).display(),
            cluster_dir.display()
        ));
    }
    // Files of the bundle (not the state, which keeps what it holds) that the run would drop.
    for (rel, _) in output::list_files(&cluster_dir).unwrap_or_default() {
        if !rel.starts_with("state/") && !seen.contains(&rel) {
            changes.push(format!("would remove  {}", crate::util::text::escape(&rel)));
        }
    }
    changes.sort_by(|a, b| a.get(14..).cmp(&b.get(14..)));
    Ok(changes)
}

/// Where removed nodes are archived: a directory of OUT that no cluster can own (a cluster name
/// never starts with a dot), one folder per cluster.
fn removed_dir(out: &Path, cluster: &str) -> PathBuf {
    out.join(".removed").join(cluster)
}

/// Nodes of the previous bundle that are no longer in the Inventory: their tarball (and tree) are
/// copied out of the bundle, to `OUT/.removed/<clusterName>/<node>-<time>/` (`-2`, `-3`, ... when
/// that exists: an archive is never overwritten), before the new bundle replaces the old one.
/// Each archive is made in a private directory and renamed into place whole. Returns each node
/// with its archive.
fn move_out_removed_nodes(
    out: &Path,
    cluster: &str,
    cluster_dir: &Path,
    bundle: &Bundle,
    clock: &Clock,
) -> Result<Vec<(String, PathBuf)>, GenerateError> {
    let nodes_dir = cluster_dir.join("nodes");
    let gone: Vec<String> = crate::tree::bundle::node_names(&nodes_dir).into_iter().filter(|n| !bundle.node_names.contains(n)).collect();
    let stamp = clock.now.format(&time::macros::format_description!("[year][month][day]T[hour][minute][second]Z")).unwrap_or_default();
    let mut lines = Vec::new();
    if gone.is_empty() {
        return Ok(lines);
    }
    let archives = removed_dir(out, cluster);
    output::ensure_dir(&out.join(".removed"), 0o700)?;
    output::ensure_dir(&archives, 0o700)?;
    for name in gone {
        let staged = output::PrivateDir::new(out, ".kubebundle-removed-")?;
        if nodes_dir.join(&name).is_dir() {
            output::copy_tree(&nodes_dir.join(&name), &staged.path().join(&name))?;
        }
        let tgz = nodes_dir.join(format!("{name}.tar.gz"));
        if let Ok(bytes) = std::fs::read(&tgz) {
            output::write_file(&staged.path().join(format!("{name}.tar.gz")), &bytes, 0o600)?;
        }
        // Archives of this cluster are only made under its lock: the first free name stays free.
        let base = format!("{name}-{stamp}");
        let mut dest = archives.join(&base);
        for n in 2.. {
            if std::fs::symlink_metadata(&dest).is_err() {
                break;
            }
            dest = archives.join(format!("{base}-{n}"));
        }
        staged.publish(&dest)?;
        lines.push((name, dest));
    }
    Ok(lines)
}
