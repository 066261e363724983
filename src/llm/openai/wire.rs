//! OpenAI chat-completions wire types, private to this provider. Requests
//! borrow the history; responses are lenient to "compatible" servers' quirks
//! (missing usage, empty finish_reason, null content, extra fields).

use serde::{Deserialize, Serialize, Serializer};

use crate::domain::{AssistantPart, HistoryItem, UserPart};
use crate::llm::ChatRequest;
use crate::llm::params::CallChoice;

#[derive(Serialize)]
pub struct Request<'a> {
    pub model: &'a str,
    pub messages: Vec<Message<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolDef<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoiceOut<'a>>,
    pub stream: bool,
    /// Ask for usage in the last chunk of a stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// The agent's `params`, checked at start to name none of the fields above.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub params: Option<ParamsOut<'a>>,
}

/// The agent's `params` as this call can carry them: OpenAI refuses
/// `parallel_tool_calls` in a request that offers no tools.
pub struct ParamsOut<'a> {
    params: &'a serde_json::Map<String, serde_json::Value>,
    tools: bool,
}

impl Serialize for ParamsOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        for (k, v) in self.params {
            if !self.tools && k == "parallel_tool_calls" {
                continue;
            }
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// `"auto"`, `"required"`, `"none"`, or `{"type":"function","function":{"name":…}}`.
#[derive(Serialize)]
#[serde(untagged)]
pub enum ToolChoiceOut<'a> {
    Mode(&'static str),
    Function {
        #[serde(rename = "type")]
        kind: &'static str,
        function: FunctionName<'a>,
    },
}

#[derive(Serialize)]
pub struct FunctionName<'a> {
    pub name: &'a str,
}

impl<'a> ToolChoiceOut<'a> {
    fn new(choice: CallChoice<'a>) -> Self {
        match choice {
            CallChoice::Auto => Self::Mode("auto"),
            CallChoice::Required => Self::Mode("required"),
            CallChoice::None => Self::Mode("none"),
            CallChoice::Tool(name) => Self::Function {
                kind: "function",
                function: FunctionName { name },
            },
        }
    }
}

#[derive(Serialize)]
pub struct StreamOptions {
    pub include_usage: bool,
}

#[derive(Serialize)]
pub struct ToolDef<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionDef<'a>,
}

#[derive(Serialize)]
pub struct FunctionDef<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub parameters: &'a serde_json::Value,
}

#[derive(Serialize)]
pub struct Message<'a> {
    pub role: &'static str,
    pub content: Content<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(untagged)]
pub enum Content<'a> {
    Text(&'a str),
    Owned(String),
    Parts(Vec<Part<'a>>),
    Null(Option<()>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: ImageUrl<'a> },
}

#[derive(Serialize)]
pub struct ImageUrl<'a> {
    pub url: DataUrl<'a>,
}

/// `data:<media type>;base64,<data>`, written straight into the body without a copy.
pub struct DataUrl<'a> {
    pub media_type: &'a str,
    pub data: &'a str,
}

impl Serialize for DataUrl<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!(
            "data:{};base64,{}",
            self.media_type, self.data
        ))
    }
}

#[derive(Serialize)]
pub struct ToolCallOut<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionOut<'a>,
}

#[derive(Serialize)]
pub struct FunctionOut<'a> {
    pub name: &'a str,
    pub arguments: &'a str,
}

impl<'a> Request<'a> {
    pub fn new(req: &ChatRequest<'a>, stream: bool) -> Self {
        let mut messages = Vec::with_capacity(req.messages.len() + 1);
        if let Some(system) = req.system.filter(|s| !s.is_empty()) {
            messages.push(Message {
                role: "system",
                content: Content::Text(system),
                tool_calls: Vec::new(),
                tool_call_id: None,
            });
        }
        messages.extend(req.messages.iter().filter_map(message));
        Self {
            model: req.model,
            messages,
            temperature: req.temperature,
            max_tokens: req.max_tokens,
            tools: req
                .tools
                .iter()
                .map(|t| ToolDef {
                    kind: "function",
                    function: FunctionDef {
                        name: &t.name,
                        description: &t.description,
                        parameters: &t.parameters,
                    },
                })
                .collect(),
            // A tool choice without tools is an error upstream.
            tool_choice: req
                .tool_choice
                .filter(|_| !req.tools.is_empty())
                .map(ToolChoiceOut::new),
            stream,
            stream_options: stream.then_some(StreamOptions {
                include_usage: true,
            }),
            params: req.params.map(|params| ParamsOut {
                params,
                tools: !req.tools.is_empty(),
            }),
        }
    }
}

