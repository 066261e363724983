//! A thin client of the Cognite-style chat API, used by `agentgate chat` and
//! by the tests: it streams each turn, keeps the cursor between turns (and
//! the earlier ones, for undo), offers the caller's local tools as client
//! actions, and sends back their results and confirmation decisions.
//!
//! Cursors are immutable, so going back to an earlier one forks the
//! conversation: the turns after it are not in the fork.

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{Value, json};

/// Errors of a turn, as the client sees them.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the gateway: {0}")]
    Http(#[from] reqwest::Error),
    /// The gateway answered with an error (its machine code and message).
    #[error("{code}: {message}")]
    Api { code: String, message: String },
    #[error("unexpected answer from the gateway: {0}")]
    Protocol(String),
}

/// A tool this client runs itself, offered to the model as a client action.
#[derive(Debug, Clone)]
pub struct LocalTool {
    pub name: String,
    pub description: String,
    /// A JSON Schema for an object: the call's arguments.
    pub parameters: Value,
}

/// What happens during a turn, as it happens.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A piece of the answer's text.
    Delta(String),
    /// The model called a tool (server-side, or a client action).
    ToolCall { name: String, arguments: String },
    /// A server-side tool finished.
    ToolResult { name: String, ok: bool },
}

/// Something the model asked of the client, to answer on the next call.
#[derive(Debug, Clone, PartialEq)]
pub enum Pending {
    /// Run a client tool and send its result.
    ClientTool {
        action_id: String,
        name: String,
        arguments: String,
    },
    /// Allow or deny a server tool run.
    Confirmation {
        action_id: String,
        tool: String,
        arguments: Value,
    },
}

/// An answer to a [`Pending`] action.
#[derive(Debug, Clone)]
pub enum Answer {
    ToolResult { action_id: String, text: String },
    Confirm { action_id: String, allow: bool },
}

/// The end of a turn.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    /// The agent's text of this turn.
    pub text: String,
    /// Actions to answer before the conversation goes on.
    pub pending: Vec<Pending>,
}

/// One conversation with one agent.
pub struct ChatClient {
    http: reqwest::Client,
    chat_url: String,
    agent: String,
    token: Option<String>,
    tools: Vec<LocalTool>,
    cursor: Option<String>,
    /// The cursor before each user turn, newest last: `undo` goes back one.
    earlier: Vec<Option<String>>,
    /// The cursor before the turn in progress (its answers to actions
    /// included), for [`abandon_turn`](Self::abandon_turn).
    turn_start: Option<Option<String>>,
}

/// The most a turn's answer may take (text, events, the final cursor):
/// a gateway that sends more is cut off.
pub const MAX_TURN_BYTES: usize = 64 * 1024 * 1024;
/// The most of an error body read.
const MAX_ERROR_BYTES: usize = 64 * 1024;

impl ChatClient {
    /// A client of the gateway at `base_url` (`http://host:port`), for `agent`
    /// in `project` (or the gateway's default project), with a bearer `token`
    /// when the gateway checks callers.
    pub fn new(base_url: &str, project: Option<&str>, agent: &str, token: Option<String>) -> Self {
        crate::install_crypto_provider();
        let base = base_url.trim_end_matches('/');
        Self {
            // The gateway sends a keep-alive comment every 15 s while a turn runs.
            http: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .read_timeout(std::time::Duration::from_secs(120))
                .build()
                .unwrap_or_default(),
            chat_url: match project {
                Some(p) => format!("{base}/api/v1/projects/{p}/ai/agents/chat"),
                None => format!("{base}/ai/agents/chat"),
            },
            agent: agent.to_owned(),
            token,
            tools: Vec::new(),
            cursor: None,
            earlier: Vec::new(),
            turn_start: None,
        }
    }

    /// Offer these tools to the model on every turn.
    pub fn with_tools(mut self, tools: Vec<LocalTool>) -> Self {
        self.tools = tools;
        self
    }

