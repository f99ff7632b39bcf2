//! Who may do what: the named checks every handler calls before it acts.
//!
//! ```ignore
//! let group_id = authorize_group(&mut db, user, "lab", UserGroupRole::Write)?;
//! ```
//!
//! A caller who is not in a group learns nothing about it: a missing group and a group
//! they are not in give the same 403.

use super::auth::AuthUser;
use super::error::ApiError;
use crate::api::UserGroupRole;

/// The caller's role in `group`, with the group's id; None if the group does not exist or
/// the caller is not a member.
pub(crate) fn group_role(
    db: &mut impl postgres::GenericClient,
    user: &AuthUser,
    group: &str,
) -> Result<Option<(i64, UserGroupRole)>, ApiError> {
    let row = db.query_opt(
        "SELECT g.id, ug.role FROM groups g JOIN user_group ug ON ug.group_id = g.id
         WHERE g.group_name = $1 AND ug.user_id = $2",
        &[&group, &user.id],
    )?;
    Ok(row.and_then(|r| UserGroupRole::from_code(r.get("role")).map(|role| (r.get("id"), role))))
}

/// Requires at least role `min` in `group`; returns the group's id and the caller's role.
pub(crate) fn authorize_group(
    db: &mut impl postgres::GenericClient,
    user: &AuthUser,
    group: &str,
    min: UserGroupRole,
) -> Result<(i64, UserGroupRole), ApiError> {
    match group_role(db, user, group)? {
        None => Err(ApiError::Forbidden(format!("you are not a member of group {group} (or it does not exist)"))),
        Some((_, role)) if role < min => {
            Err(ApiError::Forbidden(format!("this needs the {min} role in group {group}; you have {role}")))
        }
        Some(found) => Ok(found),
    }
}

/// Requires that the caller may act on worker `uuid`: the caller has at least `min_user` in
/// some group that has at least `min_group` on the worker. Returns the worker's row id.
/// A worker the caller shares no group with is "not found", as if it did not exist.
pub(crate) fn authorize_worker(
    db: &mut impl postgres::GenericClient,
    user: &AuthUser,
    uuid: uuid::Uuid,
    min_user: UserGroupRole,
    min_group: crate::api::GroupWorkerRole,
) -> Result<i64, ApiError> {
    let row = db.query_opt(
        "SELECT w.id,
            EXISTS (SELECT 1 FROM group_worker gw JOIN user_group ug ON ug.group_id = gw.group_id
                    WHERE gw.worker_id = w.id AND ug.user_id = $2) AS shares_group,
            EXISTS (SELECT 1 FROM group_worker gw JOIN user_group ug ON ug.group_id = gw.group_id
                    WHERE gw.worker_id = w.id AND ug.user_id = $2 AND ug.role >= $3 AND gw.role >= $4) AS allowed
         FROM workers w WHERE w.worker_id = $1",
        &[&uuid, &user.id, &min_user.code(), &min_group.code()],
    )?;
    match row {
        Some(r) if r.get::<_, bool>("shares_group") => {
            if r.get::<_, bool>("allowed") {
                Ok(r.get("id"))
            } else {
                Err(ApiError::Forbidden(format!(
                    "this needs the {min_user} role in a group that has the {min_group} role on worker {uuid}"
                )))
            }
        }
        _ => Err(ApiError::NotFound(format!("Worker {uuid}"))),
    }
}

/// The caller's role in the group with row id `group_id`, if a member.
pub(crate) fn role_in(
    db: &mut impl postgres::GenericClient,
    user: &AuthUser,
    group_id: i64,
) -> Result<Option<UserGroupRole>, ApiError> {
    let row =
        db.query_opt("SELECT role FROM user_group WHERE user_id = $1 AND group_id = $2", &[&user.id, &group_id])?;
    Ok(row.and_then(|r| UserGroupRole::from_code(r.get("role"))))
}

/// Requires at least `min` in the task's group. A caller outside the group is told the
/// task does not exist, exactly as for a task that does not.
pub(crate) fn authorize_task(
    db: &mut impl postgres::GenericClient,
    user: &AuthUser,
    group_id: i64,
    uuid: uuid::Uuid,
    min: UserGroupRole,
) -> Result<UserGroupRole, ApiError> {
    match role_in(db, user, group_id)? {
        None => Err(ApiError::NotFound(format!("Task with uuid {uuid}"))),
        Some(role) if role < min => {
            Err(ApiError::Forbidden(format!("this needs the {min} role in the task's group; you have {role}")))
        }
        Some(role) => Ok(role),
    }
}

/// Requires that the caller may attach a worker to each group in `names`: the Write or
/// Admin role in it, as for submitting its tasks, since a worker of a group reads that
/// group's tasks, attachments and artifacts and reports its results. Every route that links
/// a worker to a group goes through here. A group that does not exist is refused exactly
/// like one the caller is not in, so names cannot be probed. Returns the groups' ids, in
/// the order of `names`.
pub(crate) fn authorize_attach(
    db: &mut impl postgres::GenericClient,
    user: &AuthUser,
    names: &[String],
) -> Result<Vec<i64>, ApiError> {
    let rows = db.query(
        "SELECT g.group_name, g.id, ug.role FROM groups g JOIN user_group ug ON ug.group_id = g.id
         WHERE g.group_name = ANY($1) AND ug.user_id = $2",
        &[&names, &user.id],
    )?;
    let mut found = std::collections::HashMap::new();
    for r in &rows {
        found
            .insert(r.get::<_, String>("group_name"), (r.get::<_, i64>("id"), UserGroupRole::from_code(r.get("role"))));
    }
    names
        .iter()
        .map(|name| match found.get(name) {
            Some((id, Some(role))) if *role >= UserGroupRole::Write => Ok(*id),
            Some((_, Some(role))) => Err(ApiError::Forbidden(format!(
                "attaching a worker to group {name} needs the Write or Admin role in it; you have {role}"
            ))),
            _ => Err(ApiError::Forbidden(format!(
                "attaching a worker to group {name} needs the Write or Admin role in it; you are not a member (or it does not exist)"
            ))),
        })
        .collect()
}

/// Detaches the worker-group links vouched for by any of `users` who no longer hold the
/// Write or Admin role in that group, or whose account is deleted: a member who leaves
/// takes the workers they brought in along. Returns the workers touched, for the scheduler
/// to look at again once the transaction commits.
pub(crate) fn detach_unvouched(db: &mut impl postgres::GenericClient, users: &[i64]) -> Result<Vec<i64>, ApiError> {
    let rows = db.query(
        "DELETE FROM group_worker gw
         WHERE gw.vouched_by = ANY($1)
           AND NOT EXISTS (SELECT 1 FROM user_group ug JOIN users u ON u.id = ug.user_id
                           WHERE ug.user_id = gw.vouched_by AND ug.group_id = gw.group_id
                             AND ug.role >= $2 AND u.state <> $3)
         RETURNING gw.worker_id",
        &[&users, &UserGroupRole::Write.code(), &crate::api::UserState::Deleted.code()],
    )?;
    let mut ids: Vec<i64> = rows.iter().map(|r| r.get("worker_id")).collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}
