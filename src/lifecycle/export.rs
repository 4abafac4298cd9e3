//! `kubebundle export <cloud-init|ignition>`: each node of a bundle, read in memory from its
//! tarball, written as first-boot user-data (`crate::export`) to `<out>/<format>/<node>.<ext>`:
//! the directories 0700, the files 0600 (they hold the node's keys), each replaced atomically,
//! under the bundle's lock. Nothing secret is printed.

use std::path::{Path, PathBuf};

use crate::bundle::output;
use crate::export::{self, Format, Options};
use crate::lifecycle::LifecycleError;
use crate::tree::bundle as tb;

pub struct ExportArgs {
    pub format: Format,
    /// The bundle `OUT/<cluster>`.
    pub dir: PathBuf,
    /// Only these nodes (all when empty).
    pub nodes: Vec<String>,
    /// Where the `<format>/` directory goes (default `<dir>/export`).
    pub out: Option<PathBuf>,
    pub opts: Options,
    /// Also (instead of the plain file) write the cloud-init user-data gzip-compressed whole.
    pub gzip: bool,
}

/// What was written: (file, its size), and the size warnings.
#[derive(Default)]
pub struct ExportReport {
    pub written: Vec<(PathBuf, usize)>,
    pub warnings: Vec<String>,
}

/// The directory a format's files go to.
pub fn format_dir(out: &Path, format: Format) -> PathBuf {
    out.join(format.name())
}

pub fn export(args: &ExportArgs) -> Result<ExportReport, LifecycleError> {
    if !args.dir.is_dir() || !tb::is_bundle(&args.dir) {
        return Err(LifecycleError::Input(format!(
            "{} is not a bundle (OUT/<clusterName> with nodes/ beside state/ or plan.json)\n  hint: give --dir the directory generate wrote, e.g. out/kubernetes",
            args.dir.display()
        )));
    }
    if args.gzip && args.format == Format::Ignition {
        return Err(LifecycleError::Input(
            "--gzip: Ignition takes no gzip-compressed config on most clouds (its files are compressed inside it already)\n  hint: drop --gzip for ignition".into(),
        ));
    }
    let _lock = output::lock_dir(&args.dir)?;
    let plan = tb::read_plan(&args.dir);
    let on_disk = tb::node_names(&args.dir.join("nodes"));
    for name in &args.nodes {
        if !on_disk.contains(name) {
            return Err(LifecycleError::Input(format!(
                "--node {name:?}: {} has no node of that name (no nodes/{name}.tar.gz)\n  hint: name one of its nodes: {}",
                args.dir.display(),
                on_disk.join(", ")
            )));
        }
    }
    let mut nodes = tb::read_nodes(&args.dir, plan.as_ref(), false).map_err(LifecycleError::Refused)?;
    if !args.nodes.is_empty() {
        nodes.retain(|n| args.nodes.contains(&n.name));
    }
    if nodes.is_empty() {
        return Err(LifecycleError::Input(format!("{} holds no node tarball\n  hint: run generate first", args.dir.display())));
    }
    let out = args.out.clone().unwrap_or_else(|| args.dir.join("export"));
    let dir = format_dir(&out, args.format);
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        output::make_dirs(parent, 0o755)?;
    }
    output::ensure_dir(&out, 0o700)?;
    output::ensure_dir(&dir, 0o700)?;
    let mut report = ExportReport::default();
    // Into the bundle's own export/: recorded, so that generate writes these files again.
    let own = args.out.as_deref().is_none_or(|o| same_dir(o, &args.dir.join("export")));
    let mut record = if own { export::Record::read(&dir).unwrap_or_default() } else { export::Record::default() };
    for node in &nodes {
        let mut name = args.format.file_name(&node.name);
        let shown = dir.join(&name).display().to_string();
        let exported = export::export_file(&node.tree, args.format, args.opts, args.gzip, &shown);
        if args.gzip {
            name.push_str(".gz");
        }
        report.warnings.extend(exported.warning);
        let path = dir.join(&name);
        write_private(&path, &exported.bytes)?;
        report.written.push((path, exported.bytes.len()));
        record.files.insert(name, export::RecordedFile { node: node.name.clone(), runcmd: args.opts.runcmd, gzip: args.gzip });
    }
    if own {
        write_private(&dir.join(export::RECORD_FILE), &record.to_bytes())?;
    }
    Ok(report)
}

/// `a` and `b` name the same directory (both may not exist yet: then compared as written).
fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Replaces `path` atomically with a 0600 file holding `bytes`.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), LifecycleError> {
    use std::io::Write;
    let failed = |e: std::io::Error| LifecycleError::Refused(format!("cannot write {}: {}", path.display(), crate::util::io_words(&e)));
    let mut tmp = output::TempFile::beside(path).map_err(failed)?;
    tmp.file.write_all(bytes).map_err(failed)?;
    tmp.file.sync_all().map_err(failed)?;
    tmp.persist(path).map_err(failed)
}
