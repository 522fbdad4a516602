//! The hand-written parts of the man pages: what clap's definitions cannot say (description,
//! environment, files, examples, the unit template). Options and commands are NOT described
//! here: their text is the doc comments in src/cli.rs, which `--help` shows too.
//!
//! Markup: `code` is set in bold (commands, options, paths, other pages), *word* in italics
//! (placeholders). A block with `needs` is shown only while the command line has every named
//! word ("run --boot": the run command's --boot option; "import-tar": a command; "--store": a
//! global option), so the pages follow the CLI as branches land. Every `berth ...` line of an
//! example is parsed with the real CLI by a test, and every `--option` named in shown text must
//! exist.

pub struct Block {
    pub needs: &'static [&'static str],
    pub kind: Kind,
}

pub enum Kind {
    /// A paragraph.
    P(&'static str),
    /// A tagged paragraph: the term, then its description.
    Item(&'static str, &'static str),
    /// An example: what it does, then the shell lines, one command a line.
    Example(&'static str, &'static str),
}

const fn p(text: &'static str) -> Block {
    Block {
        needs: &[],
        kind: Kind::P(text),
    }
}

const fn item(term: &'static str, text: &'static str) -> Block {
    Block {
        needs: &[],
        kind: Kind::Item(term, text),
    }
}

const fn ex(what: &'static str, lines: &'static str) -> Block {
    Block {
        needs: &[],
        kind: Kind::Example(what, lines),
    }
}

impl Block {
    const fn needs(self, needs: &'static [&'static str]) -> Block {
        Block { needs, ..self }
    }
}

/// berth(1) DESCRIPTION.
pub const DESCRIPTION: &[Block] = &[
    p(
        "`berth` runs a command, or a whole operating system tree, in a container, in the style \
       of `systemd-nspawn`(1): one command, nspawn's option names with nspawn's meanings, and \
       defaults that make the container a security boundary (see `berth-run`(1), SECURITY \
       DEFAULTS).",
    ),
    p(
        "A container gets its own mount, PID, UTS, IPC and cgroup namespaces (and network \
       namespace with `--private-network`). The tree becomes its root through pivot_root(2), \
       with no host mount visible. It gets /proc with /proc/sys read-only and kernel-internal \
       files masked; /sys read-only; a fresh /dev with null, zero, full, random, urandom, tty, \
       its own devpts instance and /dev/shm; tmpfs /run and /tmp; /run/host/os-release; and \
       the host's /etc/resolv.conf, read-only, where the tree has one. The tree itself is not \
       modified, unless `--private-users-ownership=chown` shifts its ownership.",
    ),
    p(
        "Containers are registered with systemd-machined(8) when it is reachable (see \
         `--register`), so `machinectl`(1) lists, inspects and stops them beside every other \
         machine, and logs into booted ones. Each runs in a scope unit under machine.slice, \
         or, with `--keep-unit`, in the service that started it.",
    )
    .needs(&["run --register", "run --keep-unit"]),
    p(
        "Images live in the store, /var/lib/machines by default: one directory tree per image, \
       as `machinectl`(1) expects. `berth run -M` *NAME* without `-D` runs the image *NAME*, \
       as `systemd-nspawn -M` looks up /var/lib/machines/*NAME*.",
    )
    .needs(&["--store", "run -M"]),
    p(
        "With `-b`, the tree's own init boots as PID 1 and the container follows systemd's \
       container interface: $container is berth, /dev/console is a pty relayed to berth's \
       terminal, the cgroup tree is writable and delegated, SIGTERM to berth asks the system \
       to shut down (SIGRTMIN+3), and a reboot starts it again.",
    )
    .needs(&["run --boot"]),
    p("The commands are listed below; each has its own page with every option."),
];

/// berth(1) EXIT STATUS, before the table from [`crate::cli::EXIT_STATUS`].
pub const EXIT_STATUS_INTRO: &str = "`berth run` exits with the container's status:";

/// berth(1) EXIT STATUS, after the table.
pub const EXIT_STATUS_OTHERS: &str = "A bad option or option value is berth's failure (125), \
    reported in one line: an unknown option before the command, a missing argument, a value \
    outside a fixed list alike. The other commands exit 0 on success and 125 on failure; \
    --help and --version exit 0.";

