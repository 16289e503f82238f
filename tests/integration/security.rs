//! Security suite (issue 7): JWT attacks, query abuse, oversized input, and secrets never in logs.
use std::{io::Read, time::Duration};

use integration_tests::*;
use serde_json::{Value, json};

#[tokio::test]
async fn jwt_attack_list() {
    let app = spawn_app().await;
    let me = "{ me { sub } }";
    let mut attacks: Vec<(&str, String)> = Vec::new();
    // Missing claims, one at a time.
    for claim in ["sub", "tenant", "exp"] {
        let mut c = claims("acme", &["admin"]);
        c.as_object_mut().expect("object").remove(claim);
        attacks.push(("missing claim", sign_hs256(&c, JWT_SECRET)));
    }
    // Empty tenant, wrong claim types.
    let mut c = claims("acme", &["admin"]);
    c["tenant"] = json!("");
    attacks.push(("empty tenant", sign_hs256(&c, JWT_SECRET)));
    let mut c = claims("acme", &["admin"]);
    c["tenant"] = json!(42);
    attacks.push(("numeric tenant", sign_hs256(&c, JWT_SECRET)));
    let mut c = claims("acme", &["admin"]);
    c["roles"] = json!("admin");
    attacks.push(("roles not an array", sign_hs256(&c, JWT_SECRET)));
    // A 1 MB token.
    let mut c = claims("acme", &["admin"]);
    c["pad"] = json!("x".repeat(1024 * 1024));
    attacks.push(("1 MB token", sign_hs256(&c, JWT_SECRET)));
    // Algorithm substitution in the header, keeping the HS256 signature.
    let good = token("acme", &["admin"]);
    let parts: Vec<&str> = good.split('.').collect();
    use base64::Engine;
    let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    attacks.push(("header says HS512", format!("{}.{}.{}", b64(br#"{"alg":"HS512","typ":"JWT"}"#), parts[1], parts[2])));
    attacks.push(("header says none, signature kept", format!("{}.{}.{}", b64(br#"{"alg":"none","typ":"JWT"}"#), parts[1], parts[2])));
    attacks.push(("no signature", format!("{}.{}.", parts[0], parts[1])));
    attacks.push(("two parts", format!("{}.{}", parts[0], parts[1])));
    for (name, t) in attacks {
        // An oversized header may be refused at the connection level (431 and a reset), so every
        // attack uses a fresh client: a pooled connection the server closed must not fail the next.
        let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
        let sent = client.post(format!("{}/graphql", app.address)).bearer_auth(&t).json(&json!({"query": me})).send().await;
        let Ok(res) = sent else {
            assert!(t.len() > 64 * 1024, "{name}: connection failed for a small token");
            continue;
        };
        let status = res.status().as_u16();
        let body = res.json::<Value>().await.unwrap_or(Value::Null);
        assert!(status == 401 || status == 431 || status == 413, "{name}: {status} {body}");
        if status == 401 {
            assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{name}");
        }
    }
    // Roles a token does not have are not granted by unknown role names.
    let body = app
        .gql(&token("acme", &["superuser", "ADMIN"]), "mutation { setConsumptionSync(enabled: true) { userErrors { code } } }", json!({}))
        .await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN");
    app.shutdown().await;
}

#[tokio::test]
async fn query_abuse_is_refused() {
    let app = spawn_app().await;
    let t = token("acme", &["admin"]);
    // Aliases multiplying an expensive list field blow the complexity budget.
    let aliased: String =
        (0..200).map(|i| format!("a{i}: customers(first: 100) {{ edges {{ node {{ id licenses {{ edition }} }} }} }} ")).collect();
    let body = app.gql(&t, &format!("{{ {aliased} }}"), json!({})).await;
    assert!(body["errors"][0]["message"].as_str().unwrap_or("").to_lowercase().contains("complex"), "{body}");
    // Directive flooding.
    let directives: String = (0..50).map(|_| "@include(if: true) ").collect();
    let body = app.gql(&t, &format!("{{ me {directives} {{ sub }} }}"), json!({})).await;
    assert!(body["errors"].is_array(), "{body}");
    // A 10 MB body is refused before parsing.
    let huge = json!({"query": format!("{{ me {{ sub }} }} #{}", "x".repeat(10 * 1024 * 1024))}).to_string();
    let res = app
        .http
        .post(format!("{}/graphql", app.address))
        .bearer_auth(&t)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status().as_u16(), 413);
    // Still serving.
    assert_eq!(app.gql_ok(&t, "{ me { tenantId } }", json!({})).await["me"]["tenantId"], "acme");
    app.shutdown().await;
}

/// The `api` binary of this workspace (built here if `cargo test` did not build it).
fn api_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir").to_path_buf();
    let bin = dir.join("api");
    if !bin.exists() {
        let ok = std::process::Command::new(env!("CARGO")).args(["build", "-q", "-p", "api"]).status().expect("cargo build -p api");
        assert!(ok.success(), "building the api binary failed");
    }
    bin
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn private_keys_and_tokens_never_reach_the_logs() {
    // The real binary, with debug logs captured, does everything that touches the secrets.
    let (db, db_name, url) = fresh_database().await;
    db.close().await.ok();
    let fake = fake_connectwise::FakeConnectWise::start(fake_connectwise::FakeConfig {
        private_key: "Pr1v4te-K3y-Never-Shown".into(),
        ..Default::default()
    })
    .await;
    fake.add_board(fake_connectwise::FakeBoard {
        id: 1,
        name: "B".into(),
        teams: vec![(11, "T".into(), true)],
        statuses: vec![(21, "S".into(), true)],
        types: vec![],
        subtypes: vec![],
    });
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let log_path = std::env::temp_dir().join(format!("csync-log-{}.txt", uuid::Uuid::new_v4().simple()));
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut cmd = std::process::Command::new(api_binary());
    cmd.arg("--with-worker")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &url)
        .env("REDIS_URL", REDIS_URL)
        .env("REDIS_PREFIX", format!("csync-test-{}", uuid::Uuid::new_v4().simple()))
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("JWT_SECRET", JWT_SECRET)
        .env("SECRETS_KEY", sync_core::crypto::SecretBox::generate_key_base64())
        .env("CW_ALLOW_HTTP", "true")
        .env("CW_CLIENT_ID", &fake.config().client_id)
        // The calendar of this test process's tokens.
        .env("CLOCK_START", shared_clock().now().to_rfc3339())
        .env("RUST_LOG", "debug")
        .env("LOG_FORMAT", "json")
        .stdout(log.try_clone().expect("clone"))
        .stderr(log);
    let _child = Child(cmd.spawn().expect("spawn api"));
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..300 {
        if http.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "api did not start; log: {}", std::fs::read_to_string(&log_path).unwrap_or_default());
    let admin = token("acme", &["admin"]);
    let gql = |q: &'static str, v: Value| {
        let (http, base, admin) = (http.clone(), base.clone(), admin.clone());
        async move {
            http.post(format!("{base}/graphql"))
                .bearer_auth(admin)
                .json(&json!({"query": q, "variables": v}))
                .send()
                .await
                .expect("send")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    let cfg = fake.config().clone();
    let r = gql(
        "mutation($i: ConnectWiseSettingsInput!) { configureConnectWise(input: $i) { settings { hasPrivateKey } userErrors { code } } }",
        json!({"i": {"siteUrl": fake.site_url(), "companyId": cfg.company_id, "publicKey": cfg.public_key, "privateKey": cfg.private_key, "ticketBoardId": 1, "ticketTeamId": 11, "ticketStatusId": 21}}),
    )
    .await;
    assert_eq!(r["data"]["configureConnectWise"]["settings"]["hasPrivateKey"], true, "{r}");
    let r = gql("mutation { testConnectWiseConnection { ok } }", json!({})).await;
    assert_eq!(r["data"]["testConnectWiseConnection"]["ok"], true, "{r}");
    // A wrong key too (an error path), then read everything back.
    gql("{ connectWiseSettings { siteUrl hasPrivateKey } auditLog { edges { node { before after detail } } } }", json!({})).await;
    let bad = http
        .post(format!("{base}/graphql"))
        .bearer_auth("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.bad")
        .json(&json!({"query": "{ me { sub } }"}))
        .send()
        .await
        .expect("send");
    assert_eq!(bad.status().as_u16(), 401);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut text = String::new();
    std::fs::File::open(&log_path).expect("log").read_to_string(&mut text).expect("read");
    assert!(text.len() > 1000, "expected debug logs, got: {text}");
    for secret in [cfg.private_key.as_str(), admin.as_str(), "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.bad", JWT_SECRET] {
        assert!(!text.contains(secret), "a secret reached the logs: {secret}");
    }
    // The Basic credentials of ConnectWise calls, base64-encoded, neither.
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}+{}:{}", cfg.company_id, cfg.public_key, cfg.private_key));
    assert!(!text.contains(&basic), "ConnectWise credentials reached the logs");
    let _ = std::fs::remove_file(&log_path);
    drop(_child);
    if let Ok(admin_db) = sync_core::db::connect(PG_ADMIN_URL, 1).await {
        use sea_orm::ConnectionTrait;
        let _ = admin_db.execute_unprepared(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")).await;
    }
}
