//! Conversation cursors: the `cv1` format of docs/cursor-format.md.
//!
//! [`CursorCodec`] seals a [`ConversationState`] into a token bound to a
//! [`CursorContext`] (project, agent, subject) and opens it again. The
//! submodules own one thing each: [`keyring`] the keys, [`token`] the
//! cryptographic envelope, [`claims`] the plaintext schema and [`compact`] the
//! growth policy.

pub mod claims;
pub mod compact;
pub mod keyring;
pub mod token;

use std::sync::Arc;

use crate::domain::ConversationState;
pub use compact::Budget;
pub use keyring::{KeyConfigError, Keyring};
use token::Plaintext;
pub use token::Purpose;

/// Maximum cursor lifetime, seconds.
pub const MAX_TTL: u64 = 86_400;
/// Allowed clock skew, seconds.
pub const SKEW: u64 = 60;
/// Plaintext padding bucket, bytes.
pub const PAD_BUCKET: usize = 256;
/// Largest padded plaintext, bytes.
pub const MAX_PLAINTEXT: usize = 1_048_576;
/// Longest token accepted, characters.
pub const MAX_TOKEN_CHARS: usize = 1_398_256;
/// Most keys in a keyring.
pub const MAX_KEYS: usize = 8;

/// The authenticated request context a cursor is bound to (its AAD).
#[derive(Debug, Clone, Copy)]
pub struct CursorContext<'a> {
    pub project: &'a str,
    pub agent: &'a str,
    pub subject: &'a str,
}

/// Why a cursor was refused as `invalid_cursor`; for logs and metrics only,
/// never shown to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidReason {
    Empty,
    Shape,
    UnsupportedVersion,
    UnknownKid,
    Encoding,
    Length,
    FarFuture,
    Commitment,
    Authentication,
    Claims,
}

impl InvalidReason {
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidReason::Empty => "empty",
            InvalidReason::Shape => "shape",
            InvalidReason::UnsupportedVersion => "unsupported_version",
            InvalidReason::UnknownKid => "unknown_kid",
            InvalidReason::Encoding => "encoding",
            InvalidReason::Length => "length",
            InvalidReason::FarFuture => "far_future_exp",
            InvalidReason::Commitment => "commitment",
            InvalidReason::Authentication => "authentication",
            InvalidReason::Claims => "claims",
        }
    }
}

/// Errors of the cursor layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("invalid cursor ({})", .0.as_str())]
    Invalid(InvalidReason),
    #[error("cursor expired")]
    Expired,
    #[error("cursor too large")]
    TooLarge,
    #[error("conversation older than the maximum conversation age")]
    ConversationExpired,
    #[error("conversation too large to seal")]
    ConversationTooLarge,
}

impl CursorError {
    /// A short name of why (a metrics label).
    pub fn reason(&self) -> &'static str {
        match self {
            CursorError::Invalid(r) => r.as_str(),
            CursorError::Expired => "expired",
            CursorError::TooLarge => "too_large",
            CursorError::ConversationExpired => "conversation_expired",
            CursorError::ConversationTooLarge => "conversation_too_large",
        }
    }
}

/// What `inspect` shows of an opened cursor.
#[derive(Debug)]
pub struct Inspection {
    pub kid: String,
    /// Expiry, unix seconds.
    pub exp: u64,
    /// When this cursor was sealed, unix seconds.
    pub issued_at: i64,
    pub token_chars: usize,
    /// The padded plaintext's size (what the ciphertext carries).
    pub plaintext_bytes: usize,
    pub state: ConversationState,
}

/// A sealed cursor and its expiry.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub token: String,
    pub exp: u64,
}

/// Seals and opens cursors with one keyring and one set of time limits.
#[derive(Debug, Clone)]
pub struct CursorCodec {
    keys: Arc<Keyring>,
    ttl: u64,
    max_age: u64,
}

impl CursorCodec {
    pub fn new(keys: Arc<Keyring>, ttl_seconds: u64, max_conversation_age_seconds: u64) -> Self {
        Self {
            keys,
            ttl: ttl_seconds.min(MAX_TTL),
            max_age: max_conversation_age_seconds,
        }
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keys
    }

