//! `berth run` seen from inside the container and from the host (needs root, as CI runs it).

mod support;

use std::os::unix::process::CommandExt;
use std::process::Stdio;
use support::*;

fn cap_mask(names: &[&str]) -> u64 {
    names
        .iter()
        .map(|n| 1u64 << caps::Capability::from_str_cap(n))
        .fold(0, |a, b| a | b)
}

trait CapIndex {
    fn from_str_cap(n: &str) -> u8;
}
impl CapIndex for caps::Capability {
    fn from_str_cap(n: &str) -> u8 {
        n.parse::<caps::Capability>().unwrap().index()
    }
}

const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
    "CAP_AUDIT_WRITE",
    "CAP_MKNOD",
    "CAP_NET_RAW",
];

fn status_field(status: &str, field: &str) -> u64 {
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in {status}"));
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

#[test]
fn payload_is_pid_1_with_the_machine_name_as_hostname() {
    let o = sh(
        &["-M", "probe-7"],
        "echo $$; hostname; cat /proc/sys/kernel/hostname",
    );
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(o.stdout, "1\nprobe-7\nprobe-7\n");
    let o = sh(&["-M", "probe-7", "--hostname", "other"], "hostname");
    assert_eq!(o.stdout, "other\n");
}

#[test]
fn default_machine_name_comes_from_the_directory() {
    let o = sh(&[], "hostname");
    assert_eq!(o.stdout, "busybox\n", "{o:?}");
}

#[test]
fn only_the_containers_processes_are_visible() {
    let o = sh(&[], "ls /proc | grep -c '^[0-9]'");
    // sh, and the grep/ls pipeline: never the host's hundreds.
    let n: u32 = o.stdout.trim().parse().unwrap();
    assert!(n <= 4, "{o:?}");
}

#[test]
fn mount_table_is_the_container_interface_and_hides_the_host() {
    let o = sh(&[], "cat /proc/self/mountinfo");
    assert_eq!(o.code, 0, "{o:?}");
    let mounts: Vec<(String, String, String)> = o
        .stdout
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-").unwrap();
            (f[4].to_string(), f[5].to_string(), f[sep + 1].to_string())
        })
        .collect();
    let find = |p: &str| {
        mounts
            .iter()
            .find(|m| m.0 == p)
            .unwrap_or_else(|| panic!("{p} not mounted: {mounts:?}"))
    };
    assert_eq!(mounts[0].0, "/", "the tree is the top mount");
    assert_eq!(find("/proc").2, "proc");
    assert_eq!(find("/sys").2, "sysfs");
    assert!(
        find("/sys").1.split(',').any(|o| o == "ro"),
        "/sys read-only"
    );
    assert!(
        find("/proc/sys").1.split(',').any(|o| o == "ro"),
        "/proc/sys read-only"
    );
    assert_eq!(find("/dev").2, "tmpfs");
    assert_eq!(find("/dev/pts").2, "devpts");
    assert_eq!(find("/dev/shm").2, "tmpfs");
    assert_eq!(find("/run").2, "tmpfs");
    assert_eq!(find("/tmp").2, "tmpfs");
    assert_eq!(find("/sys/fs/cgroup").2, "cgroup2");
    let host_only = ["/work", "/boot", "/var/lib", "/root"];
    for m in &mounts {
        assert!(
            !host_only.iter().any(|h| m.0.starts_with(h)),
            "host mount visible: {m:?}"
        );
    }
}

#[test]
fn devpts_is_a_new_instance_with_nspawns_options() {
    let o = sh(
        &[],
        "grep ' /dev/pts ' /proc/self/mounts; readlink /dev/ptmx",
    );
    assert!(o.stdout.contains("gid=5"), "{o:?}");
    assert!(o.stdout.contains("mode=620"), "{o:?}");
    assert!(o.stdout.contains("ptmxmode=666"), "{o:?}");
    assert!(o.stdout.ends_with("pts/ptmx\n"), "{o:?}");
}

