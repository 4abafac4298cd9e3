//! Recovering the state's secrets: the verified copies a refusal names, and
//! `kubebundle state restore`.
//!
//! A copy is verified against the state manifest: a key file by the SHA-256 of its bytes, a CA
//! certificate by the public key it holds, an encryption key by the SHA-256 of its secret. Copies
//! are looked for in the backups beside the bundle (`<parent>/kubebundle-backup-*/state/`, as
//! `certs renew` and `generate --force` write them), then in the node tarballs that can hold them
//! (read in memory; plan.json says which nodes). A state that lost its manifest too is checked
//! against the bundle itself: every copy in the tarballs must agree, and each CA key must match
//! its certificate.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::output::{self, FileEntry, OutputError};
use crate::pki::keys::Key;
use crate::state::{self, ca_paths, LeafRecord, LeafRecords, StateError, Token};
use crate::state_manifest::{self as sm, Kind, Manifest, Part, Problem};

/// Copies named per secret in a refusal.
const SHOWN: usize = 3;
const CA_IDS: [&str; 3] = ["ca", "front-proxy-ca", "etcd-ca"];

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{dir} is not a kubebundle bundle (it has no state/, plan.json or nodes/)\n  hint: pass --dir OUT/<clusterName>, the directory generate wrote")]
    NotABundle { dir: String },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Output(#[from] OutputError),
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// One secret (or the certificate of a CA) a copy is wanted for.
struct Want {
    id: String,
    part: Part,
    /// Where it goes in the state.
    file: String,
    /// SHA-256 of the key file, of the CA's public key, or of the encryption key's secret.
    digest: String,
}

/// A verified copy.
struct Copy {
    label: String,
    bytes: Zeroizing<Vec<u8>>,
    /// A CA certificate's notAfter (the latest one is restored).
    not_after: i64,
    /// An encryption key's copy: the key names of the file it is in, in order.
    order: Vec<String>,
    tarball: bool,
}

enum Source {
    /// A directory in the state's layout (a backup's state/, or --from).
    State(PathBuf),
    /// A node tarball.
    Tarball(PathBuf),
}

fn wants_of(m: &Manifest, problems: &[Problem]) -> Vec<Want> {
    let mut out: Vec<Want> = Vec::new();
    for p in problems {
        let Some(e) = m.get(&p.id) else { continue };
        let digest = match p.part {
            Part::Key | Part::EncryptionKey => e.sha256.clone(),
            Part::Cert => e.public_key_sha256.clone().unwrap_or_default(),
            Part::PublicKey => continue,
        };
        if !out.iter().any(|w| w.id == p.id && w.part == p.part) {
            out.push(Want { id: p.id.clone(), part: p.part, file: p.file.clone(), digest });
        }
    }
    out
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The artifacts of a node that can hold `w`.
fn artifacts_of(w: &Want) -> Vec<String> {
    match (sm::kind(&w.id), w.part) {
        (Some(Kind::Ca(id)), Part::Cert) => vec![format!("{id}.crt")],
        (Some(Kind::Ca(id)), _) => vec![format!("{id}.key")],
        (Some(Kind::Sa), _) => vec!["sa.key".into()],
        (Some(Kind::EncryptionKey(_)), _) => vec!["encryption-config".into()],
        _ => vec![],
    }
}

/// The node tarballs of `bundle` that can hold one of `wants`, in plan order (every tarball of
/// nodes/ when there is no plan.json).
fn node_tarballs(bundle: &Path, wants: &[Want]) -> Vec<PathBuf> {
    let nodes = bundle.join("nodes");
    let wanted: BTreeSet<String> = wants.iter().flat_map(artifacts_of).collect();
    match read_json(&bundle.join("plan.json")) {
        Some(plan) => plan["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["files"].as_array().into_iter().flatten().any(|f| f["artifact"].as_str().is_some_and(|a| wanted.contains(a))))
            .filter_map(|n| n["name"].as_str().map(|name| nodes.join(format!("{name}.tar.gz"))))
            .filter(|p| p.is_file())
            .collect(),
        None => tarballs_in(&nodes),
    }
}

fn tarballs_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.to_string_lossy().ends_with(".tar.gz"))
        .collect();
    v.sort();
    v
}

/// The backups beside `bundle`, newest first.
fn backups(bundle: &Path) -> Vec<PathBuf> {
    let parent = bundle.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut v: Vec<PathBuf> = std::fs::read_dir(parent)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("kubebundle-backup-"))
        .map(|e| e.path().join("state"))
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v.reverse();
    v
}

fn sources(bundle: &Path, from: Option<&Path>, wants: &[Want]) -> Vec<Source> {
    match from {
        Some(p) if p.is_file() => vec![Source::Tarball(p.to_path_buf())],
        Some(p) => {
            let state = if p.join("state").is_dir() { p.join("state") } else { p.to_path_buf() };
            let mut v = vec![Source::State(state)];
            v.extend(tarballs_in(&p.join("nodes")).into_iter().chain(tarballs_in(p)).map(Source::Tarball));
            v
        }
        None => {
            backups(bundle).into_iter().map(Source::State).chain(node_tarballs(bundle, wants).into_iter().map(Source::Tarball)).collect()
        }
    }
}

