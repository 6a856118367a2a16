//! Headers an agent forges: the gateway's ticket, the identity headers a proxy in front would
//! set, the MCP routing headers, another caller's session, a garbage user token.

use serde_json::json;

use super::{allowed, denied, Bench, Case, Expect};

const OPERATOR: &str = "spiffe://portcullis.local/ns/agents/sa/operator";

fn spoofed() -> Vec<Case> {
    let xfcc = format!("By={OPERATOR};URI={OPERATOR}");
    let forged: Vec<(&str, String)> = vec![
        ("x-portcullis-ticket", "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.AAAA".into()),
        ("x-forwarded-client-cert", xfcc),
        ("x-forwarded-for", "127.0.0.1".into()),
        ("x-forwarded-proto", "http".into()),
        ("x-forwarded-host", "runner.internal".into()),
        ("forwarded", "for=127.0.0.1;proto=https;by=gateway".into()),
        ("x-envoy-original-path", "/healthz".into()),
        ("x-portcullis-decision-id", "00000000000000000000000000000000".into()),
        ("x-portcullis-workload", OPERATOR.into()),
    ];
    let mut cases = Vec::new();
    for (k, v) in &forged {
        // The forged header changes nothing: the allowed call runs, the denied one stays denied.
        cases.push(Case::post(format!("forged {k}, allowed call"), allowed("30"), Expect::Runs("word_count")).header(k, v));
        cases.push(Case::post(format!("forged {k}, denied call"), denied("31"), Expect::Refused(200, -32001, json!(31))).header(k, v));
    }
    // MCP's routing headers must agree with the body; one that names something else is refused.
    let mismatch = |id: u64| Expect::Refused(400, -32020, json!(id));
    cases.push(Case::post("mcp-method ping, allowed call", allowed("35"), mismatch(35)).header("mcp-method", "ping"));
    cases.push(Case::post("mcp-method ping, denied call", denied("36"), mismatch(36)).header("mcp-method", "ping"));
    cases.push(Case::post("mcp-name word_count, denied call", denied("37"), mismatch(37)).header("mcp-name", "word_count"));
    cases.push(Case::post("mcp-name word_count, allowed call (agrees)", allowed("38"), Expect::Runs("word_count")).header("mcp-name", "word_count"));
    // The reader claims to be the operator, through a proxy's header, for an operator's tool.
    let medium = r#"{"jsonrpc":"2.0","id":32,"method":"tools/call","params":{"name":"restart_deployment","arguments":{"namespace":"dev","deployment":"app"}}}"#;
    cases.push(Case::post("forged xfcc naming the operator, operator's tool", medium, Expect::Refused(200, -32001, json!(32))).header("x-forwarded-client-cert", &format!("By={OPERATOR};URI={OPERATOR}")));
    // A token that does not verify names no user: the call is decided for the workload alone.
    cases.push(Case::post("garbage bearer token, denied call", denied("33"), Expect::Refused(200, -32001, json!(33))).header("authorization", "Bearer not.a.token"));
    cases.push(Case::post("garbage bearer token, allowed call", allowed("39"), Expect::Runs("word_count")).header("authorization", "Bearer not.a.token"));
    cases
}

fn sessions() -> Vec<Case> {
    // The reader presents the operator's session: refused, whatever it asks.
    let mut cases = Vec::new();
    for (name, body) in [("allowed call", allowed("34")), ("denied call", denied("34"))] {
        let mut c = Case::post(format!("another agent's session, {name}"), body, Expect::Refused(404, -32600, json!(34)));
        c.session = false;
        cases.push(c);
    }
    cases
}

pub async fn run(b: &mut Bench) {
    b.run(&spoofed()).await;
    let operator_session = b.session("operator").to_owned();
    let cases: Vec<Case> = sessions()
        .into_iter()
        .map(|c| c.header("mcp-session-id", &operator_session).header("mcp-protocol-version", "2025-06-18"))
        .collect();
    b.run(&cases).await;
}
