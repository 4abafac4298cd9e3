//! Profiles: where each artifact goes on a node, with which mode, for which roles.
//! Profiles are data: `profiles/*.yaml` embedded in the binary, or a user's own file.

use std::path::Path;

use serde::Deserialize;

use crate::config::load::parse_yaml;
use crate::config::problem::{Problem, Problems};
use crate::config::raw::S;
use crate::pki::catalog;

#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub description: String,
    pub files: Vec<ProfileFile>,
    /// The file it came from, for messages.
    pub source: String,
}

#[derive(Debug, Clone)]
pub struct ProfileFile {
    /// `<cert id>.crt`, `<cert id>.key`, a kubeconfig id (`admin.conf`), `sa.key`, `sa.pub`
    /// or `encryption-config`.
    pub artifact: String,
    /// Relative to the node's root. `{pki}` is certificatesDir without the leading slash,
    /// `{node}` the node's name.
    pub path: String,
    /// Octal, as a string ("0600").
    pub mode: String,
    pub roles: Vec<String>,
    /// Line and column of `path` in the profile file.
    pub position: Option<(u64, u64)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: S<String>,
    #[serde(default)]
    description: String,
    files: Vec<S<RawFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    artifact: S<String>,
    path: S<String>,
    mode: S<String>,
    roles: Vec<S<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(
        "cannot read profile {path}: {reason}\n  hint: Inventory.profile names a built-in profile or a file relative to the config file"
    )]
    Read { path: String, reason: String },
    #[error("{}", crate::config::render_problems(.0, "profile"))]
    Invalid(Vec<Problem>),
}

pub const BUILTIN: &[(&str, &str)] = &[
    ("kubeadm", include_str!("../../profiles/kubeadm.yaml")),
    ("hardway", include_str!("../../profiles/hardway.yaml")),
    ("binary", include_str!("../../profiles/binary.yaml")),
];

pub fn is_builtin(name: &str) -> bool {
    crate::config::BUILTIN_PROFILES.contains(&name)
}

