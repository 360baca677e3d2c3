//! The GraphQL API (CONTRACT section 7 and docs/api.md "GraphQL"), against
//! the running app: EPR's queries and mutations, what Cairn adds, the
//! limits, batched loading, subscriptions and the embedded IDE.

use crate::helpers::*;
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const PATH: &str = "/api/v1/graphql/query";

/// POST a GraphQL request; returns status and body.
async fn gql(app: &TestApp, query: &str, variables: Value) -> Response {
    app.post(PATH, &json!({"query": query, "variables": variables}))
        .await
}

/// A successful answer: 200, no errors; returns `data`.
#[track_caller]
fn ok(res: &Response) -> &Value {
    let (status, body) = res;
    assert_eq!(*status, StatusCode::OK, "{body}");
    assert!(body.get("errors").is_none(), "unexpected errors: {body}");
    &body["data"]
}

/// The error messages of an answer with the given status.
#[track_caller]
fn gql_errors(res: &Response, expected: StatusCode) -> Vec<Value> {
    let (status, body) = res;
    assert_eq!(*status, expected, "{body}");
    let errs = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("errors is an array: {body}"))
        .clone();
    assert!(!errs.is_empty(), "{body}");
    errs
}

fn messages(errs: &[Value]) -> Vec<String> {
    errs.iter()
        .map(|e| e["message"].as_str().expect("message string").to_owned())
        .collect()
}

fn codes(errs: &[Value]) -> Vec<String> {
    errs.iter()
        .map(|e| e["extensions"]["code"].as_str().unwrap_or("").to_owned())
        .collect()
}

const EVENT_FIELDS: &str = "id name version release platform_id package description payload \
     success created_at event_receiver_id \
     event_receiver { id name type version description schema fingerprint created_at }";

const GROUP_FIELDS: &str =
    "id name type version description enabled event_receiver_ids created_at updated_at";

#[tokio::test]
async fn by_id_lookups_return_lists_with_the_rest_fields() {
    let app = spawn_app().await;
    let rid = app
        .create_receiver_with_schema(
            json!({"type": "object", "properties": {"k": {"type": "string"}}}),
        )
        .await;
    let eid = app.create_event(&rid, &Unit::new("app"), true).await;
    let gid = app.create_group(&[&rid], true).await;
    let q = format!(
        "query($e: ID!, $r: ID!, $g: ID!) {{ events_by_id(id: $e) {{ {EVENT_FIELDS} }} \
         event_receivers_by_id(id: $r) {{ id name type version description schema fingerprint created_at }} \
         event_receiver_groups_by_id(id: $g) {{ {GROUP_FIELDS} }} }}"
    );
    let res = gql(&app, &q, json!({"e": eid, "r": rid, "g": gid})).await;
    let d = ok(&res);
    // Exactly the REST objects: same field names, same values.
    assert_eq!(
        d["events_by_id"],
        json!([app.get_one("events", &eid).await])
    );
    assert_eq!(
        d["event_receivers_by_id"],
        json!([app.get_one("receivers", &rid).await])
    );
    assert_eq!(
        d["event_receiver_groups_by_id"],
        json!([app.get_one("groups", &gid).await])
    );
    // Unknown and malformed ids: empty lists, not errors.
    let res = gql(
        &app,
        "{ a: events_by_id(id: \"01ARZ3NDEKTSV4RRFFQ69G5FAV\") { id } b: events_by_id(id: \"nope\") { id } \
         c: event_receivers_by_id(id: \"nope\") { id } d: event_receiver_groups_by_id(id: \"01ARZ3NDEKTSV4RRFFQ69G5FAV\") { id } }",
        json!({}),
    )
    .await;
    assert_eq!(ok(&res), &json!({"a": [], "b": [], "c": [], "d": []}));
}

