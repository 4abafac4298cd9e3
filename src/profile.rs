//! Profiles: where each artifact goes on a node, with which mode, for which roles.
//! Profiles are data (`profiles/*.yaml`, embedded in the binary).

use serde::Deserialize;

use crate::pki::catalog;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    pub description: String,
    pub files: Vec<ProfileFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
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
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("profile {profile}: {message}")]
    Invalid { profile: String, message: String },
}

const BUILTIN: &[(&str, &str)] = &[("kubeadm", include_str!("../profiles/kubeadm.yaml"))];

/// What an artifact id names.
#[derive(Debug, Clone, Copy)]
pub enum Artifact {
    CertPem(&'static catalog::CertEntry),
    KeyPem(&'static catalog::CertEntry),
    Kubeconfig(&'static catalog::KubeconfigEntry),
    SaKey,
    SaPub,
    EncryptionConfig,
}

pub fn artifact(id: &str) -> Option<Artifact> {
    if let Some(k) = catalog::kubeconfig(id) {
        return Some(Artifact::Kubeconfig(k));
    }
    match id {
        catalog::SA_KEY => return Some(Artifact::SaKey),
        catalog::SA_PUB => return Some(Artifact::SaPub),
        catalog::ENCRYPTION_CONFIG => return Some(Artifact::EncryptionConfig),
        _ => {}
    }
    if let Some(c) = id.strip_suffix(".crt").and_then(catalog::cert) {
        return Some(Artifact::CertPem(c));
    }
    id.strip_suffix(".key").and_then(catalog::cert).map(Artifact::KeyPem)
}

impl Profile {
    pub fn builtin(name: &str) -> Result<Profile, ProfileError> {
        let text = BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, t)| *t).ok_or_else(|| ProfileError::Invalid {
            profile: name.to_string(),
            message: format!("no such built-in profile; built-in: {}", BUILTIN.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")),
        })?;
        Self::parse(text, name)
    }

    pub fn parse(text: &str, name: &str) -> Result<Profile, ProfileError> {
        let invalid = |message: String| ProfileError::Invalid { profile: name.to_string(), message };
        let profile: Profile = serde_saphyr::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let mut paths = std::collections::BTreeMap::new();
        for f in &profile.files {
            if artifact(&f.artifact).is_none() {
                return Err(invalid(format!("unknown artifact {:?}", f.artifact)));
            }
            let p = &f.path;
            if p.starts_with('/') || p.split('/').any(|s| s == ".." || s == "." || s.is_empty()) {
                return Err(invalid(format!("{:?}: path must be relative, without '.', '..' or empty parts", f.path)));
            }
            parse_mode(&f.mode).ok_or_else(|| invalid(format!("{:?}: mode must be octal such as \"0600\"", f.mode)))?;
            for r in &f.roles {
                if !["control-plane", "etcd", "worker"].contains(&r.as_str()) {
                    return Err(invalid(format!("{:?}: unknown role {r:?}", f.artifact)));
                }
            }
            if let Some(other) = paths.insert(f.path.clone(), f.artifact.clone()) {
                return Err(invalid(format!("{:?} and {:?} both go to {:?}", other, f.artifact, f.path)));
            }
        }
        Ok(profile)
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
        let p = Profile::builtin("kubeadm").unwrap();
        assert!(p.files.iter().any(|f| f.artifact == "ca.crt"));
        // Every secret is 0600 and every certificate 0644.
        for f in &p.files {
            let mode = parse_mode(&f.mode).unwrap();
            match artifact(&f.artifact).unwrap() {
                Artifact::CertPem(_) => assert_eq!(mode, 0o644, "{}", f.artifact),
                _ => assert_eq!(mode, 0o600, "{}", f.artifact),
            }
        }
    }

    #[test]
    fn bad_paths_are_refused() {
        for path in ["/etc/x", "etc/../x", "etc//x"] {
            let text =
                format!("name: t\ndescription: t\nfiles:\n- {{artifact: ca.crt, path: \"{path}\", mode: \"0644\", roles: [worker]}}\n");
            assert!(Profile::parse(&text, "t").is_err(), "{path}");
        }
    }
}
