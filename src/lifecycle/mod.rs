//! Day-2 commands on what generate made or on a live cluster's trees: certificate expiry
//! (`expiry`), renewal (`renew`), bootstrap tokens (`tokens`), a CA of one's own (`ca`: import,
//! CSR for an intermediate), certificates an external CA signed (`signed`) and the phased
//! rotation of the encryption and service-account keys (`rotate`). They read and
//! write nodes through the node-tree model (`crate::tree`).

pub mod ca;
pub mod expiry;
pub mod renew;
pub mod rotate;
pub mod signed;
pub mod tokens;
