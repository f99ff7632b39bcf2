//! What the attachment and artifact routes share: path parameters, the storage quota
//! (reserved when an upload URL is issued, freed when an object is deleted), and finding a
//! task's group.
//!
//! ```ignore
//! let mut tx = conn.transaction()?;
//! let budget = lock_group_for_upload(&mut tx, group_id)?;   // serializes uploads per group
//! let old = /* the existing row's size, read FOR UPDATE */;
//! let recorded = budget.charge(&mut tx, old, content_length)?; // 403 QuotaExceeded, nothing charged
//! ```

use crate::api::{ArtifactContentType, GroupState, UserGroupRole};
use crate::coordinator::auth::AuthUser;
use crate::coordinator::authz::role_in;
use crate::coordinator::error::ApiError;
use crate::coordinator::http::Call;
use crate::coordinator::{storage, Ctx};
use postgres::GenericClient;
use uuid::Uuid;

/// A task uuid from the path (400 `Invalid URL` otherwise, as the peer answers).
pub(super) fn parse_uuid(s: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(s).map_err(|e| ApiError::BadPath(format!("{s:?} is not a UUID: {e}")))
}

/// An artifact content type from the path (`result`, `exec-log`, `std-log` or an alias).
pub(super) fn parse_content_type(s: &str) -> Result<ArtifactContentType, ApiError> {
    s.parse().map_err(|e: crate::api::UnknownVariant| ApiError::BadPath(e.to_string()))
}

/// The base of local-store URLs for this caller.
pub(super) fn origin(ctx: &Ctx, call: &Call) -> String {
    storage::origin(call.header("Host"), call.header("X-Forwarded-Proto"), ctx.cfg.bind)
}

/// `limit`/`offset` as SQL values, bounded as every query is (see [`crate::coordinator::limits::page`]).
pub(super) fn page(limit: Option<u64>, offset: Option<u64>) -> Result<(i64, i64), ApiError> {
    crate::coordinator::limits::page(limit, offset)
}

/// A group's storage budget, locked for the rest of the transaction.
pub(super) struct Budget {
    group_id: i64,
    quota: i64,
    used: i64,
}

/// Locks the group's row (so concurrent uploads to one group are counted one after the
/// other) and checks that it accepts uploads.
pub(super) fn lock_group_for_upload(tx: &mut postgres::Transaction<'_>, group_id: i64) -> Result<Budget, ApiError> {
    let row = tx
        .query_opt("SELECT state, storage_quota, storage_used FROM groups WHERE id = $1 FOR UPDATE", &[&group_id])?
        .ok_or_else(|| ApiError::Internal(format!("group {group_id} vanished")))?;
    if GroupState::from_code(row.get("state")) != Some(GroupState::Active) {
        return Err(ApiError::bad("Group is not active"));
    }
    Ok(Budget { group_id, quota: row.get("storage_quota"), used: row.get("storage_used") })
}

impl Budget {
    /// Charges an upload of `new_len` bytes over an object of `old` bytes (None: new).
    /// A smaller re-upload keeps the larger size, as the URL for it may still be used.
    /// Returns the size to record.
    pub(super) fn charge(
        self,
        tx: &mut postgres::Transaction<'_>,
        old: Option<i64>,
        new_len: u64,
    ) -> Result<i64, ApiError> {
        let new_len =
            i64::try_from(new_len).map_err(|_| ApiError::bad(format!("content_length {new_len} is too large")))?;
        let recorded = old.map_or(new_len, |o| o.max(new_len));
        let delta = recorded - old.unwrap_or(0);
        if self.used.saturating_add(delta) > self.quota {
            return Err(ApiError::QuotaExceeded);
        }
        if delta != 0 {
            tx.execute("UPDATE groups SET storage_used = storage_used + $2 WHERE id = $1", &[&self.group_id, &delta])?;
        }
        Ok(recorded)
    }
}

/// Gives `size` bytes back to the group (never below zero).
pub(super) fn release(tx: &mut impl GenericClient, group_id: i64, size: i64) -> Result<(), ApiError> {
    tx.execute("UPDATE groups SET storage_used = GREATEST(storage_used - $2, 0) WHERE id = $1", &[&group_id, &size])?;
    Ok(())
}

/// The group of a task, active or archived.
pub(super) fn task_group(db: &mut impl GenericClient, task: Uuid) -> Result<Option<i64>, ApiError> {
    let row = db.query_opt(
        "SELECT group_id FROM active_tasks WHERE uuid = $1
         UNION ALL SELECT group_id FROM archived_tasks WHERE uuid = $1 LIMIT 1",
        &[&task],
    )?;
    Ok(row.map(|r| r.get("group_id")))
}

/// Requires role `min` in the group of `task`. A task the caller cannot see is "not found",
/// so nobody learns which uuids exist; a visible task with too small a role is 403.
pub(super) fn authorize_task(
    db: &mut impl GenericClient,
    user: &AuthUser,
    task: Uuid,
    min: UserGroupRole,
) -> Result<i64, ApiError> {
    let not_found = || ApiError::NotFound(format!("Task with uuid {task}"));
    let group_id = task_group(db, task)?.ok_or_else(not_found)?;
    match role_in(db, user, group_id)? {
        None => Err(not_found()),
        Some(role) if role < min => {
            Err(ApiError::Forbidden(format!("this needs the {min} role in the group of task {task}; you have {role}")))
        }
        Some(_) => Ok(group_id),
    }
}
