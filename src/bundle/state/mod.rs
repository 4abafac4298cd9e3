//! The cluster's long-lived secrets: the CAs, the service-account key pair, the encryption key
//! and the bootstrap tokens. Like a secrets bundle: load what exists, fill only what is missing,
//! and never replace anything without `--force`.

pub mod check;
pub mod cluster;
pub mod files;
pub mod manifest;
pub mod restore;
pub mod rotations;

pub use files::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use rayon::prelude::*;
use time::OffsetDateTime;

use crate::clock::Clock;
use crate::config::{Config, TokenSpec};
use crate::pki::issue::{self, Authority, CertSpec};
use crate::pki::keys::Key;
use crate::pki::source;
use crate::tree::FileTree;

pub struct State {
    pub dir: PathBuf,
    pub authorities: BTreeMap<String, Authority>,
    /// The key pair that signs service-account tokens (`pki/sa.key`).
    pub sa: Key,
    /// `rotate sa start` made the next key (`pki/sa-next.key`): the API servers accept its
    /// tokens, nothing signs with it yet.
    pub sa_next: Option<Key>,
    /// After `rotate sa switch`: the previous public key (`pki/sa-previous.pub`, PEM), still
    /// accepted until `rotate sa finish`.
    pub sa_previous: Option<String>,
    /// `rotate ca <id> start` made CA `id`'s successor (`pki/<id>-next.{crt,key}`): trusted
    /// beside it everywhere, signing nothing yet.
    pub ca_next: BTreeMap<String, Authority>,
    /// After `rotate ca <id> switch`: the old CA's certificate (`pki/<id>-previous.crt`, PEM),
    /// still trusted everywhere until `rotate ca <id> finish`.
    pub ca_previous: BTreeMap<String, String>,
    pub encryption_keys: Vec<EncryptionKey>,
    pub tokens: Vec<Token>,
    /// The leaves of the previous run (keys and issue times); the run writes its own.
    pub leaves: LeafRecords,
    /// Every state file, reused or new (relative to `dir`), written whole into each new bundle.
    pub files: FileTree,
    /// What was created, reused or replaced, for the run's summary.
    pub report: Vec<String>,
}

const TORN: &str = "restore the missing file from a backup; --force replaces the pair (and every certificate it signed)";

/// A key that is in the state, or one to make.
enum Slot<T> {
    Have(T),
    Make,
}

impl State {
    /// Loads the state under `dir`, making whatever it never held (everything, with `force`).
    /// Every secret its manifest records is checked first: one that is missing, unreadable or
    /// changed refuses the run. A state without a manifest is accepted when it is complete (and
    /// then recorded), and refused when it is incomplete.
    pub fn load_or_init(dir: &Path, config: &Config, cas: &[CertSpec], clock: &Clock, force: bool) -> Result<State, StateError> {
        Self::load_tolerating(dir, config, cas, clock, force, &[])
    }

