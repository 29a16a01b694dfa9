//! Where workers run: the cores that exist and that the process may use,
//! the cores that service each queue (the NAPI that moves its frames), and
//! the choice of a core for each worker.
//!
//! A worker and the NAPI of its queue on one core compete for it: under
//! load the NAPI, which runs first (softirq) or at kernel-thread priority,
//! fills the rx ring while the worker gets too little of the core to refill
//! the fill ring, and frames are dropped at the empty fill ring (receive
//! livelock). So with no `--cores` the engine keeps workers off the cores
//! that service their queues, where that can be known:
//!
//! * a NAPI in a kernel thread (`/sys/class/net/DEV/threaded`) runs where
//!   the thread may run (its CPU affinity);
//! * otherwise NAPI runs in softirq on the core that took the queue's
//!   interrupt (`/proc/irq/N/effective_affinity_list`).
//!
//! The kernel says which NAPI serves a queue, and its interrupt and thread,
//! over the `netdev` netlink family ([`crate::netdev`]). Where it cannot be
//! known (veth, whose NAPI runs on whichever core sends to it; a driver
//! that does not link queues to NAPIs; a thread allowed everywhere), the
//! worker is left unpinned, so that the scheduler can move it off a core
//! that the NAPI keeps busy. The rule in full is [`place`].

use crate::netdev::{Netdev, QueueKind};
use std::fmt;
use std::io;

/// Cores that exist (configured), `0..n`.
pub fn existing() -> Vec<usize> {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    (0..n.max(1) as usize).collect()
}

/// Cores of a task's CPU affinity (0: the calling thread).
pub fn affinity(pid: i32) -> io::Result<Vec<usize>> {
    // SAFETY: plain old data; zero is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is valid and writable for its size.
    let r = unsafe { libc::sched_getaffinity(pid, std::mem::size_of_val(&set), &mut set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: CPU_ISSET reads the set for indexes below its capacity.
    Ok((0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

/// Cores this process may run on (its affinity: taskset, cpuset cgroup).
pub fn allowed() -> Vec<usize> {
    affinity(0).unwrap_or_else(|_| existing())
}

/// `0-3,6` for `[0, 1, 2, 3, 6]`.
pub fn list(cores: &[usize]) -> String {
    let mut v = cores.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut out = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        out.push(if j == i {
            v[i].to_string()
        } else {
            format!("{}-{}", v[i], v[j])
        });
        i = j + 1;
    }
    if out.is_empty() {
        "none".into()
    } else {
        out.join(",")
    }
}

/// Parses a kernel CPU list (`0-3,6`).
pub fn parse_list(s: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                if b < a || b - a > 4096 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    Some(out)
}

/// Why a list of cores cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreError {
    /// The list is empty.
    Empty {
        /// The cores the process may use.
        allowed: Vec<usize>,
    },
    /// A core that does not exist.
    Missing {
        /// The core.
        core: usize,
        /// The cores that exist.
        existing: Vec<usize>,
    },
    /// A core the process may not run on.
    NotAllowed {
        /// The core.
        core: usize,
        /// The cores the process may use.
        allowed: Vec<usize>,
    },
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreError::Empty { allowed } => write!(
                f,
                "the list is empty: name at least one of cores {}, or leave it out for the \
                 default placement",
                list(allowed)
            ),
            CoreError::Missing { core, existing } => write!(
                f,
                "core {core} does not exist: this machine has cores {}",
                list(existing)
            ),
            CoreError::NotAllowed { core, allowed } => write!(
                f,
                "core {core} is not allowed to this process (taskset or cpuset): it may run on \
                 cores {}",
                list(allowed)
            ),
        }
    }
}

impl std::error::Error for CoreError {}

/// Checks cores asked for by the operator against those that exist and
/// those the process may use.
pub fn check(cores: &[usize], existing: &[usize], allowed: &[usize]) -> Result<(), CoreError> {
    if cores.is_empty() {
        return Err(CoreError::Empty {
            allowed: allowed.to_vec(),
        });
    }
    for &c in cores {
        if !existing.contains(&c) {
            return Err(CoreError::Missing {
                core: c,
                existing: existing.to_vec(),
            });
        }
        if !allowed.contains(&c) {
            return Err(CoreError::NotAllowed {
                core: c,
                allowed: allowed.to_vec(),
            });
        }
    }
    Ok(())
}

/// An interface whose queues are looked at.
#[derive(Debug, Clone)]
pub struct Port {
    /// Name.
    pub name: String,
    /// Index.
    pub ifindex: u32,
    /// Driver, if known.
    pub driver: Option<String>,
    /// Its queue count: queues above it are not its.
    pub queues: u32,
}

/// What services one (interface, queue): where its NAPI runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Interface.
    pub iface: String,
    /// Queue.
    pub queue: u32,
    /// NAPI id, when the kernel links one to the queue.
    pub napi_id: Option<u32>,
    /// The cores where its NAPI runs, when that is known and narrower than
    /// every allowed core.
    pub cores: Option<Vec<usize>>,
    /// How that was found, or why it is not known.
    pub what: String,
}

