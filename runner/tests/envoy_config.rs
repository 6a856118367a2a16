//! Dev PKI generation, Envoy config rendering, and the rendered config checked by a real
//! `envoy --mode validate` (Envoy from scripts/setup.sh; the test fails, never skips, without it).

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use portcullis_runner::devstack::certs::{self, CertsError, DevPki};
use portcullis_runner::devstack::envoy_config::{self, AdminAddress, EnvoyConfigError, EnvoyParams};
use serde_yaml::Value;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

const TEMPLATE: &str = include_str!("../../envoy/envoy.yaml");
const TD: &str = certs::DEFAULT_TRUST_DOMAIN;

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create temp dir")
}

fn pki_in(dir: &Path, agents: &[&str]) -> DevPki {
    certs::ensure(&dir.join("certs"), TD, agents).expect("ensure dev PKI")
}

/// Every file under `dir`, with its contents.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = fs::read(&path).expect("read file");
                out.insert(path, bytes);
            }
        }
    }
    out
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

fn cert_der(path: &Path) -> Vec<u8> {
    let pem = fs::read(path).expect("read cert");
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).expect("PEM");
    assert_eq!(pem.label, "CERTIFICATE", "{}", path.display());
    pem.contents
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    x509_parser::parse_x509_certificate(der).expect("X.509").1
}

fn uri_sans(cert: &X509Certificate<'_>) -> Vec<String> {
    sans(cert)
        .into_iter()
        .filter_map(|n| n.strip_prefix("URI:").map(str::to_owned))
        .collect()
}

fn sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let san = cert
        .subject_alternative_name()
        .expect("SAN ext")
        .expect("has SAN");
    san.value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::URI(u) => format!("URI:{u}"),
            GeneralName::DNSName(d) => format!("DNS:{d}"),
            GeneralName::IPAddress(ip) => format!("IP:{ip:?}"),
            other => format!("other:{other:?}"),
        })
        .collect()
}

/// (server_auth, client_auth)
fn ekus(cert: &X509Certificate<'_>) -> (bool, bool) {
    let eku = cert
        .extended_key_usage()
        .expect("EKU ext")
        .expect("has EKU")
        .value;
    (eku.server_auth, eku.client_auth)
}

#[test]
fn pki_has_every_file_with_private_modes_and_absolute_paths() {
    let tmp = tempdir();
    let pki = pki_in(tmp.path(), &["alice", "bob"]);

    assert!(pki.dir.is_absolute());
    assert_eq!(mode(&pki.dir), 0o700);
    assert_eq!(mode(&pki.dir.join("agents")), 0o700);
    let certs = [&pki.ca_cert, &pki.gateway.cert, &pki.runner.cert];
    let keys = [
        &pki.ca_key,
        &pki.gateway.key,
        &pki.runner.key,
        &pki.ticket_signing_key,
    ];
    for p in certs.iter().chain(&keys).chain([&&pki.ticket_public_key]) {
        assert!(
            p.is_absolute() && p.starts_with(&pki.dir),
            "{}",
            p.display()
        );
        assert!(p.is_file(), "{} missing", p.display());
    }
    for k in keys {
        assert_eq!(mode(k), 0o600, "{}", k.display());
        let pem = fs::read_to_string(k).expect("read key");
        assert!(
            pem.starts_with("-----BEGIN PRIVATE KEY-----"),
            "{}",
            k.display()
        );
    }
    let public = fs::read_to_string(&pki.ticket_public_key).expect("read pub");
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"));

    assert_eq!(pki.agents.len(), 2);
    for (agent, name) in pki.agents.iter().zip(["alice", "bob"]) {
        assert_eq!(agent.name, name);
        assert_eq!(
            agent.spiffe_id,
            format!("spiffe://{TD}/ns/agents/sa/{name}")
        );
        assert_eq!(agent.cert, pki.dir.join(format!("agents/{name}.pem")));
        assert_eq!(agent.key, pki.dir.join(format!("agents/{name}-key.pem")));
        assert_eq!(mode(&agent.key), 0o600);
        assert_eq!(mode(&agent.bundle), 0o600);
        let key = fs::read_to_string(&agent.key).expect("key");
        let cert = fs::read_to_string(&agent.cert).expect("cert");
        assert_eq!(
            fs::read_to_string(&agent.bundle).expect("bundle"),
            format!("{key}{cert}")
        );
    }
    assert_eq!(pki.agent("bob").map(|a| a.name.as_str()), Some("bob"));
    assert_eq!(
        pki.gateway_spiffe_id(),
        "spiffe://portcullis.local/ns/portcullis/sa/gateway"
    );
    assert_eq!(
        certs::spiffe_id("td", "ns1", "sa1"),
        "spiffe://td/ns/ns1/sa/sa1"
    );
}

