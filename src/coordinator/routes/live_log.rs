//! Live task output: a mito worker ships what its task writes to stdout and stderr as it
//! is written (`POST /workers/tasks/{uuid}/log`), and users read it while the task runs
//! (`GET /tasks/{uuid}/log`). Both are mito's own routes, outside the mitosis API: a
//! mitosis worker never ships, and a reader learns that no live output exists.
//!
//! Each stream is a byte sequence numbered from 0; the coordinator keeps its newest
//! [`limits::MAX_LOG_KEPT`] bytes in `task_logs` until the task is committed (the
//! std-log artifact then holds the whole output; the reaper drops the rows within a minute).

use crate::api::{TaskLogPiece, TaskLogResp, TaskState, UserGroupRole};
use crate::coordinator::auth::{AuthUser, AuthWorker};
use crate::coordinator::authz::authorize_task;
use crate::coordinator::error::ApiError;
use crate::coordinator::http::{Call, Reply};
use crate::coordinator::limits;
use crate::coordinator::tasks;
use crate::coordinator::Ctx;
use postgres::GenericClient;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Reads waiting for output at once. A waiting read holds a handler thread, so only a
/// quarter of them may wait; the rest are answered at once and poll.
static WAITING: AtomicUsize = AtomicUsize::new(0);

/// How often a waiting read looks again.
const POLL: Duration = Duration::from_millis(200);

const STREAMS: [&str; 2] = ["stdout", "stderr"];

fn stream_code(name: &str) -> Result<i16, ApiError> {
    STREAMS
        .iter()
        .position(|s| *s == name)
        .map(|i| i as i16)
        .ok_or_else(|| ApiError::bad(format!("stream {name:?} is not stdout or stderr")))
}

fn number(call: &Call, key: &str) -> Result<u64, ApiError> {
    match call.query_one(key)? {
        None => Ok(0),
        Some(v) => v.parse().map_err(|_| ApiError::bad(format!("{key}={v:?} is not a whole number of bytes"))),
    }
}

/// `POST /workers/tasks/{uuid}/log?stream=stdout|stderr&offset=N`: the body is the
/// stream's bytes from `offset` on, at most [`limits::MAX_LOG_CHUNK`]; only for the
/// worker's own Running task. An empty body at offset 0 starts the stream afresh (a
/// task run again after its worker was lost starts its output over).
pub(crate) fn ship(ctx: &Ctx, call: &Call, worker: &AuthWorker, uuid: Uuid) -> Result<Reply, ApiError> {
    let stream = stream_code(call.query_one("stream")?.as_deref().unwrap_or(""))?;
    let offset = i64::try_from(number(call, "offset")?).map_err(|_| ApiError::bad("offset is too large"))?;
    if call.body.len() > limits::MAX_LOG_CHUNK {
        return Err(ApiError::bad(format!(
            "a log chunk holds at most {} bytes, not {}; send it in pieces",
            limits::MAX_LOG_CHUNK,
            call.body.len()
        )));
    }
    let mut db = ctx.pool.get()?;
    let mut tx = db.transaction()?;
    let mine = tx.query_opt(
        "SELECT 1 FROM active_tasks WHERE uuid = $1 AND assigned_worker = $2 AND state = $3",
        &[&uuid, &worker.id, &TaskState::Running.code()],
    )?;
    if mine.is_none() {
        return Err(ApiError::NotFound(format!("Running task {uuid} of this worker")));
    }
    let row = tx.query_opt(
        "SELECT start_offset, data FROM task_logs WHERE task_uuid = $1 AND stream = $2 FOR UPDATE",
        &[&uuid, &stream],
    )?;
    let (start, mut data): (i64, Vec<u8>) = match row {
        Some(r) if !(offset == 0 && call.body.is_empty()) => (r.get("start_offset"), r.get("data")),
        _ => (offset, Vec::new()),
    };
    let end = start + data.len() as i64;
    let (mut start, chunk) = if offset > end {
        // Bytes in between never came: keep going from here, the gap shows as a jump.
        data.clear();
        (offset, &call.body[..])
    } else {
        // A chunk sent again (its answer was lost) adds only what is new.
        let skip = usize::try_from(end - offset).unwrap_or(usize::MAX).min(call.body.len());
        (start, &call.body[skip..])
    };
    data.extend_from_slice(chunk);
    if data.len() > limits::MAX_LOG_KEPT {
        let drop = data.len() - limits::MAX_LOG_KEPT;
        data.drain(..drop);
        start += drop as i64;
    }
    tx.execute(
        "INSERT INTO task_logs (task_uuid, stream, start_offset, data) VALUES ($1, $2, $3, $4)
         ON CONFLICT (task_uuid, stream) DO UPDATE SET start_offset = $3, data = $4, updated_at = now()",
        &[&uuid, &stream, &start, &data],
    )?;
    tx.commit()?;
    Ok(Reply::json(&serde_json::json!({"next_offset": start + data.len() as i64})))
}

