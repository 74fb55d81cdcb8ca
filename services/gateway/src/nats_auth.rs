//! NATS authorization for tenants: the gateway answers nats-server's auth callout, so a
//! tenant's own program may connect to NATS with its Wharf API key or token, follow its tasks'
//! events there and use the NATS service API for its own tenant, and nothing else.
//!
//! nats-server sends every connection that is not one of its configured `auth_users` (the
//! platform's own) to `$SYS.REQ.USER.AUTH` as a signed authorization request. The gateway reads
//! the credential the client sent (its token, or its password), resolves it exactly like an
//! HTTP credential, and answers with a user JWT signed by the issuer account key. The user may
//! subscribe to `wharf.live.events.<its tenant>.>` and its replies (`_INBOX_<its tenant>.>`),
//! and publish only requests to its tenant's endpoints of the NATS service
//! (`wharf.api.<its tenant>.tasks.<endpoint>`, those its permissions allow); it expires after
//! `max_session_secs`, when the client reconnects and is checked again (so a revoked key is shut
//! out by then). Anything else is answered with an error, and the server refuses the client.
//!
//! The JWTs are those of the NATS JWT v2 format: `{"typ":"JWT","alg":"ed25519-nkey"}`,
//! base64url without padding, signed with Ed25519 by an nkey.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Digest;
use wharf_contract::{
    AUTH_CALLOUT_SUBJECT, Permission, nats_api_subject, tenant_inbox_prefix, tenant_live_events,
};

use crate::AppState;
use crate::auth::Principal;

/// The `[gateway.nats_auth]` settings.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsAuthConfig {
    /// Seed of the account nkey (`SA…`) that signs authorizations; nats-server's
    /// `auth_callout.issuer` is its public key (`wharf nats-issuer` makes one). A secret.
    pub issuer_seed: String,
    /// Seed of the curve key (`SX…`) nats-server encrypts requests to (its `auth_callout.xkey`
    /// is the public key): requests carry tenants' credentials, which other platform
    /// connections could otherwise read on the callout subject. A secret; recommended.
    #[serde(default)]
    pub xkey_seed: Option<String>,
    /// The account tenant connections are placed in: `$G` on a server without accounts.
    #[serde(default = "global_account")]
    pub account: String,
    /// Longest life of one authorization, in seconds (60 to 86,400); the client is
    /// disconnected then, and checked again when it reconnects.
    #[serde(default = "default_session_secs")]
    pub max_session_secs: u64,
}

fn global_account() -> String {
    "$G".into()
}

fn default_session_secs() -> u64 {
    900
}

impl std::fmt::Debug for NatsAuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsAuthConfig")
            .field("issuer_seed", &"<secret>")
            .field("xkey_seed", &self.xkey_seed.as_ref().map(|_| "<secret>"))
            .field("account", &self.account)
            .field("max_session_secs", &self.max_session_secs)
            .finish()
    }
}

impl NatsAuthConfig {
    /// The keys these settings name, checked with the rest of the settings.
    pub fn keys(&self) -> Result<Keys, String> {
        let issuer = nkeys::KeyPair::from_seed(self.issuer_seed.trim())
            .map_err(|e| format!("gateway.nats_auth.issuer_seed is not an nkey seed: {e}"))?;
        if issuer.key_pair_type() != nkeys::KeyPairType::Account {
            return Err("gateway.nats_auth.issuer_seed must be an account seed (SA…)".into());
        }
        if !(60..=86_400).contains(&self.max_session_secs) {
            return Err("gateway.nats_auth.max_session_secs must be between 60 and 86400".into());
        }
        if self.account.is_empty() {
            return Err("gateway.nats_auth.account must name an account".into());
        }
        let xkey = self
            .xkey_seed
            .as_deref()
            .map(|seed| {
                nkeys::XKey::from_seed(seed.trim())
                    .map_err(|e| format!("gateway.nats_auth.xkey_seed is not a curve seed: {e}"))
            })
            .transpose()?;
        Ok(Keys {
            issuer_public: issuer.public_key(),
            issuer,
            xkey,
            account: self.account.clone(),
            max_session_secs: i64::try_from(self.max_session_secs).unwrap_or(900),
        })
    }
}

