//! What the zero-copy stage needs on the host, fetched once and kept:
//! QEMU 10 (bookworm-backports; bookworm's 7.2 has no `igb` device), the
//! pinned guest kernel (trixie-backports), busybox, and an initramfs built
//! from the project's own release binaries.
//!
//! Backports are reached through a private apt configuration in the cache
//! folder; the machine's own apt sources are never touched. A missing
//! package or download is an error that names it.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::cpio::Cpio;
use super::Fail;

/// The guest kernel, pinned: its ABI name and its Debian package version.
/// Older kernels lack zero-copy in virtio_net (TX came in 6.13) or in igb
/// (6.14).
pub const KERNEL_ABI: &str = "7.3.4+deb13-amd64";
pub const KERNEL_VERSION: &str = "7.3.4-1~bpo13+1";
const KERNEL_SUITE: &str = "trixie-backports";
const QEMU_SUITE: &str = "bookworm-backports";

/// The NIC drivers and what they need, in load order, the AF_XDP socket
/// diagnostics `ss --xdp` reads, and nf_tables (nfnetlink is built in):
/// the engine reads the host's ruleset (an empty one here) and hands
/// everything to the kernel when it cannot, and the guest has no modprobe
/// to load it on demand.
pub const MODULES: &[&str] = &[
    "failover",
    "net_failover",
    "virtio_net",
    "dca",
    "i2c-algo-bit",
    "igb",
    "xsk_diag",
    "nf_tables",
];

/// Host packages from the machine's own sources: busybox for the guest,
/// xz for the kernel modules, and the host side of the tests.
const HOST_PACKAGES: &[&str] = &[
    "busybox-static",
    "xz-utils",
    "iproute2",
    "ethtool",
    "iputils-ping",
];

/// Where downloads are kept between runs: `$XDG_CACHE_HOME/xdpip/zerocopy`,
/// else `~/.cache/xdpip/zerocopy`.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/root/.cache"));
    base.join("xdpip").join("zerocopy")
}

