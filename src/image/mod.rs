//! Images: an image store that machinectl also sees (one plain directory per image under
//! /var/lib/machines), and importers for rootfs tarballs and OCI image layouts.
//!
//! Everything an import reads is untrusted. The pieces:
//! - [`digest`]: the digest grammar, and readers that verify size and digest while streaming;
//! - [`decompress`]: format detection and decoders with size and ratio limits;
//! - [`root`]: every file-system write into an image goes through a directory fd of the image
//!   root, parents resolved with openat2(RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS);
//! - [`layer`]: applies one tar layer (whiteouts, opaque whiteouts, hardlinks, ...);
//! - [`oci`]: reads an OCI layout (directory or tar) and picks the manifest;
//! - [`store`]: the store (atomic imports, metadata beside the trees, read-only, removal);
//! - [`config`]: an OCI image config becomes the container's defaults.

pub mod config;
pub mod decompress;
pub mod digest;
pub mod import;
pub mod layer;
pub mod lock;
pub mod oci;
pub mod pipe;
pub mod progress;
pub mod root;
pub mod run;
pub mod store;

use std::io;

/// Hard limits on untrusted input. Defaults follow the reference notes (registries cap
/// manifests at 4 MiB, systemd-pull caps layers, PATH_MAX, ...). The entry count and the
/// total size can be lowered with BERTH_IMPORT_MAX_ENTRIES / BERTH_IMPORT_MAX_BYTES.
#[derive(Debug, Clone)]
pub struct Limits {
    pub json_bytes: u64,
    pub index_depth: usize,
    pub manifests_per_index: usize,
    pub layers: usize,
    pub entries: u64,
    pub total_bytes: u64,
    pub path_bytes: usize,
    pub name_bytes: usize,
    pub path_depth: usize,
    /// Uncompressed bytes may exceed `ratio` times the compressed bytes read so far by at most
    /// `ratio_slack` bytes (small inputs compress well legitimately).
    pub ratio: u64,
    pub ratio_slack: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            json_bytes: 4 << 20,
            index_depth: 4,
            manifests_per_index: 1024,
            layers: 256,
            entries: 1_000_000,
            total_bytes: 128 << 30,
            path_bytes: 4096,
            name_bytes: 255,
            path_depth: 1024,
            ratio: 1000,
            ratio_slack: 64 << 20,
        }
    }
}

impl Limits {
    pub fn from_env() -> Limits {
        let mut l = Limits::default();
        if let Some(v) = env_u64("BERTH_IMPORT_MAX_ENTRIES") {
            l.entries = v;
        }
        if let Some(v) = env_u64("BERTH_IMPORT_MAX_BYTES") {
            l.total_bytes = v;
        }
        l
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{0}")]
    Invalid(String),
    #[error("limit exceeded: {0}")]
    Limit(String),
    #[error("blob {digest}: size mismatch (descriptor says {expected} bytes, read {actual})")]
    BlobSize {
        digest: String,
        expected: u64,
        actual: u64,
    },
    #[error("blob {digest}: digest mismatch (content hashes to {actual})")]
    BlobDigest { digest: String, actual: String },
    #[error(
        "layer {index} ({digest}): uncompressed content hashes to {actual}, but the config's diff_id is {expected}"
    )]
    DiffId {
        index: usize,
        digest: String,
        expected: String,
        actual: String,
    },
    #[error("entry {path}: {msg}")]
    Entry { path: String, msg: String },
    #[error("{ctx}: {err}")]
    Io { ctx: String, err: io::Error },
    #[error("image {0} already exists (use --force to replace it)")]
    Exists(String),
    #[error("no image {0} in the store")]
    NotFound(String),
    #[error("image {0} is in use by a running container (or by another removal or import)")]
    Busy(String),
}

pub type Result<T> = std::result::Result<T, ImageError>;

impl ImageError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        ImageError::Invalid(msg.into())
    }
    pub fn limit(msg: impl Into<String>) -> Self {
        ImageError::Limit(msg.into())
    }
    pub fn entry(path: &[u8], msg: impl Into<String>) -> Self {
        ImageError::Entry {
            path: String::from_utf8_lossy(path).into_owned(),
            msg: msg.into(),
        }
    }
    /// An I/O error with context; if the io::Error carries an ImageError (raised inside a
    /// verifying reader), that error is returned as it is.
    pub fn io(ctx: impl Into<String>, err: io::Error) -> Self {
        match unwrap_io(err) {
            Ok(e) => e,
            Err(err) => ImageError::Io {
                ctx: ctx.into(),
                err,
            },
        }
    }
    pub fn into_io(self) -> io::Error {
        io::Error::other(self)
    }
}

/// Recovers an ImageError that travelled through an io::Error.
pub fn unwrap_io(err: io::Error) -> std::result::Result<ImageError, io::Error> {
    if err
        .get_ref()
        .is_some_and(|e| e.downcast_ref::<ImageError>().is_some())
    {
        let inner = err.into_inner().expect("checked above");
        Ok(*inner.downcast::<ImageError>().expect("checked above"))
    } else {
        Err(err)
    }
}

impl From<nix::Error> for ImageError {
    fn from(e: nix::Error) -> Self {
        ImageError::Io {
            ctx: "system call".into(),
            err: e.into(),
        }
    }
}

/// Formats bytes as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(H[(b >> 4) as usize] as char);
        s.push(H[(b & 15) as usize] as char);
    }
    s
}
