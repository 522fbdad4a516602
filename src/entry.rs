//! berth's ELF entry point on x86-64 Linux (build.rs links it in): forks the cgroup migration
//! primer before the C library starts, then hands over to the C library's `_start`.
//!
//! A registered start waits for the RCU grace period that the first cgroup migration after a
//! quiet spell costs (see [`crate::cgroup::prime_migration`]); the primer starts that wait, and
//! every 0.1 ms it starts later is waited for. glibc's start-up before `main` takes half a
//! millisecond in a nested VM (its CPU feature probe executes CPUID some eighty times, each a
//! VM exit of about 7 us there), and Rust's runtime set-up follows. Forked from the first
//! instruction instead, the primer is in the kernel 0.1 ms after exec; [`primer`] hands it to
//! `main`. Where this entry point is not linked in, `main` forks the primer itself
//! ([`crate::register::prime_early`]).
//!
//! What runs here runs before relocation, TLS and the C library exist: raw system calls,
//! buffers on the stack, no statics that hold pointers, no calls out (not even the memcpy or
//! memset a compiler may emit for a loop: bytes are moved with volatile accesses), nothing
//! that can panic.

// Elsewhere only the parts the tests exercise are used.
#![cfg_attr(
    not(all(target_arch = "x86_64", target_os = "linux")),
    allow(dead_code)
)]

use std::sync::atomic::{AtomicI32, Ordering};

/// What the entry point decided, before `main` runs: [`UNDECIDED`], [`DECLINED`] or the
/// primer's PID.
static PRIMER: AtomicI32 = AtomicI32::new(UNDECIDED);
const UNDECIDED: i32 = 0;
const DECLINED: i32 = -1;

/// The migration primer as the entry point left it.
pub enum Primer {
    /// Forked: `main`'s to reap.
    Forked(nix::unistd::Pid),
    /// None wanted: not `berth run`, or under --keep-unit, or no system bus.
    Declined,
    /// Left to `main`: the entry point is not linked in, the bus's address is in the
    /// environment, or forking failed.
    Undecided,
}

pub fn primer() -> Primer {
    match PRIMER.swap(UNDECIDED, Ordering::Relaxed) {
        UNDECIDED => Primer::Undecided,
        DECLINED => Primer::Declined,
        pid => Primer::Forked(nix::unistd::Pid::from_raw(pid)),
    }
}

