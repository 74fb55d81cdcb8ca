//! The tool catalog: each MCP server's tools, advertised by workers in `wharf_tools`.

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use wharf_contract::{TOOLS_BUCKET, ToolServer};

use crate::{Bus, Error, nats};

impl Bus {
    /// Advertises one MCP server's tools in the catalog.
    pub async fn advertise_tools(&self, server: &ToolServer) -> Result<(), Error> {
        let store = self.bucket(TOOLS_BUCKET).await?;
        let body = serde_json::to_vec(server).expect("a tool server serialises");
        store
            .put(&server.server, Bytes::from(body))
            .await
            .map_err(nats("advertise tools"))?;
        Ok(())
    }

    /// Removes an MCP server's tools from the catalog when a registry server advertised them
    /// (its server left the registry); an entry a worker's own server of that name advertised
    /// stays. Returns whether it removed one.
    pub async fn withdraw_registry_tools(&self, server: &str) -> Result<bool, Error> {
        let store = self.bucket(TOOLS_BUCKET).await?;
        let Some(entry) = store
            .entry(server)
            .await
            .map_err(nats("read a server's tools"))?
        else {
            return Ok(false);
        };
        if entry.operation != kv::Operation::Put
            || !decode_tool_server(server, &entry.value).is_some_and(|t| t.registry)
        {
            return Ok(false);
        }
        // Only that very entry: a worker's own server may have advertised since.
        match store
            .delete_expect_revision(server, Some(entry.revision))
            .await
        {
            Ok(()) => Ok(true),
            Err(e) => {
                tracing::debug!(server, error = %e, "the server's tools changed meanwhile; kept");
                Ok(false)
            }
        }
    }

    /// Every advertised MCP server now, and a stream of later changes: a server's new
    /// advertisement, or its name and `None` when its tools were withdrawn. The stream is
    /// subscribed before the snapshot is read, so nothing falls between the two.
    pub async fn watch_tools(
        &self,
    ) -> Result<
        (
            Vec<ToolServer>,
            impl Stream<Item = (String, Option<ToolServer>)> + use<>,
        ),
        Error,
    > {
        let (store, watch, keys) = self.watch_and_list(TOOLS_BUCKET).await?;
        let mut now = Vec::with_capacity(keys.len());
        for key in keys {
            let value = store
                .get(&key)
                .await
                .map_err(nats("read the tool catalog"))?;
            if let Some(server) = value.and_then(|v| decode_tool_server(&key, &v)) {
                now.push(server);
            }
        }
        let live = watch.filter_map(|entry| async move {
            let entry = entry.ok()?;
            if entry.operation != kv::Operation::Put {
                return Some((entry.key, None));
            }
            let server = decode_tool_server(&entry.key, &entry.value)?;
            Some((entry.key, Some(server)))
        });
        Ok((now, live))
    }
}

fn decode_tool_server(key: &str, value: &[u8]) -> Option<ToolServer> {
    match serde_json::from_slice::<ToolServer>(value) {
        Ok(server) => Some(server),
        Err(e) => {
            tracing::warn!(key, error = %e, "ignoring a malformed tool catalog entry");
            None
        }
    }
}
