//! Sessions and agents: the gateway's own resources, one row each.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use serde_json::Value;
use uuid::Uuid;
use wharf_contract::{Agent, AgentSpec, Session};
use wharf_entity::{agent, session};

use crate::{Error, Store};

fn session_of(m: session::Model) -> Session {
    Session {
        id: m.id,
        tenant: m.tenant,
        name: m.name,
        created_at: m.created_at,
        expires_at: m.expires_at,
        created_by: m.created_by,
        metadata: m.metadata.as_object().cloned().unwrap_or_default(),
        deleted_at: m.deleted_at,
    }
}

fn agent_of(m: agent::Model) -> Result<Agent, Error> {
    let spec: AgentSpec = serde_json::from_value(m.spec)
        .map_err(|e| Error::Corrupt(format!("agent {}/{}: {e}", m.tenant, m.name)))?;
    Ok(Agent {
        name: m.name,
        tenant: m.tenant,
        description: spec.description,
        allowed_tools: spec.allowed_tools,
        default_queue: spec.default_queue,
        priority: spec.priority,
        max_attempts: spec.max_attempts,
        timeout_secs: spec.timeout_secs,
        metadata: spec.metadata.unwrap_or_default(),
        callback: spec.callback,
        revision: m.revision.max(0) as u32,
        created_at: m.created_at,
        updated_at: m.updated_at,
        updated_by: m.updated_by,
    })
}

/// Whether an agent write creates a new agent or replaces an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentWrite {
    Create,
    Replace,
}

impl Store {
    pub async fn create_session(&self, s: &Session) -> Result<(), Error> {
        session::ActiveModel {
            id: Set(s.id),
            tenant: Set(s.tenant.clone()),
            name: Set(s.name.clone()),
            created_at: Set(s.created_at),
            expires_at: Set(s.expires_at),
            created_by: Set(s.created_by.clone()),
            metadata: Set(Value::Object(s.metadata.clone())),
            deleted_at: Set(None),
        }
        .insert(self.connection())
        .await?;
        Ok(())
    }

    /// Session `id` of `tenant`, deleted or expired or not.
    pub async fn session(&self, tenant: &str, id: Uuid) -> Result<Option<Session>, Error> {
        Ok(session::Entity::find_by_id(id)
            .one(self.connection())
            .await?
            .filter(|m| m.tenant == tenant)
            .map(session_of))
    }

    /// `tenant`'s live sessions (not deleted, not expired), newest first.
    pub async fn sessions(
        &self,
        tenant: &str,
        before: Option<Uuid>,
        limit: u64,
    ) -> Result<Vec<Session>, Error> {
        let mut q = session::Entity::find()
            .filter(session::Column::Tenant.eq(tenant))
            .filter(session::Column::DeletedAt.is_null())
            .filter(session::Column::ExpiresAt.gt(chrono::Utc::now()));
        if let Some(b) = before {
            q = q.filter(session::Column::Id.lt(b));
        }
        Ok(q.order_by_desc(session::Column::Id)
            .limit(limit)
            .all(self.connection())
            .await?
            .into_iter()
            .map(session_of)
            .collect())
    }

    /// Marks session `id` deleted now, once; the session as it is afterwards.
    pub async fn delete_session(&self, tenant: &str, id: Uuid) -> Result<Option<Session>, Error> {
        session::Entity::update_many()
            .col_expr(session::Column::DeletedAt, Expr::value(chrono::Utc::now()))
            .filter(session::Column::Id.eq(id))
            .filter(session::Column::Tenant.eq(tenant))
            .filter(session::Column::DeletedAt.is_null())
            .exec(self.connection())
            .await?;
        self.session(tenant, id).await
    }

    /// Stores agent `name` of `tenant` with `spec`: a new one (`Create`; `None` when the name
    /// is taken) or a new revision of an existing one (`Replace`; `None` when there is none).
    pub async fn write_agent(
        &self,
        tenant: &str,
        name: &str,
        spec: &AgentSpec,
        by: &str,
        mode: AgentWrite,
    ) -> Result<Option<Agent>, Error> {
        let now = chrono::Utc::now();
        let mut stored = spec.clone();
        stored.name = None;
        let json = serde_json::to_value(&stored).expect("a spec serialises");
        let existing = agent::Entity::find_by_id((tenant.to_owned(), name.to_owned()))
            .one(self.connection())
            .await?;
        match (mode, existing) {
            (AgentWrite::Create, Some(_)) | (AgentWrite::Replace, None) => Ok(None),
            (AgentWrite::Create, None) => {
                let row = agent::ActiveModel {
                    tenant: Set(tenant.to_owned()),
                    name: Set(name.to_owned()),
                    spec: Set(json),
                    revision: Set(1),
                    created_at: Set(now),
                    updated_at: Set(now),
                    updated_by: Set(by.to_owned()),
                };
                match row.insert(self.connection()).await {
                    Ok(m) => agent_of(m).map(Some),
                    // Created meanwhile by another request.
                    Err(e) if Error::Db(e.clone()).is_refusal() => Ok(None),
                    Err(e) => Err(e.into()),
                }
            }
            (AgentWrite::Replace, Some(m)) => {
                // Only over the revision read, so two updates racing do not both win.
                let done = agent::Entity::update_many()
                    .col_expr(agent::Column::Spec, Expr::value(json))
                    .col_expr(agent::Column::Revision, Expr::value(m.revision + 1))
                    .col_expr(agent::Column::UpdatedAt, Expr::value(now))
                    .col_expr(agent::Column::UpdatedBy, Expr::value(by.to_owned()))
                    .filter(agent::Column::Tenant.eq(tenant))
                    .filter(agent::Column::Name.eq(name))
                    .filter(agent::Column::Revision.eq(m.revision))
                    .exec(self.connection())
                    .await?;
                if done.rows_affected == 0 {
                    return Err(Error::Conflict(format!(
                        "agent {tenant}/{name} changed while it was being updated; update it again"
                    )));
                }
                self.agent(tenant, name).await
            }
        }
    }

    pub async fn agent(&self, tenant: &str, name: &str) -> Result<Option<Agent>, Error> {
        agent::Entity::find_by_id((tenant.to_owned(), name.to_owned()))
            .one(self.connection())
            .await?
            .map(agent_of)
            .transpose()
    }

    /// `tenant`'s agents by name.
    pub async fn agents(&self, tenant: &str) -> Result<Vec<Agent>, Error> {
        agent::Entity::find()
            .filter(agent::Column::Tenant.eq(tenant))
            .order_by_asc(agent::Column::Name)
            .all(self.connection())
            .await?
            .into_iter()
            .map(agent_of)
            .collect()
    }
}
