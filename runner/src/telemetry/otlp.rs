//! Batch export of traces and metrics over OTLP/gRPC (tonic): the `otlp` feature.

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, Result};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

/// How often metrics are pushed (the SDK's default is 60 s).
const METRIC_INTERVAL: Duration = Duration::from_secs(10);

/// Installs the exporters for [`super::init`], which has checked `url`.
pub(super) fn export(url: String, service_name: &str) -> Result<super::TelemetryGuard> {
    let resource = Resource::builder().with_service_name(service_name.to_owned()).build();
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(url.clone())
        .build()
        .context("building the OTLP span exporter")?;
    let tracer = SdkTracerProvider::builder().with_batch_exporter(spans).with_resource(resource.clone()).build();
    let points = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(url.clone())
        .build()
        .context("building the OTLP metric exporter")?;
    let reader = PeriodicReader::builder(points).with_interval(METRIC_INTERVAL).build();
    let meter = SdkMeterProvider::builder().with_reader(reader).with_resource(resource).build();
    opentelemetry::global::set_tracer_provider(tracer.clone());
    opentelemetry::global::set_meter_provider(meter.clone());
    super::ENABLED.store(true, Ordering::Relaxed);
    tracing::info!(endpoint = %url, service = service_name, "exporting traces and metrics over OTLP/gRPC");
    Ok(super::TelemetryGuard { providers: Some((tracer, meter)) })
}
