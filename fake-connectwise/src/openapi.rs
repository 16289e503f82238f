//! ConnectWise's official OpenAPI document (the subset this product calls, embedded verbatim from
//! `openapi/connectwise-subset.yaml`) and validation of requests and responses against it.
//!
//! The document is parsed with `openapiv3`; every schema is translated from OpenAPI 3.0 to JSON
//! Schema 2020-12 and validated with `jsonschema`:
//! * `nullable: true` becomes `type: [T, "null"]` (and adds `null` to an `enum`);
//! * `format: int32`/`int64` becomes the integer range it names (JSON Schema has no such format);
//! * `$ref: '#/components/schemas/X'` resolves inside a root that carries the translated components.
//!
//! One documented exception: `PatchOperation.value` is declared `type: object`, yet ConnectWise
//! accepts a JSON number for `quantity` (what its own UI sends), so a number `value` of a
//! `quantity` operation is not a violation.

use std::fmt;
use std::sync::OnceLock;

use openapiv3::{OpenAPI, Parameter, ParameterSchemaOrContent, ReferenceOr, StatusCode};
use serde_json::{Value, json};

/// The embedded document (verbatim subset, version 2025.8).
pub const DOCUMENT: &str = include_str!("../openapi/connectwise-subset.yaml");

/// The media type ConnectWise answers with (the document's response content key).
pub const MEDIA_TYPE: &str = "application/vnd.connectwise.com+json; version=2025.8";

/// ConnectWise's error body. The document declares success responses only; this is the error shape
/// ConnectWise documents (`code` and `message`, optional `errors` details), used for every 4xx/5xx.
pub const ERROR_BODY_SCHEMA: &str = r#"{
  "type": "object",
  "required": ["code", "message"],
  "properties": {
    "code": {"type": "string"},
    "message": {"type": "string"},
    "errors": {
      "type": ["array", "null"],
      "items": {
        "type": "object",
        "properties": {
          "code": {"type": "string"},
          "message": {"type": "string"},
          "resource": {"type": "string"},
          "field": {"type": "string"}
        }
      }
    }
  }
}"#;

/// The operation whose `value` quirk is tolerated.
const PATCH_ADDITION: &str = "patchFinanceAgreementsByParentIdAdditionsById";

/// One way a request or response breaks the contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Where: `path.id`, `query.page`, `header.clientId`, `body/0/value`, `response 200`, …
    pub at: String,
    /// What is wrong.
    pub message: String,
    /// `true` when the document itself would refuse it (a schema or parameter violation);
    /// `false` for what only a strict reading flags (an undeclared query parameter, an `Accept`
    /// or `Content-Type` other than declared, a missing `Authorization`).
    pub refused: bool,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

fn refused(at: impl Into<String>, message: impl Into<String>) -> Violation {
    Violation { at: at.into(), message: message.into(), refused: true }
}

fn strict(at: impl Into<String>, message: impl Into<String>) -> Violation {
    Violation { at: at.into(), message: message.into(), refused: false }
}

/// A request as seen on the wire (path relative to `/{codebase}/apis/3.0`).
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    /// `GET`, `PATCH`, … (any case).
    pub method: &'a str,
    /// e.g. `/finance/agreements/1/additions/2`.
    pub path: &'a str,
    /// Raw query string (without `?`).
    pub query: &'a str,
    /// Header names (any case) and values.
    pub headers: &'a [(String, String)],
    /// The body, when it parsed as JSON.
    pub body: Option<&'a Value>,
    /// Whether a body was sent at all (parsed or not).
    pub body_sent: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum In {
    Path,
    Query,
    Header,
}

struct Param {
    name: String,
    location: In,
    required: bool,
    /// The translated schema's `type` list (to turn the raw text into a JSON value).
    types: Vec<String>,
    validator: jsonschema::Validator,
}

struct Body {
    required: bool,
    media_types: Vec<String>,
    validator: jsonschema::Validator,
}

