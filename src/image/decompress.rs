//! Compression formats (detected from content for tarballs, from the media type for OCI
//! layers) and a reader that enforces the total-size and decompression-ratio limits.

use super::{ImageError, Limits};
use std::io::{self, BufRead, BufReader, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
    Xz,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
        }
    }
}

/// Detects the format from the first bytes (without consuming them).
pub fn sniff<R: BufRead>(r: &mut R) -> io::Result<Compression> {
    let mut head = Vec::new();
    // fill_buf may return fewer bytes than asked for; a few tries suffice for 6 bytes
    loop {
        let buf = r.fill_buf()?;
        if buf.len() >= 6 || buf.is_empty() || buf.len() == head.len() {
            head = buf[..buf.len().min(6)].to_vec();
            break;
        }
        head = buf.to_vec();
    }
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Compression::Xz
    } else if head.starts_with(b"BZh") {
        return Err(ImageError::invalid("bzip2-compressed input is not supported").into_io());
    } else {
        Compression::None
    })
}

/// Wraps `r` in the decoder for `c`. gzip reads every member (multi-member streams whole);
/// zstd's window is capped at 128 MiB and xz's memory at 256 MiB. When the decoder reports
/// the end, the compressed input is read to its end too, so a verifying reader below it
/// always sees every byte.
pub fn decoder<R: BufRead + Send + 'static>(
    r: R,
    c: Compression,
) -> io::Result<Box<dyn Read + Send>> {
    Ok(match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(Drain(flate2::bufread::MultiGzDecoder::new(r))),
        Compression::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(r)?;
            d.window_log_max(27)?;
            Box::new(Drain(d))
        }
        Compression::Xz => {
            let stream = liblzma::stream::Stream::new_stream_decoder(
                256 << 20,
                liblzma::stream::CONCATENATED,
            )
            .map_err(io::Error::other)?;
            Box::new(Drain(liblzma::bufread::XzDecoder::new_stream(r, stream)))
        }
    })
}

trait Inner {
    fn inner(&mut self) -> &mut dyn BufRead;
}
impl<R: BufRead> Inner for flate2::bufread::MultiGzDecoder<R> {
    fn inner(&mut self) -> &mut dyn BufRead {
        self.get_mut()
    }
}
impl<R: BufRead> Inner for zstd::stream::read::Decoder<'static, R> {
    fn inner(&mut self) -> &mut dyn BufRead {
        self.get_mut()
    }
}
impl<R: BufRead> Inner for liblzma::bufread::XzDecoder<R> {
    fn inner(&mut self) -> &mut dyn BufRead {
        self.get_mut()
    }
}

struct Drain<D>(D);

impl<D: Read + Inner> Read for Drain<D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let rest = io::copy(self.0.inner(), &mut io::sink())?;
            if rest > 0 {
                return Err(ImageError::invalid(format!(
                    "{rest} bytes of trailing data after the compressed stream"
                ))
                .into_io());
            }
        }
        Ok(n)
    }
}

/// Counts bytes read through it into a shared counter (the compressed side of a stream).
pub struct CountReader<R> {
    pub inner: R,
    pub count: Arc<AtomicU64>,
}

impl<R: Read> Read for CountReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Enforces, on the uncompressed side, the image's total-size limit (shared by all layers)
/// and the ratio limit against the compressed bytes read so far.
pub struct LimitReader<R> {
    inner: R,
    compressed: Arc<AtomicU64>,
    total: Arc<AtomicU64>,
    out: u64,
    limits: Limits,
}

impl<R: Read> LimitReader<R> {
    pub fn new(
        inner: R,
        compressed: Arc<AtomicU64>,
        total: Arc<AtomicU64>,
        limits: &Limits,
    ) -> Self {
        LimitReader {
            inner,
            compressed,
            total,
            out: 0,
            limits: limits.clone(),
        }
    }
}

impl<R: Read> Read for LimitReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out += n as u64;
        let total = self.total.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if total > self.limits.total_bytes {
            return Err(ImageError::limit(format!(
                "the uncompressed image exceeds {} bytes",
                self.limits.total_bytes
            ))
            .into_io());
        }
        let c = self.compressed.load(Ordering::Relaxed);
        if self.out > c.saturating_mul(self.limits.ratio) + self.limits.ratio_slack {
            return Err(ImageError::limit(format!(
                "decompression ratio above {}:1 ({} bytes from {} compressed bytes): a decompression bomb?",
                self.limits.ratio, self.out, c
            ))
            .into_io());
        }
        Ok(n)
    }
}

/// A BufReader with a large buffer for compressed input.
pub fn buffered<R: Read>(r: R) -> BufReader<R> {
    BufReader::with_capacity(256 << 10, r)
}
