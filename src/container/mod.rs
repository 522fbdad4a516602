//! The launcher: executes a runtime spec. This file is the supervisor (berth's own process);
//! [`child`] is the container's PID 1 until it becomes the payload.
//!
//! Process model (as crun's, no re-exec of berth): one clone3 creates the container's init in
//! all its namespaces at once and hands back a pidfd. The supervisor places it (cgroup,
//! machined), tells it to go on, relays its console and signals, and reports its exit status.

mod caps;
mod child;
mod console;
mod delegate;
mod ephemeral;
mod error;
mod exec;
mod lock;
mod mount;
mod msg;
mod seccomp;
mod stub;
mod userns;

use crate::exit::{self, Coded};
use crate::spec::ext::{Berth, ConsoleMode};
use crate::sys::{self, Forked};
use msg::{ToChild, ToParent};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Spec(#[from] crate::spec::ext::ExtError),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error("{what}: {source}")]
    Sys {
        what: &'static str,
        source: nix::errno::Errno,
    },
    #[error(transparent)]
    Userns(#[from] userns::UsernsSetupError),
    #[error(transparent)]
    Delegate(#[from] delegate::DelegateError),
    #[error("{step}: {source}")]
    Lock {
        step: String,
        source: nix::errno::Errno,
    },
}

fn sys_err(what: &'static str) -> impl FnOnce(nix::errno::Errno) -> LaunchError {
    move |source| LaunchError::Sys { what, source }
}

fn has_ns(spec: &Spec, t: LinuxNamespaceType) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| ns.iter().any(|n| n.typ() == t))
}

fn clone_flags(spec: &Spec) -> u64 {
    let mut flags = 0u64;
    for ns in spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .into_iter()
        .flatten()
    {
        flags |= match ns.typ() {
            LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
            LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
            LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
            LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
            LinuxNamespaceType::Network => libc::CLONE_NEWNET,
            // Created in the same clone: the kernel makes it first and it owns the others.
            LinuxNamespaceType::User => libc::CLONE_NEWUSER,
            // The cgroup namespace is created by the child once it sits in its own cgroup,
            // so that cgroup becomes the root it sees.
            _ => 0,
        } as u64;
    }
    flags
}

/// The signals the supervisor takes through its signalfd (and its helpers keep blocked).
pub const HANDLED_SIGNALS: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGWINCH,
];

/// How the container's init ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Exited(i32),
    Killed(i32),
}

/// Runs the container to completion and returns the exit status berth should report. A
/// booted system that reboots (its init killed by SIGHUP, which is how the kernel reports
/// reboot(2) in a PID namespace) is started again, as nspawn does.
pub fn run(spec: &Spec, mut early: crate::register::Early) -> anyhow::Result<u8> {
    let ext = Berth::from_spec(spec)?;
    let bpf = seccomp::compile(spec)?;

    // Signals are taken through a signalfd; block them before clone so none is lost.
    let mut handled = SigSet::empty();
    for s in HANDLED_SIGNALS {
        handled.add(s);
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&handled), None)
        .map_err(sys_err("blocking signals"))?;
    let sigfd = SignalFd::with_flags(&handled, SfdFlags::SFD_CLOEXEC)
        .map_err(sys_err("creating a signalfd"))?;

    let keep_unit = crate::spec::systemd::MachineSettings::from_spec(spec)?.keep_unit;
    loop {
        // What main started early serves the first life only.
        let end = launch(spec, &ext, bpf.as_ref(), &sigfd, std::mem::take(&mut early))?;
        return Ok(match (ext.boot, end) {
            // Under a unit (--keep-unit) the unit restarts it: RestartForceExitStatus=133.
            (true, End::Killed(libc::SIGHUP)) if keep_unit => 133,
            (true, End::Killed(libc::SIGHUP)) => {
                if !ext.quiet {
                    eprintln!("berth: container {} is rebooting", ext.machine);
                }
                continue;
            }
            // reboot(2) with power-off or halt: the system shut down as asked.
            (true, End::Killed(libc::SIGINT)) => 0,
            // 133 is how a unit asks for a restart; a payload's own 133 must not.
            (true, End::Exited(133)) => 1,
            (_, End::Exited(n)) => n as u8,
            (_, End::Killed(sig)) => (128 + sig) as u8,
        });
    }
}

