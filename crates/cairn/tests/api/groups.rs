use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn create_and_get_a_group_with_every_field() {
    let app = spawn_app().await;
    let a = app.create_receiver().await;
    let b = app.create_receiver().await;
    let body = json!({
        "name": "ready-to-release",
        "type": "release.gate",
        "version": "3",
        "description": "all checks passed",
        "event_receiver_ids": [b, a],
    });
    let id = id_of(&app.post_group(&body).await);
    let res = app.get(&format!("/api/v1/groups/{id}")).await;
    let arr = data(&res).as_array().expect("data is an array");
    assert_eq!(arr.len(), 1);
    let g = &arr[0];
    let mut keys: Vec<&str> = g.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "created_at",
            "description",
            "enabled",
            "event_receiver_ids",
            "id",
            "name",
            "type",
            "updated_at",
            "version"
        ]
    );
    assert_eq!(g["id"], json!(id));
    for field in [
        "name",
        "type",
        "version",
        "description",
        "event_receiver_ids",
    ] {
        assert_eq!(g[field], body[field], "{field}");
    }
    assert_eq!(g["enabled"], json!(false), "enabled defaults to false");
    assert_timestamp(&g["created_at"]);
    assert_eq!(
        g["updated_at"], g["created_at"],
        "updated_at equals created_at before any change"
    );
}

#[tokio::test]
async fn enabled_can_be_set_on_create() {
    let app = spawn_app().await;
    let r = app.create_receiver().await;
    let id = app.create_group(&[&r], true).await;
    assert_eq!(app.get_one("groups", &id).await["enabled"], json!(true));
}

#[tokio::test]
async fn duplicate_receivers_collapse_in_first_seen_order() {
    let app = spawn_app().await;
    let a = app.create_receiver().await;
    let b = app.create_receiver().await;
    let c = app.create_receiver().await;
    let id = app.create_group(&[&c, &a, &c, &b, &a], false).await;
    assert_eq!(
        app.get_one("groups", &id).await["event_receiver_ids"],
        json!([c, a, b])
    );
}

#[tokio::test]
async fn every_missing_field_is_reported_at_once() {
    let app = spawn_app().await;
    let errs = errors(&app.post_group(&json!({})).await, StatusCode::BAD_REQUEST);
    assert_field_errors(&errs);
    assert_eq!(errs.len(), 5, "{errs:?}");
    for field in [
        "name",
        "type",
        "version",
        "description",
        "event_receiver_ids",
    ] {
        assert!(
            errs.contains(&format!("{field}: is required")),
            "{field}: {errs:?}"
        );
    }
}

#[tokio::test]
async fn receiver_list_must_be_a_non_empty_array() {
    let app = spawn_app().await;
    let r = app.create_receiver().await;
    for bad in [json!([]), json!(r), json!({"id": r})] {
        let mut body = group_body(&[], false);
        body["event_receiver_ids"] = bad.clone();
        let errs = errors(&app.post_group(&body).await, StatusCode::BAD_REQUEST);
        assert_eq!(errs.len(), 1, "{bad}: {errs:?}");
        assert!(errs[0].starts_with("event_receiver_ids: "), "{errs:?}");
    }
    assert!(app.list_all("/api/v1/groups").await.is_empty());
}

#[tokio::test]
async fn unknown_receivers_are_named_by_index() {
    let app = spawn_app().await;
    let r = app.create_receiver().await;
    let body = group_body(&[&r, UNKNOWN_ID, "zz"], true);
    let errs = errors(&app.post_group(&body).await, StatusCode::BAD_REQUEST);
    assert!(
        errs.contains(&format!(
            "event_receiver_ids[1]: no event receiver with id \"{UNKNOWN_ID}\""
        )),
        "{errs:?}"
    );
    assert!(
        errs.contains(&"event_receiver_ids[2]: no event receiver with id \"zz\"".to_owned()),
        "{errs:?}"
    );
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        app.list_all("/api/v1/groups").await.is_empty(),
        "nothing stored"
    );
}

#[tokio::test]
async fn every_unknown_receiver_is_reported() {
    let app = spawn_app().await;
    let r = app.create_receiver().await;
    let other_unknown = "01ARZ3NDEKTSV4RRFFQ69G5FAW";
    let body = group_body(&[UNKNOWN_ID, &r, other_unknown], true);
    let errs = errors(&app.post_group(&body).await, StatusCode::BAD_REQUEST);
    assert_eq!(
        errs,
        [
            format!("event_receiver_ids[0]: no event receiver with id \"{UNKNOWN_ID}\""),
            format!("event_receiver_ids[2]: no event receiver with id \"{other_unknown}\""),
        ]
    );
    assert!(app.list_all("/api/v1/groups").await.is_empty());
}

#[tokio::test]
async fn enabled_must_be_a_boolean() {
    let app = spawn_app().await;
    let r = app.create_receiver().await;
    let mut body = group_body(&[&r], false);
    body["enabled"] = json!("true");
    let errs = errors(&app.post_group(&body).await, StatusCode::BAD_REQUEST);
    assert_eq!(errs, ["enabled: must be a boolean"]);
}

