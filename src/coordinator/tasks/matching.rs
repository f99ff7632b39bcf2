//! The tasks a filter selects: the one place a [`TaskFilter`] is checked and turned into
//! conditions, the union of active and archived tasks they select, and the reads and
//! locks on that selection.
//!
//! ```ignore
//! let (group_name, mut q) = matching::authorized(&mut db, user, &req.filter, UserGroupRole::Read)?;
//! let page = matching::page(&mut db, &mut q, req.reporter_uuid, limit, offset)?;
//! ```
//!
//! `count`, `page` and `union_sql` bind further parameters to `q`, so each `Sql` serves
//! one statement.

use super::{active_select, archived_select, from_row};
use crate::api::{ResultCount, TaskFilter, TaskQueryInfo, TaskResultSpec, TaskState, TasksSummaryResp, UserGroupRole};
use crate::coordinator::auth::AuthUser;
use crate::coordinator::authz::authorize_group;
use crate::coordinator::error::ApiError;
use crate::coordinator::filter::{comparison, not_empty, Comparison, OwnedParams, Sql};
use crate::coordinator::limits;
use postgres::fallible_iterator::FallibleIterator;
use postgres::GenericClient;
use std::collections::BTreeMap;
use uuid::Uuid;

/// Checks the filter's fields, then the caller's role `min` in the filter's group
/// (default: their own), and builds the conditions every part of the query shares.
/// Returns (group name, conditions).
pub(crate) fn authorized(
    db: &mut impl GenericClient,
    user: &AuthUser,
    f: &TaskFilter,
    min: UserGroupRole,
) -> Result<(String, Sql), ApiError> {
    not_empty("creator_usernames", &f.creator_usernames)?;
    not_empty("tags", &f.tags)?;
    not_empty("labels", &f.labels)?;
    not_empty("states", &f.states)?;
    let exit = comparison("exit_status", &f.exit_status)?;
    let prio = comparison("priority", &f.priority)?;
    let group = f.group_name.as_deref().unwrap_or(&user.username).to_string();
    let (group_id, _) = authorize_group(db, user, &group, min)?;
    Ok((group, conditions(group_id, f, exit, prio)))
}

/// The conditions every part of a filtered query shares, for tasks in the group
/// `group_id`; `exit` and `prio` are the filter's comparisons, already parsed.
fn conditions(group_id: i64, f: &TaskFilter, exit: Option<Comparison>, prio: Option<Comparison>) -> Sql {
    let mut q = Sql::new();
    q.and("t.group_id = {}", group_id);
    if let Some(c) = &f.creator_usernames {
        q.and("u.username = ANY({})", c.iter().cloned().collect::<Vec<_>>());
    }
    if let Some(t) = &f.tags {
        q.and("t.tags @> {}", t.iter().cloned().collect::<Vec<_>>());
    }
    if let Some(l) = &f.labels {
        q.and("t.labels @> {}", l.iter().cloned().collect::<Vec<_>>());
    }
    match f.states.as_ref().map(|s| s.iter().map(|s| s.code()).collect::<Vec<_>>()) {
        // One state as an equality: an index on (group, state, id) then yields the rows in
        // id order (PostgreSQL 15 cannot keep that order through `= ANY`), so a page
        // stops at its limit.
        Some(codes) if codes.len() == 1 => {
            q.and("t.state = {}", codes[0]);
        }
        Some(codes) => {
            q.and("t.state = ANY({})", codes);
        }
        None => {}
    }
    if let Some(c) = exit {
        // Compared as a number, so `<` and `>` mean what they say.
        q.and(&format!("(t.result->>'exit_status')::int {} {{}}", c.op), c.value);
    }
    if let Some(c) = prio {
        q.and(&format!("t.priority {} {{}}", c.op), c.value);
    }
    q
}

/// The two halves of a query's union: (active, archived) selects with their conditions;
/// archived rows only when a reporter is given.
fn halves(q: &mut Sql, reporter: Option<Uuid>) -> (String, String) {
    let common = q.conditions();
    let (active_extra, archived_extra) = match reporter {
        Some(r) => {
            let p = q.bind(r);
            (" AND FALSE".to_string(), format!(" AND t.reporter_uuid = {p}"))
        }
        None => (String::new(), String::new()),
    };
    (
        format!("{} WHERE {common}{active_extra}", active_select()),
        format!("{} WHERE {common}{archived_extra}", archived_select()),
    )
}

/// The union of active and archived tasks matching `q`; archived rows only when a
/// reporter is given.
pub(crate) fn union_sql(q: &mut Sql, reporter: Option<Uuid>) -> String {
    let (active, archived) = halves(q, reporter);
    format!("{active} UNION ALL {archived}")
}

/// How many tasks, active and archived, match `q`.
pub(crate) fn count(db: &mut impl GenericClient, q: &mut Sql, reporter: Option<Uuid>) -> Result<u64, ApiError> {
    let union = union_sql(q, reporter);
    let n: i64 = db.query_one(&format!("SELECT count(*) FROM ({union}) x"), &q.params())?.get("count");
    Ok(n as u64)
}