// The kernel starts a process with its stack pointer at argc (16-byte aligned) and, on
// x86-64, rdx holding a function for atexit; both reach `_start` as they came (r12 and r13
// are preserved across the call).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
std::arch::global_asm!(
    ".globl berth_entry",
    ".type berth_entry, @function",
    "berth_entry:",
    "    mov r12, rsp",
    "    mov r13, rdx",
    "    mov rdi, rsp",
    "    and rsp, -16",
    "    call {prime}",
    "    mov rsp, r12",
    "    mov rdx, r13",
    "    jmp _start",
    ".size berth_entry, . - berth_entry",
    prime = sym imp::prime,
);

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod imp {
    use super::*;
    use crate::register;

    /// Called from `berth_entry` with the initial stack pointer. Forks the primer for
    /// `berth run` (not under --keep-unit, where nothing is moved) on a host with a system bus,
    /// as `main` would ([`crate::register::prime_early`]).
    pub unsafe extern "C" fn prime(sp: *const usize) {
        // SAFETY: the kernel's initial stack: argc, argv[argc] and a null, envp and a null.
        unsafe {
            let argc = *sp;
            let argv = sp.add(1) as *const *const u8;
            let (mut run, mut keep_unit) = (false, false);
            for i in 1..argc {
                let a = *argv.add(i);
                run |= equals(a, b"run\0");
                keep_unit |= equals(a, b"--keep-unit\0");
            }
            if !run || keep_unit {
                PRIMER.store(DECLINED, Ordering::Relaxed);
                return;
            }
            // With the bus's address in the environment, main decides (as
            // crate::register::system_bus_present has it).
            let mut env = argv.add(argc + 1);
            while !(*env).is_null() {
                if is_bus_variable(*env) {
                    return;
                }
                env = env.add(1);
            }
            let socket = register::SYSTEM_BUS_SOCKET.as_ptr() as usize;
            if sys::call(sys::ACCESS, socket, 0, 0) != 0 {
                PRIMER.store(DECLINED, Ordering::Relaxed);
                return;
            }
            // berth waits on this pipe until the primer is about to move itself: left to the
            // scheduler, a child forked while both CPUs of a small host are busy may start a
            // millisecond later, and the grace period with it.
            let mut ready = [0i32; 2];
            let flags = libc::O_CLOEXEC as usize;
            if sys::call(sys::PIPE2, ready.as_mut_ptr() as usize, flags, 0) != 0 {
                return;
            }
            match sys::call(sys::CLONE, libc::SIGCHLD as usize, 0, 0) {
                0 => {
                    sys::call(sys::CLOSE, ready[0] as usize, 0, 0);
                    primer_child(ready[1])
                }
                pid => {
                    sys::call(sys::CLOSE, ready[1] as usize, 0, 0);
                    if pid > 0 {
                        PRIMER.store(pid as i32, Ordering::Relaxed);
                        // End of file once the primer has closed its end (or has exited).
                        let mut byte = 0u8;
                        let buf = &mut byte as *mut u8 as usize;
                        while sys::call(sys::READ, ready[0] as usize, buf, 1)
                            == -(libc::EINTR as isize)
                        {}
                    }
                    sys::call(sys::CLOSE, ready[0] as usize, 0, 0);
                }
            }
        }
    }

    /// The primer: as [`crate::cgroup::prime_migration`], moves itself within its own cgroup
    /// (found in /proc/self/cgroup: the cgroup2 one, else a v1 one), with a helper's signal
    /// mask and stdio. Closes `ready` right before the move.
    unsafe fn primer_child(ready: i32) -> ! {
        const FILE: usize = 4096;
        const PATH: usize = FILE + 64;
        // SAFETY: raw system calls on buffers of this frame, of the sizes stated.
        unsafe {
            // berth's supervisor handles these (crate::container::HANDLED_SIGNALS).
            let mask: u64 = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGWINCH]
                .iter()
                .fold(0, |m, s| m | 1 << (s - 1));
            let mask_ptr = &mask as *const u64 as usize;
            sys::call4(sys::SIGPROCMASK, libc::SIG_BLOCK as usize, mask_ptr, 0, 8);
            let rdwr = (libc::O_RDWR | libc::O_CLOEXEC) as usize;
            let null = sys::call(sys::OPEN, c"/dev/null".as_ptr() as usize, rdwr, 0);
            if null >= 0 {
                for fd in 0..3 {
                    sys::call(sys::DUP2, null as usize, fd, 0);
                }
                sys::call(sys::CLOSE, null as usize, 0, 0);
            }
            let mut file = std::mem::MaybeUninit::<[u8; FILE]>::uninit();
            let file = file.as_mut_ptr() as *mut u8;
            let len = read_file(c"/proc/self/cgroup", file, FILE);
            let mut path = std::mem::MaybeUninit::<[u8; PATH]>::uninit();
            let path = path.as_mut_ptr() as *mut u8;
            let mut pid = std::mem::MaybeUninit::<[u8; 20]>::uninit();
            let pid = pid.as_mut_ptr() as *mut u8;
            let pid_len = decimal(sys::call(sys::GETPID, 0, 0, 0) as u64, pid);
            let mut state = 0;
            let wronly = (libc::O_WRONLY | libc::O_CLOEXEC) as usize;
            while procs_path(file, len, &mut state, path, PATH).is_some() {
                let fd = sys::call(sys::OPEN, path as usize, wronly, 0);
                if fd >= 0 {
                    sys::call(sys::CLOSE, ready as usize, 0, 0);
                    sys::call(sys::WRITE, fd as usize, pid as usize, pid_len);
                    break;
                }
            }
            sys::call(sys::EXIT_GROUP, 0, 0, 0);
            #[allow(clippy::empty_loop)]
            loop {}
        }
    }

    /// Reads up to `cap` bytes of file `name` into `buf`; the length read, 0 on
    /// any error.
    unsafe fn read_file(name: &std::ffi::CStr, buf: *mut u8, cap: usize) -> usize {
        // SAFETY: raw system calls; `buf` holds `cap` bytes.
        unsafe {
            let flags = libc::O_CLOEXEC as usize;
            let fd = sys::call(sys::OPEN, name.as_ptr() as usize, flags, 0);
            if fd < 0 {
                return 0;
            }
            let mut len = 0;
            while len < cap {
                let n = sys::call(sys::READ, fd as usize, buf.add(len) as usize, cap - len);
                if n <= 0 {
                    break;
                }
                len += n as usize;
            }
            sys::call(sys::CLOSE, fd as usize, 0, 0);
            len
        }
    }

    mod sys {
        pub const READ: usize = 0;
        pub const WRITE: usize = 1;
        pub const OPEN: usize = 2;
        pub const CLOSE: usize = 3;
        pub const SIGPROCMASK: usize = 14;
        pub const ACCESS: usize = 21;
        pub const DUP2: usize = 33;
        pub const GETPID: usize = 39;
        pub const CLONE: usize = 56;
        pub const EXIT_GROUP: usize = 231;
        pub const PIPE2: usize = 293;

        pub unsafe fn call(nr: usize, a: usize, b: usize, c: usize) -> isize {
            // SAFETY: the caller's.
            unsafe { call4(nr, a, b, c, 0) }
        }

        /// A system call without the C library (there is none yet).
        pub unsafe fn call4(nr: usize, a: usize, b: usize, c: usize, d: usize) -> isize {
            let ret: isize;
            // SAFETY: the caller's; the kernel clobbers rcx and r11 only.
            unsafe {
                std::arch::asm!(
                    "syscall",
                    inlateout("rax") nr as isize => ret,
                    in("rdi") a,
                    in("rsi") b,
                    in("rdx") c,
                    in("r10") d,
                    lateout("rcx") _,
                    lateout("r11") _,
                    options(nostack),
                );
            }
            ret
        }
    }
}

