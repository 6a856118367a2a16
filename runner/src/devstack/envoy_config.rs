//! Renders `envoy/envoy.yaml` (the checked-in template) into the config Envoy actually runs,
//! and finds the Envoy binary.
//!
//! Rendering navigates the template by names (admin, listener `portcullis_mtls`, http filter
//! `portcullis`, cluster `portcullis_runner`) and replaces every address, port, path and the
//! plugin configuration. A node the template no longer has is an error, never a silently kept
//! template value: a rendered config that still pointed at `.portcullis/certs/` relative to
//! some other working directory, or at the template's trust domain, would fail far from here.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};

use crate::devstack::certs::DevPki;

/// Names in the template that rendering relies on.
pub const LISTENER_NAME: &str = "portcullis_mtls";
pub const WASM_FILTER_NAME: &str = "portcullis";
pub const RUNNER_CLUSTER_NAME: &str = "portcullis_runner";
/// The cluster [`with_otlp_tracing`] adds for the OTLP collector.
pub const OTLP_CLUSTER_NAME: &str = "otlp";
/// `service.name` of the gateway's spans.
pub const GATEWAY_SERVICE_NAME: &str = "portcullis-gateway";

const HCM_NAME: &str = "envoy.filters.network.http_connection_manager";
const FILE_ACCESS_LOG_NAME: &str = "envoy.access_loggers.file";
const SPIFFE_VALIDATOR_NAME: &str = "envoy.tls.cert_validator.spiffe";
const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const STRING_VALUE_TYPE: &str = "type.googleapis.com/google.protobuf.StringValue";

/// Environment variable naming the Envoy binary to use, overriding every other place.
pub const ENVOY_ENV: &str = "PORTCULLIS_ENVOY";

mod upstream;
pub use upstream::{with_upstream, Upstream};

/// What a rendered config needs to know about this machine.
#[derive(Debug, Clone)]
pub struct EnvoyParams {
    /// Where agents connect (mTLS).
    pub listen_addr: SocketAddr,
    /// Where the runner listens (mTLS, gateway cert only).
    pub runner_addr: SocketAddr,
    /// Where Envoy serves its admin API (see [`AdminAddress`]).
    pub admin: AdminAddress,
    /// The built filter, absolute.
    pub wasm_path: PathBuf,
    /// The filter's configuration, a JSON document passed to it verbatim.
    pub plugin_config_json: String,
    /// Certificates, keys and CA, absolute (as [`crate::devstack::certs::ensure`] returns them).
    pub pki: DevPki,
    /// Envoy's access log (JSON lines with the filter's decision records), absolute.
    pub access_log: PathBuf,
}

/// Envoy's admin API answers anyone who can connect, without authentication, and its
/// `/config_dump` shows the plugin configuration, ticket signing key included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminAddress {
    /// A Unix socket (absolute path) that Envoy creates with mode 0600: only the user Envoy
    /// runs as can connect. What `portcullis up` uses.
    Unix(PathBuf),
    /// A loopback TCP port: every local user can read the admin API. Only for configurations
    /// that carry no secret worth keeping (the benchmark's throwaway keys).
    Tcp(SocketAddr),
}

