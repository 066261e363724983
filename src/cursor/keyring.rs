//! Cursor master keys: parsing, validation and lookup by kid.
//!
//! Keys come from `AGENTGATE_CURSOR_KEYS` or the file named by
//! `AGENTGATE_CURSOR_KEYS_FILE`, as `kid:BASE64[,kid:BASE64...]`; the first key
//! is active (seals and opens), the others only open. Key bytes never appear in
//! `Debug` output or error messages.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::MAX_KEYS;

/// A keyset configuration error. Messages name the kid or position, never key bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyConfigError {
    #[error("no cursor keys given")]
    Empty,
    #[error("cursor key entry {0} is not of the form kid:base64")]
    Malformed(usize),
    #[error("cursor key id {0:?} must be 1 to 32 characters of [A-Za-z0-9_-]")]
    BadKid(String),
    #[error("cursor key {0:?} is not valid base64")]
    BadBase64(String),
    #[error("cursor key {kid:?} is {len} bytes; it must be exactly 32")]
    BadLength { kid: String, len: usize },
    #[error("cursor key id {0:?} is given twice")]
    DuplicateKid(String),
    #[error("cursor keys {0:?} and {1:?} have the same key bytes")]
    DuplicateKey(String, String),
    #[error("at most {MAX_KEYS} cursor keys may be configured, got {0}")]
    TooMany(usize),
    #[error(
        "cursor key {0:?} is not random (all zero, or too few distinct bytes); generate one with `agentgate keygen`"
    )]
    Weak(String),
}

/// Fewest distinct byte values a configured key must have. 32 random bytes
/// have about 30; fewer than 16 happens by chance with probability below
/// 10^-15, and catches all-zero, repeated-byte and hand-typed keys.
const MIN_DISTINCT_BYTES: usize = 16;

/// Whether `key` looks like the output of a random generator.
fn looks_random(key: &[u8; 32]) -> bool {
    let mut seen = [false; 256];
    for &b in key {
        seen[usize::from(b)] = true;
    }
    seen.iter().filter(|&&s| s).count() >= MIN_DISTINCT_BYTES
}

