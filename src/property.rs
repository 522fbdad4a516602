//! `--property NAME=VALUE`: unit properties for the container's scope, parsed the way systemd's
//! bus-unit-util parses them for `systemd-run -p`/`systemd-nspawn --property`, into the D-Bus
//! name and type systemd expects (`CPUQuota=50%` becomes `CPUQuotaPerSecUSec` = 500000 `t`).
//! The same parsed values drive berth's own cgroup when it runs without systemd.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PropertyError {
    #[error("bad --property {0:?}: expected NAME=VALUE")]
    NoAssignment(String),
    #[error("bad --property {0:?}: unknown or unsupported property {1:?}")]
    Unknown(String, String),
    #[error("bad --property {0:?}: {1}")]
    BadValue(String, String),
}

/// A value of one of the D-Bus types systemd uses for unit properties.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// `t`
    U64(u64),
    /// `u`
    U32(u32),
    /// `i`
    I32(i32),
    /// `b`
    Bool(bool),
    /// `s`
    Str(String),
    /// `a(ss)` (DeviceAllow): (device, "rwm" subset)
    Devices(Vec<(String, String)>),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::U64(v) => write!(f, "{v}"),
            Value::U32(v) => write!(f, "{v}"),
            Value::I32(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Str(v) => write!(f, "{v}"),
            Value::Devices(v) => write!(f, "{v:?}"),
        }
    }
}

/// One parsed `--property`: the name as sent over D-Bus and its typed value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Property {
    /// What the user wrote, for messages.
    pub assignment: String,
    pub name: String,
    pub value: Value,
}

pub const INFINITY: u64 = u64::MAX;

/// Percentages scaled to 0..=u32::MAX, like systemd's UINT32_SCALE_FROM_PERMYRIAD.
fn scale_from_permyriad(p: u64) -> u32 {
    ((p * u32::MAX as u64 + 5000) / 10000) as u32
}

/// A percentage "N%" or "N.M%" in permyriad (1/10000), or None if `s` has no '%'.
fn parse_percent(s: &str) -> Result<Option<u64>, String> {
    let Some(num) = s.strip_suffix('%') else {
        return Ok(None);
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 2 {
        return Err(format!("{s:?} is not a percentage"));
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a percentage"));
    }
    let i: u64 = int.parse().map_err(|_| format!("{s:?} is out of range"))?;
    let f: u64 = format!("{frac:0<2}").parse().unwrap_or(0);
    i.checked_mul(100)
        .and_then(|v| v.checked_add(f))
        .map(Some)
        .ok_or_else(|| format!("{s:?} is out of range"))
}

/// A size with an optional binary suffix (K, M, G, T, P, E; base 1024), as systemd's parse_size.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let mult: u64 = match suffix.trim() {
        "" | "B" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        "P" => 1 << 50,
        "E" => 1 << 60,
        _ => {
            return Err(format!(
                "{s:?} is not a size (use bytes or K, M, G, T suffixes)"
            ));
        }
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a size"));
    }
    let i: u64 = int.parse().map_err(|_| format!("{s:?} is too large"))?;
    let mut v = i
        .checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))?;
    if !frac.is_empty() {
        let digits = frac.len().min(18) as u32;
        let f: u64 = frac[..digits as usize]
            .parse()
            .map_err(|_| format!("{s:?} is not a size"))?;
        v = v
            .checked_add((f as u128 * mult as u128 / 10u128.pow(digits)) as u64)
            .ok_or_else(|| format!("{s:?} is too large"))?;
    }
    Ok(v)
}

fn parse_bool(s: &str) -> Result<bool, String> {
    crate::cli::parse_bool(s)
}

fn parse_u64_range(s: &str, lo: u64, hi: u64) -> Result<u64, String> {
    let v: u64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if v < lo || v > hi {
        return Err(format!("{v} is out of range {lo}..{hi}"));
    }
    Ok(v)
}

