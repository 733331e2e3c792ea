//! Keeps the webhook's policy in step with the cluster: watches MCPPermissionProfiles, the
//! MCPAdmissionPolicy and MCPServers, and puts a new [`PolicyState`] in force after every
//! change, so an edit takes effect on the next admission request without a restart.
//!
//! A stored object that fails the rules (the webhook was down, or the rules got stricter)
//! is not used: the last good version of that object stays in force.

use std::future::Future;
use std::sync::Arc;

use futures::{FutureExt, StreamExt, stream};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

use crate::crd::{MCPAdmissionPolicy, MCPPermissionProfile, MCPServer};
use crate::policy::live::{Ignored, LastGood};
use crate::policy::profile::ProfileRef;
use crate::policy::{Engine, PolicyState};
use crate::readiness::Readiness;

/// Readiness condition: the first list of every watched kind has arrived.
pub const POLICY_CONDITION: &str = "policy-synced";

/// Builds the policy from the watched objects, keeping the last good version of invalid ones.
fn rebuild(
    engine: &Engine,
    profiles: &Store<MCPPermissionProfile>,
    policies: &Store<MCPAdmissionPolicy>,
    servers: &Store<MCPServer>,
    last_good: &mut LastGood,
) -> PolicyState {
    let (profiles, policies) = (profiles.state(), policies.state());
    let (mut state, ignored) =
        last_good.rebuild(engine, profiles.iter().map(AsRef::as_ref), policies.iter().map(AsRef::as_ref));
    for Ignored { kind, name, errors } in ignored {
        tracing::warn!(kind = %kind, name, ?errors, "ignoring an invalid policy object; its last good version stays in force");
    }
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
