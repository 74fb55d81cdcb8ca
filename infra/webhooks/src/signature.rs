//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): HMAC-SHA256 over
//! `<webhook-id>.<webhook-timestamp>.<body>`, keyed by the secret's bytes, sent base64-encoded
//! as `v1,<signature>`; a header may carry several, separated by spaces (a sender rotating
//! its secret signs with both).

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use ring::hmac;
use sha2::Digest;
use wharf_contract::hooks::{HOOK_SECRET_PREFIX, HOOK_SECRET_REDACTED, WEBHOOK_TOLERANCE_SECS};
use wharf_contract::rules::HOOK_SECRETS;

/// Standard base64, with or without its padding (senders differ).
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Bytes a secret's key may have: the specification's 24 to 64.
const KEY_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// A secret's key: `whsec_` then the base64 of 24 to 64 bytes. The error says which rule fails.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, String> {
    let Some(encoded) = secret.strip_prefix(HOOK_SECRET_PREFIX) else {
        return Err(format!(
            "must start with {HOOK_SECRET_PREFIX:?}, then the base64 of the key's bytes"
        ));
    };
    let key = B64
        .decode(encoded)
        .map_err(|e| format!("the part after {HOOK_SECRET_PREFIX:?} is not base64: {e}"))?;
    if !KEY_BYTES.contains(&key.len()) {
        return Err(format!(
            "the key is {} bytes; it must be {} to {} random bytes",
            key.len(),
            KEY_BYTES.start(),
            KEY_BYTES.end()
        ));
    }
    Ok(key)
}

/// A list of secrets as the configuration takes it (a hook's, a tenant's callback secrets): 1
/// to [`HOOK_SECRETS`] of them, each decoding. On failure, the path below the list's owner
/// (`/secrets` or `/secrets/<i>`) and why.
pub fn check_secrets(secrets: &[String]) -> Result<(), (String, String)> {
    if secrets.is_empty() || secrets.len() as u64 > HOOK_SECRETS {
        return Err(("/secrets".into(), format!("1 to {HOOK_SECRETS} secrets")));
    }
    for (i, secret) in secrets.iter().enumerate() {
        decode_secret(secret).map_err(|why| (format!("/secrets/{i}"), why))?;
    }
    Ok(())
}

/// How a secret reads in the configuration's views: tellable apart from the others, useless
/// for signing.
pub fn redact_secret(secret: &str) -> String {
    let digest = sha2::Sha256::digest(secret.as_bytes());
    format!("{HOOK_SECRET_REDACTED}{}", &hex::encode(digest)[..8])
}

/// Redacts every secret of a list in place.
pub fn redact_all(secrets: &mut [String]) {
    for s in secrets {
        *s = redact_secret(s);
    }
}

/// Puts back, in a list read redacted and sent back, each secret still in its redacted form
/// (found among `stored` in any order, so adding a new secret before an old one keeps the old
/// one). A secret sent in any other form is taken as it is.
pub fn restore_redacted(secrets: &mut [String], stored: &[String]) {
    for s in secrets {
        if let Some(original) = stored.iter().find(|o| redact_secret(o) == *s) {
            s.clone_from(original);
        }
    }
}

/// The `v1,<base64>` signature of one message.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(format!("{id}.{timestamp}.").as_bytes());
    ctx.update(body);
    format!("v1,{}", B64.encode(ctx.sign().as_ref()))
}

/// Why a call's signature is not accepted; each says so to the sender.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// A header the specification requires is missing or empty.
    Missing(&'static str),
    /// `webhook-timestamp` is not whole seconds.
    Timestamp,
    /// The message is this many seconds older than the tolerance allows (a replay).
    TooOld(i64),
    /// The message is this many seconds ahead of the gateway's clock.
    TooNew(i64),
    /// No `v1` signature matches any secret.
    NoMatch,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Missing(h) => write!(f, "the {h} header is missing (Standard Webhooks)"),
            Refused::Timestamp => f.write_str("webhook-timestamp must be whole seconds since 1970"),
            Refused::TooOld(s) => write!(
                f,
                "webhook-timestamp is {s} s old; messages older than {WEBHOOK_TOLERANCE_SECS} s are \
                 refused as replays (sign each delivery anew)"
            ),
            Refused::TooNew(s) => write!(
                f,
                "webhook-timestamp is {s} s ahead of this server's clock; at most \
                 {WEBHOOK_TOLERANCE_SECS} s is allowed"
            ),
            Refused::NoMatch => {
                f.write_str("no v1 signature in webhook-signature matches this hook's secrets")
            }
        }
    }
}

