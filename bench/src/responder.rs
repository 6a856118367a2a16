//! The static upstream: answers every request with one fixed JSON-RPC result, so that a run
//! against it measures the proxy and nothing behind it.
//!
//! It runs as its own process (`portcullis-bench __responder`) so that its CPU and memory are
//! not mixed with the load generator's, and it serves TLS exactly like the runner: the same
//! `portcullis_runner::service::tls::{server_config, bind}` (the runner's certificate; only clients presenting
//! the gateway's SPIFFE ID get in), the same axum-server stack, a default multi-threaded
//! tokio runtime.

use std::net::SocketAddr;

use anyhow::Result;
use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use portcullis_runner::service::tls;

/// What the responder sends back for every request: a successful tools/call result.
pub const RESPONSE: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"13"}],"isError":false}}"#;

async fn respond(body: Bytes) -> impl IntoResponse {
    // The request body is read in full (as any real upstream does) and then ignored.
    drop(body);
    ([(CONTENT_TYPE, "application/json")], RESPONSE)
}

pub fn serve(listen: SocketAddr, tls: &tls::ServerTlsArgs, gateway_id: String) -> Result<()> {
    let config = tls.server_config(vec![gateway_id])?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let app = axum::Router::new().fallback(respond);
        tls::bind(listen, config).serve(app.into_make_service()).await
    })?;
    Ok(())
}
