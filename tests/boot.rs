//! `berth run -b`: booting a Debian tree (images/debian) as a full OS container, without
//! machined (--register=no: berth's own, delegated cgroup). The machinectl side is in
//! tests/systemd.rs, inside the real-systemd rig.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use support::*;

/// A private copy, as a booted system writes to its tree.
fn debian_copy(tmp: &Path) -> PathBuf {
    copy_tree(debian(), &tmp.join("debian"))
}

struct Booted {
    child: Option<Child>,
    log: PathBuf,
}

impl Booted {
    fn start(root: &Path, name: &str, tmp: &Path) -> Booted {
        Self::start_with(root, name, tmp, &[])
    }

    fn start_with(root: &Path, name: &str, tmp: &Path, extra: &[&str]) -> Booted {
        let log = tmp.join(format!("{name}.log"));
        let child = berth()
            .args([
                "run",
                "-D",
                root.to_str().unwrap(),
                "-b",
                "-M",
                name,
                "--register=no",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::from(
                std::fs::File::options().append(true).open(&log).unwrap(),
            ))
            .spawn()
            .unwrap();
        Booted {
            child: Some(child),
            log,
        }
    }

    fn berth_pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// The container's PID 1 on the host: the child of berth's that is PID 1 of a PID
    /// namespace of its own (berth may also have a short-lived D-Bus helper child).
    fn init_pid(&self) -> Option<u32> {
        let kids =
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.berth_pid()))
                .ok()?;
        kids.split_whitespace()
            .filter_map(|k| k.parse().ok())
            .find(|k: &u32| {
                std::fs::read_to_string(format!("/proc/{k}/status"))
                    .ok()
                    .and_then(|st| {
                        st.lines().find_map(|l| l.strip_prefix("NSpid:")).map(|ns| {
                            let ids: Vec<&str> = ns.split_whitespace().collect();
                            ids.len() > 1 && ids.last() == Some(&"1")
                        })
                    })
                    .unwrap_or(false)
            })
    }

    fn nsenter(&self, args: &[&str]) -> std::process::Output {
        let pid = self.init_pid().expect("container running").to_string();
        Command::new("timeout")
            .args(["120", "nsenter", "-t", &pid, "-a"])
            .args(args)
            .output()
            .unwrap()
    }

    /// `systemctl is-system-running --wait`, with the failed units named when degraded.
    fn wait_running(&self) -> String {
        // The init exists before it has executed systemd; systemctl would say "offline".
        let is_systemd = || {
            self.init_pid()
                .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).ok())
                .is_some_and(|c| c.trim() == "systemd")
        };
        assert!(eventually(60, is_systemd), "no container: {}", self.log());
        // Until systemd's control socket is up, systemctl answers "offline" at once.
        let end = std::time::Instant::now() + std::time::Duration::from_secs(150);
        let state = loop {
            let o = self.nsenter(&["systemctl", "is-system-running", "--wait"]);
            let state = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if (state != "offline" && !state.is_empty()) || std::time::Instant::now() > end {
                break state;
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
        };
        if state == "degraded" {
            let failed = self.nsenter(&["systemctl", "--failed", "--no-legend", "--plain"]);
            eprintln!(
                "degraded; failed units:\n{}",
                String::from_utf8_lossy(&failed.stdout)
            );
        }
        state
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait(&mut self, secs: u64) -> Option<i32> {
        let child = self.child.as_mut().unwrap();
        let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while std::time::Instant::now() < end {
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                return st.code();
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn boots_to_running_and_halts_cleanly_on_sigterm() {
    let tmp = TempDir::new("boot");
    let root = debian_copy(tmp.path());
    let before = host_mounts();
    let mut b = Booted::start(&root, "boot-term", tmp.path());
    let state = b.wait_running();
    assert!(
        state == "running" || state == "degraded",
        "state {state:?}; log:\n{}",
        b.log()
    );
    // The container interface, seen by the booted system.
    let o = b.nsenter(&["sh", "-c", "echo $(systemd-detect-virt -c) $(cat /run/host/container-manager) $(hostname); cat /proc/self/uid_map"]);
    let out = String::from_utf8_lossy(&o.stdout);
    // The kernel hostname starts as the machine name; the booted systemd then applies the
    // tree's own /etc/hostname, as under nspawn.
    let tree_hostname =
        std::fs::read_to_string(root.join("etc/hostname")).unwrap_or_else(|_| "boot-term".into());
    assert_eq!(
        out.lines().next().unwrap(),
        format!("container-other berth {}", tree_hostname.trim()),
        "{out}"
    );
    assert!(
        !out.contains(" 0          0 "),
        "a booted container gets a user namespace by default: {out}"
    );
    // Its systemd owns its cgroup subtree.
    let o = b.nsenter(&[
        "sh",
        "-c",
        "ls /sys/fs/cgroup | grep -c -e init.scope -e system.slice",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "2",
        "delegated cgroup tree"
    );
    // SIGTERM becomes SIGRTMIN+3: systemd halts, and berth exits 0.
    unsafe { libc::kill(b.berth_pid() as i32, libc::SIGTERM) };
    assert_eq!(b.wait(90), Some(0), "log:\n{}", b.log());
    assert!(
        b.log().contains("Halting system") || b.log().contains("System Halt"),
        "{}",
        b.log()
    );
    assert_eq!(host_mounts(), before);
}

#[test]
fn reboot_restarts_in_the_same_run_and_poweroff_exits_0() {
    let tmp = TempDir::new("reboot");
    let root = debian_copy(tmp.path());
    let mut b = Booted::start(&root, "boot-reboot", tmp.path());
    let state = b.wait_running();
    assert!(
        state == "running" || state == "degraded",
        "{state}: {}",
        b.log()
    );
    let first = b.init_pid().unwrap();
    let _ = b.nsenter(&["systemctl", "reboot"]);
    assert!(
        eventually(90, || b.init_pid().is_some_and(|p| p != first)),
        "not restarted: {}",
        b.log()
    );
    let state = b.wait_running();
    assert!(
        state == "running" || state == "degraded",
        "after reboot {state}: {}",
        b.log()
    );
    let _ = b.nsenter(&["systemctl", "poweroff"]);
    assert_eq!(b.wait(90), Some(0), "{}", b.log());
}

#[test]
fn trees_that_cannot_boot_are_refused_with_one_line() {
    let tmp = TempDir::new("noboot");
    let root = busybox_copy(tmp.path());
    // busybox has os-release; without its /sbin/init applet, no init where nspawn looks.
    std::fs::remove_file(root.join("sbin/init")).unwrap();
    let o = run_with(
        &["run", "-D", root.to_str().unwrap(), "-b", "--register=no"],
        None,
    );
    o.assert_one_line_error(125, "no init");
    std::fs::remove_file(root.join("etc/os-release")).unwrap();
    let o = run_with(
        &["run", "-D", root.to_str().unwrap(), "-b", "--register=no"],
        None,
    );
    o.assert_one_line_error(125, "not an OS tree");
    let o = run_with(
        &[
            "run",
            "-D",
            root.to_str().unwrap(),
            "-b",
            "--as-pid2",
            "/bin/true",
        ],
        None,
    );
    assert_ne!(o.code, 0);
}

#[test]
fn reboot_under_keep_unit_exits_133_for_the_unit_to_restart() {
    let tmp = TempDir::new("reboot133");
    let root = debian_copy(tmp.path());
    let mut b = Booted::start_with(&root, "boot-133", tmp.path(), &["--keep-unit"]);
    let state = b.wait_running();
    assert!(
        state == "running" || state == "degraded",
        "{state}: {}",
        b.log()
    );
    let _ = b.nsenter(&["systemctl", "reboot"]);
    assert_eq!(b.wait(90), Some(133), "{}", b.log());
}
