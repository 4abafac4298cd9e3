//! Certificates and keys: the catalogue (data), key algorithms and formats, issuance,
//! signatures, bootstrap tokens and JWS. Imports nothing but `clock` and `util`.

pub mod catalog;
pub mod derive;
pub mod import;
pub mod issue;
pub mod jws;
pub mod keys;
pub mod signature;
pub mod source;
pub mod token;
