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
}

pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    store: Arc<dyn Store>,
    state: AppState,
    data_dir: PathBuf,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        cairn_api::metrics::install();
        let (store, where_): (Arc<dyn Store>, String) = match &settings.database_url {
            Some(url) => {
                let options = PostgresOptions {
                    max_connections: u32::try_from(settings.read_connections.max(2) * 2)
                        .unwrap_or(u32::MAX),
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
        let data_dir = std::fs::canonicalize(&settings.data_dir).unwrap_or(settings.data_dir);
        let state = AppState::new(
            store.clone(),
            ApiConfig {
                max_body_bytes: settings.max_body_bytes,
            },
        );
        tracing::info!("listening on http://{addr} with {where_}");
        Ok(Self {
            listener,
            addr,
            store,
            state,
            data_dir,
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
        tracing::info!("no longer accepting requests; closing the store");
        self.store.close().await;
        tracing::info!("store closed");
        served
    }
}
