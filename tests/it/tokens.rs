//! JWT bearer tokens: HS256 with a shared secret, RS256 from a JSON Web Key Set, ES256 from a
//! PEM public key. Each way a token can be wrong is refused with the reason.

use std::path::Path;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use reqwest::StatusCode;
use serde_json::{Value, json};
use wharf_gateway::{AuthConfig, AuthMode, GatewayConfig, JwtConfig};
use wharf_testkit::{Options, Wharf, WsClient};

const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "wharf";
const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!";

fn jwt_config() -> JwtConfig {
    JwtConfig {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        hs256_secret: None,
        public_keys: Vec::new(),
        public_key_files: Vec::new(),
        jwks_file: None,
        jwks_url: None,
        jwks_refresh_secs: 300,
        tenant_claim: "tenant".into(),
        roles_claim: "roles".into(),
        leeway_secs: 30,
    }
}

async fn start(jwt: JwtConfig) -> Wharf {
    Wharf::start_with(Options {
        gateway: GatewayConfig {
            auth: AuthConfig {
                mode: Some(AuthMode::Required),
                jwt: Some(jwt),
                ..AuthConfig::default()
            },
            ..GatewayConfig::default()
        },
        ..Options::default()
    })
    .await
}

fn claims(overrides: Value) -> Value {
    let now = chrono::Utc::now().timestamp();
    let mut c = json!({
        "sub": "alice",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": now + 300,
        "iat": now,
        "tenant": "acme",
        "roles": ["submitter"],
    });
    for (k, v) in overrides.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn hs256(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// `GET /api/v1/whoami` with `token`: status and answer.
async fn whoami(w: &Wharf, token: &str) -> (StatusCode, Value) {
    let r = w
        .client_with(token)
        .request(Method::GET, "/api/v1/whoami")
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

#[tokio::test]
async fn every_wrong_token_is_refused_with_its_reason() {
    let w = start(JwtConfig {
        hs256_secret: Some(SECRET.into()),
        ..jwt_config()
    })
    .await;
    let good = hs256(&claims(json!({})), SECRET);
    let (status, me) = whoami(&w, &good).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["actor"], "jwt:alice");
    assert_eq!(me["tenant"], "acme");
    assert_eq!(me["roles"], json!(["submitter"]));
    assert!(
        me["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("tasks:submit"))
    );
    // What a token submits belongs to its tenant.
    wharf_testkit::wait_for_tool_at(&w.client_with(&good), "demo.echo").await;
    let r = w
        .client_with(&good)
        .request(Method::POST, "/api/v1/tasks")
        .json(&json!({"tool": "demo.echo", "arguments": {"message": "hi"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.json::<Value>().await.unwrap()["tenant"], "acme");

    let now = chrono::Utc::now().timestamp();
    let unsigned = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.",
            b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
            b64.encode(claims(json!({})).to_string())
        )
    };
    for (what, token, reason) in [
        (
            "expired",
            hs256(&claims(json!({"exp": now - 120})), SECRET),
            "expired",
        ),
        (
            "wrong audience",
            hs256(&claims(json!({"aud": "other"})), SECRET),
            "audience",
        ),
        (
            "wrong issuer",
            hs256(&claims(json!({"iss": "https://evil.test"})), SECRET),
            "issuer",
        ),
        (
            "wrong signature",
            hs256(&claims(json!({})), "another-secret-of-at-least-32-bytes!!"),
            "signature",
        ),
        (
            "no expiry",
            hs256(&claims(json!({"exp": null})), SECRET),
            "exp",
        ),
        (
            "no tenant",
            hs256(&claims(json!({"tenant": null})), SECRET),
            "tenant",
        ),
        (
            "bad tenant",
            hs256(&claims(json!({"tenant": "a.b"})), SECRET),
            "tenant",
        ),
        (
            "not yet valid",
            hs256(&claims(json!({"nbf": now + 600})), SECRET),
            "not valid yet",
        ),
        (
            "empty subject",
            hs256(&claims(json!({"sub": ""})), SECRET),
            "sub",
        ),
        (
            "blank subject",
            hs256(&claims(json!({"sub": "  "})), SECRET),
            "sub",
        ),
        (
            "subject not a string",
            hs256(&claims(json!({"sub": 42})), SECRET),
            "sub",
        ),
        ("unsigned", unsigned, "JWT"),
        ("garbage", "x.y.z".into(), "JWT"),
    ] {
        let (status, problem) = whoami(&w, &token).await;
        assert_eq!(status, 401, "{what}: {problem}");
        assert_eq!(problem["code"], "unauthenticated", "{what}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(reason), "{what}: {detail}");
    }
    // A token whose roles are unknown authenticates, but may do nothing.
    let nobody = hs256(&claims(json!({"roles": "janitor"})), SECRET);
    let (status, me) = whoami(&w, &nobody).await;
    assert_eq!(status, 200);
    assert_eq!(me["permissions"], json!([]));
    let r = w
        .client_with(&nobody)
        .request(Method::GET, "/api/v1/tasks")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

/// A WebSocket opened with a token works until the token expires, then is told so and closed
/// at that moment, though its client sends nothing (and a message sent after it is refused).
#[tokio::test]
async fn an_open_websocket_ends_when_its_token_expires() {
    let w = start(JwtConfig {
        hs256_secret: Some(SECRET.into()),
        leeway_secs: 0,
        ..jwt_config()
    })
    .await;
    let opened = std::time::Instant::now();
    let exp = chrono::Utc::now().timestamp() + 3;
    let token = hs256(&claims(json!({"exp": exp})), SECRET);
    let mut ws = WsClient::connect_as(&w, &token).await;
    let probe = json!({"type": "task:subscribe", "task_id": uuid::Uuid::now_v7()});
    ws.send(probe.clone()).await;
    assert_eq!(
        ws.next().await["code"],
        "task_not_found",
        "the socket works"
    );
    // Nothing more is sent: the gateway ends the session when the token expires.
    let told = ws.next().await;
    assert_eq!(told["code"], "unauthenticated", "{told}");
    assert!(
        told["message"].as_str().unwrap().contains("expired"),
        "{told}"
    );
    assert!(
        opened.elapsed() >= std::time::Duration::from_secs(2),
        "told only once the token expired, after {:?}",
        opened.elapsed()
    );
    assert_eq!(
        ws.close_code(std::time::Duration::from_secs(5)).await,
        Some(1008),
        "closed as a policy violation"
    );
    // An SSE stream opened with such a token ends when it expires too.
    let lasting = hs256(&claims(json!({})), SECRET);
    wharf_testkit::wait_for_tool_at(&w.client_with(&lasting), "demo.sleep").await;
    let exp = chrono::Utc::now().timestamp() + 3;
    let token = hs256(&claims(json!({"exp": exp})), SECRET);
    let client = w.client_with(&token);
    let r = client
        .request(Method::POST, "/api/v1/tasks")
        .json(&json!({"tool": "demo.sleep", "arguments": {"seconds": 60}}))
        .send()
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let events = client
        .request(Method::GET, &format!("/api/v1/tasks/{id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let body = tokio::time::timeout(std::time::Duration::from_secs(15), events.text())
        .await
        .expect("the event stream ended when its token expired")
        .unwrap();
    assert!(body.contains("task:accepted"), "{body}");
    assert!(
        !body.contains("task:complete"),
        "it ended before the task: {body}"
    );
    assert!(
        body.contains("event: error") && body.contains("expired"),
        "the stream's last event says why it ended: {body}"
    );
}

/// Runs openssl (present on every machine this runs on) to make a key pair.
fn openssl(args: &[&str]) -> String {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn key_pair(dir: &Path, name: &str, algorithm: &[&str]) -> (String, String) {
    let private = dir.join(format!("{name}.pem"));
    let mut args = vec!["genpkey", "-out", private.to_str().unwrap()];
    args.extend_from_slice(algorithm);
    openssl(&args);
    let public = openssl(&["pkey", "-in", private.to_str().unwrap(), "-pubout"]);
    (std::fs::read_to_string(&private).unwrap(), public)
}

/// The JWK of an RSA public key (PEM), named `kid`.
fn rsa_jwk(dir: &Path, kid: &str, public: &str) -> Value {
    use base64::Engine;
    let public_file = dir.join(format!("{kid}.pub"));
    std::fs::write(&public_file, public).unwrap();
    let modulus = openssl(&[
        "rsa",
        "-pubin",
        "-in",
        public_file.to_str().unwrap(),
        "-noout",
        "-modulus",
    ]);
    let modulus = modulus.trim().strip_prefix("Modulus=").unwrap();
    let n = (0..modulus.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&modulus[i..i + 2], 16).unwrap())
        .collect::<Vec<u8>>();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64.encode(n), "e": "AQAB"})
}

#[tokio::test]
async fn rs256_from_a_key_set_and_es256_from_a_pem_key() {
    let dir = tempfile::tempdir().unwrap();
    let rsa = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"];
    let ec = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
    let (rsa_private, rsa_public) = key_pair(dir.path(), "rsa", &rsa);
    let (ec_private, ec_public) = key_pair(dir.path(), "ec", &ec);
    let (other_ec_private, _) = key_pair(dir.path(), "other-ec", &ec);

    // The identity provider's key set, as its jwks_uri would serve it.
    let jwks = json!({"keys": [rsa_jwk(dir.path(), "k1", &rsa_public)]});
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks.to_string()).unwrap();

    let w = start(JwtConfig {
        jwks_file: Some(jwks_file),
        public_keys: vec![ec_public],
        ..jwt_config()
    })
    .await;
    let signed = |alg: Algorithm, kid: Option<&str>, key: EncodingKey| {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, &claims(json!({"tenant": "globex"})), &key).unwrap()
    };
    let rs = || EncodingKey::from_rsa_pem(rsa_private.as_bytes()).unwrap();
    let es = |pem: &str| EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();

    let (status, me) = whoami(&w, &signed(Algorithm::RS256, Some("k1"), rs())).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["tenant"], "globex");
    let (status, me) = whoami(&w, &signed(Algorithm::ES256, None, es(&ec_private))).await;
    assert_eq!(status, 200, "{me}");

    for (what, token, reason) in [
        (
            "unknown kid",
            signed(Algorithm::RS256, Some("k2"), rs()),
            "no configured key",
        ),
        (
            "another EC key",
            signed(Algorithm::ES256, None, es(&other_ec_private)),
            "signature",
        ),
        (
            "HS256 with no secret configured",
            hs256(&claims(json!({})), SECRET),
            "no configured key",
        ),
        (
            "RS384",
            signed(Algorithm::RS384, Some("k1"), rs()),
            "not accepted",
        ),
    ] {
        let (status, problem) = whoami(&w, &token).await;
        assert_eq!(status, 401, "{what}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(reason),
            "{what}: {problem}"
        );
    }
}

/// A JWKS endpoint on a loopback port: serves whatever `keys` holds, counting the reads.
struct KeySetServer {
    url: String,
    keys: std::sync::Arc<std::sync::Mutex<Value>>,
    reads: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl KeySetServer {
    async fn start(keys: Value) -> KeySetServer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        let keys = std::sync::Arc::new(std::sync::Mutex::new(keys));
        let reads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (k, r) = (keys.clone(), reads.clone());
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let (k, r) = (k.clone(), r.clone());
                tokio::spawn(async move {
                    // One request per connection; its head ends with an empty line.
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let body = k.lock().unwrap().to_string();
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                });
            }
        });
        KeySetServer { url, keys, reads }
    }

    fn reads(&self) -> usize {
        self.reads.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test]
async fn a_key_the_provider_adds_at_its_jwks_url_works_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let rsa = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"];
    let (first_private, first_public) = key_pair(dir.path(), "first", &rsa);
    let (next_private, next_public) = key_pair(dir.path(), "next", &rsa);
    let first_jwk = rsa_jwk(dir.path(), "first", &first_public);
    let next_jwk = rsa_jwk(dir.path(), "next", &next_public);
    let idp = KeySetServer::start(json!({"keys": [first_jwk.clone()]})).await;

    let w = start(JwtConfig {
        jwks_url: Some(idp.url.clone()),
        ..jwt_config()
    })
    .await;
    let signed = |kid: &str, pem: &str| {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_owned());
        let key = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
        jsonwebtoken::encode(&header, &claims(json!({})), &key).unwrap()
    };

    // Read once, before the gateway listened: the current key works from the first request.
    assert_eq!(idp.reads(), 1);
    let (status, me) = whoami(&w, &signed("first", &first_private)).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(idp.reads(), 1, "a known kid needs no read");

    // The provider adds its next key; the first token naming it makes the gateway read again.
    *idp.keys.lock().unwrap() = json!({"keys": [first_jwk, next_jwk]});
    let (status, me) = whoami(&w, &signed("next", &next_private)).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(idp.reads(), 2);

    // A made-up kid right after is refused without asking the provider again.
    let (status, problem) = whoami(&w, &signed("made-up", &next_private)).await;
    assert_eq!(status, 401, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("no configured key"),
        "{problem}"
    );
    assert_eq!(idp.reads(), 2, "unknown kids are rate limited");

    // The first key, still listed in the set read again, still works.
    let (status, _) = whoami(&w, &signed("first", &first_private)).await;
    assert_eq!(status, 200);
}

