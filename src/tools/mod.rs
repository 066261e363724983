//! Server-side tools: what an agent may call, validated against JSON Schemas
//! and run by the gateway with a per-tool timeout. Failures of any kind
//! (unknown tool, bad arguments, timeout, tool error) go back to the model as
//! a tool error, never as a failed request.

pub mod builtin;
pub mod calc;
pub mod http;
pub mod mcp;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{ToolKind, ToolSettings};
use crate::domain::ToolCall;

pub use crate::config::Expose;

/// Where a tool comes from (each API shape names these its own way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolOrigin {
    /// Built into the gateway (`clock`, `calculator`).
    Builtin,
    /// An HTTP tool declared in config.
    Http,
    /// A tool of an MCP server.
    Mcp,
    /// A tool the client runs itself.
    Client,
    /// A name the model made up: no such tool.
    Unknown,
}

/// A call's arguments as JSON: the model's text, with nothing (or only
/// whitespace) meaning `{}`. The one parser every tool path uses.
pub fn parse_arguments(raw: &str) -> Result<serde_json::Value, String> {
    let raw = if raw.trim().is_empty() { "{}" } else { raw };
    serde_json::from_str(raw).map_err(|e| format!("the arguments are not valid JSON: {e}"))
}

/// A tool as the model and the clients see it.
#[derive(Debug, Clone)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub parameters: serde_json::Value,
    pub origin: ToolOrigin,
    pub timeout: Duration,
    pub expose: Expose,
    /// The client must allow each run first (Cognite `toolConfirmation`).
    pub confirm: bool,
}

/// Errors of a tool run; the message goes to the model.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{0}")]
    Failed(String),
}

/// What a tool needs to know about the run it is part of.
#[derive(Debug, Clone)]
pub struct ToolContext {
    /// Stable across re-runs of the same turn (see [`idempotency_key`]).
    pub idempotency_key: String,
}

#[async_trait::async_trait]
pub trait Tool: Send + Sync + std::fmt::Debug {
    fn spec(&self) -> &ToolSpec;
    async fn call(&self, args: serde_json::Value, ctx: &ToolContext) -> Result<String, ToolError>;
}

/// The result of running one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolRun {
    pub call: ToolCall,
    pub content: String,
    pub is_error: bool,
    pub origin: ToolOrigin,
    pub expose: Expose,
}

/// base64url(SHA-256(conversation id ‖ turn ‖ tool name ‖ canonical JSON of the
/// arguments ‖ position in the step)), each piece length-prefixed so that no
/// two different inputs collide. Never the model's call id, which changes per run.
pub fn idempotency_key(
    conversation: &str,
    turn: u64,
    tool: &str,
    args: &serde_json::Value,
    position: usize,
) -> String {
    // serde_json's default map is ordered, so this serialisation is canonical.
    let canonical = serde_json::to_string(args).unwrap_or_default();
    let mut h = Sha256::new();
    for piece in [
        conversation.as_bytes(),
        &turn.to_be_bytes(),
        tool.as_bytes(),
        canonical.as_bytes(),
        &(position as u64).to_be_bytes(),
    ] {
        h.update((piece.len() as u64).to_be_bytes());
        h.update(piece);
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.finalize())
}

/// A runnable tool and the validator of its arguments.
pub struct Entry {
    tool: Arc<dyn Tool>,
    validator: jsonschema::Validator,
}

impl Entry {
    /// `tool` with a validator of its parameters schema.
    pub fn new(tool: Arc<dyn Tool>) -> Result<Self, String> {
        let validator = jsonschema::validator_for(&tool.spec().parameters)
            .map_err(|e| format!("parameters is not a valid JSON Schema: {e}"))?;
        Ok(Self { tool, validator })
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.tool.fmt(f)
    }
}

/// Every tool by name: the built-ins plus those declared in config, and the
/// tools each MCP server offers (discovered at run time, so looked up live).
#[derive(Debug, Default)]
pub struct ToolRegistry {
    tools: HashMap<String, Arc<Entry>>,
    mcp: Vec<Arc<mcp::McpServer>>,
}

/// A tool-configuration error found at start.
#[derive(Debug, thiserror::Error)]
#[error("tools[{index}] ({name}): {message}")]
pub struct ToolConfigError {
    pub index: usize,
    pub name: String,
    pub message: String,
}

