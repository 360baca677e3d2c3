use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::HashSet;

/// Create `n` events for `rid` in one batch; returns their ids.
async fn batch_events(
    app: &TestApp,
    rid: &str,
    n: usize,
    unit: impl Fn(usize) -> Unit,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < n {
        let end = (start + 1000).min(n);
        let items: Vec<Value> = (start..end)
            .map(|i| event_body(rid, &unit(i), i % 3 != 0))
            .collect();
        let res = app.post_batch(&json!(items)).await;
        out.extend(
            data(&res)
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned()),
        );
        start = end;
    }
    out
}

async fn list(app: &TestApp, path: &str) -> Vec<Value> {
    let res = app.get(path).await;
    data(&res).as_array().expect("data is an array").clone()
}

#[tokio::test]
async fn receiver_filters_are_exact_and_anded() {
    let app = spawn_app().await;
    let mk = |name: &str, type_: &str, version: &str| json!({"name": name, "type": type_, "version": version, "description": "d", "schema": {}});
    let r1 = id_of(&app.post_receiver(&mk("build", "ci", "1")).await);
    let r2 = id_of(&app.post_receiver(&mk("build", "ci", "2")).await);
    let r3 = id_of(&app.post_receiver(&mk("build", "cd", "1")).await);
    let r4 = id_of(&app.post_receiver(&mk("scan", "ci", "1")).await);
    let r5 = id_of(&app.post_receiver(&mk("Build", "ci", "1")).await);
    let r6 = id_of(&app.post_receiver(&mk("build ", "ci", "1")).await);

    let cases: [(&str, Vec<&String>); 8] = [
        ("", vec![&r1, &r2, &r3, &r4, &r5, &r6]),
        ("?name=build", vec![&r1, &r2, &r3]),
        ("?type=ci", vec![&r1, &r2, &r4, &r5, &r6]),
        ("?version=1", vec![&r1, &r3, &r4, &r5, &r6]),
        ("?name=build&type=ci", vec![&r1, &r2]),
        ("?name=build&type=ci&version=2", vec![&r2]),
        ("?name=build%20", vec![&r6]),
        ("?name=nothing", vec![]),
    ];
    for (q, expected) in cases {
        let got = list(&app, &format!("/api/v1/receivers{q}")).await;
        let expected: Vec<String> = expected.into_iter().cloned().collect();
        assert_eq!(ids(&got), expected, "GET /api/v1/receivers{q}");
    }
}

#[tokio::test]
async fn event_filters_are_exact_and_anded() {
    let app = spawn_app().await;
    let ra = app.create_receiver().await;
    let rb = app.create_receiver().await;
    let base = Unit::new("svc");
    let e_base_a = app.create_event(&ra, &base, true).await;
    let e_base_b = app.create_event(&rb, &base, false).await;
    let mut by_field = Vec::new();
    for field in UNIT_FIELDS {
        let id = app
            .create_event(&ra, &base.with(field, "other value"), true)
            .await;
        by_field.push((field, id));
    }

    for (field, id) in &by_field {
        let got = list(
            &app,
            &format!("/api/v1/events?{field}={}", enc("other value")),
        )
        .await;
        assert_eq!(&ids(&got), std::slice::from_ref(id), "filter on {field}");
    }
    let got = list(&app, &format!("/api/v1/events?{}", base.query())).await;
    assert_eq!(ids(&got), [e_base_a.clone(), e_base_b.clone()]);

    let got = list(&app, &format!("/api/v1/events?event_receiver_id={rb}")).await;
    assert_eq!(ids(&got), std::slice::from_ref(&e_base_b));

    let got = list(&app, "/api/v1/events?success=false").await;
    assert_eq!(ids(&got), std::slice::from_ref(&e_base_b));
    let got = list(&app, "/api/v1/events?success=true").await;
    assert_eq!(got.len(), 6);
    assert!(got.iter().all(|e| e["success"] == json!(true)));

    let got = list(
        &app,
        &format!(
            "/api/v1/events?{}&success=true&event_receiver_id={ra}",
            base.query()
        ),
    )
    .await;
    assert_eq!(ids(&got), [e_base_a]);
    let got = list(
        &app,
        &format!(
            "/api/v1/events?{}&event_receiver_id={ra}&success=false",
            base.query()
        ),
    )
    .await;
    assert!(got.is_empty());
    let got = list(
        &app,
        &format!("/api/v1/events?event_receiver_id={UNKNOWN_ID}"),
    )
    .await;
    assert!(got.is_empty());
}

