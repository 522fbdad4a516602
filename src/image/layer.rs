//! Applies one tar layer to an image root, as the OCI image spec says: entries replace what
//! lower layers left at the same path (only directory-over-directory merges), whiteouts
//! (`.wh.NAME`) and opaque whiteouts (`.wh..wh..opq`) remove lower content only, whatever their
//! position in the layer; hardlinks, symlinks, ownership, modes (setuid included), mtimes and
//! the safe xattrs are kept. A plain rootfs tarball is a single layer.
//!
//! Device nodes: FIFOs are created; character devices only when berth runs as root and the
//! device is one of the harmless ones (null, zero, full, random, urandom, tty); every other
//! device node (all block devices, /dev/mem, /dev/sda, ...) is skipped and counted, so an image
//! can never be a way to host devices. Containers get a fresh /dev anyway.
//!
//! Xattrs kept: `user.*` and `security.capability`; `trusted.*`, `security.selinux`,
//! `system.*` and the rest are dropped.

use super::root::{self, Root, join, lossy, lstat_at, split};
use super::{ImageError, Limits, Result};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, SFlag, UtimensatFlags, fchmod, futimens, mkdirat, mknodat, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchown, fchownat, linkat, symlinkat};
use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::rc::Rc;

/// Counters shared by all layers of one import.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
    pub skipped_devices: u64,
    pub skipped_xattrs: u64,
}

#[derive(Clone)]
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: (i64, i64),
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

pub struct Applier<'a> {
    root: &'a Root,
    limits: &'a Limits,
    pub stats: &'a mut Stats,
    euid: u32,
    egid: u32,
    upper: HashSet<Vec<u8>>,
    dirs: Vec<(Vec<u8>, Meta)>,
    cache: Option<(Vec<u8>, Rc<OwnedFd>)>,
    buf: Vec<u8>,
    writer: Option<Writer>,
}

/// Normalizes an entry name: leading `/` and `./` dropped (as GNU tar does), empty and `.`
/// components dropped, `..` resolved lexically; a `..` that would leave the root, a NUL, and
/// names over the length limits are errors.
pub fn normalize(raw: &[u8], limits: &Limits) -> Result<Vec<u8>> {
    if raw.contains(&0) {
        return Err(ImageError::entry(raw, "name contains a NUL byte"));
    }
    if raw.len() > limits.path_bytes {
        return Err(ImageError::limit(format!(
            "entry name longer than {} bytes ({} bytes: {}...)",
            limits.path_bytes,
            raw.len(),
            lossy(&raw[..64])
        )));
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if parts.pop().is_none() {
                    return Err(ImageError::entry(raw, "path escapes the image root"));
                }
            }
            c => {
                if c.len() > limits.name_bytes {
                    return Err(ImageError::limit(format!(
                        "entry {}: a component is longer than {} bytes",
                        lossy(&raw[..raw.len().min(64)]),
                        limits.name_bytes
                    )));
                }
                parts.push(c);
            }
        }
    }
    if parts.len() > limits.path_depth {
        return Err(ImageError::limit(format!(
            "entry {}...: deeper than {} components",
            lossy(&raw[..raw.len().min(64)]),
            limits.path_depth
        )));
    }
    Ok(parts.join(&b'/'))
}

fn io_entry(p: &[u8], what: &str, e: impl std::fmt::Display) -> ImageError {
    ImageError::entry(p, format!("{what}: {e}"))
}

const SAFE_CHAR_DEVICES: &[(u64, u64)] = &[(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0)];

fn xattr_allowed(name: &[u8]) -> bool {
    name.starts_with(b"user.") || name == b"security.capability"
}

impl<'a> Applier<'a> {
    pub fn new(root: &'a Root, limits: &'a Limits, stats: &'a mut Stats) -> Self {
        Applier {
            root,
            limits,
            stats,
            euid: nix::unistd::geteuid().as_raw(),
            egid: nix::unistd::getegid().as_raw(),
            upper: HashSet::new(),
            dirs: Vec::new(),
            cache: None,
            buf: vec![0; 1 << 20],
            writer: None,
        }
    }

