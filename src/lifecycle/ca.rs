//! `kubebundle ca import`: puts a CA made elsewhere (a corporate root, or an intermediate under
//! one, with its key) into the state of the cluster a config names, so the next `generate` signs
//! every certificate of that CA with it. The inputs are read and checked by `pki::import`; this
//! module writes the state as one transaction under the bundle's lock.

use std::path::{Path, PathBuf};

use crate::bundle::output::{self, OutputError};
use crate::bundle::state::manifest as sm;
use crate::bundle::state::{self, StateError};
use crate::clock::Clock;
use crate::config::Config;
use crate::pki::import::{self as input, ImportError, Input};

/// The CAs a cluster has, by kubeadm's names.
pub const CA_IDS: [&str; 3] = ["ca", "front-proxy-ca", "etcd-ca"];

pub struct ImportArgs {
    /// `ca`, `front-proxy-ca` or `etcd-ca`.
    pub which: String,
    pub cert: PathBuf,
    pub key: Option<PathBuf>,
    pub chain: Option<PathBuf>,
    /// OUT: the state is OUT/<clusterName>/state.
    pub out: PathBuf,
    pub force: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The input is wrong: a file that cannot be read or is not a usable CA (exit 2).
    #[error("{0}")]
    Input(String),
    /// The command ran and refused: the state's CA already signed a bundle, external-CA mode (exit 1).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Output(#[from] OutputError),
}

/// What the import did, for the command's output.
pub struct Imported {
    pub lines: Vec<String>,
}

fn read_text(path: &Path, what: &str) -> Result<String, CaError> {
    let bytes = std::fs::read(path).map_err(|e| {
        CaError::Input(format!(
            "{what} {}: cannot be read ({})\n  hint: give the path of a PEM file or of Vault's -format=json response",
            path.display(),
            crate::util::io_words(&e)
        ))
    })?;
    String::from_utf8(bytes).map_err(|_| {
        CaError::Input(format!(
            "{what} {}: not text (DER?)\n  hint: convert it to PEM: `openssl x509 -inform der -in FILE -out FILE.pem` (a key: `openssl pkey -inform der ...`)",
            path.display()
        ))
    })
}

fn subject(der: &[u8]) -> String {
    x509_parser::parse_x509_certificate(der).map(|(_, c)| c.subject().to_string()).unwrap_or_default()
}

fn not_after(der: &[u8]) -> Option<time::OffsetDateTime> {
    x509_parser::parse_x509_certificate(der).ok().map(|(_, c)| c.validity().not_after.to_datetime())
}

/// Whether the bundle holds certificates the state's CA signed: leaf records or node tarballs.
fn signed_a_bundle(cluster_dir: &Path) -> Result<bool, CaError> {
    let records = state::read_leaves(&cluster_dir.join("state"))?;
    let tarballs = !crate::tree::bundle::node_names(&cluster_dir.join("nodes")).is_empty();
    Ok(!records.is_empty() || tarballs)
}