#[test]
fn svids_carry_their_spiffe_id_and_usages_and_chain_to_the_ca() {
    let tmp = tempdir();
    let pki = pki_in(tmp.path(), &["alice"]);
    let ca_der = cert_der(&pki.ca_cert);
    let ca = parse(&ca_der);
    assert!(ca.is_ca());
    let cn = ca
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok());
    assert_eq!(cn, Some("Portcullis dev CA"));

    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for (path, sa) in [(&pki.gateway.cert, "gateway"), (&pki.runner.cert, "runner")] {
        let der = cert_der(path);
        let cert = parse(&der);
        assert!(!cert.is_ca());
        assert!(
            cert.verify_signature(Some(ca.public_key())).is_ok(),
            "{sa} signed by CA"
        );
        assert_eq!(
            sans(&cert),
            [
                format!("URI:spiffe://portcullis.local/ns/portcullis/sa/{sa}"),
                "DNS:localhost".to_owned(),
                "IP:[127, 0, 0, 1]".to_owned(),
            ]
        );
        assert_eq!(ekus(&cert), (true, true), "{sa}: serverAuth + clientAuth");
        let validity = cert.validity();
        assert!(validity.not_before.timestamp() < now);
        let days = (validity.not_after.timestamp() - now) / 86_400;
        assert!((360..=366).contains(&days), "{sa} valid for {days} days");
    }

    let agent = &pki.agents[0];
    let der = cert_der(&agent.cert);
    let cert = parse(&der);
    assert!(cert.verify_signature(Some(ca.public_key())).is_ok());
    assert_eq!(uri_sans(&cert), [agent.spiffe_id.as_str()]);
    assert_eq!(
        sans(&cert).len(),
        1,
        "an agent SVID names only its SPIFFE ID"
    );
    assert_eq!(ekus(&cert), (false, true), "agents: clientAuth only");
}

#[test]
fn ensure_is_idempotent() {
    let tmp = tempdir();
    let first = pki_in(tmp.path(), &["alice", "bob"]);
    let before = snapshot(&first.dir);
    let second = pki_in(tmp.path(), &["alice", "bob"]);
    assert_eq!(first, second);
    assert_eq!(before, snapshot(&second.dir), "second ensure changed files");
}

#[test]
fn ensure_issues_a_new_agent_from_the_existing_ca() {
    let tmp = tempdir();
    let first = pki_in(tmp.path(), &["alice"]);
    let before = snapshot(&first.dir);
    let second = pki_in(tmp.path(), &["alice", "carol"]);
    let after = snapshot(&second.dir);
    for (path, bytes) in &before {
        assert_eq!(after.get(path), Some(bytes), "{} changed", path.display());
    }
    let carol = second.agent("carol").expect("carol");
    let ca_der = cert_der(&second.ca_cert);
    let carol_der = cert_der(&carol.cert);
    assert!(parse(&carol_der)
        .verify_signature(Some(parse(&ca_der).public_key()))
        .is_ok());
    assert_eq!(uri_sans(&parse(&carol_der)), [carol.spiffe_id.as_str()]);
}

