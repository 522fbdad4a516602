//! The command line. Options mean what the systemd-nspawn option of the same name means;
//! where berth differs (safer defaults), the help text says so.

use crate::spec::ext::ConsoleMode;
use clap::{Args, Parser, Subcommand, ValueEnum, ValueHint};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "Run isolated containers from directory trees and images, registered with systemd-machined",
    long_about = None,
    propagate_version = true
)]
pub struct Cli {
    /// The image store (each image a directory, as machinectl expects).
    #[arg(long, global = true, env = "BERTH_STORE", value_name = "DIR",
          default_value = crate::image::store::DEFAULT_STORE)]
    pub store: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once
pub enum Command {
    /// Run a command (or a login shell) in a new container.
    ///
    /// The container gets its own mount, PID, UTS, IPC and cgroup namespaces (and network, with
    /// --private-network), the tree as its root, fresh /dev, /proc, /sys, /run and /tmp, and the
    /// machine name as its hostname. Options mean what the systemd-nspawn option of the same name
    /// means; the defaults are safer, as the security defaults below say.
    Run(RunArgs),
    /// Import a root file system tarball (plain, gzip, zstd or xz; detected from the content)
    /// as image NAME.
    #[command(name = "import-tar")]
    ImportTar(ImportTarArgs),
    /// Import an OCI image layout (a directory, or a tar of one) as image NAME.
    #[command(name = "import-oci")]
    ImportOci(ImportOciArgs),
    /// List the images in the store.
    ///
    /// Directory trees (TYPE tar or oci for imported ones, directory for the others, SIZE the
    /// bytes of file content imported) and the raw disk images machinectl keeps there as
    /// NAME.raw (TYPE raw, SIZE the file's size), which berth does not run: berth run -M NAME
    /// on one points to systemd-nspawn -i.
    Images(ImagesArgs),
    /// Remove images from the store.
    ///
    /// An image a running container uses is refused, as machinectl remove refuses it: berth run
    /// holds a lock on its tree while the container runs (the lock systemd-nspawn and
    /// machinectl take too, in /run/systemd/nspawn/locks/). Raw disk images (NAME.raw) are
    /// removed like trees.
    Remove(RemoveArgs),
    /// Print a shell completion script (bash, zsh or fish) on standard output.
    ///
    /// make install puts the scripts where the shells look for them. To try one in the current
    /// shell: source <(berth completion bash), source <(berth completion zsh), or
    /// berth completion fish | source.
    Completion(CompletionArgs),
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell to print the script for.
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

/// `berth run`'s security defaults and the reason for them: shown after `berth run --help` and
/// as the SECURITY DEFAULTS section of berth-run(1).
pub const SECURITY_DEFAULTS: &str = "\
systemd-nspawn's own documentation says a container without a user namespace is no security \
boundary, because its root keeps CAP_SYS_ADMIN. berth's defaults close that gap: the command runs \
with the capability set of a rootful podman container (CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, \
NET_BIND_SERVICE, SETFCAP, SETGID, SETPCAP, SETUID, SYS_CHROOT, AUDIT_WRITE, MKNOD, NET_RAW; \
no CAP_SYS_ADMIN, CAP_SYS_PTRACE or CAP_SYS_MODULE), and a seccomp filter denies keyrings, bpf, \
perf events, userfaultfd, kexec, module loading, open_by_handle_at, mounts and new namespaces. \
no_new_privs stays off, as in nspawn, so set-uid programs work. --capability=all restores \
nspawn's power, with a warning that the container can reach the host. -U adds a user namespace, \
so that root in the container is an unprivileged UID on the host; -b boots in one by default, \
with nspawn's capability set within it. There the container's root may mount, but not undo \
what berth mounted: read-only /sys, /proc/sys, /run/host and --read-only roots, and the masked \
/proc files, are locked by the kernel.";

/// `berth run`'s exit status, one (status, meaning) pair a line: shown after `berth run --help`
/// and as the EXIT STATUS section of berth(1) and berth-run(1). See [`crate::exit`].
pub const EXIT_STATUS: &[(&str, &str)] = &[
    ("N", "the container's PID 1 exited with status N"),
    ("128+N", "the container's PID 1 was killed by signal N"),
    (
        "0",
        "with --boot: the system powered off or halted (one that reboots is started again)",
    ),
    (
        "125",
        "berth itself failed; one line on standard error says why",
    ),
    (
        "126",
        "the command exists in the container but cannot be executed",
    ),
    ("127", "the command does not exist in the container"),
];

/// After `berth run --help`: the security defaults and the exit status.
fn run_after_long_help() -> String {
    let mut s = format!("Security defaults: {SECURITY_DEFAULTS}\n\nExit status:");
    for (status, meaning) in EXIT_STATUS {
        s.push_str(&format!("\n  {status:<6} {meaning}"));
    }
    s
}

#[derive(Debug, Args)]
pub struct ImportCommon {
    /// Replace an existing image of the same name (not one a running container uses).
    #[arg(long)]
    pub force: bool,

