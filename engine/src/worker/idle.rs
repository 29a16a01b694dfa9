//! What a worker does between rounds: spin, yield the core, sleep in
//! poll(2), and, with busy polling, run its queues' NAPI itself.
//!
//! The loop calls [`Idle::drive_napi`] at the start of a round and
//! [`Idle::after_round`] at its end; everything about waiting lives here.
//!
//! Two policies, chosen from where the worker runs
//! ([`crate::placement::Placement::shares_napi`]):
//!
//! * **Own core** (or not known): spin for a while after the last work,
//!   then sleep in poll(2) until a socket has frames. While transmitted
//!   frames are out, never sleep (their completions wake nobody), but
//!   yield now and then.
//! * **Shared with its NAPI**: the NAPI that fills the worker's rx ring
//!   runs on the same core. A worker that spins or waits its turn there
//!   leaves the NAPI most of the core: it keeps redirecting frames until
//!   the fill ring is empty and drops them there, while the worker, which
//!   alone could refill it, waits (receive livelock). So the worker runs
//!   in SCHED_FIFO (when allowed) and sleeps in poll(2) as soon as a round
//!   finds nothing: the NAPI runs exactly while the worker has nothing to
//!   do, and its flush of the rx ring wakes the worker, which preempts it
//!   and forwards the batch at once. Each frame the NAPI spends time on is
//!   then a frame the worker forwards. A worker busy for
//!   [`SHARED_BUSY_FRAMES`] frames in a row sleeps briefly all the same,
//!   so that a worker fed from other cores never keeps its core from the
//!   NAPI (the kernel's RT throttling is the last resort).

use crate::stats::WorkerCounters;
use crate::xsk::QueueSocket;
use std::time::Duration;

/// Idle rounds spent spinning before sleeping in poll(2).
const SPIN_ROUNDS: u32 = 2000;
/// Idle rounds between two sched_yield(2) while transmitted frames are
/// still out: the core may be shared with the NAPI thread that completes
/// them.
const YIELD_ROUNDS: u32 = 64;
/// The longest sleep in poll(2) on an own core (timers, engine sockets).
const SLEEP_MS: i32 = 50;
/// The longest sleep in poll(2) on a shared core while frames are out:
/// their completions come from a NAPI of this core, and wake nobody.
const SHARED_TX_SLEEP_MS: i32 = 1;
/// Frames a worker sharing its core forwards before it sleeps briefly even
/// though it has more.
pub const SHARED_BUSY_FRAMES: usize = 8192;
/// That brief sleep.
const SHARED_BREAK: Duration = Duration::from_micros(50);
/// Idle rounds spent busy polling before sleeping in poll(2) (each round
/// polls the NAPIs, so this is how long new frames are picked up at once).
const BUSY_POLL_ROUNDS: u32 = 20_000;

/// What else may wake a sleeping worker besides frames on its sockets:
/// the doorbell its engine sockets ring when an application queues a
/// datagram ([`crate::socket`]). `()` for none.
pub trait Wake {
    /// True when the worker may sleep now (it says so to the ringers).
    fn may_sleep(&self) -> bool;
    /// The worker is awake again.
    fn woke(&self);
}

impl Wake for () {
    fn may_sleep(&self) -> bool {
        true
    }
    fn woke(&self) {}
}

/// How a worker waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// It has its core to itself, or that is not known.
    OwnCore,
    /// It shares its core with the NAPI of one of its queues.
    SharedWithNapi,
}

/// What the idle policy is told at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdleConfig {
    /// The policy.
    pub policy: Policy,
    /// Per socket (in the worker's order): drive its NAPI by busy polling.
    pub busy_poll: Vec<bool>,
}

/// The idle state of one worker.
#[derive(Debug)]
pub struct Idle {
    cfg: IdleConfig,
    idle: u32,
    busy_frames: usize,
    busy_polling: bool,
}

impl Idle {
    /// The state for worker `id`, configured as `cfg`. With
    /// [`Policy::SharedWithNapi`], the calling thread (the worker) asks for
    /// SCHED_FIFO, and says so when it does not get it.
    pub fn new(cfg: IdleConfig, id: usize) -> Idle {
        if cfg.policy == Policy::SharedWithNapi {
            if let Err(e) = fifo() {
                log::warn!(
                    "worker {id}: no SCHED_FIFO ({e}; CAP_SYS_NICE grants it): it shares its \
                     core with its NAPI at normal priority, and may get too little of it under \
                     load"
                );
            }
        }
        let busy_polling = cfg.busy_poll.iter().any(|b| *b);
        Idle {
            cfg,
            idle: 0,
            busy_frames: 0,
            busy_polling,
        }
    }