#[test]
fn ensure_regenerates_everything_when_incomplete() {
    let tmp = tempdir();
    let first = pki_in(tmp.path(), &["alice"]);
    let old_ca = fs::read(&first.ca_cert).expect("ca");
    let old_alice = fs::read(&first.agents[0].cert).expect("alice");
    fs::remove_file(&first.runner.key).expect("remove");

    let second = pki_in(tmp.path(), &["alice"]);
    assert!(second.runner.key.is_file());
    assert_ne!(
        fs::read(&second.ca_cert).expect("ca"),
        old_ca,
        "CA regenerated"
    );
    assert_ne!(
        fs::read(&second.agents[0].cert).expect("alice"),
        old_alice,
        "agent reissued"
    );
    let ca_der = cert_der(&second.ca_cert);
    let runner_der = cert_der(&second.runner.cert);
    assert!(parse(&runner_der)
        .verify_signature(Some(parse(&ca_der).public_key()))
        .is_ok());
}

#[test]
fn ensure_regenerates_for_another_trust_domain() {
    let tmp = tempdir();
    let dir = tmp.path().join("certs");
    certs::ensure(&dir, TD, &["alice"]).expect("first");
    let other = certs::ensure(&dir, "example.test", &["alice"]).expect("second");
    let der = cert_der(&other.gateway.cert);
    assert_eq!(
        uri_sans(&parse(&der)),
        ["spiffe://example.test/ns/portcullis/sa/gateway"]
    );
    let der = cert_der(&other.agents[0].cert);
    assert_eq!(
        uri_sans(&parse(&der)),
        ["spiffe://example.test/ns/agents/sa/alice"]
    );
}

#[test]
fn ensure_rejects_names_that_are_not_safe_path_segments() {
    let tmp = tempdir();
    let dir = tmp.path().join("certs");
    for bad in ["", ".", "..", "../x", "a/b", "a b", "x-key", "x-bundle"] {
        let err = certs::ensure(&dir, TD, &[bad]).expect_err(bad);
        assert!(
            matches!(err, CertsError::InvalidAgentName(_)),
            "{bad}: {err}"
        );
    }
    let err = certs::ensure(&dir, TD, &["a", "a"]).expect_err("duplicate");
    assert!(matches!(err, CertsError::DuplicateAgent(_)));
    for bad in ["", "Upper.case", "a/b", "spiffe://x"] {
        let err = certs::ensure(&dir, bad, &[]).expect_err(bad);
        assert!(
            matches!(err, CertsError::InvalidTrustDomain(_)),
            "{bad}: {err}"
        );
    }
    assert!(!dir.exists(), "nothing is written for invalid input");
}

#[test]
fn ticket_keys_sign_and_verify_an_eddsa_jwt() {
    use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};

    let tmp = tempdir();
    let pki = pki_in(tmp.path(), &[]);
    let private = fs::read(&pki.ticket_signing_key).expect("private");
    let public = fs::read(&pki.ticket_public_key).expect("public");
    let signing = EncodingKey::from_ed_pem(&private).expect("from_ed_pem(private)");
    let verifying = DecodingKey::from_ed_pem(&public).expect("from_ed_pem(public)");

    let claims = serde_json::json!({"iss": "portcullis-gateway", "sub": "spiffe://portcullis.local/ns/agents/sa/alice", "exp": 4_102_444_800u64});
    let token = encode(&Header::new(Algorithm::EdDSA), &claims, &signing).expect("sign");
    let validation = Validation::new(Algorithm::EdDSA);
    let decoded = decode::<serde_json::Value>(&token, &verifying, &validation).expect("verify");
    assert_eq!(decoded.claims, claims);

    let other = certs::ensure(&tmp.path().join("other"), TD, &[]).expect("other PKI");
    let other_public = fs::read(&other.ticket_public_key).expect("other public");
    let wrong = DecodingKey::from_ed_pem(&other_public).expect("other key");
    assert!(decode::<serde_json::Value>(&token, &wrong, &validation).is_err());
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

fn params(pki: DevPki, wasm_path: PathBuf) -> EnvoyParams {
    EnvoyParams {
        listen_addr: addr("127.0.0.1:18443"),
        runner_addr: addr("127.0.0.1:19443"),
        admin: AdminAddress::Unix(pki.dir.join("admin.sock")),
        wasm_path,
        plugin_config_json: r#"{"policy":"package x","n":1}"#.to_owned(),
        access_log: pki.dir.join("access.log"),
        pki,
    }
}

