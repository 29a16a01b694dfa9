//! A worker: one thread per queue index, pinned to a core, running the fast
//! path to completion over batches.
//!
//! Each round: receive a batch from every socket, decide and rewrite each
//! frame in place ([`crate::forward::forward`]), push the frames to the
//! transmit rings of their egress sockets, return completed frames to the
//! worker's pool, and refill the fill rings from the pool. Frames are
//! descriptors into the worker's own UMEM; the pool is a plain stack owned by
//! the worker (no atomics). The only system calls are wake-ups the kernel
//! asks for and poll(2) when there is nothing to do.

use crate::filter::path::{Egress, Refusal};
use crate::filter::{self, Hook};
use crate::forward::{forward, fragment, icmp, Verdict};
use crate::reasm::{self, handoff::Handoff, Outcome, Reassembler};
use crate::snapshot::{Snapshot, SnapshotCell, MAX_PORTS};
use crate::socket::demux::Demux;
use crate::socket::input::{self, Local};
use crate::socket::output::{self, Built};
use crate::socket::{SocketShared, TxDatagram};
use crate::stats::{DropReason, Mib, WorkerCounters};
use crate::wire::icmp::RouterError;
use crate::wire::ipopt;
use crate::wire::ipv4::Packet;
use crate::xsk::ring::Desc;
use crate::xsk::{self, BindMode, WorkerSockets};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Idle rounds spent spinning before sleeping in poll(2).
const SPIN_ROUNDS: u32 = 2000;
/// Idle rounds between two sched_yield(2) while transmitted frames are
/// still out: the core may be shared with the NAPI thread that completes
/// them.
const YIELD_ROUNDS: u32 = 64;

/// What a worker is given.
pub struct Worker {
    /// Worker number.
    pub id: usize,
    /// Queue index it serves on every interface.
    pub queue: u32,
    /// Core to pin to.
    pub core: Option<usize>,
    /// Frames per batch.
    pub batch: usize,
    /// Number of workers of the engine (each takes its share of the global
    /// ICMP limit).
    pub workers: usize,
    /// Its UMEM and sockets.
    pub xsk: WorkerSockets,
    /// Where snapshots are published.
    pub snapshot: Arc<SnapshotCell>,
    /// Its counters.
    pub counters: Arc<WorkerCounters>,
    /// Set to stop.
    pub stop: Arc<AtomicBool>,
    /// Told once the fill rings hold frames, so the sockets can be
    /// registered with the XDP program without losing the first packets.
    pub ready: Option<std::sync::mpsc::Sender<()>>,
    /// Next hops to ask the kernel to resolve (read by the control thread).
    pub resolve: Arc<ResolveQueue>,
    /// The engine's sockets: demultiplexing table and send queues.
    pub(crate) sockets: Arc<SocketShared>,
    /// Lanes to hand fragments to the worker that owns their datagram.
    pub handoff: Arc<Handoff>,
    /// Key of [`reasm::owner`], the same for all workers, random per run.
    pub reasm_seed: u128,
}

/// Datagrams of the engine's sockets held while their next hop is
/// resolved (the kernel's `unres_qlen` is 101 per neighbour).
const PARKED_MAX: usize = 256;
/// How long a parked datagram waits for its neighbour, in milliseconds.
const PARKED_MS: u64 = 3000;

/// Next hops (ifindex, address) the workers want resolved.
pub type ResolveQueue = crossbeam::queue::ArrayQueue<(u32, std::net::Ipv4Addr)>;

/// Remembers which next hops a worker asked about recently, so that a
/// stream of packets to an unresolved neighbour makes one request a second,
/// not one per packet. Direct mapped: a collision only means an extra
/// request.
struct Asked {
    slots: Box<[(u32, u32, u64)]>,
}

impl Asked {
    const SLOTS: usize = 1024;
    const BACKOFF_MS: u64 = 1000;

    fn new() -> Self {
        Asked {
            slots: vec![(0, 0, 0); Self::SLOTS].into_boxed_slice(),
        }
    }

    /// Asks the control thread to resolve `next` on `ifindex`, unless it
    /// was asked within the back-off. A full queue only delays the request
    /// to the next packet after the back-off.
    fn request(
        &mut self,
        resolve: &ResolveQueue,
        ifindex: u32,
        next: std::net::Ipv4Addr,
        now: u64,
    ) {
        if self.first_time(ifindex, next, now) {
            let _ = resolve.push((ifindex, next));
        }
    }

    fn first_time(&mut self, ifindex: u32, next: std::net::Ipv4Addr, now: u64) -> bool {
        let a = u32::from(next);
        let i = (a ^ ifindex.rotate_left(16)).wrapping_mul(0x9e37_79b1) as usize % Self::SLOTS;
        let s = &mut self.slots[i];
        if s.0 == ifindex && s.1 == a && now < s.2 + Self::BACKOFF_MS {
            return false;
        }
        *s = (ifindex, a, now);
        true
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.id)
            .field("queue", &self.queue)
            .finish()
    }
}

