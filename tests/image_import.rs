//! Importing well-formed tarballs and OCI layouts: formats, layer semantics, metadata, the
//! store commands, and layouts written by umoci.

mod image_common;
use image_common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

fn rootfs_tar() -> Vec<u8> {
    let mut t = TarW::new();
    t.dir("./", 0o755)
        .dir("bin", 0o755)
        .file_owned("bin/suid", b"#!/bin/sh\n", 0o4755, 0, 0, 1_600_000_000)
        .file_owned("home-file", b"owned", 0o640, 1000, 1001, 1_500_000_000)
        .symlink("bin/sh", "busybox")
        .hardlink("bin/suid-link", "bin/suid")
        .dir("ro", 0o555)
        .file("ro/inside", b"written before the mode applies", 0o444);
    t.pax(&[
        ("SCHILY.xattr.user.note".into(), b"kept".to_vec()),
        ("SCHILY.xattr.trusted.evil".into(), b"dropped".to_vec()),
    ]);
    t.file("xattr-file", b"x", 0o644);
    t.pax(&[("SCHILY.xattr.security.capability".into(), FCAP.to_vec())]);
    t.file("bin/ping", b"x", 0o755);
    t.finish()
}

/// cap_net_bind_service=ep as a VFS_CAP_REVISION_2 xattr value.
const FCAP: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

fn check_rootfs(root: &std::path::Path) {
    assert_eq!(
        xattr_get(&root.join("bin/ping"), "security.capability").as_deref(),
        Some(&FCAP[..]),
        "file capabilities kept"
    );
    let suid = std::fs::metadata(root.join("bin/suid")).unwrap();
    assert_eq!(suid.permissions().mode() & 0o7777, 0o4755);
    assert_eq!(suid.mtime(), 1_600_000_000);
    assert_eq!(suid.nlink(), 2, "hardlink kept");
    let h = std::fs::metadata(root.join("home-file")).unwrap();
    assert_eq!((h.uid(), h.gid(), h.mode() & 0o7777), (1000, 1001, 0o640));
    assert_eq!(h.mtime(), 1_500_000_000);
    assert_eq!(
        std::fs::read_link(root.join("bin/sh")).unwrap().to_str(),
        Some("busybox")
    );
    let ro = std::fs::metadata(root.join("ro")).unwrap();
    assert_eq!(ro.permissions().mode() & 0o777, 0o555);
    assert_eq!(
        std::fs::read(root.join("ro/inside")).unwrap(),
        b"written before the mode applies"
    );
    let x = xattr_get(&root.join("xattr-file"), "user.note");
    assert_eq!(x.as_deref(), Some(&b"kept"[..]));
    assert_eq!(xattr_get(&root.join("xattr-file"), "trusted.evil"), None);
}