/// The headers of one call, as received.
pub struct Signed<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signatures: Option<&'a str>,
}

/// Checks a call against the keys of a hook's secrets, at `now` (seconds since 1970). Returns
/// the message id, the call's idempotency key.
pub fn verify<'a>(
    signed: &Signed<'a>,
    keys: &[Vec<u8>],
    body: &[u8],
    now: i64,
) -> Result<&'a str, Refused> {
    let present =
        |v: Option<&'a str>, name| v.filter(|s| !s.is_empty()).ok_or(Refused::Missing(name));
    let id = present(signed.id, "webhook-id")?;
    let timestamp = present(signed.timestamp, "webhook-timestamp")?;
    let signatures = present(signed.signatures, "webhook-signature")?;
    let at: i64 = timestamp.trim().parse().map_err(|_| Refused::Timestamp)?;
    if at < now - WEBHOOK_TOLERANCE_SECS {
        return Err(Refused::TooOld(now - at));
    }
    if at > now + WEBHOOK_TOLERANCE_SECS {
        return Err(Refused::TooNew(at - now));
    }
    let mut message = Vec::with_capacity(id.len() + timestamp.len() + body.len() + 2);
    message.extend_from_slice(format!("{id}.{at}.").as_bytes());
    message.extend_from_slice(body);
    let given: Vec<Vec<u8>> = signatures
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|s| B64.decode(s).ok())
        .collect();
    let matches = keys.iter().any(|key| {
        let key = hmac::Key::new(hmac::HMAC_SHA256, key);
        // `hmac::verify` compares in constant time.
        given
            .iter()
            .any(|tag| hmac::verify(&key, &message, tag).is_ok())
    });
    if matches {
        Ok(id)
    } else {
        Err(Refused::NoMatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of the specification's reference implementations (svix/standard-webhooks,
    // the libraries' own tests).
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signs_as_the_specification_example() {
        let key = decode_secret(SECRET).unwrap();
        assert_eq!(sign(&key, ID, TIMESTAMP, BODY), SIGNATURE);
    }

    #[test]
    fn verifies_any_matching_signature_of_any_secret_within_the_tolerance() {
        let key = decode_secret(SECRET).unwrap();
        let keys = std::slice::from_ref(&key);
        let other = decode_secret("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
        let ts = TIMESTAMP.to_string();
        let headers = |sigs: &'static str| Signed {
            id: Some(ID),
            timestamp: Some(&ts),
            signatures: Some(sigs),
        };
        let both = "v1,bm9wZQ== v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert_eq!(
            verify(
                &headers(both),
                &[other.clone(), key.clone()],
                BODY,
                TIMESTAMP + 10
            ),
            Ok(ID)
        );
        assert_eq!(
            verify(&headers(SIGNATURE), &[other], BODY, TIMESTAMP),
            Err(Refused::NoMatch)
        );
        assert_eq!(
            verify(&headers(SIGNATURE), keys, b"{}", TIMESTAMP),
            Err(Refused::NoMatch)
        );
        assert_eq!(
            verify(&headers(SIGNATURE), keys, BODY, TIMESTAMP + 301),
            Err(Refused::TooOld(301))
        );
        assert_eq!(
            verify(&headers(SIGNATURE), keys, BODY, TIMESTAMP - 400),
            Err(Refused::TooNew(400))
        );
        let missing = Signed {
            id: Some(ID),
            timestamp: None,
            signatures: Some(SIGNATURE),
        };
        assert_eq!(
            verify(&missing, keys, BODY, TIMESTAMP),
            Err(Refused::Missing("webhook-timestamp"))
        );
    }

    #[test]
    fn secrets_need_their_prefix_and_enough_bytes() {
        assert!(decode_secret(SECRET).is_ok());
        assert!(decode_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(
            decode_secret("whsec_c2hvcnQ=")
                .unwrap_err()
                .contains("5 bytes")
        );
        assert!(decode_secret("whsec_!!!").is_err());
        assert_ne!(redact_secret(SECRET), redact_secret("whsec_other"));
        assert!(redact_secret(SECRET).starts_with("***"));
    }
}