    /// `load_or_init`, where the recorded secrets `lost_ok` names (manifest ids) may be missing
    /// or changed: a lifecycle command that drops them anyway (`rotate ... abort` drops the
    /// rotation's new key, which nothing used yet) runs without them.
    pub fn load_tolerating(
        dir: &Path,
        config: &Config,
        cas: &[CertSpec],
        clock: &Clock,
        force: bool,
        lost_ok: &[String],
    ) -> Result<State, StateError> {
        use crate::bundle::state::manifest::{self as sm, Manifest};
        let mut report = Vec::new();
        let mut files = FileTree::new();
        let now = rfc3339(clock.now);

        // What the state recorded is checked before anything is used or made.
        let recorded = if force { None } else { sm::read(dir)? };
        // Recorded secrets that are lost, and that the command drops anyway (`lost_ok`).
        let mut lost: Vec<String> = Vec::new();
        let had_manifest = recorded.is_some();
        match &recorded {
            Some(m) => {
                let mut checked = sm::check(dir, m);
                lost.extend(checked.problems.iter().filter(|p| lost_ok.contains(&p.id)).map(|p| p.id.clone()));
                checked.problems.retain(|p| !lost_ok.contains(&p.id));
                if !checked.problems.is_empty() {
                    return Err(check::refusal(dir, m, &checked.problems));
                }
                if checked.sa_pub_missing {
                    report.push("rewrote pki/sa.pub from sa.key (it was missing)".into());
                }
            }
            None if !force => {
                let ids: Vec<String> = cas.iter().map(|c| c.id.clone()).collect();
                check::check_unrecorded(dir, &ids)?;
            }
            None => {}
        }
        let mut manifest = recorded.unwrap_or_default();
        // A secret found in the state but not in its manifest is recorded (and said, when the
        // state had a manifest); the first record of each stays.
        let adopt = |manifest: &mut Manifest, entry: sm::Entry, report: &mut Vec<String>| {
            if manifest.get(&entry.id).is_none() {
                if had_manifest {
                    report.push(format!("recorded {} ({}): it was in the state but not in its manifest", entry.id, entry.file));
                }
                manifest.record(entry);
            }
        };
        let created =
            |what: &str| if had_manifest { format!("created {what}: the state never held it") } else { format!("created {what}") };

        // Find what exists; keys to make are generated in parallel below.
        let mut ca_slots = Vec::new();
        for spec in cas {
            let (crt, key) = ca_paths(&spec.id);
            // A key `ca csr` made, waiting for its signed certificate (`ca import`).
            let pending = !force && manifest.get(&spec.id).is_some_and(|e| e.awaiting_certificate);
            let slot = match (force, read_opt(dir, &crt)?, read_opt(dir, &key)?) {
                (false, None, Some(_)) if pending => return Err(awaiting(dir, &spec.id, &key)),
                (false, Some(c), Some(k)) => {
                    // Its certificate came (put there by hand: ca import clears the mark itself).
                    if let Some(e) = manifest.secrets.iter_mut().find(|e| e.id == spec.id) {
                        e.awaiting_certificate = false;
                    }
                    let key_obj = Key::from_pem(&k).map_err(|e| bad(dir, &key, e.to_string(), TORN))?;
                    let spki = key_obj.spki_der();
                    let mut auth = Authority::from_pem(&spec.id, &c, key_obj).map_err(|e| bad(dir, &crt, e, TORN))?;
                    if let Some(chain) = load_chain(dir, &spec.id, &mut auth)? {
                        files.insert(&ca_chain_path(&spec.id), chain.into_bytes(), 0o600);
                    }
                    adopt(&mut manifest, sm::key_entry(&spec.id, &key, k.as_bytes(), &spki, &now), &mut report);
                    files.insert(&crt, c.into_bytes(), 0o600);
                    files.insert(&key, k.into_bytes(), 0o600);
                    report.push(format!("reused {} from the state", spec.id));
                    Slot::Have(auth)
                }
                // External-CA mode (`ca import` without a key): the certificate alone.
                (false, Some(c), None) if manifest.get(&spec.id).is_some_and(|e| e.external) => {
                    let mut auth = Authority::external(&spec.id, &c).map_err(|e| bad(dir, &crt, e, TORN))?;
                    if let Some(chain) = load_chain(dir, &spec.id, &mut auth)? {
                        files.insert(&ca_chain_path(&spec.id), chain.into_bytes(), 0o600);
                    }
                    files.insert(&crt, c.into_bytes(), 0o600);
                    report.push(format!("reused {} from the state (external: its key is not here)", spec.id));
                    Slot::Have(auth)
                }
                (false, Some(_), None) => return Err(bad(dir, &key, "the CA certificate exists but its key is missing", TORN)),
                (false, None, Some(_)) => return Err(bad(dir, &crt, "the CA key exists but its certificate is missing", TORN)),
                (f, c, _) => {
                    if pending {
                        // Its pending key was removed: the CA generate makes replaces the record.
                        manifest.secrets.retain(|e| e.id != spec.id);
                        report.push(format!(
                            "created {}: the key `kubebundle ca csr` made for it was removed from the state, so it is a CA of its own",
                            spec.id
                        ));
                        ca_slots.push((spec, Slot::Make));
                        continue;
                    }
                    report.push(if f && c.is_some() { format!("replaced {} (--force)", spec.id) } else { created(&spec.id) });
                    Slot::Make
                }
            };
            ca_slots.push((spec, slot));
        }
        let sa_slot = match (force, read_opt(dir, "pki/sa.key")?) {
            (false, Some(k)) => {
                report.push("reused sa.key from the state".into());
                let key = Key::from_pem(&k).map_err(|e| {
                    bad(
                        dir,
                        "pki/sa.key",
                        e.to_string(),
                        "restore it from a backup; --force replaces it and invalidates every service-account token",
                    )
                })?;
                adopt(&mut manifest, sm::key_entry("sa", sm::SA_KEY, k.as_bytes(), &key.spki_der(), &now), &mut report);
                Slot::Have(key)
            }
            (f, k) => {
                report.push(if f && k.is_some() {
                    "replaced sa.key (--force): every service-account token becomes invalid".into()
                } else {
                    created("sa.key")
                });
                Slot::Make
            }
        };
        // Generate the missing keys in parallel (RSA key generation dominates the run).
        // Labels name each key for a seeded run; they are made in the order they are taken (pop).
        let mut labels: Vec<String> =
            ca_slots.iter().filter(|(_, s)| matches!(s, Slot::Make)).map(|(spec, _)| format!("ca/{}", spec.id)).collect();
        if matches!(sa_slot, Slot::Make) {
            labels.push("sa".to_string());
        }
        labels.reverse();
        let seed = config.seed.as_deref();
        let mut fresh: Vec<Key> =
            labels.par_iter().map(|label| source::new_key(seed, config.algorithm, label)).collect::<Result<_, _>>()?;

        let mut authorities = BTreeMap::new();
        let validity = issue::Validity::for_ca(clock, &config.kubernetes_version, config.ca_validity);
        for (spec, slot) in ca_slots {
            let auth = match slot {
                Slot::Have(a) => a,
                Slot::Make => {
                    let key = fresh.pop().expect("one fresh key per slot");
                    // kubeadm ≤1.27 gave CAs serial 0.
                    let serial = if config.kubernetes_version.at_least(28) {
                        issue::derived_serial(&key, &[b"ca", spec.id.as_bytes(), &validity.not_before.unix_timestamp().to_be_bytes()])
                    } else {
                        vec![0]
                    };
                    let cert = issue::issue(spec, &key, None, &validity, serial)?;
                    let (crt, keyp) = ca_paths(&spec.id);
                    manifest.record(sm::key_entry(&spec.id, &keyp, key.private_pem().as_bytes(), &key.spki_der(), &now));
                    files.insert(&crt, cert.pem.as_bytes().to_vec(), 0o600);
                    files.insert(&keyp, key.private_pem().as_bytes().to_vec(), 0o600);
                    Authority::new(&spec.id, cert, key, validity.not_before, validity.not_after).map_err(|e| bad(dir, &crt, e, TORN))?
                }
            };
            authorities.insert(spec.id.clone(), auth);
        }
        let sa = match sa_slot {
            Slot::Have(k) => k,
            Slot::Make => {
                let k = fresh.pop().expect("one fresh key per slot");
                manifest.record(sm::key_entry("sa", sm::SA_KEY, k.private_pem().as_bytes(), &k.spki_der(), &now));
                k
            }
        };
        files.insert("pki/sa.key", sa.private_pem().as_bytes().to_vec(), 0o600);
        files.insert("pki/sa.pub", sa.public_pem().into_bytes(), 0o600);
        // A service-account key rotation's extra keys (recorded in the manifest, checked above).
        let sa_hint = "restore it from a backup (kubebundle-backup-*/state/); or `kubebundle rotate sa abort` before switch";
        let sa_next = match read_opt(dir, sm::SA_NEXT_KEY)? {
            Some(k) if !force && !lost.iter().any(|id| id == "sa-next") => {
                let key = Key::from_pem(&k).map_err(|e| bad(dir, sm::SA_NEXT_KEY, e.to_string(), sa_hint))?;
                adopt(&mut manifest, sm::key_entry("sa-next", sm::SA_NEXT_KEY, k.as_bytes(), &key.spki_der(), &now), &mut report);
                files.insert(sm::SA_NEXT_KEY, k.into_bytes(), 0o600);
                Some(key)
            }
            _ => None,
        };
        let sa_previous = match read_opt(dir, sm::SA_PREVIOUS_PUB)? {
            Some(p) if !force => {
                let der =
                    sm::public_key_der(p.as_bytes()).ok_or_else(|| bad(dir, sm::SA_PREVIOUS_PUB, "it is not a PEM public key", sa_hint))?;
                adopt(&mut manifest, sm::public_entry("sa-previous", sm::SA_PREVIOUS_PUB, &der, &now), &mut report);
                files.insert(sm::SA_PREVIOUS_PUB, p.clone().into_bytes(), 0o600);
                Some(p)
            }
            _ => None,
        };
        // A CA rotation's extra CAs (recorded in the manifest, checked above).
        let mut ca_next = BTreeMap::new();
        let mut ca_previous = BTreeMap::new();
        let ca_hint = "restore it from a backup (kubebundle-backup-*/state/); or `kubebundle rotate ca <id> abort` before switch";
        for spec in cas.iter().filter(|_| !force) {
            let (crt, key) = ca_next_paths(&spec.id);
            match (read_opt(dir, &crt)?, read_opt(dir, &key)?) {
                (Some(c), Some(k)) => {
                    let key_obj = Key::from_pem(&k).map_err(|e| bad(dir, &key, e.to_string(), ca_hint))?;
                    let spki = key_obj.spki_der();
                    let auth = Authority::from_pem(&spec.id, &c, key_obj).map_err(|e| bad(dir, &crt, e, ca_hint))?;
                    adopt(&mut manifest, sm::key_entry(&sm::ca_next_id(&spec.id), &key, k.as_bytes(), &spki, &now), &mut report);
                    files.insert(&crt, c.into_bytes(), 0o600);
                    files.insert(&key, k.into_bytes(), 0o600);
                    ca_next.insert(spec.id.clone(), auth);
                }
                (None, None) => {}
                (Some(_), None) => return Err(bad(dir, &key, "the new CA's certificate exists but its key is missing", ca_hint)),
                (None, Some(_)) => return Err(bad(dir, &crt, "the new CA's key exists but its certificate is missing", ca_hint)),
            }
            let prev = ca_previous_path(&spec.id);
            if let Some(p) = read_opt(dir, &prev)? {
                let (der, _) = sm::ca_cert_spki(p.as_bytes()).map_err(|e| bad(dir, &prev, e, ca_hint))?;
                adopt(&mut manifest, sm::public_entry(&sm::ca_previous_id(&spec.id), &prev, &der, &now), &mut report);
                files.insert(&prev, p.clone().into_bytes(), 0o600);
                ca_previous.insert(spec.id.clone(), p);
            }
        }
        let encryption_keys = match (force, read_opt(dir, ENCRYPTION_FILE)?) {
            (false, Some(text)) => {
                let f: EncryptionFile = serde_saphyr::from_str(&text).map_err(|e| {
                    bad(dir, ENCRYPTION_FILE, e.to_string(), "restore it from a backup; losing it makes encrypted Secrets unreadable")
                })?;
                for k in &f.keys {
                    let ok = base64::engine::general_purpose::STANDARD.decode(&k.secret).map(|b| b.len() == 32).unwrap_or(false);
                    if !ok {
                        return Err(bad(
                            dir,
                            ENCRYPTION_FILE,
                            format!("key {:?} is not base64 of 32 bytes", k.name),
                            "restore it from a backup",
                        ));
                    }
                }
                if f.keys.is_empty() {
                    return Err(bad(dir, ENCRYPTION_FILE, "no keys", "restore it from a backup"));
                }
                for k in &f.keys {
                    adopt(&mut manifest, sm::encryption_entry(&k.name, &k.secret, &now), &mut report);
                }
                report.push("reused the encryption key from the state".into());
                files.insert(ENCRYPTION_FILE, text.into_bytes(), 0o600);
                f.keys
            }
            (f, old) => {
                report.push(if f && old.is_some() {
                    "replaced the encryption key (--force): Secrets encrypted with the old key become unreadable".into()
                } else {
                    created("the encryption key")
                });
                let bytes = source::new_secret32(config.seed.as_deref(), "encryption/key1");
                let keys = vec![EncryptionKey {
                    name: "key1".into(),
                    secret: base64::engine::general_purpose::STANDARD.encode(bytes.as_ref()),
                    provider: config.encryption_provider,
                }];
                manifest.record(sm::encryption_entry("key1", &keys[0].secret, &now));
                let text = serde_saphyr::to_string(&EncryptionFile { keys: keys.clone() })
                    .map_err(|e| bad(dir, ENCRYPTION_FILE, e.to_string(), "report this"))?;
                files.insert(ENCRYPTION_FILE, text.into_bytes(), 0o600);
                keys
            }
        };
        if !had_manifest && !force && report.iter().any(|l| l.starts_with("reused")) {
            report.push(format!("recorded the state's secrets in {} (it had no manifest)", sm::MANIFEST_FILE));
        }
        files.insert(sm::MANIFEST_FILE, manifest.text().into_bytes(), 0o600);

        let stored = if force { Vec::new() } else { read_tokens(dir)? };
        let tokens = resolve_tokens(config, stored, clock, &mut report)?;
        files.insert(TOKENS_FILE, tokens_yaml(&tokens)?.into_bytes(), 0o600);
        files.insert(MARKER_FILE, marker_text(&config.cluster_name).into_bytes(), 0o600);
        // A rotation's phase (its material is checked above, with the manifest).
        if !force {
            rotations::read(dir)?;
        }

        let leaves = if force { LeafRecords::new() } else { read_leaves(dir)? };
        Ok(State {
            dir: dir.to_path_buf(),
            authorities,
            sa,
            sa_next,
            sa_previous,
            ca_next,
            ca_previous,
            encryption_keys,
            tokens,
            leaves,
            files,
            report,
        })
    }