/// The tasks matching `q` (in `group_name`), active and archived: how many, how many per
/// state, and how many ended with each result (most frequent first). One grouped
/// statement, so the answer holds a row per distinct (state, result), however many tasks
/// match.
pub(crate) fn summary(
    db: &mut impl GenericClient,
    q: &mut Sql,
    group_name: String,
) -> Result<TasksSummaryResp, ApiError> {
    let union = union_sql(q, None);
    let rows = db.query(
        &format!("SELECT x.state, x.result, count(*) AS n FROM ({union}) x GROUP BY x.state, x.result"),
        &q.params(),
    )?;
    let (mut count, mut states, mut results) = (0u64, BTreeMap::new(), Vec::<ResultCount>::new());
    for r in &rows {
        let n = r.get::<_, i64>("n") as u64;
        count += n;
        let state = TaskState::from_code(r.get("state")).unwrap_or(TaskState::Unknown);
        *states.entry(state).or_insert(0) += n;
        let Some(result) = r.get::<_, Option<serde_json::Value>>("result") else { continue };
        let result: TaskResultSpec = serde_json::from_value(result)
            .map_err(|e| ApiError::Internal(format!("stored task result does not parse: {e}")))?;
        match results.iter_mut().find(|c| c.exit_status == result.exit_status && c.msg == result.msg) {
            Some(c) => c.count += n,
            None => results.push(ResultCount { exit_status: result.exit_status, msg: result.msg, count: n }),
        }
    }
    results.sort_by(|a, b| b.count.cmp(&a.count).then(a.exit_status.cmp(&b.exit_status)));
    Ok(TasksSummaryResp { group_name, count, states, results })
}

/// The statement of a page: active tasks first, each half in id order. Each half takes
/// only its first `limit + offset` rows, in the order of its group's `(group_id, id)`
/// index, before the two are merged: a sort of the whole union would read every task of
/// the group that matches, active and archived, to answer ten.
fn page_sql(q: &mut Sql, reporter: Option<Uuid>, limit: i64, offset: i64) -> String {
    let (active, archived) = halves(q, reporter);
    let depth = q.bind(limit.saturating_add(offset));
    let (limit, offset) = (q.bind(limit), q.bind(offset));
    format!(
        "SELECT * FROM (({active} ORDER BY t.id LIMIT {depth}) UNION ALL ({archived} ORDER BY t.id LIMIT {depth})) x
         ORDER BY x.active DESC, x.id LIMIT {limit} OFFSET {offset}"
    )
}

/// Planner settings for [`page_sql`], local to its transaction. Each half must walk its
/// group's index in id order and stop at the page, however selective the planner thinks
/// the filter is: the walk costs the page divided by the share of the group's tasks that
/// match, at most one pass over the group, while a bitmap scan the planner picks when it
/// misjudges a filter (`exit_status`, whose share it cannot know) reads and sorts the
/// whole group every time (measured: 1.4 s for a group of 100,000 archived tasks). Those
/// prices put the statement's cost over `jit_above_cost`, and compiling it would take
/// longer than running it.
const PAGE_SETUP: &str = "SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off; SET LOCAL jit = off";

/// One page of the tasks matching `q`, active first; the answer's size is bounded (see
/// [`limits`]).
pub(crate) fn page(
    db: &mut impl GenericClient,
    q: &mut Sql,
    reporter: Option<Uuid>,
    limit: i64,
    offset: i64,
) -> Result<Vec<TaskQueryInfo>, ApiError> {
    let sql = page_sql(q, reporter, limit, offset);
    let mut tx = db.transaction()?;
    tx.batch_execute(PAGE_SETUP)?;
    // Rows are read as they arrive and the answer's size is counted as it grows, so a
    // page of tasks with large specs is refused before it fills the memory.
    let params = q.params();
    let mut rows = tx.query_raw(&sql, params.iter().copied())?;
    let (mut tasks, mut size) = (Vec::new(), 0);
    while let Some(r) = rows.next()? {
        let info = from_row(&r)?.info;
        limits::grow_response(&mut size, limits::task_bytes(&info))?;
        tasks.push(info);
    }
    drop(rows);
    tx.commit()?;
    Ok(tasks)
}

/// The statement [`page`] runs for filter `f` on the group with row id `group_id`, the
/// settings it runs under, and its parameters (comparisons that do not parse are left
/// out), for the integration tests' EXPLAIN.
pub fn page_statement(group_id: i64, f: &TaskFilter, limit: i64, offset: i64) -> (&'static str, String, OwnedParams) {
    let exit = comparison("exit_status", &f.exit_status).ok().flatten();
    let prio = comparison("priority", &f.priority).ok().flatten();
    let mut q = conditions(group_id, f, exit, prio);
    let sql = page_sql(&mut q, None, limit, offset);
    (PAGE_SETUP, sql, q.into_params())
}

/// Locks the active tasks matching `q`; returns their ids.
pub(crate) fn lock_active(tx: &mut impl GenericClient, q: &Sql) -> Result<Vec<i64>, ApiError> {
    let sql = format!(
        "SELECT t.id FROM active_tasks t JOIN users u ON u.id = t.creator_id WHERE {} FOR UPDATE OF t",
        q.conditions()
    );
    Ok(tx.query(&sql, &q.params())?.iter().map(|r| r.get("id")).collect())
}
