//! MCP over Streamable HTTP, two ways: the official `rmcp` client, and raw JSON-RPC POSTs for
//! the cases a well-behaved client never sends (batches, duplicate keys, forged tickets).

use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{json, Value};

/// An rmcp client session through `url`, using `http` (which carries the client certificate).
pub async fn rmcp_client(http: reqwest::Client, url: &str) -> anyhow::Result<RunningService<RoleClient, ()>> {
    let transport = StreamableHttpClientTransport::with_client(http, StreamableHttpClientTransportConfig::with_uri(url));
    Ok(().serve(transport).await?)
}

/// One HTTP reply to a JSON-RPC POST.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    /// The JSON-RPC message in the body (plain JSON, or the last `data:` event of an SSE
    /// stream); `Null` when there is none.
    pub message: Value,
    pub text: String,
}

impl Reply {
    pub fn error_code(&self) -> Option<i64> {
        self.message.pointer("/error/code").and_then(Value::as_i64)
    }
    pub fn error_message(&self) -> String {
        self.message.pointer("/error/message").and_then(Value::as_str).unwrap_or_default().to_owned()
    }
}

pub async fn post(http: &reqwest::Client, url: &str, session: Option<&str>, headers: &[(&str, &str)], body: &str) -> anyhow::Result<Reply> {
    let mut req = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_owned());
    if let Some(s) = session {
        req = req.header("mcp-session-id", s).header("mcp-protocol-version", "2025-06-18");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await?;
    let message = message_of(&text);
    Ok(Reply { status, headers, message, text })
}

/// The JSON-RPC message in a body: plain JSON, or the last `data:` event of an SSE stream;
/// `Null` when there is none.
pub fn message_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| {
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .next_back()
            .unwrap_or(Value::Null)
    })
}

/// initialize + notifications/initialized; returns the session id.
pub async fn open_session(http: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
        "protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"portcullis-e2e","version":"1"}}});
    let r = post(http, url, None, &[], &init.to_string()).await?;
    anyhow::ensure!(r.status == 200 && r.message.get("error").is_none(), "initialize failed: {} {}", r.status, r.text);
    let session = r
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| anyhow::anyhow!("no mcp-session-id in {:?}", r.headers))?
        .to_owned();
    let r = post(http, url, Some(&session), &[], r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).await?;
    anyhow::ensure!(r.status == 202, "notifications/initialized failed: {} {}", r.status, r.text);
    Ok(session)
}

pub fn tools_call(id: i64, tool: &str, arguments: Value) -> String {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":arguments}}).to_string()
}

/// A body-less Streamable HTTP request (`GET` opens the server's event stream, `DELETE` ends
/// the session). The body of a 200 to a GET is an endless stream, so only a refusal's body is
/// read.
pub async fn bodyless(http: &reqwest::Client, method: reqwest::Method, url: &str, session: &str, headers: &[(&str, &str)]) -> anyhow::Result<Reply> {
    let mut req = http
        .request(method, url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", session)
        .header("mcp-protocol-version", "2025-06-18");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = if status == 200 { String::new() } else { resp.text().await? };
    let message = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(Reply { status, headers, message, text })
}
