//! `cargo xtask zerocopy`: the engine on NICs whose drivers do AF_XDP
//! zero-copy, which veth cannot do. A nested QEMU guest under software
//! emulation gets two NICs, virtio-net or igb, on host taps in two network
//! namespaces; inside it `xdpip run --zero-copy on` routes between them.
//! Each driver boots once and runs every check in that boot
//! ([`checks`]); any failed check fails the stage.
//!
//! ```text
//! cargo xtask zerocopy [--driver virtio|igb|both] [--quick] [--runs N] [--no-build]
//! ```
//!
//! `--runs N --quick` boots each driver N times (one guest at a time) and
//! counts the runs that failed: the transmit-stall loop of issue 14.

mod checks;
mod cpio;
mod setup;
mod vm;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use checks::{Outcome, Suite};
use vm::{Boot, Driver, Vm};

/// An error that ends a check or the stage, with what went wrong.
#[derive(Debug)]
pub struct Fail(pub String);

impl From<std::io::Error> for Fail {
    fn from(e: std::io::Error) -> Self {
        Fail(e.to_string())
    }
}

struct Options {
    drivers: Vec<Driver>,
    suite: Suite,
    runs: u32,
    build: bool,
    /// Where `xdpip` and `examples/udp_echo` are taken from (default: the
    /// release build).
    bins: Option<PathBuf>,
}

const USAGE: &str =
    "usage: cargo xtask zerocopy [--driver virtio|igb|both] [--quick] [--runs N] [--no-build]

  --driver D   the NIC model(s) to test [default: both]
  --quick      only zero-copy binding and forwarding (for loops)
  --runs N     boot each driver N times and count failed runs [default: 1]
  --no-build   use the release binaries already built
  --binaries DIR  take xdpip and examples/udp_echo from DIR, built already
               (cargo xtask test passes the debug build it just tested)";

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        drivers: vec![Driver::Virtio, Driver::Igb],
        suite: Suite::Full,
        runs: 1,
        build: true,
        bins: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--driver" => {
                o.drivers = match it.next().map(String::as_str) {
                    Some("virtio") | Some("virtio-net") => vec![Driver::Virtio],
                    Some("igb") => vec![Driver::Igb],
                    Some("both") => vec![Driver::Virtio, Driver::Igb],
                    other => return Err(format!("--driver {other:?}: virtio, igb or both")),
                }
            }
            "--quick" => o.suite = Suite::Quick,
            "--runs" => {
                o.runs = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or("--runs takes a number above 0")?
            }
            "--no-build" => o.build = false,
            "--binaries" => {
                o.bins = Some(PathBuf::from(
                    it.next().ok_or("--binaries takes a directory")?,
                ));
                o.build = false;
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(o)
}

/// The workspace's target directory (`CARGO_TARGET_DIR` or `target/`).
pub fn target_dir() -> PathBuf {
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(t);
    }
    let root = std::env::var("CARGO_MANIFEST_DIR")
        .map(|d| PathBuf::from(d).join(".."))
        .unwrap_or_else(|_| PathBuf::from("."));
    root.join("target")
}

/// Runs the stage; returns the process exit status.
pub fn main(args: &[String]) -> i32 {
    let o = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("xtask zerocopy: {e}");
            }
            eprintln!("{USAGE}");
            return 2;
        }
    };
    vm::on_signals();
    let t0 = Instant::now();
    match stage(&o) {
        Ok(true) => {
            eprintln!("zerocopy: passed in {:.0} s", t0.elapsed().as_secs_f64());
            0
        }
        Ok(false) => {
            eprintln!("zerocopy: FAILED (in {:.0} s)", t0.elapsed().as_secs_f64());
            1
        }
        Err(Fail(e)) => {
            eprintln!("zerocopy: FAILED: {e}");
            1
        }
    }
}

