//! The adversarial suite: requests an agent could craft, sent black-box to the real stack over
//! HTTP/1.1 and HTTP/2 (raw clients, so nothing is normalized on the way). Every table runs on
//! one stack, one case after another (no case needs a stack of its own: each checks its own
//! executions), and checks the one invariant that matters in every case: nothing executes that policy did not allow for that exact call. An execution
//! leaves a `job.started` record (with the gateway's decision id and the tool) in the runner's
//! audit trail before the sandbox starts, so every case compares the trail before and after.
//!
//! Each case prints one line (transport, status, JSON-RPC error) so a run documents itself.

mod abuse;
mod headers;
mod http;
mod json;
mod sse;

use std::time::Duration;

use portcullis_e2e::h2raw::{self, End};
use portcullis_e2e::mcp::{message_of, open_session};
use portcullis_e2e::Stack;
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Transport {
    H1,
    H2,
}

pub const BOTH: [Transport; 2] = [Transport::H1, Transport::H2];

/// How a request's body is framed on the wire.
#[derive(Clone)]
pub enum Framing {
    /// One piece: content-length (HTTP/1.1), DATA frames as the client library cuts them.
    Whole,
    /// These pieces, `pause` apart: DATA frames (HTTP/2), chunks of a chunked body (HTTP/1.1).
    Parts(Vec<Vec<u8>>, Duration),
}

/// What a case must end in.
#[derive(Clone, Debug, PartialEq)]
pub enum Expect {
    /// Allowed: HTTP 200, a result, and exactly one execution of this tool, under the
    /// answer's decision id.
    Runs(&'static str),
    /// Allowed, but nothing executes (a ping, a notification, a list).
    Answered(u16),
    /// Refused with this HTTP status and JSON-RPC error code, carrying this id (`Null` where
    /// none is recoverable), and nothing executes.
    Refused(u16, i64, Value),
    /// Like `Refused`, the id either this one or null: where who refuses depends on how far the
    /// body got (Envoy's own refusal, restated by the filter, carries no id).
    RefusedIdOrNull(u16, i64, Value),
}

#[derive(Clone)]
pub struct Case {
    pub name: String,
    pub agent: &'static str,
    pub method: &'static str,
    pub path: String,
    /// Headers besides host, content-type (unless given here), accept and the session's.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub framing: Framing,
    /// Send the stack's session (of `agent`) with the request.
    pub session: bool,
    pub expect: Expect,
    /// What HTTP/1.1 must end in where it differs from `expect` (Envoy's own refusals).
    pub expect_h1: Option<Expect>,
}

impl Case {
    /// A JSON POST to /mcp as the reader, on its session.
    pub fn post(name: impl Into<String>, body: impl Into<Vec<u8>>, expect: Expect) -> Case {
        Case {
            name: name.into(),
            agent: "reader",
            method: "POST",
            path: "/mcp".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into(),
            framing: Framing::Whole,
            session: true,
            expect,
            expect_h1: None,
        }
    }
    pub fn header(mut self, k: &str, v: &str) -> Case {
        self.headers.push((k.into(), v.into()));
        self
    }
    pub fn on_h1(mut self, expect: Expect) -> Case {
        self.expect_h1 = Some(expect);
        self
    }
    pub fn without_header(mut self, k: &str) -> Case {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(k));
        self
    }
}

/// `tools/call` of `tool` with `{"text": text}`, its id written as `id` (raw JSON).
pub fn call(id: &str, tool: &str, text: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{{"text":"{text}"}}}}}}"#)
}

/// The reader's permitted call, and the call policy denies it (an irreversible apply tool).
pub fn allowed(id: &str) -> String {
    call(id, "word_count", "adversarial")
}
pub fn denied(id: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"delete_namespace","arguments":{{"namespace":"prod"}}}}}}"#)
}

/// Every table on one stack, over both transports where the transport matters.
#[tokio::test]
async fn adversarial_suite() {
    let started = std::time::Instant::now();
    let mut b = Bench::start(&["reader", "operator"]).await;
    eprintln!("adversarial: stack up in {:.1} s", started.elapsed().as_secs_f64());
    let mut lap = std::time::Instant::now();
    let mut done = |what: &str| {
        eprintln!("adversarial: {what} in {:.1} s", lap.elapsed().as_secs_f64());
        lap = std::time::Instant::now();
    };
    json::run(&mut b).await;
    done("JSON bodies");
    http::run(&mut b).await;
    done("HTTP envelopes, split and slow bodies");
    headers::run(&mut b).await;
    done("forged headers and sessions");
    sse::run(&mut b).await;
    done("event streams");
    abuse::run(&mut b).await;
    done("approval and plan abuse");
    let rows = b.rows.len();
    b.finish().await;
    eprintln!("adversarial: {rows} exchanges in {:.1} s", started.elapsed().as_secs_f64());
}