struct SocketState {
    /// Frames given to the fill ring, not yet received.
    fill_level: u32,
    /// How many frames the fill ring should hold: it grows when traffic
    /// drains it and shrinks when the socket is quiet, so frames wait where
    /// packets arrive instead of parked on an idle interface.
    fill_target: u32,
    /// Frames received since the last adjustment of `fill_target`.
    received: u32,
    /// Frames on the tx ring or in flight, not yet completed.
    in_flight: u32,
    /// Frames waiting to be pushed to the tx ring this round.
    pending: Vec<Desc>,
}

impl Worker {
    /// Runs until `stop` is set.
    pub fn run(self) {
        if let Some(core) = self.core {
            if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                log::warn!("worker {}: could not pin to core {core}", self.id);
            }
        }
        let Worker {
            id,
            batch,
            workers,
            mut xsk,
            snapshot,
            counters,
            stop,
            ready,
            resolve,
            sockets: local,
            handoff,
            reasm_seed,
            ..
        } = self;
        let WorkerSockets {
            ref umem,
            ref mut frames,
            ref mut sockets,
            mode,
            ring_size,
        } = xsk;
        let copy_mode = mode == BindMode::Copy;
        let mut pool: Vec<u64> = std::mem::take(frames);
        let mut port_socket = [usize::MAX; MAX_PORTS];
        for (i, s) in sockets.iter().enumerate() {
            port_socket[s.port] = i;
        }
        let mut state: Vec<SocketState> = sockets
            .iter()
            .map(|_| SocketState {
                fill_level: 0,
                // Start full; a quiet ring gives frames back within seconds.
                fill_target: ring_size,
                received: 0,
                in_flight: 0,
                pending: Vec::with_capacity(batch * sockets.len()),
            })
            .collect();
        let mut rx = vec![Desc::default(); batch];
        let mut comp = vec![0u64; ring_size as usize];
        let mut pollfds: Vec<libc::pollfd> = sockets
            .iter()
            .map(|s| libc::pollfd {
                fd: s.fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();

        for (s, st) in sockets.iter_mut().zip(state.iter_mut()) {
            refill(s, st, &mut pool, &counters);
        }
        log::debug!(
            "worker {id}: {} sockets, {} free frames",
            sockets.len(),
            pool.len()
        );
        if let Some(r) = ready {
            let _ = r.send(());
        }

        let mut scratch = vec![0u8; 14 + 65535];
        let mut scratch2 = vec![0u8; 14 + 65535];
        let mut parked: Vec<TxDatagram> = Vec::with_capacity(PARKED_MAX);
        let mut retry: Vec<TxDatagram> = Vec::with_capacity(PARKED_MAX);
        let mut parked_generation = 0u64;
        let mut ident: u16 = seed().wrapping_mul(31);
        let txq = &local.tx[id % local.tx.len()];
        // This worker's share of the reassembly memory; tables evict their
        // oldest queues under a flood (see reasm::Reassembler::set_evict).
        let mut table = Reassembler::new(reasm::Config::from_sysctl(
            &snapshot.load().sysctl,
            workers,
            reasm_seed ^ (id as u128 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        ));
        table.set_evict(true);
        let kernel = ToKernel::open();
        let filter = crate::filter::path::Local::new(id);
        let mut icmp_state =
            icmp::IcmpState::new(workers, (id as u16).wrapping_mul(0x9e37) ^ seed());
        let started = Instant::now();
        let mut clock = Clock::default();
        let mut asked = Asked::new();
        let mut idle = 0u32;
        let mut rounds = 0u32;
        let mut last_refresh = Instant::now();
        let mut last_round = false;
        while !last_round {
            // After stop, one more round: datagrams the application sent
            // before stopping the engine still go out, as a kernel socket's
            // do after close(2). Acquire pairs with the Release of the stop.
            last_round = stop.load(Ordering::Acquire);
            let snap = snapshot.load();
            let demux = local.demux.load();
            let mut work = 0usize;
            clock.tick(started);

            // Fragments other workers received for datagrams this one owns,
            // and reassembly timeouts.
            {
                let mut out = Out {
                    umem,
                    pool: &mut pool,
                    state: &mut state,
                    port_socket: &port_socket,
                    counters: &counters,
                    filter: &filter,
                };
                work += handoff.receive(id, 4 * batch, |frame, ingress| {
                    reassemble(
                        frame,
                        ingress,
                        clock.now_ms,
                        &mut table,
                        &mut scratch,
                        &mut scratch2,
                        &snap,
                        &demux,
                        &local,
                        &mut ident,
                        &mut out,
                        &kernel,
                        &mut |i, n| asked.request(&resolve, i, n, clock.now_ms),
                    );
                });
                if table.next_deadline().is_some_and(|t| t <= clock.now_ms) {
                    table.expire(clock.now_ms, |e| {
                        // ip_expire(): time exceeded, code 1, to the sender,
                        // if the first fragment had come.
                        let Some(first) = e.first_fragment else {
                            return;
                        };
                        let Some(port) = snap
                            .fib
                            .lookup(e.key.src)
                            .and_then(|r| r.nexthop(0))
                            .and_then(|nh| snap.port_of(nh.ifindex))
                        else {
                            return;
                        };
                        let n = 14 + first.len();
                        scratch[..6].copy_from_slice(&snap.ports[port].mac.0);
                        scratch[12..14].copy_from_slice(&[0x08, 0x00]);
                        scratch[14..n].copy_from_slice(first);
                        answer(
                            &mut out,
                            &scratch[..n],
                            port,
                            RouterError::ReassemblyTimeExceeded,
                            icmp::Origin::Other,
                            None,
                            &snap,
                            &mut icmp_state,
                            clock,
                            &mut scratch2,
                        );
                    });
                }
            }

            for (si, s) in sockets.iter_mut().enumerate() {
                let n = s.rx.consume(&mut rx);
                if n == 0 {
                    continue;
                }
                work += n;
                let st = &mut state[si];
                st.fill_level -= n as u32;
                st.received += n as u32;
                // Drained below a quarter of the target: give it more.
                if st.fill_level < st.fill_target / 4 {
                    st.fill_target = (st.fill_target * 2).min(ring_size);
                }
                let mut bytes = 0u64;
                let ingress = s.port;
                for d in rx[..n].iter_mut() {
                    bytes += d.len as u64;
                    // SAFETY: the frame was just received and is the
                    // worker's until it is put on a ring.
                    let data = unsafe { umem.slice_mut(d.addr, d.len as usize) };
                    let pre = filter.received(&snap, Hook::Prerouting, data, (ingress, None));
                    if pre != filter::Verdict::Accept {
                        let r = Refusal {
                            hook: Hook::Prerouting,
                            verdict: pre,
                            ingress,
                        };
                        let a = filter::path::answer(
                            r,
                            data,
                            &snap,
                            &mut icmp_state,
                            clock.pair(),
                            &mut scratch,
                        );
                        Out {
                            umem,
                            pool: &mut pool,
                            state: &mut state,
                            port_socket: &port_socket,
                            counters: &counters,
                            filter: &filter,
                        }
                        .refused(r, a, &snap, &scratch);
                        pool.push(umem.frame_of(d.addr));
                        continue;
                    }
                    let verdict = {
                        // SAFETY: the frame was just received and is the
                        // worker's until it is put on a ring.
                        let data = unsafe { umem.slice_mut(d.addr, d.len as usize) };
                        let v = forward(data, ingress, &snap, clock.timestamp);
                        if let Verdict::Transmit { len, .. } = v {
                            d.len = len as u32;
                        }
                        v
                    };
                    let mut out = Out {
                        umem,
                        pool: &mut pool,
                        state: &mut state,
                        port_socket: &port_socket,
                        counters: &counters,
                        filter: &filter,
                    };
                    if let Verdict::Transmit { port, .. } | Verdict::Fragment { port, .. } = verdict
                    {
                        // SAFETY: the frame is still owned by the worker.
                        let data = unsafe { umem.slice_mut(d.addr, d.len as usize) };
                        if let (
                            hook,
                            v @ (filter::Verdict::Drop
                            | filter::Verdict::Reject(_)
                            | filter::Verdict::Kernel),
                        ) = filter.forwarded(&snap, data, ingress, port)
                        {
                            let r = Refusal {
                                hook,
                                verdict: v,
                                ingress,
                            };
                            let a = filter::path::answer(
                                r,
                                data,
                                &snap,
                                &mut icmp_state,
                                clock.pair(),
                                &mut scratch,
                            );
                            out.refused(r, a, &snap, &scratch);
                            pool.push(umem.frame_of(d.addr));
                            continue;
                        }
                    }
                    match verdict {
                        Verdict::Transmit { port, .. } => {
                            counters.mib(Mib::ForwDatagrams, 1);
                            out.send(port, *d);
                            continue;
                        }
                        Verdict::Drop(reason) => counters.count_drop(reason),
                        Verdict::Local => {
                            // SAFETY: the frame is still owned by the worker.
                            let data = unsafe { umem.slice_mut(d.addr, d.len as usize) };
                            if Packet::new_unchecked(&data[14..]).is_fragment() {
                                let p = Packet::new_unchecked(&data[14..]);
                                let w = reasm::owner(
                                    reasm_seed,
                                    p.src(),
                                    p.dst(),
                                    p.protocol(),
                                    p.ident(),
                                    workers,
                                );
                                if w == id {
                                    reassemble(
                                        data,
                                        ingress,
                                        clock.now_ms,
                                        &mut table,
                                        &mut scratch,
                                        &mut scratch2,
                                        &snap,
                                        &demux,
                                        &local,
                                        &mut ident,
                                        &mut out,
                                        &kernel,
                                        &mut |i, n| asked.request(&resolve, i, n, clock.now_ms),
                                    );
                                } else if handoff.send(id, w, data, ingress) {
                                    counters.handed_off.add(1);
                                } else {
                                    counters.count_drop(DropReason::HandoffFull);
                                }
                                pool.push(umem.frame_of(d.addr));
                                continue;
                            }
                            let v = filter.received(&snap, Hook::Input, data, (ingress, None));
                            if v != filter::Verdict::Accept {
                                let r = Refusal {
                                    hook: Hook::Input,
                                    verdict: v,
                                    ingress,
                                };
                                let a = filter::path::answer(
                                    r,
                                    data,
                                    &snap,
                                    &mut icmp_state,
                                    clock.pair(),
                                    &mut scratch,
                                );
                                out.refused(r, a, &snap, &scratch);
                                pool.push(umem.frame_of(d.addr));
                                continue;
                            }
                            match input::deliver(data, ingress, &snap, &demux, &local, &mut ident) {
                                Local::Delivered(k) => {
                                    counters.mib(Mib::InDelivers, 1);
                                    counters.mib(Mib::UdpInDatagrams, k as u64);
                                }
                                Local::EchoReply { port, len } => {
                                    count_echo(&counters);
                                    let mtu = snap.ports[port].mtu as usize;
                                    // SAFETY: the frame is still owned by the worker.
                                    if !out.allow(&snap, unsafe { umem.slice(d.addr, len) }, port) {
                                    } else if len - 14 <= mtu {
                                        d.len = len as u32;
                                        out.send(port, *d);
                                        continue;
                                    }
                                    // SAFETY: the frame is still owned by the worker.
                                    let frame = unsafe { umem.slice(d.addr, len) };
                                    emit_fragmented(&mut out, port, frame, mtu, &mut scratch);
                                }
                                Local::Unresolved { ifindex, next } => {
                                    counters.count_drop(DropReason::NeighbourMissing);
                                    asked.request(&resolve, ifindex, next, clock.now_ms);
                                }
                                Local::NoSocket { broadcast } => {
                                    counters.count_drop(DropReason::UdpNoSocket);
                                    if !broadcast {
                                        // SAFETY: the frame is still owned by the worker.
                                        let frame = unsafe { umem.slice(d.addr, d.len as usize) };
                                        answer(
                                            &mut out,
                                            frame,
                                            ingress,
                                            RouterError::PortUnreachable,
                                            icmp::Origin::Other,
                                            None,
                                            &snap,
                                            &mut icmp_state,
                                            clock,
                                            &mut scratch,
                                        );
                                    }
                                }
                                Local::Drop(reason) => counters.count_drop(reason),
                            }
                        }
                        Verdict::Unresolved { ifindex, next } => {
                            counters.count_drop(DropReason::NeighbourMissing);
                            asked.request(&resolve, ifindex, next, clock.now_ms);
                        }
                        Verdict::Fragment { port, mtu } => {
                            counters.mib(Mib::ForwDatagrams, 1);
                            // SAFETY: the frame is still owned by the worker.
                            let frame = unsafe { umem.slice(d.addr, d.len as usize) };
                            match fragment::split(frame, mtu, &mut scratch, |f| {
                                out.emit(port, f);
                            }) {
                                Some(k) => {
                                    counters.mib(Mib::FragOKs, 1);
                                    counters.mib(Mib::FragCreates, k as u64);
                                }
                                None => counters.count_drop(DropReason::TooBig),
                            }
                        }
                        Verdict::Icmp {
                            error,
                            origin,
                            reason,
                            options,
                        } => {
                            counters.count_drop(reason);
                            // SAFETY: the frame is still owned by the worker.
                            let frame = unsafe { umem.slice(d.addr, d.len as usize) };
                            answer(
                                &mut out,
                                frame,
                                ingress,
                                error,
                                origin,
                                options.as_ref(),
                                &snap,
                                &mut icmp_state,
                                clock,
                                &mut scratch,
                            );
                        }
                    }
                    pool.push(umem.frame_of(d.addr));
                }
                counters.mib(Mib::InReceives, n as u64);
                let pc = &counters.ports[s.port];
                pc.rx_packets.add(n as u64);
                pc.rx_bytes.add(bytes);
            }

            // Datagrams of the engine's sockets: parked ones again when the
            // tables changed (a neighbour may have been resolved), then new
            // ones, a batch per round.
            if !parked.is_empty() && snap.generation != parked_generation {
                parked_generation = snap.generation;
                std::mem::swap(&mut parked, &mut retry);
            }
            if parked.is_empty() {
                parked_generation = snap.generation;
            }
            let fresh = std::iter::from_fn(|| txq.pop()).take(batch);
            let mut now = None;
            for dg in retry.drain(..).chain(fresh) {
                let t = *now.get_or_insert_with(|| local.now_ms());
                if t.saturating_sub(dg.queued_ms) > PARKED_MS {
                    counters.count_drop(DropReason::OutputNeighbourTimeout);
                    let TxDatagram { sock, buf, .. } = dg;
                    sock.recycle_tx(buf);
                    continue;
                }
                let mut out = Out {
                    umem,
                    pool: &mut pool,
                    state: &mut state,
                    port_socket: &port_socket,
                    counters: &counters,
                    filter: &filter,
                };
                send_datagram(
                    dg,
                    &snap,
                    &mut out,
                    &mut ident,
                    &mut scratch,
                    &mut scratch2,
                    &mut parked,
                    &local,
                    &demux,
                    &mut |i, n| asked.request(&resolve, i, n, clock.now_ms),
                );
                work += 1;
            }

            for (s, st) in sockets.iter_mut().zip(state.iter_mut()) {
                if !st.pending.is_empty() {
                    let (sent, bytes) = transmit(s, &st.pending);
                    for d in &st.pending[sent..] {
                        counters.count_drop(DropReason::TxRingFull);
                        pool.push(umem.frame_of(d.addr));
                    }
                    st.pending.clear();
                    st.in_flight += sent as u32;
                    let pc = &counters.ports[s.port];
                    pc.tx_packets.add(sent as u64);
                    pc.tx_bytes.add(bytes);
                }
                // Kick while frames sit on the ring, not only after new
                // ones were put there: a kick may stop early (copy mode
                // sends a budget per sendto(2), and a busy kernel answers
                // EAGAIN), and frames left behind would otherwise wait for
                // the next transmission, or forever. A zero-copy driver
                // takes the whole ring on one kick, and needs none when it
                // is awake.
                let mut kicks = 0;
                let max_kicks = if copy_mode {
                    s.tx.pending().div_ceil(s.tx_budget.max(1)) + 1
                } else {
                    1
                };
                while kicks < max_kicks && s.tx.pending() > 0 && s.tx.needs_wakeup() {
                    s.kick_tx();
                    counters.wakeups.add(1);
                    kicks += 1;
                }

                let n = s.cq.consume(&mut comp);
                if n > 0 {
                    work += n;
                    st.in_flight -= n as u32;
                    pool.extend(comp[..n].iter().map(|a| umem.frame_of(*a)));
                }
            }

            for (s, st) in sockets.iter_mut().zip(state.iter_mut()) {
                refill(s, st, &mut pool, &counters);
            }
            drop(snap);
            drop(demux);
            if work > 0 {
                counters.batches.add(1);
            }

            rounds = rounds.wrapping_add(1);
            if work == 0 {
                idle += 1;
                // Frames still out will come back on a completion ring,
                // which wakes nobody: sleeping now could leave the fill
                // rings empty while traffic arrives. Spin, but let a NAPI
                // thread sharing the core run now and then.
                let busy_tx = state.iter().any(|st| st.in_flight > 0);
                if busy_tx {
                    if idle.is_multiple_of(YIELD_ROUNDS) {
                        std::thread::yield_now();
                    } else {
                        std::hint::spin_loop();
                    }
                } else if idle >= SPIN_ROUNDS {
                    idle = 0;
                    counters.sleeps.add(1);
                    // Only traffic can wake the worker now, and the fill
                    // rings are full for it.
                    // SAFETY: pollfds holds valid descriptors of live sockets.
                    unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, 50) };
                    rounds = 0;
                } else {
                    std::hint::spin_loop();
                }
            } else {
                idle = 0;
            }
            if rounds.is_multiple_of(1024) && last_refresh.elapsed() >= Duration::from_secs(1) {
                last_refresh = Instant::now();
                for st in state.iter_mut() {
                    // Quiet for a second: lend its frames to busier rings.
                    if st.received < st.fill_target / 2 {
                        st.fill_target = (st.fill_target / 2).max(min_fill(batch, ring_size));
                    }
                    st.received = 0;
                }
                refresh(sockets, &state, &counters, pool.len());
                for (m, v) in table.take_stats().mib() {
                    counters.mib(m, v);
                }
                counters.reasm_queues.set(table.queues() as u64);
                let cfg = reasm::Config::from_sysctl(&snapshot.load().sysctl, workers, 0);
                if (
                    cfg.high_thresh,
                    cfg.low_thresh,
                    cfg.timeout_ms,
                    cfg.max_dist,
                ) != {
                    let c = table.config();
                    (c.high_thresh, c.low_thresh, c.timeout_ms, c.max_dist)
                } {
                    table.set_config(cfg);
                }
            }
            let m = table.memory();
            counters.reasm_memory.set(m);
            if m > counters.reasm_memory_peak.get() {
                counters.reasm_memory_peak.set(m);
            }
        }
        refresh(sockets, &state, &counters, pool.len());
        for (m, v) in table.take_stats().mib() {
            counters.mib(m, v);
        }
        counters.reasm_queues.set(table.queues() as u64);
        log::debug!("worker {id}: stopped");
    }
}

