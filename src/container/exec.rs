//! execvpe with the container's PATH, and the login-shell fallback chain nspawn uses.
//! Failures map to podman's exit codes: 127 when nothing was found, 126 when it was found but
//! could not be executed.

use super::child::Failure;
use crate::exit;
use nix::errno::Errno;
use std::ffi::CString;

fn cstrings(v: &[String]) -> Vec<CString> {
    v.iter()
        .map(|s| CString::new(s.as_str()).unwrap_or_default())
        .collect()
}

/// Returns only on failure.
pub fn exec(args: &[String], env: &[String], login_shell: bool) -> Failure {
    let envp = cstrings(env);
    if login_shell {
        // The user's shell, then bash, then sh, each as a login shell ("-sh").
        let mut tried = Vec::new();
        for shell in [args[0].as_str(), "/bin/bash", "/bin/sh"] {
            if tried.contains(&shell) {
                continue;
            }
            tried.push(shell);
            let base = shell.rsplit('/').next().unwrap_or(shell);
            let argv = cstrings(&[format!("-{base}")]);
            let _ = nix::unistd::execve(&CString::new(shell).unwrap_or_default(), &argv, &envp);
        }
        return Failure::Exec {
            code: exit::NOT_FOUND,
            msg: format!(
                "no login shell found in the container (tried {})",
                tried.join(", ")
            ),
        };
    }
    let Some(cmd) = args.first() else {
        return Failure::Exec {
            code: exit::NOT_FOUND,
            msg: "empty command".into(),
        };
    };
    let argv = cstrings(args);
    let candidates: Vec<String> = if cmd.contains('/') {
        vec![cmd.clone()]
    } else {
        let path = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or("/usr/bin:/bin");
        path.split(':')
            .map(|d| format!("{}/{cmd}", if d.is_empty() { "." } else { d }))
            .collect()
    };
    // As execvp: remember a permission problem, but keep looking for a usable file.
    let mut seen = Errno::ENOENT;
    for c in &candidates {
        match nix::unistd::execve(&CString::new(c.as_str()).unwrap_or_default(), &argv, &envp) {
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => {}
            Err(e) => seen = e,
            Ok(never) => match never {},
        }
    }
    if seen == Errno::ENOENT {
        Failure::Exec {
            code: exit::NOT_FOUND,
            msg: format!("{cmd}: command not found in the container"),
        }
    } else {
        Failure::Exec {
            code: exit::NOT_EXECUTABLE,
            msg: format!("{cmd}: cannot execute: {}", seen.desc()),
        }
    }
}