/// What answering takes: the keys, and the settings of the users it makes.
pub struct Keys {
    issuer: nkeys::KeyPair,
    issuer_public: String,
    xkey: Option<nkeys::XKey>,
    account: String,
    max_session_secs: i64,
}

impl Keys {
    /// The issuer's public key: nats-server's `auth_callout.issuer`.
    pub fn issuer_public(&self) -> &str {
        &self.issuer_public
    }

    /// The curve key's public key, if any: nats-server's `auth_callout.xkey`.
    pub fn xkey_public(&self) -> Option<String> {
        self.xkey.as_ref().map(nkeys::XKey::public_key)
    }
}

/// A new issuer key: its seed for `[gateway.nats_auth]`, and its public key for nats-server.
pub fn new_issuer() -> (String, String) {
    let key = nkeys::KeyPair::new_account();
    (key.seed().expect("a new key has a seed"), key.public_key())
}

/// A new curve key for encrypting requests: its seed, and its public key for nats-server.
pub fn new_xkey() -> (String, String) {
    let key = nkeys::XKey::new();
    (key.seed().expect("a new key has a seed"), key.public_key())
}

/// Header naming the curve key of the server that sent an encrypted request.
const SERVER_XKEY_HEADER: &str = "Nats-Server-Xkey";
/// Requests answered at once; more wait (nats-server times out those it waited too long for).
const MAX_CONCURRENT: usize = 64;
/// Subscriptions one tenant connection may hold.
const MAX_SUBSCRIPTIONS: i64 = 1000;

/// What the gateway reads of an authorization request.
#[derive(Debug, Deserialize)]
struct Request {
    nats: RequestBody,
}

#[derive(Debug, Deserialize)]
struct RequestBody {
    user_nkey: String,
    server_id: ServerId,
    #[serde(default)]
    connect_opts: ConnectOpts,
    #[serde(default)]
    client_info: ClientInfo,
}

#[derive(Debug, Deserialize)]
struct ServerId {
    id: String,
}

#[derive(Debug, Default, Deserialize)]
struct ConnectOpts {
    #[serde(default)]
    auth_token: Option<String>,
    #[serde(default)]
    pass: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ClientInfo {
    #[serde(default)]
    host: Option<String>,
}

/// Answers authorization requests until the gateway stops. Every gateway subscribes in one
/// queue group, so each request is answered once.
pub async fn serve(state: AppState, config: NatsAuthConfig) {
    let keys = match config.keys() {
        Ok(k) => std::sync::Arc::new(k),
        Err(e) => {
            tracing::error!("{e}");
            return;
        }
    };
    let client = state.bus.client();
    let mut requests = match client
        .queue_subscribe(AUTH_CALLOUT_SUBJECT, "wharf-gateways".into())
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot answer nats authorization requests");
            return;
        }
    };
    tracing::info!(issuer = %keys.issuer_public, encrypted = keys.xkey.is_some(), "answering nats authorization requests");
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT));
    loop {
        let message = tokio::select! {
            m = requests.next() => match m {
                Some(m) => m,
                None => return,
            },
            () = state.stopping.cancelled() => return,
        };
        let Some(reply) = message.reply.clone() else {
            continue;
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (state, keys, client) = (state.clone(), keys.clone(), client.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let Some((answer, audit)) = answer(&state, &keys, &message).await else {
                return;
            };
            // The client waits for this; the audit entry can wait for the client.
            if let Err(e) = client.publish(reply, answer.into()).await {
                tracing::warn!(error = %e, "cannot answer a nats authorization request");
            }
            state.audit.record(audit).await;
        });
    }
}

