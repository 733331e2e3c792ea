//! Incremental server-sent events: split a byte stream into events as they arrive, so an
//! event can be rewritten (allow-list filtering) and passed on without waiting for the stream
//! to end. Events keep their `id:`, `event:`, `retry:` and comment lines.

use bytes::{Bytes, BytesMut};

/// One event: its raw lines (without line ends) up to the blank line ending it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The lines, in order.
    pub lines: Vec<String>,
}

impl Event {
    /// The joined `data:` lines, if any.
    pub fn data(&self) -> Option<String> {
        let data: Vec<&str> = self
            .lines
            .iter()
            .filter_map(|line| line.strip_prefix("data:").map(|d| d.strip_prefix(' ').unwrap_or(d)))
            .collect();
        (!data.is_empty()).then(|| data.join("\n"))
    }

    /// Replaces the data lines with one line of `data`, where the first one was.
    pub fn set_data(&mut self, data: &str) {
        let first = self.lines.iter().position(|line| line.starts_with("data:")).unwrap_or(self.lines.len());
        self.lines.retain(|line| !line.starts_with("data:"));
        let lines = data.split('\n').map(|part| format!("data: {part}")).collect::<Vec<_>>();
        let at = first.min(self.lines.len());
        self.lines.splice(at..at, lines);
    }

    /// The event on the wire, ending with a blank line.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = String::new();
        for line in &self.lines {
            out.push_str(line);
            out.push('\n');
        }
        out.push('\n');
        Bytes::from(out)
    }
}

/// Why a stream cannot be parsed further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// One event grew past the limit.
    #[error("an event of the upstream stream is larger than {0} bytes")]
    TooLarge(usize),
    /// Not UTF-8.
    #[error("the upstream stream is not UTF-8")]
    Encoding,
}

/// Splits bytes into events as they come.
#[derive(Debug)]
pub struct Parser {
    buffer: BytesMut,
    current: Event,
    current_len: usize,
    max_event: usize,
}

impl Parser {
    /// A parser that refuses events over `max_event` bytes.
    pub fn new(max_event: usize) -> Self {
        Parser { buffer: BytesMut::new(), current: Event::default(), current_len: 0, max_event }
    }

    /// Feeds a chunk; returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Event>, SseError> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|&b| b == b'\n' || b == b'\r') {
            // A CR at the end of the buffer may be the first half of CRLF: wait for the next byte.
            if self.buffer[end] == b'\r' && end + 1 == self.buffer.len() {
                break;
            }
            let skip = if self.buffer[end] == b'\r' && self.buffer[end + 1] == b'\n' { 2 } else { 1 };
            let line = self.buffer.split_to(end + skip);
            let line = std::str::from_utf8(&line[..end]).map_err(|_| SseError::Encoding)?.to_string();
            if line.is_empty() {
                if !self.current.lines.is_empty() {
                    events.push(std::mem::take(&mut self.current));
                }
                self.current_len = 0;
            } else {
                self.current_len += line.len() + 1;
                if self.current_len > self.max_event {
                    return Err(SseError::TooLarge(self.max_event));
                }
                self.current.lines.push(line);
            }
        }
        if self.current_len + self.buffer.len() > self.max_event {
            return Err(SseError::TooLarge(self.max_event));
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_and_line_ends_are_found() {
        let mut parser = Parser::new(1024);
        assert!(parser.push(b"id: 1\r").unwrap().is_empty());
        assert!(parser.push(b"\nevent: message\ndata: {\"a\"").unwrap().is_empty());
        let events = parser.push(b":1}\r\n\r\n: keepalive\n\ndata: x\rdata: y\r\r\n").unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].lines, ["id: 1", "event: message", "data: {\"a\":1}"]);
        assert_eq!(events[0].data().as_deref(), Some("{\"a\":1}"));
        assert_eq!(events[1].data(), None, "a comment only");
        assert_eq!(events[2].data().as_deref(), Some("x\ny"));
    }

    #[test]
    fn rewritten_data_keeps_the_other_fields() {
        let mut event = Event { lines: vec!["id: 7".into(), "data: a".into(), "data: b".into(), "retry: 5".into()] };
        event.set_data("{}");
        assert_eq!(event.to_bytes(), Bytes::from("id: 7\ndata: {}\nretry: 5\n\n"));
    }

    #[test]
    fn oversized_events_and_bad_encoding_stop_the_stream() {
        let mut parser = Parser::new(16);
        assert_eq!(parser.push(&[b'x'; 17]).unwrap_err(), SseError::TooLarge(16));
        let mut parser = Parser::new(16);
        assert_eq!(parser.push(b"data: \xff\n").unwrap_err(), SseError::Encoding);
    }
}
