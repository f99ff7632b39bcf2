//! Per-group history for `GET /groups/{g}/stats`: tasks archived per minute (from the
//! archive's `(group_id, updated_at)` index) and the Ready queue depth, which has no
//! history of its own, so the reaper samples it once a minute into `queue_samples`.
//!
//! ```ignore
//! stats::sample_queues(&mut conn)?;                // the reaper, once a minute
//! let points = stats::points(&mut db, group_id, 60)?; // 60 minutes, oldest first
//! ```

use crate::api::{StatsPoint, TaskState};
use postgres::GenericClient;

/// The longest window a caller may ask for, in minutes (a day).
pub(crate) const MAX_MINUTES: u32 = 1440;
/// The window when the caller names none.
pub(crate) const DEFAULT_MINUTES: u32 = 60;

/// Records this minute's Ready count of every group that has Ready tasks, and that the
/// minute was sampled. Safe when several coordinators sample: rows are upserted, and the
/// minute's earlier rows are replaced, so a group whose queue emptied reads 0. Prunes
/// samples older than the longest window (plus an hour).
pub(crate) fn sample_queues(db: &mut impl GenericClient) -> Result<(), postgres::Error> {
    // One simple-query batch runs as one transaction; it takes no parameters, so the
    // Ready code is written into the text.
    db.batch_execute(&format!(
        "INSERT INTO queue_sample_minutes (minute) VALUES (date_trunc('minute', now())) ON CONFLICT DO NOTHING;
         DELETE FROM queue_samples WHERE minute = date_trunc('minute', now());
         INSERT INTO queue_samples (group_id, minute, ready)
             SELECT group_id, date_trunc('minute', now()), count(*) FROM active_tasks
             WHERE assigned_worker IS NULL AND state = {ready} GROUP BY group_id
         ON CONFLICT (group_id, minute) DO UPDATE SET ready = EXCLUDED.ready;
         DELETE FROM queue_samples WHERE minute < now() - interval '25 hours';
         DELETE FROM queue_sample_minutes WHERE minute < now() - interval '25 hours';",
        ready = crate::api::TaskState::Ready.code()
    ))
}

/// The last `minutes` minutes of a group, oldest first, ending with the current one.
pub(crate) fn points(
    db: &mut impl GenericClient,
    group_id: i64,
    minutes: u32,
) -> Result<Vec<StatsPoint>, postgres::Error> {
    let minutes = minutes.clamp(1, MAX_MINUTES) as i32;
    let rows = db.query(
        "WITH m AS (
            SELECT generate_series(date_trunc('minute', now()) - make_interval(mins => $2 - 1),
                                   date_trunc('minute', now()), interval '1 minute') AS minute
         ), f AS (
            SELECT date_trunc('minute', updated_at) AS minute, count(*) AS n FROM archived_tasks
            WHERE group_id = $1 AND updated_at >= date_trunc('minute', now()) - make_interval(mins => $2 - 1)
            GROUP BY 1
         )
         SELECT to_char(m.minute AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS minute,
                coalesce(f.n, 0) AS finished,
                CASE WHEN s.minute IS NOT NULL THEN coalesce(q.ready, 0) END AS ready
         FROM m
         LEFT JOIN f ON f.minute = m.minute
         LEFT JOIN queue_sample_minutes s ON s.minute = m.minute
         LEFT JOIN queue_samples q ON q.group_id = $1 AND q.minute = m.minute
         ORDER BY m.minute",
        &[&group_id, &minutes],
    )?;
    Ok(rows
        .iter()
        .map(|r| StatsPoint { minute: r.get("minute"), finished: r.get("finished"), ready: r.get("ready") })
        .collect())
}

/// Tasks of a group per state (`$1`: its row id): the queue's, from the index of the
/// group's active tasks alone (`active_tasks_group` includes the state, so no table row is
/// read), plus what was archived in the last `$2` minutes (a range of the archive's
/// `(group_id, updated_at)` index), so the cost grows with neither the other groups'
/// queues nor the archive.
pub const STATE_COUNTS: &str = "SELECT state, count(*) AS n FROM active_tasks WHERE group_id = $1 GROUP BY state
     UNION ALL
     SELECT state, count(*) AS n FROM archived_tasks
     WHERE group_id = $1 AND updated_at >= date_trunc('minute', now()) - make_interval(mins => $2 - 1)
     GROUP BY state";

/// [`STATE_COUNTS`] of a group over the last `minutes`.
pub(crate) fn state_counts(
    db: &mut impl GenericClient,
    group_id: i64,
    minutes: u32,
) -> Result<std::collections::BTreeMap<TaskState, i64>, postgres::Error> {
    let minutes = minutes.clamp(1, MAX_MINUTES) as i32;
    let rows = db.query(STATE_COUNTS, &[&group_id, &minutes])?;
    let mut counts = std::collections::BTreeMap::new();
    for r in &rows {
        if let Some(state) = TaskState::from_code(r.get("state")) {
            *counts.entry(state).or_insert(0) += r.get::<_, i64>("n");
        }
    }
    Ok(counts)
}