/// Mode Envoy gives the admin socket (0600; Envoy wants it as a number).
pub const ADMIN_SOCKET_MODE: u32 = 0o600;
/// Longest Unix socket path the kernel takes (`sun_path` is 108 bytes, NUL included).
pub const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, thiserror::Error)]
pub enum EnvoyConfigError {
    #[error("the Envoy config template is not valid YAML")]
    Parse(#[source] serde_yaml::Error),
    #[error("the Envoy config template has no {path}")]
    Missing { path: String },
    #[error("in the Envoy config template, {path}: {problem}")]
    Shape { path: String, problem: String },
    #[error("{what} must be an absolute path, got {}", path.display())]
    RelativePath { what: &'static str, path: PathBuf },
    #[error("{what} path {} is not valid UTF-8", path.display())]
    NonUtf8Path { what: &'static str, path: PathBuf },
    #[error("the admin socket path {} is longer than {MAX_SOCKET_PATH} bytes; use a shorter state dir", path.display())]
    SocketPathTooLong { path: PathBuf },
    #[error("OTLP collector {0:?}: expected HOST:PORT")]
    OtlpEndpoint(String),
    #[error("the plugin configuration is not valid JSON")]
    PluginConfig(#[source] serde_json::Error),
    #[error("cannot serialize the rendered Envoy config")]
    Serialize(#[source] serde_yaml::Error),
    #[error("{ENVOY_ENV}={} is not an executable file (or a command on PATH)", path.display())]
    EnvoyOverride { path: PathBuf },
    #[error(
        "Envoy not found: no {ENVOY_ENV}, no executable {}, no `envoy` on PATH; \
         run scripts/setup.sh to install the pinned Envoy into .venv",
        venv.display()
    )]
    EnvoyNotFound { venv: PathBuf },
}

/// Renders `template_yaml` (the contents of `envoy/envoy.yaml`) for this machine.
pub fn render(template_yaml: &str, p: &EnvoyParams) -> Result<String, EnvoyConfigError> {
    serde_json::from_str::<serde_json::Value>(&p.plugin_config_json)
        .map_err(EnvoyConfigError::PluginConfig)?;
    let paths = Paths {
        wasm: abs("wasm module", &p.wasm_path)?,
        access_log: abs("access log", &p.access_log)?,
        ca: abs("CA certificate", &p.pki.ca_cert)?,
        gateway: Pair {
            cert: abs("gateway certificate", &p.pki.gateway.cert)?,
            key: abs("gateway key", &p.pki.gateway.key)?,
        },
    };

    let mut root: Value = serde_yaml::from_str(template_yaml).map_err(EnvoyConfigError::Parse)?;
    render_admin(&mut root, p)?;
    render_listener(&mut root, p, &paths)?;
    render_cluster(&mut root, p, &paths)?;

    let body = serde_yaml::to_string(&root).map_err(EnvoyConfigError::Serialize)?;
    Ok(format!("{RENDERED_HEADER}\n{body}"))
}

const RENDERED_HEADER: &str =
    "# Rendered by portcullis from envoy/envoy.yaml for this machine; do not edit.";

/// Adds Envoy's OpenTelemetry tracer to a [`render`]ed config: every request on the agents'
/// listener gets a span (100 % sampled) exported over OTLP/gRPC to `collector` (`HOST:PORT`,
/// through a new HTTP/2 cluster [`OTLP_CLUSTER_NAME`]), as service [`GATEWAY_SERVICE_NAME`].
/// Envoy continues an agent's `traceparent` header and sets its own span as the `traceparent`
/// of the request it forwards to the runner, which continues the trace from there.
pub fn with_otlp_tracing(rendered: &str, collector: &str) -> Result<String, EnvoyConfigError> {
    let bad = || EnvoyConfigError::OtlpEndpoint(collector.to_owned());
    let (host, port) = collector.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    // An IP needs no resolver; a name is resolved (and re-resolved) by Envoy.
    let discovery = if host.parse::<std::net::IpAddr>().is_ok() { "STATIC" } else { "STRICT_DNS" };
    let tracing: Value = serde_yaml::from_str(&format!(
        "random_sampling: {{ value: 100 }}\n\
         provider:\n  \
           name: envoy.tracers.opentelemetry\n  \
           typed_config:\n    \
             \"@type\": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig\n    \
             service_name: {GATEWAY_SERVICE_NAME}\n    \
             grpc_service:\n      \
               envoy_grpc: {{ cluster_name: {OTLP_CLUSTER_NAME} }}\n      \
               timeout: 2s\n"
    ))
    .map_err(EnvoyConfigError::Parse)?;
    let cluster: Value = serde_yaml::from_str(&format!(
        "name: {OTLP_CLUSTER_NAME}\n\
         type: {discovery}\n\
         connect_timeout: 2s\n\
         typed_extension_protocol_options:\n  \
           envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n    \
             \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n    \
             explicit_http_config: {{ http2_protocol_options: {{}} }}\n\
         load_assignment:\n  \
           cluster_name: {OTLP_CLUSTER_NAME}\n  \
           endpoints:\n    \
             - lb_endpoints:\n        \
                 - endpoint: {{ address: {{ socket_address: {{ address: {host:?}, port_value: {port} }} }} }}\n"
    ))
    .map_err(EnvoyConfigError::Parse)?;

    let mut root: Value = serde_yaml::from_str(rendered).map_err(EnvoyConfigError::Parse)?;
    let hcm = hcm_config(&mut root)?;
    let Some(hcm) = hcm.value.as_mapping_mut() else {
        return Err(hcm.shape("expected a mapping"));
    };
    hcm.insert("tracing".into(), tracing);
    let clusters = Node::root(&mut root).at("static_resources")?.at("clusters")?;
    let Some(list) = clusters.value.as_sequence_mut() else {
        return Err(clusters.shape("expected a list"));
    };
    if list.iter().any(|c| c.get("name").and_then(Value::as_str) == Some(OTLP_CLUSTER_NAME)) {
        return Err(clusters.shape(format!("already has a cluster named {OTLP_CLUSTER_NAME:?}")));
    }
    list.push(cluster);
    let body = serde_yaml::to_string(&root).map_err(EnvoyConfigError::Serialize)?;
    Ok(format!("{RENDERED_HEADER}\n{body}"))
}

/// The agents' listener's HTTP connection manager config.
fn hcm_config(root: &mut Value) -> Result<Node<'_>, EnvoyConfigError> {
    Node::root(root)
        .at("static_resources")?
        .at("listeners")?
        .named(LISTENER_NAME)?
        .at("filter_chains")?
        .only()?
        .at("filters")?
        .named(HCM_NAME)?
        .at("typed_config")
}

/// Type of each resource in an ECDS discovery response.
pub const TYPED_EXTENSION_CONFIG_TYPE: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";

/// A rendered bootstrap whose Portcullis filter Envoy takes from a file by ECDS (Extension
/// Config Discovery), and the filter's own config that goes into that file.
#[derive(Debug, Clone)]
pub struct EcdsSplit {
    /// The bootstrap: the `portcullis` http filter is a `config_discovery` on the ECDS file.
    pub bootstrap: String,
    /// The filter's `typed_config` (a Wasm filter config), as rendered.
    pub filter: serde_json::Value,
}

/// Moves the Portcullis filter of a [`render`]ed bootstrap out into ECDS served from the file
/// `ecds_path` (absolute): the bootstrap keeps the filter's place in the chain, but its config
/// comes from the file, which Envoy re-reads whenever a new file is moved onto that path.
/// Deliberately no `default_config`: until the file delivers a config, the filter is disabled
/// and Envoy rejects every stream on the chain (fail closed), and the listener warms until the
/// first config arrives.
pub fn split_for_ecds(rendered: &str, ecds_path: &Path) -> Result<EcdsSplit, EnvoyConfigError> {
    let ecds = abs("ECDS file", ecds_path)?;
    let mut root: Value = serde_yaml::from_str(rendered).map_err(EnvoyConfigError::Parse)?;
    let filter = hcm_config(&mut root)?
        .at("http_filters")?
        .named(WASM_FILTER_NAME)?;
    let typed_config = filter.clone_of("typed_config")?;
    let discovery: Value = serde_yaml::from_str(&format!(
        "name: {WASM_FILTER_NAME}\n\
         config_discovery:\n  \
           config_source:\n    \
             path_config_source: {{ path: {ecds:?} }}\n    \
             resource_api_version: V3\n  \
           type_urls: [{WASM_TYPE:?}]\n"
    ))
    .map_err(EnvoyConfigError::Parse)?;
    *filter.value = discovery;
    let filter = serde_json::to_value(&typed_config).map_err(EnvoyConfigError::PluginConfig)?;
    let body = serde_yaml::to_string(&root).map_err(EnvoyConfigError::Serialize)?;
    Ok(EcdsSplit {
        bootstrap: format!(
            "{RENDERED_HEADER}\n\
             # The portcullis filter's config is served by ECDS from {ecds}.\n{body}"
        ),
        filter,
    })
}

/// The ECDS file's contents: a DiscoveryResponse (JSON) with one TypedExtensionConfig, the
/// Portcullis filter `filter` (from [`split_for_ecds`]) carrying `plugin_config_json`.
pub fn ecds_response(
    filter: &serde_json::Value,
    plugin_config_json: &str,
    version: &str,
) -> Result<String, EnvoyConfigError> {
    serde_json::from_str::<serde_json::Value>(plugin_config_json)
        .map_err(EnvoyConfigError::PluginConfig)?;
    let mut filter = filter.clone();
    let value = filter
        .pointer_mut("/config/configuration/value")
        .ok_or_else(|| EnvoyConfigError::Missing {
            path: "the portcullis filter's config.configuration.value".to_owned(),
        })?;
    *value = serde_json::Value::String(plugin_config_json.to_owned());
    Ok(serde_json::json!({
        "version_info": version,
        "resources": [{
            "@type": TYPED_EXTENSION_CONFIG_TYPE,
            "name": WASM_FILTER_NAME,
            "typed_config": filter,
        }],
    })
    .to_string())
}

/// Locates the Envoy binary: `$PORTCULLIS_ENVOY` (a path, or a command name looked up on
/// PATH), else `<repo_root>/.venv/bin/envoy` (scripts/setup.sh), else `envoy` on PATH.
/// The environment is read through `env` so callers (and tests) choose where it comes from;
/// pass [`process_env`] for the real one.
pub fn find_envoy(
    repo_root: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PathBuf, EnvoyConfigError> {
    if let Some(value) = env(ENVOY_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(&value);
        let found = if value.contains('/') {
            Some(path.clone()).filter(|p| is_executable(p))
        } else {
            search_path(&value, env)
        };
        return found.ok_or(EnvoyConfigError::EnvoyOverride { path });
    }
    let venv = repo_root.join(".venv").join("bin").join("envoy");
    if is_executable(&venv) {
        return Ok(venv);
    }
    search_path("envoy", env).ok_or(EnvoyConfigError::EnvoyNotFound { venv })
}

/// The process environment, for [`find_envoy`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn search_path(command: &str, env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    env("PATH")?
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(command))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

struct Pair {
    cert: String,
    key: String,
}

struct Paths {
    wasm: String,
    access_log: String,
    ca: String,
    gateway: Pair,
}

fn abs(what: &'static str, path: &Path) -> Result<String, EnvoyConfigError> {
    if !path.is_absolute() {
        return Err(EnvoyConfigError::RelativePath {
            what,
            path: path.to_owned(),
        });
    }
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| EnvoyConfigError::NonUtf8Path {
            what,
            path: path.to_owned(),
        })
}

/// Replaces the template's admin address (a Unix socket or a TCP address) with `p.admin`.
fn render_admin(root: &mut Value, p: &EnvoyParams) -> Result<(), EnvoyConfigError> {
    let address = Node::root(root).at("admin")?.at("address")?;
    let new = match &p.admin {
        AdminAddress::Unix(path) => {
            let path = abs("admin socket", path)?;
            if path.len() > MAX_SOCKET_PATH {
                return Err(EnvoyConfigError::SocketPathTooLong { path: path.into() });
            }
            let mut pipe = Mapping::new();
            pipe.insert("path".into(), path.into());
            pipe.insert("mode".into(), u64::from(ADMIN_SOCKET_MODE).into());
            Mapping::from_iter([("pipe".into(), Value::Mapping(pipe))])
        }
        AdminAddress::Tcp(addr) => {
            let mut socket = Mapping::new();
            socket.insert("address".into(), addr.ip().to_string().into());
            socket.insert("port_value".into(), u64::from(addr.port()).into());
            Mapping::from_iter([("socket_address".into(), Value::Mapping(socket))])
        }
    };
    address.set(Value::Mapping(new))
}

fn render_listener(
    root: &mut Value,
    p: &EnvoyParams,
    paths: &Paths,
) -> Result<(), EnvoyConfigError> {
    let mut listener = Node::root(root)
        .at("static_resources")?
        .at("listeners")?
        .named(LISTENER_NAME)?;
    set_socket_address(
        listener.reborrow().at("address")?.at("socket_address")?,
        p.listen_addr,
    )?;

    let mut chain = listener.at("filter_chains")?.only()?;
    let mut tls = chain
        .reborrow()
        .at("transport_socket")?
        .at("typed_config")?
        .at("common_tls_context")?;
    set_tls_certificate(tls.reborrow().at("tls_certificates")?, &paths.gateway)?;
    // The SPIFFE validator trusts exactly this PKI's trust domain, with its CA as the bundle.
    let mut validator = tls
        .at("validation_context")?
        .at("custom_validator_config")?;
    validator
        .reborrow()
        .at("name")?
        .expect_str(SPIFFE_VALIDATOR_NAME)?;
    let mut domain = validator.at("typed_config")?.at("trust_domains")?.only()?;
    domain
        .reborrow()
        .at("name")?
        .set(p.pki.trust_domain.as_str())?;
    domain
        .at("trust_bundle")?
        .at("filename")?
        .set(paths.ca.as_str())?;

    let mut hcm = chain.at("filters")?.named(HCM_NAME)?.at("typed_config")?;
    hcm.reborrow()
        .at("access_log")?
        .named(FILE_ACCESS_LOG_NAME)?
        .at("typed_config")?
        .at("path")?
        .set(paths.access_log.as_str())?;
    let mut wasm = hcm
        .at("http_filters")?
        .named(WASM_FILTER_NAME)?
        .at("typed_config")?;
    wasm.reborrow().at("@type")?.expect_str(WASM_TYPE)?;
    let mut config = wasm.at("config")?;
    let mut configuration = config.reborrow().at("configuration")?;
    configuration
        .reborrow()
        .at("@type")?
        .expect_str(STRING_VALUE_TYPE)?;
    configuration
        .at("value")?
        .set(p.plugin_config_json.as_str())?;
    config
        .at("vm_config")?
        .at("code")?
        .at("local")?
        .at("filename")?
        .set(paths.wasm.as_str())
}

fn render_cluster(
    root: &mut Value,
    p: &EnvoyParams,
    paths: &Paths,
) -> Result<(), EnvoyConfigError> {
    let mut cluster = Node::root(root)
        .at("static_resources")?
        .at("clusters")?
        .named(RUNNER_CLUSTER_NAME)?;
    set_socket_address(endpoint_address(cluster.reborrow())?, p.runner_addr)?;

    let mut tls = cluster
        .at("transport_socket")?
        .at("typed_config")?
        .at("common_tls_context")?;
    set_tls_certificate(tls.reborrow().at("tls_certificates")?, &paths.gateway)?;
    let mut validation = tls.at("validation_context")?;
    validation
        .reborrow()
        .at("trusted_ca")?
        .at("filename")?
        .set(paths.ca.as_str())?;
    // Only the runner's SVID of this trust domain is accepted upstream.
    let mut matcher = Mapping::new();
    matcher.insert("exact".into(), p.pki.runner_spiffe_id().into());
    let mut san = Mapping::new();
    san.insert("san_type".into(), "URI".into());
    san.insert("matcher".into(), Value::Mapping(matcher));
    validation
        .at("match_typed_subject_alt_names")?
        .set(Value::Sequence(vec![Value::Mapping(san)]))
}

/// The socket address of a cluster's one endpoint.
fn endpoint_address(cluster: Node<'_>) -> Result<Node<'_>, EnvoyConfigError> {
    cluster.at("load_assignment")?.at("endpoints")?.only()?.at("lb_endpoints")?.only()?.at("endpoint")?.at("address")?.at("socket_address")
}

fn set_socket_address(mut node: Node<'_>, addr: SocketAddr) -> Result<(), EnvoyConfigError> {
    node.reborrow().at("address")?.set(addr.ip().to_string())?;
    node.at("port_value")?.set(u64::from(addr.port()))
}

fn set_tls_certificate(certs: Node<'_>, pair: &Pair) -> Result<(), EnvoyConfigError> {
    let mut cert = certs.only()?;
    cert.reborrow()
        .at("certificate_chain")?
        .at("filename")?
        .set(pair.cert.as_str())?;
    cert.at("private_key")?
        .at("filename")?
        .set(pair.key.as_str())
}

/// A position in the YAML document, with its path for error messages.
struct Node<'a> {
    value: &'a mut Value,
    path: String,
}

impl<'a> Node<'a> {
    fn root(value: &'a mut Value) -> Self {
        Node {
            value,
            path: String::new(),
        }
    }

