//! `kubebundle ca import`: puts a CA made elsewhere (a corporate root, or an intermediate under
//! one, with its key) into the state of the cluster a config names, so the next `generate` signs
//! every certificate of that CA with it. The inputs are read and checked by `pki::import`; this
//! module writes the state as one transaction under the bundle's lock.

use std::path::{Path, PathBuf};

use super::LifecycleError;
use crate::bundle::output;
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

/// What the import did, for the command's output.
pub struct Imported {
    pub lines: Vec<String>,
}

fn read_text(path: &Path, what: &str) -> Result<String, LifecycleError> {
    let bytes = std::fs::read(path).map_err(|e| {
        LifecycleError::Input(format!(
            "{what} {}: cannot be read ({})\n  hint: give the path of a PEM file or of Vault's -format=json response",
            path.display(),
            crate::util::io_words(&e)
        ))
    })?;
    String::from_utf8(bytes).map_err(|_| {
        LifecycleError::Input(format!(
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
fn signed_a_bundle(cluster_dir: &Path) -> Result<bool, LifecycleError> {
    let records = state::read_leaves(&cluster_dir.join("state"))?;
    let tarballs = !crate::tree::bundle::node_names(&cluster_dir.join("nodes")).is_empty();
    Ok(!records.is_empty() || tarballs)
}

/// A bundle's state opened for a writer: checked before the lock file is made (a refusal writes
/// nothing), locked, what killed runs left swept, and its manifest checked under the lock.
struct Opened {
    lock: output::OutputLock,
    /// The bundle directory itself (a symlinked OUT/<cluster> resolved).
    real: PathBuf,
    state_dir: PathBuf,
    /// The state as the user named it, for messages.
    shown_state: PathBuf,
    manifest: Option<sm::Manifest>,
}

fn open_state(config: &Config, out: &Path) -> Result<Opened, LifecycleError> {
    let cluster_dir = out.join(&config.cluster_name);
    state::check::refuse_lost(&cluster_dir, Some(&config.cluster_name))?;
    output::check_owner(&cluster_dir, &config.cluster_name)?;
    let lock = output::lock(out, &config.cluster_name)?;
    let real = lock.dir().to_path_buf();
    output::check_owner(&real, &config.cluster_name)?;
    output::sweep_around(&cluster_dir);
    let state_dir = real.join("state");
    let manifest = sm::read(&state_dir)?;
    if let Some(m) = &manifest {
        let checked = sm::check(&state_dir, m);
        if !checked.problems.is_empty() {
            return Err(state::check::refusal(&state_dir, m, &checked.problems).into());
        }
    }
    Ok(Opened { lock, real, state_dir, shown_state: cluster_dir.join("state"), manifest })
}

/// The new bundle staged beside `real` (hard links to all it holds) with its state's pki
/// directories for CA `id` made: (the staging directory, its `state/`).
fn stage_state(real: &Path, out: &Path, id: &str) -> Result<(output::PrivateDir, PathBuf), LifecycleError> {
    let parent = real.parent().unwrap_or(out);
    let staging = output::stage(parent, &real.file_name().unwrap_or_default().to_string_lossy())?;
    if real.is_dir() {
        output::link_copy(real, staging.path())?;
    }
    let sroot = staging.path().join("state");
    output::ensure_dir(&sroot, 0o700)?;
    output::ensure_dir(&sroot.join("pki"), 0o700)?;
    if id == "etcd-ca" {
        output::ensure_dir(&sroot.join("pki/etcd"), 0o700)?;
    }
    Ok((staging, sroot))
}

pub fn import(config: &Config, args: &ImportArgs, clock: &Clock) -> Result<Imported, LifecycleError> {
    let id = args.which.as_str();
    if !CA_IDS.contains(&id) {
        return Err(LifecycleError::Input(format!("unknown CA {id:?}\n  hint: name one of ca, front-proxy-ca, etcd-ca")));
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
    // Without --key, the key the state holds (`ca csr` made it): read again under the lock.
    let cluster_dir = args.out.join(&config.cluster_name);
    let (crt, keyp) = state::ca_paths(id);
    let state_key_name = cluster_dir.join("state").join(&keyp).display().to_string();
    let state_key_text = match args.key {
        None => std::fs::read(cluster_dir.join("state").join(&keyp)).ok().and_then(|b| String::from_utf8(b).ok()),
        Some(_) => None,
    };
    let was_pending =
        sm::read(&cluster_dir.join("state")).ok().flatten().and_then(|m| m.get(id).map(|e| e.awaiting_certificate)) == Some(true);
    let csr_path = cluster_dir.join(state::CSR_DIR).join(format!("{id}.csr"));
    let (about, hint) = if was_pending {
        (
            "key `kubebundle ca csr` made, waiting in".to_string(),
            format!("import the certificate your signer issued from the CSR of that key ({}); a CA made for another key is imported with its key (--key)", csr_path.display()),
        )
    } else {
        (
            format!("{id} key the state holds in"),
            "give that key's CA certificate, or a CA made for another key with its key (--key)".to_string(),
        )
    };
    let state_key =
        state_key_text.as_deref().map(|text| input::StateKey { input: Input { name: &state_key_name, text }, about: &about, hint: &hint });
    let ca = input::read_ca(
        &Input { name: &cert_name, text: &cert_text },
        key_text.as_deref().map(|text| Input { name: &key_name, text }).as_ref(),
        chain_text.as_deref().map(|text| Input { name: &chain_name, text }).as_ref(),
        state_key.as_ref(),
        leaves_end,
        &words,
    )
    .map_err(|e| match e {
        ImportError::Input(m) => LifecycleError::Input(m),
    })?;

    // The bundle: checked before the lock file is made (a refusal writes nothing), and under it.
    let Opened { lock, real, state_dir, shown_state, manifest } = open_state(config, &args.out)?;

    let chain_rel = state::ca_chain_path(id);
    let read = |rel: &str| std::fs::read(state_dir.join(rel)).ok();
    if ca.key_from_state && read(&keyp).as_deref() != state_key_text.as_deref().map(str::as_bytes) {
        return Err(LifecycleError::Refused(format!(
            "{}: changed while this command ran; nothing was written\n  hint: run it again once the other change is done",
            shown_state.join(&keyp).display()
        )));
    }
    let pending = manifest.as_ref().and_then(|m| m.get(id)).is_some_and(|e| e.awaiting_certificate);
    let old_crt = read(&crt);
    let old_der = old_crt.as_deref().and_then(|b| pem::parse(b).ok()).map(|p| p.into_contents());
    let old_key_spki =
        read(&keyp).and_then(|b| String::from_utf8(b).ok()).and_then(|t| crate::pki::keys::Key::from_pem(&t).ok()).map(|k| k.spki_der());
    let new_chain = ca.chain_pem();
    let old_chain = read(&chain_rel).unwrap_or_default();
    let new_key =
        ca.key_pem.as_ref().map(|k| crate::pki::keys::Key::from_pem(k)).transpose().map_err(|e| LifecycleError::Input(e.to_string()))?;
    let external = new_key.is_none();
    // The CA's public key: its key's, or its certificate's (external-CA mode).
    let new_spki = match &new_key {
        Some(k) => k.spki_der(),
        None => x509_parser::parse_x509_certificate(&ca.cert_der).map(|(_, c)| c.public_key().raw.to_vec()).unwrap_or_default(),
    };
    let old_external = manifest.as_ref().and_then(|m| m.get(id)).is_some_and(|e| e.external);
    let old_key_spki = if old_external {
        old_der.as_deref().and_then(|d| x509_parser::parse_x509_certificate(d).ok().map(|(_, c)| c.public_key().raw.to_vec()))
    } else {
        old_key_spki
    };
    let who = subject(&ca.cert_der);
    if old_der.as_deref() == Some(ca.cert_der.as_slice())
        && old_external == external
        && old_key_spki.as_deref() == Some(new_spki.as_slice())
        && old_chain == new_chain.as_bytes()
        && old_crt.as_deref() == Some(ca.cert_pem.as_bytes())
    {
        return Ok(Imported { lines: vec![format!("{id} ({who}) is already in {}: nothing to do", shown_state.join(&crt).display())] });
    }
    // A key of the state's own, waiting for this certificate (`ca csr`), is no replacement.
    let replacing = old_crt.is_some() || old_key_spki.as_deref().is_some_and(|s| s != new_spki.as_slice());
    // The same CA re-issued by its issuer (same key and subject, a new validity): every
    // certificate it signed stays valid, so it is no replacement.
    let old_subject =
        old_der.as_deref().and_then(|d| x509_parser::parse_x509_certificate(d).ok().map(|(_, c)| c.subject().as_raw().to_vec()));
    let new_subject = x509_parser::parse_x509_certificate(&ca.cert_der).ok().map(|(_, c)| c.subject().as_raw().to_vec());
    let reissued = old_key_spki.as_deref() == Some(new_spki.as_slice()) && old_subject.is_some() && old_subject == new_subject;
    let signed = replacing && !reissued && signed_a_bundle(&real)?;
    if signed && !args.force {
        return Err(LifecycleError::Refused(format!(
            "{}: the state already holds another {id} ({}), which signed this bundle's certificates; nothing was written\n  hint: replacing a CA that signed a bundle is CA rotation, a later command; to start the bundle over with the imported CA, give --force (the old state is kept in {}/kubebundle-backup-<time>/state/, and every node must then be redeployed)",
            shown_state.join(&crt).display(),
            old_der.as_deref().map(subject).unwrap_or_else(|| "unreadable".into()),
            cluster_dir.parent().unwrap_or(&args.out).display()
        )));
    }

    let now = crate::clock::rfc3339(clock.now);
    let parent = real.parent().unwrap_or(&args.out).to_path_buf();
    let (staging, sroot) = stage_state(&real, &args.out, id)?;
    output::write_file(&sroot.join(&crt), ca.cert_pem.as_bytes(), 0o600)?;
    match &ca.key_pem {
        Some(k) => output::write_file(&sroot.join(&keyp), k.as_bytes(), 0o600)?,
        // External-CA mode: no key file for this CA at all.
        None if sroot.join(&keyp).exists() => std::fs::remove_file(sroot.join(&keyp)).map_err(output::werr(&sroot.join(&keyp)))?,
        None => {}
    }
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
    let entry = match &ca.key_pem {
        Some(k) => sm::key_entry(id, &keyp, k.as_bytes(), &new_spki, &now),
        None => sm::external_entry(id, &crt, ca.cert_pem.as_bytes(), &new_spki, &now),
    };
    if m.get(id).is_some_and(|e| {
        e.sha256 != entry.sha256 || e.public_key_sha256 != entry.public_key_sha256 || e.file != entry.file || e.external != entry.external
    }) {
        m.secrets.retain(|e| e.id != id);
    }
    m.record(entry);
    if let Some(e) = m.secrets.iter_mut().find(|e| e.id == id) {
        e.awaiting_certificate = false;
    }
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
    } else if replacing && pending {
        lines.push(format!(
            "replaced the key `kubebundle ca csr` made for {id} with the imported CA's key: a certificate signed from {} will not import any more",
            csr_path.display()
        ));
    } else if replacing {
        lines.push(format!("replaced {id} in the state (it had signed nothing yet)"));
    } else if pending {
        lines.push(format!("{id}: the certificate is for the key that waited in {}: it waits no more", shown_state.join(&keyp).display()));
    }
    output::commit(staging, &real)?;
    lock.keep();

    if external {
        lines.push(format!(
            "imported {id} ({who}, expires {}) into {} without its key: external-CA mode (the next generate writes a CSR for each of its certificates, for your signer; then `kubebundle import-signed`)",
            crate::clock::rfc3339(ca.not_after),
            shown_state.join(&crt).display(),
        ));
    } else {
        lines.push(format!(
            "imported {id} ({who}, expires {}) into {}, its key into {}",
            crate::clock::rfc3339(ca.not_after),
            shown_state.join(&crt).display(),
            shown_state.join(&keyp).display()
        ));
    }
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
    lines.push(if external {
        format!("next: `kubebundle generate` with this config writes a key and a CSR for every certificate of {id} (under {}), for your CA to sign; then `kubebundle import-signed --dir {} SIGNED...` and generate again", cluster_dir.join(state::CSR_DIR).display(), cluster_dir.display())
    } else {
        format!("next: `kubebundle generate` with this config signs every certificate of {id} with it")
    });
    Ok(Imported { lines })
}

pub struct CsrArgs {
    /// `ca`, `front-proxy-ca` or `etcd-ca`.
    pub which: String,
    /// OUT: the state is OUT/<clusterName>/state, the CSR OUT/<clusterName>/csr/<which>.csr.
    pub out: PathBuf,
    /// The flags to repeat in the `ca import` command the output suggests (`--config c.yaml --out out`).
    pub flags: String,
}

/// kubeadm's common name of each CA (the subject of the CSR).
fn common_name(id: &str) -> &'static str {
    match id {
        "ca" => "kubernetes",
        "front-proxy-ca" => "front-proxy-ca",
        _ => "etcd-ca",
    }
}

/// `kubebundle ca csr`: makes the CA's key in the state (or keeps the one waiting there) and
/// writes a CSR for an intermediate CA to `OUT/<clusterName>/csr/<which>.csr`, as one transaction
/// under the bundle's lock. The signed certificate comes back with `ca import --cert`.
pub fn csr(config: &Config, args: &CsrArgs, clock: &Clock) -> Result<Imported, LifecycleError> {
    let id = args.which.as_str();
    if !CA_IDS.contains(&id) {
        return Err(LifecycleError::Input(format!("unknown CA {id:?}\n  hint: name one of ca, front-proxy-ca, etcd-ca")));
    }
    if id == "etcd-ca" && !config.local_etcd() {
        return Err(LifecycleError::Input(
            "etcd-ca: the config's etcd is external (ClusterConfiguration.etcd.external), so the bundle has no etcd CA\n  hint: the external etcd's own CA signs its certificates; ca csr makes ca and front-proxy-ca"
                .to_string(),
        ));
    }
    let cluster_dir = args.out.join(&config.cluster_name);
    let Opened { lock, real, state_dir, shown_state, manifest } = open_state(config, &args.out)?;
    let (crt, keyp) = state::ca_paths(id);
    if let Ok(bytes) = std::fs::read(state_dir.join(&crt)) {
        let der = pem::parse(&bytes).ok().map(|p| p.into_contents()).unwrap_or_default();
        let end = not_after(&der).map(crate::clock::rfc3339).unwrap_or_else(|| "unreadable".into());
        return Err(LifecycleError::Refused(format!(
            "{}: the state already holds the {id} certificate ({}, expires {end}); a CSR is for a CA key that has none yet; nothing was written\n  hint: replacing a CA is CA rotation (a later command) or `kubebundle generate --force` (a new state: every node must be redeployed); to keep this CA, there is nothing to do",
            shown_state.join(&crt).display(),
            subject(&der)
        )));
    }

    // The key: the one waiting in the state, or a new one of the config's encryptionAlgorithm.
    let old_key = std::fs::read(state_dir.join(&keyp)).ok();
    let mut lines = Vec::new();
    let key = match &old_key {
        Some(bytes) => {
            let text = std::str::from_utf8(bytes).map_err(|_| {
                LifecycleError::Refused(format!(
                    "{}: not a PEM key\n  hint: remove it, and ca csr makes a new key",
                    shown_state.join(&keyp).display()
                ))
            })?;
            crate::pki::keys::Key::from_pem(text).map_err(|_| {
                LifecycleError::Refused(format!(
                    "{}: the key waiting for its certificate cannot be read as an RSA or ECDSA key\n  hint: remove it, and ca csr makes a new key (a CSR signed for the old one will not import)",
                    shown_state.join(&keyp).display()
                ))
            })?
        }
        None => crate::pki::source::new_key(config.seed.as_deref(), config.algorithm, &format!("ca/{id}")).map_err(StateError::from)?,
    };
    let der = crate::pki::issue::ca_request(common_name(id), &key).map_err(StateError::from)?;
    let csr_pem = crate::pki::keys::pem_encode("CERTIFICATE REQUEST", &der);
    let csr_rel = format!("{}/{id}.csr", state::CSR_DIR);
    let shown_csr = cluster_dir.join(&csr_rel);
    let algorithm = key.algorithm().map(|a| a.name()).unwrap_or("?");
    let old_csr = std::fs::read(real.join(&csr_rel)).ok();
    let recorded = manifest.as_ref().and_then(|m| m.get(id)).is_some_and(|e| e.awaiting_certificate);
    if old_key.is_some() && recorded && old_csr.as_deref() == Some(csr_pem.as_bytes()) {
        lines.push(format!(
            "{} is already the CSR of the {id} key waiting in {}: nothing to do",
            shown_csr.display(),
            shown_state.join(&keyp).display()
        ));
    } else {
        let (staging, sroot) = stage_state(&real, &args.out, id)?;
        if old_key.is_none() {
            output::write_file(&sroot.join(&keyp), key.private_pem().as_bytes(), 0o600)?;
        }
        if !sroot.join(state::MARKER_FILE).exists() {
            output::write_file(&sroot.join(state::MARKER_FILE), state::marker_text(&config.cluster_name).as_bytes(), 0o600)?;
        }
        let mut m = manifest.unwrap_or_default();
        let mut entry = sm::key_entry(id, &keyp, key.private_pem().as_bytes(), &key.spki_der(), &crate::clock::rfc3339(clock.now));
        entry.awaiting_certificate = true;
        if m.get(id).is_some_and(|e| e.sha256 != entry.sha256 || e.public_key_sha256 != entry.public_key_sha256 || !e.awaiting_certificate)
        {
            m.secrets.retain(|e| e.id != id);
        }
        m.record(entry);
        output::write_file(&sroot.join(sm::MANIFEST_FILE), m.text().as_bytes(), 0o600)?;
        // The CSR holds no secret (a name and a public key): readable, to be handed to the signer.
        output::ensure_dir(&staging.path().join(state::CSR_DIR), 0o755)?;
        output::write_file(&staging.path().join(&csr_rel), csr_pem.as_bytes(), 0o644)?;
        output::commit(staging, &real)?;
        lock.keep();
        if old_key.is_some() {
            lines.push(format!(
                "wrote {} again for the {id} key already waiting in {} (the same key, the same CSR)",
                shown_csr.display(),
                shown_state.join(&keyp).display()
            ));
        } else {
            lines.push(format!(
                "made the {id} key ({algorithm}) in {} (0600, recorded in state/manifest.yaml), and its CSR in {}",
                shown_state.join(&keyp).display(),
                shown_csr.display()
            ));
        }
    }
    if old_key.is_some() && key.algorithm() != Some(config.algorithm) {
        lines.push(format!(
            "note: the waiting key is {algorithm}, the config's encryptionAlgorithm {}: remove {} and run ca csr again for a key of that algorithm",
            config.algorithm.name(),
            shown_state.join(&keyp).display()
        ));
    }
    let cn = common_name(id);
    let days = config.ca_validity.as_secs().div_ceil(86400);
    let ttl = crate::util::duration::format_go(config.ca_validity);
    let csr = shown_csr.display();
    lines.push(format!(
        "CSR: {csr} (CN={cn}; requests basicConstraints critical CA:TRUE, keyUsage critical keyCertSign, cRLSign, digitalSignature)"
    ));
    lines.push("sign it as an intermediate CA with your root, for example:".into());
    lines.push(format!(
        "  openssl ca -config root.cnf -extensions v3_intermediate_ca -days {days} -in {csr} -out signed.crt   (an extensions section with CA:TRUE and keyCertSign, or copy_extensions = copy)"
    ));
    lines.push(format!("  vault write -format=json pki/root/sign-intermediate csr=@{csr} common_name={cn} ttl={ttl} > signed.json"));
    lines.push(format!(
        "then: kubebundle ca import {id} --cert signed.crt --chain root.crt{}   (a Vault response carries its chain: --cert signed.json)",
        args.flags
    ));
    Ok(Imported { lines })
}
