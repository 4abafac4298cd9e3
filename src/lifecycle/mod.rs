//! Day-2 commands on what generate made or on a live cluster's trees: certificate expiry
//! (`expiry`), renewal (`renew`), bootstrap tokens (`tokens`), a CA of one's own (`ca`: import,
//! CSR for an intermediate) and certificates an external CA signed (`signed`). They read and
//! write nodes through the node-tree model (`crate::tree`).

pub mod ca;
pub mod expiry;
pub mod renew;
pub mod signed;
pub mod tokens;