/// Every `filename:` value anywhere in the document.
fn filenames(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Mapping(m) => {
            for (k, v) in m {
                match (k.as_str(), v.as_str()) {
                    (Some("filename"), Some(f)) => out.push(f.to_owned()),
                    _ => filenames(v, out),
                }
            }
        }
        Value::Sequence(s) => s.iter().for_each(|v| filenames(v, out)),
        _ => {}
    }
}

fn get<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, key| match key.parse::<usize>() {
        Ok(i) => &v[i],
        Err(_) => &v[*key],
    })
}

#[test]
fn render_replaces_every_address_path_and_the_plugin_config() {
    let tmp = tempdir();
    let pki = certs::ensure(&tmp.path().join("certs"), "example.test", &[]).expect("pki");
    let wasm = tmp.path().join("filter.wasm");
    let p = params(pki.clone(), wasm.clone());
    let out = envoy_config::render(TEMPLATE, &p).expect("render");

    assert!(out.starts_with("# Rendered by portcullis"));
    assert!(!out.contains(".portcullis/"), "template path left behind");
    assert!(
        !out.contains("portcullis.local"),
        "template trust domain left behind"
    );
    assert!(
        !out.contains("placeholder"),
        "template plugin config left behind"
    );
    for port in ["8443", "9443"] {
        assert!(
            !out.contains(&format!("port_value: {port}")),
            "template port {port} left"
        );
    }

    let doc: Value = serde_yaml::from_str(&out).expect("rendered YAML parses");
    let mut files = Vec::new();
    filenames(&doc, &mut files);
    assert_eq!(files.len(), 7, "{files:?}");
    for f in &files {
        assert!(Path::new(f).is_absolute(), "{f}");
    }

    // The admin API is a Unix socket only Envoy's user can open, never a TCP port.
    let admin = get(&doc, &["admin", "address"]);
    assert_eq!(admin["pipe"]["path"].as_str(), pki.dir.join("admin.sock").to_str());
    assert_eq!(admin["pipe"]["mode"].as_u64(), Some(0o600));
    assert!(admin.get("socket_address").is_none(), "{admin:?}");

    let listener = get(&doc, &["static_resources", "listeners", "0"]);
    assert_eq!(listener["name"].as_str(), Some("portcullis_mtls"));
    assert_eq!(
        get(listener, &["address", "socket_address", "port_value"]).as_u64(),
        Some(18443)
    );
    let chain = get(listener, &["filter_chains", "0"]);
    let tls = get(
        chain,
        &["transport_socket", "typed_config", "common_tls_context"],
    );
    let cert = get(tls, &["tls_certificates", "0"]);
    assert_eq!(
        get(cert, &["certificate_chain", "filename"]).as_str(),
        pki.gateway.cert.to_str()
    );
    assert_eq!(
        get(cert, &["private_key", "filename"]).as_str(),
        pki.gateway.key.to_str()
    );
    let domain = get(
        tls,
        &[
            "validation_context",
            "custom_validator_config",
            "typed_config",
            "trust_domains",
            "0",
        ],
    );
    assert_eq!(domain["name"].as_str(), Some("example.test"));
    assert_eq!(
        get(domain, &["trust_bundle", "filename"]).as_str(),
        pki.ca_cert.to_str()
    );

    let hcm = get(chain, &["filters", "0", "typed_config"]);
    // The access log (decision records for the audit trail) goes to its own file.
    let access_log = get(hcm, &["access_log", "0"]);
    assert_eq!(access_log["name"].as_str(), Some("envoy.access_loggers.file"));
    assert_eq!(get(access_log, &["typed_config", "path"]).as_str(), p.access_log.to_str());
    assert!(get(access_log, &["typed_config", "log_format", "json_format", "portcullis_decision"]).is_string());
    let wasm_filter = get(hcm, &["http_filters", "0"]);
    assert_eq!(wasm_filter["name"].as_str(), Some("portcullis"));
    let config = get(wasm_filter, &["typed_config", "config"]);
    assert_eq!(
        get(config, &["configuration", "value"]).as_str(),
        Some(p.plugin_config_json.as_str())
    );
    assert_eq!(
        get(config, &["vm_config", "code", "local", "filename"]).as_str(),
        wasm.to_str()
    );
    assert_eq!(config["fail_open"].as_bool(), Some(false));

    let cluster = get(&doc, &["static_resources", "clusters", "0"]);
    assert_eq!(cluster["name"].as_str(), Some("portcullis_runner"));
    let endpoint = get(
        cluster,
        &[
            "load_assignment",
            "endpoints",
            "0",
            "lb_endpoints",
            "0",
            "endpoint",
            "address",
            "socket_address",
        ],
    );
    assert_eq!(endpoint["port_value"].as_u64(), Some(19443));
    let upstream = get(
        cluster,
        &["transport_socket", "typed_config", "common_tls_context"],
    );
    assert_eq!(
        get(upstream, &["validation_context", "trusted_ca", "filename"]).as_str(),
        pki.ca_cert.to_str()
    );
    let san = get(
        upstream,
        &["validation_context", "match_typed_subject_alt_names"],
    );
    assert_eq!(san.as_sequence().map(Vec::len), Some(1));
    assert_eq!(
        get(san, &["0", "matcher", "exact"]).as_str(),
        Some("spiffe://example.test/ns/portcullis/sa/runner")
    );
}

