//! The fake Kubernetes API server answers a real `kube::Client` as the apiserver would.

#[path = "support/fake_api.rs"]
mod fake_api;

use std::collections::BTreeMap;
use std::time::Duration;

use fake_api::FakeApi;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::core::ObjectMeta;
use kube::runtime::watcher;
use serde_json::json;

const NS: &str = "team-a";

fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some(NS.into()), ..ObjectMeta::default() },
        data: Some(data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        ..ConfigMap::default()
    }
}

fn api_error(error: kube::Error) -> (u16, String) {
    match error {
        kube::Error::Api(status) => (status.code, status.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn create_get_conflict_and_replace() {
    let fake = FakeApi::start().await;
    let api: Api<ConfigMap> = Api::namespaced(fake.client(), NS);

    let missing = api.get("settings").await.unwrap_err();
    assert_eq!(api_error(missing), (404, "NotFound".into()));

    let created = api.create(&PostParams::default(), &config_map("settings", &[("a", "1")])).await.unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.as_deref().is_some_and(|u| !u.is_empty()));
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(meta.generation, Some(1));
    let first_rv: u64 = meta.resource_version.as_deref().unwrap().parse().unwrap();

    let again = api.create(&PostParams::default(), &config_map("settings", &[])).await.unwrap_err();
    assert_eq!(api_error(again), (409, "AlreadyExists".into()));

    let mut stale = created.clone();
    stale.data = Some(BTreeMap::from([("a".into(), "2".into())]));
    let replaced = api.replace("settings", &PostParams::default(), &stale).await.unwrap();
    let second_rv: u64 = replaced.metadata.resource_version.as_deref().unwrap().parse().unwrap();
    assert!(second_rv > first_rv);
    assert_eq!(replaced.metadata.generation, Some(2), "a data change bumps generation");
    assert_eq!(replaced.metadata.uid, created.metadata.uid);

    stale.data = Some(BTreeMap::from([("a".into(), "3".into())]));
    let conflict = api.replace("settings", &PostParams::default(), &stale).await.unwrap_err();
    assert_eq!(api_error(conflict), (409, "Conflict".into()));
    assert_eq!(api.get("settings").await.unwrap().data.unwrap()["a"], "2");

    let unchanged = api.replace("settings", &PostParams::default(), &replaced).await.unwrap();
    assert_eq!(
        unchanged.metadata.resource_version, replaced.metadata.resource_version,
        "a no-op write keeps the resourceVersion"
    );

    api.create(
        &PostParams::default(),
        &ConfigMap {
            metadata: ObjectMeta {
                labels: Some(BTreeMap::from([("app".into(), "x".into())])),
                ..config_map("labelled", &[]).metadata
            },
            ..ConfigMap::default()
        },
    )
    .await
    .unwrap();
    let labelled = api.list(&ListParams::default().labels("app=x")).await.unwrap();
    assert_eq!(labelled.items.len(), 1);
    assert_eq!(labelled.items[0].metadata.name.as_deref(), Some("labelled"));
    assert_eq!(labelled.types.kind, "ConfigMapList");
    assert_eq!(api.list(&ListParams::default()).await.unwrap().items.len(), 2);
    let elsewhere: Api<ConfigMap> = Api::namespaced(fake.client(), "other");
    assert!(elsewhere.list(&ListParams::default()).await.unwrap().items.is_empty());
}

#[tokio::test]
async fn patches_of_every_content_type() {
    let fake = FakeApi::start().await;
    let api: Api<Secret> = Api::namespaced(fake.client(), NS);
    let apply = PatchParams::apply("hangar-test").force();
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "tls", "labels": { "owner": "hangar" } },
        "stringData": { "x": "y" },
        "type": "Opaque",
    });
    let created = api.patch("tls", &apply, &Patch::Apply(&secret)).await.unwrap();
    assert_eq!(created.metadata.namespace.as_deref(), Some(NS));
    let managers: Vec<_> =
        created.metadata.managed_fields.unwrap().iter().map(|m| m.manager.clone().unwrap()).collect();
    assert_eq!(managers, vec!["hangar-test"]);

    let merged = api
        .patch(
            "tls",
            &apply,
            &Patch::Apply(json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "annotations": { "a": "b" } } })),
        )
        .await
        .unwrap();
    assert_eq!(merged.metadata.labels.unwrap()["owner"], "hangar", "apply merges into the stored object");
    assert_eq!(merged.metadata.annotations.unwrap()["a"], "b");

    let patched = api
        .patch("tls", &PatchParams::default(), &Patch::Merge(json!({ "metadata": { "labels": { "owner": null } } })))
        .await
        .unwrap();
    assert!(patched.metadata.labels.unwrap_or_default().is_empty());
    let stale = json!({ "metadata": { "resourceVersion": created.metadata.resource_version, "labels": { "z": "1" } } });
    let conflict = api.patch("tls", &PatchParams::default(), &Patch::Merge(stale)).await.unwrap_err();
    assert_eq!(api_error(conflict), (409, "Conflict".into()));

    let json_patch: json_patch::Patch = serde_json::from_value(json!([
        { "op": "test", "path": "/metadata/annotations/a", "value": "b" },
        { "op": "add", "path": "/metadata/annotations/c", "value": "d" },
    ]))
    .unwrap();
    let patched = api.patch("tls", &PatchParams::default(), &Patch::<()>::Json(json_patch)).await.unwrap();
    assert_eq!(patched.metadata.annotations.unwrap()["c"], "d");
    let failing: json_patch::Patch =
        serde_json::from_value(json!([{ "op": "test", "path": "/metadata/annotations/a", "value": "other" }])).unwrap();
    let invalid = api.patch("tls", &PatchParams::default(), &Patch::<()>::Json(failing)).await.unwrap_err();
    assert_eq!(api_error(invalid), (422, "Invalid".into()));

    let kinds: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| r.content_type.unwrap_or_default())
        .collect();
    assert_eq!(
        kinds,
        vec![
            "application/apply-patch+yaml",
            "application/apply-patch+yaml",
            "application/merge-patch+json",
            "application/merge-patch+json",
            "application/json-patch+json",
            "application/json-patch+json",
        ]
    );
    let missing = api.patch("absent", &PatchParams::default(), &Patch::Merge(json!({}))).await.unwrap_err();
    assert_eq!(api_error(missing), (404, "NotFound".into()));
}

