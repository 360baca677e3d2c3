//! The GraphQL API (CONTRACT section 7): `POST /api/v1/graphql/query`
//! for queries and mutations, the same path over WebSocket
//! (graphql-transport-ws, or the older graphql-ws) for subscriptions, and
//! `GET /api/v1/graphql` for the IDE, whose assets are compiled into the
//! binary. Resolvers call [`crate::service`] — the same code as the REST
//! routes — through a per-request [`CountedStore`].

mod errors;
mod guard;
mod ide;
mod loader;
mod objects;
mod query;
mod scalars;
mod subscription;

pub use errors::OrGql;
pub use guard::{GuardLimits, MAX_INTROSPECTION_NESTING};

use crate::AppState;
use crate::counted::CountedStore;
use crate::error::ApiError;
use crate::extract::{Body, Json};
use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::{Context, Data, Schema, ServerError, Value, Variables};
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::Router;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cairn_store::Store;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub type CairnSchema =
    Schema<query::QueryRoot, query::MutationRoot, subscription::SubscriptionRoot>;

/// The GraphQL limits (settings `graphql_*`).
#[derive(Debug, Clone, Copy)]
pub struct GraphqlConfig {
    /// Deepest field nesting a document may have.
    pub max_depth: usize,
    /// Highest complexity: each field costs 1, and a list field costs its
    /// `limit` (default 100) times its selection.
    pub max_complexity: usize,
    /// Largest `limit` a list field accepts.
    pub max_list: u32,
    /// Largest query document, in bytes (checked before parsing).
    pub max_query_bytes: usize,
}

impl Default for GraphqlConfig {
    fn default() -> Self {
        Self {
            max_depth: 15,
            max_complexity: 25_000,
            max_list: crate::page::MAX_LIMIT,
            max_query_bytes: 32 * 1024,
        }
    }
}

/// The list cap, for resolvers.
pub(crate) struct Limits {
    pub max_list: u32,
}

/// The store every resolver reaches (when the request brings no counted
/// view of its own: subscriptions).
struct SharedStore(Arc<dyn Store>);

/// The per-request view that counts store calls.
struct RequestStore(Arc<CountedStore>);

/// Next-page cursors of the request's list fields, by response key.
#[derive(Default, Clone)]
pub(crate) struct NextCursors(Arc<Mutex<BTreeMap<String, String>>>);

impl NextCursors {
    fn insert(&self, key: String, cursor: String) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(key, cursor);
        }
    }

    fn take(&self) -> BTreeMap<String, String> {
        self.0
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default()
    }
}

/// Who is asking: put in every request's data by [`execute`] and
/// [`subscribe`] from the authenticated request.
pub(crate) fn caller<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a crate::auth::Caller> {
    ctx.data::<crate::auth::Caller>()
}

/// The caller must hold `resource:action` everywhere.
pub(crate) async fn require(
    ctx: &Context<'_>,
    resource: cairn_domain::access::Resource,
    action: cairn_domain::access::Action,
) -> async_graphql::Result<()> {
    crate::service::require(caller(ctx)?, resource, action)
        .await
        .or_gql(ctx)
}

/// The store for this resolver: the request's counted view if any.
pub(crate) fn store<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a dyn Store> {
    if let Some(s) = ctx.data_opt::<RequestStore>() {
        return Ok(s.0.as_ref());
    }
    ctx.data::<SharedStore>()
        .map(|s| s.0.as_ref() as &dyn Store)
}

pub fn schema(state: &AppState) -> CairnSchema {
    let c = state.config.graphql;
    let mut builder = Schema::build(
        query::QueryRoot,
        query::MutationRoot,
        subscription::SubscriptionRoot,
    )
    .limit_depth(c.max_depth)
    // The parser's recursion guard must not undercut the depth limit.
    .limit_recursive_depth(c.max_depth.saturating_mul(2).max(32))
    .limit_complexity(c.max_complexity)
    .extension(guard::QueryGuard(GuardLimits {
        max_depth: c.max_depth,
        max_complexity: c.max_complexity,
        max_query_bytes: c.max_query_bytes,
    }))
    .data(Limits {
        max_list: c.max_list,
    })
    .data(SharedStore(state.store.clone()));
    if let Some(live) = &state.live {
        builder = builder.data(live.clone());
    }
    builder.finish()
}