fn xattr_get(p: &std::path::Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let name = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C strings and a buffer of the given length.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

#[test]
fn tarball_formats_detected_from_content() {
    let r = Rig::new();
    let t = rootfs_tar();
    // multi-member gzip: two members, read whole
    let half = t.len() / 1024 * 512;
    let mut multi = gzip(&t[..half]);
    multi.extend(gzip(&t[half..]));
    let xz = {
        let mut c = Command::new("xz")
            .args(["-c", "-T1"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        c.stdin.take().unwrap().write_all(&t).unwrap();
        c.wait_with_output().unwrap().stdout
    };
    for (name, data) in [
        ("plain", t.clone()),
        ("gz", multi),
        ("zst", zstd(&t)),
        ("xz", xz),
    ] {
        // misleading file names: detection is by content
        let p = r.input(&format!("{name}.tar.bz2"));
        std::fs::write(&p, &data).unwrap();
        r.ok(&["import-tar", p.to_str().unwrap(), name]);
        check_rootfs(&r.image(name));
    }
    // standard input
    let o = Command::new(BERTH)
        .arg("--store")
        .arg(r.store())
        .args(["import-tar", "-", "stdin"])
        .stdin(std::fs::File::open(r.input("gz.tar.bz2")).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    check_rootfs(&r.image("stdin"));
    // one summary line when not on a terminal
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("Imported stdin: 1 layer,"), "{err}");
}

#[test]
fn store_commands_metadata_force_readonly_remove() {
    let r = Rig::new();
    let p = r.input("r.tar");
    std::fs::write(&p, rootfs_tar()).unwrap();
    r.ok(&["import-tar", p.to_str().unwrap(), "a"]);
    r.ok(&["import-tar", "--read-only", p.to_str().unwrap(), "b"]);
    // metadata beside the tree, not inside it
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(r.store().join(".berth/a.json")).unwrap()).unwrap();
    assert_eq!(meta["kind"], "tar");
    assert_eq!(meta["source"], p.to_str().unwrap());
    assert_eq!(
        meta["input_digest"],
        sha256(&std::fs::read(&p).unwrap()).as_str()
    );
    assert!(!r.image("a").join(".berth").exists());
    let lsattr = run(Command::new("lsattr").arg("-d").arg(r.image("b")));
    assert!(
        lsattr.split_whitespace().next().unwrap().contains('i'),
        "{lsattr}"
    );
    assert!(std::fs::write(r.image("b").join("new"), "x").is_err());

    let o = r.berth(&["images", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(list[0]["read_only"], false);
    assert_eq!(list[1]["read_only"], true);
    assert!(list[0]["size"].as_u64().unwrap() > 0);
    // BERTH_STORE selects the store too
    let o = std::process::Command::new(BERTH)
        .env("BERTH_STORE", r.store())
        .args(["images", "--json"])
        .output()
        .unwrap();
    let via_env: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(via_env.as_array().unwrap().len(), 2);
    let table = String::from_utf8(r.berth(&["images"]).stdout).unwrap();
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("2 images listed."), "{table}");

    // --force replaces, even a read-only image
    let t2 = TarW::new().file("only", b"new", 0o644).finish();
    let p2 = r.input("r2.tar");
    std::fs::write(&p2, t2).unwrap();
    r.ok(&["import-tar", "--force", p2.to_str().unwrap(), "b"]);
    assert!(r.image("b").join("only").exists());
    assert!(!r.image("b").join("bin").exists());
    r.ok(&["remove", "a", "b"]);
    r.assert_store_empty();
    let o = r.berth(&["remove", "a"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no image a in the store"));
}

#[test]
fn oci_layers_whiteouts_opaque_any_order() {
    let r = Rig::new();
    let o = Oci::new(r.input("layout"));
    let l1 = TarW::new()
        .dir("etc", 0o755)
        .file("etc/keep", b"1", 0o644)
        .file("etc/gone", b"1", 0o644)
        .file("etc/replaced", b"old", 0o644)
        .dir("opq", 0o755)
        .file("opq/lower", b"1", 0o644)
        .dir("opq/lowerdir", 0o755)
        .file("opq/lowerdir/x", b"1", 0o644)
        .dir("late", 0o700)
        .file("late/lower", b"1", 0o644)
        .file("same", b"lower", 0o644)
        .finish();
    // whiteouts after and before same-layer entries; opaque after new children
    let l2 = TarW::new()
        .file("opq/upper", b"2", 0o644)
        .file("opq/.wh..wh..opq", b"", 0o644)
        .file("etc/.wh.gone", b"", 0o644)
        .file("etc/replaced", b"new", 0o600)
        .file("late/.wh..wh..opq", b"", 0o644)
        .dir("late", 0o751)
        .file("late/upper", b"2", 0o644)
        .file("same", b"upper", 0o644)
        .file(".wh.same", b"", 0o644)
        .finish();
    let m = o.image(
        &[(&l1, MT_LAYER_GZ), (&l2, MT_LAYER_ZST)],
        serde_json::json!({"Entrypoint": ["/bin/sh"], "Env": ["A=1"]}),
    );
    o.index(&[(m.clone(), Some("v1"))]);
    r.ok(&["import-oci", &format!("{}:v1", o.path()), "img"]);
    let i = r.image("img");
    assert!(i.join("etc/keep").exists());
    assert!(!i.join("etc/gone").exists());
    assert_eq!(std::fs::read(i.join("etc/replaced")).unwrap(), b"new");
    assert_eq!(
        std::fs::metadata(i.join("etc/replaced")).unwrap().mode() & 0o777,
        0o600
    );
    assert!(
        i.join("opq/upper").exists(),
        "opaque keeps this layer's children"
    );
    assert!(!i.join("opq/lower").exists() && !i.join("opq/lowerdir").exists());
    assert!(i.join("late/upper").exists() && !i.join("late/lower").exists());
    assert_eq!(
        std::fs::metadata(i.join("late")).unwrap().mode() & 0o777,
        0o751,
        "dir over dir takes the new attributes"
    );
    assert_eq!(
        std::fs::read(i.join("same")).unwrap(),
        b"upper",
        "a whiteout never removes its own layer's entry"
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(r.store().join(".berth/img.json")).unwrap()).unwrap();
    assert_eq!(meta["kind"], "oci");
    assert_eq!(meta["manifest_digest"], m.digest.as_str());
    assert_eq!(meta["layers"].as_array().unwrap().len(), 2);
    assert_eq!(meta["config"]["config"]["Entrypoint"][0], "/bin/sh");
}

#[test]
fn oci_refs_nested_index_platforms_docker_types_sha512_and_tar_layout() {
    let r = Rig::new();
    let mut o = Oci::new(r.input("layout"));
    o.sha512 = true;
    let amd = TarW::new().file("which", b"amd64", 0o644).finish();
    let arm = TarW::new().file("which", b"arm64", 0o644).finish();
    let m_amd = o.image(&[(&amd, MT_LAYER_GZ)], serde_json::json!({}));
    let m_arm = o.image(&[(&arm, MT_LAYER_GZ)], serde_json::json!({}));
    let with_plat = |d: &Desc, arch: &str| {
        let mut v = d.json();
        v["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
        v
    };
    // foreign platform first: selection must skip it
    let inner = serde_json::json!({"schemaVersion": 2, "mediaType": MT_INDEX,
        "manifests": [with_plat(&m_arm, "arm64"), with_plat(&m_amd, "amd64")]});
    let inner = o.blob(MT_INDEX, &serde_json::to_vec(&inner).unwrap());
    let outer = serde_json::json!({"schemaVersion": 2, "mediaType": MT_INDEX,
        "manifests": [inner.json()]});
    let outer = o.blob(MT_INDEX, &serde_json::to_vec(&outer).unwrap());
    // a Docker schema 2 image beside it
    o.sha512 = false;
    let dk = TarW::new().file("which", b"docker", 0o644).finish();
    let (dl, diff) = o.layer(&dk, MT_LAYER_GZ);
    let dl = Desc {
        media_type: "application/vnd.docker.image.rootfs.diff.tar.gzip".into(),
        ..dl
    };
    let dc = serde_json::json!({"architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff]}});
    let dc = o.blob(
        "application/vnd.docker.container.image.v1+json",
        &serde_json::to_vec(&dc).unwrap(),
    );
    let dm = serde_json::json!({"schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": dc.json(), "layers": [dl.json()]});
    let dm = o.blob(
        "application/vnd.docker.distribution.manifest.v2+json",
        &serde_json::to_vec(&dm).unwrap(),
    );
    o.index(&[(outer, Some("multi")), (dm, Some("docker"))]);

    let e = r.fails(
        &["import-oci", o.path(), "img"],
        "the layout has 2 images; choose one with LAYOUT:REF (refs: multi, docker)",
    );
    assert!(e.contains("refs: multi, docker"));
    r.fails(
        &["import-oci", &format!("{}:nope", o.path()), "img"],
        "no image \"nope\" in the layout (refs: multi, docker)",
    );
    r.ok(&["import-oci", &format!("{}:multi", o.path()), "multi"]);
    assert_eq!(
        std::fs::read(r.image("multi").join("which")).unwrap(),
        b"amd64"
    );
    r.ok(&["import-oci", &format!("{}:docker", o.path()), "docker"]);
    assert_eq!(
        std::fs::read(r.image("docker").join("which")).unwrap(),
        b"docker"
    );

    // the same layout packed as a tar file
    let tarp = r.input("layout.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&o.dir)
        .arg("-cf")
        .arg(&tarp)
        .arg("."));
    r.ok(&[
        "import-oci",
        &format!("{}:multi", tarp.display()),
        "fromtar",
    ]);
    assert_eq!(
        std::fs::read(r.image("fromtar").join("which")).unwrap(),
        b"amd64"
    );
}

#[test]
fn umoci_written_layout_with_whiteout_layer() {
    let r = Rig::new();
    let layout = r.input("umoci");
    let l = layout.to_str().unwrap();
    run(Command::new("umoci").args(["init", "--layout", l]));
    run(Command::new("umoci").args(["new", "--image", &format!("{l}:t")]));
    let bundle = r.input("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image", &format!("{l}:t")])
        .arg(&bundle));
    busybox_rootfs(&bundle.join("rootfs"));
    std::fs::write(bundle.join("rootfs/etc/removed"), "x").unwrap();
    run(Command::new("umoci")
        .args(["repack", "--image", &format!("{l}:t")])
        .arg(&bundle));
    // a second bundle from the first layer: its repack adds a layer with a whiteout
    let bundle2 = r.input("bundle2");
    run(Command::new("umoci")
        .args(["unpack", "--image", &format!("{l}:t")])
        .arg(&bundle2));
    std::fs::remove_file(bundle2.join("rootfs/etc/removed")).unwrap();
    std::fs::write(bundle2.join("rootfs/etc/added"), "y").unwrap();
    run(Command::new("umoci")
        .args(["repack", "--image", &format!("{l}:t")])
        .arg(&bundle2));
    run(Command::new("umoci").args([
        "config",
        "--image",
        &format!("{l}:t"),
        "--config.entrypoint=/bin/sh",
        "--config.cmd=-c",
        "--config.env=HELLO=world",
        "--config.workingdir=/tmp",
    ]));
    r.ok(&["import-oci", &format!("{l}:t"), "u"]);
    let i = r.image("u");
    assert!(i.join("bin/busybox").exists());
    assert!(!i.join("etc/removed").exists(), "umoci's whiteout applied");
    assert_eq!(std::fs::read(i.join("etc/added")).unwrap(), b"y");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(r.store().join(".berth/u.json")).unwrap()).unwrap();
    assert_eq!(meta["layers"].as_array().unwrap().len(), 2);
    assert_eq!(meta["config"]["config"]["WorkingDir"], "/tmp");
    // umoci unpack of the same image gives the same tree (names and contents)
    let ref_bundle = r.input("ref");
    run(Command::new("umoci")
        .args(["unpack", "--image", &format!("{l}:t")])
        .arg(&ref_bundle));
    let a = run(Command::new("sh")
        .arg("-c")
        .arg("cd \"$0\" && find . -printf '%p %y %m %U %G %s %l\\n' | sort")
        .arg(&i));
    let b = run(Command::new("sh")
        .arg("-c")
        .arg("cd \"$0\" && find . -printf '%p %y %m %U %G %s %l\\n' | sort")
        .arg(ref_bundle.join("rootfs")));
    assert_eq!(a, b);
}

/// machinectl's image verbs find directories in /var/lib/machines and take FS_IMMUTABLE_FL
/// on the directory as read-only. (machinectl itself needs systemd as PID 1, which this test
/// machine does not have; the test checks what machined reads.)
#[test]
fn images_in_the_default_store_are_what_machined_reads() {
    let name = format!("berth-test-{}", std::process::id());
    let meta_dir = std::path::Path::new("/var/lib/machines/.berth");
    struct Cleanup(String, bool);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new(BERTH)
                .env_remove("BERTH_STORE")
                .args(["remove", &self.0])
                .output();
            // berth's metadata directory goes too if this test created it
            if self.1 {
                let d = std::path::Path::new("/var/lib/machines/.berth");
                let _ = std::fs::remove_file(d.join("lock"));
                let _ = std::fs::remove_dir(d);
            }
        }
    }
    let _c = Cleanup(name.clone(), !meta_dir.exists());
    let r = Rig::new();
    let p = r.input("r.tar");
    std::fs::write(&p, rootfs_tar()).unwrap();
    let o = Command::new(BERTH)
        .env_remove("BERTH_STORE")
        .args(["import-tar", "--read-only", p.to_str().unwrap(), &name])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dir = std::path::Path::new("/var/lib/machines").join(&name);
    let md = std::fs::symlink_metadata(&dir).unwrap();
    assert!(md.is_dir(), "a plain directory");
    check_rootfs(&dir);
    let lsattr = run(Command::new("lsattr").arg("-d").arg(&dir));
    assert!(
        lsattr.split_whitespace().next().unwrap().contains('i'),
        "{lsattr}"
    );
    assert!(
        std::path::Path::new("/var/lib/machines/.berth")
            .join(format!("{name}.json"))
            .exists()
    );
    let o = Command::new(BERTH)
        .env_remove("BERTH_STORE")
        .args(["images", "--json"])
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == name.as_str() && i["read_only"] == true)
    );
    let o = Command::new(BERTH)
        .env_remove("BERTH_STORE")
        .args(["remove", &name])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!dir.exists());
    assert!(
        !std::path::Path::new("/var/lib/machines/.berth")
            .join(format!("{name}.json"))
            .exists()
    );
}

