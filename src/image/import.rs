//! The importers. Each layer runs as a three-stage pipeline: a thread reads the blob (hashing
//! and counting the compressed bytes), a second decompresses (hashing the uncompressed stream
//! for the diff_id and enforcing size/ratio limits), and the calling thread parses the tar and
//! writes files. Memory stays bounded by the pipe depth.

use super::decompress::{self, Compression, CountReader, LimitReader};
use super::digest::{Check, Digest, VerifyReader};
use super::layer::{Applier, Stats};
use super::oci::{self, Layout};
use super::pipe;
use super::progress::Progress;
use super::store::{Metadata, Store, now, validate_name};
use super::{ImageError, Limits, Result};
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub force: bool,
    pub read_only: bool,
    pub limits: Limits,
    pub progress: bool,
    /// syncfs before publishing.
    pub sync: bool,
}

#[derive(Debug)]
pub struct Summary {
    pub name: String,
    pub layers: usize,
    pub stats: Stats,
    pub input_bytes: u64,
    pub elapsed: Duration,
}

impl Summary {
    pub fn line(&self) -> String {
        let mut s = format!(
            "Imported {}: {} layer{}, {} entries, {} files, {:.1} MiB ({:.1} MiB read) in {:.2}s",
            self.name,
            self.layers,
            if self.layers == 1 { "" } else { "s" },
            self.stats.entries,
            self.stats.files,
            self.stats.bytes as f64 / 1048576.0,
            self.input_bytes as f64 / 1048576.0,
            self.elapsed.as_secs_f64()
        );
        if self.stats.skipped_devices > 0 {
            s.push_str(&format!(
                "; skipped {} device node{}",
                self.stats.skipped_devices,
                if self.stats.skipped_devices == 1 {
                    ""
                } else {
                    "s"
                }
            ));
        }
        if self.stats.skipped_xattrs > 0 {
            s.push_str(&format!("; dropped {} xattrs", self.stats.skipped_xattrs));
        }
        s
    }
}

/// Runs one tar stream through the pipeline into the pending tree.
#[allow(clippy::too_many_arguments)]
fn apply_stream(
    root: &super::root::Root,
    input: Box<dyn Read + Send>,
    compression: Option<Compression>,
    diff: Option<Check>,
    limits: &Limits,
    total: &Arc<AtomicU64>,
    stats: &mut Stats,
    progress: &Progress,
    done: u64,
) -> Result<u64> {
    let count = Arc::new(AtomicU64::new(0));
    let stage1 = pipe::spawn(CountReader {
        inner: input,
        count: count.clone(),
    });
    let mut br = decompress::buffered(stage1);
    let c = match compression {
        Some(c) => c,
        None => decompress::sniff(&mut br).map_err(|e| ImageError::io("reading the input", e))?,
    };
    let dec = decompress::decoder(br, c)
        .map_err(|e| ImageError::io(format!("starting {}", c.name()), e))?;
    let verified: Box<dyn Read + Send> = match diff {
        Some(check) => Box::new(VerifyReader::new(dec, check)),
        None => dec,
    };
    let stage2 = pipe::spawn(LimitReader::new(
        verified,
        count.clone(),
        total.clone(),
        limits,
    ));
    let cnt = count.clone();
    Applier::new(root, limits, stats).apply(stage2, &mut |_| {
        progress.set_position(done + cnt.load(Ordering::Relaxed));
    })?;
    Ok(count.load(Ordering::Relaxed))
}