pub fn import(config: &Config, args: &ImportArgs, clock: &Clock) -> Result<Imported, CaError> {
    let id = args.which.as_str();
    if !CA_IDS.contains(&id) {
        return Err(CaError::Input(format!("unknown CA {id:?}\n  hint: name one of ca, front-proxy-ca, etcd-ca")));
    }
    let cert_text = read_text(&args.cert, "--cert")?;
    let key_text = args.key.as_deref().map(|p| read_text(p, "--key")).transpose()?;
    let chain_text = args.chain.as_deref().map(|p| read_text(p, "--chain")).transpose()?;
    let (cert_name, key_name, chain_name) = (
        args.cert.display().to_string(),
        args.key.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        args.chain.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
    );
    let leaves_end = clock.now + config.cert_validity;
    let words = format!("certificateValidityPeriod {} from now", crate::util::duration::format_go(config.cert_validity));
    let ca = input::read_ca(
        &Input { name: &cert_name, text: &cert_text },
        key_text.as_deref().map(|text| Input { name: &key_name, text }).as_ref(),
        chain_text.as_deref().map(|text| Input { name: &chain_name, text }).as_ref(),
        leaves_end,
        &words,
    )
    .map_err(|e| match e {
        ImportError::Input(m) => CaError::Input(m),
        ImportError::NoKey(m) => CaError::Refused(m),
    })?;

    // The bundle: checked before the lock file is made (a refusal writes nothing), and under it.
    let cluster_dir = args.out.join(&config.cluster_name);
    state::check::refuse_lost(&cluster_dir, Some(&config.cluster_name))?;
    output::check_owner(&cluster_dir, &config.cluster_name)?;
    let lock = output::lock(&args.out, &config.cluster_name)?;
    let real = lock.dir().to_path_buf();
    output::check_owner(&real, &config.cluster_name)?;
    output::sweep_around(&cluster_dir);
    let state_dir = real.join("state");
    let shown_state = cluster_dir.join("state");
    let manifest = sm::read(&state_dir)?;
    if let Some(m) = &manifest {
        let checked = sm::check(&state_dir, m);
        if !checked.problems.is_empty() {
            return Err(state::check::refusal(&state_dir, m, &checked.problems).into());
        }
    }

    let (crt, keyp) = state::ca_paths(id);
    let chain_rel = state::ca_chain_path(id);
    let read = |rel: &str| std::fs::read(state_dir.join(rel)).ok();
    let old_crt = read(&crt);
    let old_der = old_crt.as_deref().and_then(|b| pem::parse(b).ok()).map(|p| p.into_contents());
    let old_key_spki =
        read(&keyp).and_then(|b| String::from_utf8(b).ok()).and_then(|t| crate::pki::keys::Key::from_pem(&t).ok()).map(|k| k.spki_der());
    let new_chain = ca.chain_pem();
    let old_chain = read(&chain_rel).unwrap_or_default();
    let new_key = crate::pki::keys::Key::from_pem(&ca.key_pem).map_err(|e| CaError::Input(e.to_string()))?;
    let who = subject(&ca.cert_der);
    if old_der.as_deref() == Some(ca.cert_der.as_slice())
        && old_key_spki.as_deref() == Some(new_key.spki_der().as_slice())
        && old_chain == new_chain.as_bytes()
        && old_crt.as_deref() == Some(ca.cert_pem.as_bytes())
    {
        return Ok(Imported { lines: vec![format!("{id} ({who}) is already in {}: nothing to do", shown_state.join(&crt).display())] });
    }
    let replacing = old_crt.is_some() || read(&keyp).is_some();
    // The same CA re-issued by its issuer (same key and subject, a new validity): every
    // certificate it signed stays valid, so it is no replacement.
    let old_subject =
        old_der.as_deref().and_then(|d| x509_parser::parse_x509_certificate(d).ok().map(|(_, c)| c.subject().as_raw().to_vec()));
    let new_subject = x509_parser::parse_x509_certificate(&ca.cert_der).ok().map(|(_, c)| c.subject().as_raw().to_vec());
    let reissued = old_key_spki.as_deref() == Some(new_key.spki_der().as_slice()) && old_subject.is_some() && old_subject == new_subject;
    let signed = replacing && !reissued && signed_a_bundle(&real)?;
    if signed && !args.force {
        return Err(CaError::Refused(format!(
            "{}: the state already holds another {id} ({}), which signed this bundle's certificates; nothing was written\n  hint: replacing a CA that signed a bundle is CA rotation, a later command; to start the bundle over with the imported CA, give --force (the old state is kept in {}/kubebundle-backup-<time>/state/, and every node must then be redeployed)",
            shown_state.join(&crt).display(),
            old_der.as_deref().map(subject).unwrap_or_else(|| "unreadable".into()),
            cluster_dir.parent().unwrap_or(&args.out).display()
        )));
    }

    let now = crate::clock::rfc3339(clock.now);
    let (parent, name) =
        (real.parent().unwrap_or(&args.out).to_path_buf(), real.file_name().unwrap_or_default().to_string_lossy().into_owned());
    let staging = output::stage(&parent, &name)?;
    let root = staging.path().to_path_buf();
    if real.is_dir() {
        output::link_copy(&real, &root)?;
    }
    let sroot = root.join("state");
    output::ensure_dir(&sroot, 0o700)?;
    output::ensure_dir(&sroot.join("pki"), 0o700)?;
    if id == "etcd-ca" {
        output::ensure_dir(&sroot.join("pki/etcd"), 0o700)?;
    }
    output::write_file(&sroot.join(&crt), ca.cert_pem.as_bytes(), 0o600)?;
    output::write_file(&sroot.join(&keyp), ca.key_pem.as_bytes(), 0o600)?;
    if new_chain.is_empty() {
        if sroot.join(&chain_rel).exists() {
            std::fs::remove_file(sroot.join(&chain_rel)).map_err(output::werr(&sroot.join(&chain_rel)))?;
        }
    } else {
        output::write_file(&sroot.join(&chain_rel), new_chain.as_bytes(), 0o600)?;
    }
    if !sroot.join(state::MARKER_FILE).exists() {
        output::write_file(&sroot.join(state::MARKER_FILE), state::marker_text(&config.cluster_name).as_bytes(), 0o600)?;
    }
    let mut m = manifest.unwrap_or_default();
    // The same key keeps its record (and when it was first recorded).
    let entry = sm::key_entry(id, &keyp, ca.key_pem.as_bytes(), &new_key.spki_der(), &now);
    if m.get(id).is_some_and(|e| e.sha256 != entry.sha256 || e.public_key_sha256 != entry.public_key_sha256 || e.file != entry.file) {
        m.secrets.retain(|e| e.id != id);
    }
    m.record(entry);
    output::write_file(&sroot.join(sm::MANIFEST_FILE), m.text().as_bytes(), 0o600)?;

    let mut lines = Vec::new();
    // The leaf records the replaced CA signed are dropped: the next generate issues them anew.
    let mut dropped = 0;
    if signed {
        let mut records = state::read_leaves(&state_dir)?;
        let before = records.len();
        records.retain(|(_, leaf), _| crate::pki::catalog::cert(leaf).and_then(|e| e.signer.ca_id()) != Some(id));
        dropped = before - records.len();
        if dropped > 0 {
            output::write_file(&sroot.join(state::LEAVES_FILE), &state::leaves_json(&records), 0o600)?;
        }
    }
    if signed {
        // --force: the old state is kept whole beside the bundle, as `generate --force` keeps it.
        let staged = output::PrivateDir::new(&parent, ".kubebundle-backup-")?;
        output::copy_tree(&state_dir, &staged.path().join("state"))?;
        let backup = staged.publish_backup(&parent, clock.now)?;
        let shown = cluster_dir.parent().unwrap_or(&args.out).join(backup.file_name().unwrap_or_default());
        lines.push(format!(
            "replaced {id} (--force): the previous state was kept in {}; the next generate issues every certificate of {id} again ({dropped} leaf record(s) dropped), so every node must be redeployed",
            shown.join("state").display()
        ));
    } else if reissued {
        lines.push(format!(
            "{id} was re-issued for the same key and subject: every certificate it signed stays valid, and join's discovery hash stays"
        ));
    } else if replacing {
        lines.push(format!("replaced {id} in the state (it had signed nothing yet)"));
    }
    output::commit(staging, &real)?;
    lock.keep();

    lines.push(format!(
        "imported {id} ({who}, expires {}) into {}, its key into {}",
        crate::clock::rfc3339(ca.not_after),
        shown_state.join(&crt).display(),
        shown_state.join(&keyp).display()
    ));
    if ca.not_before > clock.now {
        lines.push(format!(
            "warning: {id} is not valid before {}: certificates it signs verify only from then on",
            crate::clock::rfc3339(ca.not_before)
        ));
    }
    if let Some(root) = ca.chain.last() {
        let root_end = not_after(root);
        lines.push(format!(
            "its chain ({} certificate(s) up to the root {}, which expires {}) into {}",
            ca.chain.len(),
            subject(root),
            root_end.map(crate::clock::rfc3339).unwrap_or_default(),
            shown_state.join(&chain_rel).display()
        ));
        for der in &ca.chain {
            if let Some(end) = not_after(der).filter(|e| *e < ca.not_after) {
                lines.push(format!(
                    "warning: {} {} expires at {}, before {id} itself ({}): clients that trust it stop trusting the cluster's certificates then",
                    if Some(der) == ca.chain.last() { "the root" } else { "the intermediate" },
                    subject(der),
                    crate::clock::rfc3339(end),
                    crate::clock::rfc3339(ca.not_after)
                ));
            }
        }
    } else {
        lines.push(format!("{id} is a self-signed root: no chain"));
    }
    lines.push(format!("next: `kubebundle generate` with this config signs every certificate of {id} with it"));
    Ok(Imported { lines })
}
