//! `rotate encryption`: the encryption-at-rest key, in the Kubernetes docs' order (reference
//! lifecycle.md §6): `start` adds a new key second (the old one still encrypts; every API server
//! must be able to decrypt with the new one before any encrypts with it), `switch` moves it first
//! (it encrypts, the old one still decrypts) and says to rewrite every Secret, `finish` removes the
//! old key. `abort` after `start` removes the new key again. A new key's provider is `--provider`
//! or the Inventory's `encryptionProvider`; a provider other than the old key's gets its own entry
//! in the EncryptionConfiguration, in the same order (`materialize::encryption_config`).

use base64::Engine;

use super::{archive, manifest_of, set_manifest, Change, Material, Options, Rollout, RolloutContext, RotateError, Step};
use crate::bundle::pipeline::StateEdit;
use crate::bundle::state::manifest as sm;
use crate::bundle::state::rotations::{Rotation, Rotations};
use crate::bundle::state::{encryption_file_text, EncryptionKey, State, ENCRYPTION_FILE};

pub struct Encryption;

/// A key name never used before in this state (`key<N>`): etcd values name their key
/// (`k8s:enc:<provider>:v1:<name>:`), so a name must never come back with another secret.
fn next_name(keys: &[EncryptionKey], history: &Rotations) -> String {
    let number = |name: &str| name.strip_prefix("key").and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    let used = keys
        .iter()
        .map(|k| number(&k.name))
        .chain(history.rotations.iter().filter(|r| r.material == "encryption").flat_map(|r| [number(&r.old), number(&r.new)]))
        .max()
        .unwrap_or(0);
    format!("key{}", used + 1)
}

fn describe(k: &EncryptionKey) -> String {
    format!("{} ({})", k.name, k.provider.name())
}

fn write_keys(state: &mut State) {
    state.files.insert(ENCRYPTION_FILE, encryption_file_text(&state.encryption_keys).into_bytes(), 0o600);
}