/// Finds what services queues `0..queues` of every port.
pub fn services(ports: &[Port], queues: u32) -> Vec<Vec<Service>> {
    let mut nl = Netdev::open();
    let mut out: Vec<Vec<Service>> = (0..queues).map(|_| Vec::new()).collect();
    for p in ports {
        let found = match nl.as_mut() {
            Ok(nl) => port_services(nl, p, queues),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("no netdev netlink family (Linux 6.8+): {e}"),
            )),
        };
        for q in 0..queues.min(p.queues) {
            let s = match &found {
                Ok(v) => v[q as usize].clone(),
                Err(e) => Service {
                    iface: p.name.clone(),
                    queue: q,
                    napi_id: None,
                    cores: None,
                    what: format!("where {} queue {q} is serviced is unknown: {e}", p.name),
                },
            };
            out[q as usize].push(s);
        }
    }
    out
}

fn port_services(nl: &mut Netdev, p: &Port, queues: u32) -> io::Result<Vec<Service>> {
    let qs = nl.queues(p.ifindex)?;
    let napis = nl.napis(p.ifindex)?;
    let veth = p.driver.as_deref() == Some("veth");
    let mut out = Vec::new();
    for q in 0..queues {
        let linked = qs
            .iter()
            .find(|x| x.id == q && x.kind == QueueKind::Rx)
            .and_then(|x| x.napi_id);
        // A device with a single NAPI serves all its queues with it.
        let napi_id = linked.or_else(|| (napis.len() == 1 && queues == 1).then(|| napis[0].id));
        let napi = napi_id.and_then(|id| napis.iter().find(|n| n.id == id));
        let (cores, what) = match napi {
            Some(n) => match (n.pid, n.irq) {
                (Some(pid), _) => match affinity(pid) {
                    Ok(c) => (
                        Some(c.clone()),
                        format!(
                            "{} queue {q}: NAPI {} in thread {pid} (napi/{}-{}) on cores {}",
                            p.name,
                            n.id,
                            p.name,
                            n.id,
                            list(&c)
                        ),
                    ),
                    Err(e) => (
                        None,
                        format!("{} queue {q}: NAPI thread {pid}: {e}", p.name),
                    ),
                },
                (None, Some(irq)) => match irq_cores(irq) {
                    Some(c) => (
                        Some(c.clone()),
                        format!(
                            "{} queue {q}: NAPI {} in softirq after irq {irq} on cores {}",
                            p.name,
                            n.id,
                            list(&c)
                        ),
                    ),
                    None => (
                        None,
                        format!("{} queue {q}: irq {irq} has no readable affinity", p.name),
                    ),
                },
                (None, None) if !veth && irq_by_name(&p.name, p.ifindex, q).is_some() => {
                    let (irq, c) = irq_by_name(&p.name, p.ifindex, q).expect("just seen");
                    (
                        Some(c.clone()),
                        format!(
                            "{} queue {q}: NAPI {} in softirq after irq {irq} (by its name in \
                             /proc/interrupts) on cores {}",
                            p.name,
                            n.id,
                            list(&c)
                        ),
                    )
                }
                (None, None) if veth => (
                    None,
                    format!(
                        "{} queue {q}: veth NAPI {} runs in softirq on whichever core sends to \
                         the peer",
                        p.name, n.id
                    ),
                ),
                (None, None) => (
                    None,
                    format!(
                        "{} queue {q}: NAPI {} has neither a thread nor an interrupt",
                        p.name, n.id
                    ),
                ),
            },
            None if veth => (
                None,
                format!(
                    "{} queue {q}: veth NAPI runs in softirq on whichever core sends to the peer",
                    p.name
                ),
            ),
            None => (
                None,
                format!("{} queue {q}: the driver links no NAPI to it", p.name),
            ),
        };
        out.push(Service {
            iface: p.name.clone(),
            queue: q,
            napi_id,
            cores,
            what,
        });
    }
    Ok(out)
}