struct Response {
    status: u16,
    media_type: String,
    validator: jsonschema::Validator,
}

/// One operation of the document.
pub struct Operation {
    /// `operationId`, e.g. `getFinanceAgreementsByParentIdAdditionsById`.
    pub id: String,
    /// Upper-case method.
    pub method: String,
    /// Path template, e.g. `/finance/agreements/{parentId}/additions/{id}`.
    pub template: String,
    segments: Vec<String>,
    params: Vec<Param>,
    body: Option<Body>,
    responses: Vec<Response>,
}

impl fmt::Debug for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ({})", self.method, self.template, self.id)
    }
}

impl Operation {
    /// The media types declared for the success responses.
    pub fn response_media_types(&self) -> Vec<&str> {
        self.responses.iter().map(|r| r.media_type.as_str()).collect()
    }

    /// The declared success statuses.
    pub fn success_statuses(&self) -> Vec<u16> {
        self.responses.iter().map(|r| r.status).collect()
    }

    /// Path parameters by name, when `path` matches the template.
    fn match_path(&self, path: &str) -> Option<Vec<(String, String)>> {
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        if segs.len() != self.segments.len() {
            return None;
        }
        let mut params = Vec::new();
        for (t, s) in self.segments.iter().zip(&segs) {
            match t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                Some(name) => params.push((name.to_string(), (*s).to_string())),
                None if t == s => {}
                None => return None,
            }
        }
        Some(params)
    }
}

/// The document's operations with compiled validators.
pub struct Contract {
    operations: Vec<Operation>,
    error_body: jsonschema::Validator,
}

impl fmt::Debug for Contract {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Contract").field("operations", &self.operations).finish_non_exhaustive()
    }
}

/// Translates one OpenAPI 3.0 schema (as JSON) to JSON Schema 2020-12, in place.
pub fn to_json_schema(schema: &mut Value) {
    let Some(obj) = schema.as_object_mut() else { return };
    let nullable = obj.remove("nullable").is_some_and(|n| n == Value::Bool(true));
    // Recurse into the keywords that hold schemas (not into `properties` names or `enum` values).
    if let Some(Value::Object(props)) = obj.get_mut("properties") {
        props.values_mut().for_each(to_json_schema);
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(v) = obj.get_mut(key) {
            to_json_schema(v);
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(list)) = obj.get_mut(key) {
            list.iter_mut().for_each(to_json_schema);
        }
    }
    let range = match obj.get("format").and_then(Value::as_str) {
        Some("int32") => Some((i64::from(i32::MIN), i64::from(i32::MAX))),
        Some("int64") => Some((i64::MIN, i64::MAX)),
        _ => None,
    };
    if let Some((min, max)) = range {
        obj.entry("minimum").or_insert(json!(min));
        obj.entry("maximum").or_insert(json!(max));
    }
    if nullable {
        if let Some(t) = obj.get("type").cloned() {
            let mut types = match t {
                Value::Array(a) => a,
                other => vec![other],
            };
            if !types.contains(&json!("null")) {
                types.push(json!("null"));
            }
            obj.insert("type".into(), Value::Array(types));
        }
        if let Some(Value::Array(values)) = obj.get_mut("enum")
            && !values.contains(&Value::Null)
        {
            values.push(Value::Null);
        }
        if obj.contains_key("$ref") {
            let inner = std::mem::take(obj);
            obj.insert("anyOf".into(), json!([Value::Object(inner), {"type": "null"}]));
        }
    }
}

fn schema_json(s: &ReferenceOr<openapiv3::Schema>) -> Result<Value, String> {
    let mut v = serde_json::to_value(s).map_err(|e| format!("cannot re-encode a schema: {e}"))?;
    to_json_schema(&mut v);
    Ok(v)
}

