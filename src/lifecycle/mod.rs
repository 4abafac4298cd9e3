//! Day-2 commands on what generate made or on a live cluster's trees: certificate expiry
//! (`expiry`), renewal (`renew`), bootstrap tokens (`tokens`), a CA of one's own (`ca`: import,
//! CSR for an intermediate), certificates an external CA signed (`signed`), a state built from
//! a running cluster kubebundle did not make (`adopt`) and the phased rotation of the encryption
//! and service-account keys (`rotate`). They read and
//! write nodes through the node-tree model (`crate::tree`).

pub mod adopt;
pub mod ca;
pub mod expiry;
pub mod export;
pub mod renew;
pub mod rotate;
pub mod signed;
pub mod tokens;

use crate::bundle::output::OutputError;
use crate::bundle::state::StateError;

/// The error of the commands that take files in and write a bundle's state (`ca import`, `ca csr`,
/// `import-signed`, `adopt`).
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The input is wrong (exit 2): a file that cannot be read or is not what its place or flag
    /// says, a tree that matches no layout, a config that does not describe the tree.
    #[error("{0}")]
    Input(String),
    /// The command ran and refused or failed (exit 1): a state that already holds what it would
    /// replace, a signed certificate that does not match its request, nothing waiting.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Output(#[from] OutputError),
    /// Writing into a node tree (`import-signed --dir TREE`, through renew's edits and writes).
    #[error(transparent)]
    Tree(#[from] renew::RenewError),
}

impl LifecycleError {
    /// Exit 2 rather than 1: the input is wrong (a config error, a link to nothing included).
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            LifecycleError::Input(_)
                | LifecycleError::State(StateError::Config(_))
                | LifecycleError::Output(OutputError::DanglingLink { .. })
        )
    }
}
