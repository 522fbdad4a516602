//! Where the container lives on the host: registered with systemd-machined (which puts it in
//! machine-NAME.scope, or adopts berth's unit with --keep-unit); unregistered on a host run by
//! systemd, in the same machine-NAME.scope started by systemd itself; or, without systemd (or
//! with --keep-unit and --register=no), in berth's own cgroup.
//!
//! The launcher calls [`Placement::prepare`] before clone (so that where berth makes the cgroup
//! itself the container is born in it through CLONE_INTO_CGROUP), [`Placement::place`] after
//! clone and before the child may go on, [`Placement::confirm`] once the payload runs and
//! before the container is reported ready, and drops the placement after the container has
//! ended: that unregisters the machine and removes berth's cgroup (a scope of systemd's goes
//! away with its processes).

use crate::cgroup::Cgroup;
use crate::register::{self, Machine, Outcome};
use crate::spec::ext::Berth;
use crate::spec::systemd::MachineSettings;
use oci_spec::runtime::Spec;
use std::os::fd::BorrowedFd;

#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error(transparent)]
    Settings(#[from] crate::spec::systemd::MachineSpecError),
    #[error(transparent)]
    Register(#[from] register::RegisterError),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
}

pub struct Placement {
    settings: MachineSettings,
    /// The settings' `--property` assignments, parsed once.
    props: Vec<crate::property::Property>,
    /// The registration (or scope) started before clone, handed the container by place().
    pending: Option<register::Pending>,
    /// Children that exit on their own (the migration primer, bus helpers that have answered),
    /// reaped once the container runs ([`Self::reap_helpers`]) or on release: waiting for them
    /// would only delay the container.
    helpers: Vec<register::Helper>,
    /// The registration whose answer confirm() still waits for: the container is in its scope.
    in_scope: Option<register::InScope>,
    cgroup: Option<Cgroup>,
    born_in_cgroup: bool,
    registered: Option<String>,
    /// With --keep-unit: the container's cgroup below berth's unit (removed at the end).
    payload_cgroup: Option<std::path::PathBuf>,
    /// The container's unit: the scope machined or systemd started, or berth's own unit when
    /// registered with --keep-unit.
    pub unit: Option<String>,
}

impl Placement {
    /// Reads the settings and, when berth will make the cgroup itself for sure (neither
    /// machined nor systemd will be asked), makes it now, limits applied.
    /// `early`: what main started before the spec was built ([`register::Early`]).
    pub fn prepare(
        spec: &Spec,
        ext: &Berth,
        early: register::Early,
    ) -> Result<Placement, PlaceError> {
        let settings = MachineSettings::from_spec(spec)?;
        let props = settings.parsed_properties()?;
        // Known before clone that systemd will not be asked: the container is then born in
        // berth's own cgroup (CLONE_INTO_CGROUP); moving it in afterwards waits for an RCU
        // grace period, milliseconds on a busy host.
        let own = !register::asks_bus(settings.register, settings.keep_unit);
        let (cgroup, pending) = if own {
            // (None where berth sees no cgroup of its own and no limit needs one: the
            // container then stays in berth's.)
            let unregistered = Outcome::Unregistered { machined: None };
            (
                own_cgroup(&ext.machine, &props)?,
                register::Pending::Done(unregistered),
            )
        } else {
            // Otherwise the bus is asked: its helper connects while the container is set up.
            let m = machine(spec, ext, &settings, &props);
            let pending = register::begin(settings.register, &m, early.connecting)?;
            (None, pending)
        };
        Ok(Placement {
            settings,
            props,
            pending: Some(pending),
            helpers: early.primer.into_iter().collect(),
            in_scope: None,
            cgroup,
            born_in_cgroup: false,
            registered: None,
            payload_cgroup: None,
            unit: None,
        })
    }

    /// The cgroup2 directory the container should be born in (clone3's CLONE_INTO_CGROUP).
    pub fn clone_into(&self) -> Option<BorrowedFd<'_>> {
        self.cgroup.as_ref().and_then(|c| c.v2_fd())
    }

    /// Tells the placement that clone3 put the container into [`Self::clone_into`].
    pub fn born_in_cgroup(&mut self) {
        self.born_in_cgroup = true;
    }

    /// Registers the container (PID `leader` on the host), or has systemd put it into a scope,
    /// or moves it into berth's cgroup. Returns once the container is where it will run, with
    /// its limits: machined's answer may still be on its way, and [`Self::confirm`] waits for
    /// it.
    pub fn place(&mut self, ext: &Berth, leader: libc::pid_t) -> Result<(), PlaceError> {
        if let Some(cg) = &self.cgroup {
            cg.attach(leader, self.born_in_cgroup)?;
            return Ok(());
        }
        let pending = self.pending.take().expect("placed once");
        match pending.place(leader as u32)? {
            register::Placed::Answered(outcome, helper) => {
                // It exits on its own; waiting for that would only delay the container.
                self.helpers.extend(helper);
                self.settle(ext, leader, outcome)
            }
            register::Placed::InScope(scope) => {
                self.in_scope = Some(scope);
                Ok(())
            }
        }
    }

    /// The end of the registration place() started: machined's answer, if it was still to
    /// come and the container (its pidfd `ended`) still runs. Called once the payload runs,
    /// before berth reports the container ready. An error here leaves the container to be
    /// killed by the caller.
    pub fn confirm(
        &mut self,
        ext: &Berth,
        leader: libc::pid_t,
        ended: BorrowedFd<'_>,
    ) -> Result<(), PlaceError> {
        if let Some(scope) = self.in_scope.take() {
            let (outcome, helper) = scope.outcome(ended)?;
            self.helpers.push(helper);
            self.settle(ext, leader, outcome)?;
        }
        Ok(())
    }

    /// Reaps the helpers place() and confirm() let go (and the migration primer): those that
    /// have exited, or, with `block`, all of them. Whether none is left. (The primer waits in
    /// the kernel for as long as an RCU grace period takes, which on a loaded host can be long.)
    pub fn reap_helpers(&mut self, block: bool) -> bool {
        if block {
            self.helpers.drain(..).for_each(|mut h| {
                h.reap();
            });
        } else {
            self.helpers.retain_mut(|h| !h.try_reap());
        }
        self.helpers.is_empty()
    }

    fn settle(
        &mut self,
        ext: &Berth,
        leader: libc::pid_t,
        outcome: Outcome,
    ) -> Result<(), PlaceError> {
        let machined = match outcome {
            Outcome::Registered { unit } => {
                self.registered = Some(ext.machine.clone());
                self.unit = Some(unit);
                if self.settings.keep_unit {
                    self.payload_cgroup = split_unit_cgroup(leader);
                }
                return Ok(());
            }
            Outcome::Scope { unit, machined } => {
                self.unit = Some(unit);
                machined
            }
            Outcome::Unregistered { machined } => {
                if let Some(cg) = own_cgroup(&ext.machine, &self.props)? {
                    cg.attach(leader, false)?;
                    self.cgroup = Some(cg);
                }
                machined
            }
        };
        if let Some(why) = machined
            && !ext.quiet
        {
            eprintln!(
                "berth: systemd-machined is not reachable ({why}); running {} unregistered",
                ext.machine
            );
        }
        Ok(())
    }

    /// Gives the container a cgroup of its own where it still shares berth's (a booted
    /// system must manage its cgroup itself): the same split as under --keep-unit, removed
    /// again on release. Best effort, as that split is; the caller checks the result.
    pub fn separate(&mut self, leader: libc::pid_t) {
        if self.payload_cgroup.is_none() {
            self.payload_cgroup = split_unit_cgroup(leader);
        }
    }

    /// Ends the registration and removes berth's cgroup now (the same happens on drop). With
    /// `wait` false (berth is on its way out) berth waits neither for machined's answer nor for
    /// its bus helpers to be gone: a container that is not started again under the same name
    /// needs neither (its scope ends with its processes anyway).
    pub fn release(&mut self, wait: bool) {
        if let Some(name) = self.registered.take() {
            register::unregister(&name, wait);
        }
        if wait {
            self.reap_helpers(true);
        } else {
            self.helpers.drain(..).for_each(register::Helper::abandon);
        }
        self.cgroup = None;
        if let Some(p) = self.payload_cgroup.take() {
            let _ = std::fs::remove_dir(p);
        }
    }
}

