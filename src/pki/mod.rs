//! Certificates and keys: the catalogue (data), SAN rules, key formats and issuance.

pub mod catalog;
pub mod derive;
pub mod issue;
pub mod jws;
pub mod keys;
pub mod signature;
pub mod source;
pub mod token;