/// One life of the container: create, place, supervise, reap.
fn launch(
    spec: &Spec,
    ext: &Berth,
    bpf: Option<&crate::seccomp::Bpf>,
    sigfd: &SignalFd,
    early: crate::register::Early,
) -> anyhow::Result<End> {
    // Where the container will live (systemd integration, src/place.rs). Declared before the
    // container so it is dropped after it: unregistering and removing the cgroup come last.
    // First, too: a bus helper forked here (where none was forked early) should inherit none
    // of the fds below (the container's end of the control socket above all, whose end of
    // file tells that the payload was executed).
    let mut placement = crate::place::Placement::prepare(spec, ext, early)?;

    let (parent_chan, child_chan) = msg::pair().map_err(sys_err("creating the control socket"))?;

    let private_network = has_ns(spec, LinuxNamespaceType::Network);
    let userns = has_ns(spec, LinuxNamespaceType::User);
    let captured = mount::capture(spec, userns, private_network).map_err(|e| Coded {
        code: exit::FAILURE,
        msg: e.to_string(),
    })?;

    // The child starts in the tree's directory (see mount::prepare): entered here, with the
    // host's privileges, and left again right after clone.
    let cwd: OwnedFd = std::fs::File::open(".")
        .map_err(|e| Coded {
            code: exit::FAILURE,
            msg: format!("opening the working directory: {e}"),
        })?
        .into();
    let root = spec.root().as_ref().expect("validated").path();
    nix::unistd::chdir(root).map_err(sys_err("entering the root directory"))?;

    // SAFETY: berth is single-threaded here, as clone3 without CLONE_VM requires.
    let mut forked = unsafe { sys::clone3(clone_flags(spec), placement.clone_into()) };
    match forked {
        Ok(Forked::Parent { .. }) if placement.clone_into().is_some() => placement.born_in_cgroup(),
        // Kernels without CLONE_INTO_CGROUP (< 5.7): born outside, moved in by place().
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS | nix::errno::Errno::E2BIG)
            if placement.clone_into().is_some() =>
        {
            // SAFETY: as above.
            forked = unsafe { sys::clone3(clone_flags(spec), None) };
        }
        _ => {}
    }
    let (pid, pidfd) = match forked.map_err(sys_err("creating the container"))? {
        Forked::Child => {
            drop(parent_chan);
            // SAFETY: the child's copy of the signalfd is not used; close it.
            unsafe { libc::close(sigfd.as_raw_fd()) };
            child::run(spec, ext, bpf, child_chan, captured)
        }
        Forked::Parent { pid, pidfd } => (pid, pidfd),
    };
    drop(child_chan);
    nix::unistd::fchdir(&cwd).map_err(sys_err("returning to the working directory"))?;
    let mut container = Running { pidfd: Some(pidfd) };

    if userns {
        // The child waits, as nobody, until its map exists and its tree is owned right.
        userns::write_maps(spec, pid)?;
        let range = userns::range(spec).expect("a user namespace has a map");
        userns::ownership(ext.ownership, captured.root.as_fd(), root, pid, range)?;
        let _ = parent_chan.send(&ToChild::Mapped, None);
    }
    // The child has its own copies of the captured mounts.
    drop(captured);

    // Placement: the systemd integration (cgroup, machined registration), after the container
    // exists and before it may exec. On failure the container is killed (Running's drop) and
    // nothing stays registered or created (Placement's drop).
    placement.place(ext, pid)?;

    // A booted system in its own user namespace manages its cgroup subtree itself.
    if ext.boot {
        let owner = userns
            .then(|| userns::range(spec).expect("a user namespace has a map"))
            .map(|(b, _)| (b, b));
        if delegate::shares_berths_cgroup(pid)? {
            placement.separate(pid);
        }
        delegate::delegate(pid, owner)?;
    }

    // If the child already failed, sending fails too; its Failed message is still queued.
    let _ = parent_chan.send(&ToChild::Go, None);
    let mut master: Option<OwnedFd> = None;
    let mut notify: Option<OwnedFd> = None;
    let mut lock_leftovers = None;
    loop {
        match parent_chan.recv::<ToParent>() {
            Ok(Some((ToParent::PtyMaster, fd))) => master = fd,
            Ok(Some((ToParent::Notify, fd))) => notify = fd,
            Ok(Some((ToParent::LockMounts, _))) => {
                let (ns, rest) = lock::locked_copy(pid)?;
                let _ = parent_chan.send(&ToChild::Locked, Some(ns.as_raw_fd()));
                lock_leftovers = Some(rest);
            }
            Ok(Some((ToParent::Failed { code, msg }, _))) => {
                container.reap();
                return Err(Coded { code, msg }.into());
            }
            Ok(None) => break,
            Err(e) => {
                return Err(LaunchError::Sys {
                    what: "talking to the container",
                    source: e,
                }
                .into());
            }
        }
    }
    drop(parent_chan);
    // The payload runs; machined's answer (if place() went on without it) comes before the
    // container is reported ready. Refused now, the container is killed (Running's drop).
    placement.confirm(ext, pid, container.pidfd())?;
    drop(lock_leftovers);

    // The payload runs. A plain command is ready now; a booted system says so itself on
    // /run/host/notify, relayed by supervise().
    crate::notify::notify(&if ext.boot {
        format!("STATUS=Container running.\nX_BERTH_LEADER_PID={pid}")
    } else {
        format!("READY=1\nSTATUS=Container running.\nX_BERTH_LEADER_PID={pid}")
    });
    let end = supervise(&mut container, ext, master, notify, sigfd, &mut || {
        placement.reap_helpers(false)
    });
    crate::notify::notify("STATUS=Container stopped.");
    drop(container);
    // A booted system may reboot into a new life under the same name: wait for machined then.
    placement.release(ext.boot);
    end
}

