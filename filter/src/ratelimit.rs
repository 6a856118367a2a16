//! Rate limiting glue: each workload's token bucket lives in proxy-wasm shared data, so every
//! Envoy worker thread draws from the same bucket. The arithmetic is in core.

use portcullis_core::error::Rejection;
use portcullis_core::gateway::Gateway;
use portcullis_core::ratelimit::Take;
use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

/// Compare-and-swap attempts before giving up under contention (then the request is refused:
/// failing closed costs one retry for the client, failing open would lift the limit).
const ATTEMPTS: usize = 16;

/// Takes one token for `identity`; `Some(rejection)` when the request must not go on.
pub fn check(gateway: &Gateway, identity: Option<&str>, body: &[u8]) -> Option<Rejection> {
    let limits = gateway.rate_limits()?;
    // Without an identity the request is denied anyway, before it costs anything.
    let identity = identity?;
    let key = format!("portcullis.ratelimit/{identity}");
    for _ in 0..ATTEMPTS {
        let (state, cas) = match hostcalls::get_shared_data(&key) {
            Ok(found) => found,
            Err(status) => return Some(host_failure("read", status)),
        };
        let (take, next) = limits.take(identity, state.as_deref(), now_ns());
        match hostcalls::set_shared_data(&key, Some(&next), cas) {
            Ok(()) => {
                return match take {
                    Take::Allowed => None,
                    Take::Limited { retry_after_seconds } => Some(gateway.reject_rate_limited(body, identity, retry_after_seconds)),
                }
            }
            Err(Status::CasMismatch) => continue,
            Err(status) => return Some(host_failure("write", status)),
        }
    }
    log::warn!("portcullis: rate-limit bucket for {identity} stayed contended; refusing this request");
    Some(gateway.reject_rate_limited(body, identity, 1))
}

fn host_failure(what: &str, status: Status) -> Rejection {
    log::error!("portcullis: cannot {what} the rate-limit bucket: {status:?}");
    Rejection::internal("rate limiting is unavailable; refusing the request")
}

fn now_ns() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
