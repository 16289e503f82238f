//! Measurements and the printed tables.
/// Repeated measurements of one quantity.
#[derive(Clone, Debug, Default)]
pub struct Series(pub Vec<f64>);

impl Series {
    pub fn push(&mut self, v: f64) {
        self.0.push(v);
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        v
    }

    pub fn median(&self) -> f64 {
        let v = self.sorted();
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    pub fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }

    pub fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }
}

/// How a scenario is judged.
#[derive(Clone, Debug)]
pub enum Target {
    /// Time, with the largest allowed ratio to the baseline and the smallest allowed throughput
    /// (`units` of work per second).
    Time { max_ratio: Option<f64>, min_rate: Option<f64>, units: f64, unit: &'static str },
    /// Requests per second (at least) with p99 latency (at most, ms).
    Rate { min_rate: f64, max_p99_ms: f64 },
    /// Peak RSS at most this many MiB.
    Memory { max_mib: f64 },
}

/// One line of the main table.
#[derive(Clone, Debug)]
pub struct Row {
    pub scenario: String,
    /// Seconds (time), requests/s (rate) or MiB (memory).
    pub ours: Series,
    pub baseline: Option<Series>,
    pub target: Target,
    /// Per-iteration p99 in ms (rate rows).
    pub p99_ms: Series,
    /// A correctness problem (fails the row whatever the numbers).
    pub error: Option<String>,
}

impl Row {
    pub fn new(scenario: &str, target: Target) -> Row {
        Row { scenario: scenario.into(), ours: Series::default(), baseline: None, target, p99_ms: Series::default(), error: None }
    }

    pub fn ratio(&self) -> Option<f64> {
        let b = self.baseline.as_ref()?.median();
        (b > 0.0).then(|| self.ours.median() / b)
    }

    pub fn target_text(&self) -> String {
        match &self.target {
            Target::Time { max_ratio, min_rate, unit, .. } => {
                let mut parts = Vec::new();
                if let Some(r) = min_rate {
                    parts.push(format!("≥ {} {unit}/s", thousands(*r)));
                }
                if let Some(r) = max_ratio {
                    parts.push(format!("≤ {r}×"));
                }
                parts.join(", ")
            }
            Target::Rate { min_rate, max_p99_ms } => format!("≥ {} req/s, p99 ≤ {max_p99_ms} ms", thousands(*min_rate)),
            Target::Memory { max_mib } => format!("≤ {max_mib} MiB"),
        }
    }

    /// `Some(true)` pass, `Some(false)` fail, `None` not judged (smoke sizes).
    pub fn verdict(&self, judge_targets: bool) -> Option<bool> {
        if self.error.is_some() {
            return Some(false);
        }
        if self.ours.0.is_empty() {
            return Some(false);
        }
        if !judge_targets {
            return None;
        }
        Some(match &self.target {
            Target::Time { max_ratio, min_rate, units, .. } => {
                let ratio_ok = match (max_ratio, self.ratio()) {
                    (Some(max), Some(r)) => r <= *max,
                    (Some(_), None) => false,
                    (None, _) => true,
                };
                let rate_ok = min_rate.is_none_or(|min| units / self.ours.median() >= min);
                ratio_ok && rate_ok
            }
            Target::Rate { min_rate, max_p99_ms } => self.ours.median() >= *min_rate && self.p99_ms.median() <= *max_p99_ms,
            Target::Memory { max_mib } => self.ours.max() <= *max_mib,
        })
    }

    fn fmt_value(&self, v: f64) -> String {
        match self.target {
            Target::Time { .. } => format!("{v:.2} s"),
            Target::Rate { .. } => format!("{} req/s", thousands(v)),
            Target::Memory { .. } => format!("{v:.0} MiB"),
        }
    }
}

/// `1234567.8` → `1,234,568`.
pub fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// The main table, as Markdown (readable on a terminal too).
pub fn table(rows: &[Row], judge_targets: bool) -> String {
    let mut out = String::new();
    out.push_str("| scenario | median | min | max | baseline median | ratio | target | result |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---|---|\n");
    for r in rows {
        let (median, min, max) = if r.ours.0.is_empty() {
            ("—".to_string(), "—".to_string(), "—".to_string())
        } else {
            (r.fmt_value(r.ours.median()), r.fmt_value(r.ours.min()), r.fmt_value(r.ours.max()))
        };
        let baseline = r.baseline.as_ref().filter(|b| !b.0.is_empty()).map(|b| r.fmt_value(b.median())).unwrap_or_else(|| "—".into());
        let ratio = r.ratio().map(|x| format!("{x:.2}×")).unwrap_or_else(|| "—".into());
        let verdict = match r.verdict(judge_targets) {
            Some(true) => "pass".to_string(),
            Some(false) => match &r.error {
                Some(e) => format!("FAIL: {e}"),
                None => "FAIL".to_string(),
            },
            None => "ok (smoke: not judged)".to_string(),
        };
        out.push_str(&format!("| {} | {median} | {min} | {max} | {baseline} | {ratio} | {} | {verdict} |\n", r.scenario, r.target_text()));
    }
    out
}
