//! The server's retention settings and its last run, for server admins.

use gantry_store::RetentionReport;

use crate::AppState;
use crate::access::{self, Identity};
use crate::error::OpResult;
use crate::retention::{JOB, Retention};

pub async fn status(
    state: &AppState,
    who: &Identity,
) -> OpResult<(Retention, Option<(i64, RetentionReport)>)> {
    access::require_admin(who)?;
    let last = state.store.last_maintenance(JOB).await?;
    Ok((state.config.retention, last))
}