#[tokio::test]
async fn success_and_enabled_filters_must_be_booleans() {
    let app = spawn_app().await;
    for bad in ["yes", "1", "TRUE", "f"] {
        let errs = errors(
            &app.get(&format!("/api/v1/events?success={}", enc(bad)))
                .await,
            StatusCode::BAD_REQUEST,
        );
        assert_has_error(&errs, "success: ");
        let errs = errors(
            &app.get(&format!("/api/v1/groups?enabled={}", enc(bad)))
                .await,
            StatusCode::BAD_REQUEST,
        );
        assert_has_error(&errs, "enabled: ");
    }
}

#[tokio::test]
async fn since_is_inclusive_and_until_is_exclusive() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    let mut events = Vec::new();
    for i in 0..3 {
        tick().await;
        let id = app
            .create_event(&rid, &Unit::new(&format!("u{i}")), true)
            .await;
        events.push(app.get_one("events", &id).await);
    }
    let t: Vec<&str> = events
        .iter()
        .map(|e| e["created_at"].as_str().unwrap())
        .collect();
    assert!(t[0] < t[1] && t[1] < t[2], "distinct timestamps: {t:?}");
    let id: Vec<String> = ids(&events);

    let got = list(&app, &format!("/api/v1/events?since={}", enc(t[1]))).await;
    assert_eq!(
        ids(&got),
        [id[1].clone(), id[2].clone()],
        "since is inclusive"
    );
    let got = list(&app, &format!("/api/v1/events?until={}", enc(t[1]))).await;
    assert_eq!(ids(&got), [id[0].clone()], "until is exclusive");
    let got = list(
        &app,
        &format!("/api/v1/events?since={}&until={}", enc(t[1]), enc(t[2])),
    )
    .await;
    assert_eq!(ids(&got), [id[1].clone()]);
    let got = list(
        &app,
        &format!("/api/v1/events?since={}&until={}", enc(t[2]), enc(t[1])),
    )
    .await;
    assert!(got.is_empty());
    let got = list(
        &app,
        "/api/v1/events?since=2000-01-01T00:00:00Z&until=2999-01-01T00:00:00Z",
    )
    .await;
    assert_eq!(got.len(), 3);
}

#[tokio::test]
async fn since_accepts_any_rfc3339_offset() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    let first = app.create_event(&rid, &Unit::new("a"), true).await;
    let created = app.get_one("events", &first).await["created_at"]
        .as_str()
        .unwrap()
        .to_owned();
    tick().await;
    let second = app.create_event(&rid, &Unit::new("b"), true).await;
    // The same instant written with a non-UTC offset (same day, no roll-over).
    let hour: u32 = created[11..13].parse().unwrap();
    let (local_hour, offset) = if hour < 23 {
        (hour + 1, "+01:00")
    } else {
        (hour - 1, "-01:00")
    };
    let shifted = format!(
        "{}{local_hour:02}{}{offset}",
        &created[..11],
        &created[13..26]
    );
    let got = list(&app, &format!("/api/v1/events?since={}", enc(&shifted))).await;
    assert_eq!(ids(&got), [first, second]);
}

#[tokio::test]
async fn invalid_since_or_until_is_rejected() {
    let app = spawn_app().await;
    for bad in [
        "yesterday",
        "2024-13-01T00:00:00Z",
        "1700000000",
        "2024-01-01",
    ] {
        let errs = errors(
            &app.get(&format!("/api/v1/events?since={}", enc(bad))).await,
            StatusCode::BAD_REQUEST,
        );
        assert_has_error(&errs, "since: ");
        let errs = errors(
            &app.get(&format!("/api/v1/events?until={}", enc(bad))).await,
            StatusCode::BAD_REQUEST,
        );
        assert_has_error(&errs, "until: ");
    }
}

