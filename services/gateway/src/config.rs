//! `/api/v1/config`: the runtime settings (rate limits, queue defaults, the life of sessions,
//! the registry of MCP servers, the inbound webhooks, the tenants' callback settings), changed while the platform runs. Each change is a numbered revision in the database, with
//! who made it and what it changed; a change names the revision it replaces, so two operators
//! cannot overwrite each other unawares. Every gateway applies a new revision as soon as one
//! announces it on NATS, and reads the newest again every half minute, should it miss that. The
//! registry of MCP servers goes on to workers through the `wharf_registry` bucket, which every
//! gateway brings up to the revision it has applied.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use futures::StreamExt;
use serde::Deserialize;
use wharf_contract::rules::{
    MAX_ATTEMPTS, REGISTRY_SERVERS, RETRY_MS, SESSION_TTL_SECS, TIMEOUT_SECS, URL_BYTES, range_rule,
};
use wharf_contract::{
    ConfigHistory, ConfigRevision, ConfigView, ErrorCode, MCP_REGISTRY_VERSION, McpRegistry,
    Permission, RuntimeConfig, UpdateConfig, valid_name,
};
use wharf_contract::{NAME_RULE, rules};

use wharf_bus::Published;

use crate::auth::Principal;
use crate::http::{JsonBody, Page, QueryParams};
use crate::problem::ApiError;
use crate::{AppState, Settings};

/// How often a gateway reads the newest revision, whatever it heard.
const RECHECK_EVERY: Duration = Duration::from_secs(30);

fn view(s: &Settings) -> ConfigView {
    ConfigView {
        revision: s.revision,
        config: redacted(&s.runtime),
        updated_at: s.updated_at,
        updated_by: s.updated_by.clone(),
    }
}

/// The settings as reads show them: a registry server's URL without its secrets (a user part
/// is refused, but a query may carry a token: its values read `***`). Workers get the whole
/// URL through NATS.
fn redacted(c: &RuntimeConfig) -> RuntimeConfig {
    let mut c = c.clone();
    for server in c.mcp_servers.values_mut() {
        server.url = wharf_bus::redact_url(&server.url);
    }
    crate::hooks::redact(&mut c.hooks);
    crate::callbacks::redact(&mut c.callbacks);
    c
}

/// Puts back the secrets of registry URLs a client read redacted and sent back unchanged, so
/// that reading the configuration, changing one setting and writing it whole keeps them. A URL
/// sent in any other form is taken as it is.
fn restore_secrets(new: &mut RuntimeConfig, current: &RuntimeConfig) {
    for (name, server) in &mut new.mcp_servers {
        if let Some(stored) = current.mcp_servers.get(name)
            && server.url != stored.url
            && server.url == wharf_bus::redact_url(&stored.url)
        {
            server.url.clone_from(&stored.url);
        }
    }
    crate::hooks::restore_secrets(&mut new.hooks, &current.hooks);
    crate::callbacks::restore_secrets(&mut new.callbacks, &current.callbacks);
}

/// `GET /api/v1/config`
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<ConfigView>, ApiError> {
    principal.require(Permission::ConfigRead)?;
    Ok(Json(view(&state.settings())))
}

/// Checks runtime settings; errors point into the `PUT` body (`/config/...`).
fn check(c: &RuntimeConfig) -> Result<(), ApiError> {
    validate(c).map_err(|(path, why)| {
        ApiError::field(ErrorCode::InvalidField, &format!("/config/{path}"), why)
    })
}