/// What an artifact id names.
#[derive(Debug, Clone, Copy)]
pub enum Artifact {
    CertPem(&'static catalog::CertEntry),
    KeyPem(&'static catalog::CertEntry),
    Kubeconfig(&'static catalog::KubeconfigEntry),
    SaKey,
    SaPub,
    /// A rotation's extra service-account public key (see `catalog::SA_NEXT_PUB`).
    SaNextPub,
    SaPreviousPub,
    /// The cluster CA alone, for the controller-manager, during a CA rotation (see
    /// `catalog::CLUSTER_SIGNING_CA`).
    ClusterSigningCa,
    EncryptionConfig,
    Rendered(&'static catalog::RenderedEntry),
}

impl Artifact {
    /// Written 0600 and kept from nodes that do not need it: everything but certificates and
    /// rendered files without a token.
    pub fn is_secret(self) -> bool {
        match self {
            Artifact::CertPem(_) | Artifact::ClusterSigningCa => false,
            Artifact::Rendered(r) => r.secret(),
            _ => true,
        }
    }
}

pub fn artifact(id: &str) -> Option<Artifact> {
    if let Some(k) = catalog::kubeconfig(id) {
        return Some(Artifact::Kubeconfig(k));
    }
    if let Some(r) = catalog::rendered(id) {
        return Some(Artifact::Rendered(r));
    }
    match id {
        catalog::SA_KEY => return Some(Artifact::SaKey),
        catalog::SA_PUB => return Some(Artifact::SaPub),
        catalog::SA_NEXT_PUB => return Some(Artifact::SaNextPub),
        catalog::SA_PREVIOUS_PUB => return Some(Artifact::SaPreviousPub),
        catalog::ENCRYPTION_CONFIG => return Some(Artifact::EncryptionConfig),
        catalog::CLUSTER_SIGNING_CA => return Some(Artifact::ClusterSigningCa),
        _ => {}
    }
    if let Some(c) = id.strip_suffix(".crt").and_then(catalog::cert) {
        return Some(Artifact::CertPem(c));
    }
    id.strip_suffix(".key").and_then(catalog::cert).map(Artifact::KeyPem)
}

/// Every artifact id a profile may name, for "did you mean" hints.
fn artifact_ids() -> Vec<String> {
    let mut ids: Vec<String> = catalog::CERTS.iter().flat_map(|c| [format!("{}.crt", c.id), format!("{}.key", c.id)]).collect();
    ids.extend(catalog::KUBECONFIGS.iter().map(|k| k.id.to_string()));
    ids.extend(
        [
            catalog::SA_KEY,
            catalog::SA_PUB,
            catalog::SA_NEXT_PUB,
            catalog::SA_PREVIOUS_PUB,
            catalog::ENCRYPTION_CONFIG,
            catalog::CLUSTER_SIGNING_CA,
        ]
        .map(String::from),
    );
    ids.extend(catalog::RENDERED.iter().map(|r| r.id.to_string()));
    ids
}

const ROLES: [&str; 3] = ["control-plane", "etcd", "worker"];

impl Profile {
    pub fn builtin(name: &str) -> Result<Profile, ProfileError> {
        match BUILTIN.iter().find(|(n, _)| *n == name) {
            Some((_, text)) => Self::parse(text, &format!("<built-in profile {name}>")),
            None => Err(ProfileError::Read { path: name.to_string(), reason: "no such built-in profile".into() }),
        }
    }

    /// A built-in name, or a file path relative to `base` (the config file's directory).
    pub fn load(name: &str, base: Option<&Path>) -> Result<Profile, ProfileError> {
        if is_builtin(name) {
            return Self::builtin(name);
        }
        let path = base.map(|b| b.join(name)).unwrap_or_else(|| Path::new(name).to_path_buf());
        let shown = path.display().to_string();
        let text =
            std::fs::read_to_string(&path).map_err(|e| ProfileError::Read { path: shown.clone(), reason: crate::util::io_words(&e) })?;
        Self::parse(&text, &shown)
    }

    /// Parses and checks a profile; every problem names the file, line and column.
    pub fn parse(text: &str, file: &str) -> Result<Profile, ProfileError> {
        let mut p = Problems::new(file);
        let Some(raw) = parse_yaml::<RawProfile>(text, &mut p, "profile") else { return Err(ProfileError::Invalid(p.list)) };
        let mut paths: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
        let ids = artifact_ids();
        for (i, f) in raw.files.iter().enumerate() {
            let f = &f.value;
            let field = |x: &str| format!("files[{i}].{x}");
            if artifact(&f.artifact.value).is_none() {
                let hint = crate::config::load::close_match(&f.artifact.value, ids.iter().map(String::as_str))
                    .map(|m| format!("did you mean `{m}`?"));
                p.error(
                    Some(&f.artifact.referenced),
                    &field("artifact"),
                    format!("unknown artifact {:?}", f.artifact.value),
                    hint.as_deref(),
                );
            }
            let path = &f.path.value;
            if path.starts_with('/') || path.split('/').any(|s| s == ".." || s == "." || s.is_empty()) {
                p.error(
                    Some(&f.path.referenced),
                    &field("path"),
                    format!("{path:?} must be relative, without '.', '..' or empty parts"),
                    Some("paths are relative to the node's root, e.g. etc/kubernetes/pki/ca.crt or {pki}/ca.crt"),
                );
            } else if let Some(c) = path.chars().find(|c| !(c.is_ascii_alphanumeric() || "._-+@{}/".contains(*c))) {
                p.error(
                    Some(&f.path.referenced),
                    &field("path"),
                    format!("{path:?} holds {c:?}"),
                    Some("paths go into unit flags and configs unquoted: use letters, digits and . _ - + @ / and the {pki} and {node} placeholders"),
                );
            } else if let Some(other) = paths.insert(path.clone(), f.artifact.value.clone()) {
                p.error(
                    Some(&f.path.referenced),
                    &field("path"),
                    format!("{other:?} and {:?} both go to {path:?}", f.artifact.value),
                    Some("give each artifact its own path"),
                );
            }
            if parse_mode(&f.mode.value).is_none() {
                p.error(
                    Some(&f.mode.referenced),
                    &field("mode"),
                    format!("{:?} is not an octal mode such as \"0600\"", f.mode.value),
                    None,
                );
            }
            if f.roles.is_empty() {
                p.error(
                    Some(&f.path.referenced),
                    &field("roles"),
                    "no roles",
                    Some("list the roles that receive the file: control-plane, etcd, worker"),
                );
            }
            for r in &f.roles {
                if !ROLES.contains(&r.value.as_str()) {
                    p.error(
                        Some(&r.referenced),
                        &field("roles"),
                        format!("unknown role {:?}", r.value),
                        Some("roles are control-plane, etcd and worker"),
                    );
                }
            }
        }
        // One path per artifact on any node: templates look an artifact's path up by its id.
        for (i, f) in raw.files.iter().enumerate() {
            let f = &f.value;
            let earlier = raw.files[..i].iter().position(|g| {
                g.value.artifact.value == f.artifact.value && g.value.roles.iter().any(|r| f.roles.iter().any(|q| q.value == r.value))
            });
            if let Some(j) = earlier {
                p.error(
                    Some(&f.artifact.referenced),
                    &format!("files[{i}].artifact"),
                    format!("{:?} is already placed by files[{j}] for some of the same roles", f.artifact.value),
                    Some("a node gets each artifact at one path; give the two lines disjoint roles"),
                );
            }
        }
        // A file may not sit where another file needs a directory.
        for path in paths.keys() {
            let mut dir = path.as_str();
            while let Some((parent, _)) = dir.rsplit_once('/') {
                if let Some(other) = paths.get(parent) {
                    let at = raw.files.iter().position(|f| &f.value.path.value == path).unwrap_or(0);
                    let loc = raw.files.get(at).map(|f| &f.value.path.referenced);
                    p.error(
                        loc,
                        &format!("files[{at}].path"),
                        format!("{path:?} needs {parent:?} to be a directory, but {other:?} goes there"),
                        None,
                    );
                }
                dir = parent;
            }
        }
        if p.has_errors() {
            return Err(ProfileError::Invalid(p.list));
        }
        let files = raw
            .files
            .into_iter()
            .map(|f| {
                let f = f.value;
                let position = p.position(&f.path.referenced);
                ProfileFile {
                    artifact: f.artifact.value,
                    path: f.path.value,
                    mode: f.mode.value,
                    roles: f.roles.into_iter().map(|r| r.value).collect(),
                    position,
                }
            })
            .collect();
        Ok(Profile { name: raw.name.value, description: raw.description, files, source: file.to_string() })
    }

    /// Paths must stay distinct once `{pki}` is replaced by certificatesDir (e.g.
    /// `{pki}/ca.crt` and `etc/kubernetes/pki/ca.crt` are the same file).
    pub fn check_expanded(&self, pki: &str) -> Result<(), ProfileError> {
        let mut seen: std::collections::BTreeMap<String, &ProfileFile> = std::collections::BTreeMap::new();
        let mut problems = Vec::new();
        for (i, f) in self.files.iter().enumerate() {
            let path = f.path.replace("{pki}", pki);
            if let Some(other) = seen.insert(path.clone(), f) {
                problems.push(Problem {
                    file: self.source.clone(),
                    position: f.position,
                    field: format!("files[{i}].path"),
                    message: format!("{:?} and {:?} both go to {path:?} (certificatesDir is /{pki})", other.artifact, f.artifact),
                    hint: Some("give each artifact its own path".into()),
                    warning: false,
                });
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ProfileError::Invalid(problems))
        }
    }
}

pub fn parse_mode(text: &str) -> Option<u32> {
    u32::from_str_radix(text, 8).ok().filter(|m| *m <= 0o777)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_profiles_parse() {
        let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, crate::config::BUILTIN_PROFILES, "the config's list of built-in profiles is this one");
        for (name, _) in BUILTIN {
            let p = Profile::builtin(name).unwrap();
            assert!(p.files.iter().any(|f| f.artifact == "ca.crt"));
            // Every secret is 0600, every certificate and rendered file without a secret 0644.
            for f in &p.files {
                let mode = parse_mode(&f.mode).unwrap();
                let secret = artifact(&f.artifact).unwrap().is_secret();
                assert_eq!(mode, if secret { 0o600 } else { 0o644 }, "{name}: {}", f.artifact);
            }
        }
    }

    #[test]
    fn bad_profiles_are_refused_with_positions() {
        for (path, expect) in [("/etc/x", "must be relative"), ("etc/../x", "must be relative"), ("etc//x", "must be relative")] {
            let text = format!("name: t\nfiles:\n- {{artifact: ca.crt, path: \"{path}\", mode: \"0644\", roles: [worker]}}\n");
            let Err(ProfileError::Invalid(p)) = Profile::parse(&text, "t.yaml") else { panic!("{path} must fail") };
            assert!(p[0].message.contains(expect), "{}", p[0]);
            assert_eq!(p[0].position.map(|(l, _)| l), Some(3));
        }
        let text = "name: t\nfiles:\n- {artifact: ca.crt, path: a/b, mode: \"0644\", roles: [worker]}\n- {artifact: ca.ky, path: a/b, mode: \"0644\", roles: [worker]}\n";
        let Err(ProfileError::Invalid(p)) = Profile::parse(text, "t.yaml") else { panic!("must fail") };
        let all: String = p.iter().map(|x| x.to_string()).collect();
        assert!(all.contains("both go to") && all.contains("did you mean `ca.key`?"), "{all}");
    }
}
