//! Day-2 commands on what generate made or on a live cluster's trees: certificate expiry
//! (`expiry`), renewal (`renew`), bootstrap tokens (`tokens`), and a bundle's nodes as trees
//! (`nodes`).

pub mod expiry;
pub mod nodes;
pub mod renew;
pub mod tokens;
