//! `-o json` of generate, verify and token list (issue 16): every report parses, matches the
//! schema README "Machine-readable output" documents (read from the README's tables here: every
//! documented key present with its type, no key the README does not document) and tells the truth
//! about the bundle: the files listed as written and kept are the bundle's, with their modes; a
//! removed node's files are listed as removed and archived; an error injected into a tarball
//! appears with its node and file; the token ids are the state's and join.txt's; no token secret
//! unless asked.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::*;
use serde_json::Value;

const NOW: &str = "2026-01-01T00:00:00Z";
const CLUSTER: &str = "jc";

// =============================================================================================
// The README's schema tables

/// One documented key: its type (`string`, `integer`, `boolean`, `list of T`, or an object type's
/// name) and whether it is only there when asked ("only with ...").
#[derive(Debug, Clone)]
struct Field {
    ty: String,
    optional: bool,
}

/// A command's schema: the top-level table and the object types defined below it ("Name:" or
/// "Name (...):" followed by a table).
#[derive(Debug, Default)]
struct Schema {
    top: BTreeMap<String, Field>,
    types: BTreeMap<String, BTreeMap<String, Field>>,
}

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README.md")
}

/// The `### <heading>` subsection of README "Machine-readable output".
fn schema(heading: &str) -> Schema {
    let text = readme();
    let section = text.split("\n## Machine-readable output").nth(1).expect("README has a Machine-readable output section");
    let section = section.split("\n## ").next().unwrap();
    let sub = section.split("\n### ").find(|s| s.starts_with(heading)).unwrap_or_else(|| panic!("README has no ### {heading}"));
    let mut schema = Schema::default();
    let mut current: Option<String> = None;
    let mut in_table = false;
    for line in sub.lines() {
        let line = line.trim_end();
        if let Some(row) = line.strip_prefix('|') {
            let cells: Vec<&str> = row.split(" | ").map(|c| c.trim().trim_matches('|').trim()).collect();
            if cells.len() < 3 || cells[0] == "key" || cells[0].starts_with("---") {
                in_table = true;
                continue;
            }
            let key = cells[0].trim_matches('`').to_string();
            let field = Field { ty: cells[1].to_string(), optional: cells[2].starts_with("only with") };
            match &current {
                None => schema.top.insert(key, field),
                Some(t) => schema.types.entry(t.clone()).or_default().insert(key, field),
            };
            continue;
        }
        if in_table && !line.is_empty() {
            in_table = false;
        }
        // "File (paths relative ...):" or "Finding:" names the next table's type.
        if !line.starts_with('|') && line.ends_with(':') && line.chars().next().is_some_and(|c| c.is_ascii_uppercase()) {
            let name = line.split([' ', ':']).next().unwrap();
            let rest = &line[name.len()..];
            if rest == ":" || rest.starts_with(" (") {
                current = Some(name.to_string());
            }
        }
    }
    assert!(!schema.top.is_empty(), "README ### {heading}: no table");
    schema
}

/// Checks `value` against `fields` (and the object types they name): every documented key
/// present with its type (an optional one only when `with_optional`), no undocumented key.
fn conforms(schema: &Schema, fields: &BTreeMap<String, Field>, value: &Value, at: &str, with_optional: bool, f: &mut Failures) {
    let Some(obj) = value.as_object() else {
        f.fail(format!("{at}: not an object: {value}"));
        return;
    };
    for key in obj.keys() {
        f.check(fields.contains_key(key), || format!("{at}: key {key:?} is not documented in README"));
    }
    for (key, field) in fields {
        match obj.get(key) {
            None => {
                f.check(field.optional && !with_optional, || format!("{at}: documented key {key:?} is missing"));
            }
            Some(v) => {
                f.check(!field.optional || with_optional, || format!("{at}: {key:?} is there without being asked for"));
                of_type(schema, &field.ty, v, &format!("{at}.{key}"), with_optional, f);
            }
        }
    }
}

