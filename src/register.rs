//! Registration with systemd-machined over D-Bus, like nspawn-register.c.
//!
//! Without `--keep-unit`: `CreateMachine[WithNetwork]`, so machined starts
//! `machine-NAME.scope` (in machine.slice or `--slice`) and moves the container's PID 1 into it;
//! berth itself stays outside, so `machinectl kill` never hits the supervisor. With `--keep-unit`
//! (how `berth@.service` runs): `RegisterMachine[WithNetwork]`, adopting the unit berth runs in.
//!
//! Every D-Bus exchange runs in a short-lived forked helper process: zbus starts threads and
//! allocates, and none of that may stay in the supervisor, which must hold no bus connection
//! once registered and stay small while the container runs. The helper reports back over a
//! pipe and exits.

use crate::property::{Property, Value};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

const MACHINED: &str = "org.freedesktop.machine1";
const MACHINED_PATH: &str = "/org/freedesktop/machine1";
const MACHINED_IFACE: &str = "org.freedesktop.machine1.Manager";
const SYSTEMD: &str = "org.freedesktop.systemd1";
const SYSTEMD_PATH: &str = "/org/freedesktop/systemd1";

/// `--register=yes|no|auto`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    Yes,
    No,
    Auto,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "auto" => Ok(Mode::Auto),
            _ => match crate::cli::parse_bool(s) {
                Ok(true) => Ok(Mode::Yes),
                Ok(false) => Ok(Mode::No),
                Err(_) => Err(format!("expected yes, no or auto, got {s:?}")),
            },
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Yes => "yes",
            Mode::No => "no",
            Mode::Auto => "auto",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum RegisterError {
    #[error("machine name {0:?} is already registered with systemd-machined")]
    Exists(String),
    #[error("systemd-machined refused to register {name:?}: {msg}")]
    Refused { name: String, msg: String },
    #[error("cannot reach systemd-machined (--register=yes): {0}")]
    Unreachable(String),
    #[error("slice {0:?} does not exist (no unit file, not active)")]
    NoSlice(String),
    #[error("bad --slice {0:?}: a slice unit name ends in .slice")]
    BadSlice(String),
    #[error("talking to systemd: {0}")]
    Bus(String),
    #[error("{0}")]
    Property(String),
    #[error("the D-Bus helper process failed: {0}")]
    Helper(String),
}

/// What to register: the container as machined records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub name: String,
    /// The machine UUID (all zeros: none, machined then picks none either).
    pub id: [u8; 16],
    /// The registering service: "berth".
    pub service: String,
    /// The container's PID 1 as seen from the host.
    pub leader: u32,
    pub root_directory: String,
    /// Host-side network interfaces of the container (veth), if any.
    pub ifindices: Vec<i32>,
    /// `--keep-unit`: adopt the unit berth runs in instead of creating a scope.
    pub keep_unit: bool,
    /// `--slice`, for the scope (ignored with `--keep-unit`).
    pub slice: Option<String>,
    /// `--property` assignments for the scope (ignored with `--keep-unit`).
    pub properties: Vec<String>,
    /// The container's kill signal, if it has one (the scope's KillSignal with KillMode=mixed).
    pub kill_signal: Option<i32>,
}

/// The result of [`register`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Registered; the unit is the scope machined created, or the unit berth runs in.
    Registered { unit: String },
    /// `--register=auto` and machined cannot be reached although there is a system bus: run
    /// unregistered, and say so. The string says why.
    Unavailable(String),
    /// `--register=auto` on a host without a system bus (no systemd here): run unregistered.
    NoBus,
    /// `--register=no`.
    Skipped,
}

