//! Shell completions and man pages (issue 16): `kubebundle completion <shell>` prints a script
//! each shell accepts (bash: `bash -n`, and sourcing it registers `complete -p kubebundle`;
//! zsh -n and fish -n; under CI=true a missing shell fails), and `kubebundle man` prints kubebundle.1
//! or writes it and one page per subcommand into --out DIR, each rendering with `man -l`.

mod common;

use std::process::Command;

use common::*;

fn tool(name: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {name}")]).output().is_ok_and(|o| o.status.success())
}

fn required(name: &str) -> bool {
    if tool(name) {
        return true;
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{name} is missing and CI=true: .ci/run installs it");
    eprintln!("note: {name} is not installed: skipped");
    false
}

#[test]
fn completion_scripts_load_in_their_shells() {
    let tmp = temp_dir("completion");
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let r = kubebundle(tmp.path(), &["completion", shell], &[]);
        assert!(r.ok(), "completion {shell}: {}", r.describe());
        assert!(
            r.stdout.contains("kubebundle") && r.stdout.contains("generate") && r.stdout.contains("check-expiration"),
            "completion {shell}:\n{}",
            r.stdout
        );
        std::fs::write(tmp.path().join(format!("kubebundle.{shell}")), &r.stdout).unwrap();
    }
    let script = tmp.path().join("kubebundle.bash");
    let r = run_cmd({
        let mut c = Command::new("bash");
        c.arg("-n").arg(&script);
        c
    });
    assert!(r.ok(), "bash -n: {}", r.describe());
    let r = run_cmd({
        let mut c = Command::new("bash");
        c.arg("-c").arg(format!("source {} && complete -p kubebundle", script.display()));
        c
    });
    assert!(r.ok() && r.stdout.contains("-F _kubebundle kubebundle"), "complete -p kubebundle: {}", r.describe());
    // The function completes subcommands: COMP_WORDS as bash gives them for `kubebundle ce<TAB>`.
    let r = run_cmd({
        let mut c = Command::new("bash");
        c.arg("-c").arg(format!(
            "source {} && COMP_WORDS=(kubebundle ce) COMP_CWORD=1 COMP_LINE='kubebundle ce' COMP_POINT=13 && _kubebundle kubebundle ce kubebundle && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        ));
        c
    });
    assert!(r.ok() && r.stdout.lines().any(|l| l == "certs"), "completing `kubebundle ce`: {}", r.describe());
    for (shell, file) in [("zsh", "kubebundle.zsh"), ("fish", "kubebundle.fish")] {
        if required(shell) {
            let r = run_cmd({
                let mut c = Command::new(shell);
                c.arg("-n").arg(tmp.path().join(file));
                c
            });
            assert!(r.ok(), "{shell} -n: {}", r.describe());
        } else {
            eprintln!("note: {shell} is not installed: its script's syntax is not checked");
        }
    }
    let r = kubebundle(tmp.path(), &["completion", "tcsh"], &[]);
    assert_eq!(r.code, Some(2), "an unknown shell is a usage error: {}", r.describe());
}

#[test]
fn man_pages_render_with_man() {
    if !required("man") {
        return;
    }
    let tmp = temp_dir("man");
    let render = |page: &std::path::Path| {
        let mut c = hermetic("man", tmp.path());
        c.args(["-l", "-P", "cat"]).arg(page).env("MANWIDTH", "100");
        run_cmd(c)
    };
    let r = kubebundle(tmp.path(), &["man"], &[]);
    assert!(r.ok() && r.stdout.starts_with(".ie"), "man: {}", r.describe());
    let stdout_page = tmp.path().join("stdout.1");
    std::fs::write(&stdout_page, &r.stdout).unwrap();
    let shown = render(&stdout_page);
    assert!(shown.ok() && shown.stdout.contains("NAME") && shown.stdout.contains("kubebundle"), "man -l: {}", shown.describe());

    let r = kubebundle(tmp.path(), &["man", "--out", "pages"], &[]);
    assert!(r.ok(), "man --out: {}", r.describe());
    let mut pages: Vec<String> =
        std::fs::read_dir(tmp.path().join("pages")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    pages.sort();
    for want in [
        "kubebundle.1",
        "kubebundle-generate.1",
        "kubebundle-certs-renew.1",
        "kubebundle-certs-check-expiration.1",
        "kubebundle-verify.1",
        "kubebundle-completion.1",
    ] {
        assert!(pages.iter().any(|p| p == want), "{want} missing from {pages:?}");
    }
    assert_eq!(std::fs::read_to_string(tmp.path().join("pages/kubebundle.1")).unwrap(), std::fs::read_to_string(&stdout_page).unwrap());
    for page in &pages {
        let shown = render(&tmp.path().join("pages").join(page));
        let title = page.trim_end_matches(".1");
        assert!(shown.ok() && shown.stdout.contains(title) && shown.stdout.contains("SYNOPSIS"), "man -l {page}: {}", shown.describe());
        assert!(shown.stderr.trim().is_empty(), "man -l {page} warned: {}", shown.stderr);
    }
    assert!(r.stdout.contains(&format!("wrote {} man pages", pages.len())), "{}", r.stdout);
}
