//! How tool runs and stop reasons are shown to clients, shared by both facades.

use serde_json::{Value, json};

use crate::domain::StopReason;
use crate::tools::{Expose, ToolRun};

/// The run's arguments as JSON (the raw text if the model wrote invalid JSON).
pub fn input(run: &ToolRun) -> Value {
    crate::tools::parse_arguments(&run.call.arguments)
        .unwrap_or_else(|_| Value::String(run.call.arguments.clone()))
}

/// Runs clients may see, with whether their results may be shown.
pub fn exposed(runs: &[ToolRun]) -> impl Iterator<Item = (&ToolRun, bool)> {
    runs.iter().filter_map(|r| match r.expose {
        Expose::Full => Some((r, true)),
        Expose::Input => Some((r, false)),
        Expose::None => None,
    })
}

/// The Quant `toolResults` / `toolExecutions` items.
pub fn quant_tool_results(runs: &[ToolRun]) -> Vec<Value> {
    exposed(runs)
        .map(|(r, with_result)| {
            let mut v = json!({"toolName": r.call.name, "toolUseId": r.call.id, "input": input(r)});
            if with_result {
                v["output"] = json!(r.content);
                v["isError"] = json!(r.is_error);
            }
            v
        })
        .collect()
}

/// A sentence for turns that stopped on a limit rather than with an answer.
pub fn limit_notice(stop: StopReason) -> Option<&'static str> {
    match stop {
        StopReason::MaxSteps => {
            Some("The agent stopped before finishing: it reached its limit of steps.")
        }
        StopReason::Deadline => Some("The agent stopped before finishing: it ran out of time."),
        StopReason::MaxTokens => Some("The answer was cut off at the model's token limit."),
        _ => None,
    }
}