/// The receive interrupt of queue `q` of device `dev`, found by the names
/// drivers give their interrupts in /proc/interrupts, for drivers that do
/// not tell netlink (virtio-net: `virtioN-input.Q`; many others:
/// `...DEV-TxRx-Q`, `...DEV-rx-Q`), with the cores it is delivered to.
fn irq_by_name(dev: &str, ifindex: u32, q: u32) -> Option<(u32, Vec<usize>)> {
    let mut names = vec![format!("{dev}-TxRx-{q}"), format!("{dev}-rx-{q}")];
    // virtio-net names its interrupts after the virtio device, which only
    // sysfs tells; use it only if it shows this namespace's device.
    let sys = format!("/sys/class/net/{dev}");
    let same = std::fs::read_to_string(format!("{sys}/ifindex"))
        .is_ok_and(|i| i.trim().parse::<u32>().ok() == Some(ifindex));
    if same {
        if let Some(v) = std::fs::read_link(format!("{sys}/device"))
            .ok()
            .and_then(|l| Some(l.file_name()?.to_str()?.to_string()))
            .filter(|v| v.starts_with("virtio"))
        {
            names.push(format!("{v}-input.{q}"));
        }
    }
    let text = std::fs::read_to_string("/proc/interrupts").ok()?;
    text.lines().find_map(|l| {
        let (irq, rest) = l.trim_start().split_once(':')?;
        let irq: u32 = irq.parse().ok()?;
        let name = rest.split_whitespace().last()?;
        names
            .iter()
            .any(|n| name == n || name.ends_with(&format!("-{n}")))
            .then(|| Some((irq, irq_cores(irq)?)))?
    })
}

/// The cores an interrupt is delivered to.
fn irq_cores(irq: u32) -> Option<Vec<usize>> {
    ["effective_affinity_list", "smp_affinity_list"]
        .iter()
        .find_map(|f| {
            let s = std::fs::read_to_string(format!("/proc/irq/{irq}/{f}")).ok()?;
            parse_list(&s).filter(|v| !v.is_empty())
        })
}

/// Where one worker runs, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The cores it may run on; `None`: unpinned (every allowed core).
    pub cores: Option<Vec<usize>>,
    /// Why, in a sentence.
    pub why: String,
    /// Whether it shares its core with a NAPI of its own queues: `Some`
    /// when known, `None` when it cannot be known (unpinned, or NAPI whose
    /// core is unknown).
    pub shares_napi: Option<bool>,
}

impl Placement {
    /// The one core it is pinned to, if it is pinned to one.
    pub fn core(&self) -> Option<usize> {
        match self.cores.as_deref() {
            Some([c]) => Some(*c),
            _ => None,
        }
    }

    /// `core 1`, `cores 0,2` or `any core`.
    pub fn describe(&self) -> String {
        match self.cores.as_deref() {
            Some([c]) => format!("core {c}"),
            Some(v) => format!("cores {}", list(v)),
            None => "any core".into(),
        }
    }
}

