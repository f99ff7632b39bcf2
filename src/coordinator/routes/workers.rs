//! Workers as users manage them: register, read, query, retag, regroup, shut down.

use crate::api::{
    GroupWorkerRole, RegisterWorkerReq, RegisterWorkerResp, RemoveGroupWorkerRoleReq, ReplaceWorkerLabelsReq,
    ReplaceWorkerTagsReq, UpdateGroupWorkerRoleReq, UserGroupRole, WorkerQueryResp, WorkerShutdownOp, WorkersQueryReq,
    WorkersQueryResp, WorkersShutdownByFilterReq, WorkersShutdownByFilterResp, WorkersShutdownByUuidsReq,
    WorkersShutdownByUuidsResp,
};
use crate::coordinator::auth::AuthUser;
use crate::coordinator::authz::{authorize_attach, authorize_group, authorize_worker};
use crate::coordinator::error::ApiError;
use crate::coordinator::filter::{not_empty, Sql};
use crate::coordinator::http::{Call, Reply};
use crate::coordinator::workers;
use crate::coordinator::Ctx;
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

/// Parses `name` or `name:role` (role read/write/admin in any of the accepted spellings).
pub(super) fn parse_group_entry(entry: &str) -> Result<(String, GroupWorkerRole), ApiError> {
    let mut parts = entry.split(':');
    let name = parts.next().unwrap_or("").trim();
    let role = match (parts.next(), parts.next()) {
        (None, _) => GroupWorkerRole::Write,
        (Some(r), None) => match r.trim().to_ascii_lowercase().as_str() {
            "read" => GroupWorkerRole::Read,
            "write" => GroupWorkerRole::Write,
            "admin" => GroupWorkerRole::Admin,
            _ => return Err(ApiError::bad(format_args!("group entry {entry:?}: role must be read, write or admin"))),
        },
        _ => return Err(ApiError::bad(format_args!("group entry {entry:?}: expected name or name:role"))),
    };
    if name.is_empty() {
        return Err(ApiError::bad(format_args!("group entry {entry:?} has no group name")));
    }
    Ok((name.to_string(), role))
}

/// `POST /workers`: registers a worker for the caller. The caller must hold Write or Admin
/// in every group named; their personal group is always added, as Admin.
pub(super) fn register(ctx: &Ctx, call: &Call, user: &AuthUser) -> Result<Reply, ApiError> {
    let req: RegisterWorkerReq = call.json()?;
    let mut wanted: BTreeMap<String, GroupWorkerRole> = BTreeMap::new();
    for e in &req.groups {
        let (name, role) = parse_group_entry(e)?;
        wanted.insert(name, role);
    }
    wanted.insert(user.username.clone(), GroupWorkerRole::Admin);
    let ttl = req.lifetime.unwrap_or(ctx.cfg.access_token_expires_in);
    if ttl.is_zero() {
        return Err(ApiError::bad("lifetime must be longer than 0s"));
    }
    crate::api::time::check_max("lifetime", ttl).map_err(|e| ApiError::bad(e.to_string()))?;
    let mut db = ctx.pool.get()?;
    let mut tx = db.transaction()?;
    let names: Vec<String> = wanted.keys().cloned().collect();
    let group_ids = authorize_attach(&mut tx, user, &names)?;
    let roles: Vec<i32> = wanted.values().map(|r| r.code()).collect();
    let uuid = Uuid::new_v4();
    let tags: Vec<String> = req.tags.into_iter().collect();
    let labels: Vec<String> = req.labels.into_iter().collect();
    let id: i64 = tx
        .query_one(
            "INSERT INTO workers (worker_id, creator_id, tags, labels, confirms_claims) VALUES ($1, $2, $3, $4, $5) RETURNING id",
            &[&uuid, &user.id, &tags, &labels, &confirms_claims(call)],
        )?
        .get("id");
    tx.execute(
        "INSERT INTO group_worker (group_id, worker_id, role, vouched_by)
         SELECT g, $1, r, $4 FROM unnest($2::bigint[], $3::int[]) AS x(g, r)",
        &[&id, &group_ids, &roles, &user.id],
    )?;
    tx.commit()?;
    let token = ctx.keys.issue_worker(uuid, ttl);
    log::info!("worker {uuid} registered by {}", user.username);
    Ok(Reply::json(&RegisterWorkerResp { worker_id: uuid, token, redis_url: ctx.redis_worker_url.clone() }))
}

/// `GET /workers/{uuid}`: for users who share a group with the worker.
pub(super) fn get(ctx: &Ctx, user: &AuthUser, uuid: Uuid) -> Result<Reply, ApiError> {
    let mut db = ctx.pool.get()?;
    let id = authorize_worker(&mut *db, user, uuid, UserGroupRole::Read, GroupWorkerRole::Read)?;
    let row = db.query_one(&format!("{} WHERE w.id = $1", workers::INFO_SELECT), &[&id])?;
    let groups = workers::groups(&mut *db, id)?;
    Ok(Reply::json(&WorkerQueryResp { info: workers::info(&row), groups }))
}

