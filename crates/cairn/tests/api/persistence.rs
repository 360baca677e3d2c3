//! Stop the application gracefully, start a new one on the same data dir:
//! everything is still there, and the rules keep holding.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn everything_survives_a_restart() {
    let mut app = spawn_app().await;
    let schema_text =
        r#"{"type":"object","properties":{"z":{"type":"number"},"a":{"type":"string"}}}"#;
    let (status, text) = app
        .post_text(
            "/api/v1/receivers",
            &format!(
                r#"{{"name":"r","type":"t","version":"1","description":"d","schema":{schema_text}}}"#
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let a = parse_body(&text)["data"].as_str().unwrap().to_owned();
    let b = app.create_receiver().await;

    let payload_text = r#"{"z":1.10,"a":"x"}"#;
    let (status, text) = app
        .post_text(
            "/api/v1/events",
            &format!(
                r#"{{"name":"n","version":"1","release":"r","platform_id":"p","package":"k",
                    "description":"d","success":true,"event_receiver_id":"{a}","payload":{payload_text}}}"#
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let e1 = parse_body(&text)["data"].as_str().unwrap().to_owned();
    let unit = Unit {
        name: "n".into(),
        version: "1".into(),
        release: "r".into(),
        platform_id: "p".into(),
        package: "k".into(),
    };
    let g = app.create_group(&[&a, &b], true).await;
    let disabled = app.create_group(&[&b], false).await;
    tick().await;
    id_of(
        &app.patch_group(&g, &json!({"description": "patched"}))
            .await,
    );
    let e2 = app.create_event(&b, &unit, true).await;
    assert!(app.is_complete(&g, &unit).await);

    let receivers = app.list_all("/api/v1/receivers").await;
    let events = app.list_all("/api/v1/events").await;
    let groups = app.list_all("/api/v1/groups").await;
    let completions = app.completions(&g).await;
    let status_before = app.status(&g, &unit).await;
    let (_, raw_event) = app.get_text(&format!("/api/v1/events/{e1}")).await;
    let (_, raw_receiver) = app.get_text(&format!("/api/v1/receivers/{a}")).await;
    assert_eq!(completions.len(), 1);

    app.restart().await;

    assert_eq!(app.list_all("/api/v1/receivers").await, receivers);
    assert_eq!(app.list_all("/api/v1/events").await, events);
    assert_eq!(app.list_all("/api/v1/groups").await, groups);
    assert_eq!(app.completions(&g).await, completions);
    assert_eq!(app.status(&g, &unit).await, status_before);
    assert!(app.completions(&disabled).await.is_empty());
    assert_eq!(
        app.get_one("groups", &g).await["description"],
        json!("patched")
    );
    // Byte-for-byte identical, including key order and number text.
    assert_eq!(
        app.get_text(&format!("/api/v1/events/{e1}")).await.1,
        raw_event
    );
    assert_eq!(
        app.get_text(&format!("/api/v1/receivers/{a}")).await.1,
        raw_receiver
    );
    assert!(raw_event.contains(&format!(r#""payload":{payload_text}"#)));
    assert!(raw_receiver.contains(&format!(r#""schema":{schema_text}"#)));
    assert_eq!(app.get_one("events", &e2).await["success"], json!(true));
}

#[tokio::test]
async fn ids_keep_increasing_after_a_restart() {
    let mut app = spawn_app().await;
    let r = app.create_receiver().await;
    let before = app.create_event(&r, &Unit::new("u"), true).await;
    app.restart().await;
    let r2 = app.create_receiver().await;
    let after = app.create_event(&r, &Unit::new("u"), true).await;
    assert!(r2 > before, "{r2} > {before}");
    assert!(after > before, "{after} > {before}");
    assert_eq!(
        ids(&app.list_all("/api/v1/events").await),
        [before, after],
        "listed oldest first"
    );
}

#[tokio::test]
async fn the_completion_rule_holds_across_a_restart() {
    let mut app = spawn_app().await;
    let a = app.create_receiver().await;
    let b = app.create_receiver().await;
    let g = app.create_group(&[&a, &b], true).await;
    let done = Unit::new("done");
    let half = Unit::new("half");
    app.create_event(&a, &done, true).await;
    app.create_event(&b, &done, true).await;
    app.create_event(&a, &half, true).await;
    assert_eq!(app.completions(&g).await.len(), 1);

    app.restart().await;

    // A later success does not record the completed unit again.
    app.create_event(&b, &done, true).await;
    assert_eq!(app.completions_for(&g, &done).await.len(), 1);
    // The half-done unit completes with its last event after the restart.
    let last = app.create_event(&b, &half, true).await;
    let recorded = app.completions_for(&g, &half).await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0]["event_id"], json!(last));
    assert_eq!(app.completions(&g).await.len(), 2);
}

#[tokio::test]
async fn several_restarts_in_a_row() {
    let mut app = spawn_app().await;
    let r = app.create_receiver().await;
    let mut expected = Vec::new();
    for round in 0..3 {
        expected.push(
            app.create_event(&r, &Unit::new(&format!("round-{round}")), true)
                .await,
        );
        app.restart().await;
        assert_eq!(ids(&app.list_all("/api/v1/events").await), expected);
    }
    let (status, body) = app.get("/healthz/readiness").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn stopping_finishes_gracefully_and_closes_the_port() {
    let mut app = spawn_app().await;
    app.create_receiver().await;
    let addr = app.addr;
    app.stop().await;
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(
        refused.is_err(),
        "nothing listens on {addr} after a graceful stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_during_a_graceful_stop() {
    let mut app = spawn_app().await;
    let r = app.create_receiver().await;
    let client = app.client.clone();
    let url = app.url("/api/v1/batch/events");
    let items: Vec<_> = (0..1000)
        .map(|i| event_body(&r, &Unit::new(&format!("u{i}")), true))
        .collect();
    let body = json!(items).to_string();
    let in_flight = tokio::spawn(async move {
        client
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
    });
    // Let the request reach the server, then stop while it is being handled.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    app.stop().await;
    let outcome = in_flight.await.unwrap();
    eprintln!(
        "in-flight request outcome: {:?}",
        outcome.as_ref().map(|r| r.status())
    );
    app.restart().await;
    let stored = app.list_all("/api/v1/events?limit=1000").await.len();
    match outcome {
        Ok(res) => {
            assert_eq!(
                res.status(),
                StatusCode::OK,
                "an accepted request completes"
            );
            assert_eq!(stored, 1000, "an acknowledged batch is durable");
        }
        // The request had not been accepted yet: then nothing of it is stored.
        Err(_) => assert_eq!(stored, 0, "all-or-nothing"),
    }
}
