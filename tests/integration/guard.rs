//! The outbound ConnectWise guard (issue 13): no redirects, the address guard on the address
//! actually connected to (DNS rebinding, URLs stored under another setting), and answers that are
//! not ConnectWise's never echoed or stored. Every server here listens on 127.0.0.1; names are
//! resolved by scripted lookups, so no packet goes anywhere else.
use std::{
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use connectwise::{AddressPolicy, CwClient, CwHttp, ForbiddenDestination, GuardedResolver, HostLookup, discover_codebase};
use integration_tests::*;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A loopback HTTP server answering every request with `respond(path)` (a whole HTTP/1.1
/// response); it counts connections and requests.
struct Canned {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl Canned {
    async fn start(respond: impl Fn(&str) -> String + Send + Sync + 'static) -> Canned {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (connections, requests) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let respond = Arc::new(respond);
        let (c, r) = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let (r, respond) = (r.clone(), respond.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    r.fetch_add(1, Ordering::SeqCst);
                    let text = String::from_utf8_lossy(&head);
                    let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let _ = stream.write_all(respond(&path).as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Canned { addr, connections, requests }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn http_response(status: &str, headers: &[(&str, String)], body: &str) -> String {
    let mut out = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    out
}

fn creds(site: &str) -> connectwise::Credentials {
    connectwise::Credentials {
        site_url: url::Url::parse(site).expect("url"),
        codebase: "v4_6_release".into(),
        company_id: "msp".into(),
        public_key: "pub".into(),
        private_key: SecretString::from("priv"),
        client_id: "cid".into(),
    }
}

const CONFIGURE: &str = "mutation($i: ConnectWiseSettingsInput!) { configureConnectWise(input: $i) { settings { codebase } userErrors { code field message } } }";
const TEST_CONNECTION: &str = "mutation { testConnectWiseConnection { ok checks { name ok message } userErrors { code message } } }";

fn settings_input(site: &str, codebase: Option<&str>) -> Value {
    json!({"i": {"siteUrl": site, "companyId": "msp", "publicKey": "pub", "privateKey": "priv", "codebase": codebase,
                 "ticketBoardId": 1, "ticketTeamId": 11, "ticketStatusId": 21}})
}

/// Audit rows whose text mentions `needle`.
async fn audit_mentions(app: &TestApp, needle: &str) -> i64 {
    use sea_orm::ConnectionTrait;
    let row = app
        .db
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT COUNT(*) AS n FROM audit_log WHERE COALESCE(CAST(before AS TEXT), '') || COALESCE(CAST(after AS TEXT), '') \
             || COALESCE(CAST(detail AS TEXT), '') LIKE $1",
            [format!("%{needle}%").into()],
        ))
        .await
        .expect("count")
        .expect("row");
    row.try_get::<i64>("", "n").expect("n")
}

#[tokio::test]
async fn redirects_are_refused_never_followed_and_never_shown() {
    // The redirect's target counts what reaches it: nothing may.
    let target = Canned::start(|_| http_response("200 OK", &[], r#"{"Codebase":"v4_6_release/"}"#)).await;
    let location = format!("{}/login/companyinfo/msp", target.url());
    let redirecting =
        Canned::start(move |_| http_response("302 Found", &[("Location", location.clone())], "<html>internal-secret-body</html>")).await;
    let http = CwHttp::new(AddressPolicy::AllowPrivate).expect("client");
    let site = url::Url::parse(&redirecting.url()).expect("url");
    let e = discover_codebase(&http, &site, "msp", Duration::from_secs(5)).await.expect_err("a redirect");
    assert_eq!(e.code(), "CW_REDIRECT_REFUSED", "{e}");
    let e2 = CwClient::new(http.clone(), creds(&redirecting.url()), Duration::from_secs(5)).system_info().await.expect_err("redirect");
    assert_eq!(e2.code(), "CW_REDIRECT_REFUSED", "{e2}");
    for text in [e.to_string(), e2.to_string()] {
        assert!(text.contains("redirect") && text.contains("302"), "{text}");
    }
    for text in [e.to_string(), format!("{e:?}"), e2.to_string()] {
        assert!(!text.contains("internal-secret-body") && !text.contains(&target.addr.port().to_string()), "{text}");
    }

    // Through the API: discovery and the connection test say "redirect refused", nothing else.
    let app = spawn_app().await;
    let admin = token("acme", &["admin"]);
    let d = app.gql_ok(&admin, CONFIGURE, settings_input(&redirecting.url(), None)).await;
    let err = &d["configureConnectWise"]["userErrors"][0];
    assert_eq!(err["code"], "CODEBASE_DISCOVERY_FAILED", "{d}");
    let d = app.gql_ok(&admin, CONFIGURE, settings_input(&redirecting.url(), Some("v4_6_release"))).await;
    assert_eq!(d["configureConnectWise"]["userErrors"], json!([]), "{d}");
    let t = app.gql_ok(&admin, TEST_CONNECTION, json!({})).await;
    let check = &t["testConnectWiseConnection"]["checks"][0];
    assert_eq!((check["name"].clone(), check["ok"].clone()), (json!("credentials"), json!(false)), "{t}");
    assert!(check["message"].as_str().unwrap_or("").contains("redirect"), "{t}");
    let everything = format!("{err} {t}");
    assert!(!everything.contains("internal-secret-body") && !everything.contains(&target.addr.port().to_string()), "{everything}");
    assert_eq!(audit_mentions(&app, "internal-secret").await, 0);
    assert_eq!(audit_mentions(&app, &target.addr.port().to_string()).await, 0);
    assert_eq!(target.requests.load(Ordering::SeqCst), 0, "the redirect was followed");
    assert!(redirecting.requests.load(Ordering::SeqCst) >= 3);
    app.shutdown().await;
}

#[tokio::test]
async fn answers_that_are_not_connectwise_are_never_echoed_or_stored() {
    let secret = "root:x:0:0:root:/root:/bin/bash";
    let server = Canned::start(move |path| {
        if path.starts_with("/login/companyinfo/") {
            // Not a codebase: a path, a query, a secret.
            http_response("200 OK", &[], &json!({"Codebase": format!("../../etc/passwd?{secret}")}).to_string())
        } else if path.contains("/system/info") {
            http_response("500 Internal Server Error", &[("x-cw-request-id", format!("<b>{secret}</b>"))], &format!("<pre>{secret}</pre>"))
        } else {
            http_response("400 Bad Request", &[], &json!({"code": secret, "message": secret}).to_string())
        }
    })
    .await;
    let app = spawn_app().await;
    let admin = token("acme", &["admin"]);
    let d = app.gql_ok(&admin, CONFIGURE, settings_input(&server.url(), None)).await;
    assert_eq!(d["configureConnectWise"]["userErrors"][0]["code"], "CODEBASE_DISCOVERY_FAILED", "{d}");
    let d2 = app.gql_ok(&admin, CONFIGURE, settings_input(&server.url(), Some("v4_6_release"))).await;
    assert_eq!(d2["configureConnectWise"]["userErrors"], json!([]), "{d2}");
    let t = app.gql_ok(&admin, TEST_CONNECTION, json!({})).await;
    let message = t["testConnectWiseConnection"]["checks"][0]["message"].as_str().unwrap_or("").to_string();
    assert!(message.contains("HTTP 500") && message.contains("Internal Server Error"), "{t}");
    for text in [d.to_string(), t.to_string()] {
        assert!(!text.contains("root:x") && !text.contains("passwd") && !text.contains("<pre>"), "{text}");
    }
    assert_eq!(audit_mentions(&app, "root:x").await, 0);
    assert_eq!(audit_mentions(&app, "passwd").await, 0);
    // A 400 whose `code` is not an identifier: the status reason only.
    let client = CwClient::new(CwHttp::new(AddressPolicy::AllowPrivate).expect("client"), creds(&server.url()), Duration::from_secs(5));
    let e = client.get_company(1).await.expect_err("400");
    assert_eq!((e.cw_code(), e.code()), (None, "CW_BAD_REQUEST"));
    assert!(!e.to_string().contains("root:x"), "{e}");
    app.shutdown().await;
}

/// Answers every name with `answers[n]` on the n-th lookup (the last one from then on).
struct Scripted {
    answers: Vec<Vec<IpAddr>>,
    lookups: Mutex<usize>,
}

impl HostLookup for Scripted {
    fn lookup(&self, _host: &str) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>> {
        let mut n = self.lookups.lock().unwrap_or_else(|p| p.into_inner());
        let answer = self.answers[(*n).min(self.answers.len() - 1)].clone();
        *n += 1;
        Box::pin(async move { Ok(answer) })
    }
}

fn scripted(answers: &[&[&str]]) -> Arc<Scripted> {
    let answers = answers.iter().map(|a| a.iter().map(|s| s.parse().expect("ip")).collect()).collect();
    Arc::new(Scripted { answers, lookups: Mutex::new(0) })
}

#[tokio::test]
async fn a_name_resolving_to_an_internal_address_is_refused_when_connecting() {
    let internal = Canned::start(|_| http_response("200 OK", &[], r#"{"Codebase":"v4_6_release/"}"#)).await;
    let port = internal.addr.port();
    // The name resolves to loopback (a rebinding answer): refused before any connection.
    let strict = CwHttp::with_lookup(AddressPolicy::PublicOnly, scripted(&[&["127.0.0.1"]])).expect("client");
    let site = url::Url::parse(&format!("https://cw.rebind.test:{port}")).expect("url");
    let e = discover_codebase(&strict, &site, "msp", Duration::from_secs(5)).await.expect_err("refused");
    assert_eq!(e.code(), "CW_ADDRESS_REFUSED", "{e}");
    let client = CwClient::new(strict.clone(), creds(&format!("https://cw.rebind.test:{port}")), Duration::from_secs(5));
    assert_eq!(client.system_info().await.expect_err("refused").code(), "CW_ADDRESS_REFUSED");
    // Every embedded form of loopback too.
    let embedded = CwHttp::with_lookup(AddressPolicy::PublicOnly, scripted(&[&["::ffff:127.0.0.1", "64:ff9b::7f00:1", "::127.0.0.1"]]))
        .expect("client");
    let e = discover_codebase(&embedded, &site, "msp", Duration::from_secs(5)).await.expect_err("refused");
    assert_eq!(e.code(), "CW_ADDRESS_REFUSED", "{e}");
    assert_eq!(internal.connections.load(Ordering::SeqCst), 0, "a refused address was connected to");

    // The same lookup in a lab (CW_ALLOW_HTTP) does connect: the guard, not the test, refused it.
    let lab = CwHttp::with_lookup(AddressPolicy::AllowPrivate, scripted(&[&["127.0.0.1"]])).expect("client");
    let lab_site = url::Url::parse(&format!("http://cw.rebind.test:{port}")).expect("url");
    assert_eq!(discover_codebase(&lab, &lab_site, "msp", Duration::from_secs(5)).await.expect("lab"), "v4_6_release");
    assert_eq!(internal.connections.load(Ordering::SeqCst), 1);

    // DNS rebinding: a public answer when the site is saved, a private one later. The resolver is
    // asked on every connection and judges each answer (checked on the resolver itself: nothing
    // here may connect to the public address).
    let resolver = GuardedResolver::new(AddressPolicy::PublicOnly, scripted(&[&["52.1.2.3"], &["10.0.0.5"]]));
    let first = resolver.permitted("cw.example.com").await.expect("the public answer");
    assert_eq!(first, vec![SocketAddr::new("52.1.2.3".parse().expect("ip"), 0)]);
    let second = resolver.permitted("cw.example.com").await.expect_err("the private answer");
    assert!(second.downcast_ref::<ForbiddenDestination>().is_some(), "{second}");
}

#[tokio::test]
async fn a_url_stored_under_cw_allow_http_is_refused_once_it_is_off() {
    // Saved while CW_ALLOW_HTTP was on (the fake is http on 127.0.0.1)…
    let app = spawn_app().await;
    app.configure_cw("acme").await;
    let tenant_id = app.tenant_id("acme").await;
    let before = app.fake.requests().len();
    // …then the setting is switched off: the same stored row is refused on every path.
    let mut strict = (*app.settings).clone();
    strict.cw_allow_http = false;
    let strict = Arc::new(strict);
    let http = CwHttp::new(AddressPolicy::from_allow_http(strict.cw_allow_http)).expect("client");
    let secrets = api::startup::secret_box(&app.settings).expect("secrets");
    let access = sync_core::service::settings::CwAccess { settings: &strict, secrets: secrets.as_ref(), http: &http };
    let admin = sync_core::auth::Principal { sub: "admin".into(), tenant_key: "acme".into(), tenant_id, roles: vec!["admin".into()] };
    let checks = sync_core::service::settings::test_connection(&app.db, &access, &admin, app.now()).await.expect("test").expect("checks");
    assert!(!checks[0].ok && checks[0].message.contains("https"), "{checks:?}");
    let deps = worker::engine_deps(
        app.db.clone(),
        &app.queue.worker_queue(),
        strict.clone(),
        secrets,
        http,
        Arc::new(sync_core::engine::LocalRateLimiter::new(100)),
        app.clock.clone(),
    );
    let report = sync_core::engine::catalog::refresh_catalog(&deps, tenant_id, "test").await.expect("a reported failure");
    assert!(report.error.as_deref().is_some_and(|e| e.contains("CW_INVALID_URL")), "{report:?}");
    assert_eq!(app.fake.requests().len(), before, "a refused URL was called");
    app.shutdown().await;
}

#[tokio::test]
async fn embedded_forms_of_internal_addresses_are_refused_at_save_time() {
    let app = spawn_app_with(AppOptions { env: vec![("CW_ALLOW_HTTP".into(), "false".into())], ..Default::default() }).await;
    let admin = token("acme", &["admin"]);
    for url in [
        "https://[::127.0.0.1]",
        "https://[64:ff9b::7f00:1]",
        "https://[2002:7f00:1::]",
        "https://[::ffff:169.254.169.254]",
        "https://192.0.0.1",
        "https://240.0.0.1",
        "https://100.64.0.1",
        "https://2130706433",
    ] {
        let d = app.gql_ok(&admin, CONFIGURE, settings_input(url, Some("v4_6_release"))).await;
        assert_eq!(d["configureConnectWise"]["userErrors"][0]["code"], "INSECURE_SITE_URL", "{url}: {d}");
    }
    assert_eq!(app.count("cw_settings").await, 0);
    app.shutdown().await;
}
