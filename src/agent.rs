//! Agents: what each configured agent is, and the registry that finds them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::config::AgentSettings;
use crate::cursor::Budget;
use crate::llm::params::ToolChoice;

/// One configured agent.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    pub id: String,
    pub name: String,
    pub provider: String,
    pub model: String,
    pub system_prompt: String,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
    /// Extended thinking budget, for providers that support it.
    pub thinking_budget: Option<u32>,
    /// Names of the server tools the agent may use.
    pub tools: Vec<String>,
    /// How the model may use its tools (`None`: not sent).
    pub tool_choice: Option<ToolChoice>,
    /// Provider parameters passed through (`None` when the agent set none).
    pub params: Option<serde_json::Map<String, serde_json::Value>>,
    pub max_steps: u32,
    pub max_turn: Duration,
    pub budget: Budget,
    /// Short hash of this agent's configuration, recorded in each cursor.
    pub cfg_hash: String,
}

impl AgentSpec {
    pub fn from_settings(s: &AgentSettings) -> Self {
        // Settings serialise deterministically (struct field order), so the hash is stable.
        let canonical = serde_json::to_vec(s).unwrap_or_default();
        let digest = Sha256::digest(&canonical);
        Self {
            id: s.id.clone(),
            name: s.name.clone().unwrap_or_else(|| s.id.clone()),
            provider: s.provider.clone(),
            model: s.model.clone(),
            system_prompt: s.system_prompt.clone(),
            temperature: s.temperature,
            max_tokens: s.max_tokens,
            thinking_budget: s.thinking_budget_tokens,
            tools: s.tools.clone(),
            tool_choice: s.tool_choice.as_deref().map(ToolChoice::parse),
            params: (!s.params.is_empty()).then(|| s.params.clone()),
            max_steps: s.max_steps,
            max_turn: Duration::from_secs(s.max_turn_seconds),
            budget: Budget {
                history_bytes: s.history_budget_bytes,
                keep_images_turns: s.keep_images_turns,
            },
            cfg_hash: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..12]),
        }
    }
}

/// All configured agents, by id.
#[derive(Debug, Default, Clone)]
pub struct AgentRegistry {
    agents: HashMap<String, Arc<AgentSpec>>,
}

impl AgentRegistry {
    pub fn new(settings: &[AgentSettings]) -> Self {
        Self {
            agents: settings
                .iter()
                .map(|s| (s.id.clone(), Arc::new(AgentSpec::from_settings(s))))
                .collect(),
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<AgentSpec>> {
        self.agents.get(id).cloned()
    }

    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// Every agent, by id.
    pub fn all(&self) -> Vec<Arc<AgentSpec>> {
        let mut all: Vec<_> = self.agents.values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// The longest turn any agent may run.
    pub fn longest_turn(&self) -> std::time::Duration {
        self.agents
            .values()
            .map(|a| a.max_turn)
            .max()
            .unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }
}
