//! MCP tools: the tools of a Model Context Protocol server (streamable HTTP),
//! called through the official Rust SDK (`rmcp`).
//!
//! A `[[tools]] kind = "mcp"` entry is one server. Its tools are discovered
//! when the gateway starts, again every `refresh_seconds`, and at once when
//! the server says its list changed; each is offered to the model as
//! `<name>__<tool>` (see [`exposed_name`]), filtered by `allow`. An agent that
//! lists the server's name in `tools` may use all of them. A session the
//! server has expired (HTTP 404) is re-initialised once by rmcp and the call
//! retried; tool errors and protocol errors go back to the model as tool errors.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ContentBlock,
    Implementation, ProtocolVersion,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, Notify};

use super::{Entry, Expose, Tool, ToolContext, ToolError, ToolOrigin, ToolSpec};
use crate::config::ToolSettings;

use crate::ids::{MAX_TOOL_NAME as MAX_NAME, is_tool_name, is_tool_name_char};
/// Headers the MCP transport sets itself.
const RESERVED_HEADERS: [&str; 3] = ["accept", "mcp-session-id", "last-event-id"];

/// The name the model sees for `tool` of server `server`: `<server>__<tool>`
/// when that matches `^[a-zA-Z0-9_-]{1,64}$`; otherwise its characters outside
/// that set become `_` and it is cut to 55 characters followed by `_` and 8
/// hex digits of the SHA-256 of the full name, so that distinct tools keep
/// distinct names.
pub fn exposed_name(server: &str, tool: &str) -> String {
    let full = format!("{server}__{tool}");
    if is_tool_name(&full) {
        return full;
    }
    let clean: String = full
        .chars()
        .map(|c| if is_tool_name_char(c) { c } else { '_' })
        .take(MAX_NAME - 9)
        .collect();
    let digest = Sha256::digest(full.as_bytes());
    let hash: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{clean}_{hash}")
}

/// The client side of one server: the rmcp session, (re)connected on demand.
struct Connection {
    server: String,
    url: String,
    headers: HashMap<http::HeaderName, http::HeaderValue>,
    http: reqwest::Client,
    timeout: Duration,
    /// Longest tool result handed to the model, bytes (longer ones are truncated).
    max_result_bytes: usize,
    /// Signalled by the server's `notifications/tools/list_changed`.
    changed: Arc<Notify>,
    session: Mutex<Option<Arc<RunningService<RoleClient, Listener>>>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values may be credentials: names only.
        f.debug_struct("Connection")
            .field("server", &self.server)
            .field("url", &self.url)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Our MCP client handler: it only listens for tool list changes.
#[derive(Clone)]
struct Listener {
    changed: Arc<Notify>,
}

impl ClientHandler for Listener {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("agentgate", env!("CARGO_PKG_VERSION")),
        )
        .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
    }

    fn on_tool_list_changed(
        &self,
        _context: NotificationContext<RoleClient>,
    ) -> impl Future<Output = ()> + Send + '_ {
        self.changed.notify_one();
        std::future::ready(())
    }
}

impl Connection {
    /// The live session, initialising one if there is none (or it ended).
    async fn session(&self) -> Result<Arc<RunningService<RoleClient, Listener>>, String> {
        let mut slot = self.session.lock().await;
        if let Some(s) = slot.as_ref().filter(|s| !s.is_closed()) {
            return Ok(s.clone());
        }
        let config = StreamableHttpClientTransportConfig::with_uri(self.url.as_str())
            .custom_headers(self.headers.clone())
            .max_sse_event_size(self.max_read_bytes())
            .max_json_response_size(self.max_read_bytes())
            .reinit_on_expired_session(true);
        let transport = StreamableHttpClientTransport::with_client(self.http.clone(), config);
        let listener = Listener {
            changed: self.changed.clone(),
        };
        let session = tokio::time::timeout(self.timeout, listener.serve(transport))
            .await
            .map_err(|_| format!("no answer to initialize within {:?}", self.timeout))?
            .map_err(|e| format!("initialize failed: {e}"))?;
        let session = Arc::new(session);
        *slot = Some(session.clone());
        Ok(session)
    }

    /// The most one response (or one streamed event) may make us read: room
    /// for a tool list and a result's envelope around `max_result_bytes`.
    /// Past it the call fails as a tool error; rmcp checks it as bytes arrive.
    fn max_read_bytes(&self) -> usize {
        (4 * self.max_result_bytes).max(4 * 1_048_576)
    }

    /// Forget the session (the next call initialises a new one).
    async fn reset(&self) {
        self.session.lock().await.take();
    }

