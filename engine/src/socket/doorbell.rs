//! Waking a worker that sleeps in poll(2) when an application queues a
//! datagram for it to send. Received traffic wakes a worker through its
//! AF_XDP sockets; without a doorbell, an answer queued just after the
//! worker fell asleep would wait for the next received frame or the poll
//! timeout (50 ms), which is what a request/response server meets on every
//! pause of its clients.
//!
//! The application writes the eventfd only while the worker said it may
//! sleep, so a busy worker costs no system call per datagram.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// One worker's doorbell.
#[derive(Debug)]
pub(crate) struct Doorbell {
    /// Set by the worker before it sleeps, cleared by it after, or by the
    /// application that rang.
    sleeping: AtomicBool,
    event: OwnedFd,
}

impl Doorbell {
    pub fn new() -> io::Result<Doorbell> {
        // SAFETY: eventfd(2) with valid flags; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Doorbell {
            sleeping: AtomicBool::new(false),
            // SAFETY: a new descriptor that nothing else owns.
            event: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// The descriptor the worker polls.
    pub fn fd(&self) -> RawFd {
        self.event.as_raw_fd()
    }

    /// The worker is about to sleep: announces it, then looks at its queue
    /// again; true when it may sleep (nothing was queued in between, and
    /// whatever is queued from now on rings).
    pub fn arm(&self, queue_empty: impl FnOnce() -> bool) -> bool {
        self.sleeping.store(true, Ordering::SeqCst);
        queue_empty()
    }

    /// The worker is awake again.
    pub fn disarm(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from our non-blocking
        // eventfd.
        unsafe { libc::read(self.event.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }

    /// A datagram was queued: wakes the worker if it sleeps.
    pub fn ring(&self) {
        if self.sleeping.load(Ordering::SeqCst) && self.sleeping.swap(false, Ordering::SeqCst) {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to our eventfd; a full
            // counter (EAGAIN) already means "readable".
            unsafe { libc::write(self.event.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(b: &Doorbell) -> bool {
        let mut p = libc::pollfd {
            fd: b.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    #[test]
    fn rings_only_a_sleeping_worker() {
        let b = Doorbell::new().unwrap();
        b.ring();
        assert!(!readable(&b), "an awake worker is not signalled");
        assert!(b.arm(|| true));
        b.ring();
        assert!(readable(&b), "a sleeping worker is woken");
        b.ring();
        b.disarm();
        assert!(!readable(&b), "waking drains the doorbell");
        assert!(!b.arm(|| false), "a queued datagram keeps the worker up");
        b.disarm();
    }
}
