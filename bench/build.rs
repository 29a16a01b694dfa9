//! Compiles bench's XDP programs (ebpf/*.bpf.c) with clang into OUT_DIR,
//! where src/ebpf.rs embeds them. The same way as engine/build.rs.

use std::env;
use std::path::PathBuf;
use std::process::{exit, Command};

const PROGRAMS: &[&str] = &["sink", "xdp_fwd", "gen", "xsk_fwd"];

const INSTALL_HINT: &str = "install the build dependencies: apt-get install -y clang llvm libbpf-dev libelf-dev zlib1g-dev pkg-config m4 make (Debian/Ubuntu), or run `cargo xtask test` which installs them";

fn find_clang() -> Option<String> {
    if let Some(c) = env::var("CLANG").ok().filter(|c| !c.is_empty()) {
        return Some(c);
    }
    let candidates = [
        "clang", "clang-19", "clang-18", "clang-17", "clang-16", "clang-15", "clang-14",
    ];
    candidates
        .iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|c| c.to_string())
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-env-changed=CLANG");
    let Some(clang) = find_clang() else {
        eprintln!("error: clang not found; it compiles bench's XDP programs (bench/ebpf).\n{INSTALL_HINT}");
        exit(1);
    };
    // linux/types.h includes asm/types.h, which Debian keeps under the
    // multiarch directory that -target bpf does not search.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        "riscv64" => "riscv64-linux-gnu",
        "powerpc64" => "powerpc64le-linux-gnu",
        "s390x" => "s390x-linux-gnu",
        other => other,
    };
    for name in PROGRAMS {
        let src = manifest.join(format!("ebpf/{name}.bpf.c"));
        let out = out_dir.join(format!("{name}.bpf.o"));
        println!("cargo:rerun-if-changed={}", src.display());
        let status = Command::new(&clang)
            .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf", "-c"])
            .arg(format!("-I/usr/include/{multiarch}"))
            .arg(&src)
            .arg("-o")
            .arg(&out)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => {
                eprintln!("error: {clang} failed ({s}) to compile {}.\nIf a header is missing (bpf/bpf_helpers.h, asm/types.h): {INSTALL_HINT}", src.display());
                exit(1);
            }
            Err(e) => {
                eprintln!("error: running {clang}: {e}\n{INSTALL_HINT}");
                exit(1);
            }
        }
    }
}
