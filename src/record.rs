//! The per-consumer shared-data record: one counter per limit, each with the window it counts.
//!
//! Format 2 (written since 0.2), a fixed binary layout read without parsing or allocating:
//!
//! ```text
//! "TG" 0x02                                   magic and version
//! then per limit, in plan order:
//!   u8 name length (1..=64), name bytes       the limit's name: counts follow names
//!   i64 LE window start, i64 LE window end    Unix seconds, end > start
//!   u64 LE count                              requests admitted in that window
//! ```
//!
//! Format 1 (`tg1` and a text line `<name> <start> <end> <count>` per limit) is still read, so
//! that counts survive replacing an older tollgate in a running Envoy; it is never written.
//! Anything else — another program's value, a truncated write — is [`Corrupt`], and the
//! counting treats it as a fresh record. An empty value (what `remove_shared_data` leaves) is a
//! record with no counts.

/// Magic and version of format 2.
const MAGIC: &[u8] = b"TG\x02";
/// Magic of the legacy text format.
const MAGIC_V1: &[u8] = b"tg1";
/// Most entries a record may have (more means it is not ours).
pub const MAX_ENTRIES: usize = 64;
/// Longest limit name (as [`crate::names::MAX_NAME_LEN`]).
const MAX_NAME: usize = 64;
/// Bytes of an entry besides its name: length byte, start, end, count.
const FIXED: usize = 1 + 8 + 8 + 8;

/// The value of a record with no counts.
pub fn empty() -> &'static [u8] {
    MAGIC
}

/// One limit's counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub name: &'a [u8],
    pub start: i64,
    pub end: i64,
    pub count: u64,
}

/// Why a stored value was not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corrupt;

/// A validated record; entries borrow from the stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    /// Format 2: the bytes after the magic, checked to be a sequence of whole entries.
    Binary(&'a [u8]),
    /// Format 1, decoded.
    Text(Vec<Entry<'a>>),
}

impl Default for Record<'_> {
    fn default() -> Self {
        Record::Binary(&[])
    }
}

impl<'a> Record<'a> {
    pub fn decode(bytes: &'a [u8]) -> Result<Record<'a>, Corrupt> {
        if bytes.is_empty() {
            return Ok(Record::default());
        }
        if let Some(body) = bytes.strip_prefix(MAGIC) {
            let mut count = 0;
            let mut rest = body;
            while !rest.is_empty() {
                count += 1;
                let (entry, tail) = next_entry(rest)?;
                if count > MAX_ENTRIES || entry.end <= entry.start {
                    return Err(Corrupt);
                }
                rest = tail;
            }
            return Ok(Record::Binary(body));
        }
        decode_text(bytes).map(Record::Text)
    }

    /// The counter of the limit called `name`, if the record has one.
    pub fn entry(&self, name: &str) -> Option<Entry<'a>> {
        match self {
            Record::Binary(body) => {
                let mut rest = *body;
                while let Ok((entry, tail)) = next_entry(rest) {
                    if entry.name == name.as_bytes() {
                        return Some(entry);
                    }
                    rest = tail;
                }
                None
            }
            Record::Text(entries) => entries.iter().find(|e| e.name == name.as_bytes()).copied(),
        }
    }

    /// Whether an entry's name passes `test` (walked in place, nothing allocated).
    pub fn any_name(&self, test: impl Fn(&[u8]) -> bool) -> bool {
        match self {
            Record::Binary(body) => {
                let mut rest = *body;
                while let Ok((entry, tail)) = next_entry(rest) {
                    if test(entry.name) {
                        return true;
                    }
                    rest = tail;
                }
                false
            }
            Record::Text(entries) => entries.iter().any(|e| test(e.name)),
        }
    }

    /// Every entry, in stored order.
    pub fn entries(&self) -> Vec<Entry<'a>> {
        match self {
            Record::Binary(body) => {
                let mut out = Vec::new();
                let mut rest = *body;
                while let Ok((entry, tail)) = next_entry(rest) {
                    out.push(entry);
                    rest = tail;
                }
                out
            }
            Record::Text(entries) => entries.clone(),
        }
    }
}

/// Splits the first entry off a format-2 body.
fn next_entry(bytes: &[u8]) -> Result<(Entry<'_>, &[u8]), Corrupt> {
    let (&len, rest) = bytes.split_first().ok_or(Corrupt)?;
    let len = usize::from(len);
    if len == 0 || len > MAX_NAME {
        return Err(Corrupt);
    }
    let (name, rest) = rest.split_at_checked(len).ok_or(Corrupt)?;
    let (start, rest) = take_8(rest)?;
    let (end, rest) = take_8(rest)?;
    let (count, rest) = take_8(rest)?;
    let entry = Entry {
        name,
        start: i64::from_le_bytes(start),
        end: i64::from_le_bytes(end),
        count: u64::from_le_bytes(count),
    };
    Ok((entry, rest))
}

fn take_8(bytes: &[u8]) -> Result<([u8; 8], &[u8]), Corrupt> {
    let (head, rest) = bytes.split_first_chunk::<8>().ok_or(Corrupt)?;
    Ok((*head, rest))
}

/// Bytes of a record holding counters for limits with these names.
pub fn encoded_len<'n>(names: impl IntoIterator<Item = &'n str>) -> usize {
    MAGIC.len() + names.into_iter().map(|n| FIXED + n.len()).sum::<usize>()
}