#[test]
fn masked_proc_files_yield_nothing_and_refuse_writes() {
    // The masks this kernel has: each must read empty and refuse writes.
    let candidates = [
        "/proc/kallsyms",
        "/proc/kcore",
        "/proc/keys",
        "/proc/sysrq-trigger",
        "/proc/timer_list",
    ];
    let present: Vec<&str> = candidates
        .iter()
        .copied()
        .filter(|p| std::path::Path::new(p).exists())
        .collect();
    assert!(!present.is_empty(), "the host has none of the masked files");
    let script: String = present
        .iter()
        .map(|p| format!("echo {p} $(cat {p} 2>/dev/null | wc -c); echo x 2>/dev/null > {p} && echo {p} writable; "))
        .collect();
    let o = sh(&[], &script);
    for p in &present {
        assert!(
            o.stdout.contains(&format!("{p} 0\n")),
            "{p} not empty: {o:?}"
        );
        assert!(
            !o.stdout.contains(&format!("{p} writable")),
            "{p} writable: {o:?}"
        );
    }
    // And the host really has content there (the test would be vacuous otherwise).
    let host = std::fs::read_to_string("/proc/keys")
        .unwrap_or_default()
        .len()
        + std::fs::read("/proc/kallsyms")
            .map(|v| v.len())
            .unwrap_or(0);
    assert!(host > 0);
}

#[test]
fn sys_and_proc_sys_are_read_only() {
    let o = sh(
        &[],
        "echo 1 > /proc/sys/kernel/core_pattern && echo wrote-core; echo 1 > /sys/kernel/uevent_helper && echo wrote-sys; mkdir /sys/fs/cgroup/x && echo wrote-cg; echo done",
    );
    assert_eq!(o.stdout, "done\n", "{o:?}");
}

#[test]
fn dev_has_exactly_the_standard_nodes() {
    let o = sh(
        &[],
        "ls /dev | tr '\\n' ' '; echo; stat -c '%n %t:%T %a' /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty",
    );
    let mut lines = o.stdout.lines();
    let names: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    for n in [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "mqueue", "fd",
        "stdin", "stdout", "stderr",
    ] {
        assert!(names.contains(&n), "/dev/{n} missing: {names:?}");
    }
    for n in &names {
        assert!(
            [
                "null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "mqueue",
                "fd", "stdin", "stdout", "stderr", "console"
            ]
            .contains(n),
            "unexpected /dev/{n}"
        );
    }
    let stats: Vec<&str> = lines.collect();
    assert_eq!(
        stats,
        [
            "/dev/null 1:3 666",
            "/dev/zero 1:5 666",
            "/dev/full 1:7 666",
            "/dev/random 1:8 666",
            "/dev/urandom 1:9 666",
            "/dev/tty 5:0 666"
        ]
    );
}

#[test]
fn capabilities_default_to_podmans_set_with_empty_inheritable_and_ambient() {
    let o = sh(&[], "cat /proc/self/status");
    let want = cap_mask(DEFAULT_CAPS);
    assert_eq!(status_field(&o.stdout, "CapEff:"), want, "{}", o.stdout);
    assert_eq!(status_field(&o.stdout, "CapPrm:"), want);
    assert_eq!(status_field(&o.stdout, "CapBnd:"), want);
    assert_eq!(status_field(&o.stdout, "CapInh:"), 0);
    assert_eq!(status_field(&o.stdout, "CapAmb:"), 0);
    assert_eq!(
        status_field(&o.stdout, "CapEff:")
            & cap_mask(&["CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_SYS_MODULE"]),
        0
    );
}

#[test]
fn capability_flags_add_and_drop_like_nspawn() {
    let o = sh(
        &[
            "--capability=CAP_SYS_PTRACE,net_admin",
            "--drop-capability=CAP_CHOWN",
        ],
        "cat /proc/self/status",
    );
    let want = (cap_mask(DEFAULT_CAPS) | cap_mask(&["CAP_SYS_PTRACE", "CAP_NET_ADMIN"]))
        & !cap_mask(&["CAP_CHOWN"]);
    assert_eq!(status_field(&o.stdout, "CapEff:"), want);
    assert_eq!(status_field(&o.stdout, "CapBnd:"), want);
    assert_eq!(
        o.stderr.lines().count(),
        1,
        "one warning line for a host-reaching capability: {o:?}"
    );
    assert!(o.stderr.contains("CAP_SYS_PTRACE"), "{o:?}");
    let o = sh(&["--capability=all", "-q"], "cat /proc/self/status");
    assert_ne!(
        status_field(&o.stdout, "CapEff:") & cap_mask(&["CAP_SYS_ADMIN"]),
        0
    );
}

