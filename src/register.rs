//! Registration with systemd-machined over D-Bus, like nspawn-register.c.
//!
//! Without `--keep-unit`: `CreateMachine`, so machined starts
//! `machine-NAME.scope` (in machine.slice or `--slice`) and moves the container's PID 1 into it;
//! berth itself stays outside, so `machinectl kill` never hits the supervisor. With `--keep-unit`
//! (how `berth@.service` runs): `RegisterMachine`, adopting the unit berth runs in.
//!
//! Unregistered (`--register=no`, or `auto` without machined) on a host run by systemd and
//! without `--keep-unit`: as nspawn's allocate_scope, systemd itself starts the same
//! `machine-NAME.scope` (`StartTransientUnit`, delegated, with the `--property` limits), and
//! berth waits for that job. The cgroup berth runs in may be one where cgroup2 allows no
//! controllers below it (a service that is not delegated): a scope of systemd's has them.
//!
//! Every D-Bus exchange runs in a short-lived forked helper process: zbus starts threads and
//! allocates, and none of that may stay in the supervisor, which must hold no bus connection
//! once registered and stay small while the container runs. The helper reports back over a
//! pipe and exits.
//!
//! A registered start waits mostly for others (the bus daemon, machined, systemd, and the
//! kernel's grace period before systemd's first cgroup move), so `berth run` starts that work
//! as early as it can ([`Early`]): the migration primer before the command line is parsed, the
//! helper's bus connection right after, both before the spec is built.

use crate::property::{Property, Value};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

const MACHINED: &str = "org.freedesktop.machine1";
const MACHINED_PATH: &str = "/org/freedesktop/machine1";
const MACHINED_IFACE: &str = "org.freedesktop.machine1.Manager";
const SYSTEMD: &str = "org.freedesktop.systemd1";
const SYSTEMD_PATH: &str = "/org/freedesktop/systemd1";
const SYSTEMD_MANAGER: &str = "org.freedesktop.systemd1.Manager";
const UNIT_EXISTS: &str = "org.freedesktop.systemd1.UnitExists";

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
    #[error("systemd refused to start {unit} for the container: {msg}")]
    ScopeRefused { unit: String, msg: String },
    #[error(
        "--keep-unit would register the login session {0} as the machine's unit (terminating the \
         machine would end the session); run berth from a service, or without --keep-unit"
    )]
    KeepUnitSession(String),
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
    /// `--keep-unit`: adopt the unit berth runs in instead of creating a scope.
    pub keep_unit: bool,
    /// `--slice`, for the scope (ignored with `--keep-unit`).
    pub slice: Option<String>,
    /// `--property` assignments for the scope (ignored with `--keep-unit`), parsed.
    pub properties: Vec<Property>,
    /// The container's kill signal, if it has one (the scope's KillSignal with KillMode=mixed).
    pub kill_signal: Option<i32>,
}

/// The result of [`register`]. `machined`, where there is one, says why machined was not
/// used with `--register=auto` although there is a system bus (berth says so in one line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Registered; the unit is the scope machined created, or the unit berth runs in.
    Registered { unit: String },
    /// Not registered; the container's PID 1 is in the transient scope `unit` that systemd
    /// started for it.
    Scope {
        unit: String,
        machined: Option<String>,
    },
    /// Not registered and no systemd to ask for a scope (or `--keep-unit`): berth makes the
    /// container's cgroup itself.
    Unregistered { machined: Option<String> },
}

/// Whether this host is run by systemd (sd_booted's test) and has a system bus on which to
/// ask it for a scope.
pub fn systemd_present() -> bool {
    std::path::Path::new("/run/systemd/system").is_dir() && system_bus_present()
}

/// Whether placing a container asks the bus (machined, or systemd for a scope). Where it does
/// not (no system bus; `--register=no` without systemd or under `--keep-unit`), berth makes
/// the container's cgroup itself.
pub fn asks_bus(mode: Mode, keep_unit: bool) -> bool {
    match mode {
        Mode::No => !keep_unit && systemd_present(),
        Mode::Auto => system_bus_present(),
        Mode::Yes => true,
    }
}

/// What `berth run` starts before it knows the container: the migration primer, forked first
/// thing, and the bus helper, forked once the command line is parsed. Both are handed to the
/// first [`crate::place::Placement`]; unused, the helper is killed.
#[derive(Default)]
pub struct Early {
    pub primer: Option<Helper>,
    pub connecting: Option<Connecting>,
}

/// Forks a child that starts the kernel's wait for the RCU grace period that systemd's move of
/// the container into its scope will cost (see [`crate::cgroup::prime_migration`]): first
/// thing in `berth run` on a host with a system bus, before the command line is parsed, as
/// every 0.1 ms it starts later is waited for. Where berth then asks no one for a scope, it
/// was a no-op move of a child within berth's own cgroup.
pub fn prime_early() -> Option<Helper> {
    if !system_bus_present() {
        return None;
    }
    Helper::spawn(|_| {
        crate::cgroup::prime_migration();
        Ok(Outcome::Unregistered { machined: None })
    })
    .ok()
}

