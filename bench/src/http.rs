//! A minimal HTTP/1.1 client (keep-alive, content-length and chunked bodies) over mTLS or
//! plain TCP.
//!
//! Why not reqwest or hyper's client: they would switch on crate features (hyper `client`,
//! url/idna and their derive macros) that the runner's build does not use, and with them
//! recompile most of the dependency tree, which `make bench` cannot afford on 2 cores.
//! This client uses only what the runner already builds (tokio, rustls, tokio-rustls). It
//! sends each request in one write and never pipelines, and it costs the load generator less
//! CPU per request than a general client would, which keeps more of the machine for the proxy.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// TLS client configuration trusting `ca_pem`, presenting `cert_pem` with `key_pem`.
pub fn tls_config(ca_pem: &[u8], cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(ca.context("CA PEM")?)?;
    }
    let chain = CertificateDer::pem_slice_iter(cert_pem).collect::<Result<Vec<_>, _>>().context("certificate PEM")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).context("key PEM")?;
    Ok(Arc::new(ClientConfig::builder().with_root_certificates(roots).with_client_auth_cert(chain, key)?))
}

/// One HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A keep-alive connection; reconnects (new TCP + TLS handshake) when the server closed it.
pub struct Conn<S> {
    stream: Option<S>,
    buf: Vec<u8>,
    host: String,
}

pub type TlsConn = Conn<TlsStream<TcpStream>>;

/// Connects to `addr` over mTLS; the server's certificate must name 127.0.0.1.
pub async fn connect_tls(addr: SocketAddr, config: &Arc<ClientConfig>) -> Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    tcp.set_nodelay(true)?;
    let name = ServerName::IpAddress(addr.ip().into());
    TlsConnector::from(config.clone()).connect(name, tcp).await.with_context(|| format!("TLS handshake with {addr}"))
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub fn new(stream: S, addr: SocketAddr) -> Self {
        Conn { stream: Some(stream), buf: Vec::with_capacity(16 << 10), host: addr.to_string() }
    }

    pub fn is_open(&self) -> bool {
        self.stream.is_some()
    }

    /// Drops the connection (e.g. after a timeout left a response half read).
    pub fn close(&mut self) {
        self.stream = None;
    }

    /// Replaces a closed (or broken) connection.
    pub fn reopen(&mut self, stream: S) {
        self.stream = Some(stream);
        self.buf.clear();
    }

    /// Sends one request and reads the whole response. On any error the connection is
    /// dropped, so the caller reopens it.
    pub async fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Response> {
        let result = self.exchange(method, path, headers, body).await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn exchange(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Response> {
        let mut req = Vec::with_capacity(512 + body.len());
        req.extend_from_slice(format!("{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-length: {}\r\n", self.host, body.len()).as_bytes());
        for (k, v) in headers {
            req.extend_from_slice(k.as_bytes());
            req.extend_from_slice(b": ");
            req.extend_from_slice(v.as_bytes());
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(body);
        let stream = self.stream.as_mut().context("connection is closed")?;
        stream.write_all(&req).await?;
        stream.flush().await?;
        self.buf.clear();
        self.read_response(method == "HEAD").await
    }

    /// Reads until `buf` holds at least `n` bytes.
    async fn fill_to(&mut self, n: usize) -> Result<()> {
        while self.buf.len() < n {
            self.fill().await?;
        }
        Ok(())
    }

    /// Reads more bytes; EOF is an error (callers that accept EOF check for it themselves).
    async fn fill(&mut self) -> Result<()> {
        let stream = self.stream.as_mut().context("connection is closed")?;
        let mut chunk = [0u8; 16 << 10];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed by the server mid-response");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    async fn read_line(&mut self, from: usize) -> Result<usize> {
        loop {
            if let Some(i) = find(&self.buf[from..], b"\r\n") {
                return Ok(from + i);
            }
            self.fill().await?;
        }
    }

    async fn read_response(&mut self, head_only: bool) -> Result<Response> {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            ensure!(self.buf.len() < 64 << 10, "response head larger than 64 KiB");
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..end]).context("response head is not UTF-8")?.to_owned();
        self.buf.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {status_line:?}"))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let chunked = get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let length = get("content-length").and_then(|v| v.parse::<usize>().ok());
        let closes = get("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let body = if head_only || status / 100 == 1 || status == 204 || status == 304 {
            Vec::new()
        } else if chunked {
            self.read_chunked().await?
        } else if let Some(n) = length {
            self.fill_to(n).await?;
            self.buf.drain(..n).collect()
        } else {
            // No length: the body runs to the end of the connection.
            let stream = self.stream.as_mut().context("connection is closed")?;
            stream.read_to_end(&mut self.buf).await?;
            self.stream = None;
            std::mem::take(&mut self.buf)
        };
        if closes {
            self.stream = None;
        }
        Ok(Response { status, headers, body })
    }

    async fn read_chunked(&mut self) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let eol = self.read_line(0).await?;
            let line = std::str::from_utf8(&self.buf[..eol]).context("chunk size line")?;
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16).with_context(|| format!("bad chunk size {line:?}"))?;
            self.buf.drain(..eol + 2);
            if size == 0 {
                // Trailers, then an empty line.
                loop {
                    let eol = self.read_line(0).await?;
                    self.buf.drain(..eol + 2);
                    if eol == 0 {
                        return Ok(body);
                    }
                }
            }
            self.fill_to(size + 2).await?;
            body.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..size + 2);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `GET path` on a plain-HTTP server (Envoy's admin), on a fresh connection.
pub async fn get_plain(addr: SocketAddr, path: &str) -> Result<Response> {
    let tcp = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    let mut conn = Conn::new(tcp, addr);
    conn.request("GET", path, &[("connection", "close")], b"").await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves `reply` once to whatever request arrives, on a plain TCP port.
    async fn serve_once(reply: &'static [u8]) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(reply).await.unwrap();
            // Keep the connection open a little: the client must not need EOF.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        });
        addr
    }

    #[tokio::test]
    async fn reads_chunked_and_sized_bodies() {
        let addr = serve_once(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/event-stream\r\n\r\n5;x=y\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n").await;
        let r = get_plain(addr, "/").await.unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "hello, world"));
        assert_eq!(r.header("Content-Type"), Some("text/event-stream"));

        let addr = serve_once(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 4\r\n\r\nnope").await;
        let r = get_plain(addr, "/").await.unwrap();
        assert_eq!((r.status, r.text().as_str()), (403, "nope"));
    }
}
