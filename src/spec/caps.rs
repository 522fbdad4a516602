//! Capability names and berth's default set.
//!
//! A command gets what a rootful podman container gets, plus AUDIT_WRITE, MKNOD and NET_RAW as
//! Docker keeps them: nothing that reaches the host (no SYS_ADMIN, SYS_PTRACE, SYS_MODULE...).
//! nspawn's larger set (with CAP_SYS_ADMIN) is one `--capability=` away.

use oci_spec::runtime::Capability as Cap;
use std::collections::HashSet;
use std::str::FromStr;

pub const DEFAULT: &[Cap] = &[
    Cap::Chown,
    Cap::DacOverride,
    Cap::Fowner,
    Cap::Fsetid,
    Cap::Kill,
    Cap::NetBindService,
    Cap::Setfcap,
    Cap::Setgid,
    Cap::Setpcap,
    Cap::Setuid,
    Cap::SysChroot,
    Cap::AuditWrite,
    Cap::Mknod,
    Cap::NetRaw,
];

/// systemd-nspawn's set (v252), for booted containers: namespaced by the user namespace that
/// -b implies, and what a container's systemd expects to hold.
pub const NSPAWN: &[Cap] = &[
    Cap::AuditControl,
    Cap::AuditWrite,
    Cap::Chown,
    Cap::DacOverride,
    Cap::DacReadSearch,
    Cap::Fowner,
    Cap::Fsetid,
    Cap::IpcOwner,
    Cap::Kill,
    Cap::Lease,
    Cap::LinuxImmutable,
    Cap::Mknod,
    Cap::NetBindService,
    Cap::NetBroadcast,
    Cap::NetRaw,
    Cap::Setfcap,
    Cap::Setgid,
    Cap::Setpcap,
    Cap::Setuid,
    Cap::SysAdmin,
    Cap::SysBoot,
    Cap::SysChroot,
    Cap::SysNice,
    Cap::SysPtrace,
    Cap::SysResource,
    Cap::SysTtyConfig,
];

/// Of `set`, what berth itself holds: a default must not fail where berth lacks a capability
/// (this CI's kind of VM lacks CAP_SYS_RESOURCE).
pub fn held_of(set: &[Cap]) -> HashSet<Cap> {
    let held = held();
    set.iter()
        .copied()
        .filter(|c| held.contains(&to_caps(*c)))
        .collect()
}

/// Capabilities that let root in the container act on the host; adding one prints a warning.
pub const HOST_REACHING: &[Cap] = &[
    Cap::SysAdmin,
    Cap::SysModule,
    Cap::SysPtrace,
    Cap::SysRawio,
    Cap::DacReadSearch,
    Cap::SysBoot,
    Cap::Bpf,
];

#[derive(Debug, thiserror::Error)]
#[error("unknown capability {0:?}")]
pub struct UnknownCapability(pub String);

/// What "all" means: every capability berth itself holds in its bounding set (a container
/// can get no capability its supervisor lacks).
pub fn all() -> HashSet<Cap> {
    held().into_iter().filter_map(from_caps).collect()
}

fn held() -> caps::CapsHashSet {
    caps::read(None, caps::CapSet::Bounding).unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
#[error("{0} was asked for, but berth itself does not hold it")]
pub struct NotHeld(pub String);

/// Refuses a set berth cannot grant, before anything is started.
pub fn check_held(set: &HashSet<Cap>) -> Result<(), NotHeld> {
    let held = held();
    let mut missing: Vec<String> = set
        .iter()
        .filter(|c| !held.contains(&to_caps(**c)))
        .map(|c| name(*c))
        .collect();
    missing.sort();
    match missing.first() {
        None => Ok(()),
        Some(_) => Err(NotHeld(missing.join(", "))),
    }
}

/// `None` for a capability the kernel and the caps crate know but oci-spec does not yet.
fn from_caps(c: caps::Capability) -> Option<Cap> {
    // The OCI serialization is the name /proc uses ("CAP_SYS_ADMIN").
    serde_json::from_value(serde_json::Value::String(c.to_string())).ok()
}

/// oci-spec displays "KILL" where the caps crate wants "CAP_KILL".
pub fn to_caps(c: Cap) -> caps::Capability {
    let name = c.to_string();
    let name = if name.starts_with("CAP_") {
        name
    } else {
        format!("CAP_{name}")
    };
    caps::Capability::from_str(&name).expect("caps and oci-spec agree on capability names")
}

/// The name users and /proc know: "CAP_SYS_ADMIN".
pub fn name(c: Cap) -> String {
    to_caps(c).to_string()
}

/// Parses nspawn's comma-separated list: "CAP_SYS_ADMIN,net_admin" or "all".
pub fn parse_list(list: &str) -> Result<HashSet<Cap>, UnknownCapability> {
    let mut out = HashSet::new();
    for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        if word.eq_ignore_ascii_case("all") {
            out.extend(all());
            continue;
        }
        let upper = word.to_ascii_uppercase();
        let name = if upper.starts_with("CAP_") {
            upper
        } else {
            format!("CAP_{upper}")
        };
        let cap = caps::Capability::from_str(&name)
            .ok()
            .and_then(from_caps)
            .ok_or_else(|| UnknownCapability(word.into()))?;
        out.insert(cap);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_and_without_prefix() {
        let set = parse_list("CAP_SYS_ADMIN,net_admin, sys_ptrace").unwrap();
        assert_eq!(
            set,
            [Cap::SysAdmin, Cap::NetAdmin, Cap::SysPtrace]
                .into_iter()
                .collect()
        );
    }

    #[test]
    fn rejects_unknown_names() {
        assert_eq!(parse_list("CAP_FLY").unwrap_err().0, "CAP_FLY");
    }

    #[test]
    fn all_includes_sys_admin_and_defaults_do_not() {
        assert!(parse_list("all").unwrap().contains(&Cap::SysAdmin));
        assert!(!DEFAULT.contains(&Cap::SysAdmin));
    }
}
