//! What the state lost, and the verified copies of it: the refusal a run gives when a recorded
//! secret is missing, unreadable or changed, and the checks of a state without a manifest and of
//! a lost state.
//!
//! A copy is verified against the state manifest: a key file by the SHA-256 of its bytes, a CA
//! certificate by the public key it holds, an encryption key by the SHA-256 of its secret. Copies
//! are looked for in the backups beside the bundle (`<parent>/kubebundle-backup-*/state/`, as
//! `certs renew` and `generate --force` write them), then in the node tarballs that can hold them
//! (read in memory; plan.json says which nodes). A state that lost its manifest too is checked
//! against the bundle itself: every copy in the tarballs must agree, and each CA key must match
//! its certificate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::files::{self as state, ca_paths, StateError};
use super::manifest::{self as sm, Kind, Manifest, Part, Problem};
use crate::pki::keys::Key;
use crate::tree::FileEntry;

/// Copies named per secret in a refusal.
pub(super) const SHOWN: usize = 3;
pub(super) const CA_IDS: [&str; 3] = ["ca", "front-proxy-ca", "etcd-ca"];

pub(super) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// One secret (or the certificate of a CA) a copy is wanted for.
pub(super) struct Want {
    pub(super) id: String,
    pub(super) part: Part,
    /// Where it goes in the state.
    pub(super) file: String,
    /// SHA-256 of the key file, of the CA's public key, or of the encryption key's secret.
    pub(super) digest: String,
}

/// A verified copy.
pub(super) struct Copy {
    pub(super) label: String,
    pub(super) bytes: Zeroizing<Vec<u8>>,
    /// A CA certificate's notAfter (the latest one is restored).
    pub(super) not_after: i64,
    /// An encryption key's copy: the key names of the file it is in, in order.
    pub(super) order: Vec<String>,
    pub(super) tarball: bool,
}

pub(super) enum Source {
    /// A directory in the state's layout (a backup's state/, or --from).
    State(PathBuf),
    /// A node tarball.
    Tarball(PathBuf),
}

pub(super) fn wants_of(m: &Manifest, problems: &[Problem]) -> Vec<Want> {
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

pub(super) fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The artifacts of a node that can hold `w`.
pub(super) fn artifacts_of(w: &Want) -> Vec<String> {
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
pub(super) fn node_tarballs(bundle: &Path, wants: &[Want]) -> Vec<PathBuf> {
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

pub(super) fn tarballs_in(dir: &Path) -> Vec<PathBuf> {
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
pub(super) fn backups(bundle: &Path) -> Vec<PathBuf> {
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

pub(super) fn sources(bundle: &Path, from: Option<&Path>, wants: &[Want]) -> Vec<Source> {
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
pub(super) fn encryption_config_keys(bytes: &[u8]) -> Option<sm::NamedKeys> {
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
pub(super) fn match_files<'f>(
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
pub(super) fn find_copies(bundle: &Path, from: Option<&Path>, wants: &[Want]) -> Vec<Vec<Copy>> {
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
                let unpacked = crate::tree::tarball::unpack(&bytes);
                let label = |p: &str| format!("{}:{p}", path.display());
                match_files(unpacked.files.iter().map(|(p, f)| (p.clone(), f.bytes.as_slice())), &label, true, wants, &mut found);
            }
        }
    }
    found
}

/// The copy a restore takes: the first (every copy of a key is the same bytes); for a CA
/// certificate the one that ends last (a `certs renew ca` re-issue, which the tarballs hold).
pub(super) fn best(copies: &[Copy], part: Part) -> Option<&Copy> {
    match part {
        Part::Cert => copies.iter().enumerate().max_by_key(|(i, c)| (c.not_after, std::cmp::Reverse(*i))).map(|(_, c)| c),
        _ => copies.first(),
    }
}

pub(super) fn bundle_of(state_dir: &Path) -> PathBuf {
    state_dir.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

pub(super) const FORCE: &str = "`kubebundle generate --force` replaces the whole state instead (the old one is kept in OUT/kubebundle-backup-<time>/state/): new CAs, service-account key and encryption key, so every node must be redeployed, every service-account token becomes invalid and every Secret encrypted so far becomes unreadable";

/// The refusal of a state whose recorded secrets are missing, unreadable or changed: each problem
/// with what depends on the secret and its verified copies, and the fixes.
/// Which refusal: of a state with a manifest, of one without it that is incomplete, or of a lost one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    Recorded,
    Incomplete,
    Lost,
}

pub(super) fn render(state_dir: &Path, headline: &str, m: &Manifest, problems: &[Problem], kind: Refusal) -> StateError {
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
pub(super) fn held(state_dir: &Path) -> Vec<String> {
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
pub(super) fn generated(bundle: &Path, cluster: Option<&str>) -> bool {
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
pub(super) fn manifestless(state_dir: &Path, headline: &str, ca_ids: &[String], kind: Refusal) -> StateError {
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
pub(super) type NodeFiles = BTreeMap<String, BTreeMap<String, (String, FileEntry)>>;

pub(super) fn plan_node_files(bundle: &Path, plan: &serde_json::Value, artifacts: &BTreeSet<&str>) -> NodeFiles {
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
        let mut unpacked = crate::tree::tarball::unpack(&bytes);
        let files = paths.into_iter().filter_map(|(a, p)| Some((a, (p.clone(), unpacked.files.remove(&p)?)))).collect();
        out.insert(name.to_string(), files);
    }
    out
}

/// A copy of a secret in the bundle: (where, its bytes, the node (or directory) that holds it).
pub(super) type Found = (String, Zeroizing<Vec<u8>>, Option<String>);

/// A manifest for a state that has none: each secret from the state's own file when it has it,
/// else from the copies in the node tarballs (or `--from`), which must all agree, each CA key
/// matching its certificate.
pub(super) fn synthesize(state_dir: &Path, bundle: &Path, from: Option<&Path>, recorded: &str) -> Result<(Manifest, Vec<String>), String> {
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
