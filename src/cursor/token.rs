//! The `cv1` token layer (CURSOR.md §3.1–3.3, 3.5–3.6 steps 1–8): bytes in,
//! bytes out. It knows nothing of the claims inside.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use base64_simd::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;

use super::keyring::{Keyring, MasterKey, valid_kid};
use super::{
    CursorContext, CursorError, InvalidReason, MAX_TOKEN_CHARS, MAX_TTL, PAD_BUCKET, SKEW,
};

const VERSION: &str = "cv1";
const PURPOSE: &[u8] = b"agent-chat-cursor";
const HEADER: usize = 8 + 32 + 32;
const TAG: usize = 16;
/// Bytes of payload that are not ciphertext.
pub const OVERHEAD: usize = HEADER + TAG;

/// Pad `buf` with spaces to the next multiple of [`PAD_BUCKET`] (at least one bucket).
pub fn pad(buf: &mut Vec<u8>) {
    let target = buf.len().div_ceil(PAD_BUCKET).max(1) * PAD_BUCKET;
    buf.resize(target, b' ');
}

/// PASETO PAE over the cv1 associated-data pieces.
fn aad(kid: &str, exp: &[u8], salt: &[u8], commit: &[u8], ctx: &CursorContext<'_>) -> Vec<u8> {
    let pieces: [&[u8]; 9] = [
        VERSION.as_bytes(),
        kid.as_bytes(),
        exp,
        salt,
        commit,
        PURPOSE,
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
    let aad = aad(key.kid(), &exp_be, &salt, commit, ctx);

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

/// Seal a padded plaintext under the active key with a fresh random salt.
pub fn seal(keys: &Keyring, exp: u64, ctx: &CursorContext<'_>, padded: &[u8]) -> String {
    let salt: [u8; 32] = rand::random();
    seal_with(keys.active(), salt, exp, ctx, padded)
}

/// Overwrite a buffer with zeros. `fill` compiles to a vectorised memset
/// (`zeroize`'s per-byte volatile writes cost ~5 us per 16 KiB); `black_box`
/// keeps the optimiser from removing the dead store.
pub fn wipe(buf: &mut [u8]) {
    buf.fill(0);
    std::hint::black_box(buf);
}

/// A decrypted plaintext, wiped when dropped.
pub struct Plaintext(Vec<u8>);

impl std::ops::Deref for Plaintext {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Plaintext {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// What a successfully opened token yields: the padded plaintext and header facts.
pub struct Opened {
    /// Wiped on drop.
    pub plaintext: Plaintext,
    pub kid: String,
    pub exp: u64,
}

/// Verify and decrypt a token (CURSOR.md §3.6 steps 1–8).
pub fn open(
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
    let mut parts = token.split('.');
    let (Some(version), Some(kid), Some(body), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
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
    let mut payload = URL_SAFE_NO_PAD
        .decode_to_vec(body)
        .map_err(|_| CursorError::Invalid(R::Encoding))?;
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
    let aad = aad(kid, &exp_be, &salt, commit, ctx);
    let tag_at = payload.len() - TAG;
    let tag = Tag::clone_from_slice(&payload[tag_at..]);
    let cipher = Aes256Gcm::new_from_slice(ek).unwrap_or_else(|_| unreachable!("32-byte key"));
    cipher
        .decrypt_in_place_detached(
            Nonce::from_slice(nonce),
            &aad,
            &mut payload[HEADER..tag_at],
            &tag,
        )
        .map_err(|_| CursorError::Invalid(R::Authentication))?;
    key.opened
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Move the plaintext to the front of the buffer and drop the header and tag.
    payload.truncate(tag_at);
    payload.drain(..HEADER);
    Ok(Opened {
        plaintext: Plaintext(payload),
        kid: kid.to_owned(),
        exp,
    })
}
