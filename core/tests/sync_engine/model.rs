//! Model-based test of the billing ledger: seeded random sequences of operator and worker actions
//! over the real engine, a real database and the fake ConnectWise over HTTP, with the manual clock.
//!
//! Each sequence sets up two customers, then draws actions — ingest (corrections and late days),
//! license changes, runs (full, per customer, dry), job steps (two jobs at a time on PostgreSQL),
//! injected faults (429 with a long `Retry-After`, 5xx, 400, timeouts, unreadable 2xx, a vanished
//! addition), `retryPush`, `retryFailedPushes`, unmap/remap, mapping deletes and reassignments,
//! quantities edited by hand in ConnectWise, reconciliation sweeps — and ends with a fault-free
//! full run driven to completion. After every action the stale flags and input versions are
//! compared with a model of their definition; at the end every mapped addition must hold the
//! quantity `domain::aggregate_month` computes from the model's own copy of the data, no addition
//! received a PATCH while it was unmapped, no two requests overlapped on one addition, and no push
//! got two tickets (nor one without having died).
//!
//! `MODEL_SEQUENCES=n` runs n sequences per backend; `MODEL_SEED=s` replays one sequence. A failure
//! prints its seed and the actions drawn; `MODEL_LOG=1` prints them for passing sequences too.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use domain::{Edition, IntervalMethod as M, LicenseWindow, ProductModule as PM, UsageMetric as U, UsageMonthStats};
use fake_connectwise::{FakeAddition, FakeAgreement, FakeBoard, FakeCompany, FakeConfig, FakeConnectWise, Fault, FaultRule};
use futures::FutureExt;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use sync_core::{
    engine,
    jobs::Job,
    service::{
        self,
        customers::{CustomerInput, LicenseInput},
        mappings::MappingInput,
    },
};

use super::support::{Backend, TestApp, d, period, spawn_with};

const PERIOD: &str = "2026-02";
/// Sequence numbers 1..=ADDITIONS on each customer's agreement.
const ADDITIONS: i64 = 4;
const CUSTOMERS: i64 = 2;
const CW_TIMEOUT_MS: u64 = 300;
const RECONCILE_STALE_S: u64 = 60;
/// Fixed so CI runs the same sequences every time; `MODEL_SEED` picks one of them (or any other).
const BASE_SEED: u64 = 0x5EED_0000;

/// splitmix64: small, seedable, good enough to draw actions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize].clone()
    }
}

fn company_of(c: i64) -> i64 {
    100 * (c + 1)
}
fn agreement_of(c: i64) -> i64 {
    1000 * (c + 1)
}
fn addition_of(c: i64, seq: i64) -> i64 {
    agreement_of(c) + seq
}

fn module_of(usage: U) -> PM {
    if U::EW_STORAGE.contains(&usage) { PM::EnterpriseWorkloads } else { PM::Microsoft365 }
}

/// The model's copy of a customer's inputs.
#[derive(Clone, Debug)]
struct CustomerModel {
    /// Our customer id.
    id: i64,
    external_id: String,
    /// Module → (provisioned, deprovisioned).
    licenses: BTreeMap<&'static str, (NaiveDate, Option<NaiveDate>)>,
    /// (usage, day) → micro-units.
    samples: BTreeMap<(&'static str, NaiveDate), i64>,
}

/// What the model knows of one product mapping.
#[derive(Clone, Debug)]
struct MappingModel {
    /// The input version last seen (an input change must raise it, nothing else may).
    input_version: i64,
    /// An input changed since the last check.
    changed: bool,
    /// The stale flag by its definition.
    stale: bool,
}

struct Sequence<'a> {
    app: &'a TestApp,
    rng: Rng,
    concurrency: usize,
    log: Vec<String>,
    customers: Vec<CustomerModel>,
    mappings: HashMap<i64, MappingModel>,
    /// Pushes already seen reaching ConnectWise (succeeded, or found it holding the quantity).
    landed: HashSet<i64>,
    /// Additions without a mapping, since when.
    unmapped_since: HashMap<i64, Instant>,
    mapped: HashSet<i64>,
    /// Additions removed from the fake, with the quantity they held (restored before the final run).
    vanished: Vec<(i64, i64, i64)>,
}

