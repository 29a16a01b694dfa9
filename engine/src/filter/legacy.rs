//! Legacy iptables (x_tables) rules: the kernel runs them at the same
//! hooks as nf_tables, and the engine cannot read them into its filter, so
//! a hook with any is left to the kernel.
//!
//! Tables are listed in `/proc/thread-self/net/ip_tables_names`; each is read with
//! `IPT_SO_GET_INFO` and `IPT_SO_GET_ENTRIES`. A built-in chain with no
//! rule and an ACCEPT policy changes nothing (iptables-legacy creates a
//! table with those as soon as it lists it); anything else does.

use super::Hook;
use std::io;

const IPT_SO_GET_INFO: i32 = 64;
const IPT_SO_GET_ENTRIES: i32 = 65;
/// `sizeof(struct ipt_getinfo)`
const INFO_LEN: usize = 84;
/// Offset of `entrytable` in `struct ipt_get_entries`.
const ENTRIES_AT: usize = 40;
/// `offsetof(struct ipt_entry, target_offset)`
const TARGET_OFFSET_AT: usize = 88;
/// `sizeof(struct xt_entry_target)`: the verdict of a standard target follows.
const TARGET_HEADER: usize = 32;
/// `-NF_ACCEPT - 1`: the standard target's ACCEPT.
const ACCEPT: i32 = -2;

/// Hooks with legacy iptables rules (or a policy other than ACCEPT), and
/// what is there, one line per table and hook.
pub fn hooks() -> (u32, Vec<String>) {
    let Ok(names) = std::fs::read_to_string("/proc/thread-self/net/ip_tables_names") else {
        return (0, Vec::new());
    };
    let mut bits = 0;
    let mut why = Vec::new();
    for name in names.split_whitespace() {
        match table(name) {
            Ok(hooks) => {
                for (h, what) in hooks {
                    bits |= h.bit();
                    why.push(format!(
                        "{}: legacy iptables table {name}: {what}",
                        h.name()
                    ));
                }
            }
            Err(e) => {
                // Unreadable: assume the worst for every hook.
                bits |= super::FORWARDED | super::DELIVERED | super::ORIGINATED;
                why.push(format!(
                    "all hooks: legacy iptables table {name} could not be read ({e})"
                ));
            }
        }
    }
    (bits, why)
}

fn getsockopt(fd: i32, opt: i32, buf: &mut [u8]) -> io::Result<()> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: buf is valid for len bytes.
    let r = unsafe { libc::getsockopt(fd, libc::SOL_IP, opt, buf.as_mut_ptr().cast(), &mut len) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The hooks of one table that do something, and what.
fn table(name: &str) -> io::Result<Vec<(Hook, String)>> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: plain socket(2); the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut info = [0u8; INFO_LEN];
    for (d, s) in info.iter_mut().zip(name.bytes().take(31)) {
        *d = s;
    }
    getsockopt(fd.as_raw_fd(), IPT_SO_GET_INFO, &mut info)?;
    let valid = u32_at(&info, 32);
    let hook_entry = |h: usize| u32_at(&info, 36 + 4 * h) as usize;
    let underflow = |h: usize| u32_at(&info, 56 + 4 * h) as usize;
    let size = u32_at(&info, 80) as usize;
    let mut buf = vec![0u8; ENTRIES_AT + size];
    buf[..32].copy_from_slice(&info[..32]);
    buf[32..36].copy_from_slice(&(size as u32).to_ne_bytes());
    getsockopt(fd.as_raw_fd(), IPT_SO_GET_ENTRIES, &mut buf)?;
    let entries = &buf[ENTRIES_AT..];
    let mut out = Vec::new();
    for (h, hook) in Hook::ALL.iter().enumerate() {
        if valid & (1 << h) == 0 {
            continue;
        }
        if hook_entry(h) != underflow(h) {
            out.push((*hook, "rules".to_string()));
            continue;
        }
        // The policy: the standard target of the underflow entry.
        let at = underflow(h);
        let verdict = entries
            .get(at + TARGET_OFFSET_AT..at + TARGET_OFFSET_AT + 2)
            .map(|b| u16::from_ne_bytes([b[0], b[1]]) as usize)
            .and_then(|t| entries.get(at + t + TARGET_HEADER..at + t + TARGET_HEADER + 4))
            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
        if verdict != Some(ACCEPT) {
            out.push((*hook, "policy DROP".to_string()));
        }
    }
    Ok(out)
}
