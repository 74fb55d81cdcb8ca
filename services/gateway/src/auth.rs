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

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Digest;
use wharf_contract::{
    API_KEY_PREFIX, DEFAULT_TENANT, ErrorCode, Identity, Permission, auth::builtin_role, valid_name,
};
use wharf_store::Store;

use crate::AppState;
use crate::problem::ApiError;

/// How requests prove who they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every request needs a valid API key or token.
    #[default]
    Required,
    /// Requests without credentials act as an anonymous admin of the `default` tenant. Only on a
    /// loopback address.
    Open,
}

/// `[gateway.auth]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `required` when absent, except under `wharf dev`, which is `open` unless told otherwise.
    pub mode: Option<AuthMode>,
    /// JWT bearer tokens; API keys work whether or not this is set.
    pub jwt: Option<JwtConfig>,
    /// Roles beyond the built-in ones: name → permissions.
    pub roles: BTreeMap<String, Vec<Permission>>,
    /// How long a gateway trusts what it read about an API key before reading it again. A
    /// revocation reaches every gateway at once over NATS; this bounds the delay should that
    /// message be lost.
    pub key_cache_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: None,
            jwt: None,
            roles: BTreeMap::new(),
            key_cache_secs: 30,
        }
    }
}

/// `[gateway.auth.jwt]`: where tokens come from and how to check them.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` every token must carry (or list).
    pub audience: String,
    /// Shared secret for HS256 tokens.
    #[serde(default)]
    pub hs256_secret: Option<String>,
    /// PEM public keys (RSA for RS256, P-256 for ES256), inline.
    #[serde(default)]
    pub public_keys: Vec<String>,
    /// PEM public keys, from files.
    #[serde(default)]
    pub public_key_files: Vec<PathBuf>,
    /// A JSON Web Key Set file (the identity provider's `jwks_uri` document, saved).
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// The identity provider's JSON Web Key Set URL (`https://`, or `http://` on a loopback
    /// address), read at start, every `jwks_refresh_secs`, and when a token names a `kid` no
    /// key has (at most every 30 s).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Seconds between two reads of `jwks_url`.
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh_secs: u64,
    /// Claim naming the tenant.
    #[serde(default = "default_tenant_claim")]
    pub tenant_claim: String,
    /// Claim listing the roles (an array, or a space-separated string).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field(
                "hs256_secret",
                &self.hs256_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("public_keys", &self.public_keys.len())
            .field("public_key_files", &self.public_key_files)
            .field("jwks_file", &self.jwks_file)
            .field("jwks_url", &self.jwks_url)
            .finish_non_exhaustive()
    }
}

fn default_tenant_claim() -> String {
    "tenant".into()
}
fn default_roles_claim() -> String {
    "roles".into()
}
fn default_leeway() -> u64 {
    30
}
fn default_jwks_refresh() -> u64 {
    300
}

/// Least time between two reads of the JWKS URL that a token with an unknown `kid` causes.
const JWKS_MISS_INTERVAL: Duration = Duration::from_secs(30);
/// Largest JWKS document read.
const JWKS_MAX_BYTES: usize = 1024 * 1024;

/// A set of permissions, one bit each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Permissions(u32);

impl Permissions {
    pub fn all() -> Permissions {
        Permissions::of(&Permission::ALL)
    }

    pub fn of(list: &[Permission]) -> Permissions {
        Permissions(list.iter().fold(0, |bits, p| bits | bit(*p)))
    }

    pub fn contains(self, p: Permission) -> bool {
        self.0 & bit(p) != 0
    }

    pub fn union(self, other: Permissions) -> Permissions {
        Permissions(self.0 | other.0)
    }

    pub fn list(self) -> Vec<Permission> {
        Permission::ALL
            .into_iter()
            .filter(|p| self.contains(*p))
            .collect()
    }
}

fn bit(p: Permission) -> u32 {
    1 << (p as u32)
}

/// Who a request acts as.
#[derive(Debug, Clone)]
pub struct Principal(Arc<PrincipalInner>);

