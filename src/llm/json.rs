//! A streaming JSON tokenizer that finds `usage` objects in a response as it passes, byte by
//! byte, in a fixed amount of memory.
//!
//! It follows strings and their escapes (so a `"usage"` in generated text is text), counts the
//! open containers, and remembers the key of the current member in the top two levels. When the
//! value of a member `usage` at `usage` (top level), `response.usage` or `message.usage` is an
//! object, it copies that object's bytes into a fixed buffer and, when the object closes, hands
//! them out to be parsed. A `usage` anywhere deeper (an echoed tool schema, a tool call's
//! arguments) is not the response's usage and is never captured.
//!
//! It trusts the document to be JSON only as far as finding things goes: malformed input finds
//! nothing or nonsense, never a panic or more memory.

/// The most bytes a `usage` object may have (providers send under 500); a larger one is
/// skipped whole.
pub(super) const CAPTURE: usize = 2048;

/// Keys longer than this are some other key (those looked for are shorter).
const KEY: usize = 32;

/// How many levels of nesting have their kind (object or array) tracked; deeper levels are only
/// counted, which is enough since keys are only read in the top two.
const LEVELS: u32 = 64;

/// The keys that matter, in the top two levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Usage,
    /// `response` (OpenAI Responses stream events) or `message` (Anthropic `message_start`).
    Envelope,
    Other,
}

impl Key {
    fn of(name: Option<&[u8]>) -> Key {
        match name {
            Some(b"usage") => Key::Usage,
            Some(b"response" | b"message") => Key::Envelope,
            _ => Key::Other,
        }
    }
}

/// What the innermost container expects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// A key (after `{` or `,` in an object).
    Key,
    /// The `:` after a key.
    Colon,
    /// A value (after `:`, or in an array).
    Value,
    /// A `,` or the close, after a value.
    After,
}

/// The tokenizer: a little over [`CAPTURE`] bytes, whatever it reads.
#[derive(Debug, Clone)]
pub(super) struct Json {
    /// Open containers; saturating, so that no input overflows it.
    depth: u32,
    /// Bit `d - 1` set: the container at depth `d` (1..=[`LEVELS`]) is an object.
    objects: u64,
    slot: Slot,
    in_string: bool,
    escaped: bool,
    /// The string being read is a key in the top two levels, recorded in `key`.
    recording: bool,
    key: [u8; KEY],
    /// Bytes in `key`; more than [`KEY`] (or an escape) makes it some other key.
    key_len: usize,
    key_bad: bool,
    /// The key of the current member at depth 1 and at depth 2.
    keys: [Key; 2],
    /// The depth of the `usage` object being copied; 0 when none is.
    capture_depth: u32,
    capture: [u8; CAPTURE],
    capture_len: usize,
    /// The object being copied outgrew [`CAPTURE`]: it is skipped.
    capture_over: bool,
}

impl Json {
    pub(super) fn new() -> Json {
        Json {
            depth: 0,
            objects: 0,
            slot: Slot::Value,
            in_string: false,
            escaped: false,
            recording: false,
            key: [0; KEY],
            key_len: 0,
            key_bad: false,
            keys: [Key::Other; 2],
            capture_depth: 0,
            capture: [0; CAPTURE],
            capture_len: 0,
            capture_over: false,
        }
    }

    /// Forgets the document read so far (a new event starts), keeping the buffers.
    pub(super) fn reset(&mut self) {
        self.depth = 0;
        self.objects = 0;
        self.slot = Slot::Value;
        self.in_string = false;
        self.escaped = false;
        self.recording = false;
        self.key_len = 0;
        self.key_bad = false;
        self.keys = [Key::Other; 2];
        self.capture_depth = 0;
        self.capture_len = 0;
        self.capture_over = false;
    }

    /// Reads a run of bytes, handing each `usage` object it closes to `found`. Text inside a
    /// string that is neither a key being read nor part of a `usage` being copied (a
    /// completion's content: most of a stream) is skipped to its next `"` or `\\` at once.
    pub(super) fn bytes(&mut self, mut run: &[u8], found: &mut impl FnMut(&[u8])) {
        while let Some((&b, rest)) = run.split_first() {
            if self.in_string && !self.escaped && !self.recording && self.capture_depth == 0 {
                let plain = run
                    .iter()
                    .position(|c| *c == b'"' || *c == b'\\')
                    .unwrap_or(run.len());
                if plain > 0 {
                    run = run.get(plain..).unwrap_or_default();
                    continue;
                }
            }
            if let Some(usage) = self.byte(b) {
                found(usage);
            }
            run = rest;
        }
    }

