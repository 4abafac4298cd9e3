//! kubebundle: every certificate, key, kubeconfig and token of a kubeadm-style cluster, made
//! offline from one config and packed one tarball per node.
//!
//! The pipeline (see DESIGN.md): `config` (load → validate) → `plan` → `state` +
//! `materialize` → `output` / `pack`. Only `cli` prints.

pub mod cli;
pub mod clock;
pub mod config;
pub mod consistency;
pub mod expiry;
pub mod kubeconfig;
pub mod materialize;
pub mod nodes;
pub mod output;
pub mod pack;
pub mod pki;
pub mod plan;
pub mod profile;
pub mod render;
pub mod renew;
pub mod restore;
pub mod reuse;
pub mod state;
pub mod state_manifest;
pub mod tokens;
pub mod util;
pub mod verify;
