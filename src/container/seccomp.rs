//! Loading the seccomp filter the spec names (compiled by the supervisor before clone).

use super::error::SetupError;
use oci_spec::runtime::Spec;

pub fn load(spec: &Spec) -> Result<(), SetupError> {
    match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        None => Ok(()),
        Some(_) => Err(SetupError::msg(
            "seccomp profiles are not wired into the launcher yet",
        )),
    }
}
