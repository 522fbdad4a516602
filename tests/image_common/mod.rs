//! Shared helpers for the image tests: a scratch rig (store + inputs + an "outside" tree that
//! hostile inputs aim at), a raw tar writer (names are written byte for byte, so `../` and
//! absolute names can be produced), and an OCI layout writer.
#![allow(dead_code)]

use sha2::{Digest as _, Sha256, Sha512};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const BERTH: &str = env!("CARGO_BIN_EXE_berth");

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
pub fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(b)))
}
pub fn sha512(b: &[u8]) -> String {
    format!("sha512:{}", hex(&Sha512::digest(b)))
}

/// A scratch directory with a store, and an `outside` tree whose state is compared before
/// and after each hostile import. Removed on drop (clearing immutable flags first).
pub struct Rig {
    pub dir: tempfile::TempDir,
}

impl Rig {
    pub fn new() -> Rig {
        let dir = tempfile::Builder::new()
            .prefix("berth-image-test-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let r = Rig { dir };
        std::fs::create_dir_all(r.outside()).unwrap();
        std::fs::write(r.outside().join("secret"), "do not touch\n").unwrap();
        std::fs::create_dir(r.outside().join("sub")).unwrap();
        std::fs::write(r.outside().join("sub/file"), "keep\n").unwrap();
        std::fs::create_dir_all(r.inputs()).unwrap();
        r
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn store(&self) -> PathBuf {
        self.path().join("store")
    }
    pub fn outside(&self) -> PathBuf {
        self.path().join("outside")
    }
    pub fn inputs(&self) -> PathBuf {
        self.path().join("in")
    }
    pub fn input(&self, name: &str) -> PathBuf {
        self.inputs().join(name)
    }
    pub fn image(&self, name: &str) -> PathBuf {
        self.store().join(name)
    }

    pub fn berth(&self, args: &[&str]) -> Output {
        self.berth_env(args, &[])
    }

    pub fn berth_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(BERTH);
        c.arg("--store").arg(self.store()).args(args);
        c.stdin(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    /// Runs berth expecting success; returns stderr.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.berth(args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(
            o.status.success(),
            "berth {args:?} failed: {err}{}",
            String::from_utf8_lossy(&o.stdout)
        );
        err
    }

    /// Runs berth expecting failure (exit 125, one line `berth: ...` containing `msg`), and
    /// checks that nothing outside the store changed and no image or temporary was left.
    pub fn fails(&self, args: &[&str], msg: &str) -> String {
        self.fails_env(args, &[], msg)
    }

    pub fn fails_env(&self, args: &[&str], env: &[(&str, &str)], msg: &str) -> String {
        let before = snapshot(self.path(), &self.store());
        let o = self.berth_env(args, env);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(125), "berth {args:?}: {err}");
        assert!(err.starts_with("berth: "), "{err}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "one line expected: {err}"
        );
        assert!(err.contains(msg), "expected {msg:?} in: {err}");
        assert_eq!(
            before,
            snapshot(self.path(), &self.store()),
            "outside the store changed"
        );
        self.assert_store_empty();
        err
    }

    /// The store holds no image and no temporary (only berth's metadata directory).
    pub fn assert_store_empty(&self) {
        if !self.store().exists() {
            return;
        }
        let names: Vec<String> = std::fs::read_dir(self.store())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != ".berth")
            .collect();
        assert!(names.is_empty(), "store not empty: {names:?}");
        let meta: Vec<String> = std::fs::read_dir(self.store().join(".berth"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "lock")
            .collect();
        assert!(meta.is_empty(), "metadata left: {meta:?}");
    }

    /// Imports a tarball and asserts the error (and that nothing changed).
    pub fn tar_fails(&self, data: &[u8], msg: &str) -> String {
        let p = self.input("t.tar");
        std::fs::write(&p, data).unwrap();
        self.fails(&["import-tar", p.to_str().unwrap(), "img"], msg)
    }

    /// Imports a tarball, asserting success and that nothing outside the store changed.
    pub fn tar_ok(&self, data: &[u8], name: &str) -> String {
        let p = self.input(&format!("{name}.tar"));
        std::fs::write(&p, data).unwrap();
        let before = snapshot(self.path(), &self.store());
        let e = self.ok(&["import-tar", p.to_str().unwrap(), name]);
        assert_eq!(
            before,
            snapshot(self.path(), &self.store()),
            "outside the store changed"
        );
        e
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        // read-only images carry the immutable flag; clear it so the TempDir can go
        if let Ok(rd) = std::fs::read_dir(self.store()) {
            for e in rd.flatten() {
                let _ = Command::new("chattr").arg("-i").arg(e.path()).output();
            }
        }
    }
}

