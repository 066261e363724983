//! The claims inside a cursor (docs/cursor-format.md "Plaintext", docs/cursor-claims.md).
//!
//! Sealing serialises borrowed state (no clone of the history); opening
//! deserialises straight into typed structs (never a `serde_json::Value` tree).

use serde::{Deserialize, Serialize};

use crate::domain::{ConversationState, HistoryItem, PendingAction};

/// The claims schema version this build seals.
pub const CLAIMS_VERSION: u32 = 1;
/// Upper bounds checked on open and guaranteed on seal.
pub const MAX_HISTORY_ITEMS: usize = 10_000;
pub const MAX_PENDING: usize = 64;
pub const MAX_TURN: u64 = 1_000_000;

#[derive(Serialize)]
pub(crate) struct ClaimsRef<'a> {
    pub v: u32,
    pub cid: &'a str,
    pub turn: u64,
    pub iat: i64,
    pub oiat: i64,
    pub cfg: &'a str,
    pub hist: &'a [HistoryItem],
    pub pending: &'a [PendingAction],
}

impl<'a> ClaimsRef<'a> {
    pub fn new(state: &'a ConversationState, iat: i64) -> Self {
        Self {
            v: CLAIMS_VERSION,
            cid: &state.id,
            turn: state.turn,
            iat,
            oiat: state.started_at,
            cfg: &state.cfg,
            hist: &state.history,
            pending: &state.pending,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Claims {
    pub v: u32,
    pub cid: String,
    pub turn: u64,
    pub iat: i64,
    pub oiat: i64,
    pub cfg: String,
    pub hist: Vec<HistoryItem>,
    pub pending: Vec<PendingAction>,
}

impl Claims {
    pub fn into_state(self) -> ConversationState {
        ConversationState {
            id: self.cid,
            turn: self.turn,
            started_at: self.oiat,
            cfg: self.cfg,
            history: self.hist,
            pending: self.pending,
        }
    }
}

/// Strip the space padding; the JSON must end in `}` right before it.
pub(crate) fn unpad(padded: &[u8]) -> Option<&[u8]> {
    let end = padded.iter().rposition(|&b| b != b' ')? + 1;
    (padded[end - 1] == b'}' && padded.len() - end < super::PAD_BUCKET).then(|| &padded[..end])
}
