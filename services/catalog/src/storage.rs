//! The catalog's calls to the storage service: bucket names, listings,
//! deletes, ranged reads (as an `ObjectStore`) and the error journal.

use std::sync::Arc;

use lakehouse_client::{GrpcObjectStore, StorageClient};
use lakehouse_proto::storage::v1 as pb;
use object_store::ObjectStore;
use tokio::sync::OnceCell;
use tonic::Code;

use crate::error::{Error, Result};
use crate::resync::Listed;

/// Keys asked for per ListObjects call.
const LIST_PAGE: i32 = 1000;
/// The service name in journal entries.
const SERVICE: &str = "catalog";

/// A storage client with what the catalog needs on top.
#[derive(Debug)]
pub struct StorageAccess {
    client: StorageClient,
    default_bucket: OnceCell<String>,
}

impl StorageAccess {
    /// Over `client` (which may connect lazily).
    pub fn new(client: StorageClient) -> Self {
        Self {
            client,
            default_bucket: OnceCell::new(),
        }
    }

    /// One bucket as an `ObjectStore`, for parquet's ranged footer reads.
    pub fn object_store(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        Arc::new(GrpcObjectStore::new(self.client.clone(), bucket))
    }

    /// The bucket a new dataset goes to: the one named, which must exist,
    /// or the storage default. Stored resolved, so a later change of the
    /// default does not move existing datasets.
    pub async fn resolve_bucket(&self, bucket: &str) -> Result<String> {
        if bucket.is_empty()
            && let Some(name) = self.default_bucket.get()
        {
            return Ok(name.clone());
        }
        let buckets = self
            .client
            .clone()
            .list_buckets(pb::ListBucketsRequest {})
            .await
            .map_err(Error::storage("list buckets"))?
            .into_inner()
            .buckets;
        if bucket.is_empty() {
            let default = buckets
                .iter()
                .find(|b| b.is_default)
                .map(|b| b.name.clone())
                .ok_or_else(|| {
                    Error::InvalidRequest("storage has no default bucket; name a bucket".to_owned())
                })?;
            return Ok(self
                .default_bucket
                .get_or_init(|| async { default })
                .await
                .clone());
        }
        if buckets.iter().any(|b| b.name == bucket) {
            Ok(bucket.to_owned())
        } else {
            let known: Vec<String> = buckets.into_iter().map(|b| b.name).collect();
            Err(Error::InvalidRequest(format!(
                "storage has no bucket {bucket:?}; known buckets: {}",
                known.join(", ")
            )))
        }
    }

    /// Every object under `prefix`.
    pub async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<Listed>> {
        let mut listed = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .client
                .clone()
                .list_objects(pb::ListObjectsRequest {
                    bucket: bucket.to_owned(),
                    prefix: prefix.to_owned(),
                    delimiter: String::new(),
                    page_size: LIST_PAGE,
                    page_token,
                })
                .await
                .map_err(Error::storage("list the dataset's files"))?
                .into_inner();
            listed.extend(page.objects.into_iter().map(|o| Listed {
                key: o.key,
                size: o.size,
                etag: o.etag,
            }));
            if page.next_page_token.is_empty() {
                return Ok(listed);
            }
            page_token = page.next_page_token;
        }
    }

    /// One object's size and tag, or `None` if it does not exist.
    pub async fn head(&self, bucket: &str, key: &str) -> Result<Option<Listed>> {
        match self
            .client
            .clone()
            .head_object(pb::HeadObjectRequest {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            })
            .await
        {
            Ok(response) => Ok(response.into_inner().object.map(|o| Listed {
                key: o.key,
                size: o.size,
                etag: o.etag,
            })),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(Error::storage("read a file's size")(status)),
        }
    }

    /// Deletes one object; `false` if it was not there.
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<bool> {
        match self
            .client
            .clone()
            .delete_object(pb::DeleteObjectRequest {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            })
            .await
        {
            Ok(_) => Ok(true),
            Err(status) if status.code() == Code::NotFound => Ok(false),
            Err(status) => Err(Error::storage("delete a file")(status)),
        }
    }

    /// Records a failure the owner should see in the storage error journal
    /// (ListErrors). Best effort: when storage itself is down this fails
    /// too, so the failure is also logged here.
    pub async fn report_error(&self, operation: &str, bucket: &str, key: &str, message: &str) {
        lakehouse_client::report_error(
            &self.client,
            lakehouse_client::ErrorReport {
                service: SERVICE,
                operation,
                bucket,
                key,
                message,
            },
        )
        .await;
    }
}
