//! Issue 8: no host escape from a container started with default flags. Each attempt runs
//! `tests/probe/probe.c` (built with `gcc -static` at test time, bound read-only into the
//! busybox tree) inside `berth run` with default flags, and must fail. The same table runs under
//! `systemd-nspawn` with its defaults, for comparison (needs root, as CI runs it).

mod support;

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use support::*;

/// Extra context an attempt needs from the host side.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Setup {
    None,
    /// berth starts with fd 7 open on a host directory, not close-on-exec.
    InheritFd,
    /// berth starts with its working directory on a host directory outside the tree.
    HostCwd,
}

struct Attempt {
    name: &'static str,
    flags: &'static [&'static str],
    /// Probe arguments; `{HOSTPID}`, `{ROOTMAJ}` and `{ROOTMIN}` are filled in at run time.
    args: &'static [&'static str],
    /// The errno the probe must report under berth (None: any failure).
    errno: Option<&'static str>,
    setup: Setup,
}

macro_rules! attempts {
    ($($name:ident: [$($flag:expr),*] [$($arg:expr),*] => $errno:expr, $setup:expr;)*) => {
        const ATTEMPTS: &[Attempt] = &[$(Attempt {
            name: stringify!($name),
            flags: &[$($flag),*],
            args: &[$($arg),*],
            errno: $errno,
            setup: $setup,
        }),*];
        $(
            #[test]
            fn $name() {
                let a = ATTEMPTS.iter().find(|a| a.name == stringify!($name)).unwrap();
                assert_blocked(a);
            }
        )*
    };
}

const EPERM: Option<&str> = Some("EPERM");
use Setup::{HostCwd, InheritFd, None as Plain};

