//! `text/event-stream` parsing: an incremental parser and a size-limited event reader.

use std::collections::VecDeque;

use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::quote;

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field; empty for the default `message` type.
    pub event: String,
    /// The `data:` lines, joined by newlines.
    pub data: String,
}

/// Incremental parser of a `text/event-stream` (LF or CRLF line ends).
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    event: String,
    data: Option<String>,
}

impl SseParser {
    /// Feeds bytes; returns the events they complete.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        for &byte in chunk {
            if byte == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if let Some(event) = self.line_done(&String::from_utf8_lossy(&line)) {
                    events.push(event);
                }
            } else {
                self.line.push(byte);
            }
        }
        events
    }

    fn line_done(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            return self.data.take().map(|data| SseEvent { event, data });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            "event" => self.event = value.to_string(),
            _ => {}
        }
        None
    }
}

/// Events read from a response body, at most `limit` bytes in all. Dropping it drops the
/// body, which closes the stream.
pub(crate) struct EventStream {
    body: Incoming,
    parser: SseParser,
    pending: VecDeque<SseEvent>,
    read: usize,
    limit: usize,
}

impl EventStream {
    pub(crate) fn new(body: Incoming, limit: usize) -> Self {
        EventStream { body, parser: SseParser::default(), pending: VecDeque::new(), read: 0, limit }
    }

    /// The next event; `None` at the end of the stream.
    pub(crate) async fn next(&mut self) -> Result<Option<SseEvent>, String> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            let Some(frame) = self.body.frame().await else {
                return Ok(None);
            };
            let frame = frame.map_err(|e| format!("the event stream broke: {}", quote(&e.to_string())))?;
            if let Some(data) = frame.data_ref() {
                self.read += data.len();
                if self.read > self.limit {
                    return Err(format!("the event stream exceeded {} bytes", self.limit));
                }
                self.pending.extend(self.parser.push(data));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_chunks_crlf_comments_and_multiline_data() {
        let mut parser = SseParser::default();
        let mut events = parser.push(b": keep-alive\r\nevent: endpoint\r\ndata: /messages?s");
        assert!(events.is_empty());
        events.extend(parser.push(b"=1\r\n\r\ndata: {\"a\":\ndata: 1}\n\n"));
        assert_eq!(
            events,
            vec![
                SseEvent { event: "endpoint".into(), data: "/messages?s=1".into() },
                SseEvent { event: String::new(), data: "{\"a\":\n1}".into() },
            ]
        );
        assert!(parser.push(b"id: 7\nretry: 10\n\n").is_empty(), "no data, no event");
    }
}
