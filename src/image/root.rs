//! File-system access inside an image root. Every operation starts from one directory fd of
//! the root held for the whole import: parents are resolved with
//! openat2(RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS) (`..` and absolute symlinks are clamped at
//! the root, as in a chroot), the final component is never followed, and all changes are
//! `*at` calls on a parent fd or calls on an fd of the object itself. No host path is ever
//! built by joining strings.

use super::{ImageError, Result};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

pub struct Root {
    fd: OwnedFd,
}

/// Splits a normalized relative path into (parent, base).
pub fn split(p: &[u8]) -> (&[u8], &[u8]) {
    match p.iter().rposition(|&b| b == b'/') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => (&b""[..], p),
    }
}

pub fn join(a: &[u8], b: &[u8]) -> Vec<u8> {
    if a.is_empty() {
        return b.to_vec();
    }
    let mut v = Vec::with_capacity(a.len() + 1 + b.len());
    v.extend_from_slice(a);
    v.push(b'/');
    v.extend_from_slice(b);
    v
}

/// Lexically resolves `.` and `..` with `..` stopping at the root, as RESOLVE_IN_ROOT does.
pub fn clamp(p: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in p.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join(&b'/')
}

pub fn lossy(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

fn in_root(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// openat2 retried on EAGAIN (the kernel asks for a retry when a concurrent rename raced).
fn openat2_retry(dir: BorrowedFd<'_>, p: &[u8], how: OpenHow) -> nix::Result<OwnedFd> {
    let p: &[u8] = if p.is_empty() { b"." } else { p };
    let mut tries = 0;
    loop {
        match openat2(dir, p, how) {
            Err(Errno::EAGAIN) if tries < 64 => tries += 1,
            r => return r,
        }
    }
}

pub fn lstat_at(dir: BorrowedFd<'_>, name: &[u8]) -> nix::Result<Option<FileStat>> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

/// Removes `name` in `dir` (a whole tree if it is a directory), never following symlinks.
pub fn remove_at(dir: BorrowedFd<'_>, name: &[u8]) -> nix::Result<()> {
    let Some(st) = lstat_at(dir, name)? else {
        return Ok(());
    };
    if is_dir(&st) {
        let sub = nix::fcntl::openat(
            dir,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        clear_immutable(sub.as_fd());
        remove_children(sub.as_fd(), &|_| false)?;
        unlinkat(dir, name, UnlinkatFlags::RemoveDir)
    } else {
        unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)
    }
}

/// Names of the entries of a directory (without . and ..).
pub fn list_dir(dir: BorrowedFd<'_>) -> nix::Result<Vec<Vec<u8>>> {
    let fd = nix::fcntl::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut d = nix::dir::Dir::from_fd(fd)?;
    let mut names = Vec::new();
    for e in d.iter() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    Ok(names)
}

/// Removes the children of `dir` for which `keep` is false.
pub fn remove_children(dir: BorrowedFd<'_>, keep: &dyn Fn(&[u8]) -> bool) -> nix::Result<()> {
    for n in list_dir(dir)? {
        if !keep(&n) {
            remove_at(dir, &n)?;
        }
    }
    Ok(())
}

const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
const FS_IOC_SETFLAGS: libc::c_ulong = 0x4008_6602;
pub const FS_IMMUTABLE_FL: libc::c_long = 0x10;

pub fn get_flags(fd: BorrowedFd<'_>) -> Option<libc::c_long> {
    use std::os::fd::AsRawFd;
    let mut flags: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one long through the pointer.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_GETFLAGS, &mut flags) };
    (r == 0).then_some(flags)
}

pub fn set_flags(fd: BorrowedFd<'_>, flags: libc::c_long) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: FS_IOC_SETFLAGS reads one long through the pointer.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_SETFLAGS, &flags) };
    Errno::result(r).map(drop)
}

/// Clears FS_IMMUTABLE_FL where it is set (a read-only image's root), best effort.
pub fn clear_immutable(fd: BorrowedFd<'_>) {
    if let Some(f) = get_flags(fd)
        && f & FS_IMMUTABLE_FL != 0
    {
        let _ = set_flags(fd, f & !FS_IMMUTABLE_FL);
    }
}

impl Root {
    pub fn new(fd: OwnedFd) -> Root {
        Root { fd }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Resolves a directory inside the root (an O_PATH fd usable as a dirfd).
    pub fn resolve_dir(&self, p: &[u8]) -> nix::Result<OwnedFd> {
        openat2_retry(
            self.fd.as_fd(),
            p,
            in_root(OFlag::O_PATH | OFlag::O_DIRECTORY),
        )
    }

    /// Opens a directory inside the root for reading and metadata changes; the final component
    /// is not followed (a symlink there gives ELOOP).
    pub fn open_dir_nofollow(&self, p: &[u8]) -> nix::Result<OwnedFd> {
        openat2_retry(
            self.fd.as_fd(),
            p,
            in_root(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW),
        )
    }

    /// Opens a regular file inside the root for reading (symlinks followed inside the root).
    pub fn open_file(&self, p: &[u8]) -> nix::Result<OwnedFd> {
        openat2_retry(
            self.fd.as_fd(),
            p,
            in_root(OFlag::O_RDONLY | OFlag::O_NONBLOCK),
        )
    }

    /// Resolves directory `p`, creating missing components (mode 0755) with mkdirat on the
    /// resolved parent. A component that exists and is not a directory is an error, as in tar.
    pub fn mkdir_all(&self, p: &[u8], depth: usize) -> Result<OwnedFd> {
        match self.resolve_dir(p) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) if !p.is_empty() && depth < 4096 => {}
            Err(Errno::ENOENT) if !p.is_empty() => {
                return Err(ImageError::entry(p, "too many levels of symbolic links"));
            }
            Err(Errno::ENOTDIR) => {
                return Err(ImageError::entry(p, "a parent is not a directory"));
            }
            Err(e) => return Err(ImageError::entry(p, format!("resolving: {e}"))),
        }
        let (parent, base) = split(p);
        let pfd = self.mkdir_all(parent, depth + 1)?;
        match mkdirat(pfd.as_fd(), base, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(ImageError::entry(p, format!("creating directory: {e}"))),
        }
        match self.resolve_dir(p) {
            Ok(fd) => Ok(fd),
            Err(Errno::ENOENT) => {
                // a symlink to a directory that does not exist yet: create the target, resolved
                // as the kernel resolves it here (inside the root), then try again
                let target = nix::fcntl::readlinkat(pfd.as_fd(), base)
                    .map_err(|_| ImageError::entry(p, "a parent is missing"))?;
                let t = target.as_encoded_bytes();
                let joined = if t.starts_with(b"/") {
                    t.to_vec()
                } else {
                    join(parent, t)
                };
                let clamped = clamp(&joined);
                // each symlink hop counts 100 (components count 1): about 30 hops at most
                if depth > 3000 {
                    return Err(ImageError::entry(p, "too many levels of symbolic links"));
                }
                self.mkdir_all(&clamped, depth + 100)?;
                self.resolve_dir(p)
                    .map_err(|e| ImageError::entry(p, format!("resolving: {e}")))
            }
            Err(Errno::ENOTDIR) => Err(ImageError::entry(p, "a parent is not a directory")),
            Err(e) => Err(ImageError::entry(p, format!("resolving: {e}"))),
        }
    }
}
