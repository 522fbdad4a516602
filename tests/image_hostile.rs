//! Hostile tarballs and OCI layouts. Each case asserts berth's exact one-line error (or, where
//! the input is legal but aims outside, where the content landed), that nothing outside the
//! store changed, and that no image or temporary tree was left behind.

#![allow(clippy::cloned_ref_to_slice_refs)]

mod image_common;
use image_common::*;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

fn outside(r: &Rig) -> String {
    r.outside().to_str().unwrap().to_string()
}

#[test]
fn h01_dotdot_name() {
    let r = Rig::new();
    let t = TarW::new().file("../outside/pwn", b"x", 0o644).finish();
    r.tar_fails(&t, "entry ../outside/pwn: path escapes the image root");
}

#[test]
fn h02_dotdot_inside_name() {
    let r = Rig::new();
    let t = TarW::new()
        .dir("a", 0o755)
        .file("a/../../../outside/secret", b"x", 0o644)
        .finish();
    r.tar_fails(&t, "path escapes the image root");
}

#[test]
fn h03_absolute_name_lands_inside() {
    let r = Rig::new();
    let abs = format!("{}/secret", outside(&r));
    let t = TarW::new().file(&abs, b"pwned", 0o644).finish();
    r.tar_ok(&t, "img");
    let inside = r.image("img").join(abs.trim_start_matches('/'));
    assert_eq!(std::fs::read(inside).unwrap(), b"pwned");
    assert_eq!(
        std::fs::read(r.outside().join("secret")).unwrap(),
        b"do not touch\n"
    );
}

#[test]
fn h04_symlink_absolute_then_write_same_layer() {
    let r = Rig::new();
    let t = TarW::new()
        .symlink("evil", &outside(&r))
        .file("evil/secret", b"pwned", 0o644)
        .file("evil/new", b"pwned", 0o644)
        .finish();
    r.tar_ok(&t, "img");
    let clamped = r.image("img").join(outside(&r).trim_start_matches('/'));
    assert_eq!(std::fs::read(clamped.join("secret")).unwrap(), b"pwned");
    assert!(!r.outside().join("new").exists());
}

#[test]
fn h05_symlink_dotdot_then_write() {
    let r = Rig::new();
    let t = TarW::new()
        .symlink("up", "../../../../../../..")
        .file("up/pwn", b"pwned", 0o644)
        .finish();
    r.tar_ok(&t, "img");
    // ".." is clamped at the image root
    assert_eq!(std::fs::read(r.image("img").join("pwn")).unwrap(), b"pwned");
}

#[test]
fn h06_symlink_then_write_across_layers() {
    let r = Rig::new();
    let o = Oci::new(r.input("layout"));
    let l1 = TarW::new().symlink("evil", &outside(&r)).finish();
    let l2 = TarW::new()
        .file("evil/secret", b"pwned", 0o644)
        .dir("evil/sub", 0o777)
        .finish();
    let m = o.image(
        &[(&l1, MT_LAYER_TAR), (&l2, MT_LAYER_GZ)],
        serde_json::json!({}),
    );
    o.index(&[(m, None)]);
    let before = snapshot(r.path(), &r.store());
    r.ok(&["import-oci", o.path(), "img"]);
    assert_eq!(before, snapshot(r.path(), &r.store()));
    let clamped = r.image("img").join(outside(&r).trim_start_matches('/'));
    assert_eq!(std::fs::read(clamped.join("secret")).unwrap(), b"pwned");
}

#[test]
fn h07_hardlink_to_absolute_outside() {
    let r = Rig::new();
    let t = TarW::new()
        .hardlink("link", &format!("{}/secret", outside(&r)))
        .finish();
    r.tar_fails(&t, "hardlink target");
    r.tar_fails(&t, "not found in the image");
}

#[test]
fn h08_hardlink_dotdot() {
    let r = Rig::new();
    let t = TarW::new().hardlink("link", "../outside/secret").finish();
    r.tar_fails(&t, "entry link: hardlink target escapes the image root");
}