    pub fn authority(&self, id: &str) -> Option<&Authority> {
        self.authorities.get(id)
    }

    /// CA `id`'s trust bundle, what every file that trusts it holds (CA files, kubeconfigs'
    /// certificate-authority-data, cluster-info): the CA that signs first, then during a rotation
    /// the other one (the next CA after `start`, the previous one after `switch`). Kubernetes
    /// reads every certificate of such a file; kubeadm takes the first as the CA.
    pub fn trust_pem(&self, id: &str) -> Option<String> {
        let ca = self.authority(id)?;
        let mut pem = ca.cert.pem.clone();
        for extra in self.ca_next.get(id).map(|n| n.cert.pem.as_str()).into_iter().chain(self.ca_previous.get(id).map(String::as_str)) {
            if !pem.ends_with('\n') {
                pem.push('\n');
            }
            pem.push_str(extra);
        }
        Some(pem)
    }

    /// The public keys (DER SubjectPublicKeyInfo) of CA `id`'s trust bundle, the signing CA first
    /// (join.txt pins each one's hash).
    pub fn trust_spkis(&self, id: &str) -> Vec<Vec<u8>> {
        let Some(ca) = self.authority(id) else { return Vec::new() };
        let mut out = vec![ca.key.as_ref().map(|k| k.spki_der()).unwrap_or_else(|| ca.spki_der())];
        out.extend(self.ca_next.get(id).map(|n| n.spki_der()));
        out.extend(self.ca_previous.get(id).and_then(|p| sm_spki(p)));
        out
    }