#[derive(Debug)]
pub struct PrincipalInner {
    /// `key:<id>`, `jwt:<sub>` or `anonymous`.
    pub actor: String,
    pub tenant: String,
    pub roles: Vec<String>,
    pub permissions: Permissions,
    /// When the credential stops proving anything (an API key's expiry, a token's `exp`).
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Principal {
    pub fn new(actor: String, tenant: String, roles: Vec<String>, perms: Permissions) -> Self {
        Principal::with_expiry(actor, tenant, roles, perms, None)
    }

    /// A caller whose credential expires at `expires_at`.
    fn with_expiry(
        actor: String,
        tenant: String,
        roles: Vec<String>,
        permissions: Permissions,
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Self {
        Principal(Arc::new(PrincipalInner {
            actor,
            tenant,
            roles,
            permissions,
            expires_at,
        }))
    }

    /// When the credential this caller proved itself with expires, if it does.
    pub fn expires_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.0.expires_at
    }

    /// The API key this caller proved itself with, if it was one.
    pub fn key_id(&self) -> Option<uuid::Uuid> {
        self.0.actor.strip_prefix("key:")?.parse().ok()
    }

    /// The caller of an open gateway that sent no credentials: one, shared, not one per request.
    fn anonymous() -> Principal {
        static ANONYMOUS: std::sync::OnceLock<Principal> = std::sync::OnceLock::new();
        ANONYMOUS
            .get_or_init(|| {
                Principal::new(
                    "anonymous".into(),
                    DEFAULT_TENANT.into(),
                    vec!["admin".into()],
                    Permissions::all(),
                )
            })
            .clone()
    }

    pub fn actor(&self) -> &str {
        &self.0.actor
    }

    pub fn tenant(&self) -> &str {
        &self.0.tenant
    }

    pub fn permissions(&self) -> Permissions {
        self.0.permissions
    }

    pub fn can(&self, p: Permission) -> bool {
        self.0.permissions.contains(p)
    }

    /// Refuses with 403 naming the permission when the principal lacks it.
    pub fn require(&self, p: Permission) -> Result<(), ApiError> {
        if self.can(p) {
            return Ok(());
        }
        let mut e = ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "this needs the permission {p}, which {} lacks",
                self.actor()
            ),
        );
        e.0.missing_permission = Some(p.as_str().to_owned());
        Err(e)
    }

    /// True when an object of `tenant` is this principal's to see. An empty tenant (a task
    /// whose submission is not known yet) is nobody's.
    pub fn owns(&self, tenant: &str) -> bool {
        !tenant.is_empty() && tenant == self.tenant()
    }

    pub fn identity(&self) -> Identity {
        Identity {
            actor: self.0.actor.clone(),
            tenant: self.0.tenant.clone(),
            roles: self.0.roles.clone(),
            permissions: self.0.permissions.list(),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::internal("a route without authentication asked who calls"))
    }
}

/// One key that may have signed a token.
struct VerifyKey {
    algorithm: Algorithm,
    kid: Option<String>,
    key: DecodingKey,
}

/// What [`Authenticator::api_key`] read about a key, kept for `key_cache_secs`.
#[derive(Clone)]
struct CachedKey {
    key: Option<wharf_store::StoredKey>,
    read_at: Instant,
}

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

/// Why a configuration cannot be used.
pub type ConfigError = String;

