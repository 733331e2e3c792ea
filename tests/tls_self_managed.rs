//! Self-managed webhook TLS against the fake Kubernetes API: the Secret is created, reused,
//! renewed and repaired; the caBundle is injected and restored; replicas racing agree.

#[path = "support/fake_api.rs"]
mod fake_api;
#[path = "support/replica.rs"]
mod replica;

use std::collections::HashSet;
use std::time::Duration;

use axum::http::Method;
use fake_api::FakeApi;
use mcp_hangar::tls::inspect;
use mcp_hangar::tls::issue::{self, ServingCertRequest};
use mcp_hangar::tls::material::Material;
use mcp_hangar::tls::renewal::{self, Requirements};
use replica::*;
use tower::ServiceExt;

const READY: Duration = Duration::from_secs(10);

/// Material for `requirements` made outside the replicas, as another writer would.
fn material_for(requirements: &Requirements, sans: &[&str], validity: Duration) -> Material {
    let ca = issue::issue_ca("outside CA", requirements.ca_validity).unwrap();
    let leaf =
        issue::issue_serving(&ca, &ServingCertRequest { sans: sans.iter().map(|s| s.to_string()).collect(), validity })
            .unwrap();
    Material {
        ca_cert: Some(ca.cert_pem.into_bytes()),
        ca_key: Some(ca.key_pem.into_bytes()),
        tls_cert: Some(leaf.cert_pem.into_bytes()),
        tls_key: Some(leaf.key_pem.into_bytes()),
        previous_ca_cert: None,
    }
}

fn assert_injected(fake: &FakeApi, material: &Material) {
    let bundle = material.ca_bundle();
    for path in [mutating_path(), validating_path()] {
        let bundles = injected_bundles(fake, &path);
        assert!(!bundles.is_empty());
        assert!(
            bundles.iter().all(|b| b.as_deref() == Some(bundle.as_slice())),
            "every entry of {path} has the bundle"
        );
    }
}

#[tokio::test]
async fn first_start_creates_the_secret_injects_the_bundle_and_becomes_ready() {
    let fake = FakeApi::start().await;
    seed_webhook_configurations(&fake);
    let replica = Replica::start(&fake, default_config());
    assert!(replica.ready(READY).await);

    let material = stored_material(&fake).expect("the Secret was created");
    let config = default_config();
    assert!(renewal::decide(&material, &config.requirements, time::OffsetDateTime::now_utc()).is_keep());
    assert_eq!(replica.served(), Some(der_of(material.tls_cert.as_deref().unwrap())));
    let leaf = inspect::inspect(material.tls_cert.as_deref().unwrap()).unwrap();
    assert_eq!(leaf.sans, vec!["hangar-webhook.hangar-system.svc", "hangar-webhook.hangar-system.svc.cluster.local"]);
    let secret = fake.get(&secret_path()).unwrap();
    assert_eq!(secret["type"], "kubernetes.io/tls");
    assert_eq!(secret["metadata"]["labels"]["app.kubernetes.io/managed-by"], "mcp-hangar");
    assert_injected(&fake, &material);

    assert_eq!(replica.rotations("ca"), 1);
    assert_eq!(replica.rotations("serving"), 1);
    assert_eq!(replica.metrics.webhook_certificate_expiry.get(), leaf.not_after.unix_timestamp() as f64);
    let rendered = replica.metrics.render();
    assert!(rendered.contains("mcp_hangar_webhook_certificate_expiry_timestamp_seconds"));
    assert!(rendered.contains("mcp_hangar_webhook_certificate_rotations_total{part=\"serving\"} 1"));

    let requests = fake.requests();
    let posts = requests.iter().filter(|r| r.method == Method::POST && r.path.ends_with("/secrets")).count();
    assert_eq!(posts, 1);
    let patches: Vec<_> = requests.iter().filter(|r| r.method == Method::PATCH).collect();
    assert_eq!(patches.len(), 2, "one patch per webhook configuration");
    assert!(patches.iter().all(|r| r.content_type.as_deref() == Some("application/json-patch+json")));
    replica.stop().await;
}

#[tokio::test]
async fn readyz_waits_for_the_webhook_configurations_and_says_why() {
    let fake = FakeApi::start().await;
    let replica = Replica::start(&fake, default_config());
    assert!(eventually(READY, || replica.served().is_some()).await, "a certificate is served while not ready");
    let admin = mcp_hangar::admission::admin_router(replica.metrics.clone(), replica.readiness.clone());
    let answer = |router: axum::Router| async move {
        let response =
            router.oneshot(axum::http::Request::get("/readyz").body(axum::body::Body::empty()).unwrap()).await.unwrap();
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        (status, String::from_utf8_lossy(&body).to_string())
    };
    let (status, body) = answer(admin.clone()).await;
    assert_eq!(status, 503);
    assert!(body.contains("webhook-ca-bundle") && body.contains("not found"), "{body}");
    assert!(!replica.readiness.is_ready());

    seed_webhook_configurations(&fake);
    assert!(replica.ready(READY).await);
    assert_eq!(answer(admin).await, (200, "ok\n".to_string()));
    assert_injected(&fake, &stored_material(&fake).unwrap());
    replica.stop().await;
}