/// A bus helper forked ahead of [`begin`], as soon as berth has parsed its command line: it
/// connects to the system bus (a handshake of a millisecond or two, most of it the bus
/// daemon's) while berth builds the spec and sets the container up, and [`begin`] tells it
/// what to register. Dropped unused, it is killed before it has asked the bus anything.
pub struct Connecting {
    helper: Helper,
    /// Where the helper reads its [`Request`] and then the container's PID 1.
    requests: OwnedFd,
}

impl Connecting {
    /// Forks the helper. `prime`: systemd will move the container's PID 1 into a scope, so
    /// the helper first starts the kernel's wait that such a move costs (see
    /// [`crate::cgroup::prime_migration`]).
    pub fn start(prime: bool) -> Result<Connecting, RegisterError> {
        let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| RegisterError::Helper(e.to_string()))?;
        let helper = Helper::spawn(move |report| serve(rd, prime, report))?;
        Ok(Connecting {
            helper,
            requests: wr,
        })
    }
}

/// What [`begin`] tells the helper, as the first JSON line on its requests pipe. The second
/// line is the container's PID 1 on the host.
#[derive(Serialize, Deserialize)]
struct Request {
    mode: Mode,
    machine: Machine,
}

/// Starts registering the machine per `mode`, or putting it into a transient scope of systemd's
/// where it is not registered (see the module's text), before the container exists: the helper
/// (`early`, or one forked now) connects to the bus while berth sets the container up, and
/// waits for its PID 1, which [`Pending::place`] hands over (`m.leader` is ignored here). Bad
/// arguments are refused here, with no bus involved. On any error nothing is left registered.
pub fn begin(mode: Mode, m: &Machine, early: Option<Connecting>) -> Result<Pending, RegisterError> {
    if mode == Mode::No && !asks_bus(mode, m.keep_unit) {
        return Ok(Pending::Done(Outcome::Unregistered { machined: None }));
    }
    if let Some(s) = &m.slice
        && !m.keep_unit
        && (!s.ends_with(".slice") || s.len() <= ".slice".len() || s.contains('/'))
    {
        return Err(RegisterError::BadSlice(s.clone()));
    }
    if m.keep_unit
        && let Some(session) = session_scope()
    {
        return Err(RegisterError::KeepUnitSession(session));
    }
    let Connecting { helper, requests } = match early {
        Some(c) => c,
        None => Connecting::start(!m.keep_unit)?,
    };
    let request = Request {
        mode,
        machine: m.clone(),
    };
    // A helper that died already says so when place() waits for its report.
    let _ = send_line(requests.as_fd(), &request);
    Ok(Pending::Started {
        helper,
        requests,
        unit: scope_name(&m.name),
    })
}

fn send_line<T: Serialize>(fd: BorrowedFd<'_>, what: &T) -> std::io::Result<()> {
    let mut line = serde_json::to_string(what).map_err(std::io::Error::other)?;
    line.push('\n');
    std::fs::File::from(fd.try_clone_to_owned()?).write_all(line.as_bytes())
}

/// The next JSON line from `r`; None at end of file.
fn read_line<T: serde::de::DeserializeOwned>(
    r: &mut impl std::io::BufRead,
) -> Result<Option<T>, RegisterError> {
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(0) => Ok(None),
        Ok(_) => serde_json::from_str(&line)
            .map(Some)
            .map_err(|e| RegisterError::Helper(e.to_string())),
        Err(e) => Err(RegisterError::Helper(e.to_string())),
    }
}

/// The helper's work: connect, learn what to register, watch, register.
fn serve(requests: OwnedFd, prime: bool, report: &Reporter) -> Result<Outcome, RegisterError> {
    if prime {
        std::thread::spawn(crate::cgroup::prime_migration);
    }
    let bus = system_bus();
    let mut requests = std::io::BufReader::new(std::fs::File::from(requests));
    // End of file: berth gave up before it got that far.
    let gone = || RegisterError::Helper("the container was not started".into());
    let Request {
        mode,
        machine: mut m,
    } = read_line(&mut requests)?.ok_or_else(gone)?;
    let conn = connect(mode, bus);
    // Watching for the scope before the container's PID 1 is known, so that this bus traffic
    // overlaps with the container's setup too.
    let watch = match &conn {
        Ok(Ok(c)) if !m.keep_unit && mode != Mode::No => Watch::new(c, &m).ok(),
        _ => None,
    };
    m.leader = read_line(&mut requests)?.ok_or_else(gone)?;
    // Set while CreateMachine is under way: a scope that systemd starts for berth itself
    // afterwards (machined not there) is no sign of a registration.
    let creating = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    if let Some(watch) = watch {
        watch.start(m.leader, report, creating.clone());
    }
    let machined_done = || creating.store(false, std::sync::atomic::Ordering::SeqCst);
    match conn? {
        Ok(conn) => bus_register(&conn, mode, &m, &machined_done),
        Err(outcome) => Ok(outcome),
    }
}

