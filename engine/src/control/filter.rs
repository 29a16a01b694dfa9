//! Keeping the compiled filter in step with the kernel: a thread that
//! reads the ruleset at every change notification of nf_tables (and the
//! legacy iptables tables, which send none, every second), compiles it,
//! tells the XDP program which hooks are the kernel's, and publishes the
//! new [`Ruleset`] in the next snapshot.

use crate::ebpf::SteerMaps;
use crate::filter::compile::{compile, Iface};
use crate::filter::{legacy, nft, Hook, Ruleset};
use crate::snapshot::{Snapshot, SnapshotCell};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The ruleset in force, shared by the filter thread and the control
/// thread (which publishes it with every snapshot it builds).
#[derive(Debug)]
pub struct Shared {
    current: ArcSwap<Ruleset>,
    workers: usize,
}

impl Shared {
    /// Starts with `r`, counting for `workers` workers.
    pub fn new(r: Ruleset, workers: usize) -> Self {
        Shared {
            current: ArcSwap::from_pointee(r.with_counters(workers, &[])),
            workers,
        }
    }

    /// The ruleset in force.
    pub fn current(&self) -> Arc<Ruleset> {
        self.current.load_full()
    }
}

/// Publishes `snap` with the ruleset in force. The filter thread publishes
/// too, so both read the ruleset inside a compare-and-swap: whichever
/// publishes last, the latest ruleset is in the snapshot.
pub fn publish(cell: &SnapshotCell, filter: &Shared, snap: Snapshot) {
    cell.update(|_| Snapshot {
        filter: filter.current(),
        ..snap.clone()
    });
}

/// Reads and compiles the ruleset of the current namespace for `ports`
/// (the engine's interfaces by port number), legacy iptables included.
pub fn read(ports: &[Iface]) -> std::io::Result<Ruleset> {
    let rs = nft::Socket::open()?.ruleset()?;
    let mut r = compile(&rs, ports);
    let (bits, why) = legacy::hooks();
    r.kernel_hooks |= bits;
    r.kernel_reasons.extend(why);
    Ok(r)
}

/// The ruleset when the kernel's cannot be read: every hook is the
/// kernel's, so nothing bypasses rules the engine does not know.
pub fn unreadable(e: &std::io::Error) -> Ruleset {
    Ruleset::all_to_kernel(format!(
        "all hooks: the nf_tables ruleset could not be read ({e})"
    ))
}

/// The lines the engine prints about a ruleset: what it compiled, and
/// which hooks' traffic goes to the kernel and why.
pub fn describe(r: &Ruleset) -> Vec<String> {
    let mut out = Vec::new();
    let compiled: Vec<String> = Hook::ALL
        .iter()
        .filter(|h| r.active(**h) && !r.kernel(**h))
        .map(|h| h.name().to_string())
        .collect();
    out.push(format!(
        "filter: nf_tables generation {}, {} rule{}; compiled on the fast path: {}",
        r.generation,
        r.rules.len(),
        if r.rules.len() == 1 { "" } else { "s" },
        if compiled.is_empty() {
            "no hook has rules".to_string()
        } else {
            compiled.join(", ")
        }
    ));
    if r.kernel_hooks != 0 {
        let hooks: Vec<&str> = Hook::ALL
            .iter()
            .filter(|h| r.kernel(**h))
            .map(|h| h.name())
            .collect();
        out.push(format!(
            "filter: traffic through {} goes to the kernel, whose filter judges it:",
            hooks.join(", ")
        ));
        for why in &r.kernel_reasons {
            out.push(format!("filter:   {why}"));
        }
    }
    out
}

fn ifaces(snap: &Snapshot) -> Vec<Iface> {
    snap.ports
        .iter()
        .map(|p| Iface {
            name: p.name.clone(),
            ifindex: p.ifindex,
        })
        .collect()
}

