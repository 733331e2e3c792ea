//! The MCPServers as the controllers keep them: each one's JSON (without its managed fields
//! and kubectl's copy), deflated, in one block, beside the few facts the groups and the
//! metrics read without decoding it.
//!
//! At 11k servers kube-runtime's reflector store, holding each server decoded, took 2.6 KB a
//! server (the struct, a label map's 540-byte node, four conditions of five strings each, a
//! key of four strings); the JSON alone is 1.4 KB, deflated about 600 bytes (its conditions
//! and URLs repeat themselves). A reconcile inflates and decodes the one server it works on
//! (microseconds).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use kube::runtime::watcher;
use miniz_oxide::{deflate, inflate};
use tokio::sync::watch;

use crate::crd::{MCPServer, ServerState};
use crate::policy::membership::Candidate;
use crate::policy::selector::Labels;

/// Deflate's level for the kept JSON: the fastest, within 3% of the smallest here.
const LEVEL: u8 = 1;

/// A server's namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerKey {
    /// Its namespace.
    pub namespace: Box<str>,
    /// Its name.
    pub name: Box<str>,
}

impl ServerKey {
    /// The key of `namespace`/`name`.
    pub fn new(namespace: &str, name: &str) -> ServerKey {
        ServerKey { namespace: namespace.into(), name: name.into() }
    }

    /// The key of a server; `None` without a namespace or a name.
    pub fn of(server: &MCPServer) -> Option<ServerKey> {
        Some(ServerKey::new(server.metadata.namespace.as_deref()?, server.metadata.name.as_deref()?))
    }
}

impl std::fmt::Display for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A server's labels, sorted by key.
#[derive(Debug, Default)]
pub struct LabelList(Box<[(Box<str>, Box<str>)]>);

impl Labels for LabelList {
    fn label(&self, key: &str) -> Option<&str> {
        let found = self.0.binary_search_by(|(k, _)| (**k).cmp(key)).ok()?;
        Some(&self.0[found].1)
    }
}

/// One server as kept.
#[derive(Debug)]
pub struct Kept {
    /// The object as JSON, deflated.
    deflated: Box<[u8]>,
    labels: LabelList,
    deleting: bool,
    state: Option<ServerState>,
    consecutive_failures: Option<i32>,
    tools_count: Option<i32>,
    url: Option<Box<str>>,
}

impl Kept {
    /// Keeps `server` (whose managed fields the watch already dropped).
    pub fn of(server: &MCPServer) -> Kept {
        let labels = server.metadata.labels.iter().flatten().map(|(k, v)| (k.as_str().into(), v.as_str().into()));
        let facts = Candidate::from(server);
        Kept {
            deflated: deflate::compress_to_vec(&serde_json::to_vec(server).unwrap_or_default(), LEVEL).into(),
            labels: LabelList(labels.collect()),
            deleting: facts.deleting,
            state: facts.state,
            consecutive_failures: facts.consecutive_failures,
            tools_count: server.status.as_ref().and_then(|s| s.tools_count),
            url: facts.url.map(Into::into),
        }
    }

    /// The server, decoded.
    pub fn server(&self) -> Result<MCPServer, serde_json::Error> {
        let json = inflate::decompress_to_vec(&self.deflated).map_err(|error| {
            serde_json::Error::io(std::io::Error::new(std::io::ErrorKind::InvalidData, error.to_string()))
        })?;
        serde_json::from_slice(&json)
    }

    /// What membership reads of it.
    pub fn candidate<'a>(&'a self, key: &'a ServerKey) -> Candidate<'a> {
        Candidate {
            name: &key.name,
            namespace: Some(&key.namespace),
            labels: &self.labels,
            deleting: self.deleting,
            state: self.state,
            consecutive_failures: self.consecutive_failures,
            url: self.url.as_deref(),
        }
    }

    /// The state its status reports.
    pub fn state(&self) -> Option<ServerState> {
        self.state
    }

    /// The tool count its status reports.
    pub fn tools_count(&self) -> Option<i32> {
        self.tools_count
    }
}

type Table = BTreeMap<ServerKey, Arc<Kept>>;

/// The servers as watched, sorted by namespace and name, filled by [`Servers::apply`].
pub struct Servers {
    table: RwLock<Table>,
    /// While a list runs: the servers listed so far, which replace the table when it ends.
    listing: std::sync::Mutex<Option<Table>>,
    /// True once a first list ended.
    listed: watch::Sender<bool>,
}

impl Default for Servers {
    fn default() -> Self {
        Servers { table: RwLock::default(), listing: std::sync::Mutex::default(), listed: watch::Sender::new(false) }
    }
}

