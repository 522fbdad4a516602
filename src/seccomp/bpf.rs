//! Compiling an OCI `LinuxSeccomp` to BPF in the parent, loading it in the child.
//!
//! [`compile`] runs before clone and may allocate freely; [`Bpf::load`] runs in the container's
//! child just before exec and does nothing but `seccomp(SECCOMP_SET_MODE_FILTER)` calls on
//! memory prepared here. The child must either have set no_new_privs or still hold
//! CAP_SYS_ADMIN when it calls `load` (runc's order: load before dropping capabilities when
//! no_new_privs is off); the default filter allows what comes after (capset, prctl,
//! setresuid, setgroups, close_range, execve).
//!
//! A profile may contain conditional deny rules on a call it also allows unconditionally. In one
//! libseccomp filter the unconditional allow would win, so those rules go into a second filter
//! whose default is ALLOW; the kernel runs both and the stricter result wins. It is loaded
//! first, so a profile that denies `seccomp` itself still loads.
//!
//! libseccomp needs a few milliseconds for berth's profile (see the tests), so the exported BPF
//! is cached under /run/berth/seccomp/, keyed by a sha256 of the profile JSON, the libseccomp
//! version, the architecture and this compiler's format. Entries carry their own checksum; a
//! corrupt or truncated entry is ignored and rewritten (atomically, via rename).

use super::SeccompError;
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::io::{Read, Seek, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const DEFAULT_CACHE_DIR: &str = "/run/berth/seccomp";

/// Bump when the compilation scheme changes, so old cache entries are not reused.
const FORMAT: u32 = 1;
const MAGIC: &[u8; 8] = b"BERTHBPF";
const MAX_INSNS: usize = 4096;
/// Entries kept in the cache directory; older ones are removed when a new one is written.
const MAX_ENTRIES: usize = 32;

/// One or more BPF programs, ready for the kernel, in load order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bpf {
    filters: Vec<Vec<libc::sock_filter>>,
    flags: libc::c_uint,
}

impl Bpf {
    /// Installs the filters on the calling thread. Allocation-free; safe after fork.
    pub fn load(&self) -> Result<(), SeccompError> {
        const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
        for f in &self.filters {
            let prog = libc::sock_fprog {
                len: f.len() as libc::c_ushort,
                filter: f.as_ptr() as *mut libc::sock_filter,
            };
            // SAFETY: prog points to a valid program that outlives the call.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    SECCOMP_SET_MODE_FILTER,
                    self.flags as libc::c_ulong,
                    &prog as *const libc::sock_fprog,
                )
            };
            if r != 0 {
                return Err(SeccompError::Load(nix::errno::Errno::last()));
            }
        }
        Ok(())
    }

    /// Number of BPF programs (1, or 2 with an argument filter).
    #[cfg(test)]
    pub fn programs(&self) -> usize {
        self.filters.len()
    }

    /// Total instructions over all programs.
    pub fn instructions(&self) -> usize {
        self.filters.iter().map(Vec::len).sum()
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.instructions() * 8 + 32);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT.to_ne_bytes());
        out.extend_from_slice(&self.flags.to_ne_bytes());
        out.extend_from_slice(&(self.filters.len() as u32).to_ne_bytes());
        for f in &self.filters {
            out.extend_from_slice(&(f.len() as u32).to_ne_bytes());
            for i in f {
                out.extend_from_slice(&i.code.to_ne_bytes());
                out.push(i.jt);
                out.push(i.jf);
                out.extend_from_slice(&i.k.to_ne_bytes());
            }
        }
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out
    }

    fn decode(buf: &[u8]) -> Option<Bpf> {
        let (body, sum) = buf.split_at_checked(buf.len().checked_sub(32)?)?;
        if Sha256::digest(body).as_slice() != sum {
            return None;
        }
        let mut r = Reader(body);
        if r.take(8)? != MAGIC || r.u32()? != FORMAT {
            return None;
        }
        let flags = r.u32()?;
        let n = r.u32()? as usize;
        if n == 0 || n > 2 {
            return None;
        }
        let mut filters = Vec::with_capacity(n);
        for _ in 0..n {
            let len = r.u32()? as usize;
            if len == 0 || len > MAX_INSNS {
                return None;
            }
            filters.push(insns(r.take(len * 8)?)?);
        }
        r.0.is_empty().then_some(Bpf { filters, flags })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (a, b) = self.0.split_at_checked(n)?;
        self.0 = b;
        Some(a)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_ne_bytes(self.take(4)?.try_into().ok()?))
    }
}

