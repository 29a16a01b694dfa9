//! IPv4 options (RFC 791), processed as Linux processes them when it
//! forwards: `ip_options_compile()` on input, `ip_forward_options()` on
//! output, `ip_options_fragment()` when fragmenting.
//!
//! Every function works in place on the options bytes of a header, so the
//! engine leaves on the wire what the kernel would.

use std::net::Ipv4Addr;

/// End of option list.
pub const EOL: u8 = 0;
/// No operation.
pub const NOP: u8 = 1;
/// Record route.
pub const RR: u8 = 7;
/// Internet timestamp.
pub const TS: u8 = 68;
/// Loose source and record route.
pub const LSRR: u8 = 131;
/// Strict source and record route.
pub const SSRR: u8 = 137;
/// Router alert.
pub const RA: u8 = 148;
/// Commercial IP security option (CIPSO, FIPS 188 draft).
pub const CIPSO: u8 = 134;

const TS_TSONLY: u8 = 0;
const TS_TSANDADDR: u8 = 1;
const TS_PRESPEC: u8 = 3;

/// True when the option is copied into every fragment (the copied flag).
pub fn copied(kind: u8) -> bool {
    kind & 0x80 != 0
}

/// What the options of a packet ask of a router, with offsets from the
/// start of the IP header (as Linux's `struct ip_options` keeps them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// A source route option, and whether it is strict.
    pub srr: Option<(usize, bool)>,
    /// The record route option.
    pub rr: Option<usize>,
    /// The router must write its address into the record route option.
    pub rr_needaddr: bool,
    /// The timestamp option.
    pub ts: Option<usize>,
    /// The timestamp option had room for an address (Linux 6.x leaves the
    /// input address there when forwarding; an ICMP error echoes it).
    pub ts_needaddr: bool,
    /// The timestamp option had room for a time.
    pub ts_needtime: bool,
    /// A router alert option with value 0.
    pub router_alert: Option<usize>,
    /// The CIPSO option (echoed in an ICMP error).
    pub cipso: Option<usize>,
}

/// Options that `compile` refuses: where, and what was compiled up to
/// there (Linux echoes that much in its parameter problem).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed {
    /// Offset in the header of the offending byte: the pointer of the
    /// ICMP parameter problem.
    pub pointer: u8,
    /// The options compiled before the fault, including the faulty one
    /// where Linux records it first (CIPSO).
    pub options: Options,
}

/// True when `inet_addr_type()` would not call `a` unicast: the router's
/// own and broadcast addresses (`is_local`, the local table), its loopback
/// network, 0.0.0.0 (not the rest of 0/8 since the unicast extensions),
/// multicast and the limited broadcast. A pre-specified timestamp slot
/// naming such an address gets this router's time.
fn not_unicast(a: Ipv4Addr, is_local: &impl Fn(Ipv4Addr) -> bool) -> bool {
    a.is_unspecified()
        || a.octets()[0] == 127
        || a.is_multicast()
        || a.is_broadcast()
        || is_local(a)
}

/// `cipso_v4_validate()` with no CIPSO domain of interpretation (DOI)
/// configured, which is how Linux starts: the engine does not mirror
/// NetLabel's DOI table, so every DOI is unknown. The offset of the
/// offending byte within the option.
fn cipso_fault(opt: &[u8]) -> usize {
    if opt[1] < 8 {
        1 // too short for the DOI and a tag
    } else {
        2 // the DOI
    }
}

