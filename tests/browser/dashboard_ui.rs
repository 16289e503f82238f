//! What the dashboard must get right besides its data (issue 16 point 6): times against the
//! server's clock that keep moving, a visible "stale" state when the API stops answering, an empty
//! state per tab, the customer filter by name or external id, UTC or local time, `/` → dashboard;
//! the bulk-retry confirmation (readable while hovered, still armed after a refresh), the push
//! detail as a modal dialog, text contrast of at least 4.5:1 in the light and dark schemes, and a
//! 390 px wide layout that keeps a push's status, quantity and action on screen.
use fantoccini::actions::InputSource;

use super::*;

/// Every visible text (an element with a non-blank text node of its own) whose contrast with what
/// it sits on is below `arguments[1]`, within `arguments[0]` (a selector). The colour a text sits on
/// is its own and its ancestors' backgrounds composited; the text's alpha includes the opacity of
/// its ancestors. (Toasts fading out are skipped.)
const CONTRAST_FAILURES: &str = r#"
const [rootSelector, minimum] = arguments;
const parse = (c) => {
  const m = /rgba?\(([^)]+)\)/.exec(c || '');
  if (!m) return null;
  const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(Number);
  return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
};
const lum = ({ r, g, b }) => {
  const f = (v) => { v /= 255; return v <= 0.04045 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
};
const over = (top, bottom) => ({
  r: top.r * top.a + bottom.r * (1 - top.a), g: top.g * top.a + bottom.g * (1 - top.a), b: top.b * top.a + bottom.b * (1 - top.a), a: 1,
});
const backgroundOf = (el) => {
  const layers = [];
  for (let e = el; e; e = e.parentElement) {
    const bg = parse(getComputedStyle(e).backgroundColor);
    if (bg && bg.a > 0) { layers.push(bg); if (bg.a >= 1) break; }
  }
  let color = { r: 255, g: 255, b: 255, a: 1 };
  for (let i = layers.length - 1; i >= 0; i--) color = over(layers[i], color);
  return color;
};
const failures = [];
let checked = 0;
for (const el of document.querySelector(rootSelector).querySelectorAll('*')) {
  // Toasts fading out are leaving, not being read.
  if (['SCRIPT', 'STYLE', 'OPTION', 'TITLE', 'NOSCRIPT'].includes(el.tagName) || el.closest('svg') || el.closest('.toast-out')) continue;
  const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
  if (!own || !el.getClientRects().length) continue;
  const style = getComputedStyle(el);
  if (style.visibility !== 'visible') continue;
  let opacity = 1;
  for (let e = el; e; e = e.parentElement) opacity *= Number(getComputedStyle(e).opacity);
  const fg = parse(style.color);
  if (!fg) continue;
  const bg = backgroundOf(el);
  const text = over({ ...fg, a: fg.a * opacity }, bg);
  const [hi, lo] = [lum(text), lum(bg)].sort((x, y) => y - x);
  const ratio = (hi + 0.05) / (lo + 0.05);
  checked++;
  if (ratio < minimum) {
    failures.push(`${ratio.toFixed(2)}:1 ${el.tagName.toLowerCase()}.${[...el.classList].join('.')} "${el.textContent.trim().slice(0, 40)}" ${style.color} on rgb(${Math.round(bg.r)}, ${Math.round(bg.g)}, ${Math.round(bg.b)})`);
  }
}
return { checked, failures };
"#;

/// Contrast of all text under `root` is at least 4.5:1 (WCAG AA for body text).
async fn assert_contrast(c: &Client, root: &str, when: &str) -> TestResult {
    let report = js(c, CONTRAST_FAILURES, vec![json!(root), json!(4.5)]).await?;
    let checked = report["checked"].as_u64().unwrap_or(0);
    assert!(checked > 10, "{when}: only {checked} texts checked under {root}");
    assert_eq!(report["failures"], json!([]), "{when}: text below 4.5:1 under {root}");
    eprintln!("contrast ({when}): {checked} texts under {root}, all at least 4.5:1");
    Ok(())
}

fn push_cell(push_id: &str, testid: &str) -> String {
    format!("[data-testid=\"push-row\"][data-push-id=\"{push_id}\"] [data-testid=\"{testid}\"]")
}

async fn empty_text_after_tab(c: &Client, status: &str) -> TestResult<String> {
    click(c, &format!("the {status} tab"), &format!("[data-testid=\"tab-{status}\"]")).await?;
    eventually(&format!("the empty {status} tab"), 10, || async {
        let empty = c.find(Locator::Id("pushes-empty")).await?;
        let rows = c.find_all(Locator::Css("[data-testid=\"push-row\"]")).await?;
        let active = c.find(Locator::Css(&format!("[data-testid=\"tab-{status}\"]"))).await?.attr("aria-selected").await?;
        Ok((rows.is_empty() && active.as_deref() == Some("true") && empty.is_displayed().await?).then_some(()))
    })
    .await?;
    text_of(c, "#pushes-empty").await
}

async fn filter_customer(c: &Client, text: &str) -> TestResult {
    let input = c.find(Locator::Id("filter-customer")).await?;
    input.clear().await?;
    input.send_keys(text).await?;
    click(c, "Apply", "#filter-apply").await
}

async fn visible_row_customers(c: &Client) -> TestResult<Vec<String>> {
    let mut names = Vec::new();
    for cell in c.find_all(Locator::Css("[data-testid=\"push-row\"] .c-customer")).await? {
        names.push(cell.text().await?);
    }
    Ok(names)
}

async fn times_and_states(c: &Client, browser: &BrowserProcesses, app: TestApp, tenant: &str, seeded: &seed::Seeded) -> TestResult {
    // A browser in India, on today's real date; the service's clock is pinned months earlier.
    cdp(c, browser, "Emulation.setTimezoneOverride", json!({"timezoneId": "Asia/Kolkata"})).await?;
    c.goto(&format!("{}/", app.address)).await?;
    let url = c.current_url().await?;
    assert_eq!(url.path(), "/dashboard", "GET / lands on the dashboard");
    sign_in(c, &app.address, &token(tenant, &["operator"]), tenant).await?;
    eventually("a live worker", 20, || async { Ok((text_of(c, "#stat-workers-value").await? == "1").then_some(())) }).await?;

    // Relative to the server's clock: the run started three hours ago there.
    let started = format!("[data-testid=\"run-row\"][data-run-id=\"{}\"] .c-started time", seeded.run);
    assert_eq!(text_of(c, &started).await?, "3 hours ago", "relative to the service's clock, not the browser's");

    // Relative times move on by themselves: a push updated 45 seconds ago, and with Live off (no
    // refresh) its "… seconds ago" becomes "1 minute ago".
    let now = app.sql_now();
    sea_orm::ConnectionTrait::execute_unprepared(
        &app.db,
        &format!("UPDATE pushes SET updated_at = {now} - interval '45 seconds' WHERE id = {}", seeded.succeeded_push_id),
    )
    .await?;
    let updated = push_cell(&seeded.succeeded_push, "push-updated");
    eventually("the refreshed push", 12, || async { Ok(text_of(c, &updated).await?.ends_with("seconds ago").then_some(())) }).await?;
    click(c, "the Live switch", "#auto-refresh").await?;
    eventually("the relative time to move on", 30, || async { Ok((text_of(c, &updated).await? == "1 minute ago").then_some(())) }).await?;
    let since = text_of(c, "#updated").await?;
    assert!(since.starts_with("Updated ") && since.ends_with(" ago"), "{since}");
    click(c, "the Live switch", "#auto-refresh").await?;

    // Each tab says what its emptiness means (an empty tab after an empty tab too).
    assert_eq!(empty_text_after_tab(c, "CANCELLED").await?, "No cancelled pushes yet.");
    assert_eq!(empty_text_after_tab(c, "PENDING").await?, "No pending pushes: nothing is waiting to be sent.");
    assert_eq!(empty_text_after_tab(c, "RUNNING").await?, "No push is being sent right now.");
    click(c, "the ALL tab", "[data-testid=\"tab-ALL\"]").await?;

    // The customer filter takes a name or an external id; several matches offer a choice.
    filter_customer(c, "customer").await?;
    eventually("two customers to choose from", 10, || async {
        Ok((c.find_all(Locator::Css("[data-testid=\"customer-choice\"]")).await?.len() == 2).then_some(()))
    })
    .await?;
    click(c, "Customer One", &format!("[data-testid=\"customer-choice\"][data-customer-id=\"{}\"]", seeded.customer_id)).await?;
    eventually("Customer One's pushes", 10, || async {
        let names = visible_row_customers(c).await?;
        let hash = c.current_url().await?.fragment().unwrap_or_default().to_string();
        Ok((names.len() == 4
            && names.iter().all(|n| n.starts_with("Customer One"))
            && hash.contains(&format!("customer={}", seeded.customer_id)))
        .then_some(()))
    })
    .await?;
    assert_eq!(c.find(Locator::Id("filter-customer")).await?.prop("value").await?.as_deref(), Some("Customer One"));
    filter_customer(c, "ext-2").await?;
    eventually("Customer Two, who has no pushes", 10, || async {
        let value = c.find(Locator::Id("filter-customer")).await?.prop("value").await?;
        Ok((value.as_deref() == Some("Customer Two") && visible_row_customers(c).await?.is_empty()).then_some(()))
    })
    .await?;
    assert_eq!(text_of(c, "#pushes-empty").await?, "No pushes match these filters.");
    filter_customer(c, "nobody-at-all").await?;
    eventually("no match", 10, || async { Ok(css_exists(c, "[data-testid=\"customer-no-match\"]").await?.then_some(())) }).await?;
    click(c, "Clear", "#filter-clear").await?;
    eventually("all pushes again", 10, || async { Ok((visible_row_customers(c).await?.len() == 4).then_some(())) }).await?;

    // UTC or the browser's time: the absolute times follow.
    let title = || async {
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(c.find(Locator::Css(&started)).await?.attr("title").await?.unwrap_or_default())
    };
    assert!(title().await?.ends_with("UTC"), "{}", title().await?);
    click(c, "the time-zone switch", "[data-testid=\"tz-toggle\"]").await?;
    eventually("local times", 10, || async { Ok(title().await?.contains("GMT+5:30").then_some(())) }).await?;
    assert!(text_of(c, "#footnote-tz").await?.contains("GMT+5:30"));
    screenshot(c, "dashboard-local-time.png").await?;
    click(c, "the time-zone switch", "[data-testid=\"tz-toggle\"]").await?;
    eventually("UTC again", 10, || async { Ok(title().await?.ends_with("UTC").then_some(())) }).await?;

    // The API stops answering: the page says so, the figures lose their colour, and "updated"
    // counts from the last answer.
    let muted = js(c, "return getComputedStyle(document.querySelector('.stat-label')).color;", vec![]).await?;
    let workers_colour = || js(c, "return getComputedStyle(document.getElementById('stat-workers-value')).color;", vec![]);
    assert_ne!(workers_colour().await?, muted, "one live worker is shown in colour while the API answers");
    app.shutdown().await;
    eventually("the unreachable banner", 20, || async { Ok(css_exists(c, "[data-testid=\"banner-unreachable\"]").await?.then_some(())) })
        .await?;
    let text = text_of(c, "[data-testid=\"banner-unreachable\"]").await?;
    assert!(text.contains("The API is not answering") && text.contains("got no answer") && text.contains("may be out of date"), "{text}");
    assert!(text_of(c, "#updated").await?.starts_with("Last updated "));
    assert_eq!(workers_colour().await?, muted, "the stale worker count is not green");
    screenshot(c, "dashboard-unreachable.png").await?;
    Ok(())
}

#[tokio::test]
async fn dashboard_times_follow_the_server_tick_and_turn_stale_when_the_api_stops() {
    let Some((driver, chromium)) = browser_tools() else { return };
    let app = spawn_app_with(AppOptions { with_worker: true, ..Default::default() }).await;
    let tenant = "acme-times";
    let seeded = seed::seed_run_with_dead_push(&app, tenant).await;
    app.customer(tenant, "ext-2", "Customer Two", all_licenses()).await;
    let (guard, client) = open_browser(&driver, &chromium).await.expect("start chromedriver and Chromium");
    // The flow stops the app itself (the API going away is what it shows).
    let outcome = times_and_states(&client, &guard, app, tenant, &seeded).await;
    if outcome.is_err() {
        let _ = screenshot(&client, "dashboard-times-failure.png").await;
    }
    let _ = client.close().await;
    drop(guard);
    outcome.expect("the times and states flow");
}

async fn is_armed(c: &Client, selector: &str) -> TestResult<bool> {
    Ok(c.find(Locator::Css(selector)).await?.attr("class").await?.unwrap_or_default().split(' ').any(|k| k == "armed"))
}

async fn in_detail(c: &Client) -> TestResult<bool> {
    Ok(js(c, "return document.getElementById('detail').contains(document.activeElement);", vec![]).await? == json!(true))
}

async fn press(c: &Client, keys: &str) -> TestResult {
    c.active_element().await?.send_keys(keys).await?;
    Ok(())
}

const TAB: &str = "\u{E004}";
const SHIFT_TAB: &str = "\u{E008}\u{E004}";
const ESCAPE: &str = "\u{E00C}";

async fn layout_and_access(c: &Client, browser: &BrowserProcesses, app: &TestApp, tenant: &str, seeded: &seed::Seeded) -> TestResult {
    sign_in(c, &app.address, &token(tenant, &["operator"]), tenant).await?;
    let dead_row = format!("[data-testid=\"push-row\"][data-push-id=\"{}\"]", seeded.dead_push);
    eventually("the dead push", 10, || async { Ok(css_exists(c, &dead_row).await?.then_some(())) }).await?;

    // A phone, 390 px wide: a compact header, no sideways scrolling, and the dead push's status,
    // quantity and retry button on screen.
    cdp(c, browser, "Emulation.setDeviceMetricsOverride", json!({"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": true}))
        .await?;
    eventually("the phone viewport", 10, || async { Ok((js(c, "return window.innerWidth;", vec![]).await? == json!(390)).then_some(())) })
        .await?;
    let layout = js(
        c,
        "const r = (sel) => { const e = document.querySelector(sel); if (!e) return null; const b = e.getBoundingClientRect(); return [b.left, b.right, b.width, b.height]; };
         const row = arguments[0];
         return { header: r('.topbar'), scroll: document.documentElement.scrollWidth,
                  status: r(row + ' [data-testid=\"push-status\"]'), qty: r(row + ' [data-testid=\"push-qty\"]'), retry: r(row + ' [data-testid=\"retry-push\"]') };",
        vec![json!(dead_row)],
    )
    .await?;
    eprintln!("phone layout: {layout}");
    assert!(layout["header"][3].as_f64().is_some_and(|h| h <= 100.0), "the header takes too much height: {layout}");
    assert!(layout["scroll"].as_f64().is_some_and(|w| w <= 390.0), "the page scrolls sideways: {layout}");
    for part in ["status", "qty", "retry"] {
        let [left, right, width] = [0, 1, 2].map(|i| layout[part][i].as_f64().unwrap_or(-1.0));
        assert!(width > 0.0 && left >= 0.0 && right <= 390.0, "{part} is not on screen: {layout}");
    }
    screenshot(c, "dashboard-phone.png").await?;
    assert_contrast(c, "body", "phone, light").await?;
    cdp(c, browser, "Emulation.clearDeviceMetricsOverride", json!({})).await?;

    // The bulk retry arms on the first click; armed, it is readable while hovered, and a refresh
    // that redraws the runs table keeps it armed.
    let bulk = format!("[data-testid=\"retry-run\"][data-run-id=\"{}\"]", seeded.run);
    click(c, "the run's bulk retry", &bulk).await?;
    eventually("the armed confirmation", 10, || async { Ok(is_armed(c, &bulk).await?.then_some(())) }).await?;
    assert_eq!(text_of(c, &bulk).await?, "Confirm: retry 1?");
    let button = c.find(Locator::Css(&bulk)).await?;
    let hover = fantoccini::actions::MouseActions::new("mouse".into()).then(fantoccini::actions::PointerAction::MoveToElement {
        element: button,
        duration: None,
        x: 0.0,
        y: 0.0,
    });
    c.perform_actions(hover).await?;
    let row = format!("[data-testid=\"run-row\"][data-run-id=\"{}\"]", seeded.run);
    assert_contrast(c, &row, "armed bulk retry, hovered").await?;
    let duration_cell = format!("{row} [data-testid=\"run-duration\"]");
    let before = text_of(c, &duration_cell).await?;
    sea_orm::ConnectionTrait::execute_unprepared(
        &app.db,
        &format!("UPDATE sync_runs SET finished_at = finished_at + interval '2 minutes' WHERE id = {}", seeded.run_id),
    )
    .await?;
    eventually("a refresh that redraws the run", 10, || async { Ok((text_of(c, &duration_cell).await? != before).then_some(())) }).await?;
    assert!(is_armed(c, &bulk).await?, "the refresh disarmed the confirmation");
    screenshot(c, "dashboard-armed.png").await?;
    click(c, "the confirmation", &bulk).await?;
    eventually("the bulk retry's toast", 10, || async {
        let toasts = c.find_all(Locator::Css("[data-testid=\"toast\"][data-kind=\"success\"]")).await?;
        let mut found = None;
        for t in toasts {
            let text = t.text().await?;
            if text.contains("queued for retry") {
                found = Some(text);
            }
        }
        Ok(found)
    })
    .await?;

    // The push detail is a modal dialog: focus moves in and stays in; Escape closes it and focus
    // returns to the row.
    let opener = format!("{dead_row} [data-testid=\"push-open\"]");
    click(c, "the push", &opener).await?;
    eventually("the detail", 10, || async { Ok((text_of(c, "#detail-body").await?.contains("Attempts")).then_some(())) }).await?;
    let detail = c.find(Locator::Id("detail")).await?;
    assert_eq!(detail.attr("role").await?.as_deref(), Some("dialog"));
    assert_eq!(detail.attr("aria-modal").await?.as_deref(), Some("true"));
    assert!(in_detail(c).await?, "focus moves into the dialog");
    for i in 0..8 {
        press(c, TAB).await?;
        assert!(in_detail(c).await?, "Tab {i} left the dialog");
    }
    for i in 0..3 {
        press(c, SHIFT_TAB).await?;
        assert!(in_detail(c).await?, "Shift-Tab {i} left the dialog");
    }
    assert_contrast(c, "#detail", "detail, light").await?;
    press(c, ESCAPE).await?;
    eventually("the detail to close", 10, || async { Ok((!c.find(Locator::Id("detail")).await?.is_displayed().await?).then_some(())) })
        .await?;
    let focused = js(c, "const tr = document.activeElement.closest('tr'); return tr ? tr.dataset.pushId : null;", vec![]).await?;
    assert_eq!(focused, json!(seeded.dead_push), "focus returns to the push's row");
    assert_contrast(c, "body", "desktop, light").await?;

    // The dark scheme.
    cdp(c, browser, "Emulation.setEmulatedMedia", json!({"features": [{"name": "prefers-color-scheme", "value": "dark"}]})).await?;
    let background = js(c, "return getComputedStyle(document.body).backgroundColor;", vec![]).await?;
    assert_eq!(background, json!("rgb(14, 17, 32)"), "the dark scheme's background");
    assert_contrast(c, "body", "desktop, dark").await?;
    screenshot(c, "dashboard-dark.png").await?;
    click(c, "the push", &opener).await?;
    eventually("the detail", 10, || async { Ok((text_of(c, "#detail-body").await?.contains("Attempts")).then_some(())) }).await?;
    assert_contrast(c, "#detail", "detail, dark").await?;
    screenshot(c, "dashboard-dark-detail.png").await?;
    press(c, ESCAPE).await?;
    Ok(())
}

#[tokio::test]
async fn dashboard_confirmation_dialog_contrast_dark_scheme_and_phone_layout() {
    let Some((driver, chromium)) = browser_tools() else { return };
    let app = spawn_app().await;
    let tenant = "acme-layout";
    let seeded = seed::seed_run_with_dead_push(&app, tenant).await;
    let (guard, client) = open_browser(&driver, &chromium).await.expect("start chromedriver and Chromium");
    let outcome = layout_and_access(&client, &guard, &app, tenant, &seeded).await;
    if outcome.is_err() {
        let _ = screenshot(&client, "dashboard-layout-failure.png").await;
    }
    let _ = client.close().await;
    drop(guard);
    outcome.expect("the layout and accessibility flow");
    app.shutdown().await;
}
