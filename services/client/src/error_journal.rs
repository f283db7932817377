//! Reporting a failure the owner should see to the storage error journal
//! (ListErrors), shared by every service that is a storage client.

use std::time::Duration;

use lakehouse_proto::storage::v1 as pb;

use crate::StorageClient;

/// How long a report may wait for storage; a report never holds up the
/// work it describes.
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// One failure to journal. `message` must not carry credentials.
#[derive(Debug, Clone, Copy)]
pub struct ErrorReport<'a> {
    /// The reporting service, such as "vector".
    pub service: &'a str,
    /// The operation that failed.
    pub operation: &'a str,
    /// The bucket involved; empty for the default bucket.
    pub bucket: &'a str,
    /// The object key involved.
    pub key: &'a str,
    /// What went wrong.
    pub message: &'a str,
}

/// Journals `report`. Best effort: when storage itself is down this fails
/// too, so the failure is always logged here as well.
pub async fn report_error(client: &StorageClient, report: ErrorReport<'_>) {
    tracing::warn!(
        service = report.service,
        operation = report.operation,
        bucket = report.bucket,
        key = report.key,
        message = report.message,
        "failure journaled"
    );
    let request = pb::ReportErrorRequest {
        service: report.service.to_owned(),
        operation: report.operation.to_owned(),
        message: report.message.to_owned(),
        bucket: report.bucket.to_owned(),
        key: report.key.to_owned(),
    };
    let mut client = client.clone();
    match tokio::time::timeout(REPORT_TIMEOUT, client.report_error(request)).await {
        Ok(Ok(_)) => {}
        Ok(Err(status)) => {
            tracing::warn!(code = ?status.code(), error = status.message(), "could not journal a failure");
        }
        Err(_) => tracing::warn!("could not journal a failure: storage did not answer"),
    }
}
