//! The account routes of the PerfectParser sandbox (`providers.md` §4.2, P10, P11):
//! `GET /v1/me` and `GET /v1/credits` (the balance submissions draw on), `GET /v1/parsers/:id`
//! (`{parser:{parser_id, name, result_mode, schema, fields, …}}`, 404 `PARSER_NOT_FOUND`) and
//! `POST /v1/parsers`, whose request shape is NF: the sandbox takes `{name, result_mode?,
//! fields?:[{name, type?, description?}]}` and answers 201 with the parser, which submissions
//! may then name. It owns the parser records.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::routes::error;
use super::world::{FIELD_NAMES, ts};
use super::{DEFAULT_PARSER_NAME, Shared, St};

/// The `result_mode` of the parsers the sandbox starts with (the value set is NF).
const RESULT_MODE: &str = "per_document";

/// One parser.
pub(crate) struct Parser {
    pub(crate) id: String,
    pub(crate) name: String,
    result_mode: String,
    /// `(name, type, description)` per field.
    fields: Vec<(String, String, Option<String>)>,
    created_us: i64,
}

impl Parser {
    /// A parser the spec names: the invoice fields every generated document carries.
    pub(crate) fn seeded(id: &str, created_us: i64) -> Parser {
        let fields = FIELD_NAMES
            .iter()
            .map(|f| ((*f).to_owned(), "string".to_owned(), None))
            .collect();
        Parser {
            id: id.to_owned(),
            name: DEFAULT_PARSER_NAME.to_owned(),
            result_mode: RESULT_MODE.to_owned(),
            fields,
            created_us,
        }
    }

    fn json(&self) -> Value {
        let fields: Vec<Value> = self
            .fields
            .iter()
            .map(|(name, kind, description)| {
                json!({ "name": name, "type": kind, "description": description })
            })
            .collect();
        let properties: serde_json::Map<String, Value> = self
            .fields
            .iter()
            .map(|(name, kind, _)| (name.clone(), json!({ "type": kind })))
            .collect();
        json!({ "parser": {
            "parser_id": self.id, "name": self.name, "result_mode": self.result_mode,
            "schema": { "type": "object", "properties": properties },
            "fields": fields, "created_at": ts(self.created_us),
        }})
    }
}

/// `GET /v1/parsers/:id`.
pub(crate) async fn get_parser(State(sh): State<St>, Path(id): Path<String>) -> Response {
    match sh.parsers().iter().find(|p| p.id == id) {
        Some(p) => axum::Json(p.json()).into_response(),
        None => parser_not_found(&id),
    }
}

pub(crate) fn parser_not_found(id: &str) -> Response {
    let msg = format!("Parser {id:?} not found");
    error(StatusCode::NOT_FOUND, "PARSER_NOT_FOUND", &msg)
}

/// `POST /v1/parsers`.
pub(crate) async fn create_parser(State(sh): State<St>, raw: Bytes) -> Response {
    let invalid = |msg: &str| error(StatusCode::BAD_REQUEST, "INVALID_PAYLOAD", msg);
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&raw) else {
        return invalid("the body must be a JSON object");
    };
    let Some(name) = body
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    else {
        return invalid("name is required");
    };
    let result_mode = match body.get("result_mode") {
        None | Some(Value::Null) => RESULT_MODE.to_owned(),
        Some(Value::String(m)) => m.clone(),
        Some(_) => return invalid("result_mode must be a string"),
    };
    let mut fields = Vec::new();
    match body.get("fields") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for f in list {
                let Some(field) = f.get("name").and_then(Value::as_str) else {
                    return invalid("every field needs a name");
                };
                let kind = f.get("type").and_then(Value::as_str).unwrap_or("string");
                let description = f.get("description").and_then(Value::as_str);
                fields.push((
                    field.to_owned(),
                    kind.to_owned(),
                    description.map(str::to_owned),
                ));
            }
        }
        Some(_) => return invalid("fields must be an array"),
    }
    let mut parsers = sh.parsers_mut();
    let id = format!("prs_{:016x}", rand::random::<u64>());
    let parser = Parser {
        id,
        name: name.to_owned(),
        result_mode,
        fields,
        created_us: sh.clock.now_us(),
    };
    let body = parser.json();
    parsers.push(parser);
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

/// `GET /v1/credits`: the spec's extractions were charged before the start, submissions since.
pub(crate) async fn credits(State(sh): State<St>) -> Response {
    let (available, used) = balance(&sh);
    let body = json!({
        "credits": { "credits_available": available, "credits_used": used,
                     "plan_credits": available + used, "purchased_credits": 0 },
    });
    axum::Json(body).into_response()
}

/// `GET /v1/me`: the key's user, with `credits_available` [D P10].
pub(crate) async fn me(State(sh): State<St>) -> Response {
    let (available, _) = balance(&sh);
    let body = json!({
        "user": { "user_id": "usr_sandbox", "email": "sandbox@perfectparser.local",
                  "credits_available": available },
    });
    axum::Json(body).into_response()
}

/// (available, used) credits.
fn balance(sh: &Shared) -> (u64, u64) {
    let ledger = sh.submit.lock().unwrap_or_else(|e| e.into_inner());
    (ledger.balance, sh.spec_pages + ledger.charged)
}
