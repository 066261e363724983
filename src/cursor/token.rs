//! The `cv1` token layer (docs/cursor-format.md: wire format, key derivation,
//! associated data, seal, and open steps 1–8): bytes in, bytes out. It knows
//! nothing of the claims inside. Every buffer that held plaintext is wiped,
//! spare capacity included, on every path.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use base64_simd::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;

use super::keyring::{Keyring, MasterKey, valid_kid};
use super::{
    CursorContext, CursorError, InvalidReason, MAX_TOKEN_CHARS, MAX_TTL, PAD_BUCKET, SKEW,
};

const VERSION: &str = "cv1";

/// What a token is for, bound into its associated data: a blob sealed for
/// the store can never be opened as a client's cursor, nor the reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A conversation cursor handed to a client.
    Cursor,
    /// A blob kept in the store (session states, job inputs and results,
    /// single-use records); never leaves the server.
    StoredBlob,
}

impl Purpose {
    fn as_bytes(self) -> &'static [u8] {
        match self {
            Purpose::Cursor => b"agent-chat-cursor",
            Purpose::StoredBlob => b"agentgate-sealed-blob",
        }
    }
}
const HEADER: usize = 8 + 32 + 32;
const TAG: usize = 16;
/// Bytes of payload that are not ciphertext.
pub const OVERHEAD: usize = HEADER + TAG;

/// Pad `buf` with spaces to the next multiple of [`PAD_BUCKET`] (at least one
/// bucket); for callers that hold no secret in `buf` (tests, benches).
pub fn pad(buf: &mut Vec<u8>) {
    let target = buf.len().div_ceil(PAD_BUCKET).max(1) * PAD_BUCKET;
    buf.resize(target, b' ');
}

/// PASETO PAE over the cv1 associated-data pieces.
fn aad(
    purpose: Purpose,
    kid: &str,
    exp: &[u8],
    salt: &[u8],
    commit: &[u8],
    ctx: &CursorContext<'_>,
) -> Vec<u8> {
    let pieces: [&[u8]; 9] = [
        VERSION.as_bytes(),
        kid.as_bytes(),
        exp,
        salt,
        commit,
        purpose.as_bytes(),
        ctx.project.as_bytes(),
        ctx.agent.as_bytes(),
        ctx.subject.as_bytes(),
    ];
    let len = 8 + pieces.iter().map(|p| 8 + p.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&(pieces.len() as u64).to_le_bytes());
    for p in pieces {
        out.extend_from_slice(&(p.len() as u64).to_le_bytes());
        out.extend_from_slice(p);
    }
    out
}

/// Seal an already padded plaintext with the given salt and expiry. Crate-private:
/// callers never choose the salt (see [`seal`]).
pub(crate) fn seal_with(
    purpose: Purpose,
    key: &MasterKey,
    salt: [u8; 32],
    exp: u64,
    ctx: &CursorContext<'_>,
    padded: &[u8],
) -> String {
    debug_assert!(!padded.is_empty() && padded.len().is_multiple_of(PAD_BUCKET));
    let okm = key.derive(&salt);
    let (ek, rest) = okm.split_at(32);
    let (nonce, commit) = rest.split_at(12);
    let exp_be = exp.to_be_bytes();
    let aad = aad(purpose, key.kid(), &exp_be, &salt, commit, ctx);

    let mut payload = Vec::with_capacity(OVERHEAD + padded.len());
    payload.extend_from_slice(&exp_be);
    payload.extend_from_slice(&salt);
    payload.extend_from_slice(commit);
    payload.extend_from_slice(padded);
    let cipher = Aes256Gcm::new_from_slice(ek).unwrap_or_else(|_| unreachable!("32-byte key"));
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(nonce), &aad, &mut payload[HEADER..])
        .unwrap_or_else(|_| unreachable!("plaintext is below the GCM length limit"));
    payload.extend_from_slice(&tag);

    let mut token = String::with_capacity(5 + key.kid().len() + payload.len().div_ceil(3) * 4);
    token.push_str(VERSION);
    token.push('.');
    token.push_str(key.kid());
    token.push('.');
    URL_SAFE_NO_PAD.encode_append(&payload, &mut token);
    token
}

