//! `wharf deliveries`: the callback delivery log (docs/wiring.md#outbound-callbacks).

use wharf_client::{Client, DeliveryQuery};
use wharf_contract::Delivery;

#[derive(clap::Subcommand)]
pub enum DeliveriesCommand {
    /// Your tenant's deliveries, newest first.
    List {
        /// Only `pending`, `delivered` or `failed` ones.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One task's deliveries in order, with every attempt.
    Task { id: uuid::Uuid },
    /// Deliver one again now (its id, `<task id>-<sequence>`), whatever came of it before.
    Redeliver { id: String },
}

impl DeliveriesCommand {
    pub async fn run(self, api: &Client) -> anyhow::Result<()> {
        match self {
            DeliveriesCommand::List {
                status,
                limit,
                cursor,
            } => {
                let query = DeliveryQuery {
                    status,
                    limit: Some(limit),
                    cursor,
                };
                let list = api.deliveries(&query).await?;
                println!(
                    "{:<48}  {:<10}  {:<9}  {:>8}  {:<6}  URL",
                    "DELIVERY", "EVENT", "STATUS", "ATTEMPTS", "LAST"
                );
                for d in &list.deliveries {
                    println!("{}", row(d));
                }
                if let Some(next) = list.next_cursor {
                    println!("more: wharf deliveries list --cursor {next}");
                }
            }
            DeliveriesCommand::Task { id } => {
                for d in &api.task_deliveries(id).await?.deliveries {
                    println!("{}", row(d));
                    for a in &d.log {
                        let answer = a.status.map_or("-".to_owned(), |s| s.to_string());
                        let error: String =
                            a.error.as_deref().unwrap_or("").chars().take(120).collect();
                        println!(
                            "    #{:<3} {}  {:>4}  {:>6} ms  {}",
                            a.attempt,
                            a.at.to_rfc3339(),
                            answer,
                            a.latency_ms,
                            error
                        );
                    }
                }
            }
            DeliveriesCommand::Redeliver { id } => {
                let d = api.redeliver(&id).await?;
                println!("{} is {} again", d.id, d.status.as_str());
            }
        }
        Ok(())
    }
}

fn row(d: &Delivery) -> String {
    format!(
        "{:<48}  {:<10}  {:<9}  {:>8}  {:<6}  {}",
        d.id,
        d.event,
        d.status.as_str(),
        d.attempts,
        d.last_status.map_or("-".to_owned(), |s| s.to_string()),
        d.url
    )
}