#[tokio::test]
async fn status_subresource_and_main_resource_stay_apart() {
    let fake = FakeApi::start().await;
    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("example.com", "v1", "Widget"), "widgets");
    let api: Api<DynamicObject> = Api::namespaced_with(fake.client(), NS, &resource);
    let widget: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "example.com/v1", "kind": "Widget", "metadata": { "name": "w" }, "spec": { "size": 1 },
    }))
    .unwrap();
    api.create(&PostParams::default(), &widget).await.unwrap();
    let with_status = api
        .patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "ready": true }, "spec": { "size": 9 } })),
        )
        .await
        .unwrap();
    assert_eq!(with_status.data["status"]["ready"], true);
    assert_eq!(with_status.data["spec"]["size"], 1, "the status subresource writes only .status");
    assert_eq!(with_status.metadata.generation, Some(1));

    let spec_change = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "size": 2 }, "status": { "ready": false } })),
        )
        .await
        .unwrap();
    assert_eq!(spec_change.data["spec"]["size"], 2);
    assert_eq!(spec_change.data["status"]["ready"], true, "the main resource keeps .status");
    assert_eq!(spec_change.metadata.generation, Some(2));
    let listed = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.types.kind, "WidgetList");
}

#[tokio::test]
async fn finalizers_hold_deletion_and_owners_take_their_dependents() {
    let fake = FakeApi::start().await;
    let maps: Api<ConfigMap> = Api::namespaced(fake.client(), NS);
    let secrets: Api<Secret> = Api::namespaced(fake.client(), NS);
    let mut owner = config_map("owner", &[]);
    owner.metadata.finalizers = Some(vec!["hangar/cleanup".into()]);
    let owner = maps.create(&PostParams::default(), &owner).await.unwrap();
    let child = Secret {
        metadata: ObjectMeta {
            name: Some("child".into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: "owner".into(),
                uid: owner.metadata.uid.clone().unwrap(),
                controller: Some(true),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        },
        ..Secret::default()
    };
    secrets.create(&PostParams::default(), &child).await.unwrap();

    let answer = maps.delete("owner", &DeleteParams::default()).await.unwrap();
    let marked = answer.left().expect("the object is returned while finalizers remain");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert!(secrets.get("child").await.is_ok(), "dependents stay while the owner is only marked");

    maps.patch("owner", &PatchParams::default(), &Patch::Merge(json!({ "metadata": { "finalizers": null } })))
        .await
        .unwrap();
    assert_eq!(api_error(maps.get("owner").await.unwrap_err()).0, 404);
    assert_eq!(
        api_error(secrets.get("child").await.unwrap_err()).0,
        404,
        "the garbage collector removed the dependent"
    );
}

#[tokio::test]
async fn watcher_sees_changes_and_recovers_from_expired_watches() {
    let fake = FakeApi::start().await;
    let api: Api<ConfigMap> = Api::namespaced(fake.client(), NS);
    api.create(&PostParams::default(), &config_map("before", &[])).await.unwrap();
    let mut events = watcher(api.clone(), watcher::Config::default().timeout(30)).boxed();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("an event in time")
            .expect("stream open")
    };

    assert!(matches!(next().await.unwrap(), watcher::Event::Init));
    assert!(
        matches!(next().await.unwrap(), watcher::Event::InitApply(cm) if cm.metadata.name.as_deref() == Some("before"))
    );
    assert!(matches!(next().await.unwrap(), watcher::Event::InitDone));

    api.create(&PostParams::default(), &config_map("after", &[("k", "v")])).await.unwrap();
    assert!(matches!(next().await.unwrap(), watcher::Event::Apply(cm) if cm.metadata.name.as_deref() == Some("after")));
    api.patch("after", &PatchParams::default(), &Patch::Merge(json!({ "data": { "k": "w" } }))).await.unwrap();
    assert!(matches!(next().await.unwrap(), watcher::Event::Apply(cm) if cm.data.as_ref().unwrap()["k"] == "w"));
    api.delete("before", &DeleteParams::default()).await.unwrap();
    assert!(
        matches!(next().await.unwrap(), watcher::Event::Delete(cm) if cm.metadata.name.as_deref() == Some("before"))
    );

    fake.compact();
    assert!(next().await.is_err(), "the expired watch surfaces as an error");
    assert!(matches!(next().await.unwrap(), watcher::Event::Init), "and the watcher lists again");
    assert!(
        matches!(next().await.unwrap(), watcher::Event::InitApply(cm) if cm.metadata.name.as_deref() == Some("after"))
    );
    assert!(matches!(next().await.unwrap(), watcher::Event::InitDone));
    fake.put(&format!("/api/v1/namespaces/{NS}/configmaps/direct"), json!({ "data": { "via": "store" } }));
    assert!(
        matches!(next().await.unwrap(), watcher::Event::Apply(cm) if cm.metadata.name.as_deref() == Some("direct"))
    );
    let watches = fake.requests().iter().filter(|r| r.is_watch()).count();
    assert!(watches >= 2, "the watcher watched again after the 410 ({watches} watches)");
}

