//! `Idempotency-Key` on the Quant chat request (docs/api.md, "Retries and
//! idempotency keys").
//!
//! A Cognite turn needs no key: it is a pure function of (cursor, input). A
//! Quant turn writes a session, so a request replayed after its turn
//! committed (a balancer retrying on another replica, a client retrying
//! after a lost response) would run the message again. With a key:
//!
//! * a synchronous turn records the key, a fingerprint of the request and
//!   its sealed response in the session, in the same compare-and-set write
//!   as the turn itself, so "committed" and "answer recorded" cannot be
//!   separated by a crash; a replay answers the recorded response;
//! * an async request gets an execution id (and, when it starts a session,
//!   a session id) derived from the key, so a replay finds the execution
//!   the first attempt queued instead of queueing another;
//! * the same key with a different request is refused (422), never
//!   answered with the other request's response.
//!
//! Keys are scoped to the caller: organisation, principal, `userId` and
//! agent are hashed with the key, so two callers never share one.

use sha2::{Digest, Sha256};

use crate::sessions::Scope;

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// Set on a response that was recorded by an earlier attempt.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// Longest key accepted, characters.
pub const MAX_KEY_CHARS: usize = 255;

/// Why a key is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the Idempotency-Key header must be 1 to 255 visible ASCII characters")]
    Malformed,
    #[error("send at most one Idempotency-Key header")]
    Repeated,
}

/// A validated key from the header value's bytes.
pub fn parse_key(value: &[u8]) -> Result<&str, KeyError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_KEY_CHARS
        && value.iter().all(|b| (0x21..=0x7e).contains(b));
    // Visible ASCII is UTF-8.
    std::str::from_utf8(value)
        .ok()
        .filter(|_| ok)
        .ok_or(KeyError::Malformed)
}

/// What an idempotent request is: who sent which key, and a fingerprint of
/// what it asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// base64url of (128 bits of) SHA-256 over the caller's scope and the key.
    key: String,
    /// base64url of (128 bits of) SHA-256 over the request's content.
    fingerprint: String,
    /// Whether the request is async (it then leaves no mark of its own in
    /// the session: its execution record is its mark).
    pub run_async: bool,
}

/// How long a committed key is remembered, seconds.
pub const KEEP_SECONDS: i64 = 86_400;

/// The parts of a chat request the fingerprint covers.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub session_id: Option<&'a str>,
    pub message: &'a str,
    pub system: Option<&'a str>,
    pub run_async: bool,
}

/// Where a key stands in a session's marks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Never committed here.
    No,
    /// Committed by this same request.
    Same,
    /// Committed by a request with other content.
    Different,
}

fn digest(pieces: &[&[u8]]) -> String {
    use base64::Engine;
    let mut h = Sha256::new();
    for p in pieces {
        // Length-prefixed, so that no two piece lists hash alike.
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&h.finalize()[..16])
}

fn opt(s: Option<&str>) -> Vec<u8> {
    match s {
        None => vec![0],
        Some(s) => [&[1u8][..], s.as_bytes()].concat(),
    }
}

impl Idempotency {
    pub fn new(
        key: &str,
        scope: &Scope,
        user_id: Option<&str>,
        agent_id: &str,
        req: Request<'_>,
    ) -> Self {
        let key = digest(&[
            b"agentgate-idempotency-key",
            scope.org.as_bytes(),
            scope.subject.as_bytes(),
            &opt(user_id),
            agent_id.as_bytes(),
            key.as_bytes(),
        ]);
        let fingerprint = digest(&[
            b"agentgate-idempotency-request",
            &opt(req.session_id),
            req.message.as_bytes(),
            &opt(req.system),
            &[u8::from(req.run_async)],
        ]);
        Self {
            key,
            fingerprint,
            run_async: req.run_async,
        }
    }

    /// The mark a committed turn leaves in its session.
    pub fn mark(&self) -> String {
        format!("idem:{}:{}", self.key, self.fingerprint)
    }

    /// Whether `marks` (a session's committed keys with their times) hold
    /// this key, committed less than [`KEEP_SECONDS`] before `now`.
    pub fn seen(&self, marks: &[(String, i64)], now: i64) -> Seen {
        let prefix = format!("idem:{}:", self.key);
        let live = marks
            .iter()
            .filter(|(_, at)| now - at < KEEP_SECONDS)
            .find_map(|(m, _)| m.strip_prefix(&prefix));
        match live {
            None => Seen::No,
            Some(f) if f == self.fingerprint => Seen::Same,
            Some(_) => Seen::Different,
        }
    }

    /// Whether `fingerprint` (as stored with an execution) is this request's.
    pub fn same_request(&self, fingerprint: Option<&str>) -> bool {
        fingerprint == Some(self.fingerprint.as_str())
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// A UUID derived from the key for `what` (a new session, an execution):
    /// the same for every attempt of one request.
    pub fn derived_id(&self, what: &str) -> String {
        let hash = Sha256::new()
            .chain_update(b"agentgate-idempotency-id\0")
            .chain_update(what.as_bytes())
            .chain_update([0])
            .chain_update(self.key.as_bytes())
            .finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&hash[..16]);
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(org: &str, subject: &str) -> Scope {
        Scope {
            org: org.into(),
            subject: subject.into(),
        }
    }

    fn req(message: &str) -> Request<'_> {
        Request {
            session_id: Some("s1"),
            message,
            system: None,
            run_async: false,
        }
    }

    #[test]
    fn keys_are_visible_ascii_of_bounded_length() {
        assert_eq!(parse_key(b"abc-123_XYZ.~"), Ok("abc-123_XYZ.~"));
        assert_eq!(parse_key(&[b'k'; 255]).map(str::len), Ok(255));
        for bad in [
            &b""[..],
            &[b'k'; 256],
            b"a b",
            b"a\tb",
            "é".as_bytes(),
            b"\x7f",
        ] {
            assert_eq!(parse_key(bad), Err(KeyError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn keys_are_scoped_to_their_caller_and_requests_fingerprinted() {
        let base = Idempotency::new("k", &scope("o", "s"), None, "a", req("hi"));
        assert_eq!(
            base,
            Idempotency::new("k", &scope("o", "s"), None, "a", req("hi"))
        );
        for other in [
            Idempotency::new("k2", &scope("o", "s"), None, "a", req("hi")),
            Idempotency::new("k", &scope("o2", "s"), None, "a", req("hi")),
            Idempotency::new("k", &scope("o", "s2"), None, "a", req("hi")),
            Idempotency::new("k", &scope("o", "s"), Some("u"), "a", req("hi")),
            Idempotency::new("k", &scope("o", "s"), None, "b", req("hi")),
        ] {
            assert_ne!(base.key, other.key);
            assert_ne!(base.derived_id("session"), other.derived_id("session"));
        }
        let changed = Idempotency::new("k", &scope("o", "s"), None, "a", req("hello"));
        assert_eq!(changed.key, base.key);
        assert_ne!(changed.fingerprint, base.fingerprint);
        assert_eq!(base.seen(&[], 100), Seen::No);
        let marks = [("job-1".to_owned(), 100), (base.mark(), 100)];
        assert_eq!(base.seen(&marks, 100 + KEEP_SECONDS - 1), Seen::Same);
        assert_eq!(
            base.seen(&marks, 100 + KEEP_SECONDS),
            Seen::No,
            "a day later"
        );
        assert_eq!(base.seen(&[(changed.mark(), 100)], 100), Seen::Different);
        assert_ne!(base.derived_id("session"), base.derived_id("execution"));
        assert!(uuid::Uuid::parse_str(&base.derived_id("session")).is_ok());
    }
}
