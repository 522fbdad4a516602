//! Thin, safe wrappers over the Linux system calls nix does not cover: clone3, openat2, the
//! new mount API (open_tree, move_mount, mount_setattr), pidfd_send_signal, close_range.
//! Each returns `nix::Result` so callers handle errors the same way everywhere.

use nix::errno::Errno;
use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

fn check(ret: libc::c_long) -> nix::Result<libc::c_long> {
    if ret < 0 { Err(Errno::last()) } else { Ok(ret) }
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// What clone3 returned: in the parent the child's pid and a pidfd for it.
pub enum Forked {
    Parent { pid: libc::pid_t, pidfd: OwnedFd },
    Child,
}

/// clone3 without CLONE_VM: fork semantics (a copy-on-write copy of this single-threaded
/// process) plus new namespaces, a pidfd, and optionally birth inside a cgroup.
///
/// # Safety
/// The caller must be single-threaded, as for fork(2): the child only has the calling thread.
pub unsafe fn clone3(flags: u64, cgroup: Option<BorrowedFd<'_>>) -> nix::Result<Forked> {
    let mut pidfd: RawFd = -1;
    let mut args = CloneArgs {
        flags: flags | libc::CLONE_PIDFD as u64,
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd.as_raw_fd() as u64;
    }
    // SAFETY: args is a valid clone_args; the caller guarantees fork-safety.
    let ret = check(unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    })?;
    if ret == 0 {
        Ok(Forked::Child)
    } else {
        Ok(Forked::Parent {
            pid: ret as libc::pid_t,
            // SAFETY: the kernel stored a fresh pidfd for us.
            pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
        })
    }
}

pub const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
pub const RESOLVE_IN_ROOT: u64 = 0x10;

fn openat2(
    dirfd: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_int,
    resolve: u64,
) -> nix::Result<OwnedFd> {
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve,
    };
    // SAFETY: plain syscall with valid pointers; the returned fd is owned by us.
    unsafe {
        let fd = check(libc::syscall(
            libc::SYS_openat2,
            dirfd.as_raw_fd(),
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        ))?;
        Ok(OwnedFd::from_raw_fd(fd as RawFd))
    }
}

/// openat2 with RESOLVE_IN_ROOT: `path` is resolved as if `root` were "/", so neither "..",
/// absolute names nor symlinks inside an untrusted tree can reach outside it.
pub fn open_in_root(root: BorrowedFd<'_>, path: &CStr, flags: libc::c_int) -> nix::Result<OwnedFd> {
    openat2(root, path, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
}

pub const RESOLVE_NO_SYMLINKS: u64 = 0x04;
pub const RESOLVE_BENEATH: u64 = 0x08;

/// An O_PATH handle of `path` beneath `root` that follows no symlink at all: for mount points
/// that must be exactly where they are named.
pub fn open_beneath_nosymlinks(root: BorrowedFd<'_>, path: &CStr) -> nix::Result<OwnedFd> {
    let rel = path
        .to_bytes()
        .strip_prefix(b"/")
        .unwrap_or(path.to_bytes());
    let rel = std::ffi::CString::new(rel).map_err(|_| Errno::EINVAL)?;
    openat2(
        root,
        &rel,
        libc::O_PATH | libc::O_DIRECTORY,
        RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    )
}

pub const OPEN_TREE_CLONE: libc::c_uint = 1;
pub const AT_RECURSIVE: libc::c_uint = 0x8000;

/// A detached copy of the mount tree at `path` (or of `dirfd` itself when `path` is empty),
/// to be attached later with [`move_mount`], possibly after pivot_root hid the original.
pub fn open_tree(dirfd: RawFd, path: &CStr, recursive: bool) -> nix::Result<OwnedFd> {
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    if path.is_empty() {
        flags |= libc::AT_EMPTY_PATH as libc::c_uint;
    }
    // SAFETY: plain syscall; the returned fd is owned by us.
    unsafe {
        let fd = check(libc::syscall(
            libc::SYS_open_tree,
            dirfd,
            path.as_ptr(),
            flags,
        ))?;
        Ok(OwnedFd::from_raw_fd(fd as RawFd))
    }
}

const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x04;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

/// Attaches a detached mount (from [`open_tree`]) at the path `target`.
pub fn move_mount(tree: BorrowedFd<'_>, target: &CStr) -> nix::Result<()> {
    // SAFETY: plain syscall with valid C strings.
    unsafe {
        check(libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        ))?;
    }
    Ok(())
}