/// Whether the registering worker confirms each claim (its next heartbeat or report), so
/// its tasks may be leased: mito workers send [`crate::api::CONFIRMS_CLAIMS_HEADER`];
/// mitosis workers, which never confirm, do not, and keep unleased claims.
fn confirms_claims(call: &Call) -> bool {
    call.header(crate::api::CONFIRMS_CLAIMS_HEADER).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The `op` query parameter: Graceful (default) or Force.
pub(super) fn shutdown_op(call: &Call) -> Result<WorkerShutdownOp, ApiError> {
    match call.query_one("op")? {
        None => Ok(WorkerShutdownOp::Graceful),
        Some(s) => WorkerShutdownOp::parse(&s)
            .ok_or_else(|| ApiError::BadQuery(format!("op={s:?}: expected graceful or force"))),
    }
}

fn finish_shutdown(
    ctx: &Ctx,
    mut tx: postgres::Transaction,
    ids: &[i64],
    op: WorkerShutdownOp,
) -> Result<u64, ApiError> {
    let (n, groups) = workers::shutdown(&mut tx, ids, op)?;
    for g in &groups {
        ctx.scheduler.notify_group(&mut tx, *g)?;
    }
    // A stopped worker may be parked in a long-poll (here or on another coordinator):
    // its fetch is answered now, with the 401 that tells it to exit.
    ctx.scheduler.notify_workers(&mut tx, ids)?;
    tx.commit()?;
    for g in groups {
        ctx.scheduler.wake_group(g);
    }
    ctx.scheduler.wake_workers(ids);
    Ok(n)
}

/// `DELETE /workers/{uuid}?op=`: Admin in a group that is Admin on the worker.
pub(super) fn shutdown_one(ctx: &Ctx, call: &Call, user: Option<&AuthUser>, uuid: Uuid) -> Result<Reply, ApiError> {
    let op = shutdown_op(call)?;
    let mut db = ctx.pool.get()?;
    let mut tx = db.transaction()?;
    let id = match user {
        Some(u) => authorize_worker(&mut tx, u, uuid, UserGroupRole::Admin, GroupWorkerRole::Admin)?,
        None => workers::id_of(&mut tx, uuid)?.ok_or_else(|| ApiError::NotFound(format!("Worker {uuid}")))?,
    };
    finish_shutdown(ctx, tx, &[id], op)?;
    Ok(Reply::ok())
}

fn set_array(
    ctx: &Ctx,
    user: &AuthUser,
    uuid: Uuid,
    column: &str,
    values: BTreeSet<String>,
) -> Result<Reply, ApiError> {
    if values.is_empty() {
        let what = if column == "tags" { "Empty tags" } else { "Empty labels" };
        return Err(ApiError::bad(format!("{what}: give at least one")));
    }
    let values: Vec<String> = values.into_iter().collect();
    let mut db = ctx.pool.get()?;
    let mut tx = db.transaction()?;
    let id = authorize_worker(&mut tx, user, uuid, UserGroupRole::Write, GroupWorkerRole::Write)?;
    let sql = if column == "tags" {
        "UPDATE workers SET tags = $2, updated_at = now() WHERE id = $1"
    } else {
        "UPDATE workers SET labels = $2, updated_at = now() WHERE id = $1"
    };
    tx.execute(sql, &[&id, &values])?;
    ctx.scheduler.notify_worker(&mut tx, id)?;
    tx.commit()?;
    ctx.scheduler.wake_worker(id);
    Ok(Reply::ok())
}

/// `PUT /workers/{uuid}/tags`: takes effect at the worker's next fetch.
pub(super) fn tags(ctx: &Ctx, call: &Call, user: &AuthUser, uuid: Uuid) -> Result<Reply, ApiError> {
    let req: ReplaceWorkerTagsReq = call.json()?;
    set_array(ctx, user, uuid, "tags", req.tags)
}

/// `PUT /workers/{uuid}/labels`.
pub(super) fn labels(ctx: &Ctx, call: &Call, user: &AuthUser, uuid: Uuid) -> Result<Reply, ApiError> {
    let req: ReplaceWorkerLabelsReq = call.json()?;
    set_array(ctx, user, uuid, "labels", req.labels)
}

/// The ids of the groups in `names` that worker `id` is in. A name it is not in is refused
/// the same way whether or not the group exists, so names cannot be probed.
fn linked_groups(tx: &mut postgres::Transaction, id: i64, names: &[String]) -> Result<Vec<i64>, ApiError> {
    let rows = tx.query(
        "SELECT g.group_name, g.id FROM groups g JOIN group_worker gw ON gw.group_id = g.id
         WHERE g.group_name = ANY($1) AND gw.worker_id = $2",
        &[&names, &id],
    )?;
    if rows.len() != names.len() {
        let known: Vec<String> = rows.iter().map(|r| r.get("group_name")).collect();
        let missing: Vec<&str> = names.iter().filter(|n| !known.contains(n)).map(String::as_str).collect();
        return Err(ApiError::bad(format!(
            "the worker is not in these groups: {}; see its groups with GET /workers/{{uuid}}",
            missing.join(", ")
        )));
    }
    Ok(rows.iter().map(|r| r.get("id")).collect())
}

/// `PUT /workers/{uuid}/groups`: adds or changes group roles on the worker. The caller
/// manages the worker (Admin in a group that is Admin on it) and may attach it to each
/// group named (see [`authorize_attach`]); they become the link's voucher.
pub(super) fn update_groups(ctx: &Ctx, call: &Call, user: &AuthUser, uuid: Uuid) -> Result<Reply, ApiError> {
    let req: UpdateGroupWorkerRoleReq = call.json()?;
    if req.relations.is_empty() {
        return Err(ApiError::bad("Empty group relations: give at least one group and role"));
    }
    let mut db = ctx.pool.get()?;
    let mut tx = db.transaction()?;
    let id = authorize_worker(&mut tx, user, uuid, UserGroupRole::Admin, GroupWorkerRole::Admin)?;
    let names: Vec<String> = req.relations.keys().cloned().collect();
    let gids = authorize_attach(&mut tx, user, &names)?;
    let roles: Vec<i32> = req.relations.values().map(|r| r.code()).collect();
    tx.execute(
        "INSERT INTO group_worker (group_id, worker_id, role, vouched_by)
         SELECT g, $1, r, $4 FROM unnest($2::bigint[], $3::int[]) AS x(g, r)
         ON CONFLICT (group_id, worker_id) DO UPDATE SET role = EXCLUDED.role, vouched_by = EXCLUDED.vouched_by",
        &[&id, &gids, &roles, &user.id],
    )?;
    ctx.scheduler.notify_worker(&mut tx, id)?;
    tx.commit()?;
    ctx.scheduler.wake_worker(id);
    Ok(Reply::ok())
}

/// `DELETE /workers/{uuid}/groups?groups=..` and `DELETE /workers/{uuid}/groups/remove`.
pub(super) fn remove_groups(ctx: &Ctx, user: &AuthUser, uuid: Uuid, names: Vec<String>) -> Result<Reply, ApiError> {
    if names.is_empty() {
        return Err(ApiError::bad("Empty group relations: name at least one group to remove"));
    }
    let mut names = names;
    names.sort();
    names.dedup();
    let mut db = ctx.pool.get()?;
    let mut tx = db.transaction()?;
    let id = authorize_worker(&mut tx, user, uuid, UserGroupRole::Admin, GroupWorkerRole::Admin)?;
    let gids = linked_groups(&mut tx, id, &names)?;
    tx.execute("DELETE FROM group_worker WHERE worker_id = $1 AND group_id = ANY($2)", &[&id, &gids])?;
    ctx.scheduler.notify_worker(&mut tx, id)?;
    tx.commit()?;
    ctx.scheduler.wake_worker(id);
    Ok(Reply::ok())
}

pub(super) fn remove_groups_body(ctx: &Ctx, call: &Call, user: &AuthUser, uuid: Uuid) -> Result<Reply, ApiError> {
    let req: RemoveGroupWorkerRoleReq = call.json()?;
    remove_groups(ctx, user, uuid, req.groups.into_iter().collect())
}

struct WorkerFilter<'a> {
    role: &'a Option<BTreeSet<GroupWorkerRole>>,
    tags: &'a Option<BTreeSet<String>>,
    labels: &'a Option<BTreeSet<String>>,
    creator_username: &'a Option<String>,
}

