//! The documentation the binary prints: `berth completion SHELL` and the help texts.

use std::process::{Command, Output, Stdio};

fn berth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn completion_prints_each_shells_script() {
    for (shell, marker) in [
        ("bash", "complete -F _berth"),
        ("zsh", "#compdef berth"),
        ("fish", "complete -c berth"),
    ] {
        let o = berth(&["completion", shell]);
        assert_eq!(o.status.code(), Some(0), "{shell}");
        let out = String::from_utf8(o.stdout).unwrap();
        assert!(out.contains(marker), "{shell} script lacks {marker:?}");
        assert!(out.contains("run"), "{shell} script lacks run");
        assert!(o.stderr.is_empty());
    }
}

#[test]
fn completion_refuses_unknown_shells() {
    let o = berth(&["completion", "tcsh"]);
    // A bad value is a usage error: berth's one-line failure, 125.
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(String::from_utf8_lossy(&o.stderr).lines().count(), 1);
    assert!(o.stdout.is_empty());
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(
        err.contains("tcsh") && err.contains("bash, zsh, fish"),
        "{err}"
    );
}

#[test]
fn run_help_states_the_security_defaults_and_exit_status() {
    let long = String::from_utf8(berth(&["run", "--help"]).stdout).unwrap();
    for needle in [
        "Security defaults:",
        "CAP_SYS_ADMIN",
        "seccomp",
        "Exit status:",
        "127",
    ] {
        assert!(long.contains(needle), "berth run --help lacks {needle:?}");
    }
    let short = String::from_utf8(berth(&["run", "-h"]).stdout).unwrap();
    assert!(short.contains("Security defaults:") && short.contains("See --help"));
    assert!(short.lines().count() < long.lines().count());
}
