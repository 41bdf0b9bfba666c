//! The `tier_cold` and `tier_hot` jobs: move one image's objects between tiers (see
//! `lifecycle::mover`). A crash at any step is finished by the next attempt.

use std::time::Duration;

use super::{JobError, Outcome};
use crate::lifecycle::mover::{self, MoveError};
use crate::lifecycle::policy::Direction;
use crate::state::AppState;
use crate::store::jobs::ClaimedJob;

pub(super) async fn run(
    state: &AppState,
    job: &ClaimedJob,
    direction: Direction,
) -> Result<Outcome, JobError> {
    // One job per image at a time: a move must not race a delete or the opposite move.
    if state.db.has_other_running_job(job).await? {
        return Ok(Outcome::Later(Duration::from_secs(5)));
    }
    let why = match direction {
        Direction::ToCold => "tiering policy: old and rarely requested",
        Direction::ToHot => "tiering policy: requested again",
    };
    match mover::move_image(state, job.image_id, direction, why).await {
        Ok(_) => Ok(Outcome::Nothing),
        Err(MoveError::NeedsRestore(k)) => Err(JobError::Rejected(format!(
            "{k} is archived; restore the image first (POST /v1/images/{}/restore)",
            job.image_id
        ))),
        Err(e) => Err(JobError::Transient(e.to_string())),
    }
}