const DAYS: [u32; 7] = [1, 2, 10, 15, 20, 27, 28];
const PROVISIONED: [&str; 3] = ["2025-12-01", "2026-02-02", "2026-02-10"];
const DEPROVISIONED: [Option<&str>; 3] = [None, Some("2026-02-20"), Some("2026-02-27")];

impl<'a> Sequence<'a> {
    fn note(&mut self, s: String) {
        self.log.push(s);
    }

    fn principal(&self) -> sync_core::auth::Principal {
        self.app.principal()
    }

    // ---------------------------------------------------------------- setup

    async fn setup(&mut self) {
        let app = self.app;
        for c in 0..CUSTOMERS {
            app.fake.add_company(FakeCompany::new(company_of(c), &format!("C{c}"), &format!("Customer {c}")));
            app.fake.add_agreement(FakeAgreement::new(agreement_of(c), &format!("Agreement {c}"), company_of(c)));
            for seq in 1..=ADDITIONS {
                let a = addition_of(c, seq);
                app.fake.add_addition(FakeAddition { sequence_number: seq, ..FakeAddition::new(a, agreement_of(c), a * 10, 0) });
            }
        }
        app.refresh_catalog().await;
        for c in 0..CUSTOMERS {
            let mut licenses = BTreeMap::new();
            for module in [PM::Microsoft365, PM::EnterpriseWorkloads] {
                let prov = d(self.rng.pick(&PROVISIONED));
                let deprov = if self.rng.chance(10) { self.rng.pick(&DEPROVISIONED).map(d) } else { None };
                licenses.insert(module.as_str(), (prov, deprov));
            }
            let model = CustomerModel { id: 0, external_id: format!("cust-{c}"), licenses, samples: BTreeMap::new() };
            let out = service::customers::upsert_customers(&app.db, &self.principal(), vec![customer_input(&model)], app.now())
                .await
                .expect("upsert")
                .expect("customer accepted");
            let id = out[0].id;
            self.customers.push(CustomerModel { id, ..model });
            let r = service::customers::map_customer(&app.db, &self.principal(), &id.to_string(), company_of(c), false, app.now())
                .await
                .expect("map customer");
            assert!(r.is_ok(), "{r:?}");
            self.save_random_mappings(c as usize).await;
            self.check_step().await;
            for _ in 0..2 {
                self.ingest_one(c as usize).await;
            }
        }
        self.note(format!("setup: {:?}", self.customers.iter().map(|c| &c.licenses).collect::<Vec<_>>()));
        self.check_step().await;
    }

    // ---------------------------------------------------------------- actions

    async fn action(&mut self) {
        let roll = self.rng.below(100);
        match roll {
            0..=13 => {
                let c = self.rng.below(CUSTOMERS as u64) as usize;
                let n = 1 + self.rng.below(2);
                for _ in 0..n {
                    self.ingest_one(c).await;
                }
            }
            14..=17 => self.change_license().await,
            18..=31 => self.start_run(None, false).await,
            32..=37 => {
                let c = self.rng.below(CUSTOMERS as u64) as usize;
                self.start_run(Some(c), false).await
            }
            38..=40 => self.start_run(None, true).await,
            41..=64 => {
                let n = 1 + self.rng.below(4) as usize;
                self.step_jobs(n).await;
            }
            65..=76 => self.inject_fault().await,
            77..=81 => self.retry_one().await,
            82..=84 => self.retry_run().await,
            85..=88 => self.unmap_or_remap().await,
            89..=90 => self.delete_mapping().await,
            91..=96 => {
                let c = self.rng.below(CUSTOMERS as u64) as usize;
                self.save_random_mappings(c).await
            }
            97 => self.change_by_hand(),
            _ => self.sweep().await,
        }
        self.check_step().await;
    }

