//! The completion rule (CONTRACT section 4).

use crate::helpers::*;
use serde_json::json;
use std::sync::Arc;

/// Two receivers and an enabled group of both.
async fn two_receiver_group(app: &TestApp) -> (String, String, String) {
    let a = app.create_receiver().await;
    let b = app.create_receiver().await;
    let g = app.create_group(&[&a, &b], true).await;
    (a, b, g)
}

#[tokio::test]
async fn complete_only_when_every_receiver_succeeded() {
    let app = spawn_app().await;
    let (a, b, g) = two_receiver_group(&app).await;
    let unit = Unit::new("svc");

    app.create_event(&a, &unit, true).await;
    assert!(
        !app.is_complete(&g, &unit).await,
        "one of two is not enough"
    );
    assert!(app.completions(&g).await.is_empty());

    let last = app.create_event(&b, &unit, true).await;
    let s = app.status(&g, &unit).await;
    assert_eq!(s["complete"], json!(true), "{s}");
    let done = app.completions(&g).await;
    assert_eq!(done.len(), 1, "{done:?}");
    assert!(unit.matches(&done[0]), "{}", done[0]);
    assert_eq!(
        done[0]["event_id"],
        json!(last),
        "the completing event is recorded"
    );
    assert_timestamp(&done[0]["completed_at"]);
}

#[tokio::test]
async fn a_failed_event_never_completes() {
    let app = spawn_app().await;
    let (a, b, g) = two_receiver_group(&app).await;
    let unit = Unit::new("svc");
    app.create_event(&a, &unit, true).await;
    app.create_event(&b, &unit, false).await;
    assert!(!app.is_complete(&g, &unit).await);
    assert!(app.completions(&g).await.is_empty());
}

#[tokio::test]
async fn only_the_latest_event_of_each_receiver_counts() {
    let app = spawn_app().await;
    let (a, b, g) = two_receiver_group(&app).await;

    // failure then success: the success is the latest.
    let u1 = Unit::new("u1");
    app.create_event(&a, &u1, false).await;
    app.create_event(&a, &u1, true).await;
    app.create_event(&b, &u1, true).await;
    assert!(app.is_complete(&g, &u1).await);
    assert_eq!(app.completions_for(&g, &u1).await.len(), 1);

    // success then failure: the failure is the latest.
    let u2 = Unit::new("u2");
    app.create_event(&a, &u2, true).await;
    app.create_event(&a, &u2, false).await;
    app.create_event(&b, &u2, true).await;
    assert!(!app.is_complete(&g, &u2).await);
    assert!(app.completions_for(&g, &u2).await.is_empty());

    // and fixing it completes.
    let fix = app.create_event(&a, &u2, true).await;
    assert!(app.is_complete(&g, &u2).await);
    let done = app.completions_for(&g, &u2).await;
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["event_id"], json!(fix));
}

#[tokio::test]
async fn a_later_failure_keeps_the_recorded_completion() {
    let app = spawn_app().await;
    let (a, b, g) = two_receiver_group(&app).await;
    let unit = Unit::new("svc");
    app.create_event(&a, &unit, true).await;
    let completing = app.create_event(&b, &unit, true).await;
    assert!(app.is_complete(&g, &unit).await);

    let failed = app.create_event(&a, &unit, false).await;
    let s = app.status(&g, &unit).await;
    assert_eq!(s["complete"], json!(false), "{s}");
    assert_eq!(
        s["receivers"][0],
        json!({"event_receiver_id": a, "event_id": failed, "success": false})
    );
    let done = app.completions(&g).await;
    assert_eq!(done.len(), 1, "history is not erased");
    assert_eq!(done[0]["event_id"], json!(completing));

    // Succeeding again makes it complete again but records nothing new.
    app.create_event(&a, &unit, true).await;
    assert!(app.is_complete(&g, &unit).await);
    let again = app.completions(&g).await;
    assert_eq!(
        again, done,
        "a completion is recorded once per group and unit"
    );
}

