//! The product catalog: modules, usage metrics, interval methods, editions and the matrix of allowed combinations
//! saying which usage metrics and interval methods each module allows.

/// A name that is not one of the contract names of the enum it was parsed as.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown name `{0}`")]
pub struct UnknownName(pub String);

named_enum! {
    /// A product module of the backup service; each customer license is for one module.
    pub enum ProductModule {
        /// Servers, VMs and databases; consumption is storage in GB.
        EnterpriseWorkloads => "ENTERPRISE_WORKLOADS",
        /// Microsoft 365 backup; consumption is users.
        Microsoft365 => "MICROSOFT_365",
        /// Endpoint backup; consumption is users.
        Endpoints => "ENDPOINTS",
        /// Google Workspace backup; consumption is users.
        GoogleWorkspace => "GOOGLE_WORKSPACE",
    }
}

named_enum! {
    /// A measured quantity reported daily for a customer's module.
    pub enum UsageMetric {
        /// Enterprise Workloads cloud storage (GB).
        CloudStorage => "CLOUD_STORAGE",
        /// Enterprise Workloads early-delete long-term-retention storage (GB).
        EarlyDeleteLtrStorage => "EARLY_DELETE_LTR_STORAGE",
        /// Enterprise Workloads long-term-retention storage (GB).
        LtrStorage => "LTR_STORAGE",
        /// Users being backed up.
        ActiveUsers => "ACTIVE_USERS",
        /// Users whose data is preserved after they left.
        PreservedUsers => "PRESERVED_USERS",
    }
}

named_enum! {
    /// How a month of daily samples becomes one monthly value (docs/billing-rules.md).
    pub enum IntervalMethod {
        /// Mean over the counted days with a sample, excluding the provisioning day.
        Average => "AVERAGE",
        /// Largest sample of the month.
        Maximum => "MAXIMUM",
        /// Sample of the month's last day (with fallback to the latest earlier one).
        LastDay => "LAST_DAY",
        /// Sum of the LAST_DAY values of the three Enterprise Workloads storage types.
        Sum => "SUM",
    }
}

named_enum! {
    /// The edition of a license.
    pub enum Edition {
        /// Business edition.
        Business => "BUSINESS",
        /// Enterprise edition.
        Enterprise => "ENTERPRISE",
        /// Elite edition.
        Elite => "ELITE",
    }
}

const EW_USAGE: [UsageMetric; 3] = UsageMetric::EW_STORAGE;
const USER_USAGE: [UsageMetric; 2] = [UsageMetric::ActiveUsers, UsageMetric::PreservedUsers];
const EW_INTERVALS: [IntervalMethod; 4] = IntervalMethod::ALL;
const USER_INTERVALS: [IntervalMethod; 3] = [IntervalMethod::Average, IntervalMethod::Maximum, IntervalMethod::LastDay];

impl ProductModule {
    /// The usage metrics this module allows, in contract order.
    ///
    /// ```
    /// use domain::{ProductModule, UsageMetric};
    /// assert_eq!(ProductModule::Microsoft365.usage_metrics(),
    ///            &[UsageMetric::ActiveUsers, UsageMetric::PreservedUsers]);
    /// ```
    pub fn usage_metrics(self) -> &'static [UsageMetric] {
        match self {
            Self::EnterpriseWorkloads => &EW_USAGE,
            Self::Microsoft365 | Self::Endpoints | Self::GoogleWorkspace => &USER_USAGE,
        }
    }

    /// The interval methods this module allows: `SUM` only for Enterprise Workloads.
    pub fn interval_methods(self) -> &'static [IntervalMethod] {
        match self {
            Self::EnterpriseWorkloads => &EW_INTERVALS,
            Self::Microsoft365 | Self::Endpoints | Self::GoogleWorkspace => &USER_INTERVALS,
        }
    }

    /// Whether `usage` is one of this module's usage metrics.
    pub fn allows_usage(self, usage: UsageMetric) -> bool {
        self.usage_metrics().contains(&usage)
    }

    /// Whether `interval` may be used for this module.
    pub fn allows_interval(self, interval: IntervalMethod) -> bool {
        self.interval_methods().contains(&interval)
    }
}