/// The next cgroup.procs for the primer to try, from /proc/self/cgroup's text (`file`, `len`
/// bytes), as a C string in `out` (`cap` bytes): for the cgroup2 line ("0::PATH") under
/// /sys/fs/cgroup/unified (hybrid hosts), then under /sys/fs/cgroup; then for each v1 line
/// ("N:CONTROLLERS:PATH") under /sys/fs/cgroup/CONTROLLERS, where systemd mounts it. `state`
/// starts at 0. Returns the string's length, or None when nothing is left to try.
///
/// # Safety
/// `file` holds `len` bytes and `out` `cap`.
unsafe fn procs_path(
    file: *const u8,
    len: usize,
    state: &mut usize,
    out: *mut u8,
    cap: usize,
) -> Option<usize> {
    // SAFETY: every access is checked against `len` and `cap`.
    unsafe {
        let line_end = |start: usize| {
            let mut end = start;
            while end < len && get(file, end) != b'\n' {
                end += 1;
            }
            end
        };
        // state 0 and 1: the cgroup2 line under each prefix; 2 + N: v1 lines from offset N.
        if *state < 2 {
            let mut s = 0;
            while s < len {
                let e = line_end(s);
                if e - s >= 3 && starts_with(file.add(s), b"0::") {
                    let prefix: &[u8] = match *state {
                        0 => b"/sys/fs/cgroup/unified",
                        _ => b"/sys/fs/cgroup",
                    };
                    *state += 1;
                    let mut n = 0;
                    if let Some(m) = join(out, cap, &mut n, prefix, file, s + 3, e) {
                        return Some(m);
                    }
                    break;
                }
                s = e + 1;
            }
            *state = 2;
        }
        let mut s = *state - 2;
        while s < len {
            let e = line_end(s);
            *state = e + 1 + 2;
            // N:CONTROLLERS:PATH, CONTROLLERS not empty ("name=systemd" is mounted at
            // /sys/fs/cgroup/systemd).
            let mut c1 = s;
            while c1 < e && get(file, c1) != b':' {
                c1 += 1;
            }
            let mut c2 = c1 + 1;
            while c2 < e && get(file, c2) != b':' {
                c2 += 1;
            }
            if c2 < e && c2 > c1 + 1 {
                let mut ctrl = c1 + 1;
                if c2 - ctrl > 5 && starts_with(file.add(ctrl), b"name=") {
                    ctrl += 5;
                }
                let mut n = 0;
                if put(out, cap, &mut n, b"/sys/fs/cgroup/", 0, 15)
                    && put(
                        out,
                        cap,
                        &mut n,
                        std::slice::from_raw_parts(file, len),
                        ctrl,
                        c2,
                    )
                    && let Some(m) = join(out, cap, &mut n, b"", file, c2 + 1, e)
                {
                    return Some(m);
                }
            }
            s = e + 1;
        }
        None
    }
}

