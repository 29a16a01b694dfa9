//! Fragments handed from the worker that received them to the worker that
//! reassembles their datagram ([`super::owner`]).
//!
//! One lane per (sender, receiver) pair, so each lane has one producer and
//! one consumer: a queue of filled buffers and a queue of empty ones, both
//! lock-free (`crossbeam`'s `ArrayQueue`). Buffers are allocated once, at
//! start; a sender that finds no empty buffer drops the fragment and counts
//! it, it never waits.

use crossbeam::queue::ArrayQueue;

/// The largest frame a lane carries: a 4 KiB AF_XDP frame's worth.
pub const SLOT: usize = 4096;

/// A fragment in transit, with its Ethernet header.
#[derive(Debug)]
pub struct FragBuf {
    len: usize,
    ingress: usize,
    data: [u8; SLOT],
}

#[derive(Debug)]
struct Lane {
    full: ArrayQueue<Box<FragBuf>>,
    free: ArrayQueue<Box<FragBuf>>,
}

/// The lanes between all workers.
///
/// ```
/// use xdpip::reasm::handoff::Handoff;
/// let h = Handoff::new(2, 4);
/// assert!(h.send(0, 1, b"frame", 3));
/// let mut got = Vec::new();
/// h.receive(1, 16, |frame, ingress| got.push((frame.to_vec(), ingress)));
/// assert_eq!(got, vec![(b"frame".to_vec(), 3)]);
/// ```
#[derive(Debug)]
pub struct Handoff {
    workers: usize,
    lanes: Vec<Lane>,
}

impl Handoff {
    /// Lanes between `workers` workers, `slots` buffers each.
    pub fn new(workers: usize, slots: usize) -> Handoff {
        let lanes = if workers > 1 { workers * workers } else { 0 };
        Handoff {
            workers,
            lanes: (0..lanes)
                .map(|i| {
                    // A worker's lane to itself is never used: no buffers.
                    let slots = if i / workers == i % workers {
                        1
                    } else {
                        slots.max(1)
                    };
                    let free = ArrayQueue::new(slots);
                    for _ in 0..slots {
                        let _ = free.push(Box::new(FragBuf {
                            len: 0,
                            ingress: 0,
                            data: [0; SLOT],
                        }));
                    }
                    Lane {
                        full: ArrayQueue::new(slots),
                        free,
                    }
                })
                .collect(),
        }
    }

    /// Slots per lane for `workers` workers: 16 MiB of buffers over the
    /// lanes between them, at least 512 and at most 4096 each. A lane must
    /// hold what arrives while its receiver is off its core (a scheduler
    /// time slice or two): 2048 slots last 33 ms at 60,000 fragments a
    /// second.
    pub fn slots_for(workers: usize) -> usize {
        let lanes = workers * workers.saturating_sub(1);
        ((16 << 20) / (SLOT * lanes.max(1))).clamp(512, 4096)
    }

    fn lane(&self, from: usize, to: usize) -> Option<&Lane> {
        self.lanes.get(from * self.workers + to)
    }

    /// Worker `from` gives `frame` (received on port `ingress`) to worker
    /// `to`. False when the lane is full or the frame too long: the
    /// fragment is dropped.
    pub fn send(&self, from: usize, to: usize, frame: &[u8], ingress: usize) -> bool {
        let Some(lane) = self.lane(from, to) else {
            return false;
        };
        if frame.len() > SLOT {
            return false;
        }
        let Some(mut b) = lane.free.pop() else {
            return false;
        };
        b.data[..frame.len()].copy_from_slice(frame);
        b.len = frame.len();
        b.ingress = ingress;
        // Cannot fail: full and free together hold exactly the buffers.
        let _ = lane.full.push(b);
        true
    }

    /// Worker `to` takes up to `budget` fragments from the others.
    pub fn receive(&self, to: usize, budget: usize, mut f: impl FnMut(&[u8], usize)) -> usize {
        let mut n = 0;
        for from in 0..self.workers {
            let Some(lane) = self.lane(from, to) else {
                continue;
            };
            while n < budget {
                let Some(b) = lane.full.pop() else { break };
                f(&b.data[..b.len], b.ingress);
                let _ = lane.free.push(b);
                n += 1;
            }
        }
        n
    }
}