#[tokio::test]
async fn a_later_success_does_not_record_a_second_completion() {
    let app = spawn_app().await;
    let (a, b, g) = two_receiver_group(&app).await;
    let unit = Unit::new("svc");
    app.create_event(&a, &unit, true).await;
    app.create_event(&b, &unit, true).await;
    let first = app.completions(&g).await;
    assert_eq!(first.len(), 1);
    for _ in 0..3 {
        app.create_event(&a, &unit, true).await;
        app.create_event(&b, &unit, true).await;
    }
    assert_eq!(app.completions(&g).await, first);
    assert!(app.is_complete(&g, &unit).await);
}

#[tokio::test]
async fn units_are_distinguished_by_all_five_fields() {
    let app = spawn_app().await;
    let (a, b, g) = two_receiver_group(&app).await;
    let base = Unit::new("svc");
    app.create_event(&a, &base, true).await;
    for field in UNIT_FIELDS {
        let other = base.with(field, "different");
        app.create_event(&b, &other, true).await;
        assert!(
            !app.is_complete(&g, &other).await,
            "a unit differing only in {field} is a separate unit"
        );
        assert!(!app.is_complete(&g, &base).await);
    }
    assert!(app.completions(&g).await.is_empty());

    // Values are matched exactly: case and surrounding spaces matter.
    for variant in [
        base.with("package", "OCI"),
        base.with("package", " oci"),
        base.with("name", "svc "),
    ] {
        app.create_event(&b, &variant, true).await;
        assert!(!app.is_complete(&g, &variant).await, "{variant:?}");
    }
    assert!(app.completions(&g).await.is_empty());

    app.create_event(&b, &base, true).await;
    let done = app.completions(&g).await;
    assert_eq!(done.len(), 1);
    assert!(base.matches(&done[0]));
}

#[tokio::test]
async fn receivers_outside_the_group_never_matter() {
    let app = spawn_app().await;
    let (a, b, g) = two_receiver_group(&app).await;
    let outsider = app.create_receiver().await;
    let unit = Unit::new("svc");

    // An outsider's success cannot complete the group...
    app.create_event(&outsider, &unit, true).await;
    app.create_event(&a, &unit, true).await;
    assert!(!app.is_complete(&g, &unit).await);
    // ...and its failure cannot block it.
    app.create_event(&outsider, &unit, false).await;
    app.create_event(&b, &unit, true).await;
    let s = app.status(&g, &unit).await;
    assert_eq!(s["complete"], json!(true));
    assert_eq!(
        s["receivers"].as_array().unwrap().len(),
        2,
        "status lists only members"
    );
    app.create_event(&outsider, &unit, false).await;
    assert!(app.is_complete(&g, &unit).await);
    assert_eq!(app.completions(&g).await.len(), 1);
}

#[tokio::test]
async fn groups_sharing_a_receiver_are_independent() {
    let app = spawn_app().await;
    let a = app.create_receiver().await;
    let shared = app.create_receiver().await;
    let c = app.create_receiver().await;
    let g1 = app.create_group(&[&a, &shared], true).await;
    let g2 = app.create_group(&[&shared, &c], true).await;
    let unit = Unit::new("svc");

    app.create_event(&a, &unit, true).await;
    let s1 = app.create_event(&shared, &unit, true).await;
    assert!(app.is_complete(&g1, &unit).await);
    assert!(!app.is_complete(&g2, &unit).await);
    assert_eq!(app.completions(&g1).await.len(), 1);
    assert!(app.completions(&g2).await.is_empty());

    let c1 = app.create_event(&c, &unit, true).await;
    assert!(app.is_complete(&g2, &unit).await);
    let g1_done = app.completions(&g1).await;
    let g2_done = app.completions(&g2).await;
    assert_eq!(g1_done.len(), 1, "g2 completing does not touch g1");
    assert_eq!(g1_done[0]["event_id"], json!(s1));
    assert_eq!(g2_done.len(), 1);
    assert_eq!(g2_done[0]["event_id"], json!(c1));

    app.create_event(&shared, &unit, false).await;
    assert!(!app.is_complete(&g1, &unit).await);
    assert!(!app.is_complete(&g2, &unit).await);
    assert_eq!(app.completions(&g1).await.len(), 1);
    assert_eq!(app.completions(&g2).await.len(), 1);
}

