//! Typed messages between the supervisor and the container's init, over a SOCK_SEQPACKET pair:
//! one datagram per message, JSON-encoded, with the pty master passed as SCM_RIGHTS.
//! The child's end is close-on-exec, so end-of-file after `Go` means the payload was executed.

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use serde::{Deserialize, Serialize};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

#[derive(Debug, Serialize, Deserialize)]
pub enum ToParent {
    /// The pty master follows as an fd in the same datagram.
    PtyMaster,
    /// The container's end of /run/host/notify follows as an fd (booted systems).
    Notify,
    /// The file system is set up (user namespace): lock its mounts (lock.rs).
    LockMounts,
    /// Setup or exec failed; `code` is the exit status berth should report.
    Failed { code: u8, msg: String },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum ToChild {
    /// The uid/gid maps are written (and the tree idmapped or chowned): become root in the
    /// user namespace and set up the file system.
    Mapped,
    /// The supervisor has placed the container (cgroup, registration): go on to exec.
    Go,
    /// A locked copy of the container's mount namespace follows as an fd: join it.
    Locked,
}

pub struct Channel(OwnedFd);

pub fn pair() -> nix::Result<(Channel, Channel)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    Ok((Channel(a), Channel(b)))
}

impl Channel {
    pub fn send<T: Serialize>(&self, msg: &T, fd: Option<RawFd>) -> nix::Result<()> {
        let data = serde_json::to_vec(msg).expect("messages serialize");
        let iov = [IoSlice::new(&data)];
        let fds = fd.map(|f| [f]);
        let cmsg: Vec<ControlMessage> = fds.iter().map(|f| ControlMessage::ScmRights(f)).collect();
        sendmsg::<()>(
            self.0.as_raw_fd(),
            &iov,
            &cmsg,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )?;
        Ok(())
    }

    /// `Ok(None)` at end of file: the peer closed its end (exec'd or died).
    pub fn recv<T: for<'de> Deserialize<'de>>(&self) -> nix::Result<Option<(T, Option<OwnedFd>)>> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut cmsg_buf = nix::cmsg_space!([RawFd; 1]);
        let (n, fd) = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = loop {
                match recvmsg::<()>(
                    self.0.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg_buf),
                    MsgFlags::MSG_CMSG_CLOEXEC,
                ) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    other => break other?,
                }
            };
            let mut fd = None;
            for c in msg.cmsgs()? {
                if let ControlMessageOwned::ScmRights(fds) = c {
                    for f in fds {
                        // SAFETY: the kernel just installed this fd for us.
                        let owned = unsafe { OwnedFd::from_raw_fd(f) };
                        fd.get_or_insert(owned);
                    }
                }
            }
            (msg.bytes, fd)
        };
        if n == 0 {
            return Ok(None);
        }
        let msg = serde_json::from_slice(&buf[..n]).map_err(|_| nix::errno::Errno::EBADMSG)?;
        Ok(Some((msg, fd)))
    }
}
