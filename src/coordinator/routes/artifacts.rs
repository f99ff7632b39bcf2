//! Artifacts: the archives a task leaves (`result`, `exec-log`, `std-log`), under object key
//! `{task uuid}/{result|exec-log|std-log}.tar.gz` in the artifacts bucket; for a task with
//! a retry policy, each attempt's under `{task uuid}/attempts/{n}/...` (see [`object_key`]).
//!
//! ```text
//! POST /tasks/<uuid>/artifacts {"content_type":"result","content_length":123} -> {"exist":false,"url":"<PUT url>"}
//! GET  /tasks/<uuid>/download/artifacts/result                               -> {"url":"<GET url>","size":123}
//! GET  /tasks/<uuid>/attempts/2/download/artifacts/result                    -> the same, of attempt 2
//! ```
//!
//! Every route of the mitosis API acts on a task's newest artifact of a type: the last
//! attempt's that uploaded one (each attempt uploads before it ends). Deleting an artifact
//! deletes every attempt's.
//!
//! Reading needs membership in the task's group (mitosis checks nothing on downloads);
//! uploading and deleting need Write. Workers upload through the `Upload` report op
//! ([`reserve_upload`]) and get download URLs only for tasks of groups they serve. A task
//! the caller may not see is "not found".

use super::objects::{
    authorize_task, lock_group_for_upload, origin, parse_content_type, parse_uuid, release, task_group,
};
use crate::api::{
    ArtifactContentType, ArtifactDownloadItem, ArtifactsDeleteByFilterReq, ArtifactsDeleteByFilterResp,
    ArtifactsDeleteByUuidsReq, ArtifactsDeleteByUuidsResp, ArtifactsDownloadByFilterReq, ArtifactsDownloadByUuidsReq,
    ArtifactsDownloadListResp, GroupWorkerRole, RemoteResourceDownloadResp, UploadArtifactReq, UploadArtifactResp,
    UserGroupRole,
};
use crate::coordinator::auth::{AuthUser, AuthWorker};
use crate::coordinator::error::ApiError;
use crate::coordinator::http::{Call, Reply};
use crate::coordinator::limits::{check_list, MAX_OBJECT_LIST, MAX_QUERY_LIMIT};
use crate::coordinator::storage::{download_ttl, Bucket, UPLOAD_TTL};
use crate::coordinator::tasks::matching::{authorized, union_sql};
use crate::coordinator::Ctx;
use std::time::Duration;
use uuid::Uuid;

const SINGLE: Duration = Duration::from_secs(3600);
const BATCH: Duration = Duration::from_secs(86_400);

/// The object key of a task's artifact of `attempt`: attempt 0 (a task without a retry
/// policy) at `{task}/{file}`, where mitosis keeps it; attempt n of a task with a policy
/// at `{task}/attempts/{n}/{file}`, so that no attempt's upload replaces another's.
pub(crate) fn object_key(task: Uuid, ct: ArtifactContentType, attempt: i32) -> String {
    match attempt {
        0 => format!("{task}/{}", ct.file_name()),
        n => format!("{task}/attempts/{n}/{}", ct.file_name()),
    }
}

/// The attempt an upload for `task` belongs to: for an active task with a retry policy,
/// the one under way (or next, between attempts), one past those recorded; for an
/// archived one, its last recorded attempt; 0 for a task without attempts.
fn upload_attempt(tx: &mut postgres::Transaction<'_>, task: Uuid) -> Result<i32, ApiError> {
    let row = tx.query_one(
        "SELECT (EXISTS (SELECT 1 FROM active_tasks WHERE uuid = $1 AND retry_policy IS NOT NULL))::int
                + COALESCE((SELECT max(attempt) FROM task_attempts WHERE task_uuid = $1), 0) AS attempt",
        &[&task],
    )?;
    Ok(row.get("attempt"))
}

