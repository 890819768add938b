//! Runners as the server last saw them: for any signed-in caller (what they offer, their
//! labels and use say why a stage waits).

use gantry_store::Runner;

use crate::AppState;
use crate::access::Identity;
use crate::error::OpResult;

pub async fn list(state: &AppState, _who: &Identity) -> OpResult<Vec<Runner>> {
    Ok(state.store.runners().await?)
}
