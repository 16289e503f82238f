//! What a GraphQL request may cost, checked on the parsed document before any validation or
//! execution (the checks are linear in the document; async-graphql's own validation expands
//! fragments once per spread, which nested fragments make exponential).
//!
//! - **Expanded size**: the number of fields the document stands for once every fragment spread is
//!   replaced by its fragment, computed with one memoised size per fragment — so 24 levels of
//!   `fragment Fn on T { ...Fn-1 ...Fn-1 }` (a 1 KB document of 2^24 fields) is refused in
//!   microseconds instead of validated for seconds.
//! - **Aliases and root fields**: the same field many times under different names (`a1: systemStatus
//!   a2: systemStatus …`) multiplies work that the complexity budget does not always see.
//! - **Input strings**: every string that reaches a resolver — an argument literal, a variable's
//!   default or a value in `variables` — is at most [`MAX_INPUT_CHARS`] characters and holds no
//!   control character (a NUL byte cannot be stored by PostgreSQL). One central check instead of one
//!   per field, so a new field cannot forget it; services keep their tighter, per-field limits.
//!
//! Cost of fields that reach PostgreSQL or Redis is the complexity budget's business: the
//! `complexity` attributes use the constants below.
use std::collections::HashMap;

use async_graphql::parser::types::{Directive, ExecutableDocument, OperationType, Selection, SelectionSet};
use async_graphql::{Name, Positioned};
use async_graphql_value::{ConstValue, Value as GqlValue};
use serde_json::Value as JsonValue;

/// Fields a document may expand to (all operations, fragments inlined).
pub const MAX_EXPANDED_FIELDS: u64 = 2_000;
/// Aliased fields in the expanded document.
pub const MAX_ALIASES: u64 = 30;
/// Root fields of one query operation (after expanding fragments at the root).
pub const MAX_ROOT_FIELDS: u64 = 20;
/// Root fields of one mutation: each is a write, executed one after the other.
pub const MAX_MUTATION_ROOT_FIELDS: u64 = 10;
/// Characters of any one input string (services cap most fields far lower, e.g. names at 200).
pub const MAX_INPUT_CHARS: usize = 4_096;

/// Complexity of a root field answered by one indexed PostgreSQL query.
pub const COST_DB_READ: usize = 10;
/// Complexity of a nested field loaded in one batch for the whole page (a DataLoader or the
/// page's read-ahead): small per item, but not free.
pub const COST_BATCHED: usize = 2;
/// Complexity of a nested field that runs its own query per parent (no batching).
pub const COST_DB_PER_PARENT: usize = 10;
/// Complexity of `systemStatus`: several queries of the tenant's rows.
pub const COST_STATUS: usize = 50;
/// Complexity of a mutation that writes (a transaction, audit rows, maybe a queued job).
pub const COST_WRITE: usize = 100;
/// Complexity of a mutation that calls ConnectWise while the caller waits.
pub const COST_CONNECTWISE: usize = 1_000;

/// Expanded size of a selection set (or fragment).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Size {
    /// Every field, at every depth.
    fields: u64,
    /// Fields with an alias.
    aliases: u64,
    /// Fields at the top level of the set (through spreads and inline fragments).
    top: u64,
}

impl Size {
    fn add(self, o: Size) -> Size {
        Size {
            fields: self.fields.saturating_add(o.fields),
            aliases: self.aliases.saturating_add(o.aliases),
            top: self.top.saturating_add(o.top),
        }
    }
}

enum Memo {
    InProgress,
    Done(Size),
}

struct Sizer<'a> {
    doc: &'a ExecutableDocument,
    memo: HashMap<&'a str, Memo>,
}

impl<'a> Sizer<'a> {
    fn set(&mut self, set: &'a SelectionSet) -> Result<Size, String> {
        let mut total = Size::default();
        for item in &set.items {
            let s = match &item.node {
                Selection::Field(f) => {
                    let inner = self.set(&f.node.selection_set.node)?;
                    Size { fields: inner.fields.saturating_add(1), aliases: inner.aliases + u64::from(f.node.alias.is_some()), top: 1 }
                }
                Selection::InlineFragment(i) => self.set(&i.node.selection_set.node)?,
                Selection::FragmentSpread(spread) => self.fragment(spread.node.fragment_name.node.as_str())?,
            };
            total = total.add(s);
        }
        Ok(total)
    }