    pub fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }

    /// Continue from `cursor` (a saved one), or start over with `None`.
    pub fn set_cursor(&mut self, cursor: Option<String>) {
        if self.cursor != cursor {
            self.earlier.push(self.cursor.take());
        }
        self.cursor = cursor;
    }

    /// Start a new conversation (the current one can be undone back to).
    pub fn new_conversation(&mut self) {
        self.set_cursor(None);
    }

    /// Go back to the cursor before the last user turn (whatever actions it
    /// took); `false` when there is none.
    pub fn undo(&mut self) -> bool {
        self.turn_start = None;
        match self.earlier.pop() {
            Some(previous) => {
                self.cursor = previous;
                true
            }
            None => false,
        }
    }

    /// Give up the turn in progress (an answer to its actions failed): back
    /// to the cursor before its user message, as if it was never sent.
    pub fn abandon_turn(&mut self) {
        if let Some(start) = self.turn_start.take() {
            self.cursor = start;
            self.earlier.pop();
        }
    }

    /// Send a user message.
    pub async fn say(
        &mut self,
        text: &str,
        on_event: impl FnMut(Event),
    ) -> Result<Reply, ClientError> {
        let message = json!({"role": "user", "content": {"type": "text", "text": text}});
        let before = self.cursor.clone();
        let reply = self.turn(vec![message], on_event).await?;
        self.earlier.push(before.clone());
        self.turn_start = Some(before);
        Ok(reply)
    }

    /// Answer the pending actions of the last turn.
    pub async fn answer(
        &mut self,
        answers: Vec<Answer>,
        on_event: impl FnMut(Event),
    ) -> Result<Reply, ClientError> {
        let messages = answers
            .into_iter()
            .map(|a| match a {
                Answer::ToolResult { action_id, text } => json!({
                    "role": "action", "type": "clientTool", "actionId": action_id,
                    "content": {"type": "text", "text": text}
                }),
                Answer::Confirm { action_id, allow } => json!({
                    "role": "action", "type": "toolConfirmation", "actionId": action_id,
                    "status": if allow { "ALLOW" } else { "DENY" }
                }),
            })
            .collect();
        self.turn(messages, on_event).await
    }

    async fn turn(
        &mut self,
        messages: Vec<Value>,
        mut on_event: impl FnMut(Event),
    ) -> Result<Reply, ClientError> {
        let mut body = json!({
            "agentExternalId": self.agent,
            "messages": messages,
            "stream": true,
        });
        if let Some(c) = &self.cursor {
            body["cursor"] = json!(c);
        }
        if !self.tools.is_empty() {
            body["actions"] = self
                .tools
                .iter()
                .map(|t| {
                    json!({"type": "clientTool", "clientTool": {
                    "name": t.name, "description": t.description, "parameters": t.parameters}})
                })
                .collect();
        }
        let mut request = self.http.post(&self.chat_url).json(&body);
        if let Some(t) = &self.token {
            request = request.bearer_auth(t);
        }
        let res = request.send().await?;
        if !res.status().is_success() {
            let status = res.status();
            let mut bytes = Vec::new();
            let mut body_stream = res.bytes_stream();
            while let Some(Ok(chunk)) = body_stream.next().await {
                bytes.extend_from_slice(&chunk);
                if bytes.len() > MAX_ERROR_BYTES {
                    break;
                }
            }
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Err(api_error(&body, status.as_u16()));
        }
        if !res
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"))
        {
            return Err(ClientError::Protocol(
                "the gateway did not answer with an event stream".into(),
            ));
        }
        // Bounded: a gateway that never ends an event, or never ends, is cut off.
        let bounded = res.bytes_stream().scan(0usize, |taken, chunk| {
            let item = match chunk {
                Ok(c) => {
                    *taken += c.len();
                    if *taken > MAX_TURN_BYTES {
                        Err(format!("the answer is over {MAX_TURN_BYTES} bytes"))
                    } else {
                        Ok(c)
                    }
                }
                Err(e) => Err(e.to_string()),
            };
            futures_util::future::ready(Some(item))
        });
        let mut events = Box::pin(bounded.eventsource());
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| ClientError::Protocol(e.to_string()))?;
            let data: Value = serde_json::from_str(&event.data)
                .map_err(|e| ClientError::Protocol(format!("{} event: {e}", event.event)))?;
            let text = |k: &str| data[k].as_str().unwrap_or_default().to_owned();
            match event.event.as_str() {
                "delta" => on_event(Event::Delta(text("text"))),
                "tool_call" => on_event(Event::ToolCall {
                    name: text("name"),
                    arguments: text("arguments"),
                }),
                "tool_result" => on_event(Event::ToolResult {
                    name: text("name"),
                    ok: data["ok"].as_bool().unwrap_or(false),
                }),
                "done" => return Ok(self.finish(&data)),
                "error" => return Err(api_error(&data, 0)),
                _ => {}
            }
        }
        Err(ClientError::Protocol(
            "the stream ended without a final event".into(),
        ))
    }

    /// Keep the new cursor and read what is pending.
    fn finish(&mut self, done: &Value) -> Reply {
        let response = &done["response"];
        if let Some(c) = response["cursor"].as_str() {
            self.cursor = Some(c.to_owned());
        }
        let message = &response["messages"][0];
        // One content item, or a list of them (a stop notice comes as a second item).
        let text = match &message["content"] {
            Value::Array(items) => items
                .iter()
                .filter_map(|i| i["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            one => one["text"].as_str().unwrap_or_default().to_owned(),
        };
        let pending = message["actions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| {
                let id = a["actionId"].as_str()?.to_owned();
                match a["type"].as_str()? {
                    "clientTool" => Some(Pending::ClientTool {
                        action_id: id,
                        name: a["clientTool"]["name"].as_str()?.to_owned(),
                        arguments: a["clientTool"]["arguments"]
                            .as_str()
                            .unwrap_or("{}")
                            .to_owned(),
                    }),
                    "toolConfirmation" => Some(Pending::Confirmation {
                        action_id: id,
                        tool: a["toolConfirmation"]["toolName"].as_str()?.to_owned(),
                        arguments: a["toolConfirmation"]["toolArguments"].clone(),
                    }),
                    _ => None,
                }
            })
            .collect();
        Reply { text, pending }
    }
}

