//! Announcements between gateways on core NATS subjects (a revoked key, a new revision of the
//! runtime configuration): best effort, each also bounded by a periodic check on the receiving
//! side. One announcement is one value, written as text.

use std::fmt::Display;
use std::marker::PhantomData;
use std::str::FromStr;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use uuid::Uuid;
use wharf_contract::{CONFIG_CHANGED_SUBJECT, KEY_REVOKED_SUBJECT};

use crate::{Bus, Error};

/// A kind of announcement: the subject it travels on and the type of what it says.
#[derive(Debug)]
pub struct Announcement<T> {
    subject: &'static str,
    _says: PhantomData<fn() -> T>,
}

impl<T> Announcement<T> {
    /// Announcements of `T` on core subject `subject`.
    pub const fn on(subject: &'static str) -> Announcement<T> {
        Announcement {
            subject,
            _says: PhantomData,
        }
    }
}

/// An API key was revoked: its id. A gateway that misses it drops the key when its cache entry
/// expires.
pub const KEY_REVOKED: Announcement<Uuid> = Announcement::on(KEY_REVOKED_SUBJECT);
/// A revision of the runtime configuration was stored: its number. Gateways also read the
/// newest one every half minute.
pub const CONFIG_CHANGED: Announcement<u64> = Announcement::on(CONFIG_CHANGED_SUBJECT);

impl Bus {
    /// Tells every gateway listening for `kind` about `value`, once the server has it.
    pub async fn announce<T: Display>(
        &self,
        kind: &Announcement<T>,
        value: &T,
    ) -> Result<(), Error> {
        let failed = |e: &dyn Display| Error::Nats {
            op: "announce",
            message: format!("{}: {e}", kind.subject),
        };
        self.client
            .publish(kind.subject, Bytes::from(value.to_string()))
            .await
            .map_err(|e| failed(&e))?;
        self.client.flush().await.map_err(|e| failed(&e))
    }

    /// The values of `kind` announced from now on (unreadable ones are skipped).
    pub async fn announcements<T: FromStr + 'static>(
        &self,
        kind: &Announcement<T>,
    ) -> Result<impl Stream<Item = T> + use<T>, Error> {
        let sub = self
            .client
            .subscribe(kind.subject)
            .await
            .map_err(|e| Error::Nats {
                op: "follow announcements",
                message: format!("{}: {e}", kind.subject),
            })?;
        Ok(sub.filter_map(|m| {
            std::future::ready(
                std::str::from_utf8(&m.payload)
                    .ok()
                    .and_then(|s| s.parse().ok()),
            )
        }))
    }
}
