//! The embedded default with the real `api` binary (issue 5 points 1 and 2): no configuration at all,
//! a SQLite file under `./data` with the job queue in it, generated keys that survive restarts, the
//! printed URLs and token, and `--demo`.
use std::{
    io::{BufRead, BufReader},
    path::Path,
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::config_errors::{ApiProcess, spawn_api, temp_dir};

/// A running embedded `api` and what its banner said (also used by `readme_session`).
pub(crate) struct Embedded {
    pub(crate) process: ApiProcess,
    lines: mpsc::Receiver<String>,
    pub(crate) graphql: String,
    pub(crate) token: String,
    pub(crate) banner: Vec<String>,
    ready_after: Duration,
}

impl Embedded {
    /// Start `api` in `dir` with no configuration but a free port, and wait for its banner.
    fn start(dir: &Path, args: &[&str]) -> Embedded {
        Self::start_with(dir, &[], args)
    }

    /// [`Embedded::start`] with extra environment variables.
    pub(crate) fn start_with(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Embedded {
        let started = Instant::now();
        let env: Vec<(&str, &str)> = [("BIND_ADDR", "127.0.0.1:0")].into_iter().chain(env.iter().copied()).collect();
        let mut process = spawn_api(dir, &env, args);
        let stdout = process.0.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut e =
            Embedded { process, lines, graphql: String::new(), token: String::new(), banner: Vec::new(), ready_after: Duration::ZERO };
        let mut token_next = false;
        e.wait_for_line(Duration::from_secs(60), |line, banner| {
            banner.push(line.to_string());
            if token_next {
                token_next = false;
                return Some(("token", line.trim().to_string()));
            }
            if line.contains("Dev token") {
                token_next = true;
            }
            line.trim().strip_prefix("GraphiQL:").map(|url| ("graphql", url.trim().to_string()))
        });
        e.ready_after = started.elapsed();
        assert!(e.graphql.starts_with("http://127.0.0.1:") && e.graphql.ends_with("/graphql"), "{:?}", e.banner);
        assert!(e.banner.iter().any(|l| l.contains("Dashboard:") && l.contains("/dashboard")), "{:?}", e.banner);
        assert!(e.token.split('.').count() == 3, "no token in {:?}", e.banner);
        e
    }

    /// Read stdout until `f` has produced both the GraphiQL URL and the token.
    fn wait_for_line(&mut self, within: Duration, mut f: impl FnMut(&str, &mut Vec<String>) -> Option<(&'static str, String)>) {
        let deadline = Instant::now() + within;
        while self.graphql.is_empty() || self.token.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| panic!("no banner within {within:?}; got {:?}", self.banner));
            match f(&line, &mut self.banner) {
                Some(("graphql", v)) => self.graphql = v,
                Some((_, v)) => self.token = v,
                None => {}
            }
        }
    }

    /// Wait for a stdout line containing `text`.
    pub(crate) fn wait_for(&self, text: &str, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = line.contains(text);
                    seen.push(line);
                    if done {
                        return seen;
                    }
                }
                Err(_) => panic!("no line with {text:?} within {within:?}; got {seen:?}"),
            }
        }
    }

    pub(crate) async fn gql(&self, query: &str, variables: Value) -> Value {
        let body: Value = reqwest::Client::new()
            .post(&self.graphql)
            .bearer_auth(&self.token)
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json");
        assert!(body.get("errors").is_none(), "{body}");
        body["data"].clone()
    }

    /// SIGTERM, and the exit code of the graceful shutdown.
    pub(crate) fn stop(mut self) -> Option<i32> {
        let pid = self.process.0.id().to_string();
        let _ = std::process::Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(45);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.process.0.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

#[tokio::test]
async fn the_embedded_default_needs_no_configuration_and_keeps_its_data() {
    let dir = temp_dir("embedded");
    let first = Embedded::start(&dir, &[]);
    let data = dir.join("data");
    assert!(data.join("consumption-sync.db").is_file());
    assert_eq!(mode(&data), 0o700, "the data directory is private");
    assert_eq!(mode(&data.join("jwt-secret")), 0o600);
    assert_eq!(mode(&data.join("secrets-key")), 0o600);
    assert!(first.banner.iter().any(|l| l.contains("Generated:") && l.contains("jwt-secret")), "{:?}", first.banner);
    eprintln!("embedded default: first start ready after {:?} (process start to banner)", first.ready_after);
    let me = first.gql("{ me { sub tenantId roles } }", json!({})).await;
    assert_eq!(me["me"], json!({"sub": "dev-admin", "tenantId": "demo", "roles": ["admin"]}));
    // Write something: a customer (admin may ingest).
    let d = first
        .gql(
            "mutation($c: [CustomerInput!]!) { upsertCustomers(input: $c) { customers { id } userErrors { code } } }",
            json!({"c": [{"externalId": "acct-1", "accountName": "Acme Corp", "licenses": [{"productModule": "MICROSOFT_365", "edition": "BUSINESS", "provisionedOn": "2026-01-01"}]}]}),
        )
        .await;
    assert_eq!(d["upsertCustomers"]["userErrors"], json!([]), "{d}");
    let health = reqwest::get(first.graphql.replace("/graphql", "/readyz")).await.expect("readyz");
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.expect("json"), json!({"database": "ok", "queue": "ok"}));
    let old_token = first.token.clone();
    let secret = std::fs::read_to_string(data.join("jwt-secret")).expect("secret");
    let key = std::fs::read_to_string(data.join("secrets-key")).expect("key");
    assert_eq!(first.stop(), Some(0), "graceful shutdown");

    // Restart: same keys (the old token still works), same data, no new key files.
    let mut second = Embedded::start(&dir, &[]);
    eprintln!("embedded default: restart ready after {:?}", second.ready_after);
    assert!(!second.banner.iter().any(|l| l.contains("Generated:")), "{:?}", second.banner);
    assert_eq!(std::fs::read_to_string(data.join("jwt-secret")).expect("secret"), secret);
    assert_eq!(std::fs::read_to_string(data.join("secrets-key")).expect("key"), key);
    second.token = old_token;
    let c = second.gql("{ customers(first: 10) { edges { node { accountName licenses { productModule } } } } }", json!({})).await;
    assert_eq!(c["customers"]["edges"][0]["node"]["accountName"], "Acme Corp", "{c}");
    assert_eq!(second.stop(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

const DEMO_STATE: &str =
    "{ customers(first: 100) { edges { node { accountName licenses { productModule edition addOns } productMappings { interval } } } }
    connectWiseSettings { siteUrl codebase hasPrivateKey consumptionSyncEnabled }
    cwCompanies(first: 100) { edges { node { id status } } }
    cwBoards { id } }";

const RUNS: &str = "{ syncRuns(first: 4) { edges { node { id trigger dryRun status period customerIds
    pushes(first: 30) { edges { node { status skipReason attempts quantity ticketId heldQuantity driftFromQuantity lastErrorCode cwAdditionId
      customer { accountName } attemptHistory { step httpStatus outcome } } } } } } } }";

