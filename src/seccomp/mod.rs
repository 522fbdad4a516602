//! berth's default seccomp filter, as an OCI `LinuxSeccomp` (so the spec stays the one model),
//! and its compilation to BPF ([`bpf`]).
//!
//! Semantics follow Docker/moby's default profile with the ENOSYS default of containers/common
//! and systemd-nspawn:
//! - a system call unknown to the profile (newer than systemd's `@known` list) gets ENOSYS, so
//!   libc falls back to an older call;
//! - every known system call that is not allowed gets EPERM;
//! - `clone3` gets ENOSYS (its flags live in a struct a filter cannot read), so glibc falls back
//!   to `clone`, whose namespace flags (mask 0x7E020000) are denied with EPERM;
//! - keyrings, bpf, perf events, userfaultfd, kexec, modules, open_by_handle_at, every mount API,
//!   namespace creation and joining, io_uring, swap, reboot, acct, quotactl, syslog, clock
//!   setters, iopl/ioperm, ... are denied unless the capability that Docker ties them to is kept
//!   (CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_SYS_BOOT, ...);
//! - `ptrace` and `process_vm_readv/writev` are allowed without CAP_SYS_PTRACE, as Docker does on
//!   kernels >= 4.8 (where a tracer can no longer rewrite a call after the filter ran). A
//!   container cannot ptrace a host process anyway: host processes are not visible in its pid
//!   namespace, and the kernel's ptrace access check needs CAP_SYS_PTRACE over other users;
//! - with `own_userns` (the container has its own user namespace), namespace and mount calls are
//!   allowed as podman does: the kernel then checks capabilities against that namespace;
//! - argument checks a single allow-list filter cannot express (an unconditional allow always
//!   wins within one libseccomp filter) are conditional deny rules on an allowed call; [`bpf`]
//!   compiles those into a second, stacked filter: `socket(AF_VSOCK)` and `socket(AF_ALG)` get
//!   EPERM, `socket(AF_NETLINK, *, NETLINK_AUDIT)` EAFNOSUPPORT (nspawn's "audit is off"),
//!   `ioctl(TIOCSTI/TIOCLINUX)` EPERM (no keystrokes pushed into a terminal berth shares), and
//!   `mknod` of a block or character device EPERM unless CAP_SYS_ADMIN is kept: berth has no
//!   device cgroup, so a device node made in the container would open the host's device (a
//!   0:0 overlayfs whiteout stays allowed). 32-bit arguments are compared under a 0xffffffff
//!   mask, so high garbage bits cannot slip past.
//! - x86-64, i386 (`int $0x80`) and x32 (`nr | 0x40000000`) are all filtered with the same rules;
//!   any other architecture kills the process.
//!
//! `--system-call-filter` words are nspawn's: a space-separated list of names and `@groups`
//! (systemd's groups, [`groups`]); a leading `~` makes the whole word a deny list. Allowed names
//! are added on top of the default, denied ones are removed from it; a deny wins over an allow.

pub mod bpf;
pub mod groups;

pub use bpf::{Bpf, compile};

use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall,
};
use std::collections::BTreeSet;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("unknown system call \"{0}\" in --system-call-filter")]
    UnknownSyscall(String),
    #[error("unknown system call group \"{0}\" in --system-call-filter")]
    UnknownGroup(String),
    #[error(
        "--system-call-filter denies {0}, which berth needs after loading the filter to start the container"
    )]
    NeededByLauncher(String),
    #[error("compiling the seccomp filter: {0}")]
    Compile(String),
    #[error("loading the seccomp filter: {0}")]
    Load(nix::errno::Errno),
}

/// What the default profile depends on.
#[derive(Debug, Clone, Default)]
pub struct ProfileOptions {
    /// The container's bounding set: capability-gated calls are allowed only with their cap.
    pub caps: Vec<Capability>,
    /// nspawn's `--system-call-filter` words, in command-line order.
    pub filter: Vec<String>,
    /// The container has its own user namespace.
    pub own_userns: bool,
}

const EPERM: u32 = libc::EPERM as u32;
const ENOSYS: u32 = libc::ENOSYS as u32;

/// CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |
/// CLONE_NEWNET: clone with any of these is denied without CAP_SYS_ADMIN (Docker's mask).
pub const CLONE_NS_MASK: u64 = 0x7E02_0000;

/// Docker's unconditional allow list (moby profiles/seccomp/default.json) without the io_uring
/// calls (denied: their operations bypass seccomp), plus the x86 specials Docker allows per arch
/// (arch_prctl, modify_ldt), ptrace/process_vm_* (Docker: kernel >= 4.8) and fchmodat2 (glibc
/// >= 2.39 uses it for lchmod and falls back only on ENOSYS; nspawn's @file-system has it).
const BASE_ALLOW: &[&str] = &[
    "_llseek",
    "_newselect",
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "arch_prctl",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futimesat",
    "get_robust_list",
    "get_thread_area",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "io_setup",
    "io_submit",
    "ioctl",
    "ioprio_get",
    "ioprio_set",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "modify_ldt",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "process_vm_readv",
    "process_vm_writev",
    "pselect6",
    "pselect6_time64",
    "ptrace",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "set_robust_list",
    "set_thread_area",
    "set_tid_address",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "setsid",
    "setsockopt",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socket",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// Calls allowed only when the container keeps a capability (Docker's `includes.caps`, plus
/// `pivot_root` with CAP_SYS_ADMIN as nspawn's `@mount` has it).
const CAP_GATED: &[(Capability, &[&str])] = &[
    (
        Capability::SysAdmin,
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "pivot_root",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    (Capability::DacReadSearch, &["open_by_handle_at"]),
    (Capability::SysBoot, &["reboot"]),
    (Capability::SysChroot, &["chroot"]),
    (
        Capability::SysModule,
        &["delete_module", "finit_module", "init_module"],
    ),
    (Capability::SysPacct, &["acct"]),
    (
        Capability::SysPtrace,
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    (Capability::SysRawio, &["ioperm", "iopl"]),
    (
        Capability::SysTime,
        &["clock_settime", "clock_settime64", "settimeofday", "stime"],
    ),
    (Capability::SysTtyConfig, &["vhangup"]),
    (
        Capability::SysNice,
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    (Capability::Syslog, &["syslog"]),
    (Capability::Bpf, &["bpf"]),
    (Capability::Perfmon, &["perf_event_open"]),
];

/// Allowed when the container has its own user namespace (podman allows these always and lets
/// the kernel check capabilities, which then are the namespace's).
const OWN_USERNS: &[&str] = &[
    "clone",
    "clone3",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "mount",
    "mount_setattr",
    "move_mount",
    "open_tree",
    "pivot_root",
    "setns",
    "umount",
    "umount2",
    "unshare",
];

/// `personality` values Docker allows: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32 and
/// the query 0xffffffff. Other values (READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE, ...) get ENOSYS.
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

const INT_MASK: u64 = 0xffff_ffff;
const AF_NETLINK: u64 = 16;
const NETLINK_AUDIT: u64 = 9;
const AF_ALG: u64 = 38;
const AF_VSOCK: u64 = 40;
const TIOCSTI: u64 = 0x5412;
const TIOCLINUX: u64 = 0x541C;
const S_IFMT: u64 = 0o170000;
const S_IFCHR: u64 = 0o020000;
const S_IFBLK: u64 = 0o060000;

/// What the launcher's child calls between loading the filter and exec (identity, capabilities,
/// working directory, signal state, descriptors). Denying one would only make the start fail
/// later, so it is refused up front. (Its report of a failed exec goes over `sendmsg`; with
/// `~@network-io` such a failure still gives the right exit status, without the message.)
pub const NEEDED_BY_LAUNCHER: &[&str] = &[
    "capget",
    "capset",
    "chdir",
    "close_range",
    "execve",
    "exit_group",
    "prctl",
    "rt_sigaction",
    "rt_sigprocmask",
    "setgroups",
    "setresgid",
    "setresuid",
];

/// Builds berth's default filter for a container with these options.
pub fn default_profile(opts: &ProfileOptions) -> Result<LinuxSeccomp, SeccompError> {
    let (user_allow, user_deny) = parse_filter(&opts.filter)?;
    if let Some(n) = NEEDED_BY_LAUNCHER.iter().find(|n| user_deny.contains(**n)) {
        return Err(SeccompError::NeededByLauncher((*n).to_owned()));
    }
    let has = |c: Capability| opts.caps.contains(&c);

    let mut allow: BTreeSet<&str> = BASE_ALLOW.iter().copied().collect();
    for (cap, names) in CAP_GATED {
        if has(*cap) {
            allow.extend(names.iter().copied());
        }
    }
    if opts.own_userns {
        allow.extend(OWN_USERNS.iter().copied());
    }
    allow.extend(user_allow.iter().map(String::as_str));
    for name in &user_deny {
        allow.remove(name.as_str());
    }
    let denied = |n: &str| user_deny.contains(n);

    let mut rules: Vec<LinuxSyscall> = Vec::new();
    let mut special: BTreeSet<&str> = BTreeSet::new();

    rules.push(rule(
        allow.iter().copied(),
        LinuxSeccompAction::ScmpActAllow,
        None,
        vec![],
    ));

    // clone: allowed without namespace flags; with any of them EPERM (one rule per flag bit, so
    // the EPERM rules never overlap the allow rule).
    if !allow.contains("clone") && !denied("clone") {
        special.insert("clone");
        let allow_plain = vec![masked_eq(0, CLONE_NS_MASK, 0)];
        rules.push(rule(
            ["clone"],
            LinuxSeccompAction::ScmpActAllow,
            None,
            allow_plain,
        ));
        for bit in (0..64)
            .map(|b| 1u64 << b)
            .filter(|b| CLONE_NS_MASK & b != 0)
        {
            rules.push(errno_rule(["clone"], EPERM, vec![masked_eq(0, bit, bit)]));
        }
    }
    // clone3 without the right to create namespaces: ENOSYS, so glibc falls back to clone.
    if !allow.contains("clone3") && !denied("clone3") {
        special.insert("clone3");
        rules.push(errno_rule(["clone3"], ENOSYS, vec![]));
    }
    if !allow.contains("personality") && !denied("personality") {
        special.insert("personality");
        for &p in PERSONALITIES {
            rules.push(rule(
                ["personality"],
                LinuxSeccompAction::ScmpActAllow,
                None,
                vec![masked_eq(0, INT_MASK, p)],
            ));
        }
    }

    // Argument denials on allowed calls (compiled into the stacked argument filter).
    if allow.contains("socket") {
        for af in [AF_VSOCK, AF_ALG] {
            rules.push(errno_rule(
                ["socket"],
                EPERM,
                vec![masked_eq(0, INT_MASK, af)],
            ));
        }
        let audit = vec![
            masked_eq(0, INT_MASK, AF_NETLINK),
            masked_eq(2, INT_MASK, NETLINK_AUDIT),
        ];
        rules.push(errno_rule(["socket"], libc::EAFNOSUPPORT as u32, audit));
    }
    if allow.contains("ioctl") {
        for req in [TIOCSTI, TIOCLINUX] {
            rules.push(errno_rule(
                ["ioctl"],
                EPERM,
                vec![masked_eq(1, INT_MASK, req)],
            ));
        }
    }
    if !has(Capability::SysAdmin) {
        for (name, mode_arg) in [("mknod", 1usize), ("mknodat", 2)] {
            if !allow.contains(name) {
                continue;
            }
            rules.push(errno_rule(
                [name],
                EPERM,
                vec![masked_eq(mode_arg, S_IFMT, S_IFBLK)],
            ));
            let chr = vec![
                masked_eq(mode_arg, S_IFMT, S_IFCHR),
                arg(mode_arg + 1, LinuxSeccompOperator::ScmpCmpNe, 0, None),
            ];
            rules.push(errno_rule([name], EPERM, chr));
        }
    }

    let eperm: Vec<&str> = known_syscalls()
        .into_iter()
        .filter(|n| !allow.contains(n) && !special.contains(n))
        .collect();
    rules.push(errno_rule(eperm, EPERM, vec![]));

    let mut profile = LinuxSeccomp::default();
    profile
        .set_default_action(LinuxSeccompAction::ScmpActErrno)
        .set_default_errno_ret(Some(ENOSYS))
        .set_architectures(Some(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
        ]))
        .set_syscalls(Some(rules));
    Ok(profile)
}

fn rule<'a>(
    names: impl IntoIterator<Item = &'a str>,
    action: LinuxSeccompAction,
    errno: Option<u32>,
    args: Vec<LinuxSeccompArg>,
) -> LinuxSyscall {
    let mut r = LinuxSyscall::default();
    r.set_names(names.into_iter().map(str::to_owned).collect())
        .set_action(action)
        .set_errno_ret(errno)
        .set_args(if args.is_empty() { None } else { Some(args) });
    r
}

fn errno_rule<'a>(
    names: impl IntoIterator<Item = &'a str>,
    errno: u32,
    args: Vec<LinuxSeccompArg>,
) -> LinuxSyscall {
    rule(names, LinuxSeccompAction::ScmpActErrno, Some(errno), args)
}

fn arg(index: usize, op: LinuxSeccompOperator, value: u64, two: Option<u64>) -> LinuxSeccompArg {
    let b = LinuxSeccompArgBuilder::default()
        .index(index)
        .op(op)
        .value(value);
    let b = match two {
        Some(t) => b.value_two(t),
        None => b,
    };
    b.build().expect("every field has a value")
}

/// OCI's masked compare: `value` is the mask, `valueTwo` the datum.
fn masked_eq(index: usize, mask: u64, datum: u64) -> LinuxSeccompArg {
    arg(
        index,
        LinuxSeccompOperator::ScmpCmpMaskedEq,
        mask,
        Some(datum),
    )
}

fn group(name: &str) -> Option<&'static groups::Group> {
    groups::GROUPS.iter().find(|g| g.name == name)
}

