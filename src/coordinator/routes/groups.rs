//! Groups and their members.

use crate::api::{
    valid_name, CreateGroupReq, GroupQueryInfo, GroupState, Timestamp, UpdateUserGroupRoleReq, UserGroupRole,
};
use crate::coordinator::auth::AuthUser;
use crate::coordinator::authz::{authorize_group, detach_unvouched};
use crate::coordinator::error::ApiError;
use crate::coordinator::http::{Call, Reply};
use crate::coordinator::{is_unique_violation, Ctx};
use std::collections::BTreeMap;

/// Whether a user or group already uses `name` (they share one namespace).
pub(super) fn name_taken(db: &mut impl postgres::GenericClient, name: &str) -> Result<bool, ApiError> {
    Ok(db
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM users WHERE username = $1)
                 OR EXISTS (SELECT 1 FROM groups WHERE group_name = $1) AS taken",
            &[&name],
        )?
        .get("taken"))
}

/// `POST /groups`: the caller becomes its Admin; limited by the caller's group quota.
pub(super) fn create(ctx: &Ctx, call: &Call, user: &AuthUser) -> Result<Reply, ApiError> {
    let req: CreateGroupReq = call.json()?;
    if !valid_name(&req.group_name) {
        return Err(ApiError::bad(format!(
            "Invalid group name {:?}: use 1 to 255 letters, digits, '-' or '_'",
            req.group_name
        )));
    }
    let mut db = ctx.pool.get()?;
    let mut tx = db.transaction()?;
    if name_taken(&mut tx, &req.group_name)? {
        return Err(ApiError::AlreadyExists(req.group_name));
    }
    let quota_ok = tx.execute(
        "UPDATE users SET group_count = group_count + 1 WHERE id = $1 AND group_count < group_quota",
        &[&user.id],
    )?;
    if quota_ok == 0 {
        return Err(ApiError::QuotaExceeded);
    }
    let inserted = tx.query_one(
        "INSERT INTO groups (group_name, creator_id) VALUES ($1, $2) RETURNING id",
        &[&req.group_name, &user.id],
    );
    let group_id: i64 = match inserted {
        Ok(row) => row.get("id"),
        Err(e) if is_unique_violation(&e) => return Err(ApiError::AlreadyExists(req.group_name)),
        Err(e) => return Err(e.into()),
    };
    tx.execute(
        "INSERT INTO user_group (user_id, group_id, role) VALUES ($1, $2, $3)",
        &[&user.id, &group_id, &UserGroupRole::Admin.code()],
    )?;
    tx.commit()?;
    Ok(Reply::ok())
}

/// `GET /groups/{g}/stats[?minutes=N]`: tasks archived and the Ready depth per minute, for
/// members (any role) and site admins; anyone else, and any unknown group, gets 403.
pub(super) fn stats(ctx: &Ctx, call: &Call, user: &AuthUser, group: &str) -> Result<Reply, ApiError> {
    use crate::coordinator::stats::{self, DEFAULT_MINUTES, MAX_MINUTES};
    let minutes = match call.query_one("minutes")? {
        None => DEFAULT_MINUTES,
        Some(v) => v.parse::<u32>().ok().filter(|n| (1..=MAX_MINUTES).contains(n)).ok_or_else(|| {
            ApiError::bad(format!("`minutes` must be a whole number from 1 to {MAX_MINUTES}, not {v:?}"))
        })?,
    };
    let mut db = ctx.pool.get()?;
    let group_id = match authorize_group(&mut *db, user, group, UserGroupRole::Read) {
        Ok((id, _)) => id,
        Err(e) if user.admin => {
            db.query_opt("SELECT id FROM groups WHERE group_name = $1", &[&group])?.map(|r| r.get("id")).ok_or(e)?
        }
        Err(e) => return Err(e),
    };
    let points = stats::points(&mut *db, group_id, minutes)?;
    let states = stats::state_counts(&mut *db, group_id, minutes)?;
    Ok(Reply::json(&crate::api::GroupStats { group_name: group.to_string(), window_minutes: minutes, points, states }))
}

/// `GET /groups/{g}`: for members; the member list only for the group's Admins.
pub(super) fn get(ctx: &Ctx, user: &AuthUser, group: &str) -> Result<Reply, ApiError> {
    let mut db = ctx.pool.get()?;
    let (group_id, role) = authorize_group(&mut *db, user, group, UserGroupRole::Read)?;
    let r = db.query_one(
        "SELECT g.group_name, u.username, g.created_at, g.updated_at, g.state, g.task_count,
                g.storage_quota, g.storage_used,
                (SELECT count(*) FROM group_worker gw WHERE gw.group_id = g.id) AS worker_count
         FROM groups g JOIN users u ON u.id = g.creator_id WHERE g.id = $1",
        &[&group_id],
    )?;
    let users_in_group = if role == UserGroupRole::Admin {
        let rows = db.query(
            "SELECT u.username, ug.role FROM user_group ug JOIN users u ON u.id = ug.user_id
             WHERE ug.group_id = $1",
            &[&group_id],
        )?;
        Some(
            rows.iter()
                .filter_map(|r| {
                    UserGroupRole::from_code(r.get("role")).map(|role| (r.get::<_, String>("username"), role))
                })
                .collect::<BTreeMap<_, _>>(),
        )
    } else {
        None
    };
    Ok(Reply::json(&GroupQueryInfo {
        group_name: r.get("group_name"),
        creator_username: r.get("username"),
        created_at: Timestamp(r.get("created_at")),
        updated_at: Timestamp(r.get("updated_at")),
        state: GroupState::from_code(r.get("state")).unwrap_or(GroupState::Active),
        task_count: r.get("task_count"),
        storage_quota: r.get("storage_quota"),
        storage_used: r.get("storage_used"),
        worker_count: r.get("worker_count"),
        users_in_group,
    }))
}

