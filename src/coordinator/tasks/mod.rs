//! Tasks in the database: reading rows as wire types, inserting, archiving.
//!
//! A task lives in `active_tasks` from submission until its worker commits it or a user
//! cancels it; then it moves to `archived_tasks` in one statement. Queries read both.
//!
//! ```ignore
//! let found = tasks::find(&mut db, uuid)?;          // active first, then archived
//! let st = tasks::prepare_submit(&mut db)?;
//! let made = tasks::submit(&mut *db, &st, &token, "lab", &reqs, &notify_prefix)?; // None: not allowed
//! ```
//!
//! The routes only parse, authorize and call: every statement on the task tables is here,
//! or in [`matching`] for the tasks a filter selects.

pub(crate) mod dependencies;
pub(crate) mod matching;
pub(crate) mod retry;

use super::error::ApiError;
use crate::api::{
    ArtifactContentType, ArtifactQueryResp, SubmitTaskReq, TaskQueryInfo, TaskResultSpec, TaskSpec, TaskState,
    Timestamp,
};
use postgres::types::{Json, ToSql};
use postgres::GenericClient;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;
use uuid::Uuid;

/// The columns every task read selects, which [`from_row`] reads by name; `t` is the
/// task table, `u` its creator and `g` its group.
pub(crate) const INFO_COLUMNS: &str = "t.uuid, u.username, g.group_name, t.task_id, t.tags, t.labels, t.created_at, \
     t.updated_at, t.state, t.timeout, t.priority, t.spec, t.result, t.upstream_task_uuid, t.downstream_task_uuid, \
     t.note";

/// `SELECT ... FROM active_tasks t` joined with its creator and group, reporter NULL.
pub(crate) fn active_select() -> String {
    format!(
        "SELECT {INFO_COLUMNS}, NULL::uuid AS reporter_uuid, t.id, t.group_id, true AS active \
         FROM active_tasks t JOIN users u ON u.id = t.creator_id JOIN groups g ON g.id = t.group_id"
    )
}

/// The same for archived tasks.
pub(crate) fn archived_select() -> String {
    format!(
        "SELECT {INFO_COLUMNS}, t.reporter_uuid, t.id, t.group_id, false AS active \
         FROM archived_tasks t JOIN users u ON u.id = t.creator_id JOIN groups g ON g.id = t.group_id"
    )
}

/// A task row and where it lives.
pub(crate) struct Found {
    pub info: TaskQueryInfo,
    pub id: i64,
    pub group_id: i64,
    pub active: bool,
}

/// Converts a row selected with [`active_select`] / [`archived_select`]. Columns are
/// found by name, a search through the row's columns: measured in a release build at
/// about 25 ns a column, half a millisecond for a page of 1,000 tasks, well under a
/// hundredth of the statement that fetched them, so positions would buy nothing.
pub(crate) fn from_row(r: &postgres::Row) -> Result<Found, ApiError> {
    let spec: serde_json::Value = r.get("spec");
    let spec: TaskSpec = serde_json::from_value(spec)
        .map_err(|e| ApiError::Internal(format!("stored task spec does not parse: {e}")))?;
    let result: Option<serde_json::Value> = r.get("result");
    let result: Option<TaskResultSpec> = result
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| ApiError::Internal(format!("stored task result does not parse: {e}")))?;
    let info = TaskQueryInfo {
        uuid: r.get("uuid"),
        creator_username: r.get("username"),
        group_name: r.get("group_name"),
        task_id: r.get("task_id"),
        tags: r.get("tags"),
        labels: r.get("labels"),
        created_at: Timestamp(r.get("created_at")),
        updated_at: Timestamp(r.get("updated_at")),
        state: TaskState::from_code(r.get("state")).unwrap_or(TaskState::Unknown),
        timeout: r.get("timeout"),
        priority: r.get("priority"),
        spec,
        result,
        upstream_task_uuid: r.get("upstream_task_uuid"),
        downstream_task_uuid: r.get("downstream_task_uuid"),
        reporter_uuid: r.get("reporter_uuid"),
        note: r.get("note"),
    };
    Ok(Found { info, id: r.get("id"), group_id: r.get("group_id"), active: r.get("active") })
}