    /// One sample of a random usage: a late day, a correction, or the same value again.
    async fn ingest_one(&mut self, c: usize) {
        let usage = self.rng.pick(&[U::ActiveUsers, U::ActiveUsers, U::CloudStorage, U::LtrStorage, U::EarlyDeleteLtrStorage]);
        let day = NaiveDate::from_ymd_opt(2026, 2, self.rng.pick(&DAYS)).expect("day");
        let units = self.rng.below(30);
        let half = self.rng.chance(30);
        let value = if half { format!("{units}.5") } else { units.to_string() };
        let micros = units as i64 * 1_000_000 + if half { 500_000 } else { 0 };
        let customer = self.customers[c].clone();
        let changed = customer.samples.get(&(usage.as_str(), day)) != Some(&micros);
        self.note(format!("ingest c{c} {usage:?} {day} = {value} (change: {changed})"));
        if changed {
            self.inputs_change(customer.id, module_of(usage), Some(usage)).await;
        }
        let day_s = day.to_string();
        self.app.record(customer.id, module_of(usage), usage, &[(day_s.as_str(), value.as_str())]).await;
        self.customers[c].samples.insert((usage.as_str(), day), micros);
    }

    async fn change_license(&mut self) {
        let c = self.rng.below(CUSTOMERS as u64) as usize;
        let module = self.rng.pick(&[PM::Microsoft365, PM::EnterpriseWorkloads]);
        let prov = d(self.rng.pick(&PROVISIONED));
        let deprov = self.rng.pick(&DEPROVISIONED).map(d);
        let mut customer = self.customers[c].clone();
        let changed = customer.licenses.get(module.as_str()) != Some(&(prov, deprov));
        customer.licenses.insert(module.as_str(), (prov, deprov));
        self.note(format!("license c{c} {module:?} {prov}..{deprov:?} (change: {changed})"));
        if changed {
            self.inputs_change(customer.id, module, None).await;
        }
        let r = service::customers::upsert_customers(&self.app.db, &self.principal(), vec![customer_input(&customer)], self.app.now())
            .await
            .expect("upsert");
        assert!(r.is_ok(), "{r:?}");
        self.customers[c] = customer;
    }

    /// Before an input change is written: by definition it flags every affected mapping that has a
    /// non-dry, non-cancelled push of the period.
    async fn inputs_change(&mut self, customer_id: i64, module: PM, usage: Option<U>) {
        let pushes = self.live_pushes().await;
        for m in self.db_mappings().await {
            let same_usage = |u: U| {
                m.usage == u.as_str()
                    || (m.interval_method == M::Sum.as_str()
                        && U::EW_STORAGE.iter().any(|e| e.as_str() == m.usage)
                        && U::EW_STORAGE.contains(&u))
            };
            let affected = m.customer_id == customer_id && m.product_module == module.as_str() && usage.is_none_or(same_usage);
            if !affected {
                continue;
            }
            let model = self.mappings.get_mut(&m.id).expect("mapping known to the model");
            model.changed = true;
            if pushes.contains(&m.id) {
                model.stale = true;
            }
        }
    }

    async fn start_run(&mut self, customer: Option<usize>, dry_run: bool) {
        let ids = customer.map(|c| vec![self.customers[c].id.to_string()]);
        let r = service::sync::run_monthly_sync(
            &self.app.db,
            self.app.queue.as_ref(),
            &self.principal(),
            period(PERIOD),
            ids,
            dry_run,
            super::support::start_time(),
        )
        .await
        .expect("run");
        self.note(format!("run customer={customer:?} dry={dry_run}: {:?}", r.as_ref().map(|r| r.id).map_err(|e| e[0].code.clone())));
    }

    /// Run up to `n` due jobs (`concurrency` at a time); with none due, move the clock to the next.
    async fn step_jobs(&mut self, n: usize) -> usize {
        let app = self.app;
        let mut ran = 0;
        while ran < n {
            let mut batch = Vec::new();
            while batch.len() < self.concurrency.min(n - ran) {
                match app.queue.pop_due(app.now()) {
                    Some(job) => batch.push(job),
                    None => break,
                }
            }
            if batch.is_empty() {
                match app.queue.earliest() {
                    Some(at) if at > app.now() => {
                        app.clock.set(at);
                        continue;
                    }
                    _ => break,
                }
            }
            ran += batch.len();
            let names: Vec<String> = batch.iter().map(job_name).collect();
            self.note(format!("jobs {names:?}"));
            let results = futures::future::join_all(batch.iter().cloned().map(|job| app.execute(job))).await;
            for (job, r) in batch.iter().zip(results) {
                if let Err(e) = r {
                    panic!("job {job:?} failed: {e}");
                }
            }
        }
        ran
    }

