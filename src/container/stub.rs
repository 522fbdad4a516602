//! `--as-pid2`: a minimal init as PID 1 that reaps orphans, forwards signals to the payload
//! and exits with the payload's status, for payloads that were not written to be PID 1.

use super::error::{Ctx, SetupError};
use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
use nix::unistd::{ForkResult, Pid, fork};

/// Returns in the payload (PID 2); PID 1 stays here as the stub for the container's life.
/// `poweroff`: the signal the payload gets when the container is asked to power off
/// (`machinectl poweroff` sends SIGRTMIN+4 to PID 1, systemd's poweroff; halt is SIGRTMIN+3):
/// the container's --kill-signal, else SIGTERM, which is what a program that is not an init
/// understands as "stop".
pub fn fork_payload(poweroff: i32) -> Result<(), SetupError> {
    let all = SigSet::all();
    let mut old = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&all), Some(&mut old)).ctx("blocking signals")?;
    // SAFETY: we are single-threaded.
    match unsafe { fork() }.ctx("forking the payload")? {
        ForkResult::Child => {
            sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None)
                .ctx("restoring the signal mask")?;
            Ok(())
        }
        ForkResult::Parent { child } => supervise(child, poweroff),
    }
}

fn supervise(payload: Pid, poweroff: i32) -> ! {
    // The stub is berth's own code: make /proc/1/exe (the berth binary) and its memory
    // unreachable for the payload, which runs as the same uid.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0) };
    // The stub needs CAP_KILL alone (to signal a payload that switched users); it keeps
    // nothing else that a payload could reach through it.
    let keep: caps::CapsHashSet = [caps::Capability::CAP_KILL].into_iter().collect();
    for cap in caps::runtime::thread_all_supported() {
        if cap != caps::Capability::CAP_KILL {
            let _ = caps::drop(None, caps::CapSet::Bounding, cap);
        }
    }
    let _ = caps::set(None, caps::CapSet::Effective, &keep);
    let _ = caps::set(None, caps::CapSet::Permitted, &keep);
    let _ = caps::clear(None, caps::CapSet::Inheritable);
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    // Only the payload needs 0-2; the stub keeps no host file open.
    // SAFETY: closing our own descriptors; nothing else uses them in this process.
    unsafe { libc::syscall(libc::SYS_close_range, 0, libc::c_uint::MAX, 0) };
    let all = SigSet::all();
    loop {
        // sigwaitinfo, not nix's sigwait: real-time signals (SIGRTMIN+3 for a payload's
        // systemd) must be forwarded too, and nix's Signal cannot name them.
        // SAFETY: siginfo_t is plain data filled by the kernel.
        let sig = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::sigwaitinfo(all.as_ref(), &mut info)
        };
        if sig < 0 {
            continue;
        }
        if sig == libc::SIGCHLD {
            loop {
                // libc's waitpid, not nix's: nix cannot represent a payload killed by a
                // real-time signal (machinectl poweroff sends SIGRTMIN+4) and reports EINVAL
                // after reaping it, which left the stub waiting forever.
                let mut st: libc::c_int = 0;
                // SAFETY: waitpid with a valid status pointer.
                let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
                if pid <= 0 {
                    break;
                }
                if pid == payload.as_raw() {
                    if libc::WIFEXITED(st) {
                        exit(libc::WEXITSTATUS(st));
                    }
                    if libc::WIFSIGNALED(st) {
                        exit(128 + libc::WTERMSIG(st));
                    }
                }
            }
        } else {
            let sig = if sig == libc::SIGRTMIN() + 3 || sig == libc::SIGRTMIN() + 4 {
                poweroff
            } else {
                sig
            };
            // SAFETY: kill with a pid we forked and a signal number the kernel gave us.
            unsafe { libc::kill(payload.as_raw(), sig) };
        }
    }
}

fn exit(code: i32) -> ! {
    // SAFETY: _exit ends the stub; no destructors of the supervisor's state should run.
    unsafe { libc::_exit(code) }
}
