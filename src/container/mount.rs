//! The container's file system, as nspawn's container interface promises it (nspawn-mount.c).
//!
//! Three phases. The supervisor, before clone, takes detached copies (open_tree) of the tree
//! and of every host path the container will see ([`capture`]): the tree can then be idmapped
//! for a user namespace, and the container's root never needs host privileges to reach them.
//! The container, in its fresh mount namespace, attaches the tree, mounts /proc and /sys into
//! it and pivots ([`prepare`]). After pivot_root the host is gone from view, so every path
//! below is the container's own: API file systems, device nodes, masks and binds are attached
//! there ([`mount_all`], [`protect`]), bind destinations resolved with RESOLVE_IN_ROOT so a
//! symlink in the tree cannot redirect them.

use super::error::{Ctx, SetupError};
use crate::sys;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, SFlag, mknod};
use nix::unistd::{chdir, pivot_root};
use oci_spec::runtime::{LinuxDeviceType, Mount, Spec};
use std::ffi::CString;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).expect("paths have no NUL")
}

fn opts(m: &Mount) -> &[String] {
    m.options().as_deref().unwrap_or(&[])
}

/// Splits OCI mount options into flags and the data string for mount(2).
fn parse_options(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        match o.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => {}
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "bind" | "rbind" => {}
            other => data.push(other),
        }
    }
    (flags, data.join(","))
}

/// Everything of the host that the container will see, captured by the supervisor as
/// detached mount trees before clone: the tree itself (so it can be idmapped), bind sources
/// (by index into `spec.mounts`), and, for a user namespace, what its root may not create
/// itself (device nodes; sysfs of a network namespace it does not own).
pub struct Captured {
    pub root: OwnedFd,
    binds: Vec<Option<OwnedFd>>,
    devices: Vec<(std::path::PathBuf, OwnedFd)>,
    sysfs: Option<OwnedFd>,
}

fn attrs_of(options: &[String]) -> u64 {
    let (flags, _) = parse_options(options);
    let mut attrs = 0;
    for (f, a) in [
        (MsFlags::MS_RDONLY, sys::MOUNT_ATTR_RDONLY),
        (MsFlags::MS_NOSUID, sys::MOUNT_ATTR_NOSUID),
        (MsFlags::MS_NODEV, sys::MOUNT_ATTR_NODEV),
        (MsFlags::MS_NOEXEC, sys::MOUNT_ATTR_NOEXEC),
    ] {
        if flags.contains(f) {
            attrs |= a;
        }
    }
    attrs
}

/// A detached copy of `path` (recursive or not) with the mount flags `attrs`. It is made a
/// slave of the host's mount: a clone is the host mount's peer, and a mount the container
/// makes below it (its systemd mounts cgroup2 on the captured /sys/fs/cgroup) would otherwise
/// appear in the host's mount table, tucked under the host's own.
fn clone_tree(path: &Path, recursive: bool, attrs: u64, what: &str) -> Result<OwnedFd, SetupError> {
    let tree = sys::open_tree(libc::AT_FDCWD, &cstr(path), recursive)
        .ctx(format!("capturing {what} {}", path.display()))?;
    sys::mount_make_slave(tree.as_fd(), recursive).ctx(format!(
        "detaching {what} {} from the host's propagation",
        path.display()
    ))?;
    if attrs != 0 {
        sys::mount_setattr(tree.as_fd(), attrs, recursive)
            .ctx(format!("setting mount flags on {what} {}", path.display()))?;
    }
    Ok(tree)
}

/// In the supervisor, before clone.
pub fn capture(spec: &Spec, userns: bool, private_network: bool) -> Result<Captured, SetupError> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| SetupError::msg("spec has no root"))?
        .path();
    let root = clone_tree(root, true, 0, "the root")?;
    let mut binds = Vec::new();
    for m in spec.mounts().as_deref().unwrap_or(&[]) {
        if m.typ().as_deref() != Some("bind") {
            binds.push(None);
            continue;
        }
        let src = m
            .source()
            .as_ref()
            .ok_or_else(|| SetupError::msg("bind mount without a source"))?;
        let recursive = opts(m).iter().any(|o| o == "rbind");
        binds.push(Some(clone_tree(
            src,
            recursive,
            attrs_of(opts(m)),
            "bind source",
        )?));
    }
    let mut devices = Vec::new();
    let mut sysfs = None;
    if userns {
        for d in spec
            .linux()
            .as_ref()
            .and_then(|l| l.devices().clone())
            .unwrap_or_default()
        {
            devices.push((
                d.path().clone(),
                clone_tree(d.path(), false, sys::MOUNT_ATTR_NOEXEC, "device")?,
            ));
        }
        if !private_network {
            // sysfs shows the network namespace it is mounted in; a user namespace's root may
            // mount it only for a network namespace it owns, so the supervisor lends its own.
            let ro = sys::MOUNT_ATTR_RDONLY
                | sys::MOUNT_ATTR_NOSUID
                | sys::MOUNT_ATTR_NODEV
                | sys::MOUNT_ATTR_NOEXEC;
            sysfs = Some(clone_tree(Path::new("/sys"), false, ro, "sysfs")?);
        }
    }
    Ok(Captured {
        root,
        binds,
        devices,
        sysfs,
    })
}

