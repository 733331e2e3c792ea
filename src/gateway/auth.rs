//! Who may call a server through the gateway, the Kubernetes way: the caller presents a
//! ServiceAccount token whose audience is [`AUDIENCE`] (`Authorization: Bearer …`), the
//! gateway checks it with a TokenReview (answers cached for a short time, keyed by the
//! token's SHA-256, never the token), and the caller's namespace must be one the server's
//! permission profile admits (`network.ingress.namespaceSelector`,
//! [`EffectiveProfile::admits_namespace`]) — the rule the server's NetworkPolicy enforces for
//! direct traffic, so the gateway is no way around it.
//!
//! What is matched, and why:
//! - The namespace only. A profile's ingress rule names namespaces, never ServiceAccounts or
//!   pods, so every ServiceAccount of an admitted namespace may call, as every pod of it may
//!   connect directly. The NetworkPolicy's one pod-level peer, the operator's and the gateway's
//!   own pods, is the gateway's path to the server, not a caller: a token from the gateway's
//!   own namespace is matched like any other.
//! - A group route: the caller must be admitted by every member, checked before a member is
//!   picked, so a request never fails or succeeds by which member it lands on, and a session
//!   cannot be steered to a member that would refuse the caller.
//! - Fail closed: a namespace the gateway has not seen yet, a server that left the route or a
//!   profile that cannot be resolved admits nobody.
//!
//! Answers: no or an unusable token 401, a token that is not a ServiceAccount's or a caller
//! not admitted 403 (both with `WWW-Authenticate`); the TokenReview itself failing 503 with
//! `Retry-After`, because the token is not known to be bad, and a 401 would make a client
//! throw a good token away.
//!
//! A client pod gets such a token from a projected volume
//! (`serviceAccountToken: {audience: mcp-hangar-gateway, expirationSeconds: 3600}`), or by hand
//! with `kubectl create token SA --audience mcp-hangar-gateway`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{self, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::time::Instant;

use super::jsonrpc::{self, UNAVAILABLE};
use super::route::{Catalog, Upstream};
use crate::policy::profile::ProfileRef;

/// The audience a caller's token must be issued for.
pub const AUDIENCE: &str = "mcp-hangar-gateway";
/// How long a TokenReview answer is reused (never past the token's own expiry).
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// How long a refusal is reused (short: a token may have just been created).
pub const NEGATIVE_CACHE_TTL: Duration = Duration::from_secs(5);
/// Most answers kept; when full, expired answers are dropped, then all.
pub const CACHE_CAPACITY: usize = 10_000;
/// Longest token looked at; longer ones are refused unread.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A caller the apiserver vouched for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Namespace of the caller's ServiceAccount.
    pub namespace: String,
    /// Name of the caller's ServiceAccount.
    pub service_account: String,
}

/// Why a caller is not let through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No bearer token: 401.
    #[error(
        "Unauthorized: no bearer token: send Authorization: Bearer <ServiceAccount token with audience {AUDIENCE}>"
    )]
    Missing,
    /// The token is not valid for the gateway: 401.
    #[error("Unauthorized: the token was not accepted: {0}")]
    Invalid(String),
    /// The token is valid but not a ServiceAccount's: 403.
    #[error("Forbidden: only ServiceAccount tokens may call MCP servers through the gateway (got user {0:?})")]
    NotServiceAccount(String),
    /// The caller may not reach a server of the route: 403.
    #[error("Forbidden: ServiceAccount {caller} may not call MCPServer {server}: {reason}")]
    Forbidden {
        /// `namespace/name` of the caller's ServiceAccount.
        caller: String,
        /// `namespace/name` of the server.
        server: String,
        /// Why.
        reason: String,
    },
    /// The server's permission profile cannot be resolved, so nobody is admitted: 503.
    #[error(
        "Service Unavailable: MCPServer {server} admits no caller while its permission profile is unusable: {reason}"
    )]
    Profile {
        /// `namespace/name` of the server.
        server: String,
        /// Why the profile cannot be resolved.
        reason: String,
    },
    /// The TokenReview could not be made: 503, try again.
    #[error("Service Unavailable: the token could not be checked: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::Missing | AuthError::Invalid(_) => StatusCode::UNAUTHORIZED,
            AuthError::NotServiceAccount(_) | AuthError::Forbidden { .. } => StatusCode::FORBIDDEN,
            AuthError::Profile { .. } | AuthError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750) of a 401 or 403.
    pub fn challenge(&self) -> Option<String> {
        match self {
            AuthError::Missing => Some(format!("Bearer realm=\"{AUDIENCE}\"")),
            AuthError::Invalid(_) => Some(format!("Bearer realm=\"{AUDIENCE}\", error=\"invalid_token\"")),
            AuthError::NotServiceAccount(_) | AuthError::Forbidden { .. } => {
                Some(format!("Bearer realm=\"{AUDIENCE}\", error=\"insufficient_scope\""))
            }
            AuthError::Profile { .. } | AuthError::Unavailable(_) => None,
        }
    }
}

