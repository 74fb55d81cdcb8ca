//! The worker list: an entry per live worker in `wharf_workers`, renewed while it runs.

use bytes::Bytes;
use futures::TryStreamExt;
use wharf_contract::{WORKERS_BUCKET, WorkerInfo, worker_key};

use crate::{Bus, Error, nats};

impl Bus {
    /// Announces a live worker, or renews its announcement: the entry lapses after
    /// `worker_ttl` unless announced again.
    pub async fn announce_worker(&self, worker: &WorkerInfo) -> Result<(), Error> {
        let store = self.bucket(WORKERS_BUCKET).await?;
        let body = serde_json::to_vec(worker).expect("a worker info serialises");
        store
            .put(worker_key(&worker.id), Bytes::from(body))
            .await
            .map_err(nats("announce a worker"))?;
        Ok(())
    }

    /// Removes a stopping worker from the list at once.
    pub async fn withdraw_worker(&self, id: &str) -> Result<(), Error> {
        let store = self.bucket(WORKERS_BUCKET).await?;
        store
            .delete(worker_key(id))
            .await
            .map_err(nats("withdraw a worker"))
    }

    /// The live workers, ordered by id.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>, Error> {
        let store = self.bucket(WORKERS_BUCKET).await?;
        let keys: Vec<String> = store
            .keys()
            .await
            .map_err(nats("list the workers"))?
            .try_collect()
            .await
            .map_err(nats("list the workers"))?;
        let mut workers = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(value) = store.get(&key).await.map_err(nats("read a worker"))? else {
                continue;
            };
            match serde_json::from_slice::<WorkerInfo>(&value) {
                Ok(w) => workers.push(w),
                Err(e) => tracing::warn!(key, error = %e, "ignoring a malformed worker entry"),
            }
        }
        workers.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(workers)
    }
}
