//! Not found means not found: the trial listings of an index that does not
//! exist answer as if it had no trials (ListTrials with nothing,
//! BestTrial with NO_TRIAL_MEETS_RECALL), because a trial journal outlives
//! its index and stays readable. The CLI asks GetIndex when such an answer
//! comes back, so `trial ls --index typo` is INDEX_NOT_FOUND (exit 3) and
//! not an empty success. Only then: an index's journal still lists after
//! the index is deleted.

use lakehouse_client::VectorClient;
use lakehouse_proto::vector::v1 as pb;

use crate::cmd::Result;

/// Fails with the server's INDEX_NOT_FOUND when `index` does not exist.
pub async fn require_index(client: &mut VectorClient, index: &str) -> Result<()> {
    client
        .get_index(pb::GetIndexRequest {
            name: index.to_owned(),
        })
        .await?;
    Ok(())
}