impl IntoResponse for AuthError {
    /// A JSON-RPC error body with the status, the challenge, and `Retry-After` for an outage.
    fn into_response(self) -> Response {
        let code =
            if self.status() == StatusCode::SERVICE_UNAVAILABLE { UNAVAILABLE } else { jsonrpc::INVALID_REQUEST };
        let body = jsonrpc::error(None, code, &self.to_string(), None).to_string();
        let mut response = (self.status(), [(http::header::CONTENT_TYPE, "application/json")], body).into_response();
        if let Some(value) = self.challenge().and_then(|c| HeaderValue::from_str(&c).ok()) {
            response.headers_mut().insert(http::header::WWW_AUTHENTICATE, value);
        }
        if matches!(self, AuthError::Unavailable(_)) {
            response.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// The bearer token of a request.
pub fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    let value = headers.get(http::header::AUTHORIZATION).ok_or(AuthError::Missing)?;
    let text = value.to_str().map_err(|_| AuthError::Invalid("the Authorization header is not text".into()))?;
    let (scheme, token) = text.split_once(' ').ok_or(AuthError::Missing)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::Missing);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Invalid(format!("the token is longer than {MAX_TOKEN_BYTES} bytes")));
    }
    Ok(token)
}

/// The ServiceAccount behind an authenticated username (`system:serviceaccount:<ns>:<name>`).
pub fn caller_of(username: &str) -> Result<Caller, AuthError> {
    let rest = username.strip_prefix("system:serviceaccount:");
    match rest.and_then(|r| r.split_once(':')) {
        Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() && !name.contains(':') => {
            Ok(Caller { namespace: namespace.into(), service_account: name.into() })
        }
        _ => Err(AuthError::NotServiceAccount(username.into())),
    }
}

/// The username a TokenReview's answer vouches for. The answer must name [`AUDIENCE`] among
/// its audiences: an authenticated answer without it means the token is valid for the
/// apiserver itself, not for the gateway (the TokenReview API's documented contract).
pub fn username_of(status: Option<TokenReviewStatus>) -> Result<String, AuthError> {
    let status = status.unwrap_or_default();
    let for_us = status.audiences.as_ref().is_some_and(|a| a.iter().any(|a| a == AUDIENCE));
    match (status.authenticated, status.user.and_then(|u| u.username)) {
        (Some(true), Some(username)) if for_us => Ok(username),
        (Some(true), _) => Err(AuthError::Invalid(format!("the token is not for audience {AUDIENCE}"))),
        _ => Err(AuthError::Invalid(status.error.unwrap_or_else(|| "not authenticated".into()))),
    }
}

/// When a JWT says it expires (`exp`), unverified: read only after the apiserver vouched for it.
fn expiry(token: &str) -> Option<SystemTime> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(claims.get("exp")?.as_u64()?))
}

/// Checks tokens; the apiserver in production, a table in tests.
pub trait TokenReviewer: Send + Sync {
    /// The authenticated username of a token valid for [`AUDIENCE`].
    fn review(&self, token: &str) -> impl Future<Output = Result<String, AuthError>> + Send;
}

/// Reviews tokens with the apiserver's TokenReview API.
#[derive(Clone)]
pub struct KubeReviewer {
    client: Client,
}

