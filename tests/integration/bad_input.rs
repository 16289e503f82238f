//! Property test over the consumption inputs as they arrive through GraphQL (issue 7): random,
//! seeded decimal and date strings. Exactly the invalid samples are rejected, each at its index
//! with its code; a rejected batch writes nothing; accepted values round-trip exactly.
use integration_tests::*;
use serde_json::{Value, json};

/// A tiny deterministic generator (no dependency, stable across platforms).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

fn random_value(r: &mut Rng) -> String {
    let digits = |r: &mut Rng, n: u64| (0..n).map(|_| char::from(b'0' + r.below(10) as u8)).collect::<String>();
    match r.below(12) {
        0 => {
            let n = 1 + r.below(10);
            digits(r, n)
        }
        1 => format!(
            "{}.{}",
            {
                let n = 1 + r.below(9);
                digits(r, n)
            },
            {
                let n = 1 + r.below(6);
                digits(r, n)
            }
        ),
        2 => format!(
            "{}.{}",
            {
                let n = 1 + r.below(3);
                digits(r, n)
            },
            {
                let n = 7 + r.below(5);
                digits(r, n)
            }
        ), // > 6 decimals
        3 => format!("-{}", {
            let n = 1 + r.below(4);
            digits(r, n)
        }),
        4 => format!(
            "{}e{}",
            {
                let n = 1 + r.below(3);
                digits(r, n)
            },
            r.below(5)
        ),
        5 => format!(" {}", digits(r, 2)),
        6 => format!("{}.", digits(r, 2)),
        7 => format!(".{}", digits(r, 2)),
        8 => {
            let n = 11 + r.below(30);
            digits(r, n)
        } // too large
        9 => r
            .pick(&["", "NaN", "Infinity", "0x10", "1,5", "½", "١٢", "+1", "00012.500000", "0.000001", "1000000000", "1000000000.000001"])
            .to_string(),
        10 => format!("{}.{}0", digits(r, 3), digits(r, 2)), // trailing zero is fine
        _ => format!("{}", r.below(1_000_000)),
    }
}

fn random_day(r: &mut Rng) -> String {
    match r.below(6) {
        0 => format!("2026-{:02}-{:02}", 1 + r.below(12), 1 + r.below(31)), // includes 2026-02-30, 2026-04-31
        1 => format!("2028-02-{:02}", 27 + r.below(4)),
        2 => r
            .pick(&[
                "2026-2-3",
                "2026-10-1",
                "26-10-01",
                "2026/10/01",
                "2026-10-01T00:00:00Z",
                "",
                "2026-13-01",
                "2026-00-10",
                "9999-12-31",
            ])
            .to_string(),
        _ => format!("2025-{:02}-{:02}", 1 + r.below(12), 1 + r.below(28)),
    }
}

#[tokio::test]
async fn random_consumption_inputs_are_validated_exactly() {
    let app = spawn_app().await;
    let c = app.customer("acme", "ext-1", "One", all_licenses()).await;
    let t = token("acme", &["integration"]);
    let mut rng = Rng(0x5eed_2026_1124);
    let mut accepted_total = 0;
    for batch in 0..40 {
        let mut samples = Vec::new();
        let mut expected_invalid = std::collections::BTreeSet::new();
        let mut seen_days = std::collections::HashSet::new();
        for i in 0..25 {
            let (value, day) = (random_value(&mut rng), random_day(&mut rng));
            let value_ok = domain::parse_micros(&value).is_ok();
            let day_ok = domain::parse_day(&day).is_ok();
            // Keep days unique within a batch so DUPLICATE_SAMPLE does not mix in.
            if day_ok && !seen_days.insert(day.clone()) {
                continue;
            }
            if !value_ok || !day_ok {
                expected_invalid.insert(samples.len());
            }
            let _ = i;
            samples.push((
                json!({"customerId": c, "productModule": "ENDPOINTS", "usage": "ACTIVE_USERS", "day": day, "value": value}),
                value,
                value_ok && day_ok,
            ));
        }
        let body = app
            .gql(
                &t,
                "mutation($s: [ConsumptionSampleInput!]!) { recordConsumption(samples: $s) { result { accepted } userErrors { code field } } }",
                json!({"s": samples.iter().map(|s| s.0.clone()).collect::<Vec<Value>>()}),
            )
            .await;
        assert!(body["errors"].is_null(), "batch {batch}: {body}");
        let errors = body["data"]["recordConsumption"]["userErrors"].as_array().expect("userErrors").clone();
        let got: std::collections::BTreeSet<usize> =
            errors.iter().map(|e| e["field"][1].as_str().and_then(|s| s.parse().ok()).expect("index")).collect();
        assert_eq!(got, expected_invalid, "batch {batch}: {errors:?}");
        for e in &errors {
            assert!(e["code"] == "INVALID_VALUE" || e["code"] == "INVALID_DAY", "{e}");
        }
        if expected_invalid.is_empty() {
            accepted_total += samples.len();
        } else {
            // Atomic: resend only the valid ones; they must be stored exactly.
            let valid: Vec<_> = samples.iter().filter(|s| s.2).collect();
            let body = app
                .gql(
                    &t,
                    "mutation($s: [ConsumptionSampleInput!]!) { recordConsumption(samples: $s) { result { accepted } userErrors { code field } } }",
                    json!({"s": valid.iter().map(|s| s.0.clone()).collect::<Vec<Value>>()}),
                )
                .await;
            assert_eq!(body["data"]["recordConsumption"]["userErrors"], json!([]), "{body}");
            accepted_total += valid.len();
            for s in valid {
                let stored = app
                    .gql_ok(
                        &token("acme", &["viewer"]),
                        "query($c: ID!, $d: Date!) { consumption(customerId: $c, productModule: ENDPOINTS, usage: ACTIVE_USERS, from: $d, to: $d) { value } }",
                        json!({"c": c, "d": s.0["day"]}),
                    )
                    .await;
                let expected = domain::format_micros(domain::parse_micros(&s.1).expect("valid"));
                assert_eq!(stored["consumption"][0]["value"], expected, "value {:?}", s.1);
            }
        }
    }
    assert!(accepted_total > 100, "the generator produced too few valid samples ({accepted_total})");
    app.shutdown().await;
}
