//! OpenTelemetry for the runner: traces and metrics over OTLP/gRPC.
//!
//! [`init`] installs the process-wide tracer and meter providers, with batch export to an OTLP
//! collector, when the operator gives `--otlp-endpoint`. Without one nothing is installed:
//! every helper here checks [`enabled`] first and does nothing else, so a runner without a
//! collector builds no span, no attribute and no metric point.
//!
//! What the runner exports, following the MCP and GenAI semantic conventions:
//!
//! - per tools/call, one SERVER span `tools/call {tool}` ([`call::CallSpan`]) with the children
//!   `ticket check`, `approval check`, `queue wait`, `sandbox create`, `sandbox run` and
//!   `sandbox destroy` (the sandbox phases with the backend's own start and end times, see
//!   [`crate::sandbox::PhaseObserver`]);
//! - metrics ([`metrics`]): `mcp.server.operation.duration`, jobs by outcome, each job
//!   queue's depth, calls refused before they ran, circuit breaker transitions, approvals by
//!   state.
//!
//! Trace context comes from the HTTP `traceparent` (Envoy's tracer) and from the agent's
//! `params._meta.traceparent`; [`call::CallSpan::start`] says how the two relate.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Result};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;

pub mod call;
pub mod metrics;
#[cfg(feature = "otlp")]
mod otlp;

pub use call::{approval_check, in_span, span, CallSpan, PhaseSpan, SandboxPhases};
pub use metrics::approval_state;

/// Instrumentation scope of every span and instrument the runner makes.
pub const SCOPE: &str = "portcullis-runner";
/// The runner's `service.name` when no other is given.
pub const SERVICE_NAME: &str = "portcullis-runner";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether [`init`] installed an exporter. Every span and metric helper returns at once when not.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Flushes and shuts the providers down when dropped (or by [`TelemetryGuard::shutdown`]).
#[must_use = "dropping the guard shuts telemetry down"]
pub struct TelemetryGuard {
    providers: Option<(SdkTracerProvider, SdkMeterProvider)>,
}

impl TelemetryGuard {
    /// Exports what is still buffered and stops the exporters. Blocks up to the exporters'
    /// timeouts when the collector does not answer.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some((tracer, meter)) = self.providers.take() {
            ENABLED.store(false, Ordering::Relaxed);
            if let Err(e) = tracer.shutdown() {
                tracing::warn!(error = %e, "telemetry: flushing spans failed");
            }
            if let Err(e) = meter.shutdown() {
                tracing::warn!(error = %e, "telemetry: flushing metrics failed");
            }
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Installs batch OTLP/gRPC export of traces and metrics to `otlp_endpoint` (`HOST:PORT`, or
/// `http://HOST:PORT`), as service `service_name`. With `None`, installs nothing.
///
/// Must be called inside a tokio runtime (the gRPC channel lives on it), once, before the
/// runner serves. The connection is made lazily: a collector that is down at start-up only
/// loses the batches exported while it is down (the SDK logs each failed export).
///
/// A runner built without the `otlp` feature refuses an endpoint rather than ignore it.
pub fn init(otlp_endpoint: Option<&str>, service_name: &str) -> Result<TelemetryGuard> {
    let Some(endpoint) = otlp_endpoint else {
        return Ok(TelemetryGuard { providers: None });
    };
    #[cfg(feature = "otlp")]
    return otlp::export(endpoint_url(endpoint)?, service_name);
    #[cfg(not(feature = "otlp"))]
    {
        let _ = service_name;
        bail!("--otlp-endpoint {endpoint}: this runner was built without OTLP export (cargo feature `otlp`)")
    }
}

/// `HOST:PORT` becomes `http://HOST:PORT`. The exporter speaks plaintext gRPC (a collector on
/// loopback or a pod-local sidecar); `https://` is refused rather than silently sent in clear.
fn endpoint_url(endpoint: &str) -> Result<String> {
    let endpoint = endpoint.trim();
    if endpoint.starts_with("https://") {
        bail!("--otlp-endpoint {endpoint}: TLS to the collector is not supported; use a collector on loopback or a local sidecar (HOST:PORT)");
    }
    let url = if endpoint.starts_with("http://") { endpoint.to_owned() } else { format!("http://{endpoint}") };
    let authority = url.trim_start_matches("http://").trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') || !authority.contains(':') {
        bail!("--otlp-endpoint {endpoint}: expected HOST:PORT of an OTLP/gRPC collector");
    }
    Ok(url)
}

/// `HOST:PORT` of an `--otlp-endpoint` value (for Envoy's cluster).
pub fn endpoint_authority(endpoint: &str) -> Result<String> {
    Ok(endpoint_url(endpoint)?.trim_start_matches("http://").trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_host_and_port_over_plain_grpc() {
        assert_eq!(endpoint_url("127.0.0.1:4317").unwrap(), "http://127.0.0.1:4317");
        assert_eq!(endpoint_url("http://collector:4317").unwrap(), "http://collector:4317");
        assert_eq!(endpoint_authority("http://collector:4317/").unwrap(), "collector:4317");
        assert!(endpoint_url("https://collector:4317").is_err());
        assert!(endpoint_url("collector").is_err());
        assert!(endpoint_url("collector:4317/v1/traces").is_err());
    }

    #[test]
    fn without_an_endpoint_nothing_is_installed() {
        let guard = init(None, SERVICE_NAME).unwrap();
        assert!(!enabled());
        guard.shutdown();
    }

    #[cfg(not(feature = "otlp"))]
    #[test]
    fn without_the_otlp_feature_an_endpoint_is_refused() {
        let err = init(Some("127.0.0.1:4317"), SERVICE_NAME).err().unwrap();
        assert!(err.to_string().contains("built without OTLP export"), "{err}");
    }
}
