//! Where the work of a veth topology runs.
//!
//! A veth hands a frame to its peer by queuing it and scheduling the peer's
//! NAPI on the *sending* CPU: by default the receiver's whole path (the
//! router under test, then the sink) runs inline on the generator's core.
//! `compare` makes the receive path of dut's `eth0` and of sink's `eth0` run
//! in threaded NAPI (a kernel thread per interface, `napi/eth0-<id>`) and
//! pins those threads, so that every router under test gets the same core,
//! all of its work included, and the generator and sink get the other.
//! Threaded NAPI on a veth needs NAPI, which GRO gives it (`ethtool -K gro
//! on`); it then lives as long as the interface, across XDP attach and
//! detach.

use std::collections::BTreeSet;
use std::io;
use testbed::Netns;

/// The NAPI thread ids (`napi/*`) there are now.
fn napi_threads() -> BTreeSet<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return BTreeSet::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.starts_with("napi/"))
        })
        .collect()
}

/// Pins a thread or process to one core.
pub fn pin_pid(pid: i32, core: usize) -> io::Result<()> {
    if core >= 1024 {
        return Err(io::Error::other(format!("core {core} out of range")));
    }
    // SAFETY: plain old data; zero is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: cpu_set_t holds 1024 CPUs and core < 1024.
    unsafe { libc::CPU_SET(core, &mut set) };
    // SAFETY: set is valid for its size.
    let r = unsafe { libc::sched_setaffinity(pid, std::mem::size_of_val(&set), &set) };
    if r != 0 {
        return Err(io::Error::other(format!(
            "pinning thread {pid} to core {core}: {}",
            io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Puts a thread (0: the calling one) in SCHED_FIFO at `priority`, ahead
/// of every normal thread of its core, as softirq processing is.
pub fn set_fifo(pid: i32, priority: i32) -> io::Result<()> {
    let p = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: p is a valid sched_param.
    if unsafe { libc::sched_setscheduler(pid, libc::SCHED_FIFO, &p) } != 0 {
        return Err(io::Error::other(format!(
            "SCHED_FIFO for thread {pid}: {}",
            io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Sets the nice value of a thread (0: the calling one). At -20 a thread
/// gets about 99% of a core against threads of nice 0, without the
/// starvation real-time scheduling risks.
pub fn set_nice(tid: i32, nice: i32) -> io::Result<()> {
    let tid = if tid == 0 {
        // SAFETY: gettid has no preconditions.
        unsafe { libc::gettid() }
    } else {
        tid
    };
    // SAFETY: setpriority takes plain integers.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) } != 0 {
        return Err(io::Error::other(format!(
            "nice {nice} for thread {tid}: {}",
            io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// How a NAPI thread is scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sched {
    /// SCHED_FIFO: ahead of every normal thread.
    Fifo,
    /// SCHED_OTHER at this nice value.
    Nice(i32),
}

/// Turns on GRO and threaded NAPI on `ifname` of `ns`, pins its NAPI
/// thread to `core`, schedules it as `sched` and returns the thread's id.
pub fn threaded_napi(ns: &Netns, ifname: &str, core: usize, sched: Sched) -> io::Result<i32> {
    ns.exec(&["ethtool", "-K", ifname, "gro", "on"])?;
    let before = napi_threads();
    // sysfs shows the namespace of the process that mounted it: write from
    // inside the namespace (ip netns exec mounts its sysfs).
    ns.exec(&[
        "sh",
        "-c",
        &format!("echo 1 > /sys/class/net/{ifname}/threaded"),
    ])
    .map_err(|e| {
        io::Error::other(format!(
            "threaded NAPI on {ifname} (kernel 5.12+ with veth NAPI): {e}"
        ))
    })?;
    let mut new: Vec<i32> = Vec::new();
    for _ in 0..50 {
        new = napi_threads().difference(&before).copied().collect();
        if !new.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    match new.as_slice() {
        [pid] => {
            pin_pid(*pid, core)?;
            match sched {
                Sched::Fifo => set_fifo(*pid, 50)?,
                Sched::Nice(n) => set_nice(*pid, n)?,
            }
            Ok(*pid)
        }
        [] => Err(io::Error::other(format!(
            "no NAPI thread appeared for {ifname} of {}",
            ns.name()
        ))),
        many => Err(io::Error::other(format!(
            "several NAPI threads appeared at once ({many:?}) while setting up {ifname}: another \
             tool is changing interfaces; try again"
        ))),
    }
}

/// Turns threaded NAPI off on `ifname` of `ns`: its NAPI then runs in
/// softirq where veth runs it by default, on the core that sends to it.
pub fn unthreaded_napi(ns: &Netns, ifname: &str) -> io::Result<()> {
    ns.exec(&[
        "sh",
        "-c",
        &format!("echo 0 > /sys/class/net/{ifname}/threaded"),
    ])
    .map_err(|e| io::Error::other(format!("threaded NAPI off on {ifname}: {e}")))?;
    Ok(())
}

/// User + system CPU time of a task, in clock ticks.
pub fn cpu_ticks(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) in parentheses.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after ")".
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second.
pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Busy and total jiffies of each CPU (from /proc/stat).
pub fn cpu_times() -> Vec<(u64, u64)> {
    let Ok(s) = std::fs::read_to_string("/proc/stat") else {
        return Vec::new();
    };
    s.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            (total - idle, total)
        })
        .collect()
}

/// Busy fraction of each CPU between two [`cpu_times`] samples.
pub fn busy_between(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<f64> {
    a.iter()
        .zip(b)
        .map(|((b0, t0), (b1, t1))| {
            let t = t1.saturating_sub(*t0);
            if t == 0 {
                0.0
            } else {
                b1.saturating_sub(*b0) as f64 / t as f64
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_cpu_time_is_readable() {
        let pid = std::process::id() as i32;
        let a = cpu_ticks(pid).expect("/proc/self/stat");
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_add(1);
        }
        assert!(x > 0);
        assert!(cpu_ticks(pid).unwrap() >= a);
        let c = cpu_times();
        assert!(!c.is_empty(), "/proc/stat lists CPUs");
        let busy = busy_between(&c, &cpu_times());
        assert!(busy.iter().all(|b| (0.0..=1.0).contains(b)));
    }
}