/// A registration [`begin`] started.
pub enum Pending {
    /// Nothing to ask the bus.
    Done(Outcome),
    /// The helper, waiting for the container's PID 1 on `requests`; `unit` is the scope
    /// CreateMachine would make.
    Started {
        helper: Helper,
        requests: OwnedFd,
        unit: String,
    },
}

/// How far [`Pending::place`] got.
pub enum Placed {
    /// The outcome. The helper, if there was one, has answered and is still to be reaped
    /// ([`Helper::reap`]): that need not delay the container.
    Answered(Outcome, Option<Helper>),
    /// systemd has started the container's scope around its PID 1, with the scope's limits
    /// in force; machined's answer is still to come ([`InScope::outcome`]). machined replies
    /// to CreateMachine only milliseconds after that, so the container may go on meanwhile.
    InScope(InScope),
}

/// A CreateMachine whose scope has started, machined's answer still to come.
pub struct InScope {
    helper: Helper,
    unit: String,
}

impl InScope {
    /// machined's answer; or, if `ended` (the container's pidfd) turns readable first, the
    /// registration as it stands, without waiting further. The scope's start job ended "done",
    /// which is all machined waits for before it answers success; and once the scope empties
    /// machined may drop the machine without answering at all. Also returns the helper, which
    /// is exiting, still to be reaped.
    pub fn outcome(mut self, ended: BorrowedFd<'_>) -> Result<(Outcome, Helper), RegisterError> {
        match self.helper.result(Some(ended))? {
            Some(res) => res.map(|outcome| (outcome, self.helper)),
            None => {
                // The helper's remaining bus traffic is of no use any more.
                self.helper.stop();
                Ok((Outcome::Registered { unit: self.unit }, self.helper))
            }
        }
    }
}

impl Pending {
    /// Hands `leader` (the container's PID 1 on the host) to the helper and waits until the
    /// container is placed: the final outcome, or its scope started. Dropped instead, the
    /// helper ends without registering anything.
    pub fn place(self, leader: u32) -> Result<Placed, RegisterError> {
        match self {
            Pending::Done(outcome) => Ok(Placed::Answered(outcome, None)),
            Pending::Started {
                mut helper,
                requests,
                unit,
            } => {
                let sent = send_line(requests.as_fd(), &leader);
                // Nothing more to say: the helper sees end of file if it asks again.
                drop(requests);
                let report = helper.next(None);
                sent.map_err(|e| RegisterError::Helper(e.to_string()))?;
                match report? {
                    Some(Report::Placed) => Ok(Placed::InScope(InScope { helper, unit })),
                    Some(Report::Done(outcome)) => Ok(Placed::Answered(outcome?, Some(helper))),
                    None => unreachable!("nothing else is polled"),
                }
            }
        }
    }
}

/// Watches, from the helper, for what a CreateMachine call does besides its reply:
/// - systemd has started the container's scope: a JobRemoved signal for the scope (machined
///   waits for the same signal before it replies), after which the container's PID 1 is in
///   it. The scope's name alone is not enough: a stop job of the scope of an earlier
///   container with this name ends the same way.
/// - machined has dropped the machine again (MachineRemoved after our MachineNew): its
///   scope emptied, the container having ended. machined 252 then never answers the
///   CreateMachine call, so the helper answers in its place.
struct Watch {
    messages: zbus::blocking::MessageIterator,
    unit: String,
    name: String,
}

impl Watch {
    /// Subscribes to the signals without waiting for the bus's answers: the bus handles a
    /// connection's messages in order, so the rules are in place before the CreateMachine
    /// sent after them reaches machined.
    fn new(conn: &zbus::blocking::Connection, m: &Machine) -> Result<Watch, zbus::Error> {
        let unit = scope_name(&m.name);
        let rules = [
            zbus::MatchRule::builder()
                .msg_type(zbus::message::Type::Signal)
                .sender(SYSTEMD)?
                .path(SYSTEMD_PATH)?
                .interface(SYSTEMD_MANAGER)?
                .member("JobRemoved")?
                .arg(2, unit.clone())?
                .build(),
            // MachineNew and MachineRemoved, both with the name first.
            zbus::MatchRule::builder()
                .msg_type(zbus::message::Type::Signal)
                .sender(MACHINED)?
                .path(MACHINED_PATH)?
                .interface(MACHINED_IFACE)?
                .arg(0, m.name.clone())?
                .build(),
        ];
        // Every message the connection receives, from now on.
        let messages = zbus::blocking::MessageIterator::from(conn);
        for rule in rules {
            let add = zbus::Message::method_call("/org/freedesktop/DBus", "AddMatch")?
                .destination("org.freedesktop.DBus")?
                .interface("org.freedesktop.DBus")?
                .build(&(rule.to_string(),))?;
            conn.send(&add)?;
        }
        Ok(Watch {
            messages,
            unit,
            name: m.name.clone(),
        })
    }