    async fn inject_fault(&mut self) {
        // Mostly the additions that are mapped now: those are the ones pushes write.
        let mapped: Vec<i64> = self.mapped.iter().copied().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        let addition = if !mapped.is_empty() && self.rng.chance(85) {
            self.rng.pick(&mapped)
        } else {
            addition_of(self.rng.below(CUSTOMERS as u64) as i64, 1 + self.rng.below(ADDITIONS as u64) as i64)
        };
        let path = format!("additions/{addition}");
        let method = self.rng.pick(&["GET", "PATCH"]).to_string();
        let kind = self.rng.below(100);
        let (fault, times) = match kind {
            0..=19 => (Fault::RateLimit { retry_after_secs: self.rng.pick(&[30, 90, 400, 900]) }, 1),
            20..=44 => (Fault::Status(self.rng.pick(&[500, 502, 503])), 1 + self.rng.below(3) as usize),
            45..=54 => (Fault::Status(400), 1),
            55..=59 => (Fault::Delay(Duration::from_millis(CW_TIMEOUT_MS + 200)), 1),
            60..=71 => (Fault::AppliedButUnreadable, 1),
            72..=75 => (Fault::AppliedThenHang(Duration::from_millis(CW_TIMEOUT_MS + 200)), 1),
            76..=83 => (Fault::Raw { status: 200, headers: vec![], body: "<html>gateway</html>".into() }, 1),
            _ => {
                if let Some(a) = self.app.fake.addition(addition) {
                    self.note(format!("fault: addition {addition} vanishes (held {})", a.quantity));
                    self.vanished.push((a.agreement_id, addition, a.quantity));
                    self.app.fake.remove_addition(a.agreement_id, addition);
                }
                return;
            }
        };
        // Faults that only make sense on a PATCH.
        let method = if matches!(fault, Fault::AppliedButUnreadable | Fault::AppliedThenHang(_) | Fault::Raw { .. }) {
            "PATCH".to_string()
        } else {
            method
        };
        self.note(format!("fault: {method} {path} {fault:?} ×{times}"));
        self.app.fake.inject(FaultRule { method: Some(method), path_contains: Some(path), fault, times });
    }

    async fn retry_one(&mut self) {
        let pushes = self.all_pushes().await;
        if pushes.is_empty() {
            return;
        }
        let failed: Vec<&entity::push::Model> = pushes.iter().filter(|p| p.status == "DEAD" || p.status == "FAILED_RETRYING").collect();
        let p = if !failed.is_empty() && self.rng.chance(80) {
            failed[self.rng.below(failed.len() as u64) as usize]
        } else {
            &pushes[self.rng.below(pushes.len() as u64) as usize]
        };
        let r = service::sync::retry_push(
            &self.app.db,
            self.app.queue.as_ref(),
            &self.app.settings,
            &self.principal(),
            &p.id.to_string(),
            self.app.now(),
        )
        .await
        .expect("retryPush");
        self.note(format!("retryPush {} ({}): {:?}", p.id, p.status, r.as_ref().map(|p| p.status.clone()).map_err(|e| e[0].code.clone())));
    }

    async fn retry_run(&mut self) {
        let runs = entity::sync_run::Entity::find().order_by_asc(entity::sync_run::Column::Id).all(&self.app.db).await.expect("runs");
        if runs.is_empty() {
            return;
        }
        let run = self.rng.pick(&runs);
        let r = service::sync::retry_failed_pushes(
            &self.app.db,
            self.app.queue.as_ref(),
            &self.app.settings,
            &self.principal(),
            &run.id.to_string(),
            self.app.now(),
        )
        .await
        .expect("retryFailedPushes");
        self.note(format!(
            "retryFailedPushes run {}: {:?}",
            run.id,
            r.as_ref()
                .map(|o| (o.retried.len(), o.skipped_superseded, o.skipped_orphaned, o.skipped_in_flight))
                .map_err(|e| e[0].code.clone())
        ));
    }

