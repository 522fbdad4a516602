//! The systemd test rig itself: it boots, machined and systemd-nspawn work in it, and stopping
//! it leaves no cgroup and no mount behind. Fails (never skips) when the rig cannot start.

mod rig;

use std::path::Path;

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn rig_runs_nspawn_registered_and_leaves_nothing_behind() {
    let tmp = TempDir(std::env::temp_dir().join(format!("berth-rig-test-{}", std::process::id())));
    let tree = tmp.0.join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    rig::busybox_tree(&tree);
    std::fs::create_dir_all(tree.join("usr")).unwrap();

    let r = rig::Rig::start(&[&tmp.0]);
    let pid = r.pid;
    let cgroups = r.cgroups.clone();
    assert!(!cgroups.is_empty());
    for cg in &cgroups {
        assert!(cg.is_dir(), "{} exists while the rig runs", cg.display());
    }
    assert!(
        !rig::host_mounts_matching("berth-rig").is_empty(),
        "the rig's state tmpfs is mounted on the host"
    );

    // systemd is PID 1 in there, and says so.
    let state = r.sh_ok("systemctl is-system-running || true");
    assert!(matches!(state.trim(), "running" | "degraded"), "{state}");
    assert_eq!(r.sh_ok("cat /proc/1/comm").trim(), "systemd");

    // nspawn registers a container with machined in the rig.
    let t = tree.display();
    let out = r.sh_ok(&format!(
        "systemd-nspawn --register=yes -q --console=pipe -D {t} -M rigtest /bin/sleep 600 \
         </dev/null >/dev/null 2>&1 & \
         for i in $(seq 1 100); do machinectl show rigtest >/dev/null 2>&1 && break; sleep 0.05; done; \
         machinectl list --no-legend"
    ));
    assert!(
        out.contains("rigtest") && out.contains("systemd-nspawn"),
        "{out}"
    );
    let unit = r.sh_ok("machinectl show -p Unit --value rigtest");
    assert_eq!(unit.trim(), "machine-rigtest.scope");
    r.sh_ok(
        "machinectl terminate rigtest; \
         for i in $(seq 1 100); do machinectl show rigtest >/dev/null 2>&1 || exit 0; sleep 0.05; done; exit 1",
    );
    assert!(!r.sh_ok("machinectl list --no-legend").contains("rigtest"));

    r.stop();
    assert!(
        std::fs::metadata(format!("/proc/{pid}")).is_err(),
        "systemd (PID {pid}) is gone"
    );
    for cg in &cgroups {
        assert!(!cg.exists(), "{} was removed", cg.display());
    }
    let left = rig::host_mounts_matching("berth-rig");
    assert!(left.is_empty(), "mounts left: {left:?}");
    assert!(!Path::new(&format!("/run/berth-rig/pid-{pid}")).exists());
}
