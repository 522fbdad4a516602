//! Image locks, the way systemd-nspawn and machinectl lock an image (systemd's
//! `image_path_lock`), so the three agree: `/run/systemd/nspawn/locks/inode-DEV:INO` names the
//! tree by device and inode wherever it is reached from, and `.#NAME.lck` beside an image in the
//! store covers it too. Both are open-file-description locks (`F_OFD_SETLK`), as systemd takes
//! them.
//!
//! `berth run` holds a shared lock on its tree (the global one) for as long as the container
//! runs; `berth remove` and `import --force` take both exclusively and refuse a busy image,
//! as `machinectl remove` refuses an image a running machine uses. nspawn takes the lock
//! exclusively for a writable tree, so neither starts on a tree the other runs writable.

use super::{ImageError, Result};
use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{FileStat, Mode, fstat};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

pub const LOCK_DIR: &str = "/run/systemd/nspawn/locks";

/// One lock file held; an exclusive holder removes the file when it lets go (so lock files do
/// not pile up), a shared one when it can become exclusive, as systemd does.
struct Held {
    dir: OwnedFd,
    name: String,
    file: File,
    exclusive: bool,
}

/// The locks held on one image; released on drop.
pub struct ImageLock {
    held: Vec<Held>,
}

fn ofd_lock(fd: BorrowedFd<'_>, kind: libc::c_int) -> nix::Result<()> {
    let fl = libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    // SAFETY: fcntl with a valid fd and a pointer to an initialized struct flock.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    Errno::result(r).map(drop)
}

/// Creates (or opens) `dir/name` and locks it without waiting. Ok(None) when the lock is held
/// by someone else. A lock file unlinked by its previous holder between our open and our lock
/// is opened again.
fn lock_file(dir: OwnedFd, name: &str, exclusive: bool) -> nix::Result<Option<Held>> {
    loop {
        let fd = openat(
            dir.as_fd(),
            name,
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
            Mode::from_bits_truncate(0o600),
        )?;
        let kind = if exclusive {
            libc::F_WRLCK
        } else {
            libc::F_RDLCK
        };
        match ofd_lock(fd.as_fd(), kind) {
            Ok(()) => {}
            Err(Errno::EAGAIN | Errno::EACCES) => return Ok(None),
            Err(e) => return Err(e),
        }
        if fstat(&fd)?.st_nlink == 0 {
            continue;
        }
        return Ok(Some(Held {
            dir,
            name: name.to_string(),
            file: File::from(fd),
            exclusive,
        }));
    }
}

fn global_dir() -> nix::Result<OwnedFd> {
    std::fs::create_dir_all(LOCK_DIR)
        .map_err(|e| e.raw_os_error().map_or(Errno::EIO, Errno::from_raw))?;
    nix::fcntl::open(
        LOCK_DIR,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

fn global_name(st: &FileStat) -> String {
    format!("inode-{}:{}", st.st_dev, st.st_ino)
}

impl Drop for ImageLock {
    fn drop(&mut self) {
        for h in self.held.drain(..).rev() {
            let mine = h.exclusive || ofd_lock(h.file.as_fd(), libc::F_WRLCK).is_ok();
            if mine {
                let _ = nix::unistd::unlinkat(
                    h.dir.as_fd(),
                    h.name.as_str(),
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                );
            }
        }
    }
}

/// Locks image `name` (store entry `entry`: NAME, or NAME.raw) exclusively, the global and
/// the local lock, for removal or replacement; `st` is the entry's stat. Busy if a container
/// runs it.
pub fn exclusive(
    store: BorrowedFd<'_>,
    entry: &str,
    name: &str,
    st: &FileStat,
) -> Result<ImageLock> {
    let err = |e: Errno| ImageError::io(format!("locking image {name}"), e.into());
    let mut lock = ImageLock { held: Vec::new() };
    let local = store
        .try_clone_to_owned()
        .map_err(|e| ImageError::io(format!("locking image {name}"), e))?;
    for (dir, file) in [
        (global_dir().map_err(err)?, global_name(st)),
        (local, format!(".#{entry}.lck")),
    ] {
        match lock_file(dir, &file, true).map_err(err)? {
            Some(h) => lock.held.push(h),
            None => return Err(ImageError::Busy(name.to_string())),
        }
    }
    Ok(lock)
}

/// The shared lock `berth run` holds on its tree for the container's lifetime. None where no
/// lock can be taken (the host's root, an unwritable /run); an error if the tree is locked
/// exclusively (being removed or replaced, or run writable by systemd-nspawn).
pub fn for_run(tree: &Path) -> Result<Option<ImageLock>> {
    if tree == Path::new("/") {
        return Ok(None);
    }
    let stat = |p: &Path| nix::sys::stat::stat(p);
    let st = stat(tree).map_err(|e| ImageError::io(tree.display().to_string(), e.into()))?;
    // Where the lock directory cannot be written (an unwritable /run), no lock.
    let failed = |e: Errno| match e {
        Errno::EACCES | Errno::EPERM | Errno::EROFS => Ok(None),
        e => Err(ImageError::io(
            format!("locking {}", tree.display()),
            e.into(),
        )),
    };
    let dir = match global_dir() {
        Ok(d) => d,
        Err(e) => return failed(e),
    };
    let busy = || {
        ImageError::invalid(format!(
            "{} is busy: it is being removed or replaced, or another program (systemd-nspawn) runs it writable",
            tree.display()
        ))
    };
    let held = match lock_file(dir, &global_name(&st), false) {
        Ok(Some(h)) => h,
        Ok(None) => return Err(busy()),
        Err(e) => return failed(e),
    };
    let lock = ImageLock { held: vec![held] };
    // the path must still lead to the tree that was locked (not one removed meanwhile)
    match stat(tree) {
        Ok(now) if now.st_dev == st.st_dev && now.st_ino == st.st_ino => Ok(Some(lock)),
        _ => Err(busy()),
    }
}