/// Charges `content_length` bytes to the task's group, records the artifact (of the
/// attempt under way, see [`upload_attempt`]) and returns `(exist, PUT url)`; `exist`
/// says this attempt's artifact of that type was there before. Bumps the task's
/// `updated_at`. Runs inside the caller's transaction: the charge and the row count only
/// if the caller commits, and the URL must not be handed out before that. Used by the
/// user route and by the worker's `Upload` report op.
pub(crate) fn reserve_upload(
    ctx: &Ctx,
    tx: &mut postgres::Transaction<'_>,
    call: &Call,
    task: Uuid,
    group_id: i64,
    content_type: ArtifactContentType,
    content_length: u64,
) -> Result<(bool, String), ApiError> {
    let budget = lock_group_for_upload(tx, group_id)?;
    let ct = content_type.code();
    let attempt = upload_attempt(tx, task)?;
    let old: Option<i64> = tx
        .query_opt(
            "SELECT size FROM artifacts WHERE task_id = $1 AND content_type = $2 AND attempt = $3 FOR UPDATE",
            &[&task, &ct, &attempt],
        )?
        .map(|r| r.get("size"));
    let recorded = budget.charge(tx, old, content_length)?;
    tx.execute(
        "INSERT INTO artifacts (task_id, content_type, attempt, size) VALUES ($1, $2, $3, $4)
         ON CONFLICT (task_id, content_type, attempt) DO UPDATE SET size = EXCLUDED.size, updated_at = now()",
        &[&task, &ct, &attempt, &recorded],
    )?;
    tx.execute("UPDATE active_tasks SET updated_at = now() WHERE uuid = $1", &[&task])?;
    tx.execute("UPDATE archived_tasks SET updated_at = now() WHERE uuid = $1", &[&task])?;
    let url = ctx.storage.presign_put(
        &origin(ctx, call),
        Bucket::Artifacts,
        &object_key(task, content_type, attempt),
        content_length,
        UPLOAD_TTL,
    )?;
    Ok((old.is_some(), url))
}

/// `POST /tasks/{uuid}/artifacts`: a user uploads an artifact of an active or archived task.
pub(crate) fn upload(ctx: &Ctx, call: &Call, user: &AuthUser, task: &str) -> Result<Reply, ApiError> {
    let task = parse_uuid(task)?;
    let req: UploadArtifactReq = call.json()?;
    let mut db = ctx.pool.get()?;
    let mut tx = db.transaction()?;
    let group_id = authorize_task(&mut tx, user, task, UserGroupRole::Write)?;
    let (exist, url) = reserve_upload(ctx, &mut tx, call, task, group_id, req.content_type, req.content_length)?;
    tx.commit()?;
    Ok(Reply::json(&UploadArtifactResp { exist, url }))
}

fn no_artifact(task: Uuid, ct: ArtifactContentType) -> ApiError {
    ApiError::NotFound(format!("Artifact {ct} of task {task}"))
}

/// A GET URL for the task's artifact of type `ct`: of `attempt`, or the newest.
fn artifact_url(
    ctx: &Ctx,
    call: &Call,
    db: &mut postgres::Client,
    task: Uuid,
    ct: ArtifactContentType,
    attempt: Option<i32>,
) -> Result<Reply, ApiError> {
    let row = match attempt {
        None => db.query_opt(
            "SELECT size, attempt FROM artifacts WHERE task_id = $1 AND content_type = $2
             ORDER BY attempt DESC LIMIT 1",
            &[&task, &ct.code()],
        )?,
        Some(n) => db.query_opt(
            "SELECT size, attempt FROM artifacts WHERE task_id = $1 AND content_type = $2 AND attempt = $3",
            &[&task, &ct.code(), &n],
        )?,
    };
    let row = row.ok_or_else(|| match attempt {
        None => no_artifact(task, ct),
        Some(n) => ApiError::NotFound(format!("Artifact {ct} of attempt {n} of task {task}")),
    })?;
    let size: i64 = row.get("size");
    let url = ctx.storage.presign_get(
        &origin(ctx, call),
        Bucket::Artifacts,
        &object_key(task, ct, row.get("attempt")),
        download_ttl(size, SINGLE),
    )?;
    Ok(Reply::json(&RemoteResourceDownloadResp { url, size }))
}

/// `GET /tasks/{uuid}/download/artifacts/{ct}`: for members of the task's group.
pub(crate) fn download(ctx: &Ctx, call: &Call, user: &AuthUser, task: &str, ct: &str) -> Result<Reply, ApiError> {
    let (task, ct) = (parse_uuid(task)?, parse_content_type(ct)?);
    let mut db = ctx.pool.get()?;
    authorize_task(&mut *db, user, task, UserGroupRole::Read)?;
    artifact_url(ctx, call, &mut db, task, ct, None)
}

