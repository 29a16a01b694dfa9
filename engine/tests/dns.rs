//! The DNS responder example (`examples/dns_responder`, engine sockets)
//! against Knot DNS serving the same zone, side by side in dut: Knot on a
//! kernel socket on port 5300, the responder on the engine's port 53. A
//! sample of queries from gen, by `kdig` and as raw datagrams, must get
//! the same answers from both: from the responder answering in the
//! engine's workers (its default, `UdpSocket::serve`), and from the one
//! answering on a thread through the socket's queues (`--mode in-place`).
//!
//! Needs root, `knotd` and `kdig` (Debian's knot and knot-dnsutils;
//! `cargo xtask test` installs them), and the example built (`cargo test`
//! builds examples).

#![cfg(feature = "datapath-tests")]

use std::net::UdpSocket as StdUdp;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use testbed::{in_ns, require_root, Child, Topology};

const ZONE: &str = include_str!("../examples/dns/example.test.zone");
const KNOT_PORT: &str = "5300";

fn example(name: &str) -> PathBuf {
    let p = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("examples").join(name))
        .unwrap();
    assert!(
        p.exists(),
        "{} missing: build with `cargo test --examples` or `cargo xtask test`",
        p.display()
    );
    p
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Knot's files, removed on drop.
struct KnotDir(PathBuf);

impl Drop for KnotDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts knotd in dut on a kernel socket, 10.1.0.2:5300, serving the
/// example zone; `tag` keeps the files of two tests apart.
fn start_knot(t: &Topology, tag: &str) -> (Child, KnotDir) {
    let dir =
        KnotDir(std::env::temp_dir().join(format!("xdpip-dnstest-{}-{tag}", std::process::id())));
    let d = &dir.0;
    std::fs::create_dir_all(d.join("run")).unwrap();
    std::fs::create_dir_all(d.join("db")).unwrap();
    std::fs::write(d.join("example.test.zone"), ZONE).unwrap();
    let conf = format!(
        "server:\n    rundir: {r}/run\n    listen: 10.1.0.2@{KNOT_PORT}\n\
         database:\n    storage: {r}/db\n\
         log:\n  - target: stderr\n    any: info\n\
         zone:\n  - domain: example.test\n    file: {r}/example.test.zone\n    \
         zonefile-sync: -1\n    journal-content: none\n",
        r = d.display()
    );
    std::fs::write(d.join("knot.conf"), conf).unwrap();
    let mut cmd = t.dut.command("knotd");
    cmd.arg("-c").arg(d.join("knot.conf"));
    (Child::spawn(cmd).expect("knotd starts"), dir)
}

