//! `--property` limits as cgroup file writes: the cgroup2 file when the controller is on the
//! unified hierarchy, else the cgroup v1 file with the same meaning; anything else is an error.

use super::{CgroupError, Hierarchy};
use crate::property::{INFINITY, Property, Value};

/// One file write in the container's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// The `--property` it comes from, for messages.
    pub assignment: String,
    pub hierarchy: Hierarchy,
    pub file: String,
    pub value: String,
}

fn unsupported(p: &Property, why: &str) -> CgroupError {
    CgroupError::Unsupported(format!(
        "--property {}: {why} (berth runs this container without systemd; use --register=yes)",
        p.assignment
    ))
}

/// Where `ctrl` lives: the cgroup2 hierarchy if the controller is available there, else the
/// v1 hierarchy that has it.
fn find<'a>(hs: &'a [Hierarchy], ctrl: &str) -> Option<&'a Hierarchy> {
    hs.iter()
        .find(|h| {
            h.is_v2()
                && std::fs::read_to_string(h.own.join("cgroup.controllers"))
                    .is_ok_and(|c| c.split_whitespace().any(|x| x == ctrl))
        })
        .or_else(|| hs.iter().find(|h| h.has_v1(ctrl)))
}

fn phys_mem() -> u64 {
    // SAFETY: sysconf with constant arguments.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    (pages.max(0) as u64).saturating_mul(size.max(0) as u64)
}

fn tasks_max_system() -> u64 {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    let a = read("/proc/sys/kernel/pid_max").unwrap_or(u64::MAX);
    let b = read("/proc/sys/kernel/threads-max").unwrap_or(u64::MAX);
    a.min(b)
}

fn scaled(total: u64, scale: u32) -> u64 {
    (total as u128 * scale as u128 / u32::MAX as u128) as u64
}

