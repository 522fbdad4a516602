//! An OCI image config becomes the container's defaults (image-spec conversion.md):
//! Entrypoint + Cmd -> process.args (a COMMAND given to berth replaces Cmd, as in podman),
//! Env -> process.env (variables set on berth's command line win), WorkingDir -> process.cwd,
//! User -> process.user (numeric as is; names resolved from the image's own /etc/passwd and
//! /etc/group, read inside the root, never through host NSS), StopSignal -> the kill signal
//! (annotation `org.berth.kill-signal`).

use super::root::Root;
use super::{ImageError, Result};
use oci_spec::runtime::{ProcessBuilder, Spec, UserBuilder};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;

/// The `config` object of an OCI image config (every field may be absent or null).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ImageConfig {
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(rename = "Env", default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<String>,
    #[serde(
        rename = "StopSignal",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub stop_signal: Option<String>,
    #[serde(rename = "Labels", default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

pub const KILL_SIGNAL_ANNOTATION: &str = "org.berth.kill-signal";
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the user set explicitly on the command line (these win over the image).
#[derive(Debug, Default, Clone)]
pub struct UserOverrides {
    /// -u/--user was given.
    pub user: bool,
    /// --chdir was given.
    pub cwd: bool,
    /// --kill-signal was given.
    pub kill_signal: bool,
    /// -E/--setenv values (VAR=VALUE), which win over the image's Env.
    pub env: Vec<String>,
}

fn check_str(what: &str, s: &str) -> Result<()> {
    if s.contains('\0') {
        return Err(ImageError::invalid(format!(
            "image config: {what} contains a NUL byte"
        )));
    }
    Ok(())
}

/// Parses a StopSignal value (`SIGTERM`, `TERM`, `15`, `SIGRTMIN+3`) to a signal number.
pub fn parse_signal(s: &str) -> Result<i32> {
    let bad = || ImageError::invalid(format!("image config: invalid StopSignal {s:?}"));
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=libc::SIGRTMAX()).contains(&n) {
            Ok(n)
        } else {
            Err(bad())
        };
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    if let Some(rest) = name.strip_prefix("RTMIN") {
        let off: i32 = if rest.is_empty() {
            0
        } else {
            rest.strip_prefix('+')
                .and_then(|r| r.parse().ok())
                .ok_or_else(bad)?
        };
        let n = libc::SIGRTMIN() + off;
        return if n <= libc::SIGRTMAX() {
            Ok(n)
        } else {
            Err(bad())
        };
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        let off: i32 = if rest.is_empty() {
            0
        } else {
            rest.strip_prefix('-')
                .and_then(|r| r.parse().ok())
                .ok_or_else(bad)?
        };
        let n = libc::SIGRTMAX() - off;
        return if n >= libc::SIGRTMIN() {
            Ok(n)
        } else {
            Err(bad())
        };
    }
    format!("SIG{name}")
        .parse::<nix::sys::signal::Signal>()
        .map(|s| s as i32)
        .map_err(|_| bad())
}

