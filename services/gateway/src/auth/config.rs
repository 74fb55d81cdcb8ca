//! `[gateway.auth]`: how callers prove who they are (the mode, JWT settings, roles).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use wharf_contract::Permission;

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
