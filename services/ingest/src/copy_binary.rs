//! Framing of PostgreSQL's binary COPY format, parsed incrementally.
//!
//! The stream is an 11-byte signature, a flags word, a header extension,
//! then tuples (`int16` field count, then per field an `int32` length, -1 for
//! NULL, and that many bytes) and a trailer (field count -1). The server
//! sends roughly one CopyData message per row, but nothing guarantees where
//! chunks split, so a tuple may straddle chunks: the parser parses straight
//! from each chunk and keeps only an incomplete tail.
//!
//! A tuple is first checked for completeness (walking the lengths), then
//! handed to the sink as field ranges, so a sink never sees half a row.

use bytes::{Buf as _, Bytes, BytesMut};

/// `PGCOPY\n\377\r\n\0`.
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// Bit 16 of the flags: OIDs included (never for `COPY (query)`).
const FLAG_WITH_OIDS: u32 = 1 << 16;

/// A malformed COPY stream. It means a server or protocol bug, not bad input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// The stream does not start with the binary COPY signature.
    #[error("the COPY stream does not start with the binary signature")]
    BadSignature,
    /// The header asks for something this parser does not do.
    #[error("the COPY header has unsupported flags {0:#x}")]
    UnsupportedFlags(u32),
    /// A tuple has a different number of fields than the query's columns.
    #[error("a COPY tuple has {found} fields, expected {expected}")]
    FieldCount {
        /// Columns of the query.
        expected: usize,
        /// Fields in the tuple.
        found: i64,
    },
    /// A field length is negative (other than -1).
    #[error("a COPY field has invalid length {0}")]
    BadLength(i32),
    /// Data followed the trailer, or the stream ended inside a tuple.
    #[error("the COPY stream {0}")]
    Truncated(&'static str),
}

/// Receives complete tuples.
pub trait TupleSink {
    /// The error a sink may return; parsing stops at the first.
    type Error: From<FramingError>;

    /// One tuple: `fields[i]` is `None` for NULL, else the field's bytes
    /// within `data`.
    fn tuple(&mut self, data: &[u8], fields: &[Option<(usize, usize)>]) -> Result<(), Self::Error>;
}

/// The incremental parser of one COPY stream.
#[derive(Debug)]
pub struct CopyParser {
    columns: usize,
    header_done: bool,
    finished: bool,
    tail: BytesMut,
    fields: Vec<Option<(usize, usize)>>,
}

enum Step {
    /// A tuple of this many bytes was parsed.
    Tuple(usize),
    /// The trailer (2 bytes) was reached.
    Trailer,
    /// More bytes are needed.
    NeedMore,
}

impl CopyParser {
    /// A parser for tuples of `columns` fields.
    pub fn new(columns: usize) -> Self {
        Self {
            columns,
            header_done: false,
            finished: false,
            tail: BytesMut::new(),
            fields: Vec::with_capacity(columns),
        }
    }

    /// Parses every complete tuple of `chunk` (after any kept tail) into
    /// `sink`; returns how many tuples were delivered.
    pub fn feed<S: TupleSink>(&mut self, chunk: Bytes, sink: &mut S) -> Result<usize, S::Error> {
        if self.tail.is_empty() {
            // The common case: parse straight from the chunk, keep the rest.
            let (consumed, tuples) = self.parse(&chunk, sink)?;
            if consumed < chunk.len() {
                self.tail.extend_from_slice(&chunk[consumed..]);
            }
            Ok(tuples)
        } else {
            self.tail.extend_from_slice(&chunk);
            let tail = std::mem::take(&mut self.tail);
            let (consumed, tuples) = self.parse(&tail, sink)?;
            let mut tail = tail;
            tail.advance(consumed);
            self.tail = tail;
            Ok(tuples)
        }
    }

    /// Checks that the stream ended cleanly, after the trailer.
    pub fn finish(&self) -> Result<(), FramingError> {
        if !self.finished {
            return Err(FramingError::Truncated("ended before its trailer"));
        }
        Ok(())
    }

    fn parse<S: TupleSink>(
        &mut self,
        data: &[u8],
        sink: &mut S,
    ) -> Result<(usize, usize), S::Error> {
        let mut pos = 0;
        let mut tuples = 0;
        if !self.header_done {
            match header_len(data)? {
                Some(len) => {
                    pos = len;
                    self.header_done = true;
                }
                None => return Ok((0, 0)),
            }
        }
        while pos < data.len() {
            if self.finished {
                return Err(FramingError::Truncated("has data after its trailer").into());
            }
            match self.frame(&data[pos..])? {
                Step::Tuple(len) => {
                    sink.tuple(&data[pos..pos + len], &self.fields)?;
                    pos += len;
                    tuples += 1;
                }
                Step::Trailer => {
                    self.finished = true;
                    pos += 2;
                }
                Step::NeedMore => break,
            }
        }
        Ok((pos, tuples))
    }