impl KubeReviewer {
    /// A reviewer over this client (needs `create` on `tokenreviews`).
    pub fn new(client: Client) -> Self {
        KubeReviewer { client }
    }
}

impl TokenReviewer for KubeReviewer {
    async fn review(&self, token: &str) -> Result<String, AuthError> {
        let review = TokenReview {
            spec: TokenReviewSpec { token: Some(token.to_string()), audiences: Some(vec![AUDIENCE.to_string()]) },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer =
            api.create(&PostParams::default(), &review).await.map_err(|e| AuthError::Unavailable(e.to_string()))?;
        username_of(answer.status)
    }
}

/// A remembered answer: until when, and what.
type Cached = (Instant, Result<Caller, AuthError>);

/// Authenticates callers, reusing TokenReview answers for a short time.
pub struct Authenticator<R> {
    reviewer: R,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
}

impl<R: TokenReviewer> Authenticator<R> {
    /// An authenticator asking `reviewer`.
    pub fn new(reviewer: R) -> Self {
        Authenticator { reviewer, cache: Mutex::new(HashMap::new()) }
    }

    /// The caller a request's headers prove, from the cache when it is fresh.
    pub async fn caller(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        let token = bearer(headers)?;
        let key: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
            .as_ref()
            .try_into()
            .expect("SHA-256 is 32 bytes");
        let now = Instant::now();
        if let Some((until, answer)) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key)
            && now < *until
        {
            return answer.clone();
        }
        let answer = match self.reviewer.review(token).await {
            Ok(username) => caller_of(&username),
            Err(e) => Err(e),
        };
        // Outages are not remembered: the next request asks again.
        if !matches!(answer, Err(AuthError::Unavailable(_))) {
            let ttl = match &answer {
                Ok(_) => {
                    let left = expiry(token).map(|exp| exp.duration_since(SystemTime::now()).unwrap_or_default());
                    left.map_or(CACHE_TTL, |left| left.min(CACHE_TTL))
                }
                Err(_) => NEGATIVE_CACHE_TTL,
            };
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= CACHE_CAPACITY {
                cache.retain(|_, (until, _)| *until > now);
                if cache.len() >= CACHE_CAPACITY {
                    cache.clear();
                }
            }
            cache.insert(key, (now + ttl, answer.clone()));
        }
        answer
    }

    /// The caller of a request, if it may reach every one of `upstreams` (see [`admitted`]).
    pub async fn admit(
        &self,
        catalog: &dyn Catalog,
        headers: &HeaderMap,
        upstreams: &[Upstream],
    ) -> Result<Caller, AuthError> {
        let caller = self.caller(headers).await?;
        admitted(catalog, &caller, upstreams)?;
        Ok(caller)
    }
}

/// Whether `caller` may reach every one of `upstreams`: the namespace must be known and each
/// server's permission profile must admit it, under the policy in force.
pub fn admitted(catalog: &dyn Catalog, caller: &Caller, upstreams: &[Upstream]) -> Result<(), AuthError> {
    let policy = catalog.policy();
    let who = format!("{}/{}", caller.namespace, caller.service_account);
    let forbidden = |server: &str, reason: String| {
        tracing::info!(caller = %who, server, %reason, "refused a caller");
        AuthError::Forbidden { caller: who.clone(), server: server.to_string(), reason }
    };
    let labels = catalog.namespace_labels(&caller.namespace);
    for upstream in upstreams {
        let server = catalog
            .server(&upstream.namespace, &upstream.name)
            .ok_or_else(|| forbidden(&upstream.member, "the server left the route".into()))?;
        let unusable = |e: crate::policy::profile::ProfileError| AuthError::Profile {
            server: upstream.member.clone(),
            reason: e.to_string(),
        };
        let reference = ProfileRef::of(&server.spec, &policy).map_err(unusable)?;
        let profile = reference.ingress(&policy).map_err(unusable)?;
        let Some(labels) = &labels else {
            let reason = format!("namespace {:?} is not known to the gateway yet", caller.namespace);
            return Err(forbidden(&upstream.member, reason));
        };
        if !profile.admits_namespace(labels) {
            let reason = format!(
                "its permission profile {:?} does not admit namespace {:?} (network.ingress.namespaceSelector)",
                reference.name(),
                caller.namespace
            );
            return Err(forbidden(&upstream.member, reason));
        }
    }
    Ok(())
}

