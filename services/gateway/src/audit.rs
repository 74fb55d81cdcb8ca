//! The audit log: every state-changing call (submit, cancel, replay, key changes, over HTTP or
//! the WebSocket) and every refused caller (401, 403) becomes an [`AuditEntry`], appended to a
//! JSON Lines file and to the `audit_events` table.
//!
//! Entries are written by one task in batches, in the order they were made: each batch is
//! appended to the file and synced, then inserted. A file line may be encrypted with
//! AES-256-GCM (`enc:v1:` + base64 of a random 96-bit nonce and the sealed JSON); `wharf audit
//! --file` reads both kinds.

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::{Json, body::Body};
use base64::Engine;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use uuid::Uuid;
use wharf_contract::{AuditEntry, AuditList, ErrorCode, Permission, valid_name};
use wharf_contract::{NAME_RULE, rules};
use wharf_store::Store;

use crate::AppState;
use crate::auth::Principal;
use crate::http::{Page, QueryParams, query_error};
use crate::problem::{ApiError, Refusal};

/// `[gateway.audit]`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// JSON Lines file the entries are appended to (created with mode 0600); none when absent.
    pub file: Option<PathBuf>,
    /// Base64 of 32 random bytes: each line of the file is then AES-256-GCM encrypted.
    pub encryption_key: Option<String>,
    /// Also keep the entries in the database, where `GET /api/v1/audit` reads them.
    pub database: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            file: None,
            encryption_key: None,
            database: true,
        }
    }
}

impl std::fmt::Debug for AuditConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditConfig")
            .field("file", &self.file)
            .field(
                "encryption_key",
                &self.encryption_key.as_ref().map(|_| "<redacted>"),
            )
            .field("database", &self.database)
            .finish()
    }
}

/// Where entries go. Cloned into every request; recording waits only when the writer is
/// thousands of entries behind.
#[derive(Clone, Debug)]
pub struct Audit {
    tx: Option<mpsc::Sender<AuditEntry>>,
}

/// How long a batch that is not full waits for more entries before it is written.
const GATHER: std::time::Duration = std::time::Duration::from_millis(20);

/// Prefix of an encrypted line, naming the format.
pub const ENCRYPTED_PREFIX: &str = "enc:v1:";
/// Authenticated data of every sealed line, so a sealed blob of another format never opens.
const AAD: &[u8] = b"wharf-audit-v1";

/// Reads an `encryption_key` (base64 of 32 bytes).
pub fn cipher(key_b64: &str) -> Result<LessSafeKey, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key_b64.trim())
        .map_err(|e| format!("the audit key is not base64: {e}"))?;
    let key = UnboundKey::new(&AES_256_GCM, &bytes)
        .map_err(|_| format!("the audit key must be 32 bytes, not {}", bytes.len()))?;
    Ok(LessSafeKey::new(key))
}

/// One line of the file: the entry's JSON, sealed when a key is given.
pub fn seal_line(entry: &AuditEntry, key: Option<&LessSafeKey>) -> String {
    let json = serde_json::to_string(entry).expect("an audit entry serialises");
    let Some(key) = key else { return json };
    let nonce_bytes: [u8; NONCE_LEN] = rand::random();
    let mut sealed = json.into_bytes();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce_bytes),
        Aad::from(AAD),
        &mut sealed,
    )
    .expect("sealing an audit line cannot fail");
    let mut blob = nonce_bytes.to_vec();
    blob.extend_from_slice(&sealed);
    format!(
        "{ENCRYPTED_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(blob)
    )
}

/// The entry of one line of the file, opening it with `key` when it is sealed.
pub fn open_line(line: &str, key: Option<&LessSafeKey>) -> Result<AuditEntry, String> {
    let json = match line.strip_prefix(ENCRYPTED_PREFIX) {
        None => line.as_bytes().to_vec(),
        Some(b64) => {
            let key =
                key.ok_or("the line is encrypted: give the key (--key or WHARF_AUDIT_KEY)")?;
            let blob = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("not base64: {e}"))?;
            if blob.len() < NONCE_LEN {
                return Err("too short to be a sealed line".into());
            }
            let (nonce, sealed) = blob.split_at(NONCE_LEN);
            let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "bad nonce")?;
            let mut sealed = sealed.to_vec();
            key.open_in_place(nonce, Aad::from(AAD), &mut sealed)
                .map_err(|_| "it does not open with this key (wrong key, or altered)")?
                .to_vec()
        }
    };
    serde_json::from_slice(&json).map_err(|e| format!("not an audit entry: {e}"))
}

