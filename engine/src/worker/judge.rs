//! The filter in the worker: where packets meet the hooks, and what a
//! refused packet gets back.
//!
//! A received packet passes prerouting (before the route lookup), then
//! input (delivered locally, after reassembly) or forward and postrouting
//! (forwarded, after the TTL and MTU checks, with the TTL already
//! decremented, as in `ip_forward()`). A packet the engine originates
//! (socket datagrams, echo replies, ICMP errors, resets) passes output and
//! postrouting; when either is the kernel's, the engine hands the packet to
//! the kernel through a raw socket, so the kernel's filter judges it there.

use crate::filter::batch::{Gate, Memo, Plain, Quick, Seen};
use crate::filter::{Hook, Meta, Reject, RuleCounters, Verdict, NO_IFACE};
use crate::forward::icmp::{self, IcmpState, Origin};
use crate::forward::reject;
use crate::forward::{forward_batch, Frames, Passage, Step};
use crate::snapshot::Snapshot;
use crate::wire::icmp::RouterError;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// One worker's side of the filter: its counter row, and a raw socket to
/// hand originated packets to the kernel.
#[derive(Debug)]
pub struct Local {
    worker: usize,
    kernel: Option<OwnedFd>,
}

/// What becomes of a packet the engine originates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Egress {
    /// Transmit it.
    Send,
    /// Dropped by a rule (or refused by the kernel's raw socket).
    Drop,
    /// Handed to the kernel, which filters and sends it.
    Kernel,
}

impl Local {
    /// The filter side of worker `worker`.
    pub fn new(worker: usize) -> Self {
        // SAFETY: plain socket(2); the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::IPPROTO_RAW,
            )
        };
        Local {
            worker,
            // SAFETY: a new descriptor nothing else owns.
            kernel: (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) }),
        }
    }

    /// Judges a received frame (Ethernet header included, IPv4 header
    /// valid) at `hook`. `Accept` at once when the hook has no rules.
    #[inline]
    pub fn received(
        &self,
        snap: &Snapshot,
        hook: Hook,
        frame: &[u8],
        ports: (usize, Option<usize>),
    ) -> Verdict {
        let f = &snap.filter;
        if !f.active(hook) {
            return Verdict::Accept;
        }
        let oif = ports.1.map_or(NO_IFACE, |p| p as u8);
        // Prerouting sees only what ip_rcv_core() let through; a bad
        // header is the forward path's to drop and count.
        if hook == Hook::Prerouting && !valid_header(frame) {
            return Verdict::Accept;
        }
        match frame
            .get(14..)
            .and_then(|ip| Meta::parse(ip, ports.0 as u8, oif))
        {
            Some(m) => f.judge(hook, &m, self.worker),
            None => Verdict::Accept,
        }
    }

    /// Judges a forwarded frame at forward, then postrouting.
    #[inline]
    pub fn forwarded(
        &self,
        snap: &Snapshot,
        frame: &[u8],
        ingress: usize,
        egress: usize,
    ) -> (Hook, Verdict) {
        let f = &snap.filter;
        if !(f.active(Hook::Forward) || f.active(Hook::Postrouting)) {
            return (Hook::Forward, Verdict::Accept);
        }
        // One parse for both hooks.
        let Some(m) = frame
            .get(14..)
            .and_then(|ip| Meta::parse(ip, ingress as u8, egress as u8))
        else {
            return (Hook::Forward, Verdict::Accept);
        };
        for hook in [Hook::Forward, Hook::Postrouting] {
            let v = f.judge(hook, &m, self.worker);
            if v != Verdict::Accept {
                return (hook, v);
            }
        }
        (Hook::Postrouting, Verdict::Accept)
    }

    /// Judges a frame the engine originates, leaving through `port`, at
    /// output and postrouting; hands it to the kernel when either is the
    /// kernel's.
    pub fn originated(&self, snap: &Snapshot, frame: &[u8], port: usize) -> Egress {
        let f = &snap.filter;
        if !(f.active(Hook::Output)
            || f.active(Hook::Postrouting)
            || f.kernel_hooks & crate::filter::ORIGINATED != 0)
        {
            return Egress::Send;
        }
        let Some(ip) = frame.get(14..) else {
            return Egress::Send;
        };
        if f.kernel(Hook::Output) || f.kernel(Hook::Postrouting) {
            return if self.to_kernel(ip) {
                Egress::Kernel
            } else {
                Egress::Drop
            };
        }
        let Some(m) = Meta::parse(ip, NO_IFACE, port as u8) else {
            return Egress::Send;
        };
        for hook in [Hook::Output, Hook::Postrouting] {
            match f.judge(hook, &m, self.worker) {
                Verdict::Accept => {}
                // A reject of a locally generated packet answers the
                // engine itself; it is a drop here.
                _ => return Egress::Drop,
            }
        }
        Egress::Send
    }

    fn to_kernel(&self, ip: &[u8]) -> bool {
        let Some(fd) = &self.kernel else { return false };
        if ip.len() < 20 {
            return false;
        }
        let len = (u16::from_be_bytes([ip[2], ip[3]]) as usize).min(ip.len());
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: a valid buffer and address of the stated lengths.
        let r = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                ip.as_ptr().cast(),
                len,
                libc::MSG_DONTWAIT,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        r == len as isize
    }
}