impl Material for Encryption {
    fn id(&self) -> &'static str {
        "encryption"
    }

    fn what(&self) -> &'static str {
        "the encryption key"
    }

    fn apply(
        &self,
        step: Step,
        state: &mut State,
        open: Option<&Rotation>,
        history: &Rotations,
        opts: &Options,
    ) -> Result<Change, RotateError> {
        let mut manifest = manifest_of(state)?;
        let mut edit = StateEdit::default();
        let new_name = open.map(|r| r.new.clone()).unwrap_or_default();
        let find = |state: &State, name: &str| state.encryption_keys.iter().position(|k| k.name == name);
        let lost = |name: &str| {
            RotateError::Refused(format!(
                "state/encryption.yaml no longer holds {name}, the new key of the rotation in progress; nothing was written\n  hint: restore it from a backup (`kubebundle state restore`)"
            ))
        };
        let (old, summary) = match step {
            Step::Start => {
                let provider = opts.provider.unwrap_or(opts.config.encryption_provider);
                let name = next_name(&state.encryption_keys, history);
                let secret = crate::pki::source::new_secret32(None, &format!("encryption/{name}"));
                let key = EncryptionKey {
                    name: name.clone(),
                    secret: base64::engine::general_purpose::STANDARD.encode(secret.as_ref()),
                    provider,
                };
                manifest.record(sm::encryption_entry(&name, &key.secret, &opts.now));
                let old: Vec<String> = state.encryption_keys.iter().map(describe).collect();
                let summary = format!(
                    "added {} as the second encryption key of every control plane: {} still encrypts, both decrypt; back up state/encryption.yaml now (a lost key makes what it encrypted unreadable)",
                    describe(&key),
                    old.join(", ")
                );
                state.encryption_keys.push(key.clone());
                let old_names: Vec<String> = state.encryption_keys.iter().filter(|k| k.name != name).map(|k| k.name.clone()).collect();
                (Some((old_names.join(","), name)), summary)
            }
            Step::Switch => {
                let at = find(state, &new_name).ok_or_else(|| lost(&new_name))?;
                let key = state.encryption_keys.remove(at);
                let summary = format!(
                    "{} now encrypts (listed first); {} can still decrypt",
                    describe(&key),
                    state.encryption_keys.iter().map(describe).collect::<Vec<_>>().join(", ")
                );
                state.encryption_keys.insert(0, key);
                (None, summary)
            }
            Step::Finish | Step::Abort => {
                let keep = |k: &EncryptionKey| if step == Step::Finish { k.name == new_name } else { k.name != new_name };
                if step == Step::Finish && find(state, &new_name).is_none() {
                    return Err(lost(&new_name));
                }
                let gone: Vec<EncryptionKey> = state.encryption_keys.iter().filter(|k| !keep(k)).cloned().collect();
                state.encryption_keys.retain(keep);
                if state.encryption_keys.is_empty() {
                    return Err(RotateError::Refused(format!(
                        "rotate encryption {}: no encryption key would be left; nothing was written\n  hint: report this",
                        step.name()
                    )));
                }
                manifest.secrets.retain(|e| !gone.iter().any(|k| e.id == sm::encryption_id(&k.name)));
                archive(state, &mut edit, ENCRYPTION_FILE);
                archive(state, &mut edit, sm::MANIFEST_FILE);
                let names = gone.iter().map(describe).collect::<Vec<_>>().join(", ");
                let summary = if step == Step::Finish {
                    format!(
                        "removed {names}: {} is the only encryption key (the old one is archived, not deleted)",
                        describe(&state.encryption_keys[0])
                    )
                } else {
                    format!(
                        "removed the new key {names}: back to {} (the new key is archived, not deleted)",
                        describe(&state.encryption_keys[0])
                    )
                };
                (None, summary)
            }
        };
        write_keys(state);
        set_manifest(state, &manifest);
        let (old, new) = old.unwrap_or_default();
        Ok(Change { old, new, summary, edit })
    }

    fn may_be_lost(&self, step: Step, open: &Rotation) -> Vec<String> {
        if step == Step::Abort {
            vec![sm::encryption_id(&open.new)]
        } else {
            Vec::new()
        }
    }

    fn rollout(&self, step: Step, rotation: &Rotation, ctx: &RolloutContext) -> Rollout {
        let kubeconfig = ctx.admin_kubeconfig.as_deref().map(|k| format!(" --kubeconfig {k}")).unwrap_or_default();
        let then = match step {
            Step::Start => vec![format!(
                "once every kube-apiserver runs with the new file (each can then decrypt with {}): `{}`",
                rotation.new, ctx.again.step("switch")
            )],
            Step::Switch => vec![
                format!(
                    "once every kube-apiserver runs with the new file, rewrite every Secret so that {} encrypts it (safe to run again; split it by namespace in big clusters):\n       kubectl{kubeconfig} get secrets --all-namespaces -o json | kubectl{kubeconfig} replace -f -",
                    rotation.new
                ),
                format!("then: `{}` (it removes {} from every control plane)", ctx.again.step("finish"), rotation.old),
            ],
            Step::Finish => vec!["the rotation is finished; keep a copy of state/encryption.yaml (the new key) as safe as the CA keys".into()],
            Step::Abort => vec![format!(
                "the rotation is aborted: every kube-apiserver is back to {} alone once restarted; start again with `{}`",
                rotation.old, ctx.again.step("start")
            )],
        };
        Rollout { restart: vec!["kube-apiserver"], then }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::state::rotations::Phase;
    use crate::config::EncryptionProvider;

    fn key(name: &str, provider: EncryptionProvider) -> EncryptionKey {
        EncryptionKey { name: name.into(), secret: base64::engine::general_purpose::STANDARD.encode([7u8; 32]), provider }
    }

    #[test]
    fn a_key_name_is_never_used_twice() {
        let mut history = Rotations::default();
        assert_eq!(next_name(&[key("key1", EncryptionProvider::Aescbc)], &history), "key2");
        // key2 was made and aborted: it is in no file any more, but etcd may have seen it.
        history.rotations.push(Rotation {
            material: "encryption".into(),
            phase: Phase::Aborted,
            started: "2026-01-01T00:00:00Z".into(),
            switched: None,
            ended: Some("2026-01-01T00:00:00Z".into()),
            old: "key1".into(),
            new: "key2".into(),
            archived: None,
        });
        assert_eq!(next_name(&[key("key1", EncryptionProvider::Aescbc)], &history), "key3");
        // A name that is not key<N> counts as 0.
        assert_eq!(next_name(&[key("custom", EncryptionProvider::Aescbc)], &Rotations::default()), "key1");
    }

    #[test]
    fn providers_follow_the_keys_order() {
        let r = crate::bundle::render::Renderer::new();
        let text = crate::bundle::materialize::encryption_config(
            &r,
            &[key("key2", EncryptionProvider::Secretbox), key("key1", EncryptionProvider::Aescbc), key("key3", EncryptionProvider::Aescbc)],
        )
        .unwrap();
        let order: Vec<&str> = text.lines().filter(|l| l.starts_with("  - ") && *l != "  - secrets").map(str::trim).collect();
        assert_eq!(order, ["- secretbox:", "- aescbc:", "- identity: {}"], "{text}");
        let names: Vec<&str> = text.lines().filter_map(|l| l.trim().strip_prefix("- name: ")).collect();
        assert_eq!(names, ["\"key2\"", "\"key1\"", "\"key3\""]);
    }
}
