//! Client commands against a running gateway: `submit`, `task`, `tasks`, `cancel`, `tools`,
//! `dlq`.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value};
use wharf_client::{AuditQuery, Client, Page, TaskQuery};
use wharf_contract::{QueueList, SubmitTask, TaskView, WorkerList, WsServerMessage};

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Submit a task and print its id (or, with --watch, follow it to the end).
    Submit(SubmitArgs),
    /// Show one task.
    Task { id: uuid::Uuid },
    /// List tasks, newest first.
    Tasks(TasksArgs),
    /// Cancel a queued or running task.
    Cancel { id: uuid::Uuid },
    /// List the tools workers serve.
    Tools,
    /// Live workers: queues, concurrency, tasks in flight, last seen.
    Workers,
    /// Queues: tasks waiting and running per level, oldest task, workers, tasks ended in the
    /// last minute, paused or not; `pause` and `resume` one.
    Queues {
        #[command(subcommand)]
        action: Option<crate::queues::QueuesCommand>,
    },
    /// A live view of queues and workers, redrawn every few seconds (Ctrl-C ends it).
    Top {
        /// Seconds between redraws.
        #[arg(long, default_value_t = 2)]
        interval: u64,
        /// Print one view and exit.
        #[arg(long)]
        once: bool,
    },
    /// Dead letters: tasks that failed after every attempt, kept for replay.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Callback deliveries: what was sent where, every attempt, and redelivery.
    #[command(subcommand)]
    Deliveries(crate::deliveries::DeliveriesCommand),
    /// API keys of your tenant (needs keys:admin).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Who the gateway takes you for: tenant, roles, permissions.
    Whoami,
    /// The audit log, newest first: from the gateway (needs audit:read), or read straight from
    /// an audit file with --file (decrypted with --key when its lines are encrypted).
    Audit(AuditArgs),
}

#[derive(clap::Args)]
pub struct SubmitArgs {
    /// Tool to run, `<server>.<tool>`, e.g. `demo.sleep`.
    tool: String,
    /// An argument `name=value`; the value is read as JSON when it parses, else as a string.
    #[arg(long = "arg", value_name = "NAME=VALUE")]
    args: Vec<String>,
    /// All arguments as one JSON object (merged under any --arg).
    #[arg(long = "args-json", value_name = "JSON")]
    args_json: Option<String>,
    #[arg(long)]
    queue: Option<String>,
    /// Timeout of one attempt, in seconds.
    #[arg(long)]
    timeout: Option<u64>,
    #[arg(long)]
    max_attempts: Option<u32>,
    #[arg(long)]
    idempotency_key: Option<String>,
    #[arg(long)]
    session: Option<String>,
    /// Start no earlier than this many seconds from now.
    #[arg(long, conflicts_with = "run_at")]
    delay: Option<u64>,
    /// Start no earlier than this time (RFC 3339, e.g. 2026-12-01T09:00:00Z).
    #[arg(long)]
    run_at: Option<chrono::DateTime<chrono::Utc>>,
    /// `high`, `normal` or `low` (the queue's default when absent).
    #[arg(long)]
    priority: Option<wharf_contract::Priority>,
    /// Submit as this agent: its tools only, its defaults.
    #[arg(long)]
    agent: Option<String>,
    /// POST the task's end, signed, to this URL (docs/wiring.md).
    #[arg(long)]
    callback: Option<String>,
    /// Follow progress live and print the result.
    #[arg(long)]
    watch: bool,
}

#[derive(clap::Args)]
pub struct TasksArgs {
    #[arg(long)]
    status: Option<String>,
    #[arg(long)]
    queue: Option<String>,
    #[arg(long)]
    session: Option<String>,
    /// high, normal or low.
    #[arg(long)]
    priority: Option<String>,
    /// Only this tool's tasks (`<server>.<tool>`).
    #[arg(long)]
    tool: Option<String>,
    /// Only tasks submitted at or after this time (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// Only tasks submitted before this time (RFC 3339).
    #[arg(long)]
    until: Option<String>,
    #[arg(long, default_value_t = 20)]
    limit: u32,
    #[arg(long)]
    cursor: Option<String>,
}