/// Parses `--property NAME=VALUE` (one assignment) as systemd does.
pub fn parse(assignment: &str) -> Result<Property, PropertyError> {
    let bad = |m: String| PropertyError::BadValue(assignment.to_string(), m);
    let (name, val) = assignment
        .split_once('=')
        .ok_or_else(|| PropertyError::NoAssignment(assignment.to_string()))?;
    let mk = |n: &str, v: Value| Property {
        assignment: assignment.to_string(),
        name: n.to_string(),
        value: v,
    };
    Ok(match name {
        "MemoryMax" | "MemoryHigh" | "MemoryLow" | "MemoryMin" | "MemorySwapMax"
        | "MemoryLimit" => {
            if val == "infinity" || (val.is_empty() && name != "MemoryLow" && name != "MemoryMin") {
                mk(name, Value::U64(INFINITY))
            } else if let Some(p) = parse_percent(val).map_err(bad)? {
                if name == "MemoryLimit" {
                    return Err(bad("MemoryLimit= takes no percentage".into()));
                }
                if p > 10000 {
                    return Err(bad(format!("{val:?} is above 100%")));
                }
                mk(&format!("{name}Scale"), Value::U32(scale_from_permyriad(p)))
            } else {
                mk(name, Value::U64(parse_size(val).map_err(bad)?))
            }
        }
        "TasksMax" => {
            if val == "infinity" || val.is_empty() {
                mk(name, Value::U64(INFINITY))
            } else if let Some(p) = parse_percent(val).map_err(bad)? {
                if p > 10000 {
                    return Err(bad(format!("{val:?} is above 100%")));
                }
                mk("TasksMaxScale", Value::U32(scale_from_permyriad(p)))
            } else {
                let v: u64 = val
                    .parse()
                    .map_err(|_| bad(format!("{val:?} is not a number of tasks")))?;
                if v == 0 {
                    return Err(bad("TasksMax= must be at least 1".into()));
                }
                mk(name, Value::U64(v))
            }
        }
        "CPUQuota" => {
            if val.is_empty() || val == "infinity" {
                mk("CPUQuotaPerSecUSec", Value::U64(INFINITY))
            } else {
                let p = parse_percent(val).map_err(bad)?.ok_or_else(|| {
                    bad(format!(
                        "CPUQuota= takes a percentage like 50%, not {val:?}"
                    ))
                })?;
                if p == 0 {
                    return Err(bad("CPUQuota= must be above 0%".into()));
                }
                // permyriad of one CPU-second, in microseconds per second.
                mk("CPUQuotaPerSecUSec", Value::U64(p * 100))
            }
        }
        "CPUQuotaPeriodSec" => {
            let us = parse_usec(val).map_err(bad)?;
            mk("CPUQuotaPeriodUSec", Value::U64(us))
        }
        "CPUWeight" | "StartupCPUWeight" | "IOWeight" | "StartupIOWeight" => {
            if val.is_empty() {
                mk(name, Value::U64(INFINITY))
            } else {
                mk(
                    name,
                    Value::U64(parse_u64_range(val, 1, 10000).map_err(bad)?),
                )
            }
        }
        "CPUShares" | "StartupCPUShares" => mk(
            name,
            Value::U64(parse_u64_range(val, 2, 262144).map_err(bad)?),
        ),
        "BlockIOWeight" | "StartupBlockIOWeight" => mk(
            name,
            Value::U64(parse_u64_range(val, 10, 1000).map_err(bad)?),
        ),
        "CPUAccounting" | "MemoryAccounting" | "TasksAccounting" | "IOAccounting"
        | "BlockIOAccounting" | "Delegate" => mk(name, Value::Bool(parse_bool(val).map_err(bad)?)),
        "DevicePolicy" => match val {
            "auto" | "closed" | "strict" => mk(name, Value::Str(val.into())),
            _ => {
                return Err(bad(format!(
                    "DevicePolicy= is auto, closed or strict, not {val:?}"
                )));
            }
        },
        "DeviceAllow" => {
            if val.is_empty() {
                mk(name, Value::Devices(Vec::new()))
            } else {
                let mut it = val.split_whitespace();
                let dev = it.next().unwrap_or_default();
                let rwm = it.next().unwrap_or("");
                if it.next().is_some()
                    || !rwm.chars().all(|c| matches!(c, 'r' | 'w' | 'm'))
                    || !(dev.starts_with("/dev/")
                        || dev.starts_with("/run/systemd/inaccessible/")
                        || dev.starts_with("char-")
                        || dev.starts_with("block-"))
                {
                    return Err(bad(format!(
                        "DeviceAllow= takes a device (/dev/..., char-NAME, block-NAME) and rwm, not {val:?}"
                    )));
                }
                mk(name, Value::Devices(vec![(dev.into(), rwm.into())]))
            }
        }
        "KillMode" => match val {
            "control-group" | "process" | "mixed" | "none" => mk(name, Value::Str(val.into())),
            _ => return Err(bad(format!("unknown KillMode {val:?}"))),
        },
        "KillSignal" | "FinalKillSignal" => {
            let sig = parse_signal(val).ok_or_else(|| bad(format!("unknown signal {val:?}")))?;
            mk(name, Value::I32(sig))
        }
        "TimeoutStopSec" => mk("TimeoutStopUSec", Value::U64(parse_usec(val).map_err(bad)?)),
        "RuntimeMaxSec" => mk("RuntimeMaxUSec", Value::U64(parse_usec(val).map_err(bad)?)),
        "CollectMode" => match val {
            "inactive" | "inactive-or-failed" => mk(name, Value::Str(val.into())),
            _ => return Err(bad(format!("unknown CollectMode {val:?}"))),
        },
        "Description" => mk(name, Value::Str(val.into())),
        _ => {
            return Err(PropertyError::Unknown(
                assignment.to_string(),
                name.to_string(),
            ));
        }
    })
}

