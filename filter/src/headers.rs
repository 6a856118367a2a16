//! Reads the request headers the filter needs, all in one host call: the MCP headers that
//! restate the body (every value of each, since a repeated header must be refused, not
//! resolved; core checks them against the body), and the first value of the others.

use portcullis_core::gateway::{McpHeaders, METHOD_HEADER, NAME_HEADER, PARAM_HEADER_PREFIX, PROTOCOL_VERSION_HEADER};
use portcullis_core::session::SESSION_HEADER;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MapType;

/// What the filter reads of the request headers.
#[derive(Default)]
pub(crate) struct Request {
    pub(crate) mcp: Values,
    pub(crate) session: Option<String>,
    pub(crate) authorization: Option<String>,
    pub(crate) method: Option<String>,
    pub(crate) content_type: Option<String>,
    pub(crate) path: Option<String>,
}

#[derive(Default)]
pub(crate) struct Values {
    protocol_version: Vec<String>,
    method: Vec<String>,
    name: Vec<String>,
    params: Vec<String>,
}

impl Request {
    /// From the request headers (pseudo-headers included), as they arrived. Envoy hands header
    /// names over lower-cased.
    pub(crate) fn read() -> Self {
        let mut request = Self::default();
        let Ok(headers) = hostcalls::get_map(MapType::HttpRequestHeaders) else {
            // Unreadable headers leave no path, method or MCP headers: the request is refused
            // (no MCP endpoint, or MCP headers missing), so this fails closed.
            log::warn!("portcullis: cannot read the request headers");
            return request;
        };
        for (name, value) in headers {
            let name = name.to_ascii_lowercase();
            let values = &mut request.mcp;
            match name.as_str() {
                PROTOCOL_VERSION_HEADER => values.protocol_version.push(value),
                METHOD_HEADER => values.method.push(value),
                NAME_HEADER => values.name.push(value),
                n if n.starts_with(PARAM_HEADER_PREFIX) => values.params.push(name),
                // As a single-header read would: the first value.
                SESSION_HEADER => first(&mut request.session, value),
                "authorization" => first(&mut request.authorization, value),
                ":method" => first(&mut request.method, value),
                "content-type" => first(&mut request.content_type, value),
                ":path" => first(&mut request.path, value),
                _ => {}
            }
        }
        request
    }
}

fn first(slot: &mut Option<String>, value: String) {
    if slot.is_none() {
        *slot = Some(value);
    }
}

impl Values {

    pub(crate) fn view(&self) -> McpHeaders<'_> {
        McpHeaders { protocol_version: &self.protocol_version, method: &self.method, name: &self.name, params: &self.params }
    }
}
