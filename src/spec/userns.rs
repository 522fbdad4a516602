//! `--private-users` and `--private-users-ownership`, with systemd-nspawn's meanings: which
//! host ids the container's 0..COUNT map to, and how the tree's ownership follows.
//!
//! `pick` chooses a 64K-aligned range from the machine name as nspawn does, takes a lock on it
//! for berth's lifetime (so two containers never share a range), and checks it against the
//! host's passwd and group files.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Mutex;

pub const RANGE: u32 = 0x10000;
const PICK_MIN: u32 = 0x0008_0000;
const PICK_MAX: u32 = 0x6FFF_0000;
pub const LOCK_DIR: &str = "/run/berth/uid-range";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    No,
    /// Shift from the owner of the tree's root directory.
    Yes,
    Pick,
    Identity,
    Fixed {
        base: u32,
        count: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    Off,
    Chown,
    Map,
    Auto,
}

impl Ownership {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Chown => "chown",
            Self::Map => "map",
            Self::Auto => "auto",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "off" | "no" => Self::Off,
            "chown" => Self::Chown,
            "map" => Self::Map,
            "auto" => Self::Auto,
            _ => return None,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error("--private-users={0:?}: expected no, yes, pick, identity or UID[:COUNT]")]
    Syntax(String),
    #[error("--private-users-ownership={0:?}: expected off, chown, map or auto")]
    OwnershipSyntax(String),
    #[error(
        "--private-users: range {base}..{end} is invalid (COUNT must be 1..65536 and the range below 2^32-1)"
    )]
    BadRange { base: u32, end: u64 },
    #[error("--private-users: range {base}..{end} overlaps host {kind} {name:?} ({id})")]
    HostOverlap {
        base: u32,
        end: u64,
        kind: &'static str,
        name: String,
        id: u32,
    },
    #[error("--private-users: range {base}..{end} is in use by another container")]
    InUse { base: u32, end: u64 },
    #[error(
        "--private-users: a range of {count} ids is too small for the tree, whose {what} uses id {id}"
    )]
    TooSmall { count: u32, what: String, id: u32 },
    #[error("--private-users=pick: no free range found")]
    NoneFree,
    #[error("--private-users: the kernel does not offer user namespaces ({0})")]
    Unsupported(String),
    #[error("--private-users: {0}")]
    Io(#[from] std::io::Error),
}

pub fn parse_mode(s: &str) -> Result<Mode, UsernsError> {
    Ok(match s {
        "no" | "false" | "0" | "off" => Mode::No,
        "yes" | "true" | "1" | "on" => Mode::Yes,
        "pick" => Mode::Pick,
        "identity" => Mode::Identity,
        _ => {
            let (b, c) = s.split_once(':').unwrap_or((s, "65536"));
            let base: u32 = b.parse().map_err(|_| UsernsError::Syntax(s.into()))?;
            let count: u32 = c.parse().map_err(|_| UsernsError::Syntax(s.into()))?;
            Mode::Fixed { base, count }
        }
    })
}

/// The ids the container's 0.. map to, resolved to numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub base: u32,
    pub count: u32,
}

/// Locks held for berth's lifetime: a picked or fixed range stays ours until we exit.
static LOCKS: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// Whether this kernel can create user namespaces at all (for -U's "when it can" rule).
pub fn kernel_supports() -> Result<(), UsernsError> {
    if !Path::new("/proc/self/ns/user").exists() {
        return Err(UsernsError::Unsupported("no /proc/self/ns/user".into()));
    }
    if let Ok(s) = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        && s.trim() == "0"
    {
        return Err(UsernsError::Unsupported(
            "user.max_user_namespaces is 0".into(),
        ));
    }
    Ok(())
}