impl Authenticator {
    /// Reads the configured keys; refuses a configuration that would not work.
    pub fn new(config: AuthConfig, store: Store) -> Result<Authenticator, ConfigError> {
        for name in config.roles.keys() {
            if !valid_name(name) {
                return Err(format!(
                    "gateway.auth.roles.{name}: a role name is 1-64 letters, digits, '-' or '_'"
                ));
            }
            if builtin_role(name).is_some() {
                return Err(format!(
                    "gateway.auth.roles.{name}: {name} is a built-in role and cannot be redefined"
                ));
            }
        }
        let mut keys = Vec::new();
        if let Some(jwt) = &config.jwt {
            if let Some(secret) = &jwt.hs256_secret {
                if secret.len() < 32 {
                    return Err("gateway.auth.jwt.hs256_secret: use at least 32 bytes".into());
                }
                keys.push(VerifyKey {
                    algorithm: Algorithm::HS256,
                    kid: None,
                    key: DecodingKey::from_secret(secret.as_bytes()),
                });
            }
            let mut pems: Vec<(String, String)> = jwt
                .public_keys
                .iter()
                .enumerate()
                .map(|(i, p)| (format!("gateway.auth.jwt.public_keys[{i}]"), p.clone()))
                .collect();
            for path in &jwt.public_key_files {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("gateway.auth.jwt.public_key_files: {path:?}: {e}"))?;
                pems.push((format!("{path:?}"), text));
            }
            for (origin, pem) in pems {
                keys.push(public_key(&pem).map_err(|e| format!("{origin}: {e}"))?);
            }
            if let Some(path) = &jwt.jwks_file {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("gateway.auth.jwt.jwks_file: {path:?}: {e}"))?;
                keys.extend(jwks(&text).map_err(|e| format!("gateway.auth.jwt.jwks_file: {e}"))?);
            }
            if let Some(url) = &jwt.jwks_url {
                check_jwks_url(url).map_err(|e| format!("gateway.auth.jwt.jwks_url: {e}"))?;
                if !(30..=86_400).contains(&jwt.jwks_refresh_secs) {
                    return Err(
                        "gateway.auth.jwt.jwks_refresh_secs: must be between 30 and 86400".into(),
                    );
                }
            }
            if keys.is_empty() && jwt.jwks_url.is_none() {
                return Err("gateway.auth.jwt: give hs256_secret, public_keys, \
                            public_key_files, jwks_file or jwks_url"
                    .into());
            }
        }
        let http = config
            .jwt
            .as_ref()
            .and_then(|j| j.jwks_url.as_ref())
            .map(|_| {
                reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| format!("gateway.auth.jwt.jwks_url: no HTTP client: {e}"))
            })
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

    /// Reads `jwks_url` and puts its keys in force; returns how many it holds. A failed read
    /// leaves the keys read before in force.
    pub async fn refresh_jwks(&self) -> Result<usize, String> {
        let (Some(http), Some(url)) = (
            &self.http,
            self.config.jwt.as_ref().and_then(|j| j.jwks_url.as_ref()),
        ) else {
            return Ok(0);
        };
        let response = http
            .get(url)
            .header(header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("cannot read {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url} answered {}", response.status()));
        }
        if response
            .content_length()
            .is_some_and(|n| n > JWKS_MAX_BYTES as u64)
        {
            return Err(format!("{url}: the key set is over {JWKS_MAX_BYTES} bytes"));
        }
        let mut body = Vec::new();
        let mut response = response;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("cannot read {url}: {e}"))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > JWKS_MAX_BYTES {
                return Err(format!("{url}: the key set is over {JWKS_MAX_BYTES} bytes"));
            }
        }
        let text = String::from_utf8(body).map_err(|_| format!("{url}: not UTF-8"))?;
        let keys = jwks(&text).map_err(|e| format!("{url}: {e}"))?;
        let n = keys.len();
        *self.remote.write().expect("never poisoned") = Arc::new(keys);
        Ok(n)
    }

    /// Reads `jwks_url` again for a token naming `kid`, unless a token did so less than
    /// [`JWKS_MISS_INTERVAL`] ago (a stream of made-up `kid`s must not become a stream of
    /// requests to the identity provider). Tokens arriving meanwhile wait for that read.
    async fn refresh_for_unknown_kid(&self, kid: &str) {
        if self.http.is_none() {
            return;
        }
        let mut last = self.miss_read.lock().await;
        if last.is_some_and(|at| at.elapsed() < JWKS_MISS_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
        match self.refresh_jwks().await {
            Ok(n) => tracing::info!(kid, keys = n, "read the JWKS again for an unknown kid"),
            Err(e) => tracing::warn!(error = %e, "cannot read the JWKS"),
        }
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

    async fn api_key(&self, secret: &str) -> Result<Principal, ApiError> {
        let hash = hash_secret(secret);
        let ttl = Duration::from_secs(self.config.key_cache_secs);
        let cached = self
            .cache
            .lock()
            .expect("the key cache lock is never poisoned")
            .get(&hash)
            .filter(|c| c.read_at.elapsed() < ttl)
            .cloned();
        let key = match cached {
            Some(c) => c.key,
            None => {
                let key = self.store.key_by_hash(&hash).await?;
                let mut cache = self.cache.lock().expect("never poisoned");
                // Unknown secrets are not kept: the map holds at most the keys that exist.
                if key.is_some() {
                    cache.insert(
                        hash,
                        CachedKey {
                            key: key.clone(),
                            read_at: Instant::now(),
                        },
                    );
                }
                key
            }
        };
        let Some(key) = key else {
            return Err(unauthenticated("the API key is not known"));
        };
        let info = &key.info;
        if info.revoked_at.is_some() {
            return Err(unauthenticated("the API key was revoked"));
        }
        if !key.is_live(chrono::Utc::now()) {
            return Err(unauthenticated("the API key has expired"));
        }
        Ok(Principal::with_expiry(
            format!("key:{}", info.id),
            info.tenant.clone(),
            vec![info.role.clone()],
            self.role(&info.role).unwrap_or_default(),
            info.expires_at,
        ))
    }

    /// Forgets key `id`, so its next use reads it again (revoked) from the database, and ends
    /// the streams it opened on this gateway.
    pub fn forget_key(&self, id: uuid::Uuid) {
        self.cache
            .lock()
            .expect("never poisoned")
            .retain(|_, c| c.key.as_ref().is_none_or(|k| k.info.id != id));
        // No stream listening is no error.
        let _ = self.revoked.send(id);
    }

    /// Resolves, with the refusal to tell the client, when the credential `principal` proved
    /// itself with stops proving anything while a stream it opened (a WebSocket, SSE) is still
    /// open: its API key revoked, or its expiry passed (a token's with `leeway_secs`). Never
    /// for a credential that neither expires nor is revoked. It listens from this call on, not
    /// from the first poll.
    pub fn lapse(
        &self,
        principal: &Principal,
    ) -> impl std::future::Future<Output = ApiError> + Send + use<> {
        let mut revocations = self.revoked.subscribe();
        let key = principal.key_id();
        let leeway = match key {
            Some(_) => 0,
            None => self.config.jwt.as_ref().map_or(0, |j| j.leeway_secs),
        };
        let expiry = principal
            .expires_at()
            .map(|at| at + chrono::Duration::seconds(i64::try_from(leeway).unwrap_or(0)));
        let store = self.store.clone();
        let expired = async move {
            let Some(at) = expiry else {
                return std::future::pending().await;
            };
            // A far expiry may be past the timer's range: sleep again until it is reached.
            while let Ok(left) = (at - chrono::Utc::now()).to_std() {
                tokio::time::sleep(left).await;
            }
        };
        let revoked = async move {
            let Some(id) = key else {
                return std::future::pending().await;
            };
            loop {
                match revocations.recv().await {
                    Ok(r) if r == id => return,
                    Ok(_) => {}
                    // Announcements were missed: ask the database whether this key was one.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        if let Ok(Some(k)) = store.key(id).await
                            && k.revoked_at.is_some()
                        {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        return std::future::pending().await;
                    }
                }
            }
        };
        async move {
            tokio::select! {
                () = expired => unauthenticated("the credential expired"),
                () = revoked => unauthenticated("the API key was revoked"),
            }
        }
    }

    async fn token(&self, token: &str) -> Result<Principal, ApiError> {
        let Some(jwt) = &self.config.jwt else {
            return Err(unauthenticated(
                "not an API key (they start with wharf_), and this gateway takes no tokens",
            ));
        };
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| unauthenticated(format!("not a JWT: {e}")))?;
        if !matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::RS256 | Algorithm::ES256
        ) {
            return Err(unauthenticated(format!(
                "tokens signed with {:?} are not accepted (HS256, RS256 or ES256)",
                header.alg
            )));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&jwt.issuer]);
        validation.set_audience(&[&jwt.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = jwt.leeway_secs;
        validation.validate_nbf = true;
        let fits = |k: &&VerifyKey| {
            k.algorithm == header.alg
                && match (&header.kid, &k.kid) {
                    (Some(want), Some(have)) => want == have,
                    _ => true,
                }
        };
        let mut remote = self.remote.read().expect("never poisoned").clone();
        // A kid no key has may be the provider's new key: read the set again, once.
        // (A key without a kid may verify it, but the provider's set is read for the kid first.)
        if let Some(kid) = &header.kid
            && !self
                .keys
                .iter()
                .chain(remote.iter())
                .any(|k| k.algorithm == header.alg && k.kid.as_deref() == Some(kid))
        {
            // Whether this token read it or waited for another's read, take the newest set.
            self.refresh_for_unknown_kid(kid).await;
            remote = self.remote.read().expect("never poisoned").clone();
        }
        let candidates = self.keys.iter().chain(remote.iter()).filter(fits);
        let mut last = None;
        let mut claims = None;
        for k in candidates {
            match jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &k.key, &validation)
            {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                Err(e) => {
                    // A bad signature may be another key's token; any other failure is final.
                    let signature =
                        matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature);
                    last = Some(e);
                    if !signature {
                        break;
                    }
                }
            }
        }
        let claims = match (claims, last) {
            (Some(c), _) => c,
            (None, Some(e)) => return Err(unauthenticated(token_error(&e, jwt))),
            (None, None) => {
                return Err(unauthenticated(format!(
                    "no configured key verifies {:?} tokens{}",
                    header.alg,
                    header
                        .kid
                        .as_ref()
                        .map(|k| format!(" with kid {k:?}"))
                        .unwrap_or_default()
                )));
            }
        };
        // The subject is who acts (`jwt:<sub>` in the audit log): an empty one names nobody.
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| {
                unauthenticated("the token's \"sub\" claim must be a non-empty string")
            })?;
        let tenant = claims
            .get(&jwt.tenant_claim)
            .and_then(Value::as_str)
            .filter(|t| valid_name(t))
            .ok_or_else(|| {
                unauthenticated(format!(
                    "the token's {:?} claim must name a tenant (1-64 letters, digits, '-' or '_')",
                    jwt.tenant_claim
                ))
            })?;
        let roles: Vec<String> = match claims.get(&jwt.roles_claim) {
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        let permissions = roles
            .iter()
            .filter_map(|r| self.role(r))
            .fold(Permissions::default(), Permissions::union);
        let expires_at = claims
            .get("exp")
            .and_then(Value::as_i64)
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0));
        Ok(Principal::with_expiry(
            format!("jwt:{subject}"),
            tenant.to_owned(),
            roles,
            permissions,
            expires_at,
        ))
    }
}

