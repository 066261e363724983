//! Per-agent model parameters: the agent's `tool_choice` and its `params`
//! table, passed through to the provider.
//!
//! `params` is checked at start against every provider kind of the agent's
//! route (its provider and its fallbacks), so a typo or a parameter one of
//! them does not take is a startup error naming the key, never an upstream
//! 400 in the middle of a conversation. Only what the agent set is sent.

use serde_json::{Map, Value};

use crate::config::ProviderKind;

/// How the model may use the offered tools, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// The model must call a tool (Anthropic: `any`).
    Required,
    /// The model must not call a tool.
    None,
    /// The model must call this tool.
    Tool(String),
}

impl ToolChoice {
    /// `auto`, `required`, `none`, or a tool's name.
    pub fn parse(text: &str) -> Self {
        match text {
            "auto" => Self::Auto,
            "required" => Self::Required,
            "none" => Self::None,
            name => Self::Tool(name.to_owned()),
        }
    }
}

/// The tool choice of one model call, borrowed from the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallChoice<'a> {
    Auto,
    Required,
    None,
    Tool(&'a str),
}

impl ToolChoice {
    /// The choice for a model call. A forced choice (`required` or a tool)
    /// applies to a call that answers the user; a call that follows tool
    /// results gets `auto`, or the model could only ever call tools again
    /// until the turn ran out of steps. A tool that is not offered in this
    /// call is not forced.
    pub fn for_call<'a>(
        &'a self,
        after_tool_results: bool,
        offered: &[&crate::tools::ToolSpec],
    ) -> CallChoice<'a> {
        match self {
            Self::None => CallChoice::None,
            Self::Auto => CallChoice::Auto,
            _ if after_tool_results => CallChoice::Auto,
            Self::Required => CallChoice::Required,
            Self::Tool(name) if offered.iter().any(|t| t.name == *name) => CallChoice::Tool(name),
            Self::Tool(_) => CallChoice::Auto,
        }
    }
}

/// A problem with one key of `params`: the key (dotted below `params`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    pub key: String,
    pub message: String,
}

