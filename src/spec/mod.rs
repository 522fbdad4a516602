//! The one internal model: every input (command-line flags now; image configs and OCI bundles
//! later) becomes an `oci_spec::runtime::Spec`, and the launcher executes only that.
//! berth-specific settings travel as `org.berth.*` annotations, read back through [`ext`].
//!
//! Everything that can be checked before a process is started is checked here, so that bad
//! input fails with one line and nothing on the host has been touched.

pub mod boot;
pub mod caps;
pub mod ext;
pub mod machine;
pub mod passwd;
pub mod signal;
pub mod systemd;
pub mod userns;

use crate::cli::RunArgs;
use crate::sys;
use ext::{Berth, ConsoleMode};
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDeviceBuilder, LinuxDeviceType,
    LinuxIdMappingBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, Mount, MountBuilder,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::io::IsTerminal;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("no root file system given: use -D DIR")]
    NoRoot,
    #[error("-D {0}: {1}")]
    Root(PathBuf, std::io::Error),
    #[error("-D {0}: not a directory")]
    RootNotDir(PathBuf),
    #[error(
        "invalid machine name {0:?} (1-64 characters of A-Z a-z 0-9 - _ ., no leading or trailing dot or hyphen)"
    )]
    MachineName(String),
    #[error("cannot derive a machine name from {0}: use -M NAME")]
    NoMachineName(PathBuf),
    #[error("invalid hostname {0:?}")]
    Hostname(String),
    #[error("--{flag} {value:?}: {why}")]
    Option {
        flag: &'static str,
        value: String,
        why: String,
    },
    #[error("--{flag} {value:?}: {path}: {source}")]
    Source {
        flag: &'static str,
        value: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Capability(#[from] caps::UnknownCapability),
    #[error(transparent)]
    CapabilityNotHeld(#[from] caps::NotHeld),
    #[error(transparent)]
    User(#[from] passwd::LookupError),
    #[error("-b: {0} is not an OS tree (it has no /etc/os-release or /usr/lib/os-release)")]
    NotAnOsTree(PathBuf),
    #[error("-b: no init in {0} (looked for {inits})", inits = boot::INITS.join(", "))]
    NoInit(PathBuf),
    #[error("the tree's /etc/machine-id is all zeros, which is not a valid machine id")]
    ZeroMachineId,
    #[error(transparent)]
    Userns(#[from] userns::UsernsError),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error(transparent)]
    Oci(#[from] oci_spec::OciSpecError),
    #[error(transparent)]
    Machine(#[from] systemd::MachineSpecError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn opt_err(flag: &'static str, value: &str, why: impl Into<String>) -> SpecError {
    SpecError::Option {
        flag,
        value: value.into(),
        why: why.into(),
    }
}

pub fn from_run_args(args: &RunArgs) -> Result<Spec, SpecError> {
    let root = args.directory.as_ref().ok_or(SpecError::NoRoot)?;
    let root = std::fs::canonicalize(root).map_err(|e| SpecError::Root(root.clone(), e))?;
    if !root.is_dir() {
        return Err(SpecError::RootNotDir(root));
    }
    let root_fd: OwnedFd = std::fs::File::open(&root)
        .map_err(|e| SpecError::Root(root.clone(), e))?
        .into();

    let machine = match &args.machine {
        Some(m) if machine::name_is_valid(m) => m.clone(),
        Some(m) => return Err(SpecError::MachineName(m.clone())),
        None => {
            machine::name_from_dir(&root).ok_or_else(|| SpecError::NoMachineName(root.clone()))?
        }
    };
    let hostname = args.hostname.clone().unwrap_or_else(|| machine.clone());
    if !machine::name_is_valid(&hostname) {
        return Err(SpecError::Hostname(hostname));
    }

    let console = if args.pipe {
        ConsoleMode::Pipe
    } else {
        args.console.unwrap_or_else(|| {
            if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
                ConsoleMode::Interactive
            } else if args.boot {
                // A booted system needs a /dev/console; its output still reaches berth's.
                ConsoleMode::ReadOnly
            } else {
                ConsoleMode::Pipe
            }
        })
    };
    let kill_signal = match &args.kill_signal {
        // systemd halts on SIGRTMIN+3; SIGTERM would only make it re-execute.
        None if args.boot => Some(libc::SIGRTMIN() + 3),
        None => None,
        Some(s) => {
            Some(signal::parse(s).ok_or_else(|| opt_err("kill-signal", s, "unknown signal"))?)
        }
    };

    // User namespace: -U is pick+auto when the kernel can, else off, as nspawn's -U.
    // -b without a word on user namespaces means -U (issue 8: secure by default).
    let pick = args.private_users_pick || (args.boot && args.private_users.is_none());
    let (mode, ownership) = if pick && args.private_users.is_none() {
        match userns::kernel_supports() {
            Ok(()) => (userns::Mode::Pick, userns::Ownership::Auto),
            Err(_) => (userns::Mode::No, userns::Ownership::Off),
        }
    } else {
        let m = userns::parse_mode(args.private_users.as_deref().unwrap_or("no"))?;
        (
            m,
            if pick {
                userns::Ownership::Auto
            } else {
                userns::Ownership::Off
            },
        )
    };
    let ownership = match &args.private_users_ownership {
        Some(o) => userns::Ownership::parse(o)
            .ok_or_else(|| userns::UsernsError::OwnershipSyntax(o.clone()))?,
        None => ownership,
    };
    if mode != userns::Mode::No {
        userns::kernel_supports()?;
    }
    let range = userns::resolve(mode, &root, &machine)?;
    if args.boot && range.is_none() && !args.quiet {
        eprintln!(
            "berth: warning: booting without a user namespace: the container's root is the host's root and it can reach the host"
        );
    }

    let user = match &args.user {
        Some(u) => Some(passwd::lookup(&root_fd, u)?),
        None => None,
    };
    let uuid = container_uuid(&root_fd, systemd::parse_uuid_arg(args.uuid.as_deref())?)?;

    // Capabilities: defaults, plus --capability, minus --drop-capability (nspawn's order).
    let mut caps_set: HashSet<Capability> = if args.boot {
        caps::held_of(caps::NSPAWN)
    } else {
        caps::DEFAULT.iter().copied().collect()
    };
    if args.private_network {
        caps_set.insert(Capability::NetAdmin);
    }
    let mut added = HashSet::new();
    for list in &args.capability {
        added.extend(caps::parse_list(list)?);
    }
    let mut reaching: Vec<String> = added
        .iter()
        .filter(|c| caps::HOST_REACHING.contains(c) && !caps_set.contains(c))
        .map(|c| caps::name(*c))
        .collect();
    reaching.sort();
    // In a user namespace capabilities are the namespace's, not the host's.
    if !reaching.is_empty() && !args.quiet && range.is_none() {
        eprintln!(
            "berth: warning: {} lets the container reach the host; it is no security boundary",
            reaching.join(", ")
        );
    }
    caps_set.extend(added);
    for list in &args.drop_capability {
        for c in caps::parse_list(list)? {
            caps_set.remove(&c);
        }
    }
    caps::check_held(&caps_set)?;
    let is_root = user.as_ref().is_none_or(|u| u.uid == 0);
    let mut caps_b = LinuxCapabilitiesBuilder::default()
        .bounding(caps_set.clone())
        .inheritable(HashSet::new())
        .ambient(HashSet::new());
    // As podman and Docker do: a non-root user keeps the bounding set but holds no capability.
    caps_b = if is_root {
        caps_b
            .effective(caps_set.clone())
            .permitted(caps_set.clone())
    } else {
        caps_b.effective(HashSet::new()).permitted(HashSet::new())
    };

    // Environment: nspawn's base, then the user's, then -E overrides.
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("container".into(), "berth".into()),
        ("container_uuid".into(), uuid.clone()),
    ];
    if args.boot {
        // The container's systemd reports readiness here; berth relays it (Type=notify units).
        env.push(("NOTIFY_SOCKET".into(), "/run/host/notify".into()));
    }
    let (home, uname) = match &user {
        Some(u) => (u.home.clone(), u.name.clone()),
        None => ("/root".into(), "root".into()),
    };
    env.push(("HOME".into(), home));
    env.push(("USER".into(), uname.clone()));
    env.push(("LOGNAME".into(), uname));
    if console != ConsoleMode::Pipe
        && let Ok(term) = std::env::var("TERM")
    {
        env.push(("TERM".into(), term));
    }
    for e in &args.setenv {
        let (k, v) = match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (e.clone(), std::env::var(e).unwrap_or_default()),
        };
        if k.is_empty()
            || k.contains('\0')
            || v.contains('\0')
            || k.bytes().any(|b| b.is_ascii_whitespace())
        {
            return Err(opt_err(
                "setenv",
                e,
                "expected VAR=VALUE with a valid variable name",
            ));
        }
        env.retain(|(ek, _)| *ek != k);
        env.push((k, v));
    }

    if args.boot && !boot::has_os_release(&root_fd) {
        return Err(SpecError::NotAnOsTree(root.clone()));
    }
    let login_shell = args.command.is_empty() && !args.boot;
    let command = if args.boot {
        let init = boot::find_init(&root_fd).ok_or_else(|| SpecError::NoInit(root.clone()))?;
        std::iter::once(init.to_string())
            .chain(args.command.iter().cloned())
            .collect()
    } else if login_shell {
        vec![
            user.as_ref()
                .map(|u| u.shell.clone())
                .unwrap_or_else(|| "/bin/bash".into()),
        ]
    } else {
        args.command.clone()
    };
    let cwd = match &args.chdir {
        Some(d) if d.starts_with('/') => d.clone(),
        Some(d) => return Err(opt_err("chdir", d, "must be an absolute path")),
        None => "/".into(),
    };

    let mut process = ProcessBuilder::default()
        .terminal(console != ConsoleMode::Pipe)
        .args(command)
        .env(
            env.into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
        )
        .cwd(cwd)
        .capabilities(caps_b.build()?)
        .no_new_privileges(args.no_new_privileges.unwrap_or(false));
    process = process.user(match &user {
        Some(u) => UserBuilder::default()
            .uid(u.uid)
            .gid(u.gid)
            .additional_gids(u.groups.clone())
            .build()?,
        None => UserBuilder::default().uid(0u32).gid(0u32).build()?,
    });

    let mut namespaces = vec![
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Cgroup,
    ];
    if args.private_network {
        namespaces.push(LinuxNamespaceType::Network);
    }
    if range.is_some() {
        namespaces.push(LinuxNamespaceType::User);
    }
    let namespaces = namespaces
        .into_iter()
        .map(|t| LinuxNamespaceBuilder::default().typ(t).build())
        .collect::<Result<Vec<_>, _>>()?;

    let mut mounts = api_mounts(args.boot)?;
    mounts.extend(host_files(&root_fd, args.private_network)?);
    mounts.extend(user_mounts(args)?);

    // The seccomp filter follows the capabilities the container may ever hold (Docker's rule).
    let seccomp = crate::seccomp::default_profile(&crate::seccomp::ProfileOptions {
        caps: caps_set.iter().copied().collect(),
        filter: args.system_call_filter.clone(),
        own_userns: namespaces
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::User),
    })?;

    let mut linux = LinuxBuilder::default();
    if let Some(r) = range {
        let map = vec![
            LinuxIdMappingBuilder::default()
                .container_id(0u32)
                .host_id(r.base)
                .size(r.count)
                .build()?,
        ];
        linux = linux.uid_mappings(map.clone()).gid_mappings(map);
    }
    let linux = linux
        .namespaces(namespaces)
        .seccomp(seccomp)
        .devices(default_devices()?)
        .masked_paths(MASKED.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .readonly_paths(READ_ONLY.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()?;

    let ext = Berth {
        machine,
        uuid,
        console,
        kill_signal,
        as_pid2: args.as_pid2,
        boot: args.boot,
        login_shell,
        quiet: args.quiet,
        ephemeral: args.ephemeral,
        ownership: if range.is_some() {
            ownership
        } else {
            userns::Ownership::Off
        },
    };
    let mut annotations = HashMap::new();
    ext.store(&mut annotations);

    let mut spec = SpecBuilder::default()
        .version("1.2.0")
        .root(
            RootBuilder::default()
                .path(root)
                .readonly(args.read_only)
                .build()?,
        )
        .hostname(hostname)
        .process(process.build()?)
        .mounts(mounts)
        .linux(linux)
        .annotations(annotations)
        .build()?;
    systemd::apply(args, &mut spec)?;
    Ok(spec)
}

/// Masked: nspawn's inaccessible files plus podman's. Reads yield nothing, writes fail.
pub const MASKED: &[&str] = &[
    "/proc/kallsyms",
    "/proc/kcore",
    "/proc/keys",
    "/proc/sysrq-trigger",
    "/proc/timer_list",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/timer_stats",
    "/proc/acpi",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Read-only on top of a read-only /sys: nspawn's list.
pub const READ_ONLY: &[&str] = &[
    "/proc/sys",
    "/proc/asound",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/apm",
];

fn mount(dst: &str, typ: &str, src: &str, opts: &[&str]) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(dst)
        .typ(typ)
        .source(src)
        .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()?)
}

/// The container interface's API file systems, in the order they are mounted.
fn api_mounts(boot: bool) -> Result<Vec<Mount>, SpecError> {
    // A booted systemd manages its own cgroup subtree (delegated); a command only reads it.
    let cgroup: &[&str] = if boot {
        &["nosuid", "noexec", "nodev"]
    } else {
        &["nosuid", "noexec", "nodev", "ro"]
    };
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &[
                "nosuid",
                "strictatime",
                "mode=755",
                "size=4m",
                "nr_inodes=64k",
            ],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "nodev", "mode=1777", "size=10%", "nr_inodes=400k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount("/sys/fs/cgroup", "cgroup2", "cgroup", cgroup)?,
        mount(
            "/run",
            "tmpfs",
            "tmpfs",
            &["nosuid", "nodev", "mode=755", "size=20%", "nr_inodes=800k"],
        )?,
        mount(
            "/tmp",
            "tmpfs",
            "tmpfs",
            &["nosuid", "nodev", "mode=1777", "size=10%", "nr_inodes=400k"],
        )?,
    ])
}

/// /run/host/os-release, and the host's resolv.conf where the tree has one (nspawn's
/// --resolv-conf=auto: left alone with a private network). Bound read-only, never copied, so
/// the tree is not changed.
fn host_files(root: &OwnedFd, private_network: bool) -> Result<Vec<Mount>, SpecError> {
    let mut out = Vec::new();
    let os_release = ["/etc/os-release", "/usr/lib/os-release"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    if let Some(src) = os_release {
        out.push(mount(
            "/run/host/os-release",
            "bind",
            src,
            &["bind", "ro", "nosuid", "nodev", "noexec"],
        )?);
    }
    if !private_network && Path::new("/etc/resolv.conf").exists() {
        let c = CString::new("/etc/resolv.conf").expect("static");
        let has = sys::open_in_root(root.as_fd(), &c, libc::O_PATH)
            .ok()
            .and_then(|fd| nix::sys::stat::fstat(fd.as_fd()).ok())
            .is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG);
        if has {
            out.push(mount(
                "/etc/resolv.conf",
                "bind",
                "/etc/resolv.conf",
                &["bind", "ro", "nosuid", "nodev", "noexec"],
            )?);
        }
    }
    Ok(out)
}

/// --bind, --bind-ro and --tmpfs, in nspawn's syntax.
fn user_mounts(args: &RunArgs) -> Result<Vec<Mount>, SpecError> {
    let mut out = Vec::new();
    for (flag, list, ro) in [
        ("bind", &args.bind, false),
        ("bind-ro", &args.bind_ro, true),
    ] {
        for value in list {
            let mut parts = value.splitn(3, ':');
            let src = parts.next().unwrap_or_default();
            let dst = parts.next().filter(|d| !d.is_empty()).unwrap_or(src);
            let mut opts = vec!["rbind"];
            for o in parts
                .next()
                .unwrap_or_default()
                .split(',')
                .filter(|o| !o.is_empty())
            {
                match o {
                    "rbind" => opts[0] = "rbind",
                    "norbind" => opts[0] = "bind",
                    _ => {
                        return Err(opt_err(
                            flag,
                            value,
                            format!("unknown option {o:?} (rbind, norbind)"),
                        ));
                    }
                }
            }
            if !src.starts_with('/') || !dst.starts_with('/') {
                return Err(opt_err(
                    flag,
                    value,
                    "source and destination must be absolute paths",
                ));
            }
            let path = std::fs::canonicalize(src).map_err(|source| SpecError::Source {
                flag,
                value: value.clone(),
                path: src.into(),
                source,
            })?;
            if ro {
                opts.push("ro");
            }
            out.push(mount(dst, "bind", &path.to_string_lossy(), &opts)?);
        }
    }
    for value in &args.tmpfs {
        let (dst, opts) = value.split_once(':').unwrap_or((value, ""));
        if !dst.starts_with('/') {
            return Err(opt_err(
                "tmpfs",
                value,
                "destination must be an absolute path",
            ));
        }
        let mut o = vec!["nosuid", "nodev"];
        if !opts.split(',').any(|x| x.starts_with("mode=")) {
            o.push("mode=0755");
        }
        o.extend(opts.split(',').filter(|x| !x.is_empty()));
        out.push(mount(dst, "tmpfs", "tmpfs", &o)?);
    }
    Ok(out)
}

fn default_devices() -> Result<Vec<oci_spec::runtime::LinuxDevice>, SpecError> {
    [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ]
    .into_iter()
    .map(|(name, major, minor)| {
        Ok(LinuxDeviceBuilder::default()
            .path(format!("/dev/{name}"))
            .typ(LinuxDeviceType::C)
            .major(major)
            .minor(minor)
            .file_mode(0o666u32)
            .uid(0u32)
            .gid(0u32)
            .build()?)
    })
    .collect()
}

/// nspawn's rule: a valid /etc/machine-id in the tree is the container's id; missing, empty or
/// "uninitialized" means `--uuid` if given, else a fresh random one; all zeros is refused.
fn container_uuid(root: &OwnedFd, given: Option<[u8; 16]>) -> Result<String, SpecError> {
    let c = CString::new("/etc/machine-id").expect("static");
    if let Ok(fd) = sys::open_in_root(root.as_fd(), &c, libc::O_RDONLY) {
        let mut buf = [0u8; 64];
        let n = nix::unistd::read(&fd, &mut buf).unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..n]);
        let text = text.trim();
        if !text.is_empty() && text.chars().all(|c| c == '0') {
            return Err(SpecError::ZeroMachineId);
        }
        if let Some(id) = machine::parse_id(text) {
            return Ok(machine::format_uuid(&id));
        }
    }
    if let Some(id) = given {
        return Ok(machine::format_uuid(&id));
    }
    Ok(machine::format_uuid(&machine::random_id()?))
}
