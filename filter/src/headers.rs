//! Reads the MCP headers that restate the body (every value of each, since a repeated header
//! must be refused, not resolved); core checks them against the body.

use portcullis_core::gateway::{McpHeaders, METHOD_HEADER, NAME_HEADER, PARAM_HEADER_PREFIX, PROTOCOL_VERSION_HEADER};
use proxy_wasm::hostcalls;
use proxy_wasm::types::MapType;

#[derive(Default)]
pub(crate) struct Values {
    protocol_version: Vec<String>,
    method: Vec<String>,
    name: Vec<String>,
    params: Vec<String>,
}

impl Values {
    /// From the request headers. Envoy hands header names over lower-cased.
    pub(crate) fn read() -> Self {
        let mut values = Self::default();
        let Ok(headers) = hostcalls::get_map(MapType::HttpRequestHeaders) else {
            // Unreadable headers leave nothing to compare; a 2026-07-28 request is then refused
            // for missing them, so this fails closed.
            log::warn!("portcullis: cannot read the request headers");
            return values;
        };
        for (name, value) in headers {
            let name = name.to_ascii_lowercase();
            match name.as_str() {
                PROTOCOL_VERSION_HEADER => values.protocol_version.push(value),
                METHOD_HEADER => values.method.push(value),
                NAME_HEADER => values.name.push(value),
                n if n.starts_with(PARAM_HEADER_PREFIX) => values.params.push(name),
                _ => {}
            }
        }
        values
    }

    pub(crate) fn view(&self) -> McpHeaders<'_> {
        McpHeaders { protocol_version: &self.protocol_version, method: &self.method, name: &self.name, params: &self.params }
    }
}