/// Times read once per round.
#[derive(Debug, Default, Clone, Copy)]
struct Clock {
    /// Monotonic milliseconds since the worker started (rate limits).
    now_ms: u64,
    /// Milliseconds since midnight UTC (IP timestamp options).
    timestamp: u32,
}

impl Clock {
    /// (monotonic ms, ms since midnight UTC), as the ICMP builders take it.
    fn pair(self) -> (u64, u32) {
        (self.now_ms, self.timestamp)
    }

    fn tick(&mut self, started: Instant) {
        self.now_ms = started.elapsed().as_millis() as u64 + 60_000;
        self.timestamp = ipopt::timestamp_now();
    }
}

/// A seed for IP IDs that differs between runs.
fn seed() -> u16 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u16)
}

fn count_icmp(c: &WorkerCounters, e: RouterError) {
    c.mib(Mib::IcmpOutMsgs, 1);
    c.mib(
        match e {
            RouterError::TimeExceeded => Mib::IcmpOutTimeExcds,
            RouterError::ParameterProblem { .. } => Mib::IcmpOutParmProbs,
            _ => Mib::IcmpOutDestUnreachs,
        },
        1,
    );
}

fn count_echo(c: &WorkerCounters) {
    for m in [
        Mib::InDelivers,
        Mib::IcmpInMsgs,
        Mib::IcmpInEchos,
        Mib::IcmpOutMsgs,
        Mib::IcmpOutEchoReps,
        Mib::OutRequests,
    ] {
        c.mib(m, 1);
    }
}

