//! Callback deliveries: the projection records each event a callback asks for, with the batch
//! it comes in (`Store::record_batch`); the recorder's dispatcher takes the due ones in order
//! per task and writes each attempt; the gateway reads the log and asks for redeliveries. The
//! table is the deliveries' durable queue: a dispatcher that dies leaves its deliveries to the
//! next one.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    TransactionTrait,
};
use serde_json::Value;
use uuid::Uuid;
use wharf_contract::{Delivery, DeliveryAttempt, DeliveryStatus};
use wharf_entity::{callback_attempt, callback_delivery};

use crate::record::{column, json, jsonb, text};

/// The `event` of a delivery for a task's start.
const STARTED: &str = "started";
use crate::{Error, Store};

/// A delivery to record.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: String,
    pub task_id: Uuid,
    pub tenant: String,
    pub seq: u64,
    pub event: String,
    pub url: String,
    pub cloudevents: bool,
    pub body: Value,
    pub retry_until: DateTime<Utc>,
}

/// A delivery the dispatcher took: what to send, and where.
#[derive(Debug, Clone)]
pub struct Due {
    pub id: String,
    pub task_id: Uuid,
    pub tenant: String,
    pub url: String,
    pub cloudevents: bool,
    pub body: Value,
    pub attempts: u32,
    pub retry_until: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// What an attempt made of its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    /// Try again at this time.
    RetryAt(DateTime<Utc>),
    Failed,
}

/// A new delivery's row: pending, due at once. Its body as the database can store it (a NUL
/// becomes U+FFFD, as in the events), so that a delivery never fails the batch it is written with.
pub(crate) fn delivery_row(d: &NewDelivery, now: DateTime<Utc>) -> callback_delivery::ActiveModel {
    callback_delivery::ActiveModel {
        id: Set(d.id.clone()),
        task_id: Set(d.task_id),
        tenant: Set(d.tenant.clone()),
        seq: Set(d.seq as i64),
        event: Set(d.event.clone()),
        url: Set(d.url.clone()),
        cloudevents: Set(d.cloudevents),
        body: Set(json(&d.body)),
        status: Set(DeliveryStatus::Pending.as_str().into()),
        attempts: Set(0),
        next_attempt_at: Set(Some(now)),
        retry_until: Set(d.retry_until),
        last_status: Set(None),
        last_error: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    }
}

