//! Vertical scaling's numbers: CPU and memory limits, parsed from the command line (`--cpus
//! 0.5`, `--memory 256m`), bounded, and the decision of a resize, apart from any engine.
//!
//! CPUs are kept in nano-CPUs (Docker's `NanoCpus`, swarm's `NanoCPUs`) and memory in bytes;
//! 0 is what the engines report for "no limit". Input is exact (no floats): CPUs take at most 3
//! decimals (Kubernetes' millicore), memory a whole number of bytes.

use std::fmt;

/// Nano-CPUs in one CPU.
pub const NANO: u64 = 1_000_000_000;

/// Limits to set, or as the engine holds them. `None`: not asked (a request) or not known;
/// `Some(0)`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub nano_cpus: Option<u64>,
    pub memory: Option<u64>,
}

impl Limits {
    /// `self` where it says something, else `under` (what the engine had).
    pub fn over(self, under: Limits) -> Limits {
        Limits {
            nano_cpus: self.nano_cpus.or(under.nano_cpus),
            memory: self.memory.or(under.memory),
        }
    }

    /// For the event log: `{"nano_cpus": N|null, "memory_bytes": N|null}`.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({ "nano_cpus": self.nano_cpus, "memory_bytes": self.memory })
    }
}

impl fmt::Display for Limits {
    /// `cpus=0.5 memory=256m` (docker's notation; `unlimited`, `?` when not known).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: Option<u64>, fmt: fn(u64) -> String| match v {
            None => "?".to_string(),
            Some(0) => "unlimited".to_string(),
            Some(n) => fmt(n),
        };
        write!(
            f,
            "cpus={} memory={}",
            show(self.nano_cpus, cpus_text),
            show(self.memory, memory_text)
        )
    }
}

/// `1`, `0.5`, `0.125`: nano-CPUs as decimal CPUs, no trailing zeros.
pub fn cpus_text(nano: u64) -> String {
    let (whole, frac) = (nano / NANO, nano % NANO);
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:09}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// `256m`, `1g`, `1536k`, `1000`: bytes in the largest binary unit that divides them (docker's
/// notation, which `--memory` reads back).
pub fn memory_text(bytes: u64) -> String {
    for (unit, size) in [
        ("t", 1u64 << 40),
        ("g", 1 << 30),
        ("m", 1 << 20),
        ("k", 1 << 10),
    ] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

/// Split `12.50` into ("12", "50"); `what` names the option in errors.
fn decimal<'a>(what: &str, text: &'a str) -> Result<(&'a str, &'a str), String> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(frac) || text.ends_with('.') {
        return Err(format!("{what} {text:?} is not a positive decimal number"));
    }
    Ok((whole, frac))
}

/// Parse CPUs (`2`, `0.5`, `1.25`; Zabbix's `0.5000` too) into nano-CPUs: more than 0, at most
/// 3 decimals.
pub fn parse_cpus(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (whole, frac) = decimal("CPUs", t)?;
    let frac = frac.trim_end_matches('0');
    if frac.len() > 3 {
        return Err(format!(
            "CPUs {t:?} has more than 3 decimals (the finest limit is 0.001)"
        ));
    }
    let too_large = || format!("CPUs {t:?} is too large");
    let whole: u64 = whole.parse().map_err(|_| too_large())?;
    let frac_nano: u64 = format!("{frac:0<9}").parse().map_err(|_| too_large())?;
    let nano = whole
        .checked_mul(NANO)
        .and_then(|n| n.checked_add(frac_nano))
        .ok_or_else(too_large)?;
    if nano == 0 {
        return Err(format!("CPUs {t:?} must be more than 0"));
    }
    Ok(nano)
}

/// Parse a memory size as docker does (`256m`, `1g`, `1.5G`, `512MiB`, `1048576`; binary
/// units b, k, m, g, t, with an optional `i` and `b`) into bytes: more than 0, whole bytes.
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    let number_end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(number_end);
    let shift = match unit {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "memory {t:?}: unknown unit {unit:?} (b, k, m, g or t)"
            ))
        }
    };
    let (whole, frac) = decimal("memory", number).map_err(|_| {
        format!("memory {t:?} is not a size (a number with an optional unit: 256m, 1g)")
    })?;
    let frac = frac.trim_end_matches('0');
    let too_large = || format!("memory {t:?} is too large");
    let whole: u64 = whole.parse().map_err(|_| too_large())?;
    let mut bytes = whole.checked_shl(shift).filter(|b| b >> shift == whole);
    if !frac.is_empty() {
        // frac / 10^len of the unit, which must come out in whole bytes.
        let num: u128 = frac.parse().map_err(|_| too_large())?;
        let den = 10u128
            .checked_pow(frac.len() as u32)
            .ok_or_else(too_large)?;
        let scaled = num << shift;
        if !scaled.is_multiple_of(den) {
            return Err(format!("memory {t:?} is not a whole number of bytes"));
        }
        let part = u64::try_from(scaled / den).map_err(|_| too_large())?;
        bytes = bytes.and_then(|b| b.checked_add(part));
    }
    let bytes = bytes.ok_or_else(too_large)?;
    if bytes == 0 {
        return Err(format!("memory {t:?} must be more than 0"));
    }
    Ok(bytes)
}