/// Registers the machine per `mode`. On error nothing is left registered.
pub fn register(mode: Mode, m: &Machine) -> Result<Outcome, RegisterError> {
    if mode == Mode::No {
        return Ok(Outcome::Skipped);
    }
    // Parse before forking: a bad --property is the caller's error, with no bus involved.
    let props = m
        .properties
        .iter()
        .map(|a| crate::property::parse(a))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| RegisterError::Property(e.to_string()))?;
    if let Some(s) = &m.slice
        && !m.keep_unit
        && (!s.ends_with(".slice") || s.len() <= ".slice".len() || s.contains('/'))
    {
        return Err(RegisterError::BadSlice(s.clone()));
    }
    in_helper(|| bus_register(mode, m, &props))
}

/// Ends the registration (machined forgets the machine; the scope goes with its processes).
/// Errors are ignored, as nspawn does: the machine may be gone already.
pub fn unregister(name: &str) {
    let _ = in_helper(|| {
        let conn =
            zbus::blocking::Connection::system().map_err(|e| RegisterError::Bus(e.to_string()))?;
        conn.call_method(
            Some(MACHINED),
            MACHINED_PATH,
            Some(MACHINED_IFACE),
            "UnregisterMachine",
            &(name,),
        )
        .map_err(|e| RegisterError::Bus(e.to_string()))?;
        Ok(Outcome::Skipped)
    });
}

fn dbus_error_name(e: &zbus::Error) -> Option<String> {
    match e {
        zbus::Error::MethodError(name, _, _) => Some(name.to_string()),
        zbus::Error::FDO(f) => Some(format!("{f:?}")),
        _ => None,
    }
}

fn dbus_error_text(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(_, Some(msg), _) => msg.clone(),
        zbus::Error::MethodError(name, None, _) => name.to_string(),
        other => other.to_string(),
    }
}

fn to_zvalue(v: &Value) -> zbus::zvariant::Value<'static> {
    use zbus::zvariant::Value as Z;
    match v {
        Value::U64(x) => Z::U64(*x),
        Value::U32(x) => Z::U32(*x),
        Value::I32(x) => Z::I32(*x),
        Value::Bool(x) => Z::Bool(*x),
        Value::Str(s) => Z::from(s.clone()),
        Value::Devices(d) => Z::from(d.clone()),
    }
}

