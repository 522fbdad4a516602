//! Test support: a throwaway systemd 252 host (tests/rig/systemd-host) and busybox trees.
//!
//! `Rig::start` boots systemd as PID 1 in fresh namespaces and panics (the test fails, never
//! skips) when it cannot. Dropping the `Rig` powers it off and removes every mount and cgroup it
//! made. `shared()` is one rig for a whole test binary, stopped when the binary exits.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rig/systemd-host")
}

pub struct Rig {
    pub pid: u32,
    /// The rig's own cgroups on the host (one per hierarchy), as the script recorded them.
    pub cgroups: Vec<PathBuf>,
    stopped: bool,
}

impl Rig {
    /// Boots a rig with `workdirs` bound in live (they must exist). Panics with the script's
    /// stderr when the rig cannot start.
    pub fn start(workdirs: &[&Path]) -> Rig {
        let out = Command::new(script())
            .env("BERTH_RIG_OWNER", std::process::id().to_string())
            .arg("start")
            .args(workdirs)
            .output()
            .expect("running tests/rig/systemd-host");
        assert!(
            out.status.success(),
            "the systemd test rig did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pid: u32 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("systemd-host start prints a PID");
        let state = std::fs::read_link(format!("/run/berth-rig/pid-{pid}"))
            .expect("the rig's state directory");
        let cgroups = std::fs::read_to_string(state.join("cgroups"))
            .expect("the rig's cgroup list")
            .lines()
            .map(PathBuf::from)
            .collect();
        Rig {
            pid,
            cgroups,
            stopped: false,
        }
    }

    /// A command run inside the rig (all of its namespaces; the host's cgroup).
    pub fn cmd<S: AsRef<OsStr>>(&self, prog: S) -> Command {
        let mut c = Command::new("nsenter");
        c.arg("-t").arg(self.pid.to_string()).arg("-a").arg(prog);
        c
    }

    /// `bash -c SCRIPT` inside the rig.
    pub fn sh(&self, script: &str) -> Output {
        self.cmd("bash")
            .arg("-c")
            .arg(script)
            .output()
            .expect("nsenter")
    }

    /// `bash -c SCRIPT` inside the rig; panics unless it succeeds; returns its stdout.
    pub fn sh_ok(&self, script: &str) -> String {
        stdout_of_success(script, self.sh(script))
    }

    pub fn stop(mut self) {
        self.do_stop();
    }

    fn do_stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let out = Command::new(script())
            .arg("stop")
            .arg(self.pid.to_string())
            .output()
            .expect("running tests/rig/systemd-host stop");
        if !out.status.success() {
            eprintln!(
                "systemd-host stop {} failed: {}",
                self.pid,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.do_stop();
    }
}

struct Shared {
    rig: std::sync::Mutex<Option<Rig>>,
    pid: u32,
    scratch: PathBuf,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

extern "C" fn stop_shared() {
    if let Some(s) = SHARED.get() {
        if let Some(rig) = s.rig.lock().unwrap_or_else(|e| e.into_inner()).take() {
            rig.stop();
        }
        let _ = std::fs::remove_dir_all(&s.scratch);
    }
}

/// One rig for the whole test binary, booted on first use with the worktree (binary, units)
/// and a scratch directory bound in; stopped and removed when the test binary exits.
/// Returns (rig PID, scratch dir).
pub fn shared() -> (u32, &'static Path) {
    let s = SHARED.get_or_init(|| {
        let scratch =
            std::env::temp_dir().join(format!("berth-rig-scratch-{}", std::process::id()));
        std::fs::create_dir_all(&scratch).unwrap();
        let rig = Rig::start(&[Path::new(env!("CARGO_MANIFEST_DIR")), &scratch]);
        // SAFETY: registering a plain extern "C" function with no captured state.
        unsafe { libc::atexit(stop_shared) };
        Shared {
            pid: rig.pid,
            rig: std::sync::Mutex::new(Some(rig)),
            scratch,
        }
    });
    (s.pid, &s.scratch)
}

/// A command inside the shared rig.
pub fn shared_cmd<S: AsRef<OsStr>>(prog: S) -> Command {
    let (pid, _) = shared();
    let mut c = Command::new("nsenter");
    c.arg("-t").arg(pid.to_string()).arg("-a").arg(prog);
    c
}

/// `bash -c SCRIPT` inside the shared rig; panics unless it succeeds; returns its stdout.
pub fn shared_sh_ok(script: &str) -> String {
    let out = shared_cmd("bash")
        .arg("-c")
        .arg(script)
        .output()
        .expect("nsenter");
    stdout_of_success(script, out)
}

fn stdout_of_success(script: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "in the rig: {script}\nstatus {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A minimal root tree from the host's static busybox: /bin/busybox and its applets as
/// symlinks, the directories a container needs, and an os-release so nspawn accepts it.
pub fn busybox_tree(dir: &Path) {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox is not installed (apt-get install busybox-static)");
    for d in [
        "bin", "sbin", "usr/bin", "etc", "proc", "sys", "dev", "tmp", "run", "root",
    ] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy(busybox, dir.join("bin/busybox")).unwrap();
    let list = Command::new(busybox).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet == "busybox" {
            continue;
        }
        let _ = std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet));
    }
    std::fs::write(dir.join("etc/os-release"), "ID=busybox\nNAME=BusyBox\n").unwrap();
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(dir.join("etc/group"), "root:x:0:\n").unwrap();
}

/// Every mount on the host whose source or target mentions `needle`.
pub fn host_mounts_matching(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}
