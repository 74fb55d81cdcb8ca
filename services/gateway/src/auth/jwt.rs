//! JWT bearer tokens: the keys that verify them (configured, or read from a JWKS URL and
//! kept fresh) and the checks a token passes to become a principal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::header;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use wharf_contract::NAME_RULE;
use wharf_contract::valid_name;

use super::*;
use crate::AppState;
use crate::problem::ApiError;

/// Least time between two reads of the JWKS URL that a token with an unknown `kid` causes.
const JWKS_MISS_INTERVAL: Duration = Duration::from_secs(30);

/// Largest JWKS document read.
const JWKS_MAX_BYTES: usize = 1024 * 1024;

/// One key that may have signed a token.
pub(super) struct VerifyKey {
    algorithm: Algorithm,
    kid: Option<String>,
    key: DecodingKey,
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

impl Authenticator {
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

    pub(super) async fn token(&self, token: &str) -> Result<Principal, ApiError> {
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
        self.principal_of(&claims, jwt)
    }

    /// The principal a verified token's claims name: its subject, tenant, roles and expiry.
    fn principal_of(
        &self,
        claims: &serde_json::Map<String, Value>,
        jwt: &JwtConfig,
    ) -> Result<Principal, ApiError> {
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
                    "the token's {:?} claim must name a tenant: it {NAME_RULE}",
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

/// The keys `[gateway.auth.jwt]` gives: the HS256 secret, PEM public keys (inline and in files),
/// a JWKS file; and the checks of a JWKS URL. Refuses settings that could verify nothing.
pub(super) fn configured_keys(jwt: &JwtConfig) -> Result<Vec<VerifyKey>, ConfigError> {
    let mut keys = Vec::new();
    if let Some(secret) = &jwt.hs256_secret {
        if secret.len() < 32 {
            return Err(ConfigError::new(
                "jwt.hs256_secret",
                "use at least 32 bytes",
            ));
        }
        keys.push(VerifyKey {
            algorithm: Algorithm::HS256,
            kid: None,
            key: DecodingKey::from_secret(secret.as_bytes()),
        });
    }
    for (i, pem) in jwt.public_keys.iter().enumerate() {
        keys.push(
            public_key(pem).map_err(|e| ConfigError::new(format!("jwt.public_keys[{i}]"), e))?,
        );
    }
    for path in &jwt.public_key_files {
        let read = std::fs::read_to_string(path).map_err(|e| format!("{path:?}: {e}"));
        let key = read.and_then(|text| public_key(&text).map_err(|e| format!("{path:?}: {e}")));
        keys.push(key.map_err(|e| ConfigError::new("jwt.public_key_files", e))?);
    }
    if let Some(path) = &jwt.jwks_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("jwt.jwks_file", format!("{path:?}: {e}")))?;
        keys.extend(jwks(&text).map_err(|e| ConfigError::new("jwt.jwks_file", e))?);
    }
    if let Some(url) = &jwt.jwks_url {
        check_jwks_url(url).map_err(|e| ConfigError::new("jwt.jwks_url", e))?;
        if !(30..=86_400).contains(&jwt.jwks_refresh_secs) {
            return Err(ConfigError::new(
                "jwt.jwks_refresh_secs",
                "must be between 30 and 86400",
            ));
        }
    }
    if keys.is_empty() && jwt.jwks_url.is_none() {
        return Err(ConfigError::new(
            "jwt",
            "give hs256_secret, public_keys, public_key_files, jwks_file or jwks_url",
        ));
    }
    Ok(keys)
}

/// The client that reads the JWKS URL: 10 s per read, no redirects.
pub(super) fn jwks_client() -> Result<reqwest::Client, ConfigError> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| ConfigError::new("jwt.jwks_url", format!("no HTTP client: {e}")))
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
}