fn of_type(schema: &Schema, ty: &str, v: &Value, at: &str, with_optional: bool, f: &mut Failures) {
    match ty {
        "string" => {
            f.check(v.is_string(), || format!("{at}: not a string: {v}"));
        }
        "integer" => {
            f.check(v.is_u64() || v.is_i64(), || format!("{at}: not an integer: {v}"));
        }
        "boolean" => {
            f.check(v.is_boolean(), || format!("{at}: not a boolean: {v}"));
        }
        _ if ty.starts_with("list of ") => match v.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    of_type(schema, &ty["list of ".len()..], item, &format!("{at}[{i}]"), with_optional, f);
                }
            }
            None => f.fail(format!("{at}: not a list: {v}")),
        },
        name => match schema.types.get(name) {
            Some(fields) => conforms(schema, fields, v, at, with_optional, f),
            None => f.fail(format!("{at}: README names type {name:?} but defines no table for it")),
        },
    }
}

/// Parses `stdout` as exactly one JSON object of `kind` conforming to README's `heading` schema.
fn report(heading: &str, kind: &str, stdout: &str, with_optional: bool, f: &mut Failures) -> Value {
    let v: Value = serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{heading}: stdout is not one JSON document ({e}): {stdout}"));
    f.eq(&format!("{heading}: apiVersion"), &Value::from("kubebundle.dev/v1alpha1"), &v["apiVersion"]);
    f.eq(&format!("{heading}: kind"), &Value::from(kind), &v["kind"]);
    let s = schema(heading);
    conforms(&s, &s.top, &v, heading, with_optional, f);
    v
}

/// The README's `kind` row of a schema says the kind the command prints.
fn documented_kind(heading: &str) -> String {
    let s = schema(heading);
    assert!(s.top.contains_key("kind") && s.top.contains_key("apiVersion"), "{heading}: no kind/apiVersion rows");
    let text = readme();
    let row = text.lines().skip_while(|l| !l.starts_with(&format!("### {heading}"))).find(|l| l.starts_with("| `kind` |")).unwrap();
    row.rsplit('`').nth(1).unwrap().to_string()
}

// =============================================================================================
// Helpers

fn setup(prefix: &str, nodes: &[(&str, &str, &str)]) -> tempfile::TempDir {
    let tmp = temp_dir(prefix);
    std::fs::write(tmp.path().join("c.yaml"), live_config(CLUSTER, nodes)).unwrap();
    tmp
}

fn generate(dir: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["generate", "-c", "c.yaml", "--out", "out", "--now", NOW];
    args.extend_from_slice(extra);
    kubebundle(dir, &args, &[])
}

fn paths(v: &Value, key: &str) -> BTreeMap<String, String> {
    v[key]
        .as_array()
        .map(|a| a.iter().map(|f| (f["path"].as_str().unwrap_or("").to_string(), f["mode"].as_str().unwrap_or("").to_string())).collect())
        .unwrap_or_default()
}

/// Every regular file of the bundle with its mode, as `ls` would say it.
fn bundle_files(cluster: &Path) -> BTreeMap<String, String> {
    walk(cluster)
        .keys()
        .filter(|rel| cluster.join(rel).is_file())
        .map(|rel| (rel.clone(), format!("{:04o}", mode_of(&cluster.join(rel)).unwrap())))
        .collect()
}

const NODES: [(&str, &str, &str); 3] =
    [("cp1", "198.51.100.10", "control-plane, etcd"), ("w1", "198.51.100.11", "worker"), ("w2", "198.51.100.12", "worker")];

// =============================================================================================

#[test]
fn readme_documents_the_kinds_the_commands_print() {
    for (heading, kind) in
        [("`generate -o json`", "GenerateReport"), ("`verify -o json`", "VerifyReport"), ("`token list -o json`", "BootstrapTokenList")]
    {
        assert_eq!(documented_kind(heading), kind, "{heading}");
    }
}

