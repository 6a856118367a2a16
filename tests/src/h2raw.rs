//! Raw clients (the `h2` crate, or HTTP/1.1 bytes, over rustls with an agent certificate) for
//! what no MCP client sends but an attacker can: a request that ends in trailers, or one reset
//! or cut off midway.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

use crate::Stack;

/// How a raw request ends.
pub enum End {
    /// The last DATA frame carries END_STREAM.
    Body,
    /// A trailers frame (with END_STREAM) follows the DATA frames.
    Trailers,
    /// RST_STREAM (CANCEL) after the DATA frames; no answer is awaited.
    Reset,
}

/// What came back: status and body, or `None` for a reset request.
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
    /// How many DATA frames the body came in.
    pub frames: usize,
}

impl RawReply {
    pub fn json(&self) -> serde_json::Value {
        crate::mcp::message_of(&self.body)
    }
}

/// Sends one request on a fresh HTTP/2 connection to the gateway as `agent`. `body` goes out
/// as DATA frames of at most `chunk` bytes, none of them with END_STREAM unless `end` is Body.
pub async fn send(stack: &Stack, agent: &str, method: &str, headers: &[(&str, &str)], body: &[u8], end: End) -> anyhow::Result<Option<RawReply>> {
    send_to(stack, agent, method, "/mcp", headers, &[body], std::time::Duration::ZERO, end).await
}

/// Like [`send`], to `path` (with its query), the body going out as one DATA frame per part
/// (a long part as several), `pause` apart.
#[allow(clippy::too_many_arguments)]
pub async fn send_to(stack: &Stack, agent: &str, method: &str, path: &str, headers: &[(&str, &str)], parts: &[&[u8]], pause: std::time::Duration, end: End) -> anyhow::Result<Option<RawReply>> {
    let body_len: usize = parts.iter().map(|p| p.len()).sum();
    let tls = connect(stack, agent, b"h2").await?;
    let (client, connection) = h2::client::handshake(tls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await?;
    let mut req = Request::builder().method(method).uri(format!("https://{}{path}", stack.listen));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let end_at_headers = body_len == 0 && matches!(end, End::Body);
    let (response, mut stream) = client.send_request(req.body(())?, end_at_headers)?;
    let parts: Vec<&[u8]> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 && !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        stream.reserve_capacity(part.len());
        stream.send_data(Bytes::copy_from_slice(part), i + 1 == parts.len() && matches!(end, End::Body))?;
    }
    match end {
        End::Body => {}
        End::Trailers => {
            let mut trailers = HeaderMap::new();
            trailers.insert("x-portcullis-trailer", "1".parse()?);
            stream.send_trailers(trailers)?;
        }
        End::Reset => {
            // Let the DATA frames leave before the reset.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            stream.send_reset(h2::Reason::CANCEL);
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            return Ok(None);
        }
    }
    let response = tokio::time::timeout(std::time::Duration::from_secs(20), response).await??;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let mut recv = response.into_body();
    let mut body = Vec::new();
    let mut frames = 0;
    while let Some(chunk) = tokio::time::timeout(std::time::Duration::from_secs(20), recv.data()).await? {
        let chunk = chunk?;
        let _ = recv.flow_control().release_capacity(chunk.len());
        body.extend_from_slice(&chunk);
        frames += 1;
    }
    Ok(Some(RawReply { status, headers, body: String::from_utf8_lossy(&body).into_owned(), frames }))
}

/// Writes `raw` (a whole HTTP/1.1 request, or the start of one) on a fresh connection as
/// `agent`, closes the connection at once with `cut_off` (Envoy then drops the request), and
/// returns everything the gateway answered.
pub async fn send_http1(stack: &Stack, agent: &str, raw: &[u8], cut_off: bool) -> anyhow::Result<String> {
    send_http1_parts(stack, agent, &[raw], std::time::Duration::ZERO, cut_off).await
}

/// Like [`send_http1`], writing (and flushing) `parts` one after another, `pause` apart: one
/// TLS record each, so the gateway reads the request in these pieces.
pub async fn send_http1_parts(stack: &Stack, agent: &str, parts: &[&[u8]], pause: std::time::Duration, cut_off: bool) -> anyhow::Result<String> {
    exchange_http1(stack, agent, parts, pause, cut_off, false).await
}

/// Like [`send_http1_parts`], returning as soon as one whole answer is in (by its
/// content-length or the end of its chunked body) rather than when the gateway closes the
/// connection (Envoy delays the close after some answers by a second).
pub async fn send_http1_answered(stack: &Stack, agent: &str, parts: &[&[u8]], pause: std::time::Duration) -> anyhow::Result<String> {
    exchange_http1(stack, agent, parts, pause, false, true).await
}

async fn exchange_http1(stack: &Stack, agent: &str, parts: &[&[u8]], pause: std::time::Duration, cut_off: bool, until_answered: bool) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = connect(stack, agent, b"http/1.1").await?;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 && !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        // The gateway may answer (413) and stop reading before the body ends: read its answer.
        if tls.write_all(part).await.is_err() || tls.flush().await.is_err() {
            break;
        }
    }
    if cut_off {
        tls.shutdown().await?;
    }
    let mut answer = Vec::new();
    let read = async {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
            if until_answered && http1_answer_complete(&answer) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(20), read).await;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// Whether `raw` holds a whole HTTP/1.1 answer: its head, then its content-length's worth of
/// body, or a chunked body through its last chunk (no trailers are expected).
fn http1_answer_complete(raw: &[u8]) -> bool {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else { return false };
    let (head, body) = (String::from_utf8_lossy(&raw[..end]), &raw[end + 4..]);
    let header = |name: &str| head.lines().skip(1).find_map(|l| l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_owned()));
    if let Some(length) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        return body.len() >= length;
    }
    header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) && (body == b"0\r\n\r\n" || body.ends_with(b"\r\n0\r\n\r\n"))
}

/// A TLS connection to the gateway presenting `agent`'s certificate, with ALPN `alpn` only.
async fn connect(stack: &Stack, agent: &str, alpn: &[u8]) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in pem_certs(&std::fs::read(stack.certs().join("ca.pem"))?)? {
        roots.add(cert)?;
    }
    let identity = stack.identity_pem(agent);
    let chain = pem_certs(&identity)?;
    let key = rustls::pki_types::pem::PemObject::from_pem_slice(&identity).map_err(|e| anyhow::anyhow!("agent key: {e:?}"))?;
    let key: PrivateKeyDer<'static> = key;
    let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(stack.listen).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(ServerName::try_from("localhost")?.to_owned(), tcp).await?;
    anyhow::ensure!(tls.get_ref().1.alpn_protocol() == Some(alpn), "the gateway did not negotiate {}", String::from_utf8_lossy(alpn));
    Ok(tls)
}

fn pem_certs(pem: &[u8]) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| anyhow::anyhow!("certificates: {e:?}"))
}
