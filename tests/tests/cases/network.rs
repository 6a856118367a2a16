//! No direct route, shown on a network: the agent, Envoy with the filter, and the runner each
//! in a network namespace of their own, joined by veth pairs through the gateway's:
//!
//!   agent 10.231.1.2 ──veth── 10.231.1.1 gateway 10.231.2.1 ──veth── 10.231.2.2 runner
//!
//! The agent and the runner route everything through the gateway's namespace, which forwards
//! nothing (a new namespace has forwarding off). Each claim is shown both ways: what must
//! connect does, from where it must, and what must not, does not.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use portcullis_e2e::mcp::{open_session, post, tools_call};
use portcullis_e2e::netns::{link, Netns};
use portcullis_e2e::{repo_root, wasm_path};
use portcullis_runner::devstack::envoy_config::{ecds_response, find_envoy, process_env, render, split_for_ecds, AdminAddress, EnvoyParams};
use portcullis_runner::devstack::{certs, reload, up};
use serde_json::{json, Value};

const AGENT: Ipv4Addr = Ipv4Addr::new(10, 231, 1, 2);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 231, 1, 1);
const GATEWAY_TO_RUNNER: Ipv4Addr = Ipv4Addr::new(10, 231, 2, 1);
const RUNNER: Ipv4Addr = Ipv4Addr::new(10, 231, 2, 2);
const LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(GATEWAY), 8443);
const RUNNER_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(RUNNER), 9443);
/// A port on the agent that listens: the sandbox probe shows it unreachable, not merely closed.
const AGENT_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(AGENT), 7000);

/// The probe, run as a sandboxed tool and from a namespace alike: for each `host:port` in
/// `$ARG_TARGETS`, whether a TCP connection opens within 3 s.
/// A closed one names why (bash's error, or a timeout), so a probe that could not run at all
/// does not pass for one that found no route.
const PROBE: &str = r#"for t in $ARG_TARGETS; do if e=$(timeout 3 bash -c "exec 3<>/dev/tcp/${t%:*}/${t##*:}" 2>&1); then echo "$t open"; else echo "$t closed ${e##*: }"; fi; done"#;

/// A child process killed (and reaped) on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The example catalog and a `net_probe` tool (query, low: the reader may call it).
fn catalog_with_probe(dir: &Path) -> PathBuf {
    let mut catalog = portcullis_runner::devstack::bundle::load_catalog_value(&repo_root().join("catalog/example.yaml")).unwrap();
    catalog["tools"].as_array_mut().unwrap().push(json!({
        "name": "net_probe", "description": "Try TCP connections from inside the sandbox.",
        "kind": "query", "risk": "low", "owner": "platform-team",
        "input_schema": {"type": "object", "properties": {"targets": {"type": "string", "pattern": "^[0-9.: ]+$", "maxLength": 200}},
            "required": ["targets"], "additionalProperties": false},
        "execution": {"local": {"command": ["bash", "-c", PROBE], "timeout_seconds": 30}},
    }));
    let path = dir.join("catalog.yaml");
    std::fs::write(&path, catalog.to_string()).unwrap();
    path
}

