//! The control socket: `xdpip stats`, `routes`, `neigh` and `sysctl` talk
//! to a running engine over a Unix socket that only its owner may use.
//!
//! One JSON request per line, one JSON answer per line:
//! `{"cmd":"stats"}` → `{"ok":true,"result":{...}}` or
//! `{"ok":false,"error":"..."}`.

use super::View;
use crate::fib::RouteKind;
use crate::neigh::nud;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A request to the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    /// Every counter ([`crate::Report`]).
    Stats,
    /// The routes the engine forwards by.
    Routes,
    /// The neighbours it knows.
    Neigh,
    /// The tunables, and optionally set one (`name=value`).
    Sysctl {
        /// `name=value` to set.
        #[serde(default)]
        set: Option<String>,
    },
}

/// The runtime directory, the only directory the engine creates (owner
/// only) for its control sockets.
pub const RUNTIME_DIR: &str = "/run/xdpip";

/// The socket of the engine serving the current network namespace:
/// `/run/xdpip/net-<inode>.sock`, the inode being that of the namespace, so
/// that engines in different namespaces do not meet.
pub fn default_socket_path() -> io::Result<PathBuf> {
    let link = std::fs::read_link("/proc/thread-self/ns/net")?;
    let s = link.to_string_lossy();
    let ino: String = s.chars().filter(|c| c.is_ascii_digit()).collect();
    Ok(PathBuf::from(format!("{RUNTIME_DIR}/net-{ino}.sock")))
}

/// Binds the control socket at `path`, owner-only.
///
/// Only a stale socket of ours (a socket file owned by this user that no
/// engine answers on) is replaced: a live one, a socket of another user
/// and anything that is not a socket are refused and left alone. A missing
/// directory is created only if it is [`RUNTIME_DIR`].
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let shown = path.display();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.exists() {
        if dir != Path::new(RUNTIME_DIR) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "directory {} does not exist (only {RUNTIME_DIR} is created)",
                    dir.display()
                ),
            ));
        }
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) => {
            if !m.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{shown} exists and is not a socket: left alone"),
                ));
            }
            // SAFETY: geteuid has no preconditions.
            if m.uid() != unsafe { libc::geteuid() } {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("{shown} is a socket of uid {}: left alone", m.uid()),
                ));
            }
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{shown} is served by another running xdpip"),
                ));
            }
            std::fs::remove_file(path)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io::Error::new(e.kind(), format!("{shown}: {e}"))),
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Sends one request to the engine at `path` and returns its result.
///
/// ```no_run
/// use xdpip::control::api::{default_socket_path, request, Request};
/// let stats = request(&default_socket_path()?, &Request::Stats)?;
/// println!("{}", stats["mib"]["ForwDatagrams"]);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn request(path: &Path, req: &Request) -> io::Result<Value> {
    let mut s = UnixStream::connect(path).map_err(|e| {
        let msg = if e.kind() == io::ErrorKind::PermissionDenied {
            // The socket (0600) or its directory (0700) belongs to the
            // engine's user: the engine may well be running.
            format!(
                "permission denied on the control socket {} ({e}): it belongs to the user \
                 the engine runs as; ask as that user or as root",
                path.display()
            )
        } else {
            format!(
                "no engine answers at {} ({e}): is `xdpip run` running in this network namespace?",
                path.display()
            )
        };
        io::Error::new(e.kind(), msg)
    })?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = serde_json::to_string(req).map_err(io::Error::other)?;
    line.push('\n');
    s.write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer)?;
    let v: Value = serde_json::from_str(&answer).map_err(io::Error::other)?;
    if v["ok"] == true {
        Ok(v["result"].clone())
    } else {
        Err(io::Error::other(
            v["error"]
                .as_str()
                .unwrap_or("the engine refused")
                .to_string(),
        ))
    }
}

