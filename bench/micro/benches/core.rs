//! Native micro-benchmarks of what the filter does per request, with the repository's own
//! policy bundle, catalog and dev keys (through the `portcullis` binary of `make build`): strict parse + JSON-RPC validation, plan hash, the Rego
//! decision, ticket sign/verify, and the whole `Gateway::decide` pipeline. Bodies of 200 B,
//! 10 KiB and 1 MiB, carrying their payload as one string or as an array of short strings.
//!
//! Kept short (0.3 s warm-up, 1 s measurement, 20 samples; 10 flat samples for 1 MiB) so that
//! `make bench` stays within its time budget; `portcullis-bench` reads the estimates from
//! criterion's JSON output (`target/criterion/<group>/<id>/new/estimates.json`).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{BatchSize, BenchmarkGroup, Criterion, SamplingMode};
use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::{Signer as _, SigningKey};
use portcullis_bench_micro::names::{self as micro, sized_id};
use portcullis_bench_micro::payload::{self, Shape, SIZES};
use portcullis_core::authz::{Authorizer, PolicyBundle, PolicyInput, PolicyModule, Workload};
use portcullis_core::catalog::Catalog;
use portcullis_core::config::RawConfig;
use portcullis_core::gateway::{Gateway, RequestContext};
use portcullis_core::json::{parse_strict, Limits};
use portcullis_core::jsonrpc::{validate, Method};
use portcullis_core::plan::plan_hash;
use portcullis_core::ticket::{Claims, Signer, Verifier, AUDIENCE};

const READER: &str = "spiffe://portcullis.local/ns/agents/sa/reader";

struct Fixture {
    catalog: Catalog,
    authorizer: Authorizer,
    gateway: Gateway,
    signing_key: Vec<u8>,
    public_key: Vec<u8>,
}