#[test]
fn render_supports_ipv6_addresses() {
    let tmp = tempdir();
    let pki = pki_in(tmp.path(), &[]);
    let mut p = params(pki, tmp.path().join("f.wasm"));
    p.listen_addr = addr("[::1]:8443");
    let doc: Value =
        serde_yaml::from_str(&envoy_config::render(TEMPLATE, &p).expect("render")).expect("yaml");
    let sa = get(
        &doc,
        &[
            "static_resources",
            "listeners",
            "0",
            "address",
            "socket_address",
        ],
    );
    assert_eq!(sa["address"].as_str(), Some("::1"));
}

/// TCP admin stays possible for throwaway configs (the bench); a too-long socket path, which
/// the kernel would refuse, is refused here with the reason.
#[test]
fn render_admin_on_tcp_or_a_socket_path_that_fits() {
    let tmp = tempdir();
    let pki = pki_in(tmp.path(), &[]);
    let mut p = params(pki, tmp.path().join("f.wasm"));
    p.admin = AdminAddress::Tcp(addr("127.0.0.1:19901"));
    let doc: Value = serde_yaml::from_str(&envoy_config::render(TEMPLATE, &p).expect("render")).expect("yaml");
    let sa = get(&doc, &["admin", "address", "socket_address"]);
    assert_eq!((sa["address"].as_str(), sa["port_value"].as_u64()), (Some("127.0.0.1"), Some(19901)));
    assert!(get(&doc, &["admin", "address"]).get("pipe").is_none());

    p.admin = AdminAddress::Unix(tmp.path().join("s".repeat(envoy_config::MAX_SOCKET_PATH)));
    let err = envoy_config::render(TEMPLATE, &p).expect_err("too long");
    assert!(matches!(err, EnvoyConfigError::SocketPathTooLong { .. }), "{err}");
    p.admin = AdminAddress::Unix(PathBuf::from("admin.sock"));
    let err = envoy_config::render(TEMPLATE, &p).expect_err("relative");
    assert!(matches!(err, EnvoyConfigError::RelativePath { .. }), "{err}");
}

/// The template with one edit made through its YAML structure.
fn edited(edit: impl FnOnce(&mut Value)) -> String {
    let mut doc: Value = serde_yaml::from_str(TEMPLATE).expect("template parses");
    edit(&mut doc);
    serde_yaml::to_string(&doc).expect("serialize")
}

