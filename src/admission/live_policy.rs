//! Keeps the webhook's policy in step with the cluster: watches MCPPermissionProfiles, the
//! MCPAdmissionPolicy and MCPServers, and puts a new [`PolicyState`] in force after every
//! change, so an edit takes effect on the next admission request without a restart.
//!
//! A stored object that fails the rules (the webhook was down, or the rules got stricter)
//! is not used: the last good version of that object stays in force.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use futures::{FutureExt, StreamExt, stream};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::Value;

use crate::crd::{
    Kind, MCPAdmissionPolicy, MCPAdmissionPolicySpec, MCPPermissionProfile, MCPPermissionProfileSpec, MCPServer,
};
use crate::policy::profile::ProfileRef;
use crate::policy::{Engine, Operation, PolicyState};
use crate::readiness::Readiness;

/// Readiness condition: the first list of every watched kind has arrived.
pub const POLICY_CONDITION: &str = "policy-synced";

/// The last good version of every policy object, by name.
#[derive(Default)]
struct LastGood {
    profiles: BTreeMap<String, MCPPermissionProfileSpec>,
    policies: BTreeMap<String, MCPAdmissionPolicySpec>,
}

/// Reviews a stored object with the rules; true when it may be used.
fn usable(engine: &Engine, kind: Kind, object: &impl serde::Serialize) -> bool {
    let value = serde_json::to_value(object).unwrap_or(Value::Null);
    let verdict = engine.review(kind, Operation::Update, &value, None);
    if !verdict.allowed() {
        let errors: Vec<String> = verdict.errors.iter().map(ToString::to_string).collect();
        tracing::warn!(kind = %kind, name = value["metadata"]["name"].as_str().unwrap_or_default(), ?errors, "ignoring an invalid policy object; its last good version stays in force");
    }
    verdict.allowed()
}

/// Builds the policy from the watched objects, keeping the last good version of invalid ones.
fn rebuild(
    engine: &Engine,
    profiles: &Store<MCPPermissionProfile>,
    policies: &Store<MCPAdmissionPolicy>,
    servers: &Store<MCPServer>,
    last_good: &mut LastGood,
) -> PolicyState {
    let builtin = PolicyState::builtin();
    let present: Vec<String> = profiles.state().iter().map(|p| p.name_any()).collect();
    last_good.profiles.retain(|name, _| present.contains(name));
    for profile in profiles.state() {
        if usable(engine, Kind::PermissionProfile, profile.as_ref()) {
            last_good.profiles.insert(profile.name_any(), profile.spec.clone());
        }
    }
    let with_profiles = builtin.overlay(last_good.profiles.clone(), []);
    let checker = Engine::with_state(with_profiles.clone()).expect("generated schemas compile");
    let present: Vec<String> = policies.state().iter().map(|p| p.name_any()).collect();
    last_good.policies.retain(|name, _| present.contains(name));
    for policy in policies.state() {
        if usable(&checker, Kind::AdmissionPolicy, policy.as_ref()) {
            last_good.policies.insert(policy.name_any(), policy.spec.clone());
        }
    }
    let mut state = with_profiles.overlay([], last_good.policies.clone());
    state.server_profiles = servers
        .state()
        .iter()
        .filter_map(|s| {
            let profile = ProfileRef::of(&s.spec, &state).ok()?;
            Some((format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any()), profile.name()))
        })
        .collect();
    state
}

/// Runs until `shutdown` completes, swapping the engine's policy after every change.
pub async fn run(client: Client, engine: Arc<Engine>, readiness: Readiness, shutdown: impl Future<Output = ()>) {
    readiness.set_unmet(POLICY_CONDITION, "waiting for the first list of profiles, policies and servers");
    let (profiles, profile_writer) = reflector::store();
    let (policies, policy_writer) = reflector::store();
    let (servers, server_writer) = reflector::store();
    let config = watcher::Config::default;
    let changes = stream::select_all([
        watcher(Api::<MCPPermissionProfile>::all(client.clone()), config())
            .default_backoff()
            .reflect(profile_writer)
            .map(|e| e.map(|_| ()).map_err(|e| format!("watching MCPPermissionProfiles: {e}")))
            .boxed(),
        watcher(Api::<MCPAdmissionPolicy>::all(client.clone()), config())
            .default_backoff()
            .reflect(policy_writer)
            .map(|e| e.map(|_| ()).map_err(|e| format!("watching MCPAdmissionPolicies: {e}")))
            .boxed(),
        watcher(Api::<MCPServer>::all(client), config())
            .default_backoff()
            .reflect(server_writer)
            .map(|e| e.map(|_| ()).map_err(|e| format!("watching MCPServers: {e}")))
            .boxed(),
    ]);
    tokio::pin!(changes);
    tokio::pin!(shutdown);
    let mut last_good = LastGood::default();
    let mut synced = false;
    loop {
        let change = tokio::select! {
            change = changes.next() => change,
            () = &mut shutdown => break,
        };
        match change {
            None => break,
            Some(Err(reason)) => {
                tracing::warn!(%reason, "policy watch failed; retrying with backoff");
                if !synced {
                    readiness.set_unmet(POLICY_CONDITION, reason);
                }
                continue;
            }
            Some(Ok(())) => {}
        }
        let ready = [
            profiles.wait_until_ready().now_or_never(),
            policies.wait_until_ready().now_or_never(),
            servers.wait_until_ready().now_or_never(),
        ];
        if !ready.iter().all(|r| matches!(r, Some(Ok(())))) {
            continue;
        }
        let state = rebuild(&engine, &profiles, &policies, &servers, &mut last_good);
        if *engine.state() != state {
            tracing::info!(profiles = ?state.profile_names(), servers = state.server_profiles.len(), "policy updated");
            engine.replace_state(state);
        }
        if !synced {
            synced = true;
            readiness.set_met(POLICY_CONDITION);
        }
    }
}
