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
async fn a_hand_edit_follows_the_next_patch_only() {
    let fake = FakeConnectWise::start(FakeConfig::default()).await;
    seed(&fake);
    let api = Api::new(&fake);
    let path = "/finance/agreements/10/additions/100";
    let set = |q: i64| json!([{"op": "replace", "path": "quantity", "value": q}]);
    fake.hand_edit_after_next_patch(100, 7);
    assert_eq!(fake.addition_quantity(100), Some(5), "nothing changes before the PATCH");
    let (s, body) = api.send_json(reqwest::Method::PATCH, path, &set(40)).await;
    assert_eq!((s, body["quantity"].clone()), (200, json!(40)), "the PATCH is answered with what it set");
    assert_eq!(fake.addition_quantity(100), Some(47), "then somebody edits it by hand");
    let (_, _, a) = api.get(path).await;
    assert_eq!(a["quantity"], 47);
    let (s, _) = api.send_json(reqwest::Method::PATCH, path, &set(40)).await;
    assert_eq!(s, 200);
    assert_eq!(fake.addition_quantity(100), Some(40), "once only");
}

#[tokio::test]
async fn boards_and_tickets() {
    let fake = FakeConnectWise::start(FakeConfig::default()).await;
    seed(&fake);
    let api = Api::new(&fake);
    let (_, _, boards) = api.get("/service/boards").await;
    assert_eq!(
        (boards[0]["id"].clone(), boards[0]["name"].clone(), boards[0]["inactiveFlag"].clone()),
        (json!(3), json!("Billing"), json!(false))
    );
    assert!(boards[0]["location"].is_object() && boards[0]["department"].is_object(), "required by the schema");
    let (_, _, statuses) = api.get("/service/boards/3/statuses").await;
    assert_eq!(
        (statuses[0]["id"].clone(), statuses[0]["name"].clone(), statuses[0]["defaultFlag"].clone()),
        (json!(31), json!("New"), json!(true))
    );
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

#[tokio::test]
async fn answers_with_connectwise_media_type_and_no_forbidden_nulls() {
    let fake = FakeConnectWise::start(FakeConfig::default()).await;
    seed(&fake);
    let api = Api::new(&fake);
    for path in ["/system/info", "/company/companies", "/finance/agreements/10", "/finance/agreements/10/additions/100", "/nope"] {
        let r = api.req(reqwest::Method::GET, path).send().await.unwrap();
        assert_eq!(r.headers()["content-type"], "application/vnd.connectwise.com+json; version=2025.8", "{path}");
    }
    // Unset dates and an unset next invoice date are left out, not null; required objects are there.
    let (_, _, agreement) = api.get("/finance/agreements/10").await;
    assert!(agreement.get("nextInvoiceDate").is_none(), "{agreement}");
    assert!(agreement["contact"].is_object());
    let (_, _, addition) = api.get("/finance/agreements/10/additions/100").await;
    assert!(addition.get("effectiveDate").is_none() && addition.get("cancelledDate").is_none(), "{addition}");
    let (_, _, teams) = api.get("/service/boards/3/teams").await;
    assert!(teams[0]["teamLeader"].is_object());
    let (_, _, subtypes) = api.get("/service/boards/3/subtypes").await;
    assert!(subtypes.as_array().unwrap().iter().all(|s| s.get("defaultFlag").is_none()), "BoardSubType has no defaultFlag");
    let (s, t) =
        api.send_json(reqwest::Method::POST, "/service/tickets", &json!({"summary": "s", "company": {"id": 1}, "board": {"id": 3}})).await;
    assert_eq!(s, 201);
    for key in ["externalXRef", "team", "type", "subType"] {
        assert!(t.get(key).is_none(), "{key} left out, not null: {t}");
    }
    assert_eq!(t["status"]["id"], 31, "the board's default status");
}

#[tokio::test]
async fn sparse_mode_sends_null_wherever_the_schema_allows_and_keeps_the_data() {
    let fake = FakeConnectWise::start(FakeConfig { sparse: true, ..FakeConfig::default() }).await;
    seed(&fake);
    let api = Api::new(&fake);
    assert!(fake.is_sparse());
    // Conditions see the full record: the non-deleted companies are found although their flag is null.
    let (_, _, companies) = api.get("/company/companies?conditions=deletedFlag%3Dfalse").await;
    let companies = companies.as_array().unwrap().clone();
    assert_eq!(companies.len(), 2);
    assert_eq!(companies[0]["deletedFlag"], Value::Null);
    assert_eq!(companies[0]["status"], json!({"id": null, "name": "Active"}));
    let (_, _, agreement) = api.get("/finance/agreements/10").await;
    assert_eq!((agreement["cancelledFlag"].clone(), agreement["contact"].clone()), (Value::Null, json!({"id": null})));
    assert_eq!((agreement["company"]["id"].clone(), agreement["agreementStatus"].clone()), (json!(1), json!("Active")));
    let (_, _, addition) = api.get("/finance/agreements/10/additions/100").await;
    for key in ["billCustomer", "agreementId", "agreementStatus"] {
        assert_eq!(addition[key], Value::Null, "{key}: {addition}");
    }
    assert_eq!((addition["quantity"].clone(), addition["product"]["id"].clone()), (json!(5), json!(7)));
    let (_, _, boards) = api.get("/service/boards").await;
    assert_eq!((boards[0]["inactiveFlag"].clone(), boards[0]["location"].clone()), (Value::Null, json!({"id": null})));
    let (_, _, statuses) = api.get("/service/boards/3/statuses").await;
    assert_eq!((statuses[0]["defaultFlag"].clone(), statuses[1]["defaultFlag"].clone()), (json!(true), Value::Null));
    let (_, _, info) = api.get("/system/info").await;
    assert_eq!(info, json!({}));
    fake.set_sparse(false);
    let (_, _, addition) = api.get("/finance/agreements/10/additions/100").await;
    assert_eq!(addition["billCustomer"], "Billable");
}

#[tokio::test]
async fn money_and_fractional_sequence_numbers_are_served_verbatim() {
    let fake = FakeConnectWise::start(FakeConfig::default()).await;
    seed(&fake);
    fake.add_addition(
        FakeAddition::new(101, 10, 8, 3)
            .with_unit_price(Some("12345678.123456789012345"))
            .with_unit_cost(Some("0.1"))
            .with_less_included(None)
            .with_sequence_number_text(Some("2.5")),
    );
    let api = Api::new(&fake);
    let text = api.req(reqwest::Method::GET, "/finance/agreements/10/additions/101").send().await.unwrap().text().await.unwrap();
    assert!(text.contains(r#""unitPrice":12345678.123456789012345"#), "{text}");
    assert!(text.contains(r#""unitCost":0.1"#) && text.contains(r#""lessIncluded":null"#), "{text}");
    assert!(text.contains(r#""sequenceNumber":2.5"#), "{text}");
    let stored = fake.addition(101).unwrap();
    assert_eq!(stored.unit_price.as_deref(), Some("12345678.123456789012345"));
}

#[test]
#[should_panic(expected = "is not a JSON number")]
fn money_setters_refuse_text_that_is_not_a_number() {
    let _ = FakeAddition::new(1, 1, 1, 1).with_unit_price(Some("12,50"));
}

#[tokio::test]
async fn refuses_what_the_official_schema_refuses() {
    let fake = FakeConnectWise::start(FakeConfig::default()).await;
    seed(&fake);
    let api = Api::new(&fake);
    // Path and query parameters are int32.
    for path in ["/finance/agreements/3000000000/additions/100", "/company/companies?page=abc", "/company/companies?pageSize=99999999999"] {
        let (s, _, body) = api.get(path).await;
        assert_eq!((s, body["code"].as_str()), (400, Some("InvalidObject")), "{path}: {body}");
    }
    let post = reqwest::Method::POST;
    for bad in [
        json!({"summary": "s", "company": {"id": 1}, "board": {"id": 3}, "externalXRef": null}),
        json!({"summary": "s", "company": {"id": 1}, "board": {"id": 3}, "team": 31}),
        json!({"summary": "s", "company": {"id": 1}, "board": {"id": 3}, "initialDescription": 5}),
        json!({"summary": "s", "company": {"id": "1"}, "board": {"id": 3}}),
        json!({"company": {"id": 1}, "board": {"id": 3}}),
        json!(["not", "an", "object"]),
    ] {
        let (s, body) = api.send_json(post.clone(), "/service/tickets", &bad).await;
        assert_eq!((s, body["code"].as_str()), (400, Some("InvalidObject")), "{bad}: {body}");
        assert!(body["errors"][0]["field"].is_string(), "{body}");
    }
    assert!(fake.tickets().is_empty());
    let r = api
        .req(reqwest::Method::PATCH, "/finance/agreements/10/additions/100")
        .header("Content-Type", "application/json")
        .body("[{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400, "a body that is not JSON");
    // The documented quirk: a number for `quantity` is accepted.
    let (s, _) = api
        .send_json(
            reqwest::Method::PATCH,
            "/finance/agreements/10/additions/100",
            &json!([{"op": "replace", "path": "quantity", "value": 6}]),
        )
        .await;
    assert_eq!(s, 200);
    // Paths outside the document (count endpoints) still work.
    assert_eq!(api.get("/company/companies/count").await.0, 200);
}

#[tokio::test]
async fn applied_but_unreadable_changes_the_addition_and_answers_non_json() {
    let fake = FakeConnectWise::start(FakeConfig::default()).await;
    seed(&fake);
    let api = Api::new(&fake);
    fake.inject(FaultRule {
        method: Some("PATCH".into()),
        path_contains: Some("/additions/100".into()),
        fault: Fault::AppliedButUnreadable,
        times: 1,
    });
    let r = api
        .req(reqwest::Method::PATCH, "/finance/agreements/10/additions/100")
        .header("Content-Type", "application/json")
        .body(json!([{"op": "replace", "path": "quantity", "value": 42}]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "not JSON: {text}");
    assert_eq!(fake.addition_quantity(100), Some(42), "applied");
    assert_eq!(fake.patch_count(), 1);
    // A refused PATCH under the same fault is answered as usual and changes nothing.
    fake.inject(FaultRule { method: Some("PATCH".into()), path_contains: None, fault: Fault::AppliedButUnreadable, times: 1 });
    let (s, _) = api
        .send_json(
            reqwest::Method::PATCH,
            "/finance/agreements/10/additions/999",
            &json!([{"op": "replace", "path": "quantity", "value": 1}]),
        )
        .await;
    assert_eq!(s, 404);
    assert_eq!(fake.patch_count(), 1);
}

#[tokio::test]
async fn applied_then_hang_changes_the_addition_before_the_client_gives_up() {
    let fake = FakeConnectWise::start(FakeConfig::default()).await;
    seed(&fake);
    let api = Api::new(&fake);
    fake.inject(FaultRule {
        method: Some("PATCH".into()),
        path_contains: Some("/additions/100".into()),
        fault: Fault::AppliedThenHang(Duration::from_secs(30)),
        times: 1,
    });
    let r = api
        .req(reqwest::Method::PATCH, "/finance/agreements/10/additions/100")
        .header("Content-Type", "application/json")
        .body(json!([{"op": "replace", "path": "quantity", "value": 77}]).to_string())
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(r.unwrap_err().is_timeout());
    assert_eq!(fake.addition_quantity(100), Some(77), "the change was made before the hang");
    // The fake notices the hang-up and records the applied request as 499.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.request_count() == 0 {
        assert!(Instant::now() < deadline, "the abandoned request was never recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rec = &fake.requests()[0];
    assert_eq!((rec.status, rec.applied), (499, true));
    assert_eq!(fake.patch_count(), 1);
}

#[tokio::test]
async fn quantity_set_by_hand_is_served() {
    let fake = FakeConnectWise::start(FakeConfig::default()).await;
    seed(&fake);
    fake.set_addition_quantity(100, 9);
    fake.set_addition_quantity(12345, 9); // absent: no-op
    let (_, _, a) = Api::new(&fake).get("/finance/agreements/10/additions/100").await;
    assert_eq!(a["quantity"], 9);
    assert_eq!(fake.patch_count(), 0, "not a PATCH");
}