/// The runner (`portcullis serve`) in `runner`, and Envoy with the filter in `gateway`,
/// configured as `portcullis up` configures them, but on the namespaces' addresses.
fn start(state: &Path, gateway: &Netns, runner: &Netns) -> (Killed, Killed) {
    let root = repo_root();
    certs::prepare_dir(state).unwrap();
    let pki = certs::ensure(&state.join("certs"), up::TRUST_DOMAIN, up::DEV_AGENTS).unwrap();
    let catalog = catalog_with_probe(state);
    let sources = reload::Sources {
        policies: root.join("policies"),
        catalog: catalog.clone(),
        signing_key: pki.ticket_signing_key.clone(),
        settings: None,
        users: portcullis_runner::devstack::users::users_config(None, &pki.user_issuer).unwrap(),
    };
    let built = reload::build(&sources).unwrap();
    let access_log = state.join("access.log");
    std::fs::write(&access_log, "").unwrap();
    let admin = state.join("admin.sock");
    let params = EnvoyParams {
        listen_addr: LISTEN,
        runner_addr: RUNNER_LISTEN,
        admin: AdminAddress::Unix(admin.clone()),
        wasm_path: wasm_path(),
        plugin_config_json: built.json.clone(),
        pki: pki.clone(),
        access_log,
    };
    let template = std::fs::read_to_string(root.join("envoy/envoy.yaml")).unwrap();
    let ecds = state.join(up::ECDS_FILE);
    let split = split_for_ecds(&render(&template, &params).unwrap(), &ecds).unwrap();
    reload::write_ecds(&ecds, &ecds_response(&split.filter, &built.json, &built.version).unwrap()).unwrap();
    let bootstrap = state.join("envoy.yaml");
    std::fs::write(&bootstrap, &split.bootstrap).unwrap();

    let log = |name: &str| std::fs::File::create(state.join(name)).unwrap();
    let runner_proc = runner
        .command(portcullis_e2e::portcullis_bin())
        .args(["serve", "--listen", &RUNNER_LISTEN.to_string(), "--catalog"])
        .arg(&catalog)
        .arg("--policies")
        .arg(root.join("policies"))
        .arg("--ticket-public-key")
        .arg(&pki.ticket_public_key)
        .arg("--tls-cert")
        .arg(&pki.runner.cert)
        .arg("--tls-key")
        .arg(&pki.runner.key)
        .arg("--client-ca")
        .arg(&pki.ca_cert)
        .args(["--gateway-id", &certs::spiffe_id(up::TRUST_DOMAIN, "portcullis", "gateway"), "--state-dir"])
        .arg(state)
        .stdin(Stdio::null())
        .stdout(log("runner.log"))
        .stderr(log("runner.log"))
        .spawn()
        .expect("ip netns exec portcullis serve");
    let runner_proc = Killed(runner_proc);
    let envoy = gateway
        .command(find_envoy(&root, &process_env).unwrap())
        .arg("-c")
        .arg(&bootstrap)
        .args(["--disable-hot-restart", "--concurrency", "1", "-l", "warning", "--component-log-level", "wasm:info"])
        .stdin(Stdio::null())
        .stdout(log("envoy.log"))
        .stderr(log("envoy.log"))
        .spawn()
        .expect("ip netns exec envoy");
    let envoy = Killed(envoy);
    // Ready: the gateway's namespace reaches both listeners, and the filter is configured.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(gateway.connects(LISTEN) && gateway.connects(RUNNER_LISTEN) && std::fs::read_to_string(state.join("envoy.log")).unwrap_or_default().contains("portcullis: configured")) {
        assert!(Instant::now() < deadline, "not ready:\n--- envoy\n{}\n--- runner\n{}", logs(state, "envoy.log"), logs(state, "runner.log"));
        std::thread::sleep(Duration::from_millis(200));
    }
    (envoy, runner_proc)
}

fn logs(state: &Path, name: &str) -> String {
    std::fs::read_to_string(state.join(name)).unwrap_or_default()
}

/// The agent's URL of the gateway: the dev certificate names `localhost`, which the agent's
/// client resolves to the gateway's address in the namespaces.
const URL: &str = "https://localhost:8443/mcp";

/// An MCP client for the agent `reader`, trusting the dev CA.
fn agent_client(certs: &Path) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(certs.join("ca.pem")).unwrap()).unwrap();
    let mut pem = std::fs::read(certs.join("agents/reader-key.pem")).unwrap();
    pem.extend(std::fs::read(certs.join("agents/reader.pem")).unwrap());
    reqwest::Client::builder().tls_certs_only([ca]).identity(reqwest::Identity::from_pem(&pem).unwrap()).resolve("localhost", LISTEN).timeout(Duration::from_secs(60)).build().unwrap()
}

/// The probe's verdicts, one `host:port open` or `host:port closed REASON` line each.
fn verdicts(text: &str) -> Vec<(String, String)> {
    text.lines().filter_map(|l| l.trim().split_once(' ')).map(|(t, v)| (t.to_owned(), v.trim().to_owned())).collect()
}