    /// The token bootstrap-kubelet.conf, kubeadm-join.yaml and the join command use at `now`.
    pub fn join_token(&self, now: OffsetDateTime) -> Option<&Token> {
        join_token(&self.tokens, now)
    }
}

fn sm_spki(pem: &str) -> Option<Vec<u8>> {
    manifest::ca_cert_spki(pem.as_bytes()).ok().map(|(d, _)| d)
}

/// The refusal of a run that would sign with a CA whose key `ca csr` made and whose signed
/// certificate was not imported yet.
fn awaiting(dir: &Path, id: &str, key: &str) -> StateError {
    let bundle = dir.parent().unwrap_or(dir);
    StateError::Refused(format!(
        "{}: the {id} key waits for its signed certificate (`kubebundle ca csr {id}` made it, and its CSR is {}); generate does not make a CA of its own for it; nothing was written\n  hint: have the CSR signed by your root, then run `kubebundle ca import {id} --cert signed.crt --chain root.crt` with this config and generate again (or remove the pending key, {}, to let generate make its own CA)",
        dir.join(key).display(),
        bundle.join(CSR_DIR).join(format!("{id}.csr")).display(),
        dir.join(key).display()
    ))
}

/// Where `kubebundle ca csr` writes its requests, inside `OUT/<clusterName>`.
pub const CSR_DIR: &str = "csr";

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// Tokens the config writes are used as they are; the others are kept from the state while they
/// are valid, and made fresh when missing or expired.
fn resolve_tokens(config: &Config, stored: Vec<Token>, clock: &Clock, report: &mut Vec<String>) -> Result<Vec<Token>, StateError> {
    if let Some((i, _)) = config.tokens.iter().enumerate().find(|(_, t)| t.expires.is_some_and(|e| e <= clock.now)) {
        return Err(StateError::Config(format!(
            "InitConfiguration.bootstrapTokens[{i}].expires is not after the run's clock ({})\n  hint: give a later time, or use ttl",
            rfc3339(clock.now)
        )));
    }
    let specs = if config.tokens.is_empty() { vec![TokenSpec::kubeadm_default()] } else { config.tokens.clone() };
    let (created, stored): (Vec<Token>, Vec<Token>) = stored.into_iter().filter(|t| !t.from_config).partition(|t| t.created);
    let mut stored = stored.into_iter();
    let mut tokens: Vec<Token> = specs
        .into_iter()
        .enumerate()
        .map(|(index, spec)| {
            let expires = spec.expires.or_else(|| (!spec.ttl.is_zero()).then(|| clock.now + spec.ttl)).map(rfc3339);
            let mut usages = spec.usages.clone();
            usages.sort();
            match &spec.token {
                Some(t) => Token {
                    token: t.clone(),
                    description: spec.description.clone(),
                    expires,
                    usages,
                    groups: spec.groups.clone(),
                    from_config: true,
                    created: false,
                },
                None => match stored.next() {
                    Some(t) if !t.expired(clock.now) && t.usages == usages && t.groups == spec.groups => {
                        report.push(format!("reused bootstrap token {} from the state", t.id()));
                        t
                    }
                    old => {
                        if let Some(o) = old {
                            report.push(format!("bootstrap token {} expired or changed: made a new one", o.id()));
                        }
                        let t = Token {
                            token: source::new_token(config.seed.as_deref(), &index.to_string()),
                            description: spec.description.clone(),
                            expires,
                            usages,
                            groups: spec.groups.clone(),
                            from_config: false,
                            created: false,
                        };
                        report.push(format!("created bootstrap token {}", t.id()));
                        t
                    }
                },
            }
        })
        .collect();
    // Tokens made with `token create` stay while they are valid.
    for t in created {
        if t.expired(clock.now) {
            report.push(format!("bootstrap token {} (from token create) expired: dropped", t.id()));
        } else if !tokens.iter().any(|o| o.id() == t.id()) {
            tokens.push(t);
        }
    }
    Ok(tokens)
}