/// Finds a task by uuid, active first.
pub(crate) fn find(db: &mut impl GenericClient, uuid: Uuid) -> Result<Option<Found>, ApiError> {
    for sql in [active_select(), archived_select()] {
        if let Some(r) = db.query_opt(&format!("{sql} WHERE t.uuid = $1"), &[&uuid])? {
            return Ok(Some(from_row(&r)?));
        }
    }
    Ok(None)
}

/// The artifacts a task has: of each type the newest, the last attempt's that uploaded
/// one (what the artifact routes of the mitosis API serve).
pub(crate) fn artifacts(db: &mut impl GenericClient, uuid: Uuid) -> Result<Vec<ArtifactQueryResp>, ApiError> {
    let rows = db.query(
        "SELECT DISTINCT ON (content_type) content_type, size, created_at, updated_at FROM artifacts
         WHERE task_id = $1 ORDER BY content_type, attempt DESC",
        &[&uuid],
    )?;
    Ok(rows.iter().filter_map(artifact_from_row).collect())
}

/// The artifacts of each attempt of a task with a retry policy, by attempt number.
pub(crate) fn attempt_artifacts(
    db: &mut impl GenericClient,
    uuid: Uuid,
) -> Result<BTreeMap<i32, Vec<ArtifactQueryResp>>, ApiError> {
    let rows = db.query(
        "SELECT attempt, content_type, size, created_at, updated_at FROM artifacts
         WHERE task_id = $1 AND attempt > 0 ORDER BY attempt, content_type",
        &[&uuid],
    )?;
    let mut out: BTreeMap<i32, Vec<ArtifactQueryResp>> = BTreeMap::new();
    for r in &rows {
        if let Some(a) = artifact_from_row(r) {
            out.entry(r.get("attempt")).or_default().push(a);
        }
    }
    Ok(out)
}

fn artifact_from_row(r: &postgres::Row) -> Option<ArtifactQueryResp> {
    Some(ArtifactQueryResp {
        content_type: ArtifactContentType::from_code(r.get("content_type"))?,
        size: r.get("size"),
        created_at: Timestamp(r.get("created_at")),
        updated_at: Timestamp(r.get("updated_at")),
    })
}

/// Checks what a spec may contain: resource paths stay inside the resource directory, and
/// its size is bounded.
pub(crate) fn validate_spec(spec: &TaskSpec) -> Result<(), ApiError> {
    super::limits::check_spec_size(spec)?;
    for r in &spec.resources {
        let p = std::path::Path::new(&r.local_path);
        if r.local_path.is_empty() || p.is_absolute() {
            return Err(ApiError::bad(format_args!("resource local_path {:?} must be a relative path", r.local_path)));
        }
        if p.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            return Err(ApiError::bad(format_args!("resource local_path {:?} must not contain `..`", r.local_path)));
        }
        if r.local_path.contains('\0') {
            return Err(ApiError::bad("resource local_path must not contain a NUL character"));
        }
    }
    Ok(())
}

/// Checks a whole submission before anything is written.
pub(crate) fn validate_submit(req: &SubmitTaskReq) -> Result<(), ApiError> {
    validate_spec(&req.task_spec)?;
    if req.timeout.as_secs() == 0 {
        return Err(ApiError::bad("timeout must be at least 1s"));
    }
    crate::api::time::check_max("timeout", req.timeout).map_err(ApiError::bad)?;
    if let Some(p) = &req.retries {
        retry::validate(p)?;
    }
    let max = super::limits::MAX_DEPENDENCIES;
    let n = dependencies::of(req).len();
    if n > max {
        return Err(ApiError::bad(format!("the task names {n} dependencies; at most {max}")));
    }
    Ok(())
}

