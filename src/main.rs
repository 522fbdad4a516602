//! berth: a container runtime in the style of systemd-nspawn.
//!
//! The binary edge: parse the command line, dispatch, and turn every error into one line on
//! stderr and an exit code a script can test (see [`exit`]).

mod cgroup;
mod cli;
mod container;
mod docs;
mod entry;
mod exit;
mod image;
mod notify;
mod place;
mod property;
mod register;
mod seccomp;
mod spec;
mod sys;

use anyhow::Context;
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Before anything else in `berth run` (a cheap look at the arguments: a wrong guess costs
    // one short-lived child), see register::prime_early; forked at berth's entry already
    // where it can be (entry.rs). Under --keep-unit nothing is moved.
    let primer = match entry::primer() {
        entry::Primer::Forked(pid) => Some(register::Helper::adopt(pid)),
        entry::Primer::Declined => None,
        entry::Primer::Undecided => {
            let args: Vec<_> = std::env::args_os().skip(1).collect();
            (args.iter().any(|a| a == "run") && !args.iter().any(|a| a == "--keep-unit"))
                .then(register::prime_early)
                .flatten()
        }
    };
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version print and succeed, as clap does.
        Err(e) if !e.use_stderr() => e.exit(),
        // A usage error is berth's failure like any other: one line, exit 125.
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid command line");
            // Keep clap's list of accepted values, in the same line.
            let values = text
                .lines()
                .map(str::trim)
                .find(|l| l.starts_with("[possible values"));
            let hint = values.map(|v| format!(" {v}")).unwrap_or_default();
            eprintln!(
                "berth: {}{hint} (see --help)",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(exit::FAILURE);
        }
    };
    match run(cli, primer) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            let code = exit::code_for(&err);
            eprintln!("berth: {}", exit::one_line(&err));
            ExitCode::from(code)
        }
    }
}

fn run(cli: cli::Cli, primer: Option<register::Helper>) -> anyhow::Result<u8> {
    // A wrong guess (an image named "run"): its primer is left to finish on its own.
    let primer = match cli.command {
        cli::Command::Run(_) => primer,
        _ => {
            primer.into_iter().for_each(register::Helper::abandon);
            None
        }
    };
    match cli.command {
        cli::Command::Run(mut args) => {
            // The bus helper connects while the spec is built and the container set up (the
            // spec decides; unused, it is dropped). Not forking it here is no error: placing
            // the container forks one then.
            let prime = primer.is_none() && !args.keep_unit;
            let early = register::Early {
                connecting: register::asks_bus(args.register, args.keep_unit)
                    .then(|| register::Connecting::start(prime).ok())
                    .flatten(),
                primer,
            };
            // -M NAME without -D: the image NAME from the store
            let image = match (&args.directory, &args.machine) {
                (None, Some(name)) => {
                    let img = image::run::lookup(&cli.store, name)?;
                    args.directory = Some(img.dir.clone());
                    Some(img)
                }
                _ => None,
            };
            let mut spec = spec::from_run_args(&args)?;
            if let Some(img) = &image {
                image::run::apply(img, &mut spec, &args)?;
            }
            // held while the container runs: `berth remove` (and machinectl's) refuse the tree
            let _tree_lock = match spec.root() {
                Some(r) => image::lock::for_run(r.path())?,
                None => None,
            };
            Ok(container::run(&spec, early)?)
        }
        cli::Command::Completion(args) => {
            let mut out = Vec::new();
            docs::completion(args.shell, &mut out);
            std::io::Write::write_all(&mut std::io::stdout().lock(), &out)
                .map_err(|e| anyhow::anyhow!("writing the completion script: {e}"))?;
            Ok(0)
        }
        cli::Command::ImportTar(a) => {
            let store = image::store::Store::open(&cli.store)?;
            let s = image::import::import_tar(&store, &a.file, &a.name, &import_options(&a.common))
                .with_context(|| format!("importing {}", a.file))?;
            if !a.common.quiet {
                eprintln!("{}", s.line());
            }
            Ok(0)
        }
        cli::Command::ImportOci(a) => {
            let store = image::store::Store::open(&cli.store)?;
            let s =
                image::import::import_oci(&store, &a.layout, &a.name, &import_options(&a.common))
                    .with_context(|| format!("importing {}", a.layout))?;
            if !a.common.quiet {
                eprintln!("{}", s.line());
            }
            Ok(0)
        }
        cli::Command::Images(a) => {
            let store = image::store::Store::open(&cli.store)?;
            let list = store.list()?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print_images(&list);
            }
            Ok(0)
        }
        cli::Command::Remove(a) => {
            let store = image::store::Store::open(&cli.store)?;
            for n in &a.names {
                store.remove(n).with_context(|| format!("removing {n}"))?;
            }
            Ok(0)
        }
    }
}

fn import_options(c: &cli::ImportCommon) -> image::import::Options {
    image::import::Options {
        force: c.force,
        read_only: c.read_only,
        limits: image::Limits::from_env(),
        progress: !c.quiet,
        sync: c.sync,
    }
}

fn print_images(list: &[image::store::ImageInfo]) {
    use std::fmt::Write;
    let mut out = String::new();
    let w = list.iter().map(|i| i.name.len()).max().unwrap_or(4).max(4);
    let _ = writeln!(
        out,
        "{:w$}  {:>10}  {:19}  {:3}  TYPE",
        "NAME", "SIZE", "CREATED", "RO"
    );
    for i in list {
        let size = i.size.map_or("-".to_string(), human_size);
        let created = i.created.map_or("-".to_string(), image::store::format_time);
        let ro = if i.read_only { "yes" } else { "no" };
        let _ = writeln!(
            out,
            "{:w$}  {size:>10}  {created:19}  {ro:3}  {}",
            i.name, i.kind
        );
    }
    let _ = write!(
        out,
        "\n{} image{} listed.",
        list.len(),
        if list.len() == 1 { "" } else { "s" }
    );
    println!("{out}");
}

fn human_size(b: u64) -> String {
    const U: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else {
        format!("{v:.1}{}", U[i])
    }
}