/// Parses and updates the options of a received header (`header` is the
/// whole IP header, options included), as `__ip_options_compile()` does for
/// an skb: record route and timestamp pointers advance, timestamps are
/// written (`now_ms`: milliseconds since midnight UTC), the timestamp
/// overflow counter counts. `is_local` tells whether an address is one of
/// the router's (for pre-specified timestamps); `spec_dst` is the address
/// written at input (Linux overwrites it on output).
///
/// Returns the offset in the header of the offending byte when the options
/// are malformed (the pointer of an ICMP parameter problem), with what was
/// compiled up to there. A CIPSO option is refused as Linux refuses it
/// without a configured DOI.
///
/// ```
/// use xdpip::wire::ipopt::{compile, RR};
/// use std::net::Ipv4Addr;
/// // A 20-byte header followed by an empty record route option with room
/// // for two addresses, and a NOP to pad to 32 bits.
/// let mut h = vec![0u8; 20];
/// h.extend_from_slice(&[RR, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
/// let o = compile(&mut h, Ipv4Addr::new(10, 0, 0, 1), 0, |_| false).unwrap();
/// assert_eq!(o.rr, Some(20));
/// assert!(o.rr_needaddr);
/// assert_eq!(h[22], 8); // the pointer moved past the first slot
/// ```
pub fn compile(
    header: &mut [u8],
    spec_dst: Ipv4Addr,
    now_ms: u32,
    is_local: impl Fn(Ipv4Addr) -> bool,
) -> Result<Options, Malformed> {
    let mut o = Options::default();
    match compile_into(&mut o, header, spec_dst, now_ms, is_local) {
        Ok(()) => Ok(o),
        Err(pointer) => Err(Malformed {
            pointer: pointer as u8,
            options: o,
        }),
    }
}

fn compile_into(
    o: &mut Options,
    header: &mut [u8],
    spec_dst: Ipv4Addr,
    now_ms: u32,
    is_local: impl Fn(Ipv4Addr) -> bool,
) -> Result<(), usize> {
    let end = header.len();
    let mut i = 20;
    while i < end {
        match header[i] {
            EOL => {
                // Linux pads everything after EOL with EOL.
                for b in &mut header[i + 1..end] {
                    *b = EOL;
                }
                break;
            }
            NOP => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let left = end - i;
        if left < 2 {
            return Err(i);
        }
        let optlen = header[i + 1] as usize;
        if optlen < 2 || optlen > left {
            return Err(i);
        }
        let opt = &mut header[i..i + optlen];
        match opt[0] {
            LSRR | SSRR => {
                if optlen < 3 {
                    return Err(i + 1);
                }
                if opt[2] < 4 {
                    return Err(i + 2);
                }
                if o.srr.is_some() {
                    return Err(i);
                }
                o.srr = Some((i, opt[0] == SSRR));
            }
            RR => {
                if o.rr.is_some() {
                    return Err(i);
                }
                if optlen < 3 {
                    return Err(i + 1);
                }
                if opt[2] < 4 {
                    return Err(i + 2);
                }
                let ptr = opt[2] as usize;
                if ptr <= optlen {
                    if ptr + 3 > optlen {
                        return Err(i + 2);
                    }
                    opt[ptr - 1..ptr + 3].copy_from_slice(&spec_dst.octets());
                    opt[2] += 4;
                    o.rr_needaddr = true;
                }
                o.rr = Some(i);
            }
            TS => {
                if o.ts.is_some() {
                    return Err(i);
                }
                if optlen < 4 {
                    return Err(i + 1);
                }
                if opt[2] < 5 {
                    return Err(i + 2);
                }
                let ptr = opt[2] as usize;
                if ptr <= optlen {
                    if ptr + 3 > optlen {
                        return Err(i + 2);
                    }
                    let mut time_at = None;
                    match opt[3] & 0x0f {
                        TS_TSONLY => {
                            time_at = Some(ptr - 1);
                            o.ts_needtime = true;
                            opt[2] += 4;
                        }
                        TS_TSANDADDR => {
                            if ptr + 7 > optlen {
                                return Err(i + 2);
                            }
                            opt[ptr - 1..ptr + 3].copy_from_slice(&spec_dst.octets());
                            time_at = Some(ptr + 3);
                            o.ts_needaddr = true;
                            o.ts_needtime = true;
                            opt[2] += 8;
                        }
                        TS_PRESPEC => {
                            if ptr + 7 > optlen {
                                return Err(i + 2);
                            }
                            let a =
                                Ipv4Addr::new(opt[ptr - 1], opt[ptr], opt[ptr + 1], opt[ptr + 2]);
                            if not_unicast(a, &is_local) {
                                time_at = Some(ptr + 3);
                                o.ts_needtime = true;
                                opt[2] += 8;
                            }
                        }
                        // Other flags are left alone on input.
                        _ => {}
                    }
                    if let Some(t) = time_at {
                        opt[t..t + 4].copy_from_slice(&now_ms.to_be_bytes());
                    }
                } else if opt[3] & 0x0f != TS_PRESPEC {
                    let overflow = opt[3] >> 4;
                    if overflow == 15 {
                        return Err(i + 3);
                    }
                    opt[3] = (opt[3] & 0x0f) | ((overflow + 1) << 4);
                }
                o.ts = Some(i);
            }
            RA => {
                if optlen < 4 {
                    return Err(i + 1);
                }
                if opt[2] == 0 && opt[3] == 0 {
                    o.router_alert = Some(i);
                }
            }
            CIPSO => {
                if o.cipso.is_some() {
                    return Err(i);
                }
                // Recorded before it is validated: the error echoes it.
                o.cipso = Some(i);
                return Err(i + cipso_fault(opt));
            }
            // Security, stream id and unknown options are carried as they
            // are on input.
            _ => {}
        }
        i += optlen;
    }
    Ok(())
}

/// Writes the egress address into a record route option, as
/// `ip_forward_options()` does after the TTL decrement. (A timestamp
/// option keeps the address written on input: that is what Linux 6.x puts
/// on the wire.) The caller recomputes the header checksum.
pub fn forward(header: &mut [u8], o: &Options, egress_src: Ipv4Addr) {
    if let (true, Some(rr)) = (o.rr_needaddr, o.rr) {
        let ptr = header[rr + 2] as usize;
        header[rr + ptr - 5..rr + ptr - 1].copy_from_slice(&egress_src.octets());
    }
}

/// The options of an ICMP error about a packet that carried options, as
/// `__ip_options_echo()` builds them from the received (compiled) options
/// and `ip_options_build()` completes them: record route and timestamp are
/// echoed, with the error's own address and time added where they have
/// room, then CIPSO as it came. Other options are not echoed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echo {
    bytes: [u8; 40],
    len: usize,
    rr: Option<usize>,
    ts: Option<usize>,
    ts_needaddr: bool,
    ts_needtime: bool,
}