/// Version 4, a header length of at least 5 words that the frame holds,
/// a total length the frame holds, a header checksum that verifies.
fn valid_header(frame: &[u8]) -> bool {
    let Some(ip) = frame.get(14..) else {
        return false;
    };
    let Some(&b0) = ip.first() else {
        return false;
    };
    let hl = ((b0 & 0x0f) as usize) * 4;
    if b0 >> 4 != 4 || hl < 20 || ip.len() < hl {
        return false;
    }
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    total >= hl && total <= ip.len() && crate::wire::checksum::checksum(&ip[..hl]) == 0
}

/// A packet the filter did not accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The hook that refused it.
    pub hook: Hook,
    /// Its verdict (not `Accept`).
    pub verdict: Verdict,
    /// The port it came in on.
    pub ingress: usize,
}

/// What to send back for a refused packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Nothing: a drop, or a reject Linux would not answer.
    Nothing,
    /// An answer was built into the scratch buffer: transmit its `len`
    /// bytes on `port` (as an originated packet); `icmp` is the ICMP
    /// error it is, for the counters.
    Built {
        /// Egress port.
        port: usize,
        /// Frame length.
        len: usize,
        /// The ICMP error, or `None` for a TCP reset.
        icmp: Option<RouterError>,
    },
    /// An ICMP error was not sent (rate limits, ...).
    Suppressed(icmp::Suppressed),
}

/// The ICMP error for a reject code.
fn error_of(code: u8) -> RouterError {
    match code {
        0 => RouterError::NetUnreachable,
        1 => RouterError::HostUnreachable,
        3 => RouterError::PortUnreachable,
        13 => RouterError::AdminProhibited,
        c => RouterError::DestUnreachable { code: c },
    }
}

/// Builds into `out` the answer to a refused frame, as Linux's `reject`
/// answers (`nf_send_unreach()`, `nf_send_reset()`): `frame` is the packet
/// as the hook saw it (after forward, the TTL is already decremented);
/// its destination MAC is set back to the ingress port's for the ICMP
/// error builder. `clock` is (monotonic ms, ms since midnight UTC).
pub fn answer(
    r: Refusal,
    frame: &mut [u8],
    snap: &Snapshot,
    state: &mut IcmpState,
    clock: (u64, u32),
    out: &mut [u8],
) -> Answer {
    let Verdict::Reject(kind) = r.verdict else {
        return Answer::Nothing;
    };
    let Some(ip) = frame.get(14..) else {
        return Answer::Nothing;
    };
    match kind {
        Reject::TcpReset => match reject::tcp_reset(ip, snap, out) {
            Some((port, len)) => Answer::Built {
                port,
                len,
                icmp: None,
            },
            None => Answer::Nothing,
        },
        Reject::Icmp(code) => {
            if reject::bad_transport_checksum(ip) {
                return Answer::Nothing;
            }
            let dst = std::net::Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            if let Some(p) = snap.ports.get(r.ingress) {
                frame[..6].copy_from_slice(&p.mac.0);
            }
            let e = error_of(code);
            let o = icmp::Offending {
                frame,
                ingress: r.ingress,
                error: e,
                origin: Origin::Other,
                options: None,
            };
            match icmp::build_error(&o, snap, state, clock, out) {
                Ok((port, len)) => {
                    // An error about a packet to a local address comes
                    // from that address (RTCF_LOCAL in __icmp_send()).
                    if r.hook == Hook::Input && !snap.is_broadcast(dst) {
                        reject::set_source(&mut out[..len], dst);
                    }
                    Answer::Built {
                        port,
                        len,
                        icmp: Some(e),
                    }
                }
                Err(s) => Answer::Suppressed(s),
            }
        }
    }
}

