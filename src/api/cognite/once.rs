//! Single use of a cursor that answers a tool confirmation: the first answer
//! runs the turn, the same answer again gets the same response, a different
//! one is 409. The claim is keyed on the cursor's salt (its identity) and
//! records a hash of the answer; it is a guard that gives the claim back when
//! dropped unless the turn committed, so an upstream error, a failed stream or
//! a client that went away never leaves the answer blocked.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::wire::{ActionAnswer, Answer};
use crate::store::Store;

/// The claim key of a confirmation cursor, from its salt; `None` for a token
/// that is not well formed (it has been opened already, so it always is).
pub fn key(token: &str) -> Option<String> {
    let salt = crate::cursor::token::salt(token)?;
    let mut h = Sha256::new();
    h.update(b"agentgate-once\0");
    h.update(salt);
    Some(hex(&h.finalize()))
}

/// The AAD agent slot of a claim's stored response: its key and the agent,
/// so that one claim's response never opens as another's.
pub fn slot(key: &str, agent: &str) -> String {
    format!("once:{key}:{agent}")
}

/// Whether the request answers at least one confirmation.
pub fn answers_confirmation(answers: &[ActionAnswer]) -> bool {
    answers
        .iter()
        .any(|a| matches!(a.answer, Answer::Confirmation(_)))
}

/// A hash of the canonical form of the confirmation decisions in a request.
pub fn answer_hash(answers: &[ActionAnswer]) -> String {
    let mut parts: Vec<String> = answers
        .iter()
        .filter_map(|a| match a.answer {
            Answer::Confirmation(allow) => Some(format!(
                "{}={}",
                a.action_id,
                if allow { "ALLOW" } else { "DENY" }
            )),
            Answer::ClientTool(_) => None,
        })
        .collect();
    parts.sort();
    hex(&Sha256::digest(parts.join("&").as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A claimed single use: given back when dropped, unless committed.
pub struct Guard {
    store: Arc<dyn Store>,
    key: String,
    armed: bool,
}

impl Guard {
    pub fn new(store: Arc<dyn Store>, key: String) -> Self {
        Self {
            store,
            key,
            armed: true,
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// The turn's result is stored under the claim: keep it.
    pub fn commit(mut self) {
        self.armed = false;
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let store = self.store.clone();
        let key = std::mem::take(&mut self.key);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if let Err(e) = store.release_once(&key).await {
                        tracing::warn!(error = %e, "could not release a confirmation claim");
                    }
                });
            }
            Err(_) => tracing::warn!("no runtime to release a confirmation claim"),
        }
    }
}