/// The GraphQL routes, with the schema built from the state.
pub fn routes(state: &AppState) -> Router<AppState> {
    let schema = schema(state);
    Router::new()
        .route("/api/v1/graphql", get(ide::page))
        .route("/api/v1/graphql/assets/{file}", get(ide::asset))
        .route("/api/v1/graphql/query", get(subscribe).post(execute))
        .layer(axum::Extension(schema))
}

/// `{"query", "operationName", "variables"}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphqlBody {
    query: Option<serde_json::Value>,
    operation_name: Option<serde_json::Value>,
    variables: Option<Box<RawValue>>,
}

impl Body for GraphqlBody {
    const SHAPE: &'static str = "must be a JSON object with a \"query\" string";
}

/// A response with only request-level errors.
fn error_response(status: StatusCode, errors: Vec<ServerError>) -> Response {
    let body = async_graphql::Response::from_errors(errors);
    json(status, &body)
}

fn json(status: StatusCode, body: &async_graphql::Response) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => crate::error::json_response(status, bytes),
        Err(e) => crate::error::json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                r#"{{"data":null,"errors":[{{"message":"serialising the response: {}"}}]}}"#,
                e.to_string().replace('"', "'")
            )
            .into_bytes(),
        ),
    }
}

/// An API error as a GraphQL response (401s keep their
/// `WWW-Authenticate` challenge).
pub(crate) fn api_error_response(e: ApiError) -> Response {
    let status = e.status();
    let challenge = e.challenge();
    let errors = errors::request_errors(e);
    let mut res = error_response(status, errors);
    if let Some(challenge) = challenge {
        res.headers_mut()
            .insert(axum::http::header::WWW_AUTHENTICATE, challenge);
    }
    res
}

/// The HTTP status of an answer: 200 once execution started; for
/// request-level failures (size, parse, validation, limits) the status
/// the first error names.
fn status_of(res: &async_graphql::Response) -> StatusCode {
    let request_level = !res.errors.is_empty()
        && res.data == Value::Null
        && res.errors.iter().all(|e| e.path.is_empty());
    if !request_level {
        return StatusCode::OK;
    }
    res.errors
        .first()
        .and_then(|e| e.extensions.as_ref())
        .and_then(|ext| ext.get("status"))
        .and_then(|v| match v {
            Value::Number(n) => n.as_u64(),
            _ => None,
        })
        .and_then(|n| u16::try_from(n).ok())
        .and_then(|n| StatusCode::from_u16(n).ok())
        .unwrap_or(StatusCode::BAD_REQUEST)
}

async fn execute(
    State(state): State<AppState>,
    axum::Extension(schema): axum::Extension<CairnSchema>,
    req: Request,
) -> Response {
    let Some(caller) = req.extensions().get::<crate::auth::Caller>().cloned() else {
        return api_error_response(ApiError::Unauthorized(
            "authentication required: send Authorization: Bearer <token>".into(),
        ));
    };
    let body = match Json::<GraphqlBody>::from_request(req, &state).await {
        Ok(Json(body)) => body,
        Err(e) => return api_error_response(e),
    };
    let mut problems = Vec::new();
    let query = match body.query {
        Some(serde_json::Value::String(q)) => q,
        None | Some(serde_json::Value::Null) => {
            problems.push("query: is required".to_owned());
            String::new()
        }
        Some(_) => {
            problems.push("query: must be a string".to_owned());
            String::new()
        }
    };
    let operation = match body.operation_name {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(_) => {
            problems.push("operationName: must be a string".to_owned());
            None
        }
    };
    let variables = match body.variables.as_deref().map(scalars::raw_to_value) {
        None | Some(Ok(Value::Null)) => Variables::default(),
        Some(Ok(v @ Value::Object(_))) => Variables::from_value(v),
        Some(Ok(_)) => {
            problems.push("variables: must be a JSON object".to_owned());
            Variables::default()
        }
        Some(Err(e)) => {
            problems.push(format!("variables: {e}"));
            Variables::default()
        }
    };
    if !problems.is_empty() {
        return api_error_response(ApiError::Invalid(problems));
    }
    let counted = Arc::new(CountedStore::new(state.store.clone()));
    let cursors = NextCursors::default();
    let mut request = async_graphql::Request::new(query)
        .variables(variables)
        .data(RequestStore(counted.clone()))
        .data(loader::receiver_loader(counted.clone()))
        .data(cursors.clone())
        .data(caller);
    if let Some(op) = operation {
        request = request.operation_name(op);
    }
    let mut res = schema.execute(request).await;
    tag_uncoded(&mut res.errors);
    let calls = counted.calls();
    metrics::histogram!("cairn_graphql_store_calls").record(calls as f64);
    let status = status_of(&res);
    if status == StatusCode::OK {
        res.extensions
            .insert("store_calls".to_owned(), Value::Number(calls.into()));
        let next = cursors.take();
        if !next.is_empty() {
            res.extensions.insert(
                "next_cursor".to_owned(),
                Value::Object(
                    next.into_iter()
                        .map(|(k, v)| (async_graphql::Name::new(k), Value::String(v)))
                        .collect(),
                ),
            );
        }
    }
    json(status, &res)
}

