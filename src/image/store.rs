//! The image store: a directory (default /var/lib/machines) holding one plain directory per
//! image, so machinectl's image verbs see them, and berth's metadata beside the trees in
//! `.berth/NAME.json` (never inside a tree).
//!
//! Imports are atomic: the tree is built in `.#berth-import-NAME-RANDOM` (machinectl hides
//! dot names) while `.#berth-import-NAME-RANDOM.lock` is flock()ed by the importing process,
//! and renamed to NAME only on success. A temporary whose lock can be taken belongs to a dead
//! importer (SIGKILL, power loss) and is removed by the next import or `berth images`.
//! Read-only images get FS_IMMUTABLE_FL on their root directory, as machinectl's
//! `read-only` does for directory images (recorded in the metadata too, for file systems
//! without the flag).

use super::lock;
use super::root::{self, Root};
use super::{ImageError, Result};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags, open, openat, renameat2};
use nix::sys::stat::{FileStat, Mode, fstatat, mkdirat};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

pub const DEFAULT_STORE: &str = "/var/lib/machines";
const META_DIR: &str = ".berth";
const TMP_PREFIX: &str = ".#berth-import-";
const DEL_PREFIX: &str = ".#berth-remove-";
const RAW_SUFFIX: &str = ".raw";

fn is_reg(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Metadata {
    pub name: String,
    /// "tar" or "oci".
    pub kind: String,
    /// What was imported, as given on the command line.
    pub source: String,
    /// Seconds since the epoch.
    pub created: u64,
    pub read_only: bool,
    /// Bytes of file content written.
    pub size: u64,
    pub files: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diff_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_digest: Option<String>,
    /// The OCI image config, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
}

/// One row of `berth images`.
#[derive(Debug, Clone, Serialize)]
pub struct ImageInfo {
    pub name: String,
    pub kind: String,
    pub source: String,
    pub size: Option<u64>,
    pub created: Option<u64>,
    pub read_only: bool,
}

pub struct Store {
    path: PathBuf,
    fd: OwnedFd,
    meta: OwnedFd,
}

/// Image names: what machinectl accepts as a machine name (a valid hostname, at most 64
/// characters), so the name is also usable with -M.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && !name.starts_with('-')
        && !name.ends_with('.')
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(ImageError::invalid(format!(
            "invalid image name {:?}: use 1-64 letters, digits, '-', '_' and '.' (not leading)",
            super::digest::truncate(name, 80)
        )))
    }
}

fn ioerr(ctx: impl Into<String>, e: impl Into<std::io::Error>) -> ImageError {
    ImageError::Io {
        ctx: ctx.into(),
        err: e.into(),
    }
}