/// Sends an ICMP error about `frame`, within the rate limits.
#[allow(clippy::too_many_arguments)]
fn answer(
    out: &mut Out<'_>,
    frame: &[u8],
    ingress: usize,
    error: RouterError,
    origin: icmp::Origin,
    options: Option<&ipopt::Options>,
    snap: &Snapshot,
    icmp_state: &mut icmp::IcmpState,
    clock: Clock,
    scratch: &mut [u8],
) {
    match icmp::build_error(
        frame,
        ingress,
        error,
        origin,
        options,
        snap,
        icmp_state,
        (clock.now_ms, clock.timestamp),
        scratch,
    ) {
        Ok((port, len)) => {
            if out.originate(snap, port, &scratch[..len]) {
                count_icmp(out.counters, error);
            }
        }
        Err(icmp::Suppressed::RateLimitHost) => out.counters.mib(Mib::IcmpOutRateLimitHost, 1),
        Err(icmp::Suppressed::RateLimitGlobal) => out.counters.mib(Mib::IcmpOutRateLimitGlobal, 1),
        Err(_) => {}
    }
}

/// Builds and queues one datagram of an engine socket; parks it while its
/// next hop is unresolved.
#[allow(clippy::too_many_arguments)]
fn send_datagram(
    dg: TxDatagram,
    snap: &Snapshot,
    out: &mut Out<'_>,
    ident: &mut u16,
    scratch: &mut [u8],
    scratch2: &mut [u8],
    parked: &mut Vec<TxDatagram>,
    shared: &SocketShared,
    demux: &Demux,
    ask: &mut dyn FnMut(u32, std::net::Ipv4Addr),
) {
    let c = out.counters;
    match output::build(&dg, snap, shared, ident, scratch) {
        Built::Frame { port, len } => {
            if out.originate(snap, port, &scratch[..len]) {
                c.mib(Mib::OutRequests, 1);
                if dg.raw.is_none() {
                    c.mib(Mib::UdpOutDatagrams, 1);
                }
            }
            // IP_MULTICAST_LOOP: the engine's own sockets get a copy, as
            // if it had come in on the egress interface.
            if dg.mcast_loop && dg.dst.ip().is_multicast() {
                if let Local::Delivered(k) =
                    input::deliver(&mut scratch[..len], port, snap, demux, shared, ident)
                {
                    c.mib(Mib::InDelivers, 1);
                    c.mib(Mib::UdpInDatagrams, k as u64);
                }
            }
        }
        Built::Fragment { port, len, .. } if !out.allow(snap, &scratch[..len], port) => {}
        Built::Fragment { port, len, mtu } => {
            match fragment::split(&scratch[..len], mtu, scratch2, |f| {
                out.emit(port, f);
            }) {
                Some(k) => {
                    c.mib(Mib::OutRequests, 1);
                    if dg.raw.is_none() {
                        c.mib(Mib::UdpOutDatagrams, 1);
                    }
                    c.mib(Mib::FragOKs, 1);
                    c.mib(Mib::FragCreates, k as u64);
                }
                None => c.count_drop(DropReason::TooBig),
            }
        }
        Built::Unresolved { ifindex, next } => {
            ask(ifindex, next);
            if parked.len() < PARKED_MAX {
                parked.push(dg);
                return;
            }
            c.count_drop(DropReason::NeighbourMissing);
        }
        Built::Drop(reason) => c.count_drop(reason),
    }
    let TxDatagram { sock, buf, .. } = dg;
    sock.recycle_tx(buf);
}