attempts! {
    mount_procfs: [] ["mount", "proc", "/tmp"] => EPERM, Plain;
    mount_sysfs: [] ["mount", "sysfs", "/tmp"] => EPERM, Plain;
    mount_tmpfs: [] ["mount", "tmpfs", "/tmp"] => EPERM, Plain;
    mount_cgroup_v1: [] ["mount", "cgroup", "/tmp", "memory"] => EPERM, Plain;
    mount_cgroup_v1_named: [] ["mount", "cgroup", "/tmp", "none,name=berth"] => EPERM, Plain;
    mount_cgroup2: [] ["mount", "cgroup2", "/tmp"] => EPERM, Plain;
    mount_binfmt_misc: [] ["mount", "binfmt_misc", "/tmp"] => EPERM, Plain;
    remount_proc_sys_rw: [] ["remount-rw", "/proc/sys"] => EPERM, Plain;
    remount_sys_rw: [] ["remount-rw", "/sys"] => EPERM, Plain;
    umount_masked_proc_kallsyms: [] ["umount", "/proc/kallsyms"] => EPERM, Plain;
    umount_masked_proc_keys: [] ["umount", "/proc/keys"] => EPERM, Plain;
    // Empty writes: opening for writing is the escape; nothing changes if it succeeds.
    write_core_pattern: [] ["write", "/proc/sys/kernel/core_pattern", ""] => None, Plain;
    write_sysrq_trigger: [] ["write", "/proc/sysrq-trigger", ""] => None, Plain;
    write_release_agent: [] ["write", "/sys/fs/cgroup/memory/release_agent", ""] => None, Plain;
    write_release_agent_root: [] ["write", "/sys/fs/cgroup/release_agent", ""] => None, Plain;
    mknod_block_device_and_open: [] ["mknod-blk", "/tmp/disk", "{ROOTMAJ}", "{ROOTMIN}"] => EPERM, Plain;
    mknod_block_device_in_dev: [] ["mknod-blk", "/dev/disk", "{ROOTMAJ}", "{ROOTMIN}"] => EPERM, Plain;
    mknod_kmsg_char_device: [] ["mknod-chr", "/dev/kmsg2", "1", "11"] => EPERM, Plain;
    ptrace_host_process: [] ["ptrace", "{HOSTPID}"] => None, Plain;
    kill_host_process: [] ["kill", "{HOSTPID}"] => None, Plain;
    load_module_init_module: [] ["init_module"] => EPERM, Plain;
    load_module_finit_module: [] ["finit_module"] => EPERM, Plain;
    keyctl: [] ["keyctl"] => EPERM, Plain;
    add_key: [] ["add_key"] => EPERM, Plain;
    bpf: [] ["bpf"] => EPERM, Plain;
    perf_event_open: [] ["perf_event_open"] => EPERM, Plain;
    userfaultfd: [] ["userfaultfd"] => EPERM, Plain;
    kexec_load: [] ["kexec_load"] => EPERM, Plain;
    open_by_handle_at: [] ["open_by_handle_at"] => EPERM, Plain;
    unshare_user_namespace: [] ["unshare-user"] => EPERM, Plain;
    unshare_mount_namespace: [] ["unshare-ns"] => EPERM, Plain;
    clone_new_user_namespace: [] ["clone-newuser"] => EPERM, Plain;
    i386_keyctl: [] ["i386", "keyctl"] => EPERM, Plain;
    i386_bpf: [] ["i386", "bpf"] => EPERM, Plain;
    i386_unshare_user: [] ["i386", "unshare-user"] => EPERM, Plain;
    i386_init_module: [] ["i386", "init_module"] => EPERM, Plain;
    i386_kexec_load: [] ["i386", "kexec_load"] => EPERM, Plain;
    i386_mount: [] ["i386", "mount"] => EPERM, Plain;
    i386_userfaultfd: [] ["i386", "userfaultfd"] => EPERM, Plain;
    x32_keyctl: [] ["x32", "keyctl"] => EPERM, Plain;
    x32_bpf: [] ["x32", "bpf"] => EPERM, Plain;
    x32_unshare_user: [] ["x32", "unshare-user"] => EPERM, Plain;
    x32_init_module: [] ["x32", "init_module"] => EPERM, Plain;
    x32_kexec_load: [] ["x32", "kexec_load"] => EPERM, Plain;
    x32_mount: [] ["x32", "mount"] => EPERM, Plain;
    x32_userfaultfd: [] ["x32", "userfaultfd"] => EPERM, Plain;
    read_launcher_exe_as_pid2: ["--as-pid2"] ["read", "/proc/1/exe"] => None, Plain;
    read_launcher_environ_as_pid2: ["--as-pid2"] ["read", "/proc/1/environ"] => None, Plain;
    inherited_fd: [] ["fd", "7"] => Some("EBADF"), InheritFd;
    cwd_outside_the_root: [] ["cwd-escape"] => Some("EXDEV"), HostCwd;
}

/// A host process the container must not reach; killed (by pid) when dropped.
struct HostProcess(std::process::Child);