/// How long the container runs with the supervisor idle before the supervisor sheds what
/// setup left resident (heap, pages of its binary).
const SHED_AFTER_MS: u16 = 50;

/// Drops the mappings of berth's own binary while the container runs: the kernel's
/// fault-around mapped far more of it than the event loop uses, and the supervisor should cost
/// a sleeping container next to nothing. Only read-only file mappings of the binary with no
/// private (relocated) pages are touched, so every page refaults unchanged from the page cache.
fn shed_text() {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return;
    };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    let mut current: Option<(usize, usize)> = None;
    // Collected first: code that runs after a range is dropped maps its pages back in.
    let mut ranges = Vec::new();
    for line in smaps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.first()
            .is_some_and(|k| k.contains('-') && !k.ends_with(':'))
        {
            // A mapping's first line: "start-end perms offset dev inode path".
            current = None;
            if f.len() < 6 || !matches!(f[1], "r-xp" | "r--p") || std::path::Path::new(f[5]) != exe
            {
                continue;
            }
            let Some((a, b)) = f[0].split_once('-') else {
                continue;
            };
            if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                current = Some((a, b));
            }
        } else if f.first() == Some(&"Anonymous:")
            && f.get(1) == Some(&"0")
            && let Some(range) = current.take()
        {
            ranges.push(range);
        }
    }
    for (a, b) in ranges {
        // SAFETY: the range is a read-only, file-backed private mapping of our own binary
        // with no private pages; MADV_DONTNEED only drops page-table entries that refault
        // from the file.
        unsafe { libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_DONTNEED) };
    }
}

struct Running {
    pidfd: Option<OwnedFd>,
}