#[tokio::test]
async fn objects_modified_into_or_out_of_a_selector_are_added_or_deleted_for_that_watch() {
    let fake = FakeApi::start().await;
    let api: Api<ConfigMap> = Api::namespaced(fake.client(), NS);
    let mut events = watcher(api.clone(), watcher::Config::default().labels("team=a")).boxed();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("an event in time")
            .expect("stream open")
            .unwrap()
    };
    assert!(matches!(next().await, watcher::Event::Init));
    assert!(matches!(next().await, watcher::Event::InitDone));
    let labelled = |team: &str| Patch::Merge(json!({"metadata": {"labels": {"team": team}}}));
    api.create(&PostParams::default(), &config_map("m", &[])).await.unwrap();
    api.patch("m", &PatchParams::default(), &labelled("a")).await.unwrap();
    assert!(matches!(next().await, watcher::Event::Apply(cm) if cm.metadata.name.as_deref() == Some("m")));
    api.patch("m", &PatchParams::default(), &labelled("b")).await.unwrap();
    assert!(
        matches!(next().await, watcher::Event::Delete(cm) if cm.metadata.labels.as_ref().unwrap()["team"] == "b"),
        "leaving the selection is a deletion for this watch"
    );
    api.patch("m", &PatchParams::default(), &Patch::Merge(json!({"data": {"k": "v"}}))).await.unwrap();
    api.patch("m", &PatchParams::default(), &labelled("a")).await.unwrap();
    assert!(
        matches!(next().await, watcher::Event::Apply(cm) if cm.data.as_ref().unwrap()["k"] == "v"),
        "changes outside the selection are not seen; entering it is"
    );
}