/// `GET /tasks/{uuid}/attempts/{n}/download/artifacts/{ct}`: the artifact attempt `n` of
/// a task with a retry policy left, for members of the task's group.
pub(crate) fn download_attempt(
    ctx: &Ctx,
    call: &Call,
    user: &AuthUser,
    task: &str,
    attempt: &str,
    ct: &str,
) -> Result<Reply, ApiError> {
    let (task, ct) = (parse_uuid(task)?, parse_content_type(ct)?);
    let attempt = parse_attempt(attempt)?;
    let mut db = ctx.pool.get()?;
    authorize_task(&mut *db, user, task, UserGroupRole::Read)?;
    artifact_url(ctx, call, &mut db, task, ct, Some(attempt))
}

/// An attempt number from the path: 1 for the first.
fn parse_attempt(s: &str) -> Result<i32, ApiError> {
    match s.parse::<i32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(ApiError::BadPath(format!("{s:?} is not an attempt number (1 for the first attempt, 2, ...)"))),
    }
}

/// `GET /workers/tasks/{uuid}/artifacts/{ct}`: an artifact of a task in the group of the
/// worker's current task. A worker serving several groups fetches resources on behalf of
/// one task at a time; judging by all the groups it serves would let a member of one read
/// another's results through a shared worker.
pub(crate) fn worker_download(
    ctx: &Ctx,
    call: &Call,
    worker: &AuthWorker,
    task: &str,
    ct: &str,
) -> Result<Reply, ApiError> {
    let (task, ct) = (parse_uuid(task)?, parse_content_type(ct)?);
    let mut db = ctx.pool.get()?;
    let not_found = || ApiError::NotFound(format!("Task with uuid {task}"));
    let group_id = task_group(&mut *db, task)?.ok_or_else(not_found)?;
    let current = db.query_opt(
        &format!("SELECT 1 FROM active_tasks cur {CURRENT_TASK_GROUP} AND cur.group_id = $3"),
        &[&worker.id, &GroupWorkerRole::Write.code(), &group_id],
    )?;
    if current.is_none() {
        return Err(not_found());
    }
    artifact_url(ctx, call, &mut db, task, ct, None)
}

/// Joins `cur`, the worker's (`$1`) current task, to a link of the worker to that task's
/// group with at least role `$2`: a worker detached from the group gets nothing more of it,
/// even for the task it is still running.
const CURRENT_TASK_GROUP: &str =
    "JOIN group_worker gw ON gw.group_id = cur.group_id AND gw.worker_id = cur.assigned_worker
     AND gw.role >= $2 WHERE cur.assigned_worker = $1";

/// `GET /workers/tasks/{uuid}/attachments/{*key}`: an attachment of the group of the
/// worker's current task (the uuid must be that task's).
pub(crate) fn worker_attachment(
    ctx: &Ctx,
    call: &Call,
    worker: &AuthWorker,
    task: &str,
    key: &str,
) -> Result<Reply, ApiError> {
    let task = parse_uuid(task)?;
    let mut db = ctx.pool.get()?;
    let row = db
        .query_opt(
            &format!(
                "SELECT g.id, g.group_name FROM active_tasks cur JOIN groups g ON g.id = cur.group_id
                 {CURRENT_TASK_GROUP} AND cur.uuid = $3"
            ),
            &[&worker.id, &GroupWorkerRole::Write.code(), &task],
        )?
        .ok_or_else(|| ApiError::NotFound(format!("Task with uuid {task}")))?;
    let (group_id, group): (i64, String) = (row.get("id"), row.get("group_name"));
    super::attachments::download_in(ctx, call, &mut db, group_id, &group, key)
}

fn download_items(
    ctx: &Ctx,
    call: &Call,
    ct: ArtifactContentType,
    rows: Vec<postgres::Row>,
) -> Result<Reply, ApiError> {
    let origin = origin(ctx, call);
    let mut downloads = Vec::with_capacity(rows.len());
    for r in rows {
        let (uuid, size): (Uuid, i64) = (r.get("task_id"), r.get("size"));
        let key = object_key(uuid, ct, r.get("attempt"));
        let url = ctx.storage.presign_get(&origin, Bucket::Artifacts, &key, download_ttl(size, BATCH))?;
        downloads.push(ArtifactDownloadItem { uuid, url, size });
    }
    Ok(Reply::json(&ArtifactsDownloadListResp { downloads }))
}