/// The filter thread's state.
#[derive(Debug)]
pub struct Watch {
    /// The ruleset in force.
    pub shared: Arc<Shared>,
    /// Where snapshots are published.
    pub cell: Arc<SnapshotCell>,
    /// The XDP program's maps.
    pub maps: Arc<Mutex<SteerMaps>>,
}

impl Watch {
    /// Installs `r`: the XDP program first passes the hooks either ruleset
    /// leaves to the kernel, then the snapshot carries `r`, then the XDP
    /// program passes only what `r` leaves to the kernel. No packet is
    /// judged by a ruleset that lacks a rule the kernel must run.
    pub fn install(&self, r: Ruleset) {
        let old = self.shared.current();
        let totals = old.totals();
        let by_key: HashMap<(&str, &str, &str, u64), (u64, u64)> = old
            .rules
            .iter()
            .zip(totals)
            .map(|(i, t)| {
                (
                    (
                        i.family.as_str(),
                        i.table.as_str(),
                        i.chain.as_str(),
                        i.handle,
                    ),
                    t,
                )
            })
            .collect();
        let carried: Vec<(u64, u64)> = r
            .rules
            .iter()
            .map(|i| {
                by_key
                    .get(&(
                        i.family.as_str(),
                        i.table.as_str(),
                        i.chain.as_str(),
                        i.handle,
                    ))
                    .copied()
                    .unwrap_or((0, 0))
            })
            .collect();
        let r = r.with_counters(self.shared.workers, &carried);
        let (before, after) = (old.kernel_hooks | r.kernel_hooks, r.kernel_hooks);
        self.set_hooks(before);
        let changed = describe(&old)[1..] != describe(&r)[1..] || old.rules != r.rules;
        self.shared.current.store(Arc::new(r));
        self.cell.update(|cur| Snapshot {
            filter: self.shared.current(),
            ..cur.clone()
        });
        self.set_hooks(after);
        if changed {
            for l in describe(&self.shared.current()) {
                log::info!("{l}");
            }
        }
    }

    fn set_hooks(&self, bits: u32) {
        if let Ok(mut m) = self.maps.lock() {
            if let Err(e) = m.set_filter_hooks(bits) {
                log::error!("updating the XDP program's filter hooks: {e}");
            }
        }
    }

    /// Follows the ruleset until `stop` is set.
    pub fn run(self, stop: Arc<AtomicBool>) {
        let mut events = match nft::Socket::subscribed() {
            Ok(s) => Some(s),
            Err(e) => {
                log::error!(
                    "filter: no nf_tables notifications ({e}); the ruleset is re-read every second"
                );
                None
            }
        };
        // A change between the read at start and the subscription above
        // sent its notification to nobody: read once more now.
        let mut pending = true;
        let mut last = Instant::now();
        let mut seen = (self.shared.current().generation, legacy::hooks(), {
            ifaces(&self.cell.load())
        });
        while !stop.load(Ordering::Relaxed) {
            let changed = match &mut events {
                Some(s) => s.wait_changes(100).unwrap_or_else(|e| {
                    log::warn!("filter: nf_tables notifications: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    true
                }),
                None => {
                    std::thread::sleep(Duration::from_millis(100));
                    false
                }
            };
            // Legacy iptables sends no notification, and interface names
            // change without one here: look every second.
            let mut due = changed || std::mem::take(&mut pending);
            if last.elapsed() >= Duration::from_secs(1) {
                last = Instant::now();
                let now = (legacy::hooks(), ifaces(&self.cell.load()));
                if now.0 != seen.1 || now.1 != seen.2 || events.is_none() {
                    due = true;
                }
            }
            if !due {
                continue;
            }
            let ports = ifaces(&self.cell.load());
            match read(&ports) {
                Ok(r) => {
                    seen = (r.generation, legacy::hooks(), ports);
                    self.install(r);
                }
                Err(e) => {
                    log::error!("filter: reading the nf_tables ruleset: {e}");
                    self.install(unreadable(&e));
                }
            }
        }
        let _ = seen.0;
    }
}