/// Sends `frame` on `port` as fragments of at most `mtu` bytes.
fn emit_fragmented(out: &mut Out<'_>, port: usize, frame: &[u8], mtu: usize, scratch: &mut [u8]) {
    let c = out.counters;
    match fragment::split(frame, mtu, scratch, |f| {
        out.emit(port, f);
    }) {
        Some(k) => {
            c.mib(Mib::FragOKs, 1);
            c.mib(Mib::FragCreates, k as u64);
        }
        None => c.count_drop(DropReason::TooBig),
    }
}

/// Gives a fragment (`frame`, Ethernet header included) to this worker's
/// reassembly table and delivers the datagram it completes.
#[allow(clippy::too_many_arguments)]
fn reassemble(
    frame: &[u8],
    ingress: usize,
    now_ms: u64,
    table: &mut Reassembler,
    scratch: &mut [u8],
    scratch2: &mut [u8],
    snap: &Snapshot,
    demux: &Demux,
    shared: &SocketShared,
    ident: &mut u16,
    out: &mut Out<'_>,
    kernel: &ToKernel,
    ask: &mut dyn FnMut(u32, std::net::Ipv4Addr),
) {
    let c = out.counters;
    let len = match table.insert(now_ms, &frame[14..]) {
        Outcome::Ready(d) => {
            scratch[..14].copy_from_slice(&frame[..14]);
            scratch[14..14 + d.len()].copy_from_slice(d);
            14 + d.len()
        }
        Outcome::NeedMore => return,
        other => {
            if let Some(r) = other.drop_reason() {
                c.count_drop(r);
            }
            return;
        }
    };
    let whole = &mut scratch[..len];
    // Input sees the reassembled datagram. (A reject of it is not
    // answered here: dropped and counted.)
    if let v @ (filter::Verdict::Drop | filter::Verdict::Reject(_) | filter::Verdict::Kernel) = out
        .filter
        .received(snap, Hook::Input, whole, (ingress, None))
    {
        let r = Refusal {
            hook: Hook::Input,
            verdict: v,
            ingress,
        };
        out.refused(r, filter::path::Answer::Nothing, snap, &[]);
        return;
    }
    match input::deliver(whole, ingress, snap, demux, shared, ident) {
        Local::Delivered(k) => {
            c.mib(Mib::InDelivers, 1);
            if Packet::new_unchecked(&whole[14..]).protocol() == crate::wire::ipv4::protocol::UDP {
                c.mib(Mib::UdpInDatagrams, k as u64);
            }
        }
        Local::EchoReply { port, len } => {
            count_echo(c);
            let mtu = snap.ports[port].mtu as usize;
            if !out.allow(snap, &whole[..len], port) {
            } else if len - 14 <= mtu {
                out.emit(port, &whole[..len]);
            } else {
                emit_fragmented(out, port, &whole[..len], mtu, scratch2);
            }
        }
        Local::Unresolved { ifindex, next } => {
            c.count_drop(DropReason::NeighbourMissing);
            ask(ifindex, next);
        }
        // Not for an engine socket: the fragments were the engine's only
        // because fragments carry no port. The kernel gets the datagram.
        // (Multicast would go out on the wire that way: not handed back.)
        Local::NoSocket { .. } | Local::Drop(DropReason::LocalUnclaimed)
            if !Packet::new_unchecked(&whole[14..]).dst().is_multicast() =>
        {
            if kernel.send(&whole[14..]) {
                c.to_kernel.add(1);
            } else {
                c.count_drop(DropReason::KernelHandbackFailed);
            }
        }
        Local::NoSocket { .. } => c.count_drop(DropReason::UdpNoSocket),
        Local::Drop(r) => c.count_drop(r),
    }
}

