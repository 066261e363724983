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
use crate::llm::ProviderRegistry;
use crate::store::Store;

/// Lifecycle as `/readyz` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Lifecycle {
    Starting = 0,
    Ready = 1,
    Draining = 2,
}

/// Everything a request handler needs, shared by all workers.
#[derive(Debug)]
pub struct AppState {
    pub settings: Settings,
    pub codec: CursorCodec,
    pub agents: AgentRegistry,
    pub providers: ProviderRegistry,
    pub clock: Arc<dyn Clock>,
    pub store: Arc<dyn Store>,
    pub(crate) lifecycle: AtomicU8,
}

impl AppState {
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
}