impl UsageMetric {
    /// The three Enterprise Workloads storage types whose LAST_DAY values `SUM` adds up.
    pub const EW_STORAGE: [UsageMetric; 3] = [UsageMetric::CloudStorage, UsageMetric::EarlyDeleteLtrStorage, UsageMetric::LtrStorage];
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn names_match_the_contract() {
        let modules: Vec<_> = ProductModule::ALL.iter().map(|m| m.as_str()).collect();
        assert_eq!(modules, ["ENTERPRISE_WORKLOADS", "MICROSOFT_365", "ENDPOINTS", "GOOGLE_WORKSPACE"]);
        let usages: Vec<_> = UsageMetric::ALL.iter().map(|m| m.as_str()).collect();
        assert_eq!(usages, ["CLOUD_STORAGE", "EARLY_DELETE_LTR_STORAGE", "LTR_STORAGE", "ACTIVE_USERS", "PRESERVED_USERS"]);
        let intervals: Vec<_> = IntervalMethod::ALL.iter().map(|m| m.as_str()).collect();
        assert_eq!(intervals, ["AVERAGE", "MAXIMUM", "LAST_DAY", "SUM"]);
        let editions: Vec<_> = Edition::ALL.iter().map(|m| m.as_str()).collect();
        assert_eq!(editions, ["BUSINESS", "ENTERPRISE", "ELITE"]);
    }

    #[test]
    fn from_str_display_and_serde_round_trip() {
        fn check<T>(all: &[T])
        where
            T: FromStr<Err = UnknownName>
                + std::fmt::Display
                + std::fmt::Debug
                + PartialEq
                + serde::Serialize
                + serde::de::DeserializeOwned,
        {
            for v in all {
                let name = v.to_string();
                assert_eq!(&T::from_str(&name).unwrap(), v);
                let json = serde_json::to_string(v).unwrap();
                assert_eq!(json, format!("\"{name}\""));
                assert_eq!(&serde_json::from_str::<T>(&json).unwrap(), v);
            }
        }
        check(&ProductModule::ALL);
        check(&UsageMetric::ALL);
        check(&IntervalMethod::ALL);
        check(&Edition::ALL);
    }

    #[test]
    fn unknown_names_are_rejected() {
        assert_eq!(ProductModule::from_str("MICROSOFT365"), Err(UnknownName("MICROSOFT365".into())));
        assert!(ProductModule::from_str("microsoft_365").is_err());
        assert!(IntervalMethod::from_str("").is_err());
        assert!(serde_json::from_str::<ProductModule>("\"MICROSOFT365\"").is_err());
        assert_eq!(UnknownName("X".into()).to_string(), "unknown name `X`", "error has a human message");
    }

    #[test]
    fn usage_matrix_follows_spec_table() {
        use UsageMetric::*;
        let ew = ProductModule::EnterpriseWorkloads;
        assert_eq!(ew.usage_metrics(), &[CloudStorage, EarlyDeleteLtrStorage, LtrStorage]);
        assert_eq!(ew.usage_metrics(), &UsageMetric::EW_STORAGE);
        for m in [ProductModule::Microsoft365, ProductModule::Endpoints, ProductModule::GoogleWorkspace] {
            assert_eq!(m.usage_metrics(), &[ActiveUsers, PreservedUsers]);
            for u in UsageMetric::EW_STORAGE {
                assert!(!m.allows_usage(u));
                assert!(ew.allows_usage(u));
            }
            assert!(m.allows_usage(ActiveUsers) && m.allows_usage(PreservedUsers));
            assert!(!ew.allows_usage(ActiveUsers) && !ew.allows_usage(PreservedUsers));
        }
    }

    #[test]
    fn sum_only_for_enterprise_workloads() {
        for m in ProductModule::ALL {
            for i in [IntervalMethod::Average, IntervalMethod::Maximum, IntervalMethod::LastDay] {
                assert!(m.allows_interval(i));
            }
            assert_eq!(m.allows_interval(IntervalMethod::Sum), m == ProductModule::EnterpriseWorkloads);
        }
        assert_eq!(ProductModule::EnterpriseWorkloads.interval_methods(), &IntervalMethod::ALL);
    }
}