#[test]
fn generate_json_says_what_was_written_kept_and_removed() {
    let tmp = setup("gen", &NODES);
    let dir = tmp.path();
    let cluster = dir.join("out").join(CLUSTER);
    let mut f = Failures::new();

    // 1. First run: everything written, nothing kept or removed, no join command (no secret).
    let first = generate(dir, &["-o", "json"]);
    assert!(first.ok(), "{}", first.describe());
    let v = report("`generate -o json`", "GenerateReport", &first.stdout, false, &mut f);
    let join = std::fs::read_to_string(cluster.join("join.txt")).unwrap();
    let tokens = find_tokens(&join);
    f.check(!tokens.is_empty(), || format!("join.txt holds no token: {join}"));
    for t in &tokens {
        f.check(!first.stdout.contains(t.split('.').nth(1).unwrap()), || "the JSON report holds the join token's secret".into());
    }
    f.check(!first.stdout.contains("kubeadm join"), || "join commands in the report without --print-join-command".into());
    // Progress stays on stderr.
    f.check(first.stderr.contains("wrote "), || format!("no progress on stderr: {}", first.stderr));
    let on_disk = bundle_files(&cluster);
    f.eq("written = every file of the bundle, with its mode", &on_disk, &paths(&v, "written"));
    f.check(v["kept"].as_array().is_some_and(|a| a.is_empty()), || format!("kept on a first run: {}", v["kept"]));
    f.check(v["removed"].as_array().is_some_and(|a| a.is_empty()), || format!("removed on a first run: {}", v["removed"]));
    for (n, _, _) in NODES {
        f.check(paths(&v, "written").contains_key(&format!("nodes/{n}.tar.gz")), || format!("nodes/{n}.tar.gz not written"));
    }
    f.eq("nodes", &Value::from(vec!["cp1", "w1", "w2"]), &v["nodes"]);
    f.eq("clusterName", &Value::from(CLUSTER), &v["clusterName"]);
    f.eq("now", &Value::from(NOW), &v["now"]);
    f.check(join.contains(v["discoveryHash"].as_str().unwrap_or("none")), || {
        format!("discoveryHash {} not in join.txt", v["discoveryHash"])
    });
    f.check(v["certificates"]["issued"].as_u64().is_some_and(|n| n > 0), || format!("certificates: {}", v["certificates"]));

    // 2. The same run again: every file kept, none written.
    let again = generate(dir, &["-o", "json"]);
    assert!(again.ok(), "{}", again.describe());
    let v = report("`generate -o json`", "GenerateReport", &again.stdout, false, &mut f);
    f.eq("a re-run keeps every file", &bundle_files(&cluster), &paths(&v, "kept"));
    f.eq("a re-run writes nothing", &BTreeMap::new(), &paths(&v, "written"));
    f.eq("certificates kept", &v["certificates"]["issued"], &Value::from(0));

    // 3. w2 leaves the Inventory; the join commands asked for.
    let before = bundle_files(&cluster);
    std::fs::write(dir.join("c.yaml"), live_config(CLUSTER, &NODES[..2])).unwrap();
    let gone = generate(dir, &["-o", "json", "--print-join-command"]);
    assert!(gone.ok(), "{}", gone.describe());
    let v = report("`generate -o json`", "GenerateReport", &gone.stdout, true, &mut f);
    let removed = paths(&v, "removed");
    f.check(removed.contains_key("nodes/w2.tar.gz"), || format!("nodes/w2.tar.gz not removed: {removed:?}"));
    for (p, mode) in &removed {
        f.eq(&format!("removed {p}: its old mode"), &before.get(p), &Some(mode));
        f.check(!cluster.join(p).exists(), || format!("{p} listed as removed but still there"));
    }
    let after = bundle_files(&cluster);
    let mut listed = paths(&v, "written");
    listed.extend(paths(&v, "kept"));
    f.eq("written + kept = the bundle", &after, &listed);
    f.check(paths(&v, "kept").contains_key("nodes/cp1.tar.gz"), || "cp1's tarball not kept".into());
    let archive = v["removedNodes"][0]["archive"].as_str().unwrap_or("");
    f.eq("removedNodes name", &Value::from("w2"), &v["removedNodes"][0]["name"]);
    f.check(Path::new(archive).is_absolute() || dir.join(archive).join("w2.tar.gz").is_file(), || {
        format!("archive {archive} holds no w2.tar.gz")
    });
    let join = std::fs::read_to_string(cluster.join("join.txt")).unwrap();
    let line = |needle: &str, not: &str| {
        join.lines()
            .find(|l| l.starts_with("kubeadm join") && l.contains(needle) && (not.is_empty() || !l.contains(not)))
            .unwrap_or("")
            .to_string()
    };
    f.eq("joinCommands.worker", &Value::from(line("--discovery-token-ca-cert-hash", "--control-plane")), &v["joinCommands"]["worker"]);
    f.eq("joinCommands.controlPlane", &Value::from(line("--control-plane", "")), &v["joinCommands"]["controlPlane"]);
    f.eq("joinCommands.discoveryFile", &Value::from(line("--discovery-file", "")), &v["joinCommands"]["discoveryFile"]);

    // --check takes no -o json; text stays the default and prints the join commands.
    let check = generate(dir, &["--check", "-o", "json"]);
    f.check(check.code == Some(2) && check.stdout.is_empty(), || format!("--check -o json: {}", check.describe()));
    let text = generate(dir, &[]);
    f.check(text.ok() && text.stdout == join, || format!("text output is not join.txt: {}", text.describe()));
    f.finish("generate_json_says_what_was_written_kept_and_removed");
}

