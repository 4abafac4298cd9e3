//! Property tests: loading and validating any input never panics, every refusal says what and
//! where, and every accepted config plans. Bounded (PROPTEST_CASES, default 256 per property)
//! so CI runs them in seconds; `cargo fuzz run config` (fuzz/) explores further.

use kubebundle::bundle::plan::plan;
use kubebundle::config::{load_bytes, load_str, ConfigError, DEFAULT_CONFIG};
use kubebundle::tree::profile::Profile;
use proptest::prelude::*;

/// Every refusal has at least one error, each with a message.
fn check(result: Result<kubebundle::config::Config, ConfigError>) {
    match result {
        Ok(config) => {
            // A profile file named by a mutated config may not exist; a built-in one always does.
            if let Ok(profile) = Profile::load(&config.profile, None) {
                let p = plan(&config, &profile);
                assert_eq!(p.nodes.len(), config.nodes.len());
                assert!(p.nodes.iter().all(|n| !n.files.is_empty()), "a node without files");
            }
        }
        Err(ConfigError::Invalid(problems)) => {
            assert!(problems.iter().any(|p| !p.warning), "refused without an error");
            assert!(problems.iter().all(|p| !p.message.is_empty()));
        }
        Err(ConfigError::Read { .. }) => {}
    }
}

/// Values that exercise the validators: names, IPs, CIDRs, durations, versions, odd YAML.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("".to_string()),
        Just("~".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("yes".to_string()),
        Just("-1h".to_string()),
        Just("0".to_string()),
        Just("10.96.0.1/12".to_string()),
        Just("fd00::/108".to_string()),
        Just("fd00::10".to_string()),
        Just("[fd00::1]:6443".to_string()),
        Just("999.1.1.1".to_string()),
        Just("*.example.com".to_string()),
        Just("v1.99.0".to_string()),
        Just("\"unterminated".to_string()),
        Just("&a [*a]".to_string()),
        "[a-zA-Z0-9:./_-]{0,20}",
        any::<i64>().prop_map(|n| n.to_string()),
    ]
}

/// The embedded config, with one line's value replaced, a line dropped, duplicated or
/// indented oddly.
fn mutated_default() -> impl Strategy<Value = String> {
    let lines: Vec<String> = DEFAULT_CONFIG.lines().map(String::from).collect();
    let n = lines.len();
    (0..n, 0..5u8, value()).prop_map(move |(i, op, v)| {
        let mut l = lines.clone();
        match op {
            0 => {
                if let Some((k, _)) = l[i].split_once(": ") {
                    l[i] = format!("{k}: {v}");
                } else {
                    l[i] = format!("{}{v}", l[i]);
                }
            }
            1 => {
                l.remove(i);
            }
            2 => {
                let dup = l[i].clone();
                l.insert(i, dup);
            }
            3 => l[i] = format!("  {}", l[i]),
            _ => l[i] = format!("\t{}", l[i]),
        }
        l.join("\n")
    })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check(load_bytes(&bytes, "fuzz.yaml"));
    }

    #[test]
    fn arbitrary_text_never_panics(text in "(?s).{0,400}") {
        check(load_str(&text, "fuzz.yaml"));
    }

    #[test]
    fn mutated_configs_are_accepted_or_explained(text in mutated_default()) {
        check(load_str(&text, "mutated.yaml"));
    }

    #[test]
    fn inventories_of_any_shape_validate_totally(
        nodes in proptest::collection::vec(("[a-z][a-z0-9-]{0,8}", any::<[u8; 4]>(), proptest::collection::vec(prop_oneof![Just("control-plane"), Just("etcd"), Just("worker"), Just("master")], 0..4)), 0..6),
        join in prop_oneof![Just("token"), Just("certificate"), Just("bogus")],
    ) {
        let mut text = String::from("apiVersion: kubebundle.dev/v1alpha1\nkind: Inventory\nworkerJoin: ");
        text.push_str(join);
        text.push_str("\nnodes:\n");
        for (name, ip, roles) in &nodes {
            text.push_str(&format!("- {{name: {name}, address: {}.{}.{}.{}, roles: [{}]}}\n", ip[0], ip[1], ip[2], ip[3], roles.join(", ")));
        }
        check(load_str(&text, "inventory.yaml"));
    }
}

#[test]
fn the_default_config_is_accepted() {
    check(load_str(DEFAULT_CONFIG, "default.yaml"));
}
