//! The launcher: executes a runtime spec.

use anyhow::Result;
use oci_spec::runtime::Spec;

pub fn run(_spec: &Spec) -> Result<u8> {
    Ok(0)
}