#[tokio::test]
async fn unknown_or_malformed_id_is_404() {
    let app = spawn_app().await;
    let r = app.create_receiver().await;
    app.create_group(&[&r], true).await;
    for id in [UNKNOWN_ID, "bogus", r.as_str()] {
        errors(
            &app.get(&format!("/api/v1/groups/{id}")).await,
            StatusCode::NOT_FOUND,
        );
    }
}

#[tokio::test]
async fn patch_enabled_returns_the_id_and_bumps_updated_at() {
    let app = spawn_app().await;
    let r = app.create_receiver().await;
    let id = app.create_group(&[&r], false).await;
    let before = app.get_one("groups", &id).await;
    tick().await;
    let res = app.patch_group(&id, &json!({"enabled": true})).await;
    assert_eq!(data(&res), &json!(id));
    let after = app.get_one("groups", &id).await;
    assert_eq!(after["enabled"], json!(true));
    assert_eq!(after["created_at"], before["created_at"]);
    assert_timestamp(&after["updated_at"]);
    assert!(
        after["updated_at"].as_str() > before["updated_at"].as_str(),
        "updated_at moves forward: {before} -> {after}"
    );
    let res = app.patch_group(&id, &json!({"enabled": false})).await;
    assert_eq!(data(&res), &json!(id));
    assert_eq!(app.get_one("groups", &id).await["enabled"], json!(false));
}

#[tokio::test]
async fn patch_changes_the_named_fields_only() {
    let app = spawn_app().await;
    let r = app.create_receiver().await;
    let id = app.create_group(&[&r], true).await;
    let before = app.get_one("groups", &id).await;
    tick().await;
    let patch = json!({"name": "renamed", "type": "t2", "version": "9", "description": "new"});
    id_of(&app.patch_group(&id, &patch).await);
    let after = app.get_one("groups", &id).await;
    for field in ["name", "type", "version", "description"] {
        assert_eq!(after[field], patch[field], "{field}");
    }
    assert_eq!(after["enabled"], json!(true), "enabled untouched");
    assert_eq!(after["event_receiver_ids"], before["event_receiver_ids"]);
    assert_eq!(after["created_at"], before["created_at"]);
    assert!(after["updated_at"].as_str() > before["updated_at"].as_str());

    tick().await;
    id_of(&app.patch_group(&id, &json!({"description": "newer"})).await);
    let last = app.get_one("groups", &id).await;
    assert_eq!(last["description"], "newer");
    assert_eq!(last["name"], "renamed");
    assert!(last["updated_at"].as_str() > after["updated_at"].as_str());
}

#[tokio::test]
async fn patch_with_nothing_to_change_is_rejected() {
    let app = spawn_app().await;
    let r = app.create_receiver().await;
    let id = app.create_group(&[&r], false).await;
    for body in [json!({}), json!({"colour": "red"})] {
        let errs = errors(&app.patch_group(&id, &body).await, StatusCode::BAD_REQUEST);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("body: "), "{errs:?}");
    }
}

#[tokio::test]
async fn patch_of_unknown_group_is_404() {
    let app = spawn_app().await;
    for id in [UNKNOWN_ID, "bogus"] {
        errors(
            &app.patch_group(id, &json!({"enabled": true})).await,
            StatusCode::NOT_FOUND,
        );
    }
}

#[tokio::test]
async fn invalid_patch_reports_every_problem_and_changes_nothing() {
    let app = spawn_app().await;
    let r = app.create_receiver().await;
    let id = app.create_group(&[&r], false).await;
    let before = app.get_one("groups", &id).await;
    let body = json!({"name": " ", "enabled": "yes", "version": "2"});
    let mut errs = errors(&app.patch_group(&id, &body).await, StatusCode::BAD_REQUEST);
    errs.sort();
    assert_eq!(
        errs,
        ["enabled: must be a boolean", "name: must not be blank"]
    );
    assert_eq!(app.get_one("groups", &id).await, before);
}

#[tokio::test]
async fn status_requires_every_unit_field() {
    let app = spawn_app().await;
    let r = app.create_receiver().await;
    let g = app.create_group(&[&r], true).await;
    let errs = errors(
        &app.get(&format!("/api/v1/groups/{g}/status")).await,
        StatusCode::BAD_REQUEST,
    );
    assert_eq!(errs.len(), 5, "{errs:?}");
    for field in UNIT_FIELDS {
        assert_has_error(&errs, &format!("{field}: "));
    }
    let unit = Unit::new("u");
    for missing in UNIT_FIELDS {
        let q: Vec<(&str, &str)> = unit
            .pairs()
            .into_iter()
            .filter(|(k, _)| *k != missing)
            .collect();
        let errs = errors(
            &app.get(&format!("/api/v1/groups/{g}/status?{}", query(&q)))
                .await,
            StatusCode::BAD_REQUEST,
        );
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with(&format!("{missing}: ")), "{errs:?}");
    }
    let blank = unit.with("release", " ");
    let errs = errors(
        &app.get(&format!("/api/v1/groups/{g}/status?{}", blank.query()))
            .await,
        StatusCode::BAD_REQUEST,
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("release: "), "{errs:?}");
}