impl Running {
    fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_ref().expect("running").as_fd()
    }

    fn signal(&self, sig: i32) {
        if let Some(fd) = &self.pidfd {
            let _ = sys::pidfd_send_signal(fd.as_fd(), sig);
        }
    }

    /// Waits for the container's init and returns how it ended.
    fn reap(&mut self) -> End {
        let Some(fd) = self.pidfd.take() else {
            return End::Exited(exit::FAILURE as i32);
        };
        loop {
            // SAFETY: siginfo_t is plain data filled by the kernel.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: waitid on our own pidfd (P_PIDFD = 3).
            let r =
                unsafe { libc::waitid(3, fd.as_raw_fd() as libc::id_t, &mut info, libc::WEXITED) };
            if r == 0 {
                // SAFETY: for CLD_* codes the status field is valid.
                let status = unsafe { info.si_status() };
                return if info.si_code == libc::CLD_EXITED {
                    End::Exited(status)
                } else {
                    End::Killed(status)
                };
            }
            if nix::errno::Errno::last() != nix::errno::Errno::EINTR {
                return End::Exited(exit::FAILURE as i32);
            }
        }
    }
}

impl Drop for Running {
    /// Whatever path leaves `run`, the container does not outlive it.
    fn drop(&mut self) {
        if self.pidfd.is_some() {
            self.signal(libc::SIGKILL);
            self.reap();
        }
    }
}

fn stdin() -> BorrowedFd<'static> {
    // SAFETY: fd 0 stays open for the life of the process.
    unsafe { BorrowedFd::borrow_raw(0) }
}

fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> bool {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
    true
}

/// The supervisor's loop: console relay, signals, and the container's end. `idle` runs when
/// the container has run quietly for a while, and again after each quiet spell until it
/// returns true (nothing left to do).
fn supervise(
    c: &mut Running,
    ext: &Berth,
    master: Option<OwnedFd>,
    notify: Option<OwnedFd>,
    sigfd: &SignalFd,
    idle: &mut dyn FnMut() -> bool,
) -> anyhow::Result<End> {
    let stdout = std::io::stdout();
    let interactive = ext.console == ConsoleMode::Interactive && master.is_some();
    let relay_out = matches!(
        ext.console,
        ConsoleMode::Interactive | ConsoleMode::ReadOnly
    ) && master.is_some();
    // The console stays open for the container's whole life (container interface): a booted
    // systemd closes its stdio at start, and without another holder of the pty's slave the
    // master would report EIO and the relay would stop before systemd opens /dev/console again.
    let _console_peer = master.as_ref().and_then(|m| console::peer(m.as_fd()));
    let _raw = if interactive && console::is_tty(stdin()) {
        if let Some(m) = &master {
            console::copy_winsize(stdin(), m.as_fd());
        }
        console::RawMode::enter(stdin())
    } else {
        None
    };
    if interactive && !ext.quiet {
        let _ = write!(
            std::io::stderr(),
            "Spawning container {}. Send SIGTERM to berth to stop it.\r\n",
            ext.machine
        );
    }
    let mut read_stdin = interactive;
    let mut read_master = relay_out;
    let mut kill_sent = false;
    let mut buf = vec![0u8; 16 * 1024];
    let pidfd = c.pidfd.as_ref().expect("running").as_raw_fd();
    // The last poll timed out; idle() has nothing left to do; the supervisor has shed its setup.
    let (mut quiet, mut idle_done, mut shed) = (false, false, false);
    loop {
        // SAFETY: the fds outlive this iteration.
        let (pfd, sfd) = unsafe {
            (
                BorrowedFd::borrow_raw(pidfd),
                BorrowedFd::borrow_raw(sigfd.as_raw_fd()),
            )
        };
        let mut fds = vec![
            PollFd::new(pfd, PollFlags::POLLIN),
            PollFd::new(sfd, PollFlags::POLLIN),
        ];
        if read_stdin {
            fds.push(PollFd::new(stdin(), PollFlags::POLLIN));
        }
        let master_idx = fds.len();
        if read_master {
            fds.push(PollFd::new(
                master.as_ref().expect("relay").as_fd(),
                PollFlags::POLLIN,
            ));
        }
        let notify_idx = fds.len();
        if let Some(n) = &notify {
            fds.push(PollFd::new(n.as_fd(), PollFlags::POLLIN));
        }
        if quiet {
            // The container has run quietly for SHED_AFTER. (A short-lived one ends before
            // that; its berth pays for none of this.)
            quiet = false;
            idle_done = idle_done || idle();
            if idle_done && !shed {
                // Right before the supervisor sleeps: what it runs from here until it wakes
                // up is the little it keeps resident.
                shed = true;
                // What setup allocated is not needed while the container runs.
                // SAFETY: malloc_trim only returns free heap pages to the kernel.
                unsafe { libc::malloc_trim(0) };
                shed_text();
            }
        }
        let timeout = if shed {
            PollTimeout::NONE
        } else {
            PollTimeout::from(SHED_AFTER_MS)
        };
        match poll(&mut fds, timeout) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                return Err(LaunchError::Sys {
                    what: "waiting for the container",
                    source: e,
                }
                .into());
            }
            Ok(0) => {
                quiet = true;
                continue;
            }
            Ok(_) => {}
        }
        let ready = |i: usize| {
            fds.get(i)
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty())
        };
        let (pid_ready, sig_ready, in_ready, m_ready) = (
            ready(0),
            ready(1),
            read_stdin && ready(2),
            read_master && ready(master_idx),
        );
        let n_ready = notify.is_some() && ready(notify_idx);
        drop(fds);
        if n_ready {
            relay_notify(notify.as_ref().expect("polled").as_fd(), &mut buf);
        }
        if m_ready {
            match nix::unistd::read(master.as_ref().expect("relay"), &mut buf) {
                Ok(n) if n > 0 => {
                    let mut out = stdout.lock();
                    let _ = out.write_all(&buf[..n]).and_then(|_| out.flush());
                }
                Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => {}
                _ => read_master = false,
            }
        }
        if in_ready {
            match nix::unistd::read(stdin(), &mut buf) {
                Ok(n) if n > 0 => {
                    if !write_all(master.as_ref().expect("relay").as_fd(), &buf[..n]) {
                        read_stdin = false;
                    }
                }
                Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => {}
                _ => read_stdin = false,
            }
        }
        if sig_ready && let Ok(Some(info)) = sigfd.read_signal() {
            let sig = info.ssi_signo as i32;
            if sig == libc::SIGWINCH {
                if let Some(m) = &master {
                    console::copy_winsize(stdin(), m.as_fd());
                }
            } else if let (Some(k), false) = (ext.kill_signal, kill_sent) {
                // nspawn: the first request asks PID 1 to shut down, a second one kills.
                c.signal(k);
                kill_sent = true;
            } else {
                c.signal(libc::SIGKILL);
            }
        }
        if pid_ready {
            let status = c.reap();
            if relay_out {
                drain(master.as_ref().expect("relay").as_fd(), &mut buf);
            }
            return Ok(status);
        }
    }
}

