//! The operator dashboard and GraphiQL in a real browser: headless Chromium driven over WebDriver
//! (`chromedriver`, started here on a free port with a fresh profile). The app runs with its
//! workers in-process and a seeded `DEAD` push; an operator filters to `DEAD`, clicks retry and sees
//! the push leave `DEAD`; a viewer sees the same page without any retry button. `dashboard_ui.rs`:
//! times, states and layout the dashboard must get right; `graphiql.rs`: GraphiQL offline.
//!
//! The browser resolves no host name but 127.0.0.1 (`--host-resolver-rules`): nothing a page asks
//! for can leave the machine, and a page that needs the network shows it by failing.
//!
//! Without `chromium` and `chromedriver` the tests print how to install them and pass — unless
//! `CI` is set, then they fail. Screenshots go to `target/test-output/`.
mod dashboard_ui;
mod graphiql;
mod seed;

use std::{
    future::Future,
    net::TcpListener,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator};
use integration_tests::*;
use serde_json::json;

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The Chromium flags of a quiet, reproducible headless session that reaches nothing but 127.0.0.1.
const CHROMIUM_FLAGS: [&str; 11] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1440,1200",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
];

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()))
}

/// The Chromium executable: `CHROME_BIN`, Debian's real binary (not its wrapper script), or PATH.
fn chromium_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROME_BIN").map(PathBuf::from).filter(|p| p.is_file()) {
        return Some(p);
    }
    let debian = PathBuf::from("/usr/lib/chromium/chromium");
    if debian.is_file() {
        return Some(debian);
    }
    ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|n| on_path(n))
}

/// `Some((chromedriver, chromium))`, or `None` after saying why the test is skipped (panics under CI).
fn browser_tools() -> Option<(PathBuf, PathBuf)> {
    match (on_path("chromedriver"), chromium_binary()) {
        (Some(driver), Some(chromium)) => Some((driver, chromium)),
        _ if std::env::var_os("CI").is_some() => {
            panic!("chromium and chromedriver are required under CI: apt-get install -y chromium chromium-driver")
        }
        _ => {
            eprintln!("skipped: install chromium chromium-driver (apt-get install -y chromium chromium-driver) to run the browser tests");
            None
        }
    }
}

/// `target/test-output/`.
fn output_dir() -> PathBuf {
    // target/<profile>/deps/browser-<hash> → target
    let target = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("test-output");
    std::fs::create_dir_all(&dir).expect("create target/test-output");
    dir
}

/// chromedriver and the Chromium it starts, in their own process group: dropping this kills the
/// whole group (also when the test panics) and removes the throw-away profile. (Chromium's crash
/// handler daemonizes out of the group; it exits by itself once the browser is gone.)
struct BrowserProcesses {
    driver: Child,
    profile: PathBuf,
    /// chromedriver's address (for Chrome DevTools commands through it).
    url: String,
}