#[tokio::test]
async fn group_filters_are_exact_and_anded() {
    let app = spawn_app().await;
    let r = app.create_receiver().await;
    let mk = |name: &str, type_: &str, version: &str, enabled: bool| {
        json!({"name": name, "type": type_, "version": version, "description": "d",
               "enabled": enabled, "event_receiver_ids": [r]})
    };
    let g1 = id_of(&app.post_group(&mk("gate", "release", "1", true)).await);
    let g2 = id_of(&app.post_group(&mk("gate", "release", "2", false)).await);
    let g3 = id_of(&app.post_group(&mk("gate", "deploy", "1", true)).await);
    let g4 = id_of(&app.post_group(&mk("other", "release", "1", false)).await);
    let cases: [(&str, Vec<&String>); 7] = [
        ("", vec![&g1, &g2, &g3, &g4]),
        ("?name=gate", vec![&g1, &g2, &g3]),
        ("?type=release", vec![&g1, &g2, &g4]),
        ("?version=1", vec![&g1, &g3, &g4]),
        ("?enabled=true", vec![&g1, &g3]),
        ("?enabled=false&type=release", vec![&g2, &g4]),
        ("?name=gate&type=release&version=1&enabled=true", vec![&g1]),
    ];
    for (q, expected) in cases {
        let got = list(&app, &format!("/api/v1/groups{q}")).await;
        let expected: Vec<String> = expected.into_iter().cloned().collect();
        assert_eq!(ids(&got), expected, "GET /api/v1/groups{q}");
    }
    // Filters see changes.
    app.set_enabled(&g2, true).await;
    let got = list(&app, "/api/v1/groups?enabled=true").await;
    assert_eq!(ids(&got), [g1, g2, g3]);
}

#[tokio::test]
async fn limit_defaults_to_100_and_allows_up_to_1000() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    let all = batch_events(&app, &rid, 1005, |i| Unit::new(&format!("u{i}"))).await;

    let res = app.get("/api/v1/events").await;
    let page = data(&res).as_array().unwrap().clone();
    assert_eq!(page.len(), 100, "default limit");
    assert_eq!(ids(&page), all[..100]);
    assert!(res.1["next_cursor"].is_string(), "more rows exist");

    let res = app.get("/api/v1/events?limit=1000").await;
    assert_eq!(data(&res).as_array().unwrap().len(), 1000);
    assert!(res.1["next_cursor"].is_string());

    let res = app.get("/api/v1/events?limit=1").await;
    assert_eq!(ids(data(&res).as_array().unwrap()), [all[0].clone()]);
}

#[tokio::test]
async fn invalid_limits_are_rejected() {
    let app = spawn_app().await;
    for bad in ["0", "1001", "abc", "-1", "1.5", "99999999999999999999"] {
        for path in ["/api/v1/events", "/api/v1/receivers", "/api/v1/groups"] {
            let errs = errors(
                &app.get(&format!("{path}?limit={}", enc(bad))).await,
                StatusCode::BAD_REQUEST,
            );
            assert!(
                errs.iter().any(|e| e.starts_with("limit: ")),
                "{path}?limit={bad}: {errs:?}"
            );
        }
    }
}

#[tokio::test]
async fn following_cursors_visits_every_row_exactly_once() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    let all = batch_events(&app, &rid, 250, |i| Unit::new(&format!("u{i}"))).await;

    for limit in [1, 7, 100, 249, 250, 1000] {
        let mut pages = 0;
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            pages += 1;
            assert!(pages <= 300, "pagination does not end");
            let path = match &cursor {
                None => format!("/api/v1/events?limit={limit}"),
                Some(c) => format!("/api/v1/events?limit={limit}&cursor={}", enc(c)),
            };
            let res = app.get(&path).await;
            let page = data(&res).as_array().unwrap().clone();
            assert!(page.len() <= limit);
            seen.extend(ids(&page));
            match res.1.get("next_cursor") {
                Some(Value::String(c)) => {
                    assert_eq!(page.len(), limit, "a page with a next_cursor is full");
                    cursor = Some(c.clone());
                }
                None => break,
                Some(other) => panic!("next_cursor must be a string or absent: {other}"),
            }
        }
        assert_eq!(seen, all, "limit {limit}: every row once, in id order");
        assert_eq!(pages, 250usize.div_ceil(limit).max(1), "limit {limit}");
    }
}

#[tokio::test]
async fn next_cursor_appears_only_when_more_rows_exist() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    batch_events(&app, &rid, 10, |i| Unit::new(&format!("u{i}"))).await;

    let res = app.get("/api/v1/events?limit=10").await;
    assert_eq!(data(&res).as_array().unwrap().len(), 10);
    assert!(
        res.1.get("next_cursor").is_none(),
        "exactly limit rows: {}",
        res.1
    );

    let res = app.get("/api/v1/events?limit=5").await;
    let cursor = res.1["next_cursor"].as_str().expect("more rows").to_owned();
    let res = app
        .get(&format!("/api/v1/events?limit=5&cursor={}", enc(&cursor)))
        .await;
    assert_eq!(data(&res).as_array().unwrap().len(), 5);
    assert!(res.1.get("next_cursor").is_none(), "{}", res.1);

    let res = app.get("/api/v1/events?limit=11").await;
    assert!(res.1.get("next_cursor").is_none());
    let res = app.get("/api/v1/events?name=none").await;
    assert_eq!(data(&res), &json!([]));
    assert!(res.1.get("next_cursor").is_none());
}

