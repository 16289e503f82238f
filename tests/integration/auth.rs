//! Token verification and the role matrix.
use integration_tests::*;
use serde_json::{Value, json};

const ME: &str = "{ me { sub tenantId roles } }";

async fn status_of(app: &TestApp, token: Option<&str>) -> u16 {
    app.gql_raw(token, ME, json!({})).await.0
}

#[tokio::test]
async fn valid_token_works_and_creates_the_tenant() {
    let app = spawn_app().await;
    assert_eq!(app.count("tenants").await, 0);
    let data = app.gql_ok(&token("acme", &["viewer", "integration"]), ME, json!({})).await;
    assert_eq!(data["me"], json!({"sub": "user-of-acme", "tenantId": "acme", "roles": ["viewer", "integration"]}));
    assert_eq!(app.count("tenants").await, 1);
    app.gql_ok(&token("acme", &["viewer"]), ME, json!({})).await;
    assert_eq!(app.count("tenants").await, 1);
    app.shutdown().await;
}

#[tokio::test]
async fn bad_tokens_get_401() {
    let app = spawn_app().await;
    let mut c = claims("acme", &["admin"]);
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("garbage", Some("not.a.token".into())),
        (
            "expired",
            Some({
                c["exp"] = json!(now() - 120);
                sign_hs256(&c, JWT_SECRET)
            }),
        ),
        (
            "nbf in the future",
            Some({
                let mut c = claims("acme", &["admin"]);
                c["nbf"] = json!(now() + 300);
                sign_hs256(&c, JWT_SECRET)
            }),
        ),
        ("wrong signature", Some(sign_hs256(&claims("acme", &["admin"]), "another-secret-another-secret-another"))),
        ("alg none", Some(alg_none(&claims("acme", &["admin"])))),
        (
            "missing tenant",
            Some({
                let mut c = claims("acme", &["admin"]);
                c.as_object_mut().expect("object").remove("tenant");
                sign_hs256(&c, JWT_SECRET)
            }),
        ),
        (
            "missing exp",
            Some({
                let mut c = claims("acme", &["admin"]);
                c.as_object_mut().expect("object").remove("exp");
                sign_hs256(&c, JWT_SECRET)
            }),
        ),
        ("tampered payload", Some(tamper(&token("acme", &["viewer"])))),
    ];
    for (name, t) in cases {
        let (status, body) = app.gql_raw(t.as_deref(), ME, json!({})).await;
        assert_eq!(status, 401, "{name}: {body}");
        assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{name}");
    }
    // Within the 30 s leeway: accepted.
    let mut c = claims("acme", &["viewer"]);
    c["exp"] = json!(now() - 10);
    assert_eq!(status_of(&app, Some(&sign_hs256(&c, JWT_SECRET))).await, 200);
    app.shutdown().await;
}

fn b64(v: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

fn alg_none(claims: &Value) -> String {
    format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), b64(claims.to_string().as_bytes()))
}

fn tamper(token: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut c = claims("acme", &["admin"]);
    c["sub"] = json!("mallory");
    format!("{}.{}.{}", parts[0], b64(c.to_string().as_bytes()), parts[2])
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let app = spawn_app_with(AppOptions {
        env: vec![("JWT_ISSUER".into(), "https://idp.example".into()), ("JWT_AUDIENCE".into(), "consumption-sync".into())],
        ..Default::default()
    })
    .await;
    let with = |iss: Option<&str>, aud: Option<&str>| {
        let mut c = claims("acme", &["viewer"]);
        if let Some(i) = iss {
            c["iss"] = json!(i);
        }
        if let Some(a) = aud {
            c["aud"] = json!(a);
        }
        sign_hs256(&c, JWT_SECRET)
    };
    assert_eq!(status_of(&app, Some(&with(Some("https://idp.example"), Some("consumption-sync")))).await, 200);
    assert_eq!(status_of(&app, Some(&with(Some("https://evil.example"), Some("consumption-sync")))).await, 401);
    assert_eq!(status_of(&app, Some(&with(Some("https://idp.example"), Some("other-app")))).await, 401);
    assert_eq!(status_of(&app, Some(&with(None, Some("consumption-sync")))).await, 401);
    assert_eq!(status_of(&app, Some(&with(Some("https://idp.example"), None))).await, 401);
    app.shutdown().await;
}