/// Seal a padded plaintext under the active key with a fresh salt from the OS RNG.
pub fn seal(
    purpose: Purpose,
    keys: &Keyring,
    exp: u64,
    ctx: &CursorContext<'_>,
    padded: &[u8],
) -> String {
    seal_with(purpose, keys.active(), fresh_salt(), exp, ctx, padded)
}

/// 32 bytes from the operating system's RNG. Should the OS refuse (it does
/// not on Linux once booted), the thread RNG, itself seeded from the OS, is used.
fn fresh_salt() -> [u8; 32] {
    use rand::RngCore;
    let mut salt = [0u8; 32];
    if rand::rngs::OsRng.try_fill_bytes(&mut salt).is_err() {
        tracing::warn!("the OS RNG failed; cursor salt taken from the thread RNG");
        rand::thread_rng().fill_bytes(&mut salt);
    }
    salt
}

/// Overwrite a buffer with zeros. `fill` compiles to a vectorised memset
/// (`zeroize`'s per-byte volatile writes cost ~5 us per 16 KiB); `black_box`
/// keeps the optimiser from removing the dead store.
pub fn wipe(buf: &mut [u8]) {
    buf.fill(0);
    std::hint::black_box(buf);
}

/// Wipe a vector's contents and its spare capacity (bytes it held before a
/// truncate or drain are still in the allocation).
pub fn wipe_vec(buf: &mut Vec<u8>) {
    wipe(buf);
    for b in buf.spare_capacity_mut() {
        b.write(0);
    }
    std::hint::black_box(buf);
}

/// A buffer that holds (or may hold) plaintext, wiped with its spare capacity when dropped.
pub struct Plaintext(Vec<u8>);

impl Plaintext {
    /// An empty buffer of `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self(Vec::with_capacity(capacity))
    }

    /// Make room for `more` bytes; a move to a larger allocation wipes the old one.
    fn reserve(&mut self, more: usize) {
        let need = self.0.len().saturating_add(more);
        if need <= self.0.capacity() {
            return;
        }
        let mut grown = Vec::with_capacity(need.max(self.0.capacity().saturating_mul(2)));
        grown.extend_from_slice(&self.0);
        let mut old = std::mem::replace(&mut self.0, grown);
        wipe_vec(&mut old);
    }

    /// Pad with spaces to the next multiple of [`PAD_BUCKET`] (at least one bucket).
    pub fn pad(&mut self) {
        let target = self.0.len().div_ceil(PAD_BUCKET).max(1) * PAD_BUCKET;
        self.reserve(target - self.0.len());
        self.0.resize(target, b' ');
    }
}

impl std::io::Write for Plaintext {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.reserve(bytes.len());
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// sonic-rs writes a string's escaped form straight into the buffer's spare
/// capacity: it asks for room for the worst case (six bytes per input byte),
/// copies 32-byte blocks that may run past what it then keeps, and marks
/// what it kept as written. Growing goes through [`Plaintext::reserve`], so
/// an outgrown allocation is wiped, and the spare capacity it wrote into is
/// wiped with the buffer on drop.
impl sonic_rs::writer::WriteExt for Plaintext {
    fn reserve_with(
        &mut self,
        additional: usize,
    ) -> std::io::Result<&mut [std::mem::MaybeUninit<u8>]> {
        self.reserve(additional);
        Ok(&mut self.0.spare_capacity_mut()[..additional])
    }