/// The deliveries of a batch on Postgres, in the projection's own transaction: one fixed
/// statement taking the columns as arrays (`unnest`), as the events and task rows are written;
/// a delivery already there is left as it is. Nothing is sent for a batch without any.
pub(crate) async fn insert_deliveries_postgres(
    tx: &mut sea_orm::sqlx::Transaction<'static, sea_orm::sqlx::Postgres>,
    deliveries: &[NewDelivery],
    now: DateTime<Utc>,
) -> Result<(), Error> {
    if deliveries.is_empty() {
        return Ok(());
    }
    sea_orm::sqlx::query(
        "INSERT INTO callback_deliveries (id, task_id, tenant, seq, event, url, cloudevents, \
         body, retry_until, status, attempts, next_attempt_at, created_at, updated_at) \
         SELECT d.*, $10, 0, $11, $11, $11 FROM unnest($1::text[], $2::uuid[], $3::text[], \
         $4::int8[], $5::text[], $6::text[], $7::bool[], $8::jsonb[], $9::timestamptz[]) AS d \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(column(deliveries, |d| d.id.clone()))
    .bind(column(deliveries, |d| d.task_id))
    .bind(column(deliveries, |d| d.tenant.clone()))
    .bind(column(deliveries, |d| d.seq as i64))
    .bind(column(deliveries, |d| d.event.clone()))
    .bind(column(deliveries, |d| d.url.clone()))
    .bind(column(deliveries, |d| d.cloudevents))
    .bind(column(deliveries, |d| jsonb(&d.body)))
    .bind(column(deliveries, |d| d.retry_until))
    .bind(DeliveryStatus::Pending.as_str())
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(crate::record::sqlx_error)?;
    Ok(())
}

fn delivery_of(m: callback_delivery::Model) -> Delivery {
    Delivery {
        status: DeliveryStatus::parse(&m.status).unwrap_or(DeliveryStatus::Pending),
        next_attempt_at: m.next_attempt_at.filter(|_| m.status == "pending"),
        id: m.id,
        task_id: m.task_id,
        tenant: m.tenant,
        event: m.event,
        seq: m.seq.max(0) as u64,
        url: m.url,
        attempts: m.attempts.max(0) as u32,
        retry_until: m.retry_until,
        created_at: m.created_at,
        updated_at: m.updated_at,
        log: Vec::new(),
        last_status: m.last_status.and_then(|s| u16::try_from(s).ok()),
        last_error: m.last_error,
    }
}

impl Store {
    /// Pending deliveries due at `now`, up to `limit`, each the first pending one of its task
    /// (a task's deliveries go out in order: a later event waits for the earlier ones).
    pub async fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<(Due, DateTime<Utc>)>, Error> {
        use callback_delivery::Column as C;
        use sea_orm::sea_query::{Alias, ExprTrait, Query};
        // One statement: no earlier pending delivery of the same task may exist. A start
        // reported with a later event shares that event's sequence and goes first.
        let earlier = Alias::new("earlier");
        let pending = DeliveryStatus::Pending.as_str();
        let this = callback_delivery::Entity;
        let before = Query::select()
            .expr(Expr::val(1))
            .from_as(callback_delivery::Entity, earlier.clone())
            .and_where(Expr::col((earlier.clone(), C::TaskId)).equals((this, C::TaskId)))
            .and_where(Expr::col((earlier.clone(), C::Status)).eq(pending))
            .and_where(
                Expr::col((earlier.clone(), C::Seq))
                    .lt(Expr::col((this, C::Seq)))
                    .or(Expr::col((earlier.clone(), C::Seq))
                        .eq(Expr::col((this, C::Seq)))
                        .and(Expr::col((earlier, C::Event)).eq(STARTED))
                        .and(Expr::col((this, C::Event)).ne(STARTED))),
            )
            .to_owned();
        let rows = callback_delivery::Entity::find()
            .filter(C::Status.eq(pending))
            .filter(C::NextAttemptAt.lte(now))
            .filter(Expr::not_exists(before))
            .order_by_asc(C::NextAttemptAt)
            .limit(limit)
            .all(self.connection())
            .await?;
        Ok(rows
            .into_iter()
            .map(|m| {
                let seen = m.next_attempt_at.unwrap_or(now);
                let due = Due {
                    id: m.id,
                    task_id: m.task_id,
                    tenant: m.tenant,
                    url: m.url,
                    cloudevents: m.cloudevents,
                    body: m.body,
                    attempts: Ord::max(m.attempts, 0) as u32,
                    retry_until: m.retry_until,
                    created_at: m.created_at,
                };
                (due, seen)
            })
            .collect())
    }

    /// Takes a due delivery for one attempt, until `lease_until`: `false` when another
    /// dispatcher took it first (its due time changed). A dispatcher that dies holding it
    /// leaves it due again when the lease ends.
    pub async fn claim_delivery(
        &self,
        id: &str,
        seen: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<bool, Error> {
        use callback_delivery::Column as C;
        let updated = callback_delivery::Entity::update_many()
            .col_expr(C::NextAttemptAt, Expr::value(lease_until))
            .filter(C::Id.eq(id))
            .filter(C::Status.eq(DeliveryStatus::Pending.as_str()))
            .filter(C::NextAttemptAt.eq(seen))
            .exec(self.connection())
            .await?;
        Ok(updated.rows_affected == 1)
    }

    /// Writes one attempt and what it made of its delivery, together.
    pub async fn finish_attempt(
        &self,
        id: &str,
        attempt: &DeliveryAttempt,
        outcome: AttemptOutcome,
    ) -> Result<(), Error> {
        use callback_delivery::Column as C;
        let tx = self.connection().begin().await?;
        callback_attempt::Entity::insert(callback_attempt::ActiveModel {
            delivery_id: Set(id.to_owned()),
            attempt: Set(attempt.attempt as i32),
            at: Set(attempt.at),
            status: Set(attempt.status.map(i32::from)),
            error: Set(attempt.error.as_deref().map(|e| text(e).into_owned())),
            latency_ms: Set(attempt.latency_ms as i64),
        })
        .on_conflict_do_nothing_on([
            callback_attempt::Column::DeliveryId,
            callback_attempt::Column::Attempt,
        ])
        .exec_without_returning(&tx)
        .await?;
        let (status, next) = match outcome {
            AttemptOutcome::Delivered => (DeliveryStatus::Delivered, None),
            AttemptOutcome::RetryAt(at) => (DeliveryStatus::Pending, Some(at)),
            AttemptOutcome::Failed => (DeliveryStatus::Failed, None),
        };
        callback_delivery::Entity::update_many()
            .col_expr(C::Status, Expr::value(status.as_str()))
            .col_expr(C::Attempts, Expr::value(attempt.attempt as i32))
            .col_expr(C::NextAttemptAt, Expr::value(next))
            .col_expr(C::LastStatus, Expr::value(attempt.status.map(i32::from)))
            .col_expr(
                C::LastError,
                Expr::value(attempt.error.as_deref().map(|e| text(e).into_owned())),
            )
            .col_expr(C::UpdatedAt, Expr::value(Utc::now()))
            .filter(C::Id.eq(id))
            .exec(&tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A task's deliveries in order, each with its attempts.
    pub async fn task_deliveries(&self, task_id: Uuid) -> Result<Vec<Delivery>, Error> {
        use callback_delivery::Column as C;
        let rows = callback_delivery::Entity::find()
            .filter(C::TaskId.eq(task_id))
            .order_by_asc(C::Seq)
            // A start reported with a later event shares its sequence: it comes first.
            .order_by(
                sea_orm::sea_query::ExprTrait::ne(Expr::col(C::Event), STARTED),
                sea_orm::Order::Asc,
            )
            .all(self.connection())
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for m in rows {
            let mut d = delivery_of(m);
            d.log = self.attempts_of(&d.id).await?;
            out.push(d);
        }
        Ok(out)
    }

    async fn attempts_of(&self, id: &str) -> Result<Vec<DeliveryAttempt>, Error> {
        Ok(callback_attempt::Entity::find()
            .filter(callback_attempt::Column::DeliveryId.eq(id))
            .order_by_asc(callback_attempt::Column::Attempt)
            .all(self.connection())
            .await?
            .into_iter()
            .map(|a| DeliveryAttempt {
                attempt: a.attempt.max(0) as u32,
                at: a.at,
                status: a.status.and_then(|s| u16::try_from(s).ok()),
                error: a.error,
                latency_ms: a.latency_ms.max(0) as u64,
            })
            .collect())
    }

    /// A tenant's deliveries newest first, of one status if given, older than `before` (a
    /// previous page's last `created_at` and id).
    pub async fn deliveries(
        &self,
        tenant: &str,
        status: Option<DeliveryStatus>,
        before: Option<(DateTime<Utc>, String)>,
        limit: u64,
    ) -> Result<Vec<Delivery>, Error> {
        use callback_delivery::Column as C;
        let mut q = callback_delivery::Entity::find().filter(C::Tenant.eq(tenant));
        if let Some(s) = status {
            q = q.filter(C::Status.eq(s.as_str()));
        }
        if let Some((at, id)) = before {
            q = q.filter(
                sea_orm::Condition::any().add(C::CreatedAt.lt(at)).add(
                    sea_orm::Condition::all()
                        .add(C::CreatedAt.eq(at))
                        .add(C::Id.lt(id)),
                ),
            );
        }
        Ok(q.order_by_desc(C::CreatedAt)
            .order_by_desc(C::Id)
            .limit(limit)
            .all(self.connection())
            .await?
            .into_iter()
            .map(delivery_of)
            .collect())
    }

    /// One of a tenant's deliveries, with its attempts.
    pub async fn delivery(&self, tenant: &str, id: &str) -> Result<Option<Delivery>, Error> {
        let Some(m) = callback_delivery::Entity::find_by_id(id.to_owned())
            .filter(callback_delivery::Column::Tenant.eq(tenant))
            .one(self.connection())
            .await?
        else {
            return Ok(None);
        };
        let mut d = delivery_of(m);
        d.log = self.attempts_of(&d.id).await?;
        Ok(Some(d))
    }

    /// Removes the deliveries that ended (delivered or failed) before `before`, with their
    /// attempts, as the history's retention does for tasks. Returns how many.
    pub async fn prune_deliveries(&self, before: DateTime<Utc>) -> Result<u64, Error> {
        use callback_delivery::Column as C;
        let ended = callback_delivery::Entity::find()
            .select_only()
            .column(C::Id)
            .filter(C::Status.ne(DeliveryStatus::Pending.as_str()))
            .filter(C::UpdatedAt.lt(before))
            .limit(10_000)
            .into_tuple::<String>()
            .all(self.connection())
            .await?;
        if ended.is_empty() {
            return Ok(0);
        }
        let tx = self.connection().begin().await?;
        callback_attempt::Entity::delete_many()
            .filter(callback_attempt::Column::DeliveryId.is_in(ended.clone()))
            .exec(&tx)
            .await?;
        let gone = callback_delivery::Entity::delete_many()
            .filter(C::Id.is_in(ended))
            .exec(&tx)
            .await?;
        tx.commit().await?;
        Ok(gone.rows_affected)
    }

    /// Makes one of a tenant's deliveries due again now, retried until `retry_until`, whatever
    /// its status; `None` when the tenant has no such delivery.
    pub async fn redeliver(
        &self,
        tenant: &str,
        id: &str,
        retry_until: DateTime<Utc>,
    ) -> Result<Option<Delivery>, Error> {
        let Some(m) = callback_delivery::Entity::find_by_id(id.to_owned())
            .filter(callback_delivery::Column::Tenant.eq(tenant))
            .one(self.connection())
            .await?
        else {
            return Ok(None);
        };
        let now = Utc::now();
        let mut row: callback_delivery::ActiveModel = m.into();
        row.status = Set(DeliveryStatus::Pending.as_str().into());
        row.next_attempt_at = Set(Some(now));
        row.retry_until = Set(retry_until);
        row.updated_at = Set(now);
        row.update(self.connection()).await?;
        self.delivery(tenant, id).await
    }
}