/// libseccomp's exported program: native-endian `struct sock_filter`s.
fn insns(raw: &[u8]) -> Option<Vec<libc::sock_filter>> {
    if raw.is_empty() || !raw.len().is_multiple_of(8) {
        return None;
    }
    Some(
        raw.chunks_exact(8)
            .map(|c| libc::sock_filter {
                code: u16::from_ne_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect(),
    )
}

/// Compiles a profile, using the cache under [`DEFAULT_CACHE_DIR`] when it is usable.
pub fn compile(profile: &LinuxSeccomp) -> Result<Bpf, SeccompError> {
    compile_cached(profile, Some(Path::new(DEFAULT_CACHE_DIR)))
}

/// Compiles a profile, reading and filling the cache in `dir` if given. A cache that cannot be
/// used (not a root-owned private directory, read-only, corrupt entry) never fails the call.
pub fn compile_cached(profile: &LinuxSeccomp, dir: Option<&Path>) -> Result<Bpf, SeccompError> {
    let Some(dir) = dir.filter(|d| usable_cache_dir(d)) else {
        return compile_uncached(profile);
    };
    let path = dir.join(format!("{}.bpf", cache_key(profile)?));
    if let Some(bpf) = read_entry(&path) {
        return Ok(bpf);
    }
    let bpf = compile_uncached(profile)?;
    if write_entry(&path, &bpf.encode()).is_ok() {
        prune(dir, MAX_ENTRIES);
    }
    Ok(bpf)
}

fn cache_key(profile: &LinuxSeccomp) -> Result<String, SeccompError> {
    let json = serde_json::to_vec(profile).map_err(|e| SeccompError::Compile(e.to_string()))?;
    let v = libseccomp::ScmpVersion::current().map_err(|e| SeccompError::Compile(e.to_string()))?;
    let mut h = Sha256::new();
    h.update(b"berth-seccomp\0");
    h.update(FORMAT.to_ne_bytes());
    h.update(&json);
    h.update(format!(
        "\0libseccomp {}.{}.{}\0",
        v.major, v.minor, v.micro
    ));
    h.update(std::env::consts::ARCH);
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The cache directory must be ours and not writable by anyone else (its files are trusted).
fn usable_cache_dir(dir: &Path) -> bool {
    let _ = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir);
    match std::fs::symlink_metadata(dir) {
        Ok(m) => m.is_dir() && m.uid() == nix::unistd::geteuid().as_raw() && m.mode() & 0o022 == 0,
        Err(_) => false,
    }
}

fn read_entry(path: &Path) -> Option<Bpf> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    let mut buf = Vec::new();
    Read::by_ref(&mut f)
        .take(1 << 20)
        .read_to_end(&mut buf)
        .ok()?;
    Bpf::decode(&buf)
}

fn write_entry(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp: PathBuf = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let res = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(data)?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Keeps the `keep` most recently written entries (one per distinct profile: capabilities and
/// --system-call-filter make them differ), so the directory cannot grow without bound.
pub(crate) fn prune(dir: &Path, keep: usize) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<(std::time::SystemTime, PathBuf)> = rd
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".bpf"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if entries.len() <= keep {
        return;
    }
    entries.sort();
    for (_, p) in &entries[..entries.len() - keep] {
        let _ = std::fs::remove_file(p);
    }
}

fn lerr(what: impl std::fmt::Display, e: libseccomp::error::SeccompError) -> SeccompError {
    SeccompError::Compile(format!("{what}: {e}"))
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction, SeccompError> {
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => {
            ScmpAction::Errno(errno.unwrap_or(libc::EPERM as u32) as i32)
        }
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(errno.unwrap_or(0) as u16),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(SeccompError::Compile(
                "SCMP_ACT_NOTIFY is not supported by berth".into(),
            ));
        }
    })
}

fn arch(a: Arch) -> Result<ScmpArch, SeccompError> {
    Ok(match a {
        Arch::ScmpArchNative => ScmpArch::native(),
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        other => {
            return Err(SeccompError::Compile(format!(
                "architecture {other:?} is not supported by berth"
            )));
        }
    })
}