/// The Cognite error body (`{"error": {"code", "message", "type"}}`) as a [`ClientError`].
fn api_error(body: &Value, status: u16) -> ClientError {
    let e = &body["error"];
    let code = e["type"]
        .as_str()
        .or_else(|| e["code"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("http_{status}"));
    let message = e["message"].as_str().unwrap_or("no message").to_owned();
    ClientError::Api { code, message }
}

/// The local tools `agentgate chat` offers: reading a file the user allows.
pub fn default_tools() -> Vec<LocalTool> {
    vec![LocalTool {
        name: "read_file".into(),
        description: "Read a text file on the user's computer (the user is asked first)".into(),
        parameters: json!({
            "type": "object",
            "properties": {"path": {"type": "string", "description": "The file's path"}},
            "required": ["path"]
        }),
    }]
}

/// The most of a file `read_file` returns.
pub const READ_FILE_LIMIT: u64 = 64 * 1024;

/// Run a local tool; the text goes back to the model (errors too, as text).
pub fn run_local_tool(name: &str, arguments: &str) -> String {
    match name {
        "read_file" => {
            let args: Value = serde_json::from_str(arguments).unwrap_or(Value::Null);
            let Some(path) = args["path"].as_str() else {
                return "error: read_file needs a path".into();
            };
            use std::io::Read;
            let mut text = Vec::new();
            match std::fs::File::open(path)
                .and_then(|f| f.take(READ_FILE_LIMIT).read_to_end(&mut text))
            {
                Ok(_) => String::from_utf8_lossy(&text).into_owned(),
                Err(e) => format!("error: cannot read {path}: {e}"),
            }
        }
        other => format!("error: no local tool named {other}"),
    }
}
