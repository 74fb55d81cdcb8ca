//! API keys: minting, looking them up (cached per gateway), revocation, and the end of the
//! streams a credential opened once it no longer holds.

use std::time::{Duration, Instant};

use futures::StreamExt;
use sha2::Digest;
use wharf_contract::API_KEY_PREFIX;

use super::*;
use crate::AppState;
use crate::problem::ApiError;

/// What [`Authenticator::api_key`] read about a key, kept for `key_cache_secs`.
#[derive(Clone)]
pub(super) struct CachedKey {
    key: Option<wharf_store::StoredKey>,
    read_at: Instant,
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

impl Authenticator {
    pub(super) async fn api_key(&self, secret: &str) -> Result<Principal, ApiError> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_random_and_hash_to_hex() {
        let a = new_secret();
        assert!(a.starts_with(API_KEY_PREFIX) && a.len() == 6 + 64);
        assert_ne!(a, new_secret());
        assert_eq!(hash_secret(&a).len(), 64);
        assert_eq!(hash_secret(&a), hash_secret(&a));
    }
}
