//! `wharf`: runs Wharf (`dev`, or one part: `gateway`, `worker`, `recorder`) and talks to a
//! running gateway (`submit`, `task`, `tasks`, `cancel`, `tools`).
//!
//! This binary only wires: configuration, processes and signals. The behaviour lives in the
//! service and worker crates.

mod client;
mod config;
mod deliveries;
mod probes;
mod queues;
mod sections;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use wharf_bus::Bus;
use wharf_local::LocalNats;
use wharf_store::Store;
use wharf_telemetry::LogFormat;
use wharf_worker::{McpServerConfig, McpTransport};

use crate::config::Config;

/// jemalloc instead of glibc's malloc: with many small allocations freed on other threads
/// (messages, JSON, futures), glibc's arenas and consolidation were about a quarter of the
/// gateway's, the worker's and the recorder's CPU in profiles. mimalloc saved as much CPU but
/// took the worker past 10 KiB per running task; jemalloc kept it under (docs/performance.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "wharf",
    version,
    about = "A queue-backed worker platform for MCP tools"
)]
struct Cli {
    /// Gateway the client commands talk to.
    #[arg(
        long,
        global = true,
        env = "WHARF_API",
        default_value = "http://127.0.0.1:8080"
    )]
    api: String,
    /// API key or token the client commands send (`Authorization: Bearer`).
    #[arg(long, global = true, env = "WHARF_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "WHARF_CONFIG")]
    config: Option<PathBuf>,
    /// Address of the HTTP and WebSocket API (overrides WHARF_HTTP_ADDR and the file).
    #[arg(long)]
    http: Option<std::net::SocketAddr>,
    /// State directory (overrides WHARF_DATA_DIR and the file).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics and the probes /livez and /readyz
    /// (`wharf worker` and `wharf recorder`; the gateway serves them on its API address).
    #[arg(long, env = "WHARF_METRICS_ADDR")]
    metrics: Option<std::net::SocketAddr>,
}

#[derive(Subcommand)]
enum Command {
    /// Gateway, recorder and workers in one process, with a nats-server, SQLite and the demo MCP
    /// server wherever nothing else is configured.
    Dev(ServeArgs),
    /// The HTTP/WebSocket gateway alone.
    Gateway(ServeArgs),
    /// A worker alone.
    Worker {
        #[command(flatten)]
        serve: ServeArgs,
        /// Worker id shown in task events (default: host and process id).
        #[arg(long)]
        id: Option<String>,
    },
    /// The recorder alone.
    Recorder(ServeArgs),
    /// Create an API key straight in the database, for the first admin of a gateway that
    /// requires keys. Prints the secret, shown this once.
    BootstrapKey {
        #[command(flatten)]
        serve: ServeArgs,
        /// What the key is for.
        #[arg(long, default_value = "bootstrap")]
        name: String,
        #[arg(long, default_value = wharf_contract::DEFAULT_TENANT)]
        tenant: String,
        #[arg(long, default_value = "admin")]
        role: String,
    },
    /// Make the key that signs NATS authorizations for tenants: prints the settings for
    /// `[gateway.nats_auth]` and for nats-server (see docs/security.md).
    NatsIssuer,
    /// Serve the bundled demo MCP server on stdin/stdout.
    #[command(hide = true)]
    McpDemo,
    /// The bench's floor under the gateway (scenario raw_http): HTTP, JSON and one publish.
    #[command(hide = true)]
    HttpFloor {
        #[arg(long)]
        nats: String,
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
    /// Measure Wharf on this machine: the two raw hops, end-to-end throughput and latency,
    /// scaling with workers and payload, memory (see docs/benchmarks.md).
    #[command(args_override_self = true)]
    Bench(BenchArgs),
    #[command(flatten)]
    Client(client::ClientCommand),
}

#[derive(clap::Args)]
struct BenchArgs {
    /// A Postgres server whose user may create databases; each scenario gets its own.
    #[arg(
        long,
        env = "WHARF_BENCH_DATABASE_URL",
        required_unless_present = "render_only"
    )]
    database_url: Option<String>,
    /// Results file (JSON Lines), appended to.
    #[arg(long, default_value = "docs/benchmarks.jsonl")]
    out: PathBuf,
    /// Run only these scenarios (comma-separated).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Multiplies task counts and durations (0.1 for a quick look).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Afterwards, render the results file into this page.
    #[arg(long)]
    page: Option<PathBuf>,
    /// Only render `--out` into `--page`; measure nothing.
    #[arg(long, requires = "page")]
    render_only: bool,
}

