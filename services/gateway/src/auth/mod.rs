//! Who is calling: API keys and JWT bearer tokens, resolved into a [`Principal`] (a tenant and a
//! set of permissions) before any handler runs.
//!
//! Credentials come in `Authorization: Bearer <key or token>` or `X-API-Key: <key>`; the
//! WebSocket and SSE routes also take `?access_token=`, because browsers cannot set headers on
//! those. A credential that starts with `wharf_` is an API key: its SHA-256 is looked up in the
//! database (and cached for `key_cache_secs`; a revocation reaches every gateway at once over
//! NATS). Anything else is a JWT, checked against the configured secret or public keys, issuer,
//! audience and expiry.
//!
//! In `open` mode (only allowed on a loopback address, for `wharf dev`) a request without
//! credentials acts as `anonymous`, with every permission, in the `default` tenant; one with
//! credentials is still checked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wharf_contract::NAME_RULE;
use wharf_contract::{API_KEY_PREFIX, auth::builtin_role, valid_name};
use wharf_store::Store;

use crate::problem::ApiError;

mod api_keys;
mod config;
mod jwt;
mod middleware;
mod principal;

use api_keys::CachedKey;
pub use api_keys::{follow_revocations, hash_secret, mint_key};
pub use config::{AuthConfig, AuthMode, JwtConfig};
use jwt::VerifyKey;
pub use jwt::keep_jwks_fresh;
pub use middleware::{Credential, authenticate, unauthenticated, whoami};
pub use principal::{Permissions, Principal};

/// Resolves credentials into principals. One per gateway, shared by every request.
pub struct Authenticator {
    config: AuthConfig,
    store: Store,
    keys: Vec<VerifyKey>,
    cache: Mutex<HashMap<String, CachedKey>>,
    /// The keys last read from `jwks_url`, replaced whole at each read.
    remote: std::sync::RwLock<Arc<Vec<VerifyKey>>>,
    /// When a token with an unknown `kid` last made the gateway read `jwks_url`.
    miss_read: tokio::sync::Mutex<Option<Instant>>,
    http: Option<reqwest::Client>,
    /// Keys revoked while this gateway runs (its own revocations and the ones announced), for
    /// the streams they opened: see [`Authenticator::lapse`].
    revoked: tokio::sync::broadcast::Sender<uuid::Uuid>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("mode", &self.config.mode)
            .finish_non_exhaustive()
    }
}

/// A setting of `[gateway.auth]` that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("gateway.auth.{setting}: {why}")]
pub struct ConfigError {
    /// Where in `[gateway.auth]`, e.g. `jwt.jwks_url`, `roles.ops`.
    pub setting: String,
    pub why: String,
}

impl ConfigError {
    fn new(setting: impl Into<String>, why: impl std::fmt::Display) -> ConfigError {
        ConfigError {
            setting: setting.into(),
            why: why.to_string(),
        }
    }
}

impl Authenticator {
    /// Reads the configured keys; refuses a configuration that would not work.
    pub fn new(config: AuthConfig, store: Store) -> Result<Authenticator, ConfigError> {
        for name in config.roles.keys() {
            let setting = format!("roles.{name}");
            if !valid_name(name) {
                return Err(ConfigError::new(
                    setting,
                    format!("a role name {NAME_RULE}"),
                ));
            }
            if builtin_role(name).is_some() {
                return Err(ConfigError::new(
                    setting,
                    format!("{name} is a built-in role and cannot be redefined"),
                ));
            }
        }
        let keys = match &config.jwt {
            Some(jwt) => jwt::configured_keys(jwt)?,
            None => Vec::new(),
        };
        let http = config
            .jwt
            .as_ref()
            .and_then(|j| j.jwks_url.as_ref())
            .map(|_| jwt::jwks_client())
            .transpose()?;
        Ok(Authenticator {
            config,
            store,
            keys,
            cache: Mutex::new(HashMap::new()),
            remote: std::sync::RwLock::new(Arc::new(Vec::new())),
            miss_read: tokio::sync::Mutex::new(None),
            http,
            revoked: tokio::sync::broadcast::channel(256).0,
        })
    }

    pub fn mode(&self) -> AuthMode {
        self.config.mode.unwrap_or_default()
    }

    /// The permissions of role `name`: built-in or configured; none for an unknown role.
    pub fn role(&self, name: &str) -> Option<Permissions> {
        builtin_role(name)
            .map(Permissions::of)
            .or_else(|| self.config.roles.get(name).map(|p| Permissions::of(p)))
    }

    /// Whether `credential`, which proved itself as `principal`, still does: what a WebSocket
    /// asks before each message. A key is read again (from the cache, which a revocation
    /// empties); a token can only have expired since, so its signature is not checked again.
    pub async fn still_valid(
        &self,
        credential: &str,
        principal: &Principal,
    ) -> Result<(), ApiError> {
        if credential.starts_with(API_KEY_PREFIX) {
            return self.api_key(credential).await.map(|_| ());
        }
        let leeway = self.config.jwt.as_ref().map_or(0, |j| j.leeway_secs);
        match principal.expires_at() {
            Some(at)
                if chrono::Utc::now()
                    > at + chrono::Duration::seconds(i64::try_from(leeway).unwrap_or(0)) =>
            {
                Err(unauthenticated("the token has expired"))
            }
            _ => Ok(()),
        }
    }

    /// Who `credential` is, or why it proves nothing.
    pub async fn resolve(&self, credential: &str) -> Result<Principal, ApiError> {
        if credential.starts_with(API_KEY_PREFIX) {
            self.api_key(credential).await
        } else {
            self.token(credential).await
        }
    }
}
