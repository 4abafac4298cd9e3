//! `rotate sa`: the service-account signing key, in three slots like kops's (reference
//! lifecycle.md §5). `start` makes the next key (`state/pki/sa-next.key`): every API server
//! verifies tokens with the current and the next public key (`sa-next.pub`, a second
//! `--service-account-key-file`), and nothing signs with it yet, so in HA every API server
//! accepts its tokens before any issues one. `switch` makes it the signing key (`sa.key`/`sa.pub`
//! hold it: `--service-account-signing-key-file` and the controller-manager's
//! `--service-account-private-key-file` name them) and keeps the old public key as
//! `sa-previous.pub`, still accepted. `finish` drops the old public key once the tokens it signed
//! have been replaced. The paths and flags come from the profiles and the units' templates.

use super::{archive, manifest_of, set_manifest, Change, Material, Options, Rollout, RolloutContext, RotateError, Step};
use crate::bundle::pipeline::StateEdit;
use crate::bundle::state::manifest as sm;
use crate::bundle::state::rotations::{Rotation, Rotations};
use crate::bundle::state::State;

pub struct ServiceAccount;

/// How long after `switch` every pod's projected token was signed by the new key: the kubelet
/// refreshes a token at 80% of the 3607 s the admission plugin requests (lifecycle.md §5).
const TOKEN_TURNOVER: time::Duration = time::Duration::hours(1);

/// The short digest of a public key, how the rotation names its keys.
fn short(spki: &[u8]) -> String {
    format!("sha256:{}", &sm::sha256_hex(spki)[..16])
}

fn drop_file(state: &mut State, edit: &mut StateEdit, rel: &str) {
    archive(state, edit, rel);
    state.files.0.remove(rel);
    edit.remove.push(rel.to_string());
}