/// berth(1) ENVIRONMENT.
pub const ENVIRONMENT: &[Block] = &[
    item(
        "`BERTH_STORE`",
        "The image store, as `--store` sets it (default /var/lib/machines).",
    )
    .needs(&["--store"]),
    item(
        "`BERTH_IMPORT_MAX_ENTRIES`, `BERTH_IMPORT_MAX_BYTES`",
        "Lower the limits on the number of file system entries (default 1000000) and on the \
         total unpacked size in bytes (default 128 GiB) an import accepts.",
    )
    .needs(&["import-tar"]),
    item(
        "`NOTIFY_SOCKET`",
        "Set by systemd for a Type=notify service such as `berth@.service`(8): berth sends \
         READY=1 there once the container runs (with `--boot`, once the container's systemd \
         reports READY=1), and STATUS= messages.",
    )
    .needs(&["run --boot", "run --keep-unit"]),
    item(
        "`TERM`",
        "Passed into the container unless the console mode is pipe (`--console=pipe`, the \
         default when berth's standard input or output is not a terminal).",
    ),
];

/// berth(1) FILES.
pub const FILES: &[Block] = &[
    item(
        "`/var/lib/machines/`",
        "The default image store: one directory tree per image, berth's metadata in \
         .berth/, and imports in progress in hidden directories whose names start with \
         .#berth-import-. Raw disk images (*NAME*.raw) there are listed, not run.",
    )
    .needs(&["--store"]),
    item(
        "`/run/systemd/nspawn/locks/`",
        "Locks on image trees by device and inode, shared with `systemd-nspawn`(1) and \
         `machinectl`(1): `berth run` holds one on its tree while the container runs, and \
         `berth remove` and `import --force` refuse an image whose lock is held.",
    )
    .needs(&["remove"]),
    item(
        "`/run/berth/seccomp/`",
        "A cache of compiled seccomp filters, keyed by the filter's content; it is rebuilt \
         when missing.",
    ),
    item(
        "`/run/berth/uid-range/`",
        "Locks on the UID ranges that `--private-users=pick` (and `-U`) hands out, so two \
         containers never share one.",
    ),
    item(
        "`/run/host/`",
        "Inside the container: container-manager (\"berth\"), container-uuid, os-release (the \
         host's), as systemd's container interface describes.",
    ),
    item(
        "`/run/host/notify`",
        "Inside a booted container: the socket its systemd reports readiness on \
         (NOTIFY_SOCKET in its environment).",
    )
    .needs(&["run --boot"]),
    item(
        "`/etc/berth/`*NAME*`.conf`",
        "BERTH_ARGS for `berth@`*NAME*`.service`, in place of `--boot`: more berth options, \
         or a command to run instead of booting.",
    )
    .needs(&["run --keep-unit"]),
    item(
        "`/usr/lib/systemd/system/berth@.service`, `/usr/local/lib/systemd/system/berth@.service`",
        "The unit template that runs a container as a service, see `berth@.service`(8): a \
         package installs it in the first, make install (PREFIX=/usr/local) in the second.",
    )
    .needs(&["run --keep-unit"]),
];

/// Examples: berth(1) shows them all, berth-CMD(1) those whose first `berth` line runs CMD.
pub const EXAMPLES: &[Block] = &[
    ex(
        "Run one command in a tree; berth's exit status is the command's:",
        "berth run -D /var/lib/machines/debian /bin/cat /etc/os-release",
    ),
    ex(
        "Serve the host's /srv/www, read-only, from nginx in a container named web:",
        "berth run -D /var/lib/machines/web -M web --bind-ro=/srv/www:/var/www \\\n    \
         /usr/sbin/nginx -g 'daemon off;'",
    ),
    ex(
        "An interactive shell in a user namespace: root in the container is an unprivileged \
         UID on the host, and where the file system supports idmapped mounts the tree stays \
         unshifted on disk:",
        "berth run -U -D /var/lib/machines/debian",
    ),
    ex(
        "Import a root file system tarball into the store and run a command in it:",
        "berth import-tar debian-12.tar.zst debian\nberth images\nberth run -M debian /bin/bash",
    )
    .needs(&["import-tar", "images", "--store"]),
    ex(
        "Import an OCI image layout (a directory, or a tar of one), for example one written by \
         skopeo copy or umoci:",
        "berth import-oci ./alpine-layout:latest alpine",
    )
    .needs(&["import-oci"]),
    ex(
        "Boot a Debian tree and log in on its console: its systemd runs as PID 1 in a user \
         namespace; poweroff inside, or SIGTERM to berth, shuts it down and berth exits 0:",
        "berth run -b -D /var/lib/machines/debian",
    )
    .needs(&["run --boot"]),
    ex(
        "While it runs, from another terminal:",
        "machinectl login debian\nmachinectl shell debian /bin/systemctl is-system-running\n\
         machinectl poweroff debian",
    )
    .needs(&["run --boot", "run --register"]),
    ex(
        "Limit a container's memory and tasks through its scope unit:",
        "berth run -D /var/lib/machines/debian --property=MemoryMax=512M \\\n    \
         --property=TasksMax=100 /bin/sh",
    )
    .needs(&["run --property"]),
    ex(
        "Boot the image debian as a service, see `berth@.service`(8):",
        "systemctl start berth@debian\nmachinectl status debian",
    )
    .needs(&["run --keep-unit"]),
];

