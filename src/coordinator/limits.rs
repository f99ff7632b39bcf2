//! How much work one request may ask for. Every list, page, response and task spec that
//! comes from outside is bounded by one of these, so no single request can hold a handler
//! thread and a database connection for long or make the coordinator's memory balloon.

/// Items in one delete or download list (attachment keys, artifact task uuids): each is a
/// database row and an object-store call or signature, so a longer list would hold a
/// handler for seconds.
pub(crate) const MAX_OBJECT_LIST: usize = 1_000;

/// Rows a task query returns when it names no limit.
pub(crate) const DEFAULT_QUERY_LIMIT: u64 = 1_000;

/// Rows a task query may return at most; ask for the next page with `offset`.
pub(crate) const MAX_QUERY_LIMIT: u64 = 10_000;

/// Bytes of JSON a task query answer may hold; a query whose tasks carry large specs is
/// refused with advice to page, rather than built in memory whatever its size.
pub(crate) const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// Bytes of a task spec as JSON (1 MiB): its arguments, environment and resource list. A
/// spec is stored, sent to a worker and returned by queries; anything larger belongs in an
/// attachment.
pub(crate) const MAX_TASK_SPEC_BYTES: usize = 1 << 20;

/// Pending downstream tasks a worker may create for one upstream task. One is the normal
/// case (the task's single follow-up); a few more allow for an upstream task that was run
/// again after its worker died. Each Submit is otherwise a free task in the group.
pub(crate) const MAX_DOWNSTREAM_PER_TASK: i64 = 4;

/// Bytes of task output one worker call may ship: a worker sends what was written since
/// its last call, in pieces of at most this.
pub(crate) const MAX_LOG_CHUNK: usize = 64 << 10;

/// Bytes of a running task's output kept per stream: the newest, older bytes are dropped
/// (a follower that falls this far behind is told what it missed).
pub(crate) const MAX_LOG_KEPT: usize = 1 << 20;

/// Seconds a live-log read may wait for new output.
pub(crate) const MAX_LOG_WAIT_SECS: u64 = 10;

/// Retries one task may ask for: each is a whole run of the task on a worker.
pub(crate) const MAX_RETRIES: u32 = 100;

/// The longest base delay between attempts a retry policy may give, and the longest any
/// delay grows to as it doubles per attempt.
pub(crate) const MAX_RETRY_BACKOFF: std::time::Duration = std::time::Duration::from_secs(3600);

/// Dependencies (`after` and `after_any` together) of one task: each is a row the reaper
/// reads until the task starts.
pub(crate) const MAX_DEPENDENCIES: usize = 100;

use super::error::ApiError;

/// Refuses a list of `n` items over `max`, saying how to split it.
pub(crate) fn check_list(what: &str, n: usize, max: usize) -> Result<(), ApiError> {
    if n > max {
        return Err(ApiError::bad(format!("{what} has {n} items; at most {max} per request, split it")));
    }
    Ok(())
}

/// A query's page as SQL `LIMIT` and `OFFSET`: [`DEFAULT_QUERY_LIMIT`] rows when no limit
/// is named, and a limit over [`MAX_QUERY_LIMIT`] refused (page with `offset` instead).
pub(crate) fn page(limit: Option<u64>, offset: Option<u64>) -> Result<(i64, i64), ApiError> {
    let limit = limit.unwrap_or(DEFAULT_QUERY_LIMIT);
    if limit > MAX_QUERY_LIMIT {
        return Err(ApiError::bad(format!(
            "limit {limit} is over the maximum of {MAX_QUERY_LIMIT} rows per query; fetch more pages with offset"
        )));
    }
    let offset = i64::try_from(offset.unwrap_or(0)).unwrap_or(i64::MAX);
    Ok((limit as i64, offset))
}

/// Adds `bytes` to a response being built, refusing it once it would pass
/// [`MAX_RESPONSE_BYTES`].
pub(crate) fn grow_response(total: &mut usize, bytes: usize) -> Result<(), ApiError> {
    *total = total.saturating_add(bytes);
    if *total > MAX_RESPONSE_BYTES {
        return Err(ApiError::bad(format!(
            "the answer would be over {} MiB; ask for fewer rows with a smaller limit",
            MAX_RESPONSE_BYTES >> 20
        )));
    }
    Ok(())
}

/// About how many bytes a task takes in a JSON answer: its strings plus a fixed allowance
/// for the fixed-size fields and the JSON around them. Cheap enough to count per row.
pub(crate) fn task_bytes(t: &crate::api::TaskQueryInfo) -> usize {
    let strings = |v: &[String]| v.iter().map(|s| s.len() + 3).sum::<usize>();
    let spec = &t.spec;
    let envs: usize = spec.envs.iter().map(|(k, v)| k.len() + v.len() + 6).sum();
    let resources: usize = spec.resources.iter().map(|r| r.local_path.len() + 128).sum();
    512 + strings(&t.tags) + strings(&t.labels) + strings(&spec.args) + envs + resources
}

/// Refuses a task spec over [`MAX_TASK_SPEC_BYTES`] as JSON.
pub(crate) fn check_spec_size(spec: &crate::api::TaskSpec) -> Result<(), ApiError> {
    let total = serde_json::to_vec(spec).map(|v| v.len()).unwrap_or(usize::MAX);
    if total > MAX_TASK_SPEC_BYTES {
        return Err(ApiError::bad(format_args!(
            "the task spec (args, envs, resources) takes {total} bytes as JSON; at most {MAX_TASK_SPEC_BYTES} (1 MiB) \
             are allowed: put large inputs in an attachment and list it in the task's resources"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_default_and_cap() {
        assert_eq!(page(None, None).unwrap(), (DEFAULT_QUERY_LIMIT as i64, 0));
        assert_eq!(page(Some(5), Some(u64::MAX)).unwrap(), (5, i64::MAX));
        assert!(page(Some(MAX_QUERY_LIMIT + 1), None).is_err());
        let mut total = 0;
        grow_response(&mut total, MAX_RESPONSE_BYTES).unwrap();
        assert!(grow_response(&mut total, 1).is_err());
    }
}