impl Material for ServiceAccount {
    fn id(&self) -> &'static str {
        "sa"
    }

    fn what(&self) -> &'static str {
        "the service-account key"
    }

    fn apply(
        &self,
        step: Step,
        state: &mut State,
        open: Option<&Rotation>,
        _history: &Rotations,
        opts: &Options,
    ) -> Result<Change, RotateError> {
        let mut manifest = manifest_of(state)?;
        let mut edit = StateEdit::default();
        let lost = |what: &str| {
            RotateError::Refused(format!(
                "the state no longer holds {what} of the rotation in progress; nothing was written\n  hint: restore it from a backup (`kubebundle state restore`)"
            ))
        };
        let mut ids = (String::new(), String::new());
        let summary = match step {
            Step::Start => {
                let key =
                    crate::pki::source::new_key(None, opts.config.algorithm, "sa-next").map_err(crate::bundle::state::StateError::from)?;
                let pem = key.private_pem().as_bytes().to_vec();
                manifest.record(sm::key_entry("sa-next", sm::SA_NEXT_KEY, &pem, &key.spki_der(), &opts.now));
                state.files.insert(sm::SA_NEXT_KEY, pem, 0o600);
                ids = (short(&state.sa.spki_der()), short(&key.spki_der()));
                let summary = format!(
                    "made the next service-account key {} ({}): every kube-apiserver now also accepts its tokens (sa-next.pub); {} still signs",
                    ids.1,
                    opts.config.algorithm.name(),
                    ids.0
                );
                state.sa_next = Some(key);
                summary
            }
            Step::Switch => {
                let next = state.sa_next.take().ok_or_else(|| lost("pki/sa-next.key"))?;
                let old = std::mem::replace(&mut state.sa, next);
                archive(state, &mut edit, sm::SA_KEY);
                archive(state, &mut edit, sm::SA_PUB);
                archive(state, &mut edit, sm::MANIFEST_FILE);
                drop_file(state, &mut edit, sm::SA_NEXT_KEY);
                let previous = old.public_pem();
                state.files.insert(sm::SA_PREVIOUS_PUB, previous.clone().into_bytes(), 0o600);
                state.files.insert(sm::SA_KEY, state.sa.private_pem().as_bytes().to_vec(), 0o600);
                state.files.insert(sm::SA_PUB, state.sa.public_pem().into_bytes(), 0o600);
                state.sa_previous = Some(previous);
                manifest.secrets.retain(|e| e.id != "sa" && e.id != "sa-next");
                manifest.record(sm::key_entry("sa", sm::SA_KEY, state.sa.private_pem().as_bytes(), &state.sa.spki_der(), &opts.now));
                manifest.record(sm::public_entry("sa-previous", sm::SA_PREVIOUS_PUB, &old.spki_der(), &opts.now));
                format!(
                    "{} now signs every new service-account token (sa.key, sa.pub); the old key {} is still accepted (sa-previous.pub) and archived",
                    short(&state.sa.spki_der()),
                    short(&old.spki_der())
                )
            }
            Step::Finish => {
                state.sa_previous.take().ok_or_else(|| lost("pki/sa-previous.pub"))?;
                archive(state, &mut edit, sm::MANIFEST_FILE);
                drop_file(state, &mut edit, sm::SA_PREVIOUS_PUB);
                manifest.secrets.retain(|e| e.id != "sa-previous");
                format!(
                    "dropped the old public key {}: only {} signs and verifies service-account tokens",
                    open.map(|r| r.old.as_str()).unwrap_or_default(),
                    short(&state.sa.spki_der())
                )
            }
            Step::Abort => {
                let next = state.sa_next.take();
                archive(state, &mut edit, sm::MANIFEST_FILE);
                drop_file(state, &mut edit, sm::SA_NEXT_KEY);
                manifest.secrets.retain(|e| e.id != "sa-next");
                let what = match next {
                    Some(k) => format!("dropped the next key {} (archived, not deleted)", short(&k.spki_der())),
                    None => format!(
                        "dropped the next key {} (the state had lost it: nothing signed with it)",
                        open.map(|r| r.new.as_str()).unwrap_or_default()
                    ),
                };
                format!("{what}: {} alone signs and verifies again", short(&state.sa.spki_der()))
            }
        };
        set_manifest(state, &manifest);
        Ok(Change { old: ids.0, new: ids.1, summary, edit })
    }

    fn may_be_lost(&self, step: Step, _open: &Rotation) -> Vec<String> {
        if step == Step::Abort {
            vec!["sa-next".into()]
        } else {
            Vec::new()
        }
    }

    fn rollout(&self, step: Step, rotation: &Rotation, ctx: &RolloutContext) -> Rollout {
        match step {
            Step::Start => Rollout {
                restart: vec!["kube-apiserver"],
                then: vec![format!(
                    "once every kube-apiserver accepts the new key (all of them restarted): `{}`",
                    ctx.again.step("switch")
                )],
            },
            Step::Switch => Rollout {
                // The API servers sign with the new key; the controller-manager signs legacy
                // Secret-based tokens with it.
                restart: vec!["kube-apiserver", "kube-controller-manager"],
                then: vec![
                    format!(
                        "wait until every token signed by {} has been replaced before `{}`: pods' projected tokens are refreshed by their kubelet within about 1 hour (80% of the 3607 s the admission plugin requests) and 24 hours at most; a token requested with a longer expirationSeconds (up to --service-account-max-token-expiration), a JWT a client cached (extended tokens are valid for up to a year) and legacy Secret-based tokens (they never expire: delete their Secrets so the controller-manager makes new ones) only stop working at finish. `kubectl get --raw /metrics | grep serviceaccount_stale_tokens_total` shows old tokens still in use",
                        rotation.old, ctx.again.step("finish")
                    ),
                ],
            },
            Step::Finish => {
                let parse = |t: &Option<String>| {
                    t.as_deref().and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
                };
                let waited = parse(&rotation.switched).zip(parse(&rotation.ended)).map(|(s, e)| e - s);
                let mut then = vec![format!(
                    "the rotation is finished: once every kube-apiserver restarted, tokens signed by {} are refused",
                    rotation.old
                )];
                if let Some(w) = waited.filter(|w| *w < TOKEN_TURNOVER) {
                    then.push(format!(
                        "WARNING: switch was only {} min ago ({}): pods' projected tokens turn over within about 1 hour of it, so roll this phase out after {} (it takes effect when kube-apiserver restarts); before that, a pod whose kubelet has not refreshed its token yet is refused until it does",
                        w.whole_minutes(),
                        rotation.switched.as_deref().unwrap_or_default(),
                        parse(&rotation.switched).map(|s| crate::clock::rfc3339(s + TOKEN_TURNOVER)).unwrap_or_default(),
                    ));
                }
                Rollout { restart: vec!["kube-apiserver"], then }
            }
            Step::Abort => Rollout {
                restart: vec!["kube-apiserver"],
                then: vec![format!("the rotation is aborted; start again with `{}`", ctx.again.step("start"))],
            },
        }
    }
}
