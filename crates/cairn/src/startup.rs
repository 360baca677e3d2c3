//! Wiring: open the store, bind the listener, serve until told to stop, then
//! close the store cleanly.

use crate::settings::Settings;
use axum::serve::ListenerExt;
use cairn_api::auth::{Auth, accounts};
use cairn_api::{ApiConfig, AppState};
use cairn_store::Store;
use cairn_store::access::AccessStore;
use cairn_store::idempotency::IdempotencyStore;
use cairn_store::postgres::{PostgresOptions, PostgresStore};
use cairn_store::sqlite::{OpenError, SqliteOptions, SqliteStore};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
    #[error("starting authentication: {0}")]
    Auth(String),
    #[error("configuring sinks: {0}")]
    Sinks(#[from] cairn_delivery::config::ConfigError),
    #[error("setting up TLS: {0}")]
    Tls(String),
    #[error("{0}")]
    Settings(#[from] crate::settings::SettingsError),
}

pub struct Application {
    listener: TcpListener,
    /// Serve HTTPS with this (`tls_cert_file`, `tls_key_file`).
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// Where the first-start admin key was written, if this start made one.
    admin_key_file: Option<PathBuf>,
    addr: SocketAddr,
    store: Arc<dyn Store>,
    state: AppState,
    data_dir: PathBuf,
    relay: Option<cairn_delivery::relay::Relay>,
    live: cairn_delivery::live::LiveFeed,
    /// `header_read_timeout_ms`.
    header_read_timeout: std::time::Duration,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        cairn_api::metrics::install();
        settings.validate_edge()?;
        let tls = match (&settings.tls_cert_file, &settings.tls_key_file) {
            (Some(cert), Some(key)) => {
                Some(crate::tls::server_config(cert, key).map_err(StartupError::Tls)?)
            }
            _ => None,
        };
        let opened = open_store(&settings).await?;
        let (store, where_) = (opened.store, opened.description);
        let auth = match start_auth(&settings, opened.access).await {
            Ok(auth) => auth,
            Err(e) => {
                store.close().await;
                return Err(e);
            }
        };
        let admin_key_file = match bootstrap(&settings, &auth).await {
            Ok(file) => file,
            Err(e) => {
                store.close().await;
                return Err(e);
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
        let idempotency = settings.idempotency_config();
        let rate_limit = settings.rate_limit_config();
        let edge = settings.edge_config();
        let observability = settings.observability_config();
        let data_dir = std::fs::canonicalize(&settings.data_dir).unwrap_or(settings.data_dir);
        // Store calls as spans (issue 6), for the request path only: the
        // relay's polls would otherwise be a trace each. Only when a layer
        // could record one (store spans are debug level: an OTLP exporter,
        // or a log filter at debug); otherwise every store call would pay
        // for the view (a boxed future) and its spans would never be made.
        let spans_recordable =
            tracing::level_filters::LevelFilter::current() >= tracing::Level::DEBUG;
        let api_store: Arc<dyn Store> = if settings.trace_spans && spans_recordable {
            Arc::new(cairn_api::traced::TracedStore::new(store.clone()))
        } else {
            store.clone()
        };
        let mut state = AppState::new(
            api_store,
            ApiConfig {
                production: settings.mode == crate::settings::Mode::Production,
                max_body_bytes: settings.max_body_bytes,
                graphql: cairn_api::graphql::GraphqlConfig {
                    max_depth: settings.graphql_max_depth,
                    max_complexity: settings.graphql_max_complexity,
                    max_list: settings.graphql_max_list,
                    max_query_bytes: settings.graphql_max_query_bytes,
                },
                idempotency,
                rate_limit,
                edge,
                observability,
            },
            auth,
        )
        .with_live(live.handle())
        .with_idempotency(opened.idempotency);
        if let Some(relay) = &relay {
            state = state.with_sinks(relay.status_handle(), relay.wake_handle());
        }
        let header_read_timeout = std::time::Duration::from_millis(settings.header_read_timeout_ms);
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!("listening on {scheme}://{addr} with {where_}");
        Ok(Self {
            listener,
            tls,
            admin_key_file,
            addr,
            store,
            state,
            data_dir,
            relay,
            live,
            header_read_timeout,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn data_dir(&self) -> &PathBuf {
        &self.data_dir
    }

    /// This node's authentication state (signing keys, settings).
    pub fn auth(&self) -> Arc<Auth> {
        self.state.auth.clone()
    }

    /// The file this start wrote the first admin key to, if it made one.
    pub fn admin_key_file(&self) -> Option<&PathBuf> {
        self.admin_key_file.as_ref()
    }

    /// Serve until `shutdown` resolves; then stop accepting, let in-flight
    /// requests finish, and close the store (flushing the WAL).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), std::io::Error> {
        let app = cairn_api::service(self.state);
        let served = match self.tls {
            // TCP_NODELAY is set on accept.
            Some(config) => match crate::tls::TlsListener::new(self.listener, config) {
                Ok(listener) => {
                    serve(listener, app, self.header_read_timeout, shutdown).await;
                    Ok(())
                }
                Err(e) => Err(e),
            },
            None => {
                let listener = self.listener.tap_io(|tcp| {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %e, "setting TCP_NODELAY");
                    }
                });
                serve(listener, app, self.header_read_timeout, shutdown).await;
                Ok(())
            }
        };
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

/// Serve `app` on `listener` until `shutdown` resolves, then stop
/// accepting and wait for open connections to finish their requests.
///
/// What `axum::serve` does, with hyper-util's builder given a timer, so
/// that hyper's `header_read_timeout` is in effect: a request head must
/// arrive within `header_read_timeout` of its first byte or, on a
/// kept-alive connection, of the last answer. (`axum::serve` gives hyper no
/// timer, so a client that sent part of a head and then nothing held its
/// connection for ever.) HTTP/1.1 with upgrades (GraphQL over WebSocket)
/// and HTTP/2; each request carries `ConnectInfo<SocketAddr>`.
async fn serve<L, S>(
    mut listener: L,
    app: S,
    header_read_timeout: std::time::Duration,
    shutdown: impl Future<Output = ()>,
) where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
    S: tower::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (io, addr) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let service = tower::ServiceExt::map_request(
            app.clone(),
            move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(addr));
                req.map(axum::body::Body::new)
            },
        );
        let service = hyper_util::service::TowerToHyperService::new(service);
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::trace!(%addr, error = %e, "connection ended with an error");
            }
        });
    }
    // No more connections; those open finish their requests (idle ones
    // close at once).
    drop(listener);
    graceful.shutdown().await;
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

