//! `wharf queues`: the queues' state, and pausing and resuming one (docs/operations.md).

use wharf_client::Client;

#[derive(clap::Subcommand)]
pub enum QueuesCommand {
    /// Workers stop taking tasks from the queue; it goes on accepting them (needs ops:write).
    Pause { name: String },
    /// Workers take tasks from a paused queue again.
    Resume { name: String },
}

impl QueuesCommand {
    pub async fn run(self, api: &Client) -> anyhow::Result<()> {
        let (name, info) = match self {
            QueuesCommand::Pause { name } => {
                let info = api.pause_queue(&name).await?;
                (name, info)
            }
            QueuesCommand::Resume { name } => {
                let info = api.resume_queue(&name).await?;
                (name, info)
            }
        };
        println!(
            "queue {name} {}: {} waiting, {} in flight",
            if info.paused {
                "paused"
            } else {
                "taking tasks"
            },
            info.waiting,
            info.in_flight
        );
        Ok(())
    }
}