#[test]
fn non_root_user_from_the_containers_passwd_holds_no_capabilities() {
    let o = sh(
        &["-u", "user"],
        "id; echo $HOME $USER; cat /proc/self/status",
    );
    assert_eq!(o.code, 0, "{o:?}");
    let first = o.stdout.lines().next().unwrap();
    assert!(
        first.starts_with("uid=1000(user) gid=1000(user)"),
        "{first}"
    );
    assert!(
        first.contains("10(wheel)") && first.contains("100(users)"),
        "supplementary groups: {first}"
    );
    assert!(o.stdout.contains("/home/user user\n"));
    assert_eq!(status_field(&o.stdout, "CapEff:"), 0);
    assert_eq!(status_field(&o.stdout, "CapBnd:"), cap_mask(DEFAULT_CAPS));
    // A numeric uid the tree does not know is allowed, as in nspawn.
    let o = sh(&["-u", "4242"], "id -u; id -g");
    assert_eq!(o.stdout, "4242\n4242\n", "{o:?}");
}

#[test]
fn environment_has_the_container_interface_and_setenv() {
    let o = sh(&["-E", "FOO=bar baz", "--setenv=PATH=/bin"], "env");
    assert!(o.stdout.contains("container=berth\n"), "{o:?}");
    assert!(o.stdout.contains("FOO=bar baz\n"));
    assert!(o.stdout.contains("PATH=/bin\n"));
    let uuid = o
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("container_uuid="))
        .unwrap();
    assert_eq!(uuid.len(), 36);
    assert_eq!(uuid.matches('-').count(), 4);
}

