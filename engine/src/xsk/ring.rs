//! The four AF_XDP rings, mapped from the kernel: single-producer
//! single-consumer queues of descriptors (rx, tx) or frame addresses (fill,
//! completion), with the producer and consumer indexes the two sides
//! publish to each other.

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// `struct xdp_ring_offset`
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RingOffset {
    pub producer: u64,
    pub consumer: u64,
    pub desc: u64,
    pub flags: u64,
}

/// `struct xdp_mmap_offsets`
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct MmapOffsets {
    pub rx: RingOffset,
    pub tx: RingOffset,
    pub fr: RingOffset,
    pub cr: RingOffset,
}

/// `struct xdp_desc`: a frame on the rx or tx ring.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Desc {
    /// Address of the packet in the UMEM.
    pub addr: u64,
    /// Length of the packet.
    pub len: u32,
    /// Options (unused).
    pub options: u32,
}

/// `XDP_RING_NEED_WAKEUP`
const NEED_WAKEUP: u32 = 1;

/// A ring mapped from a socket, unmapped on drop.
#[derive(Debug)]
struct Mapping {
    base: *mut libc::c_void,
    len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: base/len are exactly what mmap returned; nothing uses the
        // ring after its owner is dropped.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// The shared part of a ring: its indexes, flags and entries.
#[derive(Debug)]
struct Raw<T> {
    _map: Mapping,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    entries: *mut T,
    mask: u32,
    size: u32,
    _t: PhantomData<T>,
}

// SAFETY: the ring is owned by one side (this process's one thread at a
// time) and the kernel; the pointers stay valid as long as the mapping.
unsafe impl<T: Send> Send for Raw<T> {}

impl<T> Raw<T> {
    /// Maps ring `size` entries of `T` at page offset `pgoff` of `fd`.
    fn map(fd: BorrowedFd<'_>, off: &RingOffset, pgoff: i64, size: u32) -> io::Result<Raw<T>> {
        let len = off.desc as usize + size as usize * std::mem::size_of::<T>();
        // SAFETY: a shared mapping of the socket's ring; the kernel checks
        // the offset and length.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                pgoff,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let at = |o: u64| {
            // SAFETY: the offsets the kernel gave lie inside the mapping.
            unsafe { (base as *mut u8).add(o as usize) }
        };
        Ok(Raw {
            producer: at(off.producer) as *const AtomicU32,
            consumer: at(off.consumer) as *const AtomicU32,
            flags: at(off.flags) as *const AtomicU32,
            entries: at(off.desc) as *mut T,
            mask: size - 1,
            size,
            _map: Mapping { base, len },
            _t: PhantomData,
        })
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into the live mapping; the kernel accesses it
        // atomically too.
        unsafe { &*self.producer }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for producer.
        unsafe { &*self.consumer }
    }

    fn flags(&self) -> &AtomicU32 {
        // SAFETY: as for producer.
        unsafe { &*self.flags }
    }
}

/// A ring this process produces into (tx, fill).
#[derive(Debug)]
pub struct ProdRing<T: Copy> {
    raw: Raw<T>,
    cached_prod: u32,
    cached_cons: u32,
}

impl<T: Copy> ProdRing<T> {
    pub(crate) fn map(
        fd: BorrowedFd<'_>,
        off: &RingOffset,
        pgoff: i64,
        size: u32,
    ) -> io::Result<Self> {
        let raw = Raw::map(fd, off, pgoff, size)?;
        let cached_prod = raw.producer().load(Ordering::Relaxed);
        let cached_cons = raw.consumer().load(Ordering::Relaxed).wrapping_add(size);
        Ok(ProdRing {
            raw,
            cached_prod,
            cached_cons,
        })
    }

    /// Free entries, refreshing the consumer index only when the cached
    /// one does not show `want`.
    fn free(&mut self, want: u32) -> u32 {
        let free = self.cached_cons.wrapping_sub(self.cached_prod);
        if free >= want {
            return free;
        }
        self.cached_cons = self
            .raw
            .consumer()
            .load(Ordering::Acquire)
            .wrapping_add(self.raw.size);
        self.cached_cons.wrapping_sub(self.cached_prod)
    }

    /// Puts as many of `items` as there is room for; returns how many.
    pub fn produce(&mut self, items: &[T]) -> usize {
        let n = (items.len() as u32).min(self.free(items.len() as u32)) as usize;
        for (i, it) in items[..n].iter().enumerate() {
            let idx = self.cached_prod.wrapping_add(i as u32) & self.raw.mask;
            // SAFETY: idx is masked into the ring; the entries between the
            // consumer and the producer index are this side's to write.
            unsafe { self.raw.entries.add(idx as usize).write(*it) };
        }
        self.cached_prod = self.cached_prod.wrapping_add(n as u32);
        // Entries are written before the kernel can see the new index.
        self.raw
            .producer()
            .store(self.cached_prod, Ordering::Release);
        n
    }

    /// Entries produced and not yet consumed by the kernel.
    pub fn pending(&self) -> u32 {
        self.cached_prod
            .wrapping_sub(self.raw.consumer().load(Ordering::Acquire))
    }

    /// True when the kernel asks to be woken (`need_wakeup`).
    pub fn needs_wakeup(&self) -> bool {
        self.raw.flags().load(Ordering::Relaxed) & NEED_WAKEUP != 0
    }

    /// Ring size.
    pub fn size(&self) -> u32 {
        self.raw.size
    }
}

/// A ring this process consumes from (rx, completion).
#[derive(Debug)]
pub struct ConsRing<T: Copy> {
    raw: Raw<T>,
    cached_prod: u32,
    cached_cons: u32,
}

impl<T: Copy> ConsRing<T> {
    pub(crate) fn map(
        fd: BorrowedFd<'_>,
        off: &RingOffset,
        pgoff: i64,
        size: u32,
    ) -> io::Result<Self> {
        let raw = Raw::map(fd, off, pgoff, size)?;
        let cached_prod = raw.producer().load(Ordering::Relaxed);
        let cached_cons = raw.consumer().load(Ordering::Relaxed);
        Ok(ConsRing {
            raw,
            cached_prod,
            cached_cons,
        })
    }

    /// Takes up to `out.len()` entries; returns how many.
    pub fn consume(&mut self, out: &mut [T]) -> usize {
        let mut avail = self.cached_prod.wrapping_sub(self.cached_cons);
        if avail < out.len() as u32 {
            // The index is read before the entries it covers.
            self.cached_prod = self.raw.producer().load(Ordering::Acquire);
            avail = self.cached_prod.wrapping_sub(self.cached_cons);
        }
        let n = (avail as usize).min(out.len());
        for (i, o) in out[..n].iter_mut().enumerate() {
            let idx = self.cached_cons.wrapping_add(i as u32) & self.raw.mask;
            // SAFETY: idx is masked into the ring and lies between the
            // consumer and producer index, which the kernel has filled.
            *o = unsafe { self.raw.entries.add(idx as usize).read() };
        }
        self.cached_cons = self.cached_cons.wrapping_add(n as u32);
        // The entries are read before the kernel may reuse them.
        self.raw
            .consumer()
            .store(self.cached_cons, Ordering::Release);
        n
    }

    /// True when the kernel asks to be woken (`need_wakeup`).
    pub fn needs_wakeup(&self) -> bool {
        self.raw.flags().load(Ordering::Relaxed) & NEED_WAKEUP != 0
    }
}
