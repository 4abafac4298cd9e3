//! Kubernetes versions, compared by minor release (the only thing kubeadm's behaviour follows).

use std::fmt;

/// A Kubernetes release such as `v1.34.1` or `v1.24.0-alpha.1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    /// The text as written, normalised with a leading `v`.
    pub text: String,
}

impl KubeVersion {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let body = t.strip_prefix('v').unwrap_or(t);
        let core = body.split(['-', '+']).next().unwrap_or("");
        let parts: Vec<&str> = core.split('.').collect();
        let bad = || {
            format!("invalid kubernetesVersion {text:?}: expected a release such as v1.34.1 (labels such as stable-1 or latest need the network and are not supported)")
        };
        if parts.len() != 3 || parts.iter().any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
            return Err(bad());
        }
        let num = |p: &str| p.parse::<u32>().map_err(|_| bad());
        let v = KubeVersion { major: num(parts[0])?, minor: num(parts[1])?, patch: num(parts[2])?, text: format!("v{body}") };
        if v.major != 1 {
            return Err(format!("unsupported kubernetesVersion {text:?}: only 1.x releases exist"));
        }
        Ok(v)
    }

    /// True from minor release `minor` on (1.x).
    pub fn at_least(&self, minor: u32) -> bool {
        self.minor >= minor
    }
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_compares() {
        let v = KubeVersion::parse("v1.24.0-alpha.1").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 24, 0));
        assert!(v.at_least(24) && !v.at_least(25));
        assert_eq!(KubeVersion::parse("1.29.3").unwrap().text, "v1.29.3");
        for bad in ["stable-1", "latest", "v1.29", "v2.0.0", "1.x.0", ""] {
            assert!(KubeVersion::parse(bad).is_err(), "{bad}");
        }
    }
}