    /// Applies the tar stream `r`, then reads `r` to its end (so a verifying reader below sees
    /// every byte, including anything after the end-of-archive marker).
    pub fn apply<R: Read>(mut self, r: R, on_entry: &mut dyn FnMut(&Stats)) -> Result<R> {
        let mut ar = tar::Archive::new(r);
        ar.set_ignore_zeros(false);
        self.writer = Some(spawn_writer(self.euid, self.egid));
        let res = self.entries(&mut ar, on_entry);
        // the writer's error (if any) explains a failure better than "thread stopped"
        let joined = self.join_writer();
        res?;
        joined?;
        self.finish_dirs()?;
        let mut r = ar.into_inner();
        io::copy(&mut r, &mut io::sink())
            .map_err(|e| ImageError::io("reading the tar stream", e))?;
        Ok(r)
    }

    fn entries<R: Read>(
        &mut self,
        ar: &mut tar::Archive<R>,
        on_entry: &mut dyn FnMut(&Stats),
    ) -> Result<()> {
        {
            // raw mode: PAX and GNU long-name records are parsed here, by our own parser (the
            // tar crate splits PAX records at newlines, which values such as ACLs contain)
            let entries = ar
                .entries()
                .map_err(|e| ImageError::io("reading the tar stream", e))?
                .raw(true);
            let mut ext = Ext::default();
            for entry in entries {
                let mut entry = entry.map_err(|e| ImageError::io("reading the tar stream", e))?;
                use tar::EntryType as T;
                match entry.header().entry_type() {
                    T::XHeader => {
                        if ext.pax.is_some() {
                            return Err(ImageError::invalid("two PAX headers for one tar entry"));
                        }
                        let d = read_meta(&mut entry, 1 << 20, "PAX header")?;
                        ext.pax = Some(parse_pax(&d)?);
                    }
                    T::XGlobalHeader => {
                        read_meta(&mut entry, 1 << 20, "PAX global header")?;
                    }
                    T::GNULongName => {
                        ext.long_name =
                            Some(strip_nul(read_meta(&mut entry, 64 << 10, "GNU long name")?));
                    }
                    T::GNULongLink => {
                        ext.long_link =
                            Some(strip_nul(read_meta(&mut entry, 64 << 10, "GNU long link")?));
                    }
                    _ => {
                        let x = std::mem::take(&mut ext);
                        self.entry(&mut entry, x)?;
                        on_entry(self.stats);
                    }
                }
            }
        }
        Ok(())
    }

    fn mark_upper(&mut self, p: &[u8]) {
        let mut p = p;
        loop {
            if !self.upper.insert(p.to_vec()) {
                return;
            }
            if p.is_empty() {
                return;
            }
            p = split(p).0;
        }
    }

    /// The parent directory of an entry, created if missing. The fd of the last parent is kept
    /// until something that could change path resolution (a symlink, a removal) happens.
    fn parent(&mut self, dir: &[u8]) -> Result<Rc<OwnedFd>> {
        if let Some((p, fd)) = &self.cache
            && p.as_slice() == dir
        {
            return Ok(fd.clone());
        }
        self.cache = None;
        let fd = Rc::new(self.root.mkdir_all(dir, 0)?);
        self.cache = Some((dir.to_vec(), fd.clone()));
        Ok(fd)
    }