#[test]
fn raw_disk_images_are_listed_not_run() {
    // machinectl keeps NAME.raw disk images in the store: listed (type raw, the file's size),
    // refused by run -M with a pointer to systemd-nspawn -i, removable
    let r = Rig::new();
    let t = TarW::new().file("a", b"x", 0o644).finish();
    let p = r.input("r.tar");
    std::fs::write(&p, t).unwrap();
    r.ok(&["import-tar", p.to_str().unwrap(), "dir"]);
    let raw = r.store().join("disk.raw");
    std::fs::File::create(&raw)
        .unwrap()
        .set_len(3 << 20)
        .unwrap();
    // a file that is not NAME.raw, and a .raw that is not a regular file, are not images
    std::fs::write(r.store().join("notes.txt"), "x").unwrap();
    std::fs::create_dir(r.store().join("odd.raw")).unwrap();

    let o = r.berth(&["images", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows: Vec<(&str, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["name"].as_str().unwrap(), i["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        rows,
        [("dir", "tar"), ("disk", "raw"), ("odd.raw", "directory")]
    );
    assert_eq!(list[1]["size"], 3 << 20);
    assert_eq!(list[1]["read_only"], false);
    let table = String::from_utf8(r.berth(&["images"]).stdout).unwrap();
    let row = table.lines().find(|l| l.starts_with("disk ")).unwrap();
    assert!(row.contains("3.0M") && row.ends_with("raw"), "{table}");
    // read-only as machinectl sees it: no write bit
    std::fs::set_permissions(&raw, std::fs::Permissions::from_mode(0o444)).unwrap();
    let o = r.berth(&["images", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list[1]["read_only"], true);

    let o = r.berth(&["run", "-M", "disk", "/bin/true"]);
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        format!(
            "berth: image disk is a raw disk image ({}): raw disk images are not supported; use systemd-nspawn -i\n",
            raw.display()
        )
    );
    // the name is taken: an import of the same name is refused, even with --force
    let o = r.berth(&["import-tar", "--force", p.to_str().unwrap(), "disk"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("image disk exists as a raw disk image (disk.raw): remove it first"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    r.ok(&["remove", "disk"]);
    assert!(!raw.exists());
    std::fs::remove_dir(r.store().join("odd.raw")).unwrap();
    std::fs::remove_file(r.store().join("notes.txt")).unwrap();
    r.ok(&["remove", "dir"]);
    r.assert_store_empty();
}
