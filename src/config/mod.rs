//! load → validate: the config file becomes a typed, checked `Config`.

pub mod load;
pub mod model;
pub mod problem;
pub mod raw;
pub mod tree;
pub mod validate;

use std::path::Path;

pub use model::*;
pub use problem::Problem;

/// The example used when `generate` gets no `--config`: 3 stacked control planes and 2 workers.
/// The profiles built into the binary (their files are `profiles/<name>.yaml`).
pub const BUILTIN_PROFILES: [&str; 3] = ["kubeadm", "hardway", "binary"];

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
    let read = |e: std::io::Error| ConfigError::Read { path: shown.clone(), reason: crate::util::io_words(&e) };
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

    fn with(networking: &str, nodes: &str) -> Result<Config, ConfigError> {
        let text = format!(
            "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n{networking}\n---\napiVersion: kubebundle.dev/v1alpha1\nkind: Inventory\nnodes:\n{nodes}"
        );
        load_str(&text, "x.yaml")
    }

    fn errors(r: Result<Config, ConfigError>) -> String {
        match r {
            Err(ConfigError::Invalid(p)) => p.iter().filter(|p| !p.warning).map(|p| p.to_string()).collect::<Vec<_>>().join("\n"),
            Err(e) => e.to_string(),
            Ok(_) => String::new(),
        }
    }

    #[test]
    fn service_family_follows_kube_apiserver() {
        let v6 =
            "- {name: cp1, address: \"fd00::11\", roles: [control-plane, etcd]}\n- {name: w1, address: \"fd00::21\", roles: [worker]}\n";
        let v4 = "- {name: cp1, address: 10.0.0.11, roles: [control-plane, etcd]}\n- {name: w1, address: 10.0.0.21, roles: [worker]}\n";
        // The first service subnet's family is the control planes': fine, single or dual-stack.
        for (net, nodes) in [
            ("networking: {serviceSubnet: \"fd00:10:96::/112\"}", v6),
            ("networking: {serviceSubnet: \"fd00:10:96::/112,10.96.0.0/12\", podSubnet: \"fd00:10:244::/56,10.244.0.0/16\"}", v6),
            ("networking: {serviceSubnet: \"10.96.0.0/12,fd00:10:96::/112\", podSubnet: \"10.244.0.0/16,fd00:10:244::/56\"}", v4),
            ("clusterName: c", v4),
            // Workers run no kube-apiserver.
            (
                "clusterName: c",
                "- {name: cp1, address: 10.0.0.11, roles: [control-plane, etcd]}\n- {name: w1, address: \"fd00::21\", roles: [worker]}\n",
            ),
            // An IPv4-mapped address is IPv4.
            ("clusterName: c", "- {name: cp1, address: \"::ffff:10.0.0.11\", roles: [control-plane, etcd]}\n"),
        ] {
            assert_eq!(errors(with(net, nodes)), "", "{net} {nodes}");
        }
        for (net, nodes, family) in [
            ("clusterName: c", v6, "(IPv6) but the first serviceSubnet 10.96.0.0/12 (the default) is IPv4"),
            (
                "networking: {serviceSubnet: \"10.96.0.0/12,fd00:10:96::/112\", podSubnet: \"10.244.0.0/16,fd00:10:244::/56\"}",
                v6,
                "is IPv4",
            ),
            (
                "networking: {serviceSubnet: \"fd00:10:96::/112\"}",
                v4,
                "(IPv4) but the first serviceSubnet fd00:10:96::/112 (line 3) is IPv6",
            ),
        ] {
            let e = errors(with(net, nodes));
            assert!(
                e.starts_with("x.yaml:8:") && e.contains("Inventory.nodes[0].address: control plane cp1 advertises") && e.contains(family),
                "{e}"
            );
            assert!(e.contains("kube-apiserver refuses to start"), "{e}");
        }
    }

    #[test]
    fn mapped_ipv4_is_the_ipv4_address() {
        let c = with(
            "apiServer: {certSANs: [\"::ffff:192.0.2.1\"]}",
            "- {name: cp1, address: \"::ffff:10.0.0.11\", roles: [control-plane, etcd], extraSANs: [\"::ffff:10.0.0.12\"]}\n",
        )
        .expect("valid");
        assert_eq!(c.nodes[0].address, "10.0.0.11".parse::<std::net::IpAddr>().unwrap());
        assert!(c.nodes[0].extra_sans.contains(&San::Ip("10.0.0.12".parse().unwrap())));
        assert!(c.api_server_cert_sans.contains(&San::Ip("192.0.2.1".parse().unwrap())));
        let dup = errors(with(
            "clusterName: c",
            "- {name: cp1, address: 10.0.0.11, roles: [control-plane]}\n- {name: w1, address: \"::ffff:10.0.0.11\", roles: [worker]}\n",
        ));
        assert!(dup.contains("Inventory.nodes[1].address: ::ffff:10.0.0.11 is 10.0.0.11, already the address of nodes[0]"), "{dup}");
    }

    #[test]
    fn type_errors_name_the_field_in_plain_words() {
        for (doc, want) in [
            (
                "localAPIEndpoint: {bindPort: six}",
                "x.yaml:3:30: error: InitConfiguration.localAPIEndpoint.bindPort: expected an integer 1–65535, got `six`",
            ),
            (
                "localAPIEndpoint:\n  bindPort: 70000",
                "x.yaml:4:13: error: InitConfiguration.localAPIEndpoint.bindPort: expected an integer 1–65535, got `70000`",
            ),
            (
                "bootstrapTokens:\n- token: abcdef.0123456789abcdef\n  token: abcdef.0123456789abcdee",
                "x.yaml:5:3: error: InitConfiguration.bootstrapTokens[0]: duplicate key `token` (first at line 4)",
            ),
            ("dryRun: maybe", "x.yaml:3:9: error: InitConfiguration.dryRun: expected true or false, got `maybe`"),
            ("skipPhases: addon", "x.yaml:3:13: error: InitConfiguration.skipPhases: expected a list, got `addon`"),
            ("nodeRegistration: [a]", "x.yaml:3:19: error: InitConfiguration.nodeRegistration: expected a mapping, got a list"),
            ("certificateKey: 0x1f", "x.yaml:3:17: error: InitConfiguration.certificateKey: expected a string, got `0x1f`"),
        ] {
            let text = format!("apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\n{doc}\n");
            let e = errors(load_str(&text, "x.yaml"));
            assert!(e.starts_with(want), "{doc}:\n{e}");
            for library in ["invalid type", "i64", "sequence start", "mapping start", "duplicate mapping key", "DuplicateKeyPolicy"] {
                assert!(!e.contains(library), "{doc}: library wording {library:?}: {e}");
            }
        }
    }

    #[test]
    fn v1beta4_only_fields_are_refused_in_v1beta3() {
        let text = "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\nencryptionAlgorithm: ECDSA-P256\n---\napiVersion: kubebundle.dev/v1alpha1\nkind: Inventory\nnodes:\n- {name: cp1, address: 10.0.0.1, roles: [control-plane]}\n";
        let Err(ConfigError::Invalid(p)) = load_str(text, "x.yaml") else { panic!("must fail") };
        assert!(p[0].to_string().contains("x.yaml:3:"), "{}", p[0]);
    }
}
