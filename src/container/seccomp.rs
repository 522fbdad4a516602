//! The seccomp filter the spec names: compiled by the supervisor before clone (libseccomp,
//! allocation, the cache), loaded by the child with nothing but the seccomp(2) calls.

use super::error::SetupError;
use crate::seccomp::{Bpf, SeccompError};
use oci_spec::runtime::Spec;

/// In the supervisor, before clone.
pub fn compile(spec: &Spec) -> Result<Option<Bpf>, SeccompError> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .map(crate::seccomp::compile)
        .transpose()
}

/// In the child, while it still holds CAP_SYS_ADMIN (or has no_new_privs), right before it
/// changes identity and capabilities and execs: everything after is allowed by the filter.
pub fn load(bpf: Option<&Bpf>) -> Result<(), SetupError> {
    match bpf {
        None => Ok(()),
        Some(b) => b.load().map_err(|e| SetupError::msg(e.to_string())),
    }
}