/// In the container, still seeing the host's mount table: attach the tree, mount /proc and
/// /sys into it (a user namespace may mount them only while the host's are still visible in
/// its mount namespace), then pivot_root.
///
/// No path of the tree is looked up here: a user namespace's root may not search the
/// directories above it (machined's /var/lib/machines is 0700). The supervisor entered the
/// tree's directory before clone, so the attach point is "."; the attached tree is entered
/// through its own fd.
pub fn prepare(spec: &Spec, captured: &mut Captured, ephemeral: bool) -> Result<(), SetupError> {
    // Nothing mounted from here on may reach the host; host mounts may still reach us.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx("making / a slave mount")?;
    // The captured tree on top of the tree's own directory: a mount point for pivot_root.
    sys::move_mount(captured.root.as_fd(), c".").ctx("attaching the tree")?;
    nix::unistd::fchdir(&captured.root).ctx("entering the tree")?;
    // open_tree(OPEN_TREE_CLONE) puts the clone in the peer group of the host's mount. On a
    // host whose / is shared (every systemd host), /proc and /sys mounted below would then
    // propagate to the host's own copy of the tree, and pivot_root refuses a shared new root
    // (EINVAL). The container's tree shares nothing with the host.
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx("making the tree a private mount")?;
    if ephemeral {
        // -x/--ephemeral: an overlay with a tmpfs upper layer; leaves us in its root.
        super::ephemeral::overlay_here(captured.root.as_fd())?;
    }
    let rootfd: OwnedFd = fs::File::open(".").ctx("opening the tree")?.into();
    for m in spec.mounts().as_deref().unwrap_or(&[]) {
        let dst = m.destination();
        match m.typ().as_deref() {
            Some("proc") => mount_api_in(&rootfd, m)?,
            Some("sysfs") => match captured.sysfs.take() {
                Some(tree) => {
                    let target = api_target(&rootfd, dst)?;
                    sys::move_mount_to_fd(tree.as_fd(), target.as_fd()).ctx("attaching /sys")?;
                }
                None => mount_api_in(&rootfd, m)?,
            },
            _ => {}
        }
    }
    pivot()
}

/// The mount point of an API file system inside the tree, created if missing: never a
/// symlink, or the tree could send /proc or /sys elsewhere.
fn api_target(rootfd: &OwnedFd, dst: &Path) -> Result<OwnedFd, SetupError> {
    let rel = dst.strip_prefix("/").unwrap_or(dst);
    match nix::sys::stat::mkdirat(rootfd.as_fd(), rel, Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => {
            return Err(SetupError::Sys {
                what: format!("creating {}", dst.display()),
                source: e,
            });
        }
    }
    sys::open_beneath_nosymlinks(rootfd.as_fd(), &cstr(dst)).ctx(format!(
        "{} in the tree (it must be a directory, not a symlink)",
        dst.display()
    ))
}

fn mount_api_in(rootfd: &OwnedFd, m: &Mount) -> Result<(), SetupError> {
    let dst = m.destination();
    let target = api_target(rootfd, dst)?;
    let (flags, data) = parse_options(opts(m));
    let typ = m.typ().as_deref().unwrap_or("tmpfs");
    let path = format!("/proc/self/fd/{}", target.as_raw_fd());
    mount(
        Some(typ),
        path.as_str(),
        Some(typ),
        flags,
        (!data.is_empty()).then_some(data.as_str()),
    )
    .ctx(format!("mounting {typ} on {}", dst.display()))
}

/// Makes the current directory "/" (pivot_root(".", ".") stacks the old root on it, and
/// the detach drops it) and leaves nothing of the host's mount table.
fn pivot() -> Result<(), SetupError> {
    pivot_root(".", ".").ctx("pivot_root")?;
    umount2(".", MntFlags::MNT_DETACH).ctx("detaching the host's root")?;
    chdir("/").ctx("chdir /")?;
    Ok(())
}

