//! `/api/v1/agents`: a tenant's named profiles, the tools their tasks may call and the defaults
//! those tasks get.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use wharf_contract::NAME_RULE;
use wharf_contract::rules::{
    AGENT_TOOLS, DESCRIPTION_CHARS, MAX_ATTEMPTS, TIMEOUT_SECS, range_rule, valid_allowed_tool,
};
use wharf_contract::{Agent, AgentList, AgentSpec, ErrorCode, Permission, valid_name};
use wharf_store::AgentWrite;

use crate::AppState;
use crate::auth::Principal;
use crate::http::{JsonBody, NoQuery, QueryParams};
use crate::problem::{ApiError, Segment};

fn no_agent(name: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no agent {name:?}"))
}

/// Checks an agent's spec; `name` is the agent's.
fn check_agent(
    policy: &wharf_webhooks::TargetPolicy,
    name: &str,
    spec: &AgentSpec,
) -> Result<(), ApiError> {
    let bad = |pointer: &str, detail: String| {
        Err(ApiError::field(ErrorCode::InvalidField, pointer, detail))
    };
    if !valid_name(name) {
        return bad("/name", NAME_RULE.into());
    }
    if !AGENT_TOOLS.contains(&(spec.allowed_tools.len() as u64)) {
        return bad(
            "/allowed_tools",
            format!(
                "must list {} to {} tools or patterns",
                AGENT_TOOLS.start(),
                AGENT_TOOLS.end()
            ),
        );
    }
    for (i, pattern) in spec.allowed_tools.iter().enumerate() {
        // The only patterns are `server.*` and `*`: a tool name with other wildcard-looking
        // characters (`demo.>`, `demo.**`, `demo.ec*`) would be taken literally and match
        // nothing, so it is refused rather than stored.
        if !valid_allowed_tool(pattern) {
            return bad(
                &format!("/allowed_tools/{i}"),
                format!(
                    "{pattern:?} is not a tool (server.tool), a server's tools (server.*) or \
                     all tools (*); no other pattern is understood"
                ),
            );
        }
    }
    if let Some(q) = &spec.default_queue
        && !valid_name(q)
    {
        return bad("/default_queue", NAME_RULE.into());
    }
    if let Some(c) = &spec.callback {
        crate::callbacks::check_callback(policy, c).map_err(|(field, why)| {
            ApiError::field(ErrorCode::InvalidField, &format!("/callback{field}"), why)
        })?;
    }
    if spec
        .max_attempts
        .is_some_and(|a| !MAX_ATTEMPTS.contains(&a))
    {
        return bad("/max_attempts", range_rule(&MAX_ATTEMPTS));
    }
    if spec
        .timeout_secs
        .is_some_and(|t| !TIMEOUT_SECS.contains(&t))
    {
        return bad("/timeout_secs", range_rule(&TIMEOUT_SECS));
    }
    if spec
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() as u64 > DESCRIPTION_CHARS)
    {
        return bad(
            "/description",
            format!("must be at most {DESCRIPTION_CHARS} characters"),
        );
    }
    Ok(())
}

/// `POST /api/v1/agents`
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    body: JsonBody,
) -> Result<Response, ApiError> {
    principal.require(Permission::AgentsWrite)?;
    let spec: AgentSpec = body.parse()?;
    let Some(name) = spec.name.clone() else {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "/name",
            "an agent needs a name",
        ));
    };
    check_agent(&state.config.callback_policy, &name, &spec)?;
    let Some(agent) = state
        .store
        .write_agent(
            principal.tenant(),
            &name,
            &spec,
            principal.actor(),
            AgentWrite::Create,
        )
        .await?
    else {
        return Err(ApiError::field(
            ErrorCode::AgentExists,
            "/name",
            format!("agent {name:?} exists; update it with PUT /api/v1/agents/{name}"),
        ));
    };
    let location = format!("/api/v1/agents/{name}");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(agent),
    )
        .into_response())
}

/// `PUT /api/v1/agents/{name}`: a new revision with this spec.
pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    Segment(name): Segment,
    body: JsonBody,
) -> Result<Json<Agent>, ApiError> {
    principal.require(Permission::AgentsWrite)?;
    let spec: AgentSpec = body.parse()?;
    if spec.name.as_ref().is_some_and(|n| *n != name) {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "/name",
            "differs from the name in the path; an agent cannot be renamed",
        ));
    }
    if !valid_name(&name) {
        return Err(no_agent(&name));
    }
    check_agent(&state.config.callback_policy, &name, &spec)?;
    state
        .store
        .write_agent(
            principal.tenant(),
            &name,
            &spec,
            principal.actor(),
            AgentWrite::Replace,
        )
        .await?
        .map(Json)
        .ok_or_else(|| no_agent(&name))
}

/// `GET /api/v1/agents`
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    query: QueryParams<NoQuery>,
) -> Result<Json<AgentList>, ApiError> {
    principal.require(Permission::AgentsRead)?;
    query.read()?;
    Ok(Json(AgentList {
        agents: state.store.agents(principal.tenant()).await?,
    }))
}

/// `GET /api/v1/agents/{name}`
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Segment(name): Segment,
) -> Result<Json<Agent>, ApiError> {
    principal.require(Permission::AgentsRead)?;
    if !valid_name(&name) {
        return Err(no_agent(&name));
    }
    state
        .store
        .agent(principal.tenant(), &name)
        .await?
        .map(Json)
        .ok_or_else(|| no_agent(&name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_specs_are_checked() {
        let spec = |tools: &[&str]| AgentSpec {
            allowed_tools: tools.iter().map(|t| (*t).to_owned()).collect(),
            ..AgentSpec::default()
        };
        assert!(
            check_agent(
                &Default::default(),
                "helper",
                &spec(&["demo.*", "x.y", "*"])
            )
            .is_ok()
        );
        for bad in [&[][..], &["demo"][..], &["de mo.*"][..], &["demo."][..]] {
            assert!(
                check_agent(&Default::default(), "helper", &spec(bad)).is_err(),
                "{bad:?}"
            );
        }
        assert!(check_agent(&Default::default(), "no.dots", &spec(&["*"])).is_err());
    }
}
