//! A tenant's own NATS connection, as the gateway's auth callout lets it in, and what the server
//! tells it.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::Wharf;

/// What happens to a connection: the server's errors (permission violations), disconnections.
pub type NatsEvents = mpsc::UnboundedReceiver<async_nats::Event>;

/// A connection to `w`'s NATS with `token` (a Wharf API key or token), replies below
/// `inbox_prefix` when given (a tenant may read its replies only there).
pub async fn tenant_nats(
    w: &Wharf,
    token: &str,
    inbox_prefix: Option<String>,
) -> Result<(async_nats::Client, NatsEvents), async_nats::ConnectError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut options =
        async_nats::ConnectOptions::with_token(token.to_owned()).event_callback(move |event| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(event);
            }
        });
    if let Some(prefix) = inbox_prefix {
        options = options.custom_inbox_prefix(prefix);
    }
    let client = options.connect(w.nats.client_url()).await?;
    Ok((client, rx))
}

/// Waits for the server to refuse something on a connection; returns what it said.
pub async fn nats_refusal(events: &mut NatsEvents) -> String {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.recv().await {
                Some(async_nats::Event::ServerError(e)) => return e.to_string(),
                Some(_) => continue,
                None => panic!("the connection closed"),
            }
        }
    })
    .await
    .expect("a permissions violation within 5 s")
}
