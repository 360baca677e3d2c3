mod identity;

/// mimalloc instead of the system allocator: the request path allocates
/// per layer and per request, and glibc's malloc under contention cost
/// far more CPU than the work itself (docs/PERFORMANCE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use cairn::settings::{Overrides, Settings};
use cairn::startup::Application;
use clap::{Parser, Subcommand};
use identity::StoreArgs;
use std::path::PathBuf;
use std::process::ExitCode;

/// Cairn: an event provenance registry.
#[derive(Parser)]
#[command(name = "cairn", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (embedded store under ./cairn-data unless --database-url is set).
    Serve {
        /// TOML config file; its keys are the setting names (listen, data_dir, ...).
        #[arg(long, env = "CAIRN_CONFIG")]
        config: Option<PathBuf>,
        /// development or production [default: development]. Production
        /// logs JSON and refuses staging aids such as fault injection.
        #[arg(long, value_parser = ["development", "production"])]
        mode: Option<String>,
        /// Address to listen on [default: 127.0.0.1:8042].
        #[arg(long)]
        listen: Option<String>,
        /// Data directory of the embedded store [default: ./cairn-data].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Largest accepted request body in bytes [default: 1048576].
        #[arg(long)]
        max_body_bytes: Option<usize>,
        /// Log format: text or json [default: json in production, text otherwise].
        #[arg(long)]
        log_format: Option<String>,
        /// Log filter, e.g. info or cairn=debug [default: info].
        #[arg(long)]
        log_level: Option<String>,
        /// PostgreSQL URL (postgres://user@host:5432/db); when set, the
        /// PostgreSQL store is used instead of the embedded one.
        #[arg(long)]
        database_url: Option<String>,
        /// Deepest GraphQL field nesting [default: 15].
        #[arg(long)]
        graphql_max_depth: Option<usize>,
        /// Highest GraphQL query complexity [default: 25000].
        #[arg(long)]
        graphql_max_complexity: Option<usize>,
        /// Largest `limit` of a GraphQL list field [default: 1000].
        #[arg(long)]
        graphql_max_list: Option<u32>,
        /// Largest GraphQL query document in bytes [default: 32768].
        #[arg(long)]
        graphql_max_query_bytes: Option<usize>,
        /// Authentication and access control: on or off [default: on].
        /// Off lets anyone do anything; for trusted test setups only.
        #[arg(long, value_parser = ["on", "off"])]
        auth: Option<String>,
    },
    /// Local users (the store directly; stop the embedded server first).
    User {
        #[command(subcommand)]
        action: identity::UserAction,
    },
    /// API keys.
    Key {
        #[command(subcommand)]
        action: identity::KeyAction,
    },
    /// Custom roles (built-in: admin, maintainer, producer, reader).
    Role {
        #[command(subcommand)]
        action: identity::RoleAction,
    },
    /// Grants of permissions on single receivers and groups.
    Grant {
        #[command(subcommand)]
        action: identity::GrantAction,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        action: identity::AuditAction,
    },
    /// The JWT signing keys.
    SigningKey {
        #[command(subcommand)]
        action: identity::SigningKeyAction,
    },
    /// The outbox relay's dead letters, read and changed in the store
    /// directly (the embedded store allows one process: stop the server
    /// first, or use the admin routes).
    DeadLetters {
        #[command(subcommand)]
        action: DeadLetterAction,
    },
}

#[derive(Subcommand)]
enum DeadLetterAction {
    /// List dead letters, oldest position first, one per line:
    /// sink, position, message id, attempts, failed at, last error.
    List {
        /// Only this sink's.
        #[arg(long)]
        sink: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Queue one dead letter to be delivered to its sink again.
    Replay {
        sink: String,
        /// Its outbox position (the second column of `list`).
        seq: u64,
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            mode,
            listen,
            data_dir,
            max_body_bytes,
            log_format,
            log_level,
            database_url,
            graphql_max_depth,
            graphql_max_complexity,
            graphql_max_list,
            graphql_max_query_bytes,
            auth,
        } => {
            let overrides = Overrides {
                mode,
                auth,
                listen,
                data_dir,
                max_body_bytes,
                log_format,
                log_level,
                database_url,
                graphql_max_depth,
                graphql_max_complexity,
                graphql_max_list,
                graphql_max_query_bytes,
            };
            let settings = match Settings::load(config.as_deref(), overrides) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("cairn: {e}");
                    return ExitCode::from(2);
                }
            };
            serve(settings)
        }
        Command::DeadLetters { action } => dead_letters(action),
        Command::User { action } => identity::user(action),
        Command::Key { action } => identity::key(action),
        Command::Role { action } => identity::role(action),
        Command::Grant { action } => identity::grant(action),
        Command::Audit { action } => identity::audit(action),
        Command::SigningKey { action } => identity::signing_key(action),
    }
}

fn dead_letters(action: DeadLetterAction) -> ExitCode {
    let (store_args, op) = match action {
        DeadLetterAction::List { sink, limit, store } => (store, Op::List { sink, limit }),
        DeadLetterAction::Replay { sink, seq, store } => (store, Op::Replay { sink, seq }),
    };
    identity::on_store(store_args, |_, opened| async move {
        let store = opened.store;
        let result = match op {
            Op::List { sink, limit } => store.dead_letters(sink, limit).await.map(|letters| {
                for l in letters {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        l.sink, l.seq, l.message_id, l.attempts, l.failed_at, l.last_error
                    );
                }
            }),
            Op::Replay { sink, seq } => store.replay_dead_letter(&sink, seq).await.map(|()| {
                println!("queued position {seq} for sink {sink:?}: the relay sends it again");
            }),
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cairn: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn serve(settings: Settings) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cairn: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Inside the runtime: trace exports run on it.
    let telemetry = {
        let _entered = runtime.enter();
        cairn::telemetry::init(&settings)
    };
    match cairn::limits::raise_open_files() {
        Ok(cairn::limits::Raised::To(from, to)) => {
            tracing::info!(from, to, "open-files limit raised to the hard limit");
        }
        Ok(cairn::limits::Raised::Already(limit)) => {
            tracing::debug!(limit, "open-files limit already at the hard limit");
        }
        Err(e) => tracing::warn!("{e}; connections beyond it will wait to be accepted"),
    }
    let code = runtime.block_on(async move {
        let shutdown = match shutdown_signal() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("cairn: installing signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        let app = match Application::build(settings).await {
            Ok(app) => app,
            Err(e) => {
                tracing::error!("cannot start: {e}");
                eprintln!("cairn: cannot start: {e}");
                return ExitCode::FAILURE;
            }
        };
        match app.run_until_stopped(shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("server error: {e}");
                ExitCode::FAILURE
            }
        }
    });
    // The spans of the last requests (and of the shutdown) are exported.
    runtime.block_on(telemetry.shutdown());
    code
}

enum Op {
    List { sink: Option<String>, limit: u32 },
    Replay { sink: String, seq: u64 },
}

/// Registers SIGINT and SIGTERM handlers now (so a signal that arrives
/// during start-up is not lost to the default action) and returns a future
/// that resolves on the first of them.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received; shutting down"),
            _ = terminate.recv() => tracing::info!("SIGTERM received; shutting down"),
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    Ok(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("interrupt received; shutting down");
        }
    })
}