/// The insert of a batch of tasks into one group, as one statement: the group row (the
/// `g` CTE: the group `$2` and the tasks' creator) advances its task counter by the batch
/// size, the tasks take the ids after its old value, and Ready tasks are notified to the
/// other coordinators (NOTIFY).
/// The tasks' fields travel as a few arrays, so a statement has the same 12 parameters
/// for one task or ten thousand, far from PostgreSQL's limit of 65,535. A task's tags and
/// labels travel as array literals (a list per task does not fit a rectangular array);
/// they cost PostgreSQL less than JSON arrays to turn into `text[]`, and slices of one
/// long array cost it time quadratic in the batch. The text is a format string: `{ready}`
/// takes the Ready code, so each statement's text is built once (see [`SUBMIT`]).
macro_rules! insert_tasks {
    ($group:literal) => {
        concat!(
            "WITH g AS (",
            $group,
            "), c AS (
                UPDATE groups SET task_count = task_count + cardinality($3::uuid[]) FROM g WHERE groups.id = g.id
                RETURNING groups.id, g.creator, groups.task_count - cardinality($3::uuid[]) AS base
            ), ins AS (
                INSERT INTO active_tasks (creator_id, group_id, task_id, uuid, tags, labels, state, timeout, priority,
                                          spec, upstream_task_uuid)
                SELECT c.creator, c.id, c.base + x.n, x.uuid, x.tags::text[], x.labels::text[],
                       $9, x.timeout, x.priority, x.spec, $10
                FROM c, unnest($3::uuid[], $4::text[], $5::text[], $6::bigint[], $7::int[], $8::jsonb[])
                        WITH ORDINALITY AS x(uuid, tags, labels, timeout, priority, spec, n)
            ), notified AS (
                SELECT pg_notify($11, $12::text || c.id) FROM c WHERE $9 = {ready}
            )
            SELECT c.id, c.base, (SELECT count(*) FROM notified) FROM c"
        )
    };
}

/// Inserts into the group with row id `$2`, created by user `$1`.
static INSERT_INTO_GROUP: LazyLock<String> = LazyLock::new(|| {
    format!(
        insert_tasks!("SELECT id, $1::bigint AS creator FROM groups WHERE id = $2"),
        ready = TaskState::Ready.code()
    )
});

/// Inserts into the group named `$2` if user `$1` is Active (`$15`), their token's
/// signature `$14` is current, and they hold at least role `$13` there; nothing happens
/// otherwise. A user's submission, authenticated and authorized in the same round trip.
static SUBMIT: LazyLock<String> = LazyLock::new(|| {
    format!(
        insert_tasks!(
            "SELECT g.id, u.id AS creator
             FROM users u JOIN user_group ug ON ug.user_id = u.id JOIN groups g ON g.id = ug.group_id
             WHERE u.username = $1 AND u.auth_signature = $14 AND u.state = $15
               AND g.group_name = $2 AND ug.role >= $13"
        ),
        ready = TaskState::Ready.code()
    )
});

/// What an insert made: the group's row id and (task_id, uuid) per task, in order.
pub(crate) struct Inserted {
    pub group_id: i64,
    pub tasks: Vec<(i64, Uuid)>,
}

/// The tasks' fields as the array parameters `$3`–`$8`. Specs are serialized straight
/// into the statement's message: no intermediate JSON values, which for a batch of ten
/// thousand tasks would cost megabytes.
struct Columns<'a> {
    uuids: Vec<Uuid>,
    tags: Vec<String>,
    labels: Vec<String>,
    timeouts: Vec<i64>,
    priorities: Vec<i32>,
    specs: Vec<Json<&'a TaskSpec>>,
}

/// A PostgreSQL array literal of `items` (`{"a","b \"c\""}`), for a `text[]` cast. It
/// travels as a parameter like any value; quoting keeps commas, braces and quotes inside
/// an item.
fn array_literal(items: &BTreeSet<String>) -> String {
    let mut out = String::with_capacity(2 + items.iter().map(|i| i.len() + 3).sum::<usize>());
    out.push('{');
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push('"');
        for ch in item.chars() {
            if ch == '"' || ch == '\\' {
                out.push('\\');
            }
            out.push(ch);
        }
        out.push('"');
    }
    out.push('}');
    out
}

