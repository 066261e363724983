//! Per-agent model parameters: the agent's `tool_choice` and its `params`
//! table, passed through to the provider.
//!
//! `params` is checked at start against every provider kind of the agent's
//! route (its provider and its fallbacks), so a typo, a parameter that kind
//! does not take, a value of the wrong shape or a combination its API refuses
//! is a startup error naming the key rather than an upstream 400 in the middle
//! of a conversation. Only what the agent set is sent. What cannot be checked
//! here: a model refusing a parameter its API takes (reasoning parameters on a
//! model that does not reason, `top_k` sent to OpenAI itself, which only
//! compatible servers take).

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
    /// Whether the model must call a tool (`required`, or a named tool).
    pub fn forces_a_tool(&self) -> bool {
        matches!(self, Self::Required | Self::Tool(_))
    }

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

/// What the agent's own settings already decide, which `params` must not
/// repeat or contradict.
#[derive(Debug, Clone, Copy, Default)]
pub struct AgentFields {
    pub max_tokens: Option<u32>,
    pub thinking_budget: Option<u32>,
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
    if kind == ProviderKind::Anthropic {
        anthropic_thinking(params, agent)?;
    }
    Ok(())
}

/// Anthropic's rules for extended thinking: `max_tokens` above the budget
/// (when the agent sets it; the default adds the budget), no `top_k`, and
/// `top_p` only from 0.95.
fn anthropic_thinking(params: &Map<String, Value>, agent: AgentFields) -> Result<(), ParamError> {
    let Some(budget) = agent
        .thinking_budget
        .or_else(|| thinking_budget(Some(params)))
    else {
        return Ok(());
    };
    if agent.max_tokens.is_some_and(|m| m <= budget) {
        return Err(problem(
            "thinking",
            format!("the agent's max_tokens must be above the thinking budget ({budget})"),
        ));
    }
    if params.contains_key("top_k") {
        return Err(problem(
            "top_k",
            "Anthropic refuses top_k while thinking is on",
        ));
    }
    if params
        .get("top_p")
        .and_then(Value::as_f64)
        .is_some_and(|p| p < 0.95)
    {
        return Err(problem(
            "top_p",
            "Anthropic takes top_p from 0.95 to 1 while thinking is on",
        ));
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
            if agent.max_tokens.is_some() {
                return Err(problem(
                    key,
                    "set either the agent's max_tokens or params.max_completion_tokens, not both",
                ));
            }
            v.as_u64()
                .is_some_and(|n| (1..=u64::from(u32::MAX)).contains(&n))
        }
        "response_format" => return response_format(v),
        "logit_bias" => v.as_object().is_some_and(|m| {
            m.iter()
                .all(|(token, b)| token.parse::<u64>().is_ok() && number_in(b, -100.0, 100.0))
        }),
        "parallel_tool_calls" => v.is_boolean(),
        "reasoning_effort" => one_of(v, &["none", "minimal", "low", "medium", "high", "xhigh"]),
        "verbosity" => one_of(v, &["low", "medium", "high"]),
        "service_tier" => one_of(v, &["auto", "default", "flex", "priority", "scale"]),
        "user" | "prompt_cache_key" => v.as_str().is_some_and(|s| !s.is_empty()),
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
            if agent.thinking_budget.is_some() {
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
        "service_tier" => one_of(v, &["auto", "standard_only"]),
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

fn one_of(v: &Value, allowed: &[&str]) -> bool {
    v.as_str().is_some_and(|s| allowed.contains(&s))
}

fn expected(key: &str) -> &'static str {
    match key {
        "reasoning_effort" => "must be one of none, minimal, low, medium, high, xhigh",
        "verbosity" => "must be one of low, medium, high",
        "service_tier" => {
            "must be one of auto, default, flex, priority, scale (OpenAI) or auto, standard_only (Anthropic)"
        }
        "top_p" | "min_p" => "must be a number from 0 to 1",
        "frequency_penalty" | "presence_penalty" => "must be a number from -2 to 2",
        "repetition_penalty" => "must be a number from 0 to 10",
        "seed" => "must be an integer",
        "top_k" => "must be a non-negative integer",
        "stop" => "must be a string or a list of 1 to 4 strings",
        "stop_sequences" => "must be a list of non-empty strings",
        "max_completion_tokens" => "must be a positive integer",
        "logit_bias" => "must be a table of token ids (integers) to numbers from -100 to 100",
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
            let name_ok = schema.get("name").and_then(Value::as_str).is_some_and(|n| {
                (1..=64).contains(&n.len())
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            });
            if !name_ok {
                return Err(problem(
                    "response_format.json_schema.name",
                    "must be 1 to 64 of a-z, A-Z, 0-9, _ and -",
                ));
            }
            let strict = match schema.get("strict") {
                None => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return Err(problem(
                        "response_format.json_schema.strict",
                        "must be true or false",
                    ));
                }
            };
            match schema.get("schema") {
                Some(s) if s.is_object() => {
                    jsonschema::meta::validate(s).map_err(|e| {
                        problem(
                            "response_format.json_schema.schema",
                            format!("not a valid JSON Schema: {e}"),
                        )
                    })?;
                    if strict {
                        strict_objects(s, "response_format.json_schema.schema")?;
                    }
                    Ok(())
                }
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

/// OpenAI's structured outputs in strict mode: every object schema, at any
/// depth, sets `additionalProperties = false` and lists all its properties in
/// `required`.
fn strict_objects(schema: &Value, at: &str) -> Result<(), ParamError> {
    let Some(map) = schema.as_object() else {
        return Ok(());
    };
    if let Some(props) = map.get("properties").and_then(Value::as_object) {
        if map.get("additionalProperties") != Some(&Value::Bool(false)) {
            return Err(problem(
                at,
                "strict mode needs additionalProperties = false on every object",
            ));
        }
        let required: Vec<&str> = map
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(missing) = props.keys().find(|k| !required.contains(&k.as_str())) {
            return Err(problem(
                at,
                format!("strict mode needs every property in required; {missing:?} is not"),
            ));
        }
        for (name, sub) in props {
            strict_objects(sub, &format!("{at}.properties.{name}"))?;
        }
    }
    for key in ["items", "anyOf", "$defs", "definitions"] {
        match map.get(key) {
            Some(Value::Array(subs)) => {
                for (i, sub) in subs.iter().enumerate() {
                    strict_objects(sub, &format!("{at}.{key}[{i}]"))?;
                }
            }
            Some(Value::Object(subs)) if key != "items" => {
                for (name, sub) in subs {
                    strict_objects(sub, &format!("{at}.{key}.{name}"))?;
                }
            }
            Some(sub @ Value::Object(_)) => strict_objects(sub, &format!("{at}.{key}"))?,
            _ => {}
        }
    }
    Ok(())
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
                "schema": {"type": "object", "properties": {"a": {"type": "string"}},
                           "required": ["a"], "additionalProperties": false}}},
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
            "metadata": {"user_id": "abc"}, "service_tier": "auto"
        }));
        check(ProviderKind::Anthropic, &p, AgentFields::default()).unwrap();
        assert_eq!(thinking_budget(Some(&p)), None);
        let thinking = params(json!({
            "top_p": 0.95, "stop_sequences": ["END"],
            "thinking": {"type": "enabled", "budget_tokens": 2048}
        }));
        check(ProviderKind::Anthropic, &thinking, AgentFields::default()).unwrap();
        assert_eq!(thinking_budget(Some(&thinking)), Some(2048));
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
                Openai,
                json!({"logit_bias": {"abc": 1}}),
                "logit_bias: must be a table of token ids",
            ),
            (
                Openai,
                json!({"reasoning_effort": "maximal"}),
                "reasoning_effort: must be one of",
            ),
            (
                Anthropic,
                json!({"service_tier": "flex"}),
                "service_tier: must be one of",
            ),
            (
                Openai,
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "a b",
                    "schema": {"type": "object"}}}}),
                "response_format.json_schema.name: must be 1 to 64",
            ),
            (
                Openai,
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "a",
                    "strict": true, "schema": {"type": "object", "properties": {"x": {"type": "string"}},
                    "required": ["x"]}}}}),
                "response_format.json_schema.schema: strict mode needs additionalProperties",
            ),
            (
                Openai,
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "a",
                    "strict": true, "schema": {"type": "object", "additionalProperties": false,
                    "required": ["x"], "properties": {"x": {"type": "object", "additionalProperties": false,
                    "properties": {"y": {"type": "string"}}}}}}}}),
                "response_format.json_schema.schema.properties.x: strict mode needs every property",
            ),
            (
                Anthropic,
                json!({"thinking": {"type": "enabled", "budget_tokens": 2048}, "top_k": 5}),
                "top_k: Anthropic refuses top_k while thinking",
            ),
            (
                Anthropic,
                json!({"thinking": {"type": "enabled", "budget_tokens": 2048}, "top_p": 0.5}),
                "top_p: Anthropic takes top_p from 0.95",
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
    fn anthropic_max_tokens_must_exceed_the_thinking_budget() {
        let agent = AgentFields {
            max_tokens: Some(1500),
            thinking_budget: None,
        };
        let p = params(json!({"thinking": {"type": "enabled", "budget_tokens": 2048}}));
        let e = check(ProviderKind::Anthropic, &p, agent).unwrap_err();
        assert!(e.message.contains("above the thinking budget"), "{e:?}");
        let agent = AgentFields {
            max_tokens: Some(4096),
            thinking_budget: Some(2048),
        };
        check(ProviderKind::Anthropic, &Map::new(), agent).unwrap();
        let agent = AgentFields {
            max_tokens: Some(1024),
            thinking_budget: Some(2048),
        };
        assert!(check(ProviderKind::Anthropic, &Map::new(), agent).is_err());
    }

    #[test]
    fn params_must_not_repeat_the_agents_own_fields() {
        let both = AgentFields {
            max_tokens: Some(10),
            thinking_budget: Some(2048),
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