/// --min-cpus, --max-cpus, --min-memory, --max-memory (min ≤ max, checked when parsing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceBounds {
    pub min_nano_cpus: u64,
    pub max_nano_cpus: u64,
    pub min_memory: u64,
    pub max_memory: u64,
}

/// The decision of a resize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResizePlan {
    /// Set `to` (only what was asked); `detail` says what a bound cut.
    Resize { to: Limits, detail: String },
    /// Already there, or the bounds leave it there.
    Keep {
        clamped: bool,
        to: Limits,
        detail: String,
    },
}

/// Decide a resize to `wanted` (what was asked, bounded) from `now` (the engine's limits,
/// where it could tell one answer).
pub fn plan(wanted: Limits, now: Limits, b: ResourceBounds) -> ResizePlan {
    let mut cuts = Vec::new();
    let mut bound = |v: Option<u64>, min: u64, max: u64, what: &str, text: fn(u64) -> String| {
        v.map(|v| {
            let to = v.clamp(min, max);
            if to != v {
                let (side, edge) = if to == max {
                    ("above max", max)
                } else {
                    ("below min", min)
                };
                cuts.push(format!(
                    "{what} {} is {side} {}: clamped to {}",
                    text(v),
                    text(edge),
                    text(to)
                ));
            }
            to
        })
    };
    let to = Limits {
        nano_cpus: bound(
            wanted.nano_cpus,
            b.min_nano_cpus,
            b.max_nano_cpus,
            "cpus",
            cpus_text,
        ),
        memory: bound(
            wanted.memory,
            b.min_memory,
            b.max_memory,
            "memory",
            memory_text,
        ),
    };
    let detail = cuts.join("; ");
    let same = |asked: Option<u64>, had: Option<u64>| asked.is_none() || asked == had;
    if same(to.nano_cpus, now.nano_cpus) && same(to.memory, now.memory) {
        let clamped = !detail.is_empty();
        let detail = if clamped {
            detail
        } else {
            format!("already at {}", to.over(now))
        };
        return ResizePlan::Keep {
            clamped,
            to,
            detail,
        };
    }
    ResizePlan::Resize { to, detail }
}

/// Parse a Kubernetes CPU quantity (`500m`, `1`, `1.5`, `""` = none) into nano-CPUs.
pub fn parse_kube_cpu(q: &str) -> Option<u64> {
    let q = q.trim();
    if q.is_empty() {
        return Some(0);
    }
    if let Some(m) = q.strip_suffix('m') {
        return m.parse::<u64>().ok()?.checked_mul(NANO / 1000);
    }
    if let Some(n) = q.strip_suffix('n') {
        return n.parse::<u64>().ok();
    }
    parse_cpus(q).ok()
}

