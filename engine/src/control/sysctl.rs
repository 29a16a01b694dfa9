//! The tunables of ip(7), by their sysctl names, with the kernel's
//! defaults and ranges.
//!
//! Where a value comes from, lowest precedence first: the kernel's default;
//! the namespace's `/proc/sys/net/ipv4/<name>`, followed while the engine
//! runs; the `[sysctl]` table of the config file; `--sysctl name=value`;
//! `xdpip sysctl name=value` at run time. A name set by one of the last
//! three stops following the namespace.

use crate::snapshot::Sysctl;
use std::collections::BTreeMap;
use std::fmt;

/// A value's kind and range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An integer from `.0` to `.1`.
    Int(i64, i64),
    /// Two integers from `.0` to `.1`, the first not above the second.
    Range(i64, i64),
}

/// One tunable.
#[derive(Debug, Clone, Copy)]
pub struct Tunable {
    /// Its sysctl name under net.ipv4.
    pub name: &'static str,
    /// What it does.
    pub about: &'static str,
    kind: Kind,
    /// The file under /proc/sys/net/ipv4 it follows.
    path: &'static str,
}

/// Every tunable the engine knows.
pub const TUNABLES: &[Tunable] = &[
    Tunable {
        name: "ip_forward",
        about: "forward IPv4 (0 or 1)",
        kind: Kind::Int(0, 1),
        path: "ip_forward",
    },
    Tunable {
        name: "ip_default_ttl",
        about: "TTL of packets the engine sends",
        kind: Kind::Int(1, 255),
        path: "ip_default_ttl",
    },
    Tunable {
        name: "ip_local_port_range",
        about: "ephemeral ports, \"low high\"",
        kind: Kind::Range(1, 65535),
        path: "ip_local_port_range",
    },
    Tunable {
        name: "ip_no_pmtu_disc",
        about: "path MTU discovery mode (0 to 3)",
        kind: Kind::Int(0, 3),
        path: "ip_no_pmtu_disc",
    },
    Tunable {
        name: "ip_nonlocal_bind",
        about: "allow binding to non-local addresses",
        kind: Kind::Int(0, 1),
        path: "ip_nonlocal_bind",
    },
    Tunable {
        name: "ipfrag_high_thresh",
        about: "reassembly memory limit in bytes",
        kind: Kind::Int(0, i32::MAX as i64),
        path: "ipfrag_high_thresh",
    },
    Tunable {
        name: "ipfrag_low_thresh",
        about: "reassembly memory to evict down to",
        kind: Kind::Int(0, i32::MAX as i64),
        path: "ipfrag_low_thresh",
    },
    Tunable {
        name: "ipfrag_time",
        about: "seconds a fragment is kept",
        kind: Kind::Int(1, i32::MAX as i64),
        path: "ipfrag_time",
    },
    Tunable {
        name: "ipfrag_max_dist",
        about: "fragments from a source between two of a datagram",
        kind: Kind::Int(0, i32::MAX as i64),
        path: "ipfrag_max_dist",
    },
    Tunable {
        name: "accept_source_route",
        about: "accept source-routed packets (all interfaces)",
        kind: Kind::Int(0, 1),
        path: "conf/all/accept_source_route",
    },
    Tunable {
        name: "icmp_ratelimit",
        about: "milliseconds per ICMP error per destination",
        kind: Kind::Int(0, i32::MAX as i64),
        path: "icmp_ratelimit",
    },
    Tunable {
        name: "icmp_ratemask",
        about: "ICMP types icmp_ratelimit applies to (bit mask)",
        kind: Kind::Int(0, u32::MAX as i64),
        path: "icmp_ratemask",
    },
    Tunable {
        name: "icmp_msgs_per_sec",
        about: "ICMP messages per second, all destinations",
        kind: Kind::Int(0, i32::MAX as i64),
        path: "icmp_msgs_per_sec",
    },
    Tunable {
        name: "icmp_msgs_burst",
        about: "burst above icmp_msgs_per_sec",
        kind: Kind::Int(0, i32::MAX as i64),
        path: "icmp_msgs_burst",
    },
    Tunable {
        name: "fib_multipath_hash_policy",
        about: "ECMP hash: 0 addresses, 1 five-tuple",
        kind: Kind::Int(0, 3),
        path: "fib_multipath_hash_policy",
    },
    Tunable {
        name: "icmp_echo_ignore_all",
        about: "answer no ICMP echo request (0 or 1)",
        kind: Kind::Int(0, 1),
        path: "icmp_echo_ignore_all",
    },
    Tunable {
        name: "icmp_echo_ignore_broadcasts",
        about: "answer no ICMP echo request to a broadcast address (0 or 1)",
        kind: Kind::Int(0, 1),
        path: "icmp_echo_ignore_broadcasts",
    },
];