#[tokio::test]
async fn epr_mutations_accept_json_as_a_string_or_an_object() {
    let app = spawn_app().await;
    // EPR clients send the schema and payload as strings holding JSON.
    let res = gql(
        &app,
        r#"mutation { create_event_receiver(event_receiver: {name: "build", type: "ci.build",
             version: "1.0.0", description: "builds",
             schema: "{\"type\": \"object\", \"properties\": {\"n\": {\"type\": \"integer\"}}, \"required\": [\"n\"]}"}) }"#,
        json!({}),
    )
    .await;
    let rid = ok(&res)["create_event_receiver"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ulid(&rid);
    let r = app.get_one("receivers", &rid).await;
    assert_eq!(
        r["schema"],
        json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})
    );
    assert_eq!(
        r["fingerprint"],
        json!(sha256_hex("v1 ci.build builds build 1.0.0"))
    );

    let create = "mutation($e: CreateEventInput!) { create_event(event: $e) }";
    let mut event = json!({"name": "app", "version": "1", "release": "r", "platform_id": "p",
        "package": "oci", "description": "d", "payload": "{\"z\": 1, \"n\": 5, \"a\": [1.50]}",
        "success": true, "event_receiver_id": rid});
    let res = gql(&app, create, json!({"e": event})).await;
    let e1 = ok(&res)["create_event"].as_str().unwrap().to_owned();
    // Kept exactly: key order and number text.
    let (_, text) = app.get_text(&format!("/api/v1/events/{e1}")).await;
    assert!(
        text.contains(r#""payload":{"z":1,"n":5,"a":[1.50]}"#),
        "{text}"
    );

    // The same payload as a JSON object in the variables (sent as text:
    // serde_json's maps here would sort the keys).
    event["payload"] = json!("PAYLOAD");
    let body = json!({"query": create, "variables": {"e": event}})
        .to_string()
        .replace(r#""PAYLOAD""#, r#"{"n": 6, "b": {"y": 2, "x": 1e+400}}"#);
    let (status, text) = app.post_text(PATH, &body).await;
    let res = (status, parse_body(&text));
    let e2 = ok(&res)["create_event"].as_str().unwrap().to_owned();
    let (_, text) = app.get_text(&format!("/api/v1/events/{e2}")).await;
    assert!(
        text.contains(r#""payload":{"n":6,"b":{"y":2,"x":1e+400}}"#),
        "{text}"
    );

    // ...and as an object literal in the document.
    let res = gql(
        &app,
        &format!(
            r#"mutation {{ create_event(event: {{name: "app", version: "1", release: "r",
                 platform_id: "p", package: "oci", description: "d", payload: {{n: 7, m: [true, null]}},
                 event_receiver_id: "{rid}"}}) }}"#
        ),
        json!({}),
    )
    .await;
    let e3 = ok(&res)["create_event"].as_str().unwrap().to_owned();
    let got = app.get_one("events", &e3).await;
    assert_eq!(got["payload"], json!({"n": 7, "m": [true, null]}));
    assert_eq!(got["success"], json!(false), "success defaults to false");

    // The payload comes back out of GraphQL as JSON, not as a string.
    let body = json!({"query": "query($id: ID!) { events_by_id(id: $id) { payload event_receiver { schema } } }",
        "variables": {"id": e2}});
    let (status, text) = app.post_text(PATH, &body.to_string()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        text.contains(r#""payload":{"n":6,"b":{"y":2,"x":1e+400}}"#),
        "{text}"
    );
    let res = (status, parse_body(&text));
    let d = ok(&res);
    assert_eq!(
        d["events_by_id"][0]["event_receiver"]["schema"]["required"],
        json!(["n"])
    );

    // Groups: create (receiver ids as a list), enable, disable.
    let res = gql(
        &app,
        "mutation($g: CreateEventReceiverGroupInput!) { create_event_receiver_group(event_receiver_group: $g) }",
        json!({"g": {"name": "gate", "type": "gate", "version": "1", "description": "d",
                     "event_receiver_ids": [rid, rid]}}),
    )
    .await;
    let gid = ok(&res)["create_event_receiver_group"]
        .as_str()
        .unwrap()
        .to_owned();
    let g = app.get_one("groups", &gid).await;
    assert_eq!(g["enabled"], json!(false));
    assert_eq!(g["event_receiver_ids"], json!([rid]), "duplicates collapse");
    let res = gql(
        &app,
        "mutation($id: ID!) { set_event_receiver_group_enabled(id: $id) }",
        json!({"id": gid}),
    )
    .await;
    assert_eq!(ok(&res)["set_event_receiver_group_enabled"], json!(gid));
    assert_eq!(app.get_one("groups", &gid).await["enabled"], json!(true));
    let res = gql(
        &app,
        "mutation($id: ID!) { set_event_receiver_group_disabled(id: $id) }",
        json!({"id": gid}),
    )
    .await;
    assert_eq!(ok(&res)["set_event_receiver_group_disabled"], json!(gid));
    assert_eq!(app.get_one("groups", &gid).await["enabled"], json!(false));
    // An unknown group is NOT_FOUND, with the REST message.
    let res = gql(
        &app,
        "mutation { set_event_receiver_group_enabled(id: \"01ARZ3NDEKTSV4RRFFQ69G5FAV\") }",
        json!({}),
    )
    .await;
    let errs = gql_errors(&res, StatusCode::OK);
    assert_eq!(codes(&errs), vec!["NOT_FOUND"]);
    assert_eq!(errs[0]["extensions"]["status"], json!(404));
    assert_eq!(errs[0]["path"], json!(["set_event_receiver_group_enabled"]));
}

