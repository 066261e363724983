//! Built-in tools: `clock` (the current UTC time) and `calculator` (safe arithmetic).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{Tool, ToolContext, ToolError, ToolSpec, calc};
use crate::config::ToolSettings;

#[derive(Debug)]
struct Clock(ToolSpec);

#[async_trait::async_trait]
impl Tool for Clock {
    fn spec(&self) -> &ToolSpec {
        &self.0
    }
    async fn call(
        &self,
        _args: serde_json::Value,
        _ctx: &ToolContext,
    ) -> Result<String, ToolError> {
        Ok(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    }
}

#[derive(Debug)]
struct Calculator(ToolSpec);

#[async_trait::async_trait]
impl Tool for Calculator {
    fn spec(&self) -> &ToolSpec {
        &self.0
    }
    async fn call(&self, args: serde_json::Value, _ctx: &ToolContext) -> Result<String, ToolError> {
        let expr = args["expression"].as_str().unwrap_or_default();
        let v = calc::eval(expr).map_err(ToolError::Failed)?;
        Ok(if v.fract() == 0.0 && v.abs() < 1e15 {
            format!("{}", v as i64)
        } else {
            v.to_string()
        })
    }
}

fn clock_spec() -> ToolSpec {
    ToolSpec {
        name: "clock".into(),
        description: "The current date and time in UTC (RFC 3339).".into(),
        parameters: json!({"type": "object", "properties": {}, "additionalProperties": false}),
        origin: super::ToolOrigin::Builtin,
        timeout: Duration::from_secs(1),
        expose: Default::default(),
        confirm: false,
    }
}

fn calculator_spec() -> ToolSpec {
    ToolSpec {
        name: "calculator".into(),
        description: "Evaluate an arithmetic expression with + - * / % ^ and parentheses.".into(),
        parameters: json!({
            "type": "object",
            "properties": {"expression": {"type": "string", "description": "for example (2 + 3) * 4"}},
            "required": ["expression"],
            "additionalProperties": false
        }),
        origin: super::ToolOrigin::Builtin,
        timeout: Duration::from_secs(1),
        expose: Default::default(),
        confirm: false,
    }
}

/// Every built-in with its defaults.
pub fn all() -> Vec<Arc<dyn Tool>> {
    vec![
        Arc::new(Clock(clock_spec())),
        Arc::new(Calculator(calculator_spec())),
    ]
}

/// A built-in with `[[tools]]` overrides (description, timeout, expose).
pub fn configured(name: &str, s: &ToolSettings) -> Option<Arc<dyn Tool>> {
    let apply = |mut spec: ToolSpec| {
        if let Some(d) = &s.description {
            spec.description.clone_from(d);
        }
        spec.timeout = Duration::from_millis(s.timeout_ms);
        spec.expose = s.expose;
        spec.confirm = s.confirm;
        spec
    };
    match name {
        "clock" => Some(Arc::new(Clock(apply(clock_spec())))),
        "calculator" => Some(Arc::new(Calculator(apply(calculator_spec())))),
        _ => None,
    }
}