/// Creates the mount point for `dst` (a directory, or a file for file binds), following
/// symlinks only inside the container (we are past pivot_root).
fn ensure_target(dst: &Path, dir: bool) -> Result<(), SetupError> {
    ensure_target_depth(dst, dir, 0)
}

fn ensure_target_depth(dst: &Path, dir: bool, depth: u32) -> Result<(), SetupError> {
    if dst.metadata().is_ok() {
        return Ok(());
    }
    if let Ok(link) = fs::read_link(dst) {
        // A dangling symlink in the tree: create what it points to, inside the container
        // (past pivot_root an absolute target resolves in the container's root).
        if depth > 8 {
            return Err(SetupError::msg(format!(
                "{}: too many levels of symbolic links",
                dst.display()
            )));
        }
        let target = dst.parent().unwrap_or(Path::new("/")).join(link);
        return ensure_target_depth(&target, dir, depth + 1);
    }
    if dir {
        fs::create_dir_all(dst).ctx(format!("creating mount point {}", dst.display()))
    } else {
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).ctx(format!("creating {}", parent.display()))?;
        }
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o644)
            .open(dst)
            .map(drop)
            .ctx(format!("creating mount point {}", dst.display()))
    }
}

use std::os::unix::fs::OpenOptionsExt;

/// Opens a mount destination inside the container, symlinks resolved within "/".
fn open_target(dst: &Path) -> Result<OwnedFd, SetupError> {
    let root: OwnedFd = fs::File::open("/").ctx("opening /")?.into();
    sys::open_in_root(root.as_fd(), &cstr(dst), libc::O_PATH)
        .ctx(format!("resolving {}", dst.display()))
}

/// An API file system (proc, sysfs, tmpfs...) at a fixed path; the path must not be a symlink,
/// or the tree could send /proc or /sys somewhere else.
fn mount_api(m: &Mount) -> Result<(), SetupError> {
    let dst = m.destination();
    ensure_target(dst, true)?;
    if dst
        .symlink_metadata()
        .is_ok_and(|md| md.file_type().is_symlink())
    {
        return Err(SetupError::msg(format!(
            "{} is a symlink in the tree; refusing to mount over it",
            dst.display()
        )));
    }
    let (flags, data) = parse_options(opts(m));
    let typ = m.typ().as_deref().unwrap_or("tmpfs");
    let src = m
        .source()
        .as_ref()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| typ.into());
    mount(
        Some(src.as_str()),
        dst,
        Some(typ),
        flags,
        (!data.is_empty()).then_some(data.as_str()),
    )
    .ctx(format!("mounting {typ} on {}", dst.display()))
}

/// Phase two: everything in `spec.mounts` but the cgroup file system (that needs the cgroup
/// namespace, see [`mount_cgroup`]), then device nodes and /run/host.
pub fn mount_all(spec: &Spec, captured: Captured, uuid: &str) -> Result<(), SetupError> {
    let mounts = spec.mounts().as_deref().unwrap_or(&[]);
    let Captured { binds, devices, .. } = captured;
    let mut devices = Some(devices);
    for (m, tree) in mounts.iter().zip(binds) {
        let dst = m.destination();
        match (m.typ().as_deref(), tree) {
            (Some("cgroup2" | "proc" | "sysfs"), _) => continue,
            (Some("bind"), Some(tree)) => {
                let is_dir = nix::sys::stat::fstat(tree.as_fd())
                    .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
                ensure_target(dst, is_dir)?;
                let target = open_target(dst)?;
                sys::move_mount_to_fd(tree.as_fd(), target.as_fd())
                    .ctx(format!("binding onto {}", dst.display()))?;
            }
            (Some("tmpfs"), _) if !is_api(dst) => {
                // A user tmpfs: the destination may be anywhere in the tree; resolve it safely.
                ensure_target(dst, true)?;
                let target = open_target(dst)?;
                let path = format!("/proc/self/fd/{}", target.as_raw_fd());
                let (flags, data) = parse_options(opts(m));
                mount(
                    Some("tmpfs"),
                    path.as_str(),
                    Some("tmpfs"),
                    flags,
                    Some(data.as_str()),
                )
                .ctx(format!("mounting tmpfs on {}", dst.display()))?;
            }
            _ => {
                mount_api(m)?;
                if dst == Path::new("/dev") {
                    populate_dev(spec, devices.take().unwrap_or_default())?;
                } else if dst == Path::new("/run") {
                    populate_run_host(uuid)?;
                }
            }
        }
    }
    Ok(())
}

fn is_api(dst: &Path) -> bool {
    [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
        "/run",
        "/tmp",
    ]
    .iter()
    .any(|p| dst == Path::new(p))
}

