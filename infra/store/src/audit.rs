//! The audit log's table: the gateway appends entries in batches and reads a tenant's back.

use sea_orm::{ColumnTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set};
use uuid::Uuid;
use wharf_contract::AuditEntry;
use wharf_entity::audit_event;

use crate::record::{column, text};
use crate::{Error, Store};

/// Filters of `GET /api/v1/audit`.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub tenant: Option<String>,
    pub action: Option<String>,
    /// Only entries older than this id.
    pub before: Option<Uuid>,
    pub limit: u64,
}

impl Store {
    /// Appends entries; an entry already stored (same id) is left as it is.
    pub async fn record_audit(&self, entries: &[AuditEntry]) -> Result<(), Error> {
        if entries.is_empty() {
            return Ok(());
        }
        if self.db.get_database_backend() == DbBackend::Postgres {
            return self.record_audit_postgres(entries).await;
        }
        let rows = entries.iter().map(|e| audit_event::ActiveModel {
            id: Set(e.id),
            at: Set(e.at),
            action: Set(text(&e.action).into_owned()),
            outcome: Set(e.outcome.clone()),
            status: Set(i32::from(e.status)),
            actor: Set(text(&e.actor).into_owned()),
            tenant: Set(e.tenant.clone()),
            target: Set(text(&e.target).into_owned()),
            request_id: Set(text(&e.request_id).into_owned()),
            ip: Set(e.ip.clone()),
            detail: Set(e.detail.as_deref().map(|d| text(d).into_owned())),
        });
        audit_event::Entity::insert_many(rows)
            .on_conflict_do_nothing_on([audit_event::Column::Id])
            .exec_without_returning(self.connection())
            .await?;
        Ok(())
    }

    /// [`Store::record_audit`] on Postgres: one fixed statement taking the columns as arrays
    /// (`unnest`), parsed and planned once per connection, as the projection does. A multi-row
    /// VALUES list of up to 512 entries (eleven parameters each) had Postgres parse and plan
    /// thousands of parameters per batch, and the gateway build them: an entry is written for
    /// every submitted task.
    async fn record_audit_postgres(&self, entries: &[AuditEntry]) -> Result<(), Error> {
        sea_orm::sqlx::query(
            "INSERT INTO audit_events (id, at, action, outcome, status, actor, tenant, target, \
             request_id, ip, detail) SELECT * FROM unnest($1::uuid[], $2::timestamptz[], \
             $3::text[], $4::text[], $5::int4[], $6::text[], $7::text[], $8::text[], $9::text[], \
             $10::text[], $11::text[]) ON CONFLICT (id) DO NOTHING",
        )
        .bind(column(entries, |e| e.id))
        .bind(column(entries, |e| e.at))
        .bind(column(entries, |e| text(&e.action)))
        .bind(column(entries, |e| e.outcome.clone()))
        .bind(column(entries, |e| i32::from(e.status)))
        .bind(column(entries, |e| text(&e.actor)))
        .bind(column(entries, |e| e.tenant.clone()))
        .bind(column(entries, |e| text(&e.target)))
        .bind(column(entries, |e| text(&e.request_id)))
        .bind(column(entries, |e| e.ip.clone()))
        .bind(column(entries, |e| e.detail.as_deref().map(text)))
        .execute(self.db.get_postgres_connection_pool())
        .await
        .map_err(crate::record::sqlx_error)?;
        Ok(())
    }

    /// Entries newest first.
    pub async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, Error> {
        let mut q = audit_event::Entity::find();
        if let Some(t) = &filter.tenant {
            q = q.filter(audit_event::Column::Tenant.eq(t.as_str()));
        }
        if let Some(a) = &filter.action {
            q = q.filter(audit_event::Column::Action.eq(a.as_str()));
        }
        if let Some(before) = filter.before {
            q = q.filter(audit_event::Column::Id.lt(before));
        }
        Ok(q.order_by_desc(audit_event::Column::Id)
            .limit(filter.limit)
            .all(self.connection())
            .await?
            .into_iter()
            .map(|m| AuditEntry {
                id: m.id,
                at: m.at,
                action: m.action,
                outcome: m.outcome,
                status: u16::try_from(m.status).unwrap_or_default(),
                actor: m.actor,
                tenant: m.tenant,
                target: m.target,
                request_id: m.request_id,
                ip: m.ip,
                detail: m.detail,
            })
            .collect())
    }
}
