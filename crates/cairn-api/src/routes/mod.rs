//! One small module per resource; this file wires them into the router.

mod admin;
mod audit;
mod auth;
mod events;
mod grants;
mod groups;
mod keys;
mod ops;
mod receivers;
mod roles;
mod users;

use crate::error::ApiError;
use crate::{AppState, edge};
use axum::Router;
use axum::http::{Method, Uri};
use axum::middleware;
use axum::routing::{delete, get, post};

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/api/v1/receivers",
            post(receivers::create).get(receivers::list),
        )
        .route("/api/v1/receivers/{id}", get(receivers::get))
        .route("/api/v1/events", post(events::create).get(events::list))
        .route("/api/v1/events/{id}", get(events::get))
        .route("/api/v1/batch/events", post(events::batch))
        .route("/api/v1/groups", post(groups::create).get(groups::list))
        .route("/api/v1/groups/{id}", get(groups::get).patch(groups::patch))
        .route("/api/v1/groups/{id}/receivers", post(groups::add_receivers))
        .route(
            "/api/v1/groups/{id}/receivers/{receiver_id}",
            delete(groups::remove_receiver),
        )
        .route("/api/v1/groups/{id}/status", get(groups::status))
        .route("/api/v1/groups/{id}/completions", get(groups::completions))
        .route("/api/v1/admin/dead-letters", get(admin::dead_letters))
        .route(
            "/api/v1/admin/dead-letters/{sink}/{seq}/replay",
            post(admin::replay),
        )
        .route("/api/v1/auth/login", post(auth::login))
        .route("/api/v1/auth/refresh", post(auth::refresh))
        .route("/api/v1/auth/logout", post(auth::logout))
        .route("/api/v1/auth/whoami", get(auth::whoami))
        .route("/api/v1/auth/jwks", get(auth::jwks))
        .route(
            "/api/v1/auth/signing-keys/rotate",
            post(auth::rotate_signing_key),
        )
        .route("/api/v1/users", post(users::create).get(users::list))
        .route(
            "/api/v1/users/{name}",
            get(users::get).patch(users::patch).delete(users::delete),
        )
        .route("/api/v1/keys", post(keys::create).get(keys::list))
        .route("/api/v1/keys/{id}", get(keys::get).delete(keys::revoke))
        .route("/api/v1/roles", post(roles::create).get(roles::list))
        .route(
            "/api/v1/roles/{name}",
            get(roles::get).delete(roles::delete),
        )
        .route("/api/v1/grants", post(grants::create).get(grants::list))
        .route("/api/v1/grants/{id}", delete(grants::delete))
        .route("/api/v1/audit", get(audit::list))
        .route("/healthz/liveness", get(ops::liveness))
        .route("/healthz/readiness", get(ops::readiness))
        .route("/healthz/status", get(ops::status))
        .route("/metrics", get(ops::metrics))
        .merge(crate::graphql::routes(&state))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            edge::pipeline::Edge::new(state.clone()),
            edge::pipeline::run,
        ))
        .with_state(state)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}
