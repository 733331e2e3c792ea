//! Who may call a server through the gateway, the Kubernetes way: the caller presents a
//! ServiceAccount token whose audience is [`AUDIENCE`] (`Authorization: Bearer …`), the
//! gateway checks it with a TokenReview (answers cached for a short time, keyed by the
//! token's SHA-256, never the token), and the caller's namespace must be one the server's
//! permission profile admits (`network.ingress.namespaceSelector`) — the rule the server's
//! NetworkPolicy enforces for direct traffic, so the gateway is no way around it.
//!
//! A client pod gets such a token from a projected volume
//! (`serviceAccountToken: {audience: mcp-hangar-gateway, expirationSeconds: 3600}`), or by hand
//! with `kubectl create token SA --audience mcp-hangar-gateway`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{self, HeaderMap};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::PostParams;
use kube::{Api, Client};

use crate::policy::selector;

/// The audience a caller's token must be issued for.
pub const AUDIENCE: &str = "mcp-hangar-gateway";
/// How long a TokenReview answer is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// How long a refusal is reused (short: a token may have just been created).
pub const NEGATIVE_CACHE_TTL: Duration = Duration::from_secs(5);
/// Most answers kept; the oldest half is dropped when full.
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
    #[error("no bearer token: send Authorization: Bearer <ServiceAccount token with audience {AUDIENCE}>")]
    Missing,
    /// The token is not valid for the gateway: 401.
    #[error("the token was not accepted: {0}")]
    Invalid(String),
    /// The token is valid but not a ServiceAccount's: 403.
    #[error("only ServiceAccount tokens may call MCP servers through the gateway (got user {0:?})")]
    NotServiceAccount(String),
    /// The caller's namespace is not admitted by the server's profile: 403.
    #[error(
        "namespace {namespace:?} may not call MCPServer {server}: its permission profile admits other namespaces (network.ingress)"
    )]
    Forbidden {
        /// The caller's namespace.
        namespace: String,
        /// `namespace/name` of the server.
        server: String,
    },
    /// The TokenReview could not be made: 503, try again.
    #[error("the token could not be checked: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Missing | AuthError::Invalid(_) => 401,
            AuthError::NotServiceAccount(_) | AuthError::Forbidden { .. } => 403,
            AuthError::Unavailable(_) => 503,
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750) of a 401 or 403.
    pub fn challenge(&self) -> String {
        match self {
            AuthError::Missing => format!("Bearer realm=\"{AUDIENCE}\""),
            AuthError::Invalid(_) => format!("Bearer realm=\"{AUDIENCE}\", error=\"invalid_token\""),
            _ => format!("Bearer realm=\"{AUDIENCE}\", error=\"insufficient_scope\""),
        }
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

/// Whether a caller from a namespace with these labels may reach a server whose profile admits
/// `ingress_from` (the same selector its NetworkPolicy uses).
pub fn admits(ingress_from: &LabelSelector, caller_namespace_labels: &BTreeMap<String, String>) -> bool {
    selector::matches(ingress_from, caller_namespace_labels)
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
        let status = answer.status.unwrap_or_default();
        let audience_ok = status.audiences.as_ref().is_none_or(|a| a.iter().any(|a| a == AUDIENCE));
        match (status.authenticated, status.user.and_then(|u| u.username)) {
            (Some(true), Some(username)) if audience_ok => Ok(username),
            (Some(true), _) => Err(AuthError::Invalid(format!("the token is not for audience {AUDIENCE}"))),
            _ => Err(AuthError::Invalid(status.error.unwrap_or_else(|| "not authenticated".into()))),
        }
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
            let ttl = if answer.is_ok() { CACHE_TTL } else { NEGATIVE_CACHE_TTL };
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
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[tokio::test]
    async fn tokens_are_reviewed_once_and_mapped_to_service_accounts() {
        let auth = Authenticator::new(Table(AtomicUsize::new(0)));
        let caller = auth.caller(&headers("Bearer team-a")).await.unwrap();
        assert_eq!(caller, Caller { namespace: "team-a".into(), service_account: "client".into() });
        auth.caller(&headers("bearer team-a")).await.unwrap();
        assert_eq!(auth.reviewer.0.load(Ordering::SeqCst), 1, "the second request is answered from the cache");

        assert_eq!(auth.caller(&HeaderMap::new()).await, Err(AuthError::Missing));
        assert_eq!(auth.caller(&headers("Basic YTpi")).await, Err(AuthError::Missing));
        assert_eq!(auth.caller(&headers("Bearer old")).await.unwrap_err().status(), 401);
        assert_eq!(auth.caller(&headers("Bearer human")).await.unwrap_err().status(), 403);
        let down = auth.caller(&headers("Bearer down")).await.unwrap_err();
        assert_eq!(down.status(), 503);
        auth.caller(&headers("Bearer down")).await.unwrap_err();
        assert_eq!(auth.reviewer.0.load(Ordering::SeqCst), 5, "an outage is asked again, refusals are cached");
        let long = format!("Bearer {}", "x".repeat(MAX_TOKEN_BYTES + 1));
        assert_eq!(auth.caller(&headers(&long)).await.unwrap_err().status(), 401);
    }

    #[test]
    fn usernames_and_namespaces() {
        assert!(caller_of("system:serviceaccount:ns:sa").is_ok());
        for bad in ["system:serviceaccount:ns", "system:serviceaccount::sa", "system:node:n1", "a:b:c:d"] {
            assert!(caller_of(bad).is_err(), "{bad}");
        }
        let core: LabelSelector =
            serde_json::from_value(serde_json::json!({"matchLabels": {"mcp-hangar.io/core": "true"}})).unwrap();
        let labelled = BTreeMap::from([("mcp-hangar.io/core".to_string(), "true".to_string())]);
        assert!(admits(&core, &labelled));
        assert!(!admits(&core, &BTreeMap::new()));
        assert_eq!(AuthError::Missing.challenge(), "Bearer realm=\"mcp-hangar-gateway\"");
    }
}
