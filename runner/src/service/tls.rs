//! TLS for the runner: only the gateway may connect.
//!
//! The runner requires a client certificate issued by the mesh CA *and* carrying the
//! gateway's SPIFFE ID. Agents hold certificates from the same CA, so a CA check alone would
//! let an agent talk to the runner directly; the SAN check closes that route. (Tickets are
//! still verified on every call: this is the second lock, not the only one.)

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} from {path}: {source}")]
    Pem { what: &'static str, path: String, #[source] source: rustls::pki_types::pem::Error },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn pem_err(what: &'static str, path: &Path) -> impl Fn(rustls::pki_types::pem::Error) -> TlsError {
    let path = path.display().to_string();
    move |source| TlsError::Pem { what, path: path.clone(), source }
}

/// Command-line flags for a server that only the gateway may reach (the runner, and the
/// benchmark's static upstream, which must be reached exactly like the runner).
#[derive(Debug, Clone, clap::Args)]
pub struct ServerTlsArgs {
    /// PEM certificate chain of this server.
    #[arg(long)]
    pub tls_cert: PathBuf,
    /// PEM private key of this server.
    #[arg(long)]
    pub tls_key: PathBuf,
    /// PEM CA that issues client certificates (the mesh CA).
    #[arg(long)]
    pub client_ca: PathBuf,
}

impl ServerTlsArgs {
    /// The rustls config accepting only clients that carry one of `allowed_ids`.
    pub fn server_config(&self, allowed_ids: Vec<String>) -> Result<ServerConfig, TlsError> {
        server_config(&self.tls_cert, &self.tls_key, &self.client_ca, allowed_ids)
    }
}

/// Server config presenting `cert`/`key`, accepting only clients whose certificate chains to
/// `ca` and names one of `allowed_ids` as a URI SAN.
pub fn server_config(cert: &Path, key: &Path, ca: &Path, allowed_ids: Vec<String>) -> Result<ServerConfig, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(pem_err("certificate", cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err("certificate", cert))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(pem_err("private key", key))?;
    let mut roots = RootCertStore::empty();
    for ca_cert in CertificateDer::pem_file_iter(ca).map_err(pem_err("CA", ca))? {
        roots.add(ca_cert.map_err(pem_err("CA", ca))?).map_err(|e| TlsError::Config(e.to_string()))?;
    }
    let inner = WebPkiClientVerifier::builder(Arc::new(roots)).build().map_err(|e| TlsError::Config(e.to_string()))?;
    let verifier = Arc::new(SpiffeClientVerifier { inner, allowed_ids });
    let mut config = ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[derive(Debug)]
struct SpiffeClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    allowed_ids: Vec<String>,
}

/// The URI SANs of a DER certificate.
pub fn uri_sans(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return Vec::new() };
    let Ok(Some(san)) = cert.subject_alternative_name() else { return Vec::new() };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some((*u).to_owned()),
            _ => None,
        })
        .collect()
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let ids = uri_sans(end_entity);
        if ids.iter().any(|id| self.allowed_ids.contains(id)) {
            Ok(ClientCertVerified::assertion())
        } else {
            tracing::warn!(presented = ?ids, "refused TLS client: not the gateway");
            Err(rustls::Error::General(format!("client identity {ids:?} is not allowed to reach the runner")))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A TLS server on `listen` that sets TCP_NODELAY on every accepted connection.
///
/// Without it, a response written in two small pieces (rmcp's SSE event, then the end of the
/// chunked body) waits for Envoy's delayed ACK: ~40 ms added to every call.
pub fn bind(
    listen: std::net::SocketAddr,
    config: ServerConfig,
) -> axum_server::Server<std::net::SocketAddr, axum_server::tls_rustls::RustlsAcceptor<axum_server::accept::NoDelayAcceptor>> {
    let tls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config));
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(tls).acceptor(axum_server::accept::NoDelayAcceptor::new());
    axum_server::bind(listen).acceptor(acceptor)
}