/// Appends `prefix`, `file[from..to]`, "/cgroup.procs" and a NUL to `out` (`n` bytes used of
/// `cap`); the length without the NUL. None if it does not fit, or if the path is not below
/// the cgroup namespace's root.
unsafe fn join(
    out: *mut u8,
    cap: usize,
    n: &mut usize,
    prefix: &[u8],
    file: *const u8,
    from: usize,
    to: usize,
) -> Option<usize> {
    // SAFETY: put checks `cap`; `file` holds at least `to` bytes (the caller's).
    unsafe {
        // A cgroup outside berth's cgroup namespace shows as "/..": not one to write to.
        if to - from >= 3 && starts_with(file.add(from), b"/..") {
            return None;
        }
        let file = std::slice::from_raw_parts(file, to);
        (put(out, cap, n, prefix, 0, prefix.len())
            && put(out, cap, n, file, from, to)
            && put(out, cap, n, b"/cgroup.procs\0", 0, 14))
        .then(|| *n - 1)
    }
}

/// Appends `src[from..to]` to `out` (`n` bytes used of `cap`); false if it does not fit.
unsafe fn put(out: *mut u8, cap: usize, n: &mut usize, src: &[u8], from: usize, to: usize) -> bool {
    if from > to || to > src.len() || to - from > cap - *n {
        return false;
    }
    for i in from..to {
        // SAFETY: within `src` and `out` (checked above).
        unsafe { std::ptr::write_volatile(out.add(*n), get(src.as_ptr(), i)) };
        *n += 1;
    }
    true
}

unsafe fn get(p: *const u8, i: usize) -> u8 {
    // SAFETY: the caller's bounds.
    unsafe { std::ptr::read_volatile(p.add(i)) }
}

/// Whether C string `a` equals `b` (whose last byte is a NUL).
unsafe fn equals(a: *const u8, b: &[u8]) -> bool {
    // SAFETY: stops at the first difference, so at a's NUL at the latest.
    unsafe {
        for (i, &c) in b.iter().enumerate() {
            if get(a, i) != c {
                return false;
            }
        }
        true
    }
}

/// Whether environment entry `e` (a C string) sets the system bus's address.
unsafe fn is_bus_variable(e: *const u8) -> bool {
    let name = crate::register::SYSTEM_BUS_VARIABLE.as_bytes();
    // SAFETY: starts_with stops at e's NUL, which `=` is not.
    unsafe { starts_with(e, name) && get(e, name.len()) == b'=' }
}

/// Whether C string `a` starts with `prefix` (which holds no NUL).
unsafe fn starts_with(a: *const u8, prefix: &[u8]) -> bool {
    // SAFETY: stops at the first difference, so at a's NUL at the latest.
    unsafe { prefix.iter().enumerate().all(|(i, &c)| get(a, i) == c) }
}