    fn entry<R: Read>(&mut self, e: &mut tar::Entry<'_, R>, ext: Ext) -> Result<()> {
        use tar::EntryType as T;
        let et = e.header().entry_type();
        self.stats.entries += 1;
        if self.stats.entries > self.limits.entries {
            return Err(ImageError::limit(format!(
                "more than {} entries",
                self.limits.entries
            )));
        }
        let h = e.header().clone();
        let pax = ext.pax.unwrap_or_default();
        let pax_get = |k: &[u8]| pax.iter().rev().find(|(pk, _)| pk == k).map(|(_, v)| v);
        // PAX wins over GNU long names, which win over the header (as GNU tar reads them)
        let raw = match (pax_get(b"path"), &ext.long_name) {
            (Some(p), _) => p.clone(),
            (None, Some(l)) => l.clone(),
            (None, None) => h.path_bytes().into_owned(),
        };
        let link: Option<Vec<u8>> = match (pax_get(b"linkpath"), &ext.long_link) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(l)) => Some(l.clone()),
            (None, None) => h.link_name_bytes().map(|c| c.into_owned()),
        };
        let p = normalize(&raw, self.limits)?;
        if let Some(sz) = pax_get(b"size")
            && std::str::from_utf8(sz)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                != Some(e.size())
        {
            return Err(ImageError::entry(
                &raw,
                "a PAX size record differing from the header's size is not supported",
            ));
        }
        let num = |k: &[u8]| -> Option<u64> { std::str::from_utf8(pax_get(k)?).ok()?.parse().ok() };
        let mode = h.mode().map_err(|e| io_entry(&raw, "bad mode", e))? & 0o7777;
        let uid = match num(b"uid") {
            Some(u) => u,
            None => h.uid().map_err(|e| io_entry(&raw, "bad uid", e))?,
        };
        let gid = match num(b"gid") {
            Some(g) => g,
            None => h.gid().map_err(|e| io_entry(&raw, "bad gid", e))?,
        };
        if uid > u32::MAX as u64 - 1 || gid > u32::MAX as u64 - 1 {
            return Err(ImageError::entry(&raw, "uid or gid out of range"));
        }
        let mut mtime = (
            h.mtime().map_err(|e| io_entry(&raw, "bad mtime", e))? as i64,
            0,
        );
        let mut xattrs = Vec::new();
        for (k, v) in &pax {
            if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                if xattr_allowed(name) {
                    xattrs.push((name.to_vec(), v.clone()));
                } else {
                    self.stats.skipped_xattrs += 1;
                }
            } else if k == b"mtime"
                && let Ok(v) = std::str::from_utf8(v)
            {
                let (s, frac) = v.split_once('.').unwrap_or((v, ""));
                if let Ok(s) = s.parse::<i64>() {
                    let mut ns = 0i64;
                    for (i, d) in frac.bytes().take(9).enumerate() {
                        if d.is_ascii_digit() {
                            ns += (d - b'0') as i64 * 10i64.pow(8 - i as u32);
                        }
                    }
                    mtime = (s, if s < 0 { 0 } else { ns });
                }
            }
        }
        if xattrs.len() > 128 {
            return Err(ImageError::limit(format!(
                "entry {}: more than 128 xattrs",
                lossy(&raw)
            )));
        }
        let meta = Meta {
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        };

        if p.is_empty() {
            if et != T::Directory {
                return Err(ImageError::entry(
                    &raw,
                    "the image root can only be a directory",
                ));
            }
            self.dirs.push((p, meta));
            return Ok(());
        }
        let (dir, base) = split(&p);
        if let Some(name) = base.strip_prefix(b".wh.") {
            let dir = dir.to_vec();
            if name == b".wh..opq" {
                return self.whiteout(&raw, &dir, None);
            }
            if name.starts_with(b".wh.") {
                return Err(ImageError::entry(
                    &raw,
                    "unsupported AUFS whiteout metadata",
                ));
            }
            if name.is_empty() || name == b"." || name == b".." {
                return Err(ImageError::entry(&raw, "invalid whiteout name"));
            }
            let name = name.to_vec();
            return self.whiteout(&raw, &dir, Some(&name));
        }
        let (dir, base) = (dir.to_vec(), base.to_vec());
        match et {
            T::Regular | T::Continuous => self.file(e, &raw, &p, &dir, &base, &meta)?,
            T::Directory => {
                let pfd = self.parent(&dir)?;
                let pfd = pfd.as_fd();
                match mkdirat(pfd, base.as_slice(), Mode::from_bits_truncate(0o700)) {
                    Ok(()) => {}
                    Err(Errno::EEXIST) => {
                        let st = lstat_at(pfd, &base).map_err(|e| io_entry(&raw, "stat", e))?;
                        if !st.as_ref().is_some_and(root::is_dir) {
                            root::remove_at(pfd, &base)
                                .map_err(|e| io_entry(&raw, "replacing", e))?;
                            mkdirat(pfd, base.as_slice(), Mode::from_bits_truncate(0o700))
                                .map_err(|e| io_entry(&raw, "creating directory", e))?;
                            self.cache = None;
                        }
                    }
                    Err(err) => return Err(io_entry(&raw, "creating directory", err)),
                }
                self.dirs.push((p.clone(), meta));
            }
            T::Symlink => {
                let target = link
                    .clone()
                    .ok_or_else(|| ImageError::entry(&raw, "symlink without a target"))?;
                if target.is_empty() || target.len() > 4095 || target.contains(&0) {
                    return Err(ImageError::entry(&raw, "invalid symlink target"));
                }
                let pfd = self.parent(&dir)?;
                let pfd = pfd.as_fd();
                replace_and(pfd, &base, &raw, |n| symlinkat(target.as_slice(), pfd, n))?;
                self.cache = None;
                self.meta_nofollow(pfd, &base, &raw, &meta)?;
            }
            T::Link => {
                let target = link
                    .clone()
                    .ok_or_else(|| ImageError::entry(&raw, "hardlink without a target"))?;
                let t = normalize(&target, self.limits).map_err(|_| {
                    ImageError::entry(&raw, "hardlink target escapes the image root")
                })?;
                if t.is_empty() {
                    return Err(ImageError::entry(&raw, "hardlink to the image root"));
                }
                if t == p {
                    return Ok(());
                }
                let (tdir, tbase) = split(&t);
                let tpfd = match self.root.resolve_dir(tdir) {
                    Ok(fd) => fd,
                    Err(_) => {
                        return Err(ImageError::entry(
                            &raw,
                            format!("hardlink target {} not found in the image", lossy(&t)),
                        ));
                    }
                };
                match lstat_at(tpfd.as_fd(), tbase) {
                    Ok(Some(st)) if !root::is_dir(&st) => {}
                    Ok(Some(_)) => {
                        return Err(ImageError::entry(&raw, "hardlink to a directory"));
                    }
                    _ => {
                        return Err(ImageError::entry(
                            &raw,
                            format!("hardlink target {} not found in the image", lossy(&t)),
                        ));
                    }
                }
                let pfd = self.parent(&dir)?;
                let pfd = pfd.as_fd();
                replace_and(pfd, &base, &raw, |n| {
                    linkat(tpfd.as_fd(), tbase, pfd, n, AtFlags::empty())
                })?;
                // no metadata for hardlinks: they share the target's inode
            }
            T::Char | T::Block | T::Fifo => {
                let major = h.device_major().ok().flatten().unwrap_or(0) as u64;
                let minor = h.device_minor().ok().flatten().unwrap_or(0) as u64;
                let kind = match et {
                    T::Char => SFlag::S_IFCHR,
                    T::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                if kind != SFlag::S_IFIFO
                    && (self.euid != 0
                        || kind == SFlag::S_IFBLK
                        || !SAFE_CHAR_DEVICES.contains(&(major, minor)))
                {
                    self.stats.skipped_devices += 1;
                    return Ok(());
                }
                let pfd = self.parent(&dir)?;
                let pfd = pfd.as_fd();
                let dev = if kind == SFlag::S_IFIFO {
                    0
                } else {
                    nix::sys::stat::makedev(major, minor)
                };
                replace_and(pfd, &base, &raw, |n| {
                    mknodat(pfd, n, kind, Mode::from_bits_truncate(mode & 0o777), dev)
                })?;
                self.meta_nofollow(pfd, &base, &raw, &meta)?;
            }
            T::GNUSparse => {
                return Err(ImageError::entry(&raw, "sparse files are not supported"));
            }
            other => {
                return Err(ImageError::entry(
                    &raw,
                    format!("unsupported tar entry type {:?}", other.as_byte() as char),
                ));
            }
        }
        self.mark_upper(&p);
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        e: &mut tar::Entry<'_, R>,
        raw: &[u8],
        p: &[u8],
        dir: &[u8],
        base: &[u8],
        meta: &Meta,
    ) -> Result<()> {
        let size = e.size();
        let (euid, egid) = (self.euid, self.egid);
        let pfd = self.parent(dir)?;
        let pfd = pfd.as_fd();
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW;
        let cmode = Mode::from_bits_truncate(meta.mode & 0o777 | 0o200);
        let fd = match openat(pfd, base, flags | OFlag::O_CLOEXEC, cmode) {
            Ok(fd) => fd,
            Err(Errno::EEXIST) => {
                root::remove_at(pfd, base).map_err(|e| io_entry(raw, "replacing", e))?;
                self.cache = None;
                openat(pfd, base, flags | OFlag::O_CLOEXEC, cmode)
                    .map_err(|e| io_entry(raw, "creating", e))?
            }
            Err(err) => return Err(io_entry(raw, "creating", err)),
        };
        let mut f = File::from(fd);
        self.stats.files += 1;
        self.stats.bytes += size;
        if size <= SMALL_FILE && self.writer.is_some() {
            // small files: data and metadata are written by the writer thread
            let mut data = vec![0u8; size as usize];
            e.read_exact(&mut data)
                .map_err(|err| ImageError::io(format!("entry {}: reading", lossy(raw)), err))?;
            let job = Job {
                f,
                data,
                meta: meta.clone(),
                raw: raw.to_vec(),
            };
            let w = self.writer.as_ref().expect("checked above");
            if w.tx.send(job).is_err() {
                return Err(self
                    .join_writer()
                    .err()
                    .unwrap_or_else(|| ImageError::invalid("the file writer thread stopped")));
            }
            return Ok(());
        }
        let mut left = size;
        while left > 0 {
            let want = self.buf.len().min(left as usize);
            let n = e
                .read(&mut self.buf[..want])
                .map_err(|err| ImageError::io(format!("entry {}: reading", lossy(raw)), err))?;
            if n == 0 {
                return Err(ImageError::entry(raw, "truncated file data"));
            }
            f.write_all(&self.buf[..n])
                .map_err(|err| io_entry(raw, "writing", err))?;
            left -= n as u64;
        }
        self.stats.skipped_xattrs += finish_file(&f, meta, euid, egid, raw)?;
        let _ = p;
        Ok(())
    }

    /// Waits for the writer thread; its first error, if any.
    fn join_writer(&mut self) -> Result<()> {
        let Some(w) = self.writer.take() else {
            return Ok(());
        };
        drop(w.tx);
        match w.handle.join() {
            Ok(Ok(skipped)) => {
                self.stats.skipped_xattrs += skipped;
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ImageError::invalid("the file writer thread panicked")),
        }
    }

    fn set_xattrs(&mut self, fd: BorrowedFd<'_>, xattrs: &[(Vec<u8>, Vec<u8>)]) {
        self.stats.skipped_xattrs += set_xattrs(fd, xattrs);
    }

    fn meta_nofollow(
        &mut self,
        pfd: BorrowedFd<'_>,
        base: &[u8],
        raw: &[u8],
        meta: &Meta,
    ) -> Result<()> {
        if meta.uid != self.euid as u64 || meta.gid != self.egid as u64 {
            fchownat(
                pfd,
                base,
                Some(Uid::from_raw(meta.uid as u32)),
                Some(Gid::from_raw(meta.gid as u32)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| io_entry(raw, "chown", e))?;
        }
        let t = TimeSpec::new(meta.mtime.0, meta.mtime.1);
        utimensat(pfd, base, &t, &t, UtimensatFlags::NoFollowSymlink)
            .map_err(|e| io_entry(raw, "setting mtime", e))?;
        Ok(())
    }

    /// Removes lower-layer content: `name` in `dir`, or with `name == None` (opaque) every child
    /// of `dir`. What this layer itself created (the upper set) is kept, whatever the order.
    fn whiteout(&mut self, raw: &[u8], dir: &[u8], name: Option<&[u8]>) -> Result<()> {
        self.cache = None;
        let dfd = match self.root.resolve_dir(dir) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(()),
            Err(e) => return Err(io_entry(raw, "resolving whiteout parent", e)),
        };
        let res = match name {
            None => {
                let fd = self
                    .root
                    .open_dir_nofollow(dir)
                    .map_err(|e| io_entry(raw, "opening", e))?;
                self.remove_lower(fd.as_fd(), dir)
            }
            Some(n) => {
                let p = join(dir, n);
                if self.upper.contains(&p) {
                    match openat(
                        dfd.as_fd(),
                        n,
                        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    ) {
                        Ok(fd) => self.remove_lower(fd.as_fd(), &p),
                        Err(_) => Ok(()),
                    }
                } else {
                    root::remove_at(dfd.as_fd(), n)
                }
            }
        };
        res.map_err(|e| io_entry(raw, "applying whiteout", e))
    }

    fn remove_lower(&self, dfd: BorrowedFd<'_>, p: &[u8]) -> nix::Result<()> {
        for n in root::list_dir(dfd)? {
            let cp = join(p, &n);
            if self.upper.contains(&cp) {
                if let Ok(fd) = openat(
                    dfd,
                    n.as_slice(),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                ) {
                    self.remove_lower(fd.as_fd(), &cp)?;
                }
            } else {
                root::remove_at(dfd, &n)?;
            }
        }
        Ok(())
    }

    /// Directory metadata, deepest first, once the layer's children are in place.
    fn finish_dirs(&mut self) -> Result<()> {
        let dirs = std::mem::take(&mut self.dirs);
        for (p, meta) in dirs.iter().rev() {
            let fd = match self.root.open_dir_nofollow(p) {
                Ok(fd) => fd,
                // replaced or whited out later in the layer
                Err(Errno::ENOENT | Errno::ELOOP | Errno::ENOTDIR) => continue,
                Err(e) => return Err(io_entry(p, "opening directory", e)),
            };
            if meta.uid != self.euid as u64 || meta.gid != self.egid as u64 {
                fchown(
                    &fd,
                    Some(Uid::from_raw(meta.uid as u32)),
                    Some(Gid::from_raw(meta.gid as u32)),
                )
                .map_err(|e| io_entry(p, "chown", e))?;
            }
            fchmod(&fd, Mode::from_bits_truncate(meta.mode))
                .map_err(|e| io_entry(p, "chmod", e))?;
            self.set_xattrs(fd.as_fd(), &meta.xattrs);
            let t = TimeSpec::new(meta.mtime.0, meta.mtime.1);
            futimens(&fd, &t, &t).map_err(|e| io_entry(p, "setting mtime", e))?;
        }
        Ok(())
    }
}

