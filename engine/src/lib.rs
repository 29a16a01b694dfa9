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

// What an embedding program uses: the engine, its sockets, its report and
// the types of its builder. The modules marked `doc(hidden)` are the
// engine's internals: public only for the `xdpip` binary, the benches and
// the integration tests, not an API, and they change without notice.
#[doc(hidden)]
pub mod busypoll;
mod capability;
#[doc(hidden)]
pub mod control;
#[doc(hidden)]
pub mod ebpf;
mod engine;
#[doc(hidden)]
pub mod fib;
#[doc(hidden)]
pub mod filter;
#[doc(hidden)]
pub mod forward;
#[doc(hidden)]
pub mod iface;
#[doc(hidden)]
pub mod neigh;
#[doc(hidden)]
pub mod netdev;
#[doc(hidden)]
pub mod placement;
#[doc(hidden)]
pub mod reasm;
mod report;
#[doc(hidden)]
pub mod snapshot;
pub mod socket;
#[doc(hidden)]
pub mod stats;
#[cfg(test)]
mod testutil;
#[doc(hidden)]
pub mod veth;
pub mod wire;
#[doc(hidden)]
pub mod worker;
#[doc(hidden)]
pub mod xsk;

pub use control::sysctl::SysctlError;
pub use ebpf::{GateMode, XdpMode, XdpModeRequest};
pub use engine::{Engine, EngineBuilder, EngineInfo, Error, WorkerInfo};
pub use filter::Ruleset as FilterRuleset;
pub use report::{
    ControlReport, FilterReport, FilterRuleReport, ModeReport, PortInfo, Report, SocketReport,
    WorkerReport,
};
pub use snapshot::Sysctl;
pub use socket::{RawSocket, UdpSocket};
pub use xsk::{BindMode, ZeroCopy};
