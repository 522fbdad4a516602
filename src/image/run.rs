//! `berth run -M NAME` without -D: the image NAME from the store, with its OCI config as the
//! container's defaults.

use super::config::{ImageConfig, UserOverrides, apply_to_spec};
use super::root::Root;
use super::store::{Metadata, Store};
use super::{ImageError, Result};
use crate::cli::RunArgs;
use crate::spec::ext::Berth;
use oci_spec::runtime::Spec;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// An image found in the store for `-M NAME`.
pub struct StoreImage {
    pub dir: PathBuf,
    pub meta: Option<Metadata>,
}

/// Looks NAME up as nspawn looks up /var/lib/machines/NAME (the store must exist; it is not
/// created for a lookup).
pub fn lookup(store: &Path, name: &str) -> Result<StoreImage> {
    if !store.is_dir() {
        return Err(ImageError::NotFound(name.to_string()));
    }
    let s = Store::open(store)?;
    let dir = s.lookup(name)?;
    Ok(StoreImage {
        dir,
        meta: s.metadata(name),
    })
}

/// Applies the image's config (if it came from an OCI image) to the spec built from the
/// command line: what the user set explicitly wins.
pub fn apply(img: &StoreImage, spec: &mut Spec, args: &RunArgs) -> Result<()> {
    let read_only = img.meta.as_ref().is_some_and(|m| m.read_only);
    if read_only && !args.ephemeral {
        // as nspawn does for read-only images
        if let Some(mut root) = spec.root().clone() {
            root.set_readonly(Some(true));
            spec.set_root(Some(root));
        }
    }
    let Some(cfg) = img
        .meta
        .as_ref()
        .and_then(|m| m.config.as_ref())
        .and_then(|c| c.get("config"))
        .filter(|c| !c.is_null())
    else {
        return Ok(());
    };
    let cfg: ImageConfig = serde_json::from_value(cfg.clone())
        .map_err(|e| ImageError::invalid(format!("image config: {e}")))?;
    // -E values as the spec has them now (VAR alone took berth's own value)
    let keys: HashSet<&str> = args
        .setenv
        .iter()
        .map(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k))
        .collect();
    let env = spec
        .process()
        .as_ref()
        .and_then(|p| p.env().clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|e| keys.contains(e.split_once('=').map_or(e.as_str(), |(k, _)| k)))
        .collect();
    let set = UserOverrides {
        user: args.user.is_some(),
        cwd: args.chdir.is_some(),
        kill_signal: args.kill_signal.is_some(),
        env,
    };
    let dir = std::fs::File::open(&img.dir)
        .map_err(|e| ImageError::io(img.dir.display().to_string(), e))?;
    let root = Root::new(dir.into());
    let has_cmd = cfg.entrypoint.as_ref().is_some_and(|v| !v.is_empty())
        || cfg.cmd.as_ref().is_some_and(|v| !v.is_empty());
    apply_to_spec(&cfg, spec, &args.command, &set, Some(&root))?;

    let mut process = spec.process().clone().expect("apply_to_spec sets it");
    // a non-root image user holds no capabilities, as with -u
    if !set.user
        && process.user().uid() != 0
        && let Some(mut c) = process.capabilities().clone()
    {
        c.set_effective(Some(HashSet::new()));
        c.set_permitted(Some(HashSet::new()));
        process.set_capabilities(Some(c));
    }
    spec.set_process(Some(process));
    // the image's Entrypoint/Cmd replace the login shell
    if args.command.is_empty() && has_cmd {
        let mut ext = Berth::from_spec(spec).map_err(|e| ImageError::invalid(e.to_string()))?;
        ext.login_shell = false;
        let mut ann = spec.annotations().clone().unwrap_or_default();
        ext.store(&mut ann);
        ann.remove("org.berth.login-shell");
        spec.set_annotations(Some(ann));
    }
    Ok(())
}
