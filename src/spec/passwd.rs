//! `-u/--user` is looked up in the container's own /etc/passwd and /etc/group, parsed here and
//! read through the tree's root handle: never the host's NSS, never a symlink out of the tree.

use crate::sys;
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
    /// Supplementary groups: every group in /etc/group that lists the user.
    pub groups: Vec<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("user {0:?} not found in the container's /etc/passwd")]
    NoSuchUser(String),
    #[error("reading the container's {path}: {source}")]
    Read {
        path: &'static str,
        source: std::io::Error,
    },
}

const MAX_DB: u64 = 16 << 20;

fn read_db(root: &OwnedFd, path: &'static str) -> Result<Option<String>, LookupError> {
    let c = CString::new(path).expect("static path");
    let fd = match sys::open_in_root(root.as_fd(), &c, libc::O_RDONLY | libc::O_NOCTTY) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(None),
        Err(e) => {
            return Err(LookupError::Read {
                path,
                source: e.into(),
            });
        }
    };
    let mut s = String::new();
    std::fs::File::from(fd)
        .take(MAX_DB)
        .read_to_string(&mut s)
        .map_err(|source| LookupError::Read { path, source })?;
    Ok(Some(s))
}

/// Resolves NAME or a numeric UID. A numeric UID absent from passwd is allowed (as nspawn's
/// "uid" form), with gid = uid, home "/" and no supplementary groups.
pub fn lookup(root: &OwnedFd, spec: &str) -> Result<User, LookupError> {
    let passwd = read_db(root, "/etc/passwd")?.unwrap_or_default();
    let numeric: Option<u32> = spec.parse().ok();
    let found = parse_passwd(&passwd).find(|u| match numeric {
        Some(uid) => u.uid == uid,
        None => u.name == spec,
    });
    let mut user = match (found, numeric) {
        (Some(u), _) => u,
        (None, Some(uid)) => User {
            name: uid.to_string(),
            uid,
            gid: uid,
            home: "/".into(),
            shell: "/bin/sh".into(),
            groups: vec![],
        },
        (None, None) => return Err(LookupError::NoSuchUser(spec.into())),
    };
    if let Some(group) = read_db(root, "/etc/group")? {
        user.groups = supplementary(&group, &user.name, user.gid);
    }
    Ok(user)
}

fn parse_passwd(text: &str) -> impl Iterator<Item = User> + '_ {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 || f[0].is_empty() || f[0].starts_with(['#', '+', '-']) {
            return None;
        }
        Some(User {
            name: f[0].into(),
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: if f[5].is_empty() {
                "/".into()
            } else {
                f[5].into()
            },
            shell: if f[6].is_empty() {
                "/bin/sh".into()
            } else {
                f[6].into()
            },
            groups: vec![],
        })
    })
}

fn supplementary(group: &str, user: &str, primary: u32) -> Vec<u32> {
    let mut out = vec![primary];
    for line in group.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 {
            continue;
        }
        let Ok(gid) = f[2].parse::<u32>() else {
            continue;
        };
        if f[3].split(',').any(|m| m.trim() == user) && !out.contains(&gid) {
            out.push(gid);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_passwd_and_skips_junk() {
        let db = "root:x:0:0:root:/root:/bin/sh\n# comment\nbroken\n+nis\nweb:x:1000:100::/srv:\n";
        let users: Vec<User> = parse_passwd(db).collect();
        assert_eq!(users.len(), 2);
        assert_eq!(users[1].name, "web");
        assert_eq!((users[1].uid, users[1].gid), (1000, 100));
        assert_eq!(users[1].home, "/srv");
        assert_eq!(users[1].shell, "/bin/sh");
    }

    #[test]
    fn supplementary_groups_come_from_membership() {
        let db = "users:x:100:\nwheel:x:10:root,web\naudio:x:29:web\nbad:x:zz:web\n";
        assert_eq!(supplementary(db, "web", 100), vec![100, 10, 29]);
    }
}