/// `POST /tasks/download/artifacts/list`: GET URLs for the listed tasks' artifacts of one
/// type, for tasks in groups the caller is a member of; others are left out like tasks
/// without that artifact.
pub(crate) fn download_by_uuids(ctx: &Ctx, call: &Call, user: &AuthUser) -> Result<Reply, ApiError> {
    let req: ArtifactsDownloadByUuidsReq = call.json()?;
    if req.uuids.is_empty() {
        return Err(ApiError::bad("Empty uuids: name at least one task"));
    }
    check_list("uuids", req.uuids.len(), MAX_OBJECT_LIST)?;
    let mut db = ctx.pool.get()?;
    let rows = db.query(
        "SELECT DISTINCT ON (a.task_id) a.task_id, a.size, a.attempt FROM artifacts a
         JOIN (SELECT uuid, group_id FROM active_tasks WHERE uuid = ANY($1)
               UNION ALL SELECT uuid, group_id FROM archived_tasks WHERE uuid = ANY($1)) t ON t.uuid = a.task_id
         JOIN user_group ug ON ug.group_id = t.group_id AND ug.user_id = $2
         WHERE a.content_type = $3 AND a.task_id = ANY($1)
         ORDER BY a.task_id, a.attempt DESC",
        &[&req.uuids, &user.id, &req.content_type.code()],
    )?;
    download_items(ctx, call, req.content_type, rows)
}

/// The newest artifacts of one type of the tasks a filter selects, one per task, after
/// checking the caller's role `min` in the filter's group (default: their personal group).
fn filtered(
    db: &mut postgres::Client,
    user: &AuthUser,
    req: &ArtifactsDownloadByFilterReq,
    min: UserGroupRole,
    max: usize,
) -> Result<Vec<postgres::Row>, ApiError> {
    let (_, mut q) = authorized(db, user, &req.filter, min)?;
    let union = union_sql(&mut q, req.reporter_uuid);
    let ct = q.bind(req.content_type.code());
    let sql = format!(
        "SELECT DISTINCT ON (a.task_id) a.task_id, a.size, a.attempt FROM artifacts a JOIN ({union}) x ON x.uuid = a.task_id
         WHERE a.content_type = {ct} ORDER BY a.task_id, a.attempt DESC LIMIT {}",
        max + 1
    );
    let rows = db.query(&sql, &q.params())?;
    if rows.len() > max {
        return Err(ApiError::bad(format!(
            "the filter selects more than {max} artifacts, the most one request handles; narrow it (by tags, labels, states or creators)"
        )));
    }
    Ok(rows)
}

/// `POST /tasks/download/artifacts`: GET URLs for the artifacts of the tasks a filter selects.
pub(crate) fn download_by_filter(ctx: &Ctx, call: &Call, user: &AuthUser) -> Result<Reply, ApiError> {
    let req: ArtifactsDownloadByFilterReq = call.json()?;
    let mut db = ctx.pool.get()?;
    let rows = filtered(&mut db, user, &req, UserGroupRole::Read, MAX_QUERY_LIMIT as usize)?;
    download_items(ctx, call, req.content_type, rows)
}

