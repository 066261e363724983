//! `[auth] mode = "jwt"`: OIDC bearer tokens from the configured issuers.
//!
//! A token names its issuer (`iss`, read before verification only to pick
//! the issuer's configuration) and its key (`kid`). The issuer's JWKS is
//! fetched from `jwks_url` and cached by `kid`; a `kid` not in the cache
//! makes one refetch, at most once per `jwks_refresh_seconds` per issuer, so
//! unknown kids cannot be used to hammer the identity provider. The
//! signature, `iss`, `aud`, `exp` and `nbf` (60 s leeway) are checked with the
//! `jsonwebtoken` crate, for the issuer's algorithm allow-list only (never a
//! symmetric algorithm). The subject comes from `subject_claim`, the tenants
//! from `tenants_claim`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::time::Instant;

use crate::config::IssuerSettings;

/// How long fetched keys are trusted without a refetch: a key the issuer
/// withdrew (rotated out, revoked) stops verifying within this.
const KEYS_TTL: Duration = Duration::from_secs(600);
/// Longest a JWKS fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS document read.
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Longest bearer token accepted.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Clock skew allowed on `exp` and `nbf`, seconds.
const LEEWAY: u64 = 60;

/// Why a token was refused (logged; clients see one 401 message).
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token names no key id (kid)")]
    NoKid,
    #[error("the token's issuer is not configured")]
    UnknownIssuer,
    #[error("the token's algorithm is not allowed for its issuer")]
    Algorithm,
    #[error("the issuer has no key {:?}", crate::error::prefix(.0, 64))]
    UnknownKid(String),
    #[error("the issuer's keys could not be fetched: {0}")]
    Jwks(String),
    #[error("the token does not verify: {0}")]
    Invalid(jsonwebtoken::errors::Error),
    #[error("the token has no string claim {0:?}")]
    NoSubject(String),
}

/// A verified token's principal parts.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The issuer and subject, unambiguous across issuers.
    pub subject: String,
    /// The tenants named by `tenants_claim`; `None` for every tenant (`"*"`).
    pub tenants: Option<Vec<String>>,
    /// For logs: the issuer and the subject claim.
    pub issuer: String,
}

/// One configured issuer and its cached keys.
pub struct Issuer {
    settings: IssuerSettings,
    algorithms: Vec<Algorithm>,
    client: reqwest::Client,
    keys: RwLock<HashMap<String, Arc<DecodingKey>>>,
    /// When the JWKS was last fetched; held while fetching, so concurrent
    /// requests share one fetch.
    fetched: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("issuer", &self.settings.issuer)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// From validated settings (algorithm names were checked at start).
    pub fn new(settings: &IssuerSettings) -> Result<Self, String> {
        crate::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("issuer {}: http client: {e}", settings.issuer))?;
        Ok(Self {
            algorithms: settings
                .algorithms
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect(),
            settings: settings.clone(),
            client,
            keys: RwLock::new(HashMap::new()),
            fetched: tokio::sync::Mutex::new(None),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    fn cached(&self, kid: &str) -> Option<Arc<DecodingKey>> {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(kid)
            .cloned()
    }

    /// The key `kid`. The JWKS is fetched when the key is not cached, or the
    /// cache is older than [`KEYS_TTL`], and the last fetch is older than
    /// `jwks_refresh_seconds`. A failed refresh of a stale cache keeps the
    /// cached keys (an identity provider's outage must not lock everyone
    /// out), and is retried at that same bounded rate.
    async fn key(&self, kid: &str) -> Result<Arc<DecodingKey>, JwtError> {
        let fresh = |fetched: Option<Instant>| fetched.is_some_and(|at| at.elapsed() < KEYS_TTL);
        if let Some(k) = self.cached(kid)
            && let Ok(at) = self.fetched.try_lock()
            && fresh(*at)
        {
            return Ok(k);
        }
        let mut fetched = self.fetched.lock().await;
        let cached = self.cached(kid);
        if let Some(k) = &cached
            && fresh(*fetched)
        {
            return Ok(k.clone());
        }
        let min_refresh = Duration::from_secs(self.settings.jwks_refresh_seconds);
        if fetched.is_some_and(|at| at.elapsed() < min_refresh) {
            return cached.ok_or_else(|| JwtError::UnknownKid(kid.to_owned()));
        }
        *fetched = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                tracing::info!(issuer = %self.settings.issuer, keys = keys.len(), "JWKS fetched");
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
            }
            Err(e) if cached.is_some() => {
                tracing::warn!(issuer = %self.settings.issuer, error = %e, "JWKS refresh failed; keeping the cached keys");
            }
            Err(e) => return Err(e),
        }
        self.cached(kid)
            .ok_or_else(|| JwtError::UnknownKid(kid.to_owned()))
    }

