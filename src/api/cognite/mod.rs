//! The Cognite-style agents chat API: `POST /api/v1/projects/{project}/ai/agents/chat`.

pub mod error;
pub mod handlers;
pub mod once;
pub mod wire;