    async fn call(&self, tool: &str, args: serde_json::Value) -> Result<String, ToolError> {
        let session = self.session().await.map_err(|e| {
            // Details (which may name the URL) go to the log, not to the model.
            tracing::warn!(server = %self.server, error = %e, "MCP server unavailable");
            ToolError::Failed("the tool's MCP server is unavailable".into())
        })?;
        let mut params = CallToolRequestParams::new(tool.to_owned());
        if let serde_json::Value::Object(map) = args {
            params = params.with_arguments(map);
        }
        match session.peer().call_tool(params).await {
            Ok(result) if result.is_error == Some(true) => {
                let text = truncate(result_text(&result), self.max_result_bytes);
                Err(ToolError::Failed(if text.is_empty() {
                    "the tool failed".into()
                } else {
                    text
                }))
            }
            Ok(result) => Ok(truncate(result_text(&result), self.max_result_bytes)),
            Err(rmcp::ServiceError::McpError(e)) => Err(ToolError::Failed(format!(
                "MCP error {}: {}",
                e.code.0, e.message
            ))),
            Err(e) => {
                tracing::warn!(server = %self.server, tool, error = %e, "MCP call failed");
                if session.is_closed() {
                    self.reset().await;
                }
                Err(ToolError::Failed(
                    "the call to the tool's MCP server failed".into(),
                ))
            }
        }
    }
}

/// `text` cut to at most `max` bytes (on a character boundary), saying so.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    text.truncate(text.floor_char_boundary(max));
    text.push_str(&format!(
        "\n[truncated: the result was longer than {max} bytes]"
    ));
    text
}

/// A tool result as text for the model: text blocks as they are, other
/// blocks as short placeholders, structured content when there is nothing else.
fn result_text(result: &CallToolResult) -> String {
    let parts: Vec<String> = result
        .content
        .iter()
        .map(|block| match block {
            ContentBlock::Text(t) => t.text.clone(),
            ContentBlock::Image(i) => format!("[image {}]", i.mime_type),
            ContentBlock::Audio(a) => format!("[audio {}]", a.mime_type),
            ContentBlock::Resource(r) => serde_json::to_string(&r.resource).unwrap_or_default(),
            ContentBlock::ResourceLink(l) => format!("[resource {}]", l.uri),
            _ => "[content]".to_owned(),
        })
        .collect();
    if parts.is_empty()
        && let Some(structured) = &result.structured_content
    {
        return structured.to_string();
    }
    parts.join("\n")
}

/// One tool of an MCP server, as the registry runs it.
#[derive(Debug)]
struct McpTool {
    connection: Arc<Connection>,
    /// The server's name for it.
    remote: String,
    spec: ToolSpec,
}

#[async_trait::async_trait]
impl Tool for McpTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, args: serde_json::Value, _ctx: &ToolContext) -> Result<String, ToolError> {
        self.connection.call(&self.remote, args).await
    }
}

/// One configured MCP server and the tools it offers now.
#[derive(Debug)]
pub struct McpServer {
    name: String,
    connection: Arc<Connection>,
    allow: Option<Vec<String>>,
    expose: Expose,
    confirm: bool,
    refresh: Duration,
    tools: RwLock<Arc<HashMap<String, Arc<Entry>>>>,
    discovered: AtomicBool,
    /// Set once a turn waited for a discovery: later turns never wait (the
    /// background task keeps trying).
    waited: AtomicBool,
    /// Held while discovering, so that concurrent first uses share one discovery.
    discovering: Mutex<()>,
}

