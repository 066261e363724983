//! One integration-test binary (faster to link): each test starts the real
//! gateway on a random port, with real HTTP mock upstreams where it needs them.

mod anthropic;
mod anthropic_mock;
mod auth;
mod browser;
mod chat;
mod client;
mod cluster;
mod cursor;
mod edges;
mod errors;
mod helpers;
mod hostile;
mod limits;
mod mcp;
mod mcp_server;
mod openapi;
mod operations;
mod operator;
mod playground;
mod quant;
mod quant_async;
mod quant_idempotency;
mod quant_sessions;
mod quickstart;
mod real_model;
mod redis;
mod redis_server;
mod resilience;
mod sdk;
mod streaming;
mod tools;

/// Run each listed Quant test against the memory store, a real Redis, and a
/// real three-primary Redis Cluster.
macro_rules! on_both_stores {
    ($($module:ident :: $test:ident),* $(,)?) => {
        mod quant_on_memory {
            $(
                #[tokio::test]
                async fn $test() {
                    crate::$module::$test(crate::helpers::Backend::Memory).await
                }
            )*
        }
        mod quant_on_redis {
            $(
                #[tokio::test]
                async fn $test() {
                    let redis = crate::redis_server::RedisServer::start().await;
                    let backend = crate::helpers::Backend::Redis { url: redis.url(), shared_prefix: None };
                    crate::$module::$test(backend).await
                }
            )*
        }
        mod quant_on_redis_cluster {
            $(
                #[tokio::test]
                async fn $test() {
                    let redis = crate::redis_server::RedisCluster::start().await;
                    let backend = crate::helpers::Backend::Redis { url: redis.url(), shared_prefix: None };
                    crate::$module::$test(backend).await
                }
            )*
        }
    };
}

on_both_stores!(
    quant::a_session_continues_across_turns_and_answers_in_the_quant_shape,
    quant::system_is_appended_for_that_call_only_and_usage_fields_upstream_omitted_are_omitted,
    quant::user_ids_isolate_sessions_and_narrow_the_sealed_subject,
    quant::a_session_bound_to_one_agent_is_not_found_for_another_and_unknown_ids_create_nothing,
    quant::sessions_expire_after_inactivity_and_slide_on_each_turn,
    quant::two_concurrent_turns_on_one_session_never_lose_a_message,
    quant::quant_errors_use_the_quant_body,
    quant_sessions::create_with_initial_messages_then_chat_binds_the_agent,
    quant_sessions::create_validates_its_input,
    quant_sessions::list_filters_pages_and_is_scoped_to_the_organisation,
    quant_sessions::update_appends_messages_and_validates_status,
    quant_sessions::extend_moves_the_expiry_up_to_the_maximum_age,
    quant_sessions::delete_removes_the_session_and_foreign_organisations_see_nothing,
    quant_async::an_async_turn_is_queued_runs_and_completes_into_its_session,
    quant_async::a_failing_upstream_ends_in_failed_with_a_readable_error,
    quant_async::polling_from_another_organisation_or_an_unknown_id_is_404,
    quant_async::a_full_queue_answers_503_with_retry_after,
    quant_async::a_rerun_after_the_turn_committed_does_not_run_it_twice,
    quant_idempotency::a_replayed_request_answers_its_recorded_response_and_runs_nothing,
    quant_idempotency::concurrent_attempts_of_one_keyed_request_commit_one_turn,
    quant_idempotency::a_replayed_async_request_finds_the_execution_it_queued,
    quant_idempotency::one_key_names_one_request_whether_sync_or_async,
    quant_idempotency::a_pending_replay_is_queued_again_and_runs_once,
);
