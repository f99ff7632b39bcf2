//! Health, login, token check and the Redis URL.

use crate::api::{RedisConnectionInfo, UserLoginReq, UserLoginResp, UserState};
use crate::coordinator::auth::{self, AuthUser};
use crate::coordinator::error::ApiError;
use crate::coordinator::http::{Call, Reply};
use crate::coordinator::Ctx;

pub(super) fn health() -> Result<Reply, ApiError> {
    Ok(Reply::json(&serde_json::json!({"status": "ok"})))
}

/// `POST /login`: checks the password and issues a token. Without `retain` a new signature
/// is drawn, which revokes the user's other tokens.
pub(super) fn login(ctx: &Ctx, call: &Call) -> Result<Reply, ApiError> {
    let req: UserLoginReq = call.json()?;
    let addr = call.peer.map(|p| p.ip());
    ctx.login_limit.check(&req.username, addr)?;
    let mut db = ctx.pool.get()?;
    let row = db.query_opt(
        "SELECT id, password_hash, state, auth_signature FROM users WHERE username = $1",
        &[&req.username],
    )?;
    // An unknown user costs the same hash check as a wrong password, and counts the same.
    let stored: Option<&str> = row.as_ref().map(|r| r.get("password_hash"));
    if !auth::verify_password_timed(stored, &req.md5_password) {
        ctx.login_limit.failed(&req.username, addr);
        return Err(ApiError::WrongCredentials);
    }
    let Some(row) = row else { return Err(ApiError::WrongCredentials) };
    ctx.login_limit.succeeded(&req.username);
    if UserState::from_code(row.get("state")) != Some(UserState::Active) {
        return Err(ApiError::Forbidden(format!("user {} is not active", req.username)));
    }
    let current: Option<i64> = row.get("auth_signature");
    let sign = match (req.retain, current) {
        (true, Some(s)) => s,
        _ => auth::new_signature(),
    };
    let ip = call.peer.map(|p| p.ip().to_string());
    db.execute(
        "UPDATE users SET auth_signature = $2,
            last_sign_in_at = current_sign_in_at, last_sign_in_ip = current_sign_in_ip,
            current_sign_in_at = now(), current_sign_in_ip = $3
         WHERE id = $1",
        &[&row.get::<_, i64>("id"), &sign, &ip],
    )?;
    let token = ctx.keys.issue(&req.username, ctx.cfg.access_token_expires_in, sign);
    Ok(Reply::json(&UserLoginResp { token }))
}

/// `GET /auth`: the caller's name as plain text; clients use it to test a cached token.
pub(super) fn auth(user: &AuthUser) -> Result<Reply, ApiError> {
    Ok(Reply::text(200, &user.username))
}

/// `GET /redis`: the read-only Redis URL for clients, or null without Redis.
pub(super) fn redis(ctx: &Ctx) -> Result<Reply, ApiError> {
    Ok(Reply::json(&RedisConnectionInfo { url: ctx.redis_client_url.clone() }))
}