#[tokio::test]
async fn a_disabled_group_records_nothing_until_enabled() {
    let app = spawn_app().await;
    let a = app.create_receiver().await;
    let b = app.create_receiver().await;
    let g = app.create_group(&[&a, &b], false).await;
    let done_unit = Unit::new("done");
    let half_unit = Unit::new("half");
    let failed_unit = Unit::new("failed");
    app.create_event(&a, &done_unit, true).await;
    app.create_event(&b, &done_unit, true).await;
    app.create_event(&a, &half_unit, true).await;
    app.create_event(&a, &failed_unit, true).await;
    app.create_event(&b, &failed_unit, true).await;
    app.create_event(&b, &failed_unit, false).await;

    let s = app.status(&g, &done_unit).await;
    assert_eq!(s["complete"], json!(false), "disabled: {s}");
    assert_eq!(s["enabled"], json!(false));
    assert!(
        app.completions(&g).await.is_empty(),
        "disabled records nothing"
    );

    app.set_enabled(&g, true).await;
    let done = app.completions(&g).await;
    assert_eq!(
        done.len(),
        1,
        "enabling records what now holds, only that: {done:?}"
    );
    assert!(done_unit.matches(&done[0]));
    assert_timestamp(&done[0]["completed_at"]);
    assert!(app.is_complete(&g, &done_unit).await);
    assert!(!app.is_complete(&g, &half_unit).await);
    assert!(!app.is_complete(&g, &failed_unit).await);

    // Disabling hides completeness but keeps history; re-enabling records no duplicate.
    app.set_enabled(&g, false).await;
    assert!(!app.is_complete(&g, &done_unit).await);
    assert_eq!(app.completions(&g).await, done);
    app.set_enabled(&g, true).await;
    assert_eq!(app.completions(&g).await, done);

    // Enabled again, events complete units as usual.
    app.create_event(&b, &half_unit, true).await;
    assert!(app.is_complete(&g, &half_unit).await);
    assert_eq!(app.completions(&g).await.len(), 2);
}

#[tokio::test]
async fn events_while_disabled_are_not_recorded_after_disabling() {
    let app = spawn_app().await;
    let (a, b, g) = two_receiver_group(&app).await;
    app.set_enabled(&g, false).await;
    let unit = Unit::new("svc");
    app.create_event(&a, &unit, true).await;
    app.create_event(&b, &unit, true).await;
    assert!(!app.is_complete(&g, &unit).await);
    assert!(app.completions(&g).await.is_empty());
    // Patching something else does not record anything either.
    id_of(&app.patch_group(&g, &json!({"description": "x"})).await);
    assert!(app.completions(&g).await.is_empty());
}

#[tokio::test]
async fn removing_a_receiver_records_completions_that_now_hold() {
    let app = spawn_app().await;
    let (a, b, g) = two_receiver_group(&app).await;
    let ok_fail = Unit::new("ok-fail");
    let fail_ok = Unit::new("fail-ok");
    let only_a = Unit::new("only-a");
    let only_b = Unit::new("only-b");
    app.create_event(&a, &ok_fail, true).await;
    app.create_event(&b, &ok_fail, false).await;
    app.create_event(&a, &fail_ok, false).await;
    app.create_event(&b, &fail_ok, true).await;
    app.create_event(&a, &only_a, true).await;
    app.create_event(&b, &only_b, true).await;
    assert!(app.completions(&g).await.is_empty());

    let res = app
        .delete(&format!("/api/v1/groups/{g}/receivers/{b}"))
        .await;
    assert_eq!(data(&res)["event_receiver_ids"], json!([a]));

    let done = app.completions(&g).await;
    assert_eq!(done.len(), 2, "{done:?}");
    assert!(done.iter().any(|c| ok_fail.matches(c)));
    assert!(done.iter().any(|c| only_a.matches(c)));
    assert!(app.is_complete(&g, &ok_fail).await);
    assert!(app.is_complete(&g, &only_a).await);
    assert!(!app.is_complete(&g, &fail_ok).await);
    assert!(!app.is_complete(&g, &only_b).await);
}