#[test]
fn h09_hardlink_through_symlinked_dir() {
    let r = Rig::new();
    let t = TarW::new()
        .symlink("d", &outside(&r))
        .hardlink("link", "d/secret")
        .finish();
    r.tar_fails(&t, "not found in the image");
}

#[test]
fn h10_whiteout_dotdot() {
    let r = Rig::new();
    let t = TarW::new().file("../.wh.outside", b"", 0o644).finish();
    r.tar_fails(&t, "path escapes the image root");
}

#[test]
fn h11_whiteout_dot_names() {
    let r = Rig::new();
    for name in [".wh..", ".wh...", "etc/.wh..", ".wh."] {
        let t = TarW::new()
            .dir("etc", 0o755)
            .file(name, b"", 0o644)
            .finish();
        r.tar_fails(&t, "invalid whiteout name");
    }
}

#[test]
fn h12_whiteout_under_symlink_to_outside() {
    let r = Rig::new();
    let o = Oci::new(r.input("layout"));
    let l1 = TarW::new()
        .symlink("l", &outside(&r))
        .dir(outside(&r).trim_start_matches('/'), 0o755)
        .file(
            &format!("{}/secret", outside(&r).trim_start_matches('/')),
            b"in",
            0o644,
        )
        .finish();
    let l2 = TarW::new()
        .file("l/.wh.secret", b"", 0o644)
        .file("l/.wh.sub", b"", 0o644)
        .finish();
    let m = o.image(
        &[(&l1, MT_LAYER_TAR), (&l2, MT_LAYER_TAR)],
        serde_json::json!({}),
    );
    o.index(&[(m, None)]);
    let before = snapshot(r.path(), &r.store());
    r.ok(&["import-oci", o.path(), "img"]);
    assert_eq!(before, snapshot(r.path(), &r.store()));
    assert!(r.outside().join("secret").exists() && r.outside().join("sub/file").exists());
    let clamped = r.image("img").join(outside(&r).trim_start_matches('/'));
    assert!(
        !clamped.join("secret").exists(),
        "whiteout applied inside the image"
    );
}

#[test]
fn h13_root_entry_as_symlink() {
    let r = Rig::new();
    let t = TarW::new()
        .symlink(".", &outside(&r))
        .file("x", b"", 0o644)
        .finish();
    r.tar_fails(&t, "entry .: the image root can only be a directory");
}

