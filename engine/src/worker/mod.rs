//! A worker: one thread per queue index, running the fast path to
//! completion over batches.
//!
//! Each round (`Running::round`) goes through the same stages:
//! - **receive** a batch from every socket and take it through the vector
//!   path ([`crate::forward::forward_batch`]): validation, FIB lookup for
//!   the batch with prefetches, adjacency, TTL and MTU, rewrite; rewritten
//!   frames join the transmit batch of their egress socket;
//! - the rare cases leave the vector for the **slow path**
//!   (`Running::slow`): options, fragments, TTL ≤ 1, ICMP errors,
//!   unresolved next hops (held until the kernel resolves them), and
//!   **local delivery** (`Running::deliver`: reassembly, sockets, echo);
//! - **originate** the datagrams of the engine's sockets;
//! - **transmit** the batches, take completed frames back, **refill** the
//!   fill rings; counters are added per batch.
//!
//! Frames are [`Frame`] tokens into the worker's own UMEM: a token cannot
//! be copied, and goes either to a ring or back to the [`Pool`] (a plain
//! stack owned by the worker, no atomics). The only system calls are
//! wake-ups the kernel asks for and poll(2) when there is nothing to do;
//! how a worker waits, and whether it busy-polls, is [`idle`]'s.

pub mod idle;
mod judge;

use crate::filter::{self, Hook};
use crate::forward::{forward, fragment, icmp, Frames, Step, Verdict};
use crate::reasm::{self, handoff::Handoff, Outcome, Reassembler};
use crate::snapshot::{Snapshot, SnapshotCell, MAX_PORTS};
use crate::socket::demux::Demux;
use crate::socket::input::{self, Local};
use crate::socket::output::{self, Built};
use crate::socket::serve::{self, Served};
use crate::socket::{SocketShared, TxDatagram};
use crate::stats::{DropReason, Mib, WorkerCounters};
use crate::wire::icmp::RouterError;
use crate::wire::ipopt;
use crate::wire::ipv4::{self, Packet};
use crate::xsk::ring::Desc;
use crate::xsk::{self, BindMode, Frame, Pool, QueueSocket, Umem, WorkerSockets};
pub use judge::{Carry, Hooks};
use judge::{Egress, Refusal};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Datagrams of the engine's sockets held while their next hop is
/// resolved (the kernel's `unres_qlen` is 101 per neighbour).
const PARKED_MAX: usize = 256;
/// How long a datagram or a forwarded frame waits for its neighbour, in
/// milliseconds: the kernel gives up after `mcast_solicit` × `retrans_time`
/// (3 × 1 s).
const PARKED_MS: u64 = 3000;
/// Forwarded frames a worker holds while their next hop is resolved.
const HELD_MAX: usize = 256;

/// What a worker is given.
pub(crate) struct Worker {
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
    /// How it waits and whether it busy-polls.
    pub idle: idle::IdleConfig,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.id)
            .field("queue", &self.queue)
            .finish()
    }
}

/// Next hops (ifindex, address) the workers want resolved.
pub(crate) type ResolveQueue = crossbeam::queue::ArrayQueue<(u32, Ipv4Addr)>;

/// Remembers which next hops a worker asked about recently, so that a
/// stream of packets to an unresolved neighbour makes one request a second,
/// not one per packet. Direct mapped: a collision only means an extra
/// request.
struct Asked {
    slots: Box<[(u32, u32, u64)]>,
    queue: Arc<ResolveQueue>,
}

impl Asked {
    const SLOTS: usize = 1024;
    const BACKOFF_MS: u64 = 1000;

    fn new(queue: Arc<ResolveQueue>) -> Self {
        Asked {
            slots: vec![(0, 0, 0); Self::SLOTS].into_boxed_slice(),
            queue,
        }
    }

    /// Asks the control thread to resolve `next` on `ifindex`, unless it
    /// was asked within the back-off. A full queue only delays the request
    /// to the next packet after the back-off.
    fn request(&mut self, ifindex: u32, next: Ipv4Addr, now: u64) {
        let a = u32::from(next);
        let i = (a ^ ifindex.rotate_left(16)).wrapping_mul(0x9e37_79b1) as usize % Self::SLOTS;
        let s = &mut self.slots[i];
        if s.0 == ifindex && s.1 == a && now < s.2 + Self::BACKOFF_MS {
            return;
        }
        *s = (ifindex, a, now);
        let _ = self.queue.push((ifindex, next));
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

/// The state of one socket's rings.
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
    /// Frames to push to the tx ring this round.
    pending: Vec<Frame>,
}

/// Where frames go: the sockets and their rings, the UMEM and the pool.
struct Io {
    xsk: WorkerSockets,
    pool: Pool,
    state: Vec<SocketState>,
    /// Socket of each port, `usize::MAX` for a port without one.
    port_socket: [usize; MAX_PORTS],
    counters: Arc<WorkerCounters>,
    batch: usize,
    copy_mode: bool,
    descs: Vec<Desc>,
    comp: Vec<u64>,
}

impl Io {
    /// Queues a frame for transmission on `port`.
    fn send(&mut self, port: usize, f: Frame) {
        match self.port_socket.get(port) {
            Some(&s) if s != usize::MAX => self.state[s].pending.push(f),
            _ => {
                self.counters.count_drop(DropReason::NoTxQueue);
                self.pool.put(f);
            }
        }
    }

    /// Copies `bytes` into a free frame and queues it on `port`. False when
    /// there is no free frame or they do not fit one.
    fn emit(&mut self, port: usize, bytes: &[u8]) -> bool {
        let Some(mut f) = self.pool.take() else {
            self.counters.count_drop(DropReason::NoFreeFrame);
            return false;
        };
        // SAFETY: the frame came from this worker's pool.
        if !unsafe { self.xsk.umem.write(&mut f, bytes) } {
            self.counters.count_drop(DropReason::TooBig);
            self.pool.put(f);
            return false;
        }
        self.send(port, f);
        true
    }