fn message(item: &HistoryItem) -> Option<Message<'_>> {
    Some(match item {
        HistoryItem::User { parts } => {
            let content = match parts.as_slice() {
                [UserPart::Text { text }] => Content::Text(text),
                parts => Content::Parts(
                    parts
                        .iter()
                        .map(|p| match p {
                            UserPart::Text { text } => Part::Text { text },
                            UserPart::Image { media_type, data } => Part::ImageUrl {
                                image_url: ImageUrl {
                                    url: DataUrl { media_type, data },
                                },
                            },
                        })
                        .collect(),
                ),
            };
            Message {
                role: "user",
                content,
                tool_calls: Vec::new(),
                tool_call_id: None,
            }
        }
        HistoryItem::Assistant { parts, tool_calls } => {
            let content = match parts.as_slice() {
                [] if !tool_calls.is_empty() => Content::Null(None),
                [] => Content::Text(""),
                [AssistantPart::Text { text }] => Content::Text(text),
                parts => Content::Owned(
                    parts
                        .iter()
                        .map(|AssistantPart::Text { text }| text.as_str())
                        .collect(),
                ),
            };
            Message {
                role: "assistant",
                content,
                tool_calls: tool_calls
                    .iter()
                    .map(|c| ToolCallOut {
                        id: &c.id,
                        kind: "function",
                        function: FunctionOut {
                            name: &c.name,
                            arguments: &c.arguments,
                        },
                    })
                    .collect(),
                tool_call_id: None,
            }
        }
        HistoryItem::ToolResult {
            call_id, content, ..
        } => Message {
            role: "tool",
            content: Content::Text(content),
            tool_calls: Vec::new(),
            tool_call_id: Some(call_id),
        },
        // Reasoning blobs belong to other providers' wire formats.
        HistoryItem::Reasoning { .. } => return None,
    })
}

#[derive(Deserialize)]
pub struct Response {
    #[serde(default)]
    pub choices: Vec<Choice>,
    #[serde(default)]
    pub usage: Option<UsageIn>,
}

#[derive(Deserialize)]
pub struct Choice {
    #[serde(default)]
    pub message: Option<MessageIn>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct MessageIn {
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCallIn>>,
}

#[derive(Deserialize)]
pub struct ToolCallIn {
    #[serde(default)]
    pub id: Option<String>,
    pub function: FunctionIn,
}

#[derive(Deserialize)]
pub struct FunctionIn {
    pub name: String,
    #[serde(default)]
    pub arguments: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
pub struct UsageIn {
    #[serde(default)]
    pub prompt_tokens: Option<u64>,
    #[serde(default)]
    pub completion_tokens: Option<u64>,
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

#[derive(Debug, Deserialize, Default)]
pub struct PromptTokensDetails {
    #[serde(default)]
    pub cached_tokens: Option<u64>,
}

/// One chunk of a streamed chat completion.
#[derive(Deserialize)]
pub struct Chunk {
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    #[serde(default)]
    pub usage: Option<UsageIn>,
    /// Some servers report failures inside the stream.
    #[serde(default)]
    pub error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
pub struct ChunkChoice {
    #[serde(default)]
    pub delta: Option<Delta>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct Delta {
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Deserialize)]
pub struct ToolCallDelta {
    #[serde(default)]
    pub index: Option<usize>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub function: Option<FunctionDelta>,
}

#[derive(Deserialize)]
pub struct FunctionDelta {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub arguments: Option<String>,
}