    /// Watches in a thread of the helper; the helper's exit ends it.
    fn start(
        self,
        leader: u32,
        report: &Reporter,
        creating: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) {
        let Ok(report) = report.try_clone() else {
            return;
        };
        std::thread::spawn(move || {
            let (mut placed, mut ours) = (false, false);
            for msg in self.messages {
                let Ok(msg) = msg else { return };
                let header = msg.header();
                if header.message_type() != zbus::message::Type::Signal {
                    continue;
                }
                match header.member().map(|m| m.as_str()) {
                    Some("JobRemoved") if !placed => {
                        let done = msg
                            .body()
                            .deserialize::<(u32, zbus::zvariant::ObjectPath<'_>, &str, &str)>()
                            .is_ok_and(|(_, _, unit, result)| {
                                unit == self.unit && result == "done"
                            });
                        if done
                            && creating.load(std::sync::atomic::Ordering::SeqCst)
                            && in_unit(leader, &self.unit)
                        {
                            placed = true;
                            report.send(&Report::Placed);
                        }
                    }
                    Some(member @ ("MachineNew" | "MachineRemoved")) => {
                        let ours_by_name = msg
                            .body()
                            .deserialize::<(&str, zbus::zvariant::ObjectPath<'_>)>()
                            .is_ok_and(|(name, _)| name == self.name);
                        if !ours_by_name {
                            continue;
                        }
                        if member == "MachineNew" {
                            ours = true;
                        } else if ours && has_ended(leader) {
                            // (By name alone the machine could be another berth's, started
                            // under the same name in the same milliseconds; ours can only
                            // have been dropped once our container has ended.)
                            report.send(&Report::Done(Ok(Outcome::Registered {
                                unit: self.unit.clone(),
                            })));
                            // SAFETY: ends the helper, whose main thread waits for a reply
                            // that will not come; nothing of the supervisor's runs here.
                            unsafe { libc::_exit(0) }
                        }
                    }
                    _ => {}
                }
            }
        });
    }
}

/// Whether process `pid` (a child of berth's, so its number is not reused before berth reaps
/// it) has ended: a zombie, or gone.
fn has_ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold any byte.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| matches!(state, "Z" | "X")),
        Err(_) => true,
    }
}

/// Whether `pid` is in the cgroup of `unit` (on any hierarchy: they are set up alike).
fn in_unit(pid: u32, unit: &str) -> bool {
    let suffix = format!("/{unit}");
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| {
        c.lines()
            .filter_map(|l| l.splitn(3, ':').nth(2))
            .any(|path| path.ends_with(&suffix))
    })
}

/// The login session scope berth runs in, if any (nspawn refuses --keep-unit there too).
fn session_scope() -> Option<String> {
    let cg = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cg.lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .filter_map(|p| p.rsplit('/').next())
        .find(|unit| unit.starts_with("session-") && unit.ends_with(".scope"))
        .map(str::to_string)
}

/// Ends the registration (machined forgets the machine; the scope goes with its processes).
/// Errors are ignored, as nspawn does: the machine may be gone already. With `wait` false the
/// helper is left to finish on its own, so berth's exit does not wait for the bus.
pub fn unregister(name: &str, wait: bool) {
    let call = || {
        let conn = system_bus().map_err(|e| RegisterError::Bus(e.to_string()))?;
        unregister_on(&conn, name)?;
        Ok(Outcome::Unregistered { machined: None })
    };
    if wait {
        let _ = in_helper(call);
    } else {
        detached(call);
    }
}

fn unregister_on(conn: &zbus::blocking::Connection, name: &str) -> Result<(), RegisterError> {
    conn.call_method(
        Some(MACHINED),
        MACHINED_PATH,
        Some(MACHINED_IFACE),
        "UnregisterMachine",
        &(name,),
    )
    .map_err(|e| RegisterError::Bus(dbus_error_text(&e)))?;
    Ok(())
}

/// Points a helper's stdin, stdout and stderr at /dev/null: a helper may outlive berth for a
/// moment (or, the migration primer, wait out a grace period), and whoever reads berth's
/// output must not wait for it.
fn stdio_to_null() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors of this child alone.
            unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd) };
        }
    }
}

/// Runs `f` in a helper that berth does not wait for: the caller is on its way out, and the
/// helper, adopted when berth exits, finishes on its own.
fn detached<F: FnOnce() -> Result<Outcome, RegisterError>>(f: F) {
    if let Ok(h) = Helper::spawn(|_| f()) {
        h.abandon();
    }
}

fn dbus_error_name(e: &zbus::Error) -> Option<String> {
    use zbus::DBusError;
    match e {
        zbus::Error::MethodError(name, _, _) => Some(name.to_string()),
        zbus::Error::FDO(f) => Some(f.name().to_string()),
        _ => None,
    }
}

fn dbus_error_text(e: &zbus::Error) -> String {
    use zbus::DBusError;
    match e {
        zbus::Error::MethodError(_, Some(msg), _) => msg.clone(),
        zbus::Error::MethodError(name, None, _) => name.to_string(),
        zbus::Error::FDO(f) => f.description().unwrap_or_default().to_string(),
        other => other.to_string(),
    }
}