/// Who may call through the gateway.
pub enum Access {
    /// Anyone who reaches the gateway (`--auth none`: development, routes from a file).
    Open,
    /// Callers proven by a ServiceAccount token, admitted by each server's profile.
    ServiceAccounts(Authenticator<KubeReviewer>),
}

impl Access {
    /// Lets a request through to `upstreams`, or says why not.
    pub async fn check(
        &self,
        catalog: &dyn Catalog,
        headers: &HeaderMap,
        upstreams: &[Upstream],
    ) -> Result<(), AuthError> {
        match self {
            Access::Open => Ok(()),
            Access::ServiceAccounts(authenticator) => authenticator.admit(catalog, headers, upstreams).await.map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{MCPServer, MCPServerSpec, ServerMode};
    use crate::gateway::route::{StaticCatalog, upstream};
    use k8s_openapi::api::authentication::v1::UserInfo;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Table(AtomicUsize);

    impl TokenReviewer for Table {
        async fn review(&self, token: &str) -> Result<String, AuthError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            match token {
                "team-a" => Ok("system:serviceaccount:team-a:client".into()),
                "human" => Ok("alice@example.com".into()),
                "down" => Err(AuthError::Unavailable("connection refused".into())),
                _ => Err(AuthError::Invalid("token expired".into())),
            }
        }
    }

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(axum::http::header::AUTHORIZATION, authorization.parse().unwrap());
        headers
    }

    fn reviews(auth: &Authenticator<Table>) -> usize {
        auth.reviewer.0.load(Ordering::SeqCst)
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_reviewed_once_and_mapped_to_service_accounts() {
        let auth = Authenticator::new(Table(AtomicUsize::new(0)));
        let caller = auth.caller(&headers("Bearer team-a")).await.unwrap();
        assert_eq!(caller, Caller { namespace: "team-a".into(), service_account: "client".into() });
        auth.caller(&headers("bearer team-a")).await.unwrap();
        assert_eq!(reviews(&auth), 1, "the second request is answered from the cache");
        tokio::time::advance(CACHE_TTL).await;
        auth.caller(&headers("Bearer team-a")).await.unwrap();
        assert_eq!(reviews(&auth), 2, "an answer is reused for CACHE_TTL only");

        assert_eq!(auth.caller(&HeaderMap::new()).await, Err(AuthError::Missing));
        assert_eq!(auth.caller(&headers("Basic YTpi")).await, Err(AuthError::Missing));
        assert_eq!(auth.caller(&headers("Bearer old")).await.unwrap_err().status(), StatusCode::UNAUTHORIZED);
        auth.caller(&headers("Bearer old")).await.unwrap_err();
        assert_eq!(reviews(&auth), 3, "a refusal is reused for a while");
        tokio::time::advance(NEGATIVE_CACHE_TTL).await;
        auth.caller(&headers("Bearer old")).await.unwrap_err();
        assert_eq!(reviews(&auth), 4, "and asked again after NEGATIVE_CACHE_TTL");
        assert_eq!(auth.caller(&headers("Bearer human")).await.unwrap_err().status(), StatusCode::FORBIDDEN);
        let down = auth.caller(&headers("Bearer down")).await.unwrap_err();
        assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
        auth.caller(&headers("Bearer down")).await.unwrap_err();
        assert_eq!(reviews(&auth), 7, "an outage is asked again");
        let long = format!("Bearer {}", "x".repeat(MAX_TOKEN_BYTES + 1));
        assert_eq!(auth.caller(&headers(&long)).await.unwrap_err().status(), StatusCode::UNAUTHORIZED);
        assert_eq!(reviews(&auth), 7, "an oversized token is never sent");
    }

    #[test]
    fn usernames_and_review_answers() {
        assert!(caller_of("system:serviceaccount:ns:sa").is_ok());
        for bad in ["system:serviceaccount:ns", "system:serviceaccount::sa", "system:node:n1", "a:b:c:d"] {
            assert!(caller_of(bad).is_err(), "{bad}");
        }
        let status = |authenticated: bool, audiences: Option<Vec<&str>>| {
            Some(TokenReviewStatus {
                authenticated: Some(authenticated),
                audiences: audiences.map(|a| a.into_iter().map(String::from).collect()),
                user: Some(UserInfo { username: Some("system:serviceaccount:a:b".into()), ..Default::default() }),
                error: (!authenticated).then(|| "token expired".into()),
            })
        };
        assert_eq!(username_of(status(true, Some(vec![AUDIENCE]))).unwrap(), "system:serviceaccount:a:b");
        for unusable in [
            status(true, None),
            status(true, Some(vec!["https://kubernetes.default.svc"])),
            status(false, Some(vec![AUDIENCE])),
            None,
        ] {
            assert_eq!(username_of(unusable).unwrap_err().status(), StatusCode::UNAUTHORIZED);
        }
        assert_eq!(username_of(status(false, None)), Err(AuthError::Invalid("token expired".into())));
        assert_eq!(AuthError::Missing.challenge().unwrap(), "Bearer realm=\"mcp-hangar-gateway\"");
        assert_eq!(AuthError::Unavailable("x".into()).challenge(), None);
    }

    #[test]
    fn jwt_expiry_bounds_the_cache() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"exp": 2000000000}"#);
        assert_eq!(expiry(&format!("h.{payload}.s")), Some(UNIX_EPOCH + Duration::from_secs(2_000_000_000)));
        let far = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(r#"{{"exp": {}}}"#, u64::MAX));
        let _ = expiry(&format!("h.{far}.s"));
        for opaque in ["", "a.b.c", "....", "h.!!!.s"] {
            assert_eq!(expiry(opaque), None, "{opaque}");
        }
    }