impl<'a> Columns<'a> {
    fn of(reqs: &[&'a SubmitTaskReq]) -> Columns<'a> {
        Columns {
            uuids: reqs.iter().map(|_| Uuid::new_v4()).collect(),
            tags: reqs.iter().map(|r| array_literal(&r.tags)).collect(),
            labels: reqs.iter().map(|r| array_literal(&r.labels)).collect(),
            timeouts: reqs.iter().map(|r| r.timeout.as_secs() as i64).collect(),
            priorities: reqs.iter().map(|r| r.priority).collect(),
            specs: reqs.iter().map(|r| Json(&r.task_spec)).collect(),
        }
    }
}

/// The scalar parameters of [`INSERT_INTO_GROUP`] and [`SUBMIT`].
struct InsertInto<'a> {
    /// `$1`: the creator's user id, or (submissions) user name.
    creator: &'a (dyn ToSql + Sync),
    /// `$2`: the group's row id or name.
    group: &'a (dyn ToSql + Sync),
    state: TaskState,
    upstream: Option<Uuid>,
    /// [`super::scheduler::Scheduler::group_payload_prefix`], for Ready tasks.
    notify_prefix: &'a str,
}

/// Runs [`INSERT_INTO_GROUP`] or [`SUBMIT`] (`extra`: its parameters after `$12`). None
/// when no group row matched.
fn run_insert(
    db: &mut impl GenericClient,
    sql: &postgres::Statement,
    to: InsertInto,
    reqs: &[&SubmitTaskReq],
    extra: &[&(dyn ToSql + Sync)],
) -> Result<Option<Inserted>, ApiError> {
    let c = Columns::of(reqs);
    let code = to.state.code();
    let channel = super::scheduler::CHANNEL;
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![
        to.creator,
        to.group,
        &c.uuids,
        &c.tags,
        &c.labels,
        &c.timeouts,
        &c.priorities,
        &c.specs,
        &code,
        &to.upstream,
        &channel,
        &to.notify_prefix,
    ];
    params.extend_from_slice(extra);
    let Some(row) = db.query_opt(sql, &params)? else { return Ok(None) };
    let base: i64 = row.get("base");
    let tasks = c.uuids.into_iter().enumerate().map(|(i, u)| (base + 1 + i as i64, u)).collect();
    Ok(Some(Inserted { group_id: row.get("id"), tasks }))
}

/// Inserts a Pending task downstream of `upstream` into the group with row id `group_id`
/// (it is notified when it becomes Ready); returns its (task_id, uuid).
pub(crate) fn insert_downstream(
    db: &mut impl GenericClient,
    creator_id: i64,
    group_id: i64,
    req: &SubmitTaskReq,
    upstream: Uuid,
) -> Result<(i64, Uuid), ApiError> {
    let st = db.prepare(&INSERT_INTO_GROUP)?;
    let to = InsertInto {
        creator: &creator_id,
        group: &group_id,
        state: TaskState::Pending,
        upstream: Some(upstream),
        notify_prefix: "",
    };
    let made = run_insert(db, &st, to, &[req], &[])?;
    made.and_then(|m| m.tasks.first().copied()).ok_or_else(|| ApiError::Internal(format!("group {group_id} vanished")))
}

/// The statement of [`submit`], prepared on the connection (once).
pub(crate) fn prepare_submit(db: &mut super::db::Conn) -> Result<postgres::Statement, ApiError> {
    Ok(db.prepared(SUBMIT.as_str())?)
}

/// A user's submission of Ready tasks to the group named `group`, in one statement with
/// its authentication (`token`: Active user, current signature) and authorization (Write
/// at least): None, and nothing written, when either fails.
pub(crate) fn submit(
    db: &mut impl GenericClient,
    prepared: &postgres::Statement,
    token: &super::auth::Claims,
    group: &str,
    reqs: &[&SubmitTaskReq],
    notify_prefix: &str,
) -> Result<Option<Inserted>, ApiError> {
    let (write, active) = (crate::api::UserGroupRole::Write.code(), crate::api::UserState::Active.code());
    let to = InsertInto { creator: &token.sub, group: &group, state: TaskState::Ready, upstream: None, notify_prefix };
    run_insert(db, prepared, to, reqs, &[&write, &token.sign, &active])
}

/// [`submit`] of an array's tasks, in the caller's transaction: names the array for the
/// inserts (the `array_id` column's default reads `mito.array_id`, local to the
/// transaction) and records its cap, if any, for the claim.
#[allow(clippy::too_many_arguments)]
pub(crate) fn submit_array(
    tx: &mut postgres::Transaction,
    prepared: &postgres::Statement,
    token: &super::auth::Claims,
    group: &str,
    reqs: &[&SubmitTaskReq],
    announce: &str,
    array_id: Uuid,
    max_running: Option<u32>,
) -> Result<Option<Inserted>, ApiError> {
    tx.execute("SELECT set_config('mito.array_id', $1, true)", &[&array_id.to_string()])?;
    let Some(made) = submit(tx, prepared, token, group, reqs, announce)? else { return Ok(None) };
    if let Some(k) = max_running {
        let k = i32::try_from(k).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO task_arrays (id, group_id, max_running) VALUES ($1, $2, $3)",
            &[&array_id, &made.group_id, &k],
        )?;
    }
    Ok(Some(made))
}