#[tokio::test]
async fn a_failed_mutation_reports_the_rest_errors_and_stores_nothing() {
    let app = spawn_app().await;
    let rid = app
        .create_receiver_with_schema(
            json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}),
        )
        .await;
    let before = app.list_all("/api/v1/events").await.len();
    let bad = json!({"name": " ", "version": "1", "release": "r", "platform_id": "p",
        "package": "oci", "payload": {"n": "nine"}, "event_receiver_id": rid});
    // REST's answer for the same input...
    let rest = errors(&app.post_event(&bad).await, StatusCode::BAD_REQUEST);
    assert!(rest.len() >= 3, "{rest:?}");
    // ...is GraphQL's, one error per problem, in the same order.
    let res = gql(
        &app,
        "mutation($e: CreateEventInput!) { create_event(event: $e) }",
        json!({"e": bad}),
    )
    .await;
    let errs = gql_errors(&res, StatusCode::OK);
    assert_eq!(messages(&errs), rest);
    assert!(res.1["data"].is_null(), "{}", res.1);
    for (e, msg) in errs.iter().zip(&rest) {
        assert_eq!(e["extensions"]["code"], json!("BAD_USER_INPUT"));
        assert_eq!(e["extensions"]["status"], json!(400));
        let field = msg.split_once(": ").unwrap().0;
        assert_eq!(e["extensions"]["field"], json!(field));
        assert_eq!(e["path"], json!(["create_event"]));
    }
    assert_has_error(&messages(&errs), "name: must not be blank");
    assert_has_error(&messages(&errs), "description: is required");
    assert_has_error(&messages(&errs), "payload/n: ");
    // Nothing stored, nothing in the outbox beyond the receiver's message.
    assert_eq!(app.list_all("/api/v1/events").await.len(), before);

    // Unknown receivers in a group: the same indexed errors as REST.
    let group = json!({"name": "g", "type": "t", "version": "1", "description": "d",
        "event_receiver_ids": [rid, UNKNOWN_ID]});
    let rest = errors(&app.post_group(&group).await, StatusCode::BAD_REQUEST);
    let res = gql(
        &app,
        "mutation($g: CreateEventReceiverGroupInput!) { create_event_receiver_group(event_receiver_group: $g) }",
        json!({"g": group}),
    )
    .await;
    assert_eq!(messages(&gql_errors(&res, StatusCode::OK)), rest);
    assert_eq!(app.list_all("/api/v1/groups").await.len(), 0);

    // A receiver with a schema that does not compile; a string that is
    // not JSON is refused before anything runs.
    let receiver = json!({"name": "n", "type": "t", "version": "1", "description": "d",
        "schema": {"type": "no-such-type"}});
    let rest = errors(&app.post_receiver(&receiver).await, StatusCode::BAD_REQUEST);
    let res = gql(
        &app,
        "mutation($r: CreateEventReceiverInput!) { create_event_receiver(event_receiver: $r) }",
        json!({"r": receiver}),
    )
    .await;
    assert_eq!(messages(&gql_errors(&res, StatusCode::OK)), rest);
    let res = gql(
        &app,
        r#"mutation { create_event_receiver(event_receiver: {name: "n", type: "t", version: "1", description: "d", schema: "{not json"}) }"#,
        json!({}),
    )
    .await;
    let errs = gql_errors(&res, StatusCode::OK);
    assert!(
        messages(&errs)[0].contains("must hold JSON text"),
        "{errs:?}"
    );
    assert_eq!(codes(&errs), vec!["BAD_USER_INPUT"]);
    assert_eq!(app.list_all("/api/v1/receivers").await.len(), 1);
}