/// The container's systemd reports on /run/host/notify; berth passes READY=1 and STATUS= on
/// to its own service manager, so a Type=notify berth@.service is ready when the system is.
fn relay_notify(sock: BorrowedFd<'_>, buf: &mut [u8]) {
    let Ok(n) = nix::sys::socket::recv(
        sock.as_raw_fd(),
        buf,
        nix::sys::socket::MsgFlags::MSG_DONTWAIT,
    ) else {
        return;
    };
    let text = String::from_utf8_lossy(&buf[..n]);
    let relayed: Vec<String> = text
        .lines()
        .filter_map(|l| match l {
            "READY=1" => Some("READY=1".to_string()),
            _ => l
                .strip_prefix("STATUS=")
                .map(|st| format!("STATUS=Container: {st}")),
        })
        .collect();
    if !relayed.is_empty() {
        crate::notify::notify(&relayed.join("\n"));
    }
}

/// After the container ended: what it wrote last is still in the pty buffer.
fn drain(master: BorrowedFd<'_>, buf: &mut [u8]) {
    let _ = nix::fcntl::fcntl(
        master,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    while let Ok(n) = nix::unistd::read(master, buf) {
        if n == 0 {
            break;
        }
        let _ = out.write_all(&buf[..n]);
    }
    let _ = out.flush();
}