/// Chooses where each worker runs (worker `q` serves queue `q`).
///
/// With `requested` cores, worker `q` runs on `requested[q % len]`.
/// Otherwise, among the `allowed` cores:
///
/// 1. worker `q` never goes to a core known to service one of its own
///    queues;
/// 2. when the cores servicing all its queues are known, it is pinned to
///    one core: one that services no served queue at all if there is one,
///    then the one with the fewest workers so far, then the lowest number;
/// 3. when they are known for some of its queues only, it may run on every
///    allowed core but those;
/// 4. when none is known (veth, whose NAPI runs on whichever core sends to
///    it; no NAPI linked to the queue; a NAPI thread allowed everywhere),
///    or every allowed core services one of its queues, it is left
///    unpinned: the scheduler then moves it away from a core that a NAPI
///    keeps busy.
pub fn place(services: &[Vec<Service>], requested: &[usize], allowed: &[usize]) -> Vec<Placement> {
    let busy: Vec<usize> = services
        .iter()
        .flatten()
        .filter_map(|s| s.cores.as_ref())
        .flatten()
        .copied()
        .collect();
    let mut load = vec![0usize; allowed.iter().max().map_or(0, |m| m + 1)];
    let mut out = Vec::new();
    for (q, own) in services.iter().enumerate() {
        let all_known = !own.is_empty() && own.iter().all(|s| s.cores.is_some());
        let own_cores: Vec<usize> = own
            .iter()
            .filter_map(|s| s.cores.as_ref())
            .flatten()
            .copied()
            .collect();
        let known: Vec<&str> = own
            .iter()
            .filter(|s| s.cores.is_some())
            .map(|s| s.what.as_str())
            .collect();
        if !requested.is_empty() {
            let c = requested[q % requested.len()];
            let with: Vec<&str> = own
                .iter()
                .filter(|s| s.cores.as_ref().is_some_and(|v| v.contains(&c)))
                .map(|s| s.what.as_str())
                .collect();
            let (shares, why) = if !with.is_empty() {
                (
                    Some(true),
                    format!("--cores; it shares the core with {}", with.join("; ")),
                )
            } else {
                let mut why = "--cores".to_string();
                if !known.is_empty() {
                    why += &format!("; off {}", known.join("; "));
                }
                if !all_known {
                    why += &format!("; {}", unknown(own));
                }
                (all_known.then_some(false), why)
            };
            out.push(Placement {
                cores: Some(vec![c]),
                why,
                shares_napi: shares,
            });
            continue;
        }
        let unpinned = |why: String| Placement {
            cores: None,
            why,
            shares_napi: None,
        };
        let rest: Vec<usize> = allowed
            .iter()
            .copied()
            .filter(|c| !own_cores.contains(c))
            .collect();
        if rest.is_empty() {
            out.push(unpinned(format!(
                "unpinned: every allowed core ({}) services one of its queues: {}",
                list(allowed),
                known.join("; ")
            )));
        } else if all_known {
            let c = rest
                .iter()
                .copied()
                .min_by_key(|&c| (busy.contains(&c), load[c], c))
                .expect("not empty");
            load[c] += 1;
            out.push(Placement {
                cores: Some(vec![c]),
                why: format!(
                    "off the cores that service its queues: {}",
                    known.join("; ")
                ),
                shares_napi: Some(false),
            });
        } else if rest.len() < allowed.len() {
            out.push(Placement {
                cores: Some(rest),
                why: format!(
                    "off the cores of {}; unpinned among the others because {}",
                    known.join("; "),
                    unknown(own)
                ),
                shares_napi: None,
            });
        } else {
            out.push(unpinned(format!(
                "unpinned (may run on cores {}), so that the scheduler can move it off a core \
                 that a NAPI keeps busy: {}",
                list(allowed),
                unknown(own)
            )));
        }
    }
    out
}

