//! OCI image layouts (a directory, or a tar of one): the documents, ref and platform
//! selection through nested indexes, and blob access. Everything here is untrusted: files are
//! opened beneath the layout without following symlinks and must be regular files; every
//! document is size-capped and verified against its descriptor before it is parsed.

use super::config::ImageConfig;
use super::decompress::Compression;
use super::digest::{Check, Digest, VerifyReader, truncate};
use super::{ImageError, Limits, Result};
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{Mode, SFlag, fstat};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MT_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const REF_ANNOTATION: &str = "org.opencontainers.image.ref.name";

fn is_index(mt: &str) -> bool {
    mt == MT_OCI_INDEX || mt == MT_DOCKER_LIST
}
fn is_manifest(mt: &str) -> bool {
    mt == MT_OCI_MANIFEST || mt == MT_DOCKER_MANIFEST
}

/// The compression of a layer, from its media type.
pub fn layer_compression(mt: &str) -> Option<(Compression, bool)> {
    // (compression, sniff): Docker's plain-tar type "may be compressed anyway"
    Some(match mt {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar" => (Compression::None, false),
        "application/vnd.docker.image.rootfs.diff.tar"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar" => (Compression::None, true),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => (Compression::Gzip, false),
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
        | "application/vnd.docker.image.rootfs.diff.tar.zstd" => (Compression::Zstd, false),
        _ => return None,
    })
}

#[derive(Debug, Clone, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub platform: Option<Platform>,
}

impl Descriptor {
    fn ref_name(&self) -> Option<&str> {
        self.annotations
            .as_ref()?
            .get(REF_ANNOTATION)
            .map(String::as_str)
    }
    fn check(&self) -> Result<(Digest, u64)> {
        let d = Digest::parse(&self.digest)?;
        if self.size < 0 {
            return Err(ImageError::invalid(format!(
                "descriptor of {d} has a negative size"
            )));
        }
        Ok((d, self.size as u64))
    }
}