/// The scope properties nspawn sends for CreateMachine, then the user's `--property`s.
fn scope_properties(
    m: &Machine,
    props: &[Property],
) -> Vec<(String, zbus::zvariant::Value<'static>)> {
    use zbus::zvariant::Value as Z;
    let mut out: Vec<(String, Z<'static>)> = Vec::new();
    if let Some(s) = &m.slice {
        out.push(("Slice".into(), Z::from(s.clone())));
    }
    out.push((
        "Description".into(),
        Z::from(format!("berth container {}", m.name)),
    ));
    out.push(("Delegate".into(), Z::Bool(true)));
    out.push(("DevicePolicy".into(), Z::from("closed".to_string())));
    out.push((
        "DeviceAllow".into(),
        Z::from(vec![
            ("/dev/net/tun".to_string(), "rwm".to_string()),
            ("char-pts".to_string(), "rw".to_string()),
        ]),
    ));
    out.push(("KillMode".into(), Z::from("mixed".to_string())));
    if let Some(sig) = m.kill_signal {
        out.push(("KillSignal".into(), Z::I32(sig)));
    }
    for p in props {
        out.push((p.name.clone(), to_zvalue(&p.value)));
    }
    out
}

fn bus_register(mode: Mode, m: &Machine, props: &[Property]) -> Result<Outcome, RegisterError> {
    let unreachable = |e: String| {
        if mode == Mode::Auto {
            Ok(Outcome::Unavailable(e))
        } else {
            Err(RegisterError::Unreachable(e))
        }
    };
    if mode == Mode::Auto && !system_bus_present() {
        return Ok(Outcome::NoBus);
    }
    let conn = match zbus::blocking::Connection::system() {
        Ok(c) => c,
        Err(e) => return unreachable(format!("system bus: {e}")),
    };
    // Activates machined if it is not running yet.
    if let Err(e) = conn.call_method(
        Some(MACHINED),
        MACHINED_PATH,
        Some("org.freedesktop.DBus.Peer"),
        "Ping",
        &(),
    ) {
        return unreachable(dbus_error_text(&e));
    }

    if !m.keep_unit
        && let Some(slice) = &m.slice
    {
        check_slice(&conn, slice)?;
    }

    let id: Vec<u8> = if m.id == [0; 16] {
        Vec::new()
    } else {
        m.id.to_vec()
    };
    let class = "container";
    let reply = if m.keep_unit {
        if m.ifindices.is_empty() {
            conn.call_method(
                Some(MACHINED),
                MACHINED_PATH,
                Some(MACHINED_IFACE),
                "RegisterMachine",
                &(&m.name, &id, &m.service, class, m.leader, &m.root_directory),
            )
        } else {
            conn.call_method(
                Some(MACHINED),
                MACHINED_PATH,
                Some(MACHINED_IFACE),
                "RegisterMachineWithNetwork",
                &(
                    &m.name,
                    &id,
                    &m.service,
                    class,
                    m.leader,
                    &m.root_directory,
                    &m.ifindices,
                ),
            )
        }
    } else {
        let sp = scope_properties(m, props);
        if m.ifindices.is_empty() {
            conn.call_method(
                Some(MACHINED),
                MACHINED_PATH,
                Some(MACHINED_IFACE),
                "CreateMachine",
                &(
                    &m.name,
                    &id,
                    &m.service,
                    class,
                    m.leader,
                    &m.root_directory,
                    sp,
                ),
            )
        } else {
            conn.call_method(
                Some(MACHINED),
                MACHINED_PATH,
                Some(MACHINED_IFACE),
                "CreateMachineWithNetwork",
                &(
                    &m.name,
                    &id,
                    &m.service,
                    class,
                    m.leader,
                    &m.root_directory,
                    &m.ifindices,
                    sp,
                ),
            )
        }
    };
    let path: zbus::zvariant::OwnedObjectPath = match reply {
        Ok(msg) => msg
            .body()
            .deserialize()
            .map_err(|e| RegisterError::Bus(e.to_string()))?,
        Err(e) => {
            let name = dbus_error_name(&e).unwrap_or_default();
            if name == "org.freedesktop.machine1.MachineExists" {
                return Err(RegisterError::Exists(m.name.clone()));
            }
            return Err(RegisterError::Refused {
                name: m.name.clone(),
                msg: dbus_error_text(&e),
            });
        }
    };
    let unit = conn
        .call_method(
            Some(MACHINED),
            path.as_str(),
            Some("org.freedesktop.DBus.Properties"),
            "Get",
            &("org.freedesktop.machine1.Machine", "Unit"),
        )
        .ok()
        .and_then(|r| r.body().deserialize::<zbus::zvariant::OwnedValue>().ok())
        .and_then(|v| String::try_from(v).ok())
        .unwrap_or_default();
    Ok(Outcome::Registered { unit })
}

/// Whether the system bus socket exists (for a `unix:path=` address, the default one or
/// $DBUS_SYSTEM_BUS_ADDRESS). Other address kinds count as present.
fn system_bus_present() -> bool {
    let addr = std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
        .unwrap_or_else(|_| "unix:path=/var/run/dbus/system_bus_socket".into());
    match addr
        .split(';')
        .next()
        .and_then(|a| a.strip_prefix("unix:"))
        .and_then(|a| a.split(',').find_map(|kv| kv.strip_prefix("path=")))
    {
        Some(path) => std::path::Path::new(path).exists(),
        None => true,
    }
}

fn unit_property(
    conn: &zbus::blocking::Connection,
    path: &str,
    name: &str,
) -> Result<String, RegisterError> {
    let r = conn
        .call_method(
            Some(SYSTEMD),
            path,
            Some("org.freedesktop.DBus.Properties"),
            "Get",
            &("org.freedesktop.systemd1.Unit", name),
        )
        .map_err(|e| RegisterError::Bus(dbus_error_text(&e)))?;
    let v: zbus::zvariant::OwnedValue = r
        .body()
        .deserialize()
        .map_err(|e| RegisterError::Bus(e.to_string()))?;
    String::try_from(v).map_err(|e| RegisterError::Bus(e.to_string()))
}

/// systemd makes up any slice it is asked for; berth wants one that exists: a unit file for it,
/// or a slice that is active already (has units in it).
fn check_slice(conn: &zbus::blocking::Connection, slice: &str) -> Result<(), RegisterError> {
    if slice == "-.slice" {
        return Ok(());
    }
    let r = conn
        .call_method(
            Some(SYSTEMD),
            SYSTEMD_PATH,
            Some("org.freedesktop.systemd1.Manager"),
            "LoadUnit",
            &(slice,),
        )
        .map_err(|e| RegisterError::Bus(dbus_error_text(&e)))?;
    let path: zbus::zvariant::OwnedObjectPath = r
        .body()
        .deserialize()
        .map_err(|e| RegisterError::Bus(e.to_string()))?;
    let load = unit_property(conn, path.as_str(), "LoadState")?;
    let fragment = unit_property(conn, path.as_str(), "FragmentPath")?;
    let active = unit_property(conn, path.as_str(), "ActiveState")?;
    if load != "loaded" || (fragment.is_empty() && active != "active") {
        return Err(RegisterError::NoSlice(slice.to_string()));
    }
    Ok(())
}

/// Runs `f` in a forked child and returns its result. The child does all the D-Bus work (zbus's
/// threads and allocations live and die there) and `_exit`s.
fn in_helper<F>(f: F) -> Result<Outcome, RegisterError>
where
    F: FnOnce() -> Result<Outcome, RegisterError>,
{
    let (rd, wr): (OwnedFd, OwnedFd) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| RegisterError::Helper(e.to_string()))?;
    // SAFETY: the child runs only `f` (its own fresh zbus connection) and `_exit`s; the parent
    // (berth's supervisor) is single-threaded when it registers.
    match unsafe { nix::unistd::fork() }.map_err(|e| RegisterError::Helper(e.to_string()))? {
        nix::unistd::ForkResult::Child => {
            drop(rd);
            let res = f();
            let mut w = std::fs::File::from(wr);
            let _ = w.write_all(serde_json::to_string(&res).unwrap_or_default().as_bytes());
            drop(w);
            // SAFETY: leaves the helper without running the parent's atexit handlers or
            // destructors.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(wr);
            // sd-bus's default method timeout: a hung bus peer must not hang berth.
            let mut buf = String::new();
            let ready = {
                let mut fds = [nix::poll::PollFd::new(
                    rd.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                loop {
                    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(25_000u16)) {
                        Err(nix::errno::Errno::EINTR) => continue,
                        other => break other,
                    }
                }
            };
            if !matches!(ready, Ok(n) if n > 0) {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(child, None);
                return Err(RegisterError::Helper(
                    "no answer from the bus within 25 s".into(),
                ));
            }
            let mut r = std::fs::File::from(rd);
            let read = r.read_to_string(&mut buf);
            let status = loop {
                match nix::sys::wait::waitpid(child, None) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    other => break other,
                }
            };
            read.map_err(|e| RegisterError::Helper(e.to_string()))?;
            let _ = r.as_raw_fd();
            if buf.is_empty() {
                return Err(RegisterError::Helper(format!("it died ({status:?})")));
            }
            serde_json::from_str(&buf).map_err(|e| RegisterError::Helper(e.to_string()))?
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_mode_parses() {
        assert_eq!("yes".parse::<Mode>().unwrap(), Mode::Yes);
        assert_eq!("no".parse::<Mode>().unwrap(), Mode::No);
        assert_eq!("auto".parse::<Mode>().unwrap(), Mode::Auto);
        assert!("maybe".parse::<Mode>().is_err());
    }
}