/// Refuses a change that would leave the group without an Admin.
fn ensure_admin_left(tx: &mut postgres::Transaction, group_id: i64, group: &str) -> Result<(), ApiError> {
    let admins: i64 = tx
        .query_one(
            "SELECT count(*) FROM user_group WHERE group_id = $1 AND role = $2",
            &[&group_id, &UserGroupRole::Admin.code()],
        )?
        .get("count");
    if admins == 0 {
        return Err(ApiError::bad(format!("group {group} would have no Admin left; make another member Admin first")));
    }
    Ok(())
}

/// `PUT /groups/{g}/users`: adds members or changes their roles (Admins only).
pub(super) fn update_users(ctx: &Ctx, call: &Call, user: &AuthUser, group: &str) -> Result<Reply, ApiError> {
    let req: UpdateUserGroupRoleReq = call.json()?;
    if req.relations.is_empty() {
        return Err(ApiError::bad("Empty group relations: give at least one user and role"));
    }
    let mut db = ctx.pool.get()?;
    let mut tx = db.transaction()?;
    let (group_id, _) = authorize_group(&mut tx, user, group, UserGroupRole::Admin)?;
    let names: Vec<&str> = req.relations.keys().map(String::as_str).collect();
    let found = tx.query("SELECT id, username FROM users WHERE username = ANY($1)", &[&names])?;
    if found.len() != names.len() {
        let known: Vec<String> = found.iter().map(|r| r.get("username")).collect();
        let missing: Vec<&str> = names.iter().copied().filter(|n| !known.iter().any(|k| k == n)).collect();
        return Err(ApiError::bad(format!("Some users do not exist: {}", missing.join(", "))));
    }
    let ids: Vec<i64> = found.iter().map(|r| r.get("id")).collect();
    let roles: Vec<i32> = found.iter().map(|r| req.relations[&r.get::<_, String>("username")].code()).collect();
    tx.execute(
        "INSERT INTO user_group (user_id, group_id, role)
         SELECT u, $1, r FROM unnest($2::bigint[], $3::int[]) AS t(u, r)
         ON CONFLICT (user_id, group_id) DO UPDATE SET role = EXCLUDED.role",
        &[&group_id, &ids, &roles],
    )?;
    ensure_admin_left(&mut tx, group_id, group)?;
    // A member lowered to Read no longer vouches for the workers they attached.
    let detached = detach_unvouched(&mut tx, &ids)?;
    tx.execute("UPDATE groups SET updated_at = now() WHERE id = $1", &[&group_id])?;
    commit_detaching(ctx, tx, &detached)
}

/// `DELETE /groups/{g}/users?users=..` and `POST /groups/{g}/users/remove`: removes members.
pub(super) fn remove_users(ctx: &Ctx, user: &AuthUser, group: &str, users: Vec<String>) -> Result<Reply, ApiError> {
    if users.is_empty() {
        return Err(ApiError::bad("Empty group relations: name at least one user to remove"));
    }
    let mut db = ctx.pool.get()?;
    let mut tx = db.transaction()?;
    let (group_id, _) = authorize_group(&mut tx, user, group, UserGroupRole::Admin)?;
    let removed: Vec<i64> = tx
        .query(
            "DELETE FROM user_group WHERE group_id = $1
               AND user_id IN (SELECT id FROM users WHERE username = ANY($2))
             RETURNING user_id",
            &[&group_id, &users],
        )?
        .iter()
        .map(|r| r.get("user_id"))
        .collect();
    ensure_admin_left(&mut tx, group_id, group)?;
    // The workers a removed member attached leave the group with them.
    let detached = detach_unvouched(&mut tx, &removed)?;
    tx.execute("UPDATE groups SET updated_at = now() WHERE id = $1", &[&group_id])?;
    commit_detaching(ctx, tx, &detached)
}

/// Commits a change that detached `workers` from groups, and has the scheduler look at
/// those workers again (a parked fetch must not hand out a task of a group it left).
pub(super) fn commit_detaching(ctx: &Ctx, mut tx: postgres::Transaction, workers: &[i64]) -> Result<Reply, ApiError> {
    for w in workers {
        ctx.scheduler.notify_worker(&mut tx, *w)?;
    }
    tx.commit()?;
    for w in workers {
        ctx.scheduler.wake_worker(*w);
    }
    if !workers.is_empty() {
        log::info!("{} worker(s) detached from groups their voucher no longer writes to", workers.len());
    }
    Ok(Reply::ok())
}
