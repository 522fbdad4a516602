//! Documentation generated from the clap definitions in [`crate::cli`], so `--help`, the man
//! pages and the shell completions never disagree: `berth completion SHELL` prints a completion
//! script (clap_complete), and [`man`] renders the pages in man/ (clap_mangen plus the
//! hand-written sections in [`text`]); a unit test fails when the committed pages are stale.

#[cfg(test)]
mod man;
#[cfg(test)]
mod text;

use crate::cli::{Cli, CompletionShell};
use clap::CommandFactory;
use clap_complete::Shell;
use std::io::Write;

/// Writes the completion script for `shell`, as `berth completion SHELL` prints it.
pub fn completion(shell: CompletionShell, out: &mut dyn Write) {
    let shell = match shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    clap_complete::generate(shell, &mut Cli::command(), "berth", out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn script(shell: CompletionShell) -> String {
        let mut out = Vec::new();
        completion(shell, &mut out);
        String::from_utf8(out).unwrap()
    }

    /// A temporary file removed on drop, also when the test fails.
    struct TempFile(std::path::PathBuf);
    impl TempFile {
        fn new(name: &str, text: &str) -> TempFile {
            let p = std::env::temp_dir().join(format!("berth-docs-{}-{name}", std::process::id()));
            std::fs::write(&p, text).unwrap();
            TempFile(p)
        }
    }
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// Runs `shell ARGS... FILE`; panics with the shell's stderr unless it exits 0.
    fn shell_ok(shell: &str, args: &[&str], file: &TempFile) -> String {
        let out = Command::new(shell)
            .args(args)
            .arg(&file.0)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {shell} (listed in .ci/deps): {e}"));
        assert!(
            out.status.success(),
            "{shell} {args:?} rejected the script: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn completion_scripts_parse_and_know_every_subcommand() {
        let subcommands: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .collect();
        assert!(subcommands.iter().any(|s| s == "run"));
        for (shell, check) in [
            (CompletionShell::Bash, ["bash", "-n"]),
            (CompletionShell::Zsh, ["zsh", "-n"]),
            (CompletionShell::Fish, ["fish", "--no-execute"]),
        ] {
            let text = script(shell);
            for sub in &subcommands {
                assert!(text.contains(sub.as_str()), "{shell:?} script lacks {sub}");
            }
            let file = TempFile::new(&format!("{shell:?}"), &text);
            shell_ok(check[0], &check[1..], &file);
        }
    }

    /// The bash script, sourced into a real bash, completes `berth r` to run and offers run's
    /// options after `berth run --pri`.
    #[test]
    fn bash_completion_completes_subcommands_and_options() {
        let file = TempFile::new("bash-live", &script(CompletionShell::Bash));
        let driver = TempFile::new(
            "bash-driver",
            r#"source "$1"
complete_words() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
  COMPREPLY=(); _berth berth "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"; echo "${COMPREPLY[*]}"; }
complete_words berth r
complete_words berth run --pri
"#,
        );
        let out = Command::new("bash")
            .arg(&driver.0)
            .arg(&file.0)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        let subs: Vec<&str> = lines[0].split(' ').collect();
        assert!(subs.contains(&"run"), "completions of `berth r`: {subs:?}");
        assert!(subs.iter().all(|s| s.starts_with('r')), "{subs:?}");
        let opts: Vec<&str> = lines[1].split(' ').collect();
        assert!(
            opts.contains(&"--private-users") && opts.contains(&"--private-network"),
            "completions of `berth run --pri`: {opts:?}"
        );
        assert!(opts.iter().all(|o| o.starts_with("--pri")), "{opts:?}");
    }

    /// fish's own completion engine, fed the script, completes `berth r` and `berth run --pri`.
    #[test]
    fn fish_completion_completes_subcommands_and_options() {
        let file = TempFile::new("fish-live", &script(CompletionShell::Fish));
        let out = Command::new("fish")
            .arg("--no-config")
            .arg("-c")
            .arg(format!(
                "source {}; complete -C 'berth r'; echo ---; complete -C 'berth run --pri'",
                file.0.display()
            ))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = String::from_utf8(out.stdout).unwrap();
        let (subs, opts) = out.split_once("---\n").unwrap();
        let first = |l: &str| l.split('\t').next().unwrap().to_owned();
        let subs: Vec<String> = subs.lines().map(first).collect();
        assert!(subs.contains(&"run".to_owned()), "{out}");
        assert!(subs.iter().all(|s| s.starts_with('r')), "{out}");
        let opts: Vec<String> = opts.lines().map(first).collect();
        assert!(
            opts.contains(&"--private-users".to_owned())
                && opts.contains(&"--private-network".to_owned()),
            "{out}"
        );
    }
}