/// Errors that mean "machined is not there" rather than "machined said no".
fn is_unreachable(e: &zbus::Error) -> bool {
    dbus_error_name(e).is_some_and(|n| {
        matches!(
            n.as_str(),
            "org.freedesktop.DBus.Error.ServiceUnknown"
                | "org.freedesktop.DBus.Error.NameHasNoOwner"
                | "org.freedesktop.DBus.Error.SpawnFailed"
                | "org.freedesktop.DBus.Error.SpawnChildExited"
                | "org.freedesktop.DBus.Error.NoReply"
                | "org.freedesktop.systemd1.NoSuchUnit"
        )
    })
}

/// machined still knows a machine of this name whose leader is gone (its scope is on its
/// way out, or a berth before us was SIGKILLed): forget it. Returns whether it did.
fn forget_stale(conn: &zbus::blocking::Connection, name: &str) -> bool {
    let leader = conn
        .call_method(
            Some(MACHINED),
            MACHINED_PATH,
            Some(MACHINED_IFACE),
            "GetMachine",
            &(name,),
        )
        .ok()
        .and_then(|r| {
            r.body()
                .deserialize::<zbus::zvariant::OwnedObjectPath>()
                .ok()
        })
        .and_then(|path| {
            conn.call_method(
                Some(MACHINED),
                path.as_str(),
                Some("org.freedesktop.DBus.Properties"),
                "Get",
                &("org.freedesktop.machine1.Machine", "Leader"),
            )
            .ok()
        })
        .and_then(|r| r.body().deserialize::<zbus::zvariant::OwnedValue>().ok())
        .and_then(|v| u32::try_from(v).ok());
    match leader {
        Some(pid) if !std::path::Path::new(&format!("/proc/{pid}")).exists() => {
            unregister_on(conn, name).is_ok()
        }
        _ => false,
    }
}

