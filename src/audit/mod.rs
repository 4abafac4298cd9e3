//! What `kubebundle verify` checks, trusting nothing but its own rules: the audit of a bundle, a
//! node tarball or a node root (`verify`), the rules of what a node may hold (`rules`), the
//! cluster manifests and tokens (`manifests`) and the references check that every path a unit,
//! kubeconfig or config names holds the right content (`references`).

pub mod facts;
pub mod references;
pub mod verify;

pub use verify::{verify, Finding, Report, Severity, VerifyArgs, VerifyError};