    /// Finds the extent of one tuple and records its field ranges relative
    /// to the tuple's start.
    fn frame(&mut self, data: &[u8]) -> Result<Step, FramingError> {
        let Some(count) = read_i16(data, 0) else {
            return Ok(Step::NeedMore);
        };
        if count == -1 {
            return Ok(Step::Trailer);
        }
        if usize::try_from(count).ok() != Some(self.columns) {
            return Err(FramingError::FieldCount {
                expected: self.columns,
                found: i64::from(count),
            });
        }
        self.fields.clear();
        let mut pos = 2;
        for _ in 0..self.columns {
            let Some(len) = read_i32(data, pos) else {
                return Ok(Step::NeedMore);
            };
            pos += 4;
            if len == -1 {
                self.fields.push(None);
                continue;
            }
            let len = usize::try_from(len).map_err(|_| FramingError::BadLength(len))?;
            if data.len() < pos + len {
                return Ok(Step::NeedMore);
            }
            self.fields.push(Some((pos, len)));
            pos += len;
        }
        Ok(Step::Tuple(pos))
    }
}

/// The header's length once it is complete, `None` while it is not.
fn header_len(data: &[u8]) -> Result<Option<usize>, FramingError> {
    if data.len() < SIGNATURE.len() {
        if !SIGNATURE.starts_with(data) {
            return Err(FramingError::BadSignature);
        }
        return Ok(None);
    }
    if &data[..SIGNATURE.len()] != SIGNATURE {
        return Err(FramingError::BadSignature);
    }
    let (Some(flags), Some(extension)) = (read_i32(data, 11), read_i32(data, 15)) else {
        return Ok(None);
    };
    let flags = flags as u32;
    if flags & FLAG_WITH_OIDS != 0 || flags & 0xffff != 0 {
        return Err(FramingError::UnsupportedFlags(flags));
    }
    let extension = usize::try_from(extension).map_err(|_| FramingError::BadLength(extension))?;
    let len = 19 + extension;
    Ok((data.len() >= len).then_some(len))
}

fn read_i16(data: &[u8], at: usize) -> Option<i16> {
    let bytes = data.get(at..at + 2)?;
    Some(i16::from_be_bytes([bytes[0], bytes[1]]))
}

fn read_i32(data: &[u8], at: usize) -> Option<i32> {
    let bytes = data.get(at..at + 4)?;
    Some(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Encodes tuples in binary COPY format, for tests.
    pub(crate) fn encode(rows: &[Vec<Option<Vec<u8>>>]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        for row in rows {
            out.extend_from_slice(&(row.len() as i16).to_be_bytes());
            for field in row {
                match field {
                    None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(bytes) => {
                        out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                        out.extend_from_slice(bytes);
                    }
                }
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    #[derive(Default)]
    struct Collect(Vec<Vec<Option<Vec<u8>>>>);

    impl TupleSink for Collect {
        type Error = FramingError;
        fn tuple(
            &mut self,
            data: &[u8],
            fields: &[Option<(usize, usize)>],
        ) -> Result<(), FramingError> {
            self.0.push(
                fields
                    .iter()
                    .map(|f| f.map(|(start, len)| data[start..start + len].to_vec()))
                    .collect(),
            );
            Ok(())
        }
    }

    fn rows() -> Vec<Vec<Option<Vec<u8>>>> {
        vec![
            vec![Some(vec![1, 2, 3]), None],
            vec![Some(vec![]), Some(b"hello".to_vec())],
            vec![None, None],
        ]
    }

    #[test]
    fn parses_at_every_split_point() {
        let stream = encode(&rows());
        for split in 0..=stream.len() {
            let mut parser = CopyParser::new(2);
            let mut sink = Collect::default();
            parser
                .feed(Bytes::copy_from_slice(&stream[..split]), &mut sink)
                .expect("first half");
            parser
                .feed(Bytes::copy_from_slice(&stream[split..]), &mut sink)
                .expect("second half");
            parser.finish().expect("trailer seen");
            assert_eq!(sink.0, rows(), "split at {split}");
        }
    }

    #[test]
    fn parses_byte_by_byte() {
        let stream = encode(&rows());
        let mut parser = CopyParser::new(2);
        let mut sink = Collect::default();
        for byte in stream {
            parser
                .feed(Bytes::from(vec![byte]), &mut sink)
                .expect("byte");
        }
        parser.finish().expect("trailer seen");
        assert_eq!(sink.0, rows());
    }

    #[test]
    fn rejects_bad_streams() {
        let mut sink = Collect::default();
        assert_eq!(
            CopyParser::new(2).feed(Bytes::from_static(b"COPY"), &mut sink),
            Err(FramingError::BadSignature)
        );
        let stream = encode(&rows());
        assert!(matches!(
            CopyParser::new(3).feed(Bytes::from(stream.clone()), &mut sink),
            Err(FramingError::FieldCount { expected: 3, .. })
        ));
        let mut parser = CopyParser::new(2);
        parser
            .feed(
                Bytes::copy_from_slice(&stream[..stream.len() - 2]),
                &mut sink,
            )
            .expect("prefix");
        assert!(parser.finish().is_err(), "no trailer yet");
    }
}
