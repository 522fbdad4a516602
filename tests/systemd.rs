//! systemd integration, tested as a user would: berth in a real systemd 252 host (the rig,
//! tests/rig/systemd-host), seen through machinectl, systemctl and busctl; and berth's own
//! cgroup on this host without systemd. The rig is booted once for this binary and torn down
//! when it exits; if it cannot start, these tests fail (never skip).

mod rig;
mod support;

use rig::shared_sh_ok as rig_sh;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{Out, busybox, eventually, rand_suffix};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// A fresh machine name (no '-': systemd escapes it in unit names).
fn name(tag: &str) -> String {
    format!("{tag}{}", &rand_suffix()[..6])
}

/// `berth run ARGS` inside the rig, to completion.
fn rig_berth(args: &[&str]) -> Out {
    let o = rig::shared_cmd(BERTH)
        .arg("run")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("nsenter berth");
    Out::from(o)
}

fn rig_sh_status(script: &str) -> bool {
    rig::shared_cmd("bash")
        .arg("-c")
        .arg(script)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

fn prop(machine: &str, p: &str) -> String {
    rig_sh(&format!("machinectl show -p {p} --value {machine}"))
        .trim()
        .to_string()
}

fn registered(machine: &str) -> bool {
    rig_sh_status(&format!("machinectl show {machine}"))
}

/// A berth running in the background in the rig. Dropping it SIGKILLs berth (by PID).
struct Bg {
    nsenter: Child,
    /// berth's PID on the host.
    pid: i32,
    done: Option<Out>,
}

fn rig_spawn(args: &[&str]) -> Bg {
    let nsenter = rig::shared_cmd(BERTH)
        .arg("run")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let np = nsenter.id();
    let mut pid = 0;
    assert!(
        eventually(10, || {
            pid = std::fs::read_to_string(format!("/proc/{np}/task/{np}/children"))
                .ok()
                .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
                .unwrap_or(0);
            pid != 0
        }),
        "berth did not start under nsenter"
    );
    Bg {
        nsenter,
        pid,
        done: None,
    }
}

impl Bg {
    /// Waits up to `secs` for berth to exit.
    fn wait(&mut self, secs: u64) -> &Out {
        if self.done.is_none() {
            let end = Instant::now() + Duration::from_secs(secs);
            loop {
                if let Some(st) = self.nsenter.try_wait().unwrap() {
                    let mut stdout = String::new();
                    let mut stderr = String::new();
                    self.nsenter
                        .stdout
                        .take()
                        .unwrap()
                        .read_to_string(&mut stdout)
                        .unwrap();
                    self.nsenter
                        .stderr
                        .take()
                        .unwrap()
                        .read_to_string(&mut stderr)
                        .unwrap();
                    self.done = Some(Out {
                        code: st.code().unwrap_or(-1),
                        stdout,
                        stderr,
                    });
                    break;
                }
                assert!(Instant::now() < end, "berth did not exit within {secs} s");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.done.as_ref().unwrap()
    }

    fn alive(&mut self) -> bool {
        self.done.is_none() && self.nsenter.try_wait().unwrap().is_none()
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if self.done.is_none() && self.nsenter.try_wait().ok().flatten().is_none() {
            // SAFETY: kill by the PID of the berth this test started.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let _ = self.nsenter.wait();
        }
    }
}

fn img() -> String {
    busybox().to_str().unwrap().to_string()
}

/// Starts `berth run --register=yes -M NAME EXTRA... CMD...` and waits until it is registered.
fn start_registered(name: &str, extra: &[&str], cmd: &[&str]) -> Bg {
    let img = img();
    let mut args = vec!["--register=yes", "-M", name, "-D", &img, "--pipe", "-q"];
    args.extend_from_slice(extra);
    args.extend_from_slice(cmd);
    let mut bg = rig_spawn(&args);
    let ok = eventually(10, || registered(name) || !bg.alive());
    assert!(
        ok && bg.alive(),
        "berth did not register {name}: {:?}",
        bg.wait(1)
    );
    bg
}

#[test]
fn registered_container_is_listed_with_leader_root_and_unit() {
    let n = name("list");
    let mut bg = start_registered(&n, &[], &["/bin/sleep", "600"]);

    let list = rig_sh("machinectl list --no-legend");
    let line = list
        .lines()
        .find(|l| l.starts_with(&n))
        .unwrap_or_else(|| panic!("{list}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&cols[1..3], ["container", "berth"], "{line}");

    assert_eq!(prop(&n, "Service"), "berth");
    assert_eq!(prop(&n, "Class"), "container");
    assert_eq!(prop(&n, "RootDirectory"), img());
    assert_eq!(prop(&n, "Unit"), format!("machine-{n}.scope"));
    assert_eq!(prop(&n, "State"), "running");
    let leader = prop(&n, "Leader");
    // The leader is the container's PID 1: the payload itself.
    assert_eq!(rig_sh(&format!("cat /proc/{leader}/comm")).trim(), "sleep");
    let status = rig_sh(&format!("machinectl status --no-pager {n}"));
    assert!(
        status.contains(&format!("Leader: {leader} (sleep)")),
        "{status}"
    );
    assert!(
        status.contains(&format!("Unit: machine-{n}.scope")),
        "{status}"
    );
    assert!(status.contains("/bin/sleep 600"), "process tree: {status}");
    // The UUID is the container's (random here, as the image has no machine-id).
    let id = prop(&n, "Id");
    assert_eq!(id.len(), 32, "{id}");
    assert_ne!(id, "0".repeat(32));

    // The scope is in machine.slice with nspawn's settings; berth itself is not in it.
    let unit = rig_sh(&format!(
        "systemctl show -p Slice -p Delegate -p KillMode -p DevicePolicy machine-{n}.scope"
    ));
    for want in [
        "Slice=machine.slice",
        "Delegate=yes",
        "KillMode=mixed",
        "DevicePolicy=closed",
    ] {
        assert!(unit.contains(want), "{want} in {unit}");
    }
    let berth_cg = std::fs::read_to_string(format!("/proc/{}/cgroup", bg.pid)).unwrap();
    assert!(
        !berth_cg.contains("machine-"),
        "berth stays outside the scope: {berth_cg}"
    );

    // terminate: the container ends and berth exits, registration gone.
    rig_sh(&format!("machinectl terminate {n}"));
    let out = bg.wait(30);
    assert_eq!(out.code, 137, "killed by the scope stop: {out:?}");
    assert!(eventually(5, || !registered(&n)));
    assert!(!rig_sh_status(&format!(
        "systemctl is-active machine-{n}.scope"
    )));
}

#[test]
fn container_sees_its_scope_as_cgroup_root() {
    let n = name("cgns");
    let out = rig_berth(&[
        "--register=yes",
        "-M",
        &n,
        "-D",
        &img(),
        "--pipe",
        "-q",
        "/bin/cat",
        "/proc/self/cgroup",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.lines().any(|l| l == "0::/"), "{}", out.stdout);
    assert!(
        eventually(5, || !registered(&n)),
        "unregistered when the container ended"
    );
}

/// berth lets the container go once systemd has started its scope, before machined answers
/// CreateMachine; a payload that is done before that answer must still end berth promptly,
/// with its own status, and leave nothing registered. (machined 252 drops the answer when
/// the scope empties first, so waiting for it would hang until the bus timeout.)
#[test]
fn short_lived_registered_containers_end_promptly_and_leave_nothing() {
    let img = img();
    let names: Vec<String> = (0..16).map(|_| name("short")).collect();
    for (i, n) in names.iter().enumerate() {
        let code = (i % 4).to_string();
        let started = Instant::now();
        let out = rig_berth(&[
            "--register=yes",
            "-M",
            n,
            "-D",
            &img,
            "--pipe",
            "-q",
            "/bin/sh",
            "-c",
            &format!("exit {code}"),
        ]);
        // A hang here lasts the bus timeout, 25 s; a start takes tens of milliseconds.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "berth took {:?}: {out:?}",
            started.elapsed()
        );
        assert_eq!(out.code.to_string(), code, "{out:?}");
        assert!(out.stderr.is_empty(), "{out:?}");
    }
    for n in &names {
        assert!(eventually(10, || !registered(n)), "{n} still registered");
        assert!(
            eventually(10, || !rig_sh_status(&format!(
                "systemctl is-active machine-{n}.scope"
            ))),
            "machine-{n}.scope still active"
        );
    }
}

#[test]
fn machinectl_kill_hits_the_container_not_berth() {
    let n = name("kill");
    let mut bg = start_registered(&n, &[], &["/bin/sleep", "600"]);
    rig_sh(&format!("machinectl kill --signal=SIGKILL {n}"));
    let out = bg.wait(30);
    assert_eq!(
        out.code, 137,
        "berth survived to report the container's death: {out:?}"
    );
    assert!(eventually(5, || !registered(&n)));
}

#[test]
fn registration_ends_when_berth_is_sigkilled() {
    sigkill_ends_registration(&[]);
    // A container whose init changed identity (user namespace root, -u) too: the kernel
    // clears the parent-death signal on such a change.
    sigkill_ends_registration(&["-U"]);
    sigkill_ends_registration(&["-u", "daemon"]);
}

fn sigkill_ends_registration(extra: &[&str]) {
    let n = name("sigkill");
    let bg = start_registered(&n, extra, &["/bin/sleep", "600"]);
    let leader = prop(&n, "Leader");
    let pid = bg.pid;
    // SAFETY: kill by the PID of the berth this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    drop(bg);
    assert!(
        eventually(10, || !registered(&n)),
        "machine {n} still registered"
    );
    assert!(
        !rig_sh_status(&format!("test -e /proc/{leader}")),
        "the container died with berth"
    );
}

#[test]
fn poweroff_and_reboot_reach_the_payload() {
    // With the stub init (-a), machinectl's signals to the leader reach the payload:
    // poweroff (SIGRTMIN+4) as SIGTERM, or as the container's --kill-signal; reboot as SIGINT.
    let n = name("pwr");
    let mut bg = start_registered(&n, &["-a"], &["/bin/sleep", "600"]);
    rig_sh(&format!("machinectl poweroff {n}"));
    let out = bg.wait(30);
    assert_eq!(out.code, 128 + libc::SIGTERM, "{out:?}");
    assert!(eventually(5, || !registered(&n)));

    let n = name("pwrk");
    let mut bg = start_registered(&n, &["-a", "--kill-signal=SIGUSR1"], &["/bin/sleep", "600"]);
    rig_sh(&format!("machinectl poweroff {n}"));
    let out = bg.wait(30);
    assert_eq!(out.code, 128 + libc::SIGUSR1, "{out:?}");
    assert!(eventually(5, || !registered(&n)));

    let n = name("rbt");
    let mut bg = start_registered(&n, &["-a"], &["/bin/sleep", "600"]);
    rig_sh(&format!("machinectl reboot {n}"));
    let out = bg.wait(30);
    assert_eq!(out.code, 128 + libc::SIGINT, "{out:?}");
    assert!(eventually(5, || !registered(&n)));
}

#[test]
fn duplicate_name_is_refused_and_leaves_the_first_alone() {
    let n = name("dup");
    let mut first = start_registered(&n, &[], &["/bin/sleep", "600"]);
    let leader = prop(&n, "Leader");
    let out = rig_berth(&[
        "--register=yes",
        "-M",
        &n,
        "-D",
        &img(),
        "--pipe",
        "/bin/sleep",
        "600",
    ]);
    out.assert_one_line_error(125, "already registered");
    assert!(first.alive());
    assert_eq!(prop(&n, "Leader"), leader);
    assert_eq!(
        rig_sh(&format!("systemctl is-active machine-{n}.scope")).trim(),
        "active"
    );
}

#[test]
fn errors_are_one_line_and_leave_nothing_registered() {
    let img = img();
    let n = name("err");
    // A slice that does not exist.
    let out = rig_berth(&[
        "--register=yes",
        "-M",
        &n,
        "-D",
        &img,
        "--pipe",
        "--slice=nosuch.slice",
        "/bin/true",
    ]);
    out.assert_one_line_error(125, "nosuch.slice");
    assert!(!registered(&n));
    // A slice that exists works.
    let out = rig_berth(&[
        "--register=yes",
        "-M",
        &n,
        "-D",
        &img,
        "--pipe",
        "-q",
        "--slice=system.slice",
        "/bin/sh",
        "-c",
        "cat /proc/self/cgroup >/dev/null",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    // A bad --property: refused before anything starts.
    let out = rig_berth(&[
        "--register=yes",
        "-M",
        &n,
        "-D",
        &img,
        "--pipe",
        "--property=MemoryMax=lots",
        "/bin/true",
    ]);
    out.assert_one_line_error(125, "MemoryMax=lots");
    let out = rig_berth(&[
        "--register=yes",
        "-M",
        &n,
        "-D",
        &img,
        "--pipe",
        "--property=Frob=1",
        "/bin/true",
    ]);
    out.assert_one_line_error(125, "Frob");
    // machined refusing: --keep-unit from outside any unit (nsenter keeps the test's own
    // cgroup, which is outside the rig's tree).
    let out = rig_berth(&[
        "--register=yes",
        "--keep-unit",
        "-M",
        &n,
        "-D",
        &img,
        "--pipe",
        "/bin/sleep",
        "600",
    ]);
    out.assert_one_line_error(125, "refused");
    assert!(!registered(&n));
}

/// Forks sleepers until fork fails (the shell then gives up); `echo` is a builtin, so each
/// "started" line is one process that fit.
const FORK_BOMB: &str = "for i in $(seq 1 40); do sleep 60 & echo started $i; done";

fn assert_fork_bomb_stopped(out: &Out, tasks_max: usize) {
    let started = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("started "))
        .count();
    assert!(
        started < tasks_max && started >= tasks_max / 2,
        "{started} children under TasksMax={tasks_max}: {out:?}"
    );
    assert!(out.stderr.contains("can't fork"), "{out:?}");
    assert_ne!(out.code, 0, "{out:?}");
}

#[test]
fn uuid_and_device_policy_reach_machined_and_the_container() {
    let img = img();
    // --uuid becomes the registration's Id (the image has no machine-id).
    let n = name("uuid");
    let mut bg = start_registered(
        &n,
        &["--uuid=01234567-89ab-cdef-0123-456789abcdef"],
        &["/bin/sleep", "600"],
    );
    assert_eq!(prop(&n, "Id"), "0123456789abcdef0123456789abcdef");
    rig_sh(&format!("machinectl terminate {n}"));
    bg.wait(30);

    // DevicePolicy=closed: the container cannot open a device beyond the basic ones, unless a
    // DeviceAllow= property allows it.
    // /dev/fuse is bound in from the rig (berth's seccomp filter forbids mknod of it).
    let open_fuse = "(: < /dev/fuse) && echo opened";
    let n = name("dev");
    let out = rig_berth(&[
        "--register=yes",
        "-M",
        &n,
        "-D",
        &img,
        "--pipe",
        "-q",
        "--bind=/dev/fuse",
        "/bin/sh",
        "-c",
        open_fuse,
    ]);
    assert!(!out.stdout.contains("opened"), "{out:?}");
    assert!(out.stderr.contains("not permitted"), "{out:?}");
    let out = rig_berth(&[
        "--register=yes",
        "-M",
        &n,
        "-D",
        &img,
        "--pipe",
        "-q",
        "--bind=/dev/fuse",
        "--property=DeviceAllow=/dev/fuse rw",
        "/bin/sh",
        "-c",
        open_fuse,
    ]);
    assert!(out.stdout.contains("opened"), "{out:?}");
}

#[test]
fn a_rebooting_container_registers_again_each_time() {
    // A busybox init that reboots (reboot(2): its init is killed by SIGHUP) until it has
    // booted five times; berth starts it again under the same name, registered each time (or,
    // unregistered, in a scope of systemd's again each time).
    let (_, scratch) = rig::shared();
    for register in ["--register=yes", "--register=no"] {
        let n = name("rbt");
        let tree = scratch.join(&n);
        support::copy_tree(busybox(), &tree);
        std::fs::write(
            tree.join("etc/inittab"),
            "::sysinit:/bin/sh -c 'echo boot >> /var/boots; [ $(wc -l < /var/boots) -lt 5 ] && reboot -f'\n\
             ::respawn:/bin/sleep 600\n",
        )
        .unwrap();
        let t = tree.to_str().unwrap().to_string();
        let mut bg = rig_spawn(&["-b", register, "-M", &n, "-D", &t, "--pipe", "-q"]);
        let boots = || {
            std::fs::read_to_string(tree.join("var/boots"))
                .map(|s| s.lines().count())
                .unwrap_or(0)
        };
        assert!(
            eventually(30, || boots() >= 5),
            "{register}: booted {} times",
            boots()
        );
        let unit = format!("machine-{n}.scope");
        let active = || rig_sh_status(&format!("systemctl is-active -q {unit}"));
        if register == "--register=yes" {
            assert!(eventually(10, || registered(&n) && prop(&n, "State") == "running"));
            let leader = prop(&n, "Leader");
            assert_eq!(rig_sh(&format!("cat /proc/{leader}/comm")).trim(), "init");
            assert!(bg.alive(), "{register}: berth went on through the reboots");
            rig_sh(&format!("machinectl terminate {n}"));
        } else {
            assert!(eventually(10, active), "{unit} is not active");
            assert!(!registered(&n));
            assert!(bg.alive(), "{register}: berth went on through the reboots");
            rig_sh(&format!("systemctl stop {unit}"));
        }
        bg.wait(30);
        assert!(eventually(5, || !registered(&n) && !active()));
        let _ = std::fs::remove_dir_all(&tree);
    }
}

#[test]
fn keep_unit_is_refused_in_a_login_session() {
    let n = name("sess");
    let out = rig::shared_cmd("systemd-run")
        .args([
            "--quiet",
            "--scope",
            &format!("--unit=session-{n}.scope"),
            BERTH,
            "run",
        ])
        .args([
            "--register=yes",
            "--keep-unit",
            "-M",
            &n,
            "-D",
            &img(),
            "--pipe",
            "/bin/true",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = Out::from(out);
    out.assert_one_line_error(125, "login session");
    assert!(!registered(&n));
}

/// systemd's limits, as the container experiences them.
#[test]
fn scope_limits_are_enforced_inside() {
    let img = img();
    // Memory: allocating past MemoryMax is OOM-killed, in machined's scope and in the one
    // systemd starts for an unregistered container alike.
    for register in ["--register=yes", "--register=no"] {
        let out = rig_berth(&[
            register,
            "-M",
            &name("mem"),
            "-D",
            &img,
            "--pipe",
            "-q",
            "--property=MemoryMax=16M",
            "--property=MemorySwapMax=0",
            "/bin/dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=64M",
            "count=1",
        ]);
        assert_eq!(out.code, 137, "dd was OOM-killed ({register}): {out:?}");
    }
    let n = name("mem");
    let out = rig_berth(&[
        "--register=yes",
        "-M",
        &n,
        "-D",
        &img,
        "--pipe",
        "-q",
        "--property=MemoryMax=16M",
        "/bin/dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=4M",
        "count=1",
    ]);
    assert_eq!(out.code, 0, "below the limit: {out:?}");

    // Tasks: a fork bomb stops at TasksMax (the shell counts itself: 7 children fit in 8).
    let n = name("tasks");
    let out = rig_berth(&[
        "--register=yes",
        "-M",
        &n,
        "-D",
        &img,
        "--pipe",
        "-q",
        "--property=TasksMax=8",
        "/bin/sh",
        "-c",
        FORK_BOMB,
    ]);
    assert_fork_bomb_stopped(&out, 8);

    // CPU: a busy loop under CPUQuota=20% is throttled (cpu.stat on the host side).
    let n = name("cpu");
    let mut bg = start_registered(
        &n,
        &["--property=CPUQuota=20%"],
        &["/bin/sh", "-c", "while :; do :; done"],
    );
    // The cpu controller's files: v1 (hybrid hosts) or cgroup2 (pure v2 hosts).
    let dir = rig_sh(&format!(
        "d=/sys/fs/cgroup/cpu/machine.slice/machine-{n}.scope; \
         [ -d $d ] || d=/sys/fs/cgroup/machine.slice/machine-{n}.scope; echo $d"
    ));
    let dir = dir.trim();
    let quota = rig_sh(&format!(
        "cat {dir}/cpu.cfs_quota_us 2>/dev/null || cut -d' ' -f1 {dir}/cpu.max"
    ));
    assert_eq!(quota.trim(), "20000");
    std::thread::sleep(Duration::from_millis(1500));
    let s = rig_sh(&format!("cat {dir}/cpu.stat"));
    let throttled: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("nr_throttled "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(throttled > 0, "{s}");
    rig_sh(&format!("machinectl terminate {n}"));
    bg.wait(30);
}

/// `--register=no` under systemd: as nspawn, berth has systemd start machine-NAME.scope for the
/// container (delegated, in machine.slice, with the --property limits), machined does not know
/// it, a second container of the same name is refused in one line, and the scope goes away
/// with its container. (The limit enforced inside: scope_limits_are_enforced_inside.)
#[test]
fn unregistered_container_gets_a_transient_scope_from_systemd() {
    let img = img();
    let n = name("noreg");
    let unit = format!("machine-{n}.scope");
    let show = |p: &str| {
        rig_sh(&format!("systemctl show -p {p} --value {unit}"))
            .trim()
            .to_string()
    };
    let base = ["--register=no", "-M", &n, "-D", &img, "--pipe", "-q"];
    let mut bg = rig_spawn(
        &[
            &base[..],
            &[
                "--property=MemoryMax=48M",
                "--property=TasksMax=20",
                "/bin/sleep",
                "600",
            ],
        ]
        .concat(),
    );
    assert!(
        eventually(10, || show("ActiveState") == "active" || !bg.alive()),
        "no active {unit}: {:?}",
        bg.wait(1)
    );
    assert_eq!(show("MemoryMax"), (48u64 << 20).to_string());
    assert_eq!(show("TasksMax"), "20");
    assert_eq!(show("Delegate"), "yes");
    assert_eq!(show("Slice"), "machine.slice");
    // The container's PID 1 is in it, and the kernel holds it to the limit (hybrid rig: the v1
    // memory controller).
    let cg = show("ControlGroup");
    let procs = rig_sh(&format!(
        "for p in $(cat /sys/fs/cgroup/unified{cg}/cgroup.procs); do cat /proc/$p/comm; done"
    ));
    assert_eq!(procs.trim(), "sleep", "{cg}");
    assert_supervisor_small(bg.pid);
    assert_eq!(
        rig_sh(&format!(
            "cat /sys/fs/cgroup/memory{cg}/memory.limit_in_bytes"
        ))
        .trim(),
        (48u64 << 20).to_string()
    );
    assert!(!registered(&n));
    assert!(!rig_sh("machinectl list --no-legend").contains(&n));

    // The name is taken while it runs: systemd refuses a second scope, berth says so in one
    // line, and the second container is gone with it.
    let out = rig_berth(&[&base[..], &["/bin/sleep", "601"]].concat());
    out.assert_one_line_error(125, &unit);
    assert!(
        !rig_sh_status("pgrep -f '^/bin/sleep 601$'"),
        "the refused container still runs"
    );
    assert_eq!(show("ActiveState"), "active");

    // SIGTERM ends berth and its container; the scope goes with them.
    // SAFETY: kill by the PID of the berth this test started.
    unsafe { libc::kill(bg.pid, libc::SIGTERM) };
    bg.wait(30);
    assert!(
        eventually(10, || show("LoadState") == "not-found"),
        "{unit} is left: {}",
        show("ActiveState")
    );
    assert!(!registered(&n));
}

/// berth@.service: `systemctl start berth@NAME` runs the stored image NAME registered under
/// its own unit (--keep-unit), Type=notify; `systemctl stop` ends it.
#[test]
fn unit_template_runs_and_stops_a_container() {
    let n = name("svc");
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/units/berth@.service"))
            .unwrap()
            .replace("/usr/local/bin/berth", BERTH);
    let (_, scratch) = rig::shared();
    let unit_path = scratch.join("berth@.service");
    std::fs::write(&unit_path, unit).unwrap();
    rig_sh(&format!(
        "set -e; cp {u} /etc/systemd/system/berth@.service; mkdir -p /var/lib/machines; \
         cp -a {img} /var/lib/machines/{n}; \
         printf '#!/bin/sh\\necho hello from {n}\\nexec sleep 600\\n' > /var/lib/machines/{n}/bin/svc; \
         chmod 755 /var/lib/machines/{n}/bin/svc; \
         mkdir -p /etc/berth; echo 'BERTH_ARGS=--kill-signal=SIGTERM -a /bin/svc' > /etc/berth/{n}.conf; \
         systemctl daemon-reload",
        u = unit_path.display(),
        img = img(),
    ));
    rig_sh(&format!("systemctl start berth@{n}"));
    assert_eq!(
        rig_sh(&format!("systemctl is-active berth@{n}")).trim(),
        "active"
    );
    assert_eq!(prop(&n, "Unit"), format!("berth@{n}.service"));
    assert_eq!(prop(&n, "Service"), "berth");
    // The container has a cgroup of its own below the unit's; berth sits beside it.
    let leader = prop(&n, "Leader");
    let cg = rig_sh(&format!("grep '^0::' /proc/{leader}/cgroup"));
    assert!(
        cg.trim().ends_with(&format!("/berth@{n}.service/payload")),
        "{cg}"
    );
    let main_pid = rig_sh(&format!("systemctl show -p MainPID --value berth@{n}"));
    let cg = rig_sh(&format!("grep '^0::' /proc/{}/cgroup", main_pid.trim()));
    assert!(
        cg.trim()
            .ends_with(&format!("/berth@{n}.service/supervisor")),
        "{cg}"
    );
    let status = rig_sh(&format!("systemctl show -p StatusText --value berth@{n}"));
    assert!(status.contains("Container running"), "{status}");
    assert!(eventually(5, || rig_sh(&format!(
        "journalctl -u berth@{n} -o cat"
    ))
    .contains(&format!("hello from {n}"))));
    rig_sh(&format!("systemctl stop berth@{n}"));
    // Stopped cleanly: SIGTERM passed on to the payload, which ended on it (143), not failed.
    let state = rig::shared_cmd("systemctl")
        .args(["is-active", &format!("berth@{n}")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&state.stdout).trim(), "inactive");
    assert!(eventually(5, || !registered(&n)));
    rig_sh(&format!("rm -rf /var/lib/machines/{n} /etc/berth/{n}.conf"));
}

// --- Without systemd: berth's own cgroup on this (hybrid) host ---------------------------

fn host_berth(args: &[&str]) -> Out {
    let o = Command::new(BERTH)
        .arg("run")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Out::from(o)
}

fn leftover_cgroups(n: &str) -> Vec<String> {
    let out = Command::new("find")
        .args([
            "/sys/fs/cgroup",
            "-maxdepth",
            "5",
            "-name",
            &format!("machine-{n}-*.scope"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn own_cgroup_limits_are_enforced_and_removed() {
    let img = img();
    let n = name("own");
    // The container's cgroup is its cgroup-namespace root, and limits are set in v1 files.
    let out = host_berth(&[
        "--register=no",
        "-M",
        &n,
        "-D",
        &img,
        "--pipe",
        "--property=MemoryMax=16M",
        "--property=TasksMax=8",
        "--property=CPUQuota=20%",
        "/bin/cat",
        "/proc/self/cgroup",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.lines().any(|l| l == "0::/"), "{}", out.stdout);
    assert!(
        out.stdout.lines().any(|l| l.ends_with(":memory:/")),
        "{}",
        out.stdout
    );
    assert!(out.stderr.is_empty(), "{out:?}");
    assert!(
        leftover_cgroups(&n).is_empty(),
        "{:?}",
        leftover_cgroups(&n)
    );

    // Memory over the limit: OOM-killed.
    let out = host_berth(&[
        "--register=no",
        "-M",
        &n,
        "-D",
        &img,
        "--pipe",
        "--property=MemoryMax=16M",
        "/bin/dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=64M",
        "count=1",
    ]);
    assert_eq!(out.code, 137, "{out:?}");
    // Fork bomb: stops at TasksMax.
    let out = host_berth(&[
        "--register=no",
        "-M",
        &n,
        "-D",
        &img,
        "--pipe",
        "--property=TasksMax=8",
        "/bin/sh",
        "-c",
        FORK_BOMB,
    ]);
    assert_fork_bomb_stopped(&out, 8);
    // CPU quota: a second of busy loop gets throttled; the container reads cpu time used.
    let out = host_berth(&[
        "--register=no",
        "-M",
        &n,
        "-D",
        &img,
        "--pipe",
        "--property=CPUQuota=20%",
        "/bin/sh",
        "-c",
        "timeout 1 sh -c 'while :; do :; done'; cat /proc/self/stat >/dev/null; \
               awk '{print $14+$15+$16+$17}' /proc/1/stat",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    // Children's user+sys ticks of PID 1 (the shell): at most ~20% of 1 s (100 Hz ticks).
    let ticks: u64 = out
        .stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{out:?}"));
    assert!(
        ticks <= 40,
        "busy loop used {ticks} ticks in 1 s under CPUQuota=20%"
    );
    assert!(
        leftover_cgroups(&n).is_empty(),
        "{:?}",
        leftover_cgroups(&n)
    );
}

#[test]
fn own_cgroup_refuses_what_it_cannot_apply() {
    let img = img();
    let n = name("unsup");
    for p in [
        "MemoryHigh=1M",
        "DeviceAllow=/dev/fuse rw",
        "KillMode=mixed",
    ] {
        let prop = format!("--property={p}");
        let out = host_berth(&[
            "--register=no",
            "-M",
            &n,
            "-D",
            &img,
            "--pipe",
            &prop,
            "/bin/true",
        ]);
        out.assert_one_line_error(125, p);
        assert!(leftover_cgroups(&n).is_empty());
    }
}

/// A private D-Bus daemon standing in for a system bus without machined on it.
struct PrivateBus {
    daemon: Child,
    address: String,
    _dir: support::TempDir,
}

impl PrivateBus {
    fn start() -> PrivateBus {
        let dir = support::TempDir::new("bus");
        let sock = dir.path().join("bus");
        let config = dir.path().join("bus.conf");
        std::fs::write(
            &config,
            format!(
                "<busconfig><type>system</type><listen>unix:path={}</listen>\
                 <auth>EXTERNAL</auth><policy context=\"default\">\
                 <allow send_destination=\"*\" eavesdrop=\"true\"/><allow eavesdrop=\"true\"/>\
                 <allow own=\"*\"/></policy></busconfig>",
                sock.display()
            ),
        )
        .unwrap();
        let daemon = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .arg("--nofork")
            .stdout(Stdio::null())
            .spawn()
            .expect("dbus-daemon (apt-get install dbus)");
        assert!(eventually(5, || sock.exists()), "dbus-daemon did not start");
        PrivateBus {
            daemon,
            address: format!("unix:path={}", sock.display()),
            _dir: dir,
        }
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

#[test]
fn without_machined_register_yes_fails_and_auto_says_so() {
    let img = img();
    let n = name("nobus");
    let run = |bus: &str, args: &[&str]| {
        let o = Command::new(BERTH)
            .arg("run")
            .args(args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", bus)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Out::from(o)
    };
    let nobus = "unix:path=/nonexistent/system_bus_socket";
    // No system bus at all (a host without systemd): yes fails, auto runs quietly in berth's
    // own cgroup.
    let out = run(
        nobus,
        &[
            "--register=yes",
            "-M",
            &n,
            "-D",
            &img,
            "--pipe",
            "/bin/true",
        ],
    );
    out.assert_one_line_error(125, "cannot reach systemd-machined");
    let auto = [
        "--register=auto",
        "-M",
        &n,
        "-D",
        &img,
        "--pipe",
        "--property=TasksMax=5",
        "/bin/sh",
        "-c",
        "cat /proc/self/cgroup",
    ];
    let out = run(nobus, &auto);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    assert!(
        out.stdout.lines().any(|l| l == "0::/"),
        "own cgroup: {out:?}"
    );
    assert!(
        out.stdout.lines().any(|l| l.ends_with(":pids:/")),
        "own cgroup: {out:?}"
    );

    // A system bus without machined on it: yes fails, auto says so in one line and goes on.
    let bus = PrivateBus::start();
    let out = run(
        &bus.address,
        &[
            "--register=yes",
            "-M",
            &n,
            "-D",
            &img,
            "--pipe",
            "/bin/true",
        ],
    );
    out.assert_one_line_error(125, "cannot reach systemd-machined");
    let out = run(&bus.address, &auto);
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{out:?}");
    assert!(
        lines[0].contains("not reachable") && lines[0].contains(&n),
        "{out:?}"
    );
    assert!(
        out.stdout.lines().any(|l| l == "0::/"),
        "own cgroup: {out:?}"
    );
    assert!(leftover_cgroups(&n).is_empty());
}

/// Once the payload runs, the supervisor has shed its setup: no control channel, no bus
/// connection, no zbus threads, no bus helper (not even a zombie: its only child is the
/// container), and (release builds) at most 2 MiB resident.
fn assert_supervisor_small(pid: i32) {
    let sockets = || -> Vec<String> {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .map(|p| p.to_string_lossy().into_owned())
            .filter(|f| f.starts_with("socket:"))
            .collect()
    };
    assert!(eventually(5, || sockets().is_empty()), "{:?}", sockets());
    std::thread::sleep(Duration::from_millis(200));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    let threads: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert_eq!(threads, 1, "no zbus threads in the supervisor");
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    assert_eq!(
        children.split_whitespace().count(),
        1,
        "the supervisor's children: {children:?} (the container only)"
    );
    if cfg!(debug_assertions) {
        eprintln!("supervisor RSS (debug build): {rss_kb} KiB");
    } else {
        assert!(rss_kb <= 2048, "supervisor RSS {rss_kb} KiB > 2 MiB");
    }
}

#[test]
fn registered_supervisor_is_small_and_holds_no_bus_connection() {
    let n = name("rss");
    let bg = start_registered(&n, &[], &["/bin/sleep", "600"]);
    let leader = prop(&n, "Leader");
    assert!(eventually(10, || rig_sh(&format!(
        "cat /proc/{leader}/comm"
    ))
    .trim()
        == "sleep"));
    assert_supervisor_small(bg.pid);
    drop(bg);
    assert!(eventually(10, || !registered(&n)));
}

/// The migration primer (src/entry.rs) is forked at berth's entry, before the C library
/// starts: berth's first system calls (after the dynamic loader's, in a debug build) look for
/// the system bus and fork, and the primer moves itself within its own cgroup.
#[test]
fn the_migration_primer_is_forked_before_the_c_library_starts() {
    let n = name("primer");
    let img = img();
    // In a scope of the rig's systemd, as a shell's command runs in its session's: the
    // primer's cgroup must be in the rig's view.
    let o = rig::shared_cmd("systemd-run")
        .args([
            "--quiet",
            "--scope",
            "strace",
            "-f",
            "-qq",
            "-o",
            "/dev/stderr",
            "-e",
        ])
        .arg("trace=access,pipe2,clone,brk,open,openat,write")
        .args([BERTH, "run", "-q", "--register=yes", "-M", &n, "-D", &img])
        .args(["--pipe", "/bin/true"])
        .stdin(Stdio::null())
        .output()
        .expect("strace in the rig");
    let trace = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{trace}");
    // "PID  syscall(args) = result", berth's own PID on the first line.
    let lines: Vec<(&str, &str)> = trace
        .lines()
        .filter_map(|l| l.split_once(char::is_whitespace))
        .map(|(pid, call)| (pid, call.trim_start()))
        .collect();
    // A process's calls, an interrupted one ("<unfinished ...>") joined with its
    // "<... resumed>" rest.
    let calls_of = |pid: &str| {
        let mut calls: Vec<String> = Vec::new();
        for (_, c) in lines.iter().filter(|(p, _)| *p == pid) {
            match (c.strip_prefix("<... "), calls.last_mut()) {
                (Some(rest), Some(last)) => {
                    *last = last
                        .trim_end_matches("<unfinished ...>")
                        .trim_end()
                        .to_string()
                        + rest.split_once(" resumed>").map_or("", |(_, r)| r);
                }
                _ => calls.push(c.to_string()),
            }
        }
        calls
    };
    let own = calls_of(lines.first().expect("a trace").0);
    let first = own
        .iter()
        .position(|c| c.starts_with("access(\"/var/run/dbus/system_bus_socket\", F_OK) = 0"))
        .unwrap_or_else(|| panic!("berth did not look for the bus socket at entry:\n{trace}"));
    // Before it only the dynamic loader's work (debug builds; the shipped static binary has
    // none): no start-up of the C library's or Rust's, none of berth's code.
    let loader = |c: &String| c.starts_with("brk(") || c.contains("ld.so") || c.contains(".so");
    assert!(
        own[..first].iter().all(loader) && own.len() > first + 2,
        "berth ran before its entry point:\n{trace}"
    );
    let own = &own[first..first + 3];
    assert!(
        own[1].starts_with("pipe2(") && own[2].starts_with("clone("),
        "berth's first system calls: {own:?}\n{trace}"
    );
    let primer = own[2].rsplit("= ").next().unwrap().trim();
    let calls = calls_of(primer);
    let opened = calls
        .iter()
        .position(|c| c.contains("/cgroup.procs\", O_WRONLY|O_CLOEXEC") && !c.contains("= -1"));
    let wrote = calls.iter().position(|c| {
        c.starts_with("write(")
            && c.contains(&format!(", \"{primer}\", {})", primer.len()))
            && c.trim_end().ends_with(&format!("= {}", primer.len()))
    });
    assert!(
        matches!((opened, wrote), (Some(o), Some(w)) if o < w),
        "primer {primer} did not move itself: {calls:#?}\n{trace}"
    );
}

#[test]
fn cgroup_of_a_sigkilled_berth_is_collected_by_the_next_one() {
    let img = img();
    let n = name("stale");
    let mut child = Command::new(BERTH)
        .args([
            "run",
            "--register=no",
            "-M",
            &n,
            "-D",
            &img,
            "--pipe",
            "/bin/sleep",
            "600",
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(10, || !leftover_cgroups(&n).is_empty()));
    child.kill().unwrap();
    child.wait().unwrap();
    // Its container died with it (PDEATHSIG); its cgroup is left, empty.
    let stale = leftover_cgroups(&n);
    assert!(!stale.is_empty());
    assert!(eventually(5, || stale.iter().all(|d| {
        std::fs::read_to_string(format!("{d}/cgroup.procs")).is_ok_and(|p| p.trim().is_empty())
    })));
    let out = host_berth(&["--register=no", "-M", &n, "-D", &img, "--pipe", "/bin/true"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        leftover_cgroups(&n).is_empty(),
        "{:?}",
        leftover_cgroups(&n)
    );
}

#[test]
fn pure_cgroup2_layout_uses_the_unified_hierarchy_alone() {
    // A private mount namespace whose /sys/fs/cgroup is the cgroup2 hierarchy alone (as on a
    // pure cgroup v2 host; the v1 mounts stay in mountinfo, hidden): berth's cgroup is made
    // there, the container is born in it (CLONE_INTO_CGROUP) and it is removed afterwards.
    let img = img();
    let n = name("v2");
    let run = |extra: &str, cmd: &str| {
        let o = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount -t cgroup2 cgroup2 /sys/fs/cgroup && {BERTH} run --register=no -M {n} \
                 -D {img} --pipe {extra} {cmd}; rc=$?; ls -d /sys/fs/cgroup/machine-{n}-* \
                 2>/dev/null && echo LEFT; exit $rc"
            ))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Out::from(o)
    };
    let out = run("", "/bin/cat /proc/self/cgroup");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.lines().any(|l| l == "0::/"), "{out:?}");
    assert!(!out.stdout.contains("LEFT"), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");

    let v2_pids = std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers")
        .or_else(|_| std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .any(|c| c == "pids");
    let out = run("--property=TasksMax=5", "/bin/cat /sys/fs/cgroup/pids.max");
    if v2_pids {
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(out.stdout.trim(), "5", "{out:?}");
    } else {
        // This host's pids controller is bound to cgroup v1, which is hidden here.
        out.assert_one_line_error(125, "no pids cgroup controller");
        assert!(!out.stdout.contains("LEFT"), "{out:?}");
    }
}