    /// The issuer's signing keys by kid (keys without a kid, or of a type
    /// this build cannot use, are skipped).
    async fn fetch(&self) -> Result<HashMap<String, Arc<DecodingKey>>, JwtError> {
        let url = self.settings.jwks_url.as_str();
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| JwtError::Jwks(crate::llm::http::without_url(&e)))?;
        if !response.status().is_success() {
            return Err(JwtError::Jwks(format!("status {}", response.status())));
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
            let chunk = chunk.map_err(|e| JwtError::Jwks(crate::llm::http::without_url(&e)))?;
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(JwtError::Jwks("the JWKS is too large".into()));
            }
            body.extend_from_slice(&chunk);
        }
        #[derive(serde::Deserialize)]
        struct Set {
            keys: Vec<serde_json::Value>,
        }
        let set: Set = serde_json::from_slice(&body)
            .map_err(|e| JwtError::Jwks(format!("not a JWKS: {e}")))?;
        let mut keys = HashMap::new();
        for value in set.keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
                continue;
            };
            let (Some(kid), Ok(key)) = (jwk.common.key_id.clone(), DecodingKey::from_jwk(&jwk))
            else {
                continue;
            };
            keys.insert(kid, Arc::new(key));
        }
        Ok(keys)
    }

    /// Verify `token` (already known to name this issuer).
    async fn verify(
        &self,
        token: &str,
        header: &jsonwebtoken::Header,
    ) -> Result<Verified, JwtError> {
        if !self.algorithms.contains(&header.alg) {
            return Err(JwtError::Algorithm);
        }
        let kid = header.kid.as_deref().ok_or(JwtError::NoKid)?;
        let key = self.key(kid).await?;
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = LEEWAY;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
            .map_err(JwtError::Invalid)?;
        let claims = data.claims;
        let subject_claim = &self.settings.subject_claim;
        let sub = claims[subject_claim]
            .as_str()
            .filter(|s| !s.is_empty() && s.len() <= 256)
            .ok_or_else(|| JwtError::NoSubject(subject_claim.clone()))?;
        let listed: Vec<String> = match &claims[&self.settings.tenants_claim] {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(items) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .take(1000)
                .collect(),
            _ => Vec::new(),
        };
        let issuer = self.settings.issuer.clone();
        Ok(Verified {
            // Length-prefixed: two issuers' subjects can never collide.
            subject: format!("jwt:{}:{issuer}:{sub}", issuer.len()),
            tenants: (!listed.iter().any(|t| t == "*")).then_some(listed),
            issuer,
        })
    }
}

/// Verify `token` against the configured `issuers`.
pub async fn verify(issuers: &[Issuer], token: &str) -> Result<Verified, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::Malformed);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    // Unverified: only to choose which issuer's keys verify the token.
    let iss = jsonwebtoken::dangerous::insecure_decode::<Iss>(token)
        .map_err(|_| JwtError::Malformed)?
        .claims
        .iss
        .ok_or(JwtError::UnknownIssuer)?;
    let issuer = issuers
        .iter()
        .find(|i| i.issuer() == iss)
        .ok_or(JwtError::UnknownIssuer)?;
    issuer.verify(token, &header).await
}
