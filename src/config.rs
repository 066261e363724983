//! Typed settings: a TOML file overlaid by `AGENTGATE__SECTION__KEY` environment
//! variables, validated once at start. Cursor keys never come from the file:
//! they come from `AGENTGATE_CURSOR_KEYS` or `AGENTGATE_CURSOR_KEYS_FILE`.
//!
//! Units: durations are `*_seconds` (integers), except provider and tool
//! timeouts, which are `*_ms`. Every setting is documented in docs/configuration.md.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::cursor::{KeyConfigError, Keyring, MAX_PLAINTEXT, MAX_TTL};

/// The default config file, relative to the working directory.
pub const DEFAULT_CONFIG_PATH: &str = "config/agentgate.toml";

/// The development config shipped in `config/agentgate.toml`, compiled in:
/// what `serve` runs when no config file is given or found.
pub const BUILTIN_CONFIG: &str = include_str!("../config/agentgate.toml");

/// Where a config is looked for when neither `--config` nor
/// `AGENTGATE_CONFIG` names one, in order: `config/agentgate.toml` under the
/// working directory, `$XDG_CONFIG_HOME/agentgate/agentgate.toml` (or
/// `~/.config/agentgate/agentgate.toml`), `/etc/agentgate/agentgate.toml`.
pub fn config_candidates(env: impl Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from(DEFAULT_CONFIG_PATH)];
    let xdg = env("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(dir) = xdg {
        out.push(dir.join("agentgate").join("agentgate.toml"));
    }
    out.push(PathBuf::from("/etc/agentgate/agentgate.toml"));
    out
}

/// The first candidate that exists; `None` means the built-in config.
pub fn find_config(env: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    config_candidates(env).into_iter().find(|p| p.is_file())
}
pub const KEYS_ENV: &str = "AGENTGATE_CURSOR_KEYS";
pub const KEYS_FILE_ENV: &str = "AGENTGATE_CURSOR_KEYS_FILE";
const MIN_BODY_BYTES: usize = 2 * 1024 * 1024;
/// Longest provider timeout, ms (an hour).
const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// Errors found while loading configuration; each names the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    #[error("invalid configuration: {0}")]
    Parse(Box<figment::Error>),
    #[error("invalid configuration: {key}: {message}")]
    Invalid { key: String, message: String },
    /// Several sections have problems: each is listed.
    #[error("{} problems: {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Many(Vec<ConfigError>),
    #[error("{KEYS_ENV}: {0}")]
    Keys(#[from] KeyConfigError),
    #[error("set only one of {KEYS_ENV} and {KEYS_FILE_ENV}")]
    BothKeySources,
    #[error("{KEYS_FILE_ENV}: cannot read {path}: {source}")]
    KeysFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no cursor keys: set {KEYS_ENV} or {KEYS_FILE_ENV} (generate one with `agentgate keygen`), \
         or set [cursor] allow_ephemeral_key = true for development"
    )]
    NoKeys,
}

/// The largest rate limit accepted (a billion per minute).
const MAX_RATE: u64 = 1_000_000_000;

/// No problem, one, or several.
fn many(mut problems: Vec<ConfigError>) -> Result<(), ConfigError> {
    match problems.len() {
        0 => Ok(()),
        1 => Err(problems.remove(0)),
        _ => Err(ConfigError::Many(problems)),
    }
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub server: ServerSettings,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default)]
    pub cursor: CursorSettings,
    #[serde(default)]
    pub auth: AuthSettings,
    #[serde(default)]
    pub sessions: SessionSettings,
    #[serde(default)]
    pub jobs: JobSettings,
    #[serde(default)]
    pub store: StoreSettings,
    #[serde(default)]
    pub rate_limits: RateLimitSettings,
    #[serde(default)]
    pub playground: PlaygroundSettings,
    #[serde(default)]
    pub providers: Vec<ProviderSettings>,
    #[serde(default)]
    pub agents: Vec<AgentSettings>,
    #[serde(default)]
    pub tools: Vec<ToolSettings>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    pub listen: String,
    pub default_project: Option<String>,
    pub max_body_bytes: usize,
    /// How long a client may take to send a request body once its headers arrived.
    pub body_timeout_seconds: u64,
    /// Most open client connections per worker thread (further ones wait in the backlog).
    pub max_connections: usize,
    pub shutdown_grace_seconds: u64,
    /// HTTP worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// How many replicas the operator runs; only used to warn about per-replica stores.
    pub replicas: u32,
    /// This replica's name, sent as `X-Agentgate-Replica` on every response when set.
    pub replica_id: Option<String>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            default_project: None,
            max_body_bytes: 8 * 1024 * 1024,
            body_timeout_seconds: 30,
            max_connections: 10_000,
            shutdown_grace_seconds: 30,
            workers: 0,
            replicas: 1,
            replica_id: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Pretty,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CursorSettings {
    pub ttl_seconds: u64,
    pub max_conversation_age_seconds: u64,
    pub allow_ephemeral_key: bool,
}

impl Default for CursorSettings {
    fn default() -> Self {
        Self {
            ttl_seconds: 3600,
            max_conversation_age_seconds: 86_400,
            allow_ephemeral_key: false,
        }
    }
}

