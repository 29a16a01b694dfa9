//! bench's own XDP programs (bench/ebpf/*.bpf.c), compiled by build.rs,
//! embedded, and loaded with aya as engine/src/ebpf.rs loads the engine's.
//!
//! An [`Loaded`] object keeps its programs attached (through BPF links)
//! for as long as it lives; dropping it detaches them, and so does the
//! process dying, however it dies.

use aya::programs::{Xdp, XdpFlags};
use aya::Ebpf;
use std::error::Error;
use std::fmt;

/// `sink_count`, `sink_xsk` and `xdp_pass` (bench/ebpf/sink.bpf.c).
pub static SINK_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sink.bpf.o"));
/// `xdp_fwd`, the in-kernel forwarder (bench/ebpf/xdp_fwd.bpf.c).
pub static FWD_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp_fwd.bpf.o"));
/// `xsk_fwd`, the XDP side of the AF_XDP floor (bench/ebpf/xsk_fwd.bpf.c).
pub static XSK_FWD_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xsk_fwd.bpf.o"));
/// `gen_live`, the live-frames generator (bench/ebpf/gen.bpf.c).
pub static GEN_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gen.bpf.o"));

/// Slots of the sink's `counters` (enum in sink.bpf.c).
pub mod slot {
    /// Frames taken.
    pub const PACKETS: u32 = 0;
    /// Their bytes.
    pub const BYTES: u32 = 1;
    /// sink_xsk: no socket on the queue; dropped.
    pub const NO_SOCKET: u32 = 2;
}

/// `struct sink_config` of sink.bpf.c.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct SinkConfig {
    /// UDP destination port, network order.
    pub port_be: u16,
    /// Padding.
    pub pad: u16,
}

// SAFETY: repr(C), integer fields, no implicit padding.
unsafe impl aya::Pod for SinkConfig {}

/// `struct gen_config` of gen.bpf.c.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct GenConfig {
    /// Headers of flow 0.
    pub hdr: [u8; crate::wire::HDR_LEN],
    /// Source port of flow 0.
    pub sport: u16,
    /// Source address of flow 0, host order.
    pub saddr: u32,
    /// Flows.
    pub flows: u32,
    /// Source addresses.
    pub addrs: u32,
}

// SAFETY: repr(C); 42 bytes + u16 end at 44, so the u32 fields are aligned
// and there is no padding.
unsafe impl aya::Pod for GenConfig {}

/// An error of loading or attaching, naming what was being done.
#[derive(Debug)]
pub struct BpfError(pub String);

impl fmt::Display for BpfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for BpfError {}

/// An error and its sources, joined with ": ".
pub fn chain(e: &dyn Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// How a program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver.
    Native,
    /// Generic (skb) mode: for drivers without XDP; much slower.
    Skb,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Native => "native",
            XdpMode::Skb => "skb",
        })
    }
}

/// A loaded object; its attached programs are detached when it is dropped.
pub struct Loaded {
    /// The aya object (maps can be taken from it).
    pub bpf: Ebpf,
    what: &'static str,
    links: Vec<(String, aya::programs::xdp::XdpLinkId)>,
}

impl fmt::Debug for Loaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loaded").field("what", &self.what).finish()
    }
}

impl Loaded {
    /// Loads `object` (named `what` in errors) and the programs `programs`
    /// into the kernel, unattached.
    pub fn load(object: &[u8], what: &'static str, programs: &[&str]) -> Result<Loaded, BpfError> {
        let mut bpf = Ebpf::load(object).map_err(|e| {
            BpfError(format!(
                "loading the BPF object {what}: {} (root or CAP_BPF + CAP_NET_ADMIN needed; \
                 kernel with BTF)",
                chain(&e)
            ))
        })?;
        for p in programs {
            let prog: &mut Xdp = bpf
                .program_mut(p)
                .ok_or_else(|| BpfError(format!("{what} has no program {p}")))?
                .try_into()
                .map_err(|e| BpfError(format!("{what}: {p}: {}", chain(&e))))?;
            prog.load().map_err(|e| {
                BpfError(format!(
                    "loading XDP program {p} of {what} (verifier): {}",
                    chain(&e)
                ))
            })?;
        }
        Ok(Loaded {
            bpf,
            what,
            links: Vec::new(),
        })
    }

    /// The loaded program `name`.
    pub fn program(&mut self, name: &str) -> Result<&mut Xdp, BpfError> {
        let what = self.what;
        self.bpf
            .program_mut(name)
            .ok_or_else(|| BpfError(format!("{what} has no program {name}")))?
            .try_into()
            .map_err(|e| BpfError(format!("{what}: {name}: {}", chain(&e))))
    }

    /// Attaches program `name` to interface `ifname`, index `ifindex` in
    /// the calling thread's network namespace (the kernel reads the index
    /// there), in native mode, or in skb mode when `native_only` is false
    /// and the driver has no native XDP.
    pub fn attach(
        &mut self,
        name: &str,
        ifname: &str,
        ifindex: u32,
        native_only: bool,
    ) -> Result<XdpMode, BpfError> {
        let prog = self.program(name)?;
        let (mode, link) = match prog.attach_to_if_index(ifindex, XdpFlags::DRV_MODE) {
            Ok(link) => (XdpMode::Native, link),
            Err(e) => {
                let text = chain(&e);
                let unsupported = text.contains("Operation not supported")
                    || text.contains("os error 95")
                    || text.contains("Invalid argument");
                if native_only || !unsupported {
                    let busy = text.contains("Device or resource busy") || text.contains("exists");
                    return Err(BpfError(format!(
                        "attaching XDP program {name} to {ifname} in native mode: {text}{}",
                        if busy {
                            format!(
                                "; another XDP program is attached there (`ip link show dev \
                                 {ifname}` shows it): remove it first"
                            )
                        } else {
                            String::new()
                        }
                    )));
                }
                let link = prog
                    .attach_to_if_index(ifindex, XdpFlags::SKB_MODE)
                    .map_err(|e2| {
                        BpfError(format!(
                            "attaching XDP program {name} to {ifname}: native mode: {text}; skb \
                         mode: {}",
                            chain(&e2)
                        ))
                    })?;
                (XdpMode::Skb, link)
            }
        };
        self.links.push((name.to_string(), link));
        Ok(mode)
    }

    /// Detaches every program this object attached.
    pub fn detach_all(&mut self) -> Result<(), BpfError> {
        for (name, link) in std::mem::take(&mut self.links) {
            self.program(&name)?
                .detach(link)
                .map_err(|e| BpfError(format!("detaching {name}: {}", chain(&e))))?;
        }
        Ok(())
    }

    /// Takes map `name` as `T`.
    pub fn take_map<T>(&mut self, name: &str) -> Result<T, BpfError>
    where
        T: TryFrom<aya::maps::Map>,
        <T as TryFrom<aya::maps::Map>>::Error: Error,
    {
        let what = self.what;
        let m = self
            .bpf
            .take_map(name)
            .ok_or_else(|| BpfError(format!("{what} has no map {name}")))?;
        T::try_from(m).map_err(|e| BpfError(format!("{what}: map {name}: {}", chain(&e))))
    }
}