/// The encryption keys (name, secret) of an EncryptionConfiguration (aescbc, aesgcm, secretbox).
fn encryption_config_keys(bytes: &[u8]) -> Option<sm::NamedKeys> {
    #[derive(serde::Deserialize)]
    struct Conf {
        kind: String,
        #[serde(default)]
        resources: Vec<Resource>,
    }
    #[derive(serde::Deserialize)]
    struct Resource {
        #[serde(default)]
        providers: Vec<Provider>,
    }
    #[derive(serde::Deserialize)]
    struct Provider {
        aescbc: Option<Keys>,
        aesgcm: Option<Keys>,
        secretbox: Option<Keys>,
    }
    #[derive(serde::Deserialize)]
    struct Keys {
        #[serde(default)]
        keys: Vec<NameSecret>,
    }
    #[derive(serde::Deserialize)]
    struct NameSecret {
        name: String,
        secret: String,
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let conf: Conf = serde_saphyr::from_str(text).ok()?;
    if conf.kind != "EncryptionConfiguration" {
        return None;
    }
    let mut out = Vec::new();
    for r in conf.resources {
        for p in r.providers {
            for k in [p.aescbc, p.aesgcm, p.secretbox].into_iter().flatten() {
                out.extend(k.keys.into_iter().map(|k| (k.name, Zeroizing::new(k.secret))));
            }
        }
    }
    Some(out)
}

/// Adds every copy of `wants` in one set of files (path in the source, bytes).
fn match_files<'f>(
    files: impl Iterator<Item = (String, &'f [u8])>,
    label: &dyn Fn(&str) -> String,
    tarball: bool,
    wants: &[Want],
    found: &mut [Vec<Copy>],
) {
    for (path, bytes) in files {
        let digest = sm::sha256_hex(bytes);
        let cert = (wants.iter().any(|w| w.part == Part::Cert) && path.ends_with(".crt"))
            .then(|| sm::ca_cert_spki(bytes).ok())
            .flatten()
            .map(|(spki, na)| (sm::sha256_hex(&spki), na));
        let keys = if !wants.iter().any(|w| w.part == Part::EncryptionKey) {
            None
        } else if !tarball && path == state::ENCRYPTION_FILE {
            std::str::from_utf8(bytes).ok().and_then(|t| sm::encryption_keys(t).ok())
        } else if bytes.windows(23).any(|w| w == b"EncryptionConfiguration") {
            encryption_config_keys(bytes)
        } else {
            None
        };
        for (w, copies) in wants.iter().zip(found.iter_mut()) {
            let copy = |not_after: i64, order: Vec<String>, bytes: &[u8]| Copy {
                label: label(&path),
                bytes: Zeroizing::new(bytes.to_vec()),
                not_after,
                order,
                tarball,
            };
            match w.part {
                Part::Key if digest == w.digest => copies.push(copy(0, vec![], bytes)),
                Part::Cert => {
                    if let Some((spki, na)) = &cert {
                        if *spki == w.digest {
                            copies.push(copy(*na, vec![], bytes));
                        }
                    }
                }
                Part::EncryptionKey => {
                    let name = w.id.strip_prefix("encryption-key/").unwrap_or_default();
                    if let Some(list) = &keys {
                        if let Some((_, secret)) =
                            list.iter().find(|(n, s)| n == name && sm::decode_secret(s).is_some_and(|b| sm::sha256_hex(&b) == w.digest))
                        {
                            let order = list.iter().map(|(n, _)| n.clone()).collect();
                            copies.push(copy(0, order, secret.as_bytes()));
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// Every verified copy of each of `wants`: backups (newest first), then the node tarballs that can
/// hold them, until each has a copy from a tarball and `SHOWN` copies (or there is nothing left).
fn find_copies(bundle: &Path, from: Option<&Path>, wants: &[Want]) -> Vec<Vec<Copy>> {
    let mut found: Vec<Vec<Copy>> = wants.iter().map(|_| Vec::new()).collect();
    let done = |found: &[Vec<Copy>]| found.iter().all(|c| c.len() >= SHOWN && c.iter().any(|c| c.tarball));
    for source in sources(bundle, from, wants) {
        if done(&found) {
            break;
        }
        match source {
            Source::State(dir) => {
                let mut rels: BTreeSet<String> = wants.iter().map(|w| w.file.clone()).collect();
                rels.extend(wants.iter().filter_map(|w| match sm::kind(&w.id) {
                    Some(Kind::Ca(id)) => Some(ca_paths(id).0),
                    _ => None,
                }));
                let files: Vec<(String, Zeroizing<Vec<u8>>)> =
                    rels.into_iter().filter_map(|r| Some((r.clone(), Zeroizing::new(std::fs::read(dir.join(&r)).ok()?)))).collect();
                let label = |p: &str| dir.join(p).display().to_string();
                match_files(files.iter().map(|(p, b)| (p.clone(), b.as_slice())), &label, false, wants, &mut found);
            }
            Source::Tarball(path) => {
                let Ok(bytes) = std::fs::read(&path) else { continue };
                let unpacked = crate::pack::unpack(&bytes);
                let label = |p: &str| format!("{}:{p}", path.display());
                match_files(unpacked.files.iter().map(|(p, f)| (p.clone(), f.bytes.as_slice())), &label, true, wants, &mut found);
            }
        }
    }
    found
}

/// The copy a restore takes: the first (every copy of a key is the same bytes); for a CA
/// certificate the one that ends last (a `certs renew ca` re-issue, which the tarballs hold).
fn best(copies: &[Copy], part: Part) -> Option<&Copy> {
    match part {
        Part::Cert => copies.iter().enumerate().max_by_key(|(i, c)| (c.not_after, std::cmp::Reverse(*i))).map(|(_, c)| c),
        _ => copies.first(),
    }
}

fn bundle_of(state_dir: &Path) -> PathBuf {
    state_dir.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

const FORCE: &str = "`kubebundle generate --force` replaces the whole state instead (the old one is kept in OUT/kubebundle-backup-<time>/state/): new CAs, service-account key and encryption key, so every node must be redeployed, every service-account token becomes invalid and every Secret encrypted so far becomes unreadable";

/// The refusal of a state whose recorded secrets are missing, unreadable or changed: each problem
/// with what depends on the secret and its verified copies, and the fixes.
/// Which refusal: of a state with a manifest, of one without it that is incomplete, or of a lost one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Recorded,
    Incomplete,
    Lost,
}

fn render(state_dir: &Path, headline: &str, m: &Manifest, problems: &[Problem], kind: Refusal) -> StateError {
    let lost_manifest = kind != Refusal::Recorded;
    let bundle = bundle_of(state_dir);
    let wants = wants_of(m, problems);
    let found = find_copies(&bundle, None, &wants);
    let mut s = format!("{headline}; nothing was written:\n");
    let mut without = Vec::new();
    for p in problems {
        let when = m.get(&p.id).map(|e| e.recorded.clone()).unwrap_or_default();
        let recorded = if lost_manifest { String::new() } else { format!(", recorded {when}") };
        s += &format!(
            "  - {} {}: it holds {}{recorded}; without it {}\n",
            state_dir.join(&p.file).display(),
            p.what,
            sm::describe(&p.id),
            sm::depends(&p.id)
        );
        if p.part == Part::PublicKey {
            s += "    (sa.pub is derived from sa.key: delete it, or run `state restore`, and it is written again from the key)\n";
            continue;
        }
        let copies = wants.iter().position(|w| w.id == p.id && w.part == p.part).map(|i| &found[i]);
        match copies.filter(|c| !c.is_empty()) {
            Some(c) => {
                let shown: Vec<&str> = c.iter().take(SHOWN).map(|c| c.label.as_str()).collect();
                let more = if c.len() > SHOWN { " and more" } else { "" };
                let how = if lost_manifest { "consistent copies" } else { "verified copies" };
                s += &format!("    {how}: {}{more}\n", shown.join(", "));
            }
            None => {
                s += "    no verified copy found in the backups beside the bundle (kubebundle-backup-*/state/) or the node tarballs\n";
                without.push(p);
            }
        }
    }
    let dir = bundle.display();
    s += "  hint: put it back, then run again:\n";
    if without.len() < problems.len() {
        s += &format!(
            "    1. `kubebundle state restore --dir {dir}` restores it from the copies above (keeping what it replaces in a backup); or copy it back yourself\n"
        );
    }
    if !without.is_empty() {
        s += &format!(
            "    1. restore what has no copy from your own backup of the state, or `kubebundle state restore --dir {dir} --from <backup dir or node tarball>`\n"
        );
    }
    if kind == Refusal::Incomplete {
        s += &format!(
            "    2. if the state never held it (it was made with another config), run generate once with that config first\n    3. {FORCE}"
        );
    } else {
        s += &format!("    2. {FORCE}");
    }
    if problems.iter().any(|p| p.part == Part::EncryptionKey && p.present) && !lost_manifest {
        s += "\n    (an encryption key retired on purpose, after every Secret was re-encrypted with another key: remove its entry from state/manifest.yaml)";
    }
    StateError::Refused(s)
}

/// The refusal of a state whose manifest records secrets that are missing, unreadable or changed.
pub fn refusal(state_dir: &Path, m: &Manifest, problems: &[Problem]) -> StateError {
    render(state_dir, &format!("{} no longer holds the secrets it recorded", state_dir.display()), m, problems, Refusal::Recorded)
}

/// The secret files a state holds: (CA ids with a cert or key, sa, encryption.yaml).
fn held(state_dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = CA_IDS
        .iter()
        .flat_map(|id| {
            let (c, k) = ca_paths(id);
            [c, k]
        })
        .chain([sm::SA_KEY.to_string(), sm::SA_PUB.to_string(), state::ENCRYPTION_FILE.to_string(), sm::MANIFEST_FILE.to_string()])
        .filter(|rel| std::fs::symlink_metadata(state_dir.join(rel)).is_ok())
        .collect();
    v.sort();
    v
}

/// Whether `bundle` was generated: it has node tarballs, or a plan.json for `cluster`.
fn generated(bundle: &Path, cluster: Option<&str>) -> bool {
    !tarballs_in(&bundle.join("nodes")).is_empty()
        || read_json(&bundle.join("plan.json")).is_some_and(|p| cluster.is_none_or(|c| p["clusterName"] == c))
}

/// Whether `bundle` is the bundle of `cluster` (its plan.json says so) and its state holds no
/// secret: `generate --force` may start its state over although the marker went with it.
pub fn lost_state_of(bundle: &Path, cluster: &str) -> bool {
    held(&bundle.join("state")).is_empty() && read_json(&bundle.join("plan.json")).is_some_and(|p| p["clusterName"] == cluster)
}

/// A state that holds no secret beside a bundle that was generated: its state was lost, and a run
/// must not make new CAs for it.
pub fn refuse_lost(bundle: &Path, cluster: Option<&str>) -> Result<(), StateError> {
    let state_dir = bundle.join("state");
    if !held(&state_dir).is_empty() || !generated(bundle, cluster) {
        return Ok(());
    }
    let why = if state_dir.is_dir() { "holds no secret" } else { "is missing" };
    let headline = format!(
        "{} {why}, but {} has node tarballs (or plan.json): the state of this bundle was lost, and a run would make new CAs for it",
        state_dir.display(),
        bundle.display()
    );
    let plan = read_json(&bundle.join("plan.json"));
    let ids: Vec<String> = match plan.as_ref().and_then(|p| p["certificateAuthorities"].as_array().cloned()) {
        Some(cas) => cas.iter().filter_map(|c| c["id"].as_str().map(String::from)).collect(),
        None => CA_IDS.iter().map(|s| s.to_string()).collect(),
    };
    Err(manifestless(&state_dir, &headline, &ids, Refusal::Lost))
}

/// A state without a manifest is accepted when it is complete (every CA `ca_ids` names, sa.key and
/// encryption.yaml), and is new when it holds no secret at all (and no bundle was made from it);
/// anything else is refused, naming what is missing.
pub fn check_unrecorded(state_dir: &Path, ca_ids: &[String]) -> Result<(), StateError> {
    let present = |rel: &str| std::fs::symlink_metadata(state_dir.join(rel)).is_ok();
    let mut needed: Vec<String> = ca_ids
        .iter()
        .flat_map(|id| {
            let (c, k) = ca_paths(id);
            [c, k]
        })
        .collect();
    needed.extend([sm::SA_KEY.to_string(), state::ENCRYPTION_FILE.to_string()]);
    let missing: Vec<&String> = needed.iter().filter(|r| !present(r)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let bundle = bundle_of(state_dir);
    if held(state_dir).is_empty() {
        return refuse_lost(&bundle, None);
    }
    let names: Vec<String> = missing.iter().map(|r| r.to_string()).collect();
    let headline = format!(
        "{} has no manifest (state/manifest.yaml) and is incomplete: it lacks {}; a state copied without its manifest is accepted only when complete",
        state_dir.display(),
        names.join(", ")
    );
    Err(manifestless(state_dir, &headline, ca_ids, Refusal::Incomplete))
}

/// The refusal of a state without a manifest: what it lacks, with the copies the bundle's tarballs
/// hold (all agreeing) and the fixes.
fn manifestless(state_dir: &Path, headline: &str, ca_ids: &[String], kind: Refusal) -> StateError {
    let bundle = bundle_of(state_dir);
    let at = rfc3339(OffsetDateTime::now_utc());
    match synthesize(state_dir, &bundle, None, &at) {
        Ok((m, _)) => {
            let checked = sm::check(state_dir, &m);
            let mut problems: Vec<Problem> = checked.problems.into_iter().filter(|p| !p.present).collect();
            // What is missing with no copy at all is named too.
            let missing = |rel: &str| std::fs::symlink_metadata(state_dir.join(rel)).is_err();
            let mut lacking: Vec<(String, String)> = ca_ids.iter().map(|id| (id.clone(), ca_paths(id).1)).collect();
            lacking.push(("sa".into(), sm::SA_KEY.into()));
            for (id, file) in lacking {
                if m.get(&id).is_none() && missing(&file) {
                    problems.push(Problem { id, file, part: Part::Key, what: "is missing".into(), present: false });
                }
            }
            if !m.secrets.iter().any(|e| e.id.starts_with("encryption-key/")) && missing(state::ENCRYPTION_FILE) {
                let (id, file) = (sm::encryption_id("*"), state::ENCRYPTION_FILE.to_string());
                problems.push(Problem { id, file, part: Part::EncryptionKey, what: "is missing".into(), present: false });
            }
            render(state_dir, headline, &m, &problems, kind)
        }
        Err(why) => StateError::Refused(format!(
            "{headline}; nothing was written\n  ({why})\n  hint: restore the state from your own backup, or `kubebundle state restore --dir {} --from <backup dir or node tarball>`; {FORCE}",
            bundle.display()
        )),
    }
}

/// Checks a bundle's state before a command uses it (`token`, `certs renew`): a lost state is
/// refused, and so is a recorded secret that is missing, unreadable or changed.
pub fn check_bundle(bundle: &Path) -> Result<(), StateError> {
    refuse_lost(bundle, None)?;
    let state_dir = bundle.join("state");
    if let Some(m) = sm::read(&state_dir)? {
        let checked = sm::check(&state_dir, &m);
        if !checked.problems.is_empty() {
            return Err(refusal(&state_dir, &m, &checked.problems));
        }
    }
    Ok(())
}

// =============================================================================================
// A state that lost its manifest: what it held, from the bundle itself.

/// The files of every node tarball that holds one of `artifacts`: node → (artifact → (path, bytes)).
type NodeFiles = BTreeMap<String, BTreeMap<String, (String, FileEntry)>>;

fn plan_node_files(bundle: &Path, plan: &serde_json::Value, artifacts: &BTreeSet<&str>) -> NodeFiles {
    let mut out = NodeFiles::new();
    for n in plan["nodes"].as_array().into_iter().flatten() {
        let Some(name) = n["name"].as_str() else { continue };
        let paths: BTreeMap<String, String> = n["files"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| Some((f["artifact"].as_str()?.to_string(), f["path"].as_str()?.to_string())))
            .filter(|(a, _)| artifacts.contains(a.as_str()))
            .collect();
        if paths.is_empty() {
            continue;
        }
        let Ok(bytes) = std::fs::read(bundle.join("nodes").join(format!("{name}.tar.gz"))) else { continue };
        let mut unpacked = crate::pack::unpack(&bytes);
        let files = paths.into_iter().filter_map(|(a, p)| Some((a, (p.clone(), unpacked.files.remove(&p)?)))).collect();
        out.insert(name.to_string(), files);
    }
    out
}

/// A copy of a secret in the bundle: (where, its bytes, the node (or directory) that holds it).
type Found = (String, Zeroizing<Vec<u8>>, Option<String>);

/// A manifest for a state that has none: each secret from the state's own file when it has it,
/// else from the copies in the node tarballs (or `--from`), which must all agree, each CA key
/// matching its certificate.
fn synthesize(state_dir: &Path, bundle: &Path, from: Option<&Path>, recorded: &str) -> Result<(Manifest, Vec<String>), String> {
    let plan = read_json(&bundle.join("plan.json"));
    let from_state = from.filter(|p| p.is_dir()).map(|p| if p.join("state").is_dir() { p.join("state") } else { p.to_path_buf() });
    let ca_ids: Vec<String> = match &plan {
        Some(p) => {
            p["certificateAuthorities"].as_array().into_iter().flatten().filter_map(|c| c["id"].as_str().map(String::from)).collect()
        }
        None if from_state.is_some() => CA_IDS.iter().map(|s| s.to_string()).collect(),
        None => {
            return Err(format!(
                "{} has no plan.json either, so kubebundle cannot tell which tarball file is which secret",
                bundle.display()
            ))
        }
    };
    let mut artifacts: BTreeSet<&str> = BTreeSet::from(["sa.key", "sa.pub", "encryption-config"]);
    let ca_artifacts: Vec<(String, String)> = ca_ids.iter().map(|id| (format!("{id}.crt"), format!("{id}.key"))).collect();
    for (c, k) in &ca_artifacts {
        artifacts.insert(c);
        artifacts.insert(k);
    }
    let nodes = match (&plan, from_state.is_some()) {
        (Some(p), false) => plan_node_files(bundle, p, &artifacts),
        _ => NodeFiles::new(),
    };
    let read = |dir: &Path, rel: &str| std::fs::read(dir.join(rel)).ok().map(Zeroizing::new);
    // Every copy of a file: (label, bytes, the files beside it in the same source).
    let copies = |artifact: &str, rel: &str| -> Vec<Found> {
        if let Some(dir) = &from_state {
            return read(dir, rel).map(|b| (dir.join(rel).display().to_string(), b, Some(dir.display().to_string()))).into_iter().collect();
        }
        nodes
            .iter()
            .filter_map(|(node, files)| {
                let (path, f) = files.get(artifact)?;
                let tgz = bundle.join("nodes").join(format!("{node}.tar.gz"));
                Some((format!("{}:{path}", tgz.display()), f.bytes.clone(), Some(node.clone())))
            })
            .collect()
    };
    let beside = |source: &Option<String>, artifact: &str, rel: &str| -> Option<Zeroizing<Vec<u8>>> {
        let source = source.as_ref()?;
        match &from_state {
            Some(dir) => read(dir, rel),
            None => nodes.get(source)?.get(artifact).map(|(_, f)| f.bytes.clone()),
        }
    };
    let agree = |what: &str, list: &[Found]| -> Result<(), String> {
        if let Some(other) = list.iter().find(|c| *c.1 != *list[0].1) {
            return Err(format!("the copies of {what} disagree: {} and {} hold different keys", list[0].0, other.0));
        }
        Ok(())
    };
    let mut m = Manifest::default();
    let mut notes = Vec::new();
    let spki_of = |key: &[u8], label: &str| -> Result<Vec<u8>, String> {
        let text = std::str::from_utf8(key).map_err(|_| format!("{label} is not a PEM key"))?;
        Key::from_pem(text).map(|k| k.spki_der()).map_err(|_| format!("{label} does not parse as a private key"))
    };
    for (id, (crt_art, key_art)) in ca_ids.iter().zip(&ca_artifacts) {
        let (crt, key) = ca_paths(id);
        let state_cert = read(state_dir, &crt).and_then(|b| sm::ca_cert_spki(&b).ok()).map(|(s, _)| s);
        if let Some(bytes) = read(state_dir, &key) {
            if let Ok(spki) = spki_of(&bytes, &key) {
                m.record(sm::key_entry(id, &key, &bytes, &spki, recorded));
                continue;
            }
        }
        let list = copies(key_art, &key);
        let Some(first) = list.first() else { continue };
        agree(&format!("{id}.key"), &list)?;
        let spki = spki_of(&first.1, &first.0)?;
        for (label, _, source) in &list {
            let cert = beside(source, crt_art, &crt).and_then(|b| sm::ca_cert_spki(&b).ok());
            if cert.is_some_and(|(s, _)| s != spki) {
                return Err(format!("{label} does not match the CA certificate beside it"));
            }
        }
        if state_cert.as_ref().is_some_and(|s| *s != spki) {
            return Err(format!("{} holds another key than the copies of {id}.key ({})", state_dir.join(&crt).display(), first.0));
        }
        notes.push(format!("{id}: every copy agrees and matches its certificate"));
        m.record(sm::key_entry(id, &key, &first.1, &spki, recorded));
    }
    let sa = match read(state_dir, sm::SA_KEY) {
        Some(b) if spki_of(&b, sm::SA_KEY).is_ok() => Some((spki_of(&b, sm::SA_KEY)?, b)),
        _ => {
            let list = copies("sa.key", sm::SA_KEY);
            match list.first() {
                None => None,
                Some(first) => {
                    agree("sa.key", &list)?;
                    let spki = spki_of(&first.1, &first.0)?;
                    for (label, _, source) in &list {
                        let public = beside(source, "sa.pub", sm::SA_PUB).and_then(|b| sm::public_key_der(&b));
                        if public.is_some_and(|p| p != spki) {
                            return Err(format!("{label} does not match the sa.pub beside it"));
                        }
                    }
                    Some((spki, first.1.clone()))
                }
            }
        }
    };
    if let Some((spki, bytes)) = sa {
        if !state_dir.join(sm::SA_KEY).is_file() {
            notes.push("sa: every copy agrees and matches sa.pub".into());
        }
        m.record(sm::key_entry("sa", sm::SA_KEY, &bytes, &spki, recorded));
    }
    let own = read(state_dir, state::ENCRYPTION_FILE).and_then(|b| std::str::from_utf8(&b).ok().and_then(|t| sm::encryption_keys(t).ok()));
    let keys = match own {
        Some(k) => Some(k),
        None => {
            let mut lists = Vec::new();
            for (label, bytes, _) in copies("encryption-config", state::ENCRYPTION_FILE) {
                let keys = if from_state.is_some() {
                    std::str::from_utf8(&bytes).ok().and_then(|t| sm::encryption_keys(t).ok())
                } else {
                    encryption_config_keys(&bytes)
                };
                lists.push((label, keys.ok_or("an encryption configuration that does not parse".to_string())?));
            }
            if let Some((label, first)) = lists.first() {
                if let Some((other, _)) = lists.iter().find(|(_, l)| l != first) {
                    return Err(format!("the copies of the encryption keys disagree: {label} and {other}"));
                }
                notes.push("the encryption keys: every copy agrees".into());
            }
            lists.into_iter().next().map(|(_, l)| l)
        }
    };
    for (name, secret) in keys.into_iter().flatten() {
        m.record(sm::encryption_entry(&name, &secret, recorded));
    }
    Ok((m, notes))
}

// =============================================================================================
// `kubebundle state restore`

pub struct RestoreArgs {
    /// The bundle, OUT/<clusterName>.
    pub dir: PathBuf,
    /// Restore from this directory (a backup, a state or a bundle) or node tarball only.
    pub from: Option<PathBuf>,
    pub now: OffsetDateTime,
}

/// What a restore did, one line each (never a secret).
#[derive(Default)]
pub struct RestoreReport {
    pub lines: Vec<String>,
    pub restored: usize,
}

fn cluster_name(bundle: &Path) -> String {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Marker {
        cluster_name: String,
    }
    std::fs::read_to_string(bundle.join(output::MARKER))
        .ok()
        .and_then(|t| serde_saphyr::from_str::<Marker>(&t).ok())
        .map(|m| m.cluster_name)
        .or_else(|| read_json(&bundle.join("plan.json")).and_then(|p| p["clusterName"].as_str().map(String::from)))
        .unwrap_or_else(|| bundle.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
}

/// Writes `bytes` to `path` atomically (a temporary file in the same directory, synced, renamed),
/// 0600; missing directories are made 0700.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(output::werr(dir))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".kubebundle-restore-")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(output::werr(dir))?;
    tmp.write_all(bytes).map_err(output::werr(path))?;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(output::werr(path))?;
    tmp.as_file().sync_all().map_err(output::werr(path))?;
    tmp.persist(path).map_err(|e| output::werr(path)(e.error))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(output::werr(dir))
}

/// A new backup directory `<parent>/kubebundle-backup-<time>[-n]` (0700).
pub fn new_backup_dir(parent: &Path, now: OffsetDateTime) -> Result<PathBuf, OutputError> {
    let t = now.to_offset(time::UtcOffset::UTC);
    let stamp = format!(
        "kubebundle-backup-{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    for n in 1.. {
        let dir = parent.join(if n == 1 { stamp.clone() } else { format!("{stamp}-{n}") });
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(output::werr(&dir)(e)),
        }
    }
    unreachable!("an unbounded range ends only by returning")
}

/// `kubebundle state restore`: every recorded secret that is missing, unreadable or changed is
/// restored from a verified copy (a state that lost its manifest too: from the bundle's tarballs,
/// whose copies must agree), under the bundle's lock, each file written atomically 0600; the files
/// it replaces are kept in a backup beside the bundle. A missing leaves.json, tokens.yaml or
/// cluster.yaml is rebuilt from the bundle, so the next `generate` writes the same tarballs.
pub fn restore(args: &RestoreArgs) -> Result<RestoreReport, RestoreError> {
    let bundle = args.dir.as_path();
    let state_dir = bundle.join("state");
    if !bundle.is_dir() || !(state_dir.is_dir() || generated(bundle, None)) {
        return Err(RestoreError::NotABundle { dir: bundle.display().to_string() });
    }
    let cluster = cluster_name(bundle);
    if state_dir.join(state::MARKER_FILE).is_file() {
        output::check_owner(bundle, &cluster)?;
    }
    let out = bundle.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let lock = output::lock(out, &cluster)?;
    let recorded = rfc3339(args.now);
    let from = args.from.as_deref();
    let mut report = RestoreReport::default();

    let (manifest, synthesized) = match sm::read(&state_dir)? {
        Some(m) => (m, false),
        None => {
            let (m, notes) = synthesize(&state_dir, bundle, from, &recorded).map_err(|why| {
                StateError::Refused(format!(
                    "{} has no manifest and its copies cannot be trusted: {why}; nothing was written\n  hint: restore the state from your own backup, or give the copy to use with --from",
                    state_dir.display()
                ))
            })?;
            report.lines.extend(notes.into_iter().map(|n| format!("no manifest: {n}")));
            // Every secret the bundle needs must be found, or the next run would make a new one.
            let plan = read_json(&bundle.join("plan.json"));
            let mut needed: Vec<String> = match plan.as_ref().and_then(|p| p["certificateAuthorities"].as_array().cloned()) {
                Some(cas) => cas.iter().filter_map(|c| c["id"].as_str().map(String::from)).collect(),
                None => vec!["ca".into()],
            };
            needed.push("sa".into());
            let mut lacking: Vec<String> = needed.iter().filter(|id| m.get(id).is_none()).map(|id| sm::describe(id)).collect();
            if !m.secrets.iter().any(|e| e.id.starts_with("encryption-key/")) {
                lacking.push(sm::describe(&sm::encryption_id("*")));
            }
            if !lacking.is_empty() {
                return Err(StateError::Refused(format!(
                    "{} has no manifest, and no copy of {} is in it, the node tarballs or --from; nothing was written (a later run would make new ones)\n  hint: give a backup of the state or a control plane's tarball with --from; or, to replace the whole state on purpose, {FORCE}",
                    state_dir.display(),
                    lacking.join(", ")
                ))
                .into());
            }
            (m, true)
        }
    };
    let checked = sm::check(&state_dir, &manifest);
    let wants = wants_of(&manifest, &checked.problems);
    let found = find_copies(bundle, from, &wants);
    let lacking: Vec<String> = wants
        .iter()
        .zip(&found)
        .filter(|(_, c)| c.is_empty())
        .map(|(w, _)| format!("{} ({})", state_dir.join(&w.file).display(), sm::describe(&w.id)))
        .collect();
    // Every secret to put back needs a verified copy, or nothing is written.
    if !lacking.is_empty() {
        let looked = match from {
            Some(p) => p.display().to_string(),
            None => format!("the backups beside {} (kubebundle-backup-*/state/) and its node tarballs", bundle.display()),
        };
        return Err(StateError::Refused(format!(
            "no verified copy of {} was found in {looked}; nothing was written\n  hint: give a backup of the state or a control plane's tarball with --from; or, to replace the whole state on purpose, {FORCE}",
            lacking.join(", ")
        ))
        .into());
    }

    let mut writes: BTreeMap<String, Zeroizing<Vec<u8>>> = BTreeMap::new();
    let mut encryption: Vec<(&Want, &Copy)> = Vec::new();
    for (w, copies) in wants.iter().zip(&found) {
        let Some(c) = best(copies, w.part) else { continue };
        match w.part {
            Part::Key => {
                writes.insert(w.file.clone(), c.bytes.clone());
                report.lines.push(format!("restored state/{}, {}, from {} (SHA-256 verified)", w.file, sm::describe(&w.id), c.label));
            }
            Part::Cert => {
                let crt = match sm::kind(&w.id) {
                    Some(Kind::Ca(id)) => ca_paths(id).0,
                    _ => continue,
                };
                writes.insert(crt.clone(), c.bytes.clone());
                report.lines.push(format!(
                    "restored state/{crt}, the certificate of {}, from {} (it holds the recorded key)",
                    sm::describe(&w.id),
                    c.label
                ));
            }
            Part::EncryptionKey => encryption.push((w, c)),
            Part::PublicKey => {}
        }
    }
    if !encryption.is_empty() {
        let current = std::fs::read_to_string(state_dir.join(state::ENCRYPTION_FILE)).ok().and_then(|t| sm::encryption_keys(&t).ok());
        let mut keys: sm::NamedKeys = current.unwrap_or_default();
        for (w, c) in &encryption {
            let name = w.id.strip_prefix("encryption-key/").unwrap_or_default().to_string();
            let secret = Zeroizing::new(String::from_utf8_lossy(&c.bytes).into_owned());
            match keys.iter_mut().find(|(n, _)| *n == name) {
                Some(k) => k.1 = secret,
                None => {
                    let at = c.order.iter().position(|n| *n == name).unwrap_or(keys.len()).min(keys.len());
                    keys.insert(at, (name.clone(), secret));
                }
            }
            report.lines.push(format!(
                "restored encryption key {name} in state/{} from {} (SHA-256 verified)",
                state::ENCRYPTION_FILE,
                c.label
            ));
        }
        writes.insert(state::ENCRYPTION_FILE.into(), Zeroizing::new(state::encryption_yaml(&keys).into_bytes()));
    }
    // sa.pub follows sa.key.
    let sa_restored = writes.contains_key(sm::SA_KEY);
    let sa_pub_bad = checked.problems.iter().any(|p| p.part == Part::PublicKey);
    if manifest.get("sa").is_some() && (sa_restored || sa_pub_bad || checked.sa_pub_missing) {
        let key = match writes.get(sm::SA_KEY) {
            Some(b) => b.clone(),
            None => Zeroizing::new(std::fs::read(state_dir.join(sm::SA_KEY)).map_err(output::werr(&state_dir.join(sm::SA_KEY)))?),
        };
        if let Ok(k) = Key::from_pem(&String::from_utf8_lossy(&key)) {
            let public = k.public_pem().into_bytes();
            if std::fs::read(state_dir.join(sm::SA_PUB)).ok().as_deref() != Some(public.as_slice()) {
                writes.insert(sm::SA_PUB.into(), Zeroizing::new(public));
                report.lines.push(format!("rewrote state/{} from sa.key", sm::SA_PUB));
            }
        }
    }
    if !state_dir.join(state::MARKER_FILE).is_file() {
        writes.insert(state::MARKER_FILE.into(), Zeroizing::new(state::marker_text(&cluster).into_bytes()));
        report.lines.push(format!("rewrote state/{} (cluster {cluster:?})", state::MARKER_FILE));
    }
    if synthesized && !manifest.secrets.is_empty() {
        writes.insert(sm::MANIFEST_FILE.into(), Zeroizing::new(manifest.text().into_bytes()));
        report.lines.push(format!(
            "recorded the state's {} secrets in state/{} (it had no manifest)",
            manifest.secrets.len(),
            sm::MANIFEST_FILE
        ));
    }
    if !state_dir.join(state::LEAVES_FILE).is_file() && generated(bundle, None) {
        let (records, skipped) = rebuild_leaves(bundle, &state_dir, &writes);
        if !records.is_empty() {
            writes.insert(state::LEAVES_FILE.into(), Zeroizing::new(state::leaves_json(&records)));
            let skipped = if skipped > 0 { format!(" ({skipped} did not verify and will be issued anew)") } else { String::new() };
            report.lines.push(format!(
                "rebuilt state/{} from the node tarballs: {} leaf certificates and keys, each verified against its CA{skipped}",
                state::LEAVES_FILE,
                records.len()
            ));
        }
    }
    if !state_dir.join(state::TOKENS_FILE).is_file() {
        if let Some((tokens, join)) = rebuild_tokens(bundle) {
            let text = state::tokens_yaml(&tokens)?;
            writes.insert(state::TOKENS_FILE.into(), Zeroizing::new(text.into_bytes()));
            let join = join.map(|j| format!(", join token {j}")).unwrap_or_default();
            report.lines.push(format!("rebuilt state/{} from manifests/: {} bootstrap token(s){join}", state::TOKENS_FILE, tokens.len()));
        }
    }
    if writes.is_empty() {
        report.lines.push(format!("nothing to restore: every secret {}/{} records is in place", state_dir.display(), sm::MANIFEST_FILE));
        lock.keep();
        return Ok(report);
    }

    // What is replaced is kept first.
    let replaced: Vec<&String> = writes.keys().filter(|rel| state_dir.join(rel).is_file()).collect();
    if !replaced.is_empty() {
        let backup = new_backup_dir(out, args.now)?;
        for rel in &replaced {
            let (src, dst) = (state_dir.join(rel), backup.join("state").join(rel));
            let bytes = Zeroizing::new(std::fs::read(&src).map_err(output::werr(&src))?);
            write_atomic(&dst, &bytes)?;
        }
        report.lines.push(format!("kept the files it replaced in {}", backup.join("state").display()));
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&state_dir).map_err(output::werr(&state_dir))?;
    std::fs::set_permissions(&state_dir, std::fs::Permissions::from_mode(0o700)).map_err(output::werr(&state_dir))?;
    for (rel, bytes) in &writes {
        write_atomic(&state_dir.join(rel), bytes)?;
    }
    report.restored = writes.len();
    let again = sm::check(&state_dir, &manifest);
    if let Some(p) = again.problems.first() {
        return Err(
            StateError::Refused(format!("after the restore {} still {}: report this", state_dir.join(&p.file).display(), p.what)).into()
        );
    }
    lock.keep();
    Ok(report)
}

/// The leaf records of every node, from its tarball: a certificate and key that match, the
/// certificate signed by its CA in the (restored) state; the issue time from notAfter and the
/// plan's validity. Returns the records and how many leaves did not verify.
fn rebuild_leaves(bundle: &Path, state_dir: &Path, writes: &BTreeMap<String, Zeroizing<Vec<u8>>>) -> (LeafRecords, usize) {
    let mut records = LeafRecords::new();
    let mut skipped = 0;
    let Some(plan) = read_json(&bundle.join("plan.json")) else { return (records, 0) };
    let text = |rel: &str| -> Option<String> {
        let bytes = writes.get(rel).map(|b| b.to_vec()).or_else(|| std::fs::read(state_dir.join(rel)).ok())?;
        String::from_utf8(bytes).ok()
    };
    let mut cas = BTreeMap::new();
    for id in CA_IDS {
        let (crt, key) = ca_paths(id);
        if let (Some(c), Some(k)) = (text(&crt), text(&key).map(Zeroizing::new)) {
            if let Some(a) = Key::from_pem(&k).ok().and_then(|k| crate::pki::issue::Authority::from_pem(id, &c, k).ok()) {
                cas.insert(id, a);
            }
        }
    }
    for n in plan["nodes"].as_array().into_iter().flatten() {
        let Some(name) = n["name"].as_str() else { continue };
        let Ok(bytes) = std::fs::read(bundle.join("nodes").join(format!("{name}.tar.gz"))) else { continue };
        let files = crate::pack::unpack(&bytes).files;
        let by_artifact: BTreeMap<&str, &FileEntry> = n["files"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| Some((f["artifact"].as_str()?, files.get(f["path"].as_str()?)?)))
            .collect();
        for f in n["files"].as_array().into_iter().flatten() {
            let spec = &f["certificate"];
            let (Some(id), Some(signer), Some(artifact)) = (spec["id"].as_str(), spec["signer"].as_str(), f["artifact"].as_str()) else {
                continue;
            };
            if spec["isCa"].as_bool().unwrap_or(false) {
                continue;
            }
            let node = spec["node"].as_str().unwrap_or_default().to_string();
            if records.contains_key(&(node.clone(), id.to_string())) {
                continue;
            }
            let as_text = |e: Option<&&FileEntry>| e.and_then(|e| String::from_utf8(e.bytes.to_vec()).ok());
            let pair = if artifact == format!("{id}.crt") {
                as_text(by_artifact.get(format!("{id}.crt").as_str())).zip(as_text(by_artifact.get(format!("{id}.key").as_str())))
            } else if crate::pki::catalog::kubeconfig(artifact).is_some() {
                by_artifact.get(artifact).and_then(|e| {
                    let kc = crate::kubeconfig::Kubeconfig::parse(&e.bytes).ok()?;
                    let user = kc.current_user()?;
                    let data = |v: Option<&str>| crate::kubeconfig::decode("", v).ok().flatten().and_then(|b| String::from_utf8(b).ok());
                    data(user.client_certificate_data.as_deref()).zip(data(user.client_key_data.as_deref()))
                })
            } else {
                continue;
            };
            let Some((cert_pem, key_pem)) = pair else { continue };
            let key_pem = Zeroizing::new(key_pem);
            let validity =
                spec["validity"].as_str().and_then(|v| crate::util::duration::parse_go(v).ok()).map(|d| d.value.as_secs() as i64);
            let verified = cas.get(signer).and_then(|ca| {
                let der = ::pem::parse(&cert_pem).ok().filter(|p| p.tag() == "CERTIFICATE")?.into_contents();
                let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
                let key = Key::from_pem(&key_pem).ok()?;
                (key.spki_der() == cert.public_key().raw && crate::reuse::signed_by(&cert, ca))
                    .then(|| cert.validity().not_after.timestamp() - validity.unwrap_or(0))
            });
            match verified {
                Some(issued) => {
                    records.insert((node, id.to_string()), LeafRecord { key_pem, issued, cert_pem: Some(cert_pem) });
                }
                None => skipped += 1,
            }
        }
    }
    (records, skipped)
}

/// The bootstrap tokens of the bundle's Secret manifests: the join token (join.txt's) first, as
/// generate made it; the others as `token create` ones, kept while they are valid.
fn rebuild_tokens(bundle: &Path) -> Option<(Vec<Token>, Option<String>)> {
    #[derive(serde::Deserialize)]
    struct Secret {
        #[serde(default)]
        data: BTreeMap<String, String>,
    }
    let join = std::fs::read_to_string(bundle.join("join.txt")).ok().and_then(|t| {
        let words: Vec<&str> = t.split_whitespace().collect();
        words.windows(2).find(|w| w[0] == "--token").map(|w| w[1].to_string())
    });
    let mut tokens = Vec::new();
    for path in std::fs::read_dir(bundle.join("manifests")).ok()?.flatten().map(|e| e.path()) {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if !name.starts_with("bootstrap-token-") {
            continue;
        }
        let Some(secret) = std::fs::read_to_string(&path).ok().and_then(|t| serde_saphyr::from_str::<Secret>(&t).ok()) else { continue };
        let field = |k: &str| {
            secret
                .data
                .get(k)
                .and_then(|v| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, v).ok())
                .and_then(|b| String::from_utf8(b).ok())
        };
        let (Some(id), Some(s)) = (field("token-id"), field("token-secret")) else { continue };
        let mut usages: Vec<String> = secret
            .data
            .keys()
            .filter_map(|k| k.strip_prefix("usage-bootstrap-"))
            .filter(|u| field(&format!("usage-bootstrap-{u}")).as_deref() == Some("true"))
            .map(String::from)
            .collect();
        usages.sort();
        let token = format!("{id}.{s}");
        let is_join = join.as_deref() == Some(token.as_str());
        tokens.push(Token {
            token,
            description: field("description").filter(|d| !d.is_empty()),
            expires: field("expiration").filter(|e| !e.is_empty()),
            usages,
            groups: field("auth-extra-groups").map(|g| g.split(',').map(String::from).collect()).unwrap_or_default(),
            from_config: false,
            created: !is_join,
        });
    }
    if tokens.is_empty() {
        return None;
    }
    tokens.sort_by(|a, b| (a.created, a.id()).cmp(&(b.created, b.id())));
    let join_id = tokens.iter().find(|t| !t.created).map(|t| t.id().to_string());
    Some((tokens, join_id))
}
