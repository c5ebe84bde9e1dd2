//! Splitting a binary COPY stream (`COPY ... TO STDOUT (FORMAT binary)`),
//! arriving in chunks of any size, into its whole tuples, without decoding
//! a value: only the framing (field counts and lengths) is read.

use super::COPY_HEADER;

/// The signature a binary COPY stream starts with.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// Where the stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the end of the header (its extension may be long).
    Header,
    Tuples,
    /// After the trailer.
    Done,
}

/// A binary COPY stream being split into tuples (see [`Tuples::feed`]).
#[derive(Debug)]
pub struct Tuples {
    fields: u16,
    state: State,
    /// Bytes of an incomplete header or tuple carried to the next chunk.
    carry: Vec<u8>,
    rows: u64,
}

impl Tuples {
    /// A stream whose tuples have `fields` fields each.
    pub fn new(fields: u16) -> Self {
        Self {
            fields,
            state: State::Header,
            carry: Vec::new(),
            rows: 0,
        }
    }

    /// Tuples read so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Takes the next chunk of the stream and appends the tuples it
    /// completes (tuple bytes only: no header, no trailer) to `out`;
    /// returns how many. A malformed stream, a tuple of another width or
    /// bytes after the trailer are an error (its message).
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<u64, String> {
        let mut data: &[u8] = chunk;
        let mut carried = Vec::new();
        if !self.carry.is_empty() {
            // A huge field arrives in many chunks: they are appended, not
            // copied again each time.
            self.carry.extend_from_slice(chunk);
            carried = std::mem::take(&mut self.carry);
            data = &carried;
        }
        let mut at = 0;
        if self.state == State::Header {
            match header_len(data)? {
                Some(n) => {
                    at = n;
                    self.state = State::Tuples;
                }
                None => {
                    self.carry = if carried.is_empty() {
                        data.to_vec()
                    } else {
                        carried
                    };
                    return Ok(0);
                }
            }
        }
        let start = at;
        let mut rows = 0;
        while self.state == State::Tuples {
            match self.tuple_len(&data[at..])? {
                Some(Frame::Tuple(n)) => {
                    at += n;
                    rows += 1;
                }
                Some(Frame::Trailer) => {
                    out.extend_from_slice(&data[start..at]);
                    at += 2;
                    self.state = State::Done;
                }
                None => break,
            }
        }
        if self.state == State::Tuples {
            out.extend_from_slice(&data[start..at]);
            self.carry = if at == 0 && !carried.is_empty() {
                carried
            } else {
                data[at..].to_vec()
            };
        } else if at < data.len() {
            return Err("bytes after the end of the binary COPY stream".to_owned());
        }
        self.rows += rows;
        Ok(rows)
    }

    /// Takes a chunk that holds only whole tuples, with nothing carried
    /// from the chunk before (a server sends each tuple in a message of its
    /// own): the tuples are `chunk[..len]`, to be handed on without a copy,
    /// and `Some((len, tuples))` says so. Any other chunk is left untouched
    /// (`None`) for [`Tuples::feed`]. A malformed tuple is an error.
    pub fn whole(&mut self, chunk: &[u8]) -> Result<Option<(usize, u64)>, String> {
        if self.state != State::Tuples || !self.carry.is_empty() {
            return Ok(None);
        }
        let (mut at, mut rows) = (0, 0);
        while at < chunk.len() {
            match self.tuple_len(&chunk[at..])? {
                Some(Frame::Tuple(n)) => {
                    at += n;
                    rows += 1;
                }
                _ => return Ok(None),
            }
        }
        self.rows += rows;
        Ok(Some((at, rows)))
    }

    /// Whether the trailer was read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Checks that the stream ended with its trailer.
    pub fn finish(&self) -> Result<(), String> {
        match self.state {
            State::Done => Ok(()),
            _ => Err("the binary COPY stream ended before its trailer".to_owned()),
        }
    }

    /// The length of the tuple at the start of `data`, the trailer, or
    /// `None` when `data` holds only part of it.
    fn tuple_len(&self, data: &[u8]) -> Result<Option<Frame>, String> {
        let Some(count) = data.get(..2) else {
            return Ok(None);
        };
        let count = i16::from_be_bytes([count[0], count[1]]);
        if count == -1 {
            return Ok(Some(Frame::Trailer));
        }
        if count != self.fields as i16 {
            return Err(format!(
                "a tuple of {count} fields where {} were expected",
                self.fields
            ));
        }
        let mut at = 2usize;
        for _ in 0..self.fields {
            let Some(len) = data.get(at..at + 4) else {
                return Ok(None);
            };
            let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
            at += 4;
            if len >= 0 {
                at += len as usize;
            } else if len != -1 {
                return Err(format!("a field of length {len}"));
            }
            if at > data.len() {
                return Ok(None);
            }
        }
        Ok(Some(Frame::Tuple(at)))
    }
}

enum Frame {
    Tuple(usize),
    Trailer,
}

