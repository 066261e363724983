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

/// Everything a request handler needs, shared by all workers.
#[derive(Debug)]
pub struct AppState {
    pub settings: Settings,
    pub auth: crate::auth::Authenticator,
    pub codec: CursorCodec,
    pub agents: AgentRegistry,
    pub providers: ProviderRegistry,
    pub clock: Arc<dyn Clock>,
    pub store: Arc<dyn Store>,
    pub tools: Arc<ToolRegistry>,
    pub(crate) lifecycle: AtomicU8,
    /// When draining must be over (set on SIGTERM): requests still running
    /// then end with a `not_ready` error instead of being cut.
    pub(crate) drain: tokio::sync::watch::Sender<Option<tokio::time::Instant>>,
}

impl AppState {
    /// What a turn of agent `id` runs with.
    pub fn turn_context(&self, id: &str) -> Result<TurnContext, AgentError> {
        let agent = self
            .agents
            .get(id)
            .ok_or_else(|| AgentError::NotFound(id.to_owned()))?;
        let route = self
            .providers
            .route(&agent.id)
            .ok_or(AgentError::NoProvider)?;
        Ok(TurnContext {
            agent,
            route,
            tools: self.tools.clone(),
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