/// nspawn's candidate for a machine name, as a stable 64-bit FNV-1a folded into the pick window.
fn candidate(name: &str, attempt: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes().chain(attempt.to_le_bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let span = (PICK_MAX - PICK_MIN) as u64;
    ((PICK_MIN as u64 + h % span) as u32) & !(RANGE - 1)
}

/// Resolves the mode to a range for `root` and machine `name`, locking it. `None` for `no`.
pub fn resolve(mode: Mode, root: &Path, name: &str) -> Result<Option<Range>, UsernsError> {
    let range = match mode {
        Mode::No => return Ok(None),
        Mode::Identity => {
            return Ok(Some(Range {
                base: 0,
                count: RANGE,
            }));
        }
        Mode::Yes => {
            use std::os::unix::fs::MetadataExt;
            let owner = std::fs::metadata(root)?.uid();
            if owner == 0 {
                // A root-owned tree under "yes" is nspawn's identity mapping.
                return Ok(Some(Range {
                    base: 0,
                    count: RANGE,
                }));
            }
            Range {
                base: owner,
                count: RANGE,
            }
        }
        Mode::Fixed { base, count } => Range { base, count },
        Mode::Pick => return pick(name, root).map(Some),
    };
    check(range, root)?;
    Ok(Some(range))
}

fn end(r: Range) -> u64 {
    r.base as u64 + r.count as u64
}

/// Validates a range, locks it, and checks it against the host's users and the tree's.
fn check(r: Range, root: &Path) -> Result<(), UsernsError> {
    if r.count == 0 || r.count > RANGE || end(r) > u32::MAX as u64 {
        return Err(UsernsError::BadRange {
            base: r.base,
            end: end(r),
        });
    }
    {
        if let Some((kind, name, id)) = host_overlap(r) {
            return Err(UsernsError::HostOverlap {
                base: r.base,
                end: end(r),
                kind,
                name,
                id,
            });
        }
    }
    if !lock(r)? {
        return Err(UsernsError::InUse {
            base: r.base,
            end: end(r),
        });
    }
    if let Some((what, id)) = tree_needs(root, r.count) {
        return Err(UsernsError::TooSmall {
            count: r.count,
            what,
            id,
        });
    }
    Ok(())
}

fn pick(name: &str, root: &Path) -> Result<Range, UsernsError> {
    for attempt in 0..100 {
        let r = Range {
            base: candidate(name, attempt),
            count: RANGE,
        };
        if host_overlap(r).is_some() {
            continue;
        }
        if lock(r)? {
            if let Some((what, id)) = tree_needs(root, r.count) {
                return Err(UsernsError::TooSmall {
                    count: r.count,
                    what,
                    id,
                });
            }
            return Ok(r);
        }
    }
    Err(UsernsError::NoneFree)
}

/// flock on a file named after the base: free when no living berth holds it.
fn lock(r: Range) -> Result<bool, UsernsError> {
    std::fs::create_dir_all(LOCK_DIR)?;
    let f = File::create(Path::new(LOCK_DIR).join(format!("{:08x}", r.base)))?;
    // SAFETY: flock on our own fd.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Ok(false)
        } else {
            Err(e.into())
        };
    }
    LOCKS.lock().unwrap_or_else(|e| e.into_inner()).push(f);
    Ok(true)
}

/// A host user or group whose id falls in the range, from the host's own files.
fn host_overlap(r: Range) -> Option<(&'static str, String, u32)> {
    for (kind, path) in [("user", "/etc/passwd"), ("group", "/etc/group")] {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        for line in text.lines() {
            let f: Vec<&str> = line.split(':').collect();
            let Some(id) = f.get(2).and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if (id as u64) >= r.base as u64 && (id as u64) < end(r) {
                return Some((kind, f[0].to_string(), id));
            }
        }
    }
    None
}

/// The largest id the tree's own passwd/group name (nobody aside), if `count` cannot hold it.
fn tree_needs(root: &Path, count: u32) -> Option<(String, u32)> {
    for db in ["etc/passwd", "etc/group"] {
        // Read through the tree's root handle: the tree is untrusted.
        let Ok(rootfd) = File::open(root) else {
            continue;
        };
        let c = std::ffi::CString::new(format!("/{db}")).ok()?;
        let Ok(fd) =
            crate::sys::open_in_root(std::os::fd::AsFd::as_fd(&rootfd), &c, libc::O_RDONLY)
        else {
            continue;
        };
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(
            &mut std::io::Read::take(File::from(fd), 16 << 20),
            &mut text,
        );
        for line in text.lines() {
            let f: Vec<&str> = line.split(':').collect();
            let Some(id) = f.get(2).and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if id >= count && id != 65534 && id != 65535 {
                return Some((format!("/{db} entry {:?}", f[0]), id));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nspawn_modes() {
        assert_eq!(parse_mode("pick").unwrap(), Mode::Pick);
        assert_eq!(parse_mode("no").unwrap(), Mode::No);
        assert_eq!(parse_mode("yes").unwrap(), Mode::Yes);
        assert_eq!(parse_mode("identity").unwrap(), Mode::Identity);
        assert_eq!(
            parse_mode("524288").unwrap(),
            Mode::Fixed {
                base: 524288,
                count: 65536
            }
        );
        assert_eq!(
            parse_mode("524288:1000").unwrap(),
            Mode::Fixed {
                base: 524288,
                count: 1000
            }
        );
        assert!(parse_mode("lots").is_err());
        assert!(parse_mode("5:x").is_err());
    }

    #[test]
    fn candidates_are_aligned_in_the_window_and_stable() {
        for name in ["a", "web", "debian-12", "x".repeat(64).as_str()] {
            for attempt in 0..20 {
                let c = candidate(name, attempt);
                assert_eq!(c % RANGE, 0);
                assert!((PICK_MIN..PICK_MAX).contains(&c), "{c:#x}");
            }
        }
        assert_eq!(candidate("web", 0), candidate("web", 0));
        assert_ne!(candidate("web", 0), candidate("db", 0));
    }

    #[test]
    fn ranges_over_host_users_are_refused() {
        // root is uid 0 on every host.
        let r = Range { base: 0, count: 10 };
        assert!(host_overlap(r).is_some());
        let r = Range {
            base: 0x7000_0000,
            count: RANGE,
        };
        assert!(host_overlap(r).is_none());
    }
}