/// Whether `kid` matches `[A-Za-z0-9_-]{1,32}`.
pub fn valid_kid(kid: &str) -> bool {
    (1..=32).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// One master key, held as its HKDF pseudo-random key (extract is done once);
/// the PRK is wiped when the key is dropped.
pub struct MasterKey {
    kid: String,
    prk: Zeroizing<[u8; 32]>,
    /// Short public fingerprint (first 8 hex chars of SHA-256 of the key), for logs.
    fingerprint: String,
    pub(crate) derivations: AtomicU64,
    pub(crate) opened: AtomicU64,
}

impl MasterKey {
    pub fn new(kid: &str, bytes: &[u8; 32]) -> Result<Self, KeyConfigError> {
        if !valid_kid(kid) {
            return Err(KeyConfigError::BadKid(kid.to_owned()));
        }
        let digest = Sha256::digest(bytes);
        let fingerprint = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        let (extracted, _) = Hkdf::<Sha256>::extract(None, bytes);
        let mut prk = Zeroizing::new([0u8; 32]);
        prk.copy_from_slice(&extracted);
        Ok(Self {
            kid: kid.to_owned(),
            prk,
            fingerprint,
            derivations: AtomicU64::new(0),
            opened: AtomicU64::new(0),
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// HKDF-Expand the per-token OKM: key (32) || nonce (12) || commitment (32).
    pub(crate) fn derive(&self, salt: &[u8; 32]) -> Zeroizing<[u8; 76]> {
        self.derivations.fetch_add(1, Ordering::Relaxed);
        let mut info = Vec::with_capacity(16 + 2 + self.kid.len() + 32);
        info.extend_from_slice(b"agent-cursor/cv1");
        info.push(0);
        // kid is at most 32 bytes (validated), so the length fits in a u8.
        info.push(self.kid.len() as u8);
        info.extend_from_slice(self.kid.as_bytes());
        info.extend_from_slice(salt);
        let mut okm = Zeroizing::new([0u8; 76]);
        // A 32-byte PRK is valid and 76 bytes is far below HKDF-SHA256's
        // 8160-byte limit, so neither step can fail.
        let Ok(hkdf) = Hkdf::<Sha256>::from_prk(self.prk.as_slice()) else {
            unreachable!("a 32-byte PRK is valid")
        };
        if hkdf.expand(&info, okm.as_mut()).is_err() {
            unreachable!("HKDF output length 76 is valid");
        }
        okm
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The kid only: even a fingerprint of the key is not for debug output.
        f.debug_struct("MasterKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// The configured keys: the first is active, all can open.
pub struct Keyring {
    keys: Vec<MasterKey>,
}

impl Keyring {
    /// Parse `kid:BASE64[,kid:BASE64...]` (standard or URL-safe base64, padded or not).
    pub fn parse(spec: &str) -> Result<Self, KeyConfigError> {
        let entries: Vec<&str> = spec
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        if entries.is_empty() {
            return Err(KeyConfigError::Empty);
        }
        if entries.len() > MAX_KEYS {
            return Err(KeyConfigError::TooMany(entries.len()));
        }
        let mut parsed: Vec<(String, Zeroizing<[u8; 32]>)> = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let (kid, b64) = entry
                .split_once(':')
                .ok_or(KeyConfigError::Malformed(i + 1))?;
            let (kid, b64) = (kid.trim(), b64.trim());
            if !valid_kid(kid) {
                return Err(KeyConfigError::BadKid(kid.to_owned()));
            }
            let bytes =
                decode_any_base64(b64).ok_or_else(|| KeyConfigError::BadBase64(kid.to_owned()))?;
            let key: [u8; 32] =
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| KeyConfigError::BadLength {
                        kid: kid.to_owned(),
                        len: bytes.len(),
                    })?;
            if !looks_random(&key) {
                return Err(KeyConfigError::Weak(kid.to_owned()));
            }
            if let Some((other, _)) = parsed.iter().find(|(k, _)| k == kid) {
                return Err(KeyConfigError::DuplicateKid(other.clone()));
            }
            if let Some((other, _)) = parsed.iter().find(|(_, b)| b.as_slice() == key) {
                return Err(KeyConfigError::DuplicateKey(other.clone(), kid.to_owned()));
            }
            parsed.push((kid.to_owned(), Zeroizing::new(key)));
        }
        let keys = parsed
            .iter()
            .map(|(kid, key)| MasterKey::new(kid, key))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { keys })
    }

    /// A keyring of keys built with [`MasterKey::new`], which applies no
    /// randomness check (fixtures with fixed keys); configured keys go
    /// through [`parse`](Self::parse).
    pub fn from_keys(keys: Vec<MasterKey>) -> Result<Self, KeyConfigError> {
        if keys.is_empty() {
            return Err(KeyConfigError::Empty);
        }
        if keys.len() > MAX_KEYS {
            return Err(KeyConfigError::TooMany(keys.len()));
        }
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].iter().any(|o| o.kid == k.kid) {
                return Err(KeyConfigError::DuplicateKid(k.kid.clone()));
            }
        }
        Ok(Self { keys })
    }

    /// A keyring with one random key that no other process knows.
    pub fn ephemeral() -> Self {
        let key = random_key();
        let suffix: u32 = rand::random();
        let kid = format!("ephemeral-{suffix:08x}");
        match MasterKey::new(&kid, &key) {
            Ok(k) => Self { keys: vec![k] },
            Err(_) => unreachable!("generated kid is valid"),
        }
    }

    /// The key that seals new cursors.
    pub fn active(&self) -> &MasterKey {
        &self.keys[0]
    }

    /// Look a key up by kid; never falls back to another key.
    pub fn get(&self, kid: &str) -> Option<&MasterKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    pub fn keys(&self) -> &[MasterKey] {
        &self.keys
    }

    /// How many tokens (cursors and sealed blobs) each key has opened since
    /// start: what an operator watches before removing a retired key.
    pub fn open_counts(&self) -> Vec<(&str, u64)> {
        self.keys
            .iter()
            .map(|k| (k.kid(), k.opened.load(Ordering::Relaxed)))
            .collect()
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.active().kid)
            .field("keys", &self.keys)
            .finish()
    }
}

fn decode_any_base64(s: &str) -> Option<Zeroizing<Vec<u8>>> {
    [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(s).ok())
        .map(Zeroizing::new)
}

/// A new random key as `kid:BASE64`, for `agentgate keygen`.
pub fn generate_key_line(kid: &str) -> String {
    let key = random_key();
    format!("{kid}:{}", STANDARD.encode(key.as_slice()))
}

/// 32 bytes from the operating system's RNG, redrawn in the (never seen)
/// case that they would fail the randomness check of configured keys.
fn random_key() -> Zeroizing<[u8; 32]> {
    use rand::RngCore;
    let mut key = Zeroizing::new([0u8; 32]);
    loop {
        rand::rngs::OsRng.fill_bytes(key.as_mut());
        if looks_random(&key) {
            return key;
        }
    }
}