#[tokio::test]
async fn list_queries_filter_and_page_with_a_reachable_next_cursor() {
    let app = spawn_app().await;
    let r1 = app.create_receiver().await;
    let r2 = app.create_receiver().await;
    let mut mine = Vec::new();
    for i in 0..5 {
        mine.push(app.create_event(&r1, &Unit::new("app"), i % 2 == 0).await);
        app.create_event(&r2, &Unit::new("other"), true).await;
    }
    let q = "query($f: FindEventInput!, $limit: Int, $cursor: String) {
        events(event: $f, limit: $limit, cursor: $cursor) { id name success event_receiver_id } }";
    // Follow the cursor from extensions.next_cursor until it is absent.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let res = gql(
            &app,
            q,
            json!({"f": {"name": "app", "event_receiver_id": r1}, "limit": 2, "cursor": cursor}),
        )
        .await;
        for e in ok(&res)["events"].as_array().unwrap() {
            assert_eq!(e["name"], json!("app"));
            seen.push(e["id"].as_str().unwrap().to_owned());
        }
        match res.1["extensions"]["next_cursor"]["events"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, mine, "every page, in id order, nothing twice");
    // Filters AND together, as REST's.
    let res = gql(
        &app,
        q,
        json!({"f": {"name": "app", "success": true, "event_receiver_id": r1}}),
    )
    .await;
    let rest = app
        .list_all(&format!(
            "/api/v1/events?name=app&success=true&event_receiver_id={r1}"
        ))
        .await;
    assert_eq!(ids(ok(&res)["events"].as_array().unwrap()), ids(&rest));
    assert_eq!(rest.len(), 3);
    // `id` in the filter, as EPR allows.
    let res = gql(&app, q, json!({"f": {"id": mine[1]}})).await;
    assert_eq!(
        ids(ok(&res)["events"].as_array().unwrap()),
        vec![mine[1].clone()]
    );
    let res = gql(&app, q, json!({"f": {"id": mine[1], "name": "other"}})).await;
    assert_eq!(ok(&res)["events"], json!([]));
    // Aliased lists each get their own cursor.
    let res = gql(
        &app,
        "{ a: events(event: {name: \"app\"}, limit: 1) { id } b: events(event: {name: \"other\"}, limit: 10) { id } }",
        json!({}),
    )
    .await;
    ok(&res);
    assert!(
        res.1["extensions"]["next_cursor"]["a"].is_string(),
        "{}",
        res.1
    );
    assert!(
        res.1["extensions"]["next_cursor"].get("b").is_none(),
        "{}",
        res.1
    );

    // Receivers and groups.
    let g = app.create_group(&[&r1], true).await;
    app.create_group(&[&r2], false).await;
    let res = gql(
        &app,
        "{ event_receivers(event_receiver: {type: \"build\"}, limit: 1) { id type }
           event_receiver_groups(event_receiver_group: {name: \"release-gate\", enabled: true}) { id enabled } }",
        json!({}),
    )
    .await;
    let d = ok(&res);
    assert_eq!(
        ids(d["event_receivers"].as_array().unwrap()),
        vec![r1.clone()]
    );
    assert!(res.1["extensions"]["next_cursor"]["event_receivers"].is_string());
    assert_eq!(ids(d["event_receiver_groups"].as_array().unwrap()), vec![g]);

    // Bad paging arguments and filter ids: REST's messages.
    let res = gql(
        &app,
        "{ events(event: {event_receiver_id: \"zz\"}, limit: 0, cursor: \"garbage\") { id } }",
        json!({}),
    )
    .await;
    let errs = gql_errors(&res, StatusCode::OK);
    assert_eq!(
        messages(&errs),
        vec![
            "limit: must be an integer from 1 to 1000, got 0",
            "cursor: is not a cursor this server issued",
            "event_receiver_id: is not an event receiver id: \"zz\"",
        ]
    );
    let res = gql(
        &app,
        "{ event_receivers(event_receiver: {}, limit: 1001) { id } }",
        json!({}),
    )
    .await;
    assert_eq!(
        messages(&gql_errors(&res, StatusCode::OK)),
        vec!["limit: must be an integer from 1 to 1000, got 1001"]
    );
}

#[tokio::test]
async fn group_status_completions_and_membership_mutations() {
    let app = spawn_app().await;
    let r1 = app.create_receiver().await;
    let r2 = app.create_receiver().await;
    let gid = app.create_group(&[&r1], true).await;
    let unit = Unit::new("svc");
    let e1 = app.create_event(&r1, &unit, true).await;
    let status_q = "query($id: ID!, $u: String, $v: String, $r: String, $p: String, $k: String) {
        group_status(id: $id, name: $u, version: $v, release: $r, platform_id: $p, package: $k) {
          complete enabled receivers { event_receiver_id event_id success } } }";
    let vars = |id: &str| {
        json!({"id": id, "u": unit.name, "v": unit.version, "r": unit.release,
               "p": unit.platform_id, "k": unit.package})
    };
    let res = gql(&app, status_q, vars(&gid)).await;
    assert_eq!(ok(&res)["group_status"], app.status(&gid, &unit).await);
    assert_eq!(
        ok(&res)["group_status"],
        json!({"complete": true, "enabled": true,
               "receivers": [{"event_receiver_id": r1, "event_id": e1, "success": true}]})
    );
    // A missing unit field: REST's message.
    let mut partial = vars(&gid);
    partial["k"] = Value::Null;
    let res = gql(&app, status_q, partial).await;
    assert_eq!(
        messages(&gql_errors(&res, StatusCode::OK)),
        vec!["package: is required"]
    );
    let res = gql(
        &app,
        "query($id: ID!) { group_completions(id: $id, limit: 5) {
            event_receiver_group_id name version release platform_id package completed_at event_id } }",
        json!({"id": gid}),
    )
    .await;
    let got = ok(&res)["group_completions"].as_array().unwrap().clone();
    let rest = app.completions(&gid).await;
    assert_eq!(got.len(), 1);
    for field in [
        "name",
        "version",
        "release",
        "platform_id",
        "package",
        "completed_at",
        "event_id",
    ] {
        assert_eq!(got[0][field], rest[0][field], "{field}");
    }
    assert_eq!(got[0]["event_receiver_group_id"], json!(gid));

    // Add a receiver: returns the group; status now incomplete.
    let res = gql(
        &app,
        &format!(
            "mutation($id: ID!, $ids: [ID!]) {{ add_event_receiver_group_receivers(id: $id, event_receiver_ids: $ids) {{ {GROUP_FIELDS} event_receivers {{ id }} }} }}"
        ),
        json!({"id": gid, "ids": [r2, r1]}),
    )
    .await;
    let g = &ok(&res)["add_event_receiver_group_receivers"];
    assert_eq!(g["event_receiver_ids"], json!([r1, r2]));
    assert_eq!(g["event_receivers"], json!([{"id": r1}, {"id": r2}]));
    assert!(!app.is_complete(&gid, &unit).await);
    // Adding an unknown receiver: REST's indexed error.
    let res = gql(
        &app,
        "mutation($id: ID!, $ids: [ID!]) { add_event_receiver_group_receivers(id: $id, event_receiver_ids: $ids) { id } }",
        json!({"id": gid, "ids": [UNKNOWN_ID]}),
    )
    .await;
    assert_eq!(
        messages(&gql_errors(&res, StatusCode::OK)),
        vec![format!(
            "event_receiver_ids[0]: no event receiver with id \"{UNKNOWN_ID}\""
        )]
    );
    // Remove: back to complete (re-evaluated), then the last one is refused.
    let remove = "mutation($id: ID!, $r: ID!) { remove_event_receiver_group_receiver(id: $id, event_receiver_id: $r) { event_receiver_ids } }";
    let res = gql(&app, remove, json!({"id": gid, "r": r2})).await;
    assert_eq!(
        ok(&res)["remove_event_receiver_group_receiver"]["event_receiver_ids"],
        json!([r1])
    );
    assert!(app.is_complete(&gid, &unit).await);
    let res = gql(&app, remove, json!({"id": gid, "r": r1})).await;
    let errs = gql_errors(&res, StatusCode::OK);
    assert_eq!(
        messages(&errs),
        vec!["event_receiver_ids: a group must keep at least one event receiver"]
    );
    let res = gql(&app, remove, json!({"id": gid, "r": r2})).await;
    assert_eq!(codes(&gql_errors(&res, StatusCode::OK)), vec!["NOT_FOUND"]);
    let res = gql(&app, status_q, vars(UNKNOWN_ID)).await;
    assert_eq!(codes(&gql_errors(&res, StatusCode::OK)), vec!["NOT_FOUND"]);
}

