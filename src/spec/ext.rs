//! berth's extensions to the OCI spec, carried as `org.berth.*` annotations.
