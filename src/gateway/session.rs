//! Session ids the gateway hands out (session revisions): the upstream's session id and the
//! chosen member, bound to the route, authenticated with HMAC-SHA256 under a key every gateway
//! replica shares. Any replica can route a session with no shared store, and a client can
//! neither forge one nor point it at another member or route.
//!
//! Format: `v1.<base64url(JSON payload)>.<base64url(tag)>`, visible ASCII as MCP requires.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::{Deserialize, Serialize};

/// Shortest accepted key, in bytes (HMAC-SHA256's block-size security needs 32).
pub const MIN_KEY_LEN: usize = 32;
/// Longest session id accepted from a client.
pub const MAX_TOKEN_LEN: usize = 2048;
const VERSION: &str = "v1";

/// What a session id carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The route the session was opened on, e.g. `servers/ns/name`.
    #[serde(rename = "r")]
    pub route: String,
    /// The member serving it, `namespace/name` of an MCPServer.
    #[serde(rename = "m")]
    pub member: String,
    /// The upstream's own `Mcp-Session-Id`, if it gave one.
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
}

/// Why a session id is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The key is too short.
    #[error("the session key must be at least {MIN_KEY_LEN} bytes")]
    ShortKey,
    /// Malformed, forged or tampered with.
    #[error("the session id is not one this gateway issued")]
    Invalid,
    /// Valid, but issued for another route.
    #[error("the session id belongs to another route")]
    OtherRoute,
}

/// The shared signing key, and the keys it replaced (still accepted, never used to sign), so a
/// key can be rotated without ending open sessions: add the new key first, roll the replicas,
/// drop the old key later.
#[derive(Clone)]
pub struct SessionKey {
    current: hmac::Key,
    previous: Vec<hmac::Key>,
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    /// A key from secret bytes (a Secret-mounted file or an env var), at least 32 bytes.
    pub fn new(secret: &[u8]) -> Result<Self, SessionError> {
        if secret.len() < MIN_KEY_LEN {
            return Err(SessionError::ShortKey);
        }
        Ok(SessionKey { current: hmac::Key::new(hmac::HMAC_SHA256, secret), previous: Vec::new() })
    }

    /// Keys from text, one per line (blank lines and surrounding space ignored): the first signs,
    /// every one verifies.
    pub fn from_lines(text: &[u8]) -> Result<Self, SessionError> {
        let mut lines = text.split(|b| *b == b'\n').map(<[u8]>::trim_ascii).filter(|l| !l.is_empty());
        let mut key = SessionKey::new(lines.next().ok_or(SessionError::ShortKey)?)?;
        for line in lines {
            key.previous.push(SessionKey::new(line)?.current);
        }
        Ok(key)
    }

    /// A random key, for a single replica that was given none.
    pub fn random() -> Self {
        let rng = ring::rand::SystemRandom::new();
        let current = hmac::Key::generate(hmac::HMAC_SHA256, &rng).expect("the system random source works");
        SessionKey { current, previous: Vec::new() }
    }

    /// The session id for `session`.
    pub fn seal(&self, session: &Session) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(session).expect("strings serialize"));
        let signed = format!("{VERSION}.{payload}");
        let tag = hmac::sign(&self.current, signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The session behind a client's session id, checked against the route it arrived on.
    pub fn open(&self, token: &str, route: &str) -> Result<Session, SessionError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(SessionError::Invalid);
        }
        let (signed, tag) = token.rsplit_once('.').ok_or(SessionError::Invalid)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| SessionError::Invalid)?;
        let authentic = std::iter::once(&self.current)
            .chain(&self.previous)
            .any(|key| hmac::verify(key, signed.as_bytes(), &tag).is_ok());
        if !authentic {
            return Err(SessionError::Invalid);
        }
        let payload = signed.strip_prefix("v1.").ok_or(SessionError::Invalid)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| SessionError::Invalid)?;
        let session: Session = serde_json::from_slice(&payload).map_err(|_| SessionError::Invalid)?;
        if session.route != route {
            return Err(SessionError::OtherRoute);
        }
        Ok(session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SessionKey {
        SessionKey::new(&[byte; 32]).unwrap()
    }

    fn session() -> Session {
        Session { route: "groups/ns/g".into(), member: "ns/a".into(), upstream: Some("abc-123".into()) }
    }

    #[test]
    fn a_sealed_session_opens_on_any_replica_with_the_same_key() {
        let token = key(1).seal(&session());
        assert!(token.bytes().all(|b| (0x21..=0x7e).contains(&b)), "visible ASCII: {token}");
        assert_eq!(key(1).open(&token, "groups/ns/g"), Ok(session()));
    }

    #[test]
    fn forged_tampered_or_foreign_ids_are_refused() {
        let token = key(1).seal(&session());
        assert_eq!(key(2).open(&token, "groups/ns/g"), Err(SessionError::Invalid), "another key");
        assert_eq!(key(1).open(&token, "groups/ns/other"), Err(SessionError::OtherRoute));
        let redirected = Session { member: "ns/b".into(), ..session() };
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&redirected).unwrap());
        let tag = token.rsplit_once('.').unwrap().1;
        assert_eq!(key(1).open(&format!("v1.{payload}.{tag}"), "groups/ns/g"), Err(SessionError::Invalid));
        let mut flipped = token.clone().into_bytes();
        flipped[5] ^= 1;
        assert_eq!(key(1).open(&String::from_utf8(flipped).unwrap(), "groups/ns/g"), Err(SessionError::Invalid));
        for junk in ["", "v1", "v1..", "abc-123", &"x".repeat(MAX_TOKEN_LEN + 1)] {
            assert_eq!(key(1).open(junk, "groups/ns/g"), Err(SessionError::Invalid), "{junk}");
        }
    }

    #[test]
    fn a_rotated_key_still_opens_the_sessions_of_the_one_it_replaced() {
        let old = SessionKey::from_lines(&[b'o'; 40]).unwrap();
        let token = old.seal(&session());
        let rotated =
            SessionKey::from_lines(format!("\n {}\n{}\n", "n".repeat(40), "o".repeat(40)).as_bytes()).unwrap();
        assert_eq!(rotated.open(&token, "groups/ns/g"), Ok(session()), "the old key still verifies");
        let fresh = rotated.seal(&session());
        assert_eq!(
            SessionKey::from_lines(&[b'n'; 40]).unwrap().open(&fresh, "groups/ns/g"),
            Ok(session()),
            "the new key signs"
        );
        assert_eq!(old.open(&fresh, "groups/ns/g"), Err(SessionError::Invalid));
        assert_eq!(SessionKey::from_lines(b"\n \n").unwrap_err(), SessionError::ShortKey);
        assert!(SessionKey::from_lines(format!("{}\nshort", "n".repeat(40)).as_bytes()).is_err());
    }

    #[test]
    fn short_keys_are_refused() {
        assert_eq!(SessionKey::new(b"short").unwrap_err(), SessionError::ShortKey);
    }
}