    fn reborrow(&mut self) -> Node<'_> {
        Node {
            value: self.value,
            path: self.path.clone(),
        }
    }

    /// A copy of the existing value under mapping key `key`.
    fn clone_of(&self, key: &str) -> Result<Value, EnvoyConfigError> {
        match self.value.get(key) {
            Some(value) => Ok(value.clone()),
            None => Err(EnvoyConfigError::Missing {
                path: format!("{}.{key}", self.path),
            }),
        }
    }

    fn shape(&self, problem: impl Into<String>) -> EnvoyConfigError {
        EnvoyConfigError::Shape {
            path: self.display_path(),
            problem: problem.into(),
        }
    }

    fn display_path(&self) -> String {
        if self.path.is_empty() {
            "the document root".to_owned()
        } else {
            self.path.clone()
        }
    }

    /// The existing value under mapping key `key`.
    fn at(self, key: &str) -> Result<Node<'a>, EnvoyConfigError> {
        let path = if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        };
        if !self.value.is_mapping() {
            return Err(self.shape("expected a mapping"));
        }
        match self.value.get_mut(key) {
            Some(value) => Ok(Node { value, path }),
            None => Err(EnvoyConfigError::Missing { path }),
        }
    }

    /// The one element of a sequence whose `name` is `name`.
    fn named(self, name: &str) -> Result<Node<'a>, EnvoyConfigError> {
        let path = format!("{}[name={name}]", self.path);
        let Some(items) = self.value.as_sequence() else {
            return Err(self.shape("expected a list"));
        };
        let hits: Vec<usize> = items
            .iter()
            .enumerate()
            .filter(|(_, item)| item.get("name").and_then(Value::as_str) == Some(name))
            .map(|(i, _)| i)
            .collect();
        match hits.as_slice() {
            [i] => match self.value.get_mut(*i) {
                Some(value) => Ok(Node { value, path }),
                None => Err(EnvoyConfigError::Missing { path }),
            },
            [] => Err(EnvoyConfigError::Missing { path }),
            _ => Err(self.shape(format!("more than one entry named {name:?}"))),
        }
    }

    /// The single element of a sequence that must have exactly one.
    fn only(self) -> Result<Node<'a>, EnvoyConfigError> {
        let path = format!("{}[0]", self.path);
        match self.value.as_sequence().map(Vec::len) {
            Some(1) => {}
            Some(n) => return Err(self.shape(format!("expected exactly one entry, found {n}"))),
            None => return Err(self.shape("expected a list")),
        }
        match self.value.get_mut(0) {
            Some(value) => Ok(Node { value, path }),
            None => Err(EnvoyConfigError::Missing { path }),
        }
    }

    fn expect_str(self, want: &str) -> Result<(), EnvoyConfigError> {
        match self.value.as_str() {
            Some(s) if s == want => Ok(()),
            _ => Err(self.shape(format!("expected {want:?}"))),
        }
    }

    /// Replaces the value, keeping the template's kind: a scalar stays a scalar, a list a list.
    fn set(self, new: impl Into<Value>) -> Result<(), EnvoyConfigError> {
        let new = new.into();
        let same_kind = matches!(
            (&*self.value, &new),
            (Value::Sequence(_), Value::Sequence(_)) | (Value::Mapping(_), Value::Mapping(_))
        ) || (!self.value.is_sequence()
            && !self.value.is_mapping()
            && !new.is_sequence()
            && !new.is_mapping());
        if !same_kind {
            return Err(self.shape("has an unexpected kind of value"));
        }
        *self.value = new;
        Ok(())
    }
}