/// A JWKS URL: `https://`, or `http://` to a loopback address only (keys fetched in the clear
/// could be swapped on the way).
fn check_jwks_url(url: &str) -> Result<(), String> {
    let uri: axum::http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    let host = uri.host().unwrap_or_default();
    match uri.scheme_str() {
        Some("https") if !host.is_empty() => Ok(()),
        Some("http")
            if host == "localhost"
                || host
                    .trim_matches(|c| c == '[' || c == ']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback()) =>
        {
            Ok(())
        }
        _ => Err("must be an https:// URL (http:// only to a loopback address)".into()),
    }
}

/// Reads the JWKS URL every `jwks_refresh_secs` (every 10 s while it fails), until the gateway
/// stops. The first read is the gateway's, before it listens.
pub async fn keep_jwks_fresh(state: AppState) {
    let Some(jwt) = state.auth.config.jwt.as_ref() else {
        return;
    };
    let Some(url) = jwt.jwks_url.clone() else {
        return;
    };
    let every = Duration::from_secs(jwt.jwks_refresh_secs);
    let retry = Duration::from_secs(10).min(every);
    let mut wait = if state.auth.remote.read().expect("never poisoned").is_empty() {
        retry
    } else {
        every
    };
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = state.stopping.cancelled() => return,
        }
        wait = match state.auth.refresh_jwks().await {
            Ok(n) => {
                tracing::debug!(url, keys = n, "JWKS read");
                every
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the JWKS; trying again in 10 s");
                retry
            }
        };
    }
}

