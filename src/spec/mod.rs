//! The one internal model: every input (command-line flags now; image configs and OCI bundles
//! later) becomes an `oci_spec::runtime::Spec`, and the launcher executes only that.
//! berth-specific settings travel as `org.berth.*` annotations, read back through [`ext`].

pub mod ext;
pub mod machine;

use crate::cli::RunArgs;
use anyhow::Result;
use oci_spec::runtime::Spec;

pub fn from_run_args(args: &RunArgs) -> Result<Spec> {
    let mut spec = Spec::default();
    machine::apply(args, &mut spec)?;
    Ok(spec)
}