/// Attaches a detached mount (from [`open_tree`]) onto the directory or file `target` refers
/// to: the destination was resolved safely beforehand, so no path is looked up again here.
pub fn move_mount_to_fd(tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> nix::Result<()> {
    // SAFETY: plain syscall with valid C strings.
    unsafe {
        check(libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        ))?;
    }
    Ok(())
}

pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Sets mount attributes on a (possibly detached) mount tree, recursively when asked: a
/// read-only recursive bind in one call, which the old mount(2) cannot do.
pub fn mount_setattr(tree: BorrowedFd<'_>, set: u64, recursive: bool) -> nix::Result<()> {
    mount_setattr_userns(tree, set, recursive, None)
}

/// As [`mount_setattr`], with the user namespace an idmapped mount maps through.
pub fn mount_setattr_userns(
    tree: BorrowedFd<'_>,
    set: u64,
    recursive: bool,
    userns: Option<BorrowedFd<'_>>,
) -> nix::Result<()> {
    setattr(
        tree,
        &MountAttr {
            attr_set: set,
            attr_clr: 0,
            propagation: 0,
            userns_fd: userns.map(|f| f.as_raw_fd() as u64).unwrap_or(0),
        },
        recursive,
    )
}

/// Makes a (possibly detached) mount tree a slave: a clone from open_tree is a peer of the
/// mount it was taken from, so what is mounted below it would propagate back there; as a
/// slave it still receives the source's new mounts but sends none.
pub fn mount_make_slave(tree: BorrowedFd<'_>, recursive: bool) -> nix::Result<()> {
    setattr(
        tree,
        &MountAttr {
            attr_set: 0,
            attr_clr: 0,
            propagation: libc::MS_SLAVE,
            userns_fd: 0,
        },
        recursive,
    )
}

fn setattr(tree: BorrowedFd<'_>, attr: &MountAttr, recursive: bool) -> nix::Result<()> {
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: plain syscall with a valid attribute struct.
    unsafe {
        check(libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            flags,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        ))?;
    }
    Ok(())
}

/// Sends a signal through a pidfd: never hits a recycled pid.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: libc::c_int) -> nix::Result<()> {
    // SAFETY: plain syscall.
    unsafe {
        check(libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        ))?;
    }
    Ok(())
}

const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// Marks every fd from `first` up close-on-exec, so that only 0-2 survive into the payload
/// while the sync socket still reports a failed exec.
pub fn cloexec_from(first: libc::c_uint) -> nix::Result<()> {
    // SAFETY: plain syscall.
    unsafe {
        check(libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        ))?;
    }
    Ok(())
}

const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;

/// A new, detached file system instance (fsopen, fsconfig, fsmount): a mount that exists only
/// as an fd until it is attached, so it can be entered (fchdir) without any path lookup.
pub fn fsmount(fstype: &CStr, options: &[(&CStr, &CStr)], attrs: u64) -> nix::Result<OwnedFd> {
    // SAFETY: plain syscalls with valid C strings; returned fds are owned by us.
    unsafe {
        let fs = OwnedFd::from_raw_fd(check(libc::syscall(
            libc::SYS_fsopen,
            fstype.as_ptr(),
            libc::FSOPEN_CLOEXEC,
        ))? as RawFd);
        for (k, v) in options {
            check(libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_SET_STRING,
                k.as_ptr(),
                v.as_ptr(),
                0,
            ))?;
        }
        check(libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        ))?;
        let m = check(libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            libc::FSMOUNT_CLOEXEC,
            attrs,
        ))?;
        Ok(OwnedFd::from_raw_fd(m as RawFd))
    }
}