/// Runs the release `portcullis` binary (`make build`); anything but success is fatal.
fn portcullis(root: &Path, target: &Path, args: &[&str]) -> Vec<u8> {
    let bin = std::env::var_os("PORTCULLIS_BIN").map(PathBuf::from).unwrap_or_else(|| target.join("release/portcullis"));
    assert!(bin.is_file(), "{} is missing: run `make build` (make bench does)", bin.display());
    let out = Command::new(&bin).current_dir(root).args(args).output().expect("running portcullis");
    assert!(out.status.success(), "portcullis {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Adds `bench_payload` (a low-risk query tool whose schema takes any object) to the catalog,
/// so that sized bodies are decided by the whole pipeline rather than refused by an example
/// tool's argument schema (word_count's text is at most 64 KiB).
fn with_payload_tool(config: &[u8]) -> Vec<u8> {
    let mut value: serde_json::Value = serde_json::from_slice(config).expect("plugin configuration");
    let tool = serde_json::json!({
        "name": PAYLOAD_TOOL, "description": "benchmark payload sink", "kind": "query", "risk": "low",
        "owner": "bench", "input_schema": {"type": "object"},
        "execution": {"local": {"command": ["true"]}},
    });
    value["catalog"]["tools"].as_array_mut().expect("catalog tools").push(tool);
    serde_json::to_vec(&value).expect("JSON")
}

const PAYLOAD_TOOL: &str = "bench_payload";

/// The filter's own plugin configuration for the repository's policy bundle, example catalog
/// and a dev ticket key (`portcullis certs` + `portcullis plugin-config`, exactly what
/// `portcullis up` hands to Envoy), so that these benchmarks run what the filter runs.
fn fixture() -> Fixture {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root");
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let certs = target.join("bench/micro-certs");
    let certs_arg = certs.to_str().expect("UTF-8 path");
    portcullis(&root, &target, &["certs", "--dir", certs_arg]);
    let key = certs.join("ticket-signing-key.pem");
    let config = portcullis(
        &root,
        &target,
        &["plugin-config", "--policies", "policies", "--catalog", "catalog/example.yaml", "--signing-key", key.to_str().expect("UTF-8 path")],
    );
    let config = with_payload_tool(&config);
    let raw: RawConfig = serde_json::from_slice(&config).expect("plugin configuration");
    let catalog = Catalog::from_value(raw.catalog.clone()).expect("catalog");
    let authorizer = Authorizer::new(&raw.policy, &catalog).expect("authorizer");
    let gateway = Gateway::from_config_json(&config).expect("gateway");
    Fixture {
        catalog,
        authorizer,
        gateway,
        signing_key: raw.ticket.signing_key_pem.into_bytes(),
        public_key: std::fs::read(certs.join("ticket-signing-pub.pem")).expect("public key"),
    }
}

/// The PKCS#8 DER inside a PEM private key (what jsonwebtoken keeps and re-parses).
fn pkcs8_der(pem: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(pem).expect("PEM is text");
    base64(&text.lines().filter(|l| !l.starts_with("-----")).collect::<String>())
}

/// Decodes standard or URL-safe base64, padded or not.
fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' | b'-' => 62,
        b'/' | b'_' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, d)| acc | u32::from(*d) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// Copies of a body that differ only in a few characters of its payload (the first 8 of the
/// text, or the 6 digits of the first word), so that no two are the same call and the
/// decision cache cannot answer; sizes stay exact.
struct Fresh {
    body: String,
    at: usize,
    width: usize,
    n: std::cell::Cell<u32>,
}

impl Fresh {
    fn new(body: &str) -> Fresh {
        let (at, width) = [("\"text\":\"", 8), ("\"words\":[\"word-", 6)]
            .iter()
            .find_map(|(m, w)| body.find(m).map(|i| (i + m.len(), *w)))
            .expect("payload");
        assert!(body.get(at..at + width).is_some_and(|s| !s.contains('"')), "payload too short to vary");
        Fresh { body: body.to_owned(), at, width, n: std::cell::Cell::new(0) }
    }

    fn next(&self) -> String {
        let n = self.n.get().wrapping_add(1) & 0xff_ffff;
        self.n.set(n);
        let mut body = self.body.clone();
        body.replace_range(self.at..self.at + self.width, &format!("{n:0w$x}", w = self.width));
        body
    }
}

/// `list_pods` calls for namespaces never asked before (`team-000001`, `team-000002`, ...).
#[derive(Default)]
struct Namespaces(std::cell::Cell<u32>);

impl Namespaces {
    fn next(&self) -> String {
        let n = self.0.get().wrapping_add(1);
        self.0.set(n);
        format!("team-{n:06}")
    }

    fn arguments(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut a = serde_json::Map::new();
        a.insert("namespace".into(), self.next().into());
        a
    }

    fn body(&self) -> String {
        payload::tools_call_with(1, "list_pods", &self.arguments())
    }
}

/// A body and what parsing it yields, for benchmarks that start after parsing.
struct Case {
    id: String,
    body: String,
    tool: String,
    arguments: Option<serde_json::Map<String, serde_json::Value>>,
    hash: String,
    big: bool,
}

fn case(id: String, tool: &str, shape: Shape, size: usize) -> Case {
    let body = payload::tools_call(1, tool, shape, size).expect("body");
    let value = parse_strict(body.as_bytes(), Limits::default()).expect("parse");
    let Method::ToolsCall { name, arguments } = validate(&value).expect("valid").method else { panic!("not a tools/call") };
    let hash = plan_hash(&name, arguments.as_ref()).expect("hash");
    Case { id, body, tool: name, arguments, hash, big: size > 100 * 1024 }
}

fn cases(tool: &str) -> Vec<Case> {
    let mut out = Vec::new();
    for shape in Shape::ALL {
        for (label, size) in SIZES {
            out.push(case(sized_id(shape, label), tool, shape, size));
        }
    }
    out
}

fn policy_input<'a>(k: &'a Case, reader: &'a Workload) -> PolicyInput<'a> {
    PolicyInput {
        method: "tools/call",
        tool: Some(k.tool.as_str()),
        arguments: k.arguments.as_ref(),
        plan_hash: Some(k.hash.as_str()),
        workload: reader,
        user: None,
        user_error: Some("no bearer token"),
        time: portcullis_core::authz::PolicyTime::from_unix(1_790_000_000),
        mcp: Default::default(),
    }
}

/// Large bodies take milliseconds per iteration: sample them flat, and fewer times.
fn tune(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>, big: bool) {
    if big {
        group.sampling_mode(SamplingMode::Flat).sample_size(10);
    } else {
        group.sampling_mode(SamplingMode::Auto).sample_size(20);
    }
}

fn bench_all(c: &mut Criterion) {
    let f = fixture();
    let reader = Workload::from_spiffe_id(READER).expect("reader id");
    let allow = cases(PAYLOAD_TOOL);

    let mut g = c.benchmark_group(micro::PARSE_VALIDATE);
    for k in &allow {
        tune(&mut g, k.big);
        g.bench_function(&k.id, |b| {
            b.iter(|| {
                let v = parse_strict(black_box(k.body.as_bytes()), Limits::default()).expect("parse");
                black_box(validate(&v).expect("valid"))
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group(micro::PLAN_HASH);
    for k in &allow {
        tune(&mut g, k.big);
        g.bench_function(&k.id, |b| b.iter(|| black_box(plan_hash(black_box(&k.tool), k.arguments.as_ref()).expect("hash"))));
    }
    g.finish();

    let mut g = c.benchmark_group(micro::REGO_DECIDE);
    let input = |k| policy_input(k, &reader);
    for k in &allow {
        assert!(f.authorizer.decide(&input(k)).expect("decide").allow, "the reader must be allowed the payload tool");
        tune(&mut g, k.big);
        g.bench_function(&k.id, |b| b.iter(|| black_box(f.authorizer.decide_uncached(black_box(&input(k))).expect("decide"))));
    }
    let deny = case(micro::REGO_DENY_ID.to_owned(), "apply_config", Shape::Str, 200);
    assert!(!f.authorizer.decide(&input(&deny)).expect("decide").allow, "the reader must be denied apply_config");
    tune(&mut g, false);
    g.bench_function(&deny.id, |b| b.iter(|| black_box(f.authorizer.decide_uncached(black_box(&input(&deny))).expect("decide"))));
    // The same call against a policy that is one constant rule: what any evaluation costs.
    let trivial = PolicyBundle {
        modules: vec![PolicyModule {
            name: "trivial.rego".into(),
            source: "package portcullis.authz\n\ndecision := {\"allow\": true, \"require_approval\": false, \"reasons\": [], \"rule_ids\": []}\n".into(),
        }],
        data: serde_json::Value::Null,
    };
    let trivial = Authorizer::new(&trivial, &f.catalog).expect("trivial policy");
    let k = &allow[0];
    assert!(trivial.decide(&input(k)).expect("decide").allow);
    g.bench_function(micro::REGO_TRIVIAL_ID, |b| b.iter(|| black_box(trivial.decide_uncached(black_box(&input(k))).expect("decide"))));
    // A new namespace for list_pods on every iteration: an argument the policy reads.
    let namespaces = Namespaces::default();
    let read = case(micro::NEW_READ_ARGS_ID.to_owned(), "list_pods", Shape::Str, 200);
    fn read_input<'a>(read: &'a Case, reader: &'a Workload, arguments: &'a serde_json::Map<String, serde_json::Value>) -> PolicyInput<'a> {
        PolicyInput { arguments: Some(arguments), ..policy_input(read, reader) }
    }
    assert!(f.authorizer.decide(&read_input(&read, &reader, &namespaces.arguments())).expect("decide").allow, "the reader must be allowed list_pods");
    g.bench_function(micro::NEW_READ_ARGS_ID, |b| {
        b.iter_batched(|| namespaces.arguments(), |a| black_box(f.authorizer.decide(black_box(&read_input(&read, &reader, &a))).expect("decide")), BatchSize::SmallInput)
    });
    g.finish();

    let mut g = c.benchmark_group(micro::GATEWAY_DECIDE);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    let ctx = RequestContext { peer_uri_san: Some(READER), now_unix: now, entropy: [7; 16], authorization: None, session_id: None, headers: Default::default() };
    // Every iteration decides a call it has not seen (its arguments differ), so the decision
    // cache never answers: the whole cost of a new call.
    for k in &allow {
        let verdict = f.gateway.decide(k.body.as_bytes(), ctx);
        assert!(verdict.as_ref().is_ok_and(|a| a.ticket.is_some()), "{} must be allowed with a ticket: {verdict:?}", k.id);
        let fresh = Fresh::new(&k.body);
        tune(&mut g, k.big);
        g.bench_function(&k.id, |b| {
            b.iter_batched(|| fresh.next(), |body| black_box(f.gateway.decide(black_box(body.as_bytes()), ctx)), BatchSize::SmallInput)
        });
    }
    // The same call again: the policy's answer comes from the decision cache; parsing,
    // validation, the plan hash and a new ticket are still paid.
    let k = &allow[0];
    let verdict = f.gateway.decide(namespaces.body().as_bytes(), ctx);
    assert!(verdict.as_ref().is_ok_and(|a| a.ticket.is_some()), "list_pods must be allowed with a ticket: {verdict:?}");
    g.bench_function(micro::NEW_READ_ARGS_ID, |b| {
        b.iter_batched(|| namespaces.body(), |body| black_box(f.gateway.decide(black_box(body.as_bytes()), ctx)), BatchSize::SmallInput)
    });
    g.bench_function(micro::GATEWAY_CACHED_ID, |b| b.iter(|| black_box(f.gateway.decide(black_box(k.body.as_bytes()), ctx))));
    g.finish();

    // A ticket's size does not depend on the body (it carries the plan hash, not the call).
    let mut g = c.benchmark_group(micro::TICKET);
    tune(&mut g, false);
    let signer = Signer::from_pem(&f.signing_key, "portcullis-gateway".into(), 30).expect("signer");
    let verifier = Verifier::from_pem(&f.public_key, "portcullis-gateway", 1).expect("verifier");
    let claims = Claims {
        iss: "portcullis-gateway".into(),
        aud: AUDIENCE.into(),
        sub: READER.into(),
        user: None,
        user_iss: None,
        groups: Vec::new(),
        session: None,
        tool: "word_count".into(),
        plan_hash: allow[0].hash.clone(),
        decision_id: "0123456789abcdef0123456789abcdef".into(),
        require_approval: false,
        placement: None,
        policy_version: f.gateway.policy_version().to_owned(),
        jti: "0123456789abcdef0123456789abcdef".into(),
        iat: now,
        exp: now + 3600,
    };
    let token = signer.sign(&claims).expect("sign");
    assert_eq!(verifier.verify(&token).expect("verify"), claims);
    g.bench_function(micro::TICKET_SIGN_ID, |b| b.iter(|| black_box(signer.sign(black_box(&claims)).expect("sign"))));
    g.bench_function(micro::TICKET_VERIFY_ID, |b| b.iter(|| black_box(verifier.verify(black_box(&token)).expect("verify"))));
    // Where sign's time goes: jsonwebtoken builds a new ed25519 SigningKey from the PKCS#8
    // document on every encode (deriving the public key, a scalar multiplication), then signs.
    let der = pkcs8_der(&f.signing_key);
    let key = SigningKey::from_pkcs8_der(&der).expect("pkcs8");
    let (signing_input, signature) = token.rsplit_once('.').expect("jwt");
    // Ed25519 is deterministic: the same key over the same input gives the ticket's signature.
    assert_eq!(key.sign(signing_input.as_bytes()).to_bytes().to_vec(), base64(signature), "the raw key is not the ticket key");
    let signing_input = signing_input.to_owned();
    g.bench_function(micro::ED25519_SIGN_ID, |b| b.iter(|| black_box(key.sign(black_box(signing_input.as_bytes())))));
    g.bench_function(micro::ED25519_KEY_ID, |b| b.iter(|| black_box(SigningKey::from_pkcs8_der(black_box(&der)).expect("pkcs8"))));
    g.finish();
}

fn main() {
    let mut c = Criterion::default()
        .without_plots()
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(700))
        .sample_size(20)
        .nresamples(20_000)
        .configure_from_args();
    bench_all(&mut c);
    c.final_summary();
}