fn compare(a: &oci_spec::runtime::LinuxSeccompArg) -> ScmpArgCompare {
    let index = a.index() as u32;
    let (op, datum) = match a.op() {
        LinuxSeccompOperator::ScmpCmpNe => (ScmpCompareOp::NotEqual, a.value()),
        LinuxSeccompOperator::ScmpCmpLt => (ScmpCompareOp::Less, a.value()),
        LinuxSeccompOperator::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, a.value()),
        LinuxSeccompOperator::ScmpCmpEq => (ScmpCompareOp::Equal, a.value()),
        LinuxSeccompOperator::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, a.value()),
        LinuxSeccompOperator::ScmpCmpGt => (ScmpCompareOp::Greater, a.value()),
        LinuxSeccompOperator::ScmpCmpMaskedEq => (
            ScmpCompareOp::MaskedEqual(a.value()),
            a.value_two().unwrap_or(0),
        ),
    };
    ScmpArgCompare::new(index, op, datum)
}

fn new_context(
    default: ScmpAction,
    arches: &[ScmpArch],
) -> Result<ScmpFilterContext, SeccompError> {
    let mut ctx = ScmpFilterContext::new(default).map_err(|e| lerr("creating a filter", e))?;
    for &a in arches {
        if !ctx
            .is_arch_present(a)
            .map_err(|e| lerr("architecture", e))?
        {
            ctx.add_arch(a)
                .map_err(|e| lerr(format!("adding {a:?}"), e))?;
        }
    }
    ctx.set_act_badarch(ScmpAction::KillProcess)
        .and_then(|c| c.set_ctl_nnp(false))
        .and_then(|c| c.set_ctl_optimize(2))
        .map_err(|e| lerr("filter attributes", e))?;
    Ok(ctx)
}

/// Compiles a profile with libseccomp, without the cache. Names libseccomp does not know for any
/// of the profile's architectures are skipped (they then get the default action), as runc does.
pub fn compile_uncached(profile: &LinuxSeccomp) -> Result<Bpf, SeccompError> {
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let mut arches = vec![ScmpArch::native()];
    for a in profile.architectures().iter().flatten() {
        arches.push(arch(*a)?);
    }
    let syscalls = profile.syscalls().as_deref().unwrap_or_default();

    let unconditional_allow: BTreeSet<&str> = syscalls
        .iter()
        .filter(|r| r.action() == LinuxSeccompAction::ScmpActAllow)
        .filter(|r| r.args().as_ref().is_none_or(Vec::is_empty))
        .flat_map(|r| r.names().iter().map(String::as_str))
        .collect();

    let mut main = new_context(default, &arches)?;
    let mut args_filter: Option<ScmpFilterContext> = None;

    for r in syscalls {
        let act = action(r.action(), r.errno_ret())?;
        let cmps: Vec<ScmpArgCompare> = r.args().iter().flatten().map(compare).collect();
        for name in r.names() {
            let Ok(sc) = ScmpSyscall::from_name(name) else {
                continue;
            };
            let to_args_filter = !cmps.is_empty()
                && act != ScmpAction::Allow
                && unconditional_allow.contains(name.as_str());
            let ctx = if to_args_filter {
                if args_filter.is_none() {
                    args_filter = Some(new_context(ScmpAction::Allow, &arches)?);
                }
                args_filter.as_mut().expect("just created")
            } else {
                if act == default {
                    continue; // libseccomp refuses rules that repeat the default action
                }
                &mut main
            };
            let res = if cmps.is_empty() {
                ctx.add_rule(act, sc)
            } else {
                ctx.add_rule_conditional(act, sc, &cmps)
            };
            res.map_err(|e| lerr(format!("rule for {name}"), e))?;
        }
    }

    let mut flags = 0;
    for f in profile.flags().iter().flatten() {
        flags |= match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => 2,
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => 1,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => 4,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 32,
        };
    }
    let mut filters = Vec::new();
    if let Some(ctx) = &args_filter {
        filters.push(export(ctx)?);
    }
    filters.push(export(&main)?);
    Ok(Bpf { filters, flags })
}

/// libseccomp 2.5 has no export to memory: export into a memfd and read it back.
fn export(ctx: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let io = |e: std::io::Error| SeccompError::Compile(format!("exporting the filter: {e}"));
    // SAFETY: plain syscall; the returned fd is owned below.
    let fd = unsafe { libc::memfd_create(c"berth-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io(std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    ctx.export_bpf(&file)
        .map_err(|e| lerr("exporting the filter", e))?;
    file.rewind().map_err(io)?;
    let mut raw = Vec::new();
    file.read_to_end(&mut raw).map_err(io)?;
    let prog = insns(&raw).ok_or_else(|| SeccompError::Compile("empty BPF program".into()))?;
    if prog.len() > MAX_INSNS {
        return Err(SeccompError::Compile(format!(
            "BPF program has {} instructions, the kernel takes at most {MAX_INSNS}",
            prog.len()
        )));
    }
    Ok(prog)
}