#[tokio::test]
async fn restart_reuses_the_stored_certificate() {
    let fake = FakeApi::start().await;
    seed_webhook_configurations(&fake);
    let first = Replica::start(&fake, default_config());
    assert!(first.ready(READY).await);
    let served = first.served();
    first.stop().await;
    fake.clear_requests();

    let second = Replica::start(&fake, default_config());
    assert!(second.ready(READY).await);
    assert_eq!(second.served(), served);
    assert_eq!(second.rotations("serving"), 0);
    let writes: Vec<_> = fake.requests().into_iter().filter(|r| r.method != Method::GET).collect();
    assert!(writes.is_empty(), "a restart writes nothing: {writes:?}");
    second.stop().await;
}

#[tokio::test]
async fn wrong_san_certificate_is_renewed_with_the_same_ca() {
    let fake = FakeApi::start().await;
    seed_webhook_configurations(&fake);
    let config = default_config();
    let seeded = material_for(&config.requirements, &["old-name.hangar-system.svc"], Duration::from_secs(600));
    store_material(&fake, &seeded);
    let replica = Replica::start(&fake, config);
    assert!(replica.ready(READY).await);
    let material = stored_material(&fake).unwrap();
    assert_eq!(material.ca_cert, seeded.ca_cert, "the CA is kept");
    assert_ne!(material.tls_cert, seeded.tls_cert);
    assert!(
        inspect::inspect(material.tls_cert.as_deref().unwrap())
            .unwrap()
            .missing_sans(&default_config().requirements.sans)
            .is_empty()
    );
    assert_eq!(replica.served(), Some(der_of(material.tls_cert.as_deref().unwrap())));
    assert_eq!((replica.rotations("ca"), replica.rotations("serving")), (0, 1));
    replica.stop().await;
}

#[tokio::test]
async fn expiring_certificate_is_renewed_ahead_of_expiry() {
    let fake = FakeApi::start().await;
    seed_webhook_configurations(&fake);
    let replica = Replica::start(&fake, config(Duration::from_secs(3600), Duration::from_secs(3), 0.5));
    assert!(replica.ready(READY).await);
    let first = replica.served().unwrap();
    let first_info = inspect::inspect(stored_material(&fake).unwrap().tls_cert.as_deref().unwrap()).unwrap();
    assert!(eventually(Duration::from_secs(10), || replica.served().is_some_and(|s| s != first)).await, "renewed");
    assert!(
        time::OffsetDateTime::now_utc() < first_info.not_after,
        "the renewal came before the old certificate expired"
    );
    let second = stored_material(&fake).unwrap();
    let second_info = inspect::inspect(second.tls_cert.as_deref().unwrap()).unwrap();
    assert!(second_info.not_after > first_info.not_after);
    assert_eq!(replica.rotations("serving"), 2);
    assert!(replica.readiness.is_ready());
    replica.stop().await;
}

#[tokio::test]
async fn expired_certificate_is_replaced_and_never_served() {
    let fake = FakeApi::start().await;
    seed_webhook_configurations(&fake);
    let config = default_config();
    let seeded = material_for(
        &config.requirements,
        &["hangar-webhook.hangar-system.svc", "hangar-webhook.hangar-system.svc.cluster.local"],
        Duration::from_secs(1),
    );
    let seeded_der = der_of(seeded.tls_cert.as_deref().unwrap());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    store_material(&fake, &seeded);
    let replica = Replica::start(&fake, config);
    let mut seen = HashSet::new();
    let ready = eventually(READY, || {
        seen.extend(replica.served());
        replica.readiness.is_ready()
    })
    .await;
    assert!(ready);
    assert!(!seen.contains(&seeded_der), "the expired certificate was never served");
    assert_ne!(stored_material(&fake).unwrap().tls_cert, seeded.tls_cert);
    replica.stop().await;
}

