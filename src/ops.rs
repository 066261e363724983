//! Operator tools behind `agentgate cursor inspect` and `agentgate config
//! check`: what a cursor holds (never its text), and every problem of a
//! config file with its key.

use std::path::Path;

use serde_json::{Value, json};

use crate::config::{ConfigError, Settings};
use crate::cursor::Inspection;
use crate::domain::{AssistantPart, HistoryItem, PendingKind, UserPart};

/// A cursor's claims for an operator: sizes, times, the key, and the history
/// summarised item by item (kinds, sizes, tool names; no message text).
pub fn summarize(i: &Inspection, now: i64) -> Value {
    let history: Vec<Value> = i.state.history.iter().map(item).collect();
    let count = |kind: &str| history.iter().filter(|h| h["kind"] == kind).count();
    let pending: Vec<Value> = i
        .state
        .pending
        .iter()
        .map(|p| {
            json!({
                "actionId": p.action_id,
                "kind": match p.kind {
                    PendingKind::ClientTool => "clientTool",
                    PendingKind::ToolConfirmation => "toolConfirmation",
                },
                "tool": p.name,
            })
        })
        .collect();
    json!({
        "kid": i.kid,
        "expiresAt": i.exp,
        "expiresInSeconds": i.exp as i64 - now,
        "issuedAt": i.issued_at,
        "conversationId": i.state.id,
        "conversationStartedAt": i.state.started_at,
        "turn": i.state.turn,
        "agentConfigHash": i.state.cfg,
        "tokenChars": i.token_chars,
        "plaintextBytes": i.plaintext_bytes,
        "historyItems": history.len(),
        "historyBytes": history.iter().map(|h| h["bytes"].as_u64().unwrap_or(0)).sum::<u64>(),
        "counts": {
            "user": count("user"),
            "assistant": count("assistant"),
            "toolResult": count("toolResult"),
            "reasoning": count("reasoning"),
        },
        "history": history,
        "pending": pending,
    })
}

fn item(h: &HistoryItem) -> Value {
    match h {
        HistoryItem::User { parts } => {
            let images = parts
                .iter()
                .filter(|p| matches!(p, UserPart::Image { .. }))
                .count();
            let bytes: usize = parts
                .iter()
                .map(|p| match p {
                    UserPart::Text { text } => text.len(),
                    UserPart::Image { data, .. } => data.len(),
                })
                .sum();
            json!({"kind": "user", "bytes": bytes, "images": images})
        }
        HistoryItem::Assistant { parts, tool_calls } => {
            let bytes: usize = parts
                .iter()
                .map(|AssistantPart::Text { text }| text.len())
                .sum::<usize>()
                + tool_calls.iter().map(|c| c.arguments.len()).sum::<usize>();
            let tools: Vec<&str> = tool_calls.iter().map(|c| c.name.as_str()).collect();
            json!({"kind": "assistant", "bytes": bytes, "toolCalls": tools})
        }
        HistoryItem::ToolResult {
            name,
            content,
            is_error,
            ..
        } => {
            json!({"kind": "toolResult", "bytes": content.len(), "tool": name, "isError": is_error})
        }
        HistoryItem::Reasoning { provider, blob } => {
            json!({"kind": "reasoning", "bytes": blob.len(), "provider": provider})
        }
    }
}

/// The summary as lines for a terminal.
pub fn render(summary: &Value) -> String {
    let mut out = String::new();
    let line = |out: &mut String, k: &str, v: String| out.push_str(&format!("{k:<22}{v}\n"));
    line(
        &mut out,
        "key id",
        summary["kid"].as_str().unwrap_or_default().to_owned(),
    );
    line(
        &mut out,
        "expires",
        format!(
            "{} (in {} s)",
            summary["expiresAt"], summary["expiresInSeconds"]
        ),
    );
    line(&mut out, "issued", summary["issuedAt"].to_string());
    line(
        &mut out,
        "conversation",
        format!(
            "{} started {}, turn {}",
            summary["conversationId"].as_str().unwrap_or_default(),
            summary["conversationStartedAt"],
            summary["turn"]
        ),
    );
    line(
        &mut out,
        "agent config hash",
        summary["agentConfigHash"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    );
    line(
        &mut out,
        "sizes",
        format!(
            "token {} chars, plaintext {} bytes, history {} bytes",
            summary["tokenChars"], summary["plaintextBytes"], summary["historyBytes"]
        ),
    );
    let c = &summary["counts"];
    line(
        &mut out,
        "history",
        format!(
            "{} items: {} user, {} assistant, {} tool results, {} reasoning",
            summary["historyItems"], c["user"], c["assistant"], c["toolResult"], c["reasoning"]
        ),
    );
    for (n, h) in summary["history"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let extra = match h["kind"].as_str() {
            Some("assistant") if h["toolCalls"].as_array().is_some_and(|t| !t.is_empty()) => {
                format!(" calls {}", h["toolCalls"])
            }
            Some("toolResult") => format!(
                " from {}{}",
                h["tool"].as_str().unwrap_or_default(),
                if h["isError"] == true { " (error)" } else { "" }
            ),
            Some("user") if h["images"].as_u64().unwrap_or(0) > 0 => {
                format!(" with {} image(s)", h["images"])
            }
            _ => String::new(),
        };
        out.push_str(&format!(
            "  {n:>3}  {:<11}{:>8} bytes{extra}\n",
            h["kind"].as_str().unwrap_or_default(),
            h["bytes"]
        ));
    }
    for p in summary["pending"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "pending               {} {} ({})\n",
            p["kind"].as_str().unwrap_or_default(),
            p["tool"].as_str().unwrap_or_default(),
            p["actionId"].as_str().unwrap_or_default()
        ));
    }
    out
}

/// Every problem of the config at `path` (with the `AGENTGATE__*` variables
/// of `env` overlaid, as `serve` would), each naming its key; empty when it
/// is valid.
pub fn check_config(path: &Path) -> Vec<String> {
    match Settings::load(path) {
        Ok(settings) => {
            // What `serve` reads from the environment beyond the file: the
            // providers' API keys, tool header values and the cursor keys.
            let env = |name: &str| std::env::var(name).ok();
            let mut problems = Vec::new();
            if let Err(e) =
                crate::llm::ProviderRegistry::new(&settings.providers, &settings.agents, env)
            {
                problems.push(e.to_string());
            }
            if let Err(e) = crate::tools::ToolRegistry::new(&settings.tools, &env) {
                problems.push(e.to_string());
            }
            if let Err(e) = crate::config::load_keyring(&settings.cursor, env) {
                problems.push(e.to_string());
            }
            problems
        }
        Err(ConfigError::Many(all)) => all.iter().map(ToString::to_string).collect(),
        Err(e) => vec![e.to_string()],
    }
}