/// Device nodes from the spec, the standard symlinks, and the devpts mount point.
fn populate_dev(
    spec: &Spec,
    captured: Vec<(std::path::PathBuf, OwnedFd)>,
) -> Result<(), SetupError> {
    // In a user namespace mknod is not allowed: the host's nodes are bound in instead.
    for (path, tree) in &captured {
        ensure_target(path, false)?;
        let target = open_target(path)?;
        sys::move_mount_to_fd(tree.as_fd(), target.as_fd())
            .ctx(format!("binding {}", path.display()))?;
    }
    let devices = if captured.is_empty() {
        spec.linux()
            .as_ref()
            .and_then(|l| l.devices().clone())
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    for d in devices {
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            LinuxDeviceType::A => continue,
        };
        let mode = d.file_mode().unwrap_or(0o666);
        let dev = nix::sys::stat::makedev(d.major() as u64, d.minor() as u64);
        mknod(d.path(), kind, Mode::from_bits_truncate(mode), dev)
            .ctx(format!("creating {}", d.path().display()))?;
        nix::unistd::chown(d.path(), d.uid().map(Into::into), d.gid().map(Into::into))
            .ctx(format!("chown {}", d.path().display()))?;
    }
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
        ("/dev/ptmx", "pts/ptmx"),
    ] {
        symlink(target, link).ctx(format!("creating {link}"))?;
    }
    Ok(())
}

/// /run/host: what the container may know about its manager (container interface), and the
/// inaccessible nodes that masks are bound from.
fn populate_run_host(uuid: &str) -> Result<(), SetupError> {
    fs::create_dir_all("/run/host/inaccessible").ctx("creating /run/host")?;
    fs::write("/run/host/container-manager", "berth\n")
        .ctx("writing /run/host/container-manager")?;
    fs::write("/run/host/container-uuid", format!("{uuid}\n"))
        .ctx("writing /run/host/container-uuid")?;
    fs::write("/run/host/inaccessible/reg", "").ctx("creating /run/host/inaccessible/reg")?;
    fs::create_dir("/run/host/inaccessible/dir").ctx("creating /run/host/inaccessible/dir")?;
    for p in ["/run/host/inaccessible/reg", "/run/host/inaccessible/dir"] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o000)).ctx(format!("chmod {p}"))?;
    }
    Ok(())
}

fn bind_ro(src: &str, dst: &Path, recursive: bool) -> Result<(), SetupError> {
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    mount(Some(src), dst, None::<&str>, flags, None::<&str>)
        .ctx(format!("binding {}", dst.display()))?;
    let ro = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC;
    mount(None::<&str>, dst, None::<&str>, ro, None::<&str>)
        .ctx(format!("making {} read-only", dst.display()))
}

/// Masks and read-only paths. A path the kernel does not have is skipped; any other failure
/// aborts the start: a container that silently kept /proc/kcore readable is worse than none.
pub fn protect(spec: &Spec, private_network: bool) -> Result<(), SetupError> {
    let linux = spec.linux().as_ref();
    for p in linux
        .and_then(|l| l.readonly_paths().clone())
        .unwrap_or_default()
    {
        let path = Path::new(&p);
        if path.symlink_metadata().is_err() {
            continue;
        }
        if p == "/proc/sys" && private_network {
            // The container's own network stack stays configurable.
            mount(
                Some("/proc/sys/net"),
                "/proc/sys/net",
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .ctx("binding /proc/sys/net")?;
        }
        bind_ro(&p, path, true)?;
    }
    for p in linux
        .and_then(|l| l.masked_paths().clone())
        .unwrap_or_default()
    {
        let path = Path::new(&p);
        let md = match path.symlink_metadata() {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(SetupError::io(format!("inspecting {p}"), e)),
        };
        let src = if md.is_dir() {
            "/run/host/inaccessible/dir"
        } else {
            "/run/host/inaccessible/reg"
        };
        bind_ro(src, path, false)?;
    }
    Ok(())
}

/// The cgroup file system, mounted once the cgroup namespace exists so the container sees its
/// own cgroup as the root.
pub fn mount_cgroup(spec: &Spec) -> Result<(), SetupError> {
    for m in spec.mounts().as_deref().unwrap_or(&[]) {
        if m.typ().as_deref() == Some("cgroup2") {
            mount_api(m)?;
        }
    }
    Ok(())
}

/// Last: /run/host and, with --read-only, the root itself become read-only.
pub fn seal(spec: &Spec) -> Result<(), SetupError> {
    // Recursive, or the bind would hide /run/host/os-release beneath it.
    bind_ro("/run/host", Path::new("/run/host"), true)?;
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .ctx("making the root read-only")?;
    }
    Ok(())
}