/// A group's members with nested groups expanded.
pub fn expand_group(name: &str) -> Option<BTreeSet<&'static str>> {
    fn walk(g: &'static groups::Group, out: &mut BTreeSet<&'static str>) {
        for m in g.members {
            match m.strip_prefix('@') {
                Some(_) => walk(
                    group(m).expect("groups table refers to a missing group"),
                    out,
                ),
                None => {
                    out.insert(m);
                }
            }
        }
    }
    let g = group(name)?;
    let mut out = BTreeSet::new();
    walk(g, &mut out);
    Some(out)
}

/// Every system call the profile knows: systemd's `@known` (which includes `@obsolete`) and
/// every member of a group (a few, like `nfsservctl`, are only in groups).
pub fn known_syscalls() -> BTreeSet<&'static str> {
    groups::GROUPS
        .iter()
        .flat_map(|g| g.members.iter().copied())
        .filter(|m| !m.starts_with('@'))
        .collect()
}

fn is_known_name(name: &str) -> bool {
    known_syscalls().contains(name) || libseccomp::ScmpSyscall::from_name(name).is_ok()
}

/// Splits nspawn's `--system-call-filter` words into (allowed, denied) system call names.
pub fn parse_filter(
    words: &[String],
) -> Result<(BTreeSet<String>, BTreeSet<String>), SeccompError> {
    let mut allow = BTreeSet::new();
    let mut deny = BTreeSet::new();
    for word in words {
        let (negative, items) = match word.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, word.as_str()),
        };
        let target = if negative { &mut deny } else { &mut allow };
        for item in items.split_whitespace() {
            if item.starts_with('@') {
                let members = expand_group(item)
                    .ok_or_else(|| SeccompError::UnknownGroup(item.to_owned()))?;
                target.extend(members.into_iter().map(str::to_owned));
            } else if is_known_name(item) {
                target.insert(item.to_owned());
            } else {
                return Err(SeccompError::UnknownSyscall(item.to_owned()));
            }
        }
    }
    Ok((allow, deny))
}

#[cfg(test)]
mod tests;
