//! Frame ownership as a type.
//!
//! A [`Frame`] is a UMEM frame the worker owns: received from an rx ring,
//! or taken from its [`Pool`]. It cannot be copied or cloned, so it is in
//! exactly one place; it leaves the worker's hands only by being moved into
//! a ring ([`super::QueueSocket::transmit`]) or back into the pool
//! ([`Pool::put`]). A frame dropped any other way is a bug: it is counted
//! ([`leaked`]) so that tests and `xdpip stats` see it, instead of the pool
//! shrinking unnoticed.

use super::HEADROOM;
use std::sync::atomic::{AtomicU64, Ordering};

/// Frames dropped without going to a ring or back to a pool, in this
/// process.
static LEAKED: AtomicU64 = AtomicU64::new(0);

/// Frames dropped without going to a ring or back to a pool so far, by
/// every worker of the process: 0 unless there is a bug.
pub fn leaked() -> u64 {
    LEAKED.load(Ordering::Relaxed)
}

/// A UMEM frame the worker owns, with the packet it holds: `len` bytes at
/// `addr`.
#[derive(Debug)]
#[must_use = "a frame goes to a ring or back to its pool"]
pub struct Frame {
    addr: u64,
    len: u32,
}

impl Frame {
    /// Only the rings and the pool make frames.
    #[inline(always)]
    pub(super) fn new(addr: u64, len: u32) -> Frame {
        Frame { addr, len }
    }

    /// Address of the packet in the UMEM.
    #[inline(always)]
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// Length of the packet.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True for an empty frame (from the pool, not yet written).
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sets the length of the packet (after a rewrite that trims it).
    #[inline(always)]
    pub fn set_len(&mut self, len: usize) {
        self.len = len as u32;
    }

    /// Gives the frame up without counting it as leaked: for the rings and
    /// the pool, which now hold it.
    #[inline(always)]
    pub(super) fn into_raw(self) -> (u64, u32) {
        let me = std::mem::ManuallyDrop::new(self);
        (me.addr, me.len)
    }
}

impl Drop for Frame {
    #[cold]
    fn drop(&mut self) {
        LEAKED.fetch_add(1, Ordering::Relaxed);
        debug_assert!(
            std::thread::panicking() || cfg!(test),
            "UMEM frame at {:#x} dropped without a ring or the pool",
            self.addr
        );
    }
}

/// The worker's free frames: a stack of frame start addresses, owned by
/// one thread (no atomics).
#[derive(Debug)]
pub struct Pool {
    free: Vec<u64>,
    frame_size: u64,
}

impl Pool {
    /// A pool of the frames starting at `frames`, of `frame_size` bytes.
    pub fn new(frames: Vec<u64>, frame_size: u32) -> Pool {
        Pool {
            free: frames,
            frame_size: frame_size as u64,
        }
    }

    /// Takes a free frame, empty, its packet to start after the headroom.
    #[inline]
    pub fn take(&mut self) -> Option<Frame> {
        self.free.pop().map(|f| Frame::new(f + HEADROOM, 0))
    }

    /// Gives a frame back.
    #[inline]
    pub fn put(&mut self, f: Frame) {
        let (addr, _) = f.into_raw();
        self.put_addr(addr);
    }

    /// Takes back a frame the kernel returned (completion ring).
    #[inline]
    pub(super) fn put_addr(&mut self, addr: u64) {
        self.free.push(addr - addr % self.frame_size);
    }

    /// The start addresses of up to `n` free frames, for a fill ring; the
    /// ring takes a prefix of them ([`Pool::taken`]).
    #[inline]
    pub(super) fn peek(&self, n: usize) -> &[u64] {
        &self.free[self.free.len() - n.min(self.free.len())..]
    }

    /// Removes the first `done` of the `peeked` frames the last
    /// [`Pool::peek`] showed: the kernel holds them now.
    #[inline]
    pub(super) fn taken(&mut self, peeked: usize, done: usize) {
        let start = self.free.len() - peeked.min(self.free.len());
        self.free.drain(start..start + done.min(peeked));
    }

    /// Free frames.
    #[inline]
    pub fn len(&self) -> usize {
        self.free.len()
    }

    /// True when no frame is free.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.free.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_and_go_through_the_pool() {
        let mut p = Pool::new(vec![0, 2048, 4096], 2048);
        let f = p.take().unwrap();
        assert_eq!((f.addr(), f.len()), (4096 + HEADROOM, 0));
        assert_eq!(p.len(), 2);
        let before = leaked();
        p.put(f);
        assert_eq!(p.len(), 3);
        assert_eq!(leaked(), before, "a frame put back is not leaked");
        drop(p.take());
        assert_eq!(leaked(), before + 1, "a dropped frame is counted");
    }
}
