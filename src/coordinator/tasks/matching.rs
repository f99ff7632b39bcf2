//! The tasks a filter selects: the conditions a [`TaskFilter`] stands for, the union of
//! active and archived tasks they select, and the reads and locks on that selection.
//!
//! ```ignore
//! let mut q = matching::conditions(group_id, &f, exit, prio); // after authorizing the group
//! let page = matching::page(&mut db, &mut q, req.reporter_uuid, limit, offset)?;
//! ```
//!
//! `count`, `page` and `union_sql` bind further parameters to `q`, so each `Sql` serves
//! one statement.

use super::{active_select, archived_select, from_row};
use crate::api::{TaskQueryInfo, TaskState};
use crate::coordinator::error::ApiError;
use crate::coordinator::filter::{Comparison, Sql};
use crate::coordinator::limits;
use postgres::fallible_iterator::FallibleIterator;
use postgres::GenericClient;
use std::collections::BTreeSet;
use uuid::Uuid;

/// The task filters shared by query, cancel and artifact routes.
pub struct TaskFilter<'a> {
    pub group_name: Option<&'a str>,
    pub creator_usernames: &'a Option<BTreeSet<String>>,
    pub tags: &'a Option<BTreeSet<String>>,
    pub labels: &'a Option<BTreeSet<String>>,
    pub states: &'a Option<BTreeSet<TaskState>>,
    pub exit_status: &'a Option<String>,
    pub priority: &'a Option<String>,
}

/// A [`TaskFilter`] over any request that has the task filter fields; `states` may be
/// given separately (cancel narrows them).
#[macro_export]
macro_rules! task_filter {
    ($req:expr) => {
        $crate::task_filter!($req, &$req.states)
    };
    ($req:expr, $states:expr) => {
        $crate::coordinator::tasks::matching::TaskFilter {
            group_name: $req.group_name.as_deref(),
            creator_usernames: &$req.creator_usernames,
            tags: &$req.tags,
            labels: &$req.labels,
            states: $states,
            exit_status: &$req.exit_status,
            priority: &$req.priority,
        }
    };
}

/// The conditions every part of a filtered query shares, for tasks in the group
/// `group_id`; `exit` and `prio` are the filter's comparisons, already parsed.
pub fn conditions(group_id: i64, f: &TaskFilter, exit: Option<Comparison>, prio: Option<Comparison>) -> Sql {
    let mut q = Sql::new();
    q.and("t.group_id = {}", group_id);
    if let Some(c) = f.creator_usernames {
        q.and("u.username = ANY({})", c.iter().cloned().collect::<Vec<_>>());
    }
    if let Some(t) = f.tags {
        q.and("t.tags @> {}", t.iter().cloned().collect::<Vec<_>>());
    }
    if let Some(l) = f.labels {
        q.and("t.labels @> {}", l.iter().cloned().collect::<Vec<_>>());
    }
    if let Some(s) = f.states {
        q.and("t.state = ANY({})", s.iter().map(|s| s.code()).collect::<Vec<_>>());
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

/// The union of active and archived tasks matching `q`; archived rows only when a
/// reporter is given.
pub fn union_sql(q: &mut Sql, reporter: Option<Uuid>) -> String {
    let common = q.conditions();
    let (active_extra, archived_extra) = match reporter {
        Some(r) => {
            let p = q.bind(r);
            (" AND FALSE".to_string(), format!(" AND t.reporter_uuid = {p}"))
        }
        None => (String::new(), String::new()),
    };
    format!(
        "{} WHERE {common}{active_extra} UNION ALL {} WHERE {common}{archived_extra}",
        active_select(),
        archived_select()
    )
}

/// How many tasks, active and archived, match `q`.
pub fn count(db: &mut impl GenericClient, q: &mut Sql, reporter: Option<Uuid>) -> Result<u64, ApiError> {
    let union = union_sql(q, reporter);
    let n: i64 = db.query_one(&format!("SELECT count(*) FROM ({union}) x"), &q.params())?.get(0);
    Ok(n as u64)
}

/// One page of the tasks matching `q`, active first; the answer's size is bounded (see
/// [`limits`]).
pub fn page(
    db: &mut impl GenericClient,
    q: &mut Sql,
    reporter: Option<Uuid>,
    limit: i64,
    offset: i64,
) -> Result<Vec<TaskQueryInfo>, ApiError> {
    let union = union_sql(q, reporter);
    let (limit, offset) = (q.bind(limit), q.bind(offset));
    let sql = format!("SELECT * FROM ({union}) x ORDER BY x.active DESC, x.id LIMIT {limit} OFFSET {offset}");
    // Rows are read as they arrive and the answer's size is counted as it grows, so a
    // page of tasks with large specs is refused before it fills the memory.
    let params = q.params();
    let mut rows = db.query_raw(&sql, params.iter().copied())?;
    let (mut tasks, mut size) = (Vec::new(), 0);
    while let Some(r) = rows.next()? {
        let info = from_row(&r)?.info;
        limits::grow_response(&mut size, limits::task_bytes(&info))?;
        tasks.push(info);
    }
    Ok(tasks)
}

/// Locks the active tasks matching `q`; returns their ids.
pub fn lock_active(tx: &mut impl GenericClient, q: &Sql) -> Result<Vec<i64>, ApiError> {
    let sql = format!(
        "SELECT t.id FROM active_tasks t JOIN users u ON u.id = t.creator_id WHERE {} FOR UPDATE OF t",
        q.conditions()
    );
    Ok(tx.query(&sql, &q.params())?.iter().map(|r| r.get(0)).collect())
}