fn status(cmd: &mut Command) -> Result<(), Fail> {
    eprintln!("+ {cmd:?}");
    let s = cmd
        .status()
        .map_err(|e| Fail(format!("cannot run {cmd:?}: {e}")))?;
    if !s.success() {
        return Err(Fail(format!("{cmd:?} failed: {s}")));
    }
    Ok(())
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// An apt configuration of its own: the machine's archive with the
/// backports suites, state and downloads in the cache folder.
struct PrivateApt {
    conf: PathBuf,
    updated: bool,
}

impl PrivateApt {
    fn new(cache: &Path) -> Result<PrivateApt, Fail> {
        let dir = cache.join("apt");
        for d in [
            "state/lists/partial",
            "cache/archives/partial",
            "sources.list.d",
        ] {
            fs::create_dir_all(dir.join(d))
                .map_err(|e| Fail(format!("creating {}: {e}", dir.join(d).display())))?;
        }
        let mirror = system_mirror();
        let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
        let sources = format!(
            "deb [signed-by={keyring}] {mirror} bookworm main\n\
             deb [signed-by={keyring}] {mirror} {QEMU_SUITE} main\n\
             deb [signed-by={keyring}] {mirror} {KERNEL_SUITE} main\n"
        );
        let d = dir.display();
        let conf = format!(
            "Dir::Etc::sourcelist \"{d}/sources.list\";\n\
             Dir::Etc::sourceparts \"{d}/sources.list.d\";\n\
             Dir::State \"{d}/state\";\n\
             Dir::State::status \"/var/lib/dpkg/status\";\n\
             Dir::Cache \"{d}/cache\";\n\
             Dir::Cache::pkgcache \"\";\n\
             Dir::Cache::srcpkgcache \"\";\n\
             APT::Default-Release \"bookworm\";\n\
             APT::Sandbox::User \"root\";\n\
             Acquire::GzipIndexes \"true\";\n\
             Acquire::IndexTargets::deb::DEP-11::DefaultEnabled \"false\";\n\
             Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled \"false\";\n\
             Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled \"false\";\n"
        );
        let write = |p: PathBuf, s: &str| {
            fs::write(&p, s).map_err(|e| Fail(format!("writing {}: {e}", p.display())))
        };
        write(dir.join("sources.list"), &sources)?;
        write(dir.join("apt.conf"), &conf)?;
        Ok(PrivateApt {
            conf: dir.join("apt.conf"),
            updated: false,
        })
    }

    fn apt(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("APT_CONFIG", &self.conf)
            .env("DEBIAN_FRONTEND", "noninteractive");
        c
    }

    fn update(&mut self) -> Result<(), Fail> {
        if !self.updated {
            status(self.apt("apt-get").args(["-q", "update"])).map_err(|e| {
                Fail(format!(
                    "{}: the package lists of bookworm, {QEMU_SUITE} and {KERNEL_SUITE} \
                     could not be fetched",
                    e.0
                ))
            })?;
            self.updated = true;
        }
        Ok(())
    }
}

/// The Debian archive the machine's own sources name.
fn system_mirror() -> String {
    if let Ok(s) = fs::read_to_string("/etc/apt/sources.list.d/debian.sources") {
        for l in s.lines() {
            if let Some(u) = l.strip_prefix("URIs:") {
                if let Some(u) = u.split_whitespace().next() {
                    return u.to_string();
                }
            }
        }
    }
    if let Ok(s) = fs::read_to_string("/etc/apt/sources.list") {
        for l in s.lines() {
            let mut w = l.split_whitespace();
            if w.next() == Some("deb") {
                if let Some(u) = w.find(|t| !t.starts_with('[')) {
                    return u.to_string();
                }
            }
        }
    }
    "http://deb.debian.org/debian".to_string()
}

/// The guest kernel and its NIC modules, as kept in the cache.
pub struct Kernel {
    pub vmlinuz: PathBuf,
    pub modules: PathBuf,
}

/// The host tools the stage runs.
pub struct Tools {
    pub qemu: String,
}

/// Installs what is missing and returns the kernel, from the cache when it
/// is there.
pub fn prepare(cache: &Path) -> Result<(Tools, Kernel), Fail> {
    let missing: Vec<&str> = HOST_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .collect();
    if !missing.is_empty() {
        status(Command::new("apt-get").args(["-q", "update"]))?;
        status(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args([
                    "install",
                    "-y",
                    "-q",
                    "--no-install-recommends",
                    "-o",
                    "DPkg::Lock::Timeout=600",
                ])
                .args(&missing),
        )
        .map_err(|e| Fail(format!("{}: installing {}", e.0, missing.join(" "))))?;
    }
    fs::create_dir_all(cache).map_err(|e| Fail(format!("creating {}: {e}", cache.display())))?;
    let mut apt = PrivateApt::new(cache)?;

    let qemu = "qemu-system-x86_64".to_string();
    if !qemu_has_igb(&qemu) {
        apt.update()?;
        status(apt.apt("apt-get").args([
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "-o",
            "DPkg::Lock::Timeout=600",
            "-t",
            QEMU_SUITE,
            "qemu-system-x86",
        ]))
        .map_err(|e| {
            Fail(format!(
                "{}: installing qemu-system-x86 from {QEMU_SUITE}",
                e.0
            ))
        })?;
        apt_clean(&apt);
        if !qemu_has_igb(&qemu) {
            return Err(Fail(format!(
                "{qemu} has no igb device after installing qemu-system-x86 from {QEMU_SUITE} \
                 (QEMU 8 or later is needed)"
            )));
        }
    }

    let kernel = kernel(cache, &mut apt)?;
    Ok((Tools { qemu }, kernel))
}

fn qemu_has_igb(qemu: &str) -> bool {
    Command::new(qemu)
        .args(["-device", "help"])
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("name \"igb\""))
        .unwrap_or(false)
}

fn apt_clean(apt: &PrivateApt) {
    let _ = apt.apt("apt-get").arg("clean").status();
}

