//! Where workers run and how they wait, as an operator sees it: cores that
//! do not exist are refused before anything is touched, the default
//! placement keeps a worker off the core of its queue's NAPI thread and
//! says why, and `--busy-poll` on veth says plainly that it cannot run and
//! forwards all the same.
//!
//! Needs root: `cargo xtask test`.

use serde_json::Value;
use std::net::UdpSocket;
use std::time::Duration;
use testbed::{require_root, Child, Netns, Topology};

const XDPIP: &str = env!("CARGO_BIN_EXE_xdpip");

fn topology() -> Topology {
    require_root();
    let t = Topology::gen_dut_sink(1).expect("topology");
    assert!(t.warm_up());
    t
}

/// Runs `xdpip ARGS` in a namespace: (status, stdout, stderr).
fn xdpip(ns: &Netns, args: &[&str]) -> (i32, String, String) {
    let out = ns.command(XDPIP).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts `xdpip run --json -i eth0 -i eth1 EXTRA` in dut; returns it and
/// its `started` event.
fn start(t: &Topology, extra: &[&str]) -> (Child, Value) {
    let mut cmd = t.dut.command(XDPIP);
    cmd.args(["run", "--json", "-q", "-i", "eth0", "-i", "eth1"])
        .args(extra);
    let mut c = Child::spawn(cmd).unwrap();
    let l = c
        .wait_for_line(Duration::from_secs(30), |l| {
            l.contains("\"event\":\"started\"")
        })
        .expect("engine start");
    (c, serde_json::from_str(&l).unwrap())
}

fn stop(mut c: Child) -> Value {
    c.signal(libc::SIGTERM);
    let st = c.wait(Duration::from_secs(20)).unwrap();
    assert!(st.success(), "{}", c.stderr().join("\n"));
    let l = c
        .stdout()
        .into_iter()
        .find(|l| l.contains("\"event\":\"stopped\""))
        .unwrap();
    serde_json::from_str(&l).unwrap()
}

/// `0-1` on a 2-core machine.
fn existing() -> String {
    xdpip::placement::list(&xdpip::placement::existing())
}

/// Sends `n` UDP datagrams from gen to sink and counts those that arrive.
fn udp_through(t: &Topology, n: u32) -> u32 {
    let rx = t
        .sink
        .run(|| {
            let s = UdpSocket::bind("10.2.0.2:9000").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            s
        })
        .unwrap();
    t.gen
        .run(move || {
            let s = UdpSocket::bind("10.1.0.1:0").unwrap();
            for i in 0..n {
                s.send_to(&i.to_be_bytes(), "10.2.0.2:9000").unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
        })
        .unwrap();
    let mut got = 0;
    let mut buf = [0u8; 64];
    while rx.recv(&mut buf).is_ok() {
        got += 1;
    }
    got
}

fn has_xdp(t: &Topology, ifname: &str) -> bool {
    let out = t
        .dut
        .ip(&["-d", "link", "show", "dev", ifname])
        .expect("ip link");
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

#[test]
fn bad_cores_exit_2_and_name_the_cores_that_exist() {
    let t = topology();
    let n = xdpip::placement::existing().len();
    let missing = n.to_string();
    let (code, _, err) = xdpip(
        &t.dut,
        &["run", "-i", "eth0", "-i", "eth1", "--cores", &missing],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "--cores: core {n} does not exist: this machine has cores {}",
            existing()
        )),
        "{err}"
    );
    // Refused before anything was attached.
    assert!(!has_xdp(&t, "eth0"));

    let dir = std::env::temp_dir().join(format!("xdpip-cores-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("xdpip.toml");
    for (cores, expect) in [
        (
            "[99]".to_string(),
            format!(
                "core 99 does not exist: this machine has cores {}",
                existing()
            ),
        ),
        (
            "[]".to_string(),
            format!(
                "the list is empty: name at least one of cores {}",
                existing()
            ),
        ),
    ] {
        std::fs::write(
            &conf,
            format!("interfaces = [\"eth0\", \"eth1\"]\ncores = {cores}\n"),
        )
        .unwrap();
        let (code, _, err) = xdpip(&t.dut, &["run", "--config", conf.to_str().unwrap()]);
        assert_eq!(code, 2, "cores = {cores}: {err}");
        assert!(
            err.contains(&format!("config {}: cores: {expect}", conf.display())),
            "cores = {cores}: {err}"
        );
    }
    assert!(!has_xdp(&t, "eth0"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn default_placement_is_said_and_forwards() {
    let t = topology();
    // veth, no --cores: where its NAPI runs cannot be known, so the worker
    // is left to the scheduler, and the reason is given.
    let (c, started) = start(&t, &[]);
    let w = &started["workers"][0];
    assert_eq!(w["cores"], Value::Null, "{started}");
    let why = w["placement"].as_str().unwrap();
    assert!(why.starts_with("unpinned") && why.contains("veth"), "{why}");
    assert_eq!(udp_through(&t, 50), 50);
    let r = stop(c);
    assert!(r["mib"]["ForwDatagrams"].as_u64().unwrap() >= 50, "{r}");
}

/// Threaded NAPI (a setting users make for NICs, made here on veth, with
/// GRO so that veth has a NAPI before the engine starts, so that the
/// kernel names a thread for the queue): the default placement keeps the
/// worker off the core that thread is pinned to.
#[test]
fn default_placement_avoids_the_core_of_a_napi_thread() {
    let t = topology();
    let cores = xdpip::placement::allowed();
    assert!(
        cores.len() >= 2,
        "this test needs two cores the process may use; it has {cores:?}"
    );
    let napi_core = cores[1];
    for ifname in ["eth0", "eth1"] {
        t.dut.exec(&["ethtool", "-K", ifname, "gro", "on"]).unwrap();
        t.dut
            .exec(&[
                "sh",
                "-c",
                &format!("echo 1 > /sys/class/net/{ifname}/threaded"),
            ])
            .unwrap();
    }
    let pids: Vec<i32> = testbed::in_ns(t.dut.name(), || {
        let mut nl = xdpip::netdev::Netdev::open().unwrap();
        ["eth0", "eth1"]
            .iter()
            .flat_map(|n| {
                let i = xdpip::iface::Interface::lookup(n).unwrap().ifindex;
                nl.napis(i).unwrap()
            })
            .filter_map(|n| n.pid)
            .collect()
    });
    assert_eq!(pids.len(), 2, "a NAPI thread per interface: {pids:?}");
    for pid in &pids {
        // SAFETY: cpu_set_t is plain old data; zero is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: napi_core is below CPU_SETSIZE; set is valid for its size.
        let r = unsafe {
            libc::CPU_SET(napi_core, &mut set);
            libc::sched_setaffinity(*pid, std::mem::size_of_val(&set), &set)
        };
        assert_eq!(r, 0, "pinning NAPI thread {pid}");
    }
    let (c, started) = start(&t, &[]);
    let w = &started["workers"][0];
    let pinned: Vec<usize> = serde_json::from_value(w["cores"].clone())
        .unwrap_or_else(|_| panic!("not pinned: {started}"));
    assert!(!pinned.contains(&napi_core), "{started}");
    let why = w["placement"].as_str().unwrap();
    assert!(
        why.starts_with("off the cores that service its queues")
            && why.contains(&format!("on cores {napi_core}")),
        "{why}"
    );
    assert_eq!(udp_through(&t, 50), 50);
    stop(c);
}

#[test]
fn busy_poll_on_veth_is_unavailable_and_forwarding_goes_on() {
    let t = topology();
    let mut cmd = t.dut.command(XDPIP);
    cmd.args([
        "run",
        "--json",
        "-q",
        "-i",
        "eth0",
        "-i",
        "eth1",
        "--busy-poll",
    ]);
    let mut c = Child::spawn(cmd).unwrap();
    let l = c
        .wait_for_line(Duration::from_secs(30), |l| {
            l.contains("\"event\":\"started\"")
        })
        .expect("engine start");
    let started: Value = serde_json::from_str(&l).unwrap();
    let err = c.stderr().join("\n");
    for ifname in ["eth0", "eth1"] {
        assert!(
            err.contains(&format!("busy polling unavailable on {ifname} (veth)")),
            "{err}"
        );
    }
    let sockets = started["busy_poll"]["sockets"].as_array().unwrap();
    assert_eq!(sockets.len(), 2);
    assert!(
        sockets.iter().all(|s| s["state"] == "unavailable"),
        "{started}"
    );
    assert_eq!(udp_through(&t, 50), 50);
    // `xdpip stats --json` shows it too.
    let (code, out, err) = xdpip(&t.dut, &["stats", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["busy_poll"]["sockets"][0]["state"], "unavailable");
    let r = stop(c);
    assert!(r["mib"]["ForwDatagrams"].as_u64().unwrap() >= 50, "{r}");
}