#[tokio::test]
async fn adding_a_receiver_re_evaluates_without_spurious_completions() {
    let app = spawn_app().await;
    let a = app.create_receiver().await;
    let b = app.create_receiver().await;
    let g = app.create_group(&[&a], true).await;
    let done_unit = Unit::new("done");
    let b_only = Unit::new("b-only");
    app.create_event(&a, &done_unit, true).await;
    app.create_event(&b, &b_only, true).await;
    let before = app.completions(&g).await;
    assert_eq!(before.len(), 1);

    let res = app
        .post(
            &format!("/api/v1/groups/{g}/receivers"),
            &json!({"event_receiver_ids": [b]}),
        )
        .await;
    assert_eq!(data(&res)["event_receiver_ids"], json!([a, b]));

    // The new member has no event for done_unit: not complete now, history kept.
    assert!(!app.is_complete(&g, &done_unit).await);
    assert!(!app.is_complete(&g, &b_only).await);
    assert_eq!(app.completions(&g).await, before);

    // The new membership is enforced for new events.
    let fresh = Unit::new("fresh");
    app.create_event(&a, &fresh, true).await;
    assert!(!app.is_complete(&g, &fresh).await);
    app.create_event(&b, &fresh, true).await;
    assert!(app.is_complete(&g, &fresh).await);
    assert_eq!(app.completions(&g).await.len(), 2);
}

#[tokio::test]
async fn adding_to_a_disabled_group_records_nothing() {
    let app = spawn_app().await;
    let a = app.create_receiver().await;
    let b = app.create_receiver().await;
    let g = app.create_group(&[&a, &b], false).await;
    let unit = Unit::new("u");
    app.create_event(&a, &unit, true).await;
    let c = app.create_receiver().await;
    app.create_event(&c, &unit, true).await;
    app.create_event(&b, &unit, true).await;
    data(
        &app.post(
            &format!("/api/v1/groups/{g}/receivers"),
            &json!({"event_receiver_ids": [c]}),
        )
        .await,
    );
    data(
        &app.delete(&format!("/api/v1/groups/{g}/receivers/{b}"))
            .await,
    );
    assert!(app.completions(&g).await.is_empty());
    app.set_enabled(&g, true).await;
    assert_eq!(app.completions(&g).await.len(), 1);
}

#[tokio::test]
async fn batch_events_complete_groups() {
    let app = spawn_app().await;
    let (a, b, g) = two_receiver_group(&app).await;
    let u1 = Unit::new("u1");
    let u2 = Unit::new("u2");
    let batch = json!([
        event_body(&a, &u1, true),
        event_body(&b, &u1, true),
        event_body(&a, &u2, true),
        event_body(&b, &u2, false),
        event_body(&b, &u1, true),
    ]);
    let res = app.post_batch(&batch).await;
    let ids: Vec<String> = data(&res)
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let done = app.completions(&g).await;
    assert_eq!(done.len(), 1, "{done:?}");
    assert!(u1.matches(&done[0]));
    assert_eq!(
        done[0]["event_id"],
        json!(ids[1]),
        "completed by the second item"
    );
    assert!(app.is_complete(&g, &u1).await);
    assert!(!app.is_complete(&g, &u2).await);

    // A batch item failing a unit after its success in the same batch.
    let u3 = Unit::new("u3");
    let batch = json!([
        event_body(&a, &u3, true),
        event_body(&b, &u3, true),
        event_body(&a, &u3, false),
    ]);
    data(&app.post_batch(&batch).await);
    assert!(!app.is_complete(&g, &u3).await);
    assert_eq!(
        app.completions_for(&g, &u3).await.len(),
        1,
        "completed mid-batch, then failed: history kept"
    );
}