/// The rules runtime settings keep to, whether they come from the configuration file
/// (revision 0) or a `PUT`: on failure, the path of the setting at fault (`queues/emails/
/// max_attempts`) and why.
pub fn validate(c: &RuntimeConfig) -> Result<(), (String, String)> {
    let bad = |path: String, why: &str| Err((path, why.to_owned()));
    for (name, q) in &c.queues {
        let at = |field: &str| format!("queues/{name}{field}");
        if !valid_name(name) {
            return bad(at(""), &format!("a queue name {NAME_RULE}"));
        }
        if q.max_attempts.is_some_and(|a| !MAX_ATTEMPTS.contains(&a)) {
            return bad(at("/max_attempts"), &range_rule(&MAX_ATTEMPTS));
        }
        if q.timeout_secs.is_some_and(|t| !TIMEOUT_SECS.contains(&t)) {
            return bad(at("/timeout_secs"), &range_rule(&TIMEOUT_SECS));
        }
        for (field, value) in [
            ("/retry_initial_ms", q.retry_initial_ms),
            ("/retry_max_ms", q.retry_max_ms),
        ] {
            if value.is_some_and(|v| !RETRY_MS.contains(&v)) {
                return bad(at(field), &range_rule(&RETRY_MS));
            }
        }
        // The one rule no schema states: the first delay is at most the longest (its default
        // when left out).
        if let Some(r) = crate::QueueDefaults::from_settings(q).retry
            && r.max_ms < r.initial_ms
        {
            return bad(
                at("/retry_initial_ms"),
                &format!("must be at most the longest retry delay ({} ms)", r.max_ms),
            );
        }
    }
    if c.mcp_servers.len() as u64 > REGISTRY_SERVERS {
        return bad(
            "mcp_servers".into(),
            &format!("at most {REGISTRY_SERVERS} servers"),
        );
    }
    for (name, server) in &c.mcp_servers {
        let at = |field: &str| format!("mcp_servers/{name}{field}");
        if !valid_name(name) {
            return bad(at(""), &format!("a server name {NAME_RULE}"));
        }
        if let Err(why) = check_url(&server.url) {
            return bad(at("/url"), &why);
        }
        if let Some(i) = server.queues.iter().position(|q| !valid_name(q)) {
            return bad(
                at(&format!("/queues/{i}")),
                &format!("a queue name {NAME_RULE}"),
            );
        }
    }
    crate::hooks::validate(&c.hooks)?;
    crate::callbacks::validate(&c.callbacks)?;
    if let Err((name, why)) = crate::limits::validate(&c.limits) {
        return bad(name.replace('.', "/"), &why);
    }
    if !SESSION_TTL_SECS.contains(&c.session_ttl_secs) {
        return bad("session_ttl_secs".into(), &range_rule(&SESSION_TTL_SECS));
    }
    Ok(())
}

/// A registry server's URL: absolute `http` or `https` with a host, at most 2,048 bytes, and no
/// credentials in it (they would be shown to every `config:read` caller and kept in history).
fn check_url(url: &str) -> Result<(), String> {
    if url.len() as u64 > URL_BYTES {
        return Err(format!("at most {URL_BYTES} bytes"));
    }
    let uri: axum::http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("must be an http:// or https:// URL (streamable HTTP)".into()),
    }
    let Some(authority) = uri.authority() else {
        return Err("must name a host".into());
    };
    if authority.as_str().contains('@') {
        return Err("must not hold credentials".into());
    }
    if authority.host().is_empty() {
        return Err("must name a host".into());
    }
    Ok(())
}