/// `{ __schema { types { fields { type { fields { type { ... } } } } } } }`
/// nested `levels` deep through the introspection cycle.
fn introspection_bomb(levels: usize) -> String {
    let mut q = String::from("{ __schema { types { name ");
    for _ in 0..levels {
        q.push_str("fields { type { name ");
    }
    for _ in 0..levels {
        q.push_str("} } ");
    }
    q.push_str("} } }");
    q
}

#[tokio::test]
async fn depth_bombs_oversized_and_too_complex_queries_are_refused_before_resolving() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    app.create_event(&rid, &Unit::new("a"), true).await;

    // A depth bomb: 400, QUERY_TOO_DEEP, fast.
    let started = Instant::now();
    let res = gql(&app, &introspection_bomb(30), json!({})).await;
    let errs = gql_errors(&res, StatusCode::BAD_REQUEST);
    assert_eq!(codes(&errs), vec!["QUERY_TOO_DEEP"], "{errs:?}");
    assert!(res.1["data"].is_null());
    // Introspection cycles within the depth limit are refused too.
    let res = gql(&app, &introspection_bomb(4), json!({})).await;
    let errs = gql_errors(&res, StatusCode::BAD_REQUEST);
    assert_eq!(codes(&errs), vec!["QUERY_TOO_DEEP"], "{errs:?}");
    assert!(messages(&errs)[0].contains("introspection"), "{errs:?}");
    // A fragment bomb (4^20 fields once expanded): measured, not expanded.
    let mut bomb = String::from("query { ...F0 }\n");
    for i in 0..20 {
        let next = i + 1;
        bomb.push_str(&format!(
            "fragment F{i} on Query {{ ...F{next} ...F{next} ...F{next} ...F{next} }}\n"
        ));
    }
    bomb.push_str("fragment F20 on Query { __typename }\n");
    let res = tokio::time::timeout(Duration::from_secs(10), gql(&app, &bomb, json!({})))
        .await
        .expect("a fragment bomb is refused at once");
    assert_eq!(
        codes(&gql_errors(&res, StatusCode::BAD_REQUEST)),
        vec!["QUERY_TOO_COMPLEX"],
        "{}",
        res.1
    );
    // An oversized document: 413 before it is parsed.
    let huge = format!("{{ {} }}", "__typename ".repeat(4000));
    let res = gql(&app, &huge, json!({})).await;
    let errs = gql_errors(&res, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(codes(&errs), vec!["QUERY_TOO_LARGE"]);
    assert!(messages(&errs)[0].contains("32768"), "{errs:?}");
    // Many full pages in one document: over the complexity limit.
    let res = gql(
        &app,
        &format!(
            "{{ {} }}",
            (0..3)
                .map(|i| format!("a{i}: events(event: {{}}, limit: 1000) {{ {EVENT_FIELDS} }}"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        json!({}),
    )
    .await;
    assert_eq!(
        codes(&gql_errors(&res, StatusCode::BAD_REQUEST)),
        vec!["QUERY_TOO_COMPLEX"]
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refusals are cheap: {:?}",
        started.elapsed()
    );
    // ...while one full page with receivers, and the IDE's introspection
    // (as deep as GraphiQL's), pass under the defaults.
    let res = gql(
        &app,
        &format!("{{ events(event: {{}}, limit: 1000) {{ {EVENT_FIELDS} }} }}"),
        json!({}),
    )
    .await;
    assert_eq!(ok(&res)["events"].as_array().unwrap().len(), 1);
    let res = gql(&app, INTROSPECTION, json!({})).await;
    assert!(ok(&res)["__schema"]["types"].as_array().unwrap().len() > 10);

    // Not GraphQL at all: request errors in GraphQL's shape.
    let res = app.post(PATH, &json!({"variables": {}})).await;
    assert_eq!(
        messages(&gql_errors(&res, StatusCode::BAD_REQUEST)),
        vec!["query: is required"]
    );
    let res = app
        .post(PATH, &json!({"query": "{ events_by_id(id: ) }"}))
        .await;
    assert_eq!(
        codes(&gql_errors(&res, StatusCode::BAD_REQUEST)),
        vec!["GRAPHQL_PARSE_FAILED"]
    );
    let res = app.post(PATH, &json!({"query": "{ nope }"})).await;
    assert_eq!(
        codes(&gql_errors(&res, StatusCode::BAD_REQUEST)),
        vec!["GRAPHQL_VALIDATION_FAILED"]
    );
    let res = app
        .post(PATH, &json!({"query": "{ __typename }", "variables": [1]}))
        .await;
    assert_eq!(
        messages(&gql_errors(&res, StatusCode::BAD_REQUEST)),
        vec!["variables: must be a JSON object"]
    );
    let (status, _, text) = app
        .send_raw(reqwest::Method::POST, PATH, Some("text/plain"), "{}")
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{text}");
    assert!(
        parse_body(&text)["errors"][0]["message"].is_string(),
        "{text}"
    );
    // A plain GET of the query path says how to use it.
    let res = app.get(PATH).await;
    assert_eq!(res.0, StatusCode::BAD_REQUEST, "{}", res.1);
}

/// The introspection query of graphql-js 16 (what GraphiQL sends).
const INTROSPECTION: &str = "query IntrospectionQuery { __schema { queryType { name } mutationType { name }
  subscriptionType { name } types { ...FullType } directives { name description locations args { ...InputValue } } } }
fragment FullType on __Type { kind name description fields(includeDeprecated: true) { name description
  args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason }
  inputFields { ...InputValue } interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason } possibleTypes { ...TypeRef } }
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type { kind name ofType { kind name ofType { kind name ofType { kind name ofType {
  kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } }";

#[tokio::test]
async fn each_limit_follows_its_setting() {
    let app = spawn_app_with(|s| {
        s.graphql_max_depth = 3;
        s.graphql_max_list = 5;
        s.graphql_max_complexity = 50;
        s.graphql_max_query_bytes = 200;
    })
    .await;
    let rid = app.create_receiver().await;
    app.create_event(&rid, &Unit::new("a"), true).await;
    // Depth 3 passes, depth 4 does not.
    let res = gql(
        &app,
        "{ events(limit: 1) { event_receiver { id } } }",
        json!({}),
    )
    .await;
    ok(&res);
    let res = gql(
        &app,
        "{ event_receiver_groups(limit: 1) { event_receivers { id } } __schema { types { fields { name } } } }",
        json!({}),
    )
    .await;
    let errs = gql_errors(&res, StatusCode::BAD_REQUEST);
    assert_eq!(codes(&errs), vec!["QUERY_TOO_DEEP"]);
    assert!(messages(&errs)[0].contains("limit of 3"), "{errs:?}");
    // The list cap.
    let res = gql(&app, "{ events(limit: 5) { id } }", json!({})).await;
    ok(&res);
    let res = gql(&app, "{ events(limit: 6) { id } }", json!({})).await;
    assert_eq!(
        messages(&gql_errors(&res, StatusCode::OK)),
        vec!["limit: must be an integer from 1 to 5, got 6"]
    );
    // Complexity: 5 events x 3 fields fits in 50, 5 x 11 does not.
    let res = gql(&app, "{ events(limit: 5) { id name version } }", json!({})).await;
    ok(&res);
    let res = gql(
        &app,
        "{ events(limit: 5) { id name version release platform_id package description success payload created_at event_receiver_id } }",
        json!({}),
    )
    .await;
    assert_eq!(
        codes(&gql_errors(&res, StatusCode::BAD_REQUEST)),
        vec!["QUERY_TOO_COMPLEX"]
    );
    // Document size.
    let res = gql(
        &app,
        &format!("{{ {} }}", "__typename ".repeat(30)),
        json!({}),
    )
    .await;
    let errs = gql_errors(&res, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        messages(&errs)[0].contains("limit of 200 bytes"),
        "{errs:?}"
    );
}

#[tokio::test]
async fn a_thousand_events_with_their_receivers_take_a_bounded_number_of_store_calls() {
    let app = spawn_app().await;
    let receivers = [
        app.create_receiver().await,
        app.create_receiver().await,
        app.create_receiver().await,
    ];
    let items: Vec<Value> = (0..1000)
        .map(|i| event_body(&receivers[i % 3], &Unit::new(&format!("u{i}")), true))
        .collect();
    data(&app.post_batch(&json!(items)).await);
    let calls = |res: &Response| -> u64 {
        res.1["extensions"]["store_calls"]
            .as_u64()
            .unwrap_or_else(|| panic!("store_calls is reported: {}", res.1))
    };
    let q = |limit: usize| {
        format!(
            "{{ events(event: {{}}, limit: {limit}) {{ id event_receiver {{ id name schema }} }} }}"
        )
    };
    let res = gql(&app, &q(1000), json!({})).await;
    let events = ok(&res)["events"].as_array().unwrap().clone();
    assert_eq!(events.len(), 1000);
    for e in &events {
        assert!(receivers.contains(&e["event_receiver"]["id"].as_str().unwrap().to_owned()));
    }
    let thousand = calls(&res);
    // One list read and one batched receiver read, however many events.
    assert!(thousand <= 2, "1000 events cost {thousand} store calls");
    let res = gql(&app, &q(10), json!({})).await;
    assert_eq!(
        calls(&res),
        thousand,
        "the count does not grow with the page"
    );
    // The counter counts: each by-id lookup is its own store call.
    let res = gql(
        &app,
        &format!(
            "{{ {} }}",
            receivers
                .iter()
                .enumerate()
                .map(|(i, r)| format!("r{i}: event_receivers_by_id(id: \"{r}\") {{ id }}"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        json!({}),
    )
    .await;
    ok(&res);
    assert_eq!(calls(&res), 3);
    // And the metric sees every request's count.
    let (_, metrics) = app.get_text("/metrics").await;
    assert!(metrics.contains("cairn_graphql_store_calls"), "{metrics}");
}

#[tokio::test]
async fn the_ide_is_served_from_the_binary_with_local_assets_only() {
    let app = spawn_app().await;
    let (status, headers, page) = app
        .send_raw(reqwest::Method::GET, "/api/v1/graphql", None, "")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.contains("GraphiQL"), "{page}");
    for absolute in ["http://", "https://", "=\"//", "url("] {
        assert!(!page.contains(absolute), "no {absolute} anywhere: {page}");
    }
    let mut urls = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for part in page.split(attr).skip(1) {
            urls.push(part.split('"').next().unwrap().to_owned());
        }
    }
    assert_eq!(urls.len(), 4, "{urls:?}");
    for url in &urls {
        assert!(url.starts_with("/api/v1/graphql/assets/"), "{url}");
        let (status, headers, body) = app.send_raw(reqwest::Method::GET, url, None, "").await;
        assert_eq!(status, StatusCode::OK, "{url}");
        let ct = headers["content-type"].to_str().unwrap();
        assert!(
            ct.starts_with("text/javascript") || ct.starts_with("text/css"),
            "{url}: {ct}"
        );
        assert!(body.len() > 5000, "{url} has content");
    }
    let res = app.get("/api/v1/graphql/assets/nope.js").await;
    errors(&res, StatusCode::NOT_FOUND);
}

// ---- subscriptions (graphql-transport-ws) -------------------------------------

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(app: &TestApp) -> Ws {
    let mut req = format!("ws://{}{PATH}", app.addr)
        .into_client_request()
        .expect("ws request");
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut ws, res) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket handshake");
    assert_eq!(
        res.headers()["sec-websocket-protocol"],
        "graphql-transport-ws"
    );
    // Credentials in the connection_init payload, as browsers send them.
    let init = match &app.admin_key {
        Some(key) => {
            json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {key}")}})
        }
        None => json!({"type": "connection_init"}),
    };
    send(&mut ws, init).await;
    assert_eq!(next(&mut ws).await["type"], json!("connection_ack"));
    ws
}

async fn send(ws: &mut Ws, msg: Value) {
    ws.send(Message::Text(msg.to_string().into()))
        .await
        .expect("ws send");
}

/// The next protocol message (pings answered), within 15 s.
async fn next(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .expect("a message within 15 s")
            .expect("the socket is open")
            .expect("a websocket message");
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).expect("JSON message");
            if v["type"] == json!("ping") {
                send(ws, json!({"type": "pong"})).await;
                continue;
            }
            return v;
        }
    }
}

