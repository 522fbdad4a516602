//! systemd integration settings in the spec: `--register`, `--keep-unit`, `--slice` and
//! `--property` travel as `org.berth.*` annotations; the resource limits among the properties
//! are also written to OCI `linux.resources` where they map. (`--uuid` becomes the container's
//! `org.berth.uuid` unless the tree has a machine-id, see `container_uuid`.)

use crate::cli::RunArgs;
use crate::property::{self, Property, Value};
use crate::register::Mode;
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxPids, LinuxResources, Spec};
use std::collections::HashMap;

pub const REGISTER: &str = "org.berth.register";
pub const KEEP_UNIT: &str = "org.berth.keep-unit";
pub const SLICE: &str = "org.berth.slice";
/// A JSON array of the `--property` assignments, as given.
pub const PROPERTIES: &str = "org.berth.properties";

#[derive(Debug, thiserror::Error)]
pub enum MachineSpecError {
    #[error(transparent)]
    Property(#[from] property::PropertyError),
    #[error("bad --uuid {0:?}: expected 32 hex digits or a dashed UUID, not all zeros")]
    Uuid(String),
    #[error("bad --slice {0:?}: a slice unit name ends in .slice")]
    Slice(String),
    #[error("bad {0} annotation: {1}")]
    Annotation(&'static str, String),
}

/// The typed view of the machine annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineSettings {
    pub register: Mode,
    pub keep_unit: bool,
    pub slice: Option<String>,
    /// `--property` assignments, as given (validated).
    pub properties: Vec<String>,
}

impl Default for MachineSettings {
    fn default() -> Self {
        MachineSettings {
            register: Mode::Auto,
            keep_unit: false,
            slice: None,
            properties: Vec::new(),
        }
    }
}

impl MachineSettings {
    pub fn from_spec(spec: &Spec) -> Result<MachineSettings, MachineSpecError> {
        let empty = HashMap::new();
        let a = spec.annotations().as_ref().unwrap_or(&empty);
        let mut m = MachineSettings::default();
        if let Some(r) = a.get(REGISTER) {
            m.register = r
                .parse()
                .map_err(|e| MachineSpecError::Annotation(REGISTER, e))?;
        }
        m.keep_unit = a.get(KEEP_UNIT).is_some_and(|v| v == "true");
        m.slice = a.get(SLICE).cloned();
        if let Some(p) = a.get(PROPERTIES) {
            m.properties = serde_json::from_str(p)
                .map_err(|e| MachineSpecError::Annotation(PROPERTIES, e.to_string()))?;
        }
        Ok(m)
    }

