//! # xdpip
//!
//! An AF_XDP IPv4 packet engine. An XDP program (`ebpf/steer.bpf.c`)
//! steers the IPv4 traffic the engine serves into AF_XDP sockets; per-core
//! workers forward it like a Linux router, at user-space speed, while the
//! kernel keeps everything else (ARP, IPv6, management traffic, error
//! cases). The kernel's own tables, mirrored over rtnetlink, are the
//! engine's control plane.
//!
//! ```no_run
//! // Route between eth0 and eth1 of this network namespace.
//! let engine = xdpip::Engine::builder().interface("eth0").interface("eth1").start()?;
//! std::thread::sleep(std::time::Duration::from_secs(10));
//! let report = engine.stop();
//! println!("forwarded {}", report.mib["ForwDatagrams"]);
//! # Ok::<(), xdpip::Error>(())
//! ```
//!
//! The map of the system is `DESIGN.md`; the module names follow it.
#![warn(missing_docs)]

pub mod busypoll;
mod capability;
pub mod control;
pub mod ebpf;
mod engine;
pub mod fib;
pub mod filter;
pub mod forward;
pub mod iface;
pub mod neigh;
pub mod netdev;
pub mod placement;
pub mod reasm;
mod report;
pub mod snapshot;
pub mod socket;
pub mod stats;
#[cfg(test)]
mod testutil;
pub mod veth;
pub mod wire;
pub mod worker;
pub mod xsk;

pub use engine::{Engine, EngineBuilder, EngineInfo, Error, WorkerInfo};
pub use report::{
    ControlReport, FilterReport, FilterRuleReport, ModeReport, PortInfo, Report, SocketReport,
    WorkerReport,
};
