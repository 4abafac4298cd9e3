//! minijinja over the embedded `templates/`. Undefined variables are errors, nothing is
//! auto-escaped, and the `quote` filter writes a string as a JSON string, which YAML reads as
//! the same string (so values such as "yes" or "on" never turn into booleans); `scalar` writes
//! it as go-yaml would (plain where YAML allows, quoted where it must), for kubeconfigs.

use base64::Engine;
use minijinja::{Environment, State, UndefinedBehavior, Value};
use serde::Serialize;

const TEMPLATES: &[(&str, &str)] = &[
    ("kubeconfig.yaml", include_str!("../../templates/kubeconfig.yaml")),
    ("encryption-config.yaml", include_str!("../../templates/encryption-config.yaml")),
    ("bootstrap-token-secret.yaml", include_str!("../../templates/bootstrap-token-secret.yaml")),
    ("join.txt", include_str!("../../templates/join.txt")),
    ("cluster-info.yaml", include_str!("../../templates/cluster-info.yaml")),
    ("cluster-info-kubeconfig.yaml", include_str!("../../templates/cluster-info-kubeconfig.yaml")),
    ("rbac.yaml", include_str!("../../templates/rbac.yaml")),
    ("kubeadm-config.yaml", include_str!("../../templates/kubeadm-config.yaml")),
    ("cluster-configuration.yaml", include_str!("../../templates/cluster-configuration.yaml")),
    ("kubelet-config-map.yaml", include_str!("../../templates/kubelet-config-map.yaml")),
    ("kubelet-configuration.yaml", include_str!("../../templates/kubelet-configuration.yaml")),
    ("kubeadm-init.yaml", include_str!("../../templates/kubeadm-init.yaml")),
    ("kubeadm-join.yaml", include_str!("../../templates/kubeadm-join.yaml")),
    ("kube-apiserver-patch.yaml", include_str!("../../templates/kube-apiserver-patch.yaml")),
    ("kube-controller-manager-patch.yaml", include_str!("../../templates/kube-controller-manager-patch.yaml")),
    ("units/etcd.service", include_str!("../../templates/units/etcd.service")),
    ("units/kube-apiserver.service", include_str!("../../templates/units/kube-apiserver.service")),
    ("units/kube-controller-manager.service", include_str!("../../templates/units/kube-controller-manager.service")),
    ("units/kube-scheduler.service", include_str!("../../templates/units/kube-scheduler.service")),
    ("units/kubelet.service", include_str!("../../templates/units/kubelet.service")),
    ("units/kube-proxy.service", include_str!("../../templates/units/kube-proxy.service")),
    ("kube-proxy-configuration.yaml", include_str!("../../templates/kube-proxy-configuration.yaml")),
];

/// `paths` / `layout` of a node's context: artifact id → absolute path.
fn lookup(state: &State, map: &str, id: &str) -> Option<String> {
    let v = state.lookup(map)?.get_item(&Value::from(id)).ok()?;
    v.as_str().map(str::to_string)
}

fn missing(id: &str, what: &str) -> minijinja::Error {
    minijinja::Error::new(
        minijinja::ErrorKind::InvalidOperation,
        format!("the profile {what} {id:?} for this node's roles; add a line for it to the profile"),
    )
}

#[derive(Debug, thiserror::Error)]
#[error("template {template}: {message}")]
pub struct RenderError {
    pub template: String,
    pub message: String,
}

pub struct Renderer {
    env: Environment<'static>,
}

impl Renderer {
    pub fn new() -> Renderer {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.set_syntax(minijinja::syntax::SyntaxConfig::builder().keep_trailing_newline(true).build().expect("valid syntax config"));
        env.add_filter("quote", |v: String| serde_json::to_string(&v).unwrap_or_default());
        env.add_filter("scalar", |v: String| crate::util::text::yaml_scalar(&v));
        env.add_filter("b64", |v: String| base64::engine::general_purpose::STANDARD.encode(v.as_bytes()));
        // Node files name other files by artifact id: `path(id)` is where this node has it (an
        // error when it has none), `has(id)` whether it has it, `layout_path(id)` where the
        // profile puts it for the node's roles even when this node does not get it (a kubelet
        // writes its own kubeconfig there after TLS bootstrap).
        env.add_function("path", |state: &State, id: String| lookup(state, "paths", &id).ok_or_else(|| missing(&id, "places no")));
        env.add_function("has", |state: &State, id: String| lookup(state, "paths", &id).is_some());
        env.add_function("layout_path", |state: &State, id: String| {
            lookup(state, "layout", &id).ok_or_else(|| missing(&id, "gives no path to"))
        });
        env.add_function("dir_of", |p: String| {
            p.rsplit_once('/').map(|(d, _)| if d.is_empty() { "/".to_string() } else { d.to_string() }).unwrap_or(p)
        });
        for (name, text) in TEMPLATES {
            env.add_template(name, text).expect("embedded templates parse");
        }
        Renderer { env }
    }

    pub fn render(&self, template: &str, ctx: impl Serialize) -> Result<String, RenderError> {
        let err = |e: minijinja::Error| {
            // Our own functions' refusals (`path`, `layout_path`) in their words, without
            // minijinja's "invalid operation:" prefix.
            let message = match (e.kind(), e.detail()) {
                (minijinja::ErrorKind::InvalidOperation, Some(detail)) => match (e.name(), e.line()) {
                    (Some(name), Some(line)) => format!("{detail} (in {name}:{line})"),
                    _ => detail.to_string(),
                },
                _ => e.to_string(),
            };
            RenderError { template: template.to_string(), message }
        };
        self.env.get_template(template).map_err(err)?.render(minijinja::Value::from(minijinja::value::Serde(ctx))).map_err(err)
    }
}

impl Default for Renderer {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undefined_is_an_error_and_quote_protects_booleans() {
        let r = Renderer::new();
        assert!(r.render("join.txt", minijinja::context! {}).is_err());
        let out = r
            .render(
                "kubeconfig.yaml",
                minijinja::context! { cluster_name => "yes", server => "https://a:6443", ca_data => "QQ==", user => "on", token => "", client_certificate_data => "x", client_key_data => "y" },
            )
            .unwrap();
        // `scalar` quotes what plain YAML would read as a boolean, and only that.
        assert!(out.contains("  name: \"yes\"\n"), "{out}");
        assert!(out.contains("- name: \"on\"\n"), "{out}");
        assert!(out.contains("current-context: on@yes\n"), "{out}");
        assert!(out.contains("    server: https://a:6443\n"), "{out}");
    }
}