    /// The parsed `--property` assignments.
    pub fn parsed_properties(&self) -> Result<Vec<Property>, MachineSpecError> {
        Ok(self
            .properties
            .iter()
            .map(|a| property::parse(a))
            .collect::<Result<Vec<_>, _>>()?)
    }
}

/// `--uuid`, parsed (None when not given).
pub fn parse_uuid_arg(arg: Option<&str>) -> Result<Option<[u8; 16]>, MachineSpecError> {
    match arg {
        None => Ok(None),
        Some(u) => super::machine::parse_id(u)
            .map(Some)
            .ok_or_else(|| MachineSpecError::Uuid(u.to_string())),
    }
}

/// Writes the machine settings of `args` into `spec`.
pub fn apply(args: &RunArgs, spec: &mut Spec) -> Result<(), MachineSpecError> {
    let props = args
        .property
        .iter()
        .map(|a| property::parse(a))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(s) = &args.slice
        && (!s.ends_with(".slice") || s.len() <= ".slice".len() || s.contains('/'))
    {
        return Err(MachineSpecError::Slice(s.clone()));
    }

    let mut ann = spec.annotations().clone().unwrap_or_default();
    ann.insert(REGISTER.into(), args.register.to_string());
    if args.keep_unit {
        ann.insert(KEEP_UNIT.into(), "true".into());
    }
    if let Some(s) = &args.slice {
        ann.insert(SLICE.into(), s.clone());
    }
    if !args.property.is_empty() {
        ann.insert(
            PROPERTIES.into(),
            serde_json::to_string(&args.property).expect("strings serialize"),
        );
    }
    spec.set_annotations(Some(ann));

    apply_resources(&props, spec);
    Ok(())
}

fn limit(v: u64) -> i64 {
    if v == property::INFINITY {
        -1
    } else {
        v.min(i64::MAX as u64) as i64
    }
}

/// The limits that have an OCI `linux.resources` field (or a cgroup v2 `unified` key).
fn apply_resources(props: &[Property], spec: &mut Spec) {
    if props.is_empty() {
        return;
    }
    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut res: LinuxResources = linux.resources().clone().unwrap_or_default();
    let mut touched = false;
    for p in props {
        match (p.name.as_str(), &p.value) {
            ("MemoryMax" | "MemoryLimit", Value::U64(v)) => {
                let mut m: LinuxMemory = (*res.memory()).unwrap_or_default();
                m.set_limit(Some(limit(*v)));
                res.set_memory(Some(m));
                touched = true;
            }
            ("MemoryLow", Value::U64(v)) => {
                let mut m: LinuxMemory = (*res.memory()).unwrap_or_default();
                m.set_reservation(Some(limit(*v)));
                res.set_memory(Some(m));
                touched = true;
            }
            ("TasksMax", Value::U64(v)) => {
                let mut pids = LinuxPids::default();
                pids.set_limit(limit(*v));
                res.set_pids(Some(pids));
                touched = true;
            }
            ("CPUQuotaPerSecUSec", Value::U64(v)) => {
                let mut c: LinuxCpu = res.cpu().clone().unwrap_or_default();
                if *v == property::INFINITY {
                    c.set_quota(Some(-1));
                } else {
                    // systemd's default period: 100 ms.
                    c.set_period(Some(100_000));
                    c.set_quota(Some((*v / 10).max(1000) as i64));
                }
                res.set_cpu(Some(c));
                touched = true;
            }
            ("CPUShares", Value::U64(v)) => {
                let mut c: LinuxCpu = res.cpu().clone().unwrap_or_default();
                c.set_shares(Some(*v));
                res.set_cpu(Some(c));
                touched = true;
            }
            ("BlockIOWeight", Value::U64(v)) => {
                let mut b: LinuxBlockIo = res.block_io().clone().unwrap_or_default();
                b.set_weight(Some(*v as u16));
                res.set_block_io(Some(b));
                touched = true;
            }
            ("IOWeight" | "CPUWeight" | "MemoryHigh", Value::U64(v)) => {
                let (key, val) = match p.name.as_str() {
                    "IOWeight" => ("io.weight", format!("default {v}")),
                    "CPUWeight" => ("cpu.weight", v.to_string()),
                    _ => (
                        "memory.high",
                        if *v == property::INFINITY {
                            "max".into()
                        } else {
                            v.to_string()
                        },
                    ),
                };
                let mut u = res.unified().clone().unwrap_or_default();
                u.insert(key.into(), val);
                res.set_unified(Some(u));
                touched = true;
            }
            _ => {}
        }
    }
    if touched {
        linux.set_resources(Some(res));
        spec.set_linux(Some(linux));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(v: &[&str]) -> RunArgs {
        let mut all = vec!["berth", "run"];
        all.extend_from_slice(v);
        all.push("true");
        let crate::cli::Command::Run(a) = crate::cli::Cli::try_parse_from(all).unwrap().command
        else {
            panic!("run")
        };
        a
    }

    #[test]
    fn flags_round_trip_through_the_spec() {
        let mut spec = Spec::default();
        apply(
            &args(&[
                "--register=yes",
                "--keep-unit",
                "--slice=foo.slice",
                "--property=MemoryMax=64M",
                "--property=TasksMax=20",
                "--property=CPUQuota=50%",
                "--property=IOWeight=300",
            ]),
            &mut spec,
        )
        .unwrap();
        let m = MachineSettings::from_spec(&spec).unwrap();
        assert_eq!(m.register, Mode::Yes);
        assert!(m.keep_unit);
        assert_eq!(m.slice.as_deref(), Some("foo.slice"));
        assert_eq!(m.properties.len(), 4);
        let res = spec.linux().as_ref().unwrap().resources().as_ref().unwrap();
        assert_eq!(res.memory().as_ref().unwrap().limit(), Some(64 << 20));
        assert_eq!(res.pids().as_ref().unwrap().limit(), 20);
        let cpu = res.cpu().as_ref().unwrap();
        assert_eq!((cpu.quota(), cpu.period()), (Some(50_000), Some(100_000)));
        assert_eq!(
            res.unified()
                .as_ref()
                .unwrap()
                .get("io.weight")
                .map(String::as_str),
            Some("default 300")
        );
    }

    #[test]
    fn defaults_are_nspawn_like() {
        let mut spec = Spec::default();
        apply(&args(&[]), &mut spec).unwrap();
        assert_eq!(
            MachineSettings::from_spec(&spec).unwrap(),
            MachineSettings::default()
        );
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(parse_uuid_arg(Some("xyz")).is_err());
        assert!(parse_uuid_arg(Some(&"0".repeat(32))).is_err());
        assert!(
            parse_uuid_arg(Some("01234567-89ab-cdef-0123-456789abcdef"))
                .unwrap()
                .is_some()
        );
        for bad in [
            &["--property=MemoryMax=lots"][..],
            &["--property=Bogus=1"],
            &["--slice=foo"],
        ] {
            assert!(apply(&args(bad), &mut Spec::default()).is_err(), "{bad:?}");
        }
    }
}
