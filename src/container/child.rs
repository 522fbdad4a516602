//! The container's PID 1 until it executes the payload: runs in the new namespaces, a
//! copy-on-write copy of the supervisor (clone3 without CLONE_VM, no re-exec of berth).
//!
//! Order matters and follows nspawn's inner child: file system (mount.rs), wait for the
//! supervisor to place us (cgroup, registration), cgroup namespace, [with a user namespace:
//! move into the locked copy of our mounts the supervisor makes, lock.rs], hostname, console,
//! [stub init], then identity, capabilities, seccomp, exec.

use super::error::{Ctx, SetupError};
use super::msg::{Channel, ToChild, ToParent};
use super::{console, exec, has_ns, mount, stub};
use crate::exit;
use crate::seccomp::Bpf;
use crate::spec::ext::{Berth, ConsoleMode};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use oci_spec::runtime::{Capability, LinuxNamespaceType, Spec};
use std::os::fd::AsRawFd;

/// Never returns: execs the payload, or reports why not and exits.
pub fn run(
    spec: &Spec,
    ext: &Berth,
    bpf: Option<&Bpf>,
    chan: Channel,
    captured: mount::Captured,
) -> ! {
    let err = match setup_and_exec(spec, ext, bpf, &chan, captured) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let (code, msg) = match err {
        Failure::Exec { code, msg } => (code, msg),
        Failure::Setup(e) => (exit::FAILURE, e.to_string()),
    };
    // If the supervisor is gone there is nobody to tell; exit all the same.
    let _ = chan.send(&ToParent::Failed { code, msg }, None);
    // SAFETY: _exit skips atexit handlers and destructors that belong to the supervisor.
    unsafe { libc::_exit(code as i32) }
}

pub enum Failure {
    Setup(SetupError),
    Exec { code: u8, msg: String },
}

impl From<SetupError> for Failure {
    fn from(e: SetupError) -> Self {
        Failure::Setup(e)
    }
}

enum Never {}