/// `[playground]`: the browser page at `/playground`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlaygroundSettings {
    /// Serve the page (off by default).
    pub enabled: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionSettings {
    /// Sliding inactivity expiry of a Quant session.
    pub ttl_seconds: u64,
    /// Absolute age cap; defaults to `[cursor] max_conversation_age_seconds`.
    pub max_age_seconds: Option<u64>,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            ttl_seconds: 3600,
            max_age_seconds: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobSettings {
    /// How long async execution records are kept.
    pub ttl_seconds: u64,
    /// Queued jobs beyond which `async` requests get 503.
    pub max_queued: usize,
    /// Jobs run at once by this replica.
    pub workers: usize,
    /// How long a running job's lease lasts without renewal (renewed every third of it).
    pub lease_seconds: u64,
    /// Deliveries of a job before it is recorded `failed`.
    pub max_attempts: u32,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            ttl_seconds: 86_400,
            max_queued: 1000,
            workers: 4,
            lease_seconds: 15,
            max_attempts: 3,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    #[default]
    Memory,
    Redis,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    pub kind: StoreKind,
    /// Most sessions plus execution records the memory store holds.
    pub max_entries: usize,
    /// Most bytes of records the memory store holds (sealed states, metadata, results).
    pub max_bytes: usize,
    /// Redis URL (`redis://` or `rediss://`, credentials in the URL); never logged.
    #[serde(skip_serializing)]
    pub url: Option<SecretString>,
    /// Prefix of every Redis key.
    pub prefix: String,
    /// Talk to a Redis Cluster (implied when `url` lists several nodes).
    pub cluster: bool,
    /// The Sentinel master group name: `url` then lists Sentinels, which name the primary.
    pub sentinel_master: Option<String>,
}

impl StoreSettings {
    /// The node URLs of `url` (comma-separated), each trimmed.
    pub fn redis_nodes(&self) -> Vec<String> {
        self.url
            .as_ref()
            .map(ExposeSecret::expose_secret)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Whether the Redis store uses the cluster client.
    pub fn redis_cluster(&self) -> bool {
        self.sentinel_master.is_none() && (self.cluster || self.redis_nodes().len() > 1)
    }
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            kind: StoreKind::Memory,
            max_entries: 100_000,
            max_bytes: 256 * 1_048_576,
            url: None,
            prefix: "agentgate".into(),
            cluster: false,
            sentinel_master: None,
        }
    }
}

impl Settings {
    /// The effective absolute age cap of a session.
    pub fn session_max_age(&self) -> u64 {
        self.sessions
            .max_age_seconds
            .unwrap_or(self.cursor.max_conversation_age_seconds)
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Development only: every caller is `anonymous` in any tenant.
    #[default]
    None,
    /// `Authorization: Bearer <key>`, checked against `[[auth.api_keys]]`.
    ApiKeys,
    /// OIDC bearer tokens of the `[[auth.issuers]]`.
    Jwt,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    pub mode: AuthMode,
    pub api_keys: Vec<ApiKeySettings>,
    pub issuers: Vec<IssuerSettings>,
}

/// One trusted token issuer (`[[auth.issuers]]`, mode = "jwt").
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSettings {
    /// The exact `iss` of its tokens.
    pub issuer: String,
    /// The `aud` its tokens must carry.
    pub audience: String,
    /// Where its signing keys are published (JWKS).
    pub jwks_url: String,
    /// The claim listing the projects and organisations a token may use (a
    /// string or a list; `"*"` for all).
    #[serde(default = "defaults::tenants_claim")]
    pub tenants_claim: String,
    /// The claim naming the subject.
    #[serde(default = "defaults::subject_claim")]
    pub subject_claim: String,
    /// Signature algorithms accepted (asymmetric only).
    #[serde(default = "defaults::algorithms")]
    pub algorithms: Vec<String>,
    /// Least time between two JWKS fetches (an unknown `kid` triggers one).
    #[serde(default = "defaults::jwks_refresh_seconds")]
    pub jwks_refresh_seconds: u64,
}

/// One API key (`[[auth.api_keys]]`): only its SHA-256 is configured.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySettings {
    /// Stable id, safe to log.
    pub id: String,
    /// Hex SHA-256 of the key.
    pub sha256: String,
    /// The subject the key acts as (bound into its cursors).
    pub subject: String,
    /// The projects and organisations it may use; `"*"` for all.
    pub tenants: Vec<String>,
    /// May call the admin endpoints (`POST /admin/reload`). Admin keys are
    /// accepted there in every auth mode.
    #[serde(default)]
    pub admin: bool,
    /// This key's own requests-per-minute limit, instead of
    /// `rate_limits.key_requests_per_minute` (0: none).
    #[serde(default)]
    pub requests_per_minute: Option<u64>,
    /// This key's own model-tokens-per-minute limit, instead of
    /// `rate_limits.key_tokens_per_minute` (0: none).
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
}

/// `[rate_limits]`: per tenant (project or organisation) and per caller (API
/// key, or token subject in `jwt` mode). 0 means no limit. With
/// `[store] kind = "redis"` every replica shares the counters; with the
/// memory store each replica counts on its own.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    /// Requests per minute for each tenant.
    pub requests_per_minute: u64,
    /// Model tokens (in + out) per minute for each tenant.
    pub tokens_per_minute: u64,
    /// Streamed turns open at once for each tenant.
    pub concurrent_streams: u64,
    /// Requests per minute for each API key or token subject.
    pub key_requests_per_minute: u64,
    /// Model tokens per minute for each API key or token subject.
    pub key_tokens_per_minute: u64,
    /// Per-tenant overrides of the three tenant limits, by tenant name.
    pub tenants: std::collections::BTreeMap<String, TenantLimitSettings>,
}