/// The signed (and, with an xkey, encrypted) answer to one request, and its audit entry
/// (`None` for a request that cannot even be read: the server then times the client out).
async fn answer(
    state: &AppState,
    keys: &Keys,
    message: &async_nats::Message,
) -> Option<(Vec<u8>, wharf_contract::AuditEntry)> {
    let issuer = &keys.issuer;
    let (payload, seal_to) = open(keys, message)?;
    let request: Request = match claims_of(&payload) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable nats authorization request");
            return None;
        }
    };
    let body = &request.nats;
    let ip = body.client_info.host.clone().unwrap_or_default();
    let outcome = decide(state, body, &ip).await;
    let now = chrono::Utc::now().timestamp();
    let nats = match &outcome {
        Ok(principal) => {
            tracing::debug!(
                actor = principal.actor(),
                tenant = principal.tenant(),
                "nats connection authorized"
            );
            let user = user_jwt(keys, &body.user_nkey, principal, now);
            json!({"jwt": user, "type": "authorization_response", "version": 2})
        }
        Err(why) => {
            tracing::info!(ip, why = %why, "nats connection refused");
            json!({"error": why, "type": "authorization_response", "version": 2})
        }
    };
    let (principal, status, detail) = match &outcome {
        Ok(p) => (Some(p), 200, None),
        Err(why) => (None, 401, Some(why.clone())),
    };
    let audit = crate::audit::entry(
        principal,
        if principal.is_some() {
            "nats.connect".into()
        } else {
            "auth.unauthenticated".into()
        },
        status,
        "nats".into(),
        "",
        &ip,
        detail,
    );
    let response = sign(
        issuer,
        json!({
            "iat": now,
            "iss": keys.issuer_public,
            "sub": body.user_nkey,
            "aud": body.server_id.id,
            "nats": nats,
        }),
    );
    let response = match (&keys.xkey, seal_to) {
        (Some(ours), Some(theirs)) => match ours.seal(response.as_bytes(), &theirs) {
            Ok(sealed) => sealed,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encrypt a nats authorization answer");
                return None;
            }
        },
        _ => response.into_bytes(),
    };
    Some((response, audit))
}

/// The request's payload, opened with this gateway's xkey when one is configured (nats-server
/// names its own key in a header), and the key to seal the answer to; `None` when the request
/// and this gateway do not agree on encryption.
fn open(keys: &Keys, message: &async_nats::Message) -> Option<(Vec<u8>, Option<nkeys::XKey>)> {
    let server_xkey = message
        .headers
        .as_ref()
        .and_then(|h| h.get(SERVER_XKEY_HEADER))
        .map(|v| v.as_str().to_owned());
    match (&keys.xkey, server_xkey) {
        (Some(ours), Some(theirs)) => {
            let theirs = match nkeys::XKey::from_public_key(&theirs) {
                Ok(k) => k,
                Err(e) => {
                    tracing::warn!(error = %e, "a nats authorization request names a bad xkey");
                    return None;
                }
            };
            match ours.open(&message.payload, &theirs) {
                Ok(plain) => Some((plain, Some(theirs))),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot decrypt a nats authorization request");
                    None
                }
            }
        }
        (Some(_), None) => {
            tracing::warn!(
                "an unencrypted nats authorization request, though xkey_seed is set: \
                 give nats-server's auth_callout the xkey; refusing to answer"
            );
            None
        }
        (None, Some(_)) => {
            tracing::warn!(
                "an encrypted nats authorization request, but no xkey_seed is configured"
            );
            None
        }
        (None, None) => Some((message.payload.to_vec(), None)),
    }
}

/// Who the connecting client is: the principal its credential names, if it may follow its
/// tasks' events; else why not. Each attempt counts against its address's allowance, as an HTTP
/// request would: a flood of made-up keys must not become a flood of database reads.
async fn decide(state: &AppState, body: &RequestBody, ip: &str) -> Result<Principal, String> {
    let credential = body
        .connect_opts
        .auth_token
        .as_deref()
        .or(body.connect_opts.pass.as_deref())
        .filter(|c| !c.is_empty());
    let limited = ip
        .parse::<std::net::IpAddr>()
        .ok()
        .and_then(|addr| state.settings().limits.admit_ip(addr).err());
    match (limited, credential) {
        (Some(e), _) => Err(e.0.detail.clone()),
        (None, None) => {
            Err("no credential: connect with a Wharf API key or token as the token".into())
        }
        (None, Some(c)) => match state.auth.resolve(c).await {
            Err(e) => Err(e.0.detail.clone()),
            Ok(p) if !p.can(Permission::TasksRead) => {
                Err(format!("{} lacks {}", p.actor(), Permission::TasksRead))
            }
            Ok(p) => Ok(p),
        },
    }
}

