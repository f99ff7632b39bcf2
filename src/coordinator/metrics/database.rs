//! The figures scrapes read from the database (tasks by group and state, workers by
//! state), kept fresh by the `metrics-db` thread so a scrape answers from memory.

use super::text::{family, gauge, sample};
use super::{lock, DbPart, DB_CACHE, DB_STALE, KEEP_FRESH, METRICS};
use crate::api::{TaskState, WorkerState};
use crate::coordinator::error::ApiError;
use crate::coordinator::Ctx;
use std::time::{Duration, Instant};

/// The figures read from the database: the `metrics-db` thread's copy when it is younger
/// than [`DB_STALE`], else read now.
pub(super) fn database_part(ctx: &Ctx) -> String {
    *lock(&METRICS.last_scrape) = Some(Instant::now());
    let fresh = lock(&METRICS.db_part).as_ref().filter(|p| p.at.elapsed() < DB_STALE).map(rendered);
    if let Some(text) = fresh {
        return text;
    }
    match refresh(ctx) {
        Ok(text) => text,
        Err(e) => {
            log::warn!("metrics: cannot read task and worker counts: {e:?}");
            let mut w = String::new();
            gauge(&mut w, "mito_database_up", "Whether the last read of database figures worked.", 0.0);
            w
        }
    }
}

/// The figures with their age and cost.
fn rendered(p: &DbPart) -> String {
    let mut w = p.text.clone();
    gauge(
        &mut w,
        "mito_metrics_db_age_seconds",
        "Age of the database figures in this scrape.",
        p.at.elapsed().as_secs_f64(),
    );
    gauge(
        &mut w,
        "mito_metrics_db_read_seconds",
        "Time the last read of the database figures took.",
        p.took.as_secs_f64(),
    );
    w
}

/// Reads the database figures and keeps them for later scrapes.
fn refresh(ctx: &Ctx) -> Result<String, ApiError> {
    let t0 = Instant::now();
    let text = read_database(ctx)?;
    let part = DbPart { text, at: Instant::now(), took: t0.elapsed() };
    let out = rendered(&part);
    *lock(&METRICS.db_part) = Some(part);
    Ok(out)
}

/// Starts the `metrics-db` thread: while scrapes come (one within the last five minutes),
/// it re-reads the database figures every [`DB_CACHE`], so scrapes answer from memory
/// whatever the size of the queue; without scrapers it reads nothing.
pub(crate) fn spawn_refresher(ctx: std::sync::Arc<Ctx>) -> Option<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("metrics-db".into())
        .spawn(move || {
            crate::coordinator::supervised(&ctx, "metrics-db", || {
                while !ctx.shutdown.is_set() {
                    std::thread::sleep(Duration::from_millis(250));
                    let scraped = lock(&METRICS.last_scrape).is_some_and(|t| t.elapsed() < KEEP_FRESH);
                    let due = !lock(&METRICS.db_part).as_ref().is_some_and(|p| p.at.elapsed() < DB_CACHE);
                    if scraped && due {
                        if let Err(e) = refresh(&ctx) {
                            log::debug!("metrics: reading task and worker counts failed (will retry): {e:?}");
                            // A failed read is retried at the next period, not in a tight loop.
                            std::thread::sleep(DB_CACHE);
                        }
                    }
                }
            })
        })
        .map_err(|e| log::error!("cannot start the metrics-db thread: {e}"))
        .ok()
}

/// Aggregates only: one row per group and state, per worker state, per group. The task
/// count is a pass over the queue table (`active_tasks`, Pending to awaiting-commit); the
/// archive, which grows without bound, is not read (its per-group total is the groups'
/// task counter less the queue).
fn read_database(ctx: &Ctx) -> Result<String, ApiError> {
    let mut db = ctx.pool.get()?;
    let tasks = db.query(
        "SELECT g.group_name, c.state, c.n FROM
            (SELECT group_id, state, count(*) AS n FROM active_tasks GROUP BY group_id, state) c
         JOIN groups g ON g.id = c.group_id ORDER BY 1, 2",
        &[],
    )?;
    let workers = db.query(
        "SELECT state, count(*) AS n, count(assigned_task_id) AS busy FROM workers GROUP BY state ORDER BY state",
        &[],
    )?;
    let groups = db.query("SELECT group_name, task_count FROM groups WHERE task_count > 0 ORDER BY 1", &[])?;
    let mut w = String::with_capacity(256 + 64 * (tasks.len() + groups.len()));
    gauge(&mut w, "mito_database_up", "Whether the last read of database figures worked.", 1.0);
    family(
        &mut w,
        "mito_tasks",
        "gauge",
        "Tasks not yet archived, by group and state (Finished and Cancelled: awaiting their commit).",
    );
    for r in &tasks {
        let state = TaskState::from_code(r.get("state")).map(|s| s.as_str()).unwrap_or("Unknown");
        let group: &str = r.get("group_name");
        sample(&mut w, "mito_tasks", &[("group", group), ("state", state)], r.get::<_, i64>("n") as f64);
    }
    family(&mut w, "mito_workers", "gauge", "Registered workers by state.");
    family(&mut w, "mito_workers_busy", "gauge", "Registered workers holding a task, by state.");
    let mut busy = String::new();
    for r in &workers {
        let state = WorkerState::from_code(r.get("state")).map(|s| s.as_str()).unwrap_or("Unknown");
        sample(&mut w, "mito_workers", &[("state", state)], r.get::<_, i64>("n") as f64);
        sample(&mut busy, "mito_workers_busy", &[("state", state)], r.get::<_, i64>("busy") as f64);
    }
    w.push_str(&busy);
    family(
        &mut w,
        "mito_group_tasks_created_total",
        "counter",
        "Tasks ever created in each group (every coordinator).",
    );
    for r in &groups {
        let group: &str = r.get("group_name");
        sample(&mut w, "mito_group_tasks_created_total", &[("group", group)], r.get::<_, i64>("task_count") as f64);
    }
    Ok(w)
}
