//! Digests (`algorithm:encoded`, grammar checked before use) and readers that verify a
//! stream's size and digest while it is read, so nothing is trusted before its last byte.

use super::{ImageError, Result, hex};
use sha2::{Digest as _, Sha256, Sha512};
use std::fmt;
use std::io::{self, Read};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub algorithm: Algorithm,
    /// Lowercase hex.
    pub encoded: String,
}

impl Digest {
    /// Parses and validates a digest. Only sha256 and sha512 can be verified, so only those are
    /// accepted; the encoded part must be lowercase hex of the right length (this is also what
    /// keeps `sha256:../../x` from becoming a path).
    pub fn parse(s: &str) -> Result<Digest> {
        let bad = || ImageError::invalid(format!("invalid digest {:?}", truncate(s, 100)));
        let (alg, enc) = s.split_once(':').ok_or_else(bad)?;
        let (algorithm, len) = match alg {
            "sha256" => (Algorithm::Sha256, 64),
            "sha512" => (Algorithm::Sha512, 128),
            _ if !alg.is_empty()
                && alg.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b)
                }) =>
            {
                return Err(ImageError::invalid(format!(
                    "unsupported digest algorithm {:?} in {}",
                    alg,
                    truncate(s, 100)
                )));
            }
            _ => return Err(bad()),
        };
        if enc.len() != len || !enc.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad());
        }
        Ok(Digest {
            algorithm,
            encoded: enc.to_string(),
        })
    }

    /// Path of the blob inside an OCI layout.
    pub fn blob_path(&self) -> String {
        format!("blobs/{}/{}", self.alg_name(), self.encoded)
    }

    pub fn alg_name(&self) -> &'static str {
        match self.algorithm {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.alg_name(), self.encoded)
    }
}

pub fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        s.to_string()
    } else {
        let mut end = n;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    }
}

pub enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(a: Algorithm) -> Hasher {
        match a {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }
    pub fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(b),
            Hasher::Sha512(h) => h.update(b),
        }
    }
    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest {
                algorithm: Algorithm::Sha256,
                encoded: hex(&h.finalize()),
            },
            Hasher::Sha512(h) => Digest {
                algorithm: Algorithm::Sha512,
                encoded: hex(&h.finalize()),
            },
        }
    }
}

/// What a verifying reader checks at EOF.
#[derive(Debug, Clone)]
pub enum Check {
    /// A blob: exact size, then digest (the error names the blob).
    Blob { digest: Digest, size: u64 },
    /// A layer's uncompressed stream against the config's diff_id.
    DiffId {
        index: usize,
        blob: String,
        expected: Digest,
    },
    /// Nothing to compare: just compute the digest (read it with [`VerifyReader::digest`]).
    None,
}

/// Hashes and counts everything read through it and, at EOF, fails with an ImageError (carried
/// in the io::Error) if the size or digest is not the expected one. A blob longer than its
/// descriptor fails as soon as the excess is read.
pub struct VerifyReader<R> {
    inner: R,
    hasher: Option<Hasher>,
    check: Check,
    read: u64,
    out: Option<std::sync::Arc<std::sync::Mutex<Option<Digest>>>>,
}

impl<R: Read> VerifyReader<R> {
    pub fn new(inner: R, check: Check) -> Self {
        let alg = match &check {
            Check::Blob { digest, .. } => digest.algorithm,
            Check::DiffId { expected, .. } => expected.algorithm,
            Check::None => Algorithm::Sha256,
        };
        VerifyReader {
            inner,
            hasher: Some(Hasher::new(alg)),
            check,
            read: 0,
            out: None,
        }
    }

    /// Also publishes the digest, at EOF, where another thread can read it.
    pub fn publish(mut self, out: std::sync::Arc<std::sync::Mutex<Option<Digest>>>) -> Self {
        self.out = Some(out);
        self
    }

    fn finish(&mut self) -> io::Result<()> {
        let Some(h) = self.hasher.take() else {
            return Ok(());
        };
        let got = h.finish();
        match &self.check {
            Check::Blob { digest, size } => {
                if self.read != *size {
                    return Err(ImageError::BlobSize {
                        digest: digest.to_string(),
                        expected: *size,
                        actual: self.read,
                    }
                    .into_io());
                }
                if got != *digest {
                    return Err(ImageError::BlobDigest {
                        digest: digest.to_string(),
                        actual: got.to_string(),
                    }
                    .into_io());
                }
            }
            Check::DiffId {
                index,
                blob,
                expected,
            } => {
                if got != *expected {
                    return Err(ImageError::DiffId {
                        index: *index,
                        digest: blob.clone(),
                        expected: expected.to_string(),
                        actual: got.to_string(),
                    }
                    .into_io());
                }
            }
            Check::None => {}
        }
        if let Some(out) = &self.out {
            *out.lock().unwrap_or_else(|e| e.into_inner()) = Some(got);
        }
        Ok(())
    }
}

impl<R: Read> Read for VerifyReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.hasher.is_none() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            self.finish()?;
            return Ok(0);
        }
        self.read += n as u64;
        if let Check::Blob { digest, size } = &self.check
            && self.read > *size
        {
            return Err(ImageError::BlobSize {
                digest: digest.to_string(),
                expected: *size,
                actual: self.read,
            }
            .into_io());
        }
        if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn grammar() {
        assert!(Digest::parse(EMPTY).is_ok());
        for bad in [
            "sha256:../../etc/passwd",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:abc",
            "sha256",
            ":abc",
            "SHA256:e3b0",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
        let e = Digest::parse("blake3:00").unwrap_err().to_string();
        assert!(e.contains("unsupported digest algorithm"), "{e}");
    }

    #[test]
    fn verify_ok_and_mismatch() {
        let d = Digest::parse(EMPTY).unwrap();
        let mut r = VerifyReader::new(
            &b""[..],
            Check::Blob {
                digest: d.clone(),
                size: 0,
            },
        );
        assert_eq!(io::copy(&mut r, &mut io::sink()).unwrap(), 0);
        let mut r = VerifyReader::new(
            &b"x"[..],
            Check::Blob {
                digest: d.clone(),
                size: 1,
            },
        );
        let e = super::super::unwrap_io(io::copy(&mut r, &mut io::sink()).unwrap_err()).unwrap();
        assert!(matches!(e, ImageError::BlobDigest { .. }), "{e}");
        let mut r = VerifyReader::new(&b"xy"[..], Check::Blob { digest: d, size: 1 });
        let e = super::super::unwrap_io(io::copy(&mut r, &mut io::sink()).unwrap_err()).unwrap();
        assert!(matches!(e, ImageError::BlobSize { .. }), "{e}");
    }
}