/// `PUT /api/v1/config`: the whole new settings, replacing revision `revision`.
pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    body: JsonBody,
) -> Result<Json<ConfigView>, ApiError> {
    principal.require(Permission::ConfigWrite)?;
    let mut req: UpdateConfig = body.parse()?;
    // The newest stored revision, not only this gateway's view of it.
    load_latest(&state).await;
    let current = state.settings();
    restore_secrets(&mut req.config, &current.runtime);
    check(&req.config)?;
    // A new registry name must not shadow a server a worker has in its file: removing it
    // later would take that server's tools out of the catalog.
    if let Some(name) = req.config.mcp_servers.keys().find(|n| {
        !current.runtime.mcp_servers.contains_key(*n) && state.catalog.served_from_file(n)
    }) {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            &format!("/config/mcp_servers/{name}"),
            "a worker serves an MCP server of this name from its configuration file; \
             give the registry server another name",
        ));
    }
    crate::hooks::check_hooks(&state, &req.config.hooks, &current.runtime.hooks).await?;
    crate::callbacks::check_defaults(&state, &req.config.callbacks)?;
    let conflict = || {
        ApiError::field(
            ErrorCode::ConfigConflict,
            "/revision",
            format!(
                "the configuration is at revision {} now, not {}; read it again and reapply \
                 your change",
                state.settings().revision,
                req.revision
            ),
        )
    };
    if req.revision != current.revision {
        return Err(conflict());
    }
    let revision = ConfigRevision {
        revision: current.revision + 1,
        at: chrono::Utc::now(),
        by: principal.actor().to_owned(),
        changed: req.config.changes_from(&current.runtime),
        config: req.config,
    };
    if !state.store.add_config_revision(&revision).await? {
        // Another gateway stored this number first.
        load_latest(&state).await;
        return Err(conflict());
    }
    tracing::info!(revision = revision.revision, by = %revision.by, changed = ?revision.changed, "configuration changed");
    let number = revision.revision;
    let removed: Vec<String> = current
        .runtime
        .mcp_servers
        .keys()
        .filter(|name| !revision.config.mcp_servers.contains_key(*name))
        .cloned()
        .collect();
    apply(&state, revision);
    if let Err(e) = state
        .bus
        .announce(&wharf_bus::CONFIG_CHANGED, &number)
        .await
    {
        tracing::warn!(error = %e, "other gateways apply the change at their next check");
    }
    publish_registry(&state).await;
    // Workers stop serving a removed server; its tools leave the catalog now.
    for name in removed {
        if let Err(e) = state.bus.withdraw_registry_tools(&name).await {
            tracing::warn!(server = %name, error = %e, "cannot withdraw a removed server's tools");
        }
    }
    Ok(Json(view(&state.settings())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevisionsQuery {
    limit: Option<String>,
}

/// `GET /api/v1/config/revisions`: the changes, newest first.
pub async fn revisions(
    State(state): State<AppState>,
    principal: Principal,
    query: QueryParams<RevisionsQuery>,
) -> Result<Json<ConfigHistory>, ApiError> {
    principal.require(Permission::ConfigRead)?;
    let q = query.read()?;
    let page = Page::<u64>::read(q.limit.as_deref(), None, rules::CONFIG_PAGE)?;
    let mut revisions = state.store.config_revisions(page.limit).await?;
    for r in &mut revisions {
        r.config = redacted(&r.config);
    }
    Ok(Json(ConfigHistory { revisions }))
}

fn apply(state: &AppState, r: ConfigRevision) {
    let n = r.revision;
    let mut next = Settings::new(n, r.config, Some(r.at), Some(r.by));
    // Allowances and tenant counts carry over unless the limits themselves changed.
    let current = state.settings();
    if current.runtime.limits == next.runtime.limits {
        next.limits = current.limits.clone();
    }
    if state.replace_settings(next) {
        tracing::debug!(revision = n, "runtime configuration applied");
    }
}

/// Brings the registry workers read up to the revision in force here (nothing to do when it
/// is there already, or a newer one is).
async fn publish_registry(state: &AppState) {
    let settings = state.settings();
    if settings.revision == 0 {
        return;
    }
    let registry = McpRegistry {
        v: MCP_REGISTRY_VERSION,
        revision: settings.revision,
        servers: settings.runtime.mcp_servers.clone(),
    };
    match state.bus.publish_registry(&registry).await {
        Ok(Published::Written) => tracing::info!(
            revision = registry.revision,
            servers = registry.servers.len(),
            "mcp registry published"
        ),
        Ok(Published::Current) => {}
        Ok(Published::Ahead(there)) => tracing::error!(
            revision = registry.revision,
            there,
            "the mcp registry in NATS is of a later configuration revision than the database's \
             newest: workers follow that one. If the database was restored or replaced, delete \
             the key (nats kv del wharf_registry mcp_servers) and gateways write it again"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "cannot publish the mcp registry; trying again in 30 s")
        }
    }
}

/// Applies the newest stored revision, if it is newer than the one in force.
pub async fn load_latest(state: &AppState) {
    match state.store.config_revisions(1).await {
        Ok(mut newest) => {
            if let Some(r) = newest.pop()
                && r.revision > state.settings().revision
            {
                apply(state, r);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the runtime configuration"),
    }
}

/// Applies revisions as gateways announce them, and every [`RECHECK_EVERY`], until the gateway
/// stops.
pub async fn follow_changes(state: AppState) {
    let announced = match state.bus.announcements(&wharf_bus::CONFIG_CHANGED).await {
        Ok(a) => a.boxed(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot follow configuration changes; checking every 30 s");
            futures::stream::pending().boxed()
        }
    };
    let mut announced = announced;
    let mut every = tokio::time::interval(RECHECK_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            Some(n) = announced.next() => {
                if n > state.settings().revision {
                    load_latest(&state).await;
                }
            }
            _ = every.tick() => {
                load_latest(&state).await;
                publish_registry(&state).await;
            }
            () = state.stopping.cancelled() => return,
        }
    }
}