#[tokio::test]
async fn audience_is_ignored_when_not_configured() {
    let app = spawn_app().await;
    let mut c = claims("acme", &["viewer"]);
    c["aud"] = json!("anything");
    assert_eq!(status_of(&app, Some(&sign_hs256(&c, JWT_SECRET))).await, 200);
    app.shutdown().await;
}

#[tokio::test]
async fn rs256_and_es256_public_keys() {
    for (kind, alg) in [("rsa", jsonwebtoken::Algorithm::RS256), ("ec", jsonwebtoken::Algorithm::ES256)] {
        let kp = key_pair(kind);
        let app = spawn_app_with(AppOptions {
            env: vec![("JWT_SECRET".into(), String::new()), ("JWT_PUBLIC_KEY_PEM".into(), kp.public_pem.clone())],
            ..Default::default()
        })
        .await;
        let key = if kind == "rsa" {
            jsonwebtoken::EncodingKey::from_rsa_pem(kp.private_pem.as_bytes())
        } else {
            jsonwebtoken::EncodingKey::from_ec_pem(kp.private_pem.as_bytes())
        }
        .expect("key");
        let good = jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims("acme", &["viewer"]), &key).expect("sign");
        assert_eq!(status_of(&app, Some(&good)).await, 200, "{kind}");
        // Key confusion: an HS256 token "signed" with the public key text must be refused.
        let confused = sign_hs256(&claims("acme", &["admin"]), &kp.public_pem);
        assert_eq!(status_of(&app, Some(&confused)).await, 401, "{kind} HS256-with-public-key");
        // A plain HS256 token is refused when only a public key is configured.
        assert_eq!(status_of(&app, Some(&token("acme", &["admin"]))).await, 401, "{kind} HS256");
        assert_eq!(status_of(&app, Some(&alg_none(&claims("acme", &["admin"])))).await, 401, "{kind} none");
        app.shutdown().await;
    }
}

#[tokio::test]
async fn jwks_url_keys_are_fetched_and_refreshed_on_unknown_kid() {
    // Serve a JWKS from a tiny local HTTP server whose content we can change.
    use std::sync::{Arc, Mutex};
    let kp = key_pair("rsa");
    let jwks: Arc<Mutex<Value>> = Arc::new(Mutex::new(json!({"keys": []})));
    let served = jwks.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = actix_web::HttpServer::new(move || {
        let served = served.clone();
        actix_web::App::new().route(
            "/jwks.json",
            actix_web::web::get().to(move || {
                let body = served.lock().expect("lock").to_string();
                async move { actix_web::HttpResponse::Ok().content_type("application/json").body(body) }
            }),
        )
    })
    .listen(listener)
    .expect("listen")
    .run();
    let handle = server.handle();
    tokio::spawn(server);

    let app = spawn_app_with(AppOptions {
        env: vec![("JWT_SECRET".into(), String::new()), ("JWT_JWKS_URL".into(), format!("http://127.0.0.1:{port}/jwks.json"))],
        ..Default::default()
    })
    .await;
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(kp.private_pem.as_bytes()).expect("key");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("k1".into());
    let t = jsonwebtoken::encode(&header, &claims("acme", &["viewer"]), &key).expect("sign");
    // The JWKS does not have k1 yet: refused (and the refresh is throttled).
    assert_eq!(status_of(&app, Some(&t)).await, 401);
    // Publish k1 (the JWK of our public key).
    let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, jsonwebtoken::Algorithm::RS256).expect("jwk");
    let mut jwk = serde_json::to_value(&jwk).expect("json");
    jwk["kid"] = json!("k1");
    *jwks.lock().expect("lock") = json!({"keys": [jwk]});
    // Within the 30 s refresh throttle the cache is not refetched; a fresh app fetches at first use.
    let app2 = spawn_app_with(AppOptions {
        env: vec![("JWT_SECRET".into(), String::new()), ("JWT_JWKS_URL".into(), format!("http://127.0.0.1:{port}/jwks.json"))],
        ..Default::default()
    })
    .await;
    assert_eq!(status_of(&app2, Some(&t)).await, 200);
    // HS256 tokens are never verified against a JWKS.
    assert_eq!(status_of(&app2, Some(&token("acme", &["viewer"]))).await, 401);
    app.shutdown().await;
    app2.shutdown().await;
    handle.stop(false).await;
}