/// Hands reassembled datagrams back to the kernel: an `IPPROTO_RAW`
/// socket sends them, header and all, to the local destination, and the
/// kernel delivers them through the loopback device to its own sockets.
struct ToKernel {
    fd: Option<std::os::fd::OwnedFd>,
}

impl ToKernel {
    fn open() -> ToKernel {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket(2); the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::IPPROTO_RAW,
            )
        };
        if fd < 0 {
            log::warn!(
                "no raw socket to hand reassembled datagrams back to the kernel: {}",
                std::io::Error::last_os_error()
            );
            return ToKernel { fd: None };
        }
        // SAFETY: a new descriptor nothing else owns.
        ToKernel {
            fd: Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }),
        }
    }

    fn send(&self, datagram: &[u8]) -> bool {
        use std::os::fd::AsRawFd;
        let Some(fd) = &self.fd else { return false };
        if datagram.len() < 20 {
            return false;
        }
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes([
                    datagram[16],
                    datagram[17],
                    datagram[18],
                    datagram[19],
                ]),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: a valid buffer and address of the stated lengths.
        let r = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                datagram.as_ptr().cast(),
                datagram.len(),
                libc::MSG_DONTWAIT,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        r == datagram.len() as isize
    }
}

/// Where a round's outgoing frames go: the pending tx batch of their
/// egress socket, in frames from the pool.
struct Out<'a> {
    umem: &'a xsk::Umem,
    pool: &'a mut Vec<u64>,
    state: &'a mut [SocketState],
    port_socket: &'a [usize; MAX_PORTS],
    counters: &'a WorkerCounters,
    filter: &'a filter::path::Local,
}

