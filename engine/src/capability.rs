//! The capabilities the engine needs, checked before anything is touched so
//! that a missing one is named instead of surfacing as a bare `EPERM`.

use std::fmt;

/// A Linux capability the engine may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// CAP_NET_ADMIN: attach XDP programs, read and change links.
    NetAdmin = 12,
    /// CAP_NET_RAW: create AF_XDP sockets.
    NetRaw = 13,
    /// CAP_IPC_LOCK: pin UMEM pages beyond RLIMIT_MEMLOCK.
    IpcLock = 14,
    /// CAP_SYS_ADMIN: look up BPF programs and links by id (to name another
    /// tool's XDP program); also stands in for CAP_BPF on kernels before 5.8.
    SysAdmin = 21,
    /// CAP_BPF: load BPF programs and create maps (Linux 5.8+).
    Bpf = 39,
}

impl Capability {
    /// The name as capabilities(7) spells it.
    pub fn name(self) -> &'static str {
        match self {
            Capability::NetAdmin => "CAP_NET_ADMIN",
            Capability::NetRaw => "CAP_NET_RAW",
            Capability::IpcLock => "CAP_IPC_LOCK",
            Capability::SysAdmin => "CAP_SYS_ADMIN",
            Capability::Bpf => "CAP_BPF",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The effective capability set of this process, from /proc/self/status.
pub fn effective() -> std::io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or_else(|| std::io::Error::other("no CapEff line in /proc/self/status"))
}

/// Which of the capabilities the engine needs are missing from `eff`.
///
/// CAP_BPF is satisfied by CAP_SYS_ADMIN; CAP_IPC_LOCK is not needed when
/// RLIMIT_MEMLOCK is unlimited.
///
pub fn missing(eff: u64, memlock_unlimited: bool) -> Vec<Capability> {
    let has = |c: Capability| eff & (1u64 << c as u64) != 0;
    let mut out = Vec::new();
    for c in [Capability::NetAdmin, Capability::NetRaw] {
        if !has(c) {
            out.push(c);
        }
    }
    if !has(Capability::Bpf) && !has(Capability::SysAdmin) {
        out.push(Capability::Bpf);
    }
    if !memlock_unlimited && !has(Capability::IpcLock) {
        out.push(Capability::IpcLock);
    }
    out
}

/// True when RLIMIT_MEMLOCK is unlimited for this process.
pub fn memlock_unlimited() -> bool {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into r.
    unsafe {
        libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) == 0 && r.rlim_cur == libc::RLIM_INFINITY
    }
}

/// The capabilities this process lacks, or an empty list.
pub fn check() -> std::io::Result<Vec<Capability>> {
    Ok(missing(effective()?, memlock_unlimited()))
}

#[cfg(test)]
mod missing_tests {
    use super::*;

    #[test]
    fn missing_names_what_is_absent() {
        assert!(missing(u64::MAX, false).is_empty());
        let no_raw = !(1 << Capability::NetRaw as u64);
        assert_eq!(missing(no_raw, false), vec![Capability::NetRaw]);
    }
}