/// What came back.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// The pieces the body came in: DATA frames (HTTP/2), chunks of a chunked body (HTTP/1.1).
    pub pieces: usize,
    pub decision: Option<String>,
    pub body: String,
    pub message: Value,
}

/// A stack of its own, with a session for each agent a table uses.
pub struct Bench {
    pub s: Stack,
    sessions: Vec<(&'static str, String)>,
    pub rows: Vec<String>,
    executed: usize,
}

impl Bench {
    pub async fn start(agents: &[&'static str]) -> Bench {
        let s = Stack::start();
        let mut sessions = Vec::new();
        for agent in agents {
            let session = open_session(&s.http_client(Some(agent)), &s.url()).await.expect("session");
            sessions.push((*agent, session));
        }
        Bench { s, sessions, rows: Vec::new(), executed: 0 }
    }

    pub fn session(&self, agent: &str) -> &str {
        self.sessions.iter().find(|(a, _)| *a == agent).map(|(_, s)| s.as_str()).expect("a session for this agent")
    }

    /// Counts `n` executions the policy allowed outside `check` (the abuse flows).
    pub fn allow(&mut self, n: usize) {
        self.executed += n;
    }

    /// The `job.started` records in the audit trail: every execution.
    pub fn executions(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.s.state.path().join("audit/audit.jsonl")).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|r| r["event"] == "job.started").collect()
    }

    /// Sends `case` over `t` and checks its outcome and the invariant.
    pub async fn check(&mut self, case: &Case, t: Transport) -> Answer {
        let before = self.executions().len();
        let sent = std::time::Instant::now();
        let a = self.send(case, t).await;
        let ms = sent.elapsed().as_millis();
        let after = self.executions();
        let new = &after[before.min(after.len())..];
        let row = format!("{:<48} {:?} {} {} ({ms} ms)", case.name, t, a.status, summary(&a));
        eprintln!("adversarial: {row}");
        self.rows.push(row);
        let expect = match (&case.expect_h1, t) {
            (Some(e), Transport::H1) => e,
            _ => &case.expect,
        };
        let wrong = wrong(expect, &a, new);
        if matches!(expect, Expect::Runs(_)) {
            self.executed += new.len();
        }
        if let Some(wrong) = wrong {
            let what = format!("{} over {t:?} (expected {expect:?}): {wrong}: {} {}; executions {new:?}", case.name, a.status, a.body.chars().take(600).collect::<String>());
            // ADVERSARIAL_OBSERVE=1 lists every outcome that differs from its case instead of
            // stopping at the first (to see what the stack does after a change).
            if std::env::var_os("ADVERSARIAL_OBSERVE").is_some() {
                eprintln!("adversarial-observe: MISMATCH {what}");
                if !matches!(expect, Expect::Runs(_)) {
                    self.executed += new.len();
                }
            } else {
                panic!("{what}");
            }
        }
        a
    }

    /// Runs every case over both transports.
    pub async fn run(&mut self, cases: &[Case]) {
        for case in cases {
            for t in BOTH {
                self.check(case, t).await;
            }
        }
    }

