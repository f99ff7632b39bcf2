//! Tasks in the database: reading rows as wire types, inserting, archiving.
//!
//! A task lives in `active_tasks` from submission until its worker commits it or a user
//! cancels it; then it moves to `archived_tasks` in one statement. Queries read both.
//!
//! ```ignore
//! let found = tasks::find(&mut db, uuid)?;          // active first, then archived
//! let ids = tasks::insert(&mut tx, user_id, group_id, &reqs, TaskState::Ready, None)?;
//! ```

use super::error::ApiError;
use crate::api::{
    ArtifactContentType, ArtifactQueryResp, SubmitTaskReq, TaskQueryInfo, TaskResultSpec, TaskSpec, TaskState,
    Timestamp,
};
use postgres::GenericClient;
use uuid::Uuid;

/// The columns every task read selects, in the order [`info`] expects; `{t}` is the
/// table alias and `{rep}` the reporter column (NULL for active tasks).
pub const INFO_COLUMNS: &str = "t.uuid, u.username, g.group_name, t.task_id, t.tags, t.labels, t.created_at, \
     t.updated_at, t.state, t.timeout, t.priority, t.spec, t.result, t.upstream_task_uuid, t.downstream_task_uuid";

/// `SELECT ... FROM active_tasks t` joined with its creator and group, reporter NULL.
pub fn active_select() -> String {
    format!(
        "SELECT {INFO_COLUMNS}, NULL::uuid AS reporter_uuid, t.id, t.group_id, true AS active \
         FROM active_tasks t JOIN users u ON u.id = t.creator_id JOIN groups g ON g.id = t.group_id"
    )
}

/// The same for archived tasks.
pub fn archived_select() -> String {
    format!(
        "SELECT {INFO_COLUMNS}, t.reporter_uuid, t.id, t.group_id, false AS active \
         FROM archived_tasks t JOIN users u ON u.id = t.creator_id JOIN groups g ON g.id = t.group_id"
    )
}

/// A task row and where it lives.
pub struct Found {
    pub info: TaskQueryInfo,
    pub id: i64,
    pub group_id: i64,
    pub active: bool,
}

/// Converts a row selected with [`active_select`] / [`archived_select`].
pub fn from_row(r: &postgres::Row) -> Result<Found, ApiError> {
    let spec: serde_json::Value = r.get(11);
    let spec: TaskSpec = serde_json::from_value(spec)
        .map_err(|e| ApiError::Internal(format!("stored task spec does not parse: {e}")))?;
    let result: Option<serde_json::Value> = r.get(12);
    let result: Option<TaskResultSpec> = result
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| ApiError::Internal(format!("stored task result does not parse: {e}")))?;
    let info = TaskQueryInfo {
        uuid: r.get(0),
        creator_username: r.get(1),
        group_name: r.get(2),
        task_id: r.get(3),
        tags: r.get(4),
        labels: r.get(5),
        created_at: Timestamp(r.get(6)),
        updated_at: Timestamp(r.get(7)),
        state: TaskState::from_code(r.get(8)).unwrap_or(TaskState::Unknown),
        timeout: r.get(9),
        priority: r.get(10),
        spec,
        result,
        upstream_task_uuid: r.get(13),
        downstream_task_uuid: r.get(14),
        reporter_uuid: r.get(15),
    };
    Ok(Found { info, id: r.get(16), group_id: r.get(17), active: r.get(18) })
}

/// Finds a task by uuid, active first.
pub fn find(db: &mut impl GenericClient, uuid: Uuid) -> Result<Option<Found>, ApiError> {
    for sql in [active_select(), archived_select()] {
        if let Some(r) = db.query_opt(&format!("{sql} WHERE t.uuid = $1"), &[&uuid])? {
            return Ok(Some(from_row(&r)?));
        }
    }
    Ok(None)
}

/// The artifacts a task has.
pub fn artifacts(db: &mut impl GenericClient, uuid: Uuid) -> Result<Vec<ArtifactQueryResp>, ApiError> {
    let rows = db.query(
        "SELECT content_type, size, created_at, updated_at FROM artifacts WHERE task_id = $1 ORDER BY content_type",
        &[&uuid],
    )?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some(ArtifactQueryResp {
                content_type: ArtifactContentType::from_code(r.get(0))?,
                size: r.get(1),
                created_at: Timestamp(r.get(2)),
                updated_at: Timestamp(r.get(3)),
            })
        })
        .collect())
}