#[tokio::test]
async fn corrupted_secrets_are_replaced_and_never_served() {
    let config = default_config();
    let good = material_for(
        &config.requirements,
        &["hangar-webhook.hangar-system.svc", "hangar-webhook.hangar-system.svc.cluster.local"],
        Duration::from_secs(600),
    );
    let foreign = material_for(
        &config.requirements,
        &["hangar-webhook.hangar-system.svc", "hangar-webhook.hangar-system.svc.cluster.local"],
        Duration::from_secs(600),
    );
    let cases = [
        (
            "garbage certificate",
            Material {
                tls_cert: Some(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec()),
                ..good.clone()
            },
        ),
        ("key of another certificate", Material { tls_key: foreign.tls_key.clone(), ..good.clone() }),
        (
            "certificate of another CA",
            Material { tls_cert: foreign.tls_cert.clone(), tls_key: foreign.tls_key.clone(), ..good.clone() },
        ),
        ("no CA key", Material { ca_key: None, ..good.clone() }),
        (
            "binary noise",
            Material {
                ca_cert: Some(vec![0, 159, 146, 150]),
                ca_key: Some(vec![1; 64]),
                tls_cert: Some(vec![2; 3]),
                tls_key: None,
                previous_ca_cert: Some(vec![255]),
            },
        ),
    ];
    for (case, corrupted) in cases {
        let fake = FakeApi::start().await;
        seed_webhook_configurations(&fake);
        store_material(&fake, &corrupted);
        let corrupted_der = corrupted.tls_cert.as_deref().and_then(|pem| inspect::inspect(pem).ok()).map(|c| c.der);
        let replica = Replica::start(&fake, config.clone());
        let mut seen = HashSet::new();
        let ready = eventually(READY, || {
            seen.extend(replica.served());
            replica.readiness.is_ready()
        })
        .await;
        assert!(ready, "{case}: ready");
        let material = stored_material(&fake).unwrap();
        assert!(
            renewal::decide(&material, &config.requirements, time::OffsetDateTime::now_utc()).is_keep(),
            "{case}: repaired"
        );
        assert_eq!(replica.served(), Some(der_of(material.tls_cert.as_deref().unwrap())), "{case}");
        assert!(
            corrupted_der.is_none_or(|der| !seen.contains(&der)),
            "{case}: the corrupted certificate was never served"
        );
        assert_injected(&fake, &material);
        replica.stop().await;
    }
}

#[tokio::test]
async fn a_ca_whose_key_is_lost_stays_in_the_bundle_while_its_certificate_may_be_served() {
    let fake = FakeApi::start().await;
    seed_webhook_configurations(&fake);
    let config = default_config();
    let first = Replica::start(&fake, config.clone());
    assert!(first.ready(READY).await);
    let original = stored_material(&fake).unwrap();
    store_material(&fake, &Material { ca_key: None, ..original.clone() });
    assert!(
        eventually(READY, || stored_material(&fake)
            .is_some_and(|m| m.ca_key.is_some() && m.ca_cert != original.ca_cert))
        .await
    );
    let repaired = stored_material(&fake).unwrap();
    assert_eq!(repaired.previous_ca_cert, original.ca_cert, "the old CA still signs the served certificate: kept");
    assert!(
        eventually(READY, || { first.served().is_some_and(|s| s == der_of(repaired.tls_cert.as_deref().unwrap())) })
            .await
    );
    assert_injected(&fake, &repaired);
    assert!(first.ready(READY).await);
    first.stop().await;
}

