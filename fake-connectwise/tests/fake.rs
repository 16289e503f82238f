//! The fake over real HTTP, driven with plain reqwest.

use std::time::{Duration, Instant};

use fake_connectwise::{FakeAddition, FakeAgreement, FakeBoard, FakeCompany, FakeConfig, FakeConnectWise, Fault, FaultRule, RandomFaults};
use serde_json::{Value, json};

struct Api {
    http: reqwest::Client,
    base: String,
    auth: String,
    client_id: String,
}

impl Api {
    fn new(fake: &FakeConnectWise) -> Self {
        Api {
            http: reqwest::Client::new(),
            base: fake.api_base_url(),
            auth: fake.expected_authorization(),
            client_id: fake.config().client_id.clone(),
        }
    }
    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{}", self.base, path)).header("Authorization", &self.auth).header("clientId", &self.client_id)
    }
    async fn get(&self, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
        let r = self.req(reqwest::Method::GET, path).send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.json::<Value>().await.unwrap_or(Value::Null);
        (status, headers, body)
    }
    async fn send_json(&self, method: reqwest::Method, path: &str, body: &Value) -> (u16, Value) {
        let r = self.req(method, path).header("Content-Type", "application/json").body(body.to_string()).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap_or(Value::Null))
    }
}

fn seed(fake: &FakeConnectWise) {
    fake.add_company(FakeCompany::new(1, "ACME", "Acme"));
    fake.add_company(FakeCompany { status: "Inactive".into(), ..FakeCompany::new(2, "BETA", "Beta") });
    fake.add_company(FakeCompany { deleted: true, ..FakeCompany::new(3, "GONE", "Gone") });
    fake.add_agreement(FakeAgreement::new(10, "MSA", 1));
    fake.add_agreement(FakeAgreement::new(20, "MSA", 2));
    fake.add_addition(FakeAddition::new(100, 10, 7, 5));
    fake.add_board(FakeBoard::new(3, "Billing"));
}

fn link(headers: &reqwest::header::HeaderMap) -> String {
    headers.get("link").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

#[test]
fn starts_from_sync_code_and_stops_on_drop() {
    let fake = FakeConnectWise::start_blocking(FakeConfig::default());
    let site = fake.site_url();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let info: Value = reqwest::get(format!("{site}/login/companyinfo/msp")).await.unwrap().json().await.unwrap();
        assert_eq!(info["Codebase"], "v4_6_release/");
        assert_eq!(info["CompanyID"], "msp");
    });
    drop(fake);
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r = reqwest::Client::new().get(format!("{site}/login/companyinfo/msp")).header("Connection", "close").send().await;
            if r.is_err() {
                break;
            }
            assert!(Instant::now() < deadline, "server still answering after drop");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

#[tokio::test]
async fn auth_headers_and_ids() {
    let fake = FakeConnectWise::start(FakeConfig::default()).await;
    seed(&fake);
    let api = Api::new(&fake);
    let (s, h, body) = api.get("/system/info").await;
    assert_eq!(s, 200);
    assert_eq!(body["version"], "v2025.1");
    assert_eq!(h["api-current-version"], "2025.8");
    let id1 = h["x-cw-request-id"].to_str().unwrap().to_string();
    let (_, h2, _) = api.get("/system/info").await;
    assert_ne!(id1, h2["x-cw-request-id"].to_str().unwrap());

    let r = reqwest::Client::new()
        .get(format!("{}/system/info", fake.api_base_url()))
        .header("Authorization", "Basic bXNwK3B1Yjp3cm9uZw==")
        .header("clientId", &fake.config().client_id)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().contains_key("x-cw-request-id"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "Unauthorized");
    // Right key, no clientId.
    let r = reqwest::Client::new()
        .get(format!("{}/system/info", fake.api_base_url()))
        .header("Authorization", fake.expected_authorization())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    let reqs = fake.requests();
    assert_eq!(reqs.len(), 4);
    assert!(reqs[0].authorized && reqs[1].authorized);
    assert!(!reqs[2].authorized && reqs[2].status == 401);
    assert!(!reqs[3].authorized);
    assert_eq!(reqs[0].request_id, id1);
    assert!(reqs.iter().all(|r| r.finished_at >= r.started_at));
}

