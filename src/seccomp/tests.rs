use super::*;
use oci_spec::runtime::LinuxSeccomp;
use std::collections::BTreeMap;

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}

fn profile(caps: &[Capability], filter: &[&str], own_userns: bool) -> LinuxSeccomp {
    default_profile(&ProfileOptions {
        caps: caps.to_vec(),
        filter: words(filter),
        own_userns,
    })
    .expect("profile")
}

/// What the profile does with a call when no argument matters: "allow", "errno N", "cond".
fn verdicts(p: &LinuxSeccomp) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in p.syscalls().as_ref().unwrap() {
        let what = match (r.action(), r.args().is_some()) {
            (_, true) => "cond".to_string(),
            (LinuxSeccompAction::ScmpActAllow, false) => "allow".to_string(),
            (LinuxSeccompAction::ScmpActErrno, false) => {
                format!("errno {}", r.errno_ret().unwrap())
            }
            (a, _) => format!("{a:?}"),
        };
        for n in r.names() {
            m.entry(n.clone()).or_default().push(what.clone());
        }
    }
    m
}

fn verdict(p: &LinuxSeccomp, name: &str) -> String {
    let v = verdicts(p);
    let Some(list) = v.get(name) else {
        return "default".into();
    };
    if list.contains(&"allow".to_string()) {
        return "allow".into();
    }
    list.iter()
        .find(|s| s.starts_with("errno"))
        .cloned()
        .unwrap_or_else(|| "cond".into())
}

/// Default caps of a berth command container (issue 8: podman's 11 + Docker's three).
fn default_caps() -> Vec<Capability> {
    use Capability::*;
    vec![
        Chown,
        DacOverride,
        Fowner,
        Fsetid,
        Kill,
        NetBindService,
        Setfcap,
        Setgid,
        Setpcap,
        Setuid,
        SysChroot,
        AuditWrite,
        Mknod,
        NetRaw,
    ]
}

const DENIED_BY_DEFAULT: &[&str] = &[
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "open_by_handle_at",
    "mount",
    "umount2",
    "fsopen",
    "fsmount",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "fspick",
    "fsconfig",
    "pivot_root",
    "unshare",
    "setns",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "swapon",
    "swapoff",
    "reboot",
    "acct",
    "quotactl",
    "syslog",
    "settimeofday",
    "clock_settime",
    "iopl",
    "ioperm",
    "lookup_dcookie",
    "nfsservctl",
    "uselib",
    "ustat",
    "sysfs",
    "vm86",
    "vm86old",
    "kcmp",
    "pidfd_getfd",
    "vhangup",
    "mbind",
    "set_mempolicy",
    "move_pages",
    "_sysctl",
    "create_module",
    "fanotify_init",
    "sethostname",
];

#[test]
fn groups_expand_nested_and_match_systemd() {
    let m = expand_group("@mount").unwrap();
    let want = [
        "chroot",
        "fsconfig",
        "fsmount",
        "fsopen",
        "fspick",
        "mount",
        "mount_setattr",
        "move_mount",
        "open_tree",
        "pivot_root",
        "umount",
        "umount2",
    ];
    assert_eq!(m.into_iter().collect::<Vec<_>>(), want);
    let svc = expand_group("@system-service").unwrap();
    for n in [
        "read",
        "openat",
        "clone",
        "setuid",
        "keyctl",
        "mlock",
        "timerfd_create",
    ] {
        assert!(svc.contains(n), "@system-service lacks {n}");
    }
    assert!(!svc.contains("mount") && !svc.contains("reboot"));
    let privileged = expand_group("@privileged").unwrap();
    assert!(privileged.contains("chown") && privileged.contains("swapon"));
    assert!(privileged.contains("kexec_load") && privileged.contains("iopl"));
    let known = known_syscalls();
    assert!(known.len() > 450, "{}", known.len());
    assert!(known.contains("sgetmask"), "@known includes @obsolete");
    // Every member of every group is a known system call.
    for g in groups::GROUPS {
        for m in expand_group(g.name).unwrap() {
            assert!(known.contains(m), "{m} of {} is not in @known", g.name);
        }
    }
    // Every name the default profile lists is known (no typos).
    for n in BASE_ALLOW
        .iter()
        .chain(CAP_GATED.iter().flat_map(|(_, n)| n.iter()))
    {
        assert!(
            known.contains(n) || *n == "lsm_get_self_attr",
            "{n} is not in @known"
        );
    }
}