    async fn unmap_or_remap(&mut self) {
        let c = self.rng.below(CUSTOMERS as u64) as usize;
        let id = self.customers[c].id;
        let mapped = entity::customer_mapping::Entity::find()
            .filter(entity::customer_mapping::Column::CustomerId.eq(id))
            .one(&self.app.db)
            .await
            .expect("customer mapping")
            .is_some();
        if mapped {
            let r = service::customers::unmap_customer(&self.app.db, &self.principal(), &id.to_string(), true, self.app.now())
                .await
                .expect("unmap");
            self.note(format!("unmap c{c}: {:?}", r.as_ref().map(|_| ()).map_err(|e| e[0].code.clone())));
        } else {
            let r = service::customers::map_customer(
                &self.app.db,
                &self.principal(),
                &id.to_string(),
                company_of(c as i64),
                false,
                self.app.now(),
            )
            .await
            .expect("map");
            self.note(format!("remap c{c}: {:?}", r.as_ref().map(|_| ()).map_err(|e| e[0].code.clone())));
            if r.is_ok() {
                self.save_random_mappings(c).await;
            }
        }
    }

    async fn delete_mapping(&mut self) {
        let mappings = self.db_mappings().await;
        if mappings.is_empty() {
            return;
        }
        let m = self.rng.pick(&mappings);
        let r = service::mappings::delete_product_mapping(&self.app.db, &self.principal(), &m.id.to_string(), self.app.now())
            .await
            .expect("delete");
        self.note(format!("delete mapping {} (addition {}): {:?}", m.id, m.cw_addition_id, r.map_err(|e| e[0].code.clone())));
    }