impl Drop for BrowserProcesses {
    fn drop(&mut self) {
        let group = -(self.driver.id() as i32);
        // SAFETY: kill(2) with a negative pid signals the process group we created for chromedriver.
        unsafe {
            libc::kill(group, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && matches!(self.driver.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above; whatever ignored SIGTERM (Chromium helpers) goes now.
        unsafe {
            libc::kill(group, libc::SIGKILL);
        }
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Start chromedriver, open a headless Chromium session. The guard must outlive the client.
async fn open_browser(driver: &Path, chromium: &Path) -> TestResult<(BrowserProcesses, Client)> {
    let port = free_port();
    let profile = std::env::temp_dir().join(format!("csync-chromium-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&profile)?;
    let mut cmd = Command::new(driver);
    cmd.arg(format!("--port={port}")).stdin(Stdio::null()).process_group(0);
    if std::env::var_os("TEST_LOG").is_none() {
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
    }
    let url = format!("http://127.0.0.1:{port}");
    let guard = BrowserProcesses { driver: cmd.spawn()?, profile: profile.clone(), url: url.clone() };
    let http = reqwest::Client::new();
    eventually("chromedriver to answer", 15, || async {
        Ok(http.get(format!("{url}/status")).send().await.ok().filter(|r| r.status().is_success()).map(|_| ()))
    })
    .await?;
    let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), json!({"binary": chromium.display().to_string(), "args": args}));
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new()).capabilities(caps).connect(&url).await?;
    Ok((guard, client))
}

/// Poll `f` every 150 ms until it yields `Some`; WebDriver errors (a re-rendered, stale element)
/// count as "not yet". Fails after `secs`.
async fn eventually<T, F, Fut>(what: &str, secs: u64, mut f: F) -> TestResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = TestResult<Option<T>>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last_error = String::new();
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_error = e.to_string(),
        }
        if Instant::now() > deadline {
            return Err(format!("timed out after {secs} s waiting for {what} (last error: {last_error})").into());
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// A Chrome DevTools Protocol command through chromedriver (emulation of a colour scheme, time
/// zone or screen, scripts that run before a page's own).
async fn cdp(c: &Client, browser: &BrowserProcesses, cmd: &str, params: serde_json::Value) -> TestResult<serde_json::Value> {
    let session = c.session_id().await?.ok_or("no WebDriver session")?;
    let res = reqwest::Client::new()
        .post(format!("{}/session/{session}/goog/cdp/execute", browser.url))
        .json(&json!({"cmd": cmd, "params": params}))
        .send()
        .await?;
    let status = res.status();
    let body: serde_json::Value = res.json().await?;
    if !status.is_success() {
        return Err(format!("{cmd}: {body}").into());
    }
    Ok(body["value"].clone())
}

/// Run `script` (a function body; `arguments` are `args`) in the page.
async fn js(c: &Client, script: &str, args: Vec<serde_json::Value>) -> TestResult<serde_json::Value> {
    Ok(c.execute(script, args).await?)
}

async fn css_exists(c: &Client, selector: &str) -> TestResult<bool> {
    Ok(!c.find_all(Locator::Css(selector)).await?.is_empty())
}

async fn text_of(c: &Client, selector: &str) -> TestResult<String> {
    Ok(c.find(Locator::Css(selector)).await?.text().await?)
}

async fn click(c: &Client, what: &str, selector: &str) -> TestResult {
    eventually(what, 10, || async { Ok(c.find(Locator::Css(selector)).await?.click().await.ok()) }).await
}

async fn screenshot(c: &Client, name: &str) -> TestResult<PathBuf> {
    let path = output_dir().join(name);
    std::fs::write(&path, c.screenshot().await?)?;
    eprintln!("screenshot: {}", path.display());
    Ok(path)
}

/// Open the dashboard and sign in with `token`; waits until the tenant shows in the header.
async fn sign_in(c: &Client, address: &str, token: &str, tenant: &str) -> TestResult {
    c.goto(&format!("{address}/dashboard")).await?;
    let input = c.wait().at_most(Duration::from_secs(10)).for_element(Locator::Id("token-input")).await?;
    input.send_keys(token).await?;
    click(c, "the sign-in button", "#token-submit").await?;
    eventually("the header to name the tenant", 10, || async { Ok((text_of(c, "#who-tenant").await? == tenant).then_some(())) }).await
}

/// Filter the push table to `status` and wait until it shows only such rows (at least one).
async fn filter_status(c: &Client, status: &str) -> TestResult {
    click(c, &format!("the {status} tab"), &format!("[data-testid=\"tab-{status}\"]")).await?;
    eventually(&format!("only {status} rows"), 10, || async {
        let rows = c.find_all(Locator::Css("[data-testid=\"push-row\"]")).await?;
        let mut statuses = Vec::new();
        for r in &rows {
            statuses.push(r.attr("data-status").await?.unwrap_or_default());
        }
        Ok((!statuses.is_empty() && statuses.iter().all(|s| s == status)).then_some(()))
    })
    .await
}

async fn push_row_status(c: &Client, push_id: &str) -> TestResult<Option<String>> {
    let rows = c.find_all(Locator::Css(&format!("[data-testid=\"push-row\"][data-push-id=\"{push_id}\"]"))).await?;
    match rows.first() {
        Some(r) => Ok(r.attr("data-status").await?),
        None => Ok(None),
    }
}

async fn operator_retries_a_dead_push(c: &Client, app: &TestApp, tenant: &str, seeded: &seed::Seeded) -> TestResult {
    sign_in(c, &app.address, &token(tenant, &["operator"]), tenant).await?;
    assert!(!c.find(Locator::Id("readonly-badge")).await?.is_displayed().await?, "an operator is not read-only");
    // The in-process worker reports its heartbeat: no warning; the stale mapping is announced.
    eventually("a live worker", 20, || async { Ok((text_of(c, "#stat-workers-value").await? == "1").then_some(())) }).await?;
    assert!(!css_exists(c, "[data-testid=\"banner-no-workers\"]").await?);
    assert!(text_of(c, "[data-testid=\"banner-stale\"]").await?.contains("1 stale mapping"));
    let run_row = text_of(c, &format!("[data-testid=\"run-row\"][data-run-id=\"{}\"]", seeded.run)).await?;
    assert!(run_row.contains(&seeded.period) && run_row.contains("1 dead") && run_row.contains("2 succeeded"), "{run_row}");
    let bulk = text_of(c, &format!("[data-testid=\"retry-run\"][data-run-id=\"{}\"]", seeded.run)).await?;
    assert_eq!(bulk, "Retry 1 failed", "the run offers a bulk retry to an operator");

    filter_status(c, "DEAD").await?;
    assert_eq!(push_row_status(c, &seeded.dead_push).await?.as_deref(), Some("DEAD"));
    // The detail: last error, ticket, the attempt timeline.
    click(c, "the dead push", &format!("[data-testid=\"push-row\"][data-push-id=\"{}\"] [data-testid=\"push-open\"]", seeded.dead_push))
        .await?;
    eventually("the attempt timeline", 10, || async {
        Ok((c.find_all(Locator::Css("[data-testid=\"attempt\"]")).await?.len() == 8).then_some(()))
    })
    .await?;
    assert_eq!(c.find_all(Locator::Css("[data-testid=\"attempt-call\"]")).await?.len(), 16, "a read and a PATCH per attempt");
    let last = text_of(c, "[data-testid=\"attempt\"][data-attempt=\"8\"]").await?;
    assert!(last.contains("ERROR") && last.contains("Patch quantity") && last.contains("HTTP 503") && last.contains("cw-"), "{last}");
    let last_error = text_of(c, "[data-testid=\"detail-last-error\"]").await?;
    assert!(last_error.contains("CW_SERVER_ERROR") && last_error.contains("HTTP 503"), "{last_error}");
    assert!(text_of(c, "[data-testid=\"detail-ticket\"]").await?.contains("7342"));
    assert!(css_exists(c, "[data-testid=\"detail-retry\"]").await?);
    screenshot(c, "dashboard-push-detail.png").await?;
    click(c, "the detail's close button", "[data-testid=\"detail-close\"]").await?;
    screenshot(c, "dashboard.png").await?;

    // Retry from the row; the push leaves DEAD and the worker sends it.
    click(c, "the retry button", &format!("[data-testid=\"retry-push\"][data-push-id=\"{}\"]", seeded.dead_push)).await?;
    eventually("the success toast", 10, || async {
        let toasts = c.find_all(Locator::Css("[data-testid=\"toast\"][data-kind=\"success\"]")).await?;
        Ok((!toasts.is_empty()).then_some(()))
    })
    .await?;
    eventually("the push to leave the DEAD tab", 20, || async { Ok(push_row_status(c, &seeded.dead_push).await?.is_none().then_some(())) })
        .await?;
    click(c, "the ALL tab", "[data-testid=\"tab-ALL\"]").await?;
    let status = eventually("the push to succeed on the page", 30, || async {
        Ok(push_row_status(c, &seeded.dead_push).await?.filter(|s| s == "SUCCEEDED"))
    })
    .await?;
    assert_eq!(status, "SUCCEEDED");
    screenshot(c, "dashboard-after-retry.png").await?;
    // What the page shows is what the API says; the audit names the operator.
    let push = app
        .gql_ok(
            &token(tenant, &["viewer"]),
            "query($id: ID!) { push(id: $id) { status attempts } auditLog(entityType: \"push\", entityId: $id, action: \"push.retried\") { edges { node { actor } } } }",
            json!({"id": seeded.dead_push}),
        )
        .await;
    assert_eq!(push["push"]["status"], "SUCCEEDED", "{push}");
    assert_eq!(push["auditLog"]["edges"][0]["node"]["actor"], format!("user:user-of-{tenant}"));
    Ok(())
}

#[tokio::test]
async fn an_operator_retries_a_dead_push_from_the_dashboard() {
    let Some((driver, chromium)) = browser_tools() else { return };
    let app = spawn_app_with(AppOptions { with_worker: true, ..Default::default() }).await;
    let tenant = "acme-browser";
    let seeded = seed::seed_run_with_dead_push(&app, tenant).await;
    sea_orm::ConnectionTrait::execute_unprepared(
        &app.db,
        &format!("UPDATE product_mappings SET stale = TRUE WHERE id = {}", seeded.mapping_ids[3]),
    )
    .await
    .expect("stale mapping");
    let (guard, client) = open_browser(&driver, &chromium).await.expect("start chromedriver and Chromium");
    let outcome = operator_retries_a_dead_push(&client, &app, tenant, &seeded).await;
    if outcome.is_err() {
        let _ = screenshot(&client, "dashboard-operator-failure.png").await;
    }
    let _ = client.close().await;
    drop(guard);
    outcome.expect("the operator flow");
    app.shutdown().await;
}

async fn viewer_sees_it_read_only(c: &Client, app: &TestApp, tenant: &str, seeded: &seed::Seeded) -> TestResult {
    c.goto(&format!("{}/dashboard", app.address)).await?;
    c.wait().at_most(Duration::from_secs(10)).for_element(Locator::Id("token-input")).await?;
    screenshot(c, "dashboard-sign-in.png").await?;
    sign_in(c, &app.address, &token(tenant, &["viewer"]), tenant).await?;
    eventually("the read-only badge", 10, || async {
        Ok(c.find(Locator::Id("readonly-badge")).await?.is_displayed().await?.then_some(()))
    })
    .await?;
    // No worker runs in this app; the tenant's breaker is open.
    eventually("the no-workers banner", 10, || async { Ok(css_exists(c, "[data-testid=\"banner-no-workers\"]").await?.then_some(())) })
        .await?;
    let broken = text_of(c, "[data-testid=\"banner-connection-broken\"]").await?;
    assert!(broken.contains("ConnectWise connection broken") && broken.contains("invalid API member"), "{broken}");
    filter_status(c, "DEAD").await?;
    assert_eq!(push_row_status(c, &seeded.dead_push).await?.as_deref(), Some("DEAD"));
    screenshot(c, "dashboard-viewer.png").await?;
    assert!(!css_exists(c, "[data-testid=\"retry-push\"]").await?, "no retry button for a viewer");
    assert!(!css_exists(c, "[data-testid=\"retry-run\"]").await?, "no bulk retry for a viewer");
    click(c, "the run's pushes", &format!("[data-testid=\"run-row\"][data-run-id=\"{}\"] .link", seeded.run)).await?;
    eventually("the run filter", 10, || async {
        Ok(c.find(Locator::Id("filter-run")).await?.prop("value").await?.filter(|v| v == &seeded.run))
    })
    .await?;
    assert!(!c.find(Locator::Id("bulk-retry")).await?.is_displayed().await?, "no bulk retry for a viewer");
    click(c, "the dead push", &format!("[data-testid=\"push-row\"][data-push-id=\"{}\"] [data-testid=\"push-open\"]", seeded.dead_push))
        .await?;
    eventually("the detail", 10, || async { Ok((text_of(c, "#detail-body").await?.contains("Read-only")).then_some(())) }).await?;
    assert!(!css_exists(c, "[data-testid=\"detail-retry\"]").await?, "no retry in the detail for a viewer");
    screenshot(c, "dashboard-viewer-detail.png").await?;
    Ok(())
}

#[tokio::test]
async fn a_viewer_sees_the_dashboard_read_only_with_the_broken_connection_banner() {
    let Some((driver, chromium)) = browser_tools() else { return };
    let app = spawn_app().await;
    let tenant = "acme-viewer";
    let seeded = seed::seed_run_with_dead_push(&app, tenant).await;
    sea_orm::ConnectionTrait::execute_unprepared(
        &app.db,
        &format!(
            "UPDATE cw_settings SET breaker_open = TRUE, breaker_reason = 'ConnectWise answered HTTP 401: invalid API member', \
             breaker_opened_at = {now} - interval '20 minutes' WHERE tenant_id = {}",
            seeded.tenant_id,
            now = app.sql_now()
        ),
    )
    .await
    .expect("open the breaker");
    let (guard, client) = open_browser(&driver, &chromium).await.expect("start chromedriver and Chromium");
    let outcome = viewer_sees_it_read_only(&client, &app, tenant, &seeded).await;
    if outcome.is_err() {
        let _ = screenshot(&client, "dashboard-viewer-failure.png").await;
    }
    let _ = client.close().await;
    drop(guard);
    outcome.expect("the viewer flow");
    app.shutdown().await;
}

async fn orphaned_push_offers_no_retry(c: &Client, app: &TestApp, tenant: &str, seeded: &seed::Seeded) -> TestResult {
    sign_in(c, &app.address, &token(tenant, &["operator"]), tenant).await?;
    filter_status(c, "DEAD").await?;
    assert_eq!(push_row_status(c, &seeded.dead_push).await?.as_deref(), Some("DEAD"));
    assert!(
        !css_exists(c, &format!("[data-testid=\"retry-push\"][data-push-id=\"{}\"]", seeded.dead_push)).await?,
        "no Retry for a push whose mapping was removed"
    );
    click(c, "the dead push", &format!("[data-testid=\"push-row\"][data-push-id=\"{}\"] [data-testid=\"push-open\"]", seeded.dead_push))
        .await?;
    let why = eventually("the reason there is no retry", 10, || async {
        Ok(if css_exists(c, "[data-testid=\"detail-not-retryable\"]").await? {
            Some(text_of(c, "[data-testid=\"detail-not-retryable\"]").await?)
        } else {
            None
        })
    })
    .await?;
    assert!(why.contains("mapping was removed"), "{why}");
    assert!(!css_exists(c, "[data-testid=\"detail-retry\"]").await?, "no retry in the detail either");
    screenshot(c, "dashboard-orphaned-push.png").await?;
    Ok(())
}

/// Only the newest push of a mapped addition may write it: once the dead push's mapping is deleted,
/// the dashboard offers no Retry for it (and the API would refuse one with MAPPING_REMOVED).
#[tokio::test]
async fn an_orphaned_dead_push_offers_no_retry() {
    let Some((driver, chromium)) = browser_tools() else { return };
    let app = spawn_app().await;
    let tenant = "acme-orphan";
    let seeded = seed::seed_run_with_dead_push(&app, tenant).await;
    let operator = token(tenant, &["operator"]);
    let dead = app
        .gql_ok(&operator, "query($id: ID!) { push(id: $id) { retryable productMapping { id } } }", json!({"id": seeded.dead_push}))
        .await;
    assert_eq!(dead["push"]["retryable"], true, "{dead}");
    let mapping = dead["push"]["productMapping"]["id"].clone();
    let deleted =
        app.gql_ok(&operator, "mutation($id: ID!) { deleteProductMapping(id: $id) { userErrors { code } } }", json!({"id": mapping})).await;
    assert_eq!(deleted["deleteProductMapping"]["userErrors"], json!([]), "{deleted}");
    let (guard, client) = open_browser(&driver, &chromium).await.expect("start chromedriver and Chromium");
    let outcome = orphaned_push_offers_no_retry(&client, &app, tenant, &seeded).await;
    if outcome.is_err() {
        let _ = screenshot(&client, "dashboard-orphaned-failure.png").await;
    }
    let _ = client.close().await;
    drop(guard);
    outcome.expect("the orphaned push flow");
    let refused =
        app.gql_ok(&operator, "mutation($id: ID!) { retryPush(id: $id) { userErrors { code } } }", json!({"id": seeded.dead_push})).await;
    assert_eq!(refused["retryPush"]["userErrors"][0]["code"], "MAPPING_REMOVED", "{refused}");
    app.shutdown().await;
}