/// Files up to this size go to the writer thread whole (bounded: WRITER_DEPTH of them queued).
const SMALL_FILE: u64 = 256 << 10;
const WRITER_DEPTH: usize = 64;

/// A created file whose data and metadata the writer thread writes.
struct Job {
    f: File,
    data: Vec<u8>,
    meta: Meta,
    raw: Vec<u8>,
}

struct Writer {
    tx: std::sync::mpsc::SyncSender<Job>,
    handle: std::thread::JoinHandle<Result<u64>>,
}

/// The writer thread: file creation stays in order on the main thread (names, links,
/// whiteouts), while writing the data of small files, their owner, mode, xattrs and mtime
/// (all through the file's own fd) runs beside it.
fn spawn_writer(euid: u32, egid: u32) -> Writer {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(WRITER_DEPTH);
    let handle = std::thread::Builder::new()
        .name("berth-writer".into())
        .spawn(move || {
            let mut skipped = 0;
            for mut j in rx {
                j.f.write_all(&j.data)
                    .map_err(|err| io_entry(&j.raw, "writing", err))?;
                skipped += finish_file(&j.f, &j.meta, euid, egid, &j.raw)?;
            }
            Ok(skipped)
        })
        .expect("spawning the writer thread");
    Writer { tx, handle }
}