/// What machined (or systemd, for a scope) is told about the container; the leader is filled
/// in once it exists.
fn machine(
    spec: &Spec,
    ext: &Berth,
    settings: &MachineSettings,
    props: &[crate::property::Property],
) -> Machine {
    Machine {
        name: ext.machine.clone(),
        id: crate::spec::machine::parse_id(&ext.uuid).unwrap_or([0; 16]),
        service: "berth".into(),
        leader: 0,
        root_directory: spec
            .root()
            .as_ref()
            .map(|r| r.path().to_string_lossy().into_owned())
            .unwrap_or_default(),
        keep_unit: settings.keep_unit,
        slice: settings.slice.clone(),
        properties: props.to_vec(),
        kill_signal: ext.kill_signal,
    }
}

/// With --keep-unit berth and its container share the unit's cgroup. As nspawn does, give the
/// container `<unit cgroup>/payload` and berth `<unit cgroup>/supervisor` on the cgroup2
/// hierarchy (the one systemd delegates with Delegate=yes): the container's cgroup namespace
/// is then rooted at a cgroup of its own, which a booted system inside can manage (and which
/// can be delegated to its user namespace), and cgroup2's no-internal-processes rule holds.
/// Best effort: where it cannot be done the container stays in the unit's cgroup.
fn split_unit_cgroup(leader: libc::pid_t) -> Option<std::path::PathBuf> {
    let h = crate::cgroup::hierarchies()
        .ok()?
        .into_iter()
        .find(|h| h.is_v2())?;
    // After a reboot (-b) berth already sits in the split's supervisor half.
    let base = if h.own.ends_with("supervisor") {
        h.own.parent()?.to_path_buf()
    } else {
        h.own.clone()
    };
    let payload = base.join("payload");
    let supervisor = base.join("supervisor");
    for d in [&payload, &supervisor] {
        if let Err(e) = std::fs::create_dir(d)
            && e.kind() != std::io::ErrorKind::AlreadyExists
        {
            return None;
        }
    }
    std::fs::write(payload.join("cgroup.procs"), leader.to_string()).ok()?;
    let _ = std::fs::write(supervisor.join("cgroup.procs"), "0");
    Some(payload)
}

/// berth's own cgroup for the container. Where berth cannot see a cgroup of its own (it was
/// moved in from outside this cgroup namespace) a container without limits runs where berth
/// runs; with limits that is an error.
fn own_cgroup(
    name: &str,
    props: &[crate::property::Property],
) -> Result<Option<Cgroup>, PlaceError> {
    match Cgroup::create(name, props) {
        Ok(cg) => Ok(Some(cg)),
        Err(crate::cgroup::CgroupError::NoHierarchy) if props.is_empty() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        self.release(true);
    }
}
