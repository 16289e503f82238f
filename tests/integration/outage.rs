//! PostgreSQL cut off under API load (issue 7): coded errors while it is down, full service after,
//! no restart, no panic. The outage is a TCP proxy this test controls — the shared server is
//! never stopped.
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use integration_tests::*;
use serde_json::{Value, json};
use tokio::{net::TcpListener, task::JoinHandle};

/// A TCP proxy to PostgreSQL that can drop every connection and refuse new ones.
struct Proxy {
    port: u16,
    open: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: &'static str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let open = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (o, c) = (open.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !o.load(Ordering::SeqCst) {
                    drop(inbound); // refused: the database is "down"
                    continue;
                }
                let handle = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                c.lock().expect("lock").push(handle);
            }
        });
        Proxy { port, open, conns, accept }
    }

    /// Drop every live connection and refuse new ones.
    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for h in self.conns.lock().expect("lock").drain(..) {
            h.abort();
        }
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

#[tokio::test]
async fn a_database_outage_gives_coded_errors_then_full_service() {
    // An app whose database connection goes through the proxy.
    let (direct, db_name, _) = fresh_database().await;
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let url = format!("postgres://postgres@127.0.0.1:{}/{db_name}", proxy.port);
    let db = sync_core::db::connect(&url, 8).await.expect("connect through the proxy");
    let vars: std::collections::HashMap<String, String> = [
        ("DATABASE_URL", url.as_str()),
        ("REDIS_URL", REDIS_URL),
        ("BIND_ADDR", "127.0.0.1:0"),
        ("JWT_SECRET", JWT_SECRET),
        ("REDIS_PREFIX", &format!("csync-test-{}", uuid::Uuid::new_v4().simple())),
        // Four clients as one tenant, as fast as the outage lets them: above a tenant's default
        // request budget, which is not what this test is about.
        ("API_RATE_PER_TENANT", "100000"),
        ("API_BURST_PER_TENANT", "100000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let settings = Arc::new(sync_core::Settings::from_vars(&vars).expect("settings"));
    let queue = worker::RedisQueue::connect(&settings).await.expect("redis");
    let app = api::Application::build(settings, db, Arc::new(queue), shared_clock()).await.expect("build");
    let base = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    let t = token("acme", &["admin"]);
    let (qh, qb, qt) = (http.clone(), base.clone(), t.clone());
    let query = move |q: &'static str| {
        let (http, base, t) = (qh.clone(), qb.clone(), qt.clone());
        async move {
            let res = http
                .post(format!("{base}/graphql"))
                .bearer_auth(t)
                .json(&json!({"query": q}))
                .send()
                .await
                .expect("the server always answers");
            (res.status().as_u16(), res.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let customer = "mutation { upsertCustomers(input: [{externalId: \"e1\", accountName: \"One\", licenses: []}]) { customers { id } userErrors { code } } }";
    assert!(query(customer).await.1["errors"].is_null());

    // Load: 4 clients reading and writing continuously for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, uncoded) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(Mutex::new(Vec::<Value>::new())));
    let mut load = Vec::new();
    for i in 0..4 {
        let (stop, ok, failed, uncoded, query) = (stop.clone(), ok.clone(), failed.clone(), uncoded.clone(), query.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let q = if i % 2 == 0 { "{ customers { edges { node { id accountName licenses { edition } } } } }" } else { customer };
                let (status, body) = query(q).await;
                assert!(status == 200, "status {status}: {body}");
                match body["errors"].as_array() {
                    None => ok.fetch_add(1, Ordering::SeqCst),
                    Some(errors) => {
                        if errors.iter().any(|e| !e["extensions"]["code"].is_string()) {
                            uncoded.lock().expect("lock").push(body.clone());
                        }
                        failed.fetch_add(1, Ordering::SeqCst)
                    }
                };
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ok_before = ok.load(Ordering::SeqCst);
    assert!(ok_before > 0);

    // Ten seconds without the database.
    proxy.cut();
    let cut_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ready = http.get(format!("{base}/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status().as_u16(), 503);
    assert_eq!(http.get(format!("{base}/healthz")).send().await.expect("healthz").status().as_u16(), 200);
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(cut_at.elapsed())).await;
    let failed_during = failed.load(Ordering::SeqCst);
    assert!(failed_during > 0, "requests during the outage should fail with coded errors");
    proxy.restore();

    // Full service again, without a restart.
    let restored_at = Instant::now();
    let mut recovered = false;
    while restored_at.elapsed() < Duration::from_secs(20) {
        let (_, body) = query("{ customers { edges { node { id } } } }").await;
        if body["errors"].is_null() && body["data"]["customers"]["edges"].is_array() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(recovered, "the API did not recover after the database came back");
    let ok_at_restore = ok.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    for l in load {
        l.await.expect("a load client panicked (the server answered something unexpected)");
    }
    assert!(ok.load(Ordering::SeqCst) > ok_at_restore, "requests succeed again after the outage");
    assert!(uncoded.lock().expect("lock").is_empty(), "errors without a code: {:?}", uncoded.lock().expect("lock").first());
    assert_eq!(http.get(format!("{base}/readyz")).send().await.expect("readyz").status().as_u16(), 200);
    handle.stop(false).await;
    drop(proxy);
    direct.close().await.ok();
    if let Ok(admin) = sync_core::db::connect(PG_ADMIN_URL, 1).await {
        use sea_orm::ConnectionTrait;
        let _ = admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")).await;
    }
}