#[test]
fn h14_symlink_then_directory_chmod() {
    let r = Rig::new();
    let t = TarW::new()
        .symlink("evil", &outside(&r))
        .dir("evil", 0o777)
        .finish();
    r.tar_ok(&t, "img");
    assert_eq!(
        std::fs::metadata(r.outside()).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert!(
        std::fs::symlink_metadata(r.image("img").join("evil"))
            .unwrap()
            .is_dir()
    );
}

#[test]
fn h15_hardlink_to_symlink_then_chmod() {
    let r = Rig::new();
    let t = TarW::new()
        .symlink("s", &format!("{}/secret", outside(&r)))
        .hardlink("h", "s")
        .file("s2", b"", 0o4777)
        .finish();
    r.tar_ok(&t, "img");
    let md = std::fs::symlink_metadata(r.image("img").join("h")).unwrap();
    assert!(
        md.file_type().is_symlink(),
        "a hardlink to a symlink links the symlink"
    );
    assert_eq!(
        std::fs::metadata(r.outside().join("secret"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o644
    );
}

#[test]
fn h16_device_nodes_never_reach_host_devices() {
    let r = Rig::new();
    let t = TarW::new()
        .dir("dev", 0o755)
        .dev("dev/sda", b'4', 8, 0)
        .dev("dev/mem", b'3', 1, 1)
        .dev("dev/kmsg", b'3', 1, 11)
        .dev("dev/whiteout", b'3', 0, 0)
        .dev("dev/null", b'3', 1, 3)
        .dev("dev/fifo", b'6', 0, 0)
        .finish();
    let err = r.tar_ok(&t, "img");
    assert!(err.contains("skipped 4 device nodes"), "{err}");
    let dev = r.image("img").join("dev");
    for gone in ["sda", "mem", "kmsg", "whiteout"] {
        assert!(!dev.join(gone).exists(), "{gone}");
    }
    let null = std::fs::metadata(dev.join("null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    assert!(
        std::fs::metadata(dev.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

#[test]
fn h17_blob_digest_mismatch_names_blob() {
    let r = Rig::new();
    let o = Oci::new(r.input("layout"));
    let l = TarW::new().file("a", b"hello", 0o644).finish();
    let (d, diff) = o.layer(&l, MT_LAYER_GZ);
    // same size, different content
    let p = o.blob_path(&d);
    let mut data = std::fs::read(&p).unwrap();
    let n = data.len();
    data[n - 5] ^= 0xff;
    std::fs::write(&p, &data).unwrap();
    let c = o.config(&[diff], serde_json::json!({}));
    let m = o.manifest(&c, &[d.clone()]);
    o.index(&[(m, None)]);
    r.fails(
        &["import-oci", o.path(), "img"],
        &format!(
            "blob {}: digest mismatch (content hashes to sha256:",
            d.digest
        ),
    );
}

#[test]
fn h18_blob_digest_mismatch_uncompressed_layer() {
    let r = Rig::new();
    let o = Oci::new(r.input("layout"));
    let l = TarW::new().file("a", b"hello", 0o644).finish();
    let (d, diff) = o.layer(&l, MT_LAYER_TAR);
    let p = o.blob_path(&d);
    let mut data = std::fs::read(&p).unwrap();
    data[600] = b'j'; // "hello" -> "jello": a valid tar with other content
    std::fs::write(&p, &data).unwrap();
    let c = o.config(&[diff], serde_json::json!({}));
    let m = o.manifest(&c, &[d.clone()]);
    o.index(&[(m, None)]);
    r.fails(
        &["import-oci", o.path(), "img"],
        &format!(
            "blob {}: digest mismatch (content hashes to sha256:",
            d.digest
        ),
    );
}

#[test]
fn h19_blob_size_mismatch() {
    let r = Rig::new();
    let o = Oci::new(r.input("layout"));
    let l = TarW::new().file("a", b"hello", 0o644).finish();
    let (mut d, diff) = o.layer(&l, MT_LAYER_TAR);
    d.size -= 1;
    let c = o.config(&[diff], serde_json::json!({}));
    let m = o.manifest(&c, &[d.clone()]);
    o.index(&[(m, None)]);
    r.fails(
        &["import-oci", o.path(), "img"],
        &format!(
            "blob {}: size mismatch (descriptor says {} bytes, read {})",
            d.digest,
            d.size,
            d.size + 1
        ),
    );
}

#[test]
fn h20_diff_id_mismatch() {
    let r = Rig::new();
    let o = Oci::new(r.input("layout"));
    let l = TarW::new().file("a", b"hello", 0o644).finish();
    let (d, _) = o.layer(&l, MT_LAYER_GZ);
    let wrong = sha256(b"something else");
    let c = o.config(&[wrong.clone()], serde_json::json!({}));
    let m = o.manifest(&c, &[d.clone()]);
    o.index(&[(m, None)]);
    r.fails(
        &["import-oci", o.path(), "img"],
        &format!(
            "layer 0 ({}): uncompressed content hashes to {}, but the config's diff_id is {wrong}",
            d.digest,
            sha256(&l)
        ),
    );
}

#[test]
fn h21_oversized_json() {
    let r = Rig::new();
    let o = Oci::new(r.input("layout"));
    let big = format!(
        r#"{{"schemaVersion":2,"manifests":[],"annotations":{{"x":"{}"}}}}"#,
        "a".repeat(5 << 20)
    );
    std::fs::write(o.dir.join("index.json"), big).unwrap();
    r.fails(
        &["import-oci", o.path(), "img"],
        "limit exceeded: index.json is 524",
    );
    // and a manifest blob over the limit
    let o = Oci::new(r.input("layout2"));
    let d = o.blob(MT_MANIFEST, " ".repeat((4 << 20) + 1).as_bytes());
    o.index(&[(d.clone(), None)]);
    r.fails(
        &["import-oci", o.path(), "img"],
        &format!("limit exceeded: manifest {} is 4194305 bytes", d.digest),
    );
}

#[test]
fn h22_index_nesting_bomb() {
    let r = Rig::new();
    let o = Oci::new(r.input("layout"));
    let l = TarW::new().file("a", b"x", 0o644).finish();
    let mut d = o.image(&[(&l, MT_LAYER_TAR)], serde_json::json!({}));
    for _ in 0..8 {
        let idx = serde_json::json!({"schemaVersion": 2, "mediaType": MT_INDEX,
            "manifests": [d.json()]});
        d = o.blob(MT_INDEX, &serde_json::to_vec(&idx).unwrap());
    }
    o.index(&[(d, None)]);
    r.fails(
        &["import-oci", o.path(), "img"],
        "limit exceeded: index nesting deeper than 4 levels",
    );
}

#[test]
fn h23_decompression_bomb() {
    let r = Rig::new();
    // 200 MiB of zeros in one file, zstd-compressed to a few KiB
    let mut t = TarW::new();
    t.header(&Hdr {
        name: b"bomb",
        size: 200 << 20,
        ..Default::default()
    });
    let mut raw = t.buf.clone();
    raw.resize(raw.len() + (200 << 20) + 1024, 0);
    let z = zstd(&raw);
    assert!(z.len() < 100_000);
    let p = r.input("bomb.tar.zst");
    std::fs::write(&p, &z).unwrap();
    r.fails(
        &["import-tar", p.to_str().unwrap(), "img"],
        "limit exceeded: decompression ratio above 1000:1",
    );
}

#[test]
fn h24_path_too_long() {
    let r = Rig::new();
    let name = "a/".repeat(2500) + "f";
    let t = TarW::new().file(&name, b"x", 0o644).finish();
    r.tar_fails(
        &t,
        "limit exceeded: entry name longer than 4096 bytes (5001 bytes",
    );
    let long = "b".repeat(300);
    let t = TarW::new().file(&long, b"x", 0o644).finish();
    r.tar_fails(&t, "a component is longer than 255 bytes");
}

#[test]
fn h25_entry_count_limit() {
    let r = Rig::new();
    let mut t = TarW::new();
    for i in 0..20 {
        t.file(&format!("f{i}"), b"", 0o644);
    }
    let p = r.input("many.tar");
    std::fs::write(&p, t.finish()).unwrap();
    r.fails_env(
        &["import-tar", p.to_str().unwrap(), "img"],
        &[("BERTH_IMPORT_MAX_ENTRIES", "10")],
        "limit exceeded: more than 10 entries",
    );
}

#[test]
fn h26_total_size_limit() {
    let r = Rig::new();
    let t = TarW::new().file("big", &vec![7u8; 1 << 20], 0o644).finish();
    let p = r.input("big.tar");
    std::fs::write(&p, t).unwrap();
    r.fails_env(
        &["import-tar", p.to_str().unwrap(), "img"],
        &[("BERTH_IMPORT_MAX_BYTES", "100000")],
        "limit exceeded: the uncompressed image exceeds 100000 bytes",
    );
}

#[test]
fn h27_too_many_layers() {
    let r = Rig::new();
    let o = Oci::new(r.input("layout"));
    let l = TarW::new().finish();
    let (d, diff) = o.layer(&l, MT_LAYER_TAR);
    let c = o.config(&vec![diff; 257], serde_json::json!({}));
    let m = o.manifest(&c, &vec![d; 257]);
    o.index(&[(m.clone(), None)]);
    r.fails(
        &["import-oci", o.path(), "img"],
        &format!(
            "limit exceeded: manifest {}: 257 layers, more than 256",
            m.digest
        ),
    );
}

#[test]
fn h28_digest_with_path_traversal() {
    let r = Rig::new();
    let o = Oci::new(r.input("layout"));
    let d = Desc {
        media_type: MT_MANIFEST.into(),
        digest: "sha256:../../../outside/secret".into(),
        size: 13,
    };
    o.index(&[(d, None)]);
    r.fails(
        &["import-oci", o.path(), "img"],
        "invalid digest \"sha256:../../../outside/secret\"",
    );
}

#[test]
fn h29_blob_is_symlink_to_host_file() {
    let r = Rig::new();
    let o = Oci::new(r.input("layout"));
    let secret = std::fs::read(r.outside().join("secret")).unwrap();
    let d = Desc {
        media_type: MT_MANIFEST.into(),
        digest: sha256(&secret),
        size: secret.len() as i64,
    };
    std::os::unix::fs::symlink(r.outside().join("secret"), o.blob_path(&d)).unwrap();
    o.index(&[(d.clone(), None)]);
    r.fails(
        &["import-oci", o.path(), "img"],
        &format!(
            "layout file blobs/sha256/{} is a symlink",
            d.digest.split_once(':').unwrap().1
        ),
    );
}

#[test]
fn h30_aufs_metadata_and_sparse() {
    let r = Rig::new();
    let t = TarW::new().file(".wh..wh.plnk", b"", 0o644).finish();
    r.tar_fails(&t, "entry .wh..wh.plnk: unsupported AUFS whiteout metadata");
    let mut t = TarW::new();
    t.header(&Hdr {
        name: b"sparse",
        typ: b'S',
        ..Default::default()
    });
    r.tar_fails(&t.finish(), "sparse");
}

#[test]
fn h31_unsupported_layer_media_type() {
    let r = Rig::new();
    let o = Oci::new(r.input("layout"));
    let l = TarW::new().finish();
    let m = o.image(
        &[(&l, "application/vnd.oci.image.layer.v1.tar+encrypted")],
        serde_json::json!({}),
    );
    o.index(&[(m, None)]);
    r.fails(
        &["import-oci", o.path(), "img"],
        "unsupported media type application/vnd.oci.image.layer.v1.tar+encrypted",
    );
}

#[test]
fn h32_ambiguous_document() {
    let r = Rig::new();
    let o = Oci::new(r.input("layout"));
    let l = TarW::new().finish();
    let m = o.image(&[(&l, MT_LAYER_TAR)], serde_json::json!({}));
    let idx = serde_json::json!({"schemaVersion": 2, "manifests": [m.json()],
        "config": m.json(), "layers": []});
    std::fs::write(o.dir.join("index.json"), serde_json::to_vec(&idx).unwrap()).unwrap();
    r.fails(&["import-oci", o.path(), "img"], "ambiguous document");
}

#[test]
fn h33_truncated_and_garbage_compressed_input() {
    let r = Rig::new();
    let t = TarW::new().file("a", &vec![1u8; 100_000], 0o644).finish();
    let g = gzip(&t);
    let p = r.input("t.tgz");
    std::fs::write(&p, &g[..g.len() / 2]).unwrap();
    r.fails(
        &["import-tar", p.to_str().unwrap(), "img"],
        "incomplete deflate stream",
    );
    std::fs::write(&p, b"BZh91AY&SY garbage").unwrap();
    r.fails(
        &["import-tar", p.to_str().unwrap(), "img"],
        "bzip2-compressed input is not supported",
    );
}

#[test]
fn h34_missing_blob_and_platform() {
    let r = Rig::new();
    let o = Oci::new(r.input("layout"));
    let d = Desc {
        media_type: MT_MANIFEST.into(),
        digest: sha256(b"nope"),
        size: 4,
    };
    o.index(&[(d.clone(), None)]);
    r.fails(
        &["import-oci", o.path(), "img"],
        &format!("blob {} is missing from the layout", d.digest),
    );
    // an index with only a foreign platform
    let l = TarW::new().finish();
    let m = o.image(&[(&l, MT_LAYER_TAR)], serde_json::json!({}));
    let mut mj = m.json();
    mj["platform"] = serde_json::json!({"architecture": "s390x", "os": "linux"});
    let idx = serde_json::json!({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [mj]});
    let i = o.blob(MT_INDEX, &serde_json::to_vec(&idx).unwrap());
    o.index(&[(i.clone(), None)]);
    r.fails(
        &["import-oci", o.path(), "img"],
        &format!(
            "index {}: no image for linux/amd64 (available: linux/s390x)",
            i.digest
        ),
    );
}

#[test]
fn h35_store_name_and_existing_image() {
    let r = Rig::new();
    let t = TarW::new().file("a", b"x", 0o644).finish();
    let p = r.input("t.tar");
    std::fs::write(&p, &t).unwrap();
    r.fails(
        &["import-tar", p.to_str().unwrap(), "../outside"],
        "invalid image name \"../outside\"",
    );
    r.fails(
        &["import-tar", p.to_str().unwrap(), ".hidden"],
        "invalid image name",
    );
    r.ok(&["import-tar", p.to_str().unwrap(), "one"]);
    let o = r.berth(&["import-tar", p.to_str().unwrap(), "one"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("image one already exists (use --force to replace it)")
    );
}

#[test]
fn h36_missing_inputs() {
    let r = Rig::new();
    r.fails(
        &["import-tar", "/nonexistent.tar", "img"],
        "importing /nonexistent.tar: opening the input: No such file or directory",
    );
    r.fails(
        &["import-oci", "/nonexistent", "img"],
        "importing /nonexistent: opening the layout: No such file or directory",
    );
    r.fails(
        &["import-tar", r.inputs().to_str().unwrap(), "img"],
        "the input is a directory",
    );
}

#[test]
fn h37_duplicate_json_keys() {
    // serde_json keeps the last of duplicated keys, Go's encoding/json too, other parsers the
    // first: a document with a key twice means different images to different tools
    let r = Rig::new();
    let o = Oci::new(r.input("layout"));
    let (l, diff) = o.layer(&TarW::new().file("a", b"x", 0o644).finish(), MT_LAYER_TAR);
    let (l2, _) = o.layer(&TarW::new().file("b", b"y", 0o644).finish(), MT_LAYER_TAR);
    let c = o.config(&[diff.clone()], serde_json::json!({}));
    let m = o.manifest(&c, &[l.clone()]);

    // index.json: a descriptor with two "digest" (the unescaped names are what count)
    let idx = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{MT_MANIFEST}","digest":"{}","size":{},"dig\u0065st":"{}"}}]}}"#,
        sha256(b"decoy"),
        m.size,
        m.digest
    );
    std::fs::write(o.dir.join("index.json"), idx).unwrap();
    let e = r.fails(
        &["import-oci", o.path(), "img"],
        "index index.json: duplicate key \"digest\"",
    );
    assert!(e.contains("ambiguous document"), "{e}");

    // a manifest with two "layers"
    let man = format!(
        r#"{{"schemaVersion":2,"mediaType":"{MT_MANIFEST}","config":{},"layers":[{}],"layers":[{}]}}"#,
        c.json(),
        l.json(),
        l2.json()
    );
    let md = o.blob(MT_MANIFEST, man.as_bytes());
    o.index(&[(md.clone(), None)]);
    r.fails(
        &["import-oci", o.path(), "img"],
        &format!("manifest {}: duplicate key \"layers\"", md.digest),
    );

    // a config with two "diff_ids" in rootfs
    let cfg = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff}"],"diff_ids":["{}"]}}}}"#,
        sha256(b"other")
    );
    let cd = o.blob(MT_CONFIG, cfg.as_bytes());
    let md = o.manifest(&cd, &[l.clone()]);
    o.index(&[(md, None)]);
    r.fails(
        &["import-oci", o.path(), "img"],
        &format!("config {}: duplicate key \"diff_ids\"", cd.digest),
    );
    r.assert_store_empty();
}