#[tokio::test]
async fn paging_conditions_and_link_headers() {
    let fake = FakeConnectWise::start(FakeConfig::default()).await;
    for id in 1..=60 {
        fake.add_company(FakeCompany {
            status: if id % 2 == 0 { "Active" } else { "Inactive" }.into(),
            deleted: id % 10 == 0,
            ..FakeCompany::new(id, &format!("C{id}"), &format!("Company {id}"))
        });
    }
    let api = Api::new(&fake);
    // Default page size 25.
    let (s, h, body) = api.get("/company/companies").await;
    assert_eq!(s, 200);
    assert_eq!(body.as_array().unwrap().len(), 25);
    let l = link(&h);
    assert!(l.contains("page=2&pageSize=25>; rel=\"next\""), "{l}");
    assert!(l.starts_with(&format!("<{}", fake.site_url())) || l.contains(&fake.site_url()));

    // Conditions, URL-encoded, across pages.
    let cond = "deletedFlag=false and status/name=\"Active\"";
    let q: String =
        url::form_urlencoded::Serializer::new(String::new()).append_pair("conditions", cond).append_pair("pageSize", "20").finish();
    let (s, h, body) = api.get(&format!("/company/companies?{q}")).await;
    assert_eq!(s, 200);
    let first = body.as_array().unwrap().clone();
    assert_eq!(first.len(), 20);
    assert!(first.iter().all(|c| c["status"]["name"] == "Active" && c["deletedFlag"] == false));
    let next = link(&h).split(", ").find(|p| p.ends_with("rel=\"next\"")).map(|p| p[1..p.find('>').unwrap()].to_string()).unwrap();
    let r = api.http.get(&next).header("Authorization", &api.auth).header("clientId", &api.client_id).send().await.unwrap();
    assert!(!link(r.headers()).contains("rel=\"next\""), "last page has no next");
    let second: Value = r.json().await.unwrap();
    // 30 active, 6 of them deleted (ids 10,20,…,60) → 24.
    assert_eq!(second.as_array().unwrap().len(), 4);

    // pageSize above 1000 is clamped; count endpoint.
    let (_, h, body) = api.get("/company/companies?pageSize=5000").await;
    assert_eq!(body.as_array().unwrap().len(), 60);
    assert!(link(&h).contains("pageSize=1000"));
    let (_, _, body) = api.get("/company/companies/count?conditions=deletedFlag%3Dfalse").await;
    assert_eq!(body["count"], 54);

    // Unknown field → 400 InvalidObject.
    let (s, _, body) = api.get("/company/companies?conditions=bogus%3D1").await;
    assert_eq!(s, 400);
    assert_eq!(body["code"], "InvalidObject");

    // Agreements by company.
    fake.add_agreement(FakeAgreement::new(10, "A", 2));
    fake.add_agreement(FakeAgreement::new(11, "B", 4));
    let (_, _, body) = api.get("/finance/agreements?conditions=company%2Fid%3D4").await;
    let arr = body.as_array().unwrap();
    assert_eq!(arr.len(), 1);
    assert_eq!(arr[0]["id"], 11);
    assert_eq!(arr[0]["company"]["identifier"], "C4");
    assert_eq!(arr[0]["type"]["name"], "Managed Services");
}