/// The result a user cancellation records.
pub(crate) fn user_cancellation() -> serde_json::Value {
    serde_json::json!({"exit_status": 0, "msg": "UserCancellation"})
}

/// The result recorded for a task the coordinator cancels because it cannot run (again):
/// no exit status of its own and no message from the mitosis list (the task's note says
/// why), so clients see it done and not successful.
pub fn not_run() -> serde_json::Value {
    serde_json::json!({"exit_status": 0, "msg": null})
}

/// Moves the given active tasks, if in one of `states`, to the archive as Cancelled by the
/// user; returns the uuids moved.
pub(crate) fn archive_cancelled(
    tx: &mut impl GenericClient,
    ids: &[i64],
    states: &[i32],
) -> Result<Vec<Uuid>, ApiError> {
    let rows = tx.query(
        "WITH moved AS (
            DELETE FROM active_tasks WHERE id = ANY($1) AND state = ANY($2) RETURNING *
        )
        INSERT INTO archived_tasks (id, creator_id, group_id, task_id, uuid, tags, labels, created_at, updated_at,
                                    state, assigned_worker, timeout, priority, spec, result,
                                    upstream_task_uuid, downstream_task_uuid, reporter_uuid, note)
        SELECT id, creator_id, group_id, task_id, uuid, tags, labels, created_at, now(),
               $3, assigned_worker, timeout, priority, spec, $4,
               upstream_task_uuid, downstream_task_uuid, NULL, note
        FROM moved
        RETURNING uuid",
        &[&ids, &states, &TaskState::Cancelled.code(), &user_cancellation()],
    )?;
    Ok(rows.iter().map(|r| r.get("uuid")).collect())
}

/// Moves active task `id` to the archive in `state` with `result` and `note` (a task
/// that cannot run or run again: no worker reported it). Returns its uuid if it moved.
pub fn archive_as(
    tx: &mut impl GenericClient,
    id: i64,
    state: TaskState,
    result: Option<&serde_json::Value>,
    note: &str,
) -> Result<Option<Uuid>, ApiError> {
    let row = tx.query_opt(
        "WITH moved AS (
            DELETE FROM active_tasks WHERE id = $1 RETURNING *
        )
        INSERT INTO archived_tasks (id, creator_id, group_id, task_id, uuid, tags, labels, created_at, updated_at,
                                    state, assigned_worker, timeout, priority, spec, result,
                                    upstream_task_uuid, downstream_task_uuid, reporter_uuid, note)
        SELECT id, creator_id, group_id, task_id, uuid, tags, labels, created_at, now(),
               $2, assigned_worker, timeout, priority, spec, $3,
               upstream_task_uuid, downstream_task_uuid, NULL, $4
        FROM moved
        RETURNING uuid",
        &[&id, &state.code(), &result, &note],
    )?;
    Ok(row.map(|r| r.get("uuid")))
}

/// Stores what a request asks beyond the mitosis API (retry policy, dependencies) on
/// the tasks `uuids` just inserted from it (one, or an array's), in the insert's
/// transaction.
pub fn extend(tx: &mut impl GenericClient, uuids: &[Uuid], req: &SubmitTaskReq) -> Result<(), ApiError> {
    if let Some(p) = &req.retries {
        let policy = serde_json::to_value(p).map_err(|e| ApiError::Internal(format!("serialize retry policy: {e}")))?;
        tx.execute("UPDATE active_tasks SET retry_policy = $2 WHERE uuid = ANY($1)", &[&uuids, &policy])?;
    }
    dependencies::record(tx, uuids, req)
}