#[derive(clap::Args)]
pub struct AuditArgs {
    /// An audit JSON Lines file to read instead of asking the gateway.
    #[arg(long)]
    file: Option<std::path::PathBuf>,
    /// The file's encryption key (base64 of 32 bytes).
    #[arg(long, env = "WHARF_AUDIT_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Only this action, e.g. task.submit or auth.unauthenticated.
    #[arg(long)]
    action: Option<String>,
    /// Another tenant's log (needs tenants:admin; gateway only).
    #[arg(long)]
    tenant: Option<String>,
    #[arg(long, default_value_t = 50)]
    limit: u32,
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its secret (shown this once).
    Create {
        /// What the key is for, e.g. `billing-service`.
        #[arg(long)]
        name: String,
        /// admin, tenant-admin, operator, submitter, reader, or a configured role.
        #[arg(long)]
        role: String,
        /// Another tenant than yours (needs tenants:admin).
        #[arg(long)]
        tenant: Option<String>,
        /// The key stops working after this many seconds.
        #[arg(long)]
        expires_in: Option<u64>,
    },
    /// List keys, newest first.
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a key at once.
    Revoke { id: uuid::Uuid },
}

#[derive(Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first.
    List {
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show one dead letter (by the dead task's id) as JSON.
    Show { id: uuid::Uuid },
    /// Submit the dead task again as a new task and print the new task's id.
    Replay { id: uuid::Uuid },
}

/// Parses `name=value` arguments into an object.
fn parse_args(pairs: &[String], json: Option<&str>) -> anyhow::Result<Map<String, Value>> {
    let mut out = match json {
        Some(j) => match serde_json::from_str::<Value>(j).context("--args-json is not JSON")? {
            Value::Object(o) => o,
            _ => bail!("--args-json must be a JSON object"),
        },
        None => Map::new(),
    };
    for pair in pairs {
        let (name, value) = pair
            .split_once('=')
            .with_context(|| format!("--arg {pair:?} is not NAME=VALUE"))?;
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
        out.insert(name.to_owned(), value);
    }
    Ok(out)
}

impl ClientCommand {
    /// Runs the command against the gateway at `base`, as `key` (an API key or token) when
    /// given.
    pub async fn run(self, base: String, key: Option<String>) -> anyhow::Result<()> {
        let mut api = Client::new(&base)?;
        if let Some(key) = key {
            api = api
                .with_credential(&key)
                .map_err(|_| anyhow::anyhow!("WHARF_API_KEY holds characters a header cannot"))?;
        }
        match self {
            ClientCommand::Submit(submit) => submit.run(&api).await,
            ClientCommand::Task { id } => print_json(&api.task(id).await?),
            ClientCommand::Tasks(tasks) => tasks.run(&api).await,
            ClientCommand::Cancel { id } => {
                let view = api.cancel(id).await?;
                println!(
                    "cancellation requested for {} ({})",
                    view.id,
                    view.status.as_str()
                );
                Ok(())
            }
            ClientCommand::Dlq(dlq) => dlq.run(&api).await,
            ClientCommand::Deliveries(d) => d.run(&api).await,
            ClientCommand::Keys(keys) => keys.run(&api).await,
            ClientCommand::Audit(audit) => audit.run(&api).await,
            ClientCommand::Whoami => print_json(&api.whoami().await?),
            ClientCommand::Tools => {
                for t in &api.tools().await?.tools {
                    println!("{:<28}  {}", t.name, t.description.as_deref().unwrap_or(""));
                }
                Ok(())
            }
            ClientCommand::Workers => {
                print!("{}", workers_table(&api.workers().await?));
                Ok(())
            }
            ClientCommand::Queues {
                action: Some(action),
            } => action.run(&api).await,
            ClientCommand::Queues { action: None } => {
                print!("{}", queues_table(&api.queues().await?));
                Ok(())
            }
            ClientCommand::Top { interval, once } => top(&api, interval, once).await,
        }
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

impl SubmitArgs {
    async fn run(self, api: &Client) -> anyhow::Result<()> {
        let body = SubmitTask {
            tool: self.tool,
            arguments: parse_args(&self.args, self.args_json.as_deref())?,
            queue: self.queue,
            timeout_secs: self.timeout,
            max_attempts: self.max_attempts,
            idempotency_key: self.idempotency_key,
            session_id: self.session,
            metadata: None,
            run_at: self.run_at,
            delay_secs: self.delay,
            priority: self.priority,
            agent: self.agent,
            callback: self.callback.map(|url| wharf_contract::Callback {
                url,
                events: vec![wharf_contract::CallbackEvent::Terminal],
                cloudevents: false,
            }),
        };
        let view = api.submit(&body).await?.task;
        if self.watch {
            return watch_task(api, &view).await;
        }
        println!("{}", view.id);
        Ok(())
    }
}

impl TasksArgs {
    async fn run(self, api: &Client) -> anyhow::Result<()> {
        let query = TaskQuery {
            status: self.status,
            queue: self.queue,
            session_id: self.session,
            priority: self.priority,
            agent: None,
            tool: self.tool,
            created_after: self.since,
            created_before: self.until,
            view: None,
            limit: Some(self.limit),
            cursor: self.cursor,
        };
        let list = api.tasks(&query).await?;
        println!(
            "{:<36}  {:<9}  {:<20}  {:<10}  {:>8}  CREATED",
            "ID", "STATUS", "TOOL", "QUEUE", "ATTEMPTS"
        );
        for t in &list.tasks {
            println!(
                "{:<36}  {:<9}  {:<20}  {:<10}  {:>8}  {}",
                t.id,
                t.status.as_str(),
                t.tool,
                t.queue,
                t.attempts,
                t.created_at.map(|c| c.to_rfc3339()).unwrap_or_default()
            );
        }
        if let Some(next) = list.next_cursor {
            println!("more: wharf tasks --cursor {next}");
        }
        Ok(())
    }
}

impl DlqCommand {
    async fn run(self, api: &Client) -> anyhow::Result<()> {
        match self {
            DlqCommand::List { limit, cursor } => {
                let page = Page {
                    limit: Some(limit),
                    cursor,
                };
                let list = api.dead_letters(&page).await?;
                println!(
                    "{:<36}  {:<20}  {:<10}  {:>8}  {:<18}  DEAD AT",
                    "TASK", "TOOL", "QUEUE", "ATTEMPTS", "ERROR"
                );
                for d in &list.dead_letters {
                    println!(
                        "{:<36}  {:<20}  {:<10}  {:>8}  {:<18}  {}",
                        d.task_id,
                        d.task.as_ref().map_or("(unreadable)", |t| t.tool.as_str()),
                        d.queue,
                        d.attempts,
                        d.error.code,
                        d.dead_at.to_rfc3339()
                    );
                }
                if let Some(next) = list.next_cursor {
                    println!("more: wharf dlq list --cursor {next}");
                }
            }
            DlqCommand::Show { id } => print_json(&api.dead_letter(id).await?)?,
            DlqCommand::Replay { id } => println!("{}", api.replay(id).await?.task.id),
        }
        Ok(())
    }
}

impl KeysCommand {
    async fn run(self, api: &Client) -> anyhow::Result<()> {
        match self {
            KeysCommand::Create {
                name,
                role,
                tenant,
                expires_in,
            } => {
                let body = wharf_contract::CreateKey {
                    name,
                    role,
                    tenant,
                    expires_in_secs: expires_in,
                };
                let created = api.create_key(&body).await?;
                eprintln!(
                    "key {} ({}, tenant {}); its secret, shown only now:",
                    created.key.id, created.key.role, created.key.tenant
                );
                println!("{}", created.secret);
            }
            KeysCommand::List { tenant } => {
                let list = api.keys(tenant.as_deref()).await?;
                println!(
                    "{:<36}  {:<20}  {:<12}  {:<14}  {:<12}  STATE",
                    "ID", "NAME", "TENANT", "ROLE", "PREFIX"
                );
                let now = chrono::Utc::now();
                for k in &list.keys {
                    let state = if k.revoked_at.is_some() {
                        "revoked"
                    } else if k.expires_at.is_some_and(|t| t <= now) {
                        "expired"
                    } else {
                        "live"
                    };
                    println!(
                        "{:<36}  {:<20}  {:<12}  {:<14}  {:<12}  {state}",
                        k.id, k.name, k.tenant, k.role, k.prefix
                    );
                }
            }
            KeysCommand::Revoke { id } => {
                let key = api.revoke_key(id).await?;
                println!("revoked {} ({})", key.id, key.name);
            }
        }
        Ok(())
    }
}

impl AuditArgs {
    /// Prints the newest entries, from the file given or else from the gateway.
    async fn run(self, api: &Client) -> anyhow::Result<()> {
        let entries = match &self.file {
            Some(file) => self.read_file(file)?,
            None => {
                let query = AuditQuery {
                    action: self.action,
                    tenant: self.tenant,
                    limit: Some(self.limit),
                    cursor: None,
                };
                api.audit(&query).await?.entries
            }
        };
        for e in &entries {
            println!("{}", serde_json::to_string(e)?);
        }
        Ok(())
    }

    /// The newest `limit` entries of an audit file that match the filters, newest first.
    fn read_file(&self, file: &std::path::Path) -> anyhow::Result<Vec<wharf_contract::AuditEntry>> {
        let key = self
            .key
            .as_deref()
            .map(wharf_gateway::audit::cipher)
            .transpose()
            .map_err(|e| anyhow::anyhow!(e))?;
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
            let entry = wharf_gateway::audit::open_line(line, key.as_ref())
                .map_err(|e| anyhow::anyhow!("{}:{}: {e}", file.display(), n + 1))?;
            if self.action.as_ref().is_none_or(|a| *a == entry.action)
                && self.tenant.as_ref().is_none_or(|t| *t == entry.tenant)
            {
                entries.push(entry);
            }
        }
        entries.reverse();
        entries.truncate(self.limit as usize);
        Ok(entries)
    }
}

/// `wharf top`: redraws the view every `interval` seconds, or prints it once.
async fn top(api: &Client, interval: u64, once: bool) -> anyhow::Result<()> {
    loop {
        let queues = api.queues().await?;
        let workers = api.workers().await?;
        let view = top_view(api.base(), &queues, &workers);
        if once {
            print!("{view}");
            return Ok(());
        }
        // Home the cursor and clear the screen, then draw.
        print!("\x1b[H\x1b[2J{view}");
        use std::io::Write;
        std::io::stdout().flush()?;
        tokio::time::sleep(std::time::Duration::from_secs(interval.max(1))).await;
    }
}

/// One frame of `wharf top`: totals, then the queues, then the workers.
fn top_view(api: &str, queues: &QueueList, workers: &WorkerList) -> String {
    let sum = |f: fn(&wharf_contract::QueueInfo) -> u64| queues.queues.iter().map(f).sum::<u64>();
    format!(
        "wharf top  {api}  {}\nworkers {}  waiting {}  in flight {}  ended in the last minute {}\n\n{}\n{}",
        chrono::Utc::now().format("%H:%M:%S"),
        workers.workers.len(),
        sum(|q| q.waiting),
        sum(|q| q.in_flight),
        sum(|q| q.finished_last_minute),
        queues_table(queues),
        workers_table(workers),
    )
}

/// `wharf workers` output.
pub fn workers_table(list: &WorkerList) -> String {
    let mut out = format!(
        "{:<28}  {:<16}  {:>9}  {:>11}  {:<20}  SEEN\n",
        "ID", "HOST", "IN FLIGHT", "CONCURRENCY", "QUEUES"
    );
    let now = chrono::Utc::now();
    for w in &list.workers {
        out += &format!(
            "{:<28}  {:<16}  {:>9}  {:>11}  {:<20}  {:.0}s ago\n",
            w.id,
            w.host,
            w.in_flight,
            w.concurrency,
            w.queues.join(","),
            (now - w.seen_at).num_milliseconds().max(0) as f64 / 1000.0
        );
    }
    out
}

/// `wharf queues` output: one line per queue, its levels' waiting counts in brackets.
pub fn queues_table(list: &QueueList) -> String {
    let mut out = format!(
        "{:<20}  {:>8}  {:<18}  {:>9}  {:>10}  {:>7}  {:>12}  STATE\n",
        "QUEUE", "WAITING", "(HIGH/NORMAL/LOW)", "IN FLIGHT", "OLDEST", "WORKERS", "ENDED/MINUTE"
    );
    for q in &list.queues {
        let levels: Vec<String> = q.levels.iter().map(|l| l.waiting.to_string()).collect();
        let oldest = q
            .oldest_age_secs
            .map_or_else(|| "-".to_owned(), |s| format!("{s:.1}s"));
        out += &format!(
            "{:<20}  {:>8}  {:<18}  {:>9}  {:>10}  {:>7}  {:>12}  {}\n",
            q.name,
            q.waiting,
            format!("({})", levels.join("/")),
            q.in_flight,
            oldest,
            q.workers,
            q.finished_last_minute,
            if q.paused { "paused" } else { "active" }
        );
    }
    out
}

/// Follows a task's SSE stream with a progress bar, then prints its result.
async fn watch_task(api: &Client, view: &TaskView) -> anyhow::Result<()> {
    eprintln!("task {} accepted", view.id);
    let mut events = api.follow(view.id).await?;
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {msg}")
            .expect("a valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_message("queued");
    while let Some(message) = events.next().await {
        let message = message?;
        match message {
            WsServerMessage::Started {
                worker, attempt, ..
            } => {
                bar.set_message(format!("running on {worker} (attempt {attempt})"));
            }
            WsServerMessage::Progress {
                progress,
                total,
                message,
                ..
            } => {
                if let Some(total) = total {
                    bar.set_length(total.max(1.0) as u64);
                }
                bar.set_position(progress as u64);
                if let Some(m) = message {
                    bar.set_message(m);
                }
            }
            WsServerMessage::Retrying {
                error, retry_in_ms, ..
            } => {
                bar.set_message(format!("retrying in {retry_in_ms} ms: {}", error.message));
            }
            WsServerMessage::Complete { result, .. } => {
                bar.finish_and_clear();
                println!("{}", render_result(&result));
                return Ok(());
            }
            WsServerMessage::Error { error, .. } => {
                bar.finish_and_clear();
                bail!("task failed: {} ({})", error.message, error.code);
            }
            WsServerMessage::Cancelled { .. } => {
                bar.finish_and_clear();
                bail!("task cancelled");
            }
            _ => {}
        }
    }
    bar.finish_and_clear();
    bail!("the event stream ended before the task did")
}

/// The text content of an MCP tool result, or the result as JSON.
fn render_result(result: &Value) -> String {
    let texts: Vec<&str> = result
        .get("content")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|c| c.get("text").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    if texts.is_empty() {
        serde_json::to_string_pretty(result).unwrap_or_default()
    } else {
        texts.join("\n")
    }
}