/// Restricts the calling thread to `cores`.
pub fn pin_current(cores: &[usize]) -> io::Result<()> {
    // SAFETY: plain old data; zero is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cores.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
        // SAFETY: c is below the set's capacity.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: set is valid for its size; 0 is the calling thread.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn unknown(own: &[Service]) -> String {
    own.iter()
        .filter(|s| s.cores.is_none())
        .map(|s| s.what.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(iface: &str, queue: u32, cores: Option<&[usize]>) -> Service {
        Service {
            iface: iface.into(),
            queue,
            napi_id: Some(8193 + queue),
            cores: cores.map(<[usize]>::to_vec),
            what: format!("{iface} queue {queue}"),
        }
    }

    #[test]
    fn lists_read_and_print_like_the_kernel() {
        assert_eq!(list(&[0, 1, 2, 3, 6]), "0-3,6");
        assert_eq!(list(&[1]), "1");
        assert_eq!(list(&[]), "none");
        assert_eq!(parse_list("0-3,6\n"), Some(vec![0, 1, 2, 3, 6]));
        assert_eq!(parse_list("x"), None);
    }

    #[test]
    fn bad_cores_name_the_ones_that_exist() {
        let e = check(&[5], &[0, 1], &[0, 1]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "core 5 does not exist: this machine has cores 0-1"
        );
        let e = check(&[1], &[0, 1], &[0]).unwrap_err();
        assert!(e.to_string().contains("may run on cores 0"), "{e}");
        let e = check(&[], &[0, 1], &[0, 1]).unwrap_err();
        assert!(e.to_string().contains("cores 0-1"), "{e}");
        assert!(check(&[1, 0], &[0, 1], &[0, 1]).is_ok());
    }

    #[test]
    fn workers_avoid_the_cores_of_their_queues() {
        // Two queues, interrupts on cores 0 and 1, four cores.
        let s = vec![
            vec![svc("eth0", 0, Some(&[0])), svc("eth1", 0, Some(&[0]))],
            vec![svc("eth0", 1, Some(&[1])), svc("eth1", 1, Some(&[1]))],
        ];
        let p = place(&s, &[], &[0, 1, 2, 3]);
        assert_eq!(p[0].core(), Some(2));
        assert_eq!(p[1].core(), Some(3));
        assert_eq!(p[0].shares_napi, Some(false));
        // Two cores: each worker takes the other queue's core.
        let p = place(&s, &[], &[0, 1]);
        assert_eq!((p[0].core(), p[1].core()), (Some(1), Some(0)));
    }

    #[test]
    fn unknown_napi_cores_leave_the_worker_unpinned() {
        let s = vec![vec![svc("d0", 0, None), svc("d1", 0, None)]];
        let p = place(&s, &[], &[0, 1]);
        assert_eq!(p[0].cores, None);
        assert!(p[0].why.contains("d0 queue 0"), "{}", p[0].why);
        // Every allowed core services the queue: unpinned too.
        let s = vec![vec![svc("d0", 0, Some(&[0, 1]))]];
        assert_eq!(place(&s, &[], &[0, 1])[0].cores, None);
        // Known for one interface only: kept off its cores, not pinned.
        let s = vec![vec![svc("d0", 0, Some(&[1])), svc("d1", 0, None)]];
        let p = place(&s, &[], &[0, 1, 2]);
        assert_eq!(p[0].cores, Some(vec![0, 2]));
        assert_eq!(p[0].describe(), "cores 0,2");
    }

    #[test]
    fn requested_cores_say_when_they_share_with_napi() {
        let s = vec![vec![svc("eth0", 0, Some(&[1]))]];
        let p = place(&s, &[1], &[0, 1]);
        assert_eq!(p[0].core(), Some(1));
        assert_eq!(p[0].shares_napi, Some(true));
        assert!(p[0].why.contains("shares the core with eth0 queue 0"));
        let p = place(&s, &[0], &[0, 1]);
        assert_eq!(p[0].shares_napi, Some(false));
    }
}