#[test]
fn machine_id_of_the_tree_becomes_the_container_uuid() {
    let tmp = TempDir::new("mid");
    let root = busybox_copy(tmp.path());
    std::fs::write(
        root.join("etc/machine-id"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    let o = run_with(
        &[
            "run",
            "-D",
            root.to_str().unwrap(),
            "/bin/sh",
            "-c",
            "echo $container_uuid; cat /run/host/container-uuid",
        ],
        None,
    );
    assert_eq!(
        o.stdout, "01234567-89ab-cdef-0123-456789abcdef\n01234567-89ab-cdef-0123-456789abcdef\n",
        "{o:?}"
    );
    std::fs::write(
        root.join("etc/machine-id"),
        "00000000000000000000000000000000\n",
    )
    .unwrap();
    let o = run_with(&["run", "-D", root.to_str().unwrap(), "/bin/true"], None);
    o.assert_one_line_error(125, "all zeros");
}

#[test]
fn run_host_describes_the_manager_and_the_host() {
    let o = sh(
        &[],
        "cat /run/host/container-manager; cat /run/host/os-release | grep '^ID='; touch /run/host/x 2>/dev/null && echo writable",
    );
    let host_id = std::fs::read_to_string("/etc/os-release")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("ID="))
        .unwrap()
        .to_string();
    assert_eq!(o.stdout, format!("berth\n{host_id}\n"), "{o:?}");
}

#[test]
fn resolv_conf_is_the_hosts_and_the_tree_is_left_unchanged() {
    let tmp = TempDir::new("resolv");
    let root = busybox_copy(tmp.path());
    std::fs::write(root.join("etc/resolv.conf"), "# tree\n").unwrap();
    let o = run_with(
        &[
            "run",
            "-D",
            root.to_str().unwrap(),
            "/bin/cat",
            "/etc/resolv.conf",
        ],
        None,
    );
    assert_eq!(
        o.stdout,
        std::fs::read_to_string("/etc/resolv.conf").unwrap(),
        "{o:?}"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/resolv.conf")).unwrap(),
        "# tree\n"
    );
    // With a private network it is left alone, as nspawn's --resolv-conf=auto does.
    let o = run_with(
        &[
            "run",
            "-D",
            root.to_str().unwrap(),
            "--private-network",
            "/bin/cat",
            "/etc/resolv.conf",
        ],
        None,
    );
    assert_eq!(o.stdout, "# tree\n");
}

#[test]
fn exit_status_is_the_payloads() {
    assert_eq!(sh(&[], "exit 42").code, 42);
    assert_eq!(sh(&[], "exit 0").code, 0);
    // Killed by a signal: 128+N, as a shell reports it.
    assert_eq!(sh(&["--as-pid2"], "kill -9 $$").code, 137);
}

#[test]
fn missing_and_unexecutable_commands_exit_127_and_126() {
    let img = busybox().to_str().unwrap();
    let o = run_with(&["run", "-D", img, "no-such-command"], None);
    o.assert_one_line_error(127, "no-such-command");
    let o = run_with(&["run", "-D", img, "/etc/passwd"], None);
    o.assert_one_line_error(126, "/etc/passwd");
}

#[test]
fn bad_input_fails_with_one_line_and_leaves_nothing() {
    let before = host_mounts();
    let img = busybox().to_str().unwrap();
    let tmp = TempDir::new("bad");
    let file = tmp.path().join("file");
    std::fs::write(&file, "").unwrap();
    let file = file.to_str().unwrap();
    let missing = tmp.path().join("missing");
    let missing = missing.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["run", "/bin/true"], "-D"),
        (vec!["run", "-D", missing, "/bin/true"], "No such file"),
        (vec!["run", "-D", file, "/bin/true"], "not a directory"),
        (
            vec!["run", "-D", img, "-M", "bad/name", "/bin/true"],
            "invalid machine name",
        ),
        (
            vec!["run", "-D", img, "-M", "..", "/bin/true"],
            "invalid machine name",
        ),
        (
            vec!["run", "-D", img, "--bind", missing, "/bin/true"],
            "No such file",
        ),
        (
            vec!["run", "-D", img, "--bind", "relative:/x", "/bin/true"],
            "absolute",
        ),
        (
            vec!["run", "-D", img, "--bind", "/tmp:/x:bogus", "/bin/true"],
            "unknown option",
        ),
        (
            vec!["run", "-D", img, "--kill-signal", "SIGFOO", "/bin/true"],
            "unknown signal",
        ),
        (
            vec!["run", "-D", img, "-u", "nosuchuser", "/bin/true"],
            "nosuchuser",
        ),
        (
            vec!["run", "-D", img, "--capability", "CAP_FLY", "/bin/true"],
            "CAP_FLY",
        ),
        (
            vec!["run", "-D", img, "--chdir", "relative", "/bin/true"],
            "absolute",
        ),
        (vec!["run", "-D", img, "-E", "=x", "/bin/true"], "VAR=VALUE"),
        (
            vec!["run", "-D", img, "--tmpfs", "rel", "/bin/true"],
            "absolute",
        ),
        (
            vec!["run", "-D", img, "--chdir", "/nonexistent", "/bin/true"],
            "/nonexistent",
        ),
    ];
    for (args, needle) in cases {
        let o = run_with(&args, None);
        o.assert_one_line_error(125, needle);
    }
    // Usage errors are berth's failures too: one line, 125.
    run_with(&["run", "--console=loud", "-D", img], None)
        .assert_one_line_error(125, "invalid value 'loud'");
    run_with(&["run", "--bogus", "-D", img], None).assert_one_line_error(125, "--bogus");
    run_with(
        &["run", "-D", img, "--no-new-privileges=maybe", "/bin/true"],
        None,
    )
    .assert_one_line_error(125, "maybe");
    assert_eq!(
        host_mounts(),
        before,
        "a failed start changed the host's mounts"
    );
    assert!(!std::path::Path::new(missing).exists());
}