/// Drops revoked keys from `auth`'s cache as gateways announce them, until the gateway stops.
pub async fn follow_revocations(state: AppState) {
    let revoked = match state.bus.announcements(&wharf_bus::KEY_REVOKED).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot follow key revocations; the cache expiry bounds them");
            return;
        }
    };
    let mut revoked = std::pin::pin!(revoked.take_until(state.stopping.clone().cancelled_owned()));
    while let Some(id) = revoked.next().await {
        state.auth.forget_key(id);
    }
}

fn token_error(e: &jsonwebtoken::errors::Error, jwt: &JwtConfig) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => "the token has expired".into(),
        K::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        K::InvalidSignature => "the token's signature does not verify".into(),
        K::InvalidIssuer => format!("the token's issuer is not {:?}", jwt.issuer),
        K::InvalidAudience => format!("the token's audience is not {:?}", jwt.audience),
        K::MissingRequiredClaim(c) => format!("the token has no {c:?} claim"),
        K::InvalidAlgorithm => "the token's algorithm does not match the key".into(),
        other => format!("the token is not valid: {other:?}"),
    }
}

/// SHA-256 of an API key's secret, hex: what the database keeps. The secret holds 256 random
/// bits, so a plain hash is enough (no salt or slow hash: there is nothing to guess).
pub fn hash_secret(secret: &str) -> String {
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// A new key, not stored yet: its listing, its secret and the hash the database keeps.
pub fn mint_key(
    name: String,
    tenant: String,
    role: String,
    created_by: String,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
) -> (wharf_contract::ApiKeyInfo, String, String) {
    let secret = new_secret();
    let info = wharf_contract::ApiKeyInfo {
        id: uuid::Uuid::now_v7(),
        name,
        tenant,
        role,
        // Enough to tell keys apart in a listing, far too little to guess the rest.
        prefix: secret[..API_KEY_PREFIX.len() + 6].to_owned(),
        created_at: chrono::Utc::now(),
        created_by,
        expires_at,
        revoked_at: None,
    };
    let hash = hash_secret(&secret);
    (info, secret, hash)
}

/// A new API key secret: `wharf_` and 64 hex digits (256 random bits).
fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{API_KEY_PREFIX}{}", hex::encode(bytes))
}

