//! Wire formats: views over packet bytes that validate before they read.
//!
//! Modelled on smoltcp's `wire`: each format has a private `field` module of
//! byte ranges, a `Packet<T: AsRef<[u8]>>` (or `Frame`) view whose
//! `new_checked` refuses what its accessors could not read, getters on
//! `AsRef`, setters on `AsMut`, and errors that name the reason.

pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod ipopt;
pub mod ipv4;
pub mod l4csum;
pub mod udp;

pub use ethernet::MacAddr;