#[tokio::test]
async fn status_of_unknown_group_is_404() {
    let app = spawn_app().await;
    let unit = Unit::new("u");
    for id in [UNKNOWN_ID, "bogus"] {
        errors(
            &app.get(&format!("/api/v1/groups/{id}/status?{}", unit.query()))
                .await,
            StatusCode::NOT_FOUND,
        );
    }
}

#[tokio::test]
async fn status_lists_receivers_in_group_order_with_their_latest_event() {
    let app = spawn_app().await;
    let a = app.create_receiver().await;
    let b = app.create_receiver().await;
    let c = app.create_receiver().await;
    let g = app.create_group(&[&c, &a, &b], true).await;
    let unit = Unit::new("u");

    let s = app.status(&g, &unit).await;
    let mut keys: Vec<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["complete", "enabled", "receivers"]);
    assert_eq!(s["complete"], json!(false));
    assert_eq!(s["enabled"], json!(true));
    assert_eq!(
        s["receivers"],
        json!([
            {"event_receiver_id": c, "event_id": null, "success": null},
            {"event_receiver_id": a, "event_id": null, "success": null},
            {"event_receiver_id": b, "event_id": null, "success": null},
        ])
    );

    let a1 = app.create_event(&a, &unit, true).await;
    let b1 = app.create_event(&b, &unit, true).await;
    let b2 = app.create_event(&b, &unit, false).await;
    // Another unit's events never show.
    app.create_event(&c, &unit.with("package", "other"), true)
        .await;
    let s = app.status(&g, &unit).await;
    assert_ne!(b1, b2);
    assert_eq!(
        s["receivers"],
        json!([
            {"event_receiver_id": c, "event_id": null, "success": null},
            {"event_receiver_id": a, "event_id": a1, "success": true},
            {"event_receiver_id": b, "event_id": b2, "success": false},
        ])
    );
    assert_eq!(s["complete"], json!(false));
}

#[tokio::test]
async fn status_of_a_disabled_group_is_never_complete() {
    let app = spawn_app().await;
    let a = app.create_receiver().await;
    let g = app.create_group(&[&a], false).await;
    let unit = Unit::new("u");
    let e = app.create_event(&a, &unit, true).await;
    let s = app.status(&g, &unit).await;
    assert_eq!(s["complete"], json!(false));
    assert_eq!(s["enabled"], json!(false));
    assert_eq!(
        s["receivers"],
        json!([{"event_receiver_id": a, "event_id": e, "success": true}])
    );
}

#[tokio::test]
async fn completions_of_unknown_group_is_404_and_empty_list_is_an_array() {
    let app = spawn_app().await;
    errors(
        &app.get(&format!("/api/v1/groups/{UNKNOWN_ID}/completions"))
            .await,
        StatusCode::NOT_FOUND,
    );
    let r = app.create_receiver().await;
    let g = app.create_group(&[&r], true).await;
    let res = app.get(&format!("/api/v1/groups/{g}/completions")).await;
    assert_eq!(data(&res), &json!([]));
    assert!(res.1.get("next_cursor").is_none());
}

#[tokio::test]
async fn completions_have_every_field_oldest_first_and_paginate() {
    let app = spawn_app().await;
    let r = app.create_receiver().await;
    let g = app.create_group(&[&r], true).await;
    let mut expected = Vec::new();
    for i in 0..7 {
        let unit = Unit::new(&format!("u{i}"));
        let eid = app.create_event(&r, &unit, true).await;
        expected.push((unit, eid));
    }
    let all = app.completions(&g).await;
    assert_eq!(all.len(), 7);
    for (c, (unit, eid)) in all.iter().zip(&expected) {
        let mut keys: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "completed_at",
                "event_id",
                "name",
                "package",
                "platform_id",
                "release",
                "version"
            ]
        );
        assert!(unit.matches(c), "{c}");
        assert_eq!(c["event_id"], json!(eid));
        assert_timestamp(&c["completed_at"]);
    }

    let paged = app
        .list_all(&format!("/api/v1/groups/{g}/completions?limit=3"))
        .await;
    assert_eq!(
        paged, all,
        "pages of 3 visit every completion once, in order"
    );
    let res = app
        .get(&format!("/api/v1/groups/{g}/completions?limit=3"))
        .await;
    assert_eq!(data(&res).as_array().unwrap().len(), 3);
    assert!(res.1["next_cursor"].is_string());

    errors(
        &app.get(&format!("/api/v1/groups/{g}/completions?limit=0"))
            .await,
        StatusCode::BAD_REQUEST,
    );
    let errs = errors(
        &app.get(&format!("/api/v1/groups/{g}/completions?cursor=garbage"))
            .await,
        StatusCode::BAD_REQUEST,
    );
    assert_has_error(&errs, "cursor: ");
}