/// Whether a request asks for anything beyond the mitosis API.
pub fn is_extended(req: &SubmitTaskReq) -> bool {
    req.retries.is_some() || !req.after.is_empty() || !req.after_any.is_empty()
}

/// Locks an active task for a change: (id, group id, state), or `None` if there is no
/// such active task.
pub(crate) fn lock_active(
    tx: &mut postgres::Transaction,
    uuid: Uuid,
) -> Result<Option<(i64, i64, TaskState)>, ApiError> {
    let row = tx.query_opt("SELECT id, group_id, state FROM active_tasks WHERE uuid = $1 FOR UPDATE", &[&uuid])?;
    Ok(row
        .map(|r| (r.get("id"), r.get("group_id"), TaskState::from_code(r.get("state")).unwrap_or(TaskState::Unknown))))
}

/// The changes a user may make to a Ready task; `None` keeps the current value.
pub(crate) struct Change {
    pub tags: Option<Vec<String>>,
    pub timeout_secs: Option<i64>,
    pub priority: Option<i32>,
    pub spec: Option<serde_json::Value>,
}

/// Applies `change` to the active task `id` (locked by [`lock_active`]).
pub(crate) fn change(tx: &mut impl GenericClient, id: i64, change: &Change) -> Result<(), ApiError> {
    tx.execute(
        "UPDATE active_tasks SET tags = COALESCE($2, tags), timeout = COALESCE($3, timeout),
            priority = COALESCE($4, priority), spec = COALESCE($5, spec), updated_at = now()
         WHERE id = $1",
        &[&id, &change.tags, &change.timeout_secs, &change.priority, &change.spec],
    )?;
    Ok(())
}

/// Marks a Running task for cancellation; its worker stops it.
pub(crate) fn request_cancel(tx: &mut impl GenericClient, id: i64) -> Result<(), ApiError> {
    tx.execute("UPDATE active_tasks SET cancel_requested = true WHERE id = $1", &[&id])?;
    Ok(())
}

/// Replaces the labels of a task, active or archived.
pub(crate) fn set_labels(db: &mut impl GenericClient, found: &Found, labels: &[String]) -> Result<(), ApiError> {
    let sql = if found.active {
        "UPDATE active_tasks SET labels = $2, updated_at = now() WHERE id = $1"
    } else {
        "UPDATE archived_tasks SET labels = $2 WHERE id = $1"
    };
    db.execute(sql, &[&found.id, &labels])?;
    Ok(())
}

/// Locks the active tasks among `uuids` that are in one of `states` and in a group where
/// `user_id` has the role `min` at least; returns their ids.
pub(crate) fn lock_listed(
    tx: &mut impl GenericClient,
    uuids: &[Uuid],
    user_id: i64,
    min: crate::api::UserGroupRole,
    states: &[i32],
) -> Result<Vec<i64>, ApiError> {
    let rows = tx.query(
        "SELECT t.id FROM active_tasks t
         JOIN user_group ug ON ug.group_id = t.group_id AND ug.user_id = $2 AND ug.role >= $3
         WHERE t.uuid = ANY($1) AND t.state = ANY($4) FOR UPDATE OF t",
        &[&uuids, &user_id, &min.code(), &states],
    )?;
    Ok(rows.iter().map(|r| r.get("id")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{RemoteResource, RemoteResourceDownload};

    fn spec_with(path: &str) -> TaskSpec {
        TaskSpec {
            args: vec!["true".into()],
            envs: Default::default(),
            resources: vec![RemoteResourceDownload {
                remote_file: RemoteResource::Attachment { key: "k".into() },
                local_path: path.into(),
            }],
            terminal_output: false,
            watch: None,
        }
    }

    #[test]
    fn resource_paths_stay_inside() {
        assert!(validate_spec(&spec_with("a/b.txt")).is_ok());
        assert!(validate_spec(&spec_with("/etc/passwd")).is_err());
        assert!(validate_spec(&spec_with("a/../../x")).is_err());
        assert!(validate_spec(&spec_with("..")).is_err());
        assert!(validate_spec(&spec_with("")).is_err());
    }
}