    fn server(namespace: &str, name: &str, profile: Option<&str>) -> MCPServer {
        let mut server = MCPServer::new(
            name,
            MCPServerSpec {
                mode: Some(ServerMode::Remote),
                endpoint: Some("http://127.0.0.1:1/mcp".into()),
                permission_profile: profile.map(|p| {
                    Box::new(crate::crd::PermissionProfileRef { source: None, name: Some(p.into()), key: None })
                }),
                ..Default::default()
            },
        );
        server.metadata.namespace = Some(namespace.into());
        server
    }

    #[test]
    fn callers_are_matched_against_every_members_profile() {
        let catalog = StaticCatalog::default();
        let core = BTreeMap::from([("mcp-hangar.io/core".to_string(), "true".to_string())]);
        catalog.put_namespace("team-a", core);
        catalog.put_namespace("team-b", BTreeMap::new());
        let (a, b) = (server("tools", "a", None), server("tools", "b", Some("root")));
        catalog.put_server(a.clone());
        let caller = |ns: &str| Caller { namespace: ns.into(), service_account: "client".into() };
        let up_a = upstream(&a).unwrap();
        assert_eq!(admitted(&catalog, &caller("team-a"), std::slice::from_ref(&up_a)), Ok(()));
        let refused = admitted(&catalog, &caller("team-b"), std::slice::from_ref(&up_a)).unwrap_err();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert!(refused.to_string().contains(r#"profile "none" does not admit namespace "team-b""#), "{refused}");
        let unknown = admitted(&catalog, &caller("new"), std::slice::from_ref(&up_a)).unwrap_err();
        assert_eq!(unknown.status(), StatusCode::FORBIDDEN, "an unseen namespace is refused");
        let up_b = upstream(&b).unwrap();
        assert_eq!(
            admitted(&catalog, &caller("team-a"), &[up_a.clone(), up_b.clone()]).unwrap_err().status(),
            StatusCode::FORBIDDEN,
            "a member that left the route admits nobody"
        );
        catalog.put_server(b);
        let unusable = admitted(&catalog, &caller("team-a"), &[up_a, up_b]).unwrap_err();
        assert!(matches!(unusable, AuthError::Profile { .. }), "an unknown profile fails closed: {unusable}");
        assert_eq!(admitted(&catalog, &caller("team-b"), &[]), Ok(()), "no member, nothing to refuse");
    }
}
