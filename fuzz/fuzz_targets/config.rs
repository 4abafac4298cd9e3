//! `cargo fuzz run config`: config loading and validation must never panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = kubebundle::config::load_bytes(data, "fuzz.yaml") {
        // A config that validates must also plan (profiles and SAN rules are total).
        if let Ok(profile) = kubebundle::tree::profile::Profile::load(&config.profile, None) {
            let _ = kubebundle::bundle::plan::plan(&config, &profile);
        }
    }
});