#[derive(Debug, Deserialize)]
struct IndexDoc {
    #[serde(rename = "schemaVersion", default)]
    schema_version: Option<i64>,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<serde_json::Value>,
    #[serde(default)]
    layers: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct ManifestDoc {
    #[serde(rename = "schemaVersion", default)]
    schema_version: Option<i64>,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: String,
    diff_ids: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct ConfigDoc {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
    // parsed (to reject a malformed config at import time), kept verbatim in the metadata
    #[serde(default)]
    #[allow(dead_code)]
    config: Option<ImageConfig>,
    rootfs: RootFs,
}

/// A resolved image: what the importer needs.
#[derive(Debug)]
pub struct Image {
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    pub config_json: serde_json::Value,
    pub layers: Vec<Layer>,
}

#[derive(Debug, Clone)]
pub struct Layer {
    pub digest: Digest,
    pub size: u64,
    pub compression: Compression,
    pub sniff: bool,
    pub diff_id: Digest,
}

/// Where a layout's files come from.
pub enum Layout {
    Dir(OwnedFd),
    /// A tar of a layout: regular files indexed by name (offset, size), read with pread.
    Tar {
        file: Arc<File>,
        files: HashMap<Vec<u8>, (u64, u64)>,
    },
}

struct AtReader {
    file: Arc<File>,
    pos: u64,
    end: u64,
}

impl Read for AtReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min((self.end - self.pos) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl io::Seek for AtReader {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        let new = match pos {
            io::SeekFrom::Start(n) => Some(n),
            io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            io::SeekFrom::End(d) => self.end.checked_add_signed(d),
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek out of range"))?;
        self.pos = new.min(self.end);
        Ok(self.pos)
    }
}

impl Layout {
    pub fn open(path: &Path, limits: &Limits) -> Result<Layout> {
        let f = File::open(path).map_err(|e| ImageError::io("opening the layout", e))?;
        let st = fstat(&f).map_err(|e| ImageError::io("opening the layout", e.into()))?;
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        if kind == SFlag::S_IFDIR {
            return Ok(Layout::Dir(OwnedFd::from(f)));
        }
        if kind != SFlag::S_IFREG {
            return Err(ImageError::invalid(
                "the layout is neither a directory nor a tar file",
            ));
        }
        let file = Arc::new(f);
        let mut files = HashMap::new();
        let mut ar = tar::Archive::new(AtReader {
            file: file.clone(),
            pos: 0,
            end: st.st_size as u64,
        });
        let ctx = || format!("reading the layout tar {}", path.display());
        let mut n = 0u64;
        // headers only: blob contents are skipped by seeking
        for e in ar
            .entries_with_seek()
            .map_err(|e| ImageError::io(ctx(), e))?
        {
            let e = e.map_err(|e| ImageError::io(ctx(), e))?;
            n += 1;
            if n > limits.entries {
                return Err(ImageError::limit(format!(
                    "more than {} entries in the layout tar",
                    limits.entries
                )));
            }
            if !matches!(
                e.header().entry_type(),
                tar::EntryType::Regular | tar::EntryType::Continuous
            ) {
                continue;
            }
            let name = super::layer::normalize(&e.path_bytes(), limits)?;
            if files
                .insert(name.clone(), (e.raw_file_position(), e.size()))
                .is_some()
            {
                return Err(ImageError::invalid(format!(
                    "duplicate entry {} in the layout tar",
                    String::from_utf8_lossy(&name)
                )));
            }
        }
        Ok(Layout::Tar { file, files })
    }

    /// Opens a file of the layout: (reader, size). Symlinks are not followed; only regular
    /// files qualify.
    pub fn open_file(&self, rel: &str) -> Result<(Box<dyn Read + Send>, u64)> {
        match self {
            Layout::Dir(fd) => {
                let how = OpenHow::new()
                    .flags(
                        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
                    )
                    .mode(Mode::empty())
                    .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
                let f = openat2(fd.as_fd(), rel, how).map_err(|e| match e {
                    nix::errno::Errno::ENOENT => {
                        ImageError::invalid(format!("layout file {rel} is missing"))
                    }
                    nix::errno::Errno::ELOOP => {
                        ImageError::invalid(format!("layout file {rel} is a symlink"))
                    }
                    e => ImageError::io(format!("opening layout file {rel}"), e.into()),
                })?;
                let st = fstat(&f).map_err(|e| ImageError::io(rel.to_string(), e.into()))?;
                if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
                    return Err(ImageError::invalid(format!(
                        "layout file {rel} is not a regular file"
                    )));
                }
                Ok((Box::new(File::from(f)), st.st_size as u64))
            }
            Layout::Tar { file, files } => {
                let (off, size) = files
                    .get(rel.as_bytes())
                    .copied()
                    .ok_or_else(|| ImageError::invalid(format!("layout file {rel} is missing")))?;
                Ok((
                    Box::new(AtReader {
                        file: file.clone(),
                        pos: off,
                        end: off + size,
                    }),
                    size,
                ))
            }
        }
    }

    /// Opens a blob: size checked against the descriptor up front, digest and size verified
    /// while it is read (the reader fails at EOF on a mismatch).
    pub fn open_blob(&self, d: &Digest, size: u64) -> Result<VerifyReader<Box<dyn Read + Send>>> {
        let (r, actual) = self.open_file(&d.blob_path()).map_err(|e| match e {
            ImageError::Invalid(m) if m.contains("missing") => {
                ImageError::invalid(format!("blob {d} is missing from the layout"))
            }
            e => e,
        })?;
        if actual != size {
            return Err(ImageError::BlobSize {
                digest: d.to_string(),
                expected: size,
                actual,
            });
        }
        Ok(VerifyReader::new(
            r,
            Check::Blob {
                digest: d.clone(),
                size,
            },
        ))
    }

    /// Reads a JSON document: capped, verified against its descriptor, then parsed.
    fn read_doc<T: serde::de::DeserializeOwned>(
        &self,
        desc: &Descriptor,
        what: &str,
        limits: &Limits,
    ) -> Result<(T, serde_json::Value)> {
        let (d, size) = desc.check()?;
        if size > limits.json_bytes {
            return Err(ImageError::limit(format!(
                "{what} {d} is {size} bytes, more than {} allowed for a JSON document",
                limits.json_bytes
            )));
        }
        let mut r = self.open_blob(&d, size)?;
        let mut buf = Vec::with_capacity(size as usize);
        r.read_to_end(&mut buf)
            .map_err(|e| ImageError::io(format!("reading {what} {d}"), e))?;
        parse_json(&buf, what, &d.to_string())
    }

    fn read_plain(&self, rel: &str, limits: &Limits) -> Result<Vec<u8>> {
        let (r, size) = self.open_file(rel)?;
        if size > limits.json_bytes {
            return Err(ImageError::limit(format!(
                "{rel} is {size} bytes, more than {} allowed for a JSON document",
                limits.json_bytes
            )));
        }
        let mut buf = Vec::new();
        r.take(limits.json_bytes + 1)
            .read_to_end(&mut buf)
            .map_err(|e| ImageError::io(format!("reading {rel}"), e))?;
        Ok(buf)
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(
    buf: &[u8],
    what: &str,
    name: &str,
) -> Result<(T, serde_json::Value)> {
    if buf.contains(&0) {
        return Err(ImageError::invalid(format!(
            "{what} {name}: NUL byte in a JSON document"
        )));
    }
    let v = serde_json::from_slice::<Strict>(buf)
        .map_err(|e| {
            if e.is_data() {
                // a duplicate key: the only data error Strict raises
                ImageError::invalid(format!("{what} {name}: {e} (an ambiguous document)"))
            } else {
                ImageError::invalid(format!("{what} {name}: invalid JSON: {e}"))
            }
        })?
        .0;
    let t = T::deserialize(&v).map_err(|e| ImageError::invalid(format!("{what} {name}: {e}")))?;
    Ok((t, v))
}

/// A JSON value whose objects have no duplicate names. serde_json keeps the last of duplicated
/// keys while other parsers keep the first, so a document with `"digest"` twice means different
/// things to different tools (a known confusion attack); the spec forbids duplicates (I-JSON).
struct Strict(serde_json::Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> std::result::Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> std::result::Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> std::result::Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> std::result::Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
    }
    fn visit_str<E>(self, v: &str) -> std::result::Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> std::result::Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> std::result::Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut a: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut v = Vec::new();
        while let Some(Strict(e)) = a.next_element()? {
            v.push(e);
        }
        Ok(v.into())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut a: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut m = serde_json::Map::new();
        // keys compare after unescaping: "dig\u0065st" is "digest"
        while let Some(k) = a.next_key::<String>()? {
            if m.contains_key(&k) {
                return Err(serde::de::Error::custom(format_args!(
                    "duplicate key {:?}",
                    truncate(&k, 64)
                )));
            }
            let Strict(v) = a.next_value()?;
            m.insert(k, v);
        }
        Ok(m.into())
    }
}

/// The host's platform: (os, architecture) and the acceptable variants, best first.
fn host_platform() -> (&'static str, Vec<&'static str>) {
    match std::env::consts::ARCH {
        "x86_64" => {
            let mut v: Vec<&str> = Vec::new();
            #[cfg(target_arch = "x86_64")]
            {
                let v2 = std::arch::is_x86_feature_detected!("sse4.2")
                    && std::arch::is_x86_feature_detected!("popcnt");
                let v3 = v2
                    && std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("bmi2")
                    && std::arch::is_x86_feature_detected!("fma");
                let v4 = v3 && std::arch::is_x86_feature_detected!("avx512f");
                if v4 {
                    v.push("v4");
                }
                if v3 {
                    v.push("v3");
                }
                if v2 {
                    v.push("v2");
                }
            }
            v.extend(["v1", ""]);
            ("amd64", v)
        }
        "aarch64" => ("arm64", vec!["v8", ""]),
        "x86" => ("386", vec![""]),
        "arm" => ("arm", vec!["v7", "v6", "v5", ""]),
        "riscv64" => ("riscv64", vec![""]),
        "powerpc64" => ("ppc64le", vec![""]),
        "s390x" => ("s390x", vec![""]),
        other => (other, vec![""]),
    }
}

fn normalize_arch(a: &str) -> &str {
    match a {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        "i386" => "386",
        a => a,
    }
}

/// Rank of a platform for this host (lower is better), None if it cannot run here.
fn rank(p: Option<&Platform>) -> Option<usize> {
    let Some(p) = p else {
        return Some(usize::MAX - 1); // no platform: checked against the config later
    };
    let (arch, variants) = host_platform();
    if !p.os.eq_ignore_ascii_case("linux") || normalize_arch(&p.architecture) != arch {
        return None;
    }
    let v = p.variant.as_deref().unwrap_or("");
    let v = if arch == "arm64" && (v == "8" || v == "v8.0") {
        "v8"
    } else {
        v
    };
    variants.iter().position(|x| *x == v)
}

fn describe(p: Option<&Platform>) -> String {
    match p {
        None => "(no platform)".into(),
        Some(p) => match p.variant.as_deref() {
            Some(v) if !v.is_empty() => format!("{}/{}/{}", p.os, p.architecture, v),
            _ => format!("{}/{}", p.os, p.architecture),
        },
    }
}

/// Splits `LAYOUT[:REF]`: the whole argument if it exists, else at the last ':'.
pub fn split_ref(arg: &str) -> (&str, Option<&str>) {
    if Path::new(arg).exists() {
        return (arg, None);
    }
    match arg.rsplit_once(':') {
        Some((l, r)) if !l.is_empty() && !r.contains('/') => (l, Some(r)),
        _ => (arg, None),
    }
}

/// Finds the image: REF among index.json's entries (or the only entry), then through nested
/// indexes to the manifest for this host's platform; reads and checks manifest and config.
pub fn resolve(layout: &Layout, reference: Option<&str>, limits: &Limits) -> Result<Image> {
    let hdr = layout.read_plain("oci-layout", limits)?;
    let (hdr, _): (serde_json::Value, _) = parse_json(&hdr, "oci-layout", "file")?;
    let version = hdr
        .get("imageLayoutVersion")
        .and_then(|v| v.as_str())
        .ok_or_else(|| ImageError::invalid("oci-layout: no imageLayoutVersion"))?;
    if !version.starts_with("1.") {
        return Err(ImageError::invalid(format!(
            "oci-layout: unsupported imageLayoutVersion {}",
            truncate(version, 40)
        )));
    }
    let idx = layout.read_plain("index.json", limits)?;
    let (idx, _): (IndexDoc, _) = parse_json(&idx, "index", "index.json")?;
    check_index(&idx, None, "index.json")?;
    let entries: Vec<Descriptor> = idx
        .manifests
        .unwrap_or_default()
        .into_iter()
        .filter(|d| is_index(&d.media_type) || is_manifest(&d.media_type))
        .collect();
    if entries.len() > limits.manifests_per_index {
        return Err(ImageError::limit(format!(
            "index.json lists more than {} manifests",
            limits.manifests_per_index
        )));
    }
    let refs: Vec<String> = entries
        .iter()
        .map(|d| d.ref_name().unwrap_or("(unnamed)").to_string())
        .collect();
    let chosen = match reference {
        Some(r) => {
            let m: Vec<&Descriptor> = entries
                .iter()
                .filter(|d| {
                    d.ref_name() == Some(r)
                        || d.annotations
                            .as_ref()
                            .and_then(|a| a.get("io.containerd.image.name"))
                            .map(String::as_str)
                            == Some(r)
                })
                .collect();
            match m.as_slice() {
                [] => {
                    return Err(ImageError::invalid(format!(
                        "no image {:?} in the layout (refs: {})",
                        truncate(r, 100),
                        refs.join(", ")
                    )));
                }
                [d, rest @ ..] if rest.iter().all(|x| x.digest == d.digest) => (*d).clone(),
                _ => {
                    return Err(ImageError::invalid(format!(
                        "ref {r:?} names several different images in the layout"
                    )));
                }
            }
        }
        None => match entries.as_slice() {
            [] => return Err(ImageError::invalid("the layout has no image")),
            [d] => d.clone(),
            _ => {
                return Err(ImageError::invalid(format!(
                    "the layout has {} images; choose one with LAYOUT:REF (refs: {})",
                    entries.len(),
                    refs.join(", ")
                )));
            }
        },
    };
    let mdesc = select(layout, &chosen, 0, limits)?;
    let (mdigest, _) = mdesc.check()?;
    let (man, _): (ManifestDoc, _) = layout.read_doc(&mdesc, "manifest", limits)?;
    if man.schema_version != Some(2) {
        return Err(ImageError::invalid(format!(
            "manifest {mdigest}: schemaVersion is not 2"
        )));
    }
    if let Some(mt) = &man.media_type
        && mt != &mdesc.media_type
    {
        return Err(ImageError::invalid(format!(
            "manifest {mdigest}: mediaType {mt} differs from its descriptor's {}",
            mdesc.media_type
        )));
    }
    if man.manifests.is_some() {
        return Err(ImageError::invalid(format!(
            "manifest {mdigest}: ambiguous document (has both manifests and config)"
        )));
    }
    let cdesc = man
        .config
        .ok_or_else(|| ImageError::invalid(format!("manifest {mdigest}: no config")))?;
    if cdesc.media_type != MT_OCI_CONFIG && cdesc.media_type != MT_DOCKER_CONFIG {
        return Err(ImageError::invalid(format!(
            "manifest {mdigest}: not a container image (config media type {})",
            truncate(&cdesc.media_type, 100)
        )));
    }
    let layers = man.layers.unwrap_or_default();
    if layers.len() > limits.layers {
        return Err(ImageError::limit(format!(
            "manifest {mdigest}: {} layers, more than {}",
            layers.len(),
            limits.layers
        )));
    }
    let (cdigest, _) = cdesc.check()?;
    let (cfg, cfg_json): (ConfigDoc, _) = layout.read_doc(&cdesc, "config", limits)?;
    if cfg.rootfs.kind != "layers" {
        return Err(ImageError::invalid(format!(
            "config {cdigest}: rootfs type {:?} is not \"layers\"",
            truncate(&cfg.rootfs.kind, 40)
        )));
    }
    if cfg.rootfs.diff_ids.len() != layers.len() {
        return Err(ImageError::invalid(format!(
            "config {cdigest}: {} diff_ids for {} layers",
            cfg.rootfs.diff_ids.len(),
            layers.len()
        )));
    }
    let plat = Platform {
        architecture: cfg.architecture.clone(),
        os: cfg.os.clone(),
        variant: cfg.variant.clone(),
    };
    if rank(Some(&plat)).is_none() {
        return Err(ImageError::invalid(format!(
            "config {cdigest}: the image is for {}, this host is linux/{}",
            describe(Some(&plat)),
            host_platform().0
        )));
    }
    let mut out = Vec::new();
    for (i, (l, diff)) in layers.iter().zip(&cfg.rootfs.diff_ids).enumerate() {
        let (digest, size) = l.check()?;
        let (compression, sniff) = layer_compression(&l.media_type).ok_or_else(|| {
            ImageError::invalid(format!(
                "layer {i} ({digest}): unsupported media type {}",
                truncate(&l.media_type, 100)
            ))
        })?;
        out.push(Layer {
            digest,
            size,
            compression,
            sniff,
            diff_id: Digest::parse(diff)?,
        });
    }
    Ok(Image {
        manifest_digest: mdigest,
        config_digest: cdigest,
        config_json: cfg_json,
        layers: out,
    })
}

fn check_index(idx: &IndexDoc, desc_mt: Option<&str>, name: &str) -> Result<()> {
    if idx.schema_version != Some(2) {
        return Err(ImageError::invalid(format!(
            "index {name}: schemaVersion is not 2"
        )));
    }
    if idx.config.is_some() || idx.layers.is_some() {
        return Err(ImageError::invalid(format!(
            "index {name}: ambiguous document (has both manifests and config/layers)"
        )));
    }
    if let (Some(mt), Some(dmt)) = (&idx.media_type, desc_mt)
        && mt != dmt
    {
        return Err(ImageError::invalid(format!(
            "index {name}: mediaType {mt} differs from its descriptor's {dmt}"
        )));
    }
    Ok(())
}

/// Follows `desc` down to a manifest for this host.
fn select(layout: &Layout, desc: &Descriptor, depth: usize, limits: &Limits) -> Result<Descriptor> {
    if is_manifest(&desc.media_type) {
        return Ok(desc.clone());
    }
    if depth >= limits.index_depth {
        return Err(ImageError::limit(format!(
            "index nesting deeper than {} levels",
            limits.index_depth
        )));
    }
    let (d, _) = desc.check()?;
    let (idx, _): (IndexDoc, _) = layout.read_doc(desc, "index", limits)?;
    check_index(&idx, Some(&desc.media_type), &d.to_string())?;
    let list = idx.manifests.unwrap_or_default();
    if list.len() > limits.manifests_per_index {
        return Err(ImageError::limit(format!(
            "index {d} lists more than {} manifests",
            limits.manifests_per_index
        )));
    }
    let mut cands: Vec<(usize, &Descriptor)> = list
        .iter()
        .filter(|m| is_index(&m.media_type) || is_manifest(&m.media_type))
        .filter_map(|m| rank(m.platform.as_ref()).map(|r| (r, m)))
        .collect();
    cands.sort_by_key(|(r, _)| *r); // stable: index order within a rank
    let mut last_err = None;
    for (_, m) in cands {
        match select(layout, m, depth + 1, limits) {
            Ok(d) => return Ok(d),
            Err(e @ ImageError::Limit(_)) => return Err(e),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| {
        let avail: Vec<String> = list.iter().map(|m| describe(m.platform.as_ref())).collect();
        ImageError::invalid(format!(
            "index {d}: no image for linux/{} (available: {})",
            host_platform().0,
            avail.join(", ")
        ))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<serde_json::Value> {
        parse_json::<serde_json::Value>(s.as_bytes(), "manifest", "m").map(|(v, _)| v)
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let v = parse(r#"{"a":[1,2.5,{"b":null}],"c":{"d":true,"e":"x"},"f":-3}"#).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a":[1,2.5,{"b":null}],"c":{"d":true,"e":"x"},"f":-3})
        );
        for (doc, key) in [
            (r#"{"digest":"a","digest":"b"}"#, "digest"),
            (r#"{"x":[{"layers":[],"layers":[]}]}"#, "layers"),
            // compared unescaped
            (r#"{"size":1,"si\u007ae":2}"#, "size"),
        ] {
            let e = parse(doc).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("manifest m: duplicate key \"{key}\"")),
                "{e}"
            );
            assert!(e.ends_with("(an ambiguous document)"), "{e}");
        }
        // the same name in different objects is fine
        parse(r#"{"a":{"k":1},"b":{"k":2}}"#).unwrap();
        assert!(
            parse(r#"{"a":1,"#)
                .unwrap_err()
                .to_string()
                .contains("invalid JSON")
        );
    }
}