#[test]
fn verify_json_names_an_injected_error_with_its_node_and_file() {
    let tmp = setup("verify", &NODES[..2]);
    let dir = tmp.path();
    let cluster = dir.join("out").join(CLUSTER);
    let mut f = Failures::new();
    let run = generate(dir, &[]);
    assert!(run.ok(), "{}", run.describe());

    let clean = kubebundle(dir, &["verify", "out/jc", "--now", NOW, "-o", "json"], &[]);
    f.check(clean.ok(), || clean.describe());
    let v = report("`verify -o json`", "VerifyReport", &clean.stdout, false, &mut f);
    f.eq("clean: errors", &Value::from(0), &v["summary"]["errors"]);
    f.check(v["summary"]["checksPassed"].as_u64().is_some_and(|n| n > 10), || format!("summary: {}", v["summary"]));
    f.eq("path", &Value::from("out/jc"), &v["path"]);

    // Inject an error: cp1's apiserver.crt replaced by its front-proxy-client.crt, re-packed by tar.
    let root = dir.join("cp1-root");
    extract(&cluster.join("nodes/cp1.tar.gz"), &root);
    let pki = root.join("etc/kubernetes/pki");
    std::fs::copy(pki.join("front-proxy-client.crt"), pki.join("apiserver.crt")).unwrap();
    let mut tar = std::process::Command::new("tar");
    tar.current_dir(&root).args(["-czf", cluster.join("nodes/cp1.tar.gz").to_str().unwrap(), "."]);
    let packed = run_cmd(tar);
    assert!(packed.ok(), "{}", packed.describe());

    let text = kubebundle(dir, &["verify", "out/jc", "--now", NOW, "--foreign"], &[]);
    let json = kubebundle(dir, &["verify", "out/jc", "--now", NOW, "--foreign", "-o", "json"], &[]);
    f.eq("exit code as the text output's", &text.code, &json.code);
    f.eq("exit code", &Some(1), &json.code);
    let v = report("`verify -o json`", "VerifyReport", &json.stdout, false, &mut f);
    let findings = v["findings"].as_array().cloned().unwrap_or_default();
    let hit = findings.iter().any(|x| {
        x["severity"] == "error"
            && x["node"] == "cp1"
            && x["file"].as_str().is_some_and(|p| p.ends_with("etc/kubernetes/pki/apiserver.crt"))
    });
    f.check(hit, || format!("no error for cp1's apiserver.crt in {findings:#?}"));
    // The JSON counts are the table's.
    let errors = findings.iter().filter(|x| x["severity"] == "error").count();
    let warnings = findings.iter().filter(|x| x["severity"] == "warning").count();
    f.eq("summary.errors = error findings", &Value::from(errors), &v["summary"]["errors"]);
    f.eq("summary.warnings = warning findings", &Value::from(warnings), &v["summary"]["warnings"]);
    f.eq(
        "table rows = findings",
        &(errors, warnings),
        &(text.stdout.lines().filter(|l| l.starts_with("ERROR")).count(), text.stdout.lines().filter(|l| l.starts_with("WARNING")).count()),
    );
    f.check(text.stdout.lines().last().is_some_and(|l| l.starts_with(&format!("{errors} error"))), || "table summary".into());
    f.check(findings.iter().all(|x| x["severity"] != "ok"), || "passed checks listed".into());
    f.finish("verify_json_names_an_injected_error_with_its_node_and_file");
}

