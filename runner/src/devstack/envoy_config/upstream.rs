//! `up --upstream URL`: the gateway in front of any MCP server, not only the Portcullis runner.
//! The filter enforces identity, validation and policy exactly as before and still adds the
//! ticket and caller assertion, which such a server may ignore. The runner cluster is pointed
//! at the URL: plain HTTP, or TLS verified against `--upstream-ca` (the gateway presents its
//! own certificate, as to the runner).

use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;

use serde_yaml::{Mapping, Value};

use super::{abs, endpoint_address, hcm_config, EnvoyConfigError, Node, RENDERED_HEADER, RUNNER_CLUSTER_NAME};

/// An MCP server's Streamable HTTP endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// The server's MCP endpoint path; agents still use `/mcp`.
    pub path: String,
}

impl FromStr for Upstream {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        let (tls, rest) = match url.split_once("://") {
            Some(("http", rest)) => (false, rest),
            Some(("https", rest)) => (true, rest),
            _ => return Err(format!("{url:?}: expected http://HOST:PORT/PATH or https://HOST:PORT/PATH")),
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let path = if path.is_empty() { "/mcp" } else { path };
        if path.contains(['?', '#']) || !path.is_ascii() {
            return Err(format!("{url:?}: the path must be plain ASCII without query or fragment"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
                (host, port.parse::<u16>().map_err(|_| format!("{url:?}: bad port {port:?}"))?)
            }
            _ => (authority, if tls { 443 } else { 80 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(['@', '/']) {
            return Err(format!("{url:?}: bad host"));
        }
        Ok(Upstream { tls, host: host.to_owned(), port, path: path.to_owned() })
    }
}

/// Points a [`super::render`]ed config's upstream at `upstream`. `ca` (a PEM bundle) is
/// required for TLS: the server's certificate must chain to it and name the host (SNI).
pub fn with_upstream(rendered: &str, upstream: &Upstream, ca: Option<&Path>) -> Result<String, EnvoyConfigError> {
    let mut root: Value = serde_yaml::from_str(rendered).map_err(EnvoyConfigError::Parse)?;
    {
        let mut cluster = Node::root(&mut root).at("static_resources")?.at("clusters")?.named(RUNNER_CLUSTER_NAME)?;
        // A name, not an address, is resolved (and re-resolved) by Envoy.
        if upstream.host.parse::<IpAddr>().is_err() {
            cluster.reborrow().at("type")?.set("STRICT_DNS")?;
        }
        let mut address = endpoint_address(cluster.reborrow())?;
        address.reborrow().at("address")?.set(upstream.host.as_str())?;
        address.at("port_value")?.set(u64::from(upstream.port))?;
        if upstream.tls {
            let ca = abs("upstream CA", ca.ok_or_else(|| cluster.shape("an https upstream needs --upstream-ca"))?)?;
            let mut tls = cluster.reborrow().at("transport_socket")?.at("typed_config")?;
            tls.reborrow().at("sni")?.set(upstream.host.as_str())?;
            let validation = tls.at("common_tls_context")?.at("validation_context")?;
            let mut context = Mapping::new();
            let mut file = Mapping::new();
            file.insert("filename".into(), ca.into());
            context.insert("trusted_ca".into(), Value::Mapping(file));
            validation.set(Value::Mapping(context))?;
        } else if let Some(cluster) = cluster.value.as_mapping_mut() {
            cluster.remove("transport_socket");
        }
    }
    let route = hcm_config(&mut root)?.at("route_config")?.at("virtual_hosts")?.only()?.at("routes")?.only()?.at("route")?;
    let not_mapping = route.shape("expected a mapping");
    let Some(route) = route.value.as_mapping_mut() else { return Err(not_mapping) };
    // The server sees its own authority (servers that guard against DNS rebinding check it).
    let authority = match upstream.host.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("[{ip}]:{}", upstream.port),
        _ => format!("{}:{}", upstream.host, upstream.port),
    };
    route.insert("host_rewrite_literal".into(), authority.into());
    if upstream.path != "/mcp" {
        let rewrite: Value = serde_yaml::from_str(&format!("pattern: {{ regex: \"^/mcp$\" }}\nsubstitution: {:?}\n", upstream.path))
            .map_err(EnvoyConfigError::Parse)?;
        route.insert("regex_rewrite".into(), rewrite);
    }
    let body = serde_yaml::to_string(&root).map_err(EnvoyConfigError::Serialize)?;
    Ok(format!("{RENDERED_HEADER}\n{body}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u: Upstream = "http://127.0.0.1:3001/mcp".parse().unwrap();
        assert_eq!(u, Upstream { tls: false, host: "127.0.0.1".into(), port: 3001, path: "/mcp".into() });
        let u: Upstream = "https://mcp.internal".parse().unwrap();
        assert_eq!((u.tls, u.port, u.path.as_str()), (true, 443, "/mcp"));
        let u: Upstream = "http://[::1]:8080/api/mcp".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("::1", 8080, "/api/mcp"));
        for bad in ["ftp://x", "http://:1", "http://h:x", "http://u@h:1", "http://h:1/p?q"] {
            assert!(bad.parse::<Upstream>().is_err(), "{bad}");
        }
    }
}
