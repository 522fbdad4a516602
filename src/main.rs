//! berth: a container runtime in the style of systemd-nspawn.
//!
//! The binary edge: parse the command line, dispatch, and turn every error into one line on
//! stderr and an exit code a script can test (see [`exit`]).

mod cgroup;
mod cli;
mod container;
mod docs;
mod exit;
mod notify;
mod place;
mod property;
mod register;
mod seccomp;
mod spec;
mod sys;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            let code = exit::code_for(&err);
            eprintln!("berth: {}", exit::one_line(&err));
            ExitCode::from(code)
        }
    }
}

fn run(cli: cli::Cli) -> anyhow::Result<u8> {
    match cli.command {
        cli::Command::Run(args) => {
            let spec = spec::from_run_args(&args)?;
            Ok(container::run(&spec)?)
        }
        cli::Command::Completion(args) => {
            let mut out = Vec::new();
            docs::completion(args.shell, &mut out);
            std::io::Write::write_all(&mut std::io::stdout().lock(), &out)
                .map_err(|e| anyhow::anyhow!("writing the completion script: {e}"))?;
            Ok(0)
        }
    }
}