/// `GET /tasks/{uuid}/log?stdout=N&stderr=M&wait=S`: the output after those offsets, and
/// whether the task has ended; waits up to `S` seconds (at most
/// [`limits::MAX_LOG_WAIT_SECS`]) for something new. Needs Read in the task's group.
pub(crate) fn read(ctx: &Ctx, call: &Call, user: &AuthUser, uuid: Uuid) -> Result<Reply, ApiError> {
    let from = [number(call, "stdout")?, number(call, "stderr")?];
    let wait = number(call, "wait")?;
    if wait > limits::MAX_LOG_WAIT_SECS {
        return Err(ApiError::bad(format!("wait={wait} is over the maximum of {}s", limits::MAX_LOG_WAIT_SECS)));
    }
    let mut db = ctx.pool.get()?;
    let found = tasks::find(&mut *db, uuid)?.ok_or_else(|| ApiError::NotFound(format!("Task with uuid {uuid}")))?;
    authorize_task(&mut *db, user, found.group_id, uuid, UserGroupRole::Read)?;
    drop(db);
    let may_wait = wait > 0 && WAITING.fetch_add(1, Ordering::SeqCst) < (ctx.cfg.http_threads / 4).max(1);
    let answer = look(ctx, uuid, from, if may_wait { Duration::from_secs(wait) } else { Duration::ZERO });
    if wait > 0 {
        WAITING.fetch_sub(1, Ordering::SeqCst);
    }
    Ok(Reply::json(&answer?))
}

fn look(ctx: &Ctx, uuid: Uuid, from: [u64; 2], wait: Duration) -> Result<TaskLogResp, ApiError> {
    let until = Instant::now() + wait;
    loop {
        let mut db = ctx.pool.get()?;
        let answer = snapshot(&mut *db, uuid, from)?;
        drop(db);
        let news = answer.stdout.next_offset > from[0] || answer.stderr.next_offset > from[1];
        if news || answer.ended || Instant::now() + POLL > until || ctx.shutdown.is_set() {
            return Ok(answer);
        }
        std::thread::sleep(POLL);
    }
}

fn snapshot(db: &mut impl GenericClient, uuid: Uuid, from: [u64; 2]) -> Result<TaskLogResp, ApiError> {
    let state: Option<i32> =
        db.query_opt("SELECT state FROM active_tasks WHERE uuid = $1", &[&uuid])?.map(|r| r.get("state"));
    let state = match state {
        Some(code) => TaskState::from_code(code).unwrap_or(TaskState::Unknown),
        None => tasks::find(db, uuid)?.map_or(TaskState::Unknown, |f| f.info.state),
    };
    let ended = !matches!(state, TaskState::Pending | TaskState::Ready | TaskState::Running);
    let rows = db.query("SELECT stream, start_offset, data FROM task_logs WHERE task_uuid = $1", &[&uuid])?;
    let mut pieces = [TaskLogPiece::default(), TaskLogPiece::default()];
    for (i, p) in pieces.iter_mut().enumerate() {
        p.offset = from[i];
        p.next_offset = from[i];
    }
    for r in &rows {
        let i = r.get::<_, i16>("stream") as usize;
        let Some(p) = pieces.get_mut(i) else { continue };
        let start = r.get::<_, i64>("start_offset").max(0) as u64;
        let data: Vec<u8> = r.get("data");
        let begin = from[i].max(start);
        let skip = usize::try_from(begin - start).unwrap_or(usize::MAX).min(data.len());
        let bytes = &data[skip..];
        let whole = if ended { bytes.len() } else { whole_chars(bytes) };
        p.offset = begin.min(start + data.len() as u64);
        p.data = String::from_utf8_lossy(&bytes[..whole]).into_owned();
        p.next_offset = p.offset + whole as u64;
    }
    let [stdout, stderr] = pieces;
    Ok(TaskLogResp { live: !rows.is_empty(), ended, state, stdout, stderr })
}

/// How many leading bytes end on a character boundary: a UTF-8 sequence cut at the end
/// waits for its rest.
fn whole_chars(b: &[u8]) -> usize {
    match std::str::from_utf8(b) {
        Ok(_) => b.len(),
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(_) => b.len(),
    }
}

/// Drops the live output of tasks no longer active: their commit stored the std-log
/// artifact (or they were cancelled). The reaper calls this once a minute, which keeps
/// the commit, the busiest statement, free of it.
pub(crate) fn forget_committed_logs(db: &mut impl GenericClient) -> Result<u64, ApiError> {
    Ok(db.execute(
        "DELETE FROM task_logs l WHERE NOT EXISTS (SELECT 1 FROM active_tasks t WHERE t.uuid = l.task_uuid)",
        &[],
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_cut_at_the_end_waits_for_its_rest() {
        let s = "aé".as_bytes();
        assert_eq!(whole_chars(s), 3);
        assert_eq!(whole_chars(&s[..2]), 1);
        assert_eq!(whole_chars(b"a\xffb"), 3, "invalid bytes in the middle pass, replaced");
    }
}
