//! The command line. Options mean what the systemd-nspawn option of the same name means;
//! where berth differs (safer defaults), the help text says so.

use crate::spec::ext::ConsoleMode;
use clap::{Args, Parser, Subcommand};
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
    Run(RunArgs),
    /// Import a root file system tarball (plain, gzip, zstd or xz; detected from the content)
    /// as image NAME.
    #[command(name = "import-tar")]
    ImportTar(ImportTarArgs),
    /// Import an OCI image layout (a directory, or a tar of one) as image NAME.
    #[command(name = "import-oci")]
    ImportOci(ImportOciArgs),
    /// List the images in the store.
    Images(ImagesArgs),
    /// Remove images from the store.
    Remove(RemoveArgs),
}

#[derive(Debug, Args)]
pub struct ImportCommon {
    /// Replace an existing image of the same name.
    #[arg(long)]
    pub force: bool,

    /// Mark the image read-only (the immutable flag on its directory, as machinectl does).
    #[arg(long = "read-only")]
    pub read_only: bool,

    /// Print no progress bar and no summary line.
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// Flush the file system (syncfs) before the image is published, as machinectl's
    /// --sync does (default yes).
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
    after_help = "Security defaults: a command runs with the capability set of a rootful podman \
container (no CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_SYS_MODULE, ...), no_new_privs is off as in \
nspawn, and a seccomp filter denies keyrings, bpf, perf events, userfaultfd, kexec, module \
loading, open_by_handle_at, mounts and new namespaces. --capability=all restores nspawn's \
power and warns that the container can reach the host.\n\n\
Exit status: the container's own status (128+N if it was killed by signal N); 125 if berth \
failed, 126 if the command cannot be executed, 127 if it does not exist."
)]
pub struct RunArgs {
    /// Directory to use as the container's root file system. Without it, -M NAME runs the
    /// image NAME from the store (as nspawn looks up /var/lib/machines/NAME).
    #[arg(short = 'D', long = "directory", value_name = "DIR")]
    pub directory: Option<PathBuf>,

    /// Machine name (default: the root directory's name). Also the hostname.
    #[arg(short = 'M', long = "machine", value_name = "NAME")]
    pub machine: Option<String>,

    /// Hostname inside the container, if it should differ from the machine name.
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,

    /// Run the command as this user (name or UID), looked up in the container's /etc/passwd.
    #[arg(short = 'u', long = "user", value_name = "USER")]
    pub user: Option<String>,

    /// Working directory inside the container.
    #[arg(long, value_name = "PATH")]
    pub chdir: Option<String>,

    /// Set an environment variable for the payload (VAR=VALUE, or VAR to pass berth's own).
    #[arg(short = 'E', long = "setenv", value_name = "VAR[=VALUE]")]
    pub setenv: Vec<String>,

    /// Bind-mount a host path: SRC[:DST[:OPTS]], OPTS being rbind or norbind.
    #[arg(long, value_name = "SRC[:DST[:OPTS]]")]
    pub bind: Vec<String>,

    /// Like --bind, read-only.
    #[arg(long = "bind-ro", value_name = "SRC[:DST[:OPTS]]")]
    pub bind_ro: Vec<String>,

    /// Mount a fresh tmpfs at DST (mode 0755 unless OPTS say otherwise).
    #[arg(long, value_name = "DST[:OPTS]")]
    pub tmpfs: Vec<String>,

    /// Mount the root file system read-only.
    #[arg(long = "read-only")]
    pub read_only: bool,

    /// Run on a throwaway overlay (a tmpfs upper layer over the tree), so nothing the
    /// container writes persists.
    #[arg(short = 'x', long)]
    pub ephemeral: bool,

    /// Add capabilities to the default set (comma-separated, or "all").
    #[arg(long, value_name = "CAP[,CAP...]")]
    pub capability: Vec<String>,

    /// Remove capabilities from the default set (comma-separated, or "all").
    #[arg(long = "drop-capability", value_name = "CAP[,CAP...]")]
    pub drop_capability: Vec<String>,

    /// Set the payload's no_new_privs flag.
    #[arg(long = "no-new-privileges", value_name = "BOOL", num_args = 0..=1,
          default_missing_value = "yes", value_parser = parse_bool)]
    pub no_new_privileges: Option<bool>,

    /// Allow (NAME, @GROUP) or, with a leading ~, deny system calls on top of the default filter.
    #[arg(long = "system-call-filter", value_name = "[~]SYSCALL|@GROUP ...")]
    pub system_call_filter: Vec<String>,

    /// Signal sent to the container's PID 1 when berth receives SIGTERM, SIGINT or SIGHUP.
    #[arg(long = "kill-signal", value_name = "SIGNAL")]
    pub kill_signal: Option<String>,

    /// User namespace: no, yes (shift from the tree's owner), pick (a free 64K range),
    /// identity, or UID[:COUNT]. Without a value: yes.
    #[arg(long = "private-users", value_name = "MODE", num_args = 0..=1, default_missing_value = "yes")]
    pub private_users: Option<String>,

    /// Same as --private-users=pick --private-users-ownership=auto, when the kernel allows.
    #[arg(short = 'U')]
    pub private_users_pick: bool,

    /// How the tree's ownership follows the user namespace: off, chown, map (idmapped mount,
    /// the tree stays unshifted on disk) or auto (map where the file system can).
    #[arg(long = "private-users-ownership", value_name = "MODE")]
    pub private_users_ownership: Option<String>,

    /// Run in a private network namespace with only the loopback device, up.
    #[arg(long = "private-network")]
    pub private_network: bool,

    /// Boot the tree's init (systemd) as PID 1; the arguments go to init. Implies a user
    /// namespace (-U) and nspawn's capability set inside it, SIGRTMIN+3 as kill signal.
    #[arg(short = 'b', long = "boot", conflicts_with_all = ["as_pid2", "user"])]
    pub boot: bool,

    /// Run the command as PID 2 under a minimal init that reaps zombies and forwards signals.
    #[arg(short = 'a', long = "as-pid2")]
    pub as_pid2: bool,

    /// Console mode (default: interactive on a terminal, pipe otherwise).
    #[arg(long, value_enum, value_name = "MODE")]
    pub console: Option<ConsoleMode>,

    /// Same as --console=pipe.
    #[arg(short = 'P', long)]
    pub pipe: bool,

    /// Print no status messages.
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// Register the container with systemd-machined: yes, no, or auto (register when machined
    /// is reachable; say so when there is a system bus but no machined; on hosts without a
    /// system bus run unregistered quietly). Unregistered, berth makes the cgroup itself.
    #[arg(long, value_name = "yes|no|auto", default_value = "auto", value_parser = parse_register)]
    pub register: crate::register::Mode,

    /// Register the unit berth already runs in (as berth@.service does) instead of creating a
    /// machine-NAME.scope.
    #[arg(long = "keep-unit")]
    pub keep_unit: bool,

    /// Slice for the container's scope (default machine.slice). Without systemd, berth's own
    /// cgroup goes under a cgroup of that name.
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
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
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
