//! The supervisor's half of a user namespace: the one-line uid/gid map (machinectl's
//! copy-to, bind and GetUIDShift rely on one line), and the tree's ownership: an idmapped
//! mount of the root (the tree on disk stays unshifted) or, as a recorded fallback, a
//! one-time recursive chown.

use crate::spec::userns::Ownership;
use crate::sys;
use oci_spec::runtime::{LinuxIdMapping, Spec};
use std::fs;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum UsernsSetupError {
    #[error("writing {path}: {source}")]
    Map {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the file system of {root} cannot do idmapped mounts ({source}); use --private-users-ownership=chown or auto"
    )]
    NoIdmap {
        root: String,
        source: nix::errno::Errno,
    },
    #[error("opening the container's user namespace: {0}")]
    Ns(std::io::Error),
    #[error("shifting ownership of {path}: {source}")]
    Chown {
        path: String,
        source: std::io::Error,
    },
}

fn one(m: &Option<Vec<LinuxIdMapping>>) -> Option<(u32, u32)> {
    m.as_ref()
        .and_then(|v| v.first())
        .map(|m| (m.host_id(), m.size()))
}

/// The spec's (base, count) of the uid map.
pub fn range(spec: &Spec) -> Option<(u32, u32)> {
    one(spec.linux().as_ref()?.uid_mappings())
}

pub fn write_maps(spec: &Spec, pid: libc::pid_t) -> Result<(), UsernsSetupError> {
    let linux = spec.linux().as_ref();
    for (file, maps) in [
        ("uid_map", linux.and_then(|l| l.uid_mappings().clone())),
        ("gid_map", linux.and_then(|l| l.gid_mappings().clone())),
    ] {
        let text: String = maps
            .unwrap_or_default()
            .iter()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect();
        let path = format!("/proc/{pid}/{file}");
        // One write: the kernel accepts a map only once, whole.
        fs::write(&path, text).map_err(|source| UsernsSetupError::Map { path, source })?;
    }
    Ok(())
}

/// Makes the tree's ownership follow the namespace. Returns the mode actually used.
pub fn ownership(
    mode: Ownership,
    root_tree: BorrowedFd<'_>,
    root: &Path,
    pid: libc::pid_t,
    (base, count): (u32, u32),
) -> Result<Ownership, UsernsSetupError> {
    match mode {
        Ownership::Off => Ok(Ownership::Off),
        Ownership::Map | Ownership::Auto => {
            let ns: OwnedFd = fs::File::open(format!("/proc/{pid}/ns/user"))
                .map_err(UsernsSetupError::Ns)?
                .into();
            let idmapped =
                sys::mount_setattr_userns(root_tree, sys::MOUNT_ATTR_IDMAP, true, Some(ns.as_fd()));
            match (idmapped, mode) {
                (Ok(()), _) => Ok(Ownership::Map),
                (Err(_), Ownership::Auto) => {
                    chown_tree(root, base, count).map(|_| Ownership::Chown)
                }
                (Err(source), _) => Err(UsernsSetupError::NoIdmap {
                    root: root.display().to_string(),
                    source,
                }),
            }
        }
        Ownership::Chown => chown_tree(root, base, count).map(|_| Ownership::Chown),
    }
}

/// Shifts every owner in the tree into [base, base+count), once: the root directory's owner
/// records the shift (as nspawn does), so a tree already at `base` is left alone, and one at
/// another base is moved from there.
fn chown_tree(root: &Path, base: u32, count: u32) -> Result<(), UsernsSetupError> {
    let err = |p: &Path| {
        let path = p.display().to_string();
        move |source| UsernsSetupError::Chown { path, source }
    };
    let md = fs::symlink_metadata(root).map_err(err(root))?;
    if md.uid() == base && md.gid() == base {
        return Ok(());
    }
    let old = md.uid() & !0xFFFF;
    let shift = |id: u32| -> u32 {
        let rel = id.wrapping_sub(old);
        if id >= old && rel < count {
            base + rel
        } else {
            id
        }
    };
    let mut stack = vec![root.to_path_buf()];
    // The root's own owner changes last: it is the record that the walk completed.
    let mut root_md = None;
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).map_err(err(&dir))? {
            let entry = entry.map_err(err(&dir))?;
            let p = entry.path();
            let md = fs::symlink_metadata(&p).map_err(err(&p))?;
            lchown_keep_mode(&p, &md, shift(md.uid()), shift(md.gid())).map_err(err(&p))?;
            if md.file_type().is_dir() {
                stack.push(p);
            }
        }
        if dir == root {
            root_md = Some(fs::symlink_metadata(root).map_err(err(root))?);
        }
    }
    if let Some(md) = root_md {
        lchown_keep_mode(root, &md, base, base).map_err(err(root))?;
    }
    Ok(())
}

/// chown clears setuid/setgid bits; put them back, as a shift must not change modes.
fn lchown_keep_mode(p: &Path, md: &fs::Metadata, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))?;
    if !md.file_type().is_symlink() && md.mode() & 0o6000 != 0 {
        fs::set_permissions(p, fs::Permissions::from_mode(md.mode() & 0o7777))?;
    }
    Ok(())
}
