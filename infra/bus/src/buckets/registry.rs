//! The MCP server registry of the runtime configuration, in `wharf_registry`: written by
//! gateways, followed by workers.

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use wharf_contract::{MCP_REGISTRY_VERSION, McpRegistry, REGISTRY_BUCKET, REGISTRY_KEY};

use crate::{Bus, Error, nats};

impl Bus {
    /// Puts the MCP server registry of configuration revision `registry.revision` where workers
    /// read it, unless the one there is of that revision or a newer one (a gateway that has not
    /// applied the newest revision yet never takes it back).
    pub async fn publish_registry(&self, registry: &McpRegistry) -> Result<Published, Error> {
        let store = self.bucket(REGISTRY_BUCKET).await?;
        let body = Bytes::from(serde_json::to_vec(registry).expect("a registry serialises"));
        // Twice at most: a write by another gateway between the read and ours is read again.
        for _ in 0..2 {
            let entry = store
                .entry(REGISTRY_KEY)
                .await
                .map_err(nats("read the mcp registry"))?;
            let written = match entry {
                Some(e) => {
                    // A deleted key (or an unreadable entry) is below every revision.
                    let there = (e.operation == kv::Operation::Put)
                        .then(|| serde_json::from_slice::<McpRegistry>(&e.value).ok())
                        .flatten()
                        .map_or(0, |r| r.revision);
                    if there == registry.revision {
                        return Ok(Published::Current);
                    }
                    if there > registry.revision {
                        return Ok(Published::Ahead(there));
                    }
                    store
                        .update(REGISTRY_KEY, body.clone(), e.revision)
                        .await
                        .is_ok()
                }
                None => store.create(REGISTRY_KEY, body.clone()).await.is_ok(),
            };
            if written {
                return Ok(Published::Written);
            }
        }
        Err(Error::Nats {
            op: "write the mcp registry",
            message: "other gateways kept writing it".into(),
        })
    }

    /// The MCP server registry now (nothing, when none was ever written) and every later one,
    /// as gateways write it.
    pub async fn watch_registry(&self) -> Result<impl Stream<Item = McpRegistry> + use<>, Error> {
        let store = self.bucket(REGISTRY_BUCKET).await?;
        let watch = store
            .watch_with_history(REGISTRY_KEY)
            .await
            .map_err(nats("watch the mcp registry"))?;
        Ok(watch.filter_map(|entry| async move {
            let entry = entry.ok()?;
            if entry.operation != kv::Operation::Put {
                return Some(McpRegistry::default());
            }
            match serde_json::from_slice::<McpRegistry>(&entry.value) {
                Ok(r) if r.v > MCP_REGISTRY_VERSION => {
                    tracing::warn!(
                        version = r.v,
                        "ignoring an mcp registry of a newer wire version: upgrade this worker"
                    );
                    None
                }
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring a malformed mcp registry");
                    None
                }
            }
        }))
    }
}

/// What [`Bus::publish_registry`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// The registry there is this one now.
    Written,
    /// It was there already.
    Current,
    /// A registry of this later revision is there: the database behind this gateway is
    /// behind NATS (restored, or another platform's), or this gateway lags.
    Ahead(u64),
}