/// Owner, mode (after the owner: chown clears setuid/setgid), xattrs and mtime of a file
/// just written; returns the number of xattrs that could not be set.
fn finish_file(f: &File, meta: &Meta, euid: u32, egid: u32, raw: &[u8]) -> Result<u64> {
    let chowned = meta.uid != euid as u64 || meta.gid != egid as u64;
    if chowned {
        fchown(
            f,
            Some(Uid::from_raw(meta.uid as u32)),
            Some(Gid::from_raw(meta.gid as u32)),
        )
        .map_err(|err| io_entry(raw, "chown", err))?;
    }
    if chowned || meta.mode & 0o7000 != 0 || meta.mode & 0o200 == 0 {
        fchmod(f, Mode::from_bits_truncate(meta.mode))
            .map_err(|err| io_entry(raw, "chmod", err))?;
    }
    let skipped = set_xattrs(f.as_fd(), &meta.xattrs);
    let t = TimeSpec::new(meta.mtime.0, meta.mtime.1);
    futimens(f, &t, &t).map_err(|err| io_entry(raw, "setting mtime", err))?;
    Ok(skipped)
}

fn set_xattrs(fd: BorrowedFd<'_>, xattrs: &[(Vec<u8>, Vec<u8>)]) -> u64 {
    let mut skipped = 0;
    for (k, v) in xattrs {
        let Ok(name) = std::ffi::CString::new(k.clone()) else {
            skipped += 1;
            continue;
        };
        // SAFETY: valid fd, NUL-terminated name, value pointer and length from one slice.
        let r = unsafe {
            libc::fsetxattr(fd.as_raw_fd(), name.as_ptr(), v.as_ptr().cast(), v.len(), 0)
        };
        if r != 0 {
            skipped += 1;
        }
    }
    skipped
}