#[tokio::test]
async fn additions_get_and_patch() {
    let fake = FakeConnectWise::start(FakeConfig::default()).await;
    seed(&fake);
    let api = Api::new(&fake);
    let (s, _, a) = api.get("/finance/agreements/10/additions/100").await;
    assert_eq!(s, 200);
    assert_eq!(a["quantity"], 5);
    assert_eq!(a["product"], json!({"id": 7, "identifier": "PROD-7"}));
    assert_eq!(a["agreementStatus"], "Active");
    assert_eq!(a["billCustomer"], "Billable");
    assert_eq!(a["uom"], "Each");
    let (s, _, _) = api.get("/finance/agreements/20/additions/100").await;
    assert_eq!(s, 404, "wrong agreement");
    let (s, _, list) = api.get("/finance/agreements/10/additions").await;
    assert_eq!(s, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (s, _, _) = api.get("/finance/agreements/99/additions").await;
    assert_eq!(s, 404);

    let path = "/finance/agreements/10/additions/100";
    let patch = reqwest::Method::PATCH;
    for bad in [
        json!({"op": "replace", "path": "quantity", "value": 1}),
        json!([{"op": "add", "path": "quantity", "value": 1}]),
        json!([{"op": "replace", "path": "unitPrice", "value": 1}]),
        json!([{"op": "replace", "path": "quantity", "value": "1"}]),
        json!([{"op": "replace", "path": "quantity", "value": 1.5}]),
        json!([{"op": "replace", "path": "quantity", "value": 1, "extra": true}]),
        json!([]),
    ] {
        let (s, body) = api.send_json(patch.clone(), path, &bad).await;
        assert_eq!(s, 400, "{bad}");
        assert_eq!(body["code"], "InvalidObject");
    }
    let r = api.req(patch.clone(), path).body(r#"[{"op":"replace","path":"quantity","value":9}]"#).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 415, "Content-Type is required");
    assert_eq!(fake.addition_quantity(100), Some(5));
    assert_eq!(fake.patch_count(), 0);

    let (s, body) = api.send_json(patch.clone(), path, &json!([{"op": "replace", "path": "quantity", "value": 42}])).await;
    assert_eq!(s, 200);
    assert_eq!(body["quantity"], 42);
    assert_eq!(fake.addition_quantity(100), Some(42));
    assert_eq!(fake.patch_count(), 1);
    assert_eq!(fake.patches()[0].path, path);

    fake.set_agreement_status(10, "Cancelled");
    fake.set_addition_product(100, 8);
    let (_, _, a) = api.get(path).await;
    assert_eq!(a["agreementStatus"], "Cancelled");
    assert_eq!(a["product"]["id"], 8);
    fake.remove_addition(10, 100);
    let (s, _, body) = api.get(path).await;
    assert_eq!(s, 404);
    assert_eq!(body["code"], "NotFound");
    let (s, _) = api.send_json(patch, path, &json!([{"op": "replace", "path": "quantity", "value": 1}])).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn boards_and_tickets() {
    let fake = FakeConnectWise::start(FakeConfig::default()).await;
    seed(&fake);
    let api = Api::new(&fake);
    let (_, _, boards) = api.get("/service/boards").await;
    assert_eq!(boards, json!([{"id": 3, "name": "Billing", "inactiveFlag": false}]));
    let (_, _, statuses) = api.get("/service/boards/3/statuses").await;
    assert_eq!(statuses[0], json!({"id": 31, "name": "New", "defaultFlag": true}));
    let (s, _, _) = api.get("/service/boards/3/nonsense").await;
    assert_eq!(s, 404);

    let post = reqwest::Method::POST;
    let ok = json!({
        "summary": "Quantity push failed", "company": {"id": 1}, "board": {"id": 3},
        "team": {"id": 31}, "initialDescription": "details", "externalXRef": "push-1"
    });
    for (field, bad) in [
        ("summary", json!({"summary": "x".repeat(101)})),
        ("summary", json!({"summary": ""})),
        ("company", json!({"company": {"id": 999}})),
        ("board", json!({"board": {"id": 999}})),
        ("status", json!({"status": {"id": 999}})),
    ] {
        let mut body = ok.clone();
        for (k, v) in bad.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (s, resp) = api.send_json(post.clone(), "/service/tickets", &body).await;
        assert_eq!(s, 400, "{field}");
        assert_eq!(resp["errors"][0]["field"], field);
    }
    let (s, t) = api.send_json(post.clone(), "/service/tickets", &ok).await;
    assert_eq!(s, 201);
    assert_eq!(t["id"], 1000);
    assert_eq!(t["externalXRef"], "push-1");
    assert_eq!(t["status"]["id"], 31);
    assert!(t.get("initialDescription").is_none());
    let (_, t2) = api
        .send_json(post, "/service/tickets", &json!({"summary": "b", "company": {"id": 1}, "board": {"id": 3}, "externalXRef": "push-2"}))
        .await;
    assert_eq!(t2["id"], 1001);
    let (_, _, found) = api.get("/service/tickets?conditions=externalXRef%3D%22push-2%22").await;
    assert_eq!(found.as_array().unwrap().len(), 1);
    assert_eq!(found[0]["id"], 1001);
    assert!(found[0].get("initialDescription").is_none());
    let stored = fake.tickets();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0]["initialDescription"], "details");
}

#[tokio::test]
async fn fault_rules_latency_and_concurrency_tracking() {
    let fake = FakeConnectWise::start(FakeConfig::default()).await;
    seed(&fake);
    fake.add_addition(FakeAddition::new(101, 10, 7, 5));
    let api = Api::new(&fake);
    fake.inject(FaultRule {
        method: Some("get".into()),
        path_contains: Some("/additions/100".into()),
        fault: Fault::RateLimit { retry_after_secs: 4 },
        times: 2,
    });
    let r = api.req(reqwest::Method::GET, "/finance/agreements/10/additions/100").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "4");
    assert_eq!(api.get("/finance/agreements/10/additions/100").await.0, 429);
    assert_eq!(api.get("/finance/agreements/10/additions/100").await.0, 200);
    assert_eq!(api.get("/finance/agreements/10/additions/101").await.0, 200);
    fake.inject(FaultRule { method: None, path_contains: None, fault: Fault::Status(502), times: usize::MAX });
    assert_eq!(api.get("/system/info").await.0, 502);
    assert_eq!(api.get("/service/boards").await.0, 502);
    fake.clear_faults();
    assert_eq!(api.get("/system/info").await.0, 200);
    assert!(fake.requests().iter().any(|r| r.status == 429));

    // Latency must not serialise requests: 20 parallel calls at 200 ms each.
    fake.set_latency(Duration::from_millis(200));
    fake.clear_requests();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let api = Api::new(&fake);
        tasks.push(tokio::spawn(async move { api.get("/system/info").await.0 }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    // Proven from the fake's own records, not from a timer: the calls were handled concurrently.
    let mut calls = fake.requests();
    calls.sort_by_key(|r| r.started_at);
    assert_eq!(calls.len(), 20);
    assert!(calls.windows(2).any(|w| w[1].started_at < w[0].finished_at), "the fake served the calls one after another");
    fake.set_latency(Duration::ZERO);

    // Sequential calls never overlap; two parallel calls on one addition do.
    fake.clear_requests();
    for _ in 0..3 {
        api.get("/finance/agreements/10/additions/100").await;
    }
    assert_eq!(fake.max_concurrent_per_addition(), 1);
    fake.inject(FaultRule {
        method: None,
        path_contains: Some("/additions/100".into()),
        fault: Fault::Delay(Duration::from_millis(300)),
        times: 2,
    });
    let a = Api::new(&fake);
    let b = Api::new(&fake);
    let (x, y) = tokio::join!(a.get("/finance/agreements/10/additions/100"), b.get("/finance/agreements/10/additions/100"));
    assert_eq!((x.0, y.0), (200, 200));
    assert_eq!(fake.max_concurrent_per_addition(), 2);
}

#[tokio::test]
async fn abandoned_request_leaves_flight_and_is_recorded() {
    let fake = FakeConnectWise::start(FakeConfig::default()).await;
    seed(&fake);
    let api = Api::new(&fake);
    fake.inject(FaultRule {
        method: None,
        path_contains: Some("/additions/100".into()),
        fault: Fault::Delay(Duration::from_millis(800)),
        times: 1,
    });
    let r = api.req(reqwest::Method::GET, "/finance/agreements/10/additions/100").timeout(Duration::from_millis(100)).send().await;
    assert!(r.is_err());
    // The fake notices the hang-up, drops the handler and records 499.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (s, _, _) = api.get("/finance/agreements/10/additions/100").await;
    assert_eq!(s, 200);
    assert_eq!(fake.max_concurrent_per_addition(), 1);
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [499, 200]);
}

#[tokio::test]
async fn random_faults_are_deterministic_per_path_and_bounded() {
    let plan = RandomFaults {
        p_5xx_permille: 300,
        p_429_permille: 200,
        p_slow_permille: 0,
        retry_after_secs: (1, 3),
        slow: Duration::from_millis(10),
        max_consecutive_per_path: 2,
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        let fake = FakeConnectWise::start(FakeConfig::default()).await;
        seed(&fake);
        fake.add_addition(FakeAddition::new(101, 10, 7, 5));
        fake.set_random_faults(42, plan.clone());
        let api = Api::new(&fake);
        let mut seq = Vec::new();
        for i in 0..60 {
            // Interleave another path; it must not change this path's sequence.
            if i % 3 == 0 {
                api.get("/finance/agreements/10/additions/101").await;
            }
            // A push attempt: GET, then PATCH when the GET succeeded.
            let get = api.get("/finance/agreements/10/additions/100").await.0;
            seq.push(get);
            if get == 200 {
                let body = json!([{"op": "replace", "path": "quantity", "value": i}]);
                seq.push(api.send_json(reqwest::Method::PATCH, "/finance/agreements/10/additions/100", &body).await.0);
            }
        }
        // Other endpoints are never faulted.
        for _ in 0..10 {
            assert_eq!(api.get("/system/info").await.0, 200);
        }
        runs.push(seq);
    }
    assert_eq!(runs[0], runs[1]);
    let seq = &runs[0];
    assert!(seq.contains(&429), "{seq:?}");
    assert!(seq.iter().any(|s| *s >= 500), "{seq:?}");
    assert!(seq.contains(&200), "{seq:?}");
    // Faults in a row until a successful PATCH (a GET 200 then PATCH 200 pair) never exceed 2.
    let mut run = 0;
    for pair in seq.windows(2) {
        if pair[0] == 200 && pair[1] == 200 {
            run = 0;
        } else if pair[1] != 200 {
            run += 1;
            assert!(run <= 2, "{seq:?}");
        }
    }
}

#[tokio::test]
async fn many_patches_stay_fast() {
    let fake = FakeConnectWise::start(FakeConfig { workers: 4, ..FakeConfig::default() }).await;
    fake.add_company(FakeCompany::new(1, "A", "A"));
    for a in 0..200 {
        fake.add_agreement(FakeAgreement::new(a, "MSA", 1));
        for x in 0..100 {
            fake.add_addition(FakeAddition::new(a * 1000 + x, a, 7, 0));
        }
    }
    let api = std::sync::Arc::new(Api::new(&fake));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..16i64 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..125i64 {
                let n = w * 125 + i; // 2,000 distinct additions
                let (a, x) = (n % 200, n / 200);
                let path = format!("/finance/agreements/{a}/additions/{}", a * 1000 + x);
                let (s, _, _) = api.get(&path).await;
                assert_eq!(s, 200);
                let (s, _) =
                    api.send_json(reqwest::Method::PATCH, &path, &json!([{"op": "replace", "path": "quantity", "value": n}])).await;
                assert_eq!(s, 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let took = started.elapsed();
    eprintln!("4,000 requests took {took:?}");
    assert_eq!(fake.patch_count(), 2000);
    assert_eq!(fake.request_count(), 4000);
    assert_eq!(fake.max_concurrent_per_addition(), 1);
    assert_eq!(fake.addition_quantity(199 * 1000 + 9), Some(1999));
}