fn problem(key: &str, message: impl Into<String>) -> ParamError {
    ParamError {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// What the agent's own settings already decide, which `params` must not repeat.
#[derive(Debug, Clone, Copy, Default)]
pub struct AgentFields {
    pub max_tokens: bool,
    pub thinking_budget: bool,
}

/// Check `params` for a provider kind; every key must be one it takes, with a value of the right shape.
pub fn check(
    kind: ProviderKind,
    params: &Map<String, Value>,
    agent: AgentFields,
) -> Result<(), ParamError> {
    for (key, value) in params {
        if let Some(message) = reserved(kind, key) {
            return Err(problem(key, message));
        }
        match kind {
            ProviderKind::Openai => openai(key, value, agent)?,
            ProviderKind::Anthropic => anthropic(key, value, agent)?,
            ProviderKind::Scripted => {
                return Err(problem(key, "the scripted provider takes no params"));
            }
        }
    }
    Ok(())
}

/// Keys the gateway writes itself, and where to set the ones an agent may choose.
fn reserved(kind: ProviderKind, key: &str) -> Option<&'static str> {
    Some(match key {
        "model" => "set the agent's `model` instead",
        "temperature" => "set the agent's `temperature` instead",
        "max_tokens" => "set the agent's `max_tokens` instead",
        "tool_choice" => "set the agent's `tool_choice` instead",
        "messages" | "tools" | "stream" | "stream_options" | "functions" | "function_call" => {
            "written by the gateway for every call"
        }
        "system" if kind == ProviderKind::Anthropic => "set the agent's `system_prompt` instead",
        "n" if kind == ProviderKind::Openai => {
            "the gateway reads one choice per answer; n is not supported"
        }
        _ => return None,
    })
}

const OPENAI_KEYS: &str = "top_p, stop, seed, response_format, reasoning_effort, \
    max_completion_tokens, frequency_penalty, presence_penalty, logit_bias, \
    parallel_tool_calls, user, service_tier, verbosity, prompt_cache_key, \
    and for compatible servers top_k, min_p, repetition_penalty";

fn openai(key: &str, v: &Value, agent: AgentFields) -> Result<(), ParamError> {
    let ok = match key {
        "top_p" => number_in(v, 0.0, 1.0),
        "frequency_penalty" | "presence_penalty" => number_in(v, -2.0, 2.0),
        "min_p" => number_in(v, 0.0, 1.0),
        "repetition_penalty" => number_in(v, 0.0, 10.0),
        "seed" => v.is_i64() || v.is_u64(),
        "top_k" => v.as_u64().is_some(),
        "stop" => {
            v.is_string()
                || v.as_array()
                    .is_some_and(|a| (1..=4).contains(&a.len()) && a.iter().all(Value::is_string))
        }
        "max_completion_tokens" => {
            if agent.max_tokens {
                return Err(problem(
                    key,
                    "set either the agent's max_tokens or params.max_completion_tokens, not both",
                ));
            }
            v.as_u64()
                .is_some_and(|n| (1..=u64::from(u32::MAX)).contains(&n))
        }
        "response_format" => return response_format(v),
        "logit_bias" => v
            .as_object()
            .is_some_and(|m| m.values().all(|b| number_in(b, -100.0, 100.0))),
        "parallel_tool_calls" => v.is_boolean(),
        "reasoning_effort" | "user" | "service_tier" | "verbosity" | "prompt_cache_key" => {
            v.as_str().is_some_and(|s| !s.is_empty())
        }
        _ => {
            return Err(problem(
                key,
                format!("not a parameter the openai provider takes (it takes {OPENAI_KEYS})"),
            ));
        }
    };
    if ok {
        Ok(())
    } else {
        Err(problem(key, expected(key)))
    }
}

const ANTHROPIC_KEYS: &str = "top_p, top_k, stop_sequences, thinking, metadata, service_tier";

fn anthropic(key: &str, v: &Value, agent: AgentFields) -> Result<(), ParamError> {
    let ok = match key {
        "top_p" => number_in(v, 0.0, 1.0),
        "top_k" => v.as_u64().is_some(),
        "stop_sequences" => v
            .as_array()
            .is_some_and(|a| a.iter().all(|s| s.as_str().is_some_and(|s| !s.is_empty()))),
        "thinking" => {
            if agent.thinking_budget {
                return Err(problem(
                    key,
                    "set either the agent's thinking_budget_tokens or params.thinking, not both",
                ));
            }
            return thinking(v);
        }
        "metadata" => v
            .as_object()
            .is_some_and(|m| m.iter().all(|(k, v)| k == "user_id" && v.is_string())),
        "service_tier" => v.as_str().is_some_and(|s| !s.is_empty()),
        _ => {
            return Err(problem(
                key,
                format!("not a parameter the anthropic provider takes (it takes {ANTHROPIC_KEYS})"),
            ));
        }
    };
    if ok {
        Ok(())
    } else {
        Err(problem(key, expected(key)))
    }
}

fn expected(key: &str) -> &'static str {
    match key {
        "top_p" | "min_p" => "must be a number from 0 to 1",
        "frequency_penalty" | "presence_penalty" => "must be a number from -2 to 2",
        "repetition_penalty" => "must be a number from 0 to 10",
        "seed" => "must be an integer",
        "top_k" => "must be a non-negative integer",
        "stop" => "must be a string or a list of 1 to 4 strings",
        "stop_sequences" => "must be a list of non-empty strings",
        "max_completion_tokens" => "must be a positive integer",
        "logit_bias" => "must be a table of token ids to numbers from -100 to 100",
        "parallel_tool_calls" => "must be true or false",
        "metadata" => "must be a table with only a string user_id",
        _ => "must be a non-empty string",
    }
}