/// The header's length, or `None` when `data` holds only part of it.
fn header_len(data: &[u8]) -> Result<Option<usize>, String> {
    let fixed = COPY_HEADER.len();
    if data.len() < SIGNATURE.len() {
        return if SIGNATURE.starts_with(data) {
            Ok(None)
        } else {
            Err("not a binary COPY stream (its signature is missing)".to_owned())
        };
    }
    if !data.starts_with(SIGNATURE) {
        return Err("not a binary COPY stream (its signature is missing)".to_owned());
    }
    let Some(ext) = data.get(fixed - 4..fixed) else {
        return Ok(None);
    };
    let ext = u32::from_be_bytes([ext[0], ext[1], ext[2], ext[3]]) as usize;
    let len = fixed + ext;
    Ok((data.len() >= len).then_some(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(fields: &[Option<&[u8]>]) -> Vec<u8> {
        let mut out = (fields.len() as i16).to_be_bytes().to_vec();
        for f in fields {
            match f {
                Some(b) => {
                    out.extend_from_slice(&(b.len() as i32).to_be_bytes());
                    out.extend_from_slice(b);
                }
                None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        out
    }

    fn stream() -> (Vec<u8>, Vec<u8>) {
        let mut tuples = Vec::new();
        tuples.extend(tuple(&[Some(b"\0\0\0\x01"), Some(b"abc")]));
        tuples.extend(tuple(&[None, Some(b"")]));
        tuples.extend(tuple(&[Some(b"\0\0\0\x03"), None]));
        let mut all = COPY_HEADER.to_vec();
        all.extend_from_slice(&tuples);
        all.extend_from_slice(&[0xff, 0xff]);
        (all, tuples)
    }

    #[test]
    fn every_split_of_the_stream_gives_the_same_tuples() {
        let (all, tuples) = stream();
        for size in 1..=all.len() {
            let mut t = Tuples::new(2);
            let mut out = Vec::new();
            for chunk in all.chunks(size) {
                t.feed(chunk, &mut out).expect("feeds");
            }
            t.finish().expect("ended");
            assert_eq!(out, tuples, "chunks of {size}");
            assert_eq!(t.rows(), 3);
        }
    }

    #[test]
    fn whole_tuples_are_taken_as_they_are_and_the_rest_left_to_feed() {
        let (all, tuples) = stream();
        let header = COPY_HEADER.len();
        let first = tuple(&[Some(b"\0\0\0\x01"), Some(b"abc")]).len();
        let mut t = Tuples::new(2);
        // Before the header is read, nothing is taken whole.
        assert_eq!(t.whole(&all[header..]).expect("framing"), None);
        let mut out = Vec::new();
        assert_eq!(t.feed(&all[..header], &mut out).expect("header"), 0);
        // Part of a tuple is left to feed, which carries it on.
        assert_eq!(t.whole(&all[header..header + 3]).expect("framing"), None);
        assert_eq!(
            t.whole(&all[header..header + first]).expect("framing"),
            Some((first, 1))
        );
        assert_eq!(
            t.feed(&all[header + first..header + first + 3], &mut out)
                .expect("part"),
            0
        );
        assert_eq!(
            t.whole(&all[header + first + 3..all.len() - 2])
                .expect("framing"),
            None,
            "carrying"
        );
        assert_eq!(
            t.feed(&all[header + first + 3..], &mut out).expect("rest"),
            2
        );
        t.finish().expect("ended");
        assert_eq!(t.rows(), 3);
        assert_eq!(out, tuples[first..]);
        let mut t = Tuples::new(3);
        t.feed(&all[..header], &mut out).expect("header");
        assert!(t.whole(&all[header..]).is_err(), "wrong width");
    }

    #[test]
    fn malformed_streams_are_refused() {
        let (all, _) = stream();
        let mut t = Tuples::new(3);
        assert!(t.feed(&all, &mut Vec::new()).is_err(), "wrong width");
        let mut t = Tuples::new(2);
        assert!(t.feed(b"PGCOPX\n", &mut Vec::new()).is_err(), "signature");
        let mut t = Tuples::new(2);
        let mut extra = all.clone();
        extra.push(0);
        assert!(
            t.feed(&extra, &mut Vec::new()).is_err(),
            "after the trailer"
        );
        let mut t = Tuples::new(2);
        t.feed(&all[..all.len() - 2], &mut Vec::new())
            .expect("partial");
        assert!(t.finish().is_err(), "no trailer");
        // A header extension is skipped.
        let mut with_ext = COPY_HEADER.to_vec();
        let n = with_ext.len();
        with_ext[n - 4..].copy_from_slice(&3u32.to_be_bytes());
        with_ext.extend_from_slice(b"xyz");
        with_ext.extend_from_slice(&all[COPY_HEADER.len()..]);
        let mut t = Tuples::new(2);
        t.feed(&with_ext, &mut Vec::new()).expect("extension");
        t.finish().expect("ended");
        assert_eq!(t.rows(), 3);
    }
}
