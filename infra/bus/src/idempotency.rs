//! Idempotency keys, claimed across every gateway in the `wharf_idempotency` bucket.

use async_nats::jetstream::kv;
use bytes::Bytes;
use uuid::Uuid;
use wharf_contract::IDEMPOTENCY_BUCKET;

use crate::{Bus, Error, nats};

impl Bus {
    /// Claims idempotency key `key` for task `task_id`, atomically across every gateway: the
    /// key's entry is created only if none exists (or the last one expired with the window).
    pub async fn claim_idempotency_key(&self, key: &str, task_id: Uuid) -> Result<Claim, Error> {
        let store = self.idempotency_bucket().await?;
        let k = idempotency_bucket_key(key);
        let value = Bytes::from(
            serde_json::to_vec(&KeyHolder {
                task_id,
                claimed_at: chrono::Utc::now(),
            })
            .expect("a key holder serialises"),
        );
        // Twice at most: an entry that expires between the create and the read is claimed again.
        for _ in 0..2 {
            match store.create(&k, value.clone()).await {
                Ok(revision) => return Ok(Claim::New { revision }),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(e) => return Err(nats("claim an idempotency key")(e)),
            }
            let entry = store
                .entry(&k)
                .await
                .map_err(nats("read an idempotency key"))?;
            if let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put)
                && let Ok(holder) = serde_json::from_slice::<KeyHolder>(&entry.value)
            {
                // The server's clock, not the claiming gateway's: gateways' clocks may differ.
                let claimed_at = chrono::DateTime::from_timestamp(
                    entry.created.unix_timestamp(),
                    entry.created.nanosecond(),
                )
                .unwrap_or(holder.claimed_at);
                return Ok(Claim::Held {
                    task_id: holder.task_id,
                    claimed_at,
                    revision: entry.revision,
                });
            }
        }
        Err(Error::Nats {
            op: "claim an idempotency key",
            message: "the key's entry kept changing".into(),
        })
    }

    /// Gives back idempotency key `key` if it is still at `revision` (the claim of a request
    /// that then published nothing).
    pub async fn release_idempotency_key(&self, key: &str, revision: u64) -> Result<(), Error> {
        self.idempotency_bucket()
            .await?
            .delete_expect_revision(idempotency_bucket_key(key), Some(revision))
            .await
            .map_err(nats("release an idempotency key"))
    }

    /// Moves idempotency key `key` to task `task_id` if it is still at `revision` (held by a
    /// claim whose task was never stored). False when another request moved it first.
    pub async fn take_over_idempotency_key(
        &self,
        key: &str,
        task_id: Uuid,
        revision: u64,
    ) -> Result<bool, Error> {
        let store = self.idempotency_bucket().await?;
        let value = Bytes::from(
            serde_json::to_vec(&KeyHolder {
                task_id,
                claimed_at: chrono::Utc::now(),
            })
            .expect("a key holder serialises"),
        );
        match store
            .update(idempotency_bucket_key(key), value, revision)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(nats("take over an idempotency key")(e)),
        }
    }

    async fn idempotency_bucket(&self) -> Result<&kv::Store, Error> {
        self.idempotency
            .get_or_try_init(|| self.bucket(IDEMPOTENCY_BUCKET))
            .await
    }
}

/// What claiming an idempotency key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key now names the new task.
    New { revision: u64 },
    /// The key already names a task (stored, or still being submitted by another request).
    Held {
        task_id: Uuid,
        claimed_at: chrono::DateTime<chrono::Utc>,
        revision: u64,
    },
}

/// An idempotency key's entry.
#[derive(serde::Serialize, serde::Deserialize)]
struct KeyHolder {
    task_id: Uuid,
    claimed_at: chrono::DateTime<chrono::Utc>,
}

/// The bucket key for an idempotency key: a UUIDv5 of it, since bucket keys allow only a few
/// characters and a client's key may hold any.
fn idempotency_bucket_key(key: &str) -> String {
    /// Namespace of Wharf's idempotency keys (a random UUID, fixed forever).
    const NAMESPACE: Uuid = Uuid::from_u128(0x6a0f_4a1e_2c57_4d3b_9f1e_8b0d_5c2a_7e41);
    Uuid::new_v5(&NAMESPACE, key.as_bytes())
        .simple()
        .to_string()
}
