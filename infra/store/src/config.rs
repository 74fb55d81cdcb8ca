//! Revisions of the runtime configuration.

use sea_orm::{ActiveModelTrait, EntityTrait, QueryOrder, QuerySelect, Set};
use wharf_contract::{ConfigRevision, RuntimeConfig};
use wharf_entity::config_revision;

use crate::{Error, Store};

fn revision_of(m: config_revision::Model) -> Result<ConfigRevision, Error> {
    let corrupt =
        |e: serde_json::Error| Error::Corrupt(format!("config revision {}: {e}", m.revision));
    Ok(ConfigRevision {
        revision: m.revision.max(0) as u64,
        at: m.at,
        by: m.by.clone(),
        changed: serde_json::from_value(m.changed.clone()).map_err(corrupt)?,
        config: serde_json::from_value::<RuntimeConfig>(m.config.clone()).map_err(corrupt)?,
    })
}

impl Store {
    /// Stores `revision`; `false` when that number is taken (someone stored it first).
    pub async fn add_config_revision(&self, revision: &ConfigRevision) -> Result<bool, Error> {
        let row = config_revision::ActiveModel {
            revision: Set(revision.revision as i64),
            at: Set(revision.at),
            by: Set(revision.by.clone()),
            changed: Set(serde_json::to_value(&revision.changed).expect("names serialise")),
            config: Set(serde_json::to_value(&revision.config).expect("a config serialises")),
        };
        match row.insert(self.connection()).await {
            Ok(_) => Ok(true),
            Err(e) => {
                let e = Error::Db(e);
                if e.is_refusal() { Ok(false) } else { Err(e) }
            }
        }
    }

    /// The newest revisions, newest first.
    pub async fn config_revisions(&self, limit: u64) -> Result<Vec<ConfigRevision>, Error> {
        config_revision::Entity::find()
            .order_by_desc(config_revision::Column::Revision)
            .limit(limit)
            .all(self.connection())
            .await?
            .into_iter()
            .map(revision_of)
            .collect()
    }
}