    fn fragment(&mut self, name: &'a str) -> Result<Size, String> {
        match self.memo.get(name) {
            Some(Memo::Done(s)) => return Ok(*s),
            Some(Memo::InProgress) => return Err(format!("fragment {name} spreads itself (directly or through others)")),
            None => {}
        }
        // An unknown fragment is validation's to report; it adds nothing here.
        let Some(def) = self.doc.fragments.get(name) else { return Ok(Size::default()) };
        self.memo.insert(name, Memo::InProgress);
        let s = self.set(&def.node.selection_set.node)?;
        self.memo.insert(name, Memo::Done(s));
        Ok(s)
    }
}

/// Refuse a document whose expanded size, aliases or root fields are over the limits. Linear in
/// the document's size: each fragment is sized once.
pub fn check_cost(doc: &ExecutableDocument) -> Result<(), String> {
    let mut sizer = Sizer { doc, memo: HashMap::new() };
    let mut total = Size::default();
    for (_, op) in doc.operations.iter() {
        let s = sizer.set(&op.node.selection_set.node)?;
        let max_root = if op.node.ty == OperationType::Mutation { MAX_MUTATION_ROOT_FIELDS } else { MAX_ROOT_FIELDS };
        if s.top > max_root {
            return Err(format!("Query is too complex: {} root fields in one operation (at most {max_root})", s.top));
        }
        total = total.add(s);
    }
    if total.fields > MAX_EXPANDED_FIELDS {
        return Err(format!(
            "Query is too complex: it expands to {} fields (at most {MAX_EXPANDED_FIELDS}; a fragment counts once per spread)",
            total.fields
        ));
    }
    if total.aliases > MAX_ALIASES {
        return Err(format!("Query is too complex: {} aliased fields (at most {MAX_ALIASES})", total.aliases));
    }
    Ok(())
}

/// Why an input string is refused, if it is.
fn string_problem(s: &str) -> Option<String> {
    if s.chars().any(char::is_control) {
        return Some("contains a control character".into());
    }
    if s.len() > MAX_INPUT_CHARS && s.chars().count() > MAX_INPUT_CHARS {
        return Some(format!("is longer than {MAX_INPUT_CHARS} characters"));
    }
    None
}

fn check_gql_value(v: &GqlValue, at: &dyn Fn() -> String) -> Result<(), String> {
    match v {
        GqlValue::String(s) => string_problem(s).map_or(Ok(()), |p| Err(format!("{} {p}", at()))),
        GqlValue::List(items) => items.iter().try_for_each(|i| check_gql_value(i, at)),
        GqlValue::Object(fields) => fields.iter().try_for_each(|(k, v)| check_gql_value(v, &|| format!("{}.{}", at(), k.as_str()))),
        _ => Ok(()),
    }
}

fn check_const_value(v: &ConstValue, at: &str) -> Result<(), String> {
    match v {
        ConstValue::String(s) => string_problem(s).map_or(Ok(()), |p| Err(format!("{at} {p}"))),
        ConstValue::List(items) => items.iter().try_for_each(|i| check_const_value(i, at)),
        ConstValue::Object(fields) => fields.iter().try_for_each(|(k, v)| check_const_value(v, &format!("{at}.{k}"))),
        _ => Ok(()),
    }
}

fn check_directives(ds: &[Positioned<Directive>]) -> Result<(), String> {
    for d in ds {
        for (name, v) in &d.node.arguments {
            check_gql_value(&v.node, &|| format!("argument `{}` of @{}", name.node, d.node.name.node))?;
        }
    }
    Ok(())
}

fn check_set_args(set: &SelectionSet) -> Result<(), String> {
    for item in &set.items {
        match &item.node {
            Selection::Field(f) => {
                for (name, v) in &f.node.arguments {
                    let field: &Name = &f.node.name.node;
                    check_gql_value(&v.node, &|| format!("argument `{}` of `{field}`", name.node))?;
                }
                check_directives(&f.node.directives)?;
                check_set_args(&f.node.selection_set.node)?;
            }
            Selection::InlineFragment(i) => {
                check_directives(&i.node.directives)?;
                check_set_args(&i.node.selection_set.node)?;
            }
            // The fragment's own arguments are checked once, with the fragment.
            Selection::FragmentSpread(s) => check_directives(&s.node.directives)?,
        }
    }
    Ok(())
}

