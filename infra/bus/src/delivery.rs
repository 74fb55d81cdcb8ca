//! What becomes of a delivered message, said once: the worker and the recorder settle each
//! delivery with a [`Delivery`] instead of JetStream's acknowledgement kinds.

use std::time::Duration;

use async_nats::jetstream::AckKind;

use crate::{Error, Message, nats};

/// How a delivered message is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Done with it: it is never delivered again. Waits for the server to confirm, so that a
    /// lost acknowledgement is known (the message will come again).
    Done,
    /// Done with it, without waiting for the server: a lost acknowledgement brings the message
    /// back, which only a consumer that can tell it has seen the message can take: the recorder
    /// (its projection is idempotent), and a worker once the task's terminal event is stored
    /// (the redelivery finds that event and is acknowledged without running).
    DoneUnconfirmed,
    /// Not now: deliver it again after this long (at once for zero). Counts as a delivery.
    RetryAfter(Duration),
    /// It can never be processed (unreadable, refused): it is never delivered again.
    GiveUp,
    /// Still at work on it: its lease starts again (another `ack_wait`).
    KeepAlive,
}

/// How long a delivery waits when what it needs failed for a moment (a read of the history, a
/// store): long enough not to spin, short enough not to be noticed.
pub const RETRY_SOON: Duration = Duration::from_secs(1);

impl Delivery {
    /// Tells the server what becomes of `message`.
    pub async fn settle(self, message: &Message) -> Result<(), Error> {
        let kind = match self {
            Delivery::Done => {
                return message
                    .double_ack()
                    .await
                    .map_err(nats("acknowledge a message"));
            }
            Delivery::DoneUnconfirmed => AckKind::Ack,
            Delivery::RetryAfter(wait) if wait.is_zero() => AckKind::Nak(None),
            Delivery::RetryAfter(wait) => AckKind::Nak(Some(wait)),
            Delivery::GiveUp => AckKind::Term,
            Delivery::KeepAlive => AckKind::Progress,
        };
        message
            .ack_with(kind)
            .await
            .map_err(nats("settle a message"))
    }
}