#[tokio::test]
async fn injected_faults_fail_the_matching_requests_only() {
    let fake = FakeApi::start().await;
    let api: Api<ConfigMap> = Api::namespaced(fake.client(), NS);
    api.create(&PostParams::default(), &config_map("c", &[])).await.unwrap();
    fake.fail_next(2, Some(axum::http::Method::GET), "/configmaps/c", 500);
    assert_eq!(api_error(api.get("c").await.unwrap_err()), (500, "InternalError".into()));
    assert!(api.list(&ListParams::default()).await.is_ok(), "other paths are not affected");
    assert_eq!(api_error(api.get("c").await.unwrap_err()).0, 500);
    assert!(api.get("c").await.is_ok(), "only the next two matching requests fail");

    fake.expire_next_watches(1, "/configmaps");
    let stream = api.watch(&kube::api::WatchParams::default(), "1").await.unwrap();
    let events: Vec<_> = stream.collect().await;
    assert_eq!(events.len(), 1);
    assert!(matches!(&events[0], Ok(kube::api::WatchEvent::Error(e)) if e.code == 410));

    assert!(fake.get(&format!("/api/v1/namespaces/{NS}/configmaps/c")).is_some());
    fake.delete(&format!("/api/v1/namespaces/{NS}/configmaps/c"));
    assert_eq!(api_error(api.get("c").await.unwrap_err()).0, 404);
}

