//! `kubebundle state restore`: puts back every secret the state lost from a verified copy (see
//! `check`), or, for a state that lost its manifest too, rebuilds it from the bundle.

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::check::*;
use super::files::{self as state, ca_paths, LeafRecord, LeafRecords, StateError, Token};
use super::manifest::{self as sm, Kind, Part};
use crate::bundle::output::{self, OutputError};
use crate::pki::keys::Key;
use crate::tree::FileEntry;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{dir} is not a kubebundle bundle (it has no state/, plan.json or nodes/)\n  hint: pass --dir OUT/<clusterName>, the directory generate wrote")]
    NotABundle { dir: String },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Output(#[from] OutputError),
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

/// Writes a new 0600 file (never through a hard link to the live bundle), making its missing
/// directories 0700.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(output::werr(dir))?;
    }
    output::write_file(path, bytes, 0o600)
}

/// `kubebundle state restore`: every recorded secret that is missing, unreadable or changed is
/// restored from a verified copy (a state that lost its manifest too: from the bundle's tarballs,
/// whose copies must agree), under the bundle's lock, in one transaction (the new bundle is staged
/// beside the old one and swapped in); the files it replaces are kept in a backup beside the
/// bundle. A missing leaves.json, tokens.yaml or
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
        // The keys the file still holds keep their provider; a key put back from a copy is
        // aescbc's unless the file named it (an EncryptionConfiguration copy says which).
        let current = std::fs::read_to_string(state_dir.join(state::ENCRYPTION_FILE)).ok().and_then(|t| state::parse_encryption(&t).ok());
        let mut keys: Vec<state::EncryptionKey> = current.unwrap_or_default();
        for (w, c) in &encryption {
            let name = w.id.strip_prefix("encryption-key/").unwrap_or_default().to_string();
            let secret = String::from_utf8_lossy(&c.bytes).into_owned();
            match keys.iter_mut().find(|k| k.name == name) {
                Some(k) => k.secret = secret,
                None => {
                    let at = c.order.iter().position(|n| *n == name).unwrap_or(keys.len()).min(keys.len());
                    keys.insert(at, state::EncryptionKey { name: name.clone(), secret, provider: Default::default() });
                }
            }
            report.lines.push(format!(
                "restored encryption key {name} in state/{} from {} (SHA-256 verified)",
                state::ENCRYPTION_FILE,
                c.label
            ));
        }
        writes.insert(state::ENCRYPTION_FILE.into(), Zeroizing::new(state::encryption_file_text(&keys).into_bytes()));
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
        // With the init node and the etcd members plan.json holds, as generate recorded them.
        let (text, what) = match read_json(&bundle.join("plan.json")) {
            Some(plan) => {
                let record = super::cluster::ClusterRecord::from_plan(&cluster, &plan);
                let mut what = Vec::new();
                what.extend(record.init_node.as_ref().map(|n| format!("init node {n}")));
                if let Some(e) = &record.etcd {
                    what.push(format!("etcd members {}", e.members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")));
                }
                (record.text(), what)
            }
            None => (state::marker_text(&cluster), Vec::new()),
        };
        writes.insert(state::MARKER_FILE.into(), Zeroizing::new(text.into_bytes()));
        let what = if what.is_empty() { String::new() } else { format!(", {} from plan.json", what.join(", ")) };
        report.lines.push(format!("rewrote state/{} (cluster {cluster:?}{what})", state::MARKER_FILE));
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

    // One transaction: the bundle is staged beside the old one (hard links), the restored files
    // are written new into it, and it is swapped in whole.
    let real = lock.dir().to_path_buf();
    let parent = real.parent().unwrap_or(out);
    let staging = output::stage(parent, &real.file_name().unwrap_or_default().to_string_lossy())?;
    output::link_copy(&real, staging.path())?;
    let staged_state = staging.path().join("state");
    // What is replaced is kept first.
    let replaced: Vec<&String> = writes.keys().filter(|rel| state_dir.join(rel).is_file()).collect();
    if !replaced.is_empty() {
        let backup = output::PrivateDir::new(parent, ".kubebundle-backup-")?;
        for rel in &replaced {
            let (src, dst) = (state_dir.join(rel), backup.path().join("state").join(rel));
            let bytes = Zeroizing::new(std::fs::read(&src).map_err(output::werr(&src))?);
            write_new(&dst, &bytes)?;
        }
        let backup = backup.publish_backup(parent, args.now)?;
        // Shown beside the bundle as given (the same directory unless the bundle is a link).
        let shown = out.join(backup.file_name().unwrap_or_default());
        report.lines.push(format!("kept the files it replaced in {}", shown.join("state").display()));
    }
    output::ensure_dir(&staged_state, 0o700)?;
    for (rel, bytes) in &writes {
        write_new(&staged_state.join(rel), bytes)?;
    }
    let again = sm::check(&staged_state, &manifest);
    if let Some(p) = again.problems.first() {
        return Err(
            StateError::Refused(format!("after the restore {} still {}: report this", state_dir.join(&p.file).display(), p.what)).into()
        );
    }
    output::commit(staging, &real)?;
    report.restored = writes.len();
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
        let files = crate::tree::tarball::unpack(&bytes).files;
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
                    let kc = crate::tree::kubeconfig::Kubeconfig::parse(&e.bytes).ok()?;
                    let user = kc.current_user()?;
                    let data =
                        |v: Option<&str>| crate::tree::kubeconfig::decode("", v).ok().flatten().and_then(|b| String::from_utf8(b).ok());
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
                (key.spki_der() == cert.public_key().raw && ca.signed(&cert))
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