fn bench(args: BenchArgs) -> anyhow::Result<()> {
    if !args.render_only {
        let opts = wharf_bench::Options {
            database_url: args.database_url.clone().unwrap_or_default(),
            wharf_bin: std::env::current_exe().context("cannot locate the wharf binary")?,
            out: args.out.clone(),
            only: args.only,
            scale: args.scale,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        // Interrupted, the run is dropped, and with it the platform it started: every
        // process it spawned is killed on drop, instead of outliving the bench.
        runtime.block_on(async {
            let stop = shutdown_on_signal();
            tokio::select! {
                r = wharf_bench::run(&opts) => r,
                _ = stop.cancelled() => {
                    anyhow::bail!("interrupted; the processes the bench started are stopped")
                }
            }
        })?;
    }
    if let Some(page) = &args.page {
        let results = std::fs::read_to_string(&args.out)
            .with_context(|| format!("cannot read {}", args.out.display()))?;
        std::fs::write(page, wharf_bench::report::render(&results))?;
        eprintln!("wharf bench: wrote {}", page.display());
    }
    Ok(())
}

fn main() {
    wharf_telemetry::install_crypto();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("wharf: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = match cli.command {
        Command::McpDemo => runtime
            .block_on(wharf_demo_mcp::serve_stdio())
            .map_err(|e| anyhow::anyhow!("demo mcp server: {e}")),
        Command::HttpFloor { nats, listen } => {
            runtime.block_on(wharf_bench::floor::serve(&nats, listen))
        }
        Command::Client(c) => runtime.block_on(c.run(cli.api, cli.api_key)),
        Command::NatsIssuer => {
            let (seed, public) = wharf_gateway::nats_auth::new_issuer();
            let (xseed, xpublic) = wharf_gateway::nats_auth::new_xkey();
            println!(
                "# wharf.toml (both seeds are secrets: keep them out of version control)\n\
                 [gateway.nats_auth]\n\
                 issuer_seed = \"{seed}\"\n\
                 xkey_seed = \"{xseed}\"\n\n\
                 # nats-server.conf: the platform's user, and everyone else through the gateway\n\
                 authorization {{\n  \
                   users: [ {{ user: \"wharf\", password: \"<platform password>\" }} ]\n  \
                   auth_callout {{\n    \
                     issuer: \"{public}\"\n    \
                     xkey: \"{xpublic}\"\n    \
                     auth_users: [ \"wharf\" ]\n  \
                   }}\n\
                 }}\n\n\
                 # every Wharf part then connects with nats_url = \"nats://wharf:<platform password>@host:4222\""
            );
            Ok(())
        }
        Command::BootstrapKey {
            serve,
            name,
            tenant,
            role,
        } => runtime.block_on(bootstrap_key(serve, name, tenant, role)),
        Command::Dev(args) => runtime.block_on(dev(args)),
        Command::Gateway(args) => runtime.block_on(gateway(args)),
        Command::Worker { serve, id } => runtime.block_on(worker(serve, id)),
        Command::Recorder(args) => runtime.block_on(recorder(args)),
        Command::Bench(args) => {
            drop(runtime);
            bench(args)
        }
    };
    wharf_telemetry::traces::flush();
    result
}

fn load(args: &ServeArgs, default_format: LogFormat, service: &str) -> anyhow::Result<Config> {
    let mut config = Config::load(args.config.as_ref())?;
    config
        .read_secret_files(|name| std::env::var_os(name))
        .map_err(anyhow::Error::msg)?;
    if let Some(http) = args.http {
        config.http_addr = http;
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir.clone_from(dir);
    }
    let format = match config.log_format {
        Some(config::LogFormatName::Json) => LogFormat::Json,
        Some(config::LogFormatName::Pretty) => LogFormat::Pretty,
        None => default_format,
    };
    wharf_telemetry::init_logging(format, "info,rmcp=warn,async_nats=warn,sqlx=warn", service);
    // Credentials in the URLs of NATS and the database stay out of every log line, the client
    // libraries' included.
    for url in [&config.nats_url, &config.database_url]
        .into_iter()
        .flatten()
    {
        for secret in wharf_bus::url_secrets(&url.0) {
            wharf_telemetry::redact::keep_out_of_logs(&secret);
        }
    }
    Ok(config)
}

/// Fires on SIGINT, SIGTERM or SIGHUP (a closed terminal).
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("can listen for SIGTERM");
        let mut hangup = signal(SignalKind::hangup()).expect("can listen for SIGHUP");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = hangup.recv() => {}
        }
        tracing::info!("shutting down");
        t.cancel();
    });
    token
}