/// The host's ruleset as the vector path asks it ([`crate::forward::Judge`]),
/// a frame at a time in the vector's stage 3, remembering why it refused
/// each frame it refused.
///
/// ```
/// use xdpip::filter::{Hook, Verdict};
/// use xdpip::forward::{Judge, Passage};
/// use xdpip::worker::Hooks;
/// let rules = xdpip::filter::sample::twenty_rules(1);
/// // UDP to port 5555: rejected with host-prohibited.
/// let mut frame = [0u8; 14 + 28];
/// frame[14..18].copy_from_slice(&[0x45, 0, 0, 28]);
/// frame[14 + 8] = 64;
/// frame[14 + 9] = 17;
/// frame[14 + 22..14 + 24].copy_from_slice(&5555u16.to_be_bytes());
/// let mut refused = [None; 1];
/// let mut hooks = Hooks::new(&rules, 0, &mut refused);
/// assert_eq!(hooks.pass(&frame, 0, 0, 1), Passage::RefusedAsForwarded);
/// assert!(matches!(refused[0], Some((Hook::Forward, Verdict::Reject(_)))));
/// ```
#[derive(Debug)]
pub struct Hooks<'a> {
    refused: &'a mut [Option<(Hook, Verdict)>],
    /// Prerouting, forward and postrouting, looked up once for the batch.
    gates: [Gate<'a>; 3],
    /// Only the forward hook has rules and its policy accepts (the usual
    /// router ruleset): one gate to ask, not three, and a packet no rule
    /// matches passes with one test.
    forward_only: Option<Quick<'a>>,
    /// The last frame `forward_only` judged, for the next one.
    memo: Memo<'a>,
    /// Where the memo goes after the batch, for the next one.
    carry: Option<&'a mut Carry>,
    /// The ruleset's [`Ruleset::id`](crate::filter::Ruleset).
    id: u64,
    counters: Option<&'a RuleCounters>,
}

/// What a worker's [`Hooks`] learned of the last flow of a batch, for
/// the next batch ([`Hooks::carrying`]): the memo, and the ruleset it is
/// of, by number (a ruleset freed and another made at its address has
/// another).
#[derive(Debug, Clone, Copy, Default)]
pub struct Carry {
    id: u64,
    memo: Memo<'static>,
}

/// The hooks of a forwarded packet, in order.
const FORWARDED: [Hook; 3] = [Hook::Prerouting, Hook::Forward, Hook::Postrouting];

impl<'a> Hooks<'a> {
    /// Worker `worker`'s view of `rules`; `refused[i]` is set to the hook
    /// and verdict that refused frame `i`.
    pub fn new(
        rules: &'a crate::filter::Ruleset,
        worker: usize,
        refused: &'a mut [Option<(Hook, Verdict)>],
    ) -> Self {
        let gates = FORWARDED.map(|h| rules.gate(h));
        Hooks {
            refused,
            gates,
            forward_only: if gates.map(|g| g.active()) == [false, true, false] {
                gates[1].quick()
            } else {
                None
            },
            memo: Memo::default(),
            carry: None,
            id: rules.id,
            counters: rules.counters_of(worker),
        }
    }

    /// The hooks, starting from the memo of the batch before when it was
    /// of the same ruleset, and leaving theirs in `carry` after
    /// [`Hooks::forward`]: a queue whose batches carry the same flows
    /// judges them on the memo from the first frame.
    ///
    /// ```
    /// # use xdpip::forward::Step;
    /// # use xdpip::worker::{Carry, Hooks};
    /// # fn run(snap: &xdpip::snapshot::Snapshot, batches: &mut [Vec<&mut [u8]>]) {
    /// let mut carry = Carry::default();
    /// let mut refused = vec![None; 64];
    /// let mut out = vec![Step::Slow; 64];
    /// for frames in batches {
    ///     Hooks::new(&snap.filter, 0, &mut refused)
    ///         .carrying(&mut carry)
    ///         .forward(&mut frames[..], 0, snap, &mut out);
    /// }
    /// # }
    /// ```
    pub fn carrying(mut self, carry: &'a mut Carry) -> Self {
        if let Some(q) = self.forward_only {
            if carry.id == self.id && self.id != 0 {
                self.memo = Memo::attached(carry.memo, q);
            }
        }
        self.carry = Some(carry);
        self
    }

