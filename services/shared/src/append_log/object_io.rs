//! Reading and writing single log objects in the store: writing a new
//! object (never overwriting), listing the log's objects, and reading an
//! object whole, its header alone, or a byte range of it.

use std::ops::Range;

use futures::TryStreamExt as _;
use object_store::{ObjectMeta, ObjectStoreExt as _, PutMode, PutPayload};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::AppendLog;
use super::layout::Listed;
use super::object_format::{Header, INDEX_STRIDE, parse_object};
use crate::{Error, Result};

/// First read of a large object's header line.
const HEADER_PROBE_BYTES: u64 = 64 * 1024;

impl<R> AppendLog<R>
where
    R: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    pub(super) async fn write_object(
        &self,
        name: &str,
        mut header: Header,
        records: &[R],
    ) -> Result<String> {
        let mut body = Vec::new();
        for (i, record) in records.iter().enumerate() {
            if i % INDEX_STRIDE == 0 {
                header.index.push(body.len() as u64);
            }
            serde_json::to_writer(&mut body, record).map_err(Error::AppendLogEncode)?;
            body.push(b'\n');
        }
        header.v = 2;
        let mut object = serde_json::to_vec(&header).map_err(Error::AppendLogEncode)?;
        object.push(b'\n');
        object.extend_from_slice(&body);
        let location = self.prefix.clone().join(name);
        self.store
            .put_opts(&location, PutPayload::from(object), PutMode::Create.into())
            .await
            .map_err(|source| self.store_error(source))?;
        Ok(location.to_string())
    }

    /// The log's objects in name order (names only: no object is read).
    pub(super) async fn list_objects(&self) -> Result<Vec<Listed>> {
        let mut metas: Vec<ObjectMeta> = self
            .store
            .list(Some(&self.prefix))
            .try_collect()
            .await
            .map_err(|source| self.store_error(source))?;
        metas.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(metas.into_iter().filter_map(Listed::parse).collect())
    }

    pub(super) async fn read_whole(&self, meta: &ObjectMeta) -> Result<(Header, Vec<R>)> {
        let bytes = match self.store.get(&meta.location).await {
            Ok(result) => result.bytes().await,
            Err(error) => Err(error),
        }
        .map_err(|source| self.store_error(source))?;
        parse_object(&meta.location, &bytes)
    }

    pub(super) async fn read_header(&self, meta: &ObjectMeta) -> Result<Header> {
        Ok(self.read_header_at(meta).await?.0)
    }

    /// The header of an object and where its records start, reading only
    /// the header line.
    pub(super) async fn read_header_at(&self, meta: &ObjectMeta) -> Result<(Header, u64)> {
        let mut probe = HEADER_PROBE_BYTES;
        loop {
            let end = probe.min(meta.size);
            let bytes = self.get_range(meta, 0..end).await?;
            if let Some(newline) = bytes.iter().position(|b| *b == b'\n') {
                let header = serde_json::from_slice(&bytes[..newline]).map_err(|source| {
                    Error::AppendLogCorrupt {
                        key: meta.location.to_string(),
                        line: 1,
                        source,
                    }
                })?;
                return Ok((header, newline as u64 + 1));
            }
            if end == meta.size {
                return Ok((Header::default(), meta.size));
            }
            probe = probe.saturating_mul(4);
        }
    }

    pub(super) async fn get_range(
        &self,
        meta: &ObjectMeta,
        range: Range<u64>,
    ) -> Result<bytes::Bytes> {
        self.store
            .get_range(&meta.location, range)
            .await
            .map_err(|source| self.store_error(source))
    }

    fn store_error(&self, source: object_store::Error) -> Error {
        Error::AppendLogStore {
            prefix: self.prefix.to_string(),
            source,
        }
    }
}
