//! Framing of streamed bodies into whole events: Server-Sent Events and NDJSON.
//!
//! A [`Framer`] takes a body's bytes in whatever pieces the network gives and
//! returns the events they complete, so a reader gets whole events whatever
//! the split. SSE follows the WHATWG HTML "event stream" interpretation: lines
//! end at `\n`, `\r\n` or `\r`; a UTF-8 BOM at the start is dropped; a line
//! starting with `:` is a comment; `field: value` (one leading space of the
//! value dropped, a line without `:` is a field with an empty value); `data`
//! lines are joined with `\n`; `event` names the event (default `message`);
//! a blank line dispatches the event if it has data; a partial event at the
//! end of the stream is not dispatched. NDJSON: one JSON value per `\n`-ended
//! line (a `\r` before the `\n` and blank lines are ignored; a last line
//! without its `\n` still counts).

use bytes::{Bytes, BytesMut};

/// Longest event (or line) a framer accepts, in bytes.
pub const MAX_EVENT: usize = 16 << 20;

/// How a streamed body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Server-Sent Events (`text/event-stream`).
    Sse,
    /// Newline-delimited JSON (`application/x-ndjson`).
    Ndjson,
}

impl Framing {
    /// The framing named `name` (`"sse"` or `"ndjson"`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "sse" => Some(Self::Sse),
            "ndjson" => Some(Self::Ndjson),
            _ => None,
        }
    }
}

/// One whole event: its name (SSE's `event` field, `message` by default;
/// empty for NDJSON) and its data (SSE's joined `data` lines; an NDJSON line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The event's name.
    pub event: Bytes,
    /// The event's data.
    pub data: Bytes,
}

impl Event {
    /// Bytes the event holds (for buffer accounting).
    pub fn size(&self) -> usize {
        self.event.len() + self.data.len()
    }
}

/// An event (or line) longer than [`MAX_EVENT`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLong;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Splits a byte stream into events, across any split of its bytes.
///
/// # Examples
///
/// ```
/// use _core::http::sse::{Framer, Framing};
/// let mut f = Framer::new(Framing::Sse);
/// let mut out = Vec::new();
/// f.feed(b"event: ping\ndata: a\r\nda", &mut out).unwrap();
/// f.feed(b"ta: b\n\n", &mut out).unwrap();
/// assert_eq!(&out[0].event[..], b"ping");
/// assert_eq!(&out[0].data[..], b"a\nb");
/// ```
#[derive(Debug)]
pub struct Framer {
    framing: Framing,
    /// The current line, when it spans pieces.
    line: BytesMut,
    /// The last piece ended with `\r`: a `\n` starting the next one ends no line.
    after_cr: bool,
    /// No line was processed yet (a BOM may start it).
    first: bool,
    /// SSE: the data buffer (each `data` value followed by `\n`).
    data: BytesMut,
    /// SSE: the event type buffer.
    event: Option<Bytes>,
}

impl Framer {
    /// A framer at the start of a stream.
    pub fn new(framing: Framing) -> Self {
        Self {
            framing,
            line: BytesMut::new(),
            after_cr: false,
            first: true,
            data: BytesMut::new(),
            event: None,
        }
    }

