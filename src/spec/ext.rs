//! berth's settings that the OCI runtime spec has no field for, carried as `org.berth.*`
//! annotations so the spec stays the one model. [`Berth::from_spec`] is the typed view the
//! launcher reads; [`Berth::store`] writes it.

use super::userns::Ownership;
use clap::ValueEnum;
use oci_spec::runtime::Spec;
use std::collections::HashMap;

/// How the container's standard streams and /dev/console are wired (nspawn's --console).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConsoleMode {
    /// A pty of the container's own, relayed to berth's terminal both ways.
    Interactive,
    /// A pty of the container's own; its output is relayed, input is not.
    ReadOnly,
    /// A pty of the container's own, not connected to berth's streams.
    Passive,
    /// berth's stdin, stdout and stderr are handed to the payload as they are.
    Pipe,
}

impl ConsoleMode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Interactive => "interactive",
            Self::ReadOnly => "read-only",
            Self::Passive => "passive",
            Self::Pipe => "pipe",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Berth {
    pub machine: String,
    /// The container's UUID as `container_uuid` shows it (8-4-4-4-12).
    pub uuid: String,
    pub console: ConsoleMode,
    /// Sent to PID 1 on SIGTERM/SIGINT/SIGHUP; `None` means SIGKILL, as nspawn does.
    pub kill_signal: Option<i32>,
    pub as_pid2: bool,
    /// PID 1 is the tree's init: powering off is success, a reboot restarts the container.
    pub boot: bool,
    /// No command was given: process.args[0] is the preferred shell, run as a login shell.
    pub login_shell: bool,
    pub quiet: bool,
    /// The root is an overlay with a tmpfs upper layer over the tree (-x/--ephemeral).
    pub ephemeral: bool,
    /// How the tree's ownership follows the user namespace (off without one).
    pub ownership: Ownership,
}

const PREFIX: &str = "org.berth.";

#[derive(Debug, thiserror::Error)]
pub enum ExtError {
    #[error("spec lacks annotation {PREFIX}{0}")]
    Missing(&'static str),
    #[error("annotation {PREFIX}{0} has an invalid value {1:?}")]
    Invalid(&'static str, String),
}

impl Berth {
    pub fn store(&self, ann: &mut HashMap<String, String>) {
        let mut put = |k: &str, v: String| ann.insert(format!("{PREFIX}{k}"), v);
        put("machine", self.machine.clone());
        put("uuid", self.uuid.clone());
        put("console", self.console.as_str().into());
        if let Some(sig) = self.kill_signal {
            put("kill-signal", sig.to_string());
        }
        if self.ownership != Ownership::Off {
            put("userns-ownership", self.ownership.as_str().into());
        }
        for (k, v) in [
            ("as-pid2", self.as_pid2),
            ("boot", self.boot),
            ("login-shell", self.login_shell),
            ("quiet", self.quiet),
            ("ephemeral", self.ephemeral),
        ] {
            if v {
                put(k, "1".into());
            }
        }
    }

    pub fn from_spec(spec: &Spec) -> Result<Self, ExtError> {
        let empty = HashMap::new();
        let ann = spec.annotations().as_ref().unwrap_or(&empty);
        let get = |k: &'static str| ann.get(&format!("{PREFIX}{k}"));
        let flag = |k: &'static str| get(k).is_some_and(|v| v == "1");
        let console = get("console").ok_or(ExtError::Missing("console"))?;
        Ok(Self {
            machine: get("machine").ok_or(ExtError::Missing("machine"))?.clone(),
            uuid: get("uuid").ok_or(ExtError::Missing("uuid"))?.clone(),
            console: ConsoleMode::from_str(console, false)
                .map_err(|_| ExtError::Invalid("console", console.clone()))?,
            kill_signal: match get("kill-signal") {
                None => None,
                Some(v) => Some(
                    v.parse()
                        .map_err(|_| ExtError::Invalid("kill-signal", v.clone()))?,
                ),
            },
            as_pid2: flag("as-pid2"),
            boot: flag("boot"),
            login_shell: flag("login-shell"),
            quiet: flag("quiet"),
            ephemeral: flag("ephemeral"),
            ownership: match get("userns-ownership") {
                None => Ownership::Off,
                Some(v) => Ownership::parse(v)
                    .ok_or_else(|| ExtError::Invalid("userns-ownership", v.clone()))?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_annotations() {
        let b = Berth {
            machine: "web".into(),
            uuid: "01234567-89ab-cdef-0123-456789abcdef".into(),
            console: ConsoleMode::ReadOnly,
            kill_signal: Some(37),
            as_pid2: true,
            boot: true,
            login_shell: false,
            quiet: true,
            ephemeral: true,
            ownership: Ownership::Map,
        };
        let mut ann = HashMap::new();
        b.store(&mut ann);
        let mut spec = Spec::default();
        spec.set_annotations(Some(ann));
        assert_eq!(Berth::from_spec(&spec).unwrap(), b);
    }
}