fn number_in(v: &Value, low: f64, high: f64) -> bool {
    v.as_f64().is_some_and(|n| (low..=high).contains(&n))
}

/// `{ type = "text" | "json_object" }` or `{ type = "json_schema", json_schema = { name, schema, … } }`.
fn response_format(v: &Value) -> Result<(), ParamError> {
    let key = "response_format";
    let Some(format) = v.as_object() else {
        return Err(problem(key, "must be a table with a `type`"));
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text" | "json_object") => Ok(()),
        Some("json_schema") => {
            let schema = format.get("json_schema").and_then(Value::as_object);
            let Some(schema) = schema else {
                return Err(problem(
                    "response_format.json_schema",
                    "required when type = \"json_schema\": a table with `name` and `schema`",
                ));
            };
            if schema
                .get("name")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(problem(
                    "response_format.json_schema.name",
                    "must be a non-empty string",
                ));
            }
            match schema.get("schema") {
                Some(s) if s.is_object() => jsonschema::meta::validate(s).map_err(|e| {
                    problem(
                        "response_format.json_schema.schema",
                        format!("not a valid JSON Schema: {e}"),
                    )
                }),
                _ => Err(problem(
                    "response_format.json_schema.schema",
                    "must be a table (a JSON Schema)",
                )),
            }
        }
        _ => Err(problem(
            "response_format.type",
            "must be \"text\", \"json_object\" or \"json_schema\"",
        )),
    }
}

/// `{ type = "enabled", budget_tokens = n ≥ 1024 }` or `{ type = "disabled" }`.
fn thinking(v: &Value) -> Result<(), ParamError> {
    let Some(t) = v.as_object() else {
        return Err(problem("thinking", "must be a table with a `type`"));
    };
    match t.get("type").and_then(Value::as_str) {
        Some("enabled") => match t.get("budget_tokens").and_then(Value::as_u64) {
            Some(b) if (1024..=u64::from(u32::MAX)).contains(&b) => Ok(()),
            _ => Err(problem(
                "thinking.budget_tokens",
                "must be an integer of at least 1024",
            )),
        },
        Some("disabled") => Ok(()),
        _ => Err(problem(
            "thinking.type",
            "must be \"enabled\" or \"disabled\"",
        )),
    }
}

