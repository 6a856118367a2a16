//! End-to-end test support: starts the real stack (`portcullis up`: Envoy with the wasm
//! filter, and the runner) on free loopback ports, and builds clients with agent certificates.
//!
//! Nothing here is mocked. A missing Envoy, filter or runner binary fails loudly.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub mod backend_suite;
pub mod conformance;
pub mod h2raw;
pub mod kube;
pub mod mcp;
pub mod netns;
pub mod otlp;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().expect("repo root")
}

/// The `portcullis` binary built by `make build` (release), or `$PORTCULLIS_BIN`.
pub fn portcullis_bin() -> PathBuf {
    let bin = std::env::var_os("PORTCULLIS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/release/portcullis"));
    assert!(bin.is_file(), "{} is missing: run `make build` (or `make test`) first", bin.display());
    bin
}

pub fn wasm_path() -> PathBuf {
    let wasm = repo_root().join("target/wasm32-wasip1/wasm/portcullis_filter.wasm");
    assert!(wasm.is_file(), "{} is missing: run `make build` first", wasm.display());
    wasm
}

pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port")
}

/// A running stack. Dropping it closes `up`'s stdin, which stops Envoy and the runner.
pub struct Stack {
    child: Child,
    stdin: Option<ChildStdin>,
    pub listen: SocketAddr,
    pub runner: SocketAddr,
    /// Envoy's admin API: a Unix socket in the state dir.
    pub admin: PathBuf,
    pub state: tempfile::TempDir,
    pub ready_after: Duration,
    stdout_log: PathBuf,
    args: Vec<String>,
    /// An Envoy left running by [`Stack::kill_runner`], killed on drop.
    orphan_envoy: Option<i32>,
}

impl Stack {
    /// Starts `portcullis up` with the repository's policies and example catalog.
    pub fn start() -> Stack {
        Self::start_with(&[])
    }

    pub fn start_with(extra_args: &[&str]) -> Stack {
        let state = tempfile::Builder::new().prefix("portcullis-e2e-").tempdir().expect("tempdir");
        let args = extra_args.iter().map(|a| (*a).to_owned()).collect();
        Self::spawn(state, free_port(), free_port(), args)
    }

    /// Starts `portcullis up` on a state dir the caller prepared (e.g. a small file system
    /// mounted on its `audit/`).
    pub fn start_in(state: tempfile::TempDir, extra_args: &[&str]) -> Stack {
        let args = extra_args.iter().map(|a| (*a).to_owned()).collect();
        Self::spawn(state, free_port(), free_port(), args)
    }

