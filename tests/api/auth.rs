//! `[auth] mode = "api_keys"`: 401 without valid credentials, 403 outside a
//! key's tenants, in each API's own format; the key's subject is bound into
//! cursors and sessions.

use serde_json::{Value, json};

use crate::helpers::*;

const ALPHA: &str = "ag-alpha-4f1c9e2b7d";
const BETA: &str = "ag-beta-8a3e5c1f0b";

async fn app() -> TestApp {
    spawn_app_with(Options {
        extra_toml: format!(
            r#"
[auth]
mode = "api_keys"

[[auth.api_keys]]
id = "alpha"
sha256 = "{}"
subject = "svc-alpha"
tenants = ["p1", "org1"]

[[auth.api_keys]]
id = "beta"
sha256 = "{}"
subject = "svc-beta"
tenants = ["*"]
"#,
            sha256_hex(ALPHA),
            sha256_hex(BETA).to_uppercase()
        ),
        ..Default::default()
    })
    .await
}

async fn chat(
    app: &TestApp,
    project: &str,
    key: Option<&str>,
    body: &Value,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = app.client.post(app.chat_url(project)).json(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, res.json().await.unwrap_or(Value::Null), headers)
}

fn hello() -> Value {
    json!({"agentExternalId": "echo", "messages": [text_message("hello")]})
}