/// `[rate_limits.tenants.<tenant>]`: what a tenant gets instead of the
/// defaults; a key left out keeps the default.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TenantLimitSettings {
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub concurrent_streams: Option<u64>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Openai,
    Anthropic,
    Scripted,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    pub name: String,
    pub kind: ProviderKind,
    #[serde(default)]
    pub base_url: Option<String>,
    /// Name of the environment variable holding the API key (never the key itself).
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "defaults::first_byte_timeout_ms")]
    pub first_byte_timeout_ms: u64,
    #[serde(default = "defaults::idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    #[serde(default = "defaults::total_timeout_ms")]
    pub total_timeout_ms: u64,
    #[serde(default = "defaults::max_retries")]
    pub max_retries: u32,
    /// Consecutive failed attempts after which the provider is skipped.
    #[serde(default = "defaults::breaker_threshold")]
    pub breaker_threshold: u32,
    /// How long an open breaker skips the provider before one trial call.
    #[serde(default = "defaults::breaker_cooldown_seconds")]
    pub breaker_cooldown_seconds: u64,
    /// `anthropic-version` header (kind = "anthropic").
    #[serde(default)]
    pub anthropic_version: Option<String>,
    /// Largest single server-sent event (or line) read from a streamed response.
    #[serde(default = "defaults::max_event_bytes")]
    pub max_event_bytes: usize,
    /// Largest response body read, streamed or not.
    #[serde(default = "defaults::provider_max_response_bytes")]
    pub max_response_bytes: usize,
    /// Largest arguments of one tool call (and one thinking block) assembled from a stream.
    #[serde(default = "defaults::max_tool_call_bytes")]
    pub max_tool_call_bytes: usize,
}

/// What clients see of a tool's runs (`[[tools]] expose`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expose {
    /// Input and result.
    #[default]
    Full,
    /// Input only.
    Input,
    /// Neither: the run is not reported.
    None,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ToolKind {
    Builtin,
    Http,
    Mcp,
}

/// A server-side tool (`[[tools]]`). Built-ins (`clock`, `calculator`) exist
/// without an entry; an entry with `kind = "builtin"` only adjusts one.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ToolSettings {
    pub name: String,
    pub kind: ToolKind,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    /// JSON Schema of the arguments (an object schema).
    #[serde(default)]
    pub parameters: Option<serde_json::Value>,
    /// Header values may be `env:NAME`, read at start; literal values are
    /// often credentials, so they are secrets (never printed or serialised).
    #[serde(default, skip_serializing)]
    pub headers: std::collections::BTreeMap<String, SecretString>,
    #[serde(default = "defaults::tool_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "defaults::max_response_bytes")]
    pub max_response_bytes: usize,
    #[serde(default)]
    pub confirm: bool,
    #[serde(default)]
    pub expose: Expose,
    /// (mcp) The server's tool names to offer; all when absent.
    #[serde(default)]
    pub allow: Option<Vec<String>>,
    /// (mcp) How often the server's tool list is discovered again.
    #[serde(default = "defaults::refresh_seconds")]
    pub refresh_seconds: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSettings {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub provider: String,
    pub model: String,
    #[serde(default)]
    pub system_prompt: String,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub tools: Vec<String>,
    #[serde(default = "defaults::max_steps")]
    pub max_steps: u32,
    #[serde(default = "defaults::max_turn_seconds")]
    pub max_turn_seconds: u64,
    #[serde(default = "defaults::history_budget_bytes")]
    pub history_budget_bytes: usize,
    #[serde(default = "defaults::keep_images_turns")]
    pub keep_images_turns: usize,
    /// Providers tried in order when `provider` fails before answering.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback_providers: Vec<String>,
    /// The model to ask a fallback provider for, by provider name (default: `model`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub fallback_models: std::collections::BTreeMap<String, String>,
    /// Per-agent overrides of the providers' timeouts (every provider of the route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_byte_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_timeout_ms: Option<u64>,
    /// Extended thinking budget (Anthropic `thinking.budget_tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking_budget_tokens: Option<u32>,
    /// `auto`, `required`, `none`, or the name of one of `tools` (default: not sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<String>,
    /// Provider parameters passed through as they are (checked at start per provider kind).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub params: serde_json::Map<String, serde_json::Value>,
}

impl AgentSettings {
    /// Whether the agent overrides any of its providers' timeouts.
    pub fn overrides_timeouts(&self) -> bool {
        self.connect_timeout_ms.is_some()
            || self.first_byte_timeout_ms.is_some()
            || self.idle_timeout_ms.is_some()
            || self.total_timeout_ms.is_some()
    }

    /// `provider` with this agent's timeout overrides applied.
    pub fn provider_settings(&self, provider: &ProviderSettings) -> ProviderSettings {
        let mut p = provider.clone();
        p.connect_timeout_ms = self.connect_timeout_ms.unwrap_or(p.connect_timeout_ms);
        p.first_byte_timeout_ms = self
            .first_byte_timeout_ms
            .unwrap_or(p.first_byte_timeout_ms);
        p.idle_timeout_ms = self.idle_timeout_ms.unwrap_or(p.idle_timeout_ms);
        p.total_timeout_ms = self.total_timeout_ms.unwrap_or(p.total_timeout_ms);
        p
    }
}