    unsafe fn flush_len(&mut self, additional: usize) -> std::io::Result<()> {
        let len = self.0.len() + additional;
        assert!(
            len <= self.0.capacity(),
            "sonic-rs kept more than it reserved"
        );
        // SAFETY: the caller (sonic-rs) has initialised the first
        // `additional` bytes of the spare capacity `reserve_with` returned,
        // and the new length is within the capacity (checked above).
        unsafe { self.0.set_len(len) };
        Ok(())
    }
}

impl std::ops::Deref for Plaintext {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Plaintext {
    fn drop(&mut self) {
        wipe_vec(&mut self.0);
    }
}

/// What a successfully opened token yields: the padded plaintext and header facts.
pub struct Opened {
    /// Wiped on drop.
    pub plaintext: Plaintext,
    pub kid: String,
    pub exp: u64,
}

/// The salt of a well-formed token (its unique identity), without verifying it.
pub fn salt(token: &str) -> Option<[u8; 32]> {
    let body = token.rsplit('.').next()?;
    let payload = URL_SAFE_NO_PAD.decode_to_vec(body).ok()?;
    payload.get(8..40)?.try_into().ok()
}

/// Verify and decrypt a token (open steps 1–8 of docs/cursor-format.md).
pub fn open(
    purpose: Purpose,
    keys: &Keyring,
    token: &str,
    ctx: &CursorContext<'_>,
    now: i64,
) -> Result<Opened, CursorError> {
    use InvalidReason as R;
    if token.len() > MAX_TOKEN_CHARS {
        return Err(CursorError::TooLarge);
    }
    if token.is_empty() {
        return Err(CursorError::Invalid(R::Empty));
    }
    // The two dots are found from the front; the body is not scanned for a
    // third (a long cursor is mostly body): base64url has no '.', so a token
    // of more parts fails to decode below and is reported as a bad shape.
    let Some((version, rest)) = token.split_once('.') else {
        return Err(CursorError::Invalid(R::Shape));
    };
    let Some((kid, body)) = rest.split_once('.') else {
        return Err(CursorError::Invalid(R::Shape));
    };
    if version != VERSION {
        return Err(CursorError::Invalid(R::UnsupportedVersion));
    }
    if !valid_kid(kid) {
        return Err(CursorError::Invalid(R::Shape));
    }
    let key = keys.get(kid).ok_or(CursorError::Invalid(R::UnknownKid))?;
    // Strict: URL-safe alphabet, no padding, no whitespace, canonical trailing bits.
    // Decryption happens in place and, in aes-gcm, before the tag is
    // compared: a buffer whose tag fails holds real plaintext too (a valid
    // token replayed in another context). It is wiped on every path.
    let mut payload = Plaintext(URL_SAFE_NO_PAD.decode_to_vec(body).map_err(|_| {
        CursorError::Invalid(if body.contains('.') {
            R::Shape
        } else {
            R::Encoding
        })
    })?);
    if payload.len() < OVERHEAD + PAD_BUCKET
        || !(payload.len() - OVERHEAD).is_multiple_of(PAD_BUCKET)
    {
        return Err(CursorError::Invalid(R::Length));
    }
    let mut exp_be = [0u8; 8];
    exp_be.copy_from_slice(&payload[..8]);
    let exp = u64::from_be_bytes(exp_be);
    let now_u = u64::try_from(now).unwrap_or(0);
    if now_u > exp.saturating_add(SKEW) {
        return Err(CursorError::Expired);
    }
    if exp > now_u.saturating_add(MAX_TTL + SKEW) {
        return Err(CursorError::Invalid(R::FarFuture));
    }
    let mut salt = [0u8; 32];
    salt.copy_from_slice(&payload[8..40]);
    let okm = key.derive(&salt);
    let (ek, rest) = okm.split_at(32);
    let (nonce, commit) = rest.split_at(12);
    if !bool::from(commit.ct_eq(&payload[40..HEADER])) {
        return Err(CursorError::Invalid(R::Commitment));
    }
    let aad = aad(purpose, kid, &exp_be, &salt, commit, ctx);
    let tag_at = payload.len() - TAG;
    let tag = Tag::clone_from_slice(&payload[tag_at..]);
    let cipher = Aes256Gcm::new_from_slice(ek).unwrap_or_else(|_| unreachable!("32-byte key"));
    cipher
        .decrypt_in_place_detached(
            Nonce::from_slice(nonce),
            &aad,
            &mut payload.0[HEADER..tag_at],
            &tag,
        )
        .map_err(|_| CursorError::Invalid(R::Authentication))?;
    key.opened
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Operators watch this before retiring a key (docs/cursor-format.md, rotation).
    tracing::debug!(target: "agentgate::cursor", kid, ?purpose, "cursor opened");
    // Move the plaintext to the front of the buffer and drop the header and
    // tag; the bytes left behind in spare capacity are wiped with the buffer.
    payload.0.truncate(tag_at);
    payload.0.drain(..HEADER);
    Ok(Opened {
        plaintext: payload,
        kid: kid.to_owned(),
        exp,
    })
}
