//! The generate pipeline: config → `membership` (the init node and the etcd members a re-run
//! keeps) → `plan` (every node's files, SANs from `sans`) → `state` (the
//! long-lived secrets, their manifest and `state restore`) + `materialize` (leaves issued, files
//! rendered from templates by `render`) → `output` (atomic writes, the lock, staging and the
//! swap), keeping what a re-run may keep (`reuse`).

pub mod materialize;
pub mod membership;
pub mod output;
pub mod pipeline;
pub mod plan;
pub mod render;
pub mod reuse;
pub mod sans;
pub mod state;