#[tokio::test]
async fn lists_are_paginated_with_limit_and_continue() {
    let fake = FakeApi::start().await;
    let api: Api<ConfigMap> = Api::namespaced(fake.client(), NS);
    for i in 0..7 {
        api.create(&PostParams::default(), &config_map(&format!("m{i}"), &[])).await.unwrap();
    }
    fake.put("/api/v1/namespaces/elsewhere/configmaps/x", json!({"metadata": {"name": "x"}}));

    let first = api.list(&ListParams::default().limit(3)).await.unwrap();
    let names = |list: &kube::core::ObjectList<ConfigMap>| {
        list.items.iter().map(|m| m.metadata.name.clone().unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(names(&first), ["m0", "m1", "m2"]);
    assert_eq!(first.metadata.remaining_item_count, Some(4));
    let token = first.metadata.continue_.clone().expect("a continue token");
    let list_rv = first.metadata.resource_version.clone();

    api.create(&PostParams::default(), &config_map("m9", &[])).await.unwrap();
    let second = api.list(&ListParams::default().limit(3).continue_token(&token)).await.unwrap();
    assert_eq!(names(&second), ["m3", "m4", "m5"]);
    assert_eq!(second.metadata.resource_version, list_rv, "every page reports the first page's resourceVersion");
    let last = api
        .list(&ListParams::default().limit(3).continue_token(second.metadata.continue_.as_deref().unwrap()))
        .await
        .unwrap();
    assert_eq!(names(&last), ["m6", "m9"]);
    assert_eq!(last.metadata.continue_, None, "the last page has no token");

    let everything = Api::<ConfigMap>::all(fake.client()).list(&ListParams::default()).await.unwrap();
    assert_eq!(everything.items.len(), 9, "without a limit the list is whole, across namespaces");
    let selected = Api::<ConfigMap>::all(fake.client())
        .list(&ListParams::default().fields("metadata.namespace=elsewhere").limit(1))
        .await
        .unwrap();
    assert_eq!((names(&selected), selected.metadata.continue_), (vec!["x".to_string()], None));

    fake.compact();
    let expired = api.list(&ListParams::default().limit(3).continue_token(&token)).await.unwrap_err();
    assert_eq!(api_error(expired), (410, "Expired".into()));
    let bad = api.list(&ListParams::default().limit(3).continue_token("not-a-token")).await.unwrap_err();
    assert_eq!(api_error(bad).0, 400);
}

#[tokio::test]
async fn a_server_side_apply_that_changes_nothing_writes_nothing() {
    let fake = FakeApi::start().await;
    let api: Api<ConfigMap> = Api::namespaced(fake.client(), NS);
    let params = PatchParams::apply("tester").force();
    let mut desired = config_map("applied", &[("a", "1")]);
    desired.metadata.namespace = None;
    let body = |map: &ConfigMap| {
        let mut value = serde_json::to_value(map).unwrap();
        value["apiVersion"] = json!("v1");
        value["kind"] = json!("ConfigMap");
        value
    };
    let created = api.patch("applied", &params, &Patch::Apply(body(&desired))).await.unwrap();
    let time = |map: &ConfigMap| map.metadata.managed_fields.as_ref().unwrap()[0].time.clone();
    let (rv, stamped) = (created.metadata.resource_version.clone(), time(&created));
    let (writer, events) = futures::channel::mpsc::unbounded();
    let watched = watcher(api.clone(), watcher::Config::default()).for_each(move |event| {
        if let Ok(watcher::Event::Apply(map) | watcher::Event::InitApply(map)) = event {
            let _ = writer.unbounded_send(map.metadata.resource_version.clone());
        }
        async {}
    });
    let watching = tokio::spawn(watched);
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let again = api.patch("applied", &params, &Patch::Apply(body(&desired))).await.unwrap();
    assert_eq!(again.metadata.resource_version, rv, "no new resourceVersion");
    assert_eq!(time(&again), stamped, "managedFields time kept");
    assert_eq!(fake.resource_version().to_string(), rv.clone().unwrap());

    desired.data = Some(BTreeMap::from([("a".into(), "2".into())]));
    let changed = api.patch("applied", &params, &Patch::Apply(body(&desired))).await.unwrap();
    assert_ne!(changed.metadata.resource_version, rv);
    assert_ne!(time(&changed), stamped, "a real change stamps the manager's time anew");
    let another =
        api.patch("applied", &PatchParams::apply("someone-else"), &Patch::Apply(body(&desired))).await.unwrap();
    assert_ne!(another.metadata.resource_version, changed.metadata.resource_version, "a new manager is recorded");

    tokio::time::sleep(Duration::from_millis(300)).await;
    watching.abort();
    let seen: Vec<_> = events.collect::<Vec<_>>().await;
    assert_eq!(
        seen,
        [rv, changed.metadata.resource_version, another.metadata.resource_version],
        "no event for the no-op"
    );
}

#[tokio::test]
async fn status_conditions_merge_by_type_and_belong_to_the_manager_that_applied_them() {
    let fake = FakeApi::start().await;
    fake.register_operator_kinds();
    let path = format!("/apis/mcp-hangar.io/v1alpha1/namespaces/{NS}/mcpservers/s");
    fake.put(&path, json!({"apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPServer", "metadata": {"name": "s", "namespace": NS}, "spec": {"mode": "remote"}}));
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("mcp-hangar.io", "v1alpha1", "MCPServer"));
    let api: Api<DynamicObject> = Api::namespaced_with(fake.client(), NS, &resource);
    let apply = |manager: &'static str, conditions: serde_json::Value| {
        let api = api.clone();
        async move {
            let patch = json!({"apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPServer", "status": {"conditions": conditions}});
            api.patch_status("s", &PatchParams::apply(manager).force(), &Patch::Apply(&patch)).await.unwrap();
        }
    };
    let types = |fake: &FakeApi| -> Vec<(String, String)> {
        fake.get(&path).unwrap()["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["type"].as_str().unwrap().to_string(), c["status"].as_str().unwrap().to_string()))
            .collect()
    };
    let pair = |t: &str, s: &str| (t.to_string(), s.to_string());
    apply("controller", json!([{"type": "Ready", "status": "True"}, {"type": "Degraded", "status": "False"}])).await;
    apply("gateway", json!([{"type": "CircuitBreakerOpen", "status": "True"}])).await;
    assert_eq!(types(&fake), [pair("Ready", "True"), pair("Degraded", "False"), pair("CircuitBreakerOpen", "True")]);
    apply("controller", json!([{"type": "Ready", "status": "False"}])).await;
    assert_eq!(
        types(&fake),
        [pair("Ready", "False"), pair("CircuitBreakerOpen", "True")],
        "the controller's own Degraded it left out is gone; the gateway's entry stays"
    );
    apply("gateway", json!([{"type": "CircuitBreakerOpen", "status": "False"}])).await;
    assert_eq!(types(&fake), [pair("Ready", "False"), pair("CircuitBreakerOpen", "False")]);
    let managers: Vec<String> = fake.get(&path).unwrap()["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["manager"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(managers, ["controller", "gateway"]);
}

#[tokio::test]
async fn an_apply_that_changes_nothing_is_a_no_op_even_a_second_later() {
    let fake = FakeApi::start().await;
    let api: Api<ConfigMap> = Api::namespaced(fake.client(), NS);
    let patch = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
    api.patch("c", &PatchParams::apply("one").force(), &Patch::Apply(&patch)).await.unwrap();
    api.patch("c", &PatchParams::apply("two").force(), &Patch::Apply(&patch)).await.unwrap();
    let version = fake.resource_version();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    api.patch("c", &PatchParams::apply("one").force(), &Patch::Apply(&patch)).await.unwrap();
    assert_eq!(fake.resource_version(), version, "managedFields keep their order and time");
}