#[tokio::test]
async fn status_tracks_the_rule_over_a_long_history() {
    let app = spawn_app().await;
    let a = app.create_receiver().await;
    let b = app.create_receiver().await;
    let c = app.create_receiver().await;
    let g = app.create_group(&[&a, &b, &c], true).await;
    let unit = Unit::new("u");
    let rs = [&a, &b, &c];
    // A fixed pseudo-random history; check status against the rule after each event.
    let mut latest = [None::<bool>; 3];
    let mut ever_complete = false;
    let mut seed: u32 = 12345;
    for _ in 0..60 {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let r = ((seed >> 16) % 3) as usize;
        let ok = !(seed >> 8).is_multiple_of(4);
        app.create_event(rs[r], &unit, ok).await;
        latest[r] = Some(ok);
        let expected = latest.iter().all(|l| *l == Some(true));
        ever_complete |= expected;
        assert_eq!(
            app.is_complete(&g, &unit).await,
            expected,
            "latest: {latest:?}"
        );
    }
    assert!(ever_complete, "the history exercises completion");
    assert_eq!(app.completions(&g).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_final_events_record_exactly_one_completion() {
    let app = Arc::new(spawn_app().await);
    let (a, b, g) = two_receiver_group(&app).await;
    const UNITS: usize = 60;
    let mut tasks = Vec::new();
    for i in 0..UNITS {
        let unit = Unit::new(&format!("unit-{i}"));
        for r in [&a, &b] {
            let app = Arc::clone(&app);
            let (r, unit) = (r.clone(), unit.clone());
            tasks.push(tokio::spawn(async move {
                app.create_event(&r, &unit, true).await
            }));
        }
    }
    for t in tasks {
        t.await.expect("task panicked");
    }
    let done = app.completions(&g).await;
    assert_eq!(done.len(), UNITS, "exactly one completion per unit");
    for i in 0..UNITS {
        let unit = Unit::new(&format!("unit-{i}"));
        assert_eq!(
            done.iter().filter(|c| unit.matches(c)).count(),
            1,
            "unit {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pairs_with_tokio_join_record_one_completion_each() {
    let app = spawn_app().await;
    let (a, b, g) = two_receiver_group(&app).await;
    const UNITS: usize = 40;
    for i in 0..UNITS {
        let unit = Unit::new(&format!("pair-{i}"));
        let (x, y, z, w) = tokio::join!(
            app.create_event(&a, &unit, true),
            app.create_event(&b, &unit, true),
            app.create_event(&a, &unit, true),
            app.create_event(&b, &unit, true),
        );
        let mut all = [x, y, z, w];
        all.sort();
        let done = app.completions_for(&g, &unit).await;
        assert_eq!(done.len(), 1, "unit {i}: {done:?}");
        let eid = done[0]["event_id"].as_str().unwrap();
        assert!(
            all.iter().any(|e| e == eid),
            "completed by one of its events"
        );
    }
    assert_eq!(app.completions(&g).await.len(), UNITS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enabling_concurrently_with_final_events_records_one_completion_per_unit() {
    let app = Arc::new(spawn_app().await);
    let a = app.create_receiver().await;
    let b = app.create_receiver().await;
    let g = app.create_group(&[&a, &b], false).await;
    const UNITS: usize = 40;
    let units: Vec<Unit> = (0..UNITS)
        .map(|i| Unit::new(&format!("race-{i}")))
        .collect();
    for u in &units {
        app.create_event(&a, u, true).await;
    }
    let mut tasks = Vec::new();
    for u in units.clone() {
        let app = Arc::clone(&app);
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            app.create_event(&b, &u, true).await;
        }));
    }
    {
        let app = Arc::clone(&app);
        let g = g.clone();
        tasks.push(tokio::spawn(async move {
            app.set_enabled(&g, true).await;
        }));
    }
    for t in tasks {
        t.await.expect("task panicked");
    }
    let done = app.completions(&g).await;
    for u in &units {
        assert_eq!(
            done.iter().filter(|c| u.matches(c)).count(),
            1,
            "{u:?}: {done:?}"
        );
    }
    assert_eq!(done.len(), UNITS);
}

#[tokio::test]
async fn creating_an_enabled_group_records_completions_that_already_hold() {
    let app = spawn_app().await;
    let a = app.create_receiver().await;
    let b = app.create_receiver().await;
    let done = Unit::new("done");
    let half = Unit::new("half");
    app.create_event(&a, &done, true).await;
    app.create_event(&b, &done, true).await;
    app.create_event(&b, &half, true).await;
    let g = app.create_group(&[&a, &b], true).await;
    assert!(app.is_complete(&g, &done).await);
    let recorded = app.completions(&g).await;
    assert_eq!(
        recorded.len(),
        1,
        "status and history agree from the start: {recorded:?}"
    );
    assert!(done.matches(&recorded[0]));
    assert!(!app.is_complete(&g, &half).await);
    // Created disabled: nothing.
    let off = app.create_group(&[&a, &b], false).await;
    assert!(app.completions(&off).await.is_empty());
}

#[tokio::test]
async fn completions_are_listed_in_the_order_they_happened() {
    let app = spawn_app().await;
    let (a, b, g) = two_receiver_group(&app).await;
    let order = ["zeta", "alpha", "mid", "beta"];
    for name in order {
        app.create_event(&a, &Unit::new(name), true).await;
    }
    // Complete them in a different order from creation and from the alphabet.
    let completion_order = ["mid", "zeta", "beta", "alpha"];
    for name in completion_order {
        app.create_event(&b, &Unit::new(name), true).await;
    }
    let done = app.completions(&g).await;
    let names: Vec<&str> = done.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, completion_order, "oldest first");
    let times: Vec<&str> = done
        .iter()
        .map(|c| c["completed_at"].as_str().unwrap())
        .collect();
    let mut sorted = times.clone();
    sorted.sort_unstable();
    assert_eq!(times, sorted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batches_record_one_completion_per_unit() {
    let app = spawn_app().await;
    let (a, b, g) = two_receiver_group(&app).await;
    const UNITS: usize = 200;
    let units: Vec<Unit> = (0..UNITS).map(|i| Unit::new(&format!("b-{i}"))).collect();
    let batch_for = |r: &str| {
        json!(
            units
                .iter()
                .map(|u| event_body(r, u, true))
                .collect::<Vec<_>>()
        )
    };
    let (batch_a, batch_b) = (batch_for(&a), batch_for(&b));
    let (ra, rb, ra2, rb2) = tokio::join!(
        app.post_batch(&batch_a),
        app.post_batch(&batch_b),
        app.post_batch(&batch_a),
        app.post_batch(&batch_b),
    );
    for res in [&ra, &rb, &ra2, &rb2] {
        assert_eq!(data(res).as_array().unwrap().len(), UNITS);
    }
    let done = app.completions(&g).await;
    assert_eq!(done.len(), UNITS, "exactly one completion per unit");
    for u in &units {
        assert_eq!(done.iter().filter(|c| u.matches(c)).count(), 1, "{u:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removing_a_receiver_concurrently_with_final_events_records_one_completion_per_unit() {
    let app = Arc::new(spawn_app().await);
    let (a, b, g) = two_receiver_group(&app).await;
    const UNITS: usize = 40;
    let units: Vec<Unit> = (0..UNITS).map(|i| Unit::new(&format!("rm-{i}"))).collect();
    for u in &units {
        app.create_event(&a, u, true).await;
        app.create_event(&b, u, false).await;
    }
    assert!(app.completions(&g).await.is_empty());
    let mut tasks = Vec::new();
    for u in units.clone() {
        let app = Arc::clone(&app);
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            app.create_event(&b, &u, true).await;
        }));
    }
    {
        let app = Arc::clone(&app);
        let path = format!("/api/v1/groups/{g}/receivers/{b}");
        tasks.push(tokio::spawn(async move {
            data(&app.delete(&path).await);
        }));
    }
    for t in tasks {
        t.await.expect("task panicked");
    }
    let done = app.completions(&g).await;
    for u in &units {
        assert_eq!(
            done.iter().filter(|c| u.matches(c)).count(),
            1,
            "{u:?}: {done:?}"
        );
        assert!(app.is_complete(&g, u).await);
    }
    assert_eq!(done.len(), UNITS);
}