    /// The end of a table: after a pause for anything forwarded late, the trail holds exactly
    /// the executions the table allowed, nothing more.
    pub async fn finish(self) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let all = self.executions();
        assert_eq!(all.len(), self.executed, "executions beyond those allowed: {all:#?}");
        assert!(self.s.runner_log().lines().all(|l| !l.contains("panicked")), "{}", self.s.runner_log());
    }

    async fn send(&self, case: &Case, t: Transport) -> Answer {
        let mut headers: Vec<(String, String)> = case.headers.clone();
        headers.push(("accept".into(), "application/json, text/event-stream".into()));
        if case.session {
            headers.push(("mcp-session-id".into(), self.session(case.agent).to_owned()));
            headers.push(("mcp-protocol-version".into(), "2025-06-18".into()));
        }
        match t {
            Transport::H2 => {
                let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let (parts, pause): (Vec<&[u8]>, Duration) = match &case.framing {
                    Framing::Whole => (vec![case.body.as_slice()], Duration::ZERO),
                    Framing::Parts(p, pause) => (p.iter().map(Vec::as_slice).collect(), *pause),
                };
                let r = h2raw::send_to(&self.s, case.agent, case.method, &case.path, &hs, &parts, pause, End::Body).await;
                match r {
                    Ok(Some(r)) => {
                        let decision = r.headers.get("x-portcullis-decision-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
                        Answer { status: r.status, pieces: r.frames, decision, message: message_of(&r.body), body: r.body }
                    }
                    Ok(None) => panic!("no answer"),
                    // A reset stream or a refused connection: the gateway answered nothing.
                    Err(e) => Answer { status: 0, pieces: 0, decision: None, message: Value::Null, body: format!("error: {e:#}") },
                }
            }
            Transport::H1 => {
                let mut head = format!("{} {} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n", case.method, case.path);
                for (k, v) in &headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                let mut parts: Vec<Vec<u8>> = Vec::new();
                let pause = match &case.framing {
                    Framing::Whole => {
                        head.push_str(&format!("content-length: {}\r\n\r\n", case.body.len()));
                        let mut p = head.into_bytes();
                        p.extend_from_slice(&case.body);
                        parts.push(p);
                        Duration::ZERO
                    }
                    Framing::Parts(pieces, pause) => {
                        head.push_str("transfer-encoding: chunked\r\n\r\n");
                        parts.push(head.into_bytes());
                        for piece in pieces.iter().filter(|p| !p.is_empty()) {
                            let mut c = format!("{:x}\r\n", piece.len()).into_bytes();
                            c.extend_from_slice(piece);
                            c.extend_from_slice(b"\r\n");
                            parts.push(c);
                        }
                        parts.push(b"0\r\n\r\n".to_vec());
                        *pause
                    }
                };
                let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
                let raw = h2raw::send_http1_answered(&self.s, case.agent, &parts, pause).await.expect("HTTP/1.1 exchange");
                parse_http1(&raw)
            }
        }
    }
}

/// What is wrong with answer `a` (and executions `new`) for `expect`, if anything.
fn wrong(expect: &Expect, a: &Answer, new: &[Value]) -> Option<String> {
    let error = &a.message["error"];
    let fail = |cond: bool, why: &str| (!cond).then(|| why.to_owned());
    match expect {
        Expect::Runs(tool) => fail(a.status == 200, "status")
            .or_else(|| fail(a.message.get("result").is_some(), "no result"))
            .or_else(|| fail(new.len() == 1, "not exactly one execution"))
            .or_else(|| fail(new.first().is_some_and(|r| r["tool"] == *tool), "another tool executed"))
            .or_else(|| fail(new.first().and_then(|r| r["decision_id"].as_str()) == a.decision.as_deref(), "executed under another decision")),
        Expect::Answered(status) => fail(a.status == *status, "status").or_else(|| fail(error.is_null(), "an error")).or_else(|| fail(new.is_empty(), "executed")),
        Expect::Refused(status, code, id) => fail(a.status == *status, "status")
            .or_else(|| fail(error["code"].as_i64() == Some(*code), "JSON-RPC error code"))
            .or_else(|| fail(a.message["jsonrpc"] == "2.0", "not JSON-RPC 2.0"))
            .or_else(|| fail(&a.message["id"] == id, "id"))
            .or_else(|| fail(error["message"].as_str().is_some_and(|m| !m.is_empty()), "no error message"))
            .or_else(|| fail(new.is_empty(), "executed")),
        Expect::RefusedIdOrNull(status, code, id) => {
            let id = if a.message["id"].is_null() { Value::Null } else { id.clone() };
            wrong(&Expect::Refused(*status, *code, id), a, new)
        }
    }
}

fn summary(a: &Answer) -> String {
    match a.message.get("error") {
        Some(e) => format!("id {} {} {}", a.message["id"], e["code"], e["message"].as_str().unwrap_or_default().chars().take(90).collect::<String>()),
        None if a.message.get("result").is_some() => "result".into(),
        None => a.body.chars().take(60).collect::<String>().replace(['\r', '\n'], " "),
    }
}

/// Status, decision id and body of a whole HTTP/1.1 answer (content-length or chunked).
fn parse_http1(raw: &str) -> Answer {
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_owned()))
    };
    let mut pieces = usize::from(!rest.is_empty());
    let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        pieces = 0;
        let mut out = String::new();
        let mut rest = rest;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let (Some(chunk), Some(next)) = (after.get(..n), after.get(n..)) else { break };
            if n == 0 {
                break;
            }
            out.push_str(chunk);
            pieces += 1;
            rest = next.trim_start_matches("\r\n");
        }
        out
    } else {
        rest.to_owned()
    };
    Answer { status, pieces, decision: header("x-portcullis-decision-id"), message: message_of(&body), body }
}