/// What a tenant user may publish: requests to its own tenant's endpoints of the NATS service
/// that its permissions allow, nothing else.
fn publish_allowed(principal: &Principal) -> Value {
    let allowed: Vec<String> = crate::nats_api::Endpoint::ALL
        .into_iter()
        .filter(|e| principal.can(e.permission()))
        .map(|e| nats_api_subject(principal.tenant(), e.name()))
        .collect();
    if allowed.is_empty() {
        json!({"deny": [">"]})
    } else {
        json!({"allow": allowed})
    }
}

/// The user JWT of an authorized connection: it may subscribe to its tenant's live events and
/// to replies below its tenant's inbox prefix, publish requests to its tenant's endpoints of
/// the NATS service ([`publish_allowed`]) and nothing else, and lasts as long as its credential, or `max_session_secs`
/// if that is sooner.
fn user_jwt(keys: &Keys, user_nkey: &str, principal: &Principal, now: i64) -> String {
    let longest = now + keys.max_session_secs;
    let exp = principal
        .expires_at()
        .map_or(longest, |at| at.timestamp().min(longest));
    sign(
        &keys.issuer,
        json!({
            "iat": now,
            "exp": exp,
            "iss": keys.issuer_public,
            "sub": user_nkey,
            "aud": keys.account,
            "name": principal.actor(),
            "nats": {
                "pub": publish_allowed(principal),
                "sub": {"allow": [
                    tenant_live_events(principal.tenant()),
                    format!("{}.>", tenant_inbox_prefix(principal.tenant())),
                ]},
                "allowed_connection_types": ["STANDARD", "WEBSOCKET"],
                "subs": MAX_SUBSCRIPTIONS,
                "data": -1,
                "payload": -1,
                "type": "user",
                "version": 2,
            },
        }),
    )
}

/// The claims of a JWT, unverified: the request is signed by the server's own key, which Wharf
/// does not know in advance, so its signature would prove nothing. Only connections of the
/// platform's user can publish on the callout subject (tenants publish nothing); with an xkey,
/// only a holder of the server's curve key can make a request the gateway can open.
fn claims_of<T: serde::de::DeserializeOwned>(token: &[u8]) -> Result<T, String> {
    let token = std::str::from_utf8(token).map_err(|e| e.to_string())?;
    let mut parts = token.split('.');
    let (Some(_header), Some(claims), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a JWT".into());
    };
    let claims = URL_SAFE_NO_PAD
        .decode(claims.trim_end_matches('='))
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&claims).map_err(|e| e.to_string())
}

/// Encodes and signs `claims` as a NATS JWT; its `jti` is the base32 SHA-256 of the claims
/// without it, as the NATS libraries make it.
fn sign(key: &nkeys::KeyPair, mut claims: Value) -> String {
    let unnamed = serde_json::to_vec(&claims).expect("claims serialise");
    let digest = sha2::Sha256::digest(&unnamed);
    claims["jti"] = Value::String(data_encoding::BASE32_NOPAD.encode(&digest));
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims serialise"));
    let signed = format!("{header}.{body}");
    let signature = key
        .sign(signed.as_bytes())
        .expect("a key made from a seed signs");
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_jwt_verifies_with_the_issuer_public_key() {
        let (seed, public) = new_issuer();
        let config = NatsAuthConfig {
            issuer_seed: seed,
            xkey_seed: None,
            account: "$G".into(),
            max_session_secs: 900,
        };
        let keys = config.keys().unwrap();
        assert_eq!(keys.issuer_public(), public);
        let token = sign(&keys.issuer, json!({"sub": "U", "nats": {"type": "user"}}));
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let verifier = nkeys::KeyPair::from_public_key(&public).unwrap();
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        verifier
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .unwrap();
        let claims: Value = claims_of(token.as_bytes()).unwrap();
        assert_eq!(claims["sub"], "U");
        assert_eq!(claims["jti"].as_str().unwrap().len(), 52);
    }

    #[test]
    fn only_account_seeds_are_issuers() {
        let user = nkeys::KeyPair::new_user();
        let config = NatsAuthConfig {
            issuer_seed: user.seed().unwrap(),
            xkey_seed: None,
            account: "$G".into(),
            max_session_secs: 900,
        };
        assert!(config.keys().err().unwrap().contains("account seed"));
    }
}
