//! The official MCP conformance suite (npm `@modelcontextprotocol/conformance`, pinned in
//! tests/node/package.json), its reference server (tests/node/conformance/server.mjs), and a
//! plain-HTTP front proxy that presents an agent's certificate to the gateway (the suite
//! speaks plain HTTP and cannot present one itself).
//!
//! Nothing is optional: no node, no installed package, no Envoy fails the test with the fix.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::{free_port, repo_root, Stack};

fn node_dir() -> PathBuf {
    let dir = repo_root().join("tests/node");
    assert!(
        dir.join("node_modules/@modelcontextprotocol/conformance").is_dir(),
        "the conformance suite is not installed in {}: run scripts/setup.sh (npm ci in tests/node)",
        dir.display()
    );
    dir
}

fn node() -> Command {
    let status = Command::new("node").arg("--version").output();
    assert!(status.is_ok_and(|o| o.status.success()), "node is missing: install Node.js 20 or newer");
    let mut cmd = Command::new("node");
    cmd.current_dir(node_dir());
    cmd
}

/// A child process killed (with its group) when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The reference server, on a free loopback port.
pub struct ReferenceServer {
    _child: Killed,
    pub url: String,
}

impl ReferenceServer {
    pub fn start() -> Self {
        let mut child = node()
            .args(["conformance/server.mjs", "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the reference server");
        let stdout = child.stdout.take().expect("stdout");
        let child = Killed(child);
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("reading the reference server's port");
        let port: u16 = line.trim().strip_prefix("listening ").and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("reference server said {line:?}"));
        Self { _child: child, url: format!("http://127.0.0.1:{port}/mcp") }
    }
}

/// Every server scenario of the suite against `url`: scenario → (pass, detail). The raw
/// results are also written to `out`.
pub fn run_suite(url: &str, out: &Path) -> BTreeMap<String, (bool, String)> {
    let status = node()
        .args(["conformance/run.mjs", "--url", url, "--timeout", "30", "--out"])
        .arg(out)
        .status()
        .expect("running the conformance suite");
    assert!(status.success(), "the conformance suite could not run against {url}");
    let results: Value = serde_json::from_slice(&std::fs::read(out).expect("suite results")).expect("suite results JSON");
    let scenarios = results["scenarios"].as_object().expect("scenarios");
    assert!(!scenarios.is_empty(), "the suite reported no scenarios");
    scenarios
        .iter()
        .map(|(name, r)| (name.clone(), (r["pass"].as_bool().unwrap_or(false), r["detail"].as_str().unwrap_or_default().to_owned())))
        .collect()
}

/// A second Envoy: plain HTTP on loopback in, the gateway out over mTLS with `agent`'s
/// certificate. Test scaffolding only: it stands in for an agent that holds its own SVID.
pub struct FrontProxy {
    _child: Killed,
    pub url: String,
}

impl FrontProxy {
    pub fn start(stack: &Stack, agent: &str) -> Self {
        let listen = free_port();
        let certs = stack.certs();
        let config = front_config(listen, stack.listen, &certs.join(format!("agents/{agent}.pem")), &certs.join(format!("agents/{agent}-key.pem")), &certs.join("ca.pem"));
        let path = stack.state.path().join(format!("front-{agent}.yaml"));
        std::fs::write(&path, config).expect("front proxy config");
        let envoy = portcullis_runner::devstack::envoy_config::find_envoy(&repo_root(), &|k| std::env::var(k).ok()).expect("Envoy (scripts/setup.sh installs it)");
        let log = std::fs::File::create(stack.state.path().join(format!("front-{agent}.log"))).expect("front log");
        let child = Command::new(envoy)
            .arg("-c")
            .arg(&path)
            .args(["--disable-hot-restart", "--concurrency", "1", "-l", "warning"])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting the front proxy");
        let child = Killed(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(listen).is_err() {
            assert!(std::time::Instant::now() < deadline, "the front proxy did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { _child: child, url: format!("http://{listen}/mcp") }
    }
}

fn front_config(listen: SocketAddr, gateway: SocketAddr, cert: &Path, key: &Path, ca: &Path) -> String {
    format!(
        r#"static_resources:
  listeners:
    - name: front
      address: {{ socket_address: {{ address: {la}, port_value: {lp} }} }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: front
                stream_idle_timeout: 300s
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                        - match: {{ prefix: "/" }}
                          route: {{ cluster: gateway, timeout: 0s }}
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
    - name: gateway
      type: STATIC
      connect_timeout: 2s
      load_assignment:
        cluster_name: gateway
        endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: {ga}, port_value: {gp} }} }} }} }}] }}]
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          sni: localhost
          common_tls_context:
            tls_params: {{ tls_minimum_protocol_version: TLSv1_3, tls_maximum_protocol_version: TLSv1_3 }}
            tls_certificates: [{{ certificate_chain: {{ filename: "{cert}" }}, private_key: {{ filename: "{key}" }} }}]
            validation_context: {{ trusted_ca: {{ filename: "{ca}" }} }}
"#,
        la = listen.ip(),
        lp = listen.port(),
        ga = gateway.ip(),
        gp = gateway.port(),
        cert = cert.display(),
        key = key.display(),
        ca = ca.display(),
    )
}