/// A parsed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    /// One integer.
    Int(i64),
    /// A range, "low high".
    Range(i64, i64),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Range(a, b) => write!(f, "{a} {b}"),
        }
    }
}

/// Why a name or value is refused. The message names the valid range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SysctlError {
    /// No tunable of that name.
    UnknownName(String),
    /// The value does not parse or is out of range.
    BadValue {
        /// Name.
        name: String,
        /// What was given.
        value: String,
        /// What is valid.
        valid: String,
    },
    /// `name=value` expected.
    Syntax(String),
}

impl fmt::Display for SysctlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SysctlError::UnknownName(n) => {
                let names: Vec<&str> = TUNABLES.iter().map(|t| t.name).collect();
                write!(f, "unknown sysctl {n:?}; known: {}", names.join(", "))
            }
            SysctlError::BadValue { name, value, valid } => {
                write!(f, "bad value {value:?} for {name}: {valid}")
            }
            SysctlError::Syntax(s) => write!(f, "{s:?} is not name=value"),
        }
    }
}

impl std::error::Error for SysctlError {}

/// Finds a tunable; names may be given with a `net.ipv4.` prefix.
pub fn lookup(name: &str) -> Result<&'static Tunable, SysctlError> {
    let short = name.strip_prefix("net.ipv4.").unwrap_or(name);
    TUNABLES
        .iter()
        .find(|t| t.name == short)
        .ok_or_else(|| SysctlError::UnknownName(name.to_string()))
}

impl Tunable {
    fn valid(&self) -> String {
        match self.kind {
            Kind::Int(lo, hi) => format!("an integer from {lo} to {hi}"),
            Kind::Range(lo, hi) => {
                format!("two integers \"low high\" from {lo} to {hi}, low not above high")
            }
        }
    }

    /// Parses and checks a value.
    ///
    /// ```
    /// use xdpip::control::sysctl::{lookup, Value};
    /// let t = lookup("ip_default_ttl").unwrap();
    /// assert_eq!(t.parse("64").unwrap(), Value::Int(64));
    /// assert!(t.parse("0").unwrap_err().to_string().contains("from 1 to 255"));
    /// ```
    pub fn parse(&self, s: &str) -> Result<Value, SysctlError> {
        let bad = || SysctlError::BadValue {
            name: self.name.to_string(),
            value: s.to_string(),
            valid: self.valid(),
        };
        let nums: Vec<i64> = s
            .split_whitespace()
            .map(|w| w.parse::<i64>())
            .collect::<Result<_, _>>()
            .map_err(|_| bad())?;
        match (self.kind, nums.as_slice()) {
            (Kind::Int(lo, hi), [v]) if (lo..=hi).contains(v) => Ok(Value::Int(*v)),
            (Kind::Range(lo, hi), [a, b])
                if (lo..=hi).contains(a) && (lo..=hi).contains(b) && a <= b =>
            {
                Ok(Value::Range(*a, *b))
            }
            _ => Err(bad()),
        }
    }
}

/// Parses `name=value`.
pub fn parse_assignment(s: &str) -> Result<(&'static Tunable, Value), SysctlError> {
    let (n, v) = s
        .split_once('=')
        .ok_or_else(|| SysctlError::Syntax(s.to_string()))?;
    let t = lookup(n.trim())?;
    Ok((t, t.parse(v.trim())?))
}

/// Values set by the operator, which the namespace's sysctls no longer
/// override.
pub type Overrides = BTreeMap<&'static str, Value>;

fn set(s: &mut Sysctl, name: &str, v: Value) {
    let int = |v: Value| match v {
        Value::Int(i) => i,
        Value::Range(a, _) => a,
    };
    match name {
        "ip_forward" => s.ip_forward = int(v) != 0,
        "ip_default_ttl" => s.ip_default_ttl = int(v) as u8,
        "ip_local_port_range" => {
            if let Value::Range(a, b) = v {
                s.ip_local_port_range = (a as u16, b as u16);
            }
        }
        "ip_no_pmtu_disc" => s.ip_no_pmtu_disc = int(v) as u8,
        "ip_nonlocal_bind" => s.ip_nonlocal_bind = int(v) != 0,
        "ipfrag_high_thresh" => s.ipfrag_high_thresh = int(v) as u64,
        "ipfrag_low_thresh" => s.ipfrag_low_thresh = int(v) as u64,
        "ipfrag_time" => s.ipfrag_time = int(v) as u32,
        "ipfrag_max_dist" => s.ipfrag_max_dist = int(v) as u32,
        "accept_source_route" => s.accept_source_route = int(v) != 0,
        "icmp_ratelimit" => s.icmp_ratelimit = int(v) as u32,
        "icmp_ratemask" => s.icmp_ratemask = int(v) as u32,
        "icmp_msgs_per_sec" => s.icmp_msgs_per_sec = int(v) as u32,
        "icmp_msgs_burst" => s.icmp_msgs_burst = int(v) as u32,
        "fib_multipath_hash_policy" => s.fib_multipath_hash_policy = int(v) as u8,
        "icmp_echo_ignore_all" => s.icmp_echo_ignore_all = int(v) != 0,
        "icmp_echo_ignore_broadcasts" => s.icmp_echo_ignore_broadcasts = int(v) != 0,
        _ => {}
    }
}