/// SEE ALSO entries after berth's own pages: page(section).
pub const SEE_ALSO: &[&str] = &[
    "systemd-nspawn(1)",
    "machinectl(1)",
    "systemd-machined.service(8)",
    "systemd.exec(5)",
    "user_namespaces(7)",
    "capabilities(7)",
    "seccomp(2)",
];

/// berth@.service(8), written whole: it describes units/berth@.service, which a test compares
/// with every `Key=value` named here.
pub const UNIT_NAME: &str = "berth@.service - run a berth container as a systemd service";

pub const UNIT_SYNOPSIS: &str = "`berth@`*NAME*`.service`";

pub const UNIT_DESCRIPTION: &[Block] = &[
    p(
        "`berth@.service` is a template unit: `berth@`*NAME*`.service` boots the image \
         /var/lib/machines/*NAME* with `berth run --keep-unit --register=yes -M` *NAME* \
         `--boot`: its systemd runs as PID 1, in a user namespace, as \
         `systemd-nspawn@.service` does for `systemd-nspawn`(1). BERTH_ARGS in \
         /etc/berth/*NAME*.conf replaces `--boot`: with more options (BERTH_ARGS=--boot \
         --private-network), or with a command to run instead (BERTH_ARGS=/bin/app; words \
         are split at white space, without quoting). The \
         unit's settings follow from how berth works with systemd:",
    ),
    item(
        "`Type=notify`",
        "berth sends READY=1 on $NOTIFY_SOCKET once the container's systemd reports it is \
         ready (without `--boot`, once the command runs), so `systemctl start` returns when it is up and \
         units ordered after it start after it.",
    ),
    item(
        "`KillMode=mixed`",
        "`systemctl stop` sends SIGTERM to berth alone, which passes the container's kill \
         signal to its PID 1 (SIGRTMIN+3 for a booted system: a clean shutdown; see \
         `--kill-signal`); whatever is left when the stop timeout \
         passes gets SIGKILL.",
    ),
    item(
        "`Delegate=yes`",
        "The service's cgroup is the container's: berth registers it with systemd-machined \
         (`--keep-unit`) instead of creating a scope unit, and splits it into payload/ (the \
         container, which a booted system manages itself) and supervisor/ (berth).",
    ),
    item(
        "`Slice=machine.slice`",
        "The service runs beside the other machines, so `systemd-cgtop`(1) shows it with them.",
    ),
    item(
        "`DevicePolicy=closed`",
        "With the DeviceAllow= lines, nspawn's device policy: the basic device nodes, ptys and \
         /dev/net/tun.",
    ),
    item(
        "`RestartForceExitStatus=133`",
        "systemd-nspawn's convention: a container manager that exits 133 asks to be started \
         again, as after a reboot of the container. SuccessExitStatus= keeps that, and 143 (a \
         command that ended on the SIGTERM that systemctl stop passed on), from counting as a \
         failure.",
    ),
    p(
        "`--property` applies to scope units only; under `--keep-unit` set resource limits on \
         the service itself (`systemctl set-property berth@`*NAME*`.service MemoryMax=1G`, or \
         a drop-in from `systemctl edit berth@`*NAME*).",
    ),
];

pub const UNIT_EXAMPLES: &[Block] = &[
    ex(
        "Start the container debian, look at it, and stop it:",
        "systemctl start berth@debian\nmachinectl status debian\nsystemctl stop berth@debian",
    ),
    ex(
        "Start it with the other machines when the host boots (machines.target):",
        "systemctl enable berth@debian",
    ),
    ex(
        "Give the container web a read-only view of the host's /srv/www and at most 1 GiB of \
         memory:",
        "echo 'BERTH_ARGS=--boot --bind-ro=/srv/www:/var/www' >/etc/berth/web.conf\n\
         systemctl edit berth@web        # [Service] MemoryMax=1G\n\
         systemctl restart berth@web",
    ),
];

pub const UNIT_SEE_ALSO: &[&str] = &[
    "berth(1)",
    "berth-run(1)",
    "systemd.service(5)",
    "systemd.exec(5)",
    "systemd.kill(5)",
    "systemd.resource-control(5)",
    "machinectl(1)",
    "systemd-nspawn(1)",
];