    /// `saveProductMappings` with a random set: swaps, moves, additions and removals (sometimes a
    /// set the rules refuse, e.g. SUM beside another storage mapping).
    async fn save_random_mappings(&mut self, c: usize) {
        let mut seqs: Vec<i64> = (1..=ADDITIONS).collect();
        for i in (1..seqs.len()).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            seqs.swap(i, j);
        }
        let customer_id = self.customers[c].id.to_string();
        let mut inputs = Vec::new();
        let mut next_seq = seqs.into_iter();
        let mut add = |usage: U, interval: M, seq: i64| {
            inputs.push(MappingInput {
                customer_id: customer_id.clone(),
                product_module: module_of(usage),
                usage,
                interval,
                cw_agreement_id: agreement_of(c as i64),
                cw_sequence_number: seq,
            })
        };
        if self.rng.chance(85) {
            add(U::ActiveUsers, self.rng.pick(&[M::Maximum, M::Average, M::LastDay]), next_seq.next().unwrap_or(1));
        }
        if self.rng.chance(40) {
            add(self.rng.pick(&U::EW_STORAGE), M::Sum, next_seq.next().unwrap_or(2));
            if self.rng.chance(15) {
                add(U::CloudStorage, M::Maximum, next_seq.next().unwrap_or(3));
            }
        } else {
            for usage in [U::CloudStorage, U::LtrStorage] {
                if self.rng.chance(60) {
                    add(usage, self.rng.pick(&[M::Maximum, M::Average, M::LastDay]), next_seq.next().unwrap_or(4));
                }
            }
        }
        let described: Vec<String> = inputs.iter().map(|i| format!("{:?}/{:?}@{}", i.usage, i.interval, i.cw_sequence_number)).collect();
        let r = service::mappings::save_product_mappings(&self.app.db, &self.principal(), &customer_id, inputs, self.app.now())
            .await
            .expect("save mappings");
        self.note(format!("save mappings c{c} {described:?}: {:?}", r.as_ref().map(|_| ()).map_err(|e| e[0].code.clone())));
    }

    /// Somebody edits an addition's quantity in ConnectWise: the final run must put it right.
    fn change_by_hand(&mut self) {
        let mapped: Vec<i64> = self.mapped.iter().copied().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        if mapped.is_empty() {
            return;
        }
        let addition = self.rng.pick(&mapped);
        let quantity = self.rng.below(50) as i64;
        self.note(format!("by hand: addition {addition} set to {quantity}"));
        self.app.fake.set_addition_quantity(addition, quantity);
    }

    async fn sweep(&mut self) {
        let secs = self.rng.pick(&[5, 30, RECONCILE_STALE_S + 1, 5 * RECONCILE_STALE_S]);
        self.app.clock.advance(Duration::from_secs(secs));
        let report = engine::reconcile::reconcile(&self.app.deps).await.expect("sweep");
        self.note(format!("+{secs}s sweep: {report:?}"));
    }

    // ---------------------------------------------------------------- checks

    async fn db_mappings(&self) -> Vec<entity::product_mapping::Model> {
        entity::product_mapping::Entity::find().order_by_asc(entity::product_mapping::Column::Id).all(&self.app.db).await.expect("mappings")
    }

    async fn all_pushes(&self) -> Vec<entity::push::Model> {
        entity::push::Entity::find().order_by_asc(entity::push::Column::Id).all(&self.app.db).await.expect("pushes")
    }

    /// Mappings with a non-dry, non-cancelled push of the period.
    async fn live_pushes(&self) -> HashSet<i64> {
        self.all_pushes()
            .await
            .into_iter()
            .filter(|p| p.period == PERIOD && !p.dry_run && p.status != "CANCELLED")
            .filter_map(|p| p.product_mapping_id)
            .collect()
    }

    /// After every action: input versions and stale flags agree with the model; mapped additions
    /// are tracked; no two requests overlapped on an addition.
    async fn check_step(&mut self) {
        let db = self.db_mappings().await;
        let ids: HashSet<i64> = db.iter().map(|m| m.id).collect();
        self.mappings.retain(|id, _| ids.contains(id));
        // Pushes that reached ConnectWise since the last check clear the flag when no input changed
        // after their snapshot (the versions are constant between two actions).
        let versions: HashMap<i64, i64> = db.iter().map(|m| (m.id, m.input_version)).collect();
        for p in self.all_pushes().await {
            let reached = p.status == "SUCCEEDED" || (p.status == "SKIPPED" && p.skip_reason.as_deref() == Some("UNCHANGED"));
            if !reached || p.dry_run || !self.landed.insert(p.id) {
                continue;
            }
            if let Some(mapping) = p.product_mapping_id
                && let (Some(model), Some(&current)) = (self.mappings.get_mut(&mapping), versions.get(&mapping))
                && p.input_version >= current
            {
                model.stale = false;
            }
        }
        for m in &db {
            match self.mappings.get_mut(&m.id) {
                None => {
                    assert!(!m.stale, "a new mapping is not stale: {m:?}");
                    self.mappings.insert(m.id, MappingModel { input_version: m.input_version, changed: false, stale: false });
                }
                Some(model) => {
                    if model.changed {
                        assert!(
                            m.input_version > model.input_version,
                            "input version of mapping {} did not rise after an input change",
                            m.id
                        );
                    } else {
                        assert_eq!(
                            m.input_version, model.input_version,
                            "input version of mapping {} changed without an input change",
                            m.id
                        );
                    }
                    model.input_version = m.input_version;
                    model.changed = false;
                    assert_eq!(m.stale, model.stale, "stale flag of mapping {} (addition {})", m.id, m.cw_addition_id);
                }
            }
        }
        let mapped: HashSet<i64> = db.iter().map(|m| m.cw_addition_id).collect();
        let now = Instant::now();
        for a in self.mapped.difference(&mapped) {
            self.unmapped_since.insert(*a, now);
        }
        for a in mapped.difference(&self.mapped) {
            if let Some(since) = self.unmapped_since.remove(a) {
                self.assert_no_patch_since(*a, since);
            }
        }
        self.mapped = mapped;
        assert!(self.app.fake.max_concurrent_per_addition() <= 1, "two requests overlapped on one addition");
    }

    fn assert_no_patch_since(&self, addition: i64, since: Instant) {
        let late: Vec<_> = self
            .app
            .fake
            .patches()
            .into_iter()
            .filter(|r| r.path.ends_with(&format!("/additions/{addition}")) && r.started_at >= since)
            .map(|r| (r.status, r.body))
            .collect();
        assert!(late.is_empty(), "addition {addition} was PATCHed after its mapping was removed: {late:?}");
    }

    /// Run every job, moving the clock to each delayed one.
    async fn drain(&mut self) {
        for _ in 0..200 {
            if self.step_jobs(50).await == 0 {
                return;
            }
        }
        panic!("queue never drained");
    }

    async fn runs_running(&self) -> Vec<entity::sync_run::Model> {
        entity::sync_run::Entity::find().filter(entity::sync_run::Column::Status.eq("RUNNING")).all(&self.app.db).await.expect("runs")
    }

    /// Faults off, everything drained, one full run driven to completion; then the end invariants.
    async fn finish(&mut self) {
        let app = self.app;
        app.fake.clear_faults();
        for (agreement, addition, quantity) in std::mem::take(&mut self.vanished) {
            let seq = addition - agreement;
            app.fake.add_addition(FakeAddition { sequence_number: seq, ..FakeAddition::new(addition, agreement, addition * 10, quantity) });
        }
        self.note("final: faults off, drain".into());
        self.drain().await;
        self.check_step().await;
        let running = self.runs_running().await;
        assert!(running.is_empty(), "runs left RUNNING with nothing queued: {running:?}");
        let r = service::sync::run_monthly_sync(
            &app.db,
            app.queue.as_ref(),
            &self.principal(),
            period(PERIOD),
            None,
            false,
            super::support::start_time(),
        )
        .await
        .expect("final run")
        .expect("final run accepted");
        self.note(format!("final run {}", r.id));
        self.drain().await;
        self.check_step().await;
        assert_eq!(app.run(r.id).await.status, "SUCCEEDED", "final run: {:?}", app.pushes(r.id).await);
        for p in app.pushes(r.id).await {
            let ok = p.status == "SUCCEEDED"
                || (p.status == "SKIPPED" && matches!(p.skip_reason.as_deref(), Some("UNCHANGED") | Some("NO_CONSUMPTION")));
            assert!(ok, "final run push: {p:?}");
        }

        // Every mapped addition holds what the domain computes from the model's data.
        let mut checked = 0;
        for m in self.db_mappings().await {
            let customer = self.customers.iter().find(|c| c.id == m.customer_id).expect("customer");
            let expected = expected_value(customer, &m);
            if let Ok(v) = expected {
                checked += 1;
                assert_eq!(
                    app.fake.addition_quantity(m.cw_addition_id),
                    Some(v.quantity),
                    "addition {} of mapping {m:?}",
                    m.cw_addition_id
                );
                assert!(!m.stale, "mapping {} current after the final run", m.id);
            }
        }
        self.note(format!("checked {checked} additions"));
        for (addition, since) in &self.unmapped_since {
            self.assert_no_patch_since(*addition, *since);
        }
        // At most one ticket per push, and only for a push that died (it may have been retried since).
        let mut xrefs: HashMap<String, usize> = HashMap::new();
        for t in app.fake.tickets() {
            *xrefs.entry(t.get("externalXRef").and_then(|x| x.as_str()).unwrap_or_default().to_string()).or_default() += 1;
        }
        assert!(xrefs.values().all(|n| *n == 1), "tickets per push: {xrefs:?}");
        let died: HashSet<String> = app.audit("push.dead").await.into_iter().map(|a| a.entity_id).collect();
        assert!(xrefs.keys().all(|x| died.contains(x)), "tickets {xrefs:?} for pushes that never died ({died:?})");
    }
}