/// Checks what a spec may contain: resource paths stay inside the resource directory.
pub fn validate_spec(spec: &TaskSpec) -> Result<(), String> {
    for r in &spec.resources {
        let p = std::path::Path::new(&r.local_path);
        if r.local_path.is_empty() || p.is_absolute() {
            return Err(format!("resource local_path {:?} must be a relative path", r.local_path));
        }
        if p.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            return Err(format!("resource local_path {:?} must not contain `..`", r.local_path));
        }
        if r.local_path.contains('\0') {
            return Err("resource local_path must not contain a NUL character".into());
        }
    }
    Ok(())
}

/// Checks a whole submission before anything is written.
pub fn validate_submit(req: &SubmitTaskReq) -> Result<(), String> {
    validate_spec(&req.task_spec)?;
    if req.timeout.as_secs() == 0 {
        return Err("timeout must be at least 1s".into());
    }
    if req.timeout.as_secs() > i64::MAX as u64 / 2 {
        return Err("timeout is too long".into());
    }
    Ok(())
}

/// Inserts tasks of one group in one statement; returns (task_id, uuid) per request, in
/// order. The group's task counter advances by the number of tasks.
pub fn insert(
    tx: &mut impl GenericClient,
    creator_id: i64,
    group_id: i64,
    reqs: &[&SubmitTaskReq],
    state: TaskState,
    upstream: Option<Uuid>,
) -> Result<Vec<(i64, Uuid)>, ApiError> {
    if reqs.is_empty() {
        return Ok(Vec::new());
    }
    let n = reqs.len() as i64;
    let last: i64 = tx
        .query_one("UPDATE groups SET task_count = task_count + $2 WHERE id = $1 RETURNING task_count", &[&group_id, &n])?
        .get(0);
    let first = last - n + 1;
    let task_ids: Vec<i64> = (first..=last).collect();
    let uuids: Vec<Uuid> = reqs.iter().map(|_| Uuid::new_v4()).collect();
    let tags: Vec<serde_json::Value> = reqs.iter().map(|r| serde_json::json!(r.tags)).collect();
    let labels: Vec<serde_json::Value> = reqs.iter().map(|r| serde_json::json!(r.labels)).collect();
    let timeouts: Vec<i64> = reqs.iter().map(|r| r.timeout.as_secs() as i64).collect();
    let priorities: Vec<i32> = reqs.iter().map(|r| r.priority).collect();
    let specs: Vec<serde_json::Value> = reqs
        .iter()
        .map(|r| serde_json::to_value(&r.task_spec))
        .collect::<Result<_, _>>()
        .map_err(|e| ApiError::Internal(format!("serialize spec: {e}")))?;
    tx.execute(
        "INSERT INTO active_tasks (creator_id, group_id, task_id, uuid, tags, labels, state, timeout, priority, spec, upstream_task_uuid)
         SELECT $1, $2, x.task_id, x.uuid,
                ARRAY(SELECT jsonb_array_elements_text(x.tags)),
                ARRAY(SELECT jsonb_array_elements_text(x.labels)),
                $3, x.timeout, x.priority, x.spec, $4
         FROM unnest($5::bigint[], $6::uuid[], $7::jsonb[], $8::jsonb[], $9::bigint[], $10::int[], $11::jsonb[])
              AS x(task_id, uuid, tags, labels, timeout, priority, spec)",
        &[&creator_id, &group_id, &state.code(), &upstream, &task_ids, &uuids, &tags, &labels, &timeouts, &priorities, &specs],
    )?;
    Ok(task_ids.into_iter().zip(uuids).collect())
}

/// The result a user cancellation records.
pub fn user_cancellation() -> serde_json::Value {
    serde_json::json!({"exit_status": 0, "msg": "UserCancellation"})
}

/// Moves the given active tasks, if in one of `states`, to the archive as Cancelled by the
/// user; returns the uuids moved.
pub fn archive_cancelled(tx: &mut impl GenericClient, ids: &[i64], states: &[i32]) -> Result<Vec<Uuid>, ApiError> {
    let rows = tx.query(
        "WITH moved AS (
            DELETE FROM active_tasks WHERE id = ANY($1) AND state = ANY($2) RETURNING *
        )
        INSERT INTO archived_tasks (id, creator_id, group_id, task_id, uuid, tags, labels, created_at, updated_at,
                                    state, assigned_worker, timeout, priority, spec, result,
                                    upstream_task_uuid, downstream_task_uuid, reporter_uuid)
        SELECT id, creator_id, group_id, task_id, uuid, tags, labels, created_at, now(),
               $3, assigned_worker, timeout, priority, spec, $4,
               upstream_task_uuid, downstream_task_uuid, NULL
        FROM moved
        RETURNING uuid",
        &[&ids, &states, &TaskState::Cancelled.code(), &user_cancellation()],
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
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