/// The pinned kernel from the cache, downloaded and unpacked the first time:
/// only vmlinuz and the NIC modules are kept (about 15 MB of the 120 MB of
/// packages).
fn kernel(cache: &Path, apt: &mut PrivateApt) -> Result<Kernel, Fail> {
    let dir = cache.join(format!("kernel-{KERNEL_ABI}"));
    let stamp = dir.join("VERSION");
    let want = format!("{KERNEL_ABI} {KERNEL_VERSION} {}\n", MODULES.join(","));
    let k = Kernel {
        vmlinuz: dir.join("vmlinuz"),
        modules: dir.clone(),
    };
    if fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) {
        return Ok(k);
    }
    eprintln!(
        "zerocopy: fetching the guest kernel {KERNEL_ABI} ({KERNEL_VERSION}) into {}",
        dir.display()
    );
    let _ = fs::remove_dir_all(&dir);
    let tmp = cache.join("download");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| Fail(format!("creating {}: {e}", tmp.display())))?;
    apt.update()?;
    let pkgs = [
        format!("linux-binary-{KERNEL_ABI}"),
        format!("linux-modules-{KERNEL_ABI}"),
    ];
    let mut dl = apt.apt("apt-get");
    dl.current_dir(&tmp).args(["-q", "download"]);
    for p in &pkgs {
        dl.arg(format!("{p}={KERNEL_VERSION}"));
    }
    status(&mut dl).map_err(|e| {
        Fail(format!(
            "{}: {} version {KERNEL_VERSION} could not be downloaded from {KERNEL_SUITE} \
             (the stage pins this kernel; see KERNEL_ABI in xtask/src/zerocopy/setup.rs)",
            e.0,
            pkgs.join(" and ")
        ))
    })?;
    let deb = |p: &str| -> Result<PathBuf, Fail> {
        let prefix = format!("{p}_");
        fs::read_dir(&tmp)
            .map_err(|e| Fail(format!("{}: {e}", tmp.display())))?
            .flatten()
            .map(|e| e.path())
            .find(|f| {
                f.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
            })
            .ok_or_else(|| {
                Fail(format!(
                    "{p}: no .deb in {} after the download",
                    tmp.display()
                ))
            })
    };
    let unpacked = tmp.join("root");
    fs::create_dir_all(&unpacked).map_err(|e| Fail(format!("{e}")))?;
    let modroot = format!("./usr/lib/modules/{KERNEL_ABI}");
    untar(&deb(&pkgs[0])?, &unpacked, &[format!("{modroot}/vmlinuz")])?;
    let wanted: Vec<String> = MODULES
        .iter()
        .map(|m| format!("{modroot}/kernel/*/{m}.ko.xz"))
        .collect();
    untar(&deb(&pkgs[1])?, &unpacked, &wanted)?;

    let stage = cache.join(format!("kernel-{KERNEL_ABI}.new"));
    let _ = fs::remove_dir_all(&stage);
    fs::create_dir_all(&stage).map_err(|e| Fail(format!("{e}")))?;
    let root = unpacked.join(modroot.trim_start_matches("./"));
    fs::rename(root.join("vmlinuz"), stage.join("vmlinuz"))
        .map_err(|e| Fail(format!("vmlinuz: {e}")))?;
    for m in MODULES {
        let found = find_file(&root.join("kernel"), &format!("{m}.ko.xz")).ok_or_else(|| {
            Fail(format!(
                "module {m}.ko.xz is not in linux-modules-{KERNEL_ABI}"
            ))
        })?;
        let ko = Command::new("xz")
            .arg("-dc")
            .arg(&found)
            .output()
            .map_err(|e| Fail(format!("xz: {e}")))?;
        if !ko.status.success() {
            return Err(Fail(format!("xz -dc {}: {}", found.display(), ko.status)));
        }
        fs::write(stage.join(format!("{m}.ko")), &ko.stdout).map_err(|e| Fail(format!("{e}")))?;
    }
    fs::write(stage.join("VERSION"), &want).map_err(|e| Fail(format!("{e}")))?;
    fs::rename(&stage, &dir).map_err(|e| Fail(format!("{}: {e}", dir.display())))?;
    let _ = fs::remove_dir_all(&tmp);
    Ok(k)
}