/// Parse a Kubernetes memory quantity (`128Mi`, `1G`, `1048576`, `""` = none) into bytes.
pub fn parse_kube_memory(q: &str) -> Option<u64> {
    let q = q.trim();
    if q.is_empty() {
        return Some(0);
    }
    let end = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (n, suffix) = q.split_at(end);
    let n: u64 = n.parse().ok()?;
    let mult: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// nano-CPUs as a Kubernetes quantity: `2`, `500m` (the request parser keeps to millicores).
pub fn kube_cpu(nano: u64) -> String {
    if nano.is_multiple_of(NANO) {
        (nano / NANO).to_string()
    } else if nano.is_multiple_of(NANO / 1000) {
        format!("{}m", nano / (NANO / 1000))
    } else {
        format!("{nano}n")
    }
}

/// Bytes as a Kubernetes quantity: `1Gi`, `256Mi`, `1000`.
pub fn kube_memory(bytes: u64) -> String {
    for (unit, size) in [
        ("Ti", 1u64 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: ResourceBounds = ResourceBounds {
        min_nano_cpus: NANO / 10,
        max_nano_cpus: 2 * NANO,
        min_memory: 64 << 20,
        max_memory: 1 << 30,
    };

    #[test]
    fn cpus_parse_exactly() {
        assert_eq!(parse_cpus("2"), Ok(2 * NANO));
        assert_eq!(parse_cpus("0.5"), Ok(NANO / 2));
        assert_eq!(parse_cpus(" 1.25 "), Ok(1_250_000_000));
        assert_eq!(parse_cpus("0.001"), Ok(1_000_000));
        assert_eq!(parse_cpus("0.5000"), Ok(NANO / 2));
        for bad in [
            "",
            "0",
            "0.0",
            "-1",
            "1.",
            ".5",
            "1,5",
            "abc",
            "0.0005",
            "1e3",
            "1.2.3",
            "+1",
            "99999999999999999999",
        ] {
            assert!(parse_cpus(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_cpus("0.0005").unwrap_err(),
            "CPUs \"0.0005\" has more than 3 decimals (the finest limit is 0.001)"
        );
        assert_eq!(cpus_text(NANO / 2), "0.5");
        assert_eq!(cpus_text(3 * NANO), "3");
        assert_eq!(cpus_text(1_250_000_000), "1.25");
    }

    #[test]
    fn memory_parses_as_docker_does() {
        assert_eq!(parse_memory("256m"), Ok(256 << 20));
        assert_eq!(parse_memory("256M"), Ok(256 << 20));
        assert_eq!(parse_memory("1g"), Ok(1 << 30));
        assert_eq!(parse_memory("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_memory("512MB"), Ok(512 << 20));
        assert_eq!(parse_memory("1048576"), Ok(1 << 20));
        assert_eq!(parse_memory("100b"), Ok(100));
        assert_eq!(parse_memory("0.5k"), Ok(512));
        for bad in [
            "",
            "0",
            "0m",
            "-1m",
            "m",
            "1x",
            "1 m",
            "1.3b",
            "1..2m",
            "1e6",
            "16777216t",
            "99999999999999999999",
        ] {
            assert!(parse_memory(bad).is_err(), "{bad:?}");
        }
        assert!(parse_memory("12q").unwrap_err().contains("unknown unit"));
        assert_eq!(memory_text(256 << 20), "256m");
        assert_eq!(memory_text(1 << 30), "1g");
        assert_eq!(memory_text(1536 << 20), "1536m");
        assert_eq!(memory_text(1000), "1000");
    }

    #[test]
    fn plans_clamp_and_keep() {
        let now = Limits {
            nano_cpus: Some(NANO),
            memory: Some(128 << 20),
        };
        let ask = |c: Option<u64>, m: Option<u64>| Limits {
            nano_cpus: c,
            memory: m,
        };
        assert_eq!(
            plan(ask(Some(NANO / 2), Some(256 << 20)), now, B),
            ResizePlan::Resize {
                to: ask(Some(NANO / 2), Some(256 << 20)),
                detail: String::new()
            }
        );
        // Only the CPUs asked: memory is left alone.
        assert_eq!(
            plan(ask(Some(NANO / 2), None), now, B),
            ResizePlan::Resize {
                to: ask(Some(NANO / 2), None),
                detail: String::new()
            }
        );
        assert_eq!(
            plan(ask(Some(8 * NANO), Some(1 << 20)), now, B),
            ResizePlan::Resize {
                to: ask(Some(2 * NANO), Some(64 << 20)),
                detail: "cpus 8 is above max 2: clamped to 2; \
                         memory 1m is below min 64m: clamped to 64m"
                    .into()
            }
        );
        assert_eq!(
            plan(ask(Some(NANO), None), now, B),
            ResizePlan::Keep {
                clamped: false,
                to: ask(Some(NANO), None),
                detail: "already at cpus=1 memory=128m".into()
            }
        );
        let at_max = Limits {
            nano_cpus: Some(2 * NANO),
            memory: Some(0),
        };
        assert!(matches!(
            plan(ask(Some(3 * NANO), None), at_max, B),
            ResizePlan::Keep { clamped: true, .. }
        ));
        // Limits the engine could not tell as one: always applied.
        assert!(matches!(
            plan(ask(Some(NANO), None), Limits::default(), B),
            ResizePlan::Resize { .. }
        ));
    }

    #[test]
    fn kubernetes_quantities() {
        assert_eq!(parse_kube_cpu("500m"), Some(NANO / 2));
        assert_eq!(parse_kube_cpu("2"), Some(2 * NANO));
        assert_eq!(parse_kube_cpu(""), Some(0));
        assert_eq!(parse_kube_cpu("x"), None);
        assert_eq!(parse_kube_memory("128Mi"), Some(128 << 20));
        assert_eq!(parse_kube_memory("1G"), Some(1_000_000_000));
        assert_eq!(parse_kube_memory("1e9"), None);
        assert_eq!(kube_cpu(NANO / 2), "500m");
        assert_eq!(kube_cpu(2 * NANO), "2");
        assert_eq!(kube_memory(256 << 20), "256Mi");
        assert_eq!(kube_memory(1000), "1000");
    }
}