#[test]
fn bind_mounts_share_files_with_the_host_and_bind_ro_refuses_writes() {
    let tmp = TempDir::new("bind");
    let rw = tmp.path().join("rw");
    let ro = tmp.path().join("ro");
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(ro.join("hello"), "from host\n").unwrap();
    let single = tmp.path().join("single");
    std::fs::write(&single, "one file\n").unwrap();
    let rw_arg = format!("{}:/mnt/rw", rw.display());
    let ro_arg = format!("{}:/mnt/ro", ro.display());
    let file_arg = format!("{}:/etc/single", single.display());
    let o = sh(
        &[
            "--bind",
            &rw_arg,
            "--bind-ro",
            &ro_arg,
            "--bind-ro",
            &file_arg,
        ],
        "echo inside > /mnt/rw/out; cat /mnt/ro/hello; echo x > /mnt/ro/new 2>/dev/null || echo refused; cat /etc/single",
    );
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(o.stdout, "from host\nrefused\none file\n");
    assert_eq!(std::fs::read_to_string(rw.join("out")).unwrap(), "inside\n");
    assert!(!ro.join("new").exists());
    // The bind source path alone (DST = SRC) works too.
    let same = rw.to_str().unwrap();
    let o = sh(&["--bind", same], &format!("ls {same}"));
    assert_eq!(o.stdout, "out\n", "{o:?}");
}

#[test]
fn bind_destination_symlinks_stay_inside_the_tree() {
    // A tree whose /mnt/escape points at an absolute host path must not redirect the bind.
    let tmp = TempDir::new("bindlink");
    let root = busybox_copy(tmp.path());
    let victim = tmp.path().join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::create_dir_all(root.join("mnt")).unwrap();
    std::os::unix::fs::symlink(&victim, root.join("mnt/escape")).unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("marker"), "m").unwrap();
    let arg = format!("{}:/mnt/escape", src.display());
    let o = run_with(
        &[
            "run",
            "-D",
            root.to_str().unwrap(),
            "--bind",
            &arg,
            "/bin/ls",
            "/mnt/escape/",
        ],
        None,
    );
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(o.stdout, "marker\n");
    assert_eq!(
        std::fs::read_dir(&victim).unwrap().count(),
        0,
        "the host directory was written"
    );
}

#[test]
fn tmpfs_option_mounts_a_fresh_tmpfs() {
    let o = sh(
        &[
            "--tmpfs",
            "/scratch",
            "--tmpfs",
            "/var/cache:mode=0700,size=1m",
        ],
        "grep -E ' /(scratch|var/cache) ' /proc/self/mounts; echo hi > /scratch/f && cat /scratch/f",
    );
    assert!(
        o.stdout.contains("tmpfs /scratch tmpfs rw,nosuid,nodev"),
        "{o:?}"
    );
    assert!(o.stdout.contains("mode=755"), "{o:?}");
    assert!(
        o.stdout.contains("tmpfs /var/cache tmpfs") && o.stdout.contains("size=1024k,mode=700"),
        "{o:?}"
    );
    assert!(o.stdout.ends_with("hi\n"));
}

#[test]
fn read_only_root_refuses_writes_but_tmp_and_run_work() {
    let o = sh(
        &["--read-only"],
        "touch /etc/x 2>/dev/null && echo wrote-root; touch /tmp/x /run/x && echo api-ok; grep ' / ' /proc/self/mounts",
    );
    assert!(o.stdout.starts_with("api-ok\n"), "{o:?}");
    assert!(
        o.stdout.contains(" / ") && o.stdout.contains(" ro,"),
        "{o:?}"
    );
}

#[test]
fn chdir_sets_the_working_directory() {
    let o = sh(&["--chdir", "/tmp"], "pwd");
    assert_eq!(o.stdout, "/tmp\n");
    let o = sh(&[], "pwd");
    assert_eq!(o.stdout, "/\n");
}

#[test]
fn pipe_mode_passes_stdin_and_stdout_through() {
    let img = busybox().to_str().unwrap();
    let o = run_with(
        &[
            "run",
            "-D",
            img,
            "--pipe",
            "/bin/sh",
            "-c",
            "tr a-z A-Z; echo err >&2",
        ],
        Some("hello berth\n"),
    );
    assert_eq!(o.stdout, "HELLO BERTH\n");
    assert_eq!(o.stderr, "err\n");
}

#[test]
fn no_command_runs_a_login_shell() {
    let img = busybox().to_str().unwrap();
    let o = run_with(&["run", "-D", img], Some("echo $0; exit 3\n"));
    assert_eq!(o.stdout, "-sh\n", "{o:?}");
    assert_eq!(o.code, 3);
}