async fn connect_bus(config: &Config, name: &str) -> anyhow::Result<Bus> {
    let url = config
        .nats_url
        .as_ref()
        .map(|u| u.0.as_str())
        .context("WHARF_NATS_URL (or nats_url in the config file) is required")?;
    Ok(Bus::connect(url, name, config.topology()).await?)
}

async fn connect_store(config: &Config) -> anyhow::Result<Store> {
    let url = config
        .database_url
        .as_ref()
        .context("WHARF_DATABASE_URL (or database_url in the config file) is required")?;
    Ok(Store::connect(&url.0).await?)
}

/// The bundled demo server, started as a child process of this very binary.
fn demo_server() -> anyhow::Result<McpServerConfig> {
    let exe = std::env::current_exe().context("cannot locate the wharf binary")?;
    Ok(McpServerConfig {
        name: "demo".into(),
        transport: McpTransport::Stdio {
            command: exe.to_string_lossy().into_owned(),
            args: vec!["mcp-demo".into()],
            env: Default::default(),
            cwd: None,
        },
        retry_tool_errors: false,
    })
}

fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}-{}", std::process::id())
}

async fn dev(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = load(&args, LogFormat::Pretty, "wharf-dev")?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    let data_dir = config.data_dir.canonicalize()?;
    let shutdown = shutdown_on_signal();

    let (local_nats, nats_note, db_note) = embedded_defaults(&mut config, &data_dir).await?;

    let bus = connect_bus(&config, "wharf-dev").await?;
    bus.ensure_topology().await?;
    let store = connect_store(&config).await?;

    let mut parts = tokio::task::JoinSet::new();
    let recorder = wharf_recorder::Recorder::new(bus.clone(), store.clone())
        .with_history(config.history.settings())
        .with_callbacks(config.callbacks.settings(true));
    parts.spawn(recorder_task(recorder, shutdown.clone()));
    let demo = demo_server()?;
    for n in 0..config.worker.count.max(1) {
        let id = format!("{}-{n}", default_worker_id());
        let worker = wharf_worker::Worker::new(config.worker(id, demo.clone()), bus.clone())?;
        let stop = shutdown.clone();
        parts.spawn(async move {
            worker
                .run_until_stopped(stop)
                .await
                .map_err(anyhow::Error::from)
        });
    }
    let gateway_config = config.gateway(true);
    let open = gateway_config.auth.mode == Some(wharf_gateway::AuthMode::Open);
    let gateway = wharf_gateway::Gateway::build(gateway_config, bus.clone(), store).await?;
    let addr = gateway.local_addr();
    let stop = shutdown.clone();
    parts.spawn(async move {
        gateway
            .run_until_stopped(stop)
            .await
            .map_err(anyhow::Error::from)
    });

    print_banner(addr, open, &nats_note, &db_note, &data_dir);

    let result = wait_all(parts, &shutdown).await;
    if let Some(nats) = local_nats {
        nats.stop().await;
    }
    result
}

/// What `wharf dev` provides where the configuration names nothing: a nats-server of its own
/// (returned, to stop at the end) and SQLite, both under `data_dir`; with a line on each.
async fn embedded_defaults(
    config: &mut config::Config,
    data_dir: &std::path::Path,
) -> anyhow::Result<(Option<LocalNats>, String, String)> {
    let mut local_nats = None;
    let nats_note = match &config.nats_url {
        Some(url) => wharf_bus::redact_url(&url.0),
        None => {
            let store = data_dir.join("nats");
            let nats = LocalNats::start(&store).await?;
            config.nats_url = Some(config::Secret(nats.url().to_owned()));
            let note = format!(
                "{} (started here, store in {})",
                nats.url(),
                store.display()
            );
            local_nats = Some(nats);
            note
        }
    };
    let db_note = match &config.database_url {
        Some(_) => "from WHARF_DATABASE_URL".to_owned(),
        None => {
            let path = data_dir.join("wharf.db");
            config.database_url = Some(config::Secret(format!(
                "sqlite://{}?mode=rwc",
                path.display()
            )));
            format!("SQLite at {}", path.display())
        }
    };
    Ok((local_nats, nats_note, db_note))
}