/// (operation, variables, permission class) for the role matrix.
pub fn operations() -> Vec<(&'static str, &'static str, Value, &'static str)> {
    vec![
        ("me", "{ me { sub } }", json!({}), "any"),
        ("connectWiseSettings", "{ connectWiseSettings { siteUrl } }", json!({}), "read"),
        ("customers", "{ customers { edges { node { id } } } }", json!({}), "read_customers"),
        ("customer", r#"{ customer(id: "1") { id } }"#, json!({}), "read_customers"),
        ("cwCompanies", "{ cwCompanies { edges { node { id } } } }", json!({}), "read"),
        ("cwAgreements", "{ cwAgreements(companyId: 1) { id } }", json!({}), "read"),
        ("cwBoards", "{ cwBoards { id } }", json!({}), "read"),
        ("productMapping", r#"{ productMapping(id: "1") { id } }"#, json!({}), "read"),
        ("auditLog", "{ auditLog { edges { node { id } } } }", json!({}), "read"),
        ("usageOptions", "{ usageOptions(productModule: MICROSOFT_365) }", json!({}), "any"),
        (
            "configureConnectWise",
            r#"mutation { configureConnectWise(input: {siteUrl: "https://8.8.8.8", companyId: "x", publicKey: "p", privateKey: "k", codebase: "v4_6_release", ticketBoardId: 1, ticketTeamId: 1, ticketStatusId: 1}) { userErrors { code } } }"#,
            json!({}),
            "admin",
        ),
        ("setConsumptionSync", "mutation { setConsumptionSync(enabled: true) { userErrors { code } } }", json!({}), "admin"),
        ("testConnectWiseConnection", "mutation { testConnectWiseConnection { ok } }", json!({}), "admin"),
        ("upsertCustomers", "mutation { upsertCustomers(input: []) { userErrors { code } } }", json!({}), "ingest"),
        ("mapCustomer", r#"mutation { mapCustomer(customerId: "1", cwCompanyId: 1) { userErrors { code } } }"#, json!({}), "operate"),
        ("unmapCustomer", r#"mutation { unmapCustomer(customerId: "1") { userErrors { code } } }"#, json!({}), "operate"),
        (
            "createProductMapping",
            r#"mutation { createProductMapping(input: {customerId: "1", productModule: MICROSOFT_365, usage: ACTIVE_USERS, interval: AVERAGE, cwAgreementId: 1, cwSequenceNumber: 1}) { userErrors { code } } }"#,
            json!({}),
            "operate",
        ),
        (
            "updateProductMapping",
            r#"mutation { updateProductMapping(id: "1", expectedVersion: 1, input: {customerId: "1", productModule: MICROSOFT_365, usage: ACTIVE_USERS, interval: AVERAGE, cwAgreementId: 1, cwSequenceNumber: 1}) { userErrors { code } } }"#,
            json!({}),
            "operate",
        ),
        ("deleteProductMapping", r#"mutation { deleteProductMapping(id: "1") { userErrors { code } } }"#, json!({}), "operate"),
        (
            "saveProductMappings",
            r#"mutation { saveProductMappings(customerId: "1", mappings: []) { userErrors { code } } }"#,
            json!({}),
            "operate",
        ),
    ]
}

fn allowed(class: &str, role: &str) -> bool {
    match class {
        "any" => true,
        "read" => matches!(role, "viewer" | "operator" | "admin"),
        "read_customers" => matches!(role, "viewer" | "operator" | "admin" | "integration"),
        "operate" => matches!(role, "operator" | "admin"),
        "admin" => role == "admin",
        "ingest" => matches!(role, "integration" | "admin"),
        other => panic!("unknown class {other}"),
    }
}

#[tokio::test]
async fn role_matrix_every_operation_every_role() {
    let app = spawn_app().await;
    for role in ["viewer", "operator", "admin", "integration", "nobody"] {
        let t = token("matrix", &[role]);
        for (name, q, vars, class) in operations() {
            let body = app.gql(&t, q, vars).await;
            let forbidden = body["errors"].as_array().is_some_and(|e| e.iter().any(|e| e["extensions"]["code"] == "FORBIDDEN"));
            assert_eq!(!forbidden, allowed(class, role), "{role} → {name}: {body}");
            if forbidden {
                assert!(body["errors"][0]["message"].as_str().is_some_and(|m| !m.is_empty()));
            }
        }
    }
    app.shutdown().await;
}