/// Deletes one artifact type of a task, every attempt's, in its own transaction: each
/// object first, then (only if that worked) its row and its charged space; when the store
/// fails midway, what was deleted stays deleted and the error is returned. `user` None: an
/// admin, who may delete any time.
fn delete_one(ctx: &Ctx, user: Option<&AuthUser>, task: Uuid, ct: ArtifactContentType) -> Result<(), ApiError> {
    let mut db = ctx.pool.get()?;
    let mut tx = db.transaction()?;
    let group_id = match user {
        Some(u) => Some(authorize_task(&mut tx, u, task, UserGroupRole::Write)?),
        // Artifact rows have no foreign key: an admin may clean up after a task row is gone.
        None => task_group(&mut tx, task)?,
    };
    let rows = tx.query(
        "SELECT attempt, size, updated_at > now() - interval '1 hour' AS recent FROM artifacts
         WHERE task_id = $1 AND content_type = $2 ORDER BY attempt FOR UPDATE",
        &[&task, &ct.code()],
    )?;
    if rows.is_empty() {
        return Err(no_artifact(task, ct));
    }
    if user.is_some() && rows.iter().any(|r| r.get::<_, bool>("recent")) {
        return Err(ApiError::bad("Cannot delete artifact that has been updated in the last hour"));
    }
    let mut failed = None;
    for row in &rows {
        let attempt: i32 = row.get("attempt");
        if let Err(e) = ctx.storage.delete(Bucket::Artifacts, &object_key(task, ct, attempt)) {
            failed = Some(e);
            break;
        }
        tx.execute(
            "DELETE FROM artifacts WHERE task_id = $1 AND content_type = $2 AND attempt = $3",
            &[&task, &ct.code(), &attempt],
        )?;
        if let Some(g) = group_id {
            release(&mut tx, g, row.get("size"))?;
        }
    }
    tx.commit()?;
    failed.map_or(Ok(()), Err)
}

/// `DELETE /tasks/{uuid}/artifacts/{ct}` (Write; not within an hour of an upload).
pub(crate) fn delete(ctx: &Ctx, user: &AuthUser, task: &str, ct: &str) -> Result<Reply, ApiError> {
    let (task, ct) = (parse_uuid(task)?, parse_content_type(ct)?);
    delete_one(ctx, Some(user), task, ct).map(|()| Reply::ok())
}

/// `DELETE /admin/tasks/{uuid}/artifacts/{ct}`: any time.
pub(crate) fn admin_delete(ctx: &Ctx, task: &str, ct: &str) -> Result<Reply, ApiError> {
    let (task, ct) = (parse_uuid(task)?, parse_content_type(ct)?);
    delete_one(ctx, None, task, ct).map(|()| Reply::ok())
}

/// Deletes one by one. A refusal (not found, no permission, too recent) skips that item;
/// after an unreachable store or database the rest are not tried, and anything else
/// fails the request. Returns (deleted, not deleted).
fn delete_many(
    ctx: &Ctx,
    user: &AuthUser,
    uuids: Vec<Uuid>,
    ct: ArtifactContentType,
) -> Result<(u64, Vec<Uuid>), ApiError> {
    let mut deleted = 0;
    let mut failed = Vec::new();
    let mut down = false;
    for task in uuids {
        if down {
            failed.push(task);
            continue;
        }
        match delete_one(ctx, Some(user), task, ct) {
            Ok(()) => deleted += 1,
            Err(ApiError::Internal(e)) => return Err(ApiError::Internal(e)),
            Err(e) => {
                down = matches!(e, ApiError::Unavailable(_));
                failed.push(task);
            }
        }
    }
    Ok((deleted, failed))
}

/// `POST /tasks/delete/artifacts`: deletes the artifacts of the tasks a filter selects
/// (Write in the group), skipping those uploaded within the hour.
pub(crate) fn delete_by_filter(ctx: &Ctx, call: &Call, user: &AuthUser) -> Result<Reply, ApiError> {
    let req: ArtifactsDeleteByFilterReq = call.json()?;
    let uuids: Vec<Uuid> = {
        let mut db = ctx.pool.get()?;
        filtered(&mut db, user, &req, UserGroupRole::Write, MAX_OBJECT_LIST)?.iter().map(|r| r.get("task_id")).collect()
    };
    let (deleted_count, _) = delete_many(ctx, user, uuids, req.content_type)?;
    Ok(Reply::json(&ArtifactsDeleteByFilterResp { deleted_count }))
}

/// `POST /tasks/delete/artifacts/list`: `failed_uuids` lists what was not deleted.
pub(crate) fn delete_by_uuids(ctx: &Ctx, call: &Call, user: &AuthUser) -> Result<Reply, ApiError> {
    let req: ArtifactsDeleteByUuidsReq = call.json()?;
    if req.uuids.is_empty() {
        return Err(ApiError::bad("Empty uuids: name at least one task"));
    }
    check_list("uuids", req.uuids.len(), MAX_OBJECT_LIST)?;
    let (deleted_count, failed_uuids) = delete_many(ctx, user, req.uuids, req.content_type)?;
    Ok(Reply::json(&ArtifactsDeleteByUuidsResp { deleted_count, failed_uuids }))
}