fn setup_and_exec(
    spec: &Spec,
    ext: &Berth,
    bpf: Option<&Bpf>,
    chan: &Channel,
    mut captured: mount::Captured,
) -> Result<Never, Failure> {
    // A signal for a PID 1 that has no handler for it is dropped when it is sent, unless it
    // is blocked. machinectl may signal the leader as soon as it is registered, before the
    // --as-pid2 stub has its handlers: keep everything pending until the stub or the payload
    // (which starts with an empty mask) takes over.
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::all()), None).ctx("blocking signals")?;
    // Our supervisor dying must take the whole container with it.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // Device nodes and masks get exactly the modes the spec asks for.
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());

    let userns = has_ns(spec, LinuxNamespaceType::User);
    if userns {
        // Until the supervisor has written our uid/gid map we are nobody here.
        match chan.recv::<ToChild>() {
            Ok(Some((ToChild::Mapped, _))) => {}
            _ => return Err(SetupError::msg("the supervisor went away").into()),
        }
        // Become the namespace's root; capabilities in it are kept across this switch.
        let zero_g = nix::unistd::Gid::from_raw(0);
        let zero_u = nix::unistd::Uid::from_raw(0);
        nix::unistd::setresgid(zero_g, zero_g, zero_g)
            .ctx("becoming root in the user namespace")?;
        nix::unistd::setresuid(zero_u, zero_u, zero_u)
            .ctx("becoming root in the user namespace")?;
        nix::unistd::setgroups(&[]).ctx("setgroups in the user namespace")?;
        rearm_pdeathsig();
    }
    mount::prepare(spec, &mut captured, ext.ephemeral)?;
    mount::mount_all(spec, captured, &ext.uuid)?;
    if ext.boot {
        let sock = notify_socket()?;
        chan.send(&ToParent::Notify, Some(sock.as_raw_fd()))
            .ctx("passing the notify socket to the supervisor")?;
    }
    let private_network = has_ns(spec, LinuxNamespaceType::Network);
    mount::protect(spec, private_network)?;

    // What does not depend on the cgroup is done before waiting for it: on a registered start
    // the wait ends while systemd, machined and the bus are busy, and what remains after it
    // competes with them for the CPU.
    if let Some(h) = spec.hostname() {
        nix::unistd::sethostname(h).ctx("setting the hostname")?;
    }
    if private_network {
        bring_up_loopback()?;
    }
    nix::unistd::setsid().ctx("setsid")?;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| SetupError::msg("spec has no process"))?;
    let caps = process.capabilities().as_ref();
    let set = |s: Option<&std::collections::HashSet<Capability>>| -> Vec<Capability> {
        s.map(|s| s.iter().copied().collect()).unwrap_or_default()
    };
    // The bounding set limits what exec may grant; what setup still needs is in the effective
    // set, which this leaves alone.
    super::caps::drop_bounding(&set(caps.and_then(|c| c.bounding().as_ref())))?;

    // Wait until the supervisor has put us into our cgroup (and registered us).
    match chan.recv::<ToChild>() {
        Ok(Some((ToChild::Go, _))) => {}
        _ => return Err(SetupError::msg("the supervisor went away").into()),
    }
    if has_ns(spec, LinuxNamespaceType::Cgroup) {
        unshare(CloneFlags::CLONE_NEWCGROUP).ctx("creating the cgroup namespace")?;
        mount::mount_cgroup(spec)?;
    }
    mount::seal(spec)?;

    if ext.console != ConsoleMode::Pipe {
        let master = console::open_in_container()?;
        chan.send(&ToParent::PtyMaster, Some(master.as_raw_fd()))
            .ctx("passing the console to the supervisor")?;
    }

    if userns {
        // Mounts made inside our own user namespace are not locked: the supervisor makes a
        // copy in which they are (lock.rs), and we move into it. After the last mount (the
        // console's), before the stub forks and before seccomp, which may deny setns.
        chan.send(&ToParent::LockMounts, None)
            .ctx("asking the supervisor to lock the mounts")?;
        match chan.recv::<ToChild>() {
            Ok(Some((ToChild::Locked, Some(ns)))) => {
                nix::sched::setns(&ns, CloneFlags::CLONE_NEWNS)
                    .ctx("joining the locked mount namespace")?;
                nix::unistd::chdir("/").ctx("chdir /")?;
            }
            _ => return Err(SetupError::msg("the supervisor went away").into()),
        }
    }

    if ext.as_pid2 {
        // The stub stays PID 1; the payload continues below as PID 2.
        stub::fork_payload(ext.kill_signal.unwrap_or(libc::SIGTERM))?;
    }

    let effective = set(caps.and_then(|c| c.effective().as_ref()));
    let permitted = set(caps.and_then(|c| c.permitted().as_ref()));
    super::seccomp::load(bpf)?;
    let user = process.user();
    super::caps::switch_user(
        user.uid(),
        user.gid(),
        user.additional_gids().as_deref().unwrap_or(&[]),
    )?;
    rearm_pdeathsig();
    super::caps::set(&effective, &permitted)?;
    if process.no_new_privileges().unwrap_or(false) {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(SetupError::Sys {
                what: "setting no_new_privs".into(),
                source: nix::errno::Errno::last(),
            }
            .into());
        }
    }
    let cwd = process.cwd();
    nix::unistd::chdir(cwd.as_path())
        .ctx(format!("changing to working directory {}", cwd.display()))?;

    // The payload gets a clean signal state: Rust ignores SIGPIPE, and we blocked the
    // supervisor's signals before clone.
    // SAFETY: resetting dispositions to default is always sound.
    unsafe {
        for sig in Signal::iterator() {
            if sig != Signal::SIGKILL && sig != Signal::SIGSTOP {
                let _ = nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl);
            }
        }
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None).ctx("unblocking signals")?;
    // Setup ran with umask 0 for exact device and mask modes; the payload gets the usual one.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    // Only 0, 1 and 2 reach the payload; the channel closes on exec, telling the supervisor.
    crate::sys::cloexec_from(3).ctx("closing inherited file descriptors")?;

    let env = process.env().clone().unwrap_or_default();
    let args = process.args().clone().unwrap_or_default();
    Err(exec::exec(&args, &env, ext.login_shell))
}

/// /run/host/notify, where the container's systemd sends READY=1 (NOTIFY_SOCKET), bound
/// before /run/host becomes read-only; the supervisor keeps the receiving end.
fn notify_socket() -> Result<std::os::fd::OwnedFd, SetupError> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, bind, socket};
    let sock = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ctx("creating the notify socket")?;
    let addr = UnixAddr::new("/run/host/notify").ctx("naming the notify socket")?;
    bind(sock.as_raw_fd(), &addr).ctx("binding /run/host/notify")?;
    Ok(sock)
}

/// The kernel clears the parent-death signal when a process's uids or gids change
/// (commit_creds): without this a container whose init switched identity (a user namespace's
/// root, -u USER) would outlive a SIGKILLed berth, and stay registered with machined.
fn rearm_pdeathsig() {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
}

/// A private network namespace starts with `lo` down; nspawn brings it up.
fn bring_up_loopback() -> Result<(), SetupError> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ctx("opening a socket for lo")?;
    // SAFETY: ifreq is plain data; the ioctls read and write only within it.
    unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(SetupError::Sys {
                what: "reading lo's flags".into(),
                source: nix::errno::Errno::last(),
            });
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(SetupError::Sys {
                what: "bringing lo up".into(),
                source: nix::errno::Errno::last(),
            });
        }
    }
    Ok(())
}
