//! Webhooks both ways, as the Standard Webhooks specification defines them: signing and
//! verifying (`signature`), and sending a signed call where the target policy allows
//! (`policy`, `send`). The gateway verifies inbound webhooks with it; the recorder delivers
//! callbacks with it.

pub mod policy;
pub mod send;
pub mod signature;

pub use policy::TargetPolicy;
pub use send::{Attempt, Sender};
pub use signature::{
    Refused, Signed, check_secrets, decode_secret, redact_all, redact_secret, restore_redacted,
    sign, verify,
};