async fn subscribe(ws: &mut Ws, id: &str, query: &str, variables: Value) {
    send(
        ws,
        json!({"id": id, "type": "subscribe", "payload": {"query": query, "variables": variables}}),
    )
    .await;
}

/// Whether anything arrives within `wait`.
async fn quiet(ws: &mut Ws, wait: Duration) -> bool {
    tokio::time::timeout(wait, ws.next()).await.is_err()
}

#[tokio::test]
async fn subscriptions_stream_new_events_and_completions_filtered() {
    let app = spawn_app().await;
    let r1 = app.create_receiver().await;
    let r2 = app.create_receiver().await;
    let gid = app.create_group(&[&r1, &r2], true).await;
    let unit = Unit::new("svc");
    // Made before subscribing: never streamed.
    app.create_event(&r1, &Unit::new("old"), true).await;

    let mut ws = ws_connect(&app).await;
    subscribe(
        &mut ws,
        "ev",
        &format!(
            "subscription($f: LiveFilter) {{ events_created(filter: $f) {{ {EVENT_FIELDS} }} }}"
        ),
        json!({"f": {"event_receiver_id": r1, "name": "svc"}}),
    )
    .await;
    subscribe(
        &mut ws,
        "done",
        "subscription($f: LiveFilter) { group_completions(filter: $f) {
            event_receiver_group_id name version release platform_id package completed_at event_id } }",
        json!({"f": {"event_receiver_group_id": gid}}),
    )
    .await;
    // The subscriptions are registered once the server answered anything;
    // give the two a moment to start.
    tokio::time::sleep(Duration::from_millis(200)).await;

    app.create_event(&r1, &Unit::new("other-unit"), true).await; // filtered out (name)
    app.create_event(&r2, &unit, true).await; // filtered out (receiver), no completion yet
    let e1 = app.create_event(&r1, &unit, true).await; // streamed, and completes the group

    let mut got_event = None;
    let mut got_completion = None;
    while got_event.is_none() || got_completion.is_none() {
        let m = next(&mut ws).await;
        assert_eq!(m["type"], json!("next"), "{m}");
        assert!(m["payload"].get("errors").is_none(), "{m}");
        match m["id"].as_str() {
            Some("ev") => {
                assert!(got_event.is_none(), "one event only: {m}");
                got_event = Some(m["payload"]["data"]["events_created"].clone());
            }
            Some("done") => {
                assert!(got_completion.is_none(), "one completion only: {m}");
                got_completion = Some(m["payload"]["data"]["group_completions"].clone());
            }
            _ => panic!("unexpected message {m}"),
        }
    }
    // The streamed event is the stored one, receiver and all.
    assert_eq!(got_event.unwrap(), app.get_one("events", &e1).await);
    let c = got_completion.unwrap();
    let rest = app.completions_for(&gid, &unit).await;
    assert_eq!(c["event_id"], json!(e1));
    assert_eq!(c["event_receiver_group_id"], json!(gid));
    assert_eq!(c["completed_at"], rest[0]["completed_at"]);
    assert!(unit.matches(&c));
    assert!(
        quiet(&mut ws, Duration::from_millis(300)).await,
        "nothing else arrives"
    );

    // Stop one subscription: the server completes it; the other goes on.
    send(&mut ws, json!({"id": "done", "type": "complete"})).await;
    let e2 = app.create_event(&r1, &unit, false).await;
    let mut m = next(&mut ws).await;
    if m == json!({"id": "done", "type": "complete"}) {
        m = next(&mut ws).await;
    }
    assert_eq!(m["id"], json!("ev"), "{m}");
    assert_eq!(m["payload"]["data"]["events_created"]["id"], json!(e2));
}