impl ToolRegistry {
    pub fn new(
        settings: &[ToolSettings],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ToolConfigError> {
        let mut tools: Vec<Arc<dyn Tool>> = builtin::all();
        let mut mcp = Vec::new();
        for (index, s) in settings.iter().enumerate() {
            let err = |message: String| ToolConfigError {
                index,
                name: s.name.clone(),
                message,
            };
            match s.kind {
                ToolKind::Builtin => {
                    let pos = tools
                        .iter()
                        .position(|t| t.spec().name == s.name)
                        .ok_or_else(|| err(format!("no built-in tool is called {:?}", s.name)))?;
                    tools[pos] = builtin::configured(&s.name, s)
                        .ok_or_else(|| err("unknown built-in".into()))?;
                }
                ToolKind::Http => {
                    if tools.iter().any(|t| t.spec().name == s.name) {
                        return Err(err("the name is already taken".into()));
                    }
                    tools.push(Arc::new(http::HttpTool::new(s, env).map_err(err)?));
                }
                ToolKind::Mcp => mcp.push(Arc::new(mcp::McpServer::new(s, env).map_err(err)?)),
            }
        }
        let mut map = HashMap::new();
        for tool in tools {
            let name = tool.spec().name.clone();
            let entry = Entry::new(tool).map_err(|message| ToolConfigError {
                index: 0,
                name: name.clone(),
                message,
            })?;
            map.insert(name, Arc::new(entry));
        }
        Ok(Self { tools: map, mcp })
    }

    /// The registry with one more tool (tests register instrumented tools).
    #[cfg(test)]
    pub(crate) fn with_tool(mut self, tool: Arc<dyn Tool>) -> Self {
        let name = tool.spec().name.clone();
        let entry = Entry::new(tool).unwrap_or_else(|e| panic!("test tool {name}: {e}"));
        self.tools.insert(name, Arc::new(entry));
        self
    }

    /// Start discovering every MCP server's tools in the background (and keep
    /// them current). Without it, MCP tools are discovered on first use.
    pub fn start_discovery(&self) {
        for server in &self.mcp {
            server.clone().spawn_discovery();
        }
    }

    /// The MCP servers, by configured name.
    pub fn mcp_server(&self, name: &str) -> Option<&Arc<mcp::McpServer>> {
        self.mcp.iter().find(|s| s.name() == name)
    }

    /// Make sure the MCP servers among `allowed` were discovered at least once.
    pub async fn prepare(&self, allowed: &[String]) {
        for server in &self.mcp {
            if allowed.iter().any(|a| a == server.name()) {
                server.ensure_discovered().await;
            }
        }
    }

    /// The tools an agent allowed `allowed` (tool and MCP server names) is offered now.
    pub fn offered(&self, allowed: &[String]) -> Vec<Arc<dyn Tool>> {
        let mut out = Vec::new();
        for name in allowed {
            if let Some(e) = self.tools.get(name) {
                out.push(e.tool.clone());
            } else if let Some(server) = self.mcp_server(name) {
                let mut tools: Vec<Arc<dyn Tool>> =
                    server.entries().values().map(|e| e.tool.clone()).collect();
                tools.sort_by(|a, b| a.spec().name.cmp(&b.spec().name));
                out.extend(tools);
            }
        }
        out
    }

    /// The entry an agent allowed `allowed` may run as `name`.
    fn entry(&self, allowed: &[String], name: &str) -> Option<Arc<Entry>> {
        if allowed.iter().any(|a| a == name)
            && let Some(e) = self.tools.get(name)
        {
            return Some(e.clone());
        }
        self.mcp
            .iter()
            .filter(|s| allowed.iter().any(|a| a == s.name()))
            .find_map(|s| s.entries().get(name).cloned())
    }

    /// The tool an agent allowed `allowed` may run as `name`.
    pub fn find(&self, allowed: &[String], name: &str) -> Option<Arc<dyn Tool>> {
        self.entry(allowed, name).map(|e| e.tool.clone())
    }

    /// Any tool called `name` (for reporting).
    pub fn tool(&self, name: &str) -> Option<Arc<dyn Tool>> {
        self.tools.get(name).map(|e| e.tool.clone()).or_else(|| {
            self.mcp
                .iter()
                .find_map(|s| s.entries().get(name).map(|e| e.tool.clone()))
        })
    }

    /// Validate and run one call; every failure becomes an error result.
    pub async fn run(
        &self,
        allowed: &[String],
        call: &ToolCall,
        ctx: ToolContext,
        deadline: tokio::time::Instant,
    ) -> ToolRun {
        let run = self.run_once(allowed, call, ctx, deadline).await;
        // Unknown names are not labels: a model could invent any number.
        let tool = if run.origin == ToolOrigin::Unknown {
            "unknown"
        } else {
            run.call.name.as_str()
        };
        crate::observe::tool_call(tool, !run.is_error);
        run
    }

    async fn run_once(
        &self,
        allowed: &[String],
        call: &ToolCall,
        ctx: ToolContext,
        deadline: tokio::time::Instant,
    ) -> ToolRun {
        let result = |content: String, is_error: bool, origin, expose| ToolRun {
            call: call.clone(),
            content,
            is_error,
            origin,
            expose,
        };
        let Some(entry) = self.entry(allowed, &call.name) else {
            return result(
                format!(
                    "unknown tool {:?}: use only the tools you were given",
                    call.name
                ),
                true,
                ToolOrigin::Unknown,
                Expose::Full,
            );
        };
        let spec = entry.tool.spec();
        let args = match parse_arguments(&call.arguments) {
            Ok(v) => v,
            Err(problem) => return result(problem, true, spec.origin, spec.expose),
        };
        if let Some(first) = entry.validator.iter_errors(&args).next() {
            return result(
                format!("the arguments do not match the tool's schema: {first}"),
                true,
                spec.origin,
                spec.expose,
            );
        }
        let until = deadline.min(tokio::time::Instant::now() + spec.timeout);
        match tokio::time::timeout_at(until, entry.tool.call(args, &ctx)).await {
            Err(_) => result(
                format!(
                    "the tool did not answer within {} ms",
                    spec.timeout.as_millis()
                ),
                true,
                spec.origin,
                spec.expose,
            ),
            Ok(Err(e)) => result(e.to_string(), true, spec.origin, spec.expose),
            Ok(Ok(content)) => result(content, false, spec.origin, spec.expose),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn idempotency_keys_are_stable_and_sensitive_to_every_input() {
        let args = json!({"b": 1, "a": [1, 2]});
        let reordered: serde_json::Value = serde_json::from_str(r#"{"a":[1,2],"b":1}"#).unwrap();
        let k = idempotency_key("cid", 3, "t", &args, 0);
        assert_eq!(
            k,
            idempotency_key("cid", 3, "t", &reordered, 0),
            "canonical JSON"
        );
        for other in [
            idempotency_key("cid2", 3, "t", &args, 0),
            idempotency_key("cid", 4, "t", &args, 0),
            idempotency_key("cid", 3, "u", &args, 0),
            idempotency_key("cid", 3, "t", &json!({"b": 2, "a": [1, 2]}), 0),
            idempotency_key("cid", 3, "t", &args, 1),
        ] {
            assert_ne!(k, other);
        }
    }

    #[tokio::test]
    async fn bad_calls_become_tool_errors() {
        let reg = ToolRegistry::new(&[], &|_| None).unwrap();
        let allowed = vec!["calculator".to_owned()];
        let ctx = ToolContext {
            idempotency_key: "k".into(),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let call = |name: &str, args: &str| ToolCall {
            id: "c".into(),
            name: name.into(),
            arguments: args.into(),
        };
        let ok = reg
            .run(
                &allowed,
                &call("calculator", r#"{"expression":"2*(3+4)"}"#),
                ctx.clone(),
                deadline,
            )
            .await;
        assert_eq!((ok.content.as_str(), ok.is_error), ("14", false));
        for (c, fragment) in [
            (call("clock", "{}"), "unknown tool"),
            (call("nope", "{}"), "unknown tool"),
            (call("calculator", "{not json"), "not valid JSON"),
            (call("calculator", r#"{"expr":"1"}"#), "schema"),
            (
                call("calculator", r#"{"expression":"1/0"}"#),
                "division by zero",
            ),
        ] {
            let r = reg.run(&allowed, &c, ctx.clone(), deadline).await;
            assert!(
                r.is_error && r.content.contains(fragment),
                "{c:?}: {}",
                r.content
            );
        }
    }
}