#[test]
fn token_list_json_has_the_state_tokens_and_no_secret_unless_asked() {
    let tmp = setup("tokens", &NODES[..2]);
    let dir = tmp.path();
    let cluster = dir.join("out").join(CLUSTER);
    let mut f = Failures::new();
    let run = generate(dir, &[]);
    assert!(run.ok(), "{}", run.describe());
    let created = kubebundle(
        dir,
        &["token", "create", "--dir", "out/jc", "--now", NOW, "--ttl", "2h", "--description", "ci runner", "--usages", "authentication"],
        &[],
    );
    assert!(created.ok(), "{}", created.describe());

    let state = std::fs::read_to_string(cluster.join("state/tokens.yaml")).unwrap();
    let state_tokens: BTreeSet<String> = find_tokens(&state).into_iter().collect();
    let state_ids: BTreeSet<String> = state_tokens.iter().map(|t| t[..6].to_string()).collect();
    let join_ids: BTreeSet<String> =
        find_tokens(&std::fs::read_to_string(cluster.join("join.txt")).unwrap()).iter().map(|t| t[..6].to_string()).collect();

    let list = kubebundle(dir, &["token", "list", "--dir", "out/jc", "--now", NOW, "-o", "json"], &[]);
    assert!(list.ok(), "{}", list.describe());
    let v = report("`token list -o json`", "BootstrapTokenList", &list.stdout, false, &mut f);
    let tokens = v["tokens"].as_array().cloned().unwrap_or_default();
    let ids: BTreeSet<String> = tokens.iter().filter_map(|t| t["id"].as_str().map(str::to_string)).collect();
    f.eq("ids = the state's", &state_ids, &ids);
    f.check(!join_ids.is_empty() && join_ids.is_subset(&ids), || format!("join.txt's token {join_ids:?} not listed in {ids:?}"));
    f.eq("2 tokens", &2, &tokens.len());
    f.check(find_tokens(&list.stdout).is_empty(), || "a whole token in the report without --show-token".into());
    for t in &state_tokens {
        f.check(!list.stdout.contains(&t[7..]), || "a token secret in the report".into());
    }
    let made = tokens.iter().find(|t| t["description"] == "ci runner");
    match made {
        Some(t) => {
            f.eq("ttl of the 2h token", &Value::from("2h0m0s"), &t["ttl"]);
            f.eq("expires", &Value::from("2026-01-01T02:00:00Z"), &t["expires"]);
            f.eq("usages", &Value::from(vec!["authentication"]), &t["usages"]);
            f.eq("groups", &Value::from(vec!["system:bootstrappers:kubeadm:default-node-token"]), &t["groups"]);
        }
        None => f.fail(format!("the created token is not listed: {tokens:?}")),
    }
    // Three hours later the new token has expired: ttl 0s (list drops nothing).
    let later = kubebundle(dir, &["token", "list", "--dir", "out/jc", "--now", "2026-01-01T03:00:00Z", "-o", "json"], &[]);
    let v = report("`token list -o json`", "BootstrapTokenList", &later.stdout, false, &mut f);
    let ttl = v["tokens"].as_array().into_iter().flatten().find(|t| t["description"] == "ci runner").map(|t| t["ttl"].clone());
    f.eq("ttl once expired", &Some(Value::from("0s")), &ttl);

    // --show-token: the whole tokens, the state's.
    let shown = kubebundle(dir, &["token", "list", "--dir", "out/jc", "--now", NOW, "-o", "json", "--show-token"], &[]);
    let v = report("`token list -o json`", "BootstrapTokenList", &shown.stdout, true, &mut f);
    let whole: BTreeSet<String> =
        v["tokens"].as_array().into_iter().flatten().filter_map(|t| t["token"].as_str().map(str::to_string)).collect();
    f.eq("--show-token: the state's tokens", &state_tokens, &whole);
    for t in v["tokens"].as_array().into_iter().flatten() {
        f.check(t["token"].as_str().is_some_and(|w| w.starts_with(&format!("{}.", t["id"].as_str().unwrap_or("?")))), || {
            format!("token/id mismatch: {t}")
        });
    }
    let table = kubebundle(dir, &["token", "list", "--dir", "out/jc", "--now", NOW, "--show-token"], &[]);
    f.check(table.stdout.starts_with("TOKEN") && find_tokens(&table.stdout).len() == 2, || table.describe());
    let table = kubebundle(dir, &["token", "list", "--dir", "out/jc", "--now", NOW], &[]);
    f.check(table.stdout.starts_with("ID") && find_tokens(&table.stdout).is_empty(), || table.describe());
    f.finish("token_list_json_has_the_state_tokens_and_no_secret_unless_asked");
}
