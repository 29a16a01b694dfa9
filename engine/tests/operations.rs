//! Running the engine as an operator does: the control socket (`xdpip
//! stats`, `routes`, `neigh`, `sysctl`), Prometheus metrics, the config
//! file, routes changing under traffic, links going down and up, and routes
//! from a real routing daemon (BIRD).
//!
//! Needs root: `cargo xtask test` (which installs bird2).

use serde_json::Value;
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testbed::{require_root, Child, Netns, Topology};

const XDPIP: &str = env!("CARGO_BIN_EXE_xdpip");

fn topology() -> Topology {
    require_root();
    let t = Topology::gen_dut_sink(1).expect("topology");
    t.sink.sysctl("net.ipv4.icmp_ratelimit", "0").unwrap();
    assert!(t.warm_up());
    t
}

fn start(t: &Topology, extra: &[&str]) -> Child {
    let mut cmd = t.dut.command(XDPIP);
    cmd.args(["run", "--json", "-q", "-i", "eth0", "-i", "eth1"])
        .args(extra);
    let mut c = Child::spawn(cmd).unwrap();
    c.wait_for_line(Duration::from_secs(30), |l| {
        l.contains("\"event\":\"started\"")
    })
    .expect("engine start");
    c
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

/// Runs `xdpip ARGS` in a namespace: (status, stdout, stderr).
fn xdpip(ns: &Netns, args: &[&str]) -> (i32, String, String) {
    let out = ns.command(XDPIP).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The TTL of the ICMP time exceeded dut sends for a TTL-1 datagram.
fn icmp_error_ttl(t: &Topology) -> u8 {
    let rx = testbed::PacketSocket::open(&t.gen, "eth0").unwrap();
    t.gen
        .run(|| {
            let s = UdpSocket::bind("10.1.0.1:0").unwrap();
            s.set_ttl(1).unwrap();
            s.send_to(b"x", "10.2.0.2:9").unwrap();
        })
        .unwrap();
    let got = rx
        .collect(1, Duration::from_secs(2), |f| {
            f.len() > 34 && f[12..14] == [8, 0] && f[23] == 1 && f[34] == 11
        })
        .unwrap();
    assert_eq!(got.len(), 1, "no time exceeded");
    got[0][22]
}

#[test]
fn control_socket_stats_routes_neigh_and_sysctl() {
    let t = topology();
    let engine = start(&t, &[]);

    let (code, out, err) = xdpip(&t.dut, &["stats", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).expect("stats --json is JSON");
    assert_eq!(v["mode"]["afxdp"], "copy");
    assert!(v["mib"]["InReceives"].is_u64());

    let (code, out, _) = xdpip(&t.dut, &["stats"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("eth0: rx") && out.contains("rx_ring_full="),
        "{out}"
    );

    let (_, out, _) = xdpip(&t.dut, &["routes"]);
    assert!(out.contains("unicast 10.2.0.0/24 dev eth1"), "{out}");
    t.dut
        .ip(&["route", "add", "10.50.0.0/16", "via", "10.2.0.2"])
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (_, out, _) = xdpip(&t.dut, &["routes", "--json"]);
    let routes: Value = serde_json::from_str(&out).unwrap();
    assert!(
        routes
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["prefix"] == "10.50.0.0/16" && r["nexthops"][0]["gateway"] == "10.2.0.2"),
        "{out}"
    );

    let (_, out, _) = xdpip(&t.dut, &["neigh"]);
    assert!(out.contains("10.2.0.2 dev eth1 lladdr"), "{out}");

    assert_eq!(icmp_error_ttl(&t), 64);
    let (code, out, err) = xdpip(&t.dut, &["sysctl", "ip_default_ttl=32"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "net.ipv4.ip_default_ttl = 32");
    assert_eq!(
        icmp_error_ttl(&t),
        32,
        "the engine's own packets use the new TTL"
    );

    let (code, _, err) = xdpip(&t.dut, &["sysctl", "ip_default_ttl=0"]);
    assert_eq!(code, 2, "a usage error");
    assert!(err.contains("an integer from 1 to 255"), "{err}");
    let (code, _, err) = xdpip(&t.dut, &["sysctl", "ip_forwarding=1"]);
    assert_eq!(code, 2, "a usage error");
    assert!(
        err.contains("unknown sysctl") && err.contains("ip_forward"),
        "{err}"
    );
    let (_, out, _) = xdpip(&t.dut, &["sysctl"]);
    assert!(out.contains("net.ipv4.ipfrag_time = 30"), "{out}");

    stop(engine);
    // The socket is gone with the engine, and a client says so.
    let (code, _, err) = xdpip(&t.dut, &["stats"]);
    assert_eq!(code, 1);
    assert!(err.contains("is `xdpip run` running"), "{err}");
}

#[test]
fn control_socket_is_owner_only_and_one_per_namespace() {
    let t = topology();
    let engine = start(&t, &[]);
    let path = t
        .dut
        .run(xdpip::control::api::default_socket_path)
        .unwrap()
        .unwrap();
    let mode = std::fs::metadata(&path).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);
    // A second engine in the same namespace stops at the socket, before it
    // touches the interfaces (even with --replace).
    let (code, _, err) = xdpip(
        &t.dut,
        &["run", "-i", "eth0", "--replace", "--duration", "1"],
    );
    assert_eq!(code, 2);
    assert!(err.contains("another running xdpip"), "{err}");
    t.gen
        .exec(&["ping", "-c", "1", "-W", "2", "10.2.0.2"])
        .expect("the first engine still forwards");
    let report = stop(engine);
    assert!(report["mib"]["ForwDatagrams"].as_u64().unwrap() >= 2);
}

#[test]
fn prometheus_metrics_are_scraped() {
    let t = topology();
    let engine = start(&t, &["--metrics", "127.0.0.1:9464"]);
    t.gen
        .exec(&["ping", "-c", "2", "-i", "0.2", "10.2.0.2"])
        .unwrap();
    let body = t
        .dut
        .run(|| {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect("127.0.0.1:9464").unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut b = String::new();
            s.read_to_string(&mut b).unwrap();
            b
        })
        .unwrap();
    stop(engine);
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(body.contains("# TYPE xdpip_ip_mib counter"), "{body}");
    let fwd: u64 = body
        .lines()
        .find(|l| l.starts_with("xdpip_ip_mib{counter=\"ForwDatagrams\"}"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .expect("ForwDatagrams sample");
    assert!(fwd >= 4, "{body}");
    assert!(
        body.contains("xdpip_xsk_rx_ring_full{port=\"eth0\",queue=\"0\"}"),
        "{body}"
    );
}

#[test]
fn config_file_and_sysctl_options() {
    let t = topology();
    let dir = std::env::temp_dir().join(format!("xdpip-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("xdpip.toml");
    std::fs::write(
        &conf,
        "interfaces = [\"eth0\", \"eth1\"]\nbatch_size = 32\n[sysctl]\nip_default_ttl = 20\nicmp_ratelimit = 0\n",
    )
    .unwrap();
    let mut cmd = t.dut.command(XDPIP);
    cmd.args([
        "run",
        "--json",
        "-q",
        "--config",
        conf.to_str().unwrap(),
        "--sysctl",
        "icmp_ratelimit=250",
    ]);
    let mut c = Child::spawn(cmd).unwrap();
    c.wait_for_line(Duration::from_secs(30), |l| l.contains("started"))
        .unwrap();
    let (_, out, _) = xdpip(&t.dut, &["sysctl"]);
    assert!(out.contains("net.ipv4.ip_default_ttl = 20"), "{out}");
    assert!(
        out.contains("net.ipv4.icmp_ratelimit = 250"),
        "the command line wins: {out}"
    );
    assert_eq!(icmp_error_ttl(&t), 20);
    stop(c);

    std::fs::write(&conf, "interfaces = [\"eth0\"]\nbogus = 1\n").unwrap();
    let (code, _, err) = xdpip(&t.dut, &["run", "--config", conf.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown field `bogus`"), "{err}");
    let (code, _, err) = xdpip(&t.dut, &["run", "-i", "eth0", "--sysctl", "ipfrag_time=0"]);
    assert_eq!(code, 2);
    assert!(err.contains("bad value \"0\" for ipfrag_time"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends numbered datagrams from gen to `dst` until stopped; returns the
/// number sent.
fn sender(
    t: &Topology,
    dst: Ipv4Addr,
    gap: Duration,
    stop: Arc<AtomicBool>,
    seq: Arc<AtomicU32>,
) -> std::thread::JoinHandle<u32> {
    t.gen
        .spawn(move || {
            let s = UdpSocket::bind("10.1.0.1:0").unwrap();
            while !stop.load(Ordering::Relaxed) {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let _ = s.send_to(&n.to_be_bytes(), (dst, 9000));
                std::thread::sleep(gap);
            }
            seq.load(Ordering::Relaxed)
        })
        .unwrap()
}

/// Counts datagrams on sink's port 9000, recording their numbers.
fn receiver(t: &Topology, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<(u32, Instant)>> {
    t.sink
        .spawn(move || {
            let s = UdpSocket::bind("0.0.0.0:9000").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let mut got = Vec::new();
            let mut b = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n) = s.recv(&mut b) {
                    if n >= 4 {
                        got.push((u32::from_be_bytes([b[0], b[1], b[2], b[3]]), Instant::now()));
                    }
                }
            }
            got
        })
        .unwrap()
}

#[test]
fn route_added_and_removed_under_traffic() {
    let t = topology();
    // sink owns the destination, so its socket gets the datagrams.
    t.sink
        .ip(&["addr", "add", "10.9.0.1/32", "dev", "lo"])
        .unwrap();
    let engine = start(&t, &[]);
    let stop_tx = Arc::new(AtomicBool::new(false));
    let stop_rx = Arc::new(AtomicBool::new(false));
    let seq = Arc::new(AtomicU32::new(0));
    let rx = receiver(&t, stop_rx.clone());
    let tx = sender(
        &t,
        Ipv4Addr::new(10, 9, 0, 1),
        Duration::from_millis(1),
        stop_tx.clone(),
        seq.clone(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let added_at = Instant::now();
    let first_after_add = seq.load(Ordering::Relaxed);
    t.dut
        .ip(&["route", "add", "10.9.0.0/16", "via", "10.2.0.2"])
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let last_before_del = seq.load(Ordering::Relaxed);
    t.dut.ip(&["route", "del", "10.9.0.0/16"]).unwrap();
    let deleted_at = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    stop_tx.store(true, Ordering::Relaxed);
    tx.join().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    stop_rx.store(true, Ordering::Relaxed);
    let got = rx.join().unwrap();
    let report = stop(engine);

    assert!(
        !got.is_empty(),
        "nothing arrived after the route was added: {report}"
    );
    // Nothing sent before the route existed arrives.
    assert!(got.iter().all(|(n, _)| *n >= first_after_add), "{got:?}");
    let first = got.iter().map(|(_, at)| *at).min().unwrap();
    let last = got.iter().map(|(_, at)| *at).max().unwrap();
    // While the route existed, datagrams flowed without a gap...
    let numbers: Vec<u32> = got.iter().map(|(n, _)| *n).collect();
    let span = numbers.iter().max().unwrap() - numbers.iter().min().unwrap() + 1;
    assert_eq!(
        span as usize,
        numbers.len(),
        "datagrams lost while the route existed"
    );
    assert!(*numbers.iter().max().unwrap() + 1 >= last_before_del);
    // ...and stopped when it went.
    println!(
        "route add -> first datagram at sink: {:?}; route del -> last datagram: {:?}",
        first.saturating_duration_since(added_at),
        last.saturating_duration_since(deleted_at)
    );
    assert!(
        report["drops"]["no_route"].as_u64().unwrap() > 0,
        "{report}"
    );
}

#[test]
fn link_down_and_up_on_the_egress() {
    let t = topology();
    let engine = start(&t, &[]);
    let stop_tx = Arc::new(AtomicBool::new(false));
    let stop_rx = Arc::new(AtomicBool::new(false));
    let seq = Arc::new(AtomicU32::new(0));
    let rx = receiver(&t, stop_rx.clone());
    let tx = sender(
        &t,
        Ipv4Addr::new(10, 2, 0, 2),
        Duration::from_millis(2),
        stop_tx.clone(),
        seq.clone(),
    );
    std::thread::sleep(Duration::from_millis(400));
    let before_down = seq.load(Ordering::Relaxed);
    // Carrier off: the peer goes down.
    t.sink.ip(&["link", "set", "eth0", "down"]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (_, stats, _) = xdpip(&t.dut, &["stats", "--json"]);
    t.sink.ip(&["link", "set", "eth0", "up"]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // Admin down on dut: the kernel removes the route; no route, so the
    // sender hears net unreachable, as through the kernel.
    t.dut.ip(&["link", "set", "eth1", "down"]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    t.dut.ip(&["link", "set", "eth1", "up"]).unwrap();
    t.dut.sysctl("net.ipv4.ip_forward", "1").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let after_up = seq.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(500));
    stop_tx.store(true, Ordering::Relaxed);
    tx.join().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    stop_rx.store(true, Ordering::Relaxed);
    let got: Vec<u32> = rx.join().unwrap().into_iter().map(|(n, _)| n).collect();
    let report = stop(engine);

    // Carrier off: the kernel flushes the neighbours behind the link, so
    // the XDP program hands the datagrams to the kernel (which holds them
    // while it tries to resolve, as it does for its own traffic); none is
    // lost uncounted.
    let during: Value = serde_json::from_str(&stats).unwrap();
    let handed = during["xdp"]["pass_no_neigh"].as_u64().unwrap()
        + during["drops"]["port_down"].as_u64().unwrap();
    assert!(handed > 0, "carrier off: {during}");
    assert!(
        report["drops"]["no_route"].as_u64().unwrap() > 0,
        "admin down: no route: {report}"
    );
    assert!(
        report["mib"]["IcmpOutDestUnreachs"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert!(got.iter().any(|n| *n < before_down), "traffic before");
    assert!(
        got.iter().any(|n| *n > after_up),
        "traffic resumed after link up: {report}"
    );
}

#[test]
fn routes_from_bird_are_forwarded() {
    let t = topology();
    let dir = std::env::temp_dir().join(format!("xdpip-bird-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("bird.conf");
    std::fs::write(
        &conf,
        "router id 10.1.0.2;\nprotocol device {}\nprotocol kernel { ipv4 { export all; }; }\n\
         protocol static { ipv4; route 10.77.0.0/16 via 10.2.0.2; }\n",
    )
    .unwrap();
    let mut cmd = t.dut.command("bird");
    cmd.args(["-f", "-c"])
        .arg(&conf)
        .arg("-s")
        .arg(dir.join("bird.ctl"))
        .arg("-P")
        .arg(dir.join("bird.pid"));
    let _bird = Child::spawn(cmd).expect("bird (Debian package bird2)");
    let mut installed = false;
    for _ in 0..50 {
        let out = t.dut.ip(&["route", "show", "10.77.0.0/16"]).unwrap();
        if String::from_utf8_lossy(&out.stdout).contains("proto bird") {
            installed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(installed, "bird did not install its route");
    let engine = start(&t, &[]);
    let before = t.dut.snmp().unwrap()["IpForwDatagrams"];
    let at_sink = testbed::PacketSocket::open(&t.sink, "eth0").unwrap();
    t.gen
        .run(|| {
            let s = UdpSocket::bind("10.1.0.1:0").unwrap();
            for i in 0..20u32 {
                s.send_to(&i.to_be_bytes(), "10.77.1.1:9000").unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
        })
        .unwrap();
    // The next hop is sink: the datagrams reach its interface.
    let got = at_sink
        .collect(20, Duration::from_secs(1), |f| {
            f.len() > 34 && f[12..14] == [8, 0] && f[30..34] == [10, 77, 1, 1]
        })
        .unwrap();
    assert_eq!(got.len(), 20);
    let after = t.dut.snmp().unwrap()["IpForwDatagrams"];
    let report = stop(engine);
    assert_eq!(
        after, before,
        "the kernel forwarded the bird route's traffic"
    );
    assert!(
        report["mib"]["ForwDatagrams"].as_u64().unwrap() >= 20,
        "{report}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn route_churn_loses_nothing() {
    let t = topology();
    let engine = start(&t, &[]);
    // 20,000 changes to unrelated prefixes, as fast as `ip -batch` goes.
    let mut batch = String::new();
    for i in 0..10_000u32 {
        let p = format!("10.{}.{}.0/24", 100 + (i >> 8) % 100, i & 255);
        batch += &format!("route add {p} via 10.2.0.2\nroute del {p}\n");
    }
    let file = std::env::temp_dir().join(format!("xdpip-churn-{}", std::process::id()));
    std::fs::write(&file, batch).unwrap();
    let stop_tx = Arc::new(AtomicBool::new(false));
    let stop_rx = Arc::new(AtomicBool::new(false));
    let seq = Arc::new(AtomicU32::new(0));
    let rx = receiver(&t, stop_rx.clone());
    let tx = sender(
        &t,
        Ipv4Addr::new(10, 2, 0, 2),
        Duration::from_micros(500),
        stop_tx.clone(),
        seq.clone(),
    );
    let began = Instant::now();
    t.dut.ip(&["-batch", file.to_str().unwrap()]).unwrap();
    let took = began.elapsed();
    stop_tx.store(true, Ordering::Relaxed);
    let sent = tx.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stop_rx.store(true, Ordering::Relaxed);
    let got = rx.join().unwrap();
    let (_, routes, _) = xdpip(&t.dut, &["routes"]);
    let report = stop(engine);
    let _ = std::fs::remove_file(&file);
    println!(
        "20000 route changes in {took:?} ({:.0}/s); {} datagrams sent, {} received; resyncs {}",
        20_000.0 / took.as_secs_f64(),
        sent,
        got.len(),
        report["control"]["resyncs"]
    );
    assert_eq!(
        got.len() as u32,
        sent,
        "datagrams lost during route churn: {report}"
    );
    assert_eq!(
        routes.lines().count(),
        2,
        "the mirror ends where the kernel does: {routes}"
    );
}

fn unit_file() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/xdpip.service"
    ))
    .expect("deploy/xdpip.service")
}

#[test]
fn systemd_unit_verifies() {
    require_root();
    let dir = std::env::temp_dir().join(format!("xdpip-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The unit as shipped, with ExecStart pointing at the binary just built
    // (verify checks that the command exists).
    let unit = unit_file().replace("/usr/local/bin/xdpip", XDPIP);
    let path = dir.join("xdpip.service");
    std::fs::write(&path, unit).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {err}");
    assert!(
        !err.contains("xdpip.service:"),
        "warnings about the unit: {err}"
    );
}

#[test]
fn runs_unprivileged_with_exactly_the_units_capabilities() {
    let t = topology();
    let unit = unit_file();
    let caps: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("AmbientCapabilities in the unit")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let caps = caps.join(",");
    let dir = std::env::temp_dir().join(format!("xdpip-unpriv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    let sock = dir.join("ctl.sock");
    // The unit also sets LimitMEMLOCK=infinity; CAP_IPC_LOCK alone must do
    // (and raising the limit needs CAP_SYS_RESOURCE, which the test
    // machine's root may lack).
    let mut cmd = t.dut.command("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(format!("--inh-caps=-all,{caps}"))
        .arg(format!("--ambient-caps=-all,{caps}"))
        .arg(format!("--bounding-set=-all,{caps}"))
        .args([
            XDPIP, "run", "--json", "-q", "-i", "eth0", "-i", "eth1", "--socket",
        ])
        .arg(&sock);
    let mut engine = Child::spawn(cmd).unwrap();
    engine
        .wait_for_line(Duration::from_secs(30), |l| {
            l.contains("\"event\":\"started\"")
        })
        .expect("the engine starts with the unit's capabilities only");
    t.gen
        .exec(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.2.0.2"])
        .expect("ping through the unprivileged engine");
    let report = stop(engine);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        report["mib"]["ForwDatagrams"].as_u64().unwrap() >= 4,
        "{report}"
    );
}

/// `GET /metrics` on loopback port 9464 of the namespace it runs in.
fn scrape_9464() -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect("127.0.0.1:9464")?;
    // A bound, not a measurement: the old one-at-a-time server made this
    // scrape wait 5 s per idle connection, 129 of them.
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut b = String::new();
    s.read_to_string(&mut b)?;
    Ok(b)
}

/// Issue 16, item 11: idle connections to the metrics endpoint, more than
/// it serves at once, neither delay a scrape nor make it fail, and the
/// server closes them itself when they send nothing.
#[test]
fn idle_metrics_connections_do_not_delay_a_scrape() {
    let t = topology();
    let engine = start(&t, &["--metrics", "127.0.0.1:9464"]);
    let (body, newest_open_after_scrape, newest_closed_later) = t
        .dut
        .run(|| {
            use std::io::Read;
            let idle: Vec<std::net::TcpStream> = (0..129)
                .map(|_| std::net::TcpStream::connect("127.0.0.1:9464").unwrap())
                .collect();
            // Let the server accept them all before the scrape comes.
            std::thread::sleep(Duration::from_millis(500));
            let body = scrape_9464();
            // The scrape did not wait for the idle connections to time
            // out: the newest is still open (no EOF, nothing to read).
            let newest = idle.last().unwrap();
            newest.set_nonblocking(true).unwrap();
            let open = matches!(
                (&*newest).read(&mut [0u8; 16]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
            );
            newest.set_nonblocking(false).unwrap();
            // Nothing sent: the server hangs up after its request timeout
            // (5 s); 30 s is a bound, not a measurement.
            newest
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            let closed = matches!((&*newest).read(&mut [0u8; 16]), Ok(0));
            (body, open, closed)
        })
        .unwrap();
    stop(engine);
    let body = body.expect("a scrape while 129 connections sit idle");
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(body.contains("# TYPE xdpip_ip_mib counter"), "{body}");
    assert!(
        newest_open_after_scrape,
        "the scrape was answered only after the idle connections were dropped"
    );
    assert!(
        newest_closed_later,
        "an idle connection was never closed by the server"
    );
}

/// dut's interface index of `name`, from a thread in its namespace.
fn dut_ifindex(t: &Topology, name: &'static str) -> u32 {
    t.dut
        .run(move || {
            let c = std::ffi::CString::new(name).unwrap();
            // SAFETY: a NUL-terminated name.
            unsafe { libc::if_nametoindex(c.as_ptr()) }
        })
        .unwrap()
}

/// The XDP program on dut's interface: (id, name).
fn dut_xdp(t: &Topology, ifindex: u32) -> Option<(u32, Option<String>)> {
    t.dut
        .run(move || xdpip::ebpf::query(ifindex).unwrap())
        .unwrap()
        .map(|a| (a.prog_id, a.name))
}

/// ForwDatagrams of the engine, by its control socket.
fn forwarded(t: &Topology) -> u64 {
    let (code, out, err) = xdpip(&t.dut, &["stats", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    v["mib"]["ForwDatagrams"].as_u64().unwrap()
}

fn ping_sink(t: &Topology) {
    t.gen
        .exec(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.2.0.2"])
        .expect("ping through dut");
}

/// Issue 16, item 6: `--replace` against a running engine is all or
/// nothing. The queues the running engine holds refuse the newcomer before
/// it touches any program: it exits with status 2, and the first engine
/// keeps its program, its traffic and its "already served".
#[test]
fn replace_of_a_running_engine_fails_whole_and_leaves_it_serving() {
    let t = topology();
    let engine = start(&t, &[]);
    let eth0 = dut_ifindex(&t, "eth0");
    let before = dut_xdp(&t, eth0).expect("the engine's program");
    let (code, _, err) = xdpip(
        &t.dut,
        &[
            "run",
            "-i",
            "eth0",
            "-i",
            "eth1",
            "--replace",
            "--no-socket",
            "--duration",
            "2",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("holds this queue"), "{err}");
    assert_eq!(
        dut_xdp(&t, eth0),
        Some(before),
        "the first engine's program"
    );
    let fwd = forwarded(&t);
    ping_sink(&t);
    assert!(
        forwarded(&t) >= fwd + 4,
        "the first engine forwards the pings"
    );
    let (code, _, err) = xdpip(
        &t.dut,
        &["run", "-i", "eth0", "--no-socket", "--duration", "1"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("already served"), "{err}");
    stop(engine);
}

/// Issue 16, item 6: a program detached from under the engine is put back
/// within a second, and the engine says so.
#[test]
fn program_detached_from_under_the_engine_is_attached_again() {
    let t = topology();
    let mut engine = start(&t, &[]);
    let eth0 = dut_ifindex(&t, "eth0");
    let detached = t.dut.run(move || xdpip::ebpf::detach(eth0)).unwrap();
    assert!(detached.unwrap(), "the engine's program was there");
    // "Within a second": 5 s is a bound, not a measurement.
    let deadline = Instant::now() + Duration::from_secs(5);
    let back = loop {
        match dut_xdp(&t, eth0) {
            Some((_, Some(name))) => break Some(name),
            _ if Instant::now() > deadline => break None,
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    assert_eq!(back.as_deref(), Some(xdpip::ebpf::PROGRAM_NAME));
    let fwd = forwarded(&t);
    ping_sink(&t);
    assert!(forwarded(&t) >= fwd + 4, "the engine forwards again");
    engine.signal(libc::SIGTERM);
    assert!(engine.wait(Duration::from_secs(20)).unwrap().success());
    let err = engine.stderr().join("\n");
    assert!(
        err.contains(
            "eth0: the engine's XDP program was detached from under it; attached it again"
        ),
        "{err}"
    );
}

/// Issue 16, item 6: another program put in the engine's place is not
/// fought over: the engine says so and exits with status 1.
#[test]
fn engine_whose_program_is_replaced_says_so_and_exits_1() {
    let t = topology();
    let mut engine = start(&t, &[]);
    // Another instance of the steering program (another id), attached to
    // eth0 in the engine's place, held by this test until the end.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let holder = t
        .dut
        .spawn(move || {
            let iface = xdpip::iface::Interface::lookup("eth0").unwrap();
            let (mut steer, _maps) = xdpip::ebpf::Steer::load().unwrap();
            // The engine may put its own back between the detach and the
            // attach (EBUSY then): take over again.
            let mut tries = 0;
            while let Err(e) = steer.attach(&iface, xdpip::ebpf::XdpModeRequest::Auto, true, 4096) {
                tries += 1;
                assert!(tries < 5, "{e}");
            }
            done_tx.send(()).unwrap();
            let _ = rx.recv();
        })
        .unwrap();
    done_rx.recv().unwrap();
    let status = engine.wait(Duration::from_secs(10));
    drop(tx);
    holder.join().unwrap();
    let err = engine.stderr().join("\n");
    let status = status.unwrap_or_else(|e| panic!("{e}: {err}"));
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("eth0: the engine's XDP program was replaced by program \"xdpip_steer\""),
        "{err}"
    );
}

/// Issue 16, item 7: `--socket` never replaces what is not a stale socket
/// of ours, and creates no directory outside /run/xdpip.
#[test]
fn control_socket_path_replaces_only_a_stale_socket() {
    let t = topology();
    let dir = std::env::temp_dir().join(format!("xdpip-sockpath-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("notes.txt");
    std::fs::write(&file, "keep me\n").unwrap();
    let run_on = |sock: &std::path::Path| {
        xdpip(
            &t.dut,
            &[
                "run",
                "-i",
                "eth0",
                "-i",
                "eth1",
                "--duration",
                "1",
                "--socket",
                sock.to_str().unwrap(),
            ],
        )
    };
    let (code, _, err) = run_on(&file);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me\n");
    let deep = dir.join("a/b/ctl.sock");
    let (code, _, err) = run_on(&deep);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("does not exist"), "{err}");
    assert!(!dir.join("a").exists(), "no directory created");
    // A socket nobody listens on, ours: replaced.
    let stale = dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let (code, _, err) = run_on(&stale);
    assert_eq!(code, 0, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 16, item 8: the config file must be a regular file of at most
/// 1 MiB. The commands run with a 1 GiB address-space limit (prlimit), so
/// that a regression fails this test instead of exhausting the machine's
/// memory on /dev/zero.
#[test]
fn config_must_be_a_small_regular_file() {
    let dir = std::env::temp_dir().join(format!("xdpip-bigconf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big.toml");
    std::fs::write(&big, "# padding\n".repeat(200_000)).unwrap();
    for (path, says) in [
        ("/dev/zero", "is not a regular file"),
        (big.to_str().unwrap(), "is larger than 1048576 bytes"),
        (dir.to_str().unwrap(), "is not a regular file"),
    ] {
        let out = std::process::Command::new("prlimit")
            .args(["--as=1073741824", "--", XDPIP, "run", "--config", path])
            .output()
            .expect("prlimit (Debian package util-linux)");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{path}: {err}");
        assert!(err.contains(says), "{path}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 16, item 10: a bad `xdpip sysctl` is a usage error (status 2);
/// a user the control socket's permissions keep out is told so, not that
/// the engine is not running.
#[test]
fn sysctl_usage_errors_exit_2_and_permission_denied_is_said() {
    let t = topology();
    let engine = start(&t, &[]);
    for (args, says) in [
        (
            ["sysctl", "ip_default_ttl=0"],
            "bad value \"0\" for ip_default_ttl",
        ),
        (["sysctl", "no_such_thing=1"], "unknown sysctl"),
        (["sysctl", "no_such_thing"], "unknown sysctl"),
    ] {
        let (code, _, err) = xdpip(&t.dut, &args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let out = t
        .dut
        .command("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            XDPIP,
            "stats",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("permission denied"), "{err}");
    assert!(!err.contains("is `xdpip run` running"), "{err}");
    stop(engine);
}

/// Issue 16, item 4: the echo responder follows `icmp_echo_ignore_all`
/// while it runs, from the namespace and from `xdpip sysctl`.
#[test]
fn echo_responder_follows_icmp_echo_ignore_all_at_run_time() {
    let t = topology();
    let engine = start(&t, &[]);
    let ping_dut = || {
        t.gen
            .exec(&["ping", "-c", "1", "-W", "1", "10.1.0.2"])
            .is_ok()
    };
    // The engine has it once its snapshot shows it (read once a second).
    let in_force = |v: &str| {
        let want = format!("net.ipv4.icmp_echo_ignore_all = {v}");
        (0..50).any(|_| {
            let (_, out, _) = xdpip(&t.dut, &["sysctl", "icmp_echo_ignore_all"]);
            out.contains(&want) || {
                std::thread::sleep(Duration::from_millis(100));
                false
            }
        })
    };
    assert!(ping_dut(), "answered");
    t.dut.sysctl("net.ipv4.icmp_echo_ignore_all", "1").unwrap();
    assert!(in_force("1"));
    assert!(!ping_dut(), "ignored, as the kernel ignores it");
    let (code, _, err) = xdpip(&t.dut, &["sysctl", "icmp_echo_ignore_all=0"]);
    assert_eq!(code, 0, "{err}");
    assert!(ping_dut(), "answered again");
    let report = stop(engine);
    assert!(
        report["drops"]["icmp_echo_ignore_all"].as_u64().unwrap() >= 1,
        "{report}"
    );
    assert!(
        report["mib"]["IcmpOutEchoReps"].as_u64().unwrap() >= 2,
        "{report}"
    );
}

/// Issue 16, item 12: through the engine, as through the kernel router,
/// no ping is lost to a neighbour learned on the way. Fresh neighbour
/// tables on all three hosts: the first request finds no neighbour
/// anywhere. (Fails until the worker hands such packets to the kernel or
/// holds them: issue 12.)
#[test]
fn first_packets_to_new_neighbours_are_not_lost() {
    require_root();
    let t = Topology::gen_dut_sink(1).expect("topology");
    let engine = start(&t, &[]);
    for ns in [&t.gen, &t.dut, &t.sink] {
        ns.ip(&["neigh", "flush", "all"]).unwrap();
        let left = ns.ip(&["-4", "neigh", "show"]).unwrap();
        assert!(
            left.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&left.stdout)
        );
    }
    let out = t
        .gen
        .command("ping")
        .args(["-c", "3", "-W", "2", "10.2.0.2"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let report = stop(engine);
    assert!(
        text.contains("3 packets transmitted, 3 received"),
        "{text}\nengine: drops {} xdp {}",
        report["drops"],
        report["xdp"]
    );
}
