//! Locking a user-namespaced container's mounts, so that its root cannot undo them.
//!
//! The kernel locks mounts (MNT_LOCKED: no unmount revealing what is beneath; MNT_LOCK_*: no
//! clearing ro/nosuid/nodev/noexec) only when it copies a mount namespace into one owned by a
//! different, less privileged user namespace. The container's init sets up its file system in
//! a mount namespace its own user namespace owns, so its /sys, /proc/sys and /proc masks would
//! stay remountable and unmountable by the container's root. nspawn avoids that with an outer
//! child in the host's user namespace that mounts before the inner child enters the user
//! namespace. berth keeps its one-child model and does the copy afterwards instead: a helper
//! in the host's user namespace enters the finished mount namespace, copies it into one the
//! host owns, then enters the container's user namespace and copies it again. That last copy
//! crosses user namespaces, so every mount in it is locked; the container's init joins it.

use super::{LaunchError, sys_err};
use crate::sys::{self, Forked};
use nix::sched::{CloneFlags, setns, unshare};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// A mount namespace owned by the container's user namespace holding a locked copy of the
/// mount namespace of `pid` (the container's init, its setup done). The caller passes it to
/// the container, which joins it with setns(2).
pub fn locked_copy(pid: libc::pid_t) -> Result<OwnedFd, LaunchError> {
    let open = |ns: &str| -> Result<OwnedFd, LaunchError> {
        std::fs::File::open(format!("/proc/{pid}/ns/{ns}"))
            .map(OwnedFd::from)
            .map_err(|e| LaunchError::Sys {
                what: "opening the container's namespaces",
                source: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            })
    };
    let (mnt, user) = (open("mnt")?, open("user")?);
    // The helper's own /proc, opened here: once it has entered the container's mount
    // namespace, "/proc" is the container's, where the helper has no pid.
    let proc_dir = open_dir("/proc")?;
    let (ours, theirs) = super::msg::pair().map_err(sys_err("creating the lock channel"))?;

    // SAFETY: the supervisor is single-threaded; the helper only makes syscalls and exits.
    let forked = unsafe { sys::clone3(0, None) }.map_err(sys_err("forking the mount helper"))?;
    let helper_pidfd = match forked {
        Forked::Child => {
            drop(ours);
            let reply = match copy_locked(&mnt, &user, &proc_dir) {
                Ok(fd) => theirs.send(&Reply::Done, Some(fd.as_raw_fd())),
                Err((step, e)) => theirs.send(
                    &Reply::Failed {
                        step: step.into(),
                        errno: e as i32,
                    },
                    None,
                ),
            };
            // SAFETY: _exit skips the supervisor's destructors and atexit handlers.
            unsafe { libc::_exit(reply.is_err() as i32) }
        }
        Forked::Parent { pidfd, .. } => pidfd,
    };
    drop(theirs);
    let answer = ours.recv::<Reply>();
    reap(helper_pidfd);
    match answer {
        Ok(Some((Reply::Done, Some(fd)))) => Ok(fd),
        Ok(Some((Reply::Failed { step, errno }, _))) => Err(LaunchError::Lock {
            step,
            source: nix::errno::Errno::from_raw(errno),
        }),
        _ => Err(LaunchError::Lock {
            step: "the mount helper".into(),
            source: nix::errno::Errno::EPIPE,
        }),
    }
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum Reply {
    /// The locked mount namespace follows as an fd.
    Done,
    Failed {
        step: String,
        errno: i32,
    },
}

type Step = (&'static str, nix::errno::Errno);

/// In the helper: the two copies, then a handle on the result.
fn copy_locked(mnt: &OwnedFd, user: &OwnedFd, proc_dir: &OwnedFd) -> Result<OwnedFd, Step> {
    setns(mnt, CloneFlags::CLONE_NEWNS)
        .map_err(|e| ("entering the container's mount namespace", e))?;
    // Owned by the host's user namespace: a copy the container could not have made.
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| ("copying the mount namespace", e))?;
    setns(user, CloneFlags::CLONE_NEWUSER)
        .map_err(|e| ("entering the container's user namespace", e))?;
    // Owned by the container's user namespace, copied from one the host owns: locked.
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| ("locking the container's mounts", e))?;
    nix::fcntl::openat(
        proc_dir.as_fd(),
        "thread-self/ns/mnt",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| ("opening the locked mount namespace", e))
}

fn open_dir(path: &str) -> Result<OwnedFd, LaunchError> {
    nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(sys_err("opening /proc"))
}

fn reap(pidfd: OwnedFd) {
    // SAFETY: siginfo_t is plain data; waitid on our own pidfd (P_PIDFD = 3).
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        while libc::waitid(3, pidfd.as_raw_fd() as libc::id_t, &mut info, libc::WEXITED) != 0
            && nix::errno::Errno::last() == nix::errno::Errno::EINTR
        {}
    }
}