#[tokio::test]
async fn cursors_work_with_filters() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    let all = batch_events(&app, &rid, 90, |i| {
        Unit::new("svc").with("package", if i % 2 == 0 { "even" } else { "odd" })
    })
    .await;
    let even: Vec<String> = all.iter().step_by(2).cloned().collect();
    let got = app.list_all("/api/v1/events?package=even&limit=4").await;
    assert_eq!(ids(&got), even);
    assert!(got.iter().all(|e| e["package"] == "even"));
    // success=true: items with i % 3 != 0
    let got = app
        .list_all("/api/v1/events?package=even&success=true&limit=3")
        .await;
    let expected: Vec<String> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 0 && i % 3 != 0)
        .map(|(_, id)| id.clone())
        .collect();
    assert_eq!(ids(&got), expected);
}

#[tokio::test]
async fn rows_created_while_paginating_are_visited_once() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    let mut all = batch_events(&app, &rid, 20, |i| Unit::new(&format!("u{i}"))).await;
    let res = app.get("/api/v1/events?limit=8").await;
    let mut seen = ids(data(&res).as_array().unwrap());
    let mut cursor = res.1["next_cursor"].as_str().unwrap().to_owned();
    all.extend(batch_events(&app, &rid, 5, |i| Unit::new(&format!("late{i}"))).await);
    for _ in 0..10 {
        let res = app
            .get(&format!("/api/v1/events?limit=8&cursor={}", enc(&cursor)))
            .await;
        seen.extend(ids(data(&res).as_array().unwrap()));
        match res.1.get("next_cursor").and_then(Value::as_str) {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, all);
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len());
}

#[tokio::test]
async fn receivers_and_groups_paginate_too() {
    let app = spawn_app().await;
    let mut receivers = Vec::new();
    for _ in 0..105 {
        receivers.push(app.create_receiver().await);
    }
    let res = app.get("/api/v1/receivers").await;
    assert_eq!(data(&res).as_array().unwrap().len(), 100, "default limit");
    assert!(res.1["next_cursor"].is_string());
    assert_eq!(
        ids(&app.list_all("/api/v1/receivers?limit=10").await),
        receivers
    );

    let mut groups = Vec::new();
    for r in receivers.iter().take(12) {
        groups.push(app.create_group(&[r], false).await);
    }
    assert_eq!(ids(&app.list_all("/api/v1/groups?limit=5").await), groups);
    let res = app.get("/api/v1/groups?limit=12").await;
    assert!(res.1.get("next_cursor").is_none());
}

#[tokio::test]
async fn invalid_cursor_is_rejected() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    batch_events(&app, &rid, 3, |i| Unit::new(&format!("u{i}"))).await;
    for bad in ["garbage", "!!!", "AAAA"] {
        for path in ["/api/v1/events", "/api/v1/receivers", "/api/v1/groups"] {
            let errs = errors(
                &app.get(&format!("{path}?cursor={}", enc(bad))).await,
                StatusCode::BAD_REQUEST,
            );
            assert!(
                errs.iter().any(|e| e.starts_with("cursor: ")),
                "{path}?cursor={bad:?}: {errs:?}"
            );
        }
    }
}

#[tokio::test]
async fn lists_are_ordered_oldest_first() {
    let app = spawn_app().await;
    let mut rids = Vec::new();
    let mut eids = Vec::new();
    for i in 0..15 {
        let r = app.create_receiver().await;
        eids.push(
            app.create_event(&r, &Unit::new(&format!("u{i}")), true)
                .await,
        );
        rids.push(r);
    }
    let events = list(&app, "/api/v1/events").await;
    assert_eq!(ids(&events), eids);
    let receivers = list(&app, "/api/v1/receivers").await;
    assert_eq!(ids(&receivers), rids);
    // Each listed event carries its receiver, as GET by id does.
    for e in &events {
        assert_eq!(e, &app.get_one("events", e["id"].as_str().unwrap()).await);
    }
}

#[tokio::test]
async fn filters_match_non_ascii_and_reserved_characters_exactly() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    let odd = Unit::new("naïve ✓ a&b=c+d/e?f#g%20");
    let plain = Unit::new("naive");
    let e_odd = app.create_event(&rid, &odd, true).await;
    app.create_event(&rid, &plain, true).await;
    let got = list(&app, &format!("/api/v1/events?name={}", enc(&odd.name))).await;
    assert_eq!(ids(&got), [e_odd]);
    assert_eq!(got[0]["name"], json!(odd.name));
}