impl Audit {
    /// Starts the writer. Nothing is written anywhere when there is no file and `database` is
    /// off. The writer ends once every [`Audit`] is dropped, after writing what it was given.
    pub async fn start(
        config: &AuditConfig,
        store: Store,
    ) -> Result<(Audit, Option<tokio::task::JoinHandle<()>>), String> {
        let key = config
            .encryption_key
            .as_deref()
            .map(cipher)
            .transpose()
            .map_err(|e| format!("gateway.audit.encryption_key: {e}"))?;
        if key.is_some() && config.file.is_none() {
            return Err("gateway.audit.encryption_key is set but gateway.audit.file is not".into());
        }
        let file = match &config.file {
            None => None,
            Some(path) => {
                let mut options = tokio::fs::OpenOptions::new();
                options.create(true).append(true);
                #[cfg(unix)]
                options.mode(0o600);
                Some(
                    options
                        .open(path)
                        .await
                        .map_err(|e| format!("gateway.audit.file {}: {e}", path.display()))?,
                )
            }
        };
        if file.is_none() && !config.database {
            return Ok((Audit { tx: None }, None));
        }
        let store = config.database.then_some(store);
        let (tx, rx) = mpsc::channel(8192);
        let writer = tokio::spawn(write(rx, file, key, store));
        Ok((Audit { tx: Some(tx) }, Some(writer)))
    }

    /// False when entries go nowhere (no file, no database): nothing need be gathered.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    pub async fn record(&self, entry: AuditEntry) {
        if let Some(tx) = &self.tx
            && tx.send(entry).await.is_err()
        {
            tracing::error!("the audit writer has stopped; an entry was lost");
        }
    }
}

async fn write(
    mut rx: mpsc::Receiver<AuditEntry>,
    mut file: Option<tokio::fs::File>,
    key: Option<LessSafeKey>,
    store: Option<Store>,
) {
    let mut batch = Vec::with_capacity(512);
    while rx.recv_many(&mut batch, 512).await > 0 {
        // Group commit: under load, entries come one per request; a batch that is not full
        // waits a little for more, so the file is synced and the table written a few dozen
        // times a second rather than once per request (each is an fsync on Postgres).
        if batch.len() < 512 {
            let more = tokio::time::timeout(GATHER, async {
                loop {
                    let room = 512 - batch.len();
                    if room == 0 || rx.recv_many(&mut batch, room).await == 0 {
                        break;
                    }
                }
            });
            let _ = more.await;
        }
        if let Some(f) = &mut file {
            let mut text = String::new();
            for e in &batch {
                text.push_str(&seal_line(e, key.as_ref()));
                text.push('\n');
            }
            let written = async {
                f.write_all(text.as_bytes()).await?;
                f.flush().await?;
                f.sync_data().await
            };
            if let Err(e) = written.await {
                tracing::error!(error = %e, entries = batch.len(), "cannot append to the audit file");
            }
        }
        if let Some(store) = &store {
            // A database that is down delays the log rather than losing it, for a while.
            let mut delay = std::time::Duration::from_millis(100);
            for attempt in 1..=8 {
                match store.record_audit(&batch).await {
                    Ok(()) => break,
                    Err(e) if attempt == 8 || e.is_refusal() => {
                        tracing::error!(error = %e, entries = batch.len(), "cannot store audit entries");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "audit entries wait for the database");
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                }
            }
        }
        batch.clear();
    }
}

/// The request id `ops::measure` gave the request.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The action a refusal of the caller is recorded as, whatever was asked: over HTTP and over
/// the WebSocket alike.
pub fn refusal_action(code: ErrorCode) -> Option<&'static str> {
    match code {
        ErrorCode::Unauthenticated => Some("auth.unauthenticated"),
        ErrorCode::Forbidden => Some("auth.forbidden"),
        _ => None,
    }
}

/// The name of what a request does, from its method and route; refusals of the caller
/// (`unauthenticated`, `forbidden`) are named as such, whatever was asked.
fn action(method: &Method, route: &str, refused: Option<ErrorCode>) -> String {
    if let Some(name) = refused.and_then(refusal_action) {
        return name.into();
    }
    let named = match (method.as_str(), route) {
        ("POST", "/api/v1/tasks") => "task.submit",
        ("POST", "/api/v1/tasks/batch") => "task.submit_batch",
        ("POST", "/api/v1/tasks/{id}/cancel") => "task.cancel",
        ("POST", "/api/v1/dlq/{id}/replay") => "dlq.replay",
        ("POST", "/api/v1/keys") => "key.create",
        ("DELETE", "/api/v1/keys/{id}") => "key.revoke",
        ("POST", "/api/v1/sessions") => "session.create",
        ("DELETE", "/api/v1/sessions/{id}") => "session.delete",
        ("POST", "/api/v1/agents") => "agent.create",
        ("PUT", "/api/v1/agents/{name}") => "agent.update",
        ("POST", "/api/v1/tools/{name}/call") => "tool.call",
        ("PUT", "/api/v1/config") => "config.update",
        ("POST", "/hooks/{name}") => "hook.receive",
        _ => return format!("{method} {route}"),
    };
    named.into()
}

fn outcome(status: u16) -> &'static str {
    match status {
        0..=399 => "ok",
        401 | 403 => "denied",
        400..=499 => "refused",
        _ => "failed",
    }
}