    /// Mark the image read-only (the immutable flag on its directory, as machinectl does).
    #[arg(long = "read-only")]
    pub read_only: bool,

    /// Print no progress bar and no summary line.
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// Flush the file system (syncfs) before the image is published, as machinectl's
    /// --sync does.
    #[arg(long, value_name = "BOOL", default_value = "yes", value_parser = parse_bool,
          action = clap::ArgAction::Set)]
    pub sync: bool,
}

#[derive(Debug, Args)]
pub struct ImportTarArgs {
    /// The tarball, or - for standard input.
    #[arg(value_name = "FILE|-")]
    pub file: String,
    /// Name of the new image.
    pub name: String,
    #[command(flatten)]
    pub common: ImportCommon,
}

#[derive(Debug, Args)]
pub struct ImportOciArgs {
    /// The layout (directory or tar), optionally with the image's
    /// org.opencontainers.image.ref.name.
    #[arg(value_name = "LAYOUT[:REF]")]
    pub layout: String,
    /// Name of the new image.
    pub name: String,
    #[command(flatten)]
    pub common: ImportCommon,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// The images to remove.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Security defaults: podman's capability set (no CAP_SYS_ADMIN) and a seccomp \
filter, because a container without a user namespace is otherwise no security boundary; \
-U adds one. See --help.",
    after_long_help = run_after_long_help()
)]
pub struct RunArgs {
    /// Directory to use as the container's root file system. Without it, -M NAME runs the
    /// image NAME from the store (as nspawn looks up /var/lib/machines/NAME).
    #[arg(short = 'D', long = "directory", value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub directory: Option<PathBuf>,

    /// Machine name (default: the root directory's name); also the hostname, unless --hostname
    /// is given.
    #[arg(short = 'M', long = "machine", value_name = "NAME")]
    pub machine: Option<String>,

    /// Hostname inside the container, if it should differ from the machine name.
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,

    /// Run the command as this user (name or UID), looked up in the container's /etc/passwd.
    #[arg(short = 'u', long = "user", value_name = "USER")]
    pub user: Option<String>,

    /// Working directory inside the container (an absolute path; default: /).
    #[arg(long, value_name = "PATH")]
    pub chdir: Option<String>,

    /// Set an environment variable for the command: VAR=VALUE, or VAR alone to pass on berth's
    /// own value. May be repeated.
    #[arg(short = 'E', long = "setenv", value_name = "VAR[=VALUE]")]
    pub setenv: Vec<String>,

    /// Bind-mount the host path SRC at DST in the container (default: the same path); OPTS is
    /// rbind (the default, recursive) or norbind. May be repeated.
    #[arg(long, value_name = "SRC[:DST[:OPTS]]")]
    pub bind: Vec<String>,

    /// Like --bind, but read-only.
    #[arg(long = "bind-ro", value_name = "SRC[:DST[:OPTS]]")]
    pub bind_ro: Vec<String>,

    /// Mount an empty tmpfs at DST, nosuid and nodev; OPTS are tmpfs mount options (default
    /// mode=0755). May be repeated.
    #[arg(long, value_name = "DST[:OPTS]")]
    pub tmpfs: Vec<String>,