    /// Reads one byte; returns the bytes of a `usage` object that this byte closed.
    pub(super) fn byte(&mut self, b: u8) -> Option<&[u8]> {
        if self.capture_depth > 0 {
            match self.capture.get_mut(self.capture_len) {
                Some(slot) => {
                    *slot = b;
                    self.capture_len += 1;
                }
                None => self.capture_over = true,
            }
        }
        if self.in_string {
            self.string_byte(b);
            return None;
        }
        match b {
            b'"' => {
                self.in_string = true;
                self.recording = self.slot == Slot::Key && (1..=2).contains(&self.depth);
                self.key_len = 0;
                self.key_bad = false;
            }
            b'{' | b'[' => self.open(b == b'{'),
            b'}' | b']' => return self.close(),
            b':' => {
                if self.slot == Slot::Colon {
                    self.slot = Slot::Value;
                }
            }
            b',' => {
                self.slot = if self.is_object(self.depth) {
                    Slot::Key
                } else {
                    Slot::Value
                };
            }
            b' ' | b'\t' | b'\n' | b'\r' => {}
            // A number or a literal (or garbage): a value.
            _ => self.slot = Slot::After,
        }
        None
    }

    fn string_byte(&mut self, b: u8) {
        if self.escaped {
            self.escaped = false;
        } else if b == b'\\' {
            self.escaped = true;
            // Providers never escape the letters of a key; one that does is some other key.
            self.key_bad = true;
        } else if b == b'"' {
            self.in_string = false;
            if self.recording {
                self.recording = false;
                let name = if self.key_bad {
                    None
                } else {
                    self.key.get(..self.key_len)
                };
                let key = Key::of(name);
                if let Some(slot) = self.key_at(self.depth) {
                    *slot = key;
                }
                self.slot = Slot::Colon;
            } else {
                self.slot = if self.slot == Slot::Key {
                    Slot::Colon
                } else {
                    Slot::After
                };
            }
            return;
        }
        if self.recording {
            match self.key.get_mut(self.key_len) {
                Some(slot) => {
                    *slot = b;
                    self.key_len += 1;
                }
                None => self.key_bad = true,
            }
        }
    }

    /// The key remembered for the current member at `depth` (1 or 2).
    fn key_at(&mut self, depth: u32) -> Option<&mut Key> {
        let index = usize::try_from(depth).ok()?.checked_sub(1)?;
        self.keys.get_mut(index)
    }

    fn is_object(&self, depth: u32) -> bool {
        (1..=LEVELS).contains(&depth) && self.objects >> (depth - 1) & 1 == 1
    }

    /// Whether an object opened now is the response's usage.
    fn at_usage(&self) -> bool {
        if self.slot != Slot::Value || self.capture_depth > 0 || !self.is_object(1) {
            return false;
        }
        match (self.depth, self.keys) {
            (1, [Key::Usage, _]) => true,
            (2, [Key::Envelope, Key::Usage]) => self.is_object(2),
            _ => false,
        }
    }

    fn open(&mut self, object: bool) {
        let capture = object && self.at_usage();
        self.depth = self.depth.saturating_add(1);
        if (1..=LEVELS).contains(&self.depth) {
            let bit = 1u64 << (self.depth - 1);
            if object {
                self.objects |= bit;
            } else {
                self.objects &= !bit;
            }
        }
        if let Some(key) = self.key_at(self.depth) {
            *key = Key::Other;
        }
        self.slot = if object { Slot::Key } else { Slot::Value };
        if capture {
            self.capture_depth = self.depth;
            self.capture_len = 0;
            self.capture_over = false;
            if let Some(first) = self.capture.first_mut() {
                *first = b'{';
                self.capture_len = 1;
            }
        }
    }

    fn close(&mut self) -> Option<&[u8]> {
        if self.depth == 0 {
            // A closer with nothing open: garbage, read past.
            return None;
        }
        let closed = self.depth;
        self.depth -= 1;
        self.slot = Slot::After;
        if self.capture_depth == 0 || closed != self.capture_depth {
            return None;
        }
        self.capture_depth = 0;
        if self.capture_over {
            return None;
        }
        self.capture.get(..self.capture_len)
    }
}