/// Give every error an `extensions.code`: the library's own argument
/// errors (a value that does not fit its type) are bad input, anything
/// else without a code is internal.
fn tag_uncoded(errors: &mut [ServerError]) {
    for e in errors {
        let mut ext = e.extensions.take().unwrap_or_default();
        if ext.get("code").is_none() {
            let input = e.message.starts_with("Failed to parse")
                || e.message.starts_with("Invalid value for argument");
            let (code, status) = if input {
                (errors::BAD_USER_INPUT, 400)
            } else {
                (errors::INTERNAL, 500)
            };
            ext.set("code", code);
            ext.set("status", status);
        }
        e.extensions = Some(ext);
    }
}

/// The credentials of a `connection_init` payload:
/// `{"Authorization": "Bearer <token>"}` (any case), or `{"token": "<token>"}`.
fn init_credentials(payload: &serde_json::Value) -> Option<String> {
    let obj = payload.as_object()?;
    obj.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .and_then(|(_, v)| v.as_str())
        .map(str::to_owned)
        .or_else(|| {
            obj.get("token")
                .and_then(|v| v.as_str())
                .map(|t| format!("Bearer {t}"))
        })
}

/// Subscriptions over WebSocket; a plain GET is told what to do instead.
/// Credentials come with the upgrade request (`Authorization` header) or,
/// from browsers, in the `connection_init` payload.
async fn subscribe(
    State(state): State<AppState>,
    axum::Extension(schema): axum::Extension<CairnSchema>,
    caller: Option<axum::Extension<crate::auth::Caller>>,
    request_id: Option<axum::Extension<crate::metrics::RequestId>>,
    protocol: Result<GraphQLProtocol, StatusCode>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let (Ok(upgrade), Ok(protocol)) = (upgrade, protocol) else {
        return api_error_response(ApiError::Invalid(vec![
            "request: use POST for queries and mutations, or a WebSocket speaking \
             graphql-transport-ws for subscriptions"
                .to_owned(),
        ]));
    };
    let limit = state.config.max_body_bytes;
    let store = state.store.clone();
    let auth = state.auth.clone();
    let caller = caller.map(|c| c.0);
    let request_id = request_id.map(|r| r.0.0).unwrap_or_default();
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| {
            let mut data = Data::default();
            data.insert(loader::receiver_loader(store));
            GraphQLWebSocket::new(socket, schema, protocol)
                .with_data(data)
                .on_connection_init(move |payload| async move {
                    let mut data = Data::default();
                    let caller = match caller {
                        Some(c) => c,
                        None => {
                            let Some(header) = init_credentials(&payload) else {
                                return Err(async_graphql::Error::new(
                                    "authentication required: send {\"Authorization\": \"Bearer <token>\"} in connection_init",
                                ));
                            };
                            crate::auth::authenticate_header(&auth, &header, &request_id, "websocket")
                                .await
                                .map_err(|e| async_graphql::Error::new(e.message()))?
                        }
                    };
                    data.insert(caller);
                    Ok(data)
                })
                .serve()
        })
        .into_response()
}