fn check_json(v: &JsonValue, path: &mut String) -> Result<(), String> {
    match v {
        JsonValue::String(s) => string_problem(s).map_or(Ok(()), |p| Err(format!("variable {path} {p}"))),
        JsonValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                check_json(item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        JsonValue::Object(fields) => {
            for (k, item) in fields {
                if let Some(p) = string_problem(k) {
                    return Err(format!("a key of variable {path} {p}"));
                }
                let len = path.len();
                path.push('.');
                path.push_str(k);
                check_json(item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Refuse a request with an input string over [`MAX_INPUT_CHARS`] or holding a control
/// character: in the document's arguments (every operation and fragment), variable defaults, the
/// variables and the operation name.
pub fn check_inputs(doc: &ExecutableDocument, variables: Option<&JsonValue>, operation_name: Option<&str>) -> Result<(), String> {
    if let Some(p) = operation_name.and_then(string_problem) {
        return Err(format!("operationName {p}"));
    }
    for (_, op) in doc.operations.iter() {
        for var in &op.node.variable_definitions {
            if let Some(default) = &var.node.default_value {
                check_const_value(&default.node, &format!("the default of ${}", var.node.name.node))?;
            }
        }
        check_directives(&op.node.directives)?;
        check_set_args(&op.node.selection_set.node)?;
    }
    for fragment in doc.fragments.values() {
        check_directives(&fragment.node.directives)?;
        check_set_args(&fragment.node.selection_set.node)?;
    }
    if let Some(JsonValue::Object(vars)) = variables {
        for (name, v) in vars {
            let mut path = format!("${name}");
            if let Some(p) = string_problem(name) {
                return Err(format!("a variable name {p}"));
            }
            check_json(v, &mut path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::parser::parse_query;
    use serde_json::json;

    /// `levels` fragments, each spreading the previous one twice; the last spread once from `me`.
    pub fn nested_fragments(levels: usize) -> String {
        let mut doc = String::from("fragment F0 on Principal { sub }\n");
        for i in 1..=levels {
            doc.push_str(&format!("fragment F{i} on Principal {{ ...F{p} ...F{p} }}\n", p = i - 1));
        }
        doc.push_str(&format!("{{ me {{ ...F{levels} }} }}"));
        doc
    }

    fn cost(q: &str) -> Result<(), String> {
        check_cost(&parse_query(q).expect("parses"))
    }

    #[test]
    fn nested_fragments_are_sized_without_expanding_them() {
        // 2^10 = 1024 fields: within the budget; 2^11: over it.
        assert!(cost(&nested_fragments(10)).is_ok());
        let e = cost(&nested_fragments(11)).expect_err("2049 fields");
        assert!(e.contains("too complex") && e.contains("2049"), "{e}");
        for levels in [24, 30, 60] {
            let started = std::time::Instant::now();
            let e = cost(&nested_fragments(levels)).expect_err("exponential");
            assert!(e.contains("too complex"), "{e}");
            // Linear: a few microseconds; the bound only catches an accidental expansion.
            assert!(started.elapsed() < std::time::Duration::from_millis(50), "{levels} levels: {:?}", started.elapsed());
        }
    }

    #[test]
    fn fragment_cycles_are_refused_not_followed() {
        let e = cost("fragment A on Principal { ...B } fragment B on Principal { ...A } { me { ...A } }").expect_err("cycle");
        assert!(e.contains("spreads itself"), "{e}");
    }

    #[test]
    fn aliases_and_root_fields_are_capped() {
        let aliased = |n: usize, field: &str| format!("{{ {} }}", (0..n).map(|i| format!("a{i}: {field}")).collect::<Vec<_>>().join(" "));
        assert!(cost(&aliased(20, "me { sub }")).is_ok());
        assert!(cost(&aliased(21, "me { sub }")).expect_err("root").contains("21 root fields"));
        // Aliases below the root count too, and so do fields spread in from fragments.
        let nested = format!("{{ me {{ {} }} }}", (0..31).map(|i| format!("s{i}: sub")).collect::<Vec<_>>().join(" "));
        assert!(cost(&nested).expect_err("aliases").contains("31 aliased"));
        let spread = format!(
            "fragment R on Query {{ {} }} {{ ...R }}",
            (0..21).map(|i| format!("me{i}: me {{ sub }}")).collect::<Vec<_>>().join(" ")
        );
        assert!(cost(&spread).expect_err("root via fragment").contains("21 root fields"));
        let mutation = format!(
            "mutation {{ {} }}",
            (0..11).map(|i| format!("r{i}: refreshConnectWiseCatalog {{ queued }}")).collect::<Vec<_>>().join(" ")
        );
        assert!(cost(&mutation).expect_err("mutation root").contains("at most 10"));
    }

    #[test]
    fn the_reads_of_the_product_fit() {
        let reads = "query($after: String) { customers(first: 50, after: $after) { edges { node { id accountName \
            licenses { productModule edition } productMappings { id usage interval cwAdditionId lastPush { status quantity } } } } \
            pageInfo { hasNextPage endCursor } } }";
        assert!(cost(reads).is_ok());
        // GraphiQL's introspection query (graphql-js `getIntrospectionQuery`).
        let type_ref = "fragment TypeRef on __Type { kind name ofType { kind name ofType { kind name ofType { kind name \
            ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } }";
        let introspection = format!(
            "query IntrospectionQuery {{ __schema {{ queryType {{ name }} mutationType {{ name }} subscriptionType {{ name }} \
             types {{ ...FullType }} directives {{ name description locations args {{ ...InputValue }} }} }} }} \
             fragment FullType on __Type {{ kind name description fields(includeDeprecated: true) {{ name description \
             args {{ ...InputValue }} type {{ ...TypeRef }} isDeprecated deprecationReason }} inputFields {{ ...InputValue }} \
             interfaces {{ ...TypeRef }} enumValues(includeDeprecated: true) {{ name description isDeprecated deprecationReason }} \
             possibleTypes {{ ...TypeRef }} }} \
             fragment InputValue on __InputValue {{ name description type {{ ...TypeRef }} defaultValue }} {type_ref}"
        );
        assert!(cost(&introspection).is_ok());
    }

    fn inputs(q: &str, vars: JsonValue) -> Result<(), String> {
        check_inputs(&parse_query(q).expect("parses"), Some(&vars), None)
    }

    #[test]
    fn input_strings_are_capped_and_free_of_control_characters() {
        assert!(inputs(r#"{ customers(search: "acme") { edges { cursor } } }"#, json!({})).is_ok());
        let e = inputs(r#"{ customers(search: "a\u0000b") { edges { cursor } } }"#, json!({})).expect_err("NUL literal");
        assert!(e.contains("argument `search` of `customers`") && e.contains("control"), "{e}");
        let q = "mutation($i: [CustomerInput!]!) { upsertCustomers(input: $i) { userErrors { code } } }";
        let e = inputs(q, json!({"i": [{"externalId": "e", "accountName": "bad\u{0}name", "licenses": []}]})).expect_err("NUL var");
        assert_eq!(e, "variable $i[0].accountName contains a control character");
        let e = inputs(q, json!({"i": [{"externalId": "x".repeat(MAX_INPUT_CHARS + 1)}]})).expect_err("long");
        assert!(e.contains("longer than 4096"), "{e}");
        assert!(inputs(q, json!({"i": [{"externalId": "é".repeat(MAX_INPUT_CHARS)}]})).is_ok(), "characters, not bytes");
        let e = inputs("query($s: String = \"\\t\") { customers(search: $s) { edges { cursor } } }", json!({})).expect_err("default");
        assert!(e.contains("default of $s"), "{e}");
        let e =
            inputs("fragment F on Query { customers(after: \"\\u0007\") { edges { cursor } } } { ...F }", json!({})).expect_err("fragment");
        assert!(e.contains("after"), "{e}");
        let e = check_inputs(&parse_query("{ me { sub } }").expect("parses"), None, Some("a\u{0}")).expect_err("operation name");
        assert!(e.contains("operationName"), "{e}");
    }
}
