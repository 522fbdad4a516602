//! The container's console: a pty from the container's own devpts instance (so the payload
//! never holds a host terminal it could push input into with TIOCSTI), bound to /dev/console
//! and used as the payload's stdio. The master goes to the supervisor, which relays it.

use super::error::{Ctx, SetupError};
use nix::fcntl::{OFlag, open};
use nix::mount::{MsFlags, mount};
use nix::pty::unlockpt;
use nix::sys::stat::Mode;
use nix::sys::termios::{self, SetArg, Termios};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};

/// In the container, after devpts is mounted: returns the master; the slave becomes our
/// controlling terminal and fds 0-2.
pub fn open_in_container() -> Result<OwnedFd, SetupError> {
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .ctx("opening /dev/ptmx")?;
    unlockpt(&master).ctx("unlocking the pty")?;
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one unsigned int.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) } < 0 {
        return Err(SetupError::Sys {
            what: "reading the pty number".into(),
            source: nix::errno::Errno::last(),
        });
    }
    let slave_path = format!("/dev/pts/{n}");
    let slave = open(
        slave_path.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(format!("opening {slave_path}"))?;
    // Size the pty before the payload can look: fd 0 is still berth's own stdin here.
    // SAFETY: fd 0 is open for the life of the process.
    copy_winsize(unsafe { BorrowedFd::borrow_raw(0) }, slave.as_fd());
    std::fs::write("/dev/console", "").ctx("creating /dev/console")?;
    mount(
        Some(slave_path.as_str()),
        "/dev/console",
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .ctx("binding the pty onto /dev/console")?;
    for fd in 0..=2 {
        // SAFETY: dup2 onto 0-2 of this process, which we are replacing on purpose.
        if unsafe { libc::dup2(slave.as_raw_fd(), fd) } < 0 {
            return Err(SetupError::Sys {
                what: "attaching the console to stdio".into(),
                source: nix::errno::Errno::last(),
            });
        }
    }
    drop(slave);
    // SAFETY: TIOCSCTTY on our own fd 0, we are a session leader without a terminal.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        return Err(SetupError::Sys {
            what: "acquiring the controlling terminal".into(),
            source: nix::errno::Errno::last(),
        });
    }
    // SAFETY: PtyMaster owns the fd; we hand it over as an OwnedFd.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(master.into_raw_fd()) })
}

/// Host terminal in raw mode for the relay; restored on drop, also on errors.
pub struct RawMode {
    fd: i32,
    saved: Termios,
}

impl RawMode {
    pub fn enter(fd: BorrowedFd<'_>) -> Option<RawMode> {
        let saved = termios::tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode {
            fd: fd.as_raw_fd(),
            saved,
        })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: the fd is our stdin, open for the whole process lifetime.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let _ = termios::tcsetattr(fd, SetArg::TCSADRAIN, &self.saved);
    }
}

/// Copies the window size of berth's terminal to the container's pty.
pub fn copy_winsize(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    // SAFETY: winsize is plain data, read and written by the two ioctls.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(from.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(to.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

/// An fd of the pty's slave end, opened through the master (TIOCGPTPEER): no path lookup in
/// the container's devpts, which the supervisor cannot see.
pub fn peer(master: BorrowedFd<'_>) -> Option<OwnedFd> {
    const TIOCGPTPEER: libc::c_ulong = 0x5441;
    // SAFETY: TIOCGPTPEER returns a new fd or -1; we take ownership of a valid one.
    let fd = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    (fd >= 0).then(|| unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

pub fn is_tty(fd: BorrowedFd<'_>) -> bool {
    nix::unistd::isatty(fd.as_fd()).unwrap_or(false)
}
