//! Plugin configuration: raw serde structs (strict) validated into a ready [`Gateway`].

use serde::Deserialize;

use crate::authz::{AuthzError, Authorizer, PolicyBundle};
use crate::catalog::{Catalog, CatalogError};
use crate::gateway::Gateway;
use crate::json::Limits;
use crate::relay::{RequestSealer, REQUEST_KEY_LABEL};
use crate::session::{SessionSealer, SESSION_KEY_LABEL};
use crate::ratelimit::{RateLimitError, RateLimits, RawRateLimits};
use crate::ticket::{Signer, TicketError};
use crate::userjwt::{UserVerifier, UsersConfig, UsersConfigError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub policy: PolicyBundle,
    pub catalog: serde_json::Value,
    pub ticket: RawTicket,
    #[serde(default)]
    pub limits: RawLimits,
    /// Per-workload token buckets; absent means no rate limiting.
    #[serde(default)]
    pub rate_limits: Option<RawRateLimits>,
    /// Trusted issuers of user tokens; without any, no request carries a verified user.
    #[serde(default)]
    pub users: UsersConfig,
    /// The HTTP status of a policy denial: 200 (default: every official MCP SDK then hands
    /// the calling code the JSON-RPC error, -32001 with the policy's reasons) or 403 (the mesh's
    /// HTTP statistics count denials as 4xx, but SDKs report a transport error).
    #[serde(default = "default_denial_status")]
    pub denial_status: u16,
    /// Time each phase of every decision into the filter's stats (`portcullis.profile.*`), at
    /// the cost of a clock read per phase: for the bench's profile pass, not for serving.
    #[serde(default)]
    pub profile: bool,
}

fn default_denial_status() -> u16 {
    200
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTicket {
    /// PKCS#8 PEM of the gateway's Ed25519 signing key.
    pub signing_key_pem: String,
    #[serde(default = "default_issuer")]
    pub issuer: String,
    #[serde(default = "default_ttl")]
    pub ttl_seconds: u64,
}

fn default_issuer() -> String {
    "portcullis-gateway".into()
}
fn default_ttl() -> u64 {
    30
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default = "default_body")]
    pub max_body_bytes: usize,
    #[serde(default = "default_depth")]
    pub max_depth: usize,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self { max_body_bytes: default_body(), max_depth: default_depth() }
    }
}
fn default_body() -> usize {
    Limits::default().max_body_bytes
}
fn default_depth() -> usize {
    Limits::default().max_depth
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("plugin configuration is not valid JSON of the expected shape: {0}")]
    Shape(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Policy(#[from] AuthzError),
    #[error(transparent)]
    Ticket(#[from] TicketError),
    #[error("ticket.ttl_seconds must be between 1 and 300, got {0}")]
    Ttl(u64),
    #[error("limits: {0}")]
    Limits(String),
    #[error(transparent)]
    RateLimits(#[from] RateLimitError),
    #[error(transparent)]
    Users(#[from] UsersConfigError),
    #[error("denial_status must be 200 or 403, got {0}")]
    DenialStatus(u16),
}

impl Gateway {
    /// Builds a gateway from the plugin configuration JSON. Any error means the plugin must
    /// refuse to start; there is no permissive fallback.
    pub fn from_config_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawConfig = serde_json::from_slice(bytes).map_err(|e| ConfigError::Shape(e.to_string()))?;
        Self::from_raw(raw)
    }

    pub fn from_raw(raw: RawConfig) -> Result<Self, ConfigError> {
        let catalog = Catalog::from_value(raw.catalog)?;
        let authorizer = Authorizer::new(&raw.policy, &catalog)?;
        if !(1..=300).contains(&raw.ticket.ttl_seconds) {
            return Err(ConfigError::Ttl(raw.ticket.ttl_seconds));
        }
        let signer = Signer::from_pem(raw.ticket.signing_key_pem.as_bytes(), raw.ticket.issuer, raw.ticket.ttl_seconds)?;
        if raw.limits.max_body_bytes == 0 || raw.limits.max_depth == 0 {
            return Err(ConfigError::Limits("max_body_bytes and max_depth must be positive".into()));
        }
        let limits = Limits { max_body_bytes: raw.limits.max_body_bytes, max_depth: raw.limits.max_depth };
        let rate_limits = raw.rate_limits.as_ref().map(RateLimits::from_raw).transpose()?;
        let users = UserVerifier::new(&raw.users)?;
        let sessions = SessionSealer::new(signer.derive_key(SESSION_KEY_LABEL)?);
        let requests = RequestSealer::new(signer.derive_key(REQUEST_KEY_LABEL)?);
        if !matches!(raw.denial_status, 200 | 403) {
            return Err(ConfigError::DenialStatus(raw.denial_status));
        }
        Ok(Gateway::new(limits, catalog, authorizer, signer, users, sessions)
            .with_rate_limits(rate_limits)
            .with_relay(requests, raw.denial_status)
            .with_profile(raw.profile))
    }
}