#[test]
fn render_refuses_a_template_missing_an_expected_node() {
    let tmp = tempdir();
    let pki = pki_in(tmp.path(), &[]);
    let p = params(pki, tmp.path().join("f.wasm"));

    let cases: Vec<(&str, String)> = vec![
        (
            "admin",
            edited(|d| {
                d.as_mapping_mut().expect("map").remove("admin");
            }),
        ),
        (
            "[name=portcullis_runner]",
            edited(|d| {
                d["static_resources"]["clusters"][0]["name"] = "renamed".into();
            }),
        ),
        (
            "[name=portcullis_mtls]",
            edited(|d| {
                d["static_resources"]["listeners"][0]["name"] = "renamed".into();
            }),
        ),
        (
            "[name=portcullis]",
            edited(|d| {
                let hcm =
                    &mut d["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0];
                hcm["typed_config"]["http_filters"][0]["name"] = "renamed".into();
            }),
        ),
        (
            "[name=envoy.access_loggers.file]",
            edited(|d| {
                let hcm =
                    &mut d["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0];
                hcm["typed_config"]["access_log"][0]["name"] = "envoy.access_loggers.stdout".into();
            }),
        ),
        (
            "private_key",
            edited(|d| {
                let cluster = &mut d["static_resources"]["clusters"][0];
                let cert = &mut cluster["transport_socket"]["typed_config"]["common_tls_context"]
                    ["tls_certificates"][0];
                cert.as_mapping_mut().expect("map").remove("private_key");
            }),
        ),
        (
            "match_typed_subject_alt_names",
            edited(|d| {
                let cluster = &mut d["static_resources"]["clusters"][0];
                let vc = &mut cluster["transport_socket"]["typed_config"]["common_tls_context"]
                    ["validation_context"];
                vc.as_mapping_mut()
                    .expect("map")
                    .remove("match_typed_subject_alt_names");
            }),
        ),
    ];
    for (needle, template) in cases {
        let err = envoy_config::render(&template, &p).expect_err(needle);
        assert!(
            matches!(err, EnvoyConfigError::Missing { .. }),
            "{needle}: {err}"
        );
        assert!(err.to_string().contains(needle), "{needle} not in: {err}");
    }

    let two_chains = edited(|d| {
        let chains = &mut d["static_resources"]["listeners"][0]["filter_chains"];
        let first = chains[0].clone();
        chains.as_sequence_mut().expect("seq").push(first);
    });
    let err = envoy_config::render(&two_chains, &p).expect_err("two chains");
    assert!(matches!(err, EnvoyConfigError::Shape { .. }), "{err}");

    let err = envoy_config::render("admin: [", &p).expect_err("bad yaml");
    assert!(matches!(err, EnvoyConfigError::Parse(_)));
}

#[test]
fn render_refuses_relative_paths_and_non_json_plugin_config() {
    let tmp = tempdir();
    let pki = pki_in(tmp.path(), &[]);
    let p = params(pki.clone(), PathBuf::from("target/x.wasm"));
    let err = envoy_config::render(TEMPLATE, &p).expect_err("relative wasm");
    assert!(
        matches!(err, EnvoyConfigError::RelativePath { .. }),
        "{err}"
    );

    let mut p = params(pki, tmp.path().join("f.wasm"));
    p.plugin_config_json = "{not json".to_owned();
    let err = envoy_config::render(TEMPLATE, &p).expect_err("bad json");
    assert!(matches!(err, EnvoyConfigError::PluginConfig(_)), "{err}");
}

fn executable(path: &Path) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, "#!/bin/sh\n").expect("write");
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
fn find_envoy_prefers_override_then_venv_then_path() {
    let tmp = tempdir();
    let repo = tmp.path().join("repo");
    let bin = tmp.path().join("bin");
    let custom = tmp.path().join("custom/envoy");
    executable(&custom);
    executable(&bin.join("envoy"));
    fs::create_dir_all(&repo).expect("repo");

    let path = bin.to_str().expect("utf8").to_owned();
    let custom_s = custom.to_str().expect("utf8").to_owned();
    let env = |vars: Vec<(&'static str, String)>| {
        move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
    };

    // Only PATH.
    let found = envoy_config::find_envoy(&repo, &env(vec![("PATH", path.clone())]));
    assert_eq!(found.expect("on PATH"), bin.join("envoy"));

    // The venv beats PATH.
    let venv = repo.join(".venv/bin/envoy");
    executable(&venv);
    let found = envoy_config::find_envoy(&repo, &env(vec![("PATH", path.clone())]));
    assert_eq!(found.expect("venv"), venv);

    // The override beats both; a bare name is looked up on PATH.
    let over = env(vec![("PATH", path.clone()), ("PORTCULLIS_ENVOY", custom_s)]);
    assert_eq!(
        envoy_config::find_envoy(&repo, &over).expect("override"),
        custom
    );
    let by_name = env(vec![
        ("PATH", path.clone()),
        ("PORTCULLIS_ENVOY", "envoy".to_owned()),
    ]);
    assert_eq!(
        envoy_config::find_envoy(&repo, &by_name).expect("by name"),
        bin.join("envoy")
    );

    // A wrong override is an error, not a silent fallback.
    let wrong = env(vec![
        ("PATH", path),
        ("PORTCULLIS_ENVOY", "/nonexistent/envoy".to_owned()),
    ]);
    let err = envoy_config::find_envoy(&repo, &wrong).expect_err("bad override");
    assert!(
        matches!(err, EnvoyConfigError::EnvoyOverride { .. }),
        "{err}"
    );

    // Nothing anywhere: the error says how to fix it.
    let empty = tmp.path().join("empty");
    fs::create_dir_all(&empty).expect("empty");
    let err = envoy_config::find_envoy(&empty, &env(vec![])).expect_err("none");
    assert!(
        matches!(err, EnvoyConfigError::EnvoyNotFound { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("scripts/setup.sh"), "{err}");
}

/// A proxy-wasm module that accepts any configuration and does nothing. Envoy's validate mode
/// loads the module into V8 and runs on_vm_start and on_configure, so a placeholder file is
/// not enough; the real filter is exercised by the end-to-end tests.
const STUB_FILTER_WAT: &str = r#"
(module
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024)
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) i32.const 1)
  (func (export "proxy_on_configure") (param i32 i32) (result i32) i32.const 1)
  (func (export "proxy_on_done") (param i32) (result i32) i32.const 1)
  (func (export "proxy_on_delete") (param i32)))
