//! Issue 3: the image store is machinectl's. Imports into /var/lib/machines of a real systemd
//! host (the rig) appear in `machinectl list-images`, with berth's --read-only as machinectl's
//! read-only flag, and `berth remove` takes them away again.

mod rig;
mod support;

use rig::shared_sh_ok as rig_sh;
use support::{busybox, rand_suffix};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

#[test]
fn machinectl_sees_imported_images() {
    let (_, scratch) = rig::shared();
    let n = format!("img{}", &rand_suffix()[..6]);
    let ro = format!("{n}ro");
    let tarball = scratch.join(format!("{n}.tar.gz"));
    let st = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(busybox())
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let t = tarball.display();
    rig_sh(&format!(
        "mkdir -p /var/lib/machines && {BERTH} import-tar -q {t} {n}"
    ));
    rig_sh(&format!("{BERTH} import-tar -q --read-only {t} {ro}"));

    let list = rig_sh("machinectl list-images --no-legend --no-pager");
    let line = |name: &str| {
        list.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} not in machinectl list-images:\n{list}"))
            .to_string()
    };
    assert!(line(&n).contains("directory"), "{}", line(&n));
    assert_eq!(
        rig_sh(&format!("machinectl show-image -p ReadOnly --value {n}")).trim(),
        "no"
    );
    assert_eq!(
        rig_sh(&format!("machinectl show-image -p ReadOnly --value {ro}")).trim(),
        "yes"
    );
    // berth's own listing agrees.
    let ours = rig_sh(&format!("{BERTH} images"));
    assert!(ours.contains(&n) && ours.contains(&ro), "{ours}");

    rig_sh(&format!("{BERTH} remove {n} {ro}"));
    let after = rig_sh("machinectl list-images --no-legend --no-pager");
    assert!(
        !after.contains(&n),
        "still listed after berth remove:\n{after}"
    );
}