impl Out<'_> {
    /// Whether a frame the engine originates may leave through `port`
    /// (output and postrouting); counts it when not. False too when it
    /// was handed to the kernel, which sends it.
    fn allow(&mut self, snap: &Snapshot, frame: &[u8], port: usize) -> bool {
        match self.filter.originated(snap, frame, port) {
            Egress::Send => true,
            Egress::Drop => {
                self.counters.count_drop(DropReason::FilterDrop);
                false
            }
            Egress::Kernel => {
                self.counters.to_kernel.add(1);
                false
            }
        }
    }

    /// Copies a frame the engine originates into a free frame and queues
    /// it on `port`, after output and postrouting. True when it went (or
    /// the kernel took it).
    fn originate(&mut self, snap: &Snapshot, port: usize, bytes: &[u8]) -> bool {
        match self.filter.originated(snap, bytes, port) {
            Egress::Send => self.emit(port, bytes),
            Egress::Drop => {
                self.counters.count_drop(DropReason::FilterDrop);
                false
            }
            Egress::Kernel => {
                self.counters.to_kernel.add(1);
                true
            }
        }
    }

    /// Counts a packet the filter refused and sends its answer, built in
    /// `built` by [`filter::path::answer`].
    fn refused(&mut self, r: Refusal, a: filter::path::Answer, snap: &Snapshot, built: &[u8]) {
        self.counters.count_drop(match r.verdict {
            filter::Verdict::Reject(_) => DropReason::FilterReject,
            filter::Verdict::Kernel => DropReason::FilterKernel,
            _ => DropReason::FilterDrop,
        });
        match a {
            filter::path::Answer::Built { port, len, icmp } => {
                let sent = self.originate(snap, port, &built[..len]);
                if let (true, Some(e)) = (sent, icmp) {
                    count_icmp(self.counters, e);
                }
            }
            filter::path::Answer::Suppressed(icmp::Suppressed::RateLimitHost) => {
                self.counters.mib(Mib::IcmpOutRateLimitHost, 1)
            }
            filter::path::Answer::Suppressed(icmp::Suppressed::RateLimitGlobal) => {
                self.counters.mib(Mib::IcmpOutRateLimitGlobal, 1)
            }
            _ => {}
        }
    }

    /// Queues a frame (already in UMEM) for transmission on `port`.
    fn send(&mut self, port: usize, d: Desc) {
        match self.port_socket.get(port) {
            Some(&e) if e != usize::MAX => self.state[e].pending.push(d),
            _ => {
                self.counters.count_drop(DropReason::NoTxQueue);
                self.pool.push(self.umem.frame_of(d.addr));
            }
        }
    }

    /// Copies `bytes` into a free frame and queues it on `port`. False when
    /// there is no free frame.
    fn emit(&mut self, port: usize, bytes: &[u8]) -> bool {
        let Some(frame) = self.pool.pop() else {
            self.counters.count_drop(DropReason::NoFreeFrame);
            return false;
        };
        let addr = frame + xsk::HEADROOM;
        if bytes.len() > self.umem.room(addr) {
            self.counters.count_drop(DropReason::TooBig);
            self.pool.push(frame);
            return false;
        }
        // SAFETY: the frame came from the pool, so no ring holds it.
        unsafe { self.umem.slice_mut(addr, bytes.len()) }.copy_from_slice(bytes);
        self.send(
            port,
            Desc {
                addr,
                len: bytes.len() as u32,
                options: 0,
            },
        );
        true
    }
}