    /// Sends `frame` on `port` as fragments of at most `mtu` bytes.
    fn emit_fragmented(&mut self, port: usize, frame: &[u8], mtu: usize, scratch: &mut [u8]) {
        let done = fragment::split(frame, mtu, scratch, |f| {
            self.emit(port, f);
        });
        let c = &self.counters;
        match done {
            Some(k) => {
                c.mib(Mib::FragOKs, 1);
                c.mib(Mib::FragCreates, k as u64);
            }
            None => c.count_drop(DropReason::TooBig),
        }
    }

    /// Pushes every socket's pending frames to its tx ring, kicks where
    /// the kernel asks, and takes completed frames back. Returns the work
    /// done (frames completed).
    fn transmit(&mut self) -> usize {
        let mut work = 0;
        let Io {
            xsk,
            pool,
            state,
            counters,
            copy_mode,
            descs,
            comp,
            ..
        } = self;
        for (s, st) in xsk.sockets.iter_mut().zip(state.iter_mut()) {
            if !st.pending.is_empty() {
                let (sent, bytes) = s.transmit(&mut st.pending, descs);
                for f in st.pending.drain(..) {
                    counters.count_drop(DropReason::TxRingFull);
                    pool.put(f);
                }
                st.in_flight += sent as u32;
                let pc = &counters.ports[s.port];
                pc.tx_packets.add(sent as u64);
                pc.tx_bytes.add(bytes);
            }
            kick_tx(s, *copy_mode, counters);
            let n = s.complete(pool, comp);
            if n > 0 {
                work += n;
                st.in_flight -= n as u32;
            }
        }
        work
    }

    /// Tops every fill ring up from the pool.
    fn refill(&mut self) {
        for (s, st) in self.xsk.sockets.iter_mut().zip(self.state.iter_mut()) {
            refill(s, st, &mut self.pool, &self.counters);
        }
    }

    /// Publishes gauges and the sockets' statistics.
    fn refresh(&self) {
        let counters = &self.counters;
        counters.take_tally();
        counters.free_frames.set(self.pool.len() as u64);
        counters.frames_leaked.set(xsk::frame::leaked());
        for ((s, st), c) in self
            .xsk
            .sockets
            .iter()
            .zip(&self.state)
            .zip(&counters.sockets)
        {
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
}

/// The filter's output and postrouting hooks on a frame the engine
/// originates, leaving through `port`: counted when it does not go (a
/// drop, or the kernel took it and sends it itself).
fn egress(io: &Io, f: &judge::Local, snap: &Snapshot, frame: &[u8], port: usize) -> Egress {
    let e = f.originated(snap, frame, port);
    match e {
        Egress::Send => {}
        Egress::Drop => io.counters.count_drop(DropReason::FilterDrop),
        Egress::Kernel => io.counters.to_kernel.add(1),
    }
    e
}

/// Whether a frame the engine originates may leave through `port`
/// ([`egress`]). False too when the kernel took it.
fn allow(io: &Io, f: &judge::Local, snap: &Snapshot, frame: &[u8], port: usize) -> bool {
    egress(io, f, snap, frame, port) == Egress::Send
}

/// Copies a frame the engine originates into a free frame and queues it on
/// `port`, if output and postrouting let it. True when it went, or the
/// kernel took it.
fn originate(io: &mut Io, f: &judge::Local, snap: &Snapshot, port: usize, bytes: &[u8]) -> bool {
    match egress(io, f, snap, bytes, port) {
        Egress::Send => io.emit(port, bytes),
        Egress::Drop => false,
        Egress::Kernel => true,
    }
}

/// Kicks the kernel to transmit while frames sit on the tx ring, not only
/// after new ones were put there: a kick may stop early (copy mode sends a
/// budget per sendto(2), and a busy kernel answers EAGAIN), and frames left
/// behind would otherwise wait for the next transmission, or forever. A
/// zero-copy driver takes the whole ring on one kick, and needs none when
/// it is awake.
fn kick_tx(s: &mut QueueSocket, copy_mode: bool, counters: &WorkerCounters) {
    let max_kicks = if copy_mode {
        s.tx.pending().div_ceil(s.tx_budget.max(1)) + 1
    } else {
        1
    };
    let mut kicks = 0;
    while kicks < max_kicks && s.tx.pending() > 0 && s.tx.needs_wakeup() {
        s.kick_tx();
        counters.wakeups.add(1);
        kicks += 1;
    }
}

/// Tops the fill ring up from the pool, a batch at a time.
fn refill(s: &mut QueueSocket, st: &mut SocketState, pool: &mut Pool, counters: &WorkerCounters) {
    let want = st.fill_target.saturating_sub(st.fill_level) as usize;
    if want == 0 || pool.is_empty() {
        return;
    }
    let n = s.fill(pool, want);
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

/// Frames of one batch in the worker's UMEM, as the vector path sees them.
struct InUmem<'a> {
    umem: &'a Umem,
    frames: &'a mut [Frame],
}

impl Frames for InUmem<'_> {
    #[inline(always)]
    fn count(&self) -> usize {
        self.frames.len()
    }
    #[inline(always)]
    fn frame(&mut self, i: usize) -> &mut [u8] {
        // SAFETY: the frames were received into this UMEM and are the
        // worker's until they go to a ring; one is borrowed at a time.
        unsafe { self.umem.bytes_mut(&mut self.frames[i]) }
    }
}

/// The doorbell of the worker's engine sockets: a datagram an application
/// queues wakes the worker from poll(2).
struct Bell<'a>(&'a SocketShared, usize);

impl idle::Wake for Bell<'_> {
    fn may_sleep(&self) -> bool {
        self.0.may_sleep(self.1)
    }
    fn woke(&self) {
        self.0.woke(self.1)
    }
}

/// A forwarded frame held until the kernel resolves its next hop.
struct Held {
    frame: Frame,
    ingress: usize,
    since_ms: u64,
}

/// A whole datagram for local delivery: in the frame it arrived in, or
/// reassembled into the slow path's scratch buffer (`len` bytes, Ethernet
/// header included).
enum Whole {
    Frame(Frame),
    Reassembled(usize),
}

