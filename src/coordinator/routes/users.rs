//! A user's own account: password change and group list.

use crate::api::{GroupsQueryResp, UserChangePasswordReq, UserChangePasswordResp, UserGroupRole};
use crate::coordinator::auth::{self, AuthUser};
use crate::coordinator::error::ApiError;
use crate::coordinator::http::{Call, Reply};
use crate::coordinator::Ctx;

/// `POST /users/{username}/password`: only for oneself; rotates the signature (older
/// tokens die) and returns a fresh token.
pub(super) fn change_password(ctx: &Ctx, call: &Call, user: &AuthUser, username: &str) -> Result<Reply, ApiError> {
    let req: UserChangePasswordReq = call.json()?;
    if username != user.username {
        return Err(ApiError::WrongCredentials);
    }
    // The old password is guessable here too (with a stolen token): the same limit applies.
    let addr = call.peer.map(|p| p.ip());
    ctx.login_limit.check(&user.username, addr)?;
    let mut db = ctx.pool.get()?;
    let stored: String = db
        .query_opt("SELECT password_hash FROM users WHERE id = $1", &[&user.id])?
        .ok_or(ApiError::WrongCredentials)?
        .get("password_hash");
    if !auth::verify_password(&stored, &req.old_md5_password) {
        ctx.login_limit.failed(&user.username, addr);
        return Err(ApiError::WrongCredentials);
    }
    let hash = auth::hash_password(&req.new_md5_password)?;
    let sign = auth::new_signature();
    let ip = call.peer.map(|p| p.ip().to_string());
    db.execute(
        "UPDATE users SET password_hash = $2, auth_signature = $3, updated_at = now(),
            last_sign_in_at = current_sign_in_at, last_sign_in_ip = current_sign_in_ip,
            current_sign_in_at = now(), current_sign_in_ip = $4
         WHERE id = $1",
        &[&user.id, &hash, &sign, &ip],
    )?;
    let token = ctx.keys.issue(&user.username, ctx.cfg.access_token_expires_in, sign);
    Ok(Reply::json(&UserChangePasswordResp { token }))
}

/// `GET /users/groups`: every group the caller is in, with the role.
pub(super) fn groups(ctx: &Ctx, user: &AuthUser) -> Result<Reply, ApiError> {
    let mut db = ctx.pool.get()?;
    let rows = db.query(
        "SELECT g.group_name, ug.role FROM user_group ug JOIN groups g ON g.id = ug.group_id
         WHERE ug.user_id = $1",
        &[&user.id],
    )?;
    let groups = rows
        .iter()
        .filter_map(|r| UserGroupRole::from_code(r.get("role")).map(|role| (r.get::<_, String>("group_name"), role)))
        .collect();
    Ok(Reply::json(&GroupsQueryResp { groups }))
}
