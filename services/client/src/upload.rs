//! The message stream of an IngestFile upload: the header, the file's
//! bytes in chunks, and the closing commit (size and CRC32C) without which
//! the ingest service commits nothing, so a stream cut short is never taken
//! for the whole file.

use bytes::Bytes;
use futures::Stream;
use lakehouse_proto::ingest::v1 as pb;

/// Chunk size of uploads: large enough for few messages, far below the
/// message-size limit.
pub const UPLOAD_CHUNK_BYTES: usize = 1 << 20;

/// An upload's messages, produced lazily from `chunks`.
pub type FileUpload = std::pin::Pin<Box<dyn Stream<Item = pb::IngestFileRequest> + Send>>;

/// The messages of an upload of `chunks` under `header`, ending with the
/// commit computed over exactly the bytes sent.
pub fn file_upload<I>(header: pb::IngestFileHeader, chunks: I) -> FileUpload
where
    I: IntoIterator<Item = Bytes>,
    I::IntoIter: Send + 'static,
{
    use pb::ingest_file_request::Part;
    struct State<It> {
        chunks: Option<It>,
        size: u64,
        crc: u32,
    }
    let head = pb::IngestFileRequest {
        part: Some(Part::Header(header)),
    };
    let state = State {
        chunks: Some(chunks.into_iter()),
        size: 0,
        crc: 0,
    };
    let body = futures::stream::unfold(state, |mut state| async move {
        let chunks = state.chunks.as_mut()?;
        match chunks.next() {
            Some(chunk) => {
                state.size += chunk.len() as u64;
                state.crc = crc32c::crc32c_append(state.crc, &chunk);
                let message = pb::IngestFileRequest {
                    part: Some(Part::Chunk(chunk)),
                };
                Some((message, state))
            }
            None => {
                state.chunks = None;
                let commit = pb::IngestFileRequest {
                    part: Some(Part::Commit(pb::IngestFileCommit {
                        size_bytes: state.size,
                        crc32c: state.crc,
                    })),
                };
                Some((commit, state))
            }
        }
    });
    Box::pin(futures::StreamExt::chain(
        futures::stream::iter([head]),
        body,
    ))
}

/// `data` split into upload chunks.
pub fn chunked(data: &[u8]) -> Vec<Bytes> {
    data.chunks(UPLOAD_CHUNK_BYTES)
        .map(Bytes::copy_from_slice)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt as _;

    #[tokio::test]
    async fn an_upload_ends_with_the_commit_of_its_bytes() {
        let data = b"id,name\n1,a\n2,b\n".repeat(3);
        let messages: Vec<_> = file_upload(
            pb::IngestFileHeader::default(),
            data.chunks(5)
                .map(Bytes::copy_from_slice)
                .collect::<Vec<_>>(),
        )
        .collect()
        .await;
        assert!(matches!(
            messages.first().and_then(|m| m.part.as_ref()),
            Some(pb::ingest_file_request::Part::Header(_))
        ));
        let Some(pb::ingest_file_request::Part::Commit(commit)) =
            messages.last().and_then(|m| m.part.clone())
        else {
            panic!("the last message is the commit");
        };
        assert_eq!(commit.size_bytes, data.len() as u64);
        assert_eq!(commit.crc32c, crc32c::crc32c(&data));
        assert_eq!(messages.len(), 2 + data.len().div_ceil(5));
    }
}