/// PAX records and GNU long names that apply to the next entry.
#[derive(Default)]
struct Ext {
    pax: Option<Vec<(Vec<u8>, Vec<u8>)>>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

fn read_meta<R: Read>(e: &mut tar::Entry<'_, R>, max: u64, what: &str) -> Result<Vec<u8>> {
    if e.size() > max {
        return Err(ImageError::limit(format!(
            "{what} of {} bytes (more than {max})",
            e.size()
        )));
    }
    let mut v = Vec::with_capacity(e.size() as usize);
    e.read_to_end(&mut v)
        .map_err(|err| ImageError::io(format!("reading a {what}"), err))?;
    Ok(v)
}

fn strip_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

/// PAX extended header records: "LEN KEY=VALUE\n", LEN counting the whole record. Values
/// may contain newlines; the length is what delimits a record.
pub fn parse_pax(mut d: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let bad = || ImageError::invalid("malformed PAX header");
    let mut out = Vec::new();
    while !d.is_empty() {
        let sp = d.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&d[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        if len <= sp + 1 || len > d.len() || d[len - 1] != b'\n' {
            return Err(bad());
        }
        let rec = &d[sp + 1..len - 1];
        let eq = rec.iter().position(|&b| b == b'=').ok_or_else(bad)?;
        out.push((rec[..eq].to_vec(), rec[eq + 1..].to_vec()));
        d = &d[len..];
    }
    Ok(out)
}

/// Runs `create(name)`; if the name exists (not a directory being merged), removes it and
/// tries once more: the spec's "unlink and recreate".
fn replace_and(
    pfd: BorrowedFd<'_>,
    base: &[u8],
    raw: &[u8],
    create: impl Fn(&[u8]) -> nix::Result<()>,
) -> Result<()> {
    match create(base) {
        Ok(()) => Ok(()),
        Err(Errno::EEXIST) => {
            root::remove_at(pfd, base).map_err(|e| io_entry(raw, "replacing", e))?;
            create(base).map_err(|e| io_entry(raw, "creating", e))
        }
        Err(e) => Err(io_entry(raw, "creating", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_with_newlines() {
        // a value with newlines (ACLs): the length delimits records, so a "path=" hidden in
        // a value is not a record
        let rec1 = b"35 SCHILY.acl.access=a\n12 path=ev\n\n";
        let rec2 = b"12 path=abc\n";
        let mut d = rec1.to_vec();
        d.extend_from_slice(rec2);
        let r = parse_pax(&d).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0],
            (b"SCHILY.acl.access".to_vec(), b"a\n12 path=ev\n".to_vec())
        );
        assert_eq!(r[1], (b"path".to_vec(), b"abc".to_vec()));
        assert!(parse_pax(b"99 path=x\n").is_err());
    }

    #[test]
    fn normalize_names() {
        let l = Limits::default();
        assert_eq!(normalize(b"./a/b/", &l).unwrap(), b"a/b");
        assert_eq!(normalize(b"/etc//passwd", &l).unwrap(), b"etc/passwd");
        assert_eq!(normalize(b"a/../b", &l).unwrap(), b"b");
        assert_eq!(normalize(b"./", &l).unwrap(), b"");
        assert!(normalize(b"../x", &l).is_err());
        assert!(normalize(b"a/../../x", &l).is_err());
        assert!(normalize(&[b'a'; 5000], &l).is_err());
        assert!(normalize(&[b'a'; 256], &l).is_err());
    }
}