/// systemd's unit_name_escape for the scope machined makes: machine-NAME.scope.
fn scope_name(machine: &str) -> String {
    let mut out = String::from("machine-");
    for (i, b) in machine.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b':' || b == b'_' || (b == b'.' && i > 0) {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out + ".scope"
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

/// The scope properties nspawn sends for CreateMachine, then the user's `--property`s (the
/// scope systemd starts for an unregistered container gets them too).
fn scope_properties(m: &Machine) -> Vec<(String, zbus::zvariant::Value<'static>)> {
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
    for p in &m.properties {
        out.push((p.name.clone(), to_zvalue(&p.value)));
    }
    out
}

/// The system bus (`bus`, connected already), or the outcome berth settles for without it.
fn connect(
    mode: Mode,
    bus: zbus::Result<zbus::blocking::Connection>,
) -> Result<Result<zbus::blocking::Connection, Outcome>, RegisterError> {
    if mode == Mode::Auto && !system_bus_present() {
        return Ok(Err(Outcome::Unregistered { machined: None }));
    }
    match bus {
        Ok(c) => Ok(Ok(c)),
        Err(e) => {
            let why = format!("system bus: {e}");
            match mode {
                Mode::Yes => Err(RegisterError::Unreachable(why)),
                Mode::Auto => Ok(Err(Outcome::Unregistered {
                    machined: Some(why),
                })),
                Mode::No => Ok(Err(Outcome::Unregistered { machined: None })),
            }
        }
    }
}

/// The system bus. A `unix:path=` address is connected here, synchronously: zbus would hand
/// the connect(2) to a thread pool of its own, a thread and a millisecond for nothing.
fn system_bus() -> zbus::Result<zbus::blocking::Connection> {
    match system_bus_path() {
        Some(path) => {
            let stream =
                std::os::unix::net::UnixStream::connect(path).map_err(zbus::Error::from)?;
            zbus::blocking::connection::Builder::async_io_unix_stream(stream).build()
        }
        None => zbus::blocking::Connection::system(),
    }
}

fn bus_register(
    conn: &zbus::blocking::Connection,
    mode: Mode,
    m: &Machine,
    machined_done: &dyn Fn(),
) -> Result<Outcome, RegisterError> {
    if !m.keep_unit
        && let Some(slice) = &m.slice
    {
        check_slice(conn, slice)?;
    }
    let machined = match mode {
        Mode::No => None,
        _ => match create_machine(conn, m).inspect(|_| machined_done())? {
            Ok(unit) => return Ok(Outcome::Registered { unit }),
            Err(why) if mode == Mode::Auto => Some(why),
            Err(why) => return Err(RegisterError::Unreachable(why)),
        },
    };
    if m.keep_unit || !systemd_present() {
        return Ok(Outcome::Unregistered { machined });
    }
    Ok(match start_scope(conn, m)? {
        Some(unit) => Outcome::Scope { unit, machined },
        None => Outcome::Unregistered { machined },
    })
}

/// Calls `f` again while systemd answers that the unit exists: a container that rebooted asks
/// for its scope again at once, and the scope of its previous life may still be on its way
/// out. Gives systemd two seconds.
fn while_unit_exists<T>(mut f: impl FnMut() -> Result<T, zbus::Error>) -> Result<T, zbus::Error> {
    let mut waits = 0;
    loop {
        match f() {
            Err(e) if waits < 400 && dbus_error_name(&e).as_deref() == Some(UNIT_EXISTS) => {
                waits += 1;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

/// Registers with machined. The inner error says why machined cannot be reached.
fn create_machine(
    conn: &zbus::blocking::Connection,
    m: &Machine,
) -> Result<Result<String, String>, RegisterError> {
    let id: Vec<u8> = if m.id == [0; 16] {
        Vec::new()
    } else {
        m.id.to_vec()
    };
    let mut retried = false;
    loop {
        // The call itself activates machined if it is not running yet.
        match while_unit_exists(|| call_register(conn, m, &id)) {
            Ok(()) => break,
            Err(e) if is_unreachable(&e) => return Ok(Err(dbus_error_text(&e))),
            Err(e) => {
                if dbus_error_name(&e).as_deref() == Some("org.freedesktop.machine1.MachineExists")
                {
                    if !retried && forget_stale(conn, &m.name) {
                        retried = true;
                        continue;
                    }
                    return Err(RegisterError::Exists(m.name.clone()));
                }
                return Err(RegisterError::Refused {
                    name: m.name.clone(),
                    msg: dbus_error_text(&e),
                });
            }
        }
    }
    Ok(Ok(if m.keep_unit {
        String::new()
    } else {
        scope_name(&m.name)
    }))
}

/// Has systemd start `machine-NAME.scope` around the container's PID 1, as nspawn's
/// allocate_scope does when it does not register: the properties machined would give the
/// scope, in machine.slice unless `--slice` says otherwise, collected when it ends even if it
/// failed. Waits for the start job. None: there is no systemd on this bus.
fn start_scope(
    conn: &zbus::blocking::Connection,
    m: &Machine,
) -> Result<Option<String>, RegisterError> {
    use zbus::zvariant::Value as Z;
    let bus = |e: zbus::Error| RegisterError::Bus(e.to_string());
    let unit = scope_name(&m.name);
    // Listening before the call, so the job's end cannot pass unseen.
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender(SYSTEMD)
        .and_then(|b| b.path(SYSTEMD_PATH))
        .and_then(|b| b.interface(SYSTEMD_MANAGER))
        .and_then(|b| b.member("JobRemoved"))
        .map_err(bus)?
        .build();
    let jobs = zbus::blocking::MessageIterator::for_match_rule(rule, conn, None).map_err(bus)?;

    // machined's defaults for the scopes it makes, then the same properties as for those.
    let mut sp = vec![
        ("PIDs".to_string(), Z::from(vec![m.leader])),
        (
            "CollectMode".into(),
            Z::from("inactive-or-failed".to_string()),
        ),
    ];
    if m.slice.is_none() {
        sp.push(("Slice".into(), Z::from("machine.slice".to_string())));
    }
    sp.extend(scope_properties(m));
    let aux: Vec<(String, Vec<(String, Z<'static>)>)> = Vec::new();
    let refused = |msg: String| RegisterError::ScopeRefused {
        unit: unit.clone(),
        msg,
    };
    let job: zbus::zvariant::OwnedObjectPath = match while_unit_exists(|| {
        conn.call_method(
            Some(SYSTEMD),
            SYSTEMD_PATH,
            Some(SYSTEMD_MANAGER),
            "StartTransientUnit",
            &(&unit, "fail", &sp, &aux),
        )
    }) {
        Ok(reply) => reply.body().deserialize().map_err(bus)?,
        Err(e) if is_unreachable(&e) => return Ok(None),
        Err(e) if dbus_error_name(&e).as_deref() == Some(UNIT_EXISTS) => {
            return Err(refused(format!(
                "{} (is a container named {:?} running?)",
                dbus_error_text(&e),
                m.name
            )));
        }
        Err(e) => return Err(refused(dbus_error_text(&e))),
    };
    for msg in jobs {
        let msg = msg.map_err(bus)?;
        let Ok((_, path, _, result)) =
            msg.body()
                .deserialize::<(u32, zbus::zvariant::OwnedObjectPath, String, String)>()
        else {
            continue;
        };
        if path == job {
            return match result.as_str() {
                "done" => Ok(Some(unit)),
                other => Err(refused(format!("its start job ended with {other:?}"))),
            };
        }
    }
    Err(RegisterError::Bus(
        "the bus connection ended before systemd's job did".into(),
    ))
}

fn call_register(
    conn: &zbus::blocking::Connection,
    m: &Machine,
    id: &Vec<u8>,
) -> Result<(), zbus::Error> {
    let class = "container";
    let (n, svc, root) = (&m.name, &m.service, &m.root_directory);
    // berth gives a container no host-side network interfaces (veth), so the plain calls,
    // not their WithNetwork variants.
    if m.keep_unit {
        conn.call_method(
            Some(MACHINED),
            MACHINED_PATH,
            Some(MACHINED_IFACE),
            "RegisterMachine",
            &(n, id, svc, class, m.leader, root),
        )?;
    } else {
        conn.call_method(
            Some(MACHINED),
            MACHINED_PATH,
            Some(MACHINED_IFACE),
            "CreateMachine",
            &(n, id, svc, class, m.leader, root, scope_properties(m)),
        )?;
    }
    Ok(())
}

/// Whether the system bus socket exists (for a `unix:path=` address, the default one or
/// $DBUS_SYSTEM_BUS_ADDRESS). Other address kinds count as present.
pub fn system_bus_present() -> bool {
    system_bus_path().is_none_or(|p| std::path::Path::new(&p).exists())
}

/// Where the system bus's address is given, if not at [`SYSTEM_BUS_SOCKET`].
pub const SYSTEM_BUS_VARIABLE: &str = "DBUS_SYSTEM_BUS_ADDRESS";
/// The system bus's socket when [`SYSTEM_BUS_VARIABLE`] is unset (a C string: berth's entry
/// point checks it before the C library runs).
pub const SYSTEM_BUS_SOCKET: &std::ffi::CStr = c"/var/run/dbus/system_bus_socket";

/// The socket of the system bus when its (first) address is a `unix:path=` one.
fn system_bus_path() -> Option<String> {
    let addr = std::env::var(SYSTEM_BUS_VARIABLE)
        .unwrap_or_else(|_| format!("unix:path={}", SYSTEM_BUS_SOCKET.to_string_lossy()));
    addr.split(';')
        .next()
        .and_then(|a| a.strip_prefix("unix:"))
        .and_then(|a| a.split(',').find_map(|kv| kv.strip_prefix("path=")))
        .map(str::to_string)
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
            Some(SYSTEMD_MANAGER),
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

/// Runs `f` in a forked child and returns its result.
fn in_helper<F>(f: F) -> Result<Outcome, RegisterError>
where
    F: FnOnce() -> Result<Outcome, RegisterError>,
{
    Helper::spawn(|_| f())?.wait()
}

/// What a helper tells the supervisor: one JSON line each, on a pipe.
#[derive(Debug, Serialize, Deserialize)]
enum Report {
    /// The container's PID 1 is in its scope (see [`Placed::InScope`]).
    Placed,
    /// The result; the helper exits after it.
    Done(Result<Outcome, RegisterError>),
}

/// The helper's end of the pipe. Lines are far shorter than PIPE_BUF, so the writes of the
/// helper's threads never interleave.
struct Reporter(std::fs::File);

impl Reporter {
    fn send(&self, r: &Report) {
        let mut line = serde_json::to_string(r).unwrap_or_default();
        line.push('\n');
        let _ = (&self.0).write_all(line.as_bytes());
    }

    fn try_clone(&self) -> std::io::Result<Reporter> {
        Ok(Reporter(self.0.try_clone()?))
    }
}

/// A forked child doing D-Bus work: zbus's threads and allocations live and die there, and
/// the supervisor stays single-threaded with no bus connection. Dropped without
/// [`Helper::wait`] or [`Helper::reap`], it is killed and reaped.
pub struct Helper {
    child: Option<nix::unistd::Pid>,
    /// None for the migration primer forked at berth's entry ([`Helper::adopt`]), which
    /// reports nothing.
    answer: Option<std::io::BufReader<std::fs::File>>,
}

impl Helper {
    /// The migration primer forked at berth's entry ([`crate::entry`]), to be reaped as a
    /// helper that reports nothing.
    pub fn adopt(child: nix::unistd::Pid) -> Helper {
        Helper {
            child: Some(child),
            answer: None,
        }
    }

    fn spawn<F>(f: F) -> Result<Helper, RegisterError>
    where
        F: FnOnce(&Reporter) -> Result<Outcome, RegisterError>,
    {
        let (rd, wr): (OwnedFd, OwnedFd) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| RegisterError::Helper(e.to_string()))?;
        // SAFETY: the child runs only `f` and `_exit`s; the parent (berth's supervisor) is
        // single-threaded when it forks.
        match unsafe { nix::unistd::fork() }.map_err(|e| RegisterError::Helper(e.to_string()))? {
            nix::unistd::ForkResult::Child => {
                drop(rd);
                // The signals the supervisor handles are its own business (a ^C on the
                // terminal reaches the helper too), however early the helper was forked.
                let mut handled = nix::sys::signal::SigSet::empty();
                for s in crate::container::HANDLED_SIGNALS {
                    handled.add(s);
                }
                let _ = handled.thread_block();
                stdio_to_null();
                let report = Reporter(wr.into());
                // A panic must not unwind out of the helper into a copy of the supervisor.
                let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&report)))
                    .unwrap_or_else(|p| {
                        // Its stderr is /dev/null: the message goes into the report.
                        let msg = p
                            .downcast_ref::<&str>()
                            .map(|m| m.to_string())
                            .or_else(|| p.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        Err(RegisterError::Helper(format!("it panicked: {msg}")))
                    });
                report.send(&Report::Done(res));
                // SAFETY: leaves the helper (and its threads) without running the parent's
                // atexit handlers or destructors.
                unsafe { libc::_exit(0) }
            }
            nix::unistd::ForkResult::Parent { child } => Ok(Helper {
                child: Some(child),
                answer: Some(std::io::BufReader::new(rd.into())),
            }),
        }
    }

    /// The helper's next report, waited for at most sd-bus's default method timeout: a hung
    /// bus peer must not hang berth. On failure the helper is killed. None: `or` turned
    /// readable first.
    fn next(&mut self, or: Option<BorrowedFd<'_>>) -> Result<Option<Report>, RegisterError> {
        use std::io::BufRead;
        let Some(answer) = self.answer.as_mut() else {
            return Err(RegisterError::Helper("it reports nothing".into()));
        };
        // A line may be buffered already (both reports can arrive in one read).
        if !answer.buffer().contains(&b'\n') {
            let mut fds = vec![nix::poll::PollFd::new(
                answer.get_ref().as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            fds.extend(or.map(|fd| nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)));
            let ready = loop {
                match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(25_000u16)) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    other => break other,
                }
            };
            if !matches!(ready, Ok(n) if n > 0) {
                self.kill();
                return Err(RegisterError::Helper(
                    "no answer from the bus within 25 s".into(),
                ));
            }
            let answered = fds[0].revents().is_some_and(|r| !r.is_empty());
            if !answered {
                return Ok(None);
            }
        }
        let mut line = String::new();
        match answer.read_line(&mut line) {
            Ok(n) if n > 0 => serde_json::from_str(&line)
                .map(Some)
                .map_err(|e| RegisterError::Helper(e.to_string())),
            Ok(_) => {
                let status = self.reap();
                Err(RegisterError::Helper(format!("it died ({status:?})")))
            }
            Err(e) => {
                self.kill();
                Err(RegisterError::Helper(e.to_string()))
            }
        }
    }

    /// The helper's result, after any earlier reports; the helper is reaped.
    pub fn wait(mut self) -> Result<Outcome, RegisterError> {
        let res = self.result(None)?.expect("nothing else is polled");
        self.reap();
        res
    }

    /// The helper's result, after any earlier reports (the helper exits after it); None if
    /// `or` turned readable first.
    fn result(
        &mut self,
        or: Option<BorrowedFd<'_>>,
    ) -> Result<Option<Result<Outcome, RegisterError>>, RegisterError> {
        loop {
            match self.next(or)? {
                Some(Report::Done(res)) => return Ok(Some(res)),
                Some(Report::Placed) => {}
                None => return Ok(None),
            }
        }
    }

    /// Waits for the helper, which has answered (or was stopped), to exit.
    pub fn reap(&mut self) -> Option<nix::sys::wait::WaitStatus> {
        let child = self.child.take()?;
        loop {
            match nix::sys::wait::waitpid(child, None) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => return other.ok(),
            }
        }
    }

    /// Kills the helper, without waiting for it to be gone.
    fn stop(&self) {
        if let Some(child) = self.child {
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
        }
    }

    fn kill(&mut self) {
        self.stop();
        self.reap();
    }

    /// Reaps the helper if it has exited; whether it has (or was reaped before).
    pub fn try_reap(&mut self) -> bool {
        let Some(child) = self.child else {
            return true;
        };
        match nix::sys::wait::waitpid(child, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) => false,
            _ => {
                self.child = None;
                true
            }
        }
    }

    /// On berth's way out: reaps the helper (which has answered, or was stopped) if it is
    /// gone, and otherwise leaves it, exiting, to whoever adopts it when berth exits. Tearing
    /// down a helper's threads and memory takes a few tenths of a millisecond, which need not
    /// delay berth's exit.
    pub fn abandon(mut self) {
        self.try_reap();
        // Not reaped: leave it (Drop would kill it and wait).
        self.child = None;
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_names_are_escaped_as_systemd_does() {
        assert_eq!(scope_name("web"), "machine-web.scope");
        assert_eq!(scope_name("list-ab1"), "machine-list\\x2dab1.scope");
        assert_eq!(scope_name("a.b_c"), "machine-a.b_c.scope");
    }

    #[test]
    fn a_child_has_ended_once_it_is_a_zombie() {
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(!has_ended(pid), "a running child");
        child.kill().unwrap();
        // Not reaped yet: a zombie.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !has_ended(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "still running after SIGKILL"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child.wait().unwrap();
        assert!(has_ended(pid), "reaped");
    }

    #[test]
    fn register_mode_parses() {
        assert_eq!("yes".parse::<Mode>().unwrap(), Mode::Yes);
        assert_eq!("no".parse::<Mode>().unwrap(), Mode::No);
        assert_eq!("auto".parse::<Mode>().unwrap(), Mode::Auto);
        assert!("maybe".parse::<Mode>().is_err());
    }
}