/// Everything under `root` except `skip`: path, type, mode, uid, gid, size, mtime, content
/// hash or link target.
pub fn snapshot(root: &Path, skip: &Path) -> BTreeMap<PathBuf, String> {
    let mut m = BTreeMap::new();
    fn walk(p: &Path, skip: &Path, m: &mut BTreeMap<PathBuf, String>) {
        if p == skip {
            return;
        }
        let md = std::fs::symlink_metadata(p).unwrap();
        let ft = md.file_type();
        let what = if ft.is_symlink() {
            format!("link {:?}", std::fs::read_link(p).unwrap())
        } else if ft.is_file() {
            format!("file {}", sha256(&std::fs::read(p).unwrap()))
        } else if ft.is_dir() {
            "dir".to_string()
        } else {
            format!("other {:o}", md.mode())
        };
        let mtime = if ft.is_dir() { 0 } else { md.mtime() };
        m.insert(
            p.to_path_buf(),
            format!("{what} {:o} {}:{} {mtime}", md.mode(), md.uid(), md.gid()),
        );
        if ft.is_dir() {
            for e in std::fs::read_dir(p).unwrap() {
                walk(&e.unwrap().path(), skip, m);
            }
        }
    }
    walk(root, skip, &mut m);
    // the input files are written by the tests themselves
    m.retain(|k, _| !k.starts_with(root.join("in")));
    m
}

// ---------------------------------------------------------------- raw tar writer

#[derive(Default)]
pub struct TarW {
    pub buf: Vec<u8>,
}

pub struct Hdr<'a> {
    pub name: &'a [u8],
    pub typ: u8,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: u64,
    pub link: &'a [u8],
    pub major: u32,
    pub minor: u32,
}

impl Default for Hdr<'_> {
    fn default() -> Self {
        Hdr {
            name: b"",
            typ: b'0',
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 1_700_000_000,
            link: b"",
            major: 0,
            minor: 0,
        }
    }
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0width$o}", v, width = field.len() - 1);
    field[..s.len()].copy_from_slice(s.as_bytes());
    field[field.len() - 1] = 0;
}

impl TarW {
    pub fn new() -> TarW {
        TarW::default()
    }

    /// A raw header; names over 100 bytes get a PAX path record.
    pub fn header(&mut self, h: &Hdr) -> &mut Self {
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        if h.name.len() > 100 {
            pax.push(("path".into(), h.name.to_vec()));
        }
        if h.link.len() > 100 {
            pax.push(("linkpath".into(), h.link.to_vec()));
        }
        if !pax.is_empty() {
            self.pax(&pax);
        }
        let mut b = [0u8; 512];
        let n = h.name.len().min(100);
        b[..n].copy_from_slice(&h.name[..n]);
        octal(&mut b[100..108], h.mode as u64);
        octal(&mut b[108..116], h.uid as u64);
        octal(&mut b[116..124], h.gid as u64);
        octal(&mut b[124..136], h.size);
        octal(&mut b[136..148], h.mtime);
        b[156] = h.typ;
        let l = h.link.len().min(100);
        b[157..157 + l].copy_from_slice(&h.link[..l]);
        b[257..263].copy_from_slice(b"ustar\0");
        b[263..265].copy_from_slice(b"00");
        octal(&mut b[329..337], h.major as u64);
        octal(&mut b[337..345], h.minor as u64);
        b[148..156].copy_from_slice(b"        ");
        let sum: u32 = b.iter().map(|&x| x as u32).sum();
        let s = format!("{sum:06o}\0 ");
        b[148..156].copy_from_slice(s.as_bytes());
        self.buf.extend_from_slice(&b);
        self
    }