/// Writes a format-2 record. Names are validated limit names (1 to 64 bytes); a longer one
/// would not be ours and is cut to 64 bytes rather than written unreadable.
pub fn encode<'n>(entries: impl IntoIterator<Item = Entry<'n>> + Clone) -> Vec<u8> {
    let names = entries
        .clone()
        .into_iter()
        .map(|e| e.name.len().min(MAX_NAME));
    let mut out = Vec::with_capacity(MAGIC.len() + names.map(|n| FIXED + n).sum::<usize>());
    out.extend_from_slice(MAGIC);
    for entry in entries {
        let name = entry.name.get(..MAX_NAME).unwrap_or(entry.name);
        // `name` is at most 64 bytes long.
        out.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(name);
        out.extend_from_slice(&entry.start.to_le_bytes());
        out.extend_from_slice(&entry.end.to_le_bytes());
        out.extend_from_slice(&entry.count.to_le_bytes());
    }
    out
}

/// Format 1: `tg1`, then `\n<name> <start> <end> <count>` per limit.
fn decode_text(bytes: &[u8]) -> Result<Vec<Entry<'_>>, Corrupt> {
    let text = std::str::from_utf8(bytes).map_err(|_| Corrupt)?;
    let mut lines = text.split('\n');
    if lines.next().map(str::as_bytes) != Some(MAGIC_V1) {
        return Err(Corrupt);
    }
    let mut entries = Vec::new();
    for line in lines {
        if entries.len() >= MAX_ENTRIES {
            return Err(Corrupt);
        }
        let mut fields = line.split(' ');
        let (Some(name), Some(start), Some(end), Some(count), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(Corrupt);
        };
        let entry = Entry {
            name: name.as_bytes(),
            start: start.parse().map_err(|_| Corrupt)?,
            end: end.parse().map_err(|_| Corrupt)?,
            count: count.parse().map_err(|_| Corrupt)?,
        };
        if name.is_empty() || entry.end <= entry.start {
            return Err(Corrupt);
        }
        entries.push(entry);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, start: i64, end: i64, count: u64) -> Entry<'_> {
        Entry {
            name: name.as_bytes(),
            start,
            end,
            count,
        }
    }

    #[test]
    fn round_trips_with_the_documented_layout() {
        let entries = [
            entry("daily", 10, 20, 3),
            entry("b.u-r_st", -5, 1, u64::MAX),
        ];
        let bytes = encode(entries);
        assert_eq!(bytes.len(), encoded_len(["daily", "b.u-r_st"]));
        let mut expected = b"TG\x02\x05daily".to_vec();
        expected.extend_from_slice(&10i64.to_le_bytes());
        expected.extend_from_slice(&20i64.to_le_bytes());
        expected.extend_from_slice(&3u64.to_le_bytes());
        assert_eq!(bytes.get(..expected.len()), Some(&expected[..]));
        let record = Record::decode(&bytes).unwrap();
        assert_eq!(record.entry("daily"), Some(entries[0]));
        assert_eq!(record.entry("b.u-r_st"), Some(entries[1]));
        assert_eq!(record.entry("dail"), None);
        assert_eq!(Record::decode(empty()), Ok(Record::default()));
        assert_eq!(Record::decode(b""), Ok(Record::default()));
        assert_eq!(Record::default().entry("daily"), None);
    }

    #[test]
    fn the_text_format_of_earlier_versions_is_read() {
        let record =
            Record::decode(b"tg1\ndaily 10 20 3\nburst -5 1 18446744073709551615").unwrap();
        assert_eq!(record.entry("daily"), Some(entry("daily", 10, 20, 3)));
        assert_eq!(record.entry("burst"), Some(entry("burst", -5, 1, u64::MAX)));
        assert_eq!(Record::decode(b"tg1"), Ok(Record::Text(vec![])));
    }

    #[test]
    fn anything_else_is_corrupt() {
        let good = encode([entry("d", 1, 2, 3)]);
        let mut cases: Vec<Vec<u8>> = vec![
            b"garbage".to_vec(),
            b"\xff\xfe".to_vec(),
            b"tg1\nd 1 2".to_vec(),
            b"tg1\nd x 2 3".to_vec(),
            b"tg1\nd 2 1 3".to_vec(),
            b"tg2\nd 1 2 3".to_vec(),
            b"tg1\nd 1 2 -3".to_vec(),
            b"TG\x03".to_vec(),
            encode([entry("d", 2, 2, 3)]),
        ];
        // Every truncation of a good record, and a zero-length or over-long name.
        for len in MAGIC.len() + 1..good.len() {
            cases.push(good.get(..len).unwrap().to_vec());
        }
        // A name of 0 or of 65 bytes, each followed by a well-formed window and count: only
        // the length rule can refuse them.
        let entry_body = |name: &[u8]| {
            let mut bytes = b"TG\x02".to_vec();
            bytes.push(u8::try_from(name.len()).unwrap());
            bytes.extend_from_slice(name);
            bytes.extend_from_slice(&1i64.to_le_bytes());
            bytes.extend_from_slice(&2i64.to_le_bytes());
            bytes.extend_from_slice(&3u64.to_le_bytes());
            bytes
        };
        cases.push(entry_body(b""));
        cases.push(entry_body(&[b'a'; 65]));
        assert!(
            Record::decode(&entry_body(&[b'a'; 64])).is_ok(),
            "64 bytes is the longest"
        );
        for case in &cases {
            assert_eq!(Record::decode(case), Err(Corrupt), "{case:?}");
        }
        let many: Vec<Entry> = (0..=MAX_ENTRIES).map(|_| entry("x", 1, 2, 3)).collect();
        assert_eq!(Record::decode(&encode(many.clone())), Err(Corrupt));
        assert!(Record::decode(&encode(many.into_iter().skip(1))).is_ok());
        let text_many = format!("tg1{}", "\nx 1 2 3".repeat(MAX_ENTRIES + 1));
        assert_eq!(Record::decode(text_many.as_bytes()), Err(Corrupt));
    }
}
