//! The line rules of a `text/event-stream` body (WHATWG HTML, "Server-sent events", parsing an
//! event stream), byte by byte, keeping nothing but a few flags: it hands on the bytes of each
//! event's data and says where each event ends.
//!
//! Lines end with `\r\n`, `\n` or `\r`; a blank line ends an event; `data:` with or without one
//! space; a line without a colon is a field with an empty value; a line starting with `:` is a
//! comment; the data lines of one event are joined by `\n`; a leading byte order mark is
//! skipped. Other fields (`event`, `id`, `retry`) are read past: usage is found by its place in
//! the data, not by the event's name.

/// What the stream means to the JSON reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Out<'a> {
    /// The next bytes of the current event's data.
    Data(&'a [u8]),
    /// The current event ended (a blank line).
    End,
}

/// Where in a line the reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// At the start of a line.
    Start,
    /// In the field name; `matched` bytes of it are a prefix of `data` so far.
    Name { matched: u8, data: bool },
    /// Just after `data:`: a single space here is not part of the value.
    ValueStart,
    /// In a `data` value.
    Value,
    /// In a comment or in the value of another field.
    Skip,
}

const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];
const DATA: &[u8] = b"data";

/// The reader: a few bytes of state, whatever the stream.
#[derive(Debug, Clone)]
pub(super) struct Sse {
    line: Line,
    /// The last byte was `\r`: a `\n` right after it ends no further line.
    after_cr: bool,
    /// The current event has had a data line (the next one is joined by `\n`).
    has_data: bool,
    /// How many bytes of the byte order mark the stream started with; `None` once past it.
    bom: Option<u8>,
}

impl Sse {
    pub(super) fn new() -> Sse {
        Sse {
            line: Line::Start,
            after_cr: false,
            has_data: false,
            bom: Some(0),
        }
    }

    /// Reads `chunk`, telling `out` the data bytes (a line's value at once, not byte by byte)
    /// and each event's end.
    pub(super) fn feed(&mut self, chunk: &[u8], mut out: impl FnMut(Out)) {
        let mut rest = chunk;
        while let Some((&b, tail)) = rest.split_first() {
            // Inside a value (`after_cr` is then false): the run up to the line's end is data.
            if self.line == Line::Value {
                let run = rest
                    .iter()
                    .position(|c| *c == b'\n' || *c == b'\r')
                    .unwrap_or(rest.len());
                if run > 0 {
                    out(Out::Data(rest.get(..run).unwrap_or_default()));
                    rest = rest.get(run..).unwrap_or_default();
                    continue;
                }
            }
            rest = tail;
            if let Some(seen) = self.bom {
                if BOM.get(usize::from(seen)) == Some(&b) {
                    self.bom = (seen < 2).then_some(seen + 1);
                    continue;
                }
                // Not a byte order mark after all: what matched of it is the line's start.
                self.bom = None;
                for &early in BOM.iter().take(usize::from(seen)) {
                    self.byte(early, &mut out);
                }
            }
            self.byte(b, &mut out);
        }
    }

    fn byte(&mut self, b: u8, out: &mut impl FnMut(Out)) {
        if b == b'\n' && self.after_cr {
            self.after_cr = false;
            return;
        }
        self.after_cr = b == b'\r';
        let eol = b == b'\n' || b == b'\r';
        self.line = match self.line {
            Line::Start if eol => {
                self.has_data = false;
                out(Out::End);
                Line::Start
            }
            Line::Start if b == b':' => Line::Skip,
            Line::Start => Line::Name {
                matched: 0,
                data: true,
            }
            .next(b),
            Line::Name { matched, data } if eol || b == b':' => {
                if data && usize::from(matched) == DATA.len() {
                    self.data_line(out);
                    if eol {
                        Line::Start
                    } else {
                        Line::ValueStart
                    }
                } else if eol {
                    Line::Start
                } else {
                    Line::Skip
                }
            }
            name @ Line::Name { .. } => name.next(b),
            Line::ValueStart | Line::Value | Line::Skip if eol => Line::Start,
            Line::ValueStart if b == b' ' => Line::Value,
            Line::ValueStart | Line::Value => {
                out(Out::Data(std::slice::from_ref(&b)));
                Line::Value
            }
            Line::Skip => Line::Skip,
        };
    }

    /// A data line starts: the lines of one event are joined by `\n`.
    fn data_line(&mut self, out: &mut impl FnMut(Out)) {
        if self.has_data {
            out(Out::Data(b"\n"));
        }
        self.has_data = true;
    }
}

impl Line {
    /// The field name after one more byte.
    fn next(self, b: u8) -> Line {
        match self {
            Line::Name { matched, data } => {
                let data = data && DATA.get(usize::from(matched)) == Some(&b);
                Line::Name {
                    matched: if data { matched + 1 } else { matched },
                    data,
                }
            }
            other => other,
        }
    }
}
