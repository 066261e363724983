//! Building and running the application: bind (port 0 works), serve, drain.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};

use crate::api::{self, AppState, Lifecycle};
use crate::clock::Clock;
use crate::config::{Settings, StoreKind};
use crate::cursor::{CursorCodec, Keyring};
use crate::jobs::Workers;
use crate::store::Store;
use crate::store::memory::MemoryStore;
use crate::store::redis::RedisStore;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Catalog(#[from] crate::app::CatalogError),
    #[error("store: {0}")]
    Store(String),
}

/// A bound, not yet running, gateway.
pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    workers: Workers,
}

impl Application {
    /// Bind the listener and assemble the app. `env` resolves provider
    /// `api_key_env` variables (the process environment in production).
    pub fn build(
        settings: Settings,
        keys: Keyring,
        clock: Arc<dyn Clock>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, StartupError> {
        crate::install_crypto_provider();
        crate::observe::install();
        let catalog = crate::app::Catalog::build(&settings, env)?;
        let codec = CursorCodec::new(
            Arc::new(keys),
            settings.cursor.ttl_seconds,
            settings.cursor.max_conversation_age_seconds,
        );
        let listener =
            TcpListener::bind(&settings.server.listen).map_err(|source| StartupError::Bind {
                addr: settings.server.listen.clone(),
                source,
            })?;
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let grace = settings.server.shutdown_grace_seconds;
        let workers = settings.server.workers;
        let max_connections = settings.server.max_connections;
        if settings.store.kind == StoreKind::Memory && settings.server.replicas > 1 {
            tracing::warn!(
                replicas = settings.server.replicas,
                "THE MEMORY STORE IS PER REPLICA: Quant sessions and async executions live only in \
                 the replica that created them. Use a shared store when running several replicas."
            );
        }
        let store: Arc<dyn Store> = match settings.store.kind {
            StoreKind::Memory => Arc::new(MemoryStore::with_limits(
                settings.store.max_entries,
                settings.store.max_bytes,
            )),
            StoreKind::Redis => Arc::new(
                RedisStore::open_with(
                    &settings.store.redis_nodes(),
                    settings.store.redis_cluster(),
                    settings.store.sentinel_master.as_deref(),
                    &settings.store.prefix,
                )
                .map_err(|e| StartupError::Store(e.to_string()))?,
            ),
        };
        let app_state = Arc::new(AppState::new(settings, catalog, codec, clock, store));
        let job_workers = crate::jobs::start_workers(app_state.clone());
        let state = web::Data::from(app_state);

        let app_state = state.clone();
        let replica = state.settings.server.replica_id.clone();
        let mut server = HttpServer::new(move || {
            // Names the replica that answered (for operators and the cluster tests).
            let replica_header = actix_web::middleware::Condition::new(
                replica.is_some(),
                actix_web::middleware::DefaultHeaders::new()
                    .add((api::REPLICA_HEADER, replica.clone().unwrap_or_default())),
            );
            App::new()
                .app_data(app_state.clone())
                .wrap(from_fn(api::request_id::middleware))
                .wrap(replica_header)
                .configure(api::routes)
                .default_service(web::to(api::not_found::<api::Cognite>))
        })
        .on_connect(|conn, _ext| {
            if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
                // Small SSE writes must not wait for delayed ACKs.
                let _ = tcp.set_nodelay(true);
            }
        })
        .disable_signals()
        .max_connections(max_connections)
        .shutdown_timeout(grace);
        if workers > 0 {
            server = server.workers(workers);
        }
        let server = server
            .listen(listener)
            .map_err(|source| StartupError::Bind {
                addr: format!("port {port}"),
                source,
            })?
            .run();
        Ok(Self {
            port,
            server,
            state,
            workers: job_workers,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server (gracefully with `stop(true)`).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// The async job workers (tests abort them to simulate a dying replica).
    pub fn workers(&self) -> &Workers {
        &self.workers
    }

    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// Serve until the server stops or SIGTERM/SIGINT arrives; then report
    /// not-ready, close the listener at once, and return as soon as the
    /// requests in flight have finished. `shutdown_grace_seconds` is a
    /// ceiling: requests still running then are cut.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Self {
            port,
            server,
            state,
            workers,
        } = self;
        // Handlers first: a signal that arrives once "listening" is logged
        // must drain, not kill the process with the default disposition.
        let mut signals = Signals::register()?;
        let handle = server.handle();
        state.set_lifecycle(Lifecycle::Ready);
        tracing::info!(port, "listening");
        let counts = tokio::spawn(log_open_counts(state.clone().into_inner()));
        let mut server = std::pin::pin!(server);
        let signal = loop {
            tokio::select! {
                result = &mut server => {
                    counts.abort();
                    return result;
                }
                signal = signals.recv() => match signal {
                    Received::Reload => match state.reload() {
                        Ok(agents) => tracing::info!(agents, "configuration reloaded (SIGHUP)"),
                        Err(e) => tracing::error!(
                            error = %e,
                            "configuration reload failed; the current configuration stays"
                        ),
                    },
                    Received::Stop(name) => break name,
                },
            }
        };
        tracing::info!(
            signal,
            "shutting down: listener closed, draining in-flight requests"
        );
        let grace = Duration::from_secs(state.settings.server.shutdown_grace_seconds);
        // Requests (streams above all) still running shortly before the
        // grace period ends are ended with an error the client can act
        // on, rather than cut when the workers stop.
        let margin = (grace / 4).min(Duration::from_secs(1));
        state.begin_drain(tokio::time::Instant::now() + grace - margin);
        // The stop command is carried out by the server future itself,
        // so both are polled together: awaiting the handle alone would
        // leave the listener open until the timeout.
        let drained = tokio::time::timeout(grace + Duration::from_secs(1), async {
            let (_, result) = tokio::join!(handle.stop(true), &mut server);
            result
        })
        .await;
        // Unfinished jobs stay leased in a shared store and are reclaimed elsewhere.
        workers.abort();
        counts.abort();
        log_counts(&state.codec);
        match drained {
            Ok(result) => {
                tracing::info!("stopped");
                result
            }
            Err(_) => {
                tracing::warn!("stopped with requests still in flight after the grace period");
                Ok(())
            }
        }
    }
}

/// How often the per-key open counts are logged (when they changed).
const OPEN_COUNTS_EVERY: Duration = Duration::from_secs(300);

/// Log each key's open count every [`OPEN_COUNTS_EVERY`] when it changed:
/// before removing a retired key, an operator waits for its count to stop
/// moving on every replica (docs/operations.md).
async fn log_open_counts(state: Arc<AppState>) {
    let mut last = Vec::new();
    loop {
        tokio::time::sleep(OPEN_COUNTS_EVERY).await;
        let now: Vec<u64> = state
            .codec
            .keyring()
            .open_counts()
            .iter()
            .map(|(_, n)| *n)
            .collect();
        if now != last {
            log_counts(&state.codec);
            last = now;
        }
    }
}

fn log_counts(codec: &CursorCodec) {
    for (kid, opened) in codec.keyring().open_counts() {
        tracing::info!(target: "agentgate::cursor", kid, opened, "cursor opens by key since start");
    }
}

/// What a signal asks for.
enum Received {
    /// SIGHUP: reload the configuration.
    Reload,
    /// SIGTERM or SIGINT (named): stop.
    Stop(&'static str),
}

/// SIGTERM, SIGINT and SIGHUP, listened for from the moment they are registered.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn register() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
                hup: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// The next signal received.
    async fn recv(&mut self) -> Received {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => Received::Stop("SIGTERM"),
                _ = self.int.recv() => Received::Stop("SIGINT"),
                _ = self.hup.recv() => Received::Reload,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Received::Stop("SIGINT")
        }
    }
}
