//! A child process whose output is collected line by line, killed on drop.

use std::io::{self, BufRead, BufReader};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running child with its stdout and stderr lines.
#[derive(Debug)]
pub struct Child {
    child: std::process::Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    pumps: Vec<std::thread::JoinHandle<()>>,
}

fn pump(
    r: impl io::Read + Send + 'static,
    into: Arc<Mutex<Vec<String>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            match line {
                Ok(l) => into.lock().expect("not poisoned").push(l),
                Err(_) => break,
            }
        }
    })
}

impl Child {
    /// Starts `cmd` with its output piped.
    pub fn spawn(mut cmd: Command) -> io::Result<Child> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let pumps = vec![
            pump(child.stdout.take().expect("piped"), stdout.clone()),
            pump(child.stderr.take().expect("piped"), stderr.clone()),
        ];
        Ok(Child {
            child,
            stdout,
            stderr,
            pumps,
        })
    }

    /// Its pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Stdout lines so far.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().expect("not poisoned").clone()
    }

    /// Stderr lines so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().expect("not poisoned").clone()
    }

    /// Waits until a stdout line satisfies `pred`; returns it. Fails when
    /// the process exits first or `timeout` passes, with its output.
    pub fn wait_for_line(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> io::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.stdout().into_iter().find(|l| pred(l)) {
                return Ok(l);
            }
            if let Some(st) = self.child.try_wait()? {
                std::thread::sleep(Duration::from_millis(100));
                return Err(io::Error::other(format!(
                    "process exited ({st}) before the expected line\nstdout:\n{}\nstderr:\n{}",
                    self.stdout().join("\n"),
                    self.stderr().join("\n")
                )));
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "timed out waiting for a line\nstdout:\n{}\nstderr:\n{}",
                    self.stdout().join("\n"),
                    self.stderr().join("\n")
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Waits for exit up to `timeout`; kills it after that.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait()? {
                // The pipes reach EOF once the process is gone: take every
                // line it wrote before returning.
                for p in self.pumps.drain(..) {
                    let _ = p.join();
                }
                return Ok(st);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return Err(io::Error::other(format!(
                    "process did not exit within {timeout:?}; killed"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
