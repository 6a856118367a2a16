//! A real OTLP/gRPC receiver (trace and metrics services, tonic, HTTP/2 cleartext) on a free
//! loopback port, keeping what it receives in memory. It runs on its own thread and runtime,
//! so it outlives any one test's runtime.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{MetricsService, MetricsServiceServer};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;

/// One received span with the `service.name` of the resource that sent it.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service: String,
    pub span: Span,
}

impl ReceivedSpan {
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }
    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }
    pub fn parent_span_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
    /// A string (or integer, as text) attribute of the span.
    pub fn attr(&self, key: &str) -> Option<String> {
        attr(&self.span.attributes, key)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()?;
    match value {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        _ => None,
    }
}

#[derive(Default)]
struct Store {
    spans: Mutex<Vec<ReceivedSpan>>,
    /// (service.name, metric name) of every metric received.
    metrics: Mutex<Vec<(String, String)>>,
}

fn service_name(resource: Option<&opentelemetry_proto::tonic::resource::v1::Resource>) -> String {
    resource.and_then(|r| attr(&r.attributes, "service.name")).unwrap_or_default()
}

#[derive(Clone)]
struct Traces(Arc<Store>);

#[tonic::async_trait]
impl TraceService for Traces {
    async fn export(&self, request: tonic::Request<ExportTraceServiceRequest>) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.spans.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for rs in request.into_inner().resource_spans {
            let service = service_name(rs.resource.as_ref());
            for ss in rs.scope_spans {
                spans.extend(ss.spans.into_iter().map(|span| ReceivedSpan { service: service.clone(), span }));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

#[derive(Clone)]
struct Metrics(Arc<Store>);

#[tonic::async_trait]
impl MetricsService for Metrics {
    async fn export(&self, request: tonic::Request<ExportMetricsServiceRequest>) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut metrics = self.0.metrics.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for rm in request.into_inner().resource_metrics {
            let service = service_name(rm.resource.as_ref());
            for sm in rm.scope_metrics {
                metrics.extend(sm.metrics.into_iter().map(|m| (service.clone(), m.name)));
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse { partial_success: None }))
    }
}

/// The running receiver. It stops with the test process.
pub struct Receiver {
    pub addr: SocketAddr,
    store: Arc<Store>,
}

impl Receiver {
    /// Starts the receiver on a free loopback port. Panics (fails the test) if it cannot.
    pub fn start() -> Receiver {
        let store = Arc::new(Store::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let served = store.clone();
        std::thread::Builder::new()
            .name("otlp-receiver".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(format!("runtime: {e}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let incoming = match tonic::transport::server::TcpIncoming::bind(SocketAddr::from(([127, 0, 0, 1], 0))) {
                        Ok(i) => i,
                        Err(e) => {
                            let _ = tx.send(Err(format!("bind: {e}")));
                            return;
                        }
                    };
                    let _ = tx.send(incoming.local_addr().map_err(|e| format!("local_addr: {e}")));
                    let result = tonic::transport::Server::builder()
                        .add_service(TraceServiceServer::new(Traces(served.clone())))
                        .add_service(MetricsServiceServer::new(Metrics(served)))
                        .serve_with_incoming(incoming)
                        .await;
                    if let Err(e) = result {
                        eprintln!("otlp receiver stopped: {e}");
                    }
                });
            })
            .expect("spawning the OTLP receiver thread");
        let addr = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(addr)) => addr,
            Ok(Err(e)) => panic!("the OTLP receiver cannot start: {e}"),
            Err(e) => panic!("the OTLP receiver did not start: {e}"),
        };
        Receiver { addr, store }
    }

    /// `HOST:PORT`, for `--otlp-endpoint`.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.store.spans.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub fn metric_names(&self) -> Vec<(String, String)> {
        self.store.metrics.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Polls until `found` returns `Some` for the spans received so far, or `limit` passes
    /// (then `None`). Exporters batch, so spans arrive seconds after they end.
    pub async fn wait_for<T>(&self, limit: Duration, found: impl Fn(&[ReceivedSpan]) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(t) = found(&self.spans()) {
                return Some(t);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Like [`Receiver::wait_for`], for metrics: until a metric `name` from `service` arrived.
    pub async fn wait_for_metric(&self, limit: Duration, service: &str, name: &str) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.metric_names().iter().any(|(s, n)| s == service && n == name) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
