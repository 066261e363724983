//! The application state shared by every request handler and background job.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

/// The initial lifecycle value for [`AppState::lifecycle`].
pub(crate) fn starting() -> AtomicU8 {
    AtomicU8::new(Lifecycle::Starting as u8)
}

use crate::agent::AgentRegistry;
use crate::clock::Clock;
use crate::config::Settings;
use crate::cursor::CursorCodec;

use crate::error::{ApiError, ErrorCode};
use crate::llm::ProviderRegistry;
use crate::runtime::TurnContext;
use crate::store::Store;
use crate::tools::ToolRegistry;

/// Lifecycle as `/readyz` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Lifecycle {
    Starting = 0,
    Ready = 1,
    Draining = 2,
}

/// Why a turn cannot start for an agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    #[error("no agent {0:?}")]
    NotFound(String),
    #[error("the agent's provider is not configured")]
    NoProvider,
}

/// What a configuration reload swaps, as one unit: agents, their providers,
/// tools, the credentials and the rate limits. A request holds the catalog it started with
/// until it ends, so requests in flight finish on the old set.
#[derive(Debug)]
pub struct Catalog {
    pub auth: crate::auth::Authenticator,
    pub agents: AgentRegistry,
    pub providers: ProviderRegistry,
    pub tools: Arc<ToolRegistry>,
    pub rate_limits: crate::config::RateLimitSettings,
}

/// Why a catalog could not be built from settings.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Provider(#[from] crate::llm::ProviderError),
    #[error("{0}")]
    Tools(String),
    #[error("auth: {0}")]
    Auth(String),
}

impl Catalog {
    /// Build every registry from validated `settings`; `env` resolves
    /// provider keys and tool headers. MCP discovery starts here.
    pub fn build(
        settings: &Settings,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, CatalogError> {
        let providers = ProviderRegistry::new(&settings.providers, &settings.agents, env)?;
        let tools = Arc::new(
            ToolRegistry::new(&settings.tools, env)
                .map_err(|e| CatalogError::Tools(e.to_string()))?,
        );
        tools.start_discovery();
        Ok(Self {
            auth: crate::auth::Authenticator::new(&settings.auth).map_err(CatalogError::Auth)?,
            agents: AgentRegistry::new(&settings.agents),
            providers,
            tools,
            rate_limits: settings.rate_limits.clone(),
        })
    }
}

/// Everything a request handler needs, shared by all workers.
#[derive(Debug)]
pub struct AppState {
    /// The settings loaded at start. `[[agents]]`, `[[providers]]`,
    /// `[[tools]]` and `[auth]` are reloadable: the current ones are in
    /// [`catalog`](Self::catalog).
    pub settings: Settings,
    catalog: std::sync::RwLock<Arc<Catalog>>,
    /// The config file, for reloads (none when built from text).
    pub config_path: std::sync::OnceLock<std::path::PathBuf>,
    pub codec: CursorCodec,
    pub clock: Arc<dyn Clock>,
    pub store: Arc<dyn Store>,
    /// The store as the rate limits use it (bounded, failing open).
    pub counters: Arc<crate::limits::Counters>,
    pub(crate) lifecycle: AtomicU8,
    /// When draining must be over (set on SIGTERM): requests still running
    /// then end with a `not_ready` error instead of being cut.
    pub(crate) drain: tokio::sync::watch::Sender<Option<tokio::time::Instant>>,
}

impl AppState {
    pub fn new(
        settings: Settings,
        catalog: Catalog,
        codec: CursorCodec,
        clock: Arc<dyn Clock>,
        store: Arc<dyn Store>,
    ) -> Self {
        Self {
            settings,
            catalog: std::sync::RwLock::new(Arc::new(catalog)),
            config_path: std::sync::OnceLock::new(),
            codec,
            clock,
            counters: crate::limits::Counters::new(store.clone()),
            store,
            lifecycle: starting(),
            drain: tokio::sync::watch::channel(None).0,
        }
    }

    /// The current agents, providers, tools and credentials.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-read the config file and swap in its agents, providers, tools and
    /// `[auth]` at once; returns how many agents it has. Requests in flight
    /// finish on the set they started with. An invalid file changes nothing
    /// (the error names the key). Other sections keep their start-up values
    /// (a restart applies them); cursor keys keep their own rotation procedure.
    pub fn reload(&self) -> Result<usize, String> {
        let path = self
            .config_path
            .get()
            .ok_or("the gateway was not started from a config file")?;
        let settings = Settings::load(path).map_err(|e| e.to_string())?;
        let env = |name: &str| std::env::var(name).ok();
        let catalog = Catalog::build(&settings, &env).map_err(|e| e.to_string())?;
        let agents = settings.agents.len();
        self.swap_catalog(catalog);
        Ok(agents)
    }

    /// Replace the catalog; requests that hold the old one finish on it.
    pub fn swap_catalog(&self, catalog: Catalog) {
        *self.catalog.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(catalog);
    }

    /// What a turn of agent `id` runs with.
    pub fn turn_context(&self, id: &str) -> Result<TurnContext, AgentError> {
        let catalog = self.catalog();
        let agent = catalog
            .agents
            .get(id)
            .ok_or_else(|| AgentError::NotFound(id.to_owned()))?;
        let route = catalog
            .providers
            .route(&agent.id)
            .ok_or(AgentError::NoProvider)?;
        Ok(TurnContext {
            agent,
            route,
            tools: catalog.tools.clone(),
            meter: None,
        })
    }

    pub fn lifecycle(&self) -> Lifecycle {
        match self.lifecycle.load(Ordering::SeqCst) {
            0 => Lifecycle::Starting,
            1 => Lifecycle::Ready,
            _ => Lifecycle::Draining,
        }
    }

    pub fn set_lifecycle(&self, l: Lifecycle) {
        self.lifecycle.store(l as u8, Ordering::SeqCst);
    }

    /// Start draining: what is still running at `deadline` ends with an error.
    pub fn begin_drain(&self, deadline: tokio::time::Instant) {
        self.set_lifecycle(Lifecycle::Draining);
        self.drain.send_replace(Some(deadline));
    }

    /// Resolves when a drain's deadline has passed (never, if no drain starts).
    pub fn drained(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.drain.subscribe();
        async move {
            loop {
                let deadline = *rx.borrow_and_update();
                if let Some(deadline) = deadline {
                    tokio::time::sleep_until(deadline).await;
                    return;
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }

    /// `work`, unless the drain deadline passes first: then 503 `not_ready`.
    pub async fn unless_drained<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        tokio::select! {
            result = work => result,
            () = self.drained() => Err(shutting_down()),
        }
    }
}

/// The error of a request still running when a draining replica stops.
pub fn shutting_down() -> ApiError {
    let mut e = ApiError::new(
        ErrorCode::NotReady,
        "this replica is shutting down; retry the request",
    );
    e.retry_after = Some(1);
    e
}
