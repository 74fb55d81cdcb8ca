//! The hooks' part of the runtime settings: the rules a hook keeps to, what is checked against
//! the catalog and the tenant's agents when a change is written, and its secrets kept out of
//! every read of the configuration.

use std::collections::BTreeMap;

use wharf_contract::hooks::{ArgumentSource, Hook};
use wharf_contract::rules::HOOKS;
use wharf_contract::{ErrorCode, NAME_RULE, valid_name};

use crate::AppState;
use crate::problem::ApiError;
use wharf_webhooks::check_secrets;

/// The rules every hook keeps to, whatever the catalog holds: on failure, the path of the
/// setting at fault (`hooks/deploy/secrets/0`) and why.
pub fn validate(hooks: &BTreeMap<String, Hook>) -> Result<(), (String, String)> {
    if hooks.len() as u64 > HOOKS {
        return Err(("hooks".into(), format!("at most {HOOKS} hooks")));
    }
    for (name, hook) in hooks {
        let at = |field: &str| format!("hooks/{name}{field}");
        let bad = |field: &str, why: String| Err((at(field), why));
        if !valid_name(name) {
            return bad("", format!("a hook name {NAME_RULE}"));
        }
        if !valid_name(&hook.tenant) {
            return bad("/tenant", format!("a tenant name {NAME_RULE}"));
        }
        if let Err((field, why)) = check_secrets(&hook.secrets) {
            return bad(&field, why);
        }
        let Some((server, tool)) = hook.tool.split_once('.') else {
            return bad("/tool", "a tool's full name, server.tool".into());
        };
        if !valid_name(server) || tool.is_empty() || hook.tool.chars().count() > 200 {
            return bad(
                "/tool",
                "a tool's full name, server.tool, at most 200 characters".into(),
            );
        }
        for (field, value) in [("/agent", &hook.agent), ("/queue", &hook.queue)] {
            if value.as_deref().is_some_and(|v| !valid_name(v)) {
                return bad(field, format!("a name {NAME_RULE}"));
            }
        }
        for (argument, source) in &hook.arguments {
            if let ArgumentSource::From(pointer) = source
                && !(pointer.is_empty() || pointer.starts_with('/'))
            {
                return bad(
                    &format!("/arguments/{}/from", escape(argument)),
                    "a JSON pointer into the body: \"\" or starting with '/'".into(),
                );
            }
        }
    }
    Ok(())
}

/// What a hook names must exist when the change is written: its tool in the catalog, its agent
/// in its tenant (allowing the tool), and every argument the tool requires must have a source.
/// Only the hooks the change adds or alters are checked: one that was accepted before stays,
/// even while the workers serving its tool are away.
pub async fn check_hooks(
    state: &AppState,
    new: &BTreeMap<String, Hook>,
    current: &BTreeMap<String, Hook>,
) -> Result<(), ApiError> {
    for (name, hook) in new {
        if current.get(name) == Some(hook) {
            continue;
        }
        let at = |field: &str| format!("/config/hooks/{name}{field}");
        let Some(tool) = state.catalog.tool(&hook.tool) else {
            return Err(ApiError::field(
                ErrorCode::InvalidField,
                &at("/tool"),
                format!(
                    "no tool {:?} in the catalog (GET /api/v1/tools); a hook can start only a \
                     tool a worker serves",
                    hook.tool
                ),
            ));
        };
        let missing: Vec<String> = crate::catalog::required_of(&tool.input_schema)
            .into_iter()
            .filter(|r| !hook.arguments.contains_key(r))
            .collect();
        if !missing.is_empty() {
            return Err(ApiError::field(
                ErrorCode::InvalidField,
                &at("/arguments"),
                format!(
                    "{} requires {}, which the hook does not map (from the body or as a value)",
                    hook.tool,
                    missing.join(", ")
                ),
            ));
        }
        if let Some(agent) = &hook.agent {
            let found = state.store.agent(&hook.tenant, agent).await?;
            match found {
                None => {
                    return Err(ApiError::field(
                        ErrorCode::InvalidField,
                        &at("/agent"),
                        format!("no agent {agent:?} in tenant {:?}", hook.tenant),
                    ));
                }
                Some(a) if !a.allows(&hook.tool) => {
                    return Err(ApiError::field(
                        ErrorCode::InvalidField,
                        &at("/agent"),
                        format!("agent {agent:?} does not allow {}", hook.tool),
                    ));
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

/// Every hook's secrets as reads show them.
pub fn redact(hooks: &mut BTreeMap<String, Hook>) {
    for hook in hooks.values_mut() {
        wharf_webhooks::redact_all(&mut hook.secrets);
    }
}

/// Puts back the secrets a client read redacted and sent back unchanged (in any order, so that
/// adding a new secret before an old one keeps the old one). A secret sent in any other form is
/// taken as it is.
pub fn restore_secrets(new: &mut BTreeMap<String, Hook>, current: &BTreeMap<String, Hook>) {
    for (name, hook) in new.iter_mut() {
        if let Some(stored) = current.get(name) {
            wharf_webhooks::restore_redacted(&mut hook.secrets, &stored.secrets);
        }
    }
}

/// A name as one token of a JSON pointer.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(secrets: &[&str]) -> Hook {
        Hook {
            tenant: "acme".into(),
            secrets: secrets.iter().map(|s| (*s).to_owned()).collect(),
            tool: "demo.echo".into(),
            agent: None,
            queue: None,
            priority: None,
            arguments: BTreeMap::new(),
        }
    }

    const OLD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const NEW: &str = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    #[test]
    fn secrets_read_redacted_come_back_whole_in_any_order() {
        let current: BTreeMap<String, Hook> = [("h".to_owned(), hook(&[OLD]))].into();
        let mut read = current.clone();
        redact(&mut read);
        assert!(!read["h"].secrets[0].contains("MfKQ"));
        // Rotation: a new secret first, the old one as it was read.
        let mut new = read.clone();
        new.get_mut("h").unwrap().secrets.insert(0, NEW.into());
        restore_secrets(&mut new, &current);
        assert_eq!(new["h"].secrets, [NEW, OLD]);
        assert!(validate(&new).is_ok());
    }

    #[test]
    fn each_rule_names_the_setting_at_fault() {
        let fault = |h: Hook| validate(&[("h".to_owned(), h)].into()).unwrap_err().0;
        assert_eq!(fault(hook(&[])), "hooks/h/secrets");
        assert_eq!(fault(hook(&[OLD, "whsec_short"])), "hooks/h/secrets/1");
        let mut h = hook(&[OLD]);
        h.tool = "echo".into();
        assert_eq!(fault(h), "hooks/h/tool");
        let mut h = hook(&[OLD]);
        h.arguments
            .insert("a/b".into(), ArgumentSource::From("x".into()));
        assert_eq!(fault(h), "hooks/h/arguments/a~1b/from");
        let mut h = hook(&[OLD]);
        h.tenant = "no such".into();
        assert_eq!(fault(h), "hooks/h/tenant");
    }
}
