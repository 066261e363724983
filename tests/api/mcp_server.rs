//! A real MCP server for the tests, built with rmcp's server side and served
//! over streamable HTTP on a free loopback port. Its tool list can change at
//! run time (with or without telling the clients), its sessions can be
//! expired, and it records what it was asked.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler};
use serde_json::{Value, json};

/// A long tool name (70 characters), to check the 64-character limit.
pub const LONG: &str = "summarise_the_quarterly_revenue_report_for_every_region_in_the_company";

#[derive(Default)]
struct State {
    tools: Vec<Tool>,
    peers: Vec<Peer<RoleServer>>,
    /// (tool, arguments, authorization header) of every call.
    calls: Vec<(String, Value, Option<String>)>,
    lists: usize,
}

#[derive(Clone)]
pub struct McpServer {
    state: Arc<Mutex<State>>,
    sessions: Arc<LocalSessionManager>,
    pub url: String,
}

fn tool(name: &str, description: &str, schema: Value) -> Tool {
    let Value::Object(schema) = schema else {
        unreachable!()
    };
    Tool::new(name.to_owned(), description.to_owned(), schema)
}

fn numbers() -> Value {
    json!({"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]})
}

fn empty() -> Value {
    json!({"type": "object", "properties": {}})
}

/// The tools the server starts with.
fn initial_tools() -> Vec<Tool> {
    vec![
        tool("add", "Add two numbers", numbers()),
        tool("fail", "Always fails", empty()),
        tool("broken", "Answers with a protocol error", empty()),
        tool(
            "slow",
            "Waits",
            json!({"type": "object", "properties": {"ms": {"type": "integer"}}}),
        ),
        tool("secret", "Must not be offered", empty()),
        tool(LONG, "A tool with a long name", empty()),
    ]
}

#[derive(Clone)]
struct Handler(Arc<Mutex<State>>);

impl ServerHandler for Handler {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
    }

    fn on_initialized(
        &self,
        context: NotificationContext<RoleServer>,
    ) -> impl Future<Output = ()> + Send + '_ {
        self.0.lock().unwrap().peers.push(context.peer);
        std::future::ready(())
    }

    fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<ListToolsResult, ErrorData>> + Send + '_ {
        let mut state = self.0.lock().unwrap();
        state.lists += 1;
        std::future::ready(Ok(ListToolsResult::with_all_items(state.tools.clone())))
    }

    fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<CallToolResponse, ErrorData>> + Send + '_ {
        let args = Value::Object(request.arguments.clone().unwrap_or_default());
        let auth = context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|p| p.headers.get("authorization"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.0
            .lock()
            .unwrap()
            .calls
            .push((request.name.to_string(), args.clone(), auth));
        async move {
            let text = |t: String| Ok(CallToolResult::success(vec![ContentBlock::text(t)]).into());
            match request.name.as_ref() {
                "add" => text(format!(
                    "{}",
                    args["a"].as_f64().unwrap_or(0.0) + args["b"].as_f64().unwrap_or(0.0)
                )),
                "fail" => Ok(CallToolResult::error(vec![ContentBlock::text(
                    "the database is on fire",
                )])
                .into()),
                "broken" => Err(ErrorData::internal_error("kaput", None)),
                "slow" => {
                    let ms = args["ms"].as_u64().unwrap_or(5_000);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    text("finally".into())
                }
                "secret" => text("s3cr3t".into()),
                "multiply" => text(format!(
                    "{}",
                    args["a"].as_f64().unwrap_or(0.0) * args["b"].as_f64().unwrap_or(0.0)
                )),
                LONG => text("revenue is up".into()),
                other => Err(ErrorData::invalid_params(format!("no tool {other}"), None)),
            }
        }
    }
}

impl McpServer {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(State {
            tools: initial_tools(),
            ..Default::default()
        }));
        let sessions = Arc::new(LocalSessionManager::default());
        let factory_state = state.clone();
        let service = StreamableHttpService::new(
            move || Ok(Handler(factory_state.clone())),
            sessions.clone(),
            StreamableHttpServerConfig::default().with_sse_keep_alive(None),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hyper_service = hyper_util::service::TowerToHyperService::new(service);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let svc = hyper_service.clone();
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
                });
            }
        });
        Self {
            state,
            sessions,
            url: format!("http://127.0.0.1:{port}/mcp"),
        }
    }

    /// Forget every session, as a restarted or expiring server does.
    pub async fn expire_sessions(&self) -> usize {
        let mut sessions = self.sessions.sessions.write().await;
        let n = sessions.len();
        sessions.clear();
        n
    }

    pub async fn session_count(&self) -> usize {
        self.sessions.sessions.read().await.len()
    }

    /// Add a `multiply` tool; with `notify`, tell the connected clients.
    pub async fn add_multiply(&self, notify: bool) {
        let peers = {
            let mut state = self.state.lock().unwrap();
            state
                .tools
                .push(tool("multiply", "Multiply two numbers", numbers()));
            state.peers.clone()
        };
        if notify {
            for peer in peers {
                let _ = peer.notify_tool_list_changed().await;
            }
        }
    }

    pub fn calls(&self) -> Vec<(String, Value, Option<String>)> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn lists(&self) -> usize {
        self.state.lock().unwrap().lists
    }
}