fn worker_conditions(group_id: i64, f: &WorkerFilter, only_admin: bool) -> Result<Sql, ApiError> {
    not_empty("role", f.role)?;
    not_empty("tags", f.tags)?;
    not_empty("labels", f.labels)?;
    let mut q = Sql::new();
    q.and("gw.group_id = {}", group_id);
    if only_admin {
        q.and("gw.role = {}", GroupWorkerRole::Admin.code());
    }
    if let Some(r) = f.role {
        q.and("gw.role = ANY({})", r.iter().map(|r| r.code()).collect::<Vec<_>>());
    }
    if let Some(t) = f.tags {
        q.and("w.tags @> {}", t.iter().cloned().collect::<Vec<_>>());
    }
    if let Some(l) = f.labels {
        q.and("w.labels @> {}", l.iter().cloned().collect::<Vec<_>>());
    }
    if let Some(c) = f.creator_username {
        q.and("u.username = {}", c.clone());
    }
    Ok(q)
}

/// `POST /workers/query`: workers with any role in the group (default: the caller's own).
pub(super) fn query(ctx: &Ctx, call: &Call, user: &AuthUser) -> Result<Reply, ApiError> {
    let req: WorkersQueryReq = call.json()?;
    let group_name = req.group_name.clone().unwrap_or_else(|| user.username.clone());
    let mut db = ctx.pool.get()?;
    let (group_id, _) = authorize_group(&mut *db, user, &group_name, UserGroupRole::Read)?;
    let f =
        WorkerFilter { role: &req.role, tags: &req.tags, labels: &req.labels, creator_username: &req.creator_username };
    let q = worker_conditions(group_id, &f, false)?;
    let sql = format!(
        "{} JOIN group_worker gw ON gw.worker_id = w.id WHERE {} ORDER BY w.id",
        workers::INFO_SELECT,
        q.conditions()
    );
    let rows = db.query(&sql, &q.params())?;
    let workers: Vec<_> = rows.iter().map(workers::info).collect();
    let count = workers.len() as u64;
    let workers = if req.count { Vec::new() } else { workers };
    Ok(Reply::json(&WorkersQueryResp { count, workers, group_name }))
}