"#;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn envoy() -> PathBuf {
    envoy_config::find_envoy(&repo_root(), &envoy_config::process_env)
        .unwrap_or_else(|e| panic!("{e}\nRun scripts/setup.sh (this test needs a real Envoy)."))
}

/// Renders for a fresh PKI and the stub filter into `dir`, and runs `envoy --mode validate`
/// there (another working directory than the repo, so a relative path would fail).
fn validate_rendered(dir: &Path, pki: DevPki) -> std::process::Output {
    validate_rendered_with(dir, pki, Ok)
}

/// [`validate_rendered`], with `edit` applied to the rendered config first.
fn validate_rendered_with(
    dir: &Path,
    pki: DevPki,
    edit: impl FnOnce(String) -> Result<String, EnvoyConfigError>,
) -> std::process::Output {
    let wasm = dir.join("stub-filter.wasm");
    fs::write(
        &wasm,
        wat::parse_str(STUB_FILTER_WAT).expect("assemble stub"),
    )
    .expect("write wasm");
    let rendered = envoy_config::render(TEMPLATE, &params(pki, wasm)).expect("render");
    let rendered = edit(rendered).expect("edit the rendered config");
    let config = dir.join("envoy.yaml");
    fs::write(&config, rendered).expect("write config");
    Command::new(envoy())
        .args(["--mode", "validate", "--log-level", "warn", "-c"])
        .arg(&config)
        .current_dir(dir)
        .output()
        .expect("run envoy")
}