impl Echo {
    /// Builds the echo of `o` from `header` (the received header with its
    /// options compiled). `None` when Linux refuses (and then sends no
    /// error at all).
    pub fn new(header: &[u8], o: &Options, is_local: impl Fn(Ipv4Addr) -> bool) -> Option<Echo> {
        let mut e = Echo {
            bytes: [EOL; 40],
            len: 0,
            rr: None,
            ts: None,
            ts_needaddr: false,
            ts_needtime: false,
        };
        if let Some(rr) = o.rr {
            let optlen = header[rr + 1] as usize;
            let soffset = header[rr + 2] as usize;
            let at = e.len;
            e.bytes[at..at + optlen].copy_from_slice(&header[rr..rr + optlen]);
            if o.rr_needaddr && soffset <= optlen {
                if soffset + 3 > optlen {
                    return None;
                }
                e.bytes[at + 2] = (soffset + 4) as u8;
                e.rr = Some(at);
            }
            e.len += optlen;
        }
        if let Some(ts) = o.ts {
            let optlen = header[ts + 1] as usize;
            let mut soffset = header[ts + 2] as usize;
            let at = e.len;
            e.bytes[at..at + optlen].copy_from_slice(&header[ts..ts + optlen]);
            if soffset <= optlen {
                if o.ts_needaddr {
                    if soffset + 3 > optlen {
                        return None;
                    }
                    e.ts_needaddr = true;
                    soffset += 4;
                }
                if o.ts_needtime {
                    if soffset + 3 > optlen {
                        return None;
                    }
                    if e.bytes[at + 3] & 0x0f != TS_PRESPEC {
                        e.ts_needtime = true;
                        soffset += 4;
                    } else if soffset + 7 <= optlen {
                        let p = at + soffset - 1;
                        let a = Ipv4Addr::new(
                            e.bytes[p],
                            e.bytes[p + 1],
                            e.bytes[p + 2],
                            e.bytes[p + 3],
                        );
                        if not_unicast(a, &is_local) {
                            e.ts_needtime = true;
                            soffset += 8;
                        }
                    }
                }
                e.bytes[at + 2] = soffset as u8;
                e.ts = Some(at);
            }
            e.len += optlen;
        }
        // (A source route is never echoed: packets carrying one are
        // dropped before an error is sent.)
        if let Some(c) = o.cipso {
            let optlen = header[c + 1] as usize;
            e.bytes[e.len..e.len + optlen].copy_from_slice(&header[c..c + optlen]);
            e.len += optlen;
        }
        e.len = (e.len + 3) & !3;
        Some(e)
    }