fn untar(deb: &Path, into: &Path, members: &[String]) -> Result<(), Fail> {
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Fail(format!("dpkg-deb: {e}")))?;
    let out = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(into)
        .arg("--wildcards")
        .args(members)
        .stdin(dpkg.stdout.take().expect("piped"))
        .output()
        .map_err(|e| Fail(format!("tar: {e}")))?;
    let _ = dpkg.wait();
    if !out.status.success() {
        return Err(Fail(format!(
            "unpacking {} from {}: {}",
            members.join(" "),
            deb.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Some(f) = find_file(&p, name) {
                return Some(f);
            }
        } else if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
    }
    None
}

/// A program on PATH.
fn which(program: &str) -> Result<PathBuf, Fail> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| Fail(format!("{program} not found on the host")))
}

/// The shared libraries `ldd` lists for a program (none for a static one).
fn libraries(program: &Path) -> Result<Vec<PathBuf>, Fail> {
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .map_err(|e| Fail(format!("ldd: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for l in text.lines() {
        let path = match l.split_once("=>") {
            Some((_, r)) => r.split_whitespace().next(),
            None => l.split_whitespace().next().filter(|p| p.starts_with('/')),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

const INIT: &str = include_str!("guest/init");
const SERVE: &str = include_str!("guest/serve");
const LIB: &str = include_str!("guest/lib.sh");

/// Builds the guest's initramfs (an uncompressed newc archive) at `out`:
/// busybox, ip, ethtool and ss from the host with their libraries, the
/// project's `xdpip` and `udp_echo`, the NIC modules and the guest scripts.
pub fn initramfs(out: &Path, kernel: &Kernel, xdpip: &Path, udp_echo: &Path) -> Result<(), Fail> {
    let mut c = Cpio::new();
    for d in [
        "bin",
        "sbin",
        "usr",
        "usr/bin",
        "usr/sbin",
        "usr/local",
        "usr/local/bin",
        "lib",
        "lib64",
        "lib/zc",
        "etc",
        "etc/zc",
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
    ] {
        c.dir(d);
    }
    c.char_device("dev/console", 5, 1);
    c.file("init", INIT.as_bytes(), 0o755);
    c.file("etc/zc/serve", SERVE.as_bytes(), 0o644);
    c.file("etc/zc/lib.sh", LIB.as_bytes(), 0o644);
    c.file(
        "etc/zc/modules",
        (MODULES.join("\n") + "\n").as_bytes(),
        0o644,
    );
    for m in MODULES {
        let p = kernel.modules.join(format!("{m}.ko"));
        c.file(&format!("lib/zc/{m}.ko"), &read(&p)?, 0o644);
    }
    let busybox = which("busybox")?;
    let mut programs = vec![(busybox.clone(), "bin/busybox".to_string())];
    for (tool, at) in [
        ("ip", "usr/sbin/ip"),
        ("ethtool", "usr/sbin/ethtool"),
        ("ss", "usr/bin/ss"),
    ] {
        programs.push((which(tool)?, at.to_string()));
    }
    programs.push((xdpip.to_path_buf(), "usr/local/bin/xdpip".into()));
    programs.push((udp_echo.to_path_buf(), "usr/local/bin/udp_echo".into()));
    let mut libs = std::collections::BTreeSet::new();
    for (p, at) in &programs {
        c.file(at, &stripped(p)?, 0o755);
        libs.extend(libraries(p)?);
    }
    for l in libs {
        let at = l.to_string_lossy().trim_start_matches('/').to_string();
        c.parents(&at);
        c.file(&at, &read(&l)?, 0o755);
    }
    let bytes = c.finish();
    let mut f = fs::File::create(out).map_err(|e| Fail(format!("{}: {e}", out.display())))?;
    f.write_all(&bytes)
        .map_err(|e| Fail(format!("{}: {e}", out.display())))?;
    Ok(())
}

/// A program without its debug information (the release profile keeps
/// line tables), which halves what the guest loads; as is without `strip`.
fn stripped(p: &Path) -> Result<Vec<u8>, Fail> {
    let tmp = std::env::temp_dir().join(format!("xdpip-zc-strip-{}", std::process::id()));
    let ok = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&tmp)
        .arg(p)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let bytes = if ok { read(&tmp) } else { read(p) };
    let _ = fs::remove_file(&tmp);
    bytes
}

fn read(p: &Path) -> Result<Vec<u8>, Fail> {
    fs::read(p).map_err(|e: io::Error| Fail(format!("reading {}: {e}", p.display())))
}
