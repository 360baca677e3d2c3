//! Every response carries `X-Request-Id`: the caller's when it is sane,
//! otherwise a fresh ULID.

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_given_request_id_is_echoed() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(format!("{}/api/v1/events", app.address))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "trace-me-42");
}

#[tokio::test]
async fn a_missing_or_unusable_request_id_is_generated() {
    let app = spawn_app().await;
    for given in [None, Some("has space"), Some("")] {
        let mut req = app.client.get(format!("{}/api/v1/nope", app.address));
        if let Some(v) = given {
            req = req.header("x-request-id", v);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 404);
        let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_eq!(id.len(), 26, "{id:?}");
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric()), "{id:?}");
        assert_ne!(Some(id.as_str()), given);
    }
}