    /// Length in bytes (a multiple of 4).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is echoed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes the options into `out`, with the error's source address and
    /// time where the echo asks for them.
    pub fn write(&self, out: &mut [u8], saddr: Ipv4Addr, now_ms: u32) {
        let out = &mut out[..self.len];
        out.copy_from_slice(&self.bytes[..self.len]);
        let a = saddr.octets();
        if let Some(rr) = self.rr {
            let ptr = out[rr + 2] as usize;
            out[rr + ptr - 5..rr + ptr - 1].copy_from_slice(&a);
        }
        if let Some(ts) = self.ts {
            let ptr = out[ts + 2] as usize;
            if self.ts_needaddr {
                out[ts + ptr - 9..ts + ptr - 5].copy_from_slice(&a);
            }
            if self.ts_needtime {
                out[ts + ptr - 5..ts + ptr - 1].copy_from_slice(&now_ms.to_be_bytes());
            }
        }
    }
}

/// Replaces the options that are not copied into later fragments with
/// NOPs, keeping the header length, as `ip_options_fragment()` does.
pub fn strip_for_fragments(header: &mut [u8]) {
    let end = header.len();
    let mut i = 20;
    while i < end {
        match header[i] {
            EOL => return,
            NOP => {
                i += 1;
                continue;
            }
            _ => {}
        }
        if end - i < 2 {
            return;
        }
        let optlen = header[i + 1] as usize;
        if optlen < 2 || optlen > end - i {
            return;
        }
        if !copied(header[i]) {
            for b in &mut header[i..i + optlen] {
                *b = NOP;
            }
        }
        i += optlen;
    }
}