/// `v` in decimal into `out` (20 bytes); the number of digits.
unsafe fn decimal(v: u64, out: *mut u8) -> usize {
    let mut digits = 1;
    while digits < 20 && v / 10u64.pow(digits as u32) > 0 {
        digits += 1;
    }
    let mut rest = v;
    for i in (0..digits).rev() {
        // SAFETY: i < digits <= 20.
        unsafe { std::ptr::write_volatile(out.add(i), b'0' + (rest % 10) as u8) };
        rest /= 10;
    }
    digits
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every cgroup.procs the primer would try for a /proc/self/cgroup text, in order.
    fn candidates(text: &str) -> Vec<String> {
        let mut out = vec![0xffu8; 4160];
        let mut state = 0;
        let mut all = Vec::new();
        // SAFETY: buffers of the lengths given.
        while let Some(n) = unsafe {
            procs_path(
                text.as_ptr(),
                text.len(),
                &mut state,
                out.as_mut_ptr(),
                out.len(),
            )
        } {
            assert_eq!(out[n], 0, "NUL-terminated");
            all.push(String::from_utf8(out[..n].to_vec()).unwrap());
        }
        all
    }

    #[test]
    fn the_cgroup2_line_comes_first_then_the_v1_ones() {
        let hybrid = "12:pids:/user.slice/u.scope\n11:cpu,cpuacct:/user.slice\n\
                      1:name=systemd:/user.slice/u.scope\n0::/user.slice/u.scope\n";
        assert_eq!(
            candidates(hybrid),
            [
                "/sys/fs/cgroup/unified/user.slice/u.scope/cgroup.procs",
                "/sys/fs/cgroup/user.slice/u.scope/cgroup.procs",
                "/sys/fs/cgroup/pids/user.slice/u.scope/cgroup.procs",
                "/sys/fs/cgroup/cpu,cpuacct/user.slice/cgroup.procs",
                "/sys/fs/cgroup/systemd/user.slice/u.scope/cgroup.procs",
            ]
        );
        // Pure cgroup2, at the root; no trailing newline.
        assert_eq!(
            candidates("0::/"),
            [
                "/sys/fs/cgroup/unified//cgroup.procs",
                "/sys/fs/cgroup//cgroup.procs"
            ]
        );
    }

    #[test]
    fn odd_or_oversized_text_yields_nothing_or_fits() {
        assert!(candidates("").is_empty());
        assert!(candidates("no colons here\n\n::\n1::/x\n").is_empty());
        // A path longer than the buffer is skipped, the next line still tried.
        let long = format!("0::/{}\n3:pids:/p\n", "a".repeat(5000));
        assert_eq!(candidates(&long), ["/sys/fs/cgroup/pids/p/cgroup.procs"]);
        // Outside the cgroup namespace (a process that entered it with setns): its root's
        // cgroup.procs would be somebody else's cgroup.
        assert!(candidates("3:pids:/../x\n0::/..\n").is_empty());
    }

    #[test]
    fn arguments_match_whole_and_numbers_print() {
        // SAFETY: NUL-terminated literals, a 20-byte buffer.
        unsafe {
            assert!(equals(c"run".as_ptr().cast(), b"run\0"));
            assert!(!equals(c"running".as_ptr().cast(), b"run\0"));
            assert!(!equals(c"ru".as_ptr().cast(), b"run\0"));
            assert!(is_bus_variable(
                c"DBUS_SYSTEM_BUS_ADDRESS=unix:path=/x".as_ptr().cast()
            ));
            assert!(!is_bus_variable(
                c"DBUS_SYSTEM_BUS_ADDRESSX=1".as_ptr().cast()
            ));
            assert!(!is_bus_variable(c"DBUS".as_ptr().cast()));
            let mut d = [0u8; 20];
            for v in [0, 7, 10, 4194304, u64::MAX] {
                let n = decimal(v, d.as_mut_ptr());
                assert_eq!(&d[..n], v.to_string().as_bytes());
            }
        }
    }
}