/// Answers requests until `stop` is set; removes the socket file then.
pub(crate) fn serve(
    listener: UnixListener,
    path: PathBuf,
    shared: Arc<dyn View>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = answer(stream, &*shared) {
                    log::debug!("control socket: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                log::warn!("control socket: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    let _ = std::fs::remove_file(&path);
}

fn answer(stream: UnixStream, shared: &dyn View) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(req) => match handle(req, shared) {
            Ok(result) => json!({"ok": true, "result": result}),
            Err(e) => json!({"ok": false, "error": e}),
        },
        Err(e) => json!({"ok": false, "error": format!("bad request: {e}")}),
    };
    let mut out = serde_json::to_string(&reply).map_err(io::Error::other)?;
    out.push('\n');
    (&stream).write_all(out.as_bytes())
}

fn state_name(s: u16) -> &'static str {
    match s {
        nud::INCOMPLETE => "INCOMPLETE",
        nud::REACHABLE => "REACHABLE",
        nud::STALE => "STALE",
        nud::DELAY => "DELAY",
        nud::PROBE => "PROBE",
        nud::FAILED => "FAILED",
        nud::NOARP => "NOARP",
        nud::PERMANENT => "PERMANENT",
        _ => "NONE",
    }
}

fn dev(ifindex: u32) -> String {
    crate::iface::name_of(ifindex).unwrap_or_else(|| format!("if{ifindex}"))
}

fn handle(req: Request, shared: &dyn View) -> Result<Value, String> {
    match req {
        Request::Stats => serde_json::to_value(shared.report()).map_err(|e| e.to_string()),
        Request::Routes => {
            let snap = shared.snapshot();
            let mut routes: Vec<Value> = Vec::new();
            // The main table, as `ip route` lists it (the local table's
            // routes share the FIB but are the kernel's own).
            for r in snap.fib.routes().filter(|r| !r.kind.is_local_table()) {
                routes.push(json!({
                    "prefix": format!("{}/{}", r.prefix, r.len),
                    "kind": match r.kind {
                        RouteKind::Unicast => "unicast",
                        RouteKind::Local => "local",
                        RouteKind::Broadcast => "broadcast",
                        RouteKind::Blackhole => "blackhole",
                        RouteKind::Unreachable => "unreachable",
                        RouteKind::Prohibit => "prohibit",
                    },
                    "metric": r.metric,
                    "nexthops": r.nexthops.iter().map(|n| json!({
                        "gateway": n.gateway.map(|g| g.to_string()),
                        "dev": dev(n.ifindex),
                        "weight": n.weight,
                    })).collect::<Vec<_>>(),
                }));
            }
            routes.sort_by_key(|r| r["prefix"].as_str().unwrap_or("").to_string());
            Ok(Value::from(routes))
        }
        Request::Neigh => {
            let snap = shared.snapshot();
            let mut v: Vec<Value> = snap
                .neigh
                .iter()
                .map(|(ifindex, ip, n)| {
                    json!({
                        "ip": ip.to_string(),
                        "dev": dev(ifindex),
                        "mac": n.mac.to_string(),
                        "state": state_name(n.state),
                    })
                })
                .collect();
            v.sort_by_key(|n| (n["dev"].to_string(), n["ip"].to_string()));
            Ok(Value::from(v))
        }
        Request::Sysctl { set } => {
            if let Some(a) = set {
                let (n, v) = a
                    .split_once('=')
                    .ok_or_else(|| format!("{a:?} is not name=value"))?;
                shared
                    .set_sysctl(n.trim(), v.trim())
                    .map_err(|e| e.to_string())?;
                // The control thread publishes within 100 ms; answer with
                // what is in force once it has.
                std::thread::sleep(Duration::from_millis(200));
            }
            let s = shared.snapshot().sysctl;
            let mut m = serde_json::Map::new();
            for t in super::sysctl::TUNABLES {
                if let Some(v) = super::sysctl::get(&s, t.name) {
                    m.insert(t.name.to_string(), Value::from(v.to_string()));
                }
            }
            Ok(Value::Object(m))
        }
    }
}
