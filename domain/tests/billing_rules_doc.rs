//! Keeps the numbers of `docs/billing-rules.md` true: every ```billing-example block of that page is
//! run through the functions the sync uses (`UsageMonthStats::from_samples`, `aggregate_month`), and
//! what the page says the month gives must be what they compute.
use std::collections::BTreeMap;

use domain::{IntervalMethod, LicenseWindow, Period, UsageMonthStats, aggregate_month, format_micros, parse_day, parse_micros};

const PAGE: &str = include_str!("../../docs/billing-rules.md");

/// The `key: value` lines of every ```billing-example block, in order.
fn examples(markdown: &str) -> Vec<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut current: Option<Vec<(String, String)>> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim()) {
            (None, "```billing-example") => current = Some(Vec::new()),
            (Some(_), "```") => out.extend(current.take()),
            (Some(block), text) if !text.is_empty() => {
                let (k, v) = text.split_once(':').unwrap_or_else(|| panic!("not `key: value`: {text:?}"));
                block.push((k.trim().to_string(), v.trim().to_string()));
            }
            _ => {}
        }
    }
    assert!(current.is_none(), "an unterminated billing-example block");
    out
}

/// `2026-07-01=10, 2026-07-15=20` → samples in micro-units.
fn samples(list: &str) -> Vec<(chrono::NaiveDate, i64)> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (day, value) = pair.split_once('=').unwrap_or_else(|| panic!("not day=value: {pair:?}"));
            (parse_day(day.trim()).expect("day"), parse_micros(value.trim()).expect("value"))
        })
        .collect()
}

#[test]
fn the_worked_examples_of_the_billing_rules_page_hold() {
    let blocks = examples(PAGE);
    assert!(blocks.len() >= 8, "found {} billing-example blocks", blocks.len());
    for block in blocks {
        let fields: BTreeMap<&str, &str> = block.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let get = |k: &str| *fields.get(k).unwrap_or_else(|| panic!("{k} missing in {block:?}"));
        let method: IntervalMethod = get("method").parse().expect("method");
        let period = Period::parse(get("period")).expect("period");
        let window = LicenseWindow {
            provisioned_on: parse_day(get("provisioned")).expect("provisioned"),
            deprovisioned_on: fields.get("deprovisioned").map(|d| parse_day(d).expect("deprovisioned")),
        };
        // One element per usage: `samples`, or one `samples.<type>` line per storage type (SUM).
        let stats: Vec<UsageMonthStats> = block
            .iter()
            .filter(|(k, _)| k == "samples" || k.starts_with("samples."))
            .map(|(_, list)| UsageMonthStats::from_samples(period, &window, &samples(list)))
            .collect();
        let computed = aggregate_month(method, period, &window, &stats);
        match fields.get("skip") {
            Some(reason) => assert_eq!(computed.map_err(|r| r.as_str()), Err(*reason), "{block:?}"),
            None => {
                let v = computed.unwrap_or_else(|r| panic!("{block:?} was skipped: {r:?}"));
                let shown = (format_micros(v.value_micros), v.quantity.to_string(), v.sample_days.to_string(), v.fallback.to_string());
                let stated =
                    (get("value").to_string(), get("quantity").to_string(), get("sample_days").to_string(), get("fallback").to_string());
                assert_eq!(shown, stated, "docs/billing-rules.md states another result for {block:?}");
            }
        }
    }
}

#[test]
fn the_example_parser_reads_blocks_only() {
    let md = "text\n```billing-example\nmethod: SUM\nsamples:\n```\n```json\n{}\n```\n";
    assert_eq!(examples(md), vec![vec![("method".to_string(), "SUM".to_string()), ("samples".to_string(), String::new())]]);
}