/// Puts `frames` on the tx ring, as many as fit. Returns the number put
/// and their bytes.
fn transmit(s: &mut xsk::QueueSocket, frames: &[Desc]) -> (usize, u64) {
    let n = s.tx.produce(frames);
    let bytes = frames[..n].iter().map(|d| d.len as u64).sum();
    (n, bytes)
}

/// Tops the fill ring up from the pool, a batch at a time.
fn refill(
    s: &mut xsk::QueueSocket,
    st: &mut SocketState,
    pool: &mut Vec<u64>,
    counters: &WorkerCounters,
) {
    let want = st.fill_target.saturating_sub(st.fill_level) as usize;
    let take = want.min(pool.len());
    if take == 0 {
        return;
    }
    let from = pool.len() - take;
    let n = s.fq.produce(&pool[from..]);
    pool.truncate(pool.len() - n);
    st.fill_level += n as u32;
    if n > 0 && s.fq.needs_wakeup() {
        s.kick_rx();
        counters.wakeups.add(1);
    }
}

/// The least a fill ring holds: a few batches, or a quarter of the ring.
fn min_fill(batch: usize, ring: u32) -> u32 {
    ((batch as u32) * 4).max(ring / 4).min(ring)
}

fn refresh(
    sockets: &[xsk::QueueSocket],
    state: &[SocketState],
    counters: &WorkerCounters,
    free: usize,
) {
    counters.free_frames.set(free as u64);
    for ((s, st), c) in sockets.iter().zip(state).zip(&counters.sockets) {
        if let Ok(x) = xsk::statistics(s.fd()) {
            c.rx_dropped.set(x.rx_dropped);
            c.rx_invalid_descs.set(x.rx_invalid_descs);
            c.tx_invalid_descs.set(x.tx_invalid_descs);
            c.rx_ring_full.set(x.rx_ring_full);
            c.fill_ring_empty.set(x.rx_fill_ring_empty_descs);
            c.tx_ring_empty.set(x.tx_ring_empty_descs);
        }
        c.fill_level.set(st.fill_level as u64);
        c.tx_in_flight.set(st.in_flight as u64);
    }
}
