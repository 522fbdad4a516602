//! `berth run -M NAME` on a stored image (the OCI config as the container's defaults) and
//! `-x/--ephemeral`, seen from inside the container and from the host.

mod image_common;
use image_common::*;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A store holding the busybox OCI image built by images/busybox/build-oci.
fn rig_with_image() -> Rig {
    let r = Rig::new();
    let layout = r.input("busybox-oci");
    run(Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/images/busybox/build-oci"
    ))
    .arg(&layout));
    r.ok(&["import-oci", &format!("{}:latest", layout.display()), "bb"]);
    r
}

fn berth_run(r: &Rig, args: &[&str]) -> (i32, String, String) {
    let o = Command::new(BERTH)
        .arg("--store")
        .arg(r.store())
        .arg("run")
        .arg("--pipe")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn run_stored_image_with_its_config() {
    let r = rig_with_image();
    // Entrypoint + Cmd, Env, WorkingDir
    let (code, out, err) = berth_run(&r, &["-M", "bb"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "hello from berth in /srv\n");
    // a COMMAND replaces Cmd and keeps the Entrypoint (sh -c)
    let (code, out, err) = berth_run(&r, &["-M", "bb", "echo $GREETING; pwd; cat /etc/motd"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "berth\n/srv\nberth busybox OCI image\n");
    // the user's -E and --chdir win over the image
    let (code, out, err) = berth_run(
        &r,
        &[
            "-M",
            "bb",
            "-E",
            "GREETING=user",
            "--chdir",
            "/tmp",
            "echo $GREETING; pwd",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "user\n/tmp\n");
    // the layer-2 whiteout took effect
    let (code, _, _) = berth_run(&r, &["-M", "bb", "test -e /etc/layer1-only"]);
    assert_eq!(code, 1);
}

#[test]
fn run_unknown_image_is_one_line_error() {
    let r = Rig::new();
    let (code, out, err) = berth_run(&r, &["-M", "nope", "/bin/true"]);
    assert_eq!(code, 125);
    assert_eq!(out, "");
    assert_eq!(err, "berth: no image nope in the store\n");
}

#[test]
fn ephemeral_writes_do_not_persist() {
    let r = rig_with_image();
    let before = snapshot(&r.image("bb"), std::path::Path::new("/nonexistent"));
    let (code, out, err) = berth_run(
        &r,
        &[
            "-M",
            "bb",
            "-x",
            "echo changed > /etc/motd; touch /new; rm /bin/ls; awk '$2 == \"/\"' /proc/self/mounts; cat /etc/motd; ls /new",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("overlay / overlay "), "{out}");
    assert!(
        !lines[0].contains(r.path().to_str().unwrap()),
        "no host paths shown: {out}"
    );
    assert_eq!(&lines[1..], ["changed", "/new"]);
    // nothing reached the image
    assert_eq!(
        before,
        snapshot(&r.image("bb"), std::path::Path::new("/nonexistent"))
    );
    let (code, out, _) = berth_run(
        &r,
        &["-M", "bb", "cat /etc/motd; test -e /new || echo gone"],
    );
    assert_eq!(code, 0);
    assert_eq!(out, "berth busybox OCI image\ngone\n");
    // and -x works on a -D tree too
    let tree = r.image("bb");
    let (code, _, err) = berth_run(
        &r,
        &[
            "-D",
            tree.to_str().unwrap(),
            "-M",
            "eph",
            "-x",
            "/bin/sh",
            "-c",
            "touch /d-new",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!tree.join("d-new").exists());
}

#[test]
fn stop_signal_becomes_the_kill_signal() {
    let r = rig_with_image();
    // PID 1 traps SIGINT (the image's StopSignal); berth gets SIGTERM and must forward SIGINT
    let (mut child, mut stdout) = Sleeper::start(
        &r,
        "trap 'echo got INT; exit 7' INT; trap 'echo got TERM; exit 8' TERM; echo ready; while :; do sleep 0.1; done",
    );
    let status = child.stop();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "got INT\n");
    assert_eq!(status.code(), Some(7));
}

#[test]
fn read_only_image_runs_read_only_unless_ephemeral() {
    let r = rig_with_image();
    let layout = r.input("busybox-oci");
    r.ok(&[
        "import-oci",
        "--read-only",
        &format!("{}:latest", layout.display()),
        "ro",
    ]);
    let (code, out, err) = berth_run(&r, &["-M", "ro", "touch /etc/x 2>&1; echo rc=$?"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Read-only file system") && out.ends_with("rc=1\n"),
        "{out}"
    );
    let (code, out, err) = berth_run(&r, &["-M", "ro", "-x", "touch /etc/x; echo rc=$?"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "rc=0\n");
    assert!(!r.image("ro").join("etc/x").exists());
}

/// Issue 7: an imported image runs with -U without a manual chown, also from a store the
/// namespace's root cannot search (machined's /var/lib/machines is 0700), and stays
/// unshifted on disk (idmapped root).
#[test]
fn stored_image_runs_with_a_user_namespace_from_a_0700_store() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let r = rig_with_image();
    std::fs::set_permissions(r.store(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let (code, out, err) = berth_run(
        &r,
        &[
            "-M",
            "bb",
            "-U",
            "cat /proc/self/uid_map; id -u; touch /srv/made-inside; ls -ln /srv/made-inside",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let base: u32 = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_ne!(base, 0, "a shifted range: {out}");
    assert!(out.contains("\n0\n"), "root inside: {out}");
    let made = std::fs::metadata(r.image("bb").join("srv/made-inside")).unwrap();
    assert_eq!(made.uid(), 0, "written unshifted through the idmapped root");
    // -x on top: nothing persists, with the same user namespace.
    let (code, _, err) = berth_run(&r, &["-M", "bb", "-U", "-x", "touch /srv/ephemeral"]);
    assert_eq!(code, 0, "{err}");
    assert!(!r.image("bb").join("srv/ephemeral").exists());
}

#[test]
fn remove_refuses_an_image_a_running_container_uses() {
    let r = rig_with_image();
    // PID 1 ends on the image's StopSignal (SIGINT), which berth sends on SIGTERM
    let (mut child, _stdout) = Sleeper::start(
        &r,
        "trap 'exit 0' INT TERM; echo ready; while :; do sleep 0.1; done",
    );

    let busy = "image bb is in use by a running container (or by another removal or import)";
    let o = r.berth(&["remove", "bb"]);
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        format!("berth: removing bb: {busy}\n")
    );
    // the tree and its metadata are intact, and the image is still listed
    assert!(r.image("bb").join("bin/busybox").exists());
    assert!(r.store().join(".berth/bb.json").exists());
    let list = String::from_utf8(r.berth(&["images"]).stdout).unwrap();
    assert!(list.lines().any(|l| l.starts_with("bb ")), "{list}");
    // --force may not replace it either (refused before any work)
    let layout = r.input("busybox-oci");
    let o = r.berth(&[
        "import-oci",
        "--force",
        &format!("{}:latest", layout.display()),
        "bb",
    ]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(busy),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(r.image("bb").join("bin/busybox").exists());

    // once the container has ended, remove works
    assert!(child.stop().success());
    r.ok(&["remove", "bb"]);
    r.assert_store_empty();
}

/// `berth run -M bb SCRIPT` from the rig's store, started and ready (its script has printed
/// "ready"); killed by pid and reaped when dropped, also when the test fails.
struct Sleeper(std::process::Child);

impl Sleeper {
    fn start(r: &Rig, script: &str) -> (Sleeper, std::process::ChildStdout) {
        let mut child = Command::new(BERTH)
            .arg("--store")
            .arg(r.store())
            .args(["run", "--pipe", "-M", "bb", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let child = Sleeper(child);
        let mut buf = [0u8; 6];
        stdout.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ready\n");
        (child, stdout)
    }

    /// SIGTERM to berth, as `systemctl stop` sends; its exit status within 20 s.
    fn stop(&mut self) -> std::process::ExitStatus {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "container did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