#[test]
fn private_network_has_only_loopback_up() {
    let o = sh(
        &["--private-network"],
        "ls /sys/class/net; ip -o link show lo; grep -c . /proc/net/dev",
    );
    let mut lines = o.stdout.lines();
    assert_eq!(lines.next(), Some("lo"), "{o:?}");
    assert!(lines.next().unwrap().contains("UP"), "{o:?}");
    // Only lo in /proc/net/dev (2 header lines + lo).
    assert_eq!(lines.next(), Some("3"));
    // Without it the host's interfaces are there.
    let o = sh(&[], "ls /sys/class/net | wc -l");
    assert!(o.stdout.trim().parse::<u32>().unwrap() >= 1);
}

#[test]
fn as_pid2_runs_the_payload_under_a_stub_init() {
    let o = sh(
        &["--as-pid2"],
        "echo $$; cat /proc/1/cmdline | wc -c; readlink /proc/1/exe || echo no-exe",
    );
    assert_eq!(o.code, 0, "{o:?}");
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines[0], "2");
    assert_eq!(
        lines.last(),
        Some(&"no-exe"),
        "the stub's binary must not be reachable: {o:?}"
    );
    // The stub holds CAP_KILL alone, and no_new_privs.
    let o = sh(
        &["--as-pid2"],
        "grep -E 'Cap(Eff|Bnd)|NoNewPrivs' /proc/1/status",
    );
    let want = format!("{:016x}", 1u64 << 5);
    assert!(
        o.stdout.contains(&format!("CapEff:\t{want}"))
            && o.stdout.contains(&format!("CapBnd:\t{want}")),
        "{o:?}"
    );
    assert!(o.stdout.contains("NoNewPrivs:\t1"), "{o:?}");
    // It reaps orphans: a zombie-producing payload leaves none behind.
    let o = sh(
        &["--as-pid2"],
        "(sleep 0.1 &) ; sleep 0.5; ps -o stat | grep -c Z",
    );
    assert_eq!(o.stdout.trim(), "0", "{o:?}");
}

#[test]
fn only_stdio_is_inherited() {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open("/etc/hostname").unwrap();
    let raw = f.as_raw_fd();
    // A leaked non-CLOEXEC descriptor in berth's caller.
    let dup = unsafe { libc::dup(raw) };
    assert!(dup > 2);
    let o = sh(&[], "ls /proc/self/fd");
    unsafe { libc::close(dup) };
    let fds: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(
        fds,
        ["0", "1", "2", "3"],
        "only stdio (and ls's own dir fd): {o:?}"
    );
}

#[test]
fn cwd_outside_the_root_is_not_inherited() {
    let tmp = TempDir::new("cwd");
    let o = {
        let mut c = berth();
        c.current_dir(tmp.path()).args([
            "run",
            "-D",
            busybox().to_str().unwrap(),
            "/bin/sh",
            "-c",
            "pwd; ls .. | head -3",
        ]);
        c.output().unwrap()
    };
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().next(), Some("/"));
}

/// A numeric argument for `sleep` that names this test's container processes on the host.
fn sleep_marker(prefix: &str) -> String {
    let digits: String = rand_suffix()
        .chars()
        .filter(|c| c.is_ascii_digit())
        .take(5)
        .collect();
    format!("{prefix}{digits}")
}

/// `berth run -D busybox FLAGS /bin/sleep MARKER`, returned once the sleep runs (so berth is
/// past its setup).
fn spawn_sleeping(flags: &[&str], marker: &str) -> std::process::Child {
    let child = berth()
        .args(["run", "-D", busybox().to_str().unwrap()])
        .args(flags)
        .args(["/bin/sleep", marker])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(5, || !procs_with(&format!(
        "/bin/sleep\0{marker}"
    ))
    .is_empty()));
    child
}

#[test]
fn sigterm_kills_the_container_and_berth_reports_it() {
    let marker = sleep_marker("31");
    let mut child = spawn_sleeping(&[], &marker);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let st = child.wait().unwrap();
    // No --kill-signal: SIGKILL, as nspawn does.
    assert_eq!(st.code(), Some(137));
    assert!(eventually(5, || procs_with(&format!(
        "/bin/sleep\0{marker}"
    ))
    .is_empty()));
}