fn public_key(pem: &str) -> Result<VerifyKey, String> {
    let (algorithm, key) = if pem.contains("BEGIN RSA PUBLIC KEY") {
        (Algorithm::RS256, DecodingKey::from_rsa_pem(pem.as_bytes()))
    } else if let Ok(k) = DecodingKey::from_ec_pem(pem.as_bytes()) {
        (Algorithm::ES256, Ok(k))
    } else {
        (Algorithm::RS256, DecodingKey::from_rsa_pem(pem.as_bytes()))
    };
    let key = key.map_err(|e| format!("not an RSA or P-256 public key in PEM: {e}"))?;
    Ok(VerifyKey {
        algorithm,
        kid: None,
        key,
    })
}

fn jwks(text: &str) -> Result<Vec<VerifyKey>, String> {
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_str(text).map_err(|e| format!("not a JWK set: {e}"))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        use jsonwebtoken::jwk::AlgorithmParameters as P;
        let algorithm = match &jwk.algorithm {
            P::RSA(_) => Algorithm::RS256,
            P::EllipticCurve(_) => Algorithm::ES256,
            // Symmetric or other keys have no place in a published key set.
            _ => continue,
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("a key does not load: {e}"))?;
        keys.push(VerifyKey {
            algorithm,
            kid: jwk.common.key_id.clone(),
            key,
        });
    }
    if keys.is_empty() {
        return Err("it holds no RSA or P-256 key".into());
    }
    Ok(keys)
}

pub fn unauthenticated(detail: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Unauthenticated, detail)
}

/// The credential a request carries: `Ok(None)` when it carries none, `Err` when it carries
/// something that is not one (an `Authorization` header of another scheme, an empty value), so
/// that it is refused rather than taken for no credentials at all.
fn credential(
    headers: &HeaderMap,
    query: Option<&str>,
    streams: bool,
) -> Result<Option<String>, &'static str> {
    const MALFORMED: &str =
        "send the credential as Authorization: Bearer <key or token> (or X-API-Key: <key>)";
    let found = if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v.to_str().map_err(|_| MALFORMED)?;
        match v.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => {
                Some(rest.trim().to_owned())
            }
            _ => return Err(MALFORMED),
        }
    } else if let Some(v) = headers.get("x-api-key") {
        Some(v.to_str().map_err(|_| MALFORMED)?.trim().to_owned())
    } else if streams {
        query.and_then(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == "access_token")
                .map(|(_, v)| v.to_owned())
        })
    } else {
        None
    };
    match found {
        Some(c) if c.is_empty() => Err(MALFORMED),
        other => Ok(other),
    }
}