    /// [`forward_batch`](crate::forward::forward_batch) of `frames`,
    /// received on port `ingress`, through these hooks: the usual router
    /// ruleset (rules at the forward hook alone, its policy accepting) in
    /// an instantiation of its own, which asks no other hook and tests
    /// nothing else for each frame.
    ///
    /// ```
    /// # use xdpip::forward::Step;
    /// # use xdpip::worker::Hooks;
    /// # fn run(snap: &xdpip::snapshot::Snapshot, frames: &mut [&mut [u8]]) {
    /// let mut refused = vec![None; frames.len()];
    /// let mut out = vec![Step::Slow; frames.len()];
    /// let forwarded = Hooks::new(&snap.filter, 0, &mut refused).forward(frames, 0, snap, &mut out);
    /// # }
    /// ```
    #[inline]
    pub fn forward<F: Frames + ?Sized>(
        &mut self,
        frames: &mut F,
        ingress: usize,
        snap: &Snapshot,
        out: &mut [Step],
    ) -> usize {
        let n = match self.forward_only {
            // Without a rule on the output port, the memo's key leaves it
            // out: two instructions less a frame, for a copy of the path.
            Some(q) if q.reads_oif() => {
                self.forward_only_batch::<F, true>(q, frames, ingress, snap, out)
            }
            Some(q) => self.forward_only_batch::<F, false>(q, frames, ingress, snap, out),
            None => forward_batch(frames, ingress, snap, self, out),
        };
        if let Some(c) = self.carry.as_deref_mut() {
            *c = Carry {
                id: self.id,
                memo: self.memo.detached(),
            };
        }
        n
    }

    /// [`Hooks::forward`] when the forward hook alone has rules and its
    /// policy accepts (`q`); `OIF` as [`Memo::seen`] takes it.
    fn forward_only_batch<F: Frames + ?Sized, const OIF: bool>(
        &mut self,
        q: Quick<'a>,
        frames: &mut F,
        ingress: usize,
        snap: &Snapshot,
        out: &mut [Step],
    ) -> usize {
        forward_batch(
            frames,
            ingress,
            snap,
            &mut ForwardOnly::<OIF> { q, hooks: self },
            out,
        )
    }

    /// [`Judge::pass`](crate::forward::Judge::pass) when the forward hook
    /// alone has rules and its policy accepts (`q`); `OIF` as
    /// [`Memo::seen`] takes it. A frame of the memo's flow is
    /// judged on the memo alone; the others, out of line, are given
    /// where the gate is (`q`), not what it holds, which the hot path
    /// would otherwise load for every frame.
    #[inline(always)]
    fn pass_forward_only<const OIF: bool>(
        &mut self,
        q: &Quick<'a>,
        frame: &[u8],
        lane: u16,
        (iif, oif): (usize, u8),
    ) -> Passage {
        let seen = self.memo.seen::<OIF>(frame, iif as u8, oif);
        self.passage::<OIF>(seen, q, frame, lane, (iif, oif))
    }

    /// The passage of `frame`, of which the memo made `seen`.
    #[inline(always)]
    fn passage<const OIF: bool>(
        &mut self,
        seen: Seen,
        q: &Quick<'a>,
        frame: &[u8],
        lane: u16,
        (iif, oif): (usize, u8),
    ) -> Passage {
        match seen {
            Seen::Passes => Passage::Through,
            Seen::Rules(mask) => self.forward_verdict(q, mask, frame, lane, (iif as u8, oif)),
            Seen::New => self.learn::<OIF>(q, frame, lane, (iif, oif)),
        }
    }

    /// [`Hooks::pass_forward_only`] for a frame of a flow the memo does
    /// not hold: learned, then judged.
    #[inline(never)]
    fn learn<const OIF: bool>(
        &mut self,
        q: &Quick<'a>,
        frame: &[u8],
        lane: u16,
        ifaces: (usize, u8),
    ) -> Passage {
        match q.learn::<OIF>(&mut self.memo, frame, (ifaces.0 as u8, ifaces.1)) {
            // Never New: the frame is of the flow just learned.
            Some(seen) => self.passage::<OIF>(seen, q, frame, lane, ifaces),
            None => self.pass_parsed(frame, lane, ifaces.0, ifaces.1),
        }
    }