/// An entry for something `principal` (or an unknown caller) did.
pub fn entry(
    principal: Option<&Principal>,
    action: String,
    status: u16,
    target: String,
    request_id: &str,
    ip: &str,
    detail: Option<String>,
) -> AuditEntry {
    AuditEntry {
        id: Uuid::now_v7(),
        at: chrono::Utc::now(),
        action,
        outcome: outcome(status).into(),
        status,
        actor: principal.map_or_else(|| "unknown".into(), |p| p.actor().to_owned()),
        tenant: principal.map(|p| p.tenant().to_owned()).unwrap_or_default(),
        target,
        request_id: request_id.to_owned(),
        ip: ip.to_owned(),
        detail,
    }
}

/// Records every request that changes something, and every refused caller. Reads that
/// succeed or fail for other reasons, and rate-limited requests (a flood must not flood the
/// log), are not recorded.
pub async fn record_http(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !state.audit.enabled() {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let path = request.uri().path().to_owned();
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    let response: Response<Body> = next.run(request).await;
    let status = response.status().as_u16();
    let reads = method == Method::GET || method == Method::HEAD || method == Method::OPTIONS;
    if status == 429 || (reads && status != 401 && status != 403) {
        return response;
    }
    let target = response
        .headers()
        .get(header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .filter(|_| status < 300)
        .map_or(path, str::to_owned);
    let refusal = response.extensions().get::<Refusal>();
    let entry = entry(
        response.extensions().get::<Principal>(),
        action(&method, &route, refusal.map(|r| r.code)),
        status,
        target,
        &request_id,
        &ip,
        refusal.map(|r| r.detail.clone()),
    );
    state.audit.record(entry).await;
    response
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    action: Option<String>,
    tenant: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /api/v1/audit`: the caller's tenant's entries, newest first. With `tenants:admin`,
/// `?tenant=` another's, or `?tenant=*` every entry, those of callers that did not
/// authenticate (no tenant) included.
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    query: QueryParams<AuditQuery>,
) -> Result<Json<AuditList>, ApiError> {
    principal.require(Permission::AuditRead)?;
    let q = query.read()?;
    let tenant = match q.tenant {
        Some(t) if t == "*" => {
            principal.require(Permission::TenantsAdmin)?;
            None
        }
        Some(t) if t != principal.tenant() => {
            if !valid_name(&t) {
                return Err(query_error("tenant", NAME_RULE));
            }
            principal.require(Permission::TenantsAdmin)?;
            Some(t)
        }
        _ => Some(principal.tenant().to_owned()),
    };
    let page = Page::<Uuid>::read(q.limit.as_deref(), q.cursor.as_deref(), rules::AUDIT_PAGE)?;
    let mut entries = state
        .store
        .audit(&wharf_store::AuditFilter {
            tenant,
            action: q.action,
            before: page.after,
            limit: page.limit + 1,
        })
        .await?;
    let next_cursor = page.close(&mut entries, |e| Some(e.id.to_string()));
    Ok(Json(AuditList {
        entries,
        next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AuditEntry {
        entry(
            None,
            "auth.unauthenticated".into(),
            401,
            "/api/v1/tasks".into(),
            "r1",
            "127.0.0.1",
            Some("the API key is not known".into()),
        )
    }

    #[test]
    fn sealed_lines_open_only_with_their_key() {
        let key_b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let key = cipher(&key_b64).unwrap();
        let e = sample();
        let line = seal_line(&e, Some(&key));
        assert!(line.starts_with(ENCRYPTED_PREFIX));
        assert!(
            !line.contains("unauthenticated"),
            "the content is not readable: {line}"
        );
        assert_ne!(
            line,
            seal_line(&e, Some(&key)),
            "each line has its own nonce"
        );
        assert_eq!(open_line(&line, Some(&key)).unwrap(), e);
        let other = cipher(&base64::engine::general_purpose::STANDARD.encode([8u8; 32])).unwrap();
        assert!(open_line(&line, Some(&other)).is_err());
        assert!(open_line(&line, None).is_err());
        // One flipped character anywhere in the sealed part is detected.
        let mut altered = line.clone().into_bytes();
        let i = altered.len() - 5;
        altered[i] = if altered[i] == b'A' { b'B' } else { b'A' };
        assert!(open_line(std::str::from_utf8(&altered).unwrap(), Some(&key)).is_err());
        // Plain lines read without a key.
        assert_eq!(open_line(&seal_line(&e, None), None).unwrap(), e);
        assert!(
            cipher("c2hvcnQ=").is_err(),
            "a key of the wrong length is refused"
        );
    }

    #[test]
    fn actions_are_named() {
        assert_eq!(action(&Method::POST, "/api/v1/tasks", None), "task.submit");
        assert_eq!(
            action(&Method::DELETE, "/api/v1/keys/{id}", None),
            "key.revoke"
        );
        assert_eq!(
            action(
                &Method::GET,
                "/api/v1/tasks",
                Some(ErrorCode::Unauthenticated)
            ),
            "auth.unauthenticated"
        );
        // A 403 that is not about the caller's permissions keeps the request's name.
        assert_eq!(
            action(
                &Method::POST,
                "/api/v1/tasks",
                Some(ErrorCode::ToolNotAllowed)
            ),
            "task.submit"
        );
        assert_eq!(outcome(202), "ok");
        assert_eq!(outcome(422), "refused");
        assert_eq!(outcome(503), "failed");
    }
}
