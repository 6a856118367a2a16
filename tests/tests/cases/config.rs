//! A bad plugin configuration makes the filter refuse to start, and Envoy then refuses every
//! request (fail closed). It never falls back to allowing.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use portcullis_e2e::mcp::post;
use portcullis_e2e::{free_port, repo_root, wasm_path};
use portcullis_runner::devstack::envoy_config::{find_envoy, process_env, render, AdminAddress, EnvoyParams};

use crate::stack;

fn bad_configs() -> Vec<(&'static str, String)> {
    vec![
        ("not JSON", "{placeholder".to_owned()),
        ("unknown field", r#"{"policy":{"modules":[]},"catalog":{"version":1,"tools":[]},"ticket":{"signing_key_pem":"x"},"allow_all":true}"#.to_owned()),
        (
            "Rego that does not compile",
            serde_json::json!({
                "policy": {"modules": [{"name": "bad.rego", "source": "package portcullis.authz\ndecision := {"}], "data": {}},
                "catalog": {"version": 1, "tools": []},
                "ticket": {"signing_key_pem": "-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n"}
            })
            .to_string(),
        ),
    ]
}

#[tokio::test]
async fn bad_plugin_configuration_refuses_to_start_and_fails_closed() {
    let s = stack();
    let pki = portcullis_runner::devstack::certs::ensure(&s.certs(), "portcullis.local", &["reader", "operator", "intruder"]).unwrap();
    let template = std::fs::read_to_string(repo_root().join("envoy/envoy.yaml")).unwrap();
    let envoy = find_envoy(&repo_root(), &process_env).unwrap();
    for (what, config) in bad_configs() {
        let listen = free_port();
        let dir = tempfile::tempdir().unwrap();
        let params = EnvoyParams {
            listen_addr: listen,
            runner_addr: s.runner,
            admin: AdminAddress::Unix(dir.path().join("admin.sock")),
            wasm_path: wasm_path(),
            plugin_config_json: config.clone(),
            pki: pki.clone(),
            access_log: dir.path().join("access.log"),
        };
        // render() insists on JSON; for the not-JSON case, render valid JSON and swap it.
        let rendered = match render(&template, &params) {
            Ok(y) => y,
            Err(_) => render(&template, &EnvoyParams { plugin_config_json: "{\"swap\":1}".into(), ..params })
                .unwrap()
                .replace("'{\"swap\":1}'", &format!("'{config}'")),
        };
        let file = dir.path().join("envoy.yaml");
        std::fs::write(&file, &rendered).unwrap();
        let log = dir.path().join("envoy.log");
        let mut child = Command::new(&envoy)
            .arg("-c")
            .arg(&file)
            .args(["--disable-hot-restart", "--concurrency", "1", "-l", "warning", "--component-log-level", "wasm:info"])
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("envoy.err")).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut refused = String::new();
        while Instant::now() < deadline {
            let text = std::fs::read_to_string(dir.path().join("envoy.err")).unwrap_or_default()
                + &std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains("portcullis: refusing to start")) {
                refused = line.to_owned();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(!refused.is_empty(), "{what}: no refusal line in Envoy's log");
        // If Envoy still serves, every request must be refused, never forwarded.
        if child.try_wait().unwrap().is_none() {
            let url = format!("https://{listen}/mcp");
            let http = s.http_client(Some("reader"));
            let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"inspect_sandbox"}}"#;
            if let Ok(r) = post(&http, &url, None, &[], body).await {
                assert!(r.status >= 500, "{what}: a request got through a filter that refused its configuration: {} {}", r.status, r.text);
            }
        }
        eprintln!("{what}: {refused}");
        let _ = child.kill();
        let _ = child.wait();
    }
}
