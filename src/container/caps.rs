//! Identity and capabilities of the payload: bounding set first (needs CAP_SETPCAP), then the
//! user switch, then exactly the effective/permitted sets the spec names. Inheritable and
//! ambient are always empty, so nothing leaks through a later execve of a file with caps.

use super::error::{Ctx, SetupError};
use crate::spec::caps::to_caps;
use caps::CapSet;
use oci_spec::runtime::Capability;
use std::collections::HashSet;

fn caps_err(what: &str, e: caps::errors::CapsError) -> SetupError {
    SetupError::msg(format!("{what}: {e}"))
}

pub fn drop_bounding(keep: &[Capability]) -> Result<(), SetupError> {
    let keep: HashSet<caps::Capability> = keep.iter().map(|c| to_caps(*c)).collect();
    for cap in caps::runtime::thread_all_supported() {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| caps_err("dropping from the bounding set", e))?;
        }
    }
    Ok(())
}

pub fn switch_user(uid: u32, gid: u32, groups: &[u32]) -> Result<(), SetupError> {
    let groups: Vec<nix::unistd::Gid> = groups
        .iter()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&groups).ctx("setgroups")?;
    let gid = nix::unistd::Gid::from_raw(gid);
    nix::unistd::setresgid(gid, gid, gid).ctx(format!("setresgid {gid}"))?;
    let uid = nix::unistd::Uid::from_raw(uid);
    // For a non-root uid the kernel clears the permitted and effective sets here.
    nix::unistd::setresuid(uid, uid, uid).ctx(format!("setresuid {uid}"))?;
    Ok(())
}

pub fn set(effective: &[Capability], permitted: &[Capability]) -> Result<(), SetupError> {
    let to_set =
        |v: &[Capability]| -> caps::CapsHashSet { v.iter().map(|c| to_caps(*c)).collect() };
    // Effective first: it must stay a subset of permitted at every step.
    caps::set(None, CapSet::Effective, &to_set(effective))
        .map_err(|e| caps_err("setting effective capabilities", e))?;
    caps::set(None, CapSet::Permitted, &to_set(permitted))
        .map_err(|e| caps_err("setting permitted capabilities", e))?;
    caps::clear(None, CapSet::Inheritable)
        .map_err(|e| caps_err("clearing inheritable capabilities", e))?;
    caps::clear(None, CapSet::Ambient).map_err(|e| caps_err("clearing ambient capabilities", e))?;
    Ok(())
}