fn job_name(job: &Job) -> String {
    match job {
        Job::AggregateRun(j) => format!("aggregate {}", j.run_id),
        Job::Push(j) => format!("push {}", j.push_id),
        Job::Ticket(j) => format!("ticket {}", j.push_id),
        Job::CatalogRefresh(_) => "catalog".into(),
    }
}

fn customer_input(c: &CustomerModel) -> CustomerInput {
    CustomerInput {
        external_id: c.external_id.clone(),
        account_name: c.external_id.to_uppercase(),
        licenses: c
            .licenses
            .iter()
            .map(|(module, (prov, deprov))| LicenseInput {
                product_module: module.parse().expect("module"),
                edition: Edition::Business,
                provisioned_on: *prov,
                deprovisioned_on: *deprov,
                add_ons: vec![],
            })
            .collect(),
    }
}

/// The monthly value by the domain functions, from the model's copy of the inputs.
fn expected_value(c: &CustomerModel, m: &entity::product_mapping::Model) -> Result<domain::MonthlyValue, domain::SkipReason> {
    let p = period(PERIOD);
    let Some((prov, deprov)) = c.licenses.get(m.product_module.as_str()) else { return Err(domain::SkipReason::NoConsumption) };
    let window = LicenseWindow { provisioned_on: *prov, deprovisioned_on: *deprov };
    let samples_of = |usage: &str| -> Vec<(NaiveDate, i64)> {
        c.samples.iter().filter(|((u, _), _)| *u == usage).map(|((_, day), v)| (*day, *v)).collect()
    };
    let method: M = m.interval_method.parse().map_err(|_| domain::SkipReason::NoConsumption)?;
    let stats: Vec<UsageMonthStats> = if method == M::Sum {
        U::EW_STORAGE
            .iter()
            .map(|u| UsageMonthStats::from_samples(p, &window, &samples_of(u.as_str())))
            .filter(|s| s.latest.is_some())
            .collect()
    } else {
        vec![UsageMonthStats::from_samples(p, &window, &samples_of(&m.usage))]
    };
    domain::aggregate_month(method, p, &window, &stats)
}

