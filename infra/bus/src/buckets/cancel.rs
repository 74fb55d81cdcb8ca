//! Cancellation requests, in the `wharf_cancel` bucket that workers watch.

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use uuid::Uuid;
use wharf_contract::CANCEL_BUCKET;

use crate::{Bus, Error, nats};

impl Bus {
    /// Records a request to cancel task `id`; workers watching the bucket act on it.
    pub async fn request_cancel(&self, id: Uuid) -> Result<(), Error> {
        let store = self.bucket(CANCEL_BUCKET).await?;
        store
            .put(id.to_string(), Bytes::from_static(b"1"))
            .await
            .map_err(nats("record a cancellation"))?;
        Ok(())
    }

    /// The cancellation requests remembered now, and a stream of the ones made from now on. The
    /// stream is subscribed before the snapshot is read, so nothing falls between the two.
    pub async fn watch_cancels(
        &self,
    ) -> Result<(Vec<Uuid>, impl Stream<Item = Uuid> + use<>), Error> {
        let (_, watch, keys) = self.watch_and_list(CANCEL_BUCKET).await?;
        let now = keys.iter().filter_map(|k| k.parse().ok()).collect();
        let live = watch.filter_map(|entry| async move {
            let entry = entry.ok()?;
            (entry.operation == kv::Operation::Put)
                .then(|| entry.key.parse().ok())
                .flatten()
        });
        Ok((now, live))
    }
}