fn compile(mut fragment: Value, components: &Value) -> Result<jsonschema::Validator, String> {
    if let Value::Object(obj) = &mut fragment {
        obj.insert("$schema".into(), json!("https://json-schema.org/draft/2020-12/schema"));
        obj.insert("components".into(), json!({"schemas": components}));
    }
    jsonschema::draft202012::options().should_validate_formats(true).build(&fragment).map_err(|e| format!("cannot compile a schema: {e}"))
}

fn types_of(schema: &Value) -> Vec<String> {
    match schema.get("type") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => vec![],
    }
}

/// Media type without parameters, lower case: `application/json; charset=utf-8` → `application/json`.
fn essence(media_type: &str) -> String {
    media_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// Media type with normalised spacing, lower case, for exact comparison including parameters.
fn normalised(media_type: &str) -> String {
    media_type.split(';').map(|p| p.trim().to_ascii_lowercase()).filter(|p| !p.is_empty()).collect::<Vec<_>>().join("; ")
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// The raw text of a parameter as the JSON value its schema types call for (what a server's model
/// binder does); text that does not convert stays a string so the schema reports it.
fn param_value(raw: &str, types: &[String]) -> Value {
    let has = |t: &str| types.iter().any(|x| x == t);
    if raw.is_empty() && has("null") {
        return Value::Null;
    }
    if has("integer")
        && let Ok(i) = raw.parse::<i64>()
    {
        return json!(i);
    }
    if has("number")
        && let Ok(n) = raw.parse::<serde_json::Number>()
    {
        return Value::Number(n);
    }
    if has("boolean") && (raw == "true" || raw == "false") {
        return json!(raw == "true");
    }
    Value::String(raw.to_string())
}

fn schema_errors(validator: &jsonschema::Validator, instance: &Value, at: &str) -> Vec<Violation> {
    validator.iter_errors(instance).map(|e| refused(format!("{at}{}", e.instance_path()), e.to_string())).collect()
}

/// Whether a body error is the documented `PatchOperation.value` quirk: a JSON number as the value
/// of a `replace` of `quantity`.
fn is_value_quirk(op: &Operation, body: &Value, error: &jsonschema::ValidationError<'_>) -> bool {
    if op.id != PATCH_ADDITION || error.kind().keyword() != "type" {
        return false;
    }
    let path = error.instance_path().to_string();
    let mut parts = path.trim_start_matches('/').split('/');
    let (Some(index), Some("value"), None) = (parts.next(), parts.next(), parts.next()) else { return false };
    let Some(operation) = index.parse::<usize>().ok().and_then(|i| body.get(i)) else { return false };
    operation.get("path").and_then(Value::as_str) == Some("quantity") && operation.get("value").is_some_and(Value::is_number)
}

static OFFICIAL: OnceLock<Result<Contract, String>> = OnceLock::new();

impl Contract {
    /// The embedded official subset, parsed and compiled once per process.
    pub fn official() -> Result<&'static Contract, String> {
        OFFICIAL.get_or_init(|| Contract::parse(DOCUMENT)).as_ref().map_err(Clone::clone)
    }

    /// Parses an OpenAPI 3.0 document (YAML or JSON) and compiles its validators.
    pub fn parse(document: &str) -> Result<Contract, String> {
        let doc: OpenAPI = serde_norway::from_str(document).map_err(|e| format!("not an OpenAPI 3.0 document: {e}"))?;
        let mut components = serde_json::Map::new();
        if let Some(c) = &doc.components {
            for (name, s) in &c.schemas {
                components.insert(name.clone(), schema_json(s)?);
            }
        }
        let components = Value::Object(components);
        let mut operations = Vec::new();
        for (template, item) in doc.paths.iter() {
            let ReferenceOr::Item(item) = item else {
                return Err(format!("path item {template} is a reference (not supported)"));
            };
            for (method, op) in item.iter() {
                operations.push(Self::operation(template, method, op, &item.parameters, &components)?);
            }
        }
        let error_schema: Value = serde_json::from_str(ERROR_BODY_SCHEMA).map_err(|e| format!("error body schema: {e}"))?;
        Ok(Contract { operations, error_body: compile(error_schema, &components)? })
    }

    fn operation(
        template: &str,
        method: &str,
        op: &openapiv3::Operation,
        shared: &[ReferenceOr<Parameter>],
        components: &Value,
    ) -> Result<Operation, String> {
        let id = op.operation_id.clone().unwrap_or_else(|| format!("{method} {template}"));
        let mut params = Vec::new();
        for p in shared.iter().chain(&op.parameters) {
            let ReferenceOr::Item(p) = p else { return Err(format!("{id}: parameter references are not supported")) };
            let (data, location) = match p {
                Parameter::Path { parameter_data, .. } => (parameter_data, In::Path),
                Parameter::Query { parameter_data, .. } => (parameter_data, In::Query),
                Parameter::Header { parameter_data, .. } => (parameter_data, In::Header),
                Parameter::Cookie { .. } => continue,
            };
            let ParameterSchemaOrContent::Schema(s) = &data.format else {
                return Err(format!("{id}: parameter {} has no schema", data.name));
            };
            let schema = schema_json(s)?;
            params.push(Param {
                name: data.name.clone(),
                location,
                required: data.required || location == In::Path,
                types: types_of(&schema),
                validator: compile(schema, components)?,
            });
        }
        let body = match &op.request_body {
            None => None,
            Some(ReferenceOr::Reference { .. }) => return Err(format!("{id}: request body references are not supported")),
            Some(ReferenceOr::Item(rb)) => {
                let schema =
                    rb.content.values().find_map(|m| m.schema.as_ref()).ok_or_else(|| format!("{id}: request body without schema"))?;
                Some(Body {
                    required: rb.required,
                    media_types: rb.content.keys().cloned().collect(),
                    validator: compile(schema_json(schema)?, components)?,
                })
            }
        };
        let mut responses = Vec::new();
        for (status, r) in &op.responses.responses {
            let StatusCode::Code(status) = status else { return Err(format!("{id}: status ranges are not supported")) };
            let ReferenceOr::Item(r) = r else { return Err(format!("{id}: response references are not supported")) };
            for (media_type, m) in &r.content {
                let schema = m.schema.as_ref().ok_or_else(|| format!("{id}: response {status} without schema"))?;
                responses.push(Response {
                    status: *status,
                    media_type: media_type.clone(),
                    validator: compile(schema_json(schema)?, components)?,
                });
            }
        }
        Ok(Operation {
            id,
            method: method.to_ascii_uppercase(),
            template: template.to_string(),
            segments: template.trim_start_matches('/').split('/').map(str::to_string).collect(),
            params,
            body,
            responses,
        })
    }

    /// All operations, in document order.
    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    /// The operation serving `method` + `path` (literal segments win over templated ones).
    pub fn find(&self, method: &str, path: &str) -> Option<&Operation> {
        self.find_with_params(method, path).map(|(op, _)| op)
    }

    fn find_with_params(&self, method: &str, path: &str) -> Option<(&Operation, Vec<(String, String)>)> {
        let candidates = self.operations.iter().filter(|o| o.method.eq_ignore_ascii_case(method));
        // Fewer templated segments = more specific.
        candidates.filter_map(|o| o.match_path(path).map(|p| (o, p))).min_by_key(|(_, p)| p.len())
    }

    /// Checks a request against its operation: path, query and header parameters, the body, and
    /// (as strict-only findings) `Accept`, `Content-Type`, `Authorization` and undeclared query
    /// parameters. `Err` when no operation serves the request, or with every violation found.
    pub fn check_request(&self, r: &RequestParts<'_>) -> Result<&Operation, Vec<Violation>> {
        let Some((op, path_params)) = self.find_with_params(r.method, r.path) else {
            return Err(vec![refused("operation", format!("no operation {} {} in the document", r.method, r.path))]);
        };
        let mut out = Vec::new();
        let query: Vec<(String, String)> = url::form_urlencoded::parse(r.query.as_bytes()).into_owned().collect();
        for p in &op.params {
            let raw: Vec<&str> = match p.location {
                In::Path => path_params.iter().filter(|(n, _)| *n == p.name).map(|(_, v)| v.as_str()).collect(),
                In::Query => query.iter().filter(|(n, _)| *n == p.name).map(|(_, v)| v.as_str()).collect(),
                In::Header => header(r.headers, &p.name).into_iter().collect(),
            };
            let at = match p.location {
                In::Path => format!("path.{}", p.name),
                In::Query => format!("query.{}", p.name),
                In::Header => format!("header.{}", p.name),
            };
            if raw.is_empty() && p.required {
                out.push(refused(at.clone(), "is required"));
            }
            for value in raw {
                out.extend(schema_errors(&p.validator, &param_value(value, &p.types), &at));
            }
        }
        for (name, _) in &query {
            if !op.params.iter().any(|p| p.location == In::Query && p.name == *name) {
                out.push(strict(format!("query.{name}"), "is not a parameter of this operation"));
            }
        }
        match (&op.body, r.body_sent, r.body) {
            (Some(b), false, _) if b.required => out.push(refused("body", "is required")),
            (_, true, None) => out.push(refused("body", "is not JSON")),
            (None, true, Some(_)) => out.push(strict("body", "this operation takes no body")),
            (Some(b), true, Some(body)) => {
                out.extend(
                    b.validator
                        .iter_errors(body)
                        .filter(|e| !is_value_quirk(op, body, e))
                        .map(|e| refused(format!("body{}", e.instance_path()), e.to_string())),
                );
                match header(r.headers, "content-type") {
                    Some(ct) if b.media_types.iter().any(|m| essence(m) == essence(ct)) => {}
                    other => out.push(strict("header.Content-Type", format!("{other:?} is not one of {:?}", b.media_types))),
                }
            }
            _ => {}
        }
        match header(r.headers, "accept") {
            Some(a) if op.responses.iter().any(|resp| normalised(&resp.media_type) == normalised(a)) => {}
            other => out.push(strict("header.Accept", format!("{other:?} is not one of {:?}", op.response_media_types()))),
        }
        // The document's security scheme is HTTP basic.
        let basic = header(r.headers, "authorization")
            .and_then(|a| a.strip_prefix("Basic "))
            .is_some_and(|token| !token.is_empty() && token.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)));
        if !basic {
            out.push(strict("header.Authorization", "is not HTTP basic credentials"));
        }
        if out.is_empty() { Ok(op) } else { Err(out) }
    }

    /// Checks a response of the operation serving `method` + `path`: a declared status with the
    /// declared media type and a body valid against its schema, or an error status (4xx/5xx) with
    /// a JSON media type and ConnectWise's error body.
    pub fn check_response(
        &self,
        method: &str,
        path: &str,
        status: u16,
        content_type: Option<&str>,
        body: &Value,
    ) -> Result<(), Vec<Violation>> {
        let Some(op) = self.find(method, path) else {
            return Err(vec![refused("operation", format!("no operation {method} {path} in the document"))]);
        };
        let at = format!("response {status}");
        let declared: Vec<&Response> = op.responses.iter().filter(|r| r.status == status).collect();
        let mut out = Vec::new();
        if !declared.is_empty() {
            match declared.iter().find(|r| content_type.is_some_and(|ct| normalised(ct) == normalised(&r.media_type))) {
                Some(r) => out.extend(schema_errors(&r.validator, body, &format!("{at} body"))),
                None => out.push(refused(
                    format!("{at} Content-Type"),
                    format!("{content_type:?} is not one of {:?}", declared.iter().map(|r| &r.media_type).collect::<Vec<_>>()),
                )),
            }
        } else if status >= 400 {
            let json_type = content_type.is_some_and(|ct| {
                let e = essence(ct);
                e == "application/json" || e == essence(MEDIA_TYPE)
            });
            if !json_type {
                out.push(refused(format!("{at} Content-Type"), format!("{content_type:?} is not JSON")));
            }
            out.extend(schema_errors(&self.error_body, body, &format!("{at} error body")));
        } else {
            out.push(refused(at, format!("is not a declared status of {} (declared: {:?})", op.id, op.success_statuses())));
        }
        if out.is_empty() { Ok(()) } else { Err(out) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract() -> &'static Contract {
        Contract::official().expect("the embedded document parses")
    }

    fn auth() -> Vec<(String, String)> {
        vec![
            ("Authorization".into(), "Basic bXNwK3B1Yjpwcml2".into()),
            ("clientId".into(), "00000000-0000-0000-0000-000000000001".into()),
            ("Accept".into(), MEDIA_TYPE.into()),
            ("Content-Type".into(), "application/json".into()),
        ]
    }

    fn request<'a>(
        method: &'a str,
        path: &'a str,
        query: &'a str,
        headers: &'a [(String, String)],
        body: Option<&'a Value>,
    ) -> RequestParts<'a> {
        RequestParts { method, path, query, headers, body, body_sent: body.is_some() }
    }

    #[test]
    fn translation_honours_nullable_int32_and_enum() {
        let mut s = json!({"type": "object", "properties": {
            "id": {"type": "integer", "format": "int32", "nullable": true},
            "kind": {"type": "string", "enum": ["A"], "nullable": true},
            "ref": {"$ref": "#/components/schemas/X", "nullable": true},
            "type": {"type": "string"}
        }});
        to_json_schema(&mut s);
        assert_eq!(
            s["properties"]["id"],
            json!({"type": ["integer", "null"], "format": "int32", "minimum": -2147483648i64, "maximum": 2147483647})
        );
        assert_eq!(s["properties"]["kind"]["enum"], json!(["A", null]));
        assert_eq!(s["properties"]["ref"], json!({"anyOf": [{"$ref": "#/components/schemas/X"}, {"type": "null"}]}));
        assert_eq!(s["properties"]["type"], json!({"type": "string"}), "a property named `type` is a schema, not a keyword");
    }

    #[test]
    fn document_has_every_operation_the_product_calls() {
        let ids: Vec<&str> = contract().operations().iter().map(|o| o.id.as_str()).collect();
        assert_eq!(ids.len(), 15, "{ids:?}");
        let op = contract().find("GET", "/company/companies/7").expect("company by id");
        assert_eq!(op.template, "/company/companies/{id}");
        assert_eq!(contract().find("PATCH", "/finance/agreements/1/additions/2").map(|o| o.id.as_str()), Some(PATCH_ADDITION));
        assert!(contract().find("GET", "/service/boards/1/nonsense").is_none());
        assert!(contract().find("DELETE", "/service/tickets").is_none());
    }

    #[test]
    fn responses_nullable_required_and_types() {
        let c = contract();
        let addition = json!({"id": 1, "product": {"id": null}, "billCustomer": null, "sequenceNumber": 2.5, "quantity": null});
        assert_eq!(c.check_response("GET", "/finance/agreements/1/additions/1", 200, Some(MEDIA_TYPE), &addition), Ok(()));
        // Required `product` and `billCustomer`.
        let errs = c.check_response("GET", "/finance/agreements/1/additions/1", 200, Some(MEDIA_TYPE), &json!({"id": 1})).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        // `effectiveDate` is a non-nullable date-time string.
        let bad = json!({"product": {}, "billCustomer": "Billable", "effectiveDate": null});
        assert!(c.check_response("GET", "/finance/agreements/1/additions/1", 200, Some(MEDIA_TYPE), &bad).is_err());
        let bad = json!({"product": {}, "billCustomer": "Billable", "effectiveDate": "2026-01-01"});
        assert!(c.check_response("GET", "/finance/agreements/1/additions/1", 200, Some(MEDIA_TYPE), &bad).is_err(), "date-time format");
        // Media type, undeclared statuses, error bodies.
        assert!(c.check_response("GET", "/system/info", 200, Some("application/json"), &json!({})).is_err());
        assert_eq!(
            c.check_response("GET", "/system/info", 200, Some("application/vnd.connectwise.com+json;version=2025.8"), &json!({})),
            Ok(())
        );
        assert!(c.check_response("GET", "/system/info", 204, Some(MEDIA_TYPE), &json!({})).is_err());
        assert_eq!(c.check_response("GET", "/system/info", 404, Some(MEDIA_TYPE), &json!({"code": "NotFound", "message": "x"})), Ok(()));
        assert!(c.check_response("GET", "/system/info", 500, Some(MEDIA_TYPE), &json!({"error": "x"})).is_err());
        // A subtype with an id above int32.
        let subtypes = json!([{"id": 3_000_000_000i64, "name": "x"}]);
        assert!(c.check_response("GET", "/service/boards/1/subtypes", 200, Some(MEDIA_TYPE), &subtypes).is_err());
    }

    #[test]
    fn requests_parameters_bodies_and_the_value_quirk() {
        let c = contract();
        let h = auth();
        let ok = json!([{"op": "replace", "path": "quantity", "value": 42}]);
        let path = "/finance/agreements/1/additions/2";
        assert!(c.check_request(&request("PATCH", path, "", &h, Some(&ok))).is_ok());
        // The quirk covers a number for `quantity` only.
        let other = json!([{"op": "replace", "path": "description", "value": 42}]);
        assert!(c.check_request(&request("PATCH", path, "", &h, Some(&other))).is_err());
        let text = json!([{"op": "replace", "path": "quantity", "value": "42"}]);
        assert!(c.check_request(&request("PATCH", path, "", &h, Some(&text))).is_err());
        let not_array = json!({"op": "replace", "path": "quantity", "value": 42});
        assert!(c.check_request(&request("PATCH", path, "", &h, Some(&not_array))).is_err());
        let missing = c.check_request(&request("PATCH", path, "", &h, None)).unwrap_err();
        assert!(missing.iter().any(|v| v.at == "body" && v.refused), "{missing:?}");
        // Path and query parameters are int32.
        let big = c.check_request(&request("GET", "/finance/agreements/3000000000/additions/2", "", &h, None)).unwrap_err();
        assert!(big.iter().any(|v| v.at == "path.parentId" && v.refused), "{big:?}");
        assert!(c.check_request(&request("GET", "/finance/agreements/x/additions/2", "", &h, None)).is_err());
        assert!(c.check_request(&request("GET", "/company/companies", "page=1&pageSize=1000&conditions=a%3D1", &h, None)).is_ok());
        assert!(c.check_request(&request("GET", "/company/companies", "page=abc", &h, None)).is_err());
        // An undeclared query parameter is a strict-only finding.
        let extra = c.check_request(&request("GET", "/company/companies", "bogus=1", &h, None)).unwrap_err();
        assert!(extra.iter().all(|v| !v.refused), "{extra:?}");
        // Tickets: required company and summary; types of every property.
        let t = json!({"summary": "s", "company": {"id": 1}, "board": {"id": 2}, "externalXRef": "x"});
        assert!(c.check_request(&request("POST", "/service/tickets", "", &h, Some(&t))).is_ok());
        for bad in [
            json!({"summary": "s"}),
            json!({"summary": "s", "company": {"id": 1}, "externalXRef": null}),
            json!({"summary": "s", "company": {"id": 1}, "team": 5}),
        ] {
            assert!(c.check_request(&request("POST", "/service/tickets", "", &h, Some(&bad))).is_err(), "{bad}");
        }
        // Strict findings: Accept and Authorization.
        let bare = vec![("clientId".to_string(), "x".to_string())];
        let errs = c.check_request(&request("GET", "/system/info", "", &bare, None)).unwrap_err();
        assert_eq!(errs.iter().filter(|v| !v.refused).count(), 2, "{errs:?}");
    }
}
