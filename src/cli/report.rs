//! `-o text|json` of `generate`, `verify` and `token list`: one flag, one renderer
//! (`util::report::json`: `apiVersion`, `kind`, then the report), JSON alone on standard output.
//! Progress, notes and warnings stay on standard error in both formats, and no secret is in a
//! report unless its command was asked for it (`--print-join-command`, `--show-token`).

use clap::{Args, ValueEnum};
use serde::Serialize;

use super::CliError;
use crate::bundle::output::ListedFile;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// For people (the default).
    Text,
    /// One JSON object on standard output (README "Machine-readable output" documents its schema).
    Json,
}

#[derive(Args)]
pub struct OutputArg {
    /// Output format: text, or json (one JSON object on standard output, its schema in README
    /// "Machine-readable output"; progress and warnings stay on standard error).
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    pub output: OutputFormat,
}

impl OutputArg {
    pub fn json(&self) -> bool {
        self.output == OutputFormat::Json
    }
}

/// `body` as the JSON report of kind `kind`.
pub fn json<T: Serialize>(kind: &str, body: &T) -> Result<String, CliError> {
    crate::util::report::json(kind, body).map_err(|e| CliError::Other(format!("cannot render the JSON report: {e}")))
}

/// `kind` of `generate -o json`.
pub const GENERATE_KIND: &str = "GenerateReport";

/// `generate -o json`: what the run wrote, kept and removed, and what it asks of the operator.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateReport {
    /// OUT/<clusterName>, as given.
    pub bundle: String,
    pub cluster_name: String,
    /// The run's clock (RFC 3339, UTC).
    pub now: String,
    /// The nodes packed, in the Inventory's order.
    pub nodes: Vec<String>,
    /// `sha256:<hex>` of the cluster CA's public key; `""` while certificates wait for their signer.
    pub discovery_hash: String,
    pub written: Vec<ListedFile>,
    pub kept: Vec<ListedFile>,
    pub removed: Vec<ListedFile>,
    pub removed_nodes: Vec<RemovedNode>,
    pub certificates: Certificates,
    /// External-CA mode: leaf certificates waiting for their signer (their CSRs are in `written`).
    pub awaiting_signed_certificates: usize,
    /// What standard error said besides progress: state changes, warnings and notes.
    pub messages: Vec<String>,
    /// What to do on the running cluster (etcd members to add or remove, a new init node).
    pub steps: Vec<String>,
    /// Only with `--print-join-command`: they hold the join token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join_commands: Option<JoinCommands>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RemovedNode {
    pub name: String,
    /// Where its tarball (and tree) went: OUT/.removed/<clusterName>/<node>-<time>.
    pub archive: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Certificates {
    pub issued: usize,
    pub kept: usize,
}

/// join.txt's commands, `""` where it has none (no token authenticates).
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct JoinCommands {
    pub worker: String,
    pub control_plane: String,
    pub discovery_file: String,
}

impl JoinCommands {
    /// The `kubeadm join` lines of join.txt, told apart by their flags.
    pub fn from_join_text(text: &str) -> JoinCommands {
        let mut j = JoinCommands::default();
        for line in text.lines().map(str::trim).filter(|l| l.starts_with("kubeadm join ")) {
            let slot = if line.contains(" --control-plane") {
                &mut j.control_plane
            } else if line.contains(" --discovery-file ") {
                &mut j.discovery_file
            } else {
                &mut j.worker
            };
            *slot = line.to_string();
        }
        j
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_commands_are_told_apart_by_their_flags() {
        let text = "# c\nkubeadm join a:6443 --token t --discovery-token-ca-cert-hash sha256:x\n\n\
kubeadm join a:6443 --token t --discovery-token-ca-cert-hash sha256:x --control-plane\n\
kubeadm join --discovery-file discovery.conf --tls-bootstrap-token t\n";
        let j = JoinCommands::from_join_text(text);
        assert_eq!(j.worker, "kubeadm join a:6443 --token t --discovery-token-ca-cert-hash sha256:x");
        assert!(j.control_plane.ends_with("--control-plane"));
        assert!(j.discovery_file.starts_with("kubeadm join --discovery-file"));
        let none = JoinCommands::from_join_text("# No bootstrap token has the authentication usage\n");
        assert_eq!((none.worker.as_str(), none.control_plane.as_str()), ("", ""));
    }
}
