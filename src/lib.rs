//! kubebundle: every certificate, key, kubeconfig and token of a kubeadm-style cluster, made
//! offline from one config and packed one tarball per node, and kept healthy for the cluster's
//! life.
//!
//! The folders are the subsystems, each importing only those listed after it:
//! - `cli`: parse the command line, call the library, print (the only module that prints);
//! - `lifecycle`: day-2 commands on bundles and node trees (expiry, renew, tokens);
//! - `audit`: `verify` and its rule table, and the references check;
//! - `bundle`: the generate pipeline (plan, state, materialize, reuse, output);
//! - `export`: a node's files as cloud-init user-data or an Ignition config;
//! - `tree`: the node-tree model every command reads and writes nodes through (a tarball in
//!   memory, a directory, a live host), the layouts (profiles), the tarball format, kubeconfigs;
//! - `config`: load and validate the kubeadm config and Inventory;
//! - `pki`: the certificate catalogue, keys, issuance and signatures;
//! - `clock`, `util`: the run's clock, durations, versions, text.

pub mod audit;
pub mod bundle;
pub mod cli;
pub mod clock;
pub mod config;
pub mod export;
pub mod lifecycle;
pub mod pki;
pub mod tree;
pub mod util;
