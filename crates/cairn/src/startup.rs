//! Wiring: open the store, bind the listener, serve until told to stop, then
//! close the store cleanly.

use crate::settings::Settings;
use axum::serve::ListenerExt;
use cairn_api::{ApiConfig, AppState};
use cairn_store::Store;
use cairn_store::postgres::{PostgresOptions, PostgresStore};
use cairn_store::sqlite::{OpenError, SqliteOptions, SqliteStore};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("opening the store: {0}")]
    Store(#[from] OpenError),
    #[error("opening the PostgreSQL store named by database_url: {0}")]
    Postgres(#[from] cairn_store::postgres::OpenError),
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the store task failed: {0}")]
    Join(String),
    #[error("starting the live feed: {0}")]
    Live(String),
    #[error("configuring sinks: {0}")]
    Sinks(#[from] cairn_delivery::config::ConfigError),
}

pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    store: Arc<dyn Store>,
    state: AppState,
    data_dir: PathBuf,
    relay: Option<cairn_delivery::relay::Relay>,
    live: cairn_delivery::live::LiveFeed,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        cairn_api::metrics::install();
        let (store, where_) = open_store(&settings).await?;
        let listener = match TcpListener::bind(settings.listen).await {
            Ok(l) => l,
            Err(source) => {
                store.close().await;
                return Err(StartupError::Bind {
                    addr: settings.listen,
                    source,
                });
            }
        };
        let addr = listener.local_addr().map_err(|source| StartupError::Bind {
            addr: settings.listen,
            source,
        })?;
        let relay = match start_relay(&store, &settings.sinks).await {
            Ok(relay) => relay,
            Err(e) => {
                store.close().await;
                return Err(e);
            }
        };
        let live_config = cairn_delivery::live::LiveConfig {
            capacity: settings.live_capacity,
            poll: std::time::Duration::from_millis(settings.live_poll_ms),
            ..cairn_delivery::live::LiveConfig::default()
        };
        let live = match cairn_delivery::live::LiveFeed::start(store.clone(), live_config).await {
            Ok(live) => live,
            Err(e) => {
                if let Some(relay) = relay {
                    relay.stop().await;
                }
                store.close().await;
                return Err(StartupError::Live(e.to_string()));
            }
        };
        let data_dir = std::fs::canonicalize(&settings.data_dir).unwrap_or(settings.data_dir);
        let mut state = AppState::new(
            store.clone(),
            ApiConfig {
                max_body_bytes: settings.max_body_bytes,
                graphql: cairn_api::graphql::GraphqlConfig {
                    max_depth: settings.graphql_max_depth,
                    max_complexity: settings.graphql_max_complexity,
                    max_list: settings.graphql_max_list,
                    max_query_bytes: settings.graphql_max_query_bytes,
                },
            },
        )
        .with_live(live.handle());
        if let Some(relay) = &relay {
            state = state.with_sinks(relay.status_handle(), relay.wake_handle());
        }
        tracing::info!("listening on http://{addr} with {where_}");
        Ok(Self {
            listener,
            addr,
            store,
            state,
            data_dir,
            relay,
            live,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn data_dir(&self) -> &PathBuf {
        &self.data_dir
    }

    /// Serve until `shutdown` resolves; then stop accepting, let in-flight
    /// requests finish, and close the store (flushing the WAL).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), std::io::Error> {
        let listener = self.listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "setting TCP_NODELAY");
            }
        });
        let served = axum::serve(listener, cairn_api::app(self.state))
            .with_graceful_shutdown(shutdown)
            .await;
        if let Some(relay) = self.relay {
            relay.stop().await;
        }
        self.live.stop().await;
        tracing::info!("no longer accepting requests; closing the store");
        self.store.close().await;
        tracing::info!("store closed");
        served
    }
}

/// Build every configured sink, check it once (a failing check is logged:
/// the relay retries), and start one relay task per sink. `None` without
/// sinks: nothing changes then.
async fn start_relay(
    store: &Arc<dyn Store>,
    sinks: &[cairn_delivery::config::SinkConfig],
) -> Result<Option<cairn_delivery::relay::Relay>, StartupError> {
    if sinks.is_empty() {
        return Ok(None);
    }
    cairn_delivery::config::check_unique(sinks)?;
    let mut relay_sinks = Vec::with_capacity(sinks.len());
    for config in sinks {
        let sink = config.build()?;
        if let Err(e) = sink.health().await {
            tracing::warn!(sink = %config.name, error = %e, "sink is not reachable yet");
        }
        relay_sinks.push(cairn_delivery::relay::RelaySink {
            sink,
            required: config.required,
            retry: config.retry,
            breaker: config.breaker,
        });
    }
    tracing::info!(sinks = sinks.len(), "outbox relay started");
    Ok(Some(cairn_delivery::relay::Relay::start(
        store.clone(),
        relay_sinks,
        Arc::new(tokio::sync::Notify::new()),
    )))
}

/// Open the store the settings name (PostgreSQL when `database_url` is
/// set, the embedded store otherwise), with a description for logs.
pub async fn open_store(settings: &Settings) -> Result<(Arc<dyn Store>, String), StartupError> {
    let opened: (Arc<dyn Store>, String) = match &settings.database_url {
        Some(url) => {
            let options = PostgresOptions {
                max_connections: u32::try_from(
                    settings.read_connections.max(2) * 2 + settings.postgres_writers,
                )
                .unwrap_or(u32::MAX),
                writers: settings.postgres_writers,
                max_batch_events: settings.write_batch_max,
                write_queue_depth: settings.write_queue_depth,
                ..PostgresOptions::default()
            };
            let store = PostgresStore::open(url, options).await?;
            let where_ = format!("the PostgreSQL store at {}", store.target());
            (Arc::new(store), where_)
        }
        None => {
            let options = SqliteOptions {
                max_batch: settings.write_batch_max,
                queue_depth: settings.write_queue_depth,
                readers: settings.read_connections,
                ..SqliteOptions::default()
            };
            let dir = settings.data_dir.clone();
            let store = tokio::task::spawn_blocking(move || SqliteStore::open(&dir, options))
                .await
                .map_err(|e| StartupError::Join(e.to_string()))??;
            let dir = std::fs::canonicalize(&settings.data_dir)
                .unwrap_or_else(|_| settings.data_dir.clone());
            (
                Arc::new(store),
                format!("the embedded store in {}", dir.display()),
            )
        }
    };
    Ok(opened)
}