#[test]
fn real_envoy_validates_the_rendered_config() {
    let tmp = tempdir();
    let pki = pki_in(tmp.path(), &["alice"]);
    let out = validate_rendered(tmp.path(), pki);
    assert!(
        out.status.success(),
        "envoy --mode validate failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn otlp_tracing_adds_envoys_opentelemetry_tracer_and_a_collector_cluster() {
    let tmp = tempdir();
    let pki = pki_in(tmp.path(), &["alice"]);
    let rendered = envoy_config::render(TEMPLATE, &params(pki.clone(), tmp.path().join("f.wasm"))).expect("render");
    let traced = envoy_config::with_otlp_tracing(&rendered, "127.0.0.1:4317").expect("tracing");
    let doc: Value = serde_yaml::from_str(&traced).expect("yaml");
    let listener = &get(&doc, &["static_resources", "listeners"]).as_sequence().unwrap()[0];
    let hcm = get(listener, &["filter_chains", "0", "filters", "0", "typed_config"]);
    assert_eq!(get(hcm, &["tracing", "provider", "name"]), "envoy.tracers.opentelemetry");
    let otel = get(hcm, &["tracing", "provider", "typed_config"]);
    assert_eq!(get(otel, &["service_name"]), envoy_config::GATEWAY_SERVICE_NAME);
    assert_eq!(get(otel, &["grpc_service", "envoy_grpc", "cluster_name"]), envoy_config::OTLP_CLUSTER_NAME);
    assert_eq!(get(hcm, &["tracing", "random_sampling", "value"]).as_f64(), Some(100.0));
    let clusters = get(&doc, &["static_resources", "clusters"]).as_sequence().unwrap();
    let otlp = clusters.iter().find(|c| c["name"] == envoy_config::OTLP_CLUSTER_NAME).expect("otlp cluster");
    assert_eq!(otlp["type"], "STATIC");
    let options = get(otlp, &["typed_extension_protocol_options", "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]);
    assert!(get(options, &["explicit_http_config", "http2_protocol_options"]).is_mapping());
    let address = get(otlp, &["load_assignment", "endpoints", "0", "lb_endpoints", "0", "endpoint", "address", "socket_address"]);
    assert_eq!((get(address, &["address"]), get(address, &["port_value"]).as_u64()), (&Value::from("127.0.0.1"), Some(4317)));
    // Without it, nothing about tracing is in the config; a host name is resolved by DNS.
    assert!(!rendered.contains("tracing") && !rendered.contains("otlp"));
    let named = envoy_config::with_otlp_tracing(&rendered, "collector.observability:4317").expect("tracing");
    assert!(named.contains("STRICT_DNS"), "{named}");
    for bad in ["collector", "collector:", ":4317", "collector:0", "collector:70000"] {
        assert!(matches!(envoy_config::with_otlp_tracing(&rendered, bad), Err(EnvoyConfigError::OtlpEndpoint(_))), "{bad}");
    }
}

#[test]
fn real_envoy_validates_the_rendered_config_with_otlp_tracing() {
    let tmp = tempdir();
    let pki = pki_in(tmp.path(), &["alice"]);
    let out = validate_rendered_with(tmp.path(), pki, |r| envoy_config::with_otlp_tracing(&r, "127.0.0.1:4317"));
    assert!(
        out.status.success(),
        "envoy --mode validate failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Proves the validation above is not vacuous: validate mode reads the certificate files.
#[test]
fn real_envoy_rejects_a_rendered_config_with_a_broken_certificate() {
    let tmp = tempdir();
    let pki = pki_in(tmp.path(), &[]);
    fs::write(&pki.gateway.cert, "not a certificate\n").expect("break cert");
    let out = validate_rendered(tmp.path(), pki);
    assert!(
        !out.status.success(),
        "envoy accepted a broken gateway certificate"
    );
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(log.contains("gateway.pem"), "{log}");
}

/// scripts/validate-envoy.sh carries the same stub as hex (bash cannot assemble WAT).
#[test]
fn validate_script_stub_is_the_stub_filter() {
    let script = fs::read_to_string(repo_root().join("scripts/validate-envoy.sh")).expect("script");
    let hex: String = script
        .lines()
        .skip_while(|l| *l != "# BEGIN stub-filter hex")
        .skip(1)
        .take_while(|l| *l != "# END stub-filter hex")
        .collect();
    assert!(!hex.is_empty(), "stub hex markers not found in the script");
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    assert_eq!(
        bytes,
        wat::parse_str(STUB_FILTER_WAT).expect("assemble stub")
    );
}

#[test]
fn concurrent_ensure_calls_leave_one_consistent_pki() {
    let tmp = tempdir();
    let dir = tmp.path().join("certs");
    let results: Vec<DevPki> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| certs::ensure(&dir, TD, &["alice"]).expect("ensure")))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let pki = &results[0];
    let ca_der = cert_der(&pki.ca_cert);
    let ca = parse(&ca_der);
    for cert in [&pki.gateway.cert, &pki.runner.cert, &pki.agents[0].cert] {
        let der = cert_der(cert);
        assert!(
            parse(&der).verify_signature(Some(ca.public_key())).is_ok(),
            "{} not signed by the CA on disk",
            cert.display()
        );
    }
}