#[test]
fn filter_words_parse_like_nspawn() {
    let (a, d) = parse_filter(&words(&["@keyring ptrace", "~@swap reboot", "~kcmp"])).unwrap();
    assert_eq!(
        a.iter().map(String::as_str).collect::<Vec<_>>(),
        ["add_key", "keyctl", "ptrace", "request_key"]
    );
    assert_eq!(
        d.iter().map(String::as_str).collect::<Vec<_>>(),
        ["kcmp", "reboot", "swapoff", "swapon"]
    );
    let (a, d) = parse_filter(&words(&["", "  "])).unwrap();
    assert!(a.is_empty() && d.is_empty());
}

#[test]
fn unknown_names_are_clear_errors() {
    let e = parse_filter(&words(&["read foo"])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown system call \"foo\" in --system-call-filter"
    );
    let e = parse_filter(&words(&["~@nope"])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown system call group \"@nope\" in --system-call-filter"
    );
    let e = default_profile(&ProfileOptions {
        filter: words(&["~mount x"]),
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        matches!(e, SeccompError::UnknownSyscall(ref s) if s == "x"),
        "{e}"
    );
}

#[test]
fn denying_what_the_launcher_needs_is_refused_up_front() {
    let e = default_profile(&ProfileOptions {
        filter: words(&["~@file-system"]),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "--system-call-filter denies chdir, which berth needs after loading the filter to start the container"
    );
    // Everything the launcher needs is allowed by the default filter.
    let p = profile(&default_caps(), &[], false);
    for n in NEEDED_BY_LAUNCHER {
        assert_eq!(verdict(&p, n), "allow", "{n}");
    }
}

#[test]
fn default_denies_the_dangerous_calls_with_eperm() {
    let p = profile(&default_caps(), &[], false);
    for n in DENIED_BY_DEFAULT {
        assert_eq!(verdict(&p, n), "errno 1", "{n}");
    }
    assert_eq!(verdict(&p, "clone3"), "errno 38");
    assert_eq!(verdict(&p, "clone"), "cond");
    assert_eq!(verdict(&p, "personality"), "cond");
    for n in [
        "read",
        "openat",
        "execve",
        "ptrace",
        "chroot",
        "socket",
        "mknod",
        "ioctl",
        "seccomp",
        "fchmodat2",
    ] {
        assert_eq!(verdict(&p, n), "allow", "{n}");
    }
    // Calls newer than the profile are not listed: they get the default action (ENOSYS).
    assert_eq!(verdict(&p, "listmount"), "default");
}

#[test]
fn capabilities_open_their_groups() {
    use Capability::*;
    let cases: &[(Capability, &[&str])] = &[
        (
            SysAdmin,
            &[
                "mount",
                "umount2",
                "unshare",
                "setns",
                "clone",
                "clone3",
                "pivot_root",
                "fsopen",
            ],
        ),
        (SysPtrace, &["kcmp", "pidfd_getfd", "process_madvise"]),
        (SysBoot, &["reboot"]),
        (SysModule, &["init_module", "finit_module", "delete_module"]),
        (SysTime, &["settimeofday", "clock_settime"]),
        (SysRawio, &["iopl", "ioperm"]),
        (SysPacct, &["acct"]),
        (Syslog, &["syslog"]),
        (Bpf, &["bpf"]),
        (Perfmon, &["perf_event_open"]),
        (DacReadSearch, &["open_by_handle_at"]),
        (SysNice, &["mbind", "set_mempolicy"]),
    ];
    let base = profile(&default_caps(), &[], false);
    for (cap, names) in cases {
        let mut caps = default_caps();
        caps.push(*cap);
        let p = profile(&caps, &[], false);
        for n in *names {
            assert_ne!(verdict(&base, n), "allow", "{n} allowed without {cap:?}");
            assert_eq!(verdict(&p, n), "allow", "{n} with {cap:?}");
        }
    }
    // Never allowed, whatever the capabilities: keyrings are not namespaced, kexec, io_uring.
    let all = profile(&[SysAdmin, SysBoot, SysModule, SysPtrace], &[], false);
    for n in [
        "keyctl",
        "add_key",
        "kexec_load",
        "io_uring_setup",
        "userfaultfd",
    ] {
        assert_eq!(verdict(&all, n), "errno 1", "{n}");
    }
}

#[test]
fn own_user_namespace_allows_namespaces_and_mounts() {
    let p = profile(&default_caps(), &[], true);
    for n in [
        "unshare",
        "setns",
        "clone",
        "clone3",
        "mount",
        "umount2",
        "pivot_root",
    ] {
        assert_eq!(verdict(&p, n), "allow", "{n}");
    }
    assert_eq!(verdict(&p, "keyctl"), "errno 1");
}

#[test]
fn user_filter_adds_and_removes() {
    let p = profile(&default_caps(), &["@keyring", "~@network-io ptrace"], false);
    assert_eq!(verdict(&p, "keyctl"), "allow");
    assert_eq!(verdict(&p, "socket"), "errno 1");
    assert_eq!(verdict(&p, "ptrace"), "errno 1");
    // A deny wins over an allow, in either order.
    let p = profile(&default_caps(), &["~mknod", "mknod"], false);
    assert_eq!(verdict(&p, "mknod"), "errno 1");
    let p = profile(&default_caps(), &["~clone clone3"], false);
    assert_eq!(verdict(&p, "clone"), "errno 1");
    assert_eq!(verdict(&p, "clone3"), "errno 1");
    // Allowing a cap-gated call by name is the user's explicit choice.
    let p = profile(&default_caps(), &["@mount"], false);
    assert_eq!(verdict(&p, "mount"), "allow");
}

#[test]
fn profile_json_has_the_oci_shape() {
    let p = profile(&default_caps(), &[], false);
    let v = serde_json::to_value(&p).unwrap();
    assert_eq!(v["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(v["defaultErrnoRet"], 38);
    assert_eq!(
        v["architectures"],
        serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
    );
    let rules = v["syscalls"].as_array().unwrap();
    let clone_allow = rules
        .iter()
        .find(|r| r["names"] == serde_json::json!(["clone"]) && r["action"] == "SCMP_ACT_ALLOW")
        .unwrap();
    assert_eq!(
        clone_allow["args"],
        serde_json::json!([{"index": 0, "value": 2114060288u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}])
    );
    let clone3 = rules
        .iter()
        .find(|r| r["names"] == serde_json::json!(["clone3"]))
        .unwrap();
    assert_eq!(clone3["action"], "SCMP_ACT_ERRNO");
    assert_eq!(clone3["errnoRet"], 38);
    // No name is in two unconditional rules, and it round-trips through JSON.
    let mut seen = BTreeSet::new();
    for r in rules.iter().filter(|r| r.get("args").is_none()) {
        for n in r["names"].as_array().unwrap() {
            assert!(seen.insert(n.as_str().unwrap().to_string()), "{n} twice");
        }
    }
    let back: LinuxSeccomp = serde_json::from_value(v).unwrap();
    assert_eq!(back, p);
}

// ---- compiled behaviour: fork, load the filter in the child, make raw system calls ----

mod live {
    use super::*;
    use crate::seccomp::bpf::{compile_cached, compile_uncached};
    use std::time::Instant;

    /// Runs `call` in a forked child after `setup` and (if given) the filter; returns Ok(())
    /// if the call succeeded, Err(errno) if it failed. The child only makes system calls.
    fn run(bpf: Option<&Bpf>, setup: fn(), call: fn() -> i64) -> Result<(), i32> {
        // SAFETY: the child only makes async-signal-safe system calls and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            setup();
            if bpf.is_some_and(|b| b.load().is_err()) {
                unsafe { libc::_exit(250) };
            }
            let r = call();
            let code = if r >= 0 { 0 } else { (-r) as i32 };
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "child died: status {status:#x}");
        match libc::WEXITSTATUS(status) {
            0 => Ok(()),
            250 => panic!("loading the filter failed"),
            251 => panic!("making a private mount namespace failed"),
            e => Err(e),
        }
    }

    /// A raw x86-64 system call: -errno on failure.
    fn sys(nr: i64, a: [u64; 6]) -> i64 {
        let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
        if r < 0 {
            -(nix::errno::Errno::last_raw() as i64)
        } else {
            r
        }
    }

    /// The same through the i386 ABI (`int $0x80`): 32-bit registers, i386 numbers.
    fn sys_i386(nr: u32, a: [u32; 3]) -> i64 {
        let r: u32;
        unsafe {
            std::arch::asm!("push rbx", "mov ebx, {a0:e}", "int 0x80", "pop rbx",
                a0 = in(reg) a[0], inlateout("eax") nr => r, in("ecx") a[1], in("edx") a[2]);
        }
        r as i32 as i64
    }

    const X32: i64 = 0x4000_0000;

    fn nothing() {}
    /// In the forked child: a private mount namespace with a fresh /tmp. Never panics (a panic
    /// would unwind into a copy of the test harness); exits 251 instead.
    fn private_mounts() {
        unsafe {
            let private = libc::unshare(libc::CLONE_NEWNS) == 0
                && libc::mount(
                    c"none".as_ptr(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) == 0
                && libc::mount(
                    c"none".as_ptr(),
                    c"/tmp".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    std::ptr::null(),
                ) == 0;
            if !private {
                libc::_exit(251);
            }
        }
    }

    fn default_bpf() -> Bpf {
        compile_uncached(&profile(&default_caps(), &[], false)).unwrap()
    }

    /// Asserts the call is EPERM (or `want`) under the filter and something else without it.
    fn blocked(bpf: &Bpf, setup: fn(), call: fn() -> i64, want: i32, what: &str) {
        let with = run(Some(bpf), setup, call);
        let without = run(None, setup, call);
        assert_eq!(with, Err(want), "{what} under the filter");
        assert_ne!(
            without,
            Err(want),
            "{what} without the filter already fails the same way"
        );
    }

    #[test]
    fn blocks_dangerous_calls_on_x86_64() {
        let b = default_bpf();
        let e = libc::EPERM;
        blocked(
            &b,
            nothing,
            || sys(libc::SYS_keyctl, [0, (-3i64) as u64, 0, 0, 0, 0]),
            e,
            "keyctl",
        );
        blocked(
            &b,
            nothing,
            || {
                sys(
                    libc::SYS_unshare,
                    [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0],
                )
            },
            e,
            "unshare(NEWUSER)",
        );
        blocked(
            &b,
            nothing,
            || sys(libc::SYS_unshare, [libc::CLONE_NEWNS as u64, 0, 0, 0, 0, 0]),
            e,
            "unshare(NEWNS)",
        );
        blocked(
            &b,
            nothing,
            || sys(libc::SYS_kexec_load, [0, 0, 0, 0xdead_0000, 0, 0]),
            e,
            "kexec_load",
        );
        blocked(
            &b,
            nothing,
            || sys(libc::SYS_init_module, [0, 0, c"".as_ptr() as u64, 0, 0, 0]),
            e,
            "init_module",
        );
        blocked(
            &b,
            nothing,
            || {
                sys(
                    libc::SYS_userfaultfd,
                    [libc::O_CLOEXEC as u64, 0, 0, 0, 0, 0],
                )
            },
            e,
            "userfaultfd",
        );
        blocked(
            &b,
            nothing,
            || sys(libc::SYS_bpf, [0, 0, 0, 0, 0, 0]),
            e,
            "bpf",
        );
        blocked(
            &b,
            nothing,
            || sys(libc::SYS_io_uring_setup, [1, 0, 0, 0, 0, 0]),
            e,
            "io_uring_setup",
        );
        blocked(
            &b,
            private_mounts,
            || {
                sys(
                    libc::SYS_mount,
                    [
                        c"none".as_ptr() as u64,
                        c"/mnt".as_ptr() as u64,
                        c"tmpfs".as_ptr() as u64,
                        0,
                        0,
                        0,
                    ],
                )
            },
            e,
            "mount tmpfs",
        );
        blocked(
            &b,
            nothing,
            || sys(libc::SYS_clone3, [0, 0, 0, 0, 0, 0]),
            libc::ENOSYS,
            "clone3",
        );
        // clone with a namespace flag: EPERM; a plain fork-like clone still works.
        blocked(
            &b,
            nothing,
            || {
                let r = sys(
                    libc::SYS_clone,
                    [(libc::CLONE_NEWUTS | libc::SIGCHLD) as u64, 0, 0, 0, 0, 0],
                );
                if r == 0 {
                    unsafe { libc::_exit(0) }
                }
                r.min(0)
            },
            e,
            "clone(NEWUTS)",
        );
        assert_eq!(
            run(Some(&b), nothing, || {
                let r = sys(libc::SYS_clone, [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]);
                if r == 0 {
                    unsafe { libc::_exit(0) }
                }
                r.min(0)
            }),
            Ok(())
        );
        // Argument filter: AF_VSOCK, NETLINK_AUDIT, TIOCSTI, block devices.
        blocked(
            &b,
            nothing,
            || sys(libc::SYS_socket, [40, 1, 0, 0, 0, 0]),
            e,
            "socket(AF_VSOCK)",
        );
        blocked(
            &b,
            nothing,
            || sys(libc::SYS_socket, [40 | 1 << 32, 1, 0, 0, 0, 0]),
            e,
            "socket(AF_VSOCK|high bits)",
        );
        blocked(
            &b,
            nothing,
            || sys(libc::SYS_socket, [16, 3, 9, 0, 0, 0]),
            libc::EAFNOSUPPORT,
            "socket(NETLINK_AUDIT)",
        );
        assert_eq!(
            run(Some(&b), nothing, || sys(
                libc::SYS_socket,
                [1, 1, 0, 0, 0, 0]
            )),
            Ok(())
        );
        blocked(
            &b,
            nothing,
            || {
                let c = 0u8;
                sys(
                    libc::SYS_ioctl,
                    [0, 0x5412, &c as *const u8 as u64, 0, 0, 0],
                )
            },
            e,
            "ioctl(TIOCSTI)",
        );
        blocked(
            &b,
            private_mounts,
            || {
                sys(
                    libc::SYS_mknod,
                    [
                        c"/tmp/berth-probe-blk".as_ptr() as u64,
                        (libc::S_IFBLK | 0o600) as u64,
                        0x0801,
                        0,
                        0,
                        0,
                    ],
                )
            },
            e,
            "mknod(block)",
        );
        blocked(
            &b,
            private_mounts,
            || {
                sys(
                    libc::SYS_mknodat,
                    [
                        libc::AT_FDCWD as u64,
                        c"/tmp/berth-probe-chr".as_ptr() as u64,
                        (libc::S_IFCHR | 0o600) as u64,
                        0x0103,
                        0,
                        0,
                    ],
                )
            },
            e,
            "mknodat(char)",
        );
        // An overlayfs whiteout (character device 0:0) and a fifo may still be made.
        let whiteout = || {
            let path = c"/tmp/berth-probe-whiteout".as_ptr() as u64;
            sys(
                libc::SYS_mknod,
                [path, (libc::S_IFCHR | 0o600) as u64, 0, 0, 0, 0],
            )
        };
        assert_eq!(run(Some(&b), private_mounts, whiteout), Ok(()));
        let fifo = || {
            let path = c"/tmp/berth-probe-fifo".as_ptr() as u64;
            sys(
                libc::SYS_mknod,
                [path, (libc::S_IFIFO | 0o600) as u64, 0, 0, 0, 0],
            )
        };
        assert_eq!(run(Some(&b), private_mounts, fifo), Ok(()));
        // Ordinary life goes on.
        assert_eq!(
            run(Some(&b), nothing, || sys(libc::SYS_getpid, [0; 6])),
            Ok(())
        );
        assert_eq!(
            run(Some(&b), nothing, || sys(
                libc::SYS_personality,
                [0xffff_ffff, 0, 0, 0, 0, 0]
            )),
            Ok(())
        );
        assert_eq!(
            run(Some(&b), nothing, || sys(
                libc::SYS_personality,
                [0x0040_0000, 0, 0, 0, 0, 0]
            )),
            Err(libc::ENOSYS)
        );
    }

    #[test]
    fn blocks_the_same_calls_through_i386_and_x32() {
        let b = default_bpf();
        let e = libc::EPERM;
        // i386 numbers: keyctl 288, unshare 310, kexec_load 283, bpf 357, getpid 20.
        blocked(
            &b,
            nothing,
            || sys_i386(288, [0, (-3i32) as u32, 0]),
            e,
            "i386 keyctl",
        );
        blocked(
            &b,
            nothing,
            || sys_i386(310, [libc::CLONE_NEWUSER as u32, 0, 0]),
            e,
            "i386 unshare",
        );
        blocked(
            &b,
            nothing,
            || sys_i386(283, [0, 0, 0]),
            e,
            "i386 kexec_load",
        );
        blocked(&b, nothing, || sys_i386(357, [0, 0, 0]), e, "i386 bpf");
        assert_eq!(run(Some(&b), nothing, || sys_i386(20, [0; 3])), Ok(()));
        // x32: this kernel may lack the x32 ABI (then ENOSYS without the filter); the filter
        // must answer EPERM before the kernel looks.
        blocked(
            &b,
            nothing,
            || sys(X32 | libc::SYS_keyctl, [0, (-3i64) as u64, 0, 0, 0, 0]),
            e,
            "x32 keyctl",
        );
        blocked(
            &b,
            nothing,
            || {
                sys(
                    X32 | libc::SYS_unshare,
                    [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0],
                )
            },
            e,
            "x32 unshare",
        );
        blocked(
            &b,
            nothing,
            || sys(X32 | libc::SYS_bpf, [0; 6]),
            e,
            "x32 bpf",
        );
    }

    #[test]
    fn capabilities_lift_the_blocks() {
        let mut caps = default_caps();
        caps.push(Capability::SysAdmin);
        let b = compile_uncached(&profile(&caps, &[], false)).unwrap();
        assert_eq!(
            run(Some(&b), nothing, || sys(
                libc::SYS_unshare,
                [libc::CLONE_NEWNS as u64, 0, 0, 0, 0, 0]
            )),
            Ok(())
        );
        let b = compile_uncached(&profile(&default_caps(), &["~dup"], false)).unwrap();
        assert_eq!(
            run(Some(&b), nothing, || sys(libc::SYS_dup, [2, 0, 0, 0, 0, 0])),
            Err(libc::EPERM)
        );
    }

    #[test]
    fn cache_round_trips_and_survives_corruption() {
        let dir = tempdir();
        let t = Instant::now();
        let p = profile(&default_caps(), &[], false);
        let build = t.elapsed();
        let t = Instant::now();
        let fresh = compile_uncached(&p).unwrap();
        let uncached = t.elapsed();
        assert_eq!(fresh.programs(), 2);
        assert!(fresh.instructions() < 4096, "{}", fresh.instructions());

        let first = compile_cached(&p, Some(dir.path())).unwrap();
        assert_eq!(first, fresh);
        let entries: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        let t = Instant::now();
        let hit = compile_cached(&p, Some(dir.path())).unwrap();
        let cached = t.elapsed();
        assert_eq!(hit, fresh);
        eprintln!(
            "seccomp: profile {build:?}, compile {uncached:?} ({} programs, {} insns), cache hit {cached:?}",
            fresh.programs(),
            fresh.instructions()
        );

        // Corrupt the entry: it is ignored and rewritten.
        let mut raw = std::fs::read(&entries[0]).unwrap();
        let mid = raw.len() / 2;
        raw[mid] ^= 0xff;
        std::fs::write(&entries[0], &raw).unwrap();
        assert_eq!(compile_cached(&p, Some(dir.path())).unwrap(), fresh);
        assert_ne!(
            std::fs::read(&entries[0]).unwrap(),
            raw,
            "corrupt entry was not rewritten"
        );
        std::fs::write(&entries[0], &raw[..10]).unwrap();
        assert_eq!(compile_cached(&p, Some(dir.path())).unwrap(), fresh);

        // Another profile gets another entry.
        let q = profile(&default_caps(), &["@keyring"], false);
        assert_ne!(compile_cached(&q, Some(dir.path())).unwrap(), fresh);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);

        // A directory others can write to is not trusted.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let before: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        std::fs::write(&before[0], b"garbage").unwrap();
        let r = profile(&default_caps(), &["@pkey"], false);
        compile_cached(&r, Some(dir.path())).unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "wrote into an open dir"
        );
    }

    #[test]
    fn cache_keeps_the_newest_entries() {
        let dir = tempdir();
        let t0 = std::time::SystemTime::now();
        for i in 0..6u64 {
            let p = dir.path().join(format!("{i}.bpf"));
            std::fs::write(&p, b"x").unwrap();
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(t0 - std::time::Duration::from_secs(100 - i))
                .unwrap();
        }
        std::fs::write(dir.path().join("other"), b"not an entry").unwrap();
        crate::seccomp::bpf::prune(dir.path(), 4);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["2.bpf", "3.bpf", "4.bpf", "5.bpf", "other"]);
    }

    struct TempDir(std::path::PathBuf);
    impl TempDir {
        fn path(&self) -> &std::path::Path {
            &self.0
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn tempdir() -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "berth-seccomp-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::DirBuilder::new().mode(0o700).create(&p).unwrap();
        TempDir(p)
    }
    use std::os::unix::fs::DirBuilderExt;
}