fn random_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let x = t ^ ((std::process::id() as u64) << 32) ^ N.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}", x.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// flock(2) on a file; Ok(false) if another process holds it and `wait` is false.
fn flock(f: BorrowedFd<'_>, wait: bool) -> Result<bool> {
    let op = libc::LOCK_EX | if wait { 0 } else { libc::LOCK_NB };
    loop {
        // SAFETY: plain syscall on a valid fd.
        let r = unsafe { libc::flock(f.as_raw_fd(), op) };
        if r == 0 {
            return Ok(true);
        }
        match Errno::last() {
            Errno::EINTR => continue,
            Errno::EWOULDBLOCK => return Ok(false),
            e => return Err(ioerr("locking", e)),
        }
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An import in progress: the temporary tree and its lock. Dropping it without
/// [`Pending::commit`] removes the tree.
pub struct Pending<'s> {
    store: &'s Store,
    pub name: String,
    tmp: String,
    lock: Option<File>,
    root: Option<Root>,
    /// The lock on the image a `--force` import replaced, held until its tree is deleted.
    replaced: Option<lock::ImageLock>,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
        if !path.exists() {
            std::fs::create_dir_all(path)
                .map_err(|e| ioerr(format!("creating the store {}", path.display()), e))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| ioerr(format!("creating the store {}", path.display()), e))?;
        }
        let fd = open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ioerr(format!("opening the store {}", path.display()), e))?;
        match mkdirat(fd.as_fd(), META_DIR, Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(ioerr(format!("creating {}/{META_DIR}", path.display()), e)),
        }
        let meta = openat(
            fd.as_fd(),
            META_DIR,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ioerr(format!("opening {}/{META_DIR}", path.display()), e))?;
        Ok(Store {
            path: path.to_path_buf(),
            fd,
            meta,
        })
    }

    fn store_lock(&self) -> Result<File> {
        let fd = openat(
            self.meta.as_fd(),
            "lock",
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| ioerr("opening the store lock", e))?;
        let f = File::from(fd);
        flock(f.as_fd(), true)?;
        Ok(f)
    }

    fn exists(&self, name: &str) -> Result<bool> {
        match fstatat(self.fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(ioerr(format!("looking up {name}"), e)),
        }
    }

    /// The stat of directory image `name`, None if there is no such directory.
    fn dir_stat(&self, name: &str) -> Result<Option<FileStat>> {
        match fstatat(self.fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if root::is_dir(&st) => Ok(Some(st)),
            Ok(_) | Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(ioerr(format!("looking up {name}"), e)),
        }
    }

    /// The stat of raw disk image `name` (the regular file NAME.raw), as machinectl keeps them.
    fn raw(&self, name: &str) -> Result<Option<FileStat>> {
        match fstatat(
            self.fd.as_fd(),
            format!("{name}{RAW_SUFFIX}").as_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) if is_reg(&st) => Ok(Some(st)),
            Ok(_) | Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(ioerr(format!("looking up {name}{RAW_SUFFIX}"), e)),
        }
    }

    /// Raw disk image NAME.raw opened for its inode flags (never following a symlink, never
    /// blocking on a special file), if it can be.
    fn open_raw(&self, name: &str) -> Option<OwnedFd> {
        openat(
            self.fd.as_fd(),
            format!("{name}{RAW_SUFFIX}").as_str(),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok()
    }

    /// Removes temporaries left by dead importers (their lock can be taken). Call with the
    /// store lock held.
    fn clean_stale(&self) -> Result<()> {
        let names = root::list_dir(self.fd.as_fd()).map_err(|e| ioerr("listing the store", e))?;
        for n in &names {
            let Ok(n) = std::str::from_utf8(n) else {
                continue;
            };
            if n.ends_with(".lck") {
                // an image's lock file (lock.rs), never a temporary
                continue;
            }
            if n.starts_with(DEL_PREFIX) {
                let _ = root::remove_at(self.fd.as_fd(), n.as_bytes());
                continue;
            }
            if !n.starts_with(TMP_PREFIX) || n.ends_with(".lock") {
                continue;
            }
            let lock = format!("{n}.lock");
            let held = match openat(
                self.fd.as_fd(),
                lock.as_str(),
                OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => {
                    let f = File::from(fd);
                    let got = flock(f.as_fd(), false)?;
                    (!got).then_some(f)
                }
                Err(_) => None,
            };
            if held.is_none() {
                let _ = root::remove_at(self.fd.as_fd(), n.as_bytes());
                let _ = nix::unistd::unlinkat(
                    self.fd.as_fd(),
                    lock.as_str(),
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                );
            }
        }
        // lock files whose tree is gone and whose owner is dead
        for n in &names {
            let Ok(n) = std::str::from_utf8(n) else {
                continue;
            };
            if let Some(tree) = n
                .strip_prefix(TMP_PREFIX)
                .and_then(|s| s.strip_suffix(".lock"))
                && !self.exists(&format!("{TMP_PREFIX}{tree}"))?
                && let Ok(fd) = openat(
                    self.fd.as_fd(),
                    n,
                    OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                && flock(fd.as_fd(), false)?
            {
                let _ = nix::unistd::unlinkat(
                    self.fd.as_fd(),
                    n,
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                );
            }
        }
        Ok(())
    }

    /// Starts an import of NAME: refuses an existing name unless `force`, cleans stale
    /// temporaries, creates the locked temporary tree.
    pub fn begin(&self, name: &str, force: bool) -> Result<Pending<'_>> {
        validate_name(name)?;
        if self.raw(name)?.is_some() {
            return Err(ImageError::invalid(format!(
                "image {name} exists as a raw disk image ({name}.raw): remove it first"
            )));
        }
        if !force && self.exists(name)? {
            return Err(ImageError::Exists(name.to_string()));
        }
        if force && let Some(st) = self.dir_stat(name)? {
            // fail before the work, not after it: a running container keeps its tree
            drop(lock::exclusive(self.fd.as_fd(), name, name, &st)?);
        }
        let _guard = self.store_lock()?;
        self.clean_stale()?;
        let tmp = format!("{TMP_PREFIX}{name}-{}", random_suffix());
        let lockfd = openat(
            self.fd.as_fd(),
            format!("{tmp}.lock").as_str(),
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| ioerr("creating the import lock", e))?;
        let lock = File::from(lockfd);
        flock(lock.as_fd(), true)?;
        let mut p = Pending {
            store: self,
            name: name.to_string(),
            tmp: tmp.clone(),
            lock: Some(lock),
            root: None,
            replaced: None,
        };
        mkdirat(
            self.fd.as_fd(),
            tmp.as_str(),
            Mode::from_bits_truncate(0o755),
        )
        .map_err(|e| ioerr("creating the temporary import directory", e))?;
        let fd = openat(
            self.fd.as_fd(),
            tmp.as_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ioerr("opening the temporary import directory", e))?;
        p.root = Some(Root::new(fd));
        Ok(p)
    }

    fn write_meta(&self, m: &Metadata) -> Result<()> {
        let tmp = format!("{}.json.tmp-{}", m.name, random_suffix());
        let fd = openat(
            self.meta.as_fd(),
            tmp.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| ioerr("writing image metadata", e))?;
        let mut f = File::from(fd);
        let body = serde_json::to_vec_pretty(m).map_err(|e| ioerr("writing image metadata", e))?;
        f.write_all(&body)
            .and_then(|_| f.sync_all())
            .map_err(|e| ioerr("writing image metadata", e))?;
        renameat2(
            self.meta.as_fd(),
            tmp.as_str(),
            self.meta.as_fd(),
            format!("{}.json", m.name).as_str(),
            RenameFlags::empty(),
        )
        .map_err(|e| ioerr("writing image metadata", e))
    }

    pub fn metadata(&self, name: &str) -> Option<Metadata> {
        let fd = openat(
            self.meta.as_fd(),
            format!("{name}.json").as_str(),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        let mut s = Vec::new();
        use std::io::Read;
        File::from(fd).take(64 << 20).read_to_end(&mut s).ok()?;
        serde_json::from_slice(&s).ok()
    }

    /// The images: every plain directory in the store not starting with a dot, and the raw
    /// disk images (NAME.raw) machinectl keeps there too.
    pub fn list(&self) -> Result<Vec<ImageInfo>> {
        {
            let _guard = self.store_lock()?;
            self.clean_stale()?;
        }
        let mut out = Vec::new();
        let mut raws = Vec::new();
        let mut names =
            root::list_dir(self.fd.as_fd()).map_err(|e| ioerr("listing the store", e))?;
        names.sort();
        for n in names {
            let Ok(n) = String::from_utf8(n) else {
                continue;
            };
            if n.starts_with('.') {
                continue;
            }
            let Ok(st) = fstatat(self.fd.as_fd(), n.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
                continue;
            };
            if is_reg(&st)
                && let Some(stem) = n.strip_suffix(RAW_SUFFIX)
                && validate_name(stem).is_ok()
            {
                raws.push((stem.to_string(), st));
                continue;
            }
            if !root::is_dir(&st) {
                continue;
            }
            let immutable = openat(
                self.fd.as_fd(),
                n.as_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .ok()
            .and_then(|fd| root::get_flags(fd.as_fd()))
            .is_some_and(|f| f & root::FS_IMMUTABLE_FL != 0);
            let m = self.metadata(&n);
            out.push(ImageInfo {
                kind: m.as_ref().map_or("directory".into(), |m| m.kind.clone()),
                source: m.as_ref().map_or(String::new(), |m| m.source.clone()),
                size: m.as_ref().map(|m| m.size),
                created: Some(m.as_ref().map_or(st.st_mtime as u64, |m| m.created)),
                read_only: immutable || m.as_ref().is_some_and(|m| m.read_only),
                name: n,
            });
        }
        // raw disk images (machinectl's NAME.raw), listed so they are not hidden, although
        // berth cannot run them; a directory of the same name is the image -M NAME runs
        for (name, st) in raws {
            if out.iter().any(|i| i.name == name) {
                continue;
            }
            let immutable = self
                .open_raw(name.as_str())
                .and_then(|fd| root::get_flags(fd.as_fd()))
                .is_some_and(|f| f & root::FS_IMMUTABLE_FL != 0);
            out.push(ImageInfo {
                name,
                kind: "raw".into(),
                source: String::new(),
                size: Some(st.st_size as u64),
                created: Some(st.st_mtime as u64),
                // as machinectl: no write bit, or the immutable flag
                read_only: immutable || st.st_mode & 0o222 == 0,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The image's directory, for `berth run -M NAME`.
    pub fn lookup(&self, name: &str) -> Result<PathBuf> {
        validate_name(name)?;
        match fstatat(self.fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if root::is_dir(&st) => Ok(self.path.join(name)),
            Ok(_) => Err(ImageError::invalid(format!(
                "{}/{name} is not a directory",
                self.path.display()
            ))),
            Err(Errno::ENOENT) if self.raw(name)?.is_some() => Err(ImageError::invalid(format!(
                "image {name} is a raw disk image ({}): raw disk images are not supported; use systemd-nspawn -i",
                self.path.join(format!("{name}{RAW_SUFFIX}")).display()
            ))),
            Err(Errno::ENOENT) => Err(ImageError::NotFound(name.to_string())),
            Err(e) => Err(ioerr(format!("looking up {name}"), e)),
        }
    }

    /// Removes an image (read-only ones too, as machinectl does): renamed away atomically
    /// first, then deleted; its metadata goes with it.
    pub fn remove(&self, name: &str) -> Result<()> {
        validate_name(name)?;
        let Some(st) = self.dir_stat(name)? else {
            if let Some(st) = self.raw(name)? {
                return self.remove_raw(name, &st);
            }
            // the error lookup gives (not found, not a directory)
            self.lookup(name)?;
            return Err(ImageError::NotFound(name.to_string()));
        };
        // refused while a container runs it (berth run, nspawn, machinectl hold the lock)
        let _lock = lock::exclusive(self.fd.as_fd(), name, name, &st)?;
        // the name must still be the tree that was locked
        if self
            .dir_stat(name)?
            .is_none_or(|now| now.st_ino != st.st_ino)
        {
            return Err(ImageError::Busy(name.to_string()));
        }
        let del = format!("{DEL_PREFIX}{name}-{}", random_suffix());
        if let Ok(fd) = openat(
            self.fd.as_fd(),
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            root::clear_immutable(fd.as_fd());
        }
        renameat2(
            self.fd.as_fd(),
            name,
            self.fd.as_fd(),
            del.as_str(),
            RenameFlags::RENAME_NOREPLACE,
        )
        .map_err(|e| ioerr(format!("removing {name}"), e))?;
        let _ = nix::unistd::unlinkat(
            self.meta.as_fd(),
            format!("{name}.json").as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
        root::remove_at(self.fd.as_fd(), del.as_bytes())
            .map_err(|e| ioerr(format!("removing {name}"), e))
    }

    /// Removes raw disk image NAME.raw, as `machinectl remove` does (unless something holds
    /// its lock: a machine running it).
    fn remove_raw(&self, name: &str, st: &FileStat) -> Result<()> {
        let file = format!("{name}{RAW_SUFFIX}");
        let _lock = lock::exclusive(self.fd.as_fd(), &file, name, st)?;
        if self.raw(name)?.is_none_or(|now| now.st_ino != st.st_ino) {
            return Err(ImageError::Busy(name.to_string()));
        }
        if let Some(fd) = self.open_raw(name) {
            root::clear_immutable(fd.as_fd());
        }
        nix::unistd::unlinkat(
            self.fd.as_fd(),
            file.as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        )
        .map_err(|e| ioerr(format!("removing {file}"), e))
    }
}

impl Pending<'_> {
    pub fn root(&self) -> &Root {
        self.root.as_ref().expect("set in begin")
    }

    /// Publishes the tree under its name (atomically), then its metadata; with `force` an
    /// existing image of that name is replaced.
    pub fn commit(mut self, mut meta: Metadata, force: bool, sync: bool) -> Result<()> {
        let s = self.store;
        // make the data durable before it becomes visible
        if sync {
            // SAFETY: syncfs on a valid fd.
            unsafe { libc::syncfs(self.root().fd().as_raw_fd()) };
        }
        let r = renameat2(
            s.fd.as_fd(),
            self.tmp.as_str(),
            s.fd.as_fd(),
            self.name.as_str(),
            RenameFlags::RENAME_NOREPLACE,
        );
        match r {
            Ok(()) => {}
            Err(Errno::EEXIST) if force => {
                // not under a running container: the old tree stays locked until deleted
                if let Some(st) = s.dir_stat(&self.name)? {
                    self.replaced =
                        Some(lock::exclusive(s.fd.as_fd(), &self.name, &self.name, &st)?);
                }
                if let Ok(fd) = openat(
                    s.fd.as_fd(),
                    self.name.as_str(),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                ) {
                    root::clear_immutable(fd.as_fd());
                }
                renameat2(
                    s.fd.as_fd(),
                    self.tmp.as_str(),
                    s.fd.as_fd(),
                    self.name.as_str(),
                    RenameFlags::RENAME_EXCHANGE,
                )
                .map_err(|e| ioerr(format!("replacing {}", self.name), e))?;
                // the old tree now sits at the temporary name; Drop removes it
            }
            Err(Errno::EEXIST) => return Err(ImageError::Exists(self.name.clone())),
            Err(e) => return Err(ioerr(format!("publishing {}", self.name), e)),
        }
        if meta.read_only {
            let fd = self.root().fd();
            let flags = root::get_flags(fd).unwrap_or(0);
            // metadata alone where the file system has no immutable flag
            let _ = root::set_flags(fd, flags | root::FS_IMMUTABLE_FL);
        }
        meta.name = self.name.clone();
        let res = s.write_meta(&meta);
        // the temporary name is free (or holds the replaced tree): clean it up
        self.root = None;
        res
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.root = None;
        let s = self.store;
        let _ = root::remove_at(s.fd.as_fd(), self.tmp.as_bytes());
        let _ = nix::unistd::unlinkat(
            s.fd.as_fd(),
            format!("{}.lock", self.tmp).as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
        drop(self.replaced.take());
        drop(self.lock.take());
    }
}

/// "2026-12-04 17:18:46" (UTC) from seconds since the epoch.
pub fn format_time(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // civil_from_days (H. Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["debian", "a", "busybox-1.36", "x_y.z"] {
            validate_name(ok).unwrap();
        }
        for bad in [
            "",
            ".x",
            "-x",
            "a/b",
            "..",
            "a..b",
            "x.",
            &"a".repeat(65),
            "a b",
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn time() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00");
        assert_eq!(format_time(1_780_000_000), "2026-05-28 20:26:40");
    }
}
