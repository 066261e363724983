//! End to end with the real `cognite-sdk` Python client (installed by
//! scripts/test.sh into a virtualenv; its interpreter is AGENTGATE_TEST_PYTHON)
//! and the real `quantcdn-client`.

use std::path::PathBuf;
use std::process::Command;

use crate::helpers::*;

pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("AGENTGATE_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "the SDK tests need a Python with cognite-sdk: run scripts/test.sh, or set AGENTGATE_TEST_PYTHON"
    );
    venv
}

fn run_script(script: &str, base_url: &str) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(script);
    let python = python();
    let out = tokio::task::block_in_place(|| {
        Command::new(&python)
            .arg(&script)
            .arg(base_url)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()))
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} failed\nstdout:\n{stdout}\nstderr:\n{stderr}",
        script.display()
    );
    assert!(stdout.contains("ALL OK"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_cognite_sdk_holds_a_conversation_and_sees_errors_as_its_exceptions() {
    // The "gpt" agent's upstream asks for the client tool `add` until it sees a result.
    let upstream =
        crate::tools::tool_upstream(vec![("add", r#"{"a":1,"b":2}"#.into())], false).await;
    let app = spawn_app_with(Options {
        upstream: Some(format!("{}/v1", upstream.uri())),
        ..Default::default()
    })
    .await;
    run_script("cognite_e2e.py", &app.address);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_quantcdn_client_chats_in_a_session_and_reads_it_back() {
    let app = spawn_app().await;
    run_script("quant_e2e.py", &app.address);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_cognite_sdk_allows_and_denies_tool_confirmations() {
    let orders = crate::tools::orders_service().await;
    let upstream =
        crate::tools::tool_upstream(vec![("lookup_order", r#"{"order_id":"7"}"#.into())], false)
            .await;
    let app = crate::tools::confirm_app(&orders, &upstream, Backend::Memory).await;
    run_script("cognite_confirm_e2e.py", &app.address);
    assert_eq!(
        orders.received_requests().await.unwrap().len(),
        1,
        "only the allowed run reached the service"
    );
}