impl Servers {
    /// Applies a watch event, as kube's reflector does: a list replaces every server at its end.
    pub fn apply(&self, event: &watcher::Event<MCPServer>) {
        let mut listing = self.listing.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            watcher::Event::Init => *listing = Some(Table::new()),
            watcher::Event::InitApply(server) => {
                if let (Some(listing), Some(key)) = (listing.as_mut(), ServerKey::of(server)) {
                    listing.insert(key, Arc::new(Kept::of(server)));
                }
            }
            watcher::Event::InitDone => {
                if let Some(listed) = listing.take() {
                    *self.table.write().unwrap_or_else(|e| e.into_inner()) = listed;
                }
                self.listed.send_replace(true);
            }
            watcher::Event::Apply(server) => {
                if let Some(key) = ServerKey::of(server) {
                    let kept = Arc::new(Kept::of(server));
                    self.table.write().unwrap_or_else(|e| e.into_inner()).insert(key, kept);
                }
            }
            watcher::Event::Delete(server) => {
                if let Some(key) = ServerKey::of(server) {
                    self.table.write().unwrap_or_else(|e| e.into_inner()).remove(&key);
                }
            }
        }
    }

    /// The server `key` names, if kept: during a relist, as listed when it was already (so a
    /// server created while the watch was down can be reconciled before the list ends).
    pub fn get(&self, key: &ServerKey) -> Option<Arc<Kept>> {
        let listing = self.listing.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(kept) = listing.as_ref().and_then(|listing| listing.get(key)) {
            return Some(kept.clone());
        }
        drop(listing);
        self.table.read().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
    }

    /// What `scan` makes of the servers of `namespace`, in name order (the store is read-locked
    /// meanwhile).
    pub fn scan_namespace<R>(
        &self,
        namespace: &str,
        scan: impl FnOnce(&mut dyn Iterator<Item = (&ServerKey, &Kept)>) -> R,
    ) -> R {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        let start = ServerKey::new(namespace, "");
        let mut servers = table
            .range(start..)
            .take_while(|(key, _)| &*key.namespace == namespace)
            .map(|(key, kept)| (key, kept.as_ref()));
        scan(&mut servers)
    }

    /// What `scan` makes of every server, in namespace and name order (the store is read-locked
    /// meanwhile).
    pub fn scan<R>(&self, scan: impl FnOnce(&mut dyn Iterator<Item = (&ServerKey, &Kept)>) -> R) -> R {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        scan(&mut table.iter().map(|(key, kept)| (key, kept.as_ref())))
    }

    /// Waits until a first list ended (every waiter wakes: kube's `Store::wait_until_ready`
    /// woke only one of several).
    pub async fn listed(&self) {
        // The sender is `self.listed`, alive while `self` is borrowed: the wait cannot fail.
        let _ = self.listed.subscribe().wait_for(|listed| *listed).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::MCPServerStatus;

    fn server(namespace: &str, name: &str, labels: &[(&str, &str)]) -> MCPServer {
        let mut server = MCPServer::new(name, Default::default());
        server.metadata.namespace = Some(namespace.into());
        server.metadata.labels = Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        server.status = Some(MCPServerStatus {
            state: Some(ServerState::Ready),
            tools_count: Some(3),
            url: Some("http://u".into()),
            ..Default::default()
        });
        server
    }

    #[test]
    fn a_kept_server_decodes_to_itself_and_answers_membership_without_decoding() {
        let original = server("ns", "a", &[("tier", "db"), ("app", "x")]);
        let kept = Kept::of(&original);
        assert_eq!(serde_json::to_value(kept.server().unwrap()).unwrap(), serde_json::to_value(&original).unwrap());
        let key = ServerKey::of(&original).unwrap();
        let candidate = kept.candidate(&key);
        assert_eq!((candidate.name, candidate.namespace), ("a", Some("ns")));
        assert_eq!(candidate.labels.label("tier"), Some("db"));
        assert_eq!(candidate.labels.label("app"), Some("x"));
        assert_eq!(candidate.labels.label("zone"), None);
        assert_eq!((candidate.state, candidate.url), (Some(ServerState::Ready), Some("http://u")));
        assert_eq!((kept.state(), kept.tools_count()), (Some(ServerState::Ready), Some(3)));
    }

    #[test]
    fn lists_replace_the_table_at_their_end_and_namespaces_are_ranges() {
        use watcher::Event::*;
        let servers = Servers::default();
        servers.apply(&Apply(server("a", "gone", &[])));
        servers.apply(&Init);
        for (ns, name) in [("b", "y"), ("a", "x"), ("ab", "z"), ("b", "w")] {
            servers.apply(&InitApply(server(ns, name, &[])));
        }
        assert!(servers.get(&ServerKey::new("a", "gone")).is_some(), "the old table serves until the list ends");
        assert!(servers.get(&ServerKey::new("b", "y")).is_some(), "what the list returned already serves");
        assert!(servers.scan_namespace("b", |all| all.count()) == 0, "scans wait for the list's end");
        assert!(!*servers.listed.borrow());
        servers.apply(&InitDone);
        assert!(*servers.listed.borrow());
        assert!(servers.get(&ServerKey::new("a", "gone")).is_none(), "deleted while the watch was down");
        let names = |ns| servers.scan_namespace(ns, |all| all.map(|(k, _)| k.name.to_string()).collect::<Vec<_>>());
        assert_eq!(names("a"), ["x"]);
        assert_eq!(names("b"), ["w", "y"]);
        servers.apply(&Delete(server("b", "w", &[])));
        servers.apply(&Apply(server("c", "v", &[])));
        let all: Vec<_> = servers.scan(|all| all.map(|(key, _)| key.to_string()).collect());
        assert_eq!(all, ["a/x", "ab/z", "b/y", "c/v"]);
    }
}