    /// Hook `at` of [`FORWARDED`] gave `v` (never one without rules):
    /// a refusal is remembered for frame `lane`.
    #[inline(always)]
    fn refuses(&mut self, at: usize, v: Verdict, lane: u16) -> bool {
        if v == Verdict::Accept {
            return false;
        }
        if let Some(r) = self.refused.get_mut(lane as usize) {
            *r = Some((FORWARDED[at], v));
        }
        true
    }

    /// Hook `at` of [`FORWARDED`] refuses the frame `p`: one test when
    /// the hook has no rules.
    #[inline(always)]
    fn refuses_frame(&mut self, at: usize, p: Plain, lane: u16) -> bool {
        let gate = self.gates[at];
        gate.active() && self.refuses(at, gate.judge_frame(p, self.counters), lane)
    }

    /// The forward hook's say on `frame`, which a rule may match
    /// (`mask`), when it alone has rules: out of line, as few packets need
    /// it. Given the frame, not its [`Plain`], which the hot path would
    /// otherwise build in memory for the call.
    #[inline(never)]
    fn forward_verdict(
        &mut self,
        q: &Quick,
        mask: u64,
        frame: &[u8],
        lane: u16,
        (iif, oif): (u8, u8),
    ) -> Passage {
        let Some(p) = Plain::read(frame, iif) else {
            unreachable!("read before the mask was taken")
        };
        if self.refuses(1, q.verdict(mask, p.forwarded(oif), self.counters), lane) {
            Passage::RefusedAsForwarded
        } else {
            Passage::Through
        }
    }

    /// [`Judge::pass`](crate::forward::Judge::pass) for a frame
    /// [`Plain::read`] does not read (header options, a later fragment,
    /// no transport header): parsed into a [`Meta`].
    #[cold]
    #[inline(never)]
    fn pass_parsed(&mut self, frame: &[u8], lane: u16, iif: usize, oif: u8) -> Passage {
        let Some(mut m) = frame
            .get(14..)
            .and_then(|ip| Meta::parse(ip, iif as u8, NO_IFACE))
        else {
            return Passage::Through;
        };
        if self.refuses(0, self.gates[0].judge(&m, self.counters), lane) {
            return Passage::RefusedAsReceived;
        }
        m.ttl = m.ttl.wrapping_sub(1);
        m.oif = oif;
        for at in 1..3 {
            if self.refuses(at, self.gates[at].judge(&m, self.counters), lane) {
                return Passage::RefusedAsForwarded;
            }
        }
        Passage::Through
    }
}

impl crate::forward::Judge for Hooks<'_> {
    #[inline(always)]
    fn active(&self) -> bool {
        self.gates.iter().any(|g| g.active())
    }

    #[inline(always)]
    fn pass(&mut self, frame: &[u8], lane: u16, iif: usize, oif: u8) -> Passage {
        // The vector path's frames have a header without options: their
        // fields are read where the frame holds them, once for every hook.
        if let Some(q) = self.forward_only {
            return self.pass_forward_only::<true>(&q, frame, lane, (iif, oif));
        }
        let Some(p) = Plain::read(frame, iif as u8) else {
            return self.pass_parsed(frame, lane, iif, oif);
        };
        if self.refuses_frame(0, p, lane) {
            return Passage::RefusedAsReceived;
        }
        // As ip_forward() hands it to the forward hook: TTL decremented,
        // the output interface known.
        let p = p.forwarded(oif);
        if self.refuses_frame(1, p, lane) || self.refuses_frame(2, p, lane) {
            return Passage::RefusedAsForwarded;
        }
        Passage::Through
    }
}

/// [`Hooks`] whose forward hook alone has rules, its policy accepting, as
/// [`Hooks::forward`] hands them to the vector path: known active, with
/// no other hook to test; `OIF` when a rule may read the output port.
struct ForwardOnly<'h, 'a, const OIF: bool> {
    q: Quick<'a>,
    hooks: &'h mut Hooks<'a>,
}

impl<const OIF: bool> crate::forward::Judge for ForwardOnly<'_, '_, OIF> {
    #[inline(always)]
    fn active(&self) -> bool {
        true
    }

    #[inline(always)]
    fn pass(&mut self, frame: &[u8], lane: u16, iif: usize, oif: u8) -> Passage {
        self.hooks
            .pass_forward_only::<OIF>(&self.q, frame, lane, (iif, oif))
    }
}
