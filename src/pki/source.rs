//! Where a run's new secrets come from: the system CSPRNG, or (`generate --seed-file`) a keyed
//! derivation of the seed per artifact, so the same seed makes the same keys, tokens and
//! encryption key on any machine. Labels name the artifact ("key/ca/etcd-ca", "key/cp1/apiserver").

use zeroize::Zeroizing;

use super::derive::{bytes_from_rng, key_from_rng, token_from_rng, Seed};
use super::keys::KeyAlgorithm;
use super::keys::{Key, KeyError};

pub fn new_key(seed: Option<&Seed>, alg: KeyAlgorithm, label: &str) -> Result<Key, KeyError> {
    match seed {
        Some(s) => key_from_rng(alg, &mut s.rng(&format!("key/{label}"))),
        None => Key::generate(alg),
    }
}

pub fn new_token(seed: Option<&Seed>, label: &str) -> String {
    match seed {
        Some(s) => token_from_rng(&mut s.rng(&format!("token/{label}"))),
        None => super::token::generate(),
    }
}

pub fn new_secret32(seed: Option<&Seed>, label: &str) -> Zeroizing<[u8; 32]> {
    match seed {
        Some(s) => Zeroizing::new(bytes_from_rng::<32>(&mut s.rng(&format!("secret/{label}")))),
        None => {
            let mut bytes = Zeroizing::new([0u8; 32]);
            aws_lc_rs::rand::fill(bytes.as_mut()).expect("the system RNG works");
            bytes
        }
    }
}
