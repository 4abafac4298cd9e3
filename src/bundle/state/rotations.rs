//! `state/rotations.yaml`: the phase of each rotation (`kubebundle rotate`), kept in the state so
//! that every run renders the bundle of the phase the state is in (`generate` during an open
//! rotation packs that phase's files), `certs check-expiration` and `rotate status` can say what
//! is in progress, and a phase out of order is refused. The in-between material itself (a second
//! encryption key, `pki/sa-next.key`, `pki/sa-previous.pub`) is recorded in the manifest like any
//! other secret, so the state check treats it as recorded, never as changed.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::files::{bad, read_opt, StateError};

pub const ROTATIONS_FILE: &str = "rotations.yaml";

const HEADER: &str = "\
# kubebundle rotations: the phase of every rotation this state went through (`kubebundle rotate`).
# Written by kubebundle: do not edit (see the README, \"Rotation\").
";

/// Where a rotation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// `start`: the new material is accepted (trusted, decrypts, verifies); the old one still
    /// signs or encrypts.
    Started,
    /// `switch`: the new material signs or encrypts; the old one is still accepted.
    Switched,
    /// `finish`: the old material is gone (archived in a backup beside the bundle).
    Finished,
    /// `abort` after `start`: back to the old material; the new one archived.
    Aborted,
}

impl Phase {
    pub fn is_open(self) -> bool {
        matches!(self, Phase::Started | Phase::Switched)
    }

    pub fn name(self) -> &'static str {
        match self {
            Phase::Started => "started",
            Phase::Switched => "switched",
            Phase::Finished => "finished",
            Phase::Aborted => "aborted",
        }
    }
}

/// One rotation of one material.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rotation {
    /// `encryption`, `sa` (a CA rotation: its CA id).
    pub material: String,
    pub phase: Phase,
    /// RFC 3339 times of each phase.
    pub started: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switched: Option<String>,
    /// When it finished or was aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
    /// What is replaced and what replaces it, for people and for the material's phases: the
    /// encryption keys' names; the service-account keys' public-key SHA-256.
    pub old: String,
    pub new: String,
    /// Where the old (finish) or new (abort) material was archived, relative to the bundle's parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived: Option<String>,
}

impl Rotation {
    /// When it entered its current phase.
    pub fn since(&self) -> &str {
        match self.phase {
            Phase::Started => &self.started,
            Phase::Switched => self.switched.as_deref().unwrap_or(&self.started),
            _ => self.ended.as_deref().unwrap_or(&self.started),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotations {
    pub rotations: Vec<Rotation>,
}

impl Rotations {
    /// The rotation of `material` in progress, if any.
    pub fn open(&self, material: &str) -> Option<&Rotation> {
        self.rotations.iter().rev().find(|r| r.material == material && r.phase.is_open())
    }

    pub fn open_mut(&mut self, material: &str) -> Option<&mut Rotation> {
        self.rotations.iter_mut().rev().find(|r| r.material == material && r.phase.is_open())
    }

    /// The last rotation of `material`, open or not.
    pub fn last(&self, material: &str) -> Option<&Rotation> {
        self.rotations.iter().rev().find(|r| r.material == material)
    }

    /// Every rotation in progress.
    pub fn in_progress(&self) -> impl Iterator<Item = &Rotation> {
        self.rotations.iter().filter(|r| r.phase.is_open())
    }

    pub fn text(&self) -> String {
        format!("{HEADER}{}", serde_saphyr::to_string(self).unwrap_or_default())
    }
}

/// The state's rotations (none when it has no rotations.yaml).
pub fn read(state_dir: &Path) -> Result<Rotations, StateError> {
    match read_opt(state_dir, ROTATIONS_FILE)? {
        None => Ok(Rotations::default()),
        Some(text) => serde_saphyr::from_str(&text).map_err(|e| {
            bad(
                state_dir,
                ROTATIONS_FILE,
                format!("it does not parse: {}", e.to_string().lines().next().unwrap_or_default()),
                "restore it from a backup (kubebundle-backup-*/state/rotations.yaml): it says which phase each rotation is in",
            )
        }),
    }
}

/// The rotations in progress in a bundle's state, one line each (`certs check-expiration`).
pub fn in_progress(state_dir: &Path) -> Vec<String> {
    let Ok(history) = read(state_dir) else { return Vec::new() };
    history
        .in_progress()
        .map(|r| {
            let ca = super::manifest::CA_IDS.contains(&r.material.as_str());
            let command = if ca { format!("ca {}", r.material) } else { r.material.clone() };
            let old = if ca { "the old CA is still trusted" } else { "the old key is still in use" };
            format!(
                "rotation in progress: {} {} since {} ({} → {}): {old} until `kubebundle rotate {command} finish`; `kubebundle rotate status` shows every rotation",
                r.material,
                r.phase.name(),
                r.since(),
                r.old,
                r.new,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotations_round_trip_and_find_the_open_one() {
        let mut r = Rotations::default();
        let mut one = Rotation {
            material: "encryption".into(),
            phase: Phase::Finished,
            started: "2026-01-01T00:00:00Z".into(),
            switched: Some("2026-01-02T00:00:00Z".into()),
            ended: Some("2026-01-03T00:00:00Z".into()),
            old: "key1".into(),
            new: "key2".into(),
            archived: None,
        };
        r.rotations.push(one.clone());
        one.phase = Phase::Started;
        one.old = "key2".into();
        one.new = "key3".into();
        r.rotations.push(one);
        let back: Rotations = serde_saphyr::from_str(&r.text()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.open("encryption").unwrap().new, "key3");
        assert!(back.open("sa").is_none());
        assert_eq!(back.last("encryption").unwrap().since(), "2026-01-01T00:00:00Z");
    }
}