/// What the rare cases need: buffers, the reassembly table, ICMP state.
struct Slow {
    /// The packet filter's worker-side state (its counters' row, its way
    /// to the kernel).
    filter: judge::Local,
    scratch: Vec<u8>,
    scratch2: Vec<u8>,
    table: Reassembler,
    kernel: ToKernel,
    icmp: icmp::IcmpState,
    asked: Asked,
    ident: u16,
    clock: Clock,
    /// Forwarded frames waiting for their next hop.
    held: Vec<Held>,
    held_generation: u64,
    /// Datagrams of engine sockets waiting for their next hop.
    parked: Vec<TxDatagram>,
    retry: Vec<TxDatagram>,
    parked_generation: u64,
}

impl Slow {
    /// Gives a fragment (`frame`, Ethernet header included) to the
    /// reassembly table; when it completes a datagram, copies it into
    /// `scratch` (the fragment's Ethernet header first) and returns its
    /// length.
    fn insert_fragment(&mut self, frame: &[u8], c: &WorkerCounters) -> Option<usize> {
        match self.table.insert(self.clock.now_ms, &frame[14..]) {
            Outcome::Ready(d) => {
                self.scratch[..14].copy_from_slice(&frame[..14]);
                self.scratch[14..14 + d.len()].copy_from_slice(d);
                Some(14 + d.len())
            }
            Outcome::NeedMore => None,
            other => {
                if let Some(r) = other.drop_reason() {
                    c.count_drop(r);
                }
                None
            }
        }
    }

    /// Builds the ICMP error about `o` (whose frame is not in `out`) into
    /// `out`, within the rate limits: the port and length to emit.
    fn icmp_error(
        &mut self,
        o: &icmp::Offending<'_>,
        snap: &Snapshot,
        c: &WorkerCounters,
        out: &mut [u8],
    ) -> Option<(usize, usize)> {
        match icmp::build_error(
            o,
            snap,
            &mut self.icmp,
            (self.clock.now_ms, self.clock.timestamp),
            out,
        ) {
            Ok(built) => Some(built),
            Err(icmp::Suppressed::RateLimitHost) => {
                c.mib(Mib::IcmpOutRateLimitHost, 1);
                None
            }
            Err(icmp::Suppressed::RateLimitGlobal) => {
                c.mib(Mib::IcmpOutRateLimitGlobal, 1);
                None
            }
            Err(_) => None,
        }
    }
}

/// An ICMP error to send about a frame, from the slow path.
struct Answer<'a> {
    error: RouterError,
    origin: icmp::Origin,
    options: Option<&'a ipopt::Options>,
}

/// A worker while it runs.
struct Running {
    id: usize,
    workers: usize,
    io: Io,
    slow: Slow,
    counters: Arc<WorkerCounters>,
    snapshot: Arc<SnapshotCell>,
    stop: Arc<AtomicBool>,
    local: Arc<SocketShared>,
    handoff: Option<Arc<Handoff>>,
    reasm_seed: u128,
    /// Datagrams of engine sockets taken from their queue this round.
    fresh: Vec<TxDatagram>,
    /// Handlers of the sockets that answer in the worker.
    handlers: serve::Handlers,
    /// The batch being processed, and the vector path's verdicts on it.
    rx: Vec<Frame>,
    steps: Vec<Step>,
    /// Why the filter refused each frame of the batch the vector path
    /// marked [`Step::Refused`].
    refused: Vec<Option<(Hook, filter::Verdict)>>,
    /// The filter's memo of the last flow, from one batch to the next.
    carry: Carry,
    pollfds: Vec<libc::pollfd>,
    started: Instant,
    idle: idle::Idle,
    rounds: u32,
    last_refresh: Instant,
}

impl Worker {
    /// Runs until `stop` is set.
    pub fn run(self) {
        if let Some(core) = self.core {
            if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                log::warn!("worker {}: could not pin to core {core}", self.id);
            }
        }
        let ready = self.ready.clone();
        let mut w = Running::new(self);
        w.io.refill();
        log::debug!(
            "worker {}: {} sockets, {} free frames",
            w.id,
            w.io.xsk.sockets.len(),
            w.io.pool.len()
        );
        if let Some(r) = ready {
            let _ = r.send(());
        }
        // After stop, one more round: datagrams the application sent before
        // stopping the engine still go out, as a kernel socket's do after
        // close(2).
        while w.round() {}
        w.finish();
    }
}