#[tokio::test]
async fn subscriptions_follow_group_membership_and_report_bad_filters() {
    let app = spawn_app().await;
    let r1 = app.create_receiver().await;
    let r2 = app.create_receiver().await;
    let gid = app.create_group(&[&r1], false).await;
    let mut ws = ws_connect(&app).await;
    subscribe(
        &mut ws,
        "g",
        "subscription($g: ID) { events_created(filter: {event_receiver_group_id: $g}) { id event_receiver_id } }",
        json!({"g": gid}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.create_event(&r2, &Unit::new("a"), true).await; // not a member yet
    let res = app
        .post(
            &format!("/api/v1/groups/{gid}/receivers"),
            &json!({"event_receiver_ids": [r2]}),
        )
        .await;
    data(&res);
    let e = app.create_event(&r2, &Unit::new("b"), true).await; // now a member
    let m = next(&mut ws).await;
    assert_eq!(
        m["payload"]["data"]["events_created"]["id"],
        json!(e),
        "{m}"
    );

    // A malformed or unknown group in the filter: an error, then complete.
    subscribe(
        &mut ws,
        "bad",
        "subscription { events_created(filter: {event_receiver_group_id: \"01ARZ3NDEKTSV4RRFFQ69G5FAV\", event_receiver_id: \"x\"}) { id } }",
        json!({}),
    )
    .await;
    let m = next(&mut ws).await;
    assert_eq!(m["id"], json!("bad"), "{m}");
    let msgs: Vec<String> = m["payload"]
        .as_array()
        .or_else(|| m["payload"]["errors"].as_array())
        .unwrap_or_else(|| panic!("errors in {m}"))
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        msgs.contains(&"event_receiver_id: is not an event receiver id: \"x\"".to_owned()),
        "{msgs:?}"
    );

    // The limits hold on the WebSocket too.
    subscribe(
        &mut ws,
        "deep",
        &format!("subscription {}", introspection_bomb(30)),
        json!({}),
    )
    .await;
    let mut m = next(&mut ws).await;
    if m == json!({"id": "bad", "type": "complete"}) {
        m = next(&mut ws).await;
    }
    assert_eq!(m["id"], json!("deep"), "{m}");
    let errs = m["payload"]
        .as_array()
        .or_else(|| m["payload"]["errors"].as_array())
        .unwrap_or_else(|| panic!("errors in {m}"));
    assert_eq!(
        errs[0]["extensions"]["code"],
        json!("QUERY_TOO_DEEP"),
        "{m}"
    );

    // Stopping the server with a subscription open: it stops (within the
    // 30 s `stop` allows) and the subscription ends.
    let mut app = app;
    let started = Instant::now();
    app.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(Message::Text(t))) if t.contains("\"complete\"") => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the subscription ends when the server stops");
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_is_told_and_closed() {
    let app = spawn_app_with(|s| s.live_capacity = 2).await;
    let rid = app.create_receiver().await;
    let mut ws = ws_connect(&app).await;
    subscribe(
        &mut ws,
        "all",
        "subscription { events_created { id payload } }",
        json!({}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // One commit of 1000 events reaches the feed at once: far more than
    // two messages of buffer.
    let items: Vec<Value> = (0..1000)
        .map(|i| event_body(&rid, &Unit::new(&format!("u{i}")), true))
        .collect();
    data(&app.post_batch(&json!(items)).await);
    let mut delivered = 0;
    loop {
        let m = next(&mut ws).await;
        match m["type"].as_str() {
            Some("next") if m["payload"].get("errors").is_some() => {
                let err = &m["payload"]["errors"][0];
                assert_eq!(
                    err["extensions"]["code"],
                    json!("SUBSCRIPTION_LAGGED"),
                    "{m}"
                );
                assert!(err["message"].as_str().unwrap().contains("behind"), "{m}");
            }
            Some("next") => delivered += 1,
            Some("complete") => break,
            _ => panic!("unexpected {m}"),
        }
    }
    assert!(
        delivered < 1000,
        "the stream ended early, after {delivered}"
    );
}

#[tokio::test]
async fn subscriptions_see_writes_made_on_another_node() {
    let a = spawn_app().await;
    let Some(db) = &a.database else {
        eprintln!("skipping: two nodes share a store only on PostgreSQL (the api_postgres target)");
        return;
    };
    let url = db.url.clone();
    let mut b = spawn_app_with(|s| s.database_url = Some(url)).await;
    // Node B shares A's store, so it made no admin key of its own: it
    // takes A's.
    assert!(
        b.admin_key.is_none(),
        "only the first node writes admin.key"
    );
    b.admin_key = a.admin_key.clone();
    b.client = client_with(b.admin_key.as_deref());
    let rid = b.create_receiver().await;
    let mut ws = ws_connect(&a).await;
    subscribe(
        &mut ws,
        "x",
        "subscription($r: ID) { events_created(filter: {event_receiver_id: $r}) { id } }",
        json!({"r": rid}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Written on node B; node A's feed finds it by polling.
    let e = b.create_event(&rid, &Unit::new("n"), true).await;
    let m = next(&mut ws).await;
    assert_eq!(
        m["payload"]["data"]["events_created"]["id"],
        json!(e),
        "{m}"
    );
}