impl McpServer {
    pub fn new(s: &ToolSettings, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let url = s.url.clone().ok_or("url is required for kind = \"mcp\"")?;
        let parsed = reqwest::Url::parse(&url).map_err(|e| format!("url: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err("url must be an http or https URL".into());
        }
        let mut headers = HashMap::new();
        for (name, value) in super::http::resolve_headers(&s.headers, env)? {
            if RESERVED_HEADERS.contains(&name.as_str()) {
                return Err(format!("header {name} is set by the MCP transport"));
            }
            headers.insert(name, value);
        }
        crate::install_crypto_provider();
        let timeout = Duration::from_millis(s.timeout_ms);
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            // The configured headers are often credentials: never replay
            // them to wherever a 3xx points.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        Ok(Self {
            name: s.name.clone(),
            connection: Arc::new(Connection {
                server: s.name.clone(),
                url,
                headers,
                http,
                timeout,
                max_result_bytes: s.max_response_bytes,
                changed: Arc::new(Notify::new()),
                session: Mutex::new(None),
            }),
            allow: s.allow.clone(),
            expose: s.expose,
            confirm: s.confirm,
            refresh: Duration::from_secs(s.refresh_seconds),
            tools: RwLock::new(Arc::default()),
            discovered: AtomicBool::new(false),
            waited: AtomicBool::new(false),
            discovering: Mutex::new(()),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tools offered now, by exposed name.
    pub fn entries(&self) -> Arc<HashMap<String, Arc<Entry>>> {
        self.tools.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Before the first turn that uses this server: wait for a discovery in
    /// progress, or try one (bounded by the timeout) if none succeeded yet.
    /// Only the first such turn waits for a server that is down.
    pub async fn ensure_discovered(&self) {
        if self.discovered.load(Ordering::Acquire) {
            return;
        }
        let _one = self.discovering.lock().await;
        if self.discovered.load(Ordering::Acquire) || self.waited.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Err(e) = self.discover_locked().await {
            tracing::warn!(server = %self.name, error = %e, "MCP tool discovery failed");
        }
    }

    /// List the server's tools and replace the offered set.
    pub async fn discover(&self) -> Result<usize, String> {
        let _one = self.discovering.lock().await;
        self.discover_locked().await
    }

    async fn discover_locked(&self) -> Result<usize, String> {
        let session = self.connection.session().await?;
        let timeout = self.connection.timeout;
        let listed = tokio::time::timeout(timeout, session.peer().list_all_tools()).await;
        let tools = match listed {
            Err(_) => return Err(format!("no tool list within {timeout:?}")),
            Ok(Err(e)) => {
                if session.is_closed() {
                    self.connection.reset().await;
                }
                return Err(format!("tools/list failed: {e}"));
            }
            Ok(Ok(tools)) => tools,
        };
        let mut entries = HashMap::new();
        for tool in tools {
            if self
                .allow
                .as_ref()
                .is_some_and(|allow| !allow.iter().any(|a| *a == tool.name))
            {
                continue;
            }
            let name = exposed_name(&self.name, &tool.name);
            let spec = ToolSpec {
                name: name.clone(),
                description: tool.description.as_deref().unwrap_or_default().to_owned(),
                parameters: serde_json::Value::Object((*tool.input_schema).clone()),
                origin: ToolOrigin::Mcp,
                timeout,
                expose: self.expose,
                confirm: self.confirm,
            };
            let tool = Arc::new(McpTool {
                connection: self.connection.clone(),
                remote: tool.name.to_string(),
                spec,
            });
            match Entry::new(tool) {
                Ok(entry) => {
                    entries.insert(name, Arc::new(entry));
                }
                Err(e) => {
                    tracing::warn!(server = %self.name, tool = %name, error = %e, "MCP tool skipped");
                }
            }
        }
        let count = entries.len();
        *self.tools.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(entries);
        self.discovered.store(true, Ordering::Release);
        tracing::info!(server = %self.name, tools = count, "MCP tools discovered");
        Ok(count)
    }

    /// Keep the tool list current in the background: every `refresh_seconds`,
    /// at once when the server announces a change, and with backoff while the
    /// server is unreachable. Stops when the server is dropped.
    pub fn spawn_discovery(self: Arc<Self>) {
        let weak: Weak<Self> = Arc::downgrade(&self);
        let changed = self.connection.changed.clone();
        let refresh = self.refresh;
        drop(self);
        tokio::spawn(async move {
            let mut retry = Duration::from_secs(1);
            loop {
                let Some(server) = weak.upgrade() else { return };
                let wait = match server.discover().await {
                    Ok(_) => {
                        retry = Duration::from_secs(1);
                        refresh
                    }
                    Err(e) => {
                        tracing::warn!(server = %server.name, error = %e, "MCP tool discovery failed");
                        let wait = retry.min(refresh);
                        retry = (retry * 2).min(Duration::from_secs(60));
                        wait
                    }
                };
                drop(server);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = changed.notified() => {}
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(name: &str) -> bool {
        is_tool_name(name)
    }

    #[test]
    fn long_results_are_truncated_on_a_character_boundary() {
        assert_eq!(truncate("short".into(), 10), "short");
        let cut = truncate("ééé".into(), 3);
        assert!(cut.starts_with("é\n[truncated"), "{cut}");
    }

    #[test]
    fn exposed_names_fit_the_model_apis() {
        assert_eq!(
            exposed_name("github", "create_issue"),
            "github__create_issue"
        );
        let long = "a".repeat(70);
        let n = exposed_name("srv", &long);
        assert!(valid(&n) && n.len() == 64, "{n}");
        assert!(n.starts_with("srv__aaa"));
        assert_ne!(
            n,
            exposed_name("srv", &"a".repeat(71)),
            "distinct tools stay distinct"
        );
        let dotted = exposed_name("srv", "files.read");
        assert!(
            valid(&dotted) && dotted.starts_with("srv__files_read_"),
            "{dotted}"
        );
        assert_ne!(dotted, exposed_name("srv", "files_read"));
        assert!(valid(&exposed_name("srv", "naïve tool")));
        let exact = format!("s__{}", "b".repeat(61));
        assert_eq!(
            exposed_name("s", &"b".repeat(61)),
            exact,
            "64 characters fit as they are"
        );
    }
}
