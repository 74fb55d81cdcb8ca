//! API keys: the gateway creates, lists, looks up and revokes them here. The store sees only the
//! SHA-256 of a secret, never the secret.

use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use uuid::Uuid;
use wharf_contract::ApiKeyInfo;
use wharf_entity::api_key;

use crate::{Error, Store};

/// A key as stored, with what authenticating a request needs.
#[derive(Debug, Clone)]
pub struct StoredKey {
    pub info: ApiKeyInfo,
}

impl StoredKey {
    /// True while the key may be used: not revoked, not expired.
    pub fn is_live(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.info.revoked_at.is_none() && self.info.expires_at.is_none_or(|t| t > now)
    }
}

fn info_of(m: api_key::Model) -> ApiKeyInfo {
    ApiKeyInfo {
        id: m.id,
        name: m.name,
        tenant: m.tenant,
        role: m.role,
        prefix: m.prefix,
        created_at: m.created_at,
        created_by: m.created_by,
        expires_at: m.expires_at,
        revoked_at: m.revoked_at,
    }
}

impl Store {
    /// Stores a new key under the hash of its secret.
    pub async fn create_key(&self, info: &ApiKeyInfo, secret_hash: &str) -> Result<(), Error> {
        api_key::ActiveModel {
            id: Set(info.id),
            tenant: Set(info.tenant.clone()),
            name: Set(info.name.clone()),
            role: Set(info.role.clone()),
            prefix: Set(info.prefix.clone()),
            secret_hash: Set(secret_hash.to_owned()),
            created_at: Set(info.created_at),
            created_by: Set(info.created_by.clone()),
            expires_at: Set(info.expires_at),
            revoked_at: Set(None),
        }
        .insert(self.connection())
        .await?;
        Ok(())
    }

    /// The keys of `tenant` (of every tenant when `None`), newest first, revoked ones included.
    pub async fn keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKeyInfo>, Error> {
        let mut q = api_key::Entity::find();
        if let Some(t) = tenant {
            q = q.filter(api_key::Column::Tenant.eq(t));
        }
        Ok(q.order_by_desc(api_key::Column::CreatedAt)
            .order_by_desc(api_key::Column::Id)
            .all(self.connection())
            .await?
            .into_iter()
            .map(info_of)
            .collect())
    }

    /// Key `id`, live or not.
    pub async fn key(&self, id: Uuid) -> Result<Option<ApiKeyInfo>, Error> {
        Ok(api_key::Entity::find_by_id(id)
            .one(self.connection())
            .await?
            .map(info_of))
    }

    /// The key whose secret hashes to `secret_hash`, live or not.
    pub async fn key_by_hash(&self, secret_hash: &str) -> Result<Option<StoredKey>, Error> {
        Ok(api_key::Entity::find()
            .filter(api_key::Column::SecretHash.eq(secret_hash))
            .one(self.connection())
            .await?
            .map(|m| StoredKey { info: info_of(m) }))
    }

    /// Revokes key `id` if it belongs to `tenant` (any tenant when `None`). Revoking a revoked
    /// key changes nothing. `None` when there is no such key (in that tenant).
    pub async fn revoke_key(
        &self,
        id: Uuid,
        tenant: Option<&str>,
    ) -> Result<Option<ApiKeyInfo>, Error> {
        let Some(m) = api_key::Entity::find_by_id(id)
            .one(self.connection())
            .await?
            .filter(|m| tenant.is_none_or(|t| m.tenant == t))
        else {
            return Ok(None);
        };
        if m.revoked_at.is_some() {
            return Ok(Some(info_of(m)));
        }
        let mut active: api_key::ActiveModel = m.into();
        active.revoked_at = Set(Some(chrono::Utc::now()));
        Ok(Some(info_of(active.update(self.connection()).await?)))
    }

    /// How many tasks of `tenant` are queued or running, as recorded.
    pub async fn unfinished(&self, tenant: &str) -> Result<u64, Error> {
        use sea_orm::PaginatorTrait;
        use wharf_entity::task;
        Ok(task::Entity::find()
            .filter(task::Column::Tenant.eq(tenant))
            .filter(task::Column::StatusRank.lt(2))
            .count(self.connection())
            .await?)
    }
}
