//! The key-value buckets: opening one, and watching one together with its keys. One module per
//! bucket below.

mod cancel;
mod registry;
mod tools;
mod workers;

pub use registry::Published;

use async_nats::jetstream::kv;
use futures::TryStreamExt;

use crate::{Bus, Error, nats};

impl Bus {
    /// Subscribes to a bucket's changes, then lists its keys: nothing written between the two
    /// is missed (it is in the listing, the watch, or both).
    pub(crate) async fn watch_and_list(
        &self,
        bucket: &str,
    ) -> Result<(kv::Store, kv::Watch, Vec<String>), Error> {
        let store = self.bucket(bucket).await?;
        let watch = store.watch(">").await.map_err(nats("watch a bucket"))?;
        let keys = store
            .keys()
            .await
            .map_err(nats("list a bucket"))?
            .try_collect()
            .await
            .map_err(nats("list a bucket"))?;
        Ok((store, watch, keys))
    }

    pub(crate) async fn bucket(&self, name: &str) -> Result<kv::Store, Error> {
        self.js
            .get_key_value(name)
            .await
            .map_err(nats("open a key-value bucket"))
    }
}