/// `kdig` from gen: the sections as kdig prints them, without what differs
/// between two servers' answers to the same question (ID, size, time,
/// server address).
fn kdig(t: &Topology, port: &str, args: &[&str]) -> String {
    let out = t
        .gen
        .command("kdig")
        .args(["@10.1.0.2", "-p", port, "+timeout=2", "+retry=1"])
        .args(args)
        .args([
            "+noall",
            "+header",
            "+question",
            "+answer",
            "+authority",
            "+additional",
            "+opt",
        ])
        .output()
        .expect("kdig runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter(|l| !l.starts_with(";; Received") && !l.starts_with(";; From"))
        .filter(|l| !l.starts_with(";; Time") && !l.is_empty())
        .map(|l| match l.find("id: ") {
            Some(i) => format!("{}id: _", &l[..i]),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until a server answers www.example.test.
fn wait_ready(t: &Topology, port: &str, server: &Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !kdig(t, port, &["www.example.test", "A"]).contains("192.0.2.80") {
        assert!(
            Instant::now() < deadline,
            "no answer on port {port}\nstdout:\n{}\nstderr:\n{}",
            server.stdout().join("\n"),
            server.stderr().join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A query in wire format: ID 0xabcd, RD, one question of class IN.
fn query(name: &str, qtype: u16) -> Vec<u8> {
    let mut q = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in name.split('.') {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// Malformed or unusual queries no kdig option sends.
fn raw_cases() -> Vec<(&'static str, Vec<u8>)> {
    let www = query("www.example.test", 1);
    let opt = [0u8, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0];
    let with_ar = |n: u8, extra: &[u8]| {
        let mut q = www.clone();
        q[11] = n;
        q.extend_from_slice(extra);
        q
    };
    vec![
        ("no question", {
            let mut q = www[..12].to_vec();
            q[5] = 0;
            q
        }),
        ("question cut short", www[..18].to_vec()),
        ("shorter than a header", www[..4].to_vec()),
        ("two questions", {
            let mut q = www.clone();
            q[5] = 2;
            q
        }),
        ("a response", {
            let mut q = www.clone();
            q[2] |= 0x80;
            q
        }),
        ("opcode 3", {
            let mut q = www.clone();
            q[2] = 0x18;
            q
        }),
        ("bytes after the question", {
            let mut q = www.clone();
            q.extend_from_slice(&[1, 2]);
            q
        }),
        ("ARCOUNT 1, no record", with_ar(1, &[])),
        ("two OPT records", with_ar(2, &[opt, opt].concat())),
        ("compression pointer as question", {
            let mut q = www[..12].to_vec();
            q.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
            q
        }),
        ("mixed case", query("WwW.ExAmple.test", 1)),
    ]
}

/// What a server sends back to a raw query from gen, or None.
fn ask_raw(t: &Topology, port: u16, q: &[u8]) -> Option<Vec<u8>> {
    in_ns(t.gen.name(), || {
        let s = StdUdp::bind("10.1.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 1500];
        // One retry: the engine's worker may sleep between two queries.
        for _ in 0..2 {
            s.send_to(q, ("10.1.0.2", port)).unwrap();
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                return Some(buf[..n].to_vec());
            }
        }
        None
    })
}

#[test]
fn responder_answers_as_knot_does() {
    answers_as_knot_does(&[], "worker");
}

#[test]
fn responder_on_a_thread_answers_as_knot_does() {
    answers_as_knot_does(&["--mode", "in-place"], "in-place");
}

/// Runs the responder with `mode_args` (and its tag in the log) against
/// Knot.
fn answers_as_knot_does(mode_args: &[&str], tag: &str) {
    require_root();
    for (tool, package) in [("knotd", "knot"), ("kdig", "knot-dnsutils")] {
        assert!(
            have(tool),
            "{tool} missing: apt-get install {package}, or `cargo xtask test`"
        );
    }
    let responder = example("dns_responder");
    let t = Topology::gen_dut_sink(1).expect("topology");
    assert!(t.warm_up(), "the kernel router itself does not forward");

    let (mut knot, _dir) = start_knot(&t, tag);
    let mut cmd = t.dut.command(responder.to_str().unwrap());
    cmd.args(["-i", "eth0", "--bind", "0.0.0.0:53"])
        .args(mode_args);
    let mut engine = Child::spawn(cmd).unwrap();
    let line = engine
        .wait_for_line(Duration::from_secs(30), |l| l.contains("serving"))
        .expect("dns_responder start");
    // The mode asked for is the one that runs.
    assert_eq!(line.contains("worker(s)"), tag == "worker", "{line}");
    wait_ready(&t, KNOT_PORT, &knot);
    wait_ready(&t, "53", &engine);

    // Port 53 is the engine's: no kernel socket of dut holds it.
    let ss = t.dut.exec(&["ss", "-ulpn"]).expect("ss");
    let ss = String::from_utf8_lossy(&ss.stdout);
    assert!(
        !ss.lines().any(|l| l.contains(":53 ")),
        "a kernel socket holds UDP port 53 in dut:\n{ss}"
    );

    let sample: &[&[&str]] = &[
        &["www.example.test", "A"],
        &["nope.example.test", "A"],
        &["www.example.test", "AAAA"],
        &["b.example.test", "A"],
        &["sub.www.example.test", "A"],
        &["example.test", "SOA"],
        &["example.test", "NS"],
        &["example.test", "MX"],
        &["mail.example.test", "AAAA"],
        &["www.example.test", "TXT"],
        &["ftp.example.test", "A"],
        &["other.test", "A"],
        &["example.test", "CH", "TXT"],
        &["www.example.test", "A", "+norecurse"],
        &["www.example.test", "A", "+edns"],
        &["nope.example.test", "A", "+dnssec"],
        &["www.example.test", "A", "+edns=1"],
        &["www.example.test", "A", "+bufsize=4096"],
    ];
    let mut mismatches = Vec::new();
    // Twice: the second time every answer comes from the responder's
    // packet cache, with the new query's ID.
    for pass in ["built", "cached"] {
        for args in sample {
            let k = kdig(&t, KNOT_PORT, args);
            let e = kdig(&t, "53", args);
            assert!(
                k.contains("->>HEADER<<-"),
                "Knot gave no answer to {args:?}:\n{k}"
            );
            if k != e {
                mismatches.push(format!(
                    "{args:?} ({pass})\n--- knot:\n{k}\n--- engine:\n{e}"
                ));
            }
        }
    }
    for (what, q) in raw_cases() {
        let k = ask_raw(&t, 5300, &q);
        let e = ask_raw(&t, 53, &q);
        if k != e {
            mismatches.push(format!(
                "{what}: knot {:02x?}\nengine {:02x?}",
                k.as_deref(),
                e.as_deref()
            ));
        }
    }

    engine.signal(libc::SIGTERM);
    engine
        .wait(Duration::from_secs(10))
        .expect("responder exits");
    knot.signal(libc::SIGTERM);
    let _ = knot.wait(Duration::from_secs(10));
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));

    // The malformed queries were counted: FORMERR answered (no question,
    // trailing bytes, ARCOUNT without a record, two OPT), dropped (cut
    // short, too short, two questions, a response, a pointer as name).
    let out = engine.stdout().join("\n");
    let count = |key: &str| -> u64 {
        out.split_whitespace()
            .skip_while(|w| *w != key)
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in the responder's report:\n{out}"))
    };
    assert_eq!(count("formerr"), 4, "{out}");
    // Each unanswered query was sent twice (ask_raw retries once).
    assert_eq!(count("dropped"), 10, "{out}");
    // The second pass came from the packet cache (and kdig's retries,
    // wait_ready's queries and the raw cases may add hits).
    assert!(count("cached") >= sample.len() as u64, "{out}");
    // The engine counted every query in, and every answer out.
    assert_eq!(count("UdpInDatagrams"), count("queries"), "{out}");
    assert_eq!(
        count("UdpOutDatagrams"),
        count("queries") - count("dropped"),
        "{out}"
    );
}
