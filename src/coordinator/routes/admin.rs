//! Admin-only routes: accounts, quotas and shutdown.

use crate::api::quota::{parse_count, parse_size, QuotaChange};
use crate::api::{
    valid_name, AdminChangePasswordReq, ChangeGroupStorageQuotaReq, ChangeUserGroupQuota, ChangeUserStateReq,
    CreateUserReq, GroupStorageQuotaResp, ShutdownReq, UserGroupQuotaResp, UserState, UserStateResp,
};
use crate::coordinator::auth;
use crate::coordinator::db;
use crate::coordinator::error::ApiError;
use crate::coordinator::http::{Call, Reply};
use crate::coordinator::{is_unique_violation, Ctx};

fn no_user(name: &str) -> ApiError {
    ApiError::NotFound(format!("User or group with name {name}"))
}

/// `POST /admin/users`: a user, its personal group, and its Admin membership there.
pub(super) fn create_user(ctx: &Ctx, call: &Call) -> Result<Reply, ApiError> {
    let req: CreateUserReq = call.json()?;
    if !valid_name(&req.username) {
        return Err(ApiError::bad(format!(
            "Invalid username {:?}: use 1 to 255 letters, digits, '-' or '_'",
            req.username
        )));
    }
    // Worker tokens name their worker by uuid; a user named like one would be one
    // confusion away from acting as it.
    if req.username.parse::<uuid::Uuid>().is_ok() {
        return Err(ApiError::bad(format!(
            "Invalid username {:?}: a name that reads as a UUID is reserved for workers; choose another",
            req.username
        )));
    }
    let hash = auth::hash_password(&req.md5_password)?;
    let mut conn = ctx.pool.get()?;
    let mut tx = conn.transaction()?;
    if super::groups::name_taken(&mut tx, &req.username)? {
        return Err(ApiError::AlreadyExists(req.username));
    }
    match db::create_user(&mut tx, &req.username, &hash, req.admin) {
        Ok(Some(_)) => {}
        Ok(None) => return Err(ApiError::AlreadyExists(req.username)),
        Err(e) if is_unique_violation(&e) => return Err(ApiError::AlreadyExists(req.username)),
        Err(e) => return Err(e.into()),
    }
    tx.commit()?;
    log::info!("created user {}{}", req.username, if req.admin { " (admin)" } else { "" });
    Ok(Reply::ok())
}

fn set_state(ctx: &Ctx, username: &str, state: UserState) -> Result<Reply, ApiError> {
    let mut db = ctx.pool.get()?;
    let mut tx = db.transaction()?;
    let id: i64 = tx
        .query_opt("UPDATE users SET state = $2 WHERE username = $1 RETURNING id", &[&username, &state.code()])?
        .ok_or_else(|| no_user(username))?
        .get("id");
    // A deleted user vouches for no worker any more: their workers leave every group.
    let detached = crate::coordinator::authz::detach_unvouched(&mut tx, &[id])?;
    super::groups::commit_detaching(ctx, tx, &detached)?;
    Ok(Reply::json(&UserStateResp { state }))
}

/// `DELETE /admin/users/{u}`: marks the user Deleted (rows are kept).
pub(super) fn delete_user(ctx: &Ctx, username: &str) -> Result<Reply, ApiError> {
    set_state(ctx, username, UserState::Deleted)
}

/// `POST /admin/users/{u}/state`.
pub(super) fn user_state(ctx: &Ctx, call: &Call, username: &str) -> Result<Reply, ApiError> {
    let req: ChangeUserStateReq = call.json()?;
    set_state(ctx, username, req.state)
}

/// `POST /admin/users/{u}/password`: sets the password and signs the user out everywhere.
pub(super) fn change_password(ctx: &Ctx, call: &Call, username: &str) -> Result<Reply, ApiError> {
    let req: AdminChangePasswordReq = call.json()?;
    let hash = auth::hash_password(&req.new_md5_password)?;
    let mut db = ctx.pool.get()?;
    let n = db.execute(
        "UPDATE users SET password_hash = $2, auth_signature = $3, updated_at = now() WHERE username = $1",
        &[&username, &hash, &auth::new_signature()],
    )?;
    if n == 0 {
        return Err(no_user(username));
    }
    Ok(Reply::ok())
}

/// `POST /admin/users/{u}/group-quota`: `N`, `+N`, `-N` or `=N` groups.
pub(super) fn group_quota(ctx: &Ctx, call: &Call, username: &str) -> Result<Reply, ApiError> {
    let req: ChangeUserGroupQuota = call.json()?;
    let change = QuotaChange::parse(&req.group_quota, parse_count).map_err(ApiError::bad)?;
    let mut db = ctx.pool.get()?;
    let mut tx = db.transaction()?;
    let row = tx
        .query_opt("SELECT group_quota FROM users WHERE username = $1 FOR UPDATE", &[&username])?
        .ok_or_else(|| no_user(username))?;
    let new = change.apply(i64::from(row.get::<_, i32>("group_quota"))).min(i64::from(i32::MAX)) as i32;
    tx.execute("UPDATE users SET group_quota = $2 WHERE username = $1", &[&username, &new])?;
    tx.commit()?;
    Ok(Reply::json(&UserGroupQuotaResp { group_quota: new }))
}

/// `POST /admin/groups/{g}/storage-quota`: `10GB`, `+1GiB`, `-500MB`, `=10GB`.
pub(super) fn storage_quota(ctx: &Ctx, call: &Call, group: &str) -> Result<Reply, ApiError> {
    let req: ChangeGroupStorageQuotaReq = call.json()?;
    let change = QuotaChange::parse(&req.storage_quota, parse_size).map_err(ApiError::bad)?;
    let mut db = ctx.pool.get()?;
    let mut tx = db.transaction()?;
    let row = tx
        .query_opt("SELECT storage_quota FROM groups WHERE group_name = $1 FOR UPDATE", &[&group])?
        .ok_or_else(|| ApiError::NotFound(format!("Group {group}")))?;
    let new = change.apply(row.get("storage_quota"));
    tx.execute("UPDATE groups SET storage_quota = $2, updated_at = now() WHERE group_name = $1", &[&group, &new])?;
    tx.commit()?;
    Ok(Reply::json(&GroupStorageQuotaResp { storage_quota: new }))
}

/// `POST /admin/shutdown`: stops the coordinator when the secret from its log matches.
pub(super) fn shutdown(ctx: &Ctx, call: &Call) -> Result<Reply, ApiError> {
    let req: ShutdownReq = call.json()?;
    if !crate::coordinator::auth::constant_time_eq(req.secret.as_bytes(), ctx.shutdown_secret.as_bytes()) {
        return Err(ApiError::Forbidden("the shutdown secret does not match the one in the coordinator's log".into()));
    }
    log::warn!("shutdown requested through the admin API");
    ctx.shutdown.trigger();
    Ok(Reply::ok())
}
