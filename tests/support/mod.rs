//! Shared by the integration tests: the berth binary, the busybox test image (built once per
//! test run from images/busybox), and host-side observations (mounts, processes).
#![allow(dead_code)]

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub fn berth() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
    c.env_remove("BERTH_STORE");
    c
}

/// The busybox tree, built by the repository's own recipe under the target directory.
/// A flock serialises builders across concurrently running test binaries.
pub fn busybox() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("images");
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("busybox");
        let lock = std::fs::File::create(dir.join(".lock")).unwrap();
        nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map(|guard| {
                if !out.join("bin/busybox").exists() {
                    let st =
                        Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/images/busybox/build"))
                            .arg(&out)
                            .status()
                            .expect("running images/busybox/build");
                    assert!(st.success(), "images/busybox/build failed");
                }
                drop(guard);
            })
            .map_err(|(_, e)| e)
            .expect("locking the image directory");
        out
    })
}

/// The Debian tree (systemd, dbus, machined), built or reused from build/cache by the
/// repository's recipe, images/debian/build.
pub fn debian() -> &'static Path {
    static TREE: OnceLock<PathBuf> = OnceLock::new();
    TREE.get_or_init(|| {
        let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/images/debian/build"))
            .arg("--tree-only")
            .stderr(Stdio::inherit())
            .output()
            .expect("running images/debian/build");
        assert!(out.status.success(), "images/debian/build failed");
        let text = String::from_utf8(out.stdout).unwrap();
        PathBuf::from(text.lines().next().expect("the tree's path").trim())
    })
}

/// A private copy of the busybox tree for tests that change it.
pub fn busybox_copy(tmp: &Path) -> PathBuf {
    copy_tree(busybox(), &tmp.join("rootfs"))
}

/// `cp -a SRC DST` (ownership, modes and links kept), returning DST.
pub fn copy_tree(src: &Path, dst: &Path) -> PathBuf {
    let st = Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(dst)
        .status()
        .unwrap();
    assert!(st.success(), "cp -a {} {}", src.display(), dst.display());
    dst.to_path_buf()
}

#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// berth's own failure: exit 125 and exactly one line on stderr, "berth: ...".
    pub fn assert_one_line_error(&self, code: i32, needle: &str) {
        assert_eq!(self.code, code, "exit status; stderr: {}", self.stderr);
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line of error, got {:?}", self.stderr);
        assert!(lines[0].starts_with("berth: "), "{:?}", lines[0]);
        assert!(
            lines[0].contains(needle),
            "{:?} should mention {needle:?}",
            lines[0]
        );
    }
}

pub fn run_with(args: &[&str], stdin: Option<&str>) -> Out {
    let mut c = berth();
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = c.spawn().expect("spawning berth");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    Out::from(child.wait_with_output().unwrap())
}

impl From<std::process::Output> for Out {
    /// A process killed by signal N reads as 128+N, as a shell reports it.
    fn from(o: std::process::Output) -> Out {
        Out {
            code: o
                .status
                .code()
                .unwrap_or_else(|| 128 + o.status.signal().unwrap_or(0)),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// `berth run -D busybox EXTRA... /bin/sh -c SCRIPT`
pub fn sh(extra: &[&str], script: &str) -> Out {
    let img = busybox().to_str().unwrap().to_owned();
    let mut args = vec!["run", "-D", &img];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["/bin/sh", "-c", script]);
    run_with(&args, None)
}

/// The host's mount points, as seen from the test process's own mount namespace.
pub fn host_mounts() -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut v: Vec<String> = info
        .lines()
        .map(|l| l.split(' ').nth(4).unwrap_or("").to_string())
        .collect();
    v.sort();
    v
}

/// Pids of processes whose command line starts with `prefix` (NUL-separated arguments).
pub fn procs_with(prefix: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline"))
            && cmd.starts_with(prefix.as_bytes())
        {
            out.push(pid);
        }
    }
    out
}

/// Polls `cond` for up to `secs` seconds.
pub fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    cond()
}

/// A temporary directory removed on drop, also when the test fails.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "berth-test-{tag}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn rand_suffix() -> String {
    let mut b = [0u8; 6];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The probe, compiled once per test run under the target directory.
pub fn probe() -> &'static Path {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("probe");
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("probe");
        let tmp = dir.join(format!(".probe.{}", std::process::id()));
        let st = Command::new("gcc")
            .args(["-static", "-O2", "-Wall", "-o"])
            .arg(&tmp)
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/probe/probe.c"))
            .status()
            .expect("running gcc (apt-get install build-essential)");
        assert!(st.success(), "compiling tests/probe/probe.c failed");
        std::fs::rename(&tmp, &out).unwrap();
        out
    })
}
