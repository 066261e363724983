//! One integration-test binary (faster to link): each test starts the real
//! gateway on a random port, with real HTTP mock upstreams where it needs them.

mod chat;
mod cursor;
mod errors;
mod helpers;
mod operations;
mod quant;
mod quant_async;
mod quant_sessions;
mod sdk;