/// A time span such as "90", "90s", "500ms", "2min", "1h", "infinity", in microseconds.
pub fn parse_usec(s: &str) -> Result<u64, String> {
    if s == "infinity" {
        return Ok(INFINITY);
    }
    let mut total: u64 = 0;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err("empty time span".into());
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(n);
        let u = tail
            .find(|c: char| c.is_ascii_digit() || c.is_whitespace())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(u);
        let mult: f64 = match unit {
            "" | "s" | "sec" => 1e6,
            "us" | "usec" => 1.0,
            "ms" | "msec" => 1e3,
            "m" | "min" => 60e6,
            "h" | "hr" => 3600e6,
            "d" => 86400e6,
            _ => return Err(format!("{s:?} is not a time span")),
        };
        let v: f64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a time span"))?;
        total = total.saturating_add((v * mult) as u64);
        rest = tail.trim_start();
    }
    Ok(total)
}

/// A signal by name ("SIGTERM", "TERM", "RTMIN+3") or number.
pub fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=libc::SIGRTMAX()).contains(&n).then_some(n);
    }
    let name = s.strip_prefix("SIG").unwrap_or(s);
    if let Some(off) = name.strip_prefix("RTMIN+") {
        let o: i32 = off.parse().ok()?;
        let n = libc::SIGRTMIN() + o;
        return (n <= libc::SIGRTMAX()).then_some(n);
    }
    if name == "RTMIN" {
        return Some(libc::SIGRTMIN());
    }
    use nix::sys::signal::Signal;
    format!("SIG{name}")
        .parse::<Signal>()
        .ok()
        .map(|s| s as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> (String, Value) {
        let p = parse(s).unwrap();
        (p.name, p.value)
    }

    #[test]
    fn converts_like_systemd() {
        assert_eq!(
            p("CPUQuota=50%"),
            ("CPUQuotaPerSecUSec".into(), Value::U64(500_000))
        );
        assert_eq!(
            p("CPUQuota=150%"),
            ("CPUQuotaPerSecUSec".into(), Value::U64(1_500_000))
        );
        assert_eq!(
            p("MemoryMax=512M"),
            ("MemoryMax".into(), Value::U64(512 << 20))
        );
        assert_eq!(
            p("MemoryMax=1.5G"),
            ("MemoryMax".into(), Value::U64(3 << 29))
        );
        assert_eq!(p("MemoryMax=4096"), ("MemoryMax".into(), Value::U64(4096)));
        assert_eq!(
            p("MemoryMax=infinity"),
            ("MemoryMax".into(), Value::U64(u64::MAX))
        );
        assert_eq!(
            p("MemoryMax=50%"),
            ("MemoryMaxScale".into(), Value::U32(u32::MAX / 2 + 1))
        );
        assert_eq!(p("TasksMax=20"), ("TasksMax".into(), Value::U64(20)));
        assert_eq!(
            p("TasksMax=infinity"),
            ("TasksMax".into(), Value::U64(u64::MAX))
        );
        assert_eq!(p("IOWeight=200"), ("IOWeight".into(), Value::U64(200)));
        assert_eq!(p("Delegate=yes"), ("Delegate".into(), Value::Bool(true)));
        assert_eq!(
            p("DeviceAllow=/dev/fuse rw"),
            (
                "DeviceAllow".into(),
                Value::Devices(vec![("/dev/fuse".into(), "rw".into())])
            )
        );
        assert_eq!(
            p("DevicePolicy=closed"),
            ("DevicePolicy".into(), Value::Str("closed".into()))
        );
        assert_eq!(
            p("KillSignal=SIGRTMIN+3"),
            ("KillSignal".into(), Value::I32(libc::SIGRTMIN() + 3))
        );
        assert_eq!(
            p("TimeoutStopSec=5s"),
            ("TimeoutStopUSec".into(), Value::U64(5_000_000))
        );
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(
            parse("MemoryMax"),
            Err(PropertyError::NoAssignment(_))
        ));
        assert!(matches!(
            parse("Frobnicate=1"),
            Err(PropertyError::Unknown(..))
        ));
        for bad in [
            "MemoryMax=lots",
            "MemoryMax=12Q",
            "CPUQuota=50",
            "CPUQuota=0%",
            "CPUQuota=x%",
            "TasksMax=0",
            "TasksMax=-1",
            "IOWeight=0",
            "IOWeight=10001",
            "Delegate=maybe",
            "DeviceAllow=/etc/passwd rw",
            "DeviceAllow=/dev/null rwx",
            "KillSignal=SIGNOPE",
        ] {
            assert!(
                matches!(parse(bad), Err(PropertyError::BadValue(..))),
                "{bad} should be rejected"
            );
        }
    }
}