/// `berth import-tar FILE|- NAME`.
pub fn import_tar(store: &Store, input: &str, name: &str, o: &Options) -> Result<Summary> {
    let start = Instant::now();
    validate_name(name)?;
    // modes come from the archive, not from the caller's umask
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let (reader, size): (Box<dyn Read + Send>, Option<u64>) = if input == "-" {
        (Box::new(std::io::stdin()), None)
    } else {
        let f = File::open(input).map_err(|e| ImageError::io("opening the input", e))?;
        let md = f
            .metadata()
            .map_err(|e| ImageError::io("opening the input", e))?;
        if md.is_dir() {
            return Err(ImageError::invalid(
                "the input is a directory (import-tar takes a tarball)",
            ));
        }
        (Box::new(f), md.is_file().then_some(md.len()))
    };
    let pending = store.begin(name, o.force)?;
    let digest = Arc::new(Mutex::new(None::<Digest>));
    let hashed = VerifyReader::new(reader, Check::None).publish(digest.clone());
    let progress = Progress::new(size, o.progress);
    progress.layer(0, 1);
    let total = Arc::new(AtomicU64::new(0));
    let mut stats = Stats::default();
    let read = apply_stream(
        pending.root(),
        Box::new(hashed),
        None,
        None,
        &o.limits,
        &total,
        &mut stats,
        &progress,
        0,
    );
    progress.finish();
    let read = read?;
    let input_digest = digest
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|d| d.to_string());
    let meta = Metadata {
        name: name.to_string(),
        kind: "tar".into(),
        source: source_name(input),
        created: now(),
        read_only: o.read_only,
        size: stats.bytes,
        files: stats.files,
        input_digest,
        ..Default::default()
    };
    pending.commit(meta, o.force, o.sync)?;
    Ok(Summary {
        name: name.to_string(),
        layers: 1,
        stats,
        input_bytes: read,
        elapsed: start.elapsed(),
    })
}

fn source_name(s: &str) -> String {
    if s == "-" {
        return "-".into();
    }
    std::fs::canonicalize(s)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| s.to_string())
}

/// `berth import-oci LAYOUT[:REF] NAME`.
pub fn import_oci(store: &Store, arg: &str, name: &str, o: &Options) -> Result<Summary> {
    let start = Instant::now();
    validate_name(name)?;
    // modes come from the archive, not from the caller's umask
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let (path, reference) = oci::split_ref(arg);
    let layout = Layout::open(Path::new(path), &o.limits)?;
    let image = oci::resolve(&layout, reference, &o.limits)?;
    let pending = store.begin(name, o.force)?;
    let sum: u64 = image.layers.iter().map(|l| l.size).sum();
    let progress = Progress::new(Some(sum), o.progress);
    let total = Arc::new(AtomicU64::new(0));
    let mut stats = Stats::default();
    let mut done = 0u64;
    let n = image.layers.len();
    for (i, l) in image.layers.iter().enumerate() {
        progress.layer(i, n);
        let blob = layout.open_blob(&l.digest, l.size)?;
        let check = Check::DiffId {
            index: i,
            blob: l.digest.to_string(),
            expected: l.diff_id.clone(),
        };
        let r = apply_stream(
            pending.root(),
            Box::new(blob),
            (!l.sniff).then_some(l.compression),
            Some(check),
            &o.limits,
            &total,
            &mut stats,
            &progress,
            done,
        );
        if r.is_err() {
            progress.finish();
        }
        // a stream error may come from a corrupt blob before its digest could be checked:
        // check the blob whole, so the error names the real cause
        let r = r.map_err(|e| match e {
            ImageError::BlobDigest { .. } | ImageError::BlobSize { .. } => e,
            e => match layout.open_blob(&l.digest, l.size).and_then(|mut b| {
                std::io::copy(&mut b, &mut std::io::sink())
                    .map_err(|e| ImageError::io("reading", e))
            }) {
                Err(be @ (ImageError::BlobDigest { .. } | ImageError::BlobSize { .. })) => be,
                _ => e,
            },
        });
        r.map_err(|e| match e {
            e @ (ImageError::BlobDigest { .. }
            | ImageError::BlobSize { .. }
            | ImageError::DiffId { .. }
            | ImageError::Limit(_)) => e,
            e => ImageError::invalid(format!("layer {i} ({}): {e}", l.digest)),
        })?;
        done += l.size;
    }
    progress.finish();
    let meta = Metadata {
        name: name.to_string(),
        kind: "oci".into(),
        source: match reference {
            Some(r) => format!("{}:{r}", source_name(path)),
            None => source_name(path),
        },
        created: now(),
        read_only: o.read_only,
        size: stats.bytes,
        files: stats.files,
        manifest_digest: Some(image.manifest_digest.to_string()),
        config_digest: Some(image.config_digest.to_string()),
        layers: image.layers.iter().map(|l| l.digest.to_string()).collect(),
        diff_ids: image.layers.iter().map(|l| l.diff_id.to_string()).collect(),
        config: Some(image.config_json.clone()),
        input_digest: None,
    };
    pending.commit(meta, o.force, o.sync)?;
    Ok(Summary {
        name: name.to_string(),
        layers: n,
        stats,
        input_bytes: done,
        elapsed: start.elapsed(),
    })
}