#[test]
fn the_agent_reaches_only_the_gateway_only_the_gateway_reaches_the_runner_and_sandboxes_reach_nothing() {
    let tag = format!("pc{}", std::process::id() % 10_000_000);
    let (agent, gateway, runner) = (Netns::new(format!("{tag}a")), Netns::new(format!("{tag}g")), Netns::new(format!("{tag}r")));
    link(&agent, AGENT, &gateway, GATEWAY);
    link(&gateway, GATEWAY_TO_RUNNER, &runner, RUNNER);
    // Every other address is sent to the gateway's namespace, which must not pass it on.
    agent.exec_ip(&["route", "add", "default", "via", &GATEWAY.to_string()]);
    runner.exec_ip(&["route", "add", "default", "via", &GATEWAY_TO_RUNNER.to_string()]);
    let state = tempfile::Builder::new().prefix("portcullis-netns-").tempdir().unwrap();
    let (_envoy, _runner) = start(state.path(), &gateway, &runner);
    let _agent_listener = Killed(agent.command("bash").args(["-c", &format!("exec /usr/bin/python3 -m http.server --bind {} {}", AGENT_LISTEN.ip(), AGENT_LISTEN.port())]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());

    // The agent reaches the gateway: a real MCP call, end to end, through the runner.
    let certs = state.path().join("certs");
    let url = URL;
    let reply: Value = agent.run(move || {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
            let http = agent_client(&certs);
            let session = open_session(&http, url).await.expect("session from the agent's namespace");
            let r = post(&http, url, Some(&session), &[], &tools_call(1, "word_count", json!({"text": "through the gateway"}))).await.unwrap();
            r.message
        })
    });
    assert_eq!(reply.pointer("/result/content/0/text").and_then(Value::as_str).map(str::trim), Some("3"), "{reply}");
    // ... and the agent cannot reach the runner, though its default route leads that way.
    assert!(agent.connects(LISTEN), "agent -> gateway");
    assert!(!agent.connects(RUNNER_LISTEN), "agent -> runner must fail");
    // Only the gateway's namespace reaches the runner.
    assert!(gateway.connects(RUNNER_LISTEN), "gateway -> runner");
    // The agent's listener is up: what the sandbox fails to reach is there.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent.connects(AGENT_LISTEN) {
        assert!(Instant::now() < deadline, "the agent's listener never came up");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The runner's sandboxes reach nothing; the same probe from the runner's namespace reaches
    // the gateway (and the runner itself).
    let targets = format!("{LISTEN} {GATEWAY_TO_RUNNER}:8443 {RUNNER_LISTEN} {AGENT_LISTEN}");
    let from_ns = runner.command("bash").args(["-c", PROBE]).env("ARG_TARGETS", &targets).output().unwrap();
    let from_ns = verdicts(&String::from_utf8_lossy(&from_ns.stdout));
    let certs = state.path().join("certs");
    let url = URL;
    let probe_targets = targets.clone();
    let sandboxed: Value = agent.run(move || {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
            let http = agent_client(&certs);
            let session = open_session(&http, url).await.unwrap();
            post(&http, url, Some(&session), &[], &tools_call(2, "net_probe", json!({"targets": probe_targets}))).await.unwrap().message
        })
    });
    let text = sandboxed.pointer("/result/content/0/text").and_then(Value::as_str).unwrap_or_else(|| panic!("{sandboxed}"));
    let in_sandbox = verdicts(text);
    eprintln!("reachability from the runner's namespace: {from_ns:?}\nfrom a sandbox: {in_sandbox:?}");
    let expect = |v: &[(String, String)], target: String, verdict: &str, who: &str| {
        assert!(v.iter().any(|(t, found)| *t == target && found.starts_with(verdict)), "{who} -> {target} must be {verdict}: {v:?}");
    };
    // From a sandbox, no route at all: the connect fails at once, not for a closed port.
    for t in [LISTEN.to_string(), format!("{GATEWAY_TO_RUNNER}:8443"), RUNNER_LISTEN.to_string(), AGENT_LISTEN.to_string()] {
        expect(&in_sandbox, t, "closed Network is unreachable", "sandbox");
    }
    expect(&from_ns, LISTEN.to_string(), "open", "runner namespace");
    expect(&from_ns, RUNNER_LISTEN.to_string(), "open", "runner namespace");
    expect(&from_ns, AGENT_LISTEN.to_string(), "closed", "runner namespace");
}