    /// The pid of `up` (the runner's process; job dirs carry it in their names).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The pid of the Envoy that `up` started.
    pub fn envoy_pid(&self) -> i32 {
        let up = self.child.id();
        let tasks = std::fs::read_dir(format!("/proc/{up}/task")).expect("up's tasks");
        let children = tasks.flatten().flat_map(|t| std::fs::read_to_string(t.path().join("children")).unwrap_or_default().split_whitespace().filter_map(|p| p.parse::<i32>().ok()).collect::<Vec<_>>());
        let envoy = children.into_iter().find(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "envoy"));
        envoy.unwrap_or_else(|| panic!("no envoy among the children of up ({up})"))
    }

    /// SIGKILLs `up` alone, as a crash of the runner: Envoy (its child, not killed with it)
    /// stays up with no runner behind it. Envoy is killed when the stack is dropped.
    pub fn kill_runner(&mut self) {
        let envoy = self.envoy_pid();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::Signal::SIGKILL).expect("SIGKILL up");
        let _ = self.child.wait();
        self.orphan_envoy = Some(envoy);
    }

    /// SIGKILLs Envoy alone; `up` sees it die and stops the runner. Then starts the stack
    /// again on the same state dir, ports and arguments.
    pub fn kill_envoy_and_restart(self) -> Stack {
        let envoy = nix::unistd::Pid::from_raw(self.envoy_pid());
        nix::sys::signal::kill(envoy, nix::sys::signal::Signal::SIGKILL).expect("SIGKILL envoy");
        self.restart()
    }

    /// Kills `up` with SIGKILL (and with it, in one process group, Envoy and every job), then
    /// starts it again on the same state dir, ports and arguments: a crash and a restart.
    pub fn kill_and_restart(self) -> Stack {
        let pgid = nix::unistd::Pid::from_raw(-(self.child.id() as i32));
        nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGKILL).expect("SIGKILL the stack");
        self.restart()
    }

    /// Waits for `up` to exit, then starts it again on the same state dir, ports, arguments.
    fn restart(mut self) -> Stack {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !matches!(self.child.try_wait(), Ok(Some(_))) {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("portcullis up did not exit within 20 s of its crash:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let (listen, runner, args) = (self.listen, self.runner, std::mem::take(&mut self.args));
        let state = std::mem::replace(&mut self.state, tempfile::tempdir().expect("tempdir"));
        std::mem::forget(self);
        Self::spawn(state, listen, runner, args)
    }

    fn spawn(state: tempfile::TempDir, listen: SocketAddr, runner: SocketAddr, args: Vec<String>) -> Stack {
        use std::os::unix::process::CommandExt;
        let admin = state.path().join(portcullis_runner::devstack::up::ADMIN_SOCKET);
        let root = repo_root();
        let stdout_log = state.path().join("up.log");
        let started = Instant::now();
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(state.path().join("up.stderr")).expect("stderr log");
        let mut child = Command::new(portcullis_bin())
            .current_dir(&root)
            .args(["up", "--stop-on-stdin-eof", "--root"])
            .arg(&root)
            .arg("--state-dir")
            .arg(state.path())
            .args(["--listen", &listen.to_string(), "--runner-listen", &runner.to_string()])
            .arg("--wasm")
            .arg(wasm_path())
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            // Its own process group: a test can kill the whole stack at once, as a crash would.
            .process_group(0)
            .spawn()
            .expect("spawning portcullis up");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        let log = stdout_log.clone();
        std::thread::spawn(move || {
            let mut out = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("up.log");
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                use std::io::Write;
                let _ = writeln!(out, "{line}");
                if line.starts_with("portcullis ready") {
                    let _ = tx.send(());
                }
            }
        });
        let mut stack = Stack { child, stdin, listen, runner, admin, state, ready_after: Duration::ZERO, stdout_log, args, orphan_envoy: None };
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(()) => stack.ready_after = started.elapsed(),
            Err(_) => panic!("portcullis up did not become ready:\n{}", stack.logs()),
        }
        stack
    }

    pub fn url(&self) -> String {
        format!("https://{}/mcp", self.listen)
    }

    pub fn runner_url(&self) -> String {
        format!("https://{}/mcp", self.runner)
    }

    pub fn certs(&self) -> PathBuf {
        self.state.path().join("certs")
    }

    /// PEM identity (key + certificate) of a dev agent, or of `gateway` / `runner`.
    pub fn identity_pem(&self, name: &str) -> Vec<u8> {
        let dir = self.certs();
        let (cert, key) = match name {
            "gateway" | "runner" => (dir.join(format!("{name}.pem")), dir.join(format!("{name}-key.pem"))),
            agent => (dir.join(format!("agents/{agent}.pem")), dir.join(format!("agents/{agent}-key.pem"))),
        };
        let mut pem = std::fs::read(key).expect("key");
        pem.extend(std::fs::read(cert).expect("cert"));
        pem
    }

    /// An HTTPS client trusting the dev CA, presenting `identity` (an agent name, `gateway`),
    /// or no client certificate at all.
    pub fn http_client(&self, identity: Option<&str>) -> reqwest::Client {
        self.client_builder(identity).build().expect("client")
    }

    /// Like [`Stack::http_client`], without an overall time limit per request (for event
    /// streams that must stay open).
    pub fn streaming_client(&self, identity: &str) -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = reqwest::Certificate::from_pem(&std::fs::read(self.certs().join("ca.pem")).expect("ca")).expect("ca pem");
        let id = reqwest::Identity::from_pem(&self.identity_pem(identity)).expect("identity");
        reqwest::Client::builder().tls_certs_only([ca]).identity(id).build().expect("client")
    }

    /// Like [`Stack::http_client`], speaking HTTP/1.1 only (the default client negotiates
    /// HTTP/2 with the gateway).
    pub fn http1_client(&self, identity: Option<&str>) -> reqwest::Client {
        self.client_builder(identity).http1_only().build().expect("client")
    }

    fn client_builder(&self, identity: Option<&str>) -> reqwest::ClientBuilder {
        // reqwest is built without a bundled crypto provider (Cargo.toml): use ring, as the
        // runner does. Installing twice is harmless; the first one stays.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = reqwest::Certificate::from_pem(&std::fs::read(self.certs().join("ca.pem")).expect("ca")).expect("ca pem");
        let mut b = reqwest::Client::builder().tls_certs_only([ca]).timeout(Duration::from_secs(60));
        if let Some(name) = identity {
            b = b.identity(reqwest::Identity::from_pem(&self.identity_pem(name)).expect("identity"));
        }
        b
    }

    /// Like [`Stack::http_client`], and every request carries `authorization` (e.g. a user's
    /// `Bearer` token; the official MCP clients send it this way too).
    pub fn http_client_with_authorization(&self, identity: &str, authorization: &str) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, authorization.parse().expect("header value"));
        self.client_builder(Some(identity)).default_headers(headers).build().expect("client")
    }

    /// A user token from this stack's dev issuer (the code behind `portcullis token`).
    pub fn user_token(&self, sub: &str, groups: &[&str], audience: &str, expires_in: i64) -> String {
        use portcullis_runner::devstack::users::{mint, DevIssuer, TokenRequest};
        let groups = groups.iter().map(|g| (*g).to_owned()).collect();
        let request = TokenRequest { sub: sub.to_owned(), groups, audience: audience.to_owned(), expires_in };
        mint(&DevIssuer::in_dir(&self.certs()), &request).expect("user token")
    }

    /// A valid token for `sub` in `group`, for the dev audience, good for ten minutes.
    pub fn user(&self, sub: &str, group: &str) -> String {
        self.user_token(sub, &[group], "portcullis", 600)
    }

    pub fn envoy_log(&self) -> String {
        std::fs::read_to_string(self.state.path().join("envoy.log")).unwrap_or_default()
    }

    /// Envoy's access log: one JSON line per request, with the filter's decision record.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.state.path().join("access.log")).unwrap_or_default()
    }

    /// Runner (and `up`) log: tracing output on stderr.
    pub fn runner_log(&self) -> String {
        std::fs::read_to_string(self.state.path().join("up.stderr")).unwrap_or_default()
    }

    pub fn logs(&self) -> String {
        format!(
            "--- up stdout\n{}\n--- up stderr\n{}\n--- envoy\n{}",
            std::fs::read_to_string(&self.stdout_log).unwrap_or_default(),
            self.runner_log(),
            self.envoy_log()
        )
    }

    /// `GET path` on Envoy's admin API (its Unix socket); the whole HTTP response.
    pub fn admin_get(&self, path: &str) -> String {
        let mut s = std::os::unix::net::UnixStream::connect(&self.admin).expect("admin socket");
        use std::io::Write;
        write!(s, "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").expect("admin write");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(envoy) = self.orphan_envoy.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(envoy), nix::sys::signal::Signal::SIGKILL);
        }
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