#[test]
fn kill_signal_is_forwarded_to_pid_1() {
    let marker = sleep_marker("32");
    let mut child = spawn_sleeping(&["--as-pid2", "--kill-signal=SIGTERM"], &marker);
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    // The stub forwards SIGTERM to sleep, which dies of it: 128+15.
    assert_eq!(child.wait().unwrap().code(), Some(143));
}

#[test]
fn berth_killed_with_sigkill_leaves_no_process_and_no_mount() {
    let before = host_mounts();
    let marker = sleep_marker("33");
    let mut child = berth()
        .args([
            "run",
            "-D",
            busybox().to_str().unwrap(),
            "--as-pid2",
            "/bin/sh",
            "-c",
            &format!("sleep {marker} & sleep {marker}"),
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(5, || procs_with(&format!("sleep\0{marker}"))
        .len()
        == 2));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        eventually(5, || procs_with(&format!("sleep\0{marker}")).is_empty()),
        "container processes survived berth"
    );
    assert_eq!(host_mounts(), before);
}

#[test]
fn interactive_console_runs_on_a_pty_of_the_containers_own() {
    let pty = nix::pty::openpty(
        Some(&nix::pty::Winsize {
            ws_row: 33,
            ws_col: 111,
            ws_xpixel: 0,
            ws_ypixel: 0,
        }),
        None,
    )
    .unwrap();
    let slave = pty.slave;
    let mut cmd = berth();
    cmd.args([
        "run",
        "-q",
        "-D",
        busybox().to_str().unwrap(),
        "/bin/sh",
        "-c",
        "tty; stty size; ls -l /dev/console | cut -c1; read x; echo got-$x",
    ])
    .stdin(slave.try_clone().unwrap())
    .stdout(slave.try_clone().unwrap())
    .stderr(slave.try_clone().unwrap());
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            libc::ioctl(0, libc::TIOCSCTTY, 0);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(slave);
    let mut master = std::fs::File::from(pty.master);
    use std::io::{Read, Write};
    std::thread::sleep(std::time::Duration::from_millis(300));
    master.write_all(b"ping\r").unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
        if String::from_utf8_lossy(&out).contains("got-ping") {
            break;
        }
    }
    let st = child.wait().unwrap();
    let text = String::from_utf8_lossy(&out).replace('\r', "");
    assert!(st.success(), "{text}");
    assert!(
        text.contains("/dev/pts/0\n"),
        "its own devpts instance: {text}"
    );
    assert!(text.contains("33 111\n"), "window size relayed: {text}");
    assert!(
        text.contains("\nc\n"),
        "/dev/console is a character device: {text}"
    );
    assert!(text.contains("got-ping"), "input relayed: {text}");
}

#[test]
fn payload_runs_with_umask_0022() {
    let o = sh(&[], "umask; touch /tmp/f; stat -c %a /tmp/f");
    assert_eq!(o.stdout, "0022\n644\n", "{o:?}");
}

#[test]
fn console_output_survives_the_payload_closing_its_stdio() {
    // A booted systemd closes its stdio first and opens /dev/console later, and keeps
    // running: what it writes then must reach berth's output while it runs.
    let mut child = berth()
        .args([
            "run",
            "-D",
            busybox().to_str().unwrap(),
            "--console=read-only",
            "/bin/sh",
            "-c",
        ])
        .arg("exec 0<&- 1>&- 2>&-; sleep 0.5; echo late > /dev/console; exec sleep 60")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        let mut seen = Vec::new();
        while let Ok(n) = std::io::Read::read(&mut stdout, &mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&seen).contains("late") {
                let _ = tx.send(());
                break;
            }
        }
    });
    let got = rx.recv_timeout(std::time::Duration::from_secs(10)).is_ok();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        got,
        "console output written after the payload closed its stdio was not relayed"
    );
}

#[test]
fn passive_console_gives_a_pty_and_relays_nothing() {
    let o = sh(
        &["--console=passive"],
        "tty > /dev/console; [ -c /dev/console ] || exit 9; echo unseen; exit 3",
    );
    assert_eq!(o.code, 3, "{o:?}");
    assert_eq!(o.stdout, "", "passive relays nothing: {o:?}");
}