    /// At the start of a round: with busy polling, a non-blocking
    /// `recvfrom` on every busy-polled socket runs its NAPI here, and a
    /// `sendto` on those with frames to send or out (the kernel then
    /// neither needs nor wants an interrupt).
    pub fn drive_napi(
        &mut self,
        sockets: &[QueueSocket],
        tx_out: impl Fn(usize) -> bool,
        counters: &WorkerCounters,
    ) {
        if !self.busy_polling {
            return;
        }
        for (i, s) in sockets.iter().enumerate() {
            if !self.cfg.busy_poll.get(i).copied().unwrap_or(false) {
                continue;
            }
            s.kick_rx();
            counters.wakeups.add(1);
            if tx_out(i) || s.tx.pending() > 0 {
                s.kick_tx();
                counters.wakeups.add(1);
            }
        }
    }

    /// At the end of a round that did `work` (frames received, completed,
    /// sent), with `tx_out` true while transmitted frames are not yet
    /// completed: spins, yields or sleeps. Returns true when it slept in
    /// poll(2).
    pub fn after_round(
        &mut self,
        work: usize,
        tx_out: bool,
        pollfds: &mut [libc::pollfd],
        counters: &WorkerCounters,
        bell: &dyn Wake,
    ) -> bool {
        let sleep = |pollfds: &mut [libc::pollfd], ms, counters| sleep(pollfds, ms, counters, bell);
        if work > 0 {
            self.idle = 0;
            if self.cfg.policy == Policy::SharedWithNapi {
                self.busy_frames += work;
                if self.busy_frames >= SHARED_BUSY_FRAMES {
                    self.busy_frames = 0;
                    std::thread::sleep(SHARED_BREAK);
                }
            }
            return false;
        }
        self.idle += 1;
        self.busy_frames = 0;
        match self.cfg.policy {
            Policy::SharedWithNapi => {
                // Give the core to the NAPI now; its flush wakes us.
                sleep(
                    pollfds,
                    if tx_out { SHARED_TX_SLEEP_MS } else { SLEEP_MS },
                    counters,
                );
                true
            }
            Policy::OwnCore if self.busy_polling => {
                // Each round polls the NAPIs; sleep only after a long
                // quiet spell (the device's gro_flush_timeout timer then
                // brings interrupts back).
                if self.idle >= BUSY_POLL_ROUNDS && !tx_out {
                    self.idle = 0;
                    sleep(pollfds, SLEEP_MS, counters);
                    return true;
                }
                std::hint::spin_loop();
                false
            }
            Policy::OwnCore => {
                // Frames still out will come back on a completion ring,
                // which wakes nobody: sleeping now could leave the fill
                // rings empty while traffic arrives. Spin, but let a NAPI
                // thread sharing the core run now and then.
                if tx_out {
                    if self.idle.is_multiple_of(YIELD_ROUNDS) {
                        std::thread::yield_now();
                    } else {
                        std::hint::spin_loop();
                    }
                    false
                } else if self.idle >= SPIN_ROUNDS {
                    self.idle = 0;
                    // Only traffic can wake the worker now, and the fill
                    // rings are full for it.
                    sleep(pollfds, SLEEP_MS, counters);
                    true
                } else {
                    std::hint::spin_loop();
                    false
                }
            }
        }
    }
}

fn sleep(pollfds: &mut [libc::pollfd], ms: i32, counters: &WorkerCounters, bell: &dyn Wake) {
    counters.sleeps.add(1);
    if bell.may_sleep() {
        // SAFETY: pollfds holds valid descriptors of live sockets (and of
        // the doorbell).
        unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, ms) };
    }
    bell.woke();
}

/// SCHED_FIFO at the lowest real-time priority for the calling thread:
/// above every normal thread (a NAPI thread is one), below interrupt
/// threads and the kernel's real-time work.
fn fifo() -> Result<(), std::io::Error> {
    let p = libc::sched_param { sched_priority: 1 };
    // SAFETY: p is a valid sched_param; 0 is the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
