//! The pure cgroup v2 VM test tier (issue 6): boots Debian's kernel with systemd as PID 1 on a
//! unified cgroup hierarchy under qemu and runs the inside tests listed in `tests/vm/enabled`
//! there, against the berth binary cargo just built. See `tests/vm/run` for the steps and the
//! caches in `build/`.
//!
//! This test fails (never skips) when qemu, the kernel package or anything else the tier needs
//! cannot be had: CI must not pass a tier it did not run.

use std::path::Path;
use std::process::Command;

#[test]
fn pure_cgroup_v2_vm() {
    let berth = env!("CARGO_BIN_EXE_berth");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm/run");
    // The script's progress and each inside result go straight to the terminal (stderr).
    let status = Command::new(&script)
        .arg(berth)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        status.success(),
        "the VM test tier failed ({status}); see the lines starting with `vm:` above"
    );
}