#[tokio::test]
async fn two_replicas_racing_on_an_empty_secret_serve_the_same_certificate() {
    let fake = FakeApi::start().await;
    seed_webhook_configurations(&fake);
    // Both creates are held back, so that both replicas decide before either write lands.
    fake.delay_next(2, Some(Method::POST), "/secrets", Duration::from_millis(300));
    let a = Replica::start(&fake, default_config());
    let b = Replica::start(&fake, default_config());
    assert!(a.ready(READY).await && b.ready(READY).await);
    let posts = fake.requests().iter().filter(|r| r.method == Method::POST && r.path.ends_with("/secrets")).count();
    assert_eq!(posts, 2, "both replicas tried to create the Secret");
    let stored = stored_material(&fake).unwrap();
    let expected = der_of(stored.tls_cert.as_deref().unwrap());
    assert!(eventually(READY, || a.served() == Some(expected.clone()) && b.served() == Some(expected.clone())).await);
    assert_eq!(a.rotations("serving") + b.rotations("serving"), 1, "one write won");

    // Both race again to replace a corrupted Secret: one replace wins, the other conflicts.
    fake.delay_next(2, Some(Method::PUT), "/secrets/", Duration::from_millis(300));
    store_material(&fake, &Material { tls_cert: Some(b"corrupt".to_vec()), ..stored.clone() });
    assert!(
        eventually(READY, || stored_material(&fake).is_some_and(|m| m
            .tls_cert
            .as_deref()
            .is_some_and(|c| c.starts_with(b"-----"))
            && m.tls_cert != stored.tls_cert))
        .await
    );
    let repaired = der_of(stored_material(&fake).unwrap().tls_cert.as_deref().unwrap());
    assert!(eventually(READY, || a.served() == Some(repaired.clone()) && b.served() == Some(repaired.clone())).await);
    assert_eq!(a.rotations("serving") + b.rotations("serving"), 2);
    let puts = fake.requests().iter().filter(|r| r.method == Method::PUT).count();
    assert_eq!(puts, 2, "both replicas tried to replace the Secret");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn ca_bundle_reset_externally_is_restored() {
    let fake = FakeApi::start().await;
    seed_webhook_configurations(&fake);
    let replica = Replica::start(&fake, default_config());
    assert!(replica.ready(READY).await);
    let material = stored_material(&fake).unwrap();

    // A `helm upgrade` puts the chart's configuration back, without a caBundle.
    seed_webhook_configurations(&fake);
    assert!(injected_bundles(&fake, &mutating_path()).iter().all(Option::is_none));
    assert!(eventually(READY, || injected_bundles(&fake, &mutating_path()).iter().all(|b| b.is_some())).await);
    assert_injected(&fake, &material);

    // A person sets a bundle of their own in one entry.
    let mut config = fake.get(&validating_path()).unwrap();
    config["webhooks"][0]["clientConfig"]["caBundle"] = serde_json::json!("Zm9v");
    fake.put(&validating_path(), config);
    assert!(
        eventually(READY, || injected_bundles(&fake, &validating_path())[0].as_deref()
            == Some(material.ca_bundle().as_slice()))
        .await
    );
    assert!(replica.ready(READY).await);
    replica.stop().await;
}

#[tokio::test]
async fn deleted_secret_is_recreated_keeping_the_served_ca_trusted() {
    let fake = FakeApi::start().await;
    seed_webhook_configurations(&fake);
    let replica = Replica::start(&fake, default_config());
    assert!(replica.ready(READY).await);
    let original = stored_material(&fake).unwrap();
    fake.delete(&secret_path());
    assert!(eventually(READY, || stored_material(&fake).is_some()).await);
    let recreated = stored_material(&fake).unwrap();
    assert_ne!(recreated.ca_cert, original.ca_cert);
    assert_eq!(
        recreated.previous_ca_cert, original.ca_cert,
        "the CA of the certificates still served stays in the bundle"
    );
    assert!(eventually(READY, || replica.served() == Some(der_of(recreated.tls_cert.as_deref().unwrap()))).await);
    assert_injected(&fake, &recreated);
    replica.stop().await;
}

#[tokio::test]
async fn api_failures_are_retried() {
    let fake = FakeApi::start().await;
    seed_webhook_configurations(&fake);
    fake.fail_next(2, Some(Method::POST), "/secrets", 500);
    fake.fail_next(1, Some(Method::PATCH), "mutatingwebhookconfigurations", 500);
    let replica = Replica::start(&fake, default_config());
    assert!(replica.ready(READY).await);
    let failed_posts = fake.requests().iter().filter(|r| r.method == Method::POST).count();
    assert_eq!(failed_posts, 3, "two failed creates, then one that worked");
    assert_injected(&fake, &stored_material(&fake).unwrap());
    replica.stop().await;
}

#[tokio::test]
async fn extra_sans_are_covered() {
    let fake = FakeApi::start().await;
    seed_webhook_configurations(&fake);
    let mut config = default_config();
    config.requirements.sans.extend(["host.docker.internal".to_string(), "192.168.49.1".to_string()]);
    let replica = Replica::start(&fake, config);
    assert!(replica.ready(READY).await);
    let leaf = inspect::inspect(stored_material(&fake).unwrap().tls_cert.as_deref().unwrap()).unwrap();
    assert!(leaf.sans.contains(&"host.docker.internal".to_string()));
    assert!(leaf.sans.contains(&"192.168.49.1".to_string()));
    replica.stop().await;
}

#[tokio::test]
async fn readiness_names_the_error_when_the_secret_cannot_be_read() {
    let fake = FakeApi::start().await;
    seed_webhook_configurations(&fake);
    fake.fail_next(1, Some(Method::GET), "/secrets?", 403);
    let replica = Replica::start(&fake, default_config());
    let explained = eventually(READY, || {
        replica.readiness.unmet().iter().any(|(condition, reason)| {
            condition == mcp_hangar::tls::CERTIFICATE_CONDITION && reason.contains("Forbidden")
        })
    })
    .await;
    assert!(explained, "the reason names the failure: {:?}", replica.readiness.unmet());
    assert!(replica.ready(READY).await, "the watch recovers");
    replica.stop().await;
}
