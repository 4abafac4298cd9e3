//! load → validate: the config file becomes a typed, checked `Config`.

pub mod load;
pub mod model;
pub mod problem;
pub mod raw;
pub mod validate;

use std::path::Path;

pub use model::*;
pub use problem::Problem;

/// The example used when `generate` gets no `--config`: 3 stacked control planes and 2 workers.
pub const DEFAULT_CONFIG: &str = include_str!("default.yaml");
pub const DEFAULT_CONFIG_NAME: &str = "<embedded default config>";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}\n  hint: check the path given to --config and its permissions")]
    Read { path: String, reason: String },
    #[error("{}", render_problems(.0, "config"))]
    Invalid(Vec<Problem>),
}

/// Problems sorted by position, then a count; `what` is "config" or "profile".
pub fn render_problems(problems: &[Problem], what: &str) -> String {
    let errors = problems.iter().filter(|p| !p.warning).count();
    let mut sorted: Vec<&Problem> = problems.iter().collect();
    sorted.sort_by_key(|p| p.position.unwrap_or((u64::MAX, 0)));
    let mut out: Vec<String> = sorted.iter().map(|p| p.to_string()).collect();
    out.push(format!("{errors} error(s) in the {what}; nothing was written"));
    out.join("\n")
}

/// Configs are a few kilobytes; anything this large is a mistake (or an attack).
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    use std::io::Read;
    let shown = path.display().to_string();
    let read = |e: std::io::Error| ConfigError::Read { path: shown.clone(), reason: e.to_string() };
    let file = std::fs::File::open(path).map_err(read)?;
    let meta = file.metadata().map_err(read)?;
    if meta.is_dir() {
        return Err(ConfigError::Read { path: shown, reason: "it is a directory, not a file".into() });
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes).map_err(read)?;
    let mut config = load_bytes(&bytes, &shown)?;
    config.base_dir = path.parent().map(Path::to_path_buf);
    Ok(config)
}

/// A problem with the file as a whole (size, encoding).
fn file_problem(name: &str, position: Option<(u64, u64)>, message: &str, hint: &str) -> ConfigError {
    ConfigError::Invalid(vec![Problem {
        file: name.to_string(),
        position,
        field: String::new(),
        message: message.to_string(),
        hint: Some(hint.to_string()),
        warning: false,
    }])
}

pub fn load_bytes(bytes: &[u8], name: &str) -> Result<Config, ConfigError> {
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(file_problem(
            name,
            None,
            &format!("the config file is larger than the limit of {MAX_CONFIG_BYTES} bytes"),
            "a cluster config is a few kilobytes: check that --config names the right file",
        ));
    }
    let utf16 = bytes.starts_with(b"\xFF\xFE") || bytes.starts_with(b"\xFE\xFF");
    let not_utf8 = |position, fallback: &str| {
        let message = if utf16 { "the file is UTF-16 text (it starts with a UTF-16 byte order mark), not UTF-8" } else { fallback };
        file_problem(name, Some(position), message, "save the config as UTF-8")
    };
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let line_of = |at: usize| bytes[..at].iter().filter(|b| **b == b'\n').count() as u64 + 1;
    if let Some(at) = bytes.iter().position(|b| *b == 0) {
        return Err(not_utf8((line_of(at), 1), "the file holds NUL bytes: it is binary or UTF-16, not UTF-8 text"));
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => load_str(text, name),
        Err(e) => {
            let at = e.valid_up_to();
            let col = bytes[..at].iter().rev().take_while(|b| **b != b'\n').count() as u64 + 1;
            Err(not_utf8((line_of(at), col), "the file is not UTF-8 text"))
        }
    }
}

pub fn load_str(text: &str, name: &str) -> Result<Config, ConfigError> {
    let mut problems = problem::Problems::new(name);
    let raw = load::load(text, &mut problems);
    let config = if problems.has_errors() { None } else { validate::validate(raw, &mut problems) };
    match config {
        Some(mut c) if !problems.has_errors() => {
            c.notes.extend(problems.list.iter().map(|p| p.to_string()));
            Ok(c)
        }
        _ => Err(ConfigError::Invalid(problems.list)),
    }
}

pub fn load_default() -> Config {
    load_str(DEFAULT_CONFIG, DEFAULT_CONFIG_NAME).expect("the embedded default config is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_loads() {
        let c = load_default();
        assert_eq!(c.nodes.len(), 5);
        assert_eq!(c.control_planes().count(), 3);
        assert!(c.nodes.iter().filter(|n| n.roles.etcd).count() == 3);
    }

    #[test]
    fn problems_have_positions() {
        let text = "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nnetworking:\n  serviceSubnet: 10.96.0.1/12\n---\napiVersion: kubebundle.dev/v1alpha1\nkind: Inventory\nnodes:\n- name: cp1\n  address: 10.0.0.1\n  roles: [control-plane]\n";
        let Err(ConfigError::Invalid(p)) = load_str(text, "x.yaml") else { panic!("must fail") };
        assert_eq!(p[0].position, Some((4, 18)), "{p:?}");
        assert!(p[0].message.contains("host bits"));
    }

    #[test]
    fn v1beta4_only_fields_are_refused_in_v1beta3() {
        let text = "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\nencryptionAlgorithm: ECDSA-P256\n---\napiVersion: kubebundle.dev/v1alpha1\nkind: Inventory\nnodes:\n- {name: cp1, address: 10.0.0.1, roles: [control-plane]}\n";
        let Err(ConfigError::Invalid(p)) = load_str(text, "x.yaml") else { panic!("must fail") };
        assert!(p[0].to_string().contains("x.yaml:3:"), "{}", p[0]);
    }
}