/// The value of a tunable in `s`.
pub fn get(s: &Sysctl, name: &str) -> Option<Value> {
    let i = |x: i64| Some(Value::Int(x));
    match name {
        "ip_forward" => i(s.ip_forward as i64),
        "ip_default_ttl" => i(s.ip_default_ttl as i64),
        "ip_local_port_range" => Some(Value::Range(
            s.ip_local_port_range.0 as i64,
            s.ip_local_port_range.1 as i64,
        )),
        "ip_no_pmtu_disc" => i(s.ip_no_pmtu_disc as i64),
        "ip_nonlocal_bind" => i(s.ip_nonlocal_bind as i64),
        "ipfrag_high_thresh" => i(s.ipfrag_high_thresh as i64),
        "ipfrag_low_thresh" => i(s.ipfrag_low_thresh as i64),
        "ipfrag_time" => i(s.ipfrag_time as i64),
        "ipfrag_max_dist" => i(s.ipfrag_max_dist as i64),
        "accept_source_route" => i(s.accept_source_route as i64),
        "icmp_ratelimit" => i(s.icmp_ratelimit as i64),
        "icmp_ratemask" => i(s.icmp_ratemask as i64),
        "icmp_msgs_per_sec" => i(s.icmp_msgs_per_sec as i64),
        "icmp_msgs_burst" => i(s.icmp_msgs_burst as i64),
        "fib_multipath_hash_policy" => i(s.fib_multipath_hash_policy as i64),
        "icmp_echo_ignore_all" => i(s.icmp_echo_ignore_all as i64),
        "icmp_echo_ignore_broadcasts" => i(s.icmp_echo_ignore_broadcasts as i64),
        _ => None,
    }
}

/// The tunables now: the kernel's defaults, then what `read` returns for
/// each path under /proc/sys/net/ipv4 (unreadable or unparsable values
/// keep the default), then `overrides`.
pub fn resolve(read: impl Fn(&str) -> Option<String>, overrides: &Overrides) -> Sysctl {
    let mut s = Sysctl::default();
    for t in TUNABLES {
        if let Some(v) = overrides.get(t.name) {
            set(&mut s, t.name, *v);
        } else if let Some(v) = read(t.path).and_then(|raw| t.parse(&raw).ok()) {
            set(&mut s, t.name, v);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_values_and_errors() {
        assert_eq!(lookup("net.ipv4.ip_forward").unwrap().name, "ip_forward");
        let e = lookup("ip_forwarding").unwrap_err().to_string();
        assert!(
            e.contains("unknown sysctl") && e.contains("ip_forward"),
            "{e}"
        );
        let (t, v) = parse_assignment("ip_local_port_range=1024 2048").unwrap();
        assert_eq!(
            (t.name, v),
            ("ip_local_port_range", Value::Range(1024, 2048))
        );
        let e = parse_assignment("ip_local_port_range=2048 1024")
            .unwrap_err()
            .to_string();
        assert!(e.contains("low not above high"), "{e}");
        assert!(parse_assignment("ip_default_ttl=256").is_err());
        assert!(parse_assignment("ip_default_ttl=x").is_err());
        assert!(matches!(
            parse_assignment("ip_default_ttl"),
            Err(SysctlError::Syntax(_))
        ));
    }

    #[test]
    fn overrides_win_over_the_namespace() {
        let read = |p: &str| match p {
            "ip_default_ttl" => Some("32".to_string()),
            "ip_local_port_range" => Some("40000\t50000".to_string()),
            "icmp_ratelimit" => Some("garbage".to_string()),
            _ => None,
        };
        let s = resolve(read, &Overrides::new());
        assert_eq!(s.ip_default_ttl, 32);
        assert_eq!(s.ip_local_port_range, (40000, 50000));
        assert_eq!(s.icmp_ratelimit, 1000, "unparsable keeps the default");
        let mut o = Overrides::new();
        o.insert("ip_default_ttl", Value::Int(100));
        assert_eq!(resolve(read, &o).ip_default_ttl, 100);
        for t in TUNABLES {
            assert!(get(&s, t.name).is_some(), "{}", t.name);
        }
    }
}
