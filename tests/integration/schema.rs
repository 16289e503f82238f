//! `schema.graphql` is exported from the code; this fails when it drifts.
//! Regenerate with `cargo run -p api -- export-schema schema.graphql`.
#[test]
fn schema_graphql_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema.graphql");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let current = api::graphql::sdl();
    if committed != current {
        if std::env::var("UPDATE_SCHEMA").is_ok() {
            std::fs::write(&path, &current).expect("write schema.graphql");
            return;
        }
        panic!(
            "schema.graphql is out of date: run `cargo run -p api -- export-schema schema.graphql` (or UPDATE_SCHEMA=1 cargo test schema)"
        );
    }
}

#[test]
fn spec_names_exist_in_the_schema() {
    let sdl = api::graphql::sdl();
    for name in [
        "me: Principal!",
        "connectWiseSettings: ConnectWiseSettings",
        "customers(",
        "customer(id: ID!): Customer",
        "cwCompanies(",
        "cwAgreements(companyId: Int!): [CwAgreement!]!",
        "cwBoards: [CwBoard!]!",
        "usageOptions(productModule: ProductModule!): [UsageMetric!]!",
        "intervalOptions(productModule: ProductModule!): [IntervalMethod!]!",
        "productMapping(id: ID!): ProductMapping",
        "auditLog(",
        "configureConnectWise(input: ConnectWiseSettingsInput!): ConnectWiseSettingsPayload!",
        "testConnectWiseConnection: ConnectionTestPayload!",
        "setConsumptionSync(enabled: Boolean!): ConnectWiseSettingsPayload!",
        "upsertCustomers(input: [CustomerInput!]!): UpsertCustomersPayload!",
        "mapCustomer(customerId: ID!, cwCompanyId: Int!, unmapProducts: Boolean): CustomerMappingPayload!",
        "unmapCustomer(customerId: ID!, unmapProducts: Boolean): CustomerMappingPayload!",
        "createProductMapping(input: ProductMappingInput!): ProductMappingPayload!",
        "updateProductMapping(id: ID!, input: ProductMappingInput!, expectedVersion: Int!): ProductMappingPayload!",
        "deleteProductMapping(id: ID!): DeleteProductMappingPayload!",
        "saveProductMappings(customerId: ID!, mappings: [ProductMappingInput!]!): SaveProductMappingsPayload!",
        "scalar Date",
        "scalar DateTime",
        "scalar Decimal",
        "scalar JSON",
        "enum ProductModule",
        "MICROSOFT_365",
        "EARLY_DELETE_LTR_STORAGE",
        "enum PushStatus",
        "FAILED_RETRYING",
        "type UserError",
        "field: [String!]",
    ] {
        assert!(sdl.contains(name), "schema lacks {name:?}");
    }
}
