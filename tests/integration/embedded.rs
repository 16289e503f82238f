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
    syncRuns(first: 10) { edges { node { id dryRun status period counts { total skipped } } } }
    connectWiseSettings { siteUrl hasPrivateKey }
    cwCompanies(first: 100) { edges { node { id status } } }
    cwBoards { id } }";

#[tokio::test]
async fn demo_loads_a_tenant_and_shows_a_dry_run_once() {
    let dir = temp_dir("demo");
    // The demo works on the latest closed month: pin the calendar (July 2026, 31 days).
    let epoch = integration_tests::test_epoch();
    let demo = Embedded::start_with(&dir, &[("CLOCK_START", &epoch.to_rfc3339())], &["--demo"]);
    // The summary is printed once the dry run is done.
    let summary = demo.wait_for("See it at", Duration::from_secs(120));
    let text = summary.join("\n");
    assert!(text.contains("dry run") && text.contains("quantity"), "{text}");
    assert!(text.contains("(last-day fallback)"), "{text}");
    let period = domain::Period::latest_closed(epoch.date_naive()).to_string();
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
    assert_eq!(state["connectWiseSettings"]["hasPrivateKey"], true);
    let runs = state["syncRuns"]["edges"].as_array().expect("runs").clone();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = &runs[0]["node"];
    assert_eq!((run["dryRun"].clone(), run["status"].clone(), run["period"].clone()), (json!(true), json!("SUCCEEDED"), json!(period)));
    assert_eq!(run["counts"]["total"], run["counts"]["skipped"]);
    let pushes = demo
        .gql(
            "query($r: ID) { pushes(syncRunId: $r, first: 100) { edges { node { status skipReason quantity } } } }",
            json!({"r": run["id"]}),
        )
        .await;
    let pushes = pushes["pushes"]["edges"].as_array().expect("pushes").clone();
    assert!(pushes.len() >= 20, "{pushes:?}");
    assert!(
        pushes.iter().all(|p| p["node"]["skipReason"] == "DRY_RUN" && p["node"]["quantity"].as_i64().is_some_and(|q| q > 0)),
        "{pushes:?}"
    );
    assert_eq!(demo.stop(), Some(0));

    // Again (as `api demo`): nothing is duplicated, the same single dry run.
    let again = Embedded::start_with(&dir, &[("CLOCK_START", &epoch.to_rfc3339())], &["demo"]);
    again.wait_for("See it at", Duration::from_secs(120));
    let state_again = again.gql(DEMO_STATE, json!({})).await;
    assert_eq!(state_again, state, "a second --demo changed the demo data");
    assert_eq!(again.stop(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
