//! Who is calling: every request resolves to a [`Principal`] here, and only
//! here. Nothing from the body or from unverified headers reaches a principal;
//! the subject bound into cursors comes from the verified credentials only.
//!
//! Modes: `none` (development: the subject is `anonymous` and any tenant is
//! allowed; any `Authorization` header is ignored), `api_keys`
//! (`Authorization: Bearer <key>`; only the keys' SHA-256 hashes are
//! configured, and the presented key's hash is compared with every one of
//! them in constant time) and `jwt` (OIDC bearer tokens, [`jwt`]).
//! Credentials are never logged; a key's `id` is.

pub mod jwt;

use actix_web::http::header::AUTHORIZATION;
use actix_web::{HttpMessage, HttpRequest};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{AuthMode, AuthSettings};
use crate::error::{ApiError, ErrorCode};

/// The subject used when authentication is off.
pub const ANONYMOUS: &str = "anonymous";

/// An authenticated caller: the tenant (project or organisation) it acts in and its subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: String,
    pub subject: String,
    /// The API key's id, when an API key authenticated the request.
    pub key_id: Option<String>,
    /// Who is counted by the per-caller rate limits: the API key, or the
    /// token's subject in `jwt` mode (hashed: it is used in store keys).
    /// `None` without authentication.
    pub caller: Option<Caller>,
}

/// The identity the per-caller rate limits count against, with the limits
/// its API key sets for itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `k:<key id>` or `s:<sha-256 of the subject, 32 hex digits>`.
    pub id: String,
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
}

/// The id of the API key that authenticated a request, in its extensions
/// (the request log line shows it).
#[derive(Debug, Clone)]
pub struct KeyId(pub String);

/// One configured API key, ready to compare.
struct ApiKey {
    id: String,
    hash: [u8; 32],
    subject: String,
    admin: bool,
    /// `None` for every tenant (`"*"`).
    tenants: Option<Vec<String>>,
    requests_per_minute: Option<u64>,
    tokens_per_minute: Option<u64>,
}

/// Checks credentials as `[auth]` says; built once at start.
pub struct Authenticator {
    mode: AuthMode,
    keys: Vec<ApiKey>,
    issuers: Vec<jwt::Issuer>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("mode", &self.mode)
            .field("keys", &self.keys.iter().map(|k| &k.id).collect::<Vec<_>>())
            .finish()
    }
}

fn decode_hex(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, message)
}

fn forbidden() -> ApiError {
    ApiError::new(
        ErrorCode::Forbidden,
        "these credentials may not use this project or organisation",
    )
}

/// The token of the request's one `Authorization: Bearer <token>` header.
fn bearer(req: &HttpRequest) -> Result<&str, ApiError> {
    let mut values = req.headers().get_all(AUTHORIZATION);
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(unauthorized(
            "send one Authorization: Bearer <credential> header",
        ));
    };
    value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unauthorized("the Authorization header must be Bearer <credential>"))
}

impl Authenticator {
    /// From validated settings (a hash that does not decode is skipped: the
    /// settings validation refuses it first).
    pub fn new(settings: &AuthSettings) -> Result<Self, String> {
        let keys = settings
            .api_keys
            .iter()
            .filter_map(|k| {
                Some(ApiKey {
                    id: k.id.clone(),
                    hash: decode_hex(&k.sha256)?,
                    subject: k.subject.clone(),
                    admin: k.admin,
                    tenants: (!k.tenants.iter().any(|t| t == "*")).then(|| k.tenants.clone()),
                    requests_per_minute: k.requests_per_minute,
                    tokens_per_minute: k.tokens_per_minute,
                })
            })
            .collect();
        Ok(Self {
            mode: settings.mode,
            keys,
            issuers: settings
                .issuers
                .iter()
                .map(jwt::Issuer::new)
                .collect::<Result<_, _>>()?,
        })
    }

    /// Resolve the principal of `req` for `tenant` (taken from the path): 400
    /// for a tenant that is not a valid id, 401 without valid credentials, 403
    /// for a tenant the credentials may not use.
    pub async fn authenticate(
        &self,
        req: &HttpRequest,
        tenant: &str,
    ) -> Result<Principal, ApiError> {
        crate::ids::check("project or organisation", tenant).map_err(ApiError::invalid)?;
        match self.mode {
            AuthMode::None => Ok(Principal {
                tenant: tenant.to_owned(),
                subject: ANONYMOUS.to_owned(),
                key_id: None,
                caller: None,
            }),
            AuthMode::Jwt => {
                let token = bearer(req)?;
                let verified = jwt::verify(&self.issuers, token).await.map_err(|e| {
                    tracing::info!(reason = %e, "bearer token refused");
                    unauthorized("the bearer token is not valid")
                })?;
                let allowed = verified
                    .tenants
                    .as_ref()
                    .is_none_or(|t| t.iter().any(|t| t == tenant));
                if !allowed {
                    tracing::info!(issuer = %verified.issuer, tenant, "token used outside its tenants");
                    return Err(forbidden());
                }
                let digest = Sha256::digest(verified.subject.as_bytes());
                let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
                Ok(Principal {
                    tenant: tenant.to_owned(),
                    subject: verified.subject,
                    key_id: None,
                    caller: Some(Caller {
                        id: format!("s:{hex}"),
                        requests_per_minute: None,
                        tokens_per_minute: None,
                    }),
                })
            }
            AuthMode::ApiKeys => {
                let key = self.api_key(req)?;
                req.extensions_mut().insert(KeyId(key.id.clone()));
                let allowed = key
                    .tenants
                    .as_ref()
                    .is_none_or(|t| t.iter().any(|t| t == tenant));
                if !allowed {
                    tracing::info!(key_id = %key.id, tenant, "API key used outside its tenants");
                    return Err(forbidden());
                }
                Ok(Principal {
                    tenant: tenant.to_owned(),
                    subject: key.subject.clone(),
                    key_id: Some(key.id.clone()),
                    caller: Some(Caller {
                        id: format!("k:{}", key.id),
                        requests_per_minute: key.requests_per_minute,
                        tokens_per_minute: key.tokens_per_minute,
                    }),
                })
            }
        }
    }

    /// The admin key of `req` (for `/admin/*`, in every mode): 401 without
    /// a valid key, 403 for a key that is not an admin key.
    pub fn admin(&self, req: &HttpRequest) -> Result<String, ApiError> {
        let key = self.api_key(req)?;
        req.extensions_mut().insert(KeyId(key.id.clone()));
        if !key.admin {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "this key may not use the admin endpoints",
            ));
        }
        Ok(key.id.clone())
    }

    /// The configured key whose hash matches the request's bearer token.
    fn api_key(&self, req: &HttpRequest) -> Result<&ApiKey, ApiError> {
        let token = bearer(req)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every key is compared, whatever matched: the time taken does not
        // depend on which key (if any) the token is.
        let mut found = None;
        for key in &self.keys {
            if bool::from(key.hash.ct_eq(&digest)) {
                found = Some(key);
            }
        }
        found.ok_or_else(|| unauthorized("the API key is not valid"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_hashes_decode_and_bad_ones_do_not() {
        let hex = "ab".repeat(32);
        assert_eq!(decode_hex(&hex), Some([0xab; 32]));
        assert_eq!(decode_hex(&"AB".repeat(32)), Some([0xab; 32]));
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex(&"zz".repeat(32)), None);
        assert_eq!(decode_hex(&format!("é{}", "a".repeat(62))), None);
    }
}