/// The demo's addition ids (agreement `company + 1000`, addition `agreement × 10 + sequence`).
const FLAKY: i64 = 20012; // Northwind, cloud storage: 503 twice
const VANISHED: i64 = 20043; // Tailspin, Google Workspace users: deleted in the sandbox
const DRIFTED: i64 = 20102; // Coho, Google Workspace users: edited by hand after the first run

fn runs_of(state: &Value) -> Vec<Value> {
    state["syncRuns"]["edges"].as_array().expect("runs").iter().map(|e| e["node"].clone()).collect()
}

fn pushes_of(run: &Value) -> Vec<Value> {
    run["pushes"]["edges"].as_array().expect("pushes").iter().map(|e| e["node"].clone()).collect()
}

fn push_of(pushes: &[Value], addition: i64) -> Value {
    pushes.iter().find(|p| p["cwAdditionId"] == addition).cloned().unwrap_or_else(|| panic!("no push of {addition} in {pushes:?}"))
}

/// The first start's month, as the API shows it: a manual run for Coho alone, then the monthly run
/// with every state — most succeed, one after two 503s, one `DEAD` with a ticket, one drift.
fn assert_the_month_was_played(state: &Value, period: &str) {
    let runs = runs_of(state);
    assert_eq!(runs.len(), 2, "{runs:#?}");
    assert!(runs.iter().all(|r| r["dryRun"] == false && r["period"] == period), "{runs:#?}");
    let monthly = runs.iter().find(|r| r["trigger"] == "SCHEDULED").expect("the monthly run");
    let first = runs.iter().find(|r| r["trigger"] != "SCHEDULED").expect("the first run");
    // The dead push makes the monthly run partially failed.
    assert_eq!((first["status"].as_str(), monthly["status"].as_str()), (Some("SUCCEEDED"), Some("PARTIALLY_FAILED")), "{runs:#?}");
    assert_eq!(first["customerIds"].as_array().map(Vec::len), Some(1), "{first}");
    let first_pushes = pushes_of(first);
    assert!(first_pushes.iter().all(|p| p["status"] == "SUCCEEDED" && p["customer"]["accountName"] == "Coho Winery"), "{first_pushes:?}");
    let set_first = push_of(&first_pushes, DRIFTED)["quantity"].as_i64().expect("quantity");

    let pushes = pushes_of(monthly);
    assert!(pushes.len() >= 20, "{pushes:?}");
    let flaky = push_of(&pushes, FLAKY);
    assert_eq!((flaky["status"].as_str(), flaky["attempts"].as_i64()), (Some("SUCCEEDED"), Some(3)), "{flaky}");
    let statuses: Vec<Option<i64>> =
        flaky["attemptHistory"].as_array().expect("history").iter().map(|c| c["httpStatus"].as_i64()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == Some(503)).count(), 2, "two 503s, then the calls that worked: {flaky}");
    assert_eq!(statuses.last(), Some(&Some(200)), "{flaky}");

    let vanished = push_of(&pushes, VANISHED);
    assert_eq!((vanished["status"].as_str(), vanished["lastErrorCode"].as_str()), (Some("DEAD"), Some("ADDITION_NOT_FOUND")), "{vanished}");
    assert!(vanished["ticketId"].as_i64().is_some(), "a ticket in the sandbox: {vanished}");

    let drifted = push_of(&pushes, DRIFTED);
    assert_eq!(drifted["status"], "SUCCEEDED", "{drifted}");
    assert_eq!(drifted["driftFromQuantity"].as_i64(), Some(set_first + 7), "the hand edit is recorded as drift: {drifted}");
    assert_eq!(drifted["quantity"].as_i64(), Some(set_first), "{drifted}");

    let others: Vec<&Value> =
        pushes.iter().filter(|p| ![FLAKY, VANISHED, DRIFTED].contains(&p["cwAdditionId"].as_i64().unwrap_or(0))).collect();
    for p in &others {
        // Coho's other addition still holds what the first run set: unchanged, nothing written.
        let unchanged_coho = p["status"] == "SKIPPED" && p["skipReason"] == "UNCHANGED" && p["customer"]["accountName"] == "Coho Winery";
        assert!(p["status"] == "SUCCEEDED" || unchanged_coho, "{p}");
    }
}

