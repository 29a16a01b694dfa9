//! `cargo xtask demo` and `cargo xtask test`: the README's two commands;
//! `cargo xtask zerocopy`, the zero-copy stage `test` ends with.
//!
//! Both run as root on a fresh Debian 12 (or Ubuntu) machine that has only
//! the Rust toolchain: they install the system packages the build and the
//! tests need, then build and run. Exit codes of every step are passed on.

use std::process::{exit, Command};

mod zerocopy;

/// Debian packages: the build (clang and headers for the XDP program; m4,
/// make, libelf and zlib for libxdp/libbpf), and the test hosts (iproute2,
/// ping, ethtool, setpriv from util-linux, and the tools the engine is
/// compared with the kernel through: traceroute, tracepath; a routing
/// daemon, BIRD; systemd-analyze for the unit in deploy/; Knot DNS, kdig,
/// kxdpgun and dnsperf for the DNS responder's test and benchmark; nft and
/// iptables (legacy and nft) for the packet filter's tests).
const PACKAGES: &[&str] = &[
    "clang",
    "llvm",
    "libbpf-dev",
    "libelf-dev",
    "zlib1g-dev",
    "pkg-config",
    "m4",
    "make",
    "linux-libc-dev",
    "iproute2",
    "iputils-ping",
    "ethtool",
    "util-linux",
    "traceroute",
    "iputils-tracepath",
    "bird2",
    "socat",
    "iperf3",
    "systemd",
    "knot",
    "knot-dnsutils",
    "dnsperf",
    "nftables",
    "iptables",
];

fn run(cmd: &mut Command) {
    eprintln!("+ {cmd:?}");
    match cmd.status() {
        Ok(s) if s.success() => {}
        Ok(s) => {
            eprintln!("xtask: {cmd:?} failed: {s}");
            exit(s.code().unwrap_or(1));
        }
        Err(e) => {
            eprintln!("xtask: cannot run {cmd:?}: {e}");
            exit(1);
        }
    }
}

fn require_root(what: &str) {
    let out = Command::new("id").arg("-u").output();
    let uid = out
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string());
    if uid.as_deref() != Some("0") {
        eprintln!(
            "xtask: {what} needs root (it installs packages, creates network namespaces and \
             attaches XDP programs); run it as root, e.g. `sudo -E env PATH=$PATH cargo xtask {what}`"
        );
        exit(2);
    }
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn install_packages() {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return;
    }
    if Command::new("apt-get").arg("--version").output().is_err() {
        eprintln!(
            "xtask: no apt-get here; install these packages yourself: {}",
            missing.join(" ")
        );
        exit(1);
    }
    run(Command::new("apt-get").args(["update", "-q"]));
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing));
    if missing.contains(&"knot") {
        // The package enables and starts a system knotd on port 53 of
        // every address of the host; the tests start their own in their
        // namespaces and need none.
        // Two calls: without a running systemd `stop` fails, `disable`
        // still removes the unit's link.
        for verb in ["stop", "disable"] {
            let _ = Command::new("systemctl")
                .args([verb, "knot.service"])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// The one release build `demo`, `compare` and `zerocopy` share. Building
/// an example turns on the features of the dev-dependencies, and cargo
/// then builds the library anew: so every task asks for the same targets,
/// and a run of `.ci/run` builds the release binaries once, not three
/// times. `--lib --bins` because `--example` alone would select only the
/// example.
pub const RELEASE_BUILD: &[&str] = &[
    "build",
    "--release",
    "-p",
    "xdpip",
    "-p",
    "xdpip-bench",
    "--lib",
    "--bins",
    "--example",
    "udp_echo",
];

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = match args.split_first() {
        Some((t, r)) => (t.as_str(), r),
        None => ("", &[][..]),
    };
    match task {
        "demo" => {
            require_root("demo");
            install_packages();
            run(cargo().args(RELEASE_BUILD));
            let root = std::env::var("CARGO_MANIFEST_DIR")
                .map(|d| d + "/..")
                .unwrap_or(".".into());
            let target = std::env::var("CARGO_TARGET_DIR").unwrap_or(format!("{root}/target"));
            run(Command::new(format!("{target}/release/xdpip-bench"))
                .arg("demo")
                .args(rest));
        }
        "compare" => {
            require_root("compare");
            install_packages();
            run(cargo().args(RELEASE_BUILD));
            let root = std::env::var("CARGO_MANIFEST_DIR")
                .map(|d| d + "/..")
                .unwrap_or(".".into());
            let target = std::env::var("CARGO_TARGET_DIR").unwrap_or(format!("{root}/target"));
            run(Command::new(format!("{target}/release/xdpip-bench"))
                .arg("compare")
                .args(rest));
        }
        "test" => {
            require_root("test");
            install_packages();
            // Unit tests, doc tests, and the datapath tests on veth pairs.
            run(cargo()
                .args([
                    "test",
                    "--workspace",
                    "--features",
                    "xdpip/datapath-tests,xdpip-bench/datapath-tests",
                ])
                .args(rest));
            // Then zero-copy on real drivers, in a guest (veth has none),
            // with the binaries the tests just used: the guest checks
            // correctness, not speed (the engine's crate is built at
            // opt-level 2 in every profile), and a release build would
            // add minutes to every run.
            let profile = if rest.iter().any(|a| a == "--release") {
                "release"
            } else {
                "debug"
            };
            let bins = zerocopy::target_dir().join(profile);
            let status = zerocopy::main(&["--binaries".into(), bins.display().to_string()]);
            if status != 0 {
                exit(status);
            }
        }
        "zerocopy" => {
            require_root("zerocopy");
            install_packages();
            exit(zerocopy::main(rest));
        }
        _ => {
            eprintln!(
                "usage: cargo xtask demo [ARGS...]     build, and route UDP through the kernel and \
                 through xdpip on a veth topology\n       cargo xtask compare [ARGS...]  \
                 measure the kernel router, in-kernel XDP forwarding, the AF_XDP floor and \
                 xdpip in three placements (see docs/PERFORMANCE.md)\n       cargo xtask test [ARGS...]     install what the \
                 build needs, run every test (root), then the zero-copy stage\n       \
                 cargo xtask zerocopy [--driver virtio|igb|both] [--quick] [--runs N]  \
                 AF_XDP zero-copy on virtio-net and igb in a QEMU guest (root)");
            exit(2);
        }
    }
}
