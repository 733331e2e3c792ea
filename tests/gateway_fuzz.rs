//! Property tests of the gateway's pure parts on hostile input: the SSE parser finds the same
//! events however the stream is cut into chunks and never panics; JSON-RPC decoding, era
//! classification and session ids never panic, and no edited session id opens. Fixed case
//! budgets keep CI fast.

use mcp_hangar::gateway::era::{self, McpHeaders};
use mcp_hangar::gateway::jsonrpc;
use mcp_hangar::gateway::session::{Session, SessionKey};
use mcp_hangar::gateway::sse::Parser;
use mcp_hangar::gateway::tools::ToolPolicy;
use proptest::prelude::*;
use serde_json::json;

/// SSE text made of the pieces that matter: fields, comments, every line end, blank lines.
fn sse_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        "data: [a-z{}\":,]{0,12}".prop_map(|s| s),
        Just("data:".to_string()),
        "id: [0-9]{1,3}".prop_map(|s| s),
        Just("event: message".to_string()),
        Just(": keepalive".to_string()),
        Just(String::new()),
    ];
    let end = prop_oneof![Just("\n"), Just("\r\n"), Just("\r")];
    prop::collection::vec((line, end), 0..30)
        .prop_map(|lines| lines.into_iter().map(|(l, e)| format!("{l}{e}")).collect::<String>() + "\n\n")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn sse_events_do_not_depend_on_chunking(text in sse_text(), cuts in prop::collection::vec(0usize..200, 0..8)) {
        let whole = Parser::new(1 << 20).push(text.as_bytes()).unwrap();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(text.len())).collect();
        cuts.sort_unstable();
        let mut parser = Parser::new(1 << 20);
        let mut pieces = Vec::new();
        let mut start = 0;
        for cut in cuts.into_iter().chain([text.len()]) {
            pieces.extend(parser.push(&text.as_bytes()[start..cut]).unwrap());
            start = cut;
        }
        prop_assert_eq!(pieces, whole);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_parsers(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Parser::new(64).push(&bytes);
        if let Ok(message) = jsonrpc::decode(&bytes) {
            let _ = era::classify(&message, McpHeaders::default());
        }
        let key = SessionKey::new(&[9; 32]).unwrap();
        let _ = key.open(&String::from_utf8_lossy(&bytes), "servers/a/b");
    }

    #[test]
    fn no_edited_session_id_opens(position in 0usize..400, byte in 0x21u8..0x7f) {
        let key = SessionKey::new(&[9; 32]).unwrap();
        let session = Session { route: "groups/ns/g".into(), member: "ns/a".into(), upstream: Some("u-1".into()) };
        let token = key.seal(&session);
        let mut edited = token.clone().into_bytes();
        let at = position % edited.len();
        prop_assume!(edited[at] != byte);
        edited[at] = byte;
        let edited = String::from_utf8(edited).unwrap();
        prop_assert!(key.open(&edited, "groups/ns/g").map(|s| s != session).unwrap_or(true));
    }

    #[test]
    fn filtered_answers_keep_only_allowed_tools(names in prop::collection::vec("[a-c]{1,2}", 0..12)) {
        let policy = ToolPolicy { allow: Some(["a", "b"].iter().map(|s| s.to_string()).collect()), ..Default::default() };
        let tools: Vec<_> = names.iter().map(|n| json!({"name": n})).collect();
        let mut answer = json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools}});
        policy.filter_answer(&mut answer, &json!(1));
        let kept: Vec<&str> = answer["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
        let expected: Vec<&str> = names.iter().map(String::as_str).filter(|n| *n == "a" || *n == "b").collect();
        prop_assert_eq!(kept, expected);
    }
}