/// The writes that apply `props`, in order. Errors name the property that cannot be applied.
pub fn plan(hs: &[Hierarchy], props: &[Property]) -> Result<Vec<Limit>, CgroupError> {
    let mut out = Vec::new();
    let period = props
        .iter()
        .rev()
        .find_map(|p| match (p.name.as_str(), &p.value) {
            ("CPUQuotaPeriodUSec", Value::U64(v)) if *v != INFINITY => {
                Some((*v).clamp(1000, 1_000_000))
            }
            _ => None,
        })
        .unwrap_or(100_000);
    for p in props {
        let mut push = |h: &Hierarchy, file: &str, value: String| {
            out.push(Limit {
                assignment: p.assignment.clone(),
                hierarchy: h.clone(),
                file: file.into(),
                value,
            })
        };
        let need = |ctrl: &str| {
            find(hs, ctrl)
                .ok_or_else(|| unsupported(p, &format!("no {ctrl} cgroup controller is available")))
        };
        let bytes = |v: &Value| -> Option<u64> {
            match v {
                Value::U64(b) => Some(*b),
                Value::U32(s) => Some(scaled(phys_mem(), *s)),
                _ => None,
            }
        };
        match (p.name.as_str(), &p.value) {
            ("MemoryMax" | "MemoryMaxScale" | "MemoryLimit", v) => {
                let b = bytes(v).ok_or_else(|| unsupported(p, "bad value"))?;
                let h = need("memory")?;
                if h.is_v2() {
                    push(
                        h,
                        "memory.max",
                        if b == INFINITY {
                            "max".into()
                        } else {
                            b.to_string()
                        },
                    );
                } else {
                    push(
                        h,
                        "memory.limit_in_bytes",
                        if b == INFINITY {
                            "-1".into()
                        } else {
                            b.to_string()
                        },
                    );
                }
            }
            (
                n @ ("MemoryHigh" | "MemoryHighScale" | "MemoryLow" | "MemoryLowScale"
                | "MemoryMin" | "MemoryMinScale" | "MemorySwapMax" | "MemorySwapMaxScale"),
                v,
            ) => {
                let b = bytes(v).ok_or_else(|| unsupported(p, "bad value"))?;
                let h = need("memory")?;
                if !h.is_v2() {
                    return Err(unsupported(p, "cgroup v1 has no file with this meaning"));
                }
                let file = match n.trim_end_matches("Scale") {
                    "MemoryHigh" => "memory.high",
                    "MemoryLow" => "memory.low",
                    "MemoryMin" => "memory.min",
                    _ => "memory.swap.max",
                };
                push(
                    h,
                    file,
                    if b == INFINITY {
                        "max".into()
                    } else {
                        b.to_string()
                    },
                );
            }
            ("TasksMax" | "TasksMaxScale", v) => {
                let n = match v {
                    Value::U64(n) => *n,
                    Value::U32(s) => scaled(tasks_max_system(), *s).max(1),
                    _ => return Err(unsupported(p, "bad value")),
                };
                let h = need("pids")?;
                push(
                    h,
                    "pids.max",
                    if n == INFINITY {
                        "max".into()
                    } else {
                        n.to_string()
                    },
                );
            }
            ("CPUQuotaPerSecUSec", Value::U64(per_sec)) => {
                let h = need("cpu")?;
                let quota = (*per_sec != INFINITY)
                    .then(|| ((*per_sec as u128 * period as u128 / 1_000_000) as u64).max(1000));
                if h.is_v2() {
                    let q = quota.map(|q| q.to_string()).unwrap_or_else(|| "max".into());
                    push(h, "cpu.max", format!("{q} {period}"));
                } else {
                    push(h, "cpu.cfs_period_us", period.to_string());
                    push(
                        h,
                        "cpu.cfs_quota_us",
                        quota.map(|q| q.to_string()).unwrap_or_else(|| "-1".into()),
                    );
                }
            }
            ("CPUQuotaPeriodUSec", Value::U64(_)) => {
                if !props.iter().any(|q| q.name == "CPUQuotaPerSecUSec") {
                    let h = need("cpu")?;
                    if h.is_v2() {
                        push(h, "cpu.max", format!("max {period}"));
                    } else {
                        push(h, "cpu.cfs_period_us", period.to_string());
                    }
                }
            }
            ("CPUWeight", Value::U64(w)) => {
                let w = if *w == INFINITY { 100 } else { *w };
                let h = need("cpu")?;
                if h.is_v2() {
                    push(h, "cpu.weight", w.to_string());
                } else {
                    push(
                        h,
                        "cpu.shares",
                        (w * 1024 / 100).clamp(2, 262_144).to_string(),
                    );
                }
            }
            ("CPUShares", Value::U64(s)) => {
                let h = need("cpu")?;
                if h.is_v2() {
                    push(
                        h,
                        "cpu.weight",
                        (s * 100 / 1024).clamp(1, 10_000).to_string(),
                    );
                } else {
                    push(h, "cpu.shares", s.to_string());
                }
            }
            ("IOWeight", Value::U64(w)) => {
                let w = if *w == INFINITY { 100 } else { *w };
                if let Some(h) = hs.iter().find(|h| h.is_v2() && find(hs, "io") == Some(*h)) {
                    push(h, "io.weight", format!("default {w}"));
                } else if let Some(h) = hs.iter().find(|h| h.has_v1("blkio")) {
                    push(
                        h,
                        "blkio.weight",
                        (w * 500 / 100).clamp(10, 1000).to_string(),
                    );
                } else {
                    return Err(unsupported(
                        p,
                        "no io or blkio cgroup controller is available",
                    ));
                }
            }
            ("BlockIOWeight", Value::U64(b)) => {
                if let Some(h) = hs.iter().find(|h| h.is_v2() && find(hs, "io") == Some(*h)) {
                    push(
                        h,
                        "io.weight",
                        format!("default {}", (b * 100 / 500).clamp(1, 10_000)),
                    );
                } else if let Some(h) = hs.iter().find(|h| h.has_v1("blkio")) {
                    push(h, "blkio.weight", b.to_string());
                } else {
                    return Err(unsupported(
                        p,
                        "no io or blkio cgroup controller is available",
                    ));
                }
            }
            // Accounting is always on in berth's own cgroup, and it is always delegated (the
            // container's cgroup namespace is rooted there): these hold as asked.
            (
                "CPUAccounting" | "MemoryAccounting" | "TasksAccounting" | "IOAccounting"
                | "BlockIOAccounting",
                Value::Bool(true),
            )
            | ("Delegate", Value::Bool(true)) => {}
            ("DevicePolicy" | "DeviceAllow", _) => {
                return Err(unsupported(
                    p,
                    "device access control is applied by systemd only",
                ));
            }
            _ => {
                return Err(unsupported(
                    p,
                    "this property applies to systemd units only",
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::property::parse;

    fn v1(ctrl: &str) -> Hierarchy {
        Hierarchy {
            mount: format!("/sys/fs/cgroup/{ctrl}").into(),
            v1: Some(vec![ctrl.into()]),
            own: format!("/sys/fs/cgroup/{ctrl}/x").into(),
        }
    }

    #[test]
    fn v1_files_have_the_same_meaning() {
        let hs = [v1("memory"), v1("pids"), v1("cpu")];
        let props: Vec<_> = [
            "MemoryMax=64M",
            "TasksMax=20",
            "CPUQuota=50%",
            "CPUWeight=200",
        ]
        .iter()
        .map(|a| parse(a).unwrap())
        .collect();
        let got: Vec<(String, String)> = plan(&hs, &props)
            .unwrap()
            .into_iter()
            .map(|l| (l.file, l.value))
            .collect();
        let want = [
            ("memory.limit_in_bytes", "67108864"),
            ("pids.max", "20"),
            ("cpu.cfs_period_us", "100000"),
            ("cpu.cfs_quota_us", "50000"),
            ("cpu.shares", "2048"),
        ];
        assert_eq!(got, want.map(|(a, b)| (a.to_string(), b.to_string())));
    }

    #[test]
    fn unsupported_is_an_error() {
        let hs = [v1("memory"), v1("pids"), v1("cpu")];
        for a in [
            "MemoryHigh=1M",
            "DeviceAllow=/dev/fuse rw",
            "KillMode=mixed",
            "IOWeight=100",
        ] {
            let err = plan(&hs, &[parse(a).unwrap()]).unwrap_err().to_string();
            assert!(err.contains(a), "{err}");
        }
        assert!(plan(&[v1("memory")], &[parse("TasksMax=5").unwrap()]).is_err());
    }
}