impl Running {
    fn new(w: Worker) -> Running {
        let Worker {
            id,
            batch,
            workers,
            mut xsk,
            snapshot,
            counters,
            stop,
            resolve,
            sockets: local,
            handoff,
            reasm_seed,
            idle,
            ..
        } = w;
        let pool = Pool::new(std::mem::take(&mut xsk.frames), xsk.umem.frame_size());
        let mut port_socket = [usize::MAX; MAX_PORTS];
        for (i, s) in xsk.sockets.iter().enumerate() {
            port_socket[s.port] = i;
        }
        let ring_size = xsk.ring_size;
        let state = xsk
            .filled
            .iter()
            .map(|&filled| SocketState {
                fill_level: filled,
                // Start full; a quiet ring gives frames back within seconds.
                fill_target: ring_size,
                received: 0,
                in_flight: 0,
                pending: Vec::with_capacity(ring_size as usize),
            })
            .collect();
        let mut pollfds: Vec<libc::pollfd> = xsk
            .sockets
            .iter()
            .map(|s| libc::pollfd {
                fd: s.fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // A datagram an application queues wakes this worker from poll.
        pollfds.push(libc::pollfd {
            fd: local.doorbell_fd(id % local.tx.len()),
            events: libc::POLLIN,
            revents: 0,
        });
        // This worker's share of the reassembly memory; tables evict their
        // oldest queues under a flood (see reasm::Reassembler::set_evict).
        let mut table = Reassembler::new(reasm::Config::from_sysctl(
            &snapshot.load().sysctl,
            workers,
            reasm_seed ^ (id as u128 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        ));
        table.set_evict(true);
        let copy_mode = xsk.mode == BindMode::Copy;
        Running {
            id,
            workers,
            io: Io {
                xsk,
                pool,
                state,
                port_socket,
                counters: counters.clone(),
                batch,
                copy_mode,
                descs: vec![Desc::default(); (ring_size as usize).max(batch)],
                comp: vec![0; ring_size as usize],
            },
            slow: Slow {
                filter: judge::Local::new(id),
                scratch: vec![0; 14 + 65535],
                scratch2: vec![0; 14 + 65535],
                table,
                kernel: ToKernel::open(),
                icmp: icmp::IcmpState::new(workers, (id as u16).wrapping_mul(0x9e37) ^ seed()),
                asked: Asked::new(resolve),
                ident: seed().wrapping_mul(31),
                clock: Clock::default(),
                held: Vec::with_capacity(HELD_MAX),
                held_generation: 0,
                parked: Vec::with_capacity(PARKED_MAX),
                retry: Vec::with_capacity(PARKED_MAX),
                parked_generation: 0,
            },
            counters,
            snapshot,
            stop,
            local,
            handoff: Some(handoff),
            reasm_seed,
            fresh: Vec::with_capacity(batch),
            handlers: serve::Handlers::new(id),
            rx: Vec::with_capacity(batch),
            steps: vec![Step::Slow; batch],
            refused: vec![None; batch],
            carry: Carry::default(),
            pollfds,
            started: Instant::now(),
            idle: idle::Idle::new(idle, id),
            rounds: 0,
            last_refresh: Instant::now(),
        }
    }

    /// One round over every stage; false after the last one.
    fn round(&mut self) -> bool {
        // Acquire pairs with the Release of the stop.
        let last = self.stop.load(Ordering::Acquire);
        let snap = self.snapshot.load();
        self.slow.clock.tick(self.started);
        let state = &self.io.state;
        self.idle.drive_napi(
            &self.io.xsk.sockets,
            |i| state[i].in_flight > 0,
            &self.counters,
        );

        let mut work = self.handoffs(&snap);
        for si in 0..self.io.xsk.sockets.len() {
            work += self.receive(si, &snap);
        }
        self.retry_held(&snap);
        work += self.originate(&snap);
        work += self.io.transmit();
        self.io.refill();
        drop(snap);
        self.housekeeping(work);
        !last
    }

    /// Fragments other workers received for datagrams this one owns, and
    /// reassembly timeouts.
    fn handoffs(&mut self, snap: &Snapshot) -> usize {
        // Taken out while its fragments are reassembled (which needs the
        // whole worker), rather than cloned: a clone per round would bounce
        // the shared reference count between the workers' cores.
        let Some(handoff) = self.handoff.take() else {
            return 0;
        };
        // The sockets' table is loaded after a fragment was taken, never
        // before: a datagram that arrived after bind() returned finds its
        // socket.
        let mut demux = None;
        let work = handoff.receive(self.id, 4 * self.io.batch, |frame, ingress| {
            let d = demux.get_or_insert_with(|| self.local.demux.load());
            self.reassemble(frame, ingress, snap, d);
        });
        self.handoff = Some(handoff);
        let now = self.slow.clock.now_ms;
        if self.slow.table.next_deadline().is_some_and(|t| t <= now) {
            let Slow { table, scratch, .. } = &mut self.slow;
            let mut expired: Vec<usize> = Vec::new();
            table.expire(now, |e| {
                // ip_expire(): time exceeded, code 1, to the sender, if the
                // first fragment had come. Its header is kept in scratch
                // while the table is borrowed.
                let Some(first) = e.first_fragment else {
                    return;
                };
                let at = expired.last().copied().unwrap_or(0);
                let n = 14 + first.len();
                if at + n > scratch.len() {
                    return;
                }
                scratch[at + 12..at + 14].copy_from_slice(&[0x08, 0x00]);
                scratch[at + 14..at + n].copy_from_slice(first);
                expired.push(at + n);
            });
            let mut at = 0;
            for end in expired {
                self.time_exceeded_reassembly(at, end, snap);
                at = end;
            }
        }
        work
    }

    /// Answers a reassembly timeout whose first fragment sits in
    /// `scratch[at..end]` (Ethernet header room included).
    fn time_exceeded_reassembly(&mut self, at: usize, end: usize, snap: &Snapshot) {
        let src = Packet::new_unchecked(&self.slow.scratch[at + 14..end]).src();
        let Some((port, _, _)) = icmp::route_back(snap, src) else {
            return;
        };
        // The error is built as if the fragment had come in on the port
        // towards its sender, to that port's MAC.
        self.slow.scratch[at..at + 6].copy_from_slice(&snap.ports[port].mac.0);
        let frame = std::mem::take(&mut self.slow.scratch);
        let answer = Answer {
            error: RouterError::ReassemblyTimeExceeded,
            origin: icmp::Origin::Other,
            options: None,
        };
        self.answer(&frame[at..end], port, &answer, snap);
        self.slow.scratch = frame;
    }

    /// Sends the ICMP error `a` about `frame` (not in `scratch2`), which
    /// arrived on `ingress`.
    fn answer(&mut self, frame: &[u8], ingress: usize, a: &Answer<'_>, snap: &Snapshot) {
        let o = icmp::Offending {
            frame,
            ingress,
            error: a.error,
            origin: a.origin,
            options: a.options,
        };
        let mut out = std::mem::take(&mut self.slow.scratch2);
        if let Some((port, len)) = self.slow.icmp_error(&o, snap, &self.counters, &mut out) {
            if originate(&mut self.io, &self.slow.filter, snap, port, &out[..len]) {
                count_icmp(&self.counters, a.error);
            }
        }
        self.slow.scratch2 = out;
    }

    /// A frame the packet filter refused at `r.hook`: counted under why,
    /// answered as the rule says (an ICMP error, a TCP reset), and back to
    /// the pool.
    fn refuse(&mut self, mut f: Frame, r: Refusal, snap: &Snapshot) {
        let mut out = std::mem::take(&mut self.slow.scratch2);
        let a = {
            // SAFETY: a frame of this worker, from its UMEM.
            let data = unsafe { self.io.xsk.umem.bytes_mut(&mut f) };
            let clock = (self.slow.clock.now_ms, self.slow.clock.timestamp);
            judge::answer(r, data, snap, &mut self.slow.icmp, clock, &mut out)
        };
        self.io.pool.put(f);
        let c = &*self.counters;
        c.count_drop(match r.verdict {
            filter::Verdict::Reject(_) => DropReason::FilterReject,
            filter::Verdict::Kernel => DropReason::FilterKernel,
            _ => DropReason::FilterDrop,
        });
        match a {
            judge::Answer::Built { port, len, icmp } => {
                let sent = originate(&mut self.io, &self.slow.filter, snap, port, &out[..len]);
                if let (true, Some(e)) = (sent, icmp) {
                    count_icmp(&self.counters, e);
                }
            }
            judge::Answer::Suppressed(icmp::Suppressed::RateLimitHost) => {
                c.mib(Mib::IcmpOutRateLimitHost, 1)
            }
            judge::Answer::Suppressed(icmp::Suppressed::RateLimitGlobal) => {
                c.mib(Mib::IcmpOutRateLimitGlobal, 1)
            }
            _ => {}
        }
        self.slow.scratch2 = out;
    }

    /// [`Running::answer`] about a frame of this worker.
    fn answer_frame(&mut self, f: &Frame, ingress: usize, a: &Answer<'_>, snap: &Snapshot) {
        let mut copy = std::mem::take(&mut self.slow.scratch);
        let n = {
            // SAFETY: a frame of this worker, from its UMEM.
            let data = unsafe { self.io.xsk.umem.bytes(f) };
            let n = data.len().min(copy.len());
            copy[..n].copy_from_slice(&data[..n]);
            n
        };
        self.answer(&copy[..n], ingress, a, snap);
        self.slow.scratch = copy;
    }

    /// Sends the first `len` bytes of frame `f` on `port` as fragments of
    /// at most `mtu` bytes; the frame stays the caller's.
    fn fragment_frame(&mut self, f: &Frame, len: usize, port: usize, mtu: usize) {
        let mut copy = std::mem::take(&mut self.slow.scratch);
        let n = {
            // SAFETY: a frame of this worker, from its UMEM.
            let data = unsafe { self.io.xsk.umem.bytes(f) };
            let n = len.min(data.len()).min(copy.len());
            copy[..n].copy_from_slice(&data[..n]);
            n
        };
        self.io
            .emit_fragmented(port, &copy[..n], mtu, &mut self.slow.scratch2);
        self.slow.scratch = copy;
    }

    /// Receives a batch on socket `si` and takes it through the vector
    /// path; the frames it leaves go through the slow path.
    fn receive(&mut self, si: usize, snap: &Snapshot) -> usize {
        let mut rx = std::mem::take(&mut self.rx);
        let io = &mut self.io;
        let n = io.xsk.sockets[si].receive(&mut rx, &mut io.descs, io.batch);
        if n == 0 {
            self.rx = rx;
            return 0;
        }
        let st = &mut io.state[si];
        st.fill_level -= n as u32;
        st.received += n as u32;
        // Drained below a quarter of the target: give it more.
        if st.fill_level < st.fill_target / 4 {
            st.fill_target = (st.fill_target * 2).min(io.xsk.ring_size);
        }
        // Loaded once the batch is taken, not at the start of the round:
        // a datagram that arrived after bind() returned finds its socket,
        // even when this thread was preempted in between.
        let demux = self.local.demux.load();
        let ingress = io.xsk.sockets[si].port;
        let bytes: u64 = rx.iter().map(|f| f.len() as u64).sum();

        let forwarded = Hooks::new(&snap.filter, self.id, &mut self.refused)
            .carrying(&mut self.carry)
            .forward(
                &mut InUmem {
                    umem: &io.xsk.umem,
                    frames: &mut rx,
                },
                ingress,
                snap,
                &mut self.steps,
            );
        let c = &*self.counters;
        c.mib(Mib::InReceives, n as u64);
        c.mib(Mib::ForwDatagrams, forwarded as u64);
        c.vector_forwarded.add(forwarded as u64);
        let pc = &c.ports[ingress];
        pc.rx_packets.add(n as u64);
        pc.rx_bytes.add(bytes);

        for (i, mut f) in rx.drain(..).enumerate() {
            let step = self.steps[i];
            match step {
                Step::Tx { port, len } => {
                    f.set_len(len as usize);
                    self.io.send(port as usize, f);
                }
                Step::Slow => self.slow(f, ingress, snap, &demux),
                Step::Refused => {
                    let (hook, verdict) = self.refused[i]
                        .take()
                        .unwrap_or((Hook::Prerouting, filter::Verdict::Drop));
                    let r = Refusal {
                        hook,
                        verdict,
                        ingress,
                    };
                    self.refuse(f, r, snap);
                }
            }
        }
        self.rx = rx;
        n
    }

    /// The slow path for one frame: [`forward`] decides, and every case is
    /// handled here. The frame goes to a ring, to the held list, or back to
    /// the pool.
    fn slow(&mut self, mut f: Frame, ingress: usize, snap: &Snapshot, demux: &Demux) {
        self.counters.slow_path.add(1);
        let pre = {
            // SAFETY: a frame of this worker, from its UMEM.
            let data = unsafe { self.io.xsk.umem.bytes(&f) };
            let ports = (ingress, None);
            self.slow
                .filter
                .received(snap, Hook::Prerouting, data, ports)
        };
        if pre != filter::Verdict::Accept {
            let r = Refusal {
                hook: Hook::Prerouting,
                verdict: pre,
                ingress,
            };
            return self.refuse(f, r, snap);
        }
        let verdict = {
            // SAFETY: a frame of this worker, from its UMEM.
            let data = unsafe { self.io.xsk.umem.bytes_mut(&mut f) };
            forward(data, ingress, snap, self.slow.clock.timestamp)
        };
        if let Verdict::Transmit { port, .. } | Verdict::Fragment { port, .. } = verdict {
            // SAFETY: as above.
            let data = unsafe { self.io.xsk.umem.bytes(&f) };
            let (hook, v) = self.slow.filter.forwarded(snap, data, ingress, port);
            if v != filter::Verdict::Accept {
                let r = Refusal {
                    hook,
                    verdict: v,
                    ingress,
                };
                return self.refuse(f, r, snap);
            }
        }
        let c = &*self.counters;
        match verdict {
            Verdict::Transmit { port, len } => {
                c.mib(Mib::ForwDatagrams, 1);
                f.set_len(len);
                self.io.send(port, f);
            }
            Verdict::Drop(reason) => {
                c.count_drop(reason);
                self.io.pool.put(f);
            }
            Verdict::Local => self.local_frame(f, ingress, snap, demux),
            Verdict::Unresolved { ifindex, next } => {
                self.slow
                    .asked
                    .request(ifindex, next, self.slow.clock.now_ms);
                self.hold(f, ingress);
            }
            Verdict::Fragment { port, mtu } => {
                c.mib(Mib::ForwDatagrams, 1);
                self.fragment_frame(&f, f.len(), port, mtu);
                self.io.pool.put(f);
            }
            Verdict::Icmp {
                error,
                origin,
                reason,
                options,
            } => {
                c.count_drop(reason);
                let answer = Answer {
                    error,
                    origin,
                    options: options.as_ref(),
                };
                self.answer_frame(&f, ingress, &answer, snap);
                self.io.pool.put(f);
            }
        }
    }

    /// Holds a forwarded frame whose next hop the kernel is resolving, as
    /// the kernel queues packets on an unresolved neighbour (`unres_qlen`):
    /// it goes on when a snapshot brings the neighbour. A frame with
    /// options is not held (its options were already updated).
    fn hold(&mut self, f: Frame, ingress: usize) {
        // SAFETY: a frame of this worker, from its UMEM.
        let plain = unsafe { self.io.xsk.umem.bytes(&f) }.get(14) == Some(&0x45);
        if plain && self.slow.held.len() < HELD_MAX {
            self.counters.neighbour_held.add(1);
            self.slow.held.push(Held {
                frame: f,
                ingress,
                since_ms: self.slow.clock.now_ms,
            });
            return;
        }
        self.counters.count_drop(DropReason::NeighbourMissing);
        self.io.pool.put(f);
    }

    /// Takes the held frames through the slow path again when the tables
    /// changed; answers those that waited too long with host unreachable,
    /// as the kernel does when resolution fails.
    fn retry_held(&mut self, snap: &Snapshot) {
        if self.slow.held.is_empty() {
            self.slow.held_generation = snap.generation;
            return;
        }
        let now = self.slow.clock.now_ms;
        let expired = self
            .slow
            .held
            .first()
            .is_some_and(|h| now.saturating_sub(h.since_ms) > PARKED_MS);
        if snap.generation == self.slow.held_generation && !expired {
            return;
        }
        self.slow.held_generation = snap.generation;
        let held = std::mem::take(&mut self.slow.held);
        let demux = self.local.demux.load();
        for h in held {
            if now.saturating_sub(h.since_ms) > PARKED_MS {
                self.counters.count_drop(DropReason::NeighbourMissing);
                let answer = Answer {
                    error: RouterError::HostUnreachable,
                    origin: icmp::Origin::Other,
                    options: None,
                };
                self.answer_frame(&h.frame, h.ingress, &answer, snap);
                self.io.pool.put(h.frame);
                continue;
            }
            let since = h.since_ms;
            let before = self.slow.held.len();
            self.slow(h.frame, h.ingress, snap, &demux);
            // Still unresolved: it keeps its place in time.
            if let Some(again) = self.slow.held.get_mut(before) {
                again.since_ms = since;
            }
        }
    }

    /// Local delivery of a frame the slow path found addressed to this
    /// host: fragments go to reassembly (in the worker that owns their
    /// datagram), whole datagrams to [`Running::deliver`].
    fn local_frame(&mut self, f: Frame, ingress: usize, snap: &Snapshot, demux: &Demux) {
        // SAFETY: a frame of this worker, from its UMEM.
        let data = unsafe { self.io.xsk.umem.bytes(&f) };
        let p = Packet::new_unchecked(&data[14..]);
        if !p.is_fragment() {
            return self.deliver(Whole::Frame(f), ingress, snap, demux);
        }
        let owner = reasm::owner(
            self.reasm_seed,
            p.src(),
            p.dst(),
            p.protocol(),
            p.ident(),
            self.workers,
        );
        if owner == self.id {
            // The table copies what it keeps: the frame is read in place.
            if let Some(len) = self.slow.insert_fragment(data, &self.counters) {
                self.deliver(Whole::Reassembled(len), ingress, snap, demux);
            }
        } else if self
            .handoff
            .as_ref()
            .is_some_and(|h| h.send(self.id, owner, data, ingress))
        {
            self.counters.handed_off.add(1);
        } else {
            self.counters.count_drop(DropReason::HandoffFull);
        }
        self.io.pool.put(f);
    }

    /// Gives a fragment (`frame`, Ethernet header included) to this
    /// worker's reassembly table and delivers the datagram it completes.
    fn reassemble(&mut self, frame: &[u8], ingress: usize, snap: &Snapshot, demux: &Demux) {
        if let Some(len) = self.slow.insert_fragment(frame, &self.counters) {
            self.deliver(Whole::Reassembled(len), ingress, snap, demux);
        }
    }

    /// Delivers a whole local datagram: to engine sockets, the echo
    /// responder, or, for a reassembled one no engine socket wants, back to
    /// the kernel (its fragments were steered blind: fragments carry no
    /// port).
    fn deliver(&mut self, mut whole: Whole, ingress: usize, snap: &Snapshot, demux: &Demux) {
        // The input hook sees the whole datagram. (A reject of a
        // reassembled one is not answered: dropped and counted.)
        let input = {
            let data: &[u8] = match &whole {
                // SAFETY: a frame of this worker, from its UMEM.
                Whole::Frame(f) => unsafe { self.io.xsk.umem.bytes(f) },
                Whole::Reassembled(n) => &self.slow.scratch[..*n],
            };
            let ports = (ingress, None);
            self.slow.filter.received(snap, Hook::Input, data, ports)
        };
        if input != filter::Verdict::Accept {
            let r = Refusal {
                hook: Hook::Input,
                verdict: input,
                ingress,
            };
            return match whole {
                Whole::Frame(f) => self.refuse(f, r, snap),
                Whole::Reassembled(_) => self.counters.count_drop(match input {
                    filter::Verdict::Kernel => DropReason::FilterKernel,
                    filter::Verdict::Reject(_) => DropReason::FilterReject,
                    _ => DropReason::FilterDrop,
                }),
            };
        }
        if self.serve(&whole, ingress, snap, demux) {
            if let Whole::Frame(f) = whole {
                self.io.pool.put(f);
            }
            return;
        }
        let c = &*self.counters;
        let blind = matches!(whole, Whole::Reassembled(_));
        let (result, udp, multicast) = {
            let data: &mut [u8] = match &mut whole {
                // SAFETY: a frame of this worker, from its UMEM.
                Whole::Frame(f) => unsafe { self.io.xsk.umem.bytes_mut(f) },
                Whole::Reassembled(n) => &mut self.slow.scratch[..*n],
            };
            let r = input::deliver(
                data,
                ingress,
                snap,
                demux,
                &self.local,
                &mut self.slow.ident,
            );
            let p = Packet::new_unchecked(&data[14..]);
            (
                r,
                p.protocol() == ipv4::protocol::UDP,
                p.dst().is_multicast(),
            )
        };
        match result {
            Local::Delivered(k) => {
                c.mib(Mib::InDelivers, 1);
                if udp {
                    c.mib(Mib::UdpInDatagrams, k as u64);
                }
            }
            Local::EchoReply { port, len } => {
                count_echo(c);
                let mtu = snap.ports[port].mtu as usize;
                let reply: &[u8] = match &whole {
                    // SAFETY: a frame of this worker, from its UMEM.
                    Whole::Frame(f) => unsafe { &self.io.xsk.umem.bytes(f)[..len.min(f.len())] },
                    Whole::Reassembled(_) => &self.slow.scratch[..len],
                };
                let allowed = allow(&self.io, &self.slow.filter, snap, reply, port);
                match whole {
                    _ if !allowed => {}
                    Whole::Frame(mut f) if len - 14 <= mtu => {
                        f.set_len(len);
                        self.io.send(port, f);
                        return;
                    }
                    Whole::Frame(ref f) => self.fragment_frame(f, len, port, mtu),
                    Whole::Reassembled(_) => {
                        let Slow {
                            scratch, scratch2, ..
                        } = &mut self.slow;
                        if len - 14 <= mtu {
                            self.io.emit(port, &scratch[..len]);
                        } else {
                            self.io
                                .emit_fragmented(port, &scratch[..len], mtu, scratch2);
                        }
                    }
                }
            }
            Local::Unresolved { ifindex, next } => {
                c.count_drop(DropReason::NeighbourMissing);
                self.slow
                    .asked
                    .request(ifindex, next, self.slow.clock.now_ms);
            }
            Local::NoSocket { .. } | Local::Drop(DropReason::LocalUnclaimed)
                if blind && !multicast =>
            {
                // (Multicast would go out on the wire that way: not
                // handed back.)
                let Whole::Reassembled(n) = whole else {
                    unreachable!("blind means reassembled")
                };
                if self.slow.kernel.send(&self.slow.scratch[14..n]) {
                    c.to_kernel.add(1);
                } else {
                    c.count_drop(DropReason::KernelHandbackFailed);
                }
            }
            Local::NoSocket { broadcast } => {
                c.count_drop(DropReason::UdpNoSocket);
                if let (Whole::Frame(f), false) = (&whole, broadcast) {
                    let answer = Answer {
                        error: RouterError::PortUnreachable,
                        origin: icmp::Origin::Other,
                        options: None,
                    };
                    self.answer_frame(f, ingress, &answer, snap);
                }
            }
            Local::Drop(r) => c.count_drop(r),
        }
        if let Whole::Frame(f) = whole {
            self.io.pool.put(f);
        }
    }

    /// Offers a local datagram to the sockets that answer in the worker
    /// ([`crate::socket::serve`]), and transmits the reply through the
    /// output and postrouting hooks; true when a socket took it.
    fn serve(&mut self, whole: &Whole, ingress: usize, snap: &Snapshot, demux: &Demux) -> bool {
        let data: &[u8] = match whole {
            // SAFETY: a frame of this worker, from its UMEM.
            Whole::Frame(f) => unsafe { self.io.xsk.umem.bytes(f) },
            Whole::Reassembled(n) => &self.slow.scratch[..*n],
        };
        let cx = serve::Ctx {
            snap,
            demux,
            shared: &self.local,
            counters: &self.counters,
            umem: &self.io.xsk.umem,
        };
        let pool = &mut self.io.pool;
        let (frame, port) =
            match self
                .handlers
                .answer(&cx, data, ingress, pool, &mut self.slow.ident)
            {
                Served::Pass => return false,
                Served::Done => return true,
                Served::Unresolved { ifindex, next } => {
                    let now = self.slow.clock.now_ms;
                    self.slow.asked.request(ifindex, next, now);
                    return true;
                }
                Served::Reply { frame, port } => (frame, port),
            };
        // SAFETY: the reply's frame, from this worker's UMEM.
        let reply = unsafe { self.io.xsk.umem.bytes(&frame) };
        match egress(&self.io, &self.slow.filter, snap, reply, port) {
            Egress::Send => self.io.send(port, frame),
            Egress::Drop => {
                self.io.pool.put(frame);
                return true;
            }
            Egress::Kernel => self.io.pool.put(frame),
        }
        let c = &*self.counters;
        c.mib(Mib::OutRequests, 1);
        c.mib(Mib::UdpOutDatagrams, 1);
        true
    }

    /// Datagrams of the engine's sockets: parked ones again when the
    /// tables changed (a neighbour may have been resolved), then new ones,
    /// a batch per round.
    fn originate(&mut self, snap: &Snapshot) -> usize {
        let s = &mut self.slow;
        if !s.parked.is_empty() && snap.generation != s.parked_generation {
            s.parked_generation = snap.generation;
            std::mem::swap(&mut s.parked, &mut s.retry);
        }
        if s.parked.is_empty() {
            s.parked_generation = snap.generation;
        }
        let mut fresh = std::mem::take(&mut self.fresh);
        let txq = &self.local.tx[self.id % self.local.tx.len()];
        fresh.extend(std::iter::from_fn(|| txq.pop()).take(self.io.batch));
        let mut retry = std::mem::take(&mut self.slow.retry);
        let mut work = 0;
        let mut now = None;
        // After the queue was drained, as for received frames: a datagram
        // sent to a socket bound before the send finds it.
        let mut demux = None;
        for dg in retry.drain(..).chain(fresh.drain(..)) {
            let t = *now.get_or_insert_with(|| self.local.now_ms());
            if t.saturating_sub(dg.queued_ms) > PARKED_MS {
                self.counters.count_drop(DropReason::OutputNeighbourTimeout);
                let TxDatagram { sock, buf, .. } = dg;
                sock.recycle_tx(buf);
                continue;
            }
            let d = demux.get_or_insert_with(|| self.local.demux.load());
            self.send_datagram(dg, snap, d);
            work += 1;
        }
        // Empty, with their room kept.
        self.fresh = fresh;
        self.slow.retry = retry;
        work
    }

    /// Builds and queues one datagram of an engine socket; parks it while
    /// its next hop is unresolved.
    fn send_datagram(&mut self, dg: TxDatagram, snap: &Snapshot, demux: &Demux) {
        let c = &*self.counters;
        let Slow {
            filter,
            scratch,
            scratch2,
            ident,
            parked,
            asked,
            clock,
            ..
        } = &mut self.slow;
        match output::build(&dg, snap, &self.local, ident, scratch) {
            Built::Frame { port, len } => {
                if originate(&mut self.io, filter, snap, port, &scratch[..len]) {
                    c.mib(Mib::OutRequests, 1);
                    if dg.raw.is_none() {
                        c.mib(Mib::UdpOutDatagrams, 1);
                    }
                }
                // IP_MULTICAST_LOOP: the engine's own sockets get a copy,
                // as if it had come in on the egress interface.
                if dg.mcast_loop && dg.dst.ip().is_multicast() {
                    if let Local::Delivered(k) =
                        input::deliver(&mut scratch[..len], port, snap, demux, &self.local, ident)
                    {
                        c.mib(Mib::InDelivers, 1);
                        c.mib(Mib::UdpInDatagrams, k as u64);
                    }
                }
            }
            Built::Fragment { port, len, .. }
                if !allow(&self.io, filter, snap, &scratch[..len], port) => {}
            Built::Fragment { port, len, mtu } => {
                let io = &mut self.io;
                match fragment::split(&scratch[..len], mtu, scratch2, |f| {
                    io.emit(port, f);
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
                asked.request(ifindex, next, clock.now_ms);
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

    /// Idling, and what is done about once a second: fill targets, gauges,
    /// reassembly settings.
    fn housekeeping(&mut self, work: usize) {
        if work > 0 {
            self.counters.batches.add(1);
        }
        self.rounds = self.rounds.wrapping_add(1);
        // Frames still out come back on a completion ring, and frames and
        // datagrams wait for a neighbour: either way, no long sleep.
        let tx_out = self.io.state.iter().any(|st| st.in_flight > 0)
            || !self.slow.held.is_empty()
            || !self.slow.parked.is_empty();
        let bell = Bell(&self.local, self.id % self.local.tx.len());
        if self
            .idle
            .after_round(work, tx_out, &mut self.pollfds, &self.counters, &bell)
        {
            self.rounds = 0;
        }
        if self.rounds.is_multiple_of(1024) && self.last_refresh.elapsed() >= Duration::from_secs(1)
        {
            self.last_refresh = Instant::now();
            let min = min_fill(self.io.batch, self.io.xsk.ring_size);
            for st in self.io.state.iter_mut() {
                // Quiet for a second: lend its frames to busier rings.
                if st.received < st.fill_target / 2 {
                    st.fill_target = (st.fill_target / 2).max(min);
                }
                st.received = 0;
            }
            self.io.refresh();
            self.publish_reassembly();
            self.handlers.prune();
            let cfg = reasm::Config::from_sysctl(&self.snapshot.load().sysctl, self.workers, 0);
            let t = self.slow.table.config();
            if (
                cfg.high_thresh,
                cfg.low_thresh,
                cfg.timeout_ms,
                cfg.max_dist,
            ) != (t.high_thresh, t.low_thresh, t.timeout_ms, t.max_dist)
            {
                self.slow.table.set_config(cfg);
            }
        }
        let m = self.slow.table.memory();
        self.counters.reasm_memory.set(m);
        if m > self.counters.reasm_memory_peak.get() {
            self.counters.reasm_memory_peak.set(m);
        }
    }

    fn publish_reassembly(&mut self) {
        for (m, v) in self.slow.table.take_stats().mib() {
            self.counters.mib(m, v);
        }
        self.counters
            .reasm_queues
            .set(self.slow.table.queues() as u64);
    }

    /// After the last round: frames still held go back to the pool, and
    /// the counters are published.
    fn finish(mut self) {
        for h in std::mem::take(&mut self.slow.held) {
            self.io.pool.put(h.frame);
        }
        for st in self.io.state.iter_mut() {
            for f in st.pending.drain(..) {
                self.io.pool.put(f);
            }
        }
        self.io.refresh();
        self.publish_reassembly();
        log::debug!("worker {}: stopped", self.id);
    }
}

fn count_icmp(c: &WorkerCounters, e: RouterError) {
    c.mib(Mib::IcmpOutMsgs, 1);
    c.mib(
        match e {
            RouterError::TimeExceeded | RouterError::ReassemblyTimeExceeded => {
                Mib::IcmpOutTimeExcds
            }
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