/// Where everything `wharf dev` started can be reached.
fn print_banner(
    addr: std::net::SocketAddr,
    open: bool,
    nats_note: &str,
    db_note: &str,
    data_dir: &std::path::Path,
) {
    println!("Wharf dev is running (Ctrl-C stops it)");
    if open {
        println!("  !!! OPEN MODE: no credentials needed; every request is an admin of the");
        println!("  !!! `default` tenant. For local development only: it listens on {addr},");
        println!("  !!! a loopback address. Set gateway.auth.mode = \"required\" for API keys.");
    }
    if wharf_gateway::console::embedded() {
        println!("  Console    http://{addr}/");
    } else {
        println!(
            "  Console    not built in: `npm ci --prefix console && npm run build --prefix console`, then rebuild"
        );
    }
    println!("  API        http://{addr}/api/v1  (tools: http://{addr}/api/v1/tools)");
    println!("  WebSocket  ws://{addr}/ws/v1/tasks");
    println!("  NATS       {nats_note}");
    println!("  Database   {db_note}");
    println!("  Data       {}", data_dir.display());
    println!("  Try        wharf --api http://{addr} submit demo.sleep --arg seconds=5 --watch");
}

async fn recorder_task(
    recorder: wharf_recorder::Recorder,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    recorder.run_until_stopped(stop).await?;
    Ok(())
}

/// Waits for every part; the first failure stops the others.
async fn wait_all(
    mut parts: tokio::task::JoinSet<anyhow::Result<()>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut first_error = None;
    while let Some(done) = parts.join_next().await {
        let outcome = done.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(e) = outcome {
            tracing::error!(error = %e, "a part of wharf failed; stopping");
            shutdown.cancel();
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

async fn bootstrap_key(
    args: ServeArgs,
    name: String,
    tenant: String,
    role: String,
) -> anyhow::Result<()> {
    let config = load(&args, LogFormat::Pretty, "wharf-bootstrap")?;
    if !wharf_contract::valid_name(&name) || !wharf_contract::valid_name(&tenant) {
        anyhow::bail!("--name and --tenant: each {}", wharf_contract::NAME_RULE);
    }
    let known = wharf_contract::auth::builtin_role(&role).is_some()
        || config.gateway.auth.roles.contains_key(&role);
    if !known {
        anyhow::bail!("no role {role:?} (built-in or under gateway.auth.roles)");
    }
    let store = connect_store(&config).await?;
    let (info, secret, hash) =
        wharf_gateway::auth::mint_key(name, tenant, role, "bootstrap".into(), None);
    store.create_key(&info, &hash).await?;
    eprintln!(
        "key {} ({}, tenant {}); its secret, shown only now:",
        info.id, info.role, info.tenant
    );
    println!("{secret}");
    Ok(())
}

async fn gateway(args: ServeArgs) -> anyhow::Result<()> {
    let config = load(&args, LogFormat::Json, "wharf-gateway")?;
    let bus = connect_bus(&config, "wharf-gateway").await?;
    let store = connect_store(&config).await?;
    let gateway = wharf_gateway::Gateway::build(config.gateway(false), bus, store).await?;
    tracing::info!(addr = %gateway.local_addr(), "gateway listening");
    gateway.run_until_stopped(shutdown_on_signal()).await?;
    Ok(())
}

async fn worker(args: ServeArgs, id: Option<String>) -> anyhow::Result<()> {
    let config = load(&args, LogFormat::Json, "wharf-worker")?;
    let bus = connect_bus(&config, "wharf-worker").await?;
    let id = id.unwrap_or_else(default_worker_id);
    let worker = wharf_worker::Worker::new(config.worker(id, demo_server()?), bus.clone())?;
    probes::serve(args.metrics, bus).await?;
    worker.run_until_stopped(shutdown_on_signal()).await?;
    Ok(())
}

async fn recorder(args: ServeArgs) -> anyhow::Result<()> {
    let config = load(&args, LogFormat::Json, "wharf-recorder")?;
    let bus = connect_bus(&config, "wharf-recorder").await?;
    let store = connect_store(&config).await?;
    let recorder = wharf_recorder::Recorder::new(bus.clone(), store)
        .with_history(config.history.settings())
        .with_callbacks(config.callbacks.settings(false));
    probes::serve(args.metrics, bus).await?;
    recorder.run_until_stopped(shutdown_on_signal()).await?;
    Ok(())
}