    /// Mount the root file system read-only.
    #[arg(long = "read-only")]
    pub read_only: bool,

    /// Run on a throwaway overlay (a tmpfs upper layer over the tree), so nothing the
    /// container writes persists.
    #[arg(short = 'x', long)]
    pub ephemeral: bool,

    /// Add capabilities to the default set: a comma-separated list (CAP_NET_ADMIN or NET_ADMIN),
    /// or "all".
    #[arg(long, value_name = "CAP[,CAP...]")]
    pub capability: Vec<String>,

    /// Remove capabilities from the set, after --capability: a comma-separated list, or "all".
    #[arg(long = "drop-capability", value_name = "CAP[,CAP...]")]
    pub drop_capability: Vec<String>,

    /// Set the no_new_privs flag on the command, so set-uid and file capabilities stop working
    /// (default: no, as in nspawn).
    #[arg(long = "no-new-privileges", value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "yes", value_parser = parse_bool)]
    pub no_new_privileges: Option<bool>,

    /// Change the default seccomp filter: a space-separated list of system calls and systemd's
    /// @groups to allow; with a leading ~, to deny. May be repeated; a deny wins.
    #[arg(long = "system-call-filter", value_name = "[~]SYSCALL|@GROUP ...")]
    pub system_call_filter: Vec<String>,

    /// Signal sent to the container's PID 1 when berth receives SIGTERM, SIGINT or SIGHUP
    /// (default: SIGRTMIN+3, systemd's shutdown request, with --boot; SIGKILL otherwise; as
    /// nspawn).
    #[arg(long = "kill-signal", value_name = "SIGNAL")]
    pub kill_signal: Option<String>,

    /// Run in a user namespace: no (the default), yes (the range starting at the tree's owner),
    /// pick (a free 64K range), identity, or UID[:COUNT]. Without a value: yes.
    #[arg(long = "private-users", value_name = "MODE", num_args = 0..=1, require_equals = true, default_missing_value = "yes")]
    pub private_users: Option<String>,

    /// Same as --private-users=pick --private-users-ownership=auto where the kernel has user
    /// namespaces; no user namespace otherwise.
    #[arg(short = 'U')]
    pub private_users_pick: bool,

    /// How the tree's file ownership follows the user namespace: off, chown (shift it on
    /// disk), map (an idmapped mount; the tree stays unshifted on disk) or auto (map where the
    /// file system can, else chown).
    #[arg(long = "private-users-ownership", value_name = "MODE")]
    pub private_users_ownership: Option<String>,

    /// Run in a private network namespace with only a loopback device (up); the container
    /// gets CAP_NET_ADMIN over it.
    #[arg(long = "private-network")]
    pub private_network: bool,

    /// Boot the tree's init (/usr/lib/systemd/systemd, /lib/systemd/systemd or /sbin/init) as
    /// PID 1, with the arguments given to it. Implies -U unless --private-users is given, and
    /// nspawn's capability set within that user namespace.
    #[arg(short = 'b', long = "boot", conflicts_with_all = ["as_pid2", "user"])]
    pub boot: bool,

    /// Run the command as PID 2 under a minimal init that reaps zombies and forwards signals,
    /// for commands that are not written to be PID 1.
    #[arg(short = 'a', long = "as-pid2")]
    pub as_pid2: bool,

    /// Console mode (default: interactive on a terminal; otherwise read-only with --boot, pipe
    /// without).
    #[arg(long, value_enum, value_name = "MODE")]
    pub console: Option<ConsoleMode>,

    /// Same as --console=pipe.
    #[arg(short = 'P', long)]
    pub pipe: bool,

    /// Print no status or warning messages (errors still go to standard error).
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// Register the container with systemd-machined: yes, no, or auto (register when machined
    /// is reachable; say so when there is a system bus but no machined; on hosts without a
    /// system bus run unregistered quietly). Unregistered on a host that systemd runs, the
    /// container is still put in machine-NAME.scope (in --slice, with the --property
    /// settings), started by systemd itself: machinectl does not list it, and it ends with the
    /// container. Without systemd, or with --keep-unit, berth makes the cgroup itself.
    #[arg(long, value_name = "yes|no|auto", default_value = "auto", value_parser = parse_register)]
    pub register: crate::register::Mode,