    /// The framing this framer applies.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Add `chunk`; append the events it completes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Event>) -> Result<(), TooLong> {
        let mut rest = chunk;
        if self.after_cr {
            self.after_cr = false;
            if let Some(b'\n') = rest.first() {
                rest = &rest[1..];
            }
        }
        while let Some(end) = self.line_end(rest) {
            let (head, tail) = rest.split_at(end);
            let sep = tail[0];
            rest = &tail[1..];
            if sep == b'\r' {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    None => self.after_cr = true,
                    _ => {}
                }
            }
            if self.line.is_empty() {
                self.line_done(head, out)?;
            } else {
                self.line.extend_from_slice(head);
                let line = std::mem::take(&mut self.line);
                self.line_done(&line, out)?;
            }
        }
        if self.line.len() + rest.len() > MAX_EVENT {
            return Err(TooLong);
        }
        self.line.extend_from_slice(rest);
        Ok(())
    }

    /// End of the stream: append what the rest completes (an NDJSON line left
    /// without its `\n`; never a partial SSE event) and reset.
    pub fn finish(&mut self, out: &mut Vec<Event>) -> Result<(), TooLong> {
        let line = std::mem::take(&mut self.line);
        let result = match self.framing {
            Framing::Ndjson if !line.is_empty() => self.line_done(&line, out),
            _ => Ok(()),
        };
        *self = Self::new(self.framing);
        result
    }

    fn line_end(&self, bytes: &[u8]) -> Option<usize> {
        match self.framing {
            Framing::Sse => bytes.iter().position(|&b| b == b'\n' || b == b'\r'),
            Framing::Ndjson => bytes.iter().position(|&b| b == b'\n'),
        }
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<Event>) -> Result<(), TooLong> {
        let mut line = line;
        if std::mem::take(&mut self.first) {
            line = line.strip_prefix(BOM).unwrap_or(line);
        }
        match self.framing {
            Framing::Sse => self.sse_line(line, out),
            Framing::Ndjson => {
                let json = line.trim_ascii();
                if !json.is_empty() {
                    out.push(Event {
                        event: Bytes::new(),
                        data: Bytes::copy_from_slice(json),
                    });
                }
                Ok(())
            }
        }
    }

    fn sse_line(&mut self, line: &[u8], out: &mut Vec<Event>) -> Result<(), TooLong> {
        if line.is_empty() {
            let event = self.event.take();
            if !self.data.is_empty() {
                let mut data = std::mem::take(&mut self.data);
                data.truncate(data.len() - 1); // the last data line's \n
                out.push(Event {
                    event: event
                        .filter(|e| !e.is_empty())
                        .unwrap_or_else(|| Bytes::from_static(b"message")),
                    data: data.freeze(),
                });
            }
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.data.len() + value.len() + 1 > MAX_EVENT {
                    return Err(TooLong);
                }
                self.data.extend_from_slice(value);
                self.data.extend_from_slice(b"\n");
            }
            b"event" => self.event = Some(Bytes::copy_from_slice(value)),
            _ => {} // id, retry and unknown fields: nothing a reader of replies needs
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(framing: Framing, pieces: &[&[u8]]) -> Vec<(String, String)> {
        let mut f = Framer::new(framing);
        let mut out = Vec::new();
        for p in pieces {
            f.feed(p, &mut out).unwrap();
        }
        f.finish(&mut out).unwrap();
        out.into_iter()
            .map(|e| {
                (
                    String::from_utf8(e.event.to_vec()).unwrap(),
                    String::from_utf8(e.data.to_vec()).unwrap(),
                )
            })
            .collect()
    }

    fn ev(event: &str, data: &str) -> (String, String) {
        (event.to_string(), data.to_string())
    }

    #[test]
    fn sse_fields_comments_and_line_ends() {
        let got = frame(
            Framing::Sse,
            &[b": hi\r\nevent: a\rdata: 1\r\ndata:2\ndata\n\nid: 7\nretry: 5\ndata:  x\n\r"],
        );
        assert_eq!(got, vec![ev("a", "1\n2\n"), ev("message", " x")]);
    }

    #[test]
    fn sse_blank_line_without_data_dispatches_nothing_and_resets_the_name() {
        let got = frame(Framing::Sse, &[b"event: a\n\ndata: b\n\n"]);
        assert_eq!(got, vec![ev("message", "b")]);
        let got = frame(Framing::Sse, &[b"event:\ndata: b\n\n"]);
        assert_eq!(got, vec![ev("message", "b")]);
    }

    #[test]
    fn sse_partial_event_at_eof_is_not_dispatched() {
        assert_eq!(
            frame(Framing::Sse, &[b"data: a\n\ndata: b\n"]),
            vec![ev("message", "a")]
        );
        assert_eq!(
            frame(Framing::Sse, &[b"data: a\n\ndata: b"]),
            vec![ev("message", "a")]
        );
    }

    #[test]
    fn sse_bom_dropped_at_start_only() {
        let got = frame(Framing::Sse, &[b"\xEF\xBB", b"\xBFdata: a\n\n"]);
        assert_eq!(got, vec![ev("message", "a")]);
        let got = frame(Framing::Sse, &[b"data: a\n\n\xEF\xBB\xBFdata: b\n\n"]);
        assert_eq!(got, vec![ev("message", "a")]); // a field named BOM+"data"
    }

    #[test]
    fn cr_then_lf_across_pieces_is_one_line_end() {
        let got = frame(
            Framing::Sse,
            &[b"data: a\r", b"\n", b"\r", b"\ndata: b\n\n"],
        );
        assert_eq!(got, vec![ev("message", "a"), ev("message", "b")]);
    }

    #[test]
    fn ndjson_lines() {
        let got = frame(
            Framing::Ndjson,
            &[b"{\"a\":1}\r\n\n  \n{\"b\"", b":2}\n[3]"],
        );
        assert_eq!(
            got,
            vec![ev("", "{\"a\":1}"), ev("", "{\"b\":2}"), ev("", "[3]")]
        );
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut f = Framer::new(Framing::Sse);
        let mut out = Vec::new();
        let piece = vec![b'x'; 1 << 20];
        let mut result = Ok(());
        for _ in 0..17 {
            result = result.and_then(|()| f.feed(&piece, &mut out));
        }
        assert_eq!(result, Err(TooLong));
        let mut f = Framer::new(Framing::Sse);
        let line = [b"data: ".as_slice(), &piece, b"\n"].concat();
        let mut result = Ok(());
        for _ in 0..17 {
            result = result.and_then(|()| f.feed(&line, &mut out));
        }
        assert_eq!(result, Err(TooLong));
    }

    fn stream_bytes() -> impl Strategy<Value = Vec<u8>> {
        let token = prop_oneof![
            Just(b"data: ".to_vec()),
            Just(b"data:".to_vec()),
            Just(b"event: e".to_vec()),
            Just(b": c".to_vec()),
            Just(b"id: 1".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\xEF\xBB\xBF".to_vec()),
            Just(b"{\"x\": 1}".to_vec()),
            Just(b" ".to_vec()),
            "[a-z:]{0,4}".prop_map(String::into_bytes),
        ];
        prop::collection::vec(token, 0..40).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_events(
            bytes in stream_bytes(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
            ndjson in any::<bool>(),
        ) {
            let framing = if ndjson { Framing::Ndjson } else { Framing::Sse };
            let whole = frame(framing, &[&bytes]);
            let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            at.sort_unstable();
            let mut pieces: Vec<&[u8]> = Vec::new();
            let mut start = 0;
            for cut in at {
                pieces.push(&bytes[start..cut]);
                start = cut;
            }
            pieces.push(&bytes[start..]);
            prop_assert_eq!(frame(framing, &pieces), whole.clone());
            let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
            prop_assert_eq!(frame(framing, &bytewise), whole);
        }
    }
}