mod defaults {
    pub fn connect_timeout_ms() -> u64 {
        5_000
    }
    pub fn first_byte_timeout_ms() -> u64 {
        60_000
    }
    pub fn idle_timeout_ms() -> u64 {
        30_000
    }
    pub fn total_timeout_ms() -> u64 {
        300_000
    }
    pub fn max_retries() -> u32 {
        2
    }
    pub fn breaker_threshold() -> u32 {
        5
    }
    pub fn breaker_cooldown_seconds() -> u64 {
        30
    }
    pub fn max_steps() -> u32 {
        8
    }
    pub fn max_turn_seconds() -> u64 {
        120
    }
    pub fn history_budget_bytes() -> usize {
        262_144
    }
    pub fn keep_images_turns() -> usize {
        2
    }
    pub fn refresh_seconds() -> u64 {
        300
    }
    pub fn tool_timeout_ms() -> u64 {
        10_000
    }
    pub fn max_response_bytes() -> usize {
        65_536
    }
    pub fn max_event_bytes() -> usize {
        1_048_576
    }
    pub fn provider_max_response_bytes() -> usize {
        16 * 1_048_576
    }
    pub fn max_tool_call_bytes() -> usize {
        1_048_576
    }
    pub fn tenants_claim() -> String {
        "tenants".into()
    }
    pub fn subject_claim() -> String {
        "sub".into()
    }
    pub fn jwks_refresh_seconds() -> u64 {
        10
    }
    pub fn algorithms() -> Vec<String> {
        ["RS256", "ES256", "EdDSA"].map(String::from).to_vec()
    }
}