    /// Apply the growth budget to `state` and seal it, expiring `ttl` from `now`.
    pub fn seal(
        &self,
        state: &mut ConversationState,
        budget: Budget,
        ctx: &CursorContext<'_>,
        now: i64,
    ) -> Result<Sealed, CursorError> {
        self.seal_state(Purpose::Cursor, state, budget, ctx, now, self.ttl)
    }

    /// Seal a conversation state for the store (a Quant session), expiring
    /// `ttl` from `now` (capped at [`MAX_TTL`]). It opens only with
    /// [`open_stored`](Self::open_stored), never as a client's cursor.
    pub fn seal_stored(
        &self,
        state: &mut ConversationState,
        budget: Budget,
        ctx: &CursorContext<'_>,
        now: i64,
        ttl: u64,
    ) -> Result<Sealed, CursorError> {
        self.seal_state(Purpose::StoredBlob, state, budget, ctx, now, ttl)
    }

    fn seal_state(
        &self,
        purpose: Purpose,
        state: &mut ConversationState,
        budget: Budget,
        ctx: &CursorContext<'_>,
        now: i64,
        ttl: u64,
    ) -> Result<Sealed, CursorError> {
        compact::drop_old_images(&mut state.history, budget.keep_images_turns);
        let mut plaintext = serialize(state, now)?;
        if plaintext.len() > budget.history_bytes {
            compact::fit_budget(&mut state.history, budget.history_bytes);
            plaintext = serialize(state, now)?;
        }
        if state.history.len() > claims::MAX_HISTORY_ITEMS
            || state.pending.len() > claims::MAX_PENDING
            || state.turn > claims::MAX_TURN
        {
            return Err(CursorError::ConversationTooLarge);
        }
        plaintext.pad();
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(CursorError::ConversationTooLarge);
        }
        let exp = u64::try_from(now).unwrap_or(0) + ttl.min(MAX_TTL);
        let token = token::seal(purpose, &self.keys, exp, ctx, &plaintext);
        Ok(Sealed { token, exp })
    }

    /// Verify, decrypt and validate a cursor for this request context.
    pub fn open(
        &self,
        token: &str,
        ctx: &CursorContext<'_>,
        now: i64,
    ) -> Result<ConversationState, CursorError> {
        self.open_state(Purpose::Cursor, token, ctx, now)
    }

    /// Open a state sealed by [`seal_stored`](Self::seal_stored). States
    /// stored before sealed blobs had their own purpose are still read (a
    /// store is written only by the gateway, so this admits nothing a client
    /// could forge); they are re-sealed with the blob purpose on the next write.
    pub fn open_stored(
        &self,
        token: &str,
        ctx: &CursorContext<'_>,
        now: i64,
    ) -> Result<ConversationState, CursorError> {
        match self.open_state(Purpose::StoredBlob, token, ctx, now) {
            Err(CursorError::Invalid(InvalidReason::Authentication)) => {
                self.open_state(Purpose::Cursor, token, ctx, now)
            }
            other => other,
        }
    }

    /// Open a client's cursor as [`open`](Self::open) does, keeping what an
    /// operator needs to see: the key id, the expiry, the sizes and the
    /// issue time. For `agentgate cursor inspect`.
    pub fn inspect(
        &self,
        token: &str,
        ctx: &CursorContext<'_>,
        now: i64,
    ) -> Result<Inspection, CursorError> {
        let (opened, claims) = self.open_claims(Purpose::Cursor, token, ctx, now)?;
        Ok(Inspection {
            kid: opened.kid.clone(),
            exp: opened.exp,
            issued_at: claims.iat,
            token_chars: token.len(),
            plaintext_bytes: opened.plaintext.len(),
            state: claims.into_state(),
        })
    }

    fn open_state(
        &self,
        purpose: Purpose,
        token: &str,
        ctx: &CursorContext<'_>,
        now: i64,
    ) -> Result<ConversationState, CursorError> {
        self.open_claims(purpose, token, ctx, now)
            .map(|(_, claims)| claims.into_state())
    }

    fn open_claims(
        &self,
        purpose: Purpose,
        token: &str,
        ctx: &CursorContext<'_>,
        now: i64,
    ) -> Result<(token::Opened, claims::Claims), CursorError> {
        let opened = token::open(purpose, &self.keys, token, ctx, now)?;
        let json =
            claims::unpad(&opened.plaintext).ok_or(CursorError::Invalid(InvalidReason::Claims))?;
        // serde_json, not sonic-rs: sonic-rs recurses through nested arrays
        // where the schema expects a string (to describe the error), and a
        // plaintext of 100,000 nested arrays overflows the stack
        // (validly_sealed_bad_claims_are_rejected).
        let claims: claims::Claims = serde_json::from_slice(json)
            .map_err(|_| CursorError::Invalid(InvalidReason::Claims))?;
        let skew = SKEW as i64;
        let valid = claims.v == claims::CLAIMS_VERSION
            && claims.iat <= now + skew
            && claims.oiat <= claims.iat
            && claims.turn <= claims::MAX_TURN
            && claims.hist.len() <= claims::MAX_HISTORY_ITEMS
            && claims.pending.len() <= claims::MAX_PENDING;
        if !valid {
            return Err(CursorError::Invalid(InvalidReason::Claims));
        }
        if now.saturating_sub(claims.oiat) > i64::try_from(self.max_age).unwrap_or(i64::MAX) {
            return Err(CursorError::ConversationExpired);
        }
        Ok((opened, claims))
    }
}