#[tokio::test]
async fn demo_pushes_the_month_to_its_sandbox_and_starts_over_with_reset() {
    let dir = temp_dir("demo");
    // The demo works on the latest closed month: pin the calendar (July 2026, 31 days).
    let epoch = integration_tests::test_epoch();
    let clock = [("CLOCK_START", epoch.to_rfc3339())];
    let clock: Vec<(&str, &str)> = clock.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let period = domain::Period::latest_closed(epoch.date_naive()).to_string();

    let demo = Embedded::start_with(&dir, &clock, &["--demo"]);
    let sandbox_line = demo.banner.iter().find(|l| l.contains("ConnectWise sandbox:")).cloned().unwrap_or_default();
    assert!(sandbox_line.contains("http://connectwise-sandbox.localhost:"), "{:?}", demo.banner);
    // The summary is printed once the month has been played.
    let summary = demo.wait_for("See it at", Duration::from_secs(240)).join("\n");
    assert!(
        summary.contains("sandbox ConnectWise") && summary.contains("drift: ConnectWise held") && summary.contains("ticket #"),
        "{summary}"
    );
    let state = demo.gql(DEMO_STATE, json!({})).await;
    let customers = state["customers"]["edges"].as_array().expect("customers").clone();
    assert_eq!(customers.len(), 12, "{state}");
    let all = serde_json::to_string(&customers).expect("json");
    for needle in
        ["ENTERPRISE_WORKLOADS", "MICROSOFT_365", "ENDPOINTS", "GOOGLE_WORKSPACE", "BUSINESS", "ENTERPRISE", "ELITE", "High Storage Tier"]
    {
        assert!(all.contains(needle), "no {needle} among the customers");
    }
    for interval in ["AVERAGE", "MAXIMUM", "LAST_DAY", "SUM"] {
        assert!(all.contains(&format!("\"interval\":\"{interval}\"")), "no {interval} mapping");
    }
    assert_eq!(state["cwCompanies"]["edges"].as_array().map(Vec::len), Some(12));
    assert_eq!(state["cwBoards"].as_array().map(Vec::len), Some(1));
    let cw = &state["connectWiseSettings"];
    let site = cw["siteUrl"].as_str().expect("siteUrl").to_string();
    assert!(sandbox_line.contains(&site) && site.starts_with("http://connectwise-sandbox.localhost:"), "{cw}");
    assert_eq!((cw["codebase"].as_str(), cw["hasPrivateKey"].as_bool()), (Some("sandbox"), Some(true)), "{cw}");
    assert_eq!(cw["consumptionSyncEnabled"], true, "the demo keeps consumption sync on: {cw}");
    let played = demo.gql(RUNS, json!({})).await;
    assert_the_month_was_played(&played, &period);
    assert_eq!(demo.stop(), Some(0));

    // Again (as `api demo`): nothing is duplicated or played twice; the sandbox has a new port.
    let again = Embedded::start_with(&dir, &clock, &["demo"]);
    again.wait_for("See it at", Duration::from_secs(240));
    let mut state_again = again.gql(DEMO_STATE, json!({})).await;
    let site_again = state_again["connectWiseSettings"]["siteUrl"].as_str().expect("siteUrl").to_string();
    assert!(site_again.starts_with("http://connectwise-sandbox.localhost:"), "{site_again}");
    state_again["connectWiseSettings"]["siteUrl"] = json!(site);
    assert_eq!(state_again, state, "a second --demo changed the demo data");
    let runs_again = again.gql(RUNS, json!({})).await;
    assert_eq!(runs_of(&runs_again).len(), 2, "the month is played once");
    assert_eq!(again.stop(), Some(0));

    // Pointed at another ConnectWise, the tenant no longer uses the sandbox: its calls go there, and
    // a later --demo leaves it alone. (CW_ALLOW_HTTP: the other one is a fake on loopback too.)
    // The default fake accepts the clientId the engine sends without CW_CLIENT_ID.
    let other = fake_connectwise::FakeConnectWise::start(fake_connectwise::FakeConfig::default()).await;
    let mut env = clock.clone();
    env.push(("CW_ALLOW_HTTP", "true"));
    let third = Embedded::start_with(&dir, &env, &["--demo"]);
    third.wait_for("See it at", Duration::from_secs(240));
    let configured = third
        .gql(
            "mutation($i: ConnectWiseSettingsInput!) { configureConnectWise(input: $i) { settings { siteUrl codebase } userErrors { code message } } }",
            json!({"i": {"siteUrl": other.site_url(), "companyId": "msp", "publicKey": "pub", "privateKey": "priv", "codebase": "v4_6_release",
                         "ticketBoardId": 1, "ticketTeamId": 11, "ticketStatusId": 11}}),
        )
        .await;
    assert_eq!(configured["configureConnectWise"]["userErrors"], json!([]), "{configured}");
    let customer = third.gql("{ customers(first: 1, search: \"Northwind\") { edges { node { id } } } }", json!({})).await;
    let customer = customer["customers"]["edges"][0]["node"]["id"].clone();
    let run = third
        .gql(
            "mutation($p: Period!, $ids: [ID!]) { runMonthlySync(period: $p, customerIds: $ids) { syncRun { id } userErrors { code message } } }",
            json!({"p": period, "ids": [customer]}),
        )
        .await;
    assert_eq!(run["runMonthlySync"]["userErrors"], json!([]), "{run}");
    let run_id = run["runMonthlySync"]["syncRun"]["id"].clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let r = third.gql("query($id: ID!) { syncRun(id: $id) { status } }", json!({"id": run_id})).await;
        if r["syncRun"]["status"] != "RUNNING" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the run did not end: {r}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        other.requests().iter().any(|r| r.path.starts_with("/finance/agreements/2001/additions/")),
        "the run's calls went to the configured ConnectWise: {:?}",
        other.requests().iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    assert_eq!(third.stop(), Some(0));
    let requests_before = other.request_count();
    let fourth = Embedded::start_with(&dir, &clock, &["--demo"]);
    let left_alone = fourth.wait_for("See it at", Duration::from_secs(240)).join("\n");
    assert!(left_alone.contains("not to the sandbox"), "{left_alone}");
    let settings = fourth.gql("{ connectWiseSettings { siteUrl } }", json!({})).await;
    assert_eq!(settings["connectWiseSettings"]["siteUrl"], other.site_url(), "{settings}");
    assert_eq!(runs_of(&fourth.gql(RUNS, json!({})).await).len(), 3, "no demo run against another ConnectWise");
    assert_eq!(other.request_count(), requests_before, "the demo called the user's ConnectWise");
    assert_eq!(fourth.stop(), Some(0));

    // `api demo --reset`: the demo tenant is deleted and played again from the start, on the sandbox.
    let reset = Embedded::start_with(&dir, &clock, &["demo", "--reset"]);
    assert!(reset.banner.iter().any(|l| l.contains("Demo reset")), "{:?}", reset.banner);
    reset.wait_for("See it at", Duration::from_secs(240));
    let state_reset = reset.gql(DEMO_STATE, json!({})).await;
    assert!(state_reset["connectWiseSettings"]["siteUrl"].as_str().is_some_and(|s| s.starts_with("http://connectwise-sandbox.localhost:")));
    assert_eq!(state_reset["customers"]["edges"].as_array().map(Vec::len), Some(12));
    assert_the_month_was_played(&reset.gql(RUNS, json!({})).await, &period);
    assert_eq!(reset.stop(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
