//! Session binding glue: the agent sees `S.<mac>`, the upstream sees `S`, and only the owner
//! of `S` gets from one to the other. The logic is in `portcullis_core::session`.

use portcullis_core::caller::CALLER_HEADER;
use portcullis_core::error::Rejection;
use portcullis_core::gateway::{Forward, Gateway, McpHeaders, RequestContext};
use portcullis_core::jsonrpc::Id;
use portcullis_core::listing::{Rewrite, Visible};
use portcullis_core::session::{Owner, SESSION_HEADER};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, MapType};

use crate::listing::Listing;
use crate::{entropy, now_unix, Filter};

/// Per request: the session id the agent sent, and (once admitted) who is calling.
#[derive(Default)]
pub(crate) struct Session {
    pub(crate) outer: Option<String>,
    owner: Option<Owner>,
}

impl Filter {
    /// Request headers: never trust a caller assertion the client brought; note the session
    /// (`session`: the request's session header).
    pub(crate) fn session_request_headers(&mut self, session: Option<String>) -> Result<(), Action> {
        if let Err(status) = hostcalls::set_map_value(MapType::HttpRequestHeaders, CALLER_HEADER, None) {
            log::error!("portcullis: cannot strip inbound caller header: {status:?}");
            return Err(self.reject(&Rejection::internal("cannot strip the inbound caller header")));
        }
        self.session.outer = session;
        Ok(())
    }

    /// GET (the server-to-client stream) and DELETE (end of session): identity and session
    /// ownership only. Returns the verified user, for the decision record.
    pub(crate) fn admit_without_body(&mut self, gateway: &Gateway, http_method: &str, peer: Option<&str>) -> Result<Option<String>, Action> {
        let ctx = RequestContext {
            peer_uri_san: peer,
            now_unix: now_unix(),
            entropy: entropy(),
            authorization: self.authorization.as_deref(),
            session_id: self.session.outer.as_deref(),
            headers: McpHeaders::default(),
        };
        match gateway.admit_without_body(http_method, ctx) {
            Ok(forward) => {
                let user = forward.owner.user.as_ref().map(|(_, sub)| sub.clone());
                self.rewrite_answer(gateway, &forward, None, None);
                self.forward_session(forward)?;
                Ok(user)
            }
            Err(rejection) => Err(self.reject(&rejection)),
        }
    }

    /// An admitted request goes upstream naming the upstream's session and its caller.
    pub(crate) fn forward_session(&mut self, forward: Forward) -> Result<(), Action> {
        let headers = [(SESSION_HEADER, forward.session.as_deref()), (CALLER_HEADER, forward.caller.as_deref())];
        for (name, value) in headers {
            if let Err(status) = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value) {
                log::error!("portcullis: cannot set the {name} header: {status:?}");
                return Err(self.reject(&Rejection::internal("cannot set a forwarded header")));
            }
        }
        self.session.owner = Some(forward.owner);
        Ok(())
    }

    /// How the answer to an admitted request is rewritten: trimmed to `visible` for a list
    /// method, and, since any event stream may carry requests from the server to the client,
    /// with those requests' ids sealed to this caller and session.
    pub(crate) fn rewrite_answer(&mut self, gateway: &Gateway, forward: &Forward, visible: Option<Visible>, id: Option<Id>) {
        let seal = gateway.stream_seal(&forward.owner, forward.session.as_deref(), now_unix());
        self.listing = Listing::for_answer(Rewrite { visible, seal }, id);
    }

    /// A client response goes upstream with the server request's own id: the body is replaced,
    /// and its length with it.
    pub(crate) fn replace_request_body(&mut self, size: usize, body: &[u8]) -> Result<(), Action> {
        let replaced = hostcalls::set_buffer(proxy_wasm::types::BufferType::HttpRequestBody, 0, size, body)
            .and_then(|()| hostcalls::set_map_value(MapType::HttpRequestHeaders, "content-length", None));
        replaced.map_err(|status| {
            log::error!("portcullis: cannot restate the request body: {status:?}");
            self.reject(&Rejection::internal("cannot restate the request body"))
        })
    }

    /// Response headers: a session id the upstream issues reaches the agent sealed to it.
    pub(crate) fn seal_response_session(&self) {
        let Ok(Some(inner)) = hostcalls::get_map_value(MapType::HttpResponseHeaders, SESSION_HEADER) else { return };
        let sealed = match (&self.gateway, &self.session.owner) {
            (Some(gateway), Some(owner)) => gateway.seal_session(owner, &inner).map_err(|e| e.to_string()),
            _ => Err("no admitted caller to bind it to".to_owned()),
        };
        // Fail closed: an id that cannot be sealed is not passed on at all.
        let value = sealed.as_deref().map_err(|e| log::error!("portcullis: dropping the upstream session id: {e}")).ok();
        if let Err(status) = hostcalls::set_map_value(MapType::HttpResponseHeaders, SESSION_HEADER, value) {
            log::error!("portcullis: cannot set the response session header: {status:?}");
        }
    }
}