async fn reset(app: &mut TestApp) {
    let tables = [
        "push_attempts",
        "tickets",
        "pushes",
        "sync_runs",
        "consumption_samples",
        "product_mappings",
        "customer_mappings",
        "licenses",
        "customers",
        "cw_board_items",
        "cw_boards",
        "cw_additions",
        "cw_agreements",
        "cw_companies",
        "audit_log",
        "catalog_refresh_requests",
        "worker_heartbeats",
        "cw_settings",
    ];
    // DELETE, children first: on these few rows it is much cheaper than TRUNCATE.
    app.exec(&tables.iter().map(|t| format!("DELETE FROM {t};")).collect::<String>()).await;
    app.queue.clear();
    app.clock.set(super::support::start_time());
    app.deps.rate = std::sync::Arc::new(engine::LocalRateLimiter::with_clock(1000, app.clock.clone()));
    app.fake = FakeConnectWise::start(FakeConfig::default()).await;
    app.configure_cw("priv").await;
    app.fake.add_board(FakeBoard::new(1, "Billing"));
}

/// Runs one sequence; returns its actions, with the panic when it failed.
async fn run_sequence(app: &TestApp, seed: u64, concurrency: usize) -> Result<Vec<String>, (Vec<String>, Box<dyn std::any::Any + Send>)> {
    let mut seq = Sequence {
        app,
        rng: Rng(seed),
        concurrency,
        log: Vec::new(),
        customers: Vec::new(),
        mappings: HashMap::new(),
        landed: HashSet::new(),
        unmapped_since: HashMap::new(),
        mapped: HashSet::new(),
        vanished: Vec::new(),
    };
    let result = std::panic::AssertUnwindSafe(async {
        seq.setup().await;
        let len = 6 + seq.rng.below(11);
        for _ in 0..len {
            seq.action().await;
        }
        seq.finish().await;
    })
    .catch_unwind()
    .await;
    match result {
        Ok(()) => Ok(seq.log),
        Err(panic) => Err((seq.log, panic)),
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={v} is not a number")))
}

async fn model_test(backend: Backend, default_sequences: u64, concurrency: usize) {
    let timeout = CW_TIMEOUT_MS.to_string();
    let stale = RECONCILE_STALE_S.to_string();
    let mut app = spawn_with(backend, &[("CW_TIMEOUT_MS", timeout.as_str()), ("RECONCILE_STALE_S", stale.as_str())]).await;
    let seeds: Vec<u64> = match env_u64("MODEL_SEED") {
        Some(seed) => vec![seed],
        None => {
            let n = env_u64("MODEL_SEQUENCES").unwrap_or(default_sequences);
            (0..n).map(|i| BASE_SEED + i).collect()
        }
    };
    let verbose = std::env::var("MODEL_LOG").is_ok();
    for seed in seeds {
        reset(&mut app).await;
        let outcome = run_sequence(&app, seed, concurrency).await;
        if verbose && let Ok(log) = &outcome {
            eprintln!("sequence {seed:#x} on {backend:?}:");
            for line in log {
                eprintln!("  {line}");
            }
        }
        if let Err((log, panic)) = outcome {
            eprintln!("model sequence failed on {backend:?}; replay with MODEL_SEED={seed:#x}. Actions:");
            for line in log {
                eprintln!("  {line}");
            }
            std::panic::resume_unwind(panic);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_billing_ledger_on_postgres() {
    model_test(Backend::Postgres, 200, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_billing_ledger_on_sqlite() {
    model_test(Backend::Sqlite, 30, 1).await;
}
