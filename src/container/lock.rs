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
use nix::sched::{CloneFlags, setns, unshare};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

/// A mount namespace owned by the container's user namespace holding a locked copy of the
/// mount namespace of `pid` (the container's init, its setup done). The caller passes it to
/// the container, which joins it with setns(2).
pub fn locked_copy(pid: libc::pid_t) -> Result<(OwnedFd, Leftovers), LaunchError> {
    let open = |ns: &str| -> Result<OwnedFd, LaunchError> {
        std::fs::File::open(format!("/proc/{pid}/ns/{ns}"))
            .map(OwnedFd::from)
            .map_err(|e| LaunchError::Sys {
                what: "opening the container's namespaces",
                source: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            })
    };
    let (mnt, user) = (open("mnt")?, open("user")?);
    // The helper's /proc, opened here: once it has entered the container's mount namespace,
    // "/proc" is the container's, where the helper has no pid.
    let proc_dir = nix::fcntl::open(
        "/proc",
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(sys_err("opening /proc"))?;
    let mut job = Job {
        mnt: mnt.as_raw_fd(),
        user: user.as_raw_fd(),
        proc_dir: proc_dir.as_raw_fd(),
        result: Err(("the mount helper never ran", nix::errno::Errno::ECHILD)),
    };
    // The helper shares our memory and fd table (CLONE_VM | CLONE_FILES) and we sleep until
    // it has exited (CLONE_VFORK): no copy of the supervisor is made, its answer is written
    // straight into `job`, and the fd it opens is ours. It has its own fs_struct and is its
    // own thread group, as setns(2) into a mount and a user namespace requires.
    let mut stack = vec![0u8; 256 * 1024];
    // SAFETY: the stack outlives the helper (we are suspended until it exits); `helper`
    // touches only `job`, which outlives it too; SIGCHLD makes it a waitable child.
    let helper = unsafe {
        libc::clone(
            helper,
            stack.as_mut_ptr().add(stack.len()).cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_FILES | libc::SIGCHLD,
            (&mut job as *mut Job).cast(),
        )
    };
    if helper < 0 {
        return Err(sys_err("starting the mount helper")(
            nix::errno::Errno::last(),
        ));
    }
    // Past CLONE_VFORK the helper no longer runs in our memory; it may still be exiting.
    drop(stack);
    let rest = Leftovers { helper, _mnt: mnt };
    match job.result {
        // SAFETY: the helper opened this fd in our shared fd table and handed it to us alone.
        Ok(fd) => Ok((unsafe { OwnedFd::from_raw_fd(fd) }, rest)),
        Err((step, source)) => Err(LaunchError::Lock {
            step: step.into(),
            source,
        }),
    }
}

/// What is left once the container has joined the locked copy; dropped after it has started
/// its payload. Freeing a mount namespace waits for an RCU grace period (milliseconds on a
/// busy host): holding the unlocked original here keeps the container's setns from paying
/// for it, and the helper, which frees its intermediate copy on exit, is reaped only then.
pub struct Leftovers {
    helper: libc::pid_t,
    _mnt: OwnedFd,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(self.helper), None);
    }
}

type Step = (&'static str, nix::errno::Errno);

struct Job {
    mnt: RawFd,
    user: RawFd,
    proc_dir: RawFd,
    result: Result<RawFd, Step>,
}

extern "C" fn helper(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the Job locked_copy passed, alive until we have exited.
    let job = unsafe { &mut *arg.cast::<Job>() };
    // SAFETY: the fds are open in the (shared) fd table for as long as we run.
    let (mnt, user, proc_dir) = unsafe {
        (
            BorrowedFd::borrow_raw(job.mnt),
            BorrowedFd::borrow_raw(job.user),
            BorrowedFd::borrow_raw(job.proc_dir),
        )
    };
    job.result = copy_locked(mnt, user, proc_dir).map(IntoRawFd::into_raw_fd);
    0
}

/// In the helper: the two copies, then a handle on the result.
fn copy_locked(mnt: BorrowedFd, user: BorrowedFd, proc_dir: BorrowedFd) -> Result<OwnedFd, Step> {
    setns(mnt, CloneFlags::CLONE_NEWNS)
        .map_err(|e| ("entering the container's mount namespace", e))?;
    // Owned by the host's user namespace: a copy the container could not have made.
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| ("copying the mount namespace", e))?;
    setns(user, CloneFlags::CLONE_NEWUSER)
        .map_err(|e| ("entering the container's user namespace", e))?;
    // Owned by the container's user namespace, copied from one the host owns: locked.
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| ("locking the container's mounts", e))?;
    nix::fcntl::openat(
        proc_dir,
        "thread-self/ns/mnt",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| ("opening the locked mount namespace", e))
}
