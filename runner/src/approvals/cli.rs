//! `portcullis approvals list|show|approve|deny`: an approver's MCP client of the gateway.
//! It goes through the gateway like any agent (the approval console's certificate and the
//! approver's own user token), calling the approval tools that policy authorizes; it never
//! talks to the runner directly.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use rmcp::model::CallToolRequestParams;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::ServiceExt;
use serde_json::{json, Map, Value};

#[derive(Debug, clap::Args)]
pub struct ApprovalsArgs {
    #[command(subcommand)]
    pub action: Action,
    /// The gateway's MCP endpoint.
    #[arg(long, global = true, default_value = "https://127.0.0.1:8443/mcp")]
    pub gateway: String,
    /// CA bundle that signed the gateway's certificate.
    #[arg(long, global = true, default_value = ".portcullis/certs/ca.pem")]
    pub ca: PathBuf,
    /// Private key and certificate (one PEM file) of the approval console's workload.
    #[arg(long, global = true, default_value = ".portcullis/certs/agents/console-bundle.pem")]
    pub identity: PathBuf,
    /// The approver's user token (JWT); or set PORTCULLIS_TOKEN.
    #[arg(long, global = true)]
    pub token: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// List the approvals waiting for a decision.
    List,
    /// Show one approval: the exact call, who asked, its state.
    Show { id: String },
    /// Approve a pending approval: the requester may then run that exact call once.
    Approve {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Deny a pending approval; final for that call.
    Deny {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

pub async fn run(args: ApprovalsArgs) -> Result<()> {
    let (tool, arguments) = match &args.action {
        Action::List => ("approvals_list", json!({})),
        Action::Show { id } => ("approvals_show", json!({"id": id})),
        Action::Approve { id, reason } => ("approvals_decide", decision(id, "approve", reason)),
        Action::Deny { id, reason } => ("approvals_decide", decision(id, "deny", reason)),
    };
    let token = args.token.clone().or_else(|| std::env::var("PORTCULLIS_TOKEN").ok().filter(|t| !t.is_empty()));
    let Some(token) = &token else {
        bail!("approvals are decided by people: pass your user token with --token or PORTCULLIS_TOKEN")
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&args.ca).with_context(|| format!("reading {}", args.ca.display()))?)?;
    let identity = reqwest::Identity::from_pem(&std::fs::read(&args.identity).with_context(|| format!("reading {}", args.identity.display()))?)?;
    let mut headers = reqwest::header::HeaderMap::new();
    let mut bearer = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).context("the token is not a header value")?;
    bearer.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, bearer);
    let http = reqwest::Client::builder().tls_certs_only([ca]).identity(identity).default_headers(headers).build()?;
    let transport = StreamableHttpClientTransport::with_client(http, StreamableHttpClientTransportConfig::with_uri(args.gateway.clone()));
    let client = ().serve(transport).await.with_context(|| format!("connecting to the gateway at {}", args.gateway))?;
    let arguments: Map<String, Value> = arguments.as_object().cloned().unwrap_or_default();
    let result = client.call_tool(CallToolRequestParams::new(tool).with_arguments(arguments)).await;
    let _ = client.cancel().await;
    let result = result.map_err(|e| anyhow::anyhow!("{tool}: {e}"))?;
    match &result.structured_content {
        Some(value) => println!("{}", serde_json::to_string_pretty(value)?),
        None => println!("{}", serde_json::to_string_pretty(&result.content)?),
    }
    if result.is_error == Some(true) {
        bail!("{tool} failed");
    }
    Ok(())
}

fn decision(id: &str, decision: &str, reason: &Option<String>) -> Value {
    let mut v = json!({"id": id, "decision": decision});
    if let Some(reason) = reason {
        v["reason"] = json!(reason);
    }
    v
}