impl Settings {
    /// Load `path`, overlay `AGENTGATE__*` variables from the process environment, and validate.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        if !path.exists() {
            return Err(ConfigError::Missing(path.to_owned()));
        }
        let settings: Settings = Figment::from(Toml::file(path))
            .merge(Env::prefixed("AGENTGATE__").split("__"))
            .extract()
            .map_err(|e| ConfigError::Parse(Box::new(e)))?;
        settings.validate()?;
        Ok(settings)
    }

    /// The built-in config with `AGENTGATE__*` variables overlaid, validated.
    pub fn load_builtin() -> Result<Self, ConfigError> {
        let settings: Settings = Figment::from(Toml::string(BUILTIN_CONFIG))
            .merge(Env::prefixed("AGENTGATE__").split("__"))
            .extract()
            .map_err(|e| ConfigError::Parse(Box::new(e)))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Parse settings from TOML text alone (no environment); for tests and tools.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let settings: Settings = Figment::from(Toml::string(text))
            .extract()
            .map_err(|e| ConfigError::Parse(Box::new(e)))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Check every cross-field rule once, naming the key that breaks it.
    /// Every section is checked in full and every problem is reported (one
    /// error, or [`ConfigError::Many`]), each naming its key; a check that
    /// needs an earlier value (a URL's host needs the URL to parse) is
    /// skipped when that value is already reported.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        for check in [
            Self::validate_server,
            Self::validate_log,
            Self::validate_cursor,
            Self::validate_sessions,
            Self::validate_jobs,
            Self::validate_store,
            Self::validate_auth,
            Self::validate_rate_limits,
        ] {
            check(self, &mut problems);
        }
        // Agents are checked against the names that were configured, even
        // where their sections have problems of their own.
        let before = problems.len();
        let mut providers = self.validate_providers(&mut problems);
        if problems.len() > before {
            providers.extend(self.providers.iter().map(|p| p.name.as_str()));
        }
        let before = problems.len();
        let mut tools = self.validate_tools(&mut problems);
        if problems.len() > before {
            tools.extend(self.tools.iter().map(|t| t.name.as_str()));
        }
        match self.validate_agents(&providers, &tools) {
            Ok(()) => {}
            Err(ConfigError::Many(each)) => problems.extend(each),
            Err(e) => problems.push(e),
        }
        many(problems)
    }

    /// `[server]`.
    fn validate_server(&self, p: &mut Vec<ConfigError>) {
        let s = &self.server;
        if let Err(e) = s.listen.parse::<SocketAddr>() {
            p.push(invalid(
                "server.listen",
                format!("{:?} is not an address: {e}", s.listen),
            ));
        }
        if s.max_body_bytes < MIN_BODY_BYTES {
            p.push(invalid(
                "server.max_body_bytes",
                format!(
                    "must be at least {MIN_BODY_BYTES} so that the largest cursor fits in a request"
                ),
            ));
        }
        if s.shutdown_grace_seconds > 3600 {
            p.push(invalid(
                "server.shutdown_grace_seconds",
                "must be 0 to 3600",
            ));
        }
        if s.workers > 1024 {
            p.push(invalid(
                "server.workers",
                "must be 0 (one per core) to 1024",
            ));
        }
        if !(1..=10_000).contains(&s.replicas) {
            p.push(invalid("server.replicas", "must be 1 to 10000"));
        }
        if !(1..=3600).contains(&s.body_timeout_seconds) {
            p.push(invalid("server.body_timeout_seconds", "must be 1 to 3600"));
        }
        if !(1..=1_000_000).contains(&s.max_connections) {
            p.push(invalid("server.max_connections", "must be 1 to 1000000"));
        }
        if let Some(project) = &s.default_project
            && let Err(e) = crate::ids::check("default project", project)
        {
            p.push(invalid("server.default_project", e));
        }
        if let Some(r) = &s.replica_id
            && actix_web::http::header::HeaderValue::from_str(r).is_err()
        {
            p.push(invalid(
                "server.replica_id",
                "must be visible ASCII (it is sent as a header)",
            ));
        }
    }

    /// `[rate_limits]` and the keys' own limits.
    fn validate_rate_limits(&self, p: &mut Vec<ConfigError>) {
        let r = &self.rate_limits;
        let mut check = |key: String, v: u64| {
            if v > MAX_RATE {
                p.push(invalid(key, format!("must be 0 (no limit) to {MAX_RATE}")));
            }
        };
        for (key, v) in [
            ("requests_per_minute", r.requests_per_minute),
            ("tokens_per_minute", r.tokens_per_minute),
            ("concurrent_streams", r.concurrent_streams),
            ("key_requests_per_minute", r.key_requests_per_minute),
            ("key_tokens_per_minute", r.key_tokens_per_minute),
        ] {
            check(format!("rate_limits.{key}"), v);
        }
        for (tenant, t) in &r.tenants {
            for (key, v) in [
                ("requests_per_minute", t.requests_per_minute),
                ("tokens_per_minute", t.tokens_per_minute),
                ("concurrent_streams", t.concurrent_streams),
            ] {
                check(
                    format!("rate_limits.tenants.{tenant}.{key}"),
                    v.unwrap_or(0),
                );
            }
        }
        for (i, k) in self.auth.api_keys.iter().enumerate() {
            for (key, v) in [
                ("requests_per_minute", k.requests_per_minute),
                ("tokens_per_minute", k.tokens_per_minute),
            ] {
                check(format!("auth.api_keys[{i}].{key}"), v.unwrap_or(0));
            }
        }
        for tenant in r.tenants.keys() {
            if let Err(e) = crate::ids::check("tenant", tenant) {
                p.push(invalid(format!("rate_limits.tenants.{tenant}"), e));
            }
        }
    }

    /// `[log]`.
    fn validate_log(&self, p: &mut Vec<ConfigError>) {
        if let Err(e) = crate::telemetry::filter(&self.log.level) {
            p.push(invalid("log.level", format!("{:?}: {e}", self.log.level)));
        }
    }

    /// `[cursor]`.
    fn validate_cursor(&self, p: &mut Vec<ConfigError>) {
        let c = &self.cursor;
        if c.ttl_seconds == 0 || c.ttl_seconds > MAX_TTL {
            p.push(invalid(
                "cursor.ttl_seconds",
                format!("must be 1 to {MAX_TTL}"),
            ));
        }
        if c.max_conversation_age_seconds == 0 {
            p.push(invalid(
                "cursor.max_conversation_age_seconds",
                "must be at least 1",
            ));
        }
    }

    /// `[sessions]`, against `[cursor]`.
    fn validate_sessions(&self, p: &mut Vec<ConfigError>) {
        if self.sessions.ttl_seconds == 0 || self.sessions.ttl_seconds > MAX_TTL {
            p.push(invalid(
                "sessions.ttl_seconds",
                format!("must be 1 to {MAX_TTL}"),
            ));
        }
        if self.session_max_age() < self.sessions.ttl_seconds {
            p.push(invalid(
                "sessions.max_age_seconds",
                "must be at least sessions.ttl_seconds",
            ));
        } else if self.session_max_age() > self.cursor.max_conversation_age_seconds {
            p.push(invalid(
                "sessions.max_age_seconds",
                "must not exceed cursor.max_conversation_age_seconds (the session's conversation would expire first)",
            ));
        }
    }

    /// `[jobs]`.
    fn validate_jobs(&self, p: &mut Vec<ConfigError>) {
        let j = &self.jobs;
        if j.ttl_seconds == 0 || j.ttl_seconds > MAX_TTL {
            p.push(invalid(
                "jobs.ttl_seconds",
                format!("must be 1 to {MAX_TTL}"),
            ));
        }
        if !(1..=1_000_000).contains(&j.max_queued) {
            p.push(invalid("jobs.max_queued", "must be 1 to 1000000"));
        }
        if !(1..=256).contains(&j.workers) {
            p.push(invalid("jobs.workers", "must be 1 to 256"));
        }
        if !(1..=3600).contains(&j.lease_seconds) {
            p.push(invalid("jobs.lease_seconds", "must be 1 to 3600"));
        }
        if !(1..=20).contains(&j.max_attempts) {
            p.push(invalid("jobs.max_attempts", "must be 1 to 20"));
        }
    }

    /// `[auth]`.
    fn validate_auth(&self, p: &mut Vec<ConfigError>) {
        let a = &self.auth;
        if a.mode == AuthMode::ApiKeys && a.api_keys.is_empty() {
            p.push(invalid(
                "auth.api_keys",
                "mode = \"api_keys\" needs at least one [[auth.api_keys]]",
            ));
        }
        if a.mode != AuthMode::ApiKeys && a.api_keys.iter().any(|k| !k.admin) {
            p.push(invalid(
                "auth.api_keys",
                "with another mode than \"api_keys\", only admin keys (admin = true) may be listed",
            ));
        }
        if a.mode == AuthMode::Jwt && a.issuers.is_empty() {
            p.push(invalid(
                "auth.issuers",
                "mode = \"jwt\" needs at least one [[auth.issuers]]",
            ));
        }
        if a.mode != AuthMode::Jwt && !a.issuers.is_empty() {
            p.push(invalid("auth.issuers", "only applies to mode = \"jwt\""));
        }
        const ASYMMETRIC: [&str; 9] = [
            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
        ];
        let mut issuers = HashSet::new();
        for (i, iss) in a.issuers.iter().enumerate() {
            let key = |field: &str| format!("auth.issuers[{i}].{field}");
            if iss.issuer.is_empty() || !issuers.insert(iss.issuer.as_str()) {
                p.push(invalid(key("issuer"), "must be non-empty and unique"));
            }
            if iss.audience.is_empty() {
                p.push(invalid(key("audience"), "must not be empty"));
            }
            match reqwest::Url::parse(&iss.jwks_url) {
                Err(e) => p.push(invalid(key("jwks_url"), format!("{:?}: {e}", iss.jwks_url))),
                Ok(url) => {
                    let host = url
                        .host_str()
                        .unwrap_or_default()
                        .trim_start_matches('[')
                        .trim_end_matches(']');
                    let loopback = host == "localhost"
                        || host
                            .parse::<std::net::IpAddr>()
                            .is_ok_and(|ip| ip.is_loopback());
                    if !(url.scheme() == "https" || (url.scheme() == "http" && loopback)) {
                        p.push(invalid(
                            key("jwks_url"),
                            "must be an https URL (plain http only on loopback): the keys decide who gets in",
                        ));
                    }
                }
            }
            if !(1..=3600).contains(&iss.jwks_refresh_seconds) {
                p.push(invalid(key("jwks_refresh_seconds"), "must be 1 to 3600"));
            }
            if iss.tenants_claim.is_empty() || iss.subject_claim.is_empty() {
                p.push(invalid(
                    key("tenants_claim"),
                    "claim names must not be empty",
                ));
            }
            if iss.algorithms.is_empty()
                || iss
                    .algorithms
                    .iter()
                    .any(|a| !ASYMMETRIC.contains(&a.as_str()))
            {
                p.push(invalid(
                    key("algorithms"),
                    format!("must list some of {}", ASYMMETRIC.join(", ")),
                ));
            }
        }
        let mut ids = HashSet::new();
        let mut hashes = HashSet::new();
        for (i, k) in a.api_keys.iter().enumerate() {
            let key = |field: &str| format!("auth.api_keys[{i}].{field}");
            if !crate::ids::is_valid(&k.id) || !ids.insert(k.id.as_str()) {
                p.push(invalid(
                    key("id"),
                    format!(
                        "{:?} must match {} and be unique",
                        k.id,
                        crate::ids::PATTERN
                    ),
                ));
            }
            let hex_ok = k.sha256.len() == 64 && k.sha256.bytes().all(|b| b.is_ascii_hexdigit());
            if !hex_ok || !hashes.insert(k.sha256.to_ascii_lowercase()) {
                p.push(invalid(
                    key("sha256"),
                    "must be 64 hex digits (the SHA-256 of the key), unique",
                ));
            }
            if k.subject.is_empty() || k.subject.len() > 256 || k.subject.contains('\0') {
                p.push(invalid(
                    key("subject"),
                    "must be 1 to 256 bytes without NUL",
                ));
            }
            if k.tenants.is_empty()
                || k.tenants
                    .iter()
                    .any(|t| t != "*" && !crate::ids::is_valid(t))
            {
                p.push(invalid(
                    key("tenants"),
                    format!(
                        "must list \"*\" or projects and organisations matching {}",
                        crate::ids::PATTERN
                    ),
                ));
            }
        }
    }

    /// `[store]`.
    fn validate_store(&self, p: &mut Vec<ConfigError>) {
        let st = &self.store;
        if st.kind == StoreKind::Redis {
            let nodes = st.redis_nodes();
            if nodes.is_empty() {
                p.push(invalid("store.url", "required for kind = \"redis\""));
            }
            if nodes
                .iter()
                .any(|n| !(n.starts_with("redis://") || n.starts_with("rediss://")))
            {
                // The URL may hold a password: name the problem, never the value.
                p.push(invalid(
                    "store.url",
                    "every node must start with redis:// or rediss://",
                ));
            }
            if let Some(master) = &st.sentinel_master {
                if st.cluster {
                    p.push(invalid(
                        "store.sentinel_master",
                        "set either cluster or sentinel_master, not both",
                    ));
                }
                if master.is_empty() || master.contains(char::is_whitespace) {
                    p.push(invalid(
                        "store.sentinel_master",
                        "must be the Sentinels' name for the master group",
                    ));
                }
            }
        } else {
            for (set, field, what) in [
                (
                    st.url.is_some(),
                    "store.url",
                    "only applies to kind = \"redis\" (the memory store has no URL)",
                ),
                (
                    st.cluster,
                    "store.cluster",
                    "only applies to kind = \"redis\"",
                ),
                (
                    st.sentinel_master.is_some(),
                    "store.sentinel_master",
                    "only applies to kind = \"redis\"",
                ),
            ] {
                if set {
                    p.push(invalid(field, what));
                }
            }
        }
        if st.prefix.is_empty()
            || st.prefix.contains(char::is_whitespace)
            || st.prefix.contains(['{', '}'])
        {
            p.push(invalid(
                "store.prefix",
                "must be non-empty, without whitespace or braces (braces are Redis Cluster hash tags)",
            ));
        }
        if st.max_entries < 16 {
            p.push(invalid("store.max_entries", "must be at least 16"));
        }
        if st.max_bytes < 4 * 1_048_576 {
            p.push(invalid(
                "store.max_bytes",
                "must be at least 4194304 (a few of the largest sessions)",
            ));
        }
    }

    /// `[[providers]]`; returns the names that are valid and unique.
    fn validate_providers(&self, problems: &mut Vec<ConfigError>) -> HashSet<&str> {
        let mut names = HashSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            let key = |field: &str| format!("providers[{i}].{field}");
            let mut bad = |field: &str, what: String| problems.push(invalid(key(field), what));
            if p.name.is_empty() || !names.insert(p.name.as_str()) {
                bad("name", format!("{:?} is empty or not unique", p.name));
            }
            if p.kind == ProviderKind::Openai && p.base_url.is_none() {
                bad("base_url", "required for kind = \"openai\"".into());
            }
            if let Some(url) = p.base_url.as_deref() {
                match reqwest::Url::parse(url) {
                    Err(e) => bad("base_url", format!("{url:?}: {e}")),
                    Ok(parsed) if !matches!(parsed.scheme(), "http" | "https") => {
                        bad("base_url", "must be an http or https URL".into());
                    }
                    Ok(_) => {}
                }
            }
            for (field, v) in [
                ("connect_timeout_ms", p.connect_timeout_ms),
                ("first_byte_timeout_ms", p.first_byte_timeout_ms),
                ("idle_timeout_ms", p.idle_timeout_ms),
                ("total_timeout_ms", p.total_timeout_ms),
            ] {
                if !(1..=MAX_TIMEOUT_MS).contains(&v) {
                    bad(field, "must be 1 to 3600000".into());
                }
            }
            if p.max_retries > 10 {
                bad("max_retries", "must be at most 10".into());
            }
            if p.breaker_threshold == 0 || p.breaker_threshold > 1000 {
                bad("breaker_threshold", "must be 1 to 1000".into());
            }
            if p.breaker_cooldown_seconds == 0 || p.breaker_cooldown_seconds > 3600 {
                bad("breaker_cooldown_seconds", "must be 1 to 3600".into());
            }
            const MIB: usize = 1_048_576;
            if !(1024..=64 * MIB).contains(&p.max_event_bytes) {
                bad("max_event_bytes", "must be 1024 to 67108864".into());
            }
            if !(p.max_event_bytes..=256 * MIB).contains(&p.max_response_bytes) {
                bad(
                    "max_response_bytes",
                    "must be at least max_event_bytes and at most 268435456".into(),
                );
            }
            if !(1024..=p.max_response_bytes).contains(&p.max_tool_call_bytes) {
                bad(
                    "max_tool_call_bytes",
                    "must be at least 1024 and at most max_response_bytes".into(),
                );
            }
            if p.anthropic_version.is_some() && p.kind != ProviderKind::Anthropic {
                bad(
                    "anthropic_version",
                    "only applies to kind = \"anthropic\"".into(),
                );
            }
        }
        names
    }

    /// `[[tools]]`; returns every tool name agents may list (built-ins included).
    fn validate_tools(&self, p: &mut Vec<ConfigError>) -> HashSet<&str> {
        let mut tool_names: HashSet<&str> = ["clock", "calculator"].into_iter().collect();
        for (i, t) in self.tools.iter().enumerate() {
            let key = |field: &str| format!("tools[{i}].{field}");
            if !crate::ids::is_tool_name(&t.name) {
                p.push(invalid(
                    key("name"),
                    format!("{:?} must match {}", t.name, crate::ids::TOOL_NAME_PATTERN),
                ));
            } else if t.kind != ToolKind::Builtin && !tool_names.insert(t.name.as_str()) {
                p.push(invalid(
                    key("name"),
                    format!("{:?} is already taken", t.name),
                ));
            }
            if t.kind != ToolKind::Mcp && t.allow.is_some() {
                p.push(invalid(key("allow"), "only applies to kind = \"mcp\""));
            }
            if t.kind == ToolKind::Mcp {
                if t.url.is_none() {
                    p.push(invalid(key("url"), "required for kind = \"mcp\""));
                }
                for (field, set) in [
                    ("method", t.method.is_some()),
                    ("parameters", t.parameters.is_some()),
                ] {
                    if set {
                        p.push(invalid(
                            key(field),
                            "does not apply to kind = \"mcp\" (the server describes its tools)",
                        ));
                    }
                }
                if t.refresh_seconds == 0 || t.refresh_seconds > 86_400 {
                    p.push(invalid(key("refresh_seconds"), "must be 1 to 86400"));
                }
            }
            if t.timeout_ms == 0 || t.timeout_ms > 600_000 {
                p.push(invalid(key("timeout_ms"), "must be 1 to 600000"));
            }
            if t.max_response_bytes == 0 || t.max_response_bytes > 1_048_576 {
                p.push(invalid(key("max_response_bytes"), "must be 1 to 1048576"));
            }
        }
        tool_names
    }

    /// `[[agents]]`, against the providers and tools.
    fn validate_agents(
        &self,
        names: &HashSet<&str>,
        tool_names: &HashSet<&str>,
    ) -> Result<(), ConfigError> {
        let kinds: std::collections::HashMap<&str, ProviderKind> = self
            .providers
            .iter()
            .map(|p| (p.name.as_str(), p.kind))
            .collect();
        let mut ids = HashSet::new();
        // Every problem of every agent (a few checks that later ones depend on
        // stop that agent's checks early).
        let mut problems = Vec::new();
        for (i, a) in self.agents.iter().enumerate() {
            let mut errs = Vec::new();
            let mut check = || -> Result<(), ConfigError> {
                let key = |field: &str| format!("agents[{i}].{field}");
                crate::ids::check("agent id", &a.id).map_err(|e| invalid(key("id"), e))?;
                if !ids.insert(a.id.as_str()) {
                    errs.push(invalid(key("id"), format!("{:?} is not unique", a.id)));
                }
                if !names.contains(a.provider.as_str()) {
                    errs.push(invalid(
                        key("provider"),
                        format!("no provider named {:?}", a.provider),
                    ));
                }
                let mut chain: HashSet<&str> = HashSet::from([a.provider.as_str()]);
                for f in &a.fallback_providers {
                    if !names.contains(f.as_str()) {
                        errs.push(invalid(
                            key("fallback_providers"),
                            format!("no provider named {f:?}"),
                        ));
                    }
                    if !chain.insert(f.as_str()) {
                        errs.push(invalid(
                            key("fallback_providers"),
                            format!("{f:?} appears twice in the route"),
                        ));
                    }
                }
                for (provider, model) in &a.fallback_models {
                    if !a.fallback_providers.contains(provider) {
                        errs.push(invalid(
                            key("fallback_models"),
                            format!("{provider:?} is not one of fallback_providers"),
                        ));
                    }
                    if model.is_empty() {
                        errs.push(invalid(key("fallback_models"), "a model must not be empty"));
                    }
                }
                for (field, v) in [
                    ("connect_timeout_ms", a.connect_timeout_ms),
                    ("first_byte_timeout_ms", a.first_byte_timeout_ms),
                    ("idle_timeout_ms", a.idle_timeout_ms),
                    ("total_timeout_ms", a.total_timeout_ms),
                ] {
                    if v.is_some_and(|v| !(1..=MAX_TIMEOUT_MS).contains(&v)) {
                        errs.push(invalid(key(field), "must be 1 to 3600000"));
                    }
                }
                if a.thinking_budget_tokens.is_some_and(|b| b < 1024) {
                    errs.push(invalid(
                        key("thinking_budget_tokens"),
                        "must be at least 1024",
                    ));
                }
                if a.model.is_empty() {
                    errs.push(invalid(key("model"), "must not be empty"));
                }
                if let Some(t) = a.temperature
                    && !(0.0..=2.0).contains(&t)
                {
                    errs.push(invalid(key("temperature"), "must be between 0 and 2"));
                }
                if a.max_tokens == Some(0) {
                    errs.push(invalid(key("max_tokens"), "must be at least 1"));
                }
                for t in &a.tools {
                    if !tool_names.contains(t.as_str()) {
                        errs.push(invalid(
                            key("tools"),
                            format!("no tool named {t:?} (built-ins: clock, calculator)"),
                        ));
                    }
                }
                use crate::llm::params::{self, ToolChoice};
                let choice = a.tool_choice.as_deref().map(ToolChoice::parse);
                if let Some(ToolChoice::Tool(name)) = &choice
                    && !a.tools.contains(name)
                {
                    errs.push(invalid(
                        key("tool_choice"),
                        format!(
                            "{name:?} is not auto, required, none or one of this agent's tools"
                        ),
                    ));
                }
                let forced = choice.as_ref().is_some_and(ToolChoice::forces_a_tool);
                let thinking = a.thinking_budget_tokens.is_some()
                    || params::thinking_budget(Some(&a.params)).is_some();
                let fields = params::AgentFields {
                    max_tokens: a.max_tokens,
                    thinking_budget: a.thinking_budget_tokens,
                };
                let mut checked = HashSet::new();
                for provider in std::iter::once(&a.provider).chain(&a.fallback_providers) {
                    let Some(&kind) = kinds.get(provider.as_str()) else {
                        continue;
                    };
                    if !checked.insert(kind) {
                        continue;
                    }
                    params::check(kind, &a.params, fields).map_err(|e| {
                        invalid(
                            key(&format!("params.{}", e.key)),
                            format!("{} (provider {provider:?})", e.message),
                        )
                    })?;
                    if kind == ProviderKind::Anthropic && forced && thinking {
                        errs.push(invalid(
                            key("tool_choice"),
                            format!(
                                "provider {provider:?} cannot force a tool call while thinking is \
                                 enabled: use auto or none"
                            ),
                        ));
                    }
                }
                if a.max_steps == 0 || a.max_steps > 100 {
                    errs.push(invalid(key("max_steps"), "must be 1 to 100"));
                }
                if a.max_turn_seconds == 0 || a.max_turn_seconds > 3600 {
                    errs.push(invalid(key("max_turn_seconds"), "must be 1 to 3600"));
                }
                if a.history_budget_bytes < 1024 || a.history_budget_bytes > MAX_PLAINTEXT {
                    errs.push(invalid(
                        key("history_budget_bytes"),
                        format!("must be 1024 to {MAX_PLAINTEXT}"),
                    ));
                }
                Ok(())
            };
            let result = check();
            problems.append(&mut errs);
            if let Err(e) = result {
                problems.push(e);
            }
        }
        many(problems)
    }
}

/// Where the cursor keys came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    Env,
    File,
    Ephemeral,
}

/// Load the cursor keyring from the environment (via `env`), as the issue and
/// docs/configuration.md specify.
pub fn load_keyring(
    cursor: &CursorSettings,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(Keyring, KeySource), ConfigError> {
    let inline = env(KEYS_ENV).filter(|v| !v.trim().is_empty());
    let file = env(KEYS_FILE_ENV).filter(|v| !v.trim().is_empty());
    match (inline, file) {
        (Some(_), Some(_)) => Err(ConfigError::BothKeySources),
        (Some(spec), None) => Ok((Keyring::parse(&spec)?, KeySource::Env)),
        (None, Some(path)) => {
            let path = PathBuf::from(path);
            let spec = zeroize::Zeroizing::new(
                std::fs::read_to_string(&path)
                    .map_err(|source| ConfigError::KeysFile { path, source })?,
            );
            Ok((Keyring::parse(&spec)?, KeySource::File))
        }
        (None, None) if cursor.allow_ephemeral_key => {
            Ok((Keyring::ephemeral(), KeySource::Ephemeral))
        }
        (None, None) => Err(ConfigError::NoKeys),
    }
}

#[cfg(test)]
mod tests;
