//! Arbitrary fragment sequences and clock steps through the reassembler;
//! `check::run` panics when an invariant breaks (memory above the
//! threshold, a datagram that is not the one sent, counters that do not
//! add up).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = xdpip::reasm::check::run(data);
});