/// `POST /workers/shutdown`: the group's Admin-role workers matching the filter (Admin).
pub(super) fn shutdown_by_filter(ctx: &Ctx, call: &Call, user: &AuthUser) -> Result<Reply, ApiError> {
    let req: WorkersShutdownByFilterReq = call.json()?;
    let group_name = req.group_name.clone().unwrap_or_else(|| user.username.clone());
    let mut db = ctx.pool.get()?;
    let mut tx = db.transaction()?;
    let (group_id, _) = authorize_group(&mut tx, user, &group_name, UserGroupRole::Admin)?;
    let f =
        WorkerFilter { role: &req.role, tags: &req.tags, labels: &req.labels, creator_username: &req.creator_username };
    let q = worker_conditions(group_id, &f, true)?;
    let sql = format!(
        "SELECT w.id FROM workers w JOIN users u ON u.id = w.creator_id JOIN group_worker gw ON gw.worker_id = w.id WHERE {} FOR UPDATE OF w",
        q.conditions()
    );
    let ids: Vec<i64> = tx.query(&sql, &q.params())?.iter().map(|r| r.get("id")).collect();
    let n = finish_shutdown(ctx, tx, &ids, req.op)?;
    Ok(Reply::json(&WorkersShutdownByFilterResp { shutdown_count: n, group_name }))
}

/// `POST /workers/shutdown/list`: the listed workers the caller may shut down.
pub(super) fn shutdown_by_list(ctx: &Ctx, call: &Call, user: &AuthUser) -> Result<Reply, ApiError> {
    let req: WorkersShutdownByUuidsReq = call.json()?;
    if req.uuids.is_empty() {
        return Err(ApiError::bad("uuids cannot be empty"));
    }
    if req.uuids.len() > super::tasks::MAX_BATCH {
        return Err(ApiError::bad(format!("at most {} uuids per call", super::tasks::MAX_BATCH)));
    }
    let mut db = ctx.pool.get()?;
    let mut tx = db.transaction()?;
    let rows = tx.query(
        "SELECT DISTINCT w.id, w.worker_id FROM workers w
         JOIN group_worker gw ON gw.worker_id = w.id AND gw.role = $3
         JOIN user_group ug ON ug.group_id = gw.group_id AND ug.user_id = $2 AND ug.role = $4
         WHERE w.worker_id = ANY($1)",
        &[&req.uuids, &user.id, &GroupWorkerRole::Admin.code(), &UserGroupRole::Admin.code()],
    )?;
    let ids: Vec<i64> = rows.iter().map(|r| r.get("id")).collect();
    let ok: BTreeSet<Uuid> = rows.iter().map(|r| r.get("worker_id")).collect();
    let n = finish_shutdown(ctx, tx, &ids, req.op)?;
    let failed_uuids = req.uuids.iter().copied().filter(|u| !ok.contains(u)).collect();
    Ok(Reply::json(&WorkersShutdownByUuidsResp { shutdown_count: n, failed_uuids }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_entries() {
        assert_eq!(parse_group_entry("lab").unwrap(), ("lab".into(), GroupWorkerRole::Write));
        assert_eq!(parse_group_entry("lab:READ").unwrap(), ("lab".into(), GroupWorkerRole::Read));
        assert_eq!(parse_group_entry("lab:admin").unwrap(), ("lab".into(), GroupWorkerRole::Admin));
        assert!(parse_group_entry("lab:owner").is_err());
        assert!(parse_group_entry("a:b:c").is_err());
        assert!(parse_group_entry(":write").is_err());
    }
}