/// The credential a request was authenticated with, for the WebSocket to check again later.
#[derive(Debug, Clone)]
pub struct Credential(pub Option<String>);

/// Resolves the caller of every route behind it into a [`Principal`] (put in the request's
/// extensions), refusing with 401 when it cannot. Counts the request against the caller's
/// tenant's rate limit.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    // Browsers cannot set headers on a WebSocket or an EventSource.
    let streams = path.starts_with("/ws/") || path.ends_with("/events");
    let given = credential(request.headers(), request.uri().query(), streams);
    let principal = match &given {
        Ok(Some(c)) => state.auth.resolve(c).await,
        Err(why) => Err(unauthenticated(*why)),
        Ok(None) if state.auth.mode() == AuthMode::Open => Ok(Principal::anonymous()),
        Ok(None) => Err(unauthenticated(
            "send an API key or token: Authorization: Bearer <key or token>",
        )),
    };
    let principal = match principal {
        Ok(p) => p,
        Err(e) => {
            tracing::info!(reason = %e.0.detail, "request refused: not authenticated");
            let mut response = e.into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"wharf\""),
            );
            return response;
        }
    };
    let class = crate::limits::Class::of(request.method());
    let allowance = match state.settings().limits.admit(principal.tenant(), class) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    request.extensions_mut().insert(principal.clone());
    request
        .extensions_mut()
        .insert(Credential(given.ok().flatten()));
    let mut response = next.run(request).await;
    // For the audit log, which runs outside this layer.
    response.extensions_mut().insert(principal);
    if let Some(a) = allowance {
        a.apply(response.headers_mut());
    }
    response
}

/// `GET /api/v1/whoami`: who the request acts as.
pub async fn whoami(principal: Principal) -> axum::Json<Identity> {
    axum::Json(principal.identity())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwks_url_is_https_or_loopback() {
        for good in [
            "https://idp.example.com/.well-known/jwks.json",
            "http://127.0.0.1:8080/jwks",
            "http://localhost/jwks",
            "http://[::1]:9000/jwks",
        ] {
            assert!(check_jwks_url(good).is_ok(), "{good}");
        }
        for bad in [
            "http://idp.example.com/jwks",
            "http://10.0.0.1/jwks",
            "file:///etc/jwks.json",
            "https:///jwks",
            "jwks.json",
        ] {
            assert!(check_jwks_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_are_found_where_clients_put_them() {
        let mut h = HeaderMap::new();
        assert_eq!(credential(&h, Some("access_token=abc"), false), Ok(None));
        assert_eq!(
            credential(&h, Some("x=1&access_token=abc"), true),
            Ok(Some("abc".into()))
        );
        assert!(credential(&h, Some("access_token="), true).is_err());
        h.insert("x-api-key", HeaderValue::from_static("wharf_k"));
        assert_eq!(credential(&h, None, false), Ok(Some("wharf_k".into())));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer t.o.k"),
        );
        assert_eq!(credential(&h, None, false), Ok(Some("t.o.k".into())));
        // Another scheme is refused, not taken for no credentials (nor for the X-API-Key).
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcg=="),
        );
        assert!(credential(&h, None, false).is_err());
    }

    #[test]
    fn secrets_are_long_random_and_hash_to_hex() {
        let a = new_secret();
        assert!(a.starts_with(API_KEY_PREFIX) && a.len() == 6 + 64);
        assert_ne!(a, new_secret());
        assert_eq!(hash_secret(&a).len(), 64);
        assert_eq!(hash_secret(&a), hash_secret(&a));
    }

    #[test]
    fn permission_sets() {
        let s = Permissions::of(&[Permission::TasksRead, Permission::KeysAdmin]);
        assert!(s.contains(Permission::TasksRead) && !s.contains(Permission::TasksSubmit));
        assert_eq!(s.list(), vec![Permission::TasksRead, Permission::KeysAdmin]);
        assert_eq!(Permissions::all().list(), Permission::ALL.to_vec());
    }
}