/// The thinking budget `params.thinking` enables, if any (Anthropic).
pub fn thinking_budget(params: Option<&Map<String, Value>>) -> Option<u32> {
    let t = params?.get("thinking")?;
    (t.get("type")?.as_str()? == "enabled")
        .then(|| t.get("budget_tokens")?.as_u64())
        .flatten()
        .and_then(|b| u32::try_from(b).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn err(kind: ProviderKind, v: Value) -> String {
        let e = check(kind, &params(v), AgentFields::default()).unwrap_err();
        format!("{}: {}", e.key, e.message)
    }

    #[test]
    fn openai_takes_its_parameters() {
        let p = params(json!({
            "top_p": 0.9, "stop": ["\n\n", "END"], "seed": 7,
            "response_format": {"type": "json_schema", "json_schema": {
                "name": "answer", "strict": true,
                "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}},
            "reasoning_effort": "low", "max_completion_tokens": 300,
            "frequency_penalty": -0.5, "presence_penalty": 1, "logit_bias": {"50256": -100},
            "parallel_tool_calls": false, "user": "u", "top_k": 40, "min_p": 0.05
        }));
        check(ProviderKind::Openai, &p, AgentFields::default()).unwrap();
    }

    #[test]
    fn anthropic_takes_its_parameters() {
        let p = params(json!({
            "top_p": 0.9, "top_k": 5, "stop_sequences": ["END"],
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "metadata": {"user_id": "abc"}
        }));
        check(ProviderKind::Anthropic, &p, AgentFields::default()).unwrap();
        assert_eq!(thinking_budget(Some(&p)), Some(2048));
    }

    #[test]
    fn every_problem_names_its_key() {
        use ProviderKind::*;
        for (kind, p, want) in [
            (
                Openai,
                json!({"top_p": 2}),
                "top_p: must be a number from 0 to 1",
            ),
            (
                Openai,
                json!({"stop": ["a", "b", "c", "d", "e"]}),
                "stop: must be a string",
            ),
            (Openai, json!({"seed": 1.5}), "seed: must be an integer"),
            (
                Openai,
                json!({"temprature": 1}),
                "temprature: not a parameter the openai",
            ),
            (
                Openai,
                json!({"temperature": 1}),
                "temperature: set the agent's `temperature`",
            ),
            (
                Openai,
                json!({"stream": true}),
                "stream: written by the gateway",
            ),
            (Openai, json!({"n": 2}), "n: the gateway reads one choice"),
            (
                Openai,
                json!({"stop_sequences": ["x"]}),
                "stop_sequences: not a parameter the openai",
            ),
            (
                Openai,
                json!({"response_format": {"type": "xml"}}),
                "response_format.type: must be",
            ),
            (
                Openai,
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}),
                "response_format.json_schema.schema: must be a table",
            ),
            (
                Openai,
                json!({"response_format": {"type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": 12}}}}),
                "response_format.json_schema.schema: not a valid JSON Schema",
            ),
            (
                Anthropic,
                json!({"stop": ["x"]}),
                "stop: not a parameter the anthropic",
            ),
            (
                Anthropic,
                json!({"system": "x"}),
                "system: set the agent's `system_prompt`",
            ),
            (
                Anthropic,
                json!({"thinking": {"type": "enabled", "budget_tokens": 10}}),
                "thinking.budget_tokens: must be an integer of at least 1024",
            ),
            (
                Anthropic,
                json!({"metadata": {"tenant": "x"}}),
                "metadata: must be a table",
            ),
            (
                Scripted,
                json!({"top_p": 1}),
                "top_p: the scripted provider takes no params",
            ),
        ] {
            let got = err(kind, p);
            assert!(got.starts_with(want), "{got:?} should start with {want:?}");
        }
    }

    #[test]
    fn params_must_not_repeat_the_agents_own_fields() {
        let both = AgentFields {
            max_tokens: true,
            thinking_budget: true,
        };
        let e = check(
            ProviderKind::Openai,
            &params(json!({"max_completion_tokens": 10})),
            both,
        )
        .unwrap_err();
        assert!(e.message.contains("not both"), "{e:?}");
        let e = check(
            ProviderKind::Anthropic,
            &params(json!({"thinking": {"type": "disabled"}})),
            both,
        )
        .unwrap_err();
        assert!(e.message.contains("not both"), "{e:?}");
    }

    #[test]
    fn forced_choices_apply_to_calls_that_answer_the_user() {
        let spec = crate::tools::ToolSpec {
            name: "get_weather".into(),
            description: String::new(),
            parameters: json!({"type": "object"}),
            origin: crate::tools::ToolOrigin::Builtin,
            timeout: std::time::Duration::from_secs(1),
            expose: crate::config::Expose::Full,
            confirm: false,
        };
        let offered = [&spec];
        let required = ToolChoice::parse("required");
        assert_eq!(required.for_call(false, &offered), CallChoice::Required);
        assert_eq!(required.for_call(true, &offered), CallChoice::Auto);
        let named = ToolChoice::parse("get_weather");
        assert_eq!(
            named.for_call(false, &offered),
            CallChoice::Tool("get_weather")
        );
        assert_eq!(named.for_call(true, &offered), CallChoice::Auto);
        assert_eq!(named.for_call(false, &[]), CallChoice::Auto);
        assert_eq!(
            ToolChoice::parse("none").for_call(true, &offered),
            CallChoice::None
        );
        assert_eq!(
            ToolChoice::parse("auto").for_call(false, &offered),
            CallChoice::Auto
        );
    }
}