/// Load the signing keys (making the first one if there is none); with
/// authentication off, say so loudly.
async fn start_auth(
    settings: &Settings,
    access: Arc<dyn AccessStore>,
) -> Result<Arc<Auth>, StartupError> {
    let config = settings.auth_config();
    if !config.enabled {
        tracing::warn!(
            "AUTHENTICATION IS OFF (--auth off / CAIRN_AUTH=off): anyone who can reach \
             this server can read and write everything, including identities. \
             Never run like this outside a trusted test setup."
        );
    }
    let auth = Auth::start(config, access)
        .await
        .map_err(StartupError::Auth)?;
    Ok(Arc::new(auth))
}

/// The file the first admin key is written to.
pub fn admin_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.key")
}

/// With authentication on and no principal stored yet: make an admin API
/// key, write it to `<data-dir>/admin.key` (mode 0600) and store only its
/// hash. The key itself is never logged.
async fn bootstrap(settings: &Settings, auth: &Auth) -> Result<Option<PathBuf>, StartupError> {
    if !auth.enabled() {
        return Ok(None);
    }
    std::fs::create_dir_all(&settings.data_dir).map_err(|e| {
        StartupError::Auth(format!(
            "creating the data directory {}: {e}",
            settings.data_dir.display()
        ))
    })?;
    let path = admin_key_path(&settings.data_dir);
    let pending = settings.data_dir.join(".admin.key.pending");
    let made = accounts::bootstrap_admin_key(auth, |key| write_secret(&pending, key))
        .await
        .map_err(|e| StartupError::Auth(format!("making the first admin key: {}", e.message())))?;
    if !made {
        let _ = std::fs::remove_file(&pending);
        return Ok(None);
    }
    std::fs::rename(&pending, &path).map_err(|e| {
        StartupError::Auth(format!(
            "moving the first admin key to {}: {e} (it is in {})",
            path.display(),
            pending.display()
        ))
    })?;
    let shown = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
    tracing::warn!(
        file = %shown.display(),
        "first start with authentication on: an admin API key was created and written to {} \
         (readable by this user only). Use it as `Authorization: Bearer $(cat {})`, create \
         users and keys, then store it safely or revoke it.",
        shown.display(),
        shown.display()
    );
    Ok(Some(path))
}

/// Write `secret` plus a newline to a new file readable by its owner only.
fn write_secret(path: &Path, secret: &str) -> Result<(), String> {
    use std::io::Write;
    let _ = std::fs::remove_file(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| format!("creating {}: {e}", path.display()))?;
    file.write_all(format!("{secret}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

/// An opened store: the registry and the identities, one database.
pub struct OpenedStore {
    pub store: Arc<dyn Store>,
    pub access: Arc<dyn AccessStore>,
    /// `Idempotency-Key` claims and responses.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// Where it is, for logs.
    pub description: String,
}

/// Open the store the settings name (PostgreSQL when `database_url` is
/// set, the embedded store otherwise), with a description for logs.
pub async fn open_store(settings: &Settings) -> Result<OpenedStore, StartupError> {
    let opened: OpenedStore = match &settings.database_url {
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
            let store = Arc::new(PostgresStore::open(url, options).await?);
            let description = format!("the PostgreSQL store at {}", store.target());
            OpenedStore {
                store: store.clone(),
                access: store.clone(),
                idempotency: store,
                description,
            }
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
            let store = Arc::new(store);
            OpenedStore {
                store: store.clone(),
                access: store.clone(),
                idempotency: store,
                description: format!("the embedded store in {}", dir.display()),
            }
        }
    };
    Ok(opened)
}
