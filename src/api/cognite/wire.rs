//! Cognite wire types (shared/reference/sdk-wire-notes.md §A) and their
//! validation into domain types. Unknown request fields are ignored (`stream`,
//! `retentionPolicy`, and whatever later API versions add).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::domain::{HistoryItem, UserPart};
use crate::error::{ApiError, ErrorCode};

pub const MAX_MESSAGES: usize = 1000;
pub const MAX_IMAGES: usize = 20;
pub const MAX_IMAGE_BYTES: usize = 5 * 1024 * 1024;
pub const IMAGE_TYPES: [&str; 3] = ["image/png", "image/jpeg", "image/webp"];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatRequest {
    #[serde(default)]
    pub agent_external_id: Option<String>,
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub messages: Option<Vec<Message>>,
    #[serde(default)]
    pub cursor: Option<String>,
    /// Client tool definitions; accepted and not yet offered to the model.
    #[serde(default)]
    pub actions: Option<Vec<serde::de::IgnoredAny>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub content: Option<Content>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    One(ContentItem),
    Many(Vec<ContentItem>),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentItem {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub data: Option<String>,
    #[serde(default)]
    pub media_type: Option<String>,
}

/// A validated chat request.
#[derive(Debug)]
pub struct ValidChat {
    pub agent: String,
    pub cursor: Option<String>,
    pub messages: Vec<HistoryItem>,
}

impl ChatRequest {
    /// Check the request and turn it into domain input.
    pub fn validate(self) -> Result<ValidChat, ApiError> {
        let agent = self
            .agent_external_id
            .or(self.agent_id)
            .ok_or_else(|| ApiError::invalid("agentExternalId is required"))?;
        if agent.is_empty() || agent.chars().count() > 128 || agent.contains('\0') {
            return Err(ApiError::invalid(
                "agentExternalId must be 1 to 128 characters without NUL",
            ));
        }
        let messages = self
            .messages
            .ok_or_else(|| ApiError::invalid("messages is required"))?;
        if messages.is_empty() || messages.len() > MAX_MESSAGES {
            return Err(ApiError::invalid(format!(
                "messages must have 1 to {MAX_MESSAGES} items, got {}",
                messages.len()
            )));
        }
        let mut images = 0;
        let items = messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| user_message(i, m, &mut images))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ValidChat {
            agent,
            cursor: self.cursor,
            messages: items,
        })
    }
}

fn user_message(i: usize, m: Message, images: &mut usize) -> Result<HistoryItem, ApiError> {
    match m.role.as_deref() {
        Some("user") => {}
        Some("action") => {
            return Err(ApiError::new(
                ErrorCode::ActionsNotSupported,
                format!("messages[{i}]: action results are not supported by this gateway yet"),
            ));
        }
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "messages[{i}].role {other:?} is not supported; use \"user\""
            )));
        }
        None => return Err(ApiError::invalid(format!("messages[{i}].role is required"))),
    }
    let items = match m.content {
        None => {
            return Err(ApiError::invalid(format!(
                "messages[{i}].content is required"
            )));
        }
        Some(Content::One(item)) => vec![item],
        Some(Content::Many(items)) if items.is_empty() => {
            return Err(ApiError::invalid(format!(
                "messages[{i}].content must not be empty"
            )));
        }
        Some(Content::Many(items)) => items,
    };
    let parts = items
        .into_iter()
        .enumerate()
        .map(|(j, item)| part(i, j, item, images))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HistoryItem::User { parts })
}

fn part(i: usize, j: usize, item: ContentItem, images: &mut usize) -> Result<UserPart, ApiError> {
    let at = format!("messages[{i}].content[{j}]");
    match item.kind.as_deref() {
        Some("text") => {
            let text = item
                .text
                .ok_or_else(|| ApiError::invalid(format!("{at}.text is required")))?;
            Ok(UserPart::Text { text })
        }
        Some("image") => {
            *images += 1;
            if *images > MAX_IMAGES {
                return Err(ApiError::invalid(format!(
                    "at most {MAX_IMAGES} images are allowed per request"
                )));
            }
            let media_type = item
                .media_type
                .ok_or_else(|| ApiError::invalid(format!("{at}.mediaType is required")))?;
            if !IMAGE_TYPES.contains(&media_type.as_str()) {
                return Err(ApiError::invalid(format!(
                    "{at}.mediaType {media_type:?} is not supported; use one of {}",
                    IMAGE_TYPES.join(", ")
                )));
            }
            let data = item
                .data
                .ok_or_else(|| ApiError::invalid(format!("{at}.data is required")))?;
            // Check the size before decoding: 4 base64 chars carry 3 bytes.
            if data.len() / 4 * 3 > MAX_IMAGE_BYTES + 3 {
                return Err(ApiError::invalid(format!(
                    "{at}: images may be at most {MAX_IMAGE_BYTES} bytes"
                )));
            }
            let decoded = STANDARD
                .decode(&data)
                .map_err(|_| ApiError::invalid(format!("{at}.data is not valid base64")))?;
            if decoded.len() > MAX_IMAGE_BYTES {
                return Err(ApiError::invalid(format!(
                    "{at}: images may be at most {MAX_IMAGE_BYTES} bytes"
                )));
            }
            Ok(UserPart::Image { media_type, data })
        }
        Some(other) => Err(ApiError::invalid(format!(
            "{at}.type {other:?} is not supported; use \"text\" or \"image\""
        ))),
        None => Err(ApiError::invalid(format!("{at}.type is required"))),
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatResponse<'a> {
    pub agent_external_id: &'a str,
    pub agent_id: &'a str,
    pub response: ResponseBody<'a>,
}

#[derive(Debug, Serialize)]
pub struct ResponseBody<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub cursor: &'a str,
    pub messages: Vec<AgentMessage<'a>>,
}

#[derive(Debug, Serialize)]
pub struct AgentMessage<'a> {
    pub role: &'static str,
    pub content: AgentContent<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasoning: Vec<Reasoning>,
}

/// One content object, or a list when there is more than one part.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum AgentContent<'a> {
    One(TextContent<'a>),
    Many(Vec<TextContent<'a>>),
}

#[derive(Debug, Serialize)]
pub struct Reasoning {
    pub content: Vec<serde_json::Value>,
    pub data: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub struct TextContent<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub text: &'a str,
}