/// MCP clients find where to get a token: a 401 on `/mcp` points to the protected-resource
/// metadata (RFC 9728), which names the token issuer; a token from it then works on `/mcp`.
#[tokio::test]
async fn mcp_clients_are_told_where_tokens_come_from() {
    let w = start(JwtConfig {
        hs256_secret: Some(SECRET.into()),
        ..jwt_config()
    })
    .await;
    let http = reqwest::Client::new();
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let refused = http
        .post(format!("{}/mcp", w.api))
        .header("accept", "application/json, text/event-stream")
        .json(&list)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let challenge = refused.headers()["www-authenticate"].to_str().unwrap();
    let metadata_url = format!("{}/.well-known/oauth-protected-resource/mcp", w.api);
    assert!(
        challenge.contains(&format!("resource_metadata=\"{metadata_url}\"")),
        "{challenge}"
    );
    let metadata: Value = http
        .get(&metadata_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["resource"], format!("{}/mcp", w.api));
    assert_eq!(metadata["authorization_servers"], json!([ISSUER]));

    let token = hs256(&claims(json!({})), SECRET);
    wharf_testkit::wait_for_tool_at(&w.client_with(&token), "demo.echo").await;
    let listed = http
        .post(format!("{}/mcp", w.api))
        .bearer_auth(&token)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .json(&list)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let body = listed.text().await.unwrap();
    assert!(body.contains("demo.echo"), "{body}");
    w.shutdown().await;
}