impl HostProcess {
    fn spawn() -> Self {
        HostProcess(Command::new("sleep").arg("300").spawn().unwrap())
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn root_dev() -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata("/").unwrap().dev();
    (nix::sys::stat::major(dev), nix::sys::stat::minor(dev))
}

fn fill(args: &[&str], host_pid: u32) -> Vec<String> {
    let (maj, min) = root_dev();
    args.iter()
        .map(|a| {
            a.replace("{HOSTPID}", &host_pid.to_string())
                .replace("{ROOTMAJ}", &maj.to_string())
                .replace("{ROOTMIN}", &min.to_string())
        })
        .collect()
}

/// Runs one attempt under `runtime` (berth or nspawn, with their own leading arguments).
fn run_attempt(mut runtime: Command, tree: &Path, a: &Attempt) -> Out {
    let host = HostProcess::spawn();
    let scratch = TempDir::new("escape");
    let bind = format!("--bind-ro={}:/probe", probe().display());
    runtime
        .arg("-D")
        .arg(tree)
        .arg(&bind)
        .args(a.flags)
        .arg("/probe")
        .args(fill(a.args, host.pid()));
    runtime
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let inherited = std::fs::File::open(scratch.path()).unwrap();
    match a.setup {
        Setup::None => {}
        Setup::HostCwd => {
            runtime.current_dir(scratch.path());
        }
        Setup::InheritFd => {
            let fd = inherited.as_raw_fd();
            // SAFETY: dup2 is async-signal-safe; fd 7 is then open without CLOEXEC.
            unsafe {
                runtime.pre_exec(move || {
                    if libc::dup2(fd, 7) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
    }
    let o = runtime.output().unwrap();
    drop(host);
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn berth_cmd() -> Command {
    let mut c = berth();
    c.args(["run", "-q", "--pipe"]);
    c
}

/// The probe's verdict: Some(errno) if the attempt failed, None if it succeeded.
fn verdict(a: &Attempt, o: &Out) -> Option<String> {
    match (o.code, o.stdout.trim()) {
        (0, "ok") => None,
        (1, line) if line.starts_with("errno=") => Some(line["errno=".len()..].to_string()),
        _ => panic!("{}: the probe did not run: {o:?}", a.name),
    }
}

fn assert_blocked(a: &Attempt) {
    let o = run_attempt(berth_cmd(), busybox(), a);
    match verdict(a, &o) {
        None => panic!(
            "{}: the attempt succeeded inside a default container",
            a.name
        ),
        Some(e) => {
            if let Some(want) = a.errno {
                assert_eq!(e, want, "{}: {o:?}", a.name);
            }
        }
    }
}

/// The probe can succeed: where berth allows a call, the same attempt works. Without this, a
/// broken probe would make every test above pass.
#[test]
fn attempts_succeed_where_explicitly_allowed() {
    let img = busybox();
    let ok = |flags: &'static [&'static str], args: &'static [&'static str]| {
        let a = Attempt {
            name: "control",
            flags,
            args,
            errno: None,
            setup: Setup::None,
        };
        let o = run_attempt(berth_cmd(), img, &a);
        assert_eq!(verdict(&a, &o), None, "{flags:?} {args:?}: {o:?}");
    };
    ok(&["--capability=CAP_SYS_ADMIN"], &["mount", "tmpfs", "/tmp"]);
    ok(&["--capability=CAP_SYS_ADMIN"], &["unshare-user"]);
    // Device nodes: with CAP_SYS_ADMIN the filter lets mknod through (here: a harmless null).
    ok(
        &["--capability=CAP_SYS_ADMIN"],
        &["mknod-chr", "/dev/null2", "1", "3"],
    );
    ok(&["--system-call-filter=@keyring"], &["keyctl"]);
    ok(&[], &["i386", "getpid"]);
    ok(&["--as-pid2"], &["read", "/proc/self/exe"]);
    // clone3 is refused with ENOSYS, so that glibc falls back to clone.
    let a = Attempt {
        name: "clone3",
        flags: &[],
        args: &["clone3"],
        errno: None,
        setup: Setup::None,
    };
    let o = run_attempt(berth_cmd(), img, &a);
    assert_eq!(verdict(&a, &o).as_deref(), Some("ENOSYS"), "{o:?}");
}

#[test]
fn the_payload_runs_under_the_filter() {
    let o = sh(&[], "grep -E '^(Seccomp|NoNewPrivs)' /proc/self/status");
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("Seccomp:\t2\n"), "{o:?}");
}

#[test]
fn system_call_filter_errors_are_one_line() {
    let img = busybox().to_str().unwrap().to_owned();
    let o = run_with(
        &[
            "run",
            "-D",
            &img,
            "--system-call-filter=read nosuchcall",
            "true",
        ],
        None,
    );
    o.assert_one_line_error(
        125,
        "unknown system call \"nosuchcall\" in --system-call-filter",
    );
    let o = run_with(
        &[
            "run",
            "-D",
            &img,
            "--system-call-filter=~@nosuchgroup",
            "true",
        ],
        None,
    );
    o.assert_one_line_error(125, "unknown system call group \"@nosuchgroup\"");
    let o = run_with(
        &[
            "run",
            "-D",
            &img,
            "--system-call-filter=~@file-system",
            "true",
        ],
        None,
    );
    o.assert_one_line_error(125, "denies chdir, which berth needs");
}

#[test]
fn system_call_filter_denies_on_top_of_the_default() {
    let script = "mkdir /tmp/d; echo rc=$?";
    let o = sh(&["--system-call-filter=~mkdir mkdirat"], script);
    assert_eq!(o.stdout, "rc=1\n", "{o:?}");
    assert!(o.stderr.contains("Operation not permitted"), "{o:?}");
    let o = sh(&[], script);
    assert_eq!(o.stdout, "rc=0\n", "{o:?}");
}

/// nspawn --keep-unit splits the cgroup it runs in into payload/ and supervisor/ and leaves
/// both behind; run from the root cgroup (CI), that is at the roots of the hierarchies.
/// Removes the ones that were not there before, also when the test fails.
struct NspawnSplit(Vec<std::path::PathBuf>);

impl NspawnSplit {
    fn before() -> NspawnSplit {
        let dirs = [
            "/sys/fs/cgroup",
            "/sys/fs/cgroup/unified",
            "/sys/fs/cgroup/systemd",
        ]
        .iter()
        .flat_map(|root| ["payload", "supervisor"].map(|d| Path::new(root).join(d)))
        .filter(|d| !d.exists())
        .collect();
        NspawnSplit(dirs)
    }
}

impl Drop for NspawnSplit {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Issue 8's measure: how many of the attempts each runtime blocks with its defaults, on the
/// same tree and probe. Prints both counts; berth must block every one.
#[test]
fn count_blocked_attempts_berth_vs_nspawn() {
    let nspawn = ["/usr/bin/systemd-nspawn", "/bin/systemd-nspawn"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("systemd-nspawn (apt-get install systemd-container)");
    let tmp = TempDir::new("nspawn");
    let tree = busybox_copy(tmp.path());
    let _split = NspawnSplit::before();
    let mut berth_blocked = 0;
    let mut nspawn_blocked = 0;
    let mut nspawn_let_through = Vec::new();
    for a in ATTEMPTS {
        if verdict(a, &run_attempt(berth_cmd(), &tree, a)).is_some() {
            berth_blocked += 1;
        }
        let mut c = Command::new(nspawn);
        // --keep-unit: no scope through the bus (CI has no systemd as PID 1).
        c.args(["--register=no", "--keep-unit", "-q", "--pipe"]);
        let o = run_attempt(c, &tree, a);
        if o.stdout.trim().is_empty() {
            panic!("{}: nspawn did not run the probe: {o:?}", a.name);
        }
        match verdict(a, &o) {
            Some(_) => nspawn_blocked += 1,
            None => nspawn_let_through.push(a.name),
        }
    }
    eprintln!(
        "blocked attempts: berth {berth_blocked}/{n}, systemd-nspawn {nspawn_blocked}/{n}; \
         nspawn let through: {nspawn_let_through:?}",
        n = ATTEMPTS.len()
    );
    assert_eq!(berth_blocked, ATTEMPTS.len());
}

/// With its own user namespace (-U) the container may create nested namespaces, as podman
/// allows (the kernel then checks capabilities against that namespace); the host stays out of
/// reach: keyrings, bpf, mounts over /proc and device nodes still fail.
#[test]
fn own_user_namespace_allows_nesting_but_not_escapes() {
    let img = busybox();
    let run = |args: &'static [&'static str]| {
        let a = Attempt {
            name: "userns",
            flags: &["-U"],
            args,
            errno: None,
            setup: Setup::None,
        };
        let o = run_attempt(berth_cmd(), img, &a);
        verdict(&a, &o)
    };
    assert_eq!(run(&["unshare-user"]), None);
    assert_eq!(run(&["clone-newuser"]), None);
    let escapes: [&'static [&'static str]; 7] = [
        &["keyctl"],
        &["bpf"],
        &["mount", "proc", "/tmp"],
        &["remount-rw", "/proc/sys"],
        &["umount", "/proc/kallsyms"],
        &["mknod-blk", "/tmp/disk", "8", "0"],
        &["i386", "keyctl"],
    ];
    for args in escapes {
        assert!(run(args).is_some(), "{args:?} succeeded with -U");
    }
}