/// Milliseconds since midnight UTC, the value of an IP timestamp.
pub fn timestamp_now() -> u32 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    ((d.as_secs() % 86_400) * 1000 + d.subsec_millis() as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const OUT: Ipv4Addr = Ipv4Addr::new(10, 9, 9, 9);

    fn pointer(r: Result<Options, Malformed>) -> Result<Options, u8> {
        r.map_err(|e| e.pointer)
    }

    fn hdr(opts: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; 20];
        h.extend_from_slice(opts);
        h
    }

    #[test]
    fn record_route_fills_one_slot_per_hop_then_stops() {
        let mut h = hdr(&[RR, 7, 4, 0, 0, 0, 0, EOL]);
        let o = compile(&mut h, ME, 0, |_| false).unwrap();
        forward(&mut h, &o, OUT);
        assert_eq!(&h[20..28], &[RR, 7, 8, 10, 9, 9, 9, EOL]);
        // Full: nothing changes, not an error.
        let o = compile(&mut h, ME, 0, |_| false).unwrap();
        assert!(!o.rr_needaddr);
        assert_eq!(&h[20..28], &[RR, 7, 8, 10, 9, 9, 9, EOL]);
    }

    #[test]
    fn timestamps() {
        let mut h = hdr(&[TS, 8, 5, TS_TSONLY, 0, 0, 0, 0]);
        compile(&mut h, ME, 0x01020304, |_| false).unwrap();
        assert_eq!(&h[20..28], &[TS, 8, 9, 0, 1, 2, 3, 4]);
        // Full: the overflow counter counts, up to 15.
        compile(&mut h, ME, 7, |_| false).unwrap();
        assert_eq!(h[23], 0x10);
        h[23] = 0xf0;
        assert_eq!(pointer(compile(&mut h, ME, 7, |_| false)), Err(23));

        let mut h = hdr(&[TS, 12, 5, TS_TSANDADDR, 0, 0, 0, 0, 0, 0, 0, 0]);
        let o = compile(&mut h, ME, 0x0a0b0c0d, |_| false).unwrap();
        forward(&mut h, &o, OUT);
        // The input address stays, as Linux 6.x leaves it.
        assert_eq!(&h[20..32], &[TS, 12, 13, 1, 10, 0, 0, 1, 10, 11, 12, 13]);

        let mut h = hdr(&[TS, 12, 5, TS_PRESPEC, 10, 0, 0, 1, 0, 0, 0, 0]);
        compile(&mut h, ME, 0x0a0b0c0d, |a| a == ME).unwrap();
        assert_eq!(&h[28..32], &[10, 11, 12, 13]);
        let mut h = hdr(&[TS, 12, 5, TS_PRESPEC, 10, 0, 0, 2, 0, 0, 0, 0]);
        compile(&mut h, ME, 0x0a0b0c0d, |a| a == ME).unwrap();
        assert_eq!(h[22], 5, "not ours: untouched");
    }

    #[test]
    fn malformed_options_point_at_the_fault() {
        for (opts, ptr) in [
            (vec![RR, 1, 0, 0], 20u8),           // length below 2
            (vec![RR, 9, 4, 0], 20),             // length beyond the header
            (vec![RR, 2, 0, 0], 21),             // too short for a pointer
            (vec![RR, 4, 3, 0], 22),             // pointer below 4
            (vec![RR, 4, 4, 0], 22),             // pointer leaves no room
            (vec![TS, 3, 5, 0], 21),             // too short
            (vec![TS, 8, 4, 0, 0, 0, 0, 0], 22), // pointer below 5
            (vec![LSRR, 3, 2, 0], 22),           // pointer below 4
            (vec![RA, 3, 0, 0], 21),             // too short
            (vec![NOP, NOP, NOP, 0x44], 23),     // a lone kind byte at the end
        ] {
            let mut h = hdr(&opts);
            assert_eq!(
                pointer(compile(&mut h, ME, 0, |_| false)),
                Err(ptr),
                "{opts:?}"
            );
        }
        let mut h = hdr(&[RR, 3, 4, RR, 3, 4, NOP, NOP]);
        assert_eq!(
            pointer(compile(&mut h, ME, 0, |_| false)),
            Err(23),
            "two RR"
        );
    }

    #[test]
    fn prespecified_timestamps_for_addresses_that_are_not_unicast() {
        // inet_addr_type() is not RTN_UNICAST for these: the time is
        // written and the pointer moves past the slot.
        for a in [
            [0, 0, 0, 0],
            [255; 4],
            [224, 0, 0, 1],
            [127, 0, 0, 5],
            [10, 0, 0, 1],
        ] {
            let mut h = hdr(&[TS, 12, 5, TS_PRESPEC, a[0], a[1], a[2], a[3], 0, 0, 0, 0]);
            let o = compile(&mut h, ME, 0x0a0b0c0d, |x| x == ME).unwrap();
            assert!(o.ts_needtime, "{a:?}");
            assert_eq!(h[22], 13, "{a:?}");
            assert_eq!(&h[28..32], &[10, 11, 12, 13], "{a:?}");
        }
        // Unicast, not ours: untouched (0.9.9.9 too, since the unicast
        // extensions).
        for a in [[0, 9, 9, 9], [10, 0, 0, 2]] {
            let mut h = hdr(&[TS, 12, 5, TS_PRESPEC, a[0], a[1], a[2], a[3], 0, 0, 0, 0]);
            let o = compile(&mut h, ME, 0x0a0b0c0d, |x| x == ME).unwrap();
            assert!(!o.ts_needtime, "{a:?}");
            assert_eq!(h[22], 5, "{a:?}");
        }
    }

    #[test]
    fn cipso_without_a_configured_doi_is_refused_and_echoed() {
        // Below 8 bytes: the length byte; otherwise the DOI.
        let mut h = hdr(&[CIPSO, 6, 0, 0, 0, 1, NOP, EOL]);
        let e = compile(&mut h, ME, 0, |_| false).unwrap_err();
        assert_eq!((e.pointer, e.options.cipso), (21, Some(20)));
        let mut h = hdr(&[NOP, NOP, NOP, NOP, CIPSO, 8, 0, 0, 0, 5, 1, 2]);
        let e = compile(&mut h, ME, 0, |_| false).unwrap_err();
        assert_eq!(e.pointer, 26);
        // The parameter problem echoes the option, padded with EOL.
        let mut h = hdr(&[RR, 7, 4, 0, 0, 0, 0, NOP, CIPSO, 6, 0, 0, 0, 1, NOP, EOL]);
        let e = compile(&mut h, ME, 0, |_| false).unwrap_err();
        assert_eq!(e.pointer, 29);
        let echo = Echo::new(&h, &e.options, |_| false).unwrap();
        let mut out = [0u8; 16];
        echo.write(&mut out, OUT, 0);
        assert_eq!(echo.len(), 16);
        assert_eq!(
            out,
            [RR, 7, 8, 10, 0, 0, 1, CIPSO, 6, 0, 0, 0, 1, EOL, EOL, EOL]
        );
    }

    #[test]
    fn echo_of_a_prespecified_timestamp_adds_the_time_for_our_address_only() {
        // The first slot is ours (time written on input); the echo adds a
        // time to the second slot only when that address is not unicast.
        let ts = |second: [u8; 4]| {
            let mut h = hdr(&[
                TS, 20, 5, TS_PRESPEC, 10, 0, 0, 1, 0, 0, 0, 0, second[0], second[1], second[2],
                second[3], 0, 0, 0, 0,
            ]);
            let o = compile(&mut h, ME, 1, |x| x == ME).unwrap();
            let e = Echo::new(&h, &o, |x| x == ME).unwrap();
            let mut out = [0u8; 20];
            e.write(&mut out, OUT, 7);
            (out[2], out[16..20].to_vec())
        };
        assert_eq!(ts([10, 0, 0, 1]), (21, vec![0, 0, 0, 7]));
        assert_eq!(ts([224, 0, 0, 1]), (21, vec![0, 0, 0, 7]));
        assert_eq!(ts([10, 9, 9, 9]), (13, vec![0, 0, 0, 0]));
    }

    #[test]
    fn source_route_and_router_alert_are_recognised() {
        let mut h = hdr(&[LSRR, 7, 4, 10, 2, 0, 2, NOP, RA, 4, 0, 0]);
        let o = compile(&mut h, ME, 0, |_| false).unwrap();
        assert_eq!(o.srr, Some((20, false)));
        assert_eq!(o.router_alert, Some(28));
    }

    #[test]
    fn echo_adds_the_error_source_where_there_is_room() {
        let mut h = hdr(&[RR, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, EOL]);
        let o = compile(&mut h, ME, 0, |_| false).unwrap();
        let e = Echo::new(&h, &o, |_| false).unwrap();
        assert_eq!(e.len(), 12);
        let mut out = [0u8; 12];
        e.write(&mut out, OUT, 0);
        assert_eq!(out, [RR, 11, 12, 10, 0, 0, 1, 10, 9, 9, 9, EOL]);
        // Full: echoed as received.
        let mut h = hdr(&[RR, 7, 4, 0, 0, 0, 0, EOL]);
        let o = compile(&mut h, ME, 0, |_| false).unwrap();
        let e = Echo::new(&h, &o, |_| false).unwrap();
        let mut out = [0u8; 8];
        e.write(&mut out, OUT, 0);
        assert_eq!(out, [RR, 7, 8, 10, 0, 0, 1, EOL]);
        // No RR or TS: nothing echoed.
        let mut h = hdr(&[RA, 4, 0, 0]);
        let o = compile(&mut h, ME, 0, |_| false).unwrap();
        assert!(Echo::new(&h, &o, |_| false).unwrap().is_empty());
    }

    #[test]
    fn eol_pads_and_fragments_keep_only_copied_options() {
        let mut h = hdr(&[NOP, EOL, 7, 7]);
        compile(&mut h, ME, 0, |_| false).unwrap();
        assert_eq!(&h[20..], &[NOP, EOL, EOL, EOL]);
        let mut h = hdr(&[RR, 7, 4, 0, 0, 0, 0, NOP, LSRR, 7, 4, 1, 2, 3, 4, EOL]);
        strip_for_fragments(&mut h);
        assert_eq!(
            &h[20..],
            &[NOP, NOP, NOP, NOP, NOP, NOP, NOP, NOP, LSRR, 7, 4, 1, 2, 3, 4, EOL]
        );
    }
}