/// Applies the image config to `spec`. `user_cmd` is the COMMAND from berth's command line
/// (empty: the image's Cmd). `rootfs` is the image root, used to resolve a User name.
pub fn apply_to_spec(
    cfg: &ImageConfig,
    spec: &mut Spec,
    user_cmd: &[String],
    set: &UserOverrides,
    rootfs: Option<&Root>,
) -> Result<()> {
    let mut process = spec
        .process()
        .clone()
        .unwrap_or_else(|| ProcessBuilder::default().build().expect("default process"));

    let entry = cfg.entrypoint.clone().unwrap_or_default();
    let cmd = if user_cmd.is_empty() {
        cfg.cmd.clone().unwrap_or_default()
    } else {
        user_cmd.to_vec()
    };
    let args: Vec<String> = entry.into_iter().chain(cmd).collect();
    for a in &args {
        check_str("Entrypoint/Cmd", a)?;
    }
    if !args.is_empty() {
        process.set_args(Some(args));
    }

    // the spec's env holds berth's defaults; the image's Env overrides them, and the user's
    // -E/--setenv overrides both
    let mut env: Vec<String> = process.env().clone().unwrap_or_default();
    let key = |e: &str| e.split_once('=').map_or(e, |(n, _)| n).to_string();
    let put = |env: &mut Vec<String>, e: &String| {
        let k = key(e);
        match env.iter_mut().find(|x| key(x) == k) {
            Some(x) => *x = e.clone(),
            None => env.push(e.clone()),
        }
    };
    for e in cfg.env.iter().flatten() {
        check_str("Env", e)?;
        if key(e).is_empty() {
            return Err(ImageError::invalid(format!(
                "image config: invalid Env entry {e:?}"
            )));
        }
        put(&mut env, e);
    }
    for e in &set.env {
        put(&mut env, e);
    }
    if !env.iter().any(|e| key(e) == "PATH") {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    process.set_env(Some(env));

    if !set.cwd
        && let Some(wd) = cfg.working_dir.as_deref().filter(|w| !w.is_empty())
    {
        check_str("WorkingDir", wd)?;
        if !wd.starts_with('/') {
            return Err(ImageError::invalid(format!(
                "image config: WorkingDir {wd:?} is not absolute"
            )));
        }
        process.set_cwd(wd.into());
    }

    if !set.user
        && let Some(u) = cfg.user.as_deref().filter(|u| !u.is_empty())
    {
        check_str("User", u)?;
        let (uid, gid, extra) = resolve_user(u, rootfs)?;
        let mut b = UserBuilder::default().uid(uid).gid(gid);
        if !extra.is_empty() {
            b = b.additional_gids(extra);
        }
        process.set_user(b.build().map_err(|e| ImageError::invalid(e.to_string()))?);
    }
    spec.set_process(Some(process));

    if !set.kill_signal
        && let Some(sig) = cfg.stop_signal.as_deref().filter(|s| !s.is_empty())
    {
        let n = parse_signal(sig)?;
        let mut ann = spec.annotations().clone().unwrap_or_default();
        ann.insert(KILL_SIGNAL_ANNOTATION.to_string(), n.to_string());
        spec.set_annotations(Some(ann));
    }
    Ok(())
}

/// Reads a small file of the image (passwd, group) inside the root, size-capped.
fn read_small(root: &Root, path: &str) -> Option<String> {
    let fd = root.open_file(path.as_bytes()).ok()?;
    let st = nix::sys::stat::fstat(&fd).ok()?;
    if nix::sys::stat::SFlag::from_bits_truncate(st.st_mode) & nix::sys::stat::SFlag::S_IFMT
        != nix::sys::stat::SFlag::S_IFREG
    {
        return None;
    }
    let mut s = String::new();
    std::fs::File::from(fd)
        .take(4 << 20)
        .read_to_string(&mut s)
        .ok()?;
    Some(s)
}

/// `user`, `uid`, `user:group`, `uid:gid`, `uid:group`, `user:gid`. Numbers are used as they
/// are; names must resolve in the image.
pub fn resolve_user(spec: &str, root: Option<&Root>) -> Result<(u32, u32, Vec<u32>)> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = root.and_then(|r| read_small(r, "etc/passwd"));
    let group = root.and_then(|r| read_small(r, "etc/group"));
    let pw_entry = |f: &dyn Fn(&[&str]) -> bool| -> Option<(String, u32, u32)> {
        passwd.as_deref()?.lines().take(65536).find_map(|l| {
            let v: Vec<&str> = l.split(':').collect();
            if v.len() >= 4 && f(&v) {
                Some((v[0].to_string(), v[2].parse().ok()?, v[3].parse().ok()?))
            } else {
                None
            }
        })
    };
    let (uid, pw_gid, uname) = if let Ok(n) = u.parse::<u32>() {
        match pw_entry(&|v| v[2] == u) {
            Some((name, _, gid)) => (n, Some(gid), Some(name)),
            None => (n, None, None),
        }
    } else {
        let (name, uid, gid) = pw_entry(&|v| v[0] == u).ok_or_else(|| {
            ImageError::invalid(format!(
                "image config: user {u:?} not found in the image's /etc/passwd"
            ))
        })?;
        (uid, Some(gid), Some(name))
    };
    let groups: Vec<(String, u32, Vec<String>)> = group
        .as_deref()
        .map(|g| {
            g.lines()
                .take(65536)
                .filter_map(|l| {
                    let v: Vec<&str> = l.split(':').collect();
                    (v.len() >= 4).then(|| {
                        Some((
                            v[0].to_string(),
                            v[2].parse().ok()?,
                            v[3].split(',')
                                .take(65536)
                                .filter(|s| !s.is_empty())
                                .map(String::from)
                                .collect(),
                        ))
                    })?
                })
                .collect()
        })
        .unwrap_or_default();
    match g {
        Some(g) => {
            let gid = match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => groups
                    .iter()
                    .find(|(n, _, _)| n == g)
                    .map(|(_, id, _)| *id)
                    .ok_or_else(|| {
                        ImageError::invalid(format!(
                            "image config: group {g:?} not found in the image's /etc/group"
                        ))
                    })?,
            };
            Ok((uid, gid, Vec::new()))
        }
        None => {
            let gid = pw_gid.unwrap_or(0);
            let extra = match &uname {
                Some(n) => groups
                    .iter()
                    .filter(|(_, id, members)| *id != gid && members.iter().any(|m| m == n))
                    .map(|(_, id, _)| *id)
                    .collect(),
                None => Vec::new(),
            };
            Ok((uid, gid, extra))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: &str) -> ImageConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn entrypoint_cmd_env_cwd_signal() {
        let c = cfg(
            r#"{"Entrypoint":["/bin/sh","-c"],"Cmd":["echo hi"],"Env":["A=1","PATH=/x"],
                       "WorkingDir":"/srv","StopSignal":"SIGRTMIN+3","User":"1000:100"}"#,
        );
        let mut spec = Spec::default();
        apply_to_spec(&c, &mut spec, &[], &UserOverrides::default(), None).unwrap();
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.args().as_ref().unwrap(), &["/bin/sh", "-c", "echo hi"]);
        let env = p.env().as_ref().unwrap();
        assert!(env.contains(&"A=1".to_string()));
        assert!(env.contains(&"PATH=/x".to_string()));
        assert_eq!(env.iter().filter(|e| e.starts_with("PATH=")).count(), 1);
        assert_eq!(p.cwd().to_str(), Some("/srv"));
        assert_eq!(p.user().uid(), 1000);
        assert_eq!(p.user().gid(), 100);
        assert_eq!(
            spec.annotations().as_ref().unwrap()[KILL_SIGNAL_ANNOTATION],
            (libc::SIGRTMIN() + 3).to_string()
        );
    }

    #[test]
    fn user_command_replaces_cmd_only() {
        let c = cfg(r#"{"Entrypoint":["/entry"],"Cmd":["default"]}"#);
        let mut spec = Spec::default();
        let cmd = vec!["mine".to_string(), "x".to_string()];
        apply_to_spec(&c, &mut spec, &cmd, &UserOverrides::default(), None).unwrap();
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.args().as_ref().unwrap(), &["/entry", "mine", "x"]);
        assert!(
            p.env()
                .as_ref()
                .unwrap()
                .contains(&DEFAULT_PATH.to_string())
        );
    }

    #[test]
    fn spec_env_wins_and_overrides_respected() {
        let c = cfg(r#"{"Env":["A=image","B=image"],"WorkingDir":"/w","StopSignal":"TERM"}"#);
        let mut spec = Spec::default();
        let mut p = spec.process().clone().unwrap();
        p.set_cwd("/mine".into());
        spec.set_process(Some(p));
        let set = UserOverrides {
            cwd: true,
            env: vec!["A=user".into()],
            ..Default::default()
        };
        apply_to_spec(&c, &mut spec, &[], &set, None).unwrap();
        let p = spec.process().as_ref().unwrap();
        let env = p.env().as_ref().unwrap();
        assert!(env.contains(&"A=user".to_string()));
        assert!(!env.contains(&"A=image".to_string()));
        assert!(env.contains(&"B=image".to_string()));
        assert_eq!(p.cwd().to_str(), Some("/mine"));
    }

    #[test]
    fn bad_values() {
        let mut spec = Spec::default();
        let o = UserOverrides::default();
        for j in [
            r#"{"StopSignal":"SIGNOPE"}"#,
            r#"{"WorkingDir":"relative"}"#,
            r#"{"User":"nobody"}"#,
            r#"{"Env":["=x"]}"#,
        ] {
            assert!(
                apply_to_spec(&cfg(j), &mut spec, &[], &o, None).is_err(),
                "{j}"
            );
        }
        assert_eq!(parse_signal("SIGKILL").unwrap(), 9);
        assert_eq!(parse_signal("15").unwrap(), 15);
    }
}