#[tokio::test]
async fn requests_without_valid_credentials_are_401_in_each_apis_format() {
    let app = app().await;
    for key in [None, Some("wrong-key"), Some("")] {
        let (status, body, headers) = chat(&app, "p1", key, &hello()).await;
        assert_eq!(status, 401, "{key:?}: {body}");
        assert_eq!(body["error"]["type"], "unauthorized");
        assert_eq!(headers["www-authenticate"], "Bearer");
    }
    let res = app
        .client
        .post(app.chat_url("p1"))
        .header("authorization", format!("Basic {ALPHA}"))
        .json(&hello())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "only the Bearer scheme");
    let res = app
        .client
        .post(app.quant("org1/ai/agents/echo/chat"))
        .json(&json!({"message": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"], "unauthorized");
    // Health stays open.
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn a_key_may_use_only_its_tenants() {
    let app = app().await;
    let (status, body, _) = chat(&app, "p1", Some(ALPHA), &hello()).await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = chat(&app, "p2", Some(ALPHA), &hello()).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["type"], "forbidden");
    let (status, body, _) = chat(&app, "p2", Some(BETA), &hello()).await;
    assert_eq!(status, 200, "\"*\" allows every tenant: {body}");
    let res = app
        .client
        .get(app.quant("org2/ai/sessions"))
        .bearer_auth(ALPHA)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"], "forbidden");
}

#[tokio::test]
async fn a_cursor_or_session_of_one_key_is_not_another_keys() {
    let app = app().await;
    let (status, first, _) = chat(&app, "p1", Some(ALPHA), &hello()).await;
    assert_eq!(status, 200);
    let again = json!({"agentExternalId": "echo", "cursor": cursor_of(&first), "messages": [text_message("again")]});
    let (status, body, _) = chat(&app, "p1", Some(BETA), &again).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_cursor");
    let (status, body, _) = chat(&app, "p1", Some(ALPHA), &again).await;
    assert_eq!(status, 200, "{body}");
    assert!(text_of(&body).contains("[3 messages seen]"));

    let res = app
        .client
        .post(app.quant("org1/ai/agents/echo/chat"))
        .bearer_auth(ALPHA)
        .json(&json!({"message": "mine", "userId": "u1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    let sid = v["sessionId"].as_str().unwrap();
    let res = app
        .client
        .get(app.quant(&format!("org1/ai/sessions/{sid}")))
        .bearer_auth(BETA)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        404,
        "another subject does not see the session"
    );
}

/// `[auth] mode = "jwt"` against a JWKS served by a local HTTP server, with
/// Ed25519 keys made here.
mod jwt {
    use std::sync::{Arc, Mutex};

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ed25519_dalek::SigningKey;
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::{Value, json};
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

    use crate::helpers::*;

    const ISS: &str = "https://id.example.test/";

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn jwk(kid: &str, k: &SigningKey) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": kid,
               "x": URL_SAFE_NO_PAD.encode(k.verifying_key().to_bytes())})
    }

    /// Serves whatever set is current.
    struct Jwks(Arc<Mutex<Value>>);

    impl Respond for Jwks {
        fn respond(&self, _: &Request) -> ResponseTemplate {
            ResponseTemplate::new(200).set_body_json(self.0.lock().unwrap().clone())
        }
    }

    async fn jwks(keys: Vec<Value>) -> (MockServer, Arc<Mutex<Value>>) {
        let server = MockServer::start().await;
        let set = Arc::new(Mutex::new(json!({"keys": keys})));
        Mock::given(method("GET"))
            .and(path("/jwks.json"))
            .respond_with(Jwks(set.clone()))
            .mount(&server)
            .await;
        (server, set)
    }

    async fn app(jwks: &MockServer, refresh: u64) -> TestApp {
        app_with(jwks, refresh, "").await
    }

    async fn app_with(jwks: &MockServer, refresh: u64, extra: &str) -> TestApp {
        spawn_app_with(Options {
            extra_toml: format!(
                r#"
[auth]
mode = "jwt"

[[auth.issuers]]
issuer = "{ISS}"
audience = "agentgate"
jwks_url = "{}/jwks.json"
tenants_claim = "projects"
jwks_refresh_seconds = {refresh}
{extra}
"#,
                jwks.uri()
            ),
            ..Default::default()
        })
        .await
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn claims(sub: &str) -> Value {
        json!({"iss": ISS, "aud": "agentgate", "sub": sub, "exp": now() + 600,
               "nbf": now() - 10, "projects": ["p1", "org1"]})
    }

    fn token(kid: &str, k: &SigningKey, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.into());
        let der = k.to_pkcs8_der().unwrap();
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(der.as_bytes())).unwrap()
    }

    async fn say(app: &TestApp, project: &str, token: &str, body: &Value) -> (u16, Value) {
        let res = app
            .client
            .post(app.chat_url(project))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    fn hello() -> Value {
        json!({"agentExternalId": "echo", "messages": [text_message("hello")]})
    }

    #[tokio::test]
    async fn valid_tokens_pass_and_every_broken_one_is_401() {
        let k1 = key(1);
        let (server, _) = jwks(vec![jwk("k1", &k1)]).await;
        let app = app(&server, 10).await;
        let good = token("k1", &k1, &claims("alice"));
        let (status, body) = say(&app, "p1", &good, &hello()).await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = say(&app, "p2", &good, &hello()).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"]["type"], "forbidden");

        let mut expired = claims("alice");
        expired["exp"] = json!(now() - 3600);
        let mut audience = claims("alice");
        audience["aud"] = json!("someone-else");
        let mut issuer = claims("alice");
        issuer["iss"] = json!("https://evil.example.test/");
        let mut early = claims("alice");
        early["nbf"] = json!(now() + 3600);
        let mut no_sub = claims("alice");
        no_sub.as_object_mut().unwrap().remove("sub");
        let hs256 = jsonwebtoken::encode(
            &Header {
                kid: Some("k1".into()),
                ..Header::new(Algorithm::HS256)
            },
            &claims("alice"),
            &EncodingKey::from_secret(b"guessable").unwrap(),
        )
        .unwrap();
        let forged = {
            let mut parts: Vec<&str> = good.split('.').collect();
            let other = token("k1", &key(2), &claims("mallory"));
            let sig = other.rsplit('.').next().unwrap().to_owned();
            parts[2] = Box::leak(sig.into_boxed_str());
            parts.join(".")
        };
        for (what, t) in [
            ("expired", token("k1", &k1, &expired)),
            ("wrong audience", token("k1", &k1, &audience)),
            ("unknown issuer", token("k1", &k1, &issuer)),
            ("not yet valid", token("k1", &k1, &early)),
            ("no subject", token("k1", &k1, &no_sub)),
            ("symmetric algorithm", hs256),
            ("another key's signature", forged),
            ("garbage", "not.a.token".to_owned()),
        ] {
            let (status, body) = say(&app, "p1", &t, &hello()).await;
            assert_eq!(status, 401, "{what}: {body}");
            assert_eq!(body["error"]["type"], "unauthorized", "{what}");
        }
    }

    #[tokio::test]
    async fn an_algorithm_outside_the_issuers_list_is_refused() {
        let k1 = key(1);
        let (server, _) = jwks(vec![jwk("k1", &k1)]).await;
        let app = app_with(&server, 10, "algorithms = [\"RS256\"]").await;
        let (status, body) = say(&app, "p1", &token("k1", &k1, &claims("alice")), &hello()).await;
        assert_eq!(status, 401, "EdDSA is not in this issuer's list: {body}");
        assert!(
            server.received_requests().await.unwrap().is_empty(),
            "refused before any key was fetched"
        );
    }

    #[tokio::test]
    async fn an_unknown_kid_refetches_the_jwks_at_a_bounded_rate() {
        let k1 = key(1);
        let (server, _) = jwks(vec![jwk("k1", &k1)]).await;
        let app = app(&server, 3600).await;
        let (status, _) = say(&app, "p1", &token("k1", &k1, &claims("alice")), &hello()).await;
        assert_eq!(status, 200);
        let fetches = || async { server.received_requests().await.unwrap().len() };
        assert_eq!(fetches().await, 1);
        for _ in 0..5 {
            let t = token("k9", &key(9), &claims("alice"));
            let (status, _) = say(&app, "p1", &t, &hello()).await;
            assert_eq!(status, 401);
        }
        assert_eq!(fetches().await, 1, "no refetch within jwks_refresh_seconds");
    }

    #[tokio::test]
    async fn a_rotated_key_is_picked_up_and_subjects_stay_apart() {
        let (k1, k2) = (key(1), key(2));
        let (server, set) = jwks(vec![jwk("k1", &k1)]).await;
        let app = app(&server, 1).await;
        let (status, first) = say(&app, "p1", &token("k1", &k1, &claims("alice")), &hello()).await;
        assert_eq!(status, 200, "{first}");
        // The issuer rotates: k2 appears. A token under it refetches the set
        // once the least refresh interval (1 s) has passed; until then it is
        // refused without a fetch.
        *set.lock().unwrap() = json!({"keys": [jwk("k1", &k1), jwk("k2", &k2)]});
        let again = json!({"agentExternalId": "echo", "cursor": cursor_of(&first),
                           "messages": [text_message("again")]});
        let alice2 = token("k2", &k2, &claims("alice"));
        let mut accepted = None;
        for _ in 0..100 {
            let (status, body) = say(&app, "p1", &alice2, &again).await;
            if status != 401 {
                accepted = Some((status, body));
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let (status, body) = accepted.expect("the rotated key was picked up");
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            server.received_requests().await.unwrap().len(),
            2,
            "one refetch, however many polls"
        );
        // Another subject of the same issuer cannot continue alice's conversation.
        let (status, body) = say(&app, "p1", &token("k2", &k2, &claims("bob")), &again).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["type"], "invalid_cursor");
    }
}

#[tokio::test]
async fn only_admin_keys_may_reload() {
    let app = app().await;
    let res = app
        .client
        .post(format!("{}/admin/reload", app.address))
        .bearer_auth(ALPHA)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"]["type"], "forbidden");
}