    /// Register the unit berth already runs in (as berth@.service does) instead of creating a
    /// machine-NAME.scope.
    #[arg(long = "keep-unit")]
    pub keep_unit: bool,

    /// Slice for the container's scope (default machine.slice); it must exist. Has no effect
    /// with --keep-unit or without systemd (berth's own cgroup is below berth's cgroup).
    #[arg(short = 'S', long, value_name = "SLICE")]
    pub slice: Option<String>,

    /// A unit property for the container's scope, e.g. MemoryMax=512M, CPUQuota=50%,
    /// TasksMax=100, IOWeight=200, DeviceAllow=/dev/fuse rw. Without systemd, berth applies the
    /// resource limits to its own cgroup and refuses those it cannot apply.
    #[arg(long = "property", value_name = "NAME=VALUE")]
    pub property: Vec<String>,

    /// The container's UUID (128-bit, hex or dashed), used unless the tree has a valid
    /// /etc/machine-id.
    #[arg(long, value_name = "UUID")]
    pub uuid: Option<String>,

    /// The command and its arguments (default: a login shell).
    // Everything after the command is its own; an unknown option before it is an error,
    // not a command named "--bogus".
    #[arg(trailing_var_arg = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

fn parse_register(s: &str) -> Result<crate::register::Mode, String> {
    s.parse()
}

/// systemd's boolean words.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "yes" | "y" | "true" | "t" | "on" => Ok(true),
        "0" | "no" | "n" | "false" | "f" | "off" => Ok(false),
        _ => Err(format!("expected a boolean (yes/no), got {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn unknown_options_are_errors_and_optional_values_need_equals() {
        assert!(Cli::try_parse_from(["berth", "run", "--bogus"]).is_err());
        let cli = Cli::try_parse_from(["berth", "run", "-D", "/x", "--private-users", "/bin/true"])
            .unwrap();
        let Command::Run(a) = cli.command else {
            panic!("run")
        };
        assert_eq!(a.private_users.as_deref(), Some("yes"));
        assert_eq!(a.command, ["/bin/true"]);
        let cli = Cli::try_parse_from([
            "berth",
            "run",
            "-D",
            "/x",
            "--no-new-privileges",
            "sh",
            "-c",
            "x",
        ])
        .unwrap();
        let Command::Run(a) = cli.command else {
            panic!("run")
        };
        assert_eq!(a.no_new_privileges, Some(true));
        assert_eq!(a.command, ["sh", "-c", "x"]);
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn command_after_options_keeps_its_own_flags() {
        let cli =
            Cli::try_parse_from(["berth", "run", "-D", "/x", "ls", "-l", "--bind", "y"]).unwrap();
        let Command::Run(a) = cli.command else {
            panic!("not run")
        };
        assert_eq!(a.command, ["ls", "-l", "--bind", "y"]);
        assert!(a.bind.is_empty());
    }

    #[test]
    fn systemd_integration_flags() {
        let cli = Cli::try_parse_from([
            "berth",
            "run",
            "--register=no",
            "--keep-unit",
            "-S",
            "foo.slice",
            "--property",
            "MemoryMax=1M",
            "--property=TasksMax=5",
            "--uuid",
            "0123456789abcdef0123456789abcdef",
            "true",
        ])
        .unwrap();
        let Command::Run(a) = cli.command else {
            panic!("run")
        };
        assert_eq!(a.register, crate::register::Mode::No);
        assert!(a.keep_unit);
        assert_eq!(a.slice.as_deref(), Some("foo.slice"));
        assert_eq!(a.property, ["MemoryMax=1M", "TasksMax=5"]);
        assert_eq!(a.command, ["true"]);
        let cli = Cli::try_parse_from(["berth", "run", "true"]).unwrap();
        let Command::Run(a) = cli.command else {
            panic!("run")
        };
        assert_eq!(a.register, crate::register::Mode::Auto);
        assert!(Cli::try_parse_from(["berth", "run", "--register=maybe", "true"]).is_err());
    }
}