    /// A PAX extended header for the next entry.
    pub fn pax(&mut self, recs: &[(String, Vec<u8>)]) -> &mut Self {
        let mut body = Vec::new();
        for (k, v) in recs {
            let rest = k.len() + v.len() + 3; // ' ' '=' '\n'
            let mut len = rest + 1;
            while len.to_string().len() + rest != len {
                len = len.to_string().len() + rest;
            }
            body.extend_from_slice(format!("{len} {k}=").as_bytes());
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        self.header(&Hdr {
            name: b"././@PaxHeader",
            typ: b'x',
            size: body.len() as u64,
            ..Default::default()
        });
        self.data(&body);
        self
    }

    fn data(&mut self, d: &[u8]) {
        self.buf.extend_from_slice(d);
        let pad = (512 - d.len() % 512) % 512;
        self.buf.extend(std::iter::repeat_n(0u8, pad));
    }

    pub fn file(&mut self, name: &str, data: &[u8], mode: u32) -> &mut Self {
        self.file_b(name.as_bytes(), data, mode)
    }
    pub fn file_b(&mut self, name: &[u8], data: &[u8], mode: u32) -> &mut Self {
        self.header(&Hdr {
            name,
            mode,
            size: data.len() as u64,
            ..Default::default()
        });
        self.data(data);
        self
    }
    pub fn file_owned(
        &mut self,
        name: &str,
        data: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
        mtime: u64,
    ) -> &mut Self {
        self.header(&Hdr {
            name: name.as_bytes(),
            mode,
            uid,
            gid,
            mtime,
            size: data.len() as u64,
            ..Default::default()
        });
        self.data(data);
        self
    }
    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        self.header(&Hdr {
            name: name.as_bytes(),
            typ: b'5',
            mode,
            ..Default::default()
        })
    }
    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.header(&Hdr {
            name: name.as_bytes(),
            typ: b'2',
            mode: 0o777,
            link: target.as_bytes(),
            ..Default::default()
        })
    }
    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.header(&Hdr {
            name: name.as_bytes(),
            typ: b'1',
            mode: 0o644,
            link: target.as_bytes(),
            ..Default::default()
        })
    }
    pub fn dev(&mut self, name: &str, typ: u8, major: u32, minor: u32) -> &mut Self {
        self.header(&Hdr {
            name: name.as_bytes(),
            typ,
            mode: 0o666,
            major,
            minor,
            ..Default::default()
        })
    }
    pub fn finish(&mut self) -> Vec<u8> {
        let mut v = std::mem::take(&mut self.buf);
        v.extend(std::iter::repeat_n(0u8, 1024));
        v
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

// ---------------------------------------------------------------- OCI layout writer

pub const MT_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MT_LAYER_GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MT_LAYER_ZST: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

pub struct Oci {
    pub dir: PathBuf,
    pub sha512: bool,
}

#[derive(Clone, Debug)]
pub struct Desc {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
}

impl Desc {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

impl Oci {
    pub fn new(dir: PathBuf) -> Oci {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::create_dir_all(dir.join("blobs/sha512")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Oci { dir, sha512: false }
    }

    pub fn blob(&self, mt: &str, data: &[u8]) -> Desc {
        let d = if self.sha512 {
            sha512(data)
        } else {
            sha256(data)
        };
        let (alg, enc) = d.split_once(':').unwrap();
        std::fs::write(self.dir.join("blobs").join(alg).join(enc), data).unwrap();
        Desc {
            media_type: mt.into(),
            digest: d,
            size: data.len() as i64,
        }
    }

    pub fn blob_path(&self, d: &Desc) -> PathBuf {
        let (alg, enc) = d.digest.split_once(':').unwrap();
        self.dir.join("blobs").join(alg).join(enc)
    }

    /// A layer from an uncompressed tar: (descriptor, diff_id).
    pub fn layer(&self, tar: &[u8], mt: &str) -> (Desc, String) {
        let data = match mt {
            MT_LAYER_GZ => gzip(tar),
            MT_LAYER_ZST => zstd(tar),
            _ => tar.to_vec(),
        };
        (self.blob(mt, &data), sha256(tar))
    }

    pub fn config(&self, diff_ids: &[String], cfg: serde_json::Value) -> Desc {
        let c = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": cfg,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        self.blob(MT_CONFIG, &serde_json::to_vec(&c).unwrap())
    }

    pub fn manifest(&self, config: &Desc, layers: &[Desc]) -> Desc {
        let m = serde_json::json!({
            "schemaVersion": 2, "mediaType": MT_MANIFEST,
            "config": config.json(),
            "layers": layers.iter().map(Desc::json).collect::<Vec<_>>(),
        });
        self.blob(MT_MANIFEST, &serde_json::to_vec(&m).unwrap())
    }

    /// A whole single-platform image from tar layers: returns the manifest descriptor.
    pub fn image(&self, layers: &[(&[u8], &str)], cfg: serde_json::Value) -> Desc {
        let (descs, diffs): (Vec<Desc>, Vec<String>) =
            layers.iter().map(|(t, mt)| self.layer(t, mt)).unzip();
        let c = self.config(&diffs, cfg);
        self.manifest(&c, &descs)
    }

    /// index.json with these entries (descriptor, optional ref name, optional platform).
    pub fn index(&self, entries: &[(Desc, Option<&str>)]) {
        let m: Vec<serde_json::Value> = entries
            .iter()
            .map(|(d, r)| {
                let mut v = d.json();
                if let Some(r) = r {
                    v["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": r});
                }
                v
            })
            .collect();
        let idx = serde_json::json!({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": m});
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&idx).unwrap(),
        )
        .unwrap();
    }

    pub fn path(&self) -> &str {
        self.dir.to_str().unwrap()
    }
}

/// A small rootfs tree for umoci and tar based tests: busybox with a few links.
pub fn busybox_rootfs(dst: &Path) {
    for d in ["bin", "etc", "tmp", "root"] {
        std::fs::create_dir_all(dst.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", dst.join("bin/busybox")).unwrap();
    for l in ["sh", "ls", "cat", "echo", "id"] {
        std::os::unix::fs::symlink("busybox", dst.join("bin").join(l)).unwrap();
    }
    std::fs::write(dst.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(dst.join("etc/group"), "root:x:0:\n").unwrap();
}

pub fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}