fn stage(o: &Options) -> Result<bool, Fail> {
    let cache = setup::cache_dir();
    let (tools, kernel) = setup::prepare(&cache)?;
    eprintln!(
        "zerocopy: guest kernel {} ({}) from {}",
        setup::KERNEL_ABI,
        setup::KERNEL_VERSION,
        cache.display()
    );
    let target = target_dir();
    if o.build {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut c = Command::new(cargo);
        // What `demo` and `compare` build too: one release build serves
        // all three.
        c.args(crate::RELEASE_BUILD);
        eprintln!("+ {c:?}");
        let s = c.status().map_err(|e| Fail(format!("cargo build: {e}")))?;
        if !s.success() {
            return Err(Fail(format!(
                "cargo build of the release binaries failed: {s}"
            )));
        }
    }
    let bins = o.bins.clone().unwrap_or_else(|| target.join("release"));
    let xdpip = bins.join("xdpip");
    let udp_echo = bins.join("examples/udp_echo");
    for p in [&xdpip, &udp_echo] {
        if !p.is_file() {
            return Err(Fail(format!(
                "{} is missing (build it, or drop --no-build)",
                p.display()
            )));
        }
    }
    let out = target.join("zerocopy");
    std::fs::create_dir_all(&out)?;
    let initrd = out.join("initrd.cpio");
    setup::initramfs(&initrd, &kernel, &xdpip, &udp_echo)?;

    let mut failed_runs = vec![0u32; o.drivers.len()];
    let mut all_ok = true;
    for run in 1..=o.runs {
        for (di, &driver) in o.drivers.iter().enumerate() {
            let dir = out.join(driver.name());
            let _ = std::fs::remove_dir_all(&dir);
            if o.runs > 1 {
                eprintln!("zerocopy: {} run {run}/{}", driver.name(), o.runs);
            } else {
                eprintln!("zerocopy: {}", driver.name());
            }
            let t = Instant::now();
            let outcomes =
                boot_and_check(driver, o.suite, &tools.qemu, &kernel.vmlinuz, &initrd, &dir);
            let failed: Vec<&Outcome> = outcomes.iter().filter(|c| !c.ok).collect();
            eprintln!(
                "zerocopy: {} {}: {} checks, {} failed, {:.0} s",
                driver.name(),
                if failed.is_empty() {
                    "passed"
                } else {
                    "FAILED"
                },
                outcomes.len(),
                failed.len(),
                t.elapsed().as_secs_f64()
            );
            if !failed.is_empty() {
                all_ok = false;
                failed_runs[di] += 1;
                if o.runs > 1 {
                    let keep = out.join(format!("{}-failed-run{run}", driver.name()));
                    let _ = std::fs::remove_dir_all(&keep);
                    let _ = std::fs::rename(&dir, &keep);
                    eprintln!("zerocopy: logs kept in {}", keep.display());
                } else {
                    eprintln!("zerocopy: logs in {}", dir.display());
                }
            }
        }
    }
    if o.runs > 1 {
        for (d, f) in o.drivers.iter().zip(&failed_runs) {
            eprintln!("zerocopy: {}: {} runs, {f} failed", d.name(), o.runs);
        }
    }
    Ok(all_ok)
}

fn boot_and_check(
    driver: Driver,
    suite: Suite,
    qemu: &str,
    vmlinuz: &Path,
    initrd: &Path,
    dir: &Path,
) -> Vec<Outcome> {
    let mut report = |c: &Outcome| {
        eprintln!(
            "  {} {}: {}",
            if c.ok { "PASS" } else { "FAIL" },
            c.name,
            c.detail
        )
    };
    let t = Instant::now();
    let boot = Boot {
        qemu,
        vmlinuz,
        initrd,
        dir,
        boot_timeout: Duration::from_secs(300),
    };
    let mut vm = match Vm::boot(driver, &boot) {
        Ok(vm) => vm,
        Err(Fail(e)) => {
            let o = Outcome {
                name: "guest-boot",
                ok: false,
                detail: format!("{e} [{:.1} s]", t.elapsed().as_secs_f64()),
            };
            report(&o);
            return vec![o];
        }
    };
    eprintln!("  guest ready in {:.1} s", t.elapsed().as_secs_f64());
    let outcomes = checks::run(&mut vm, suite, &mut report);
    if vm.unresponsive() {
        eprintln!("  console:\n{}", vm.console_tail(20));
    }
    outcomes
}