impl CursorCodec {
    /// Seal arbitrary bytes (async job inputs and results) under the active key,
    /// bound to `ctx`, expiring at `exp`.
    pub fn seal_blob(
        &self,
        bytes: &[u8],
        ctx: &CursorContext<'_>,
        exp: u64,
    ) -> Result<String, CursorError> {
        let mut padded = Plaintext::with_capacity(bytes.len() + PAD_BUCKET);
        std::io::Write::write_all(&mut padded, bytes)
            .unwrap_or_else(|_| unreachable!("writing to memory cannot fail"));
        padded.pad();
        if padded.len() > MAX_PLAINTEXT {
            return Err(CursorError::ConversationTooLarge);
        }
        Ok(token::seal(
            Purpose::StoredBlob,
            &self.keys,
            exp,
            ctx,
            &padded,
        ))
    }

    /// Open a blob sealed by [`seal_blob`](Self::seal_blob); returns it
    /// without padding. Blobs stored before they had their own purpose are
    /// still read (see [`open_stored`](Self::open_stored)).
    pub fn open_blob(
        &self,
        token: &str,
        ctx: &CursorContext<'_>,
        now: i64,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, CursorError> {
        let opened = match token::open(Purpose::StoredBlob, &self.keys, token, ctx, now) {
            Err(CursorError::Invalid(InvalidReason::Authentication)) => {
                token::open(Purpose::Cursor, &self.keys, token, ctx, now)?
            }
            other => other?,
        };
        let json =
            claims::unpad(&opened.plaintext).ok_or(CursorError::Invalid(InvalidReason::Claims))?;
        Ok(zeroize::Zeroizing::new(json.to_vec()))
    }
}

/// The claims as JSON, in a buffer that wipes itself (and every allocation
/// it outgrew). Written by sonic-rs (SIMD string escaping; serde_json's
/// byte-at-a-time escaping was the largest single cost of sealing a long
/// conversation). Its bytes are the same as serde_json's
/// (`claims_are_written_byte_for_byte_as_serde_json_writes_them`).
fn serialize(state: &ConversationState, now: i64) -> Result<Plaintext, CursorError> {
    let claims = claims::ClaimsRef::new(state, now);
    let mut buf = Plaintext::with_capacity(4096);
    sonic_rs::to_writer(&mut buf, &claims).map_err(|_| CursorError::ConversationTooLarge)?;
    Ok(buf)
}

#[cfg(test)]
mod tests;
