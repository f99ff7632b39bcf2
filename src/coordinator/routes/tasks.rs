//! Tasks as users see them: submit, read, query, change, label, cancel.

use crate::api::{
    ArraySpec, ChangeTaskReq, ErrorMsg, SubmitTaskReq, SubmitTaskResp, TaskQueryResp, TaskState,
    TasksCancelByFilterReq, TasksCancelByFilterResp, TasksCancelByUuidsReq, TasksCancelByUuidsResp, TasksQueryReq,
    TasksQueryResp, TasksSubmitReq, TasksSubmitResp, TasksSummaryReq, UpdateTaskLabelsReq, UserGroupRole,
};
use crate::coordinator::auth::{authenticate_user, AuthUser, Claims};
use crate::coordinator::authz::{authorize_group, authorize_task};
use crate::coordinator::error::ApiError;
use crate::coordinator::http::{Call, Reply};
use crate::coordinator::limits;
use crate::coordinator::tasks::matching;
use crate::coordinator::tasks::{self, Found};
use crate::coordinator::Ctx;
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

/// The most items one batch call takes.
pub(crate) const MAX_BATCH: usize = 10_000;
/// Uuids per lookup.
const CHUNK: usize = 1024;

fn check_batch_len(n: usize, what: &str) -> Result<(), ApiError> {
    if n == 0 {
        return Err(ApiError::bad(format!("{what} cannot be empty")));
    }
    if n > MAX_BATCH {
        return Err(ApiError::bad(format!("{what} has {n} items; at most {MAX_BATCH} per call, split it")));
    }
    Ok(())
}

/// Submits tasks; each item succeeds or fails on its own. Needs Write in each group. One
/// group (the usual case) is one statement, which also authenticates the caller; several
/// share a transaction, so a crash never leaves a batch half submitted.
fn submit_all(
    ctx: &Ctx,
    token: &Claims,
    reqs: &[SubmitTaskReq],
) -> Result<Vec<Result<SubmitTaskResp, ApiError>>, ApiError> {
    let mut results: Vec<Option<Result<SubmitTaskResp, ApiError>>> = (0..reqs.len()).map(|_| None).collect();
    let mut by_group: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, r) in reqs.iter().enumerate() {
        match tasks::validate_submit(r) {
            Ok(()) => by_group.entry(r.group_name.as_str()).or_default().push(i),
            Err(e) => results[i] = Some(Err(e)),
        }
    }
    let notify_prefix = ctx.scheduler.group_payload_prefix();
    let mut db = ctx.pool.get()?;
    let extended = reqs.iter().any(tasks::is_extended);
    if by_group.is_empty() || extended {
        // Nothing to insert, so nothing has checked the caller yet; or dependencies to
        // check against what the caller may read.
        let user = authenticate_user(&mut db, token, false)?;
        check_dependencies(&mut *db, &user, reqs, &mut by_group, &mut results)?;
    }
    let st = tasks::prepare_submit(&mut db)?;
    let made = if by_group.len() <= 1 && !extended {
        submit_groups(&mut *db, &st, token, reqs, &by_group, &notify_prefix)?
    } else {
        let mut tx = db.transaction()?;
        let made = submit_groups(&mut tx, &st, token, reqs, &by_group, &notify_prefix)?;
        // Retry policies and dependencies are stored before the commit, so no worker can
        // claim a task that must wait.
        let mut waiting = Vec::new();
        for (group, m) in &made {
            for (i, (_, uuid)) in by_group[group].iter().zip(m.iter().flat_map(|m| m.tasks.iter())) {
                tasks::extend(&mut tx, std::slice::from_ref(uuid), &reqs[*i])?;
                if !tasks::dependencies::of(&reqs[*i]).is_empty() {
                    waiting.push(*uuid);
                }
            }
        }
        // Dependencies that have already ended are settled now, not at the reaper's pass.
        tasks::dependencies::settle_submitted(&mut tx, &waiting)?;
        tx.commit()?;
        made
    };
    let mut caller = None;
    for (group, made) in made {
        let idx = &by_group[group];
        let Some(m) = made else {
            // Nothing was written: the caller is not who the token says (the whole request
            // fails) or may not submit to this group (these items fail).
            let user = match &caller {
                Some(u) => u,
                None => caller.insert(authenticate_user(&mut db, token, false)?),
            };
            let e = authorize_group(&mut *db, user, group, UserGroupRole::Write).err().unwrap_or_else(|| {
                ApiError::Forbidden(format!("you could not submit to group {group} just now; retry"))
            });
            for i in idx {
                results[*i] = Some(Err(e.clone()));
            }
            continue;
        };
        ctx.scheduler.wake_group(m.group_id);
        crate::coordinator::metrics::METRICS.submits.add(m.tasks.len() as u64);
        for (i, (task_id, uuid)) in idx.iter().zip(m.tasks) {
            results[*i] = Some(Ok(SubmitTaskResp { task_id, uuid }));
        }
    }
    Ok(results.into_iter().map(|r| r.unwrap_or_else(|| Err(ApiError::Internal("unanswered".into())))).collect())
}

/// Refuses the items whose dependencies include a task that does not exist or that the
/// caller may not read (both answered alike, so uuids cannot be probed).
fn check_dependencies(
    db: &mut impl postgres::GenericClient,
    user: &AuthUser,
    reqs: &[SubmitTaskReq],
    by_group: &mut BTreeMap<&str, Vec<usize>>,
    results: &mut [Option<Result<SubmitTaskResp, ApiError>>],
) -> Result<(), ApiError> {
    for idx in by_group.values_mut() {
        let mut kept = Vec::with_capacity(idx.len());
        for i in idx.drain(..) {
            let mut refused = None;
            for (dep, _) in tasks::dependencies::of(&reqs[i]) {
                let readable = match tasks::find(db, dep)? {
                    Some(found) => authorize_task(db, user, found.group_id, dep, UserGroupRole::Read).is_ok(),
                    None => false,
                };
                if !readable {
                    refused = Some(ApiError::bad(format!(
                        "dependency {dep}: no such task, or you may not read it; depend only on tasks you can see"
                    )));
                    break;
                }
            }
            match refused {
                Some(e) => results[i] = Some(Err(e)),
                None => kept.push(i),
            }
        }
        *idx = kept;
    }
    by_group.retain(|_, idx| !idx.is_empty());
    Ok(())
}

/// What [`tasks::submit`] made in each group (None: nothing).
fn submit_groups<'a>(
    db: &mut impl postgres::GenericClient,
    st: &postgres::Statement,
    token: &Claims,
    reqs: &[SubmitTaskReq],
    by_group: &BTreeMap<&'a str, Vec<usize>>,
    notify_prefix: &str,
) -> Result<Vec<(&'a str, Option<tasks::Inserted>)>, ApiError> {
    by_group
        .iter()
        .map(|(g, idx)| {
            let items: Vec<&SubmitTaskReq> = idx.iter().map(|i| &reqs[*i]).collect();
            Ok((*g, tasks::submit(db, st, token, g, &items, notify_prefix)?))
        })
        .collect()
}

/// `POST /tasks`.
pub(crate) fn submit(ctx: &Ctx, call: &Call, token: &Claims) -> Result<Reply, ApiError> {
    let req: SubmitTaskReq = call.json()?;
    let mut out = submit_all(ctx, token, std::slice::from_ref(&req))?;
    match out.pop() {
        Some(Ok(r)) => Ok(Reply::json(&r)),
        Some(Err(e)) => Err(e),
        None => Err(ApiError::Internal("no result".into())),
    }
}

/// `POST /tasks/submit`: a result per item, in order.
pub(crate) fn submit_batch(ctx: &Ctx, call: &Call, token: &Claims) -> Result<Reply, ApiError> {
    let req: TasksSubmitReq = call.json()?;
    if let Some(array) = &req.array {
        return submit_array(ctx, token, &req.tasks, array);
    }
    check_batch_len(req.tasks.len(), "Tasks list")?;
    let results =
        submit_all(ctx, token, &req.tasks)?.into_iter().map(|r| r.map_err(|e| ErrorMsg { msg: e.message() })).collect();
    Ok(Reply::json(&TasksSubmitResp { results, array_id: None }))
}

/// `POST /tasks/submit` with `array`: one task per index, all or none, in one transaction
/// that names the array for the insert (the `array_id` column's default reads it) and
/// records its cap.
fn submit_array(ctx: &Ctx, token: &Claims, templates: &[SubmitTaskReq], array: &ArraySpec) -> Result<Reply, ApiError> {
    let [template] = templates else {
        return Err(ApiError::bad(format!("an array takes exactly one task as its template, not {}", templates.len())));
    };
    crate::api::array::check(array).map_err(|e| ApiError::bad(e.to_string()))?;
    tasks::validate_submit(template)?;
    let id = Uuid::new_v4();
    let items: Vec<SubmitTaskReq> =
        crate::api::array::indices(array).map(|i| crate::api::array::task_at(template, array, id, i)).collect();
    for t in &items {
        // The substituted arguments and the added environment may grow a spec past its bound.
        crate::coordinator::limits::check_spec_size(&t.task_spec)?;
    }
    let refs: Vec<&SubmitTaskReq> = items.iter().collect();
    let announce = ctx.scheduler.group_payload_prefix();
    let mut db = ctx.pool.get()?;
    let extended = tasks::is_extended(template);
    if extended {
        // The template's dependencies are checked against what the caller may read, as a
        // single task's are.
        let user = authenticate_user(&mut db, token, false)?;
        let mut by_group = BTreeMap::from([(template.group_name.as_str(), vec![0])]);
        let mut refused = vec![None];
        check_dependencies(&mut *db, &user, templates, &mut by_group, &mut refused)?;
        if let Some(Some(Err(e))) = refused.pop() {
            return Err(e);
        }
    }
    let st = tasks::prepare_submit(&mut db)?;
    let mut tx = db.transaction()?;
    let made = tasks::submit_array(&mut tx, &st, token, &template.group_name, &refs, &announce, id, array.max_running)?;
    let Some(m) = made else {
        drop(tx);
        let user = authenticate_user(&mut db, token, false)?;
        authorize_group(&mut *db, &user, &template.group_name, UserGroupRole::Write)?;
        return Err(ApiError::Forbidden(format!(
            "you could not submit to group {} just now; retry",
            template.group_name
        )));
    };
    if extended {
        // Every task of the array gets the template's retry policy and dependencies, before
        // the commit, so no worker can claim one that must wait.
        let uuids: Vec<Uuid> = m.tasks.iter().map(|(_, uuid)| *uuid).collect();
        tasks::extend(&mut tx, &uuids, template)?;
        if !tasks::dependencies::of(template).is_empty() {
            // Dependencies that have already ended are settled now, as for single tasks.
            tasks::dependencies::settle_submitted(&mut tx, &uuids)?;
        }
    }
    tx.commit()?;
    ctx.scheduler.wake_group(m.group_id);
    crate::coordinator::metrics::METRICS.submits.add(m.tasks.len() as u64);
    let results = m.tasks.into_iter().map(|(task_id, uuid)| Ok(SubmitTaskResp { task_id, uuid })).collect();
    Ok(Reply::json(&TasksSubmitResp { results, array_id: Some(id) }))
}

fn find_visible(
    db: &mut impl postgres::GenericClient,
    user: &AuthUser,
    uuid: Uuid,
    min: UserGroupRole,
) -> Result<Found, ApiError> {
    let found = tasks::find(db, uuid)?.ok_or_else(|| ApiError::NotFound(format!("Task with uuid {uuid}")))?;
    authorize_task(db, user, found.group_id, uuid, min)?;
    Ok(found)
}

/// `GET /tasks/{uuid}`: needs Read in the task's group.
pub(crate) fn get(ctx: &Ctx, user: &AuthUser, uuid: Uuid) -> Result<Reply, ApiError> {
    let mut db = ctx.pool.get()?;
    // One snapshot for every read, so the answer never shows a task still waiting whose
    // dependencies the reaper resolved between two of them.
    let mut tx =
        db.build_transaction().isolation_level(postgres::IsolationLevel::RepeatableRead).read_only(true).start()?;
    let found = find_visible(&mut tx, user, uuid, UserGroupRole::Read)?;
    let artifacts = tasks::artifacts(&mut tx, uuid)?;
    let attempts = tasks::retry::attempts(&mut tx, uuid)?;
    let retries = if found.active { tasks::retry::policy(&mut tx, found.id)? } else { None };
    let (after, after_any) = tasks::dependencies::waiting_for(&mut tx, uuid)?;
    tx.commit()?;
    Ok(Reply::json(&TaskQueryResp { info: found.info, artifacts, attempts, retries, after, after_any }))
}

/// `PUT /tasks/{uuid}`: changes a Ready task (Write).
pub(crate) fn change(ctx: &Ctx, call: &Call, user: &AuthUser, uuid: Uuid) -> Result<Reply, ApiError> {
    let req: ChangeTaskReq = call.json()?;
    if req.tags.is_none() && req.timeout.is_none() && req.priority.is_none() && req.task_spec.is_none() {
        return Err(ApiError::bad("No change specified: give tags, timeout, priority or task_spec"));
    }
    if let Some(spec) = &req.task_spec {
        tasks::validate_spec(spec)?;
    }
    if req.timeout.is_some_and(|t| t.as_secs() == 0) {
        return Err(ApiError::bad("timeout must be at least 1s"));
    }
    if let Some(t) = req.timeout {
        crate::api::time::check_max("timeout", t).map_err(|e| ApiError::bad(e.to_string()))?;
    }
    let mut db = ctx.pool.get()?;
    let mut tx = db.transaction()?;
    let (id, group_id, state) =
        tasks::lock_active(&mut tx, uuid)?.ok_or_else(|| ApiError::NotFound(format!("Ready task with uuid {uuid}")))?;
    authorize_task(&mut tx, user, group_id, uuid, UserGroupRole::Write)?;
    if state != TaskState::Ready {
        return Err(ApiError::NotFound(format!(
            "Ready task with uuid {uuid} (it is {state}; only Ready tasks can be changed)"
        )));
    }
    let spec = req
        .task_spec
        .map(|s| serde_json::to_value(&s))
        .transpose()
        .map_err(|e| ApiError::Internal(format!("serialize spec: {e}")))?;
    let change = tasks::Change {
        tags: req.tags.map(|t| t.into_iter().collect()),
        timeout_secs: req.timeout.map(|t| t.as_secs() as i64),
        priority: req.priority,
        spec,
    };
    tasks::change(&mut tx, id, &change)?;
    ctx.scheduler.notify_group(&mut tx, group_id)?;
    tx.commit()?;
    ctx.scheduler.wake_group(group_id);
    Ok(Reply::ok())
}

/// Settles the tasks waiting for the just cancelled `gone` (see
/// [`tasks::dependencies::release_dependents`]) and tells the other coordinators of those
/// now Ready; returns their groups, to wake after the commit.
fn release_dependents(ctx: &Ctx, tx: &mut postgres::Transaction, gone: &[Uuid]) -> Result<Vec<i64>, ApiError> {
    let groups = tasks::dependencies::release_dependents(tx, gone)?;
    for g in &groups {
        ctx.scheduler.notify_group(tx, *g)?;
    }
    Ok(groups)
}

fn wake_all(ctx: &Ctx, groups: Vec<i64>) {
    for g in groups {
        ctx.scheduler.wake_group(g);
    }
}

/// `DELETE /tasks/{uuid}`: a Ready or Pending task is archived as cancelled at once; a
/// Running one is marked, and its worker stops it (README: Extensions).
pub(crate) fn cancel(ctx: &Ctx, user: &AuthUser, uuid: Uuid) -> Result<Reply, ApiError> {
    let mut db = ctx.pool.get()?;
    let mut tx = db.transaction()?;
    let missing = || ApiError::NotFound(format!("Task with uuid {uuid}"));
    let (id, group_id, state) = tasks::lock_active(&mut tx, uuid)?.ok_or_else(missing)?;
    authorize_task(&mut tx, user, group_id, uuid, UserGroupRole::Write)?;
    match state {
        TaskState::Ready | TaskState::Pending => {
            let gone = tasks::archive_cancelled(&mut tx, &[id], &[state.code()])?;
            let wake = release_dependents(ctx, &mut tx, &gone)?;
            tx.commit()?;
            wake_all(ctx, wake);
            return Ok(Reply::ok());
        }
        TaskState::Running => {
            tasks::request_cancel(&mut tx, id)?;
        }
        other => {
            return Err(ApiError::bad(format!(
                "task {uuid} is {other} and being committed; it can no longer be cancelled"
            )));
        }
    }
    tx.commit()?;
    Ok(Reply::ok())
}

/// `PUT /tasks/{uuid}/labels`: replaces the labels of an active or archived task (Write).
pub(crate) fn labels(ctx: &Ctx, call: &Call, user: &AuthUser, uuid: Uuid) -> Result<Reply, ApiError> {
    let req: UpdateTaskLabelsReq = call.json()?;
    let labels: Vec<String> = req.labels.into_iter().collect();
    let mut db = ctx.pool.get()?;
    let found = find_visible(&mut *db, user, uuid, UserGroupRole::Write)?;
    tasks::set_labels(&mut *db, &found, &labels)?;
    Ok(Reply::ok())
}

/// `POST /tasks/query`: needs Read; limit and offset apply to the combined result, and
/// both the page and the answer's size are bounded (see [`limits`]).
pub(crate) fn query(ctx: &Ctx, call: &Call, user: &AuthUser) -> Result<Reply, ApiError> {
    let req: TasksQueryReq = call.json()?;
    let mut db = ctx.pool.get()?;
    let (group_name, mut q) = matching::authorized(&mut *db, user, &req.filter, UserGroupRole::Read)?;
    if req.count {
        let count = matching::count(&mut *db, &mut q, req.reporter_uuid)?;
        return Ok(Reply::json(&TasksQueryResp { count, tasks: Vec::new(), group_name }));
    }
    let (limit, offset) = limits::page(req.limit, req.offset)?;
    let tasks = matching::page(&mut *db, &mut q, req.reporter_uuid, limit, offset)?;
    Ok(Reply::json(&TasksQueryResp { count: tasks.len() as u64, tasks, group_name }))
}

/// `POST /tasks/summary`: needs Read; the tasks a filter selects (an array, by its label)
/// counted by state and by result, so a page following an array's progress reads a few
/// rows per refresh, not every task.
pub(crate) fn summary(ctx: &Ctx, call: &Call, user: &AuthUser) -> Result<Reply, ApiError> {
    let req: TasksSummaryReq = call.json()?;
    let mut db = ctx.pool.get()?;
    let (group_name, mut q) = matching::authorized(&mut *db, user, &req.filter, UserGroupRole::Read)?;
    Ok(Reply::json(&matching::summary(&mut *db, &mut q, group_name)?))
}

/// `POST /tasks/cancel`: cancels matching Ready and Pending tasks (Write).
pub(crate) fn cancel_by_filter(ctx: &Ctx, call: &Call, user: &AuthUser) -> Result<Reply, ApiError> {
    let mut filter = call.json::<TasksCancelByFilterReq>()?.filter;
    let cancellable = [TaskState::Ready, TaskState::Pending];
    let states: BTreeSet<TaskState> = match &filter.states {
        Some(s) => {
            let both: BTreeSet<TaskState> = s.iter().copied().filter(|s| cancellable.contains(s)).collect();
            if both.is_empty() {
                cancellable.into_iter().collect()
            } else {
                both
            }
        }
        None => cancellable.into_iter().collect(),
    };
    filter.states = Some(states);
    let mut db = ctx.pool.get()?;
    let mut tx = db.transaction()?;
    let (group_name, q) = matching::authorized(&mut tx, user, &filter, UserGroupRole::Write)?;
    let ids = matching::lock_active(&mut tx, &q)?;
    let codes: Vec<i32> = cancellable.iter().map(|s| s.code()).collect();
    let mut gone = Vec::new();
    for chunk in ids.chunks(CHUNK) {
        gone.extend(tasks::archive_cancelled(&mut tx, chunk, &codes)?);
    }
    let wake = release_dependents(ctx, &mut tx, &gone)?;
    tx.commit()?;
    wake_all(ctx, wake);
    Ok(Reply::json(&TasksCancelByFilterResp { cancelled_count: gone.len() as u64, group_name }))
}

/// `POST /tasks/cancel/list`: cancels the listed Ready and Pending tasks the caller may
/// write; the rest come back in `failed_uuids`.
pub(crate) fn cancel_by_list(ctx: &Ctx, call: &Call, user: &AuthUser) -> Result<Reply, ApiError> {
    let req: TasksCancelByUuidsReq = call.json()?;
    check_batch_len(req.uuids.len(), "uuids")?;
    let codes = vec![TaskState::Ready.code(), TaskState::Pending.code()];
    let mut db = ctx.pool.get()?;
    let mut tx = db.transaction()?;
    let mut done: BTreeSet<Uuid> = BTreeSet::new();
    for chunk in req.uuids.chunks(CHUNK) {
        let ids = tasks::lock_listed(&mut tx, chunk, user.id, UserGroupRole::Write, &codes)?;
        done.extend(tasks::archive_cancelled(&mut tx, &ids, &codes)?);
    }
    let wake = release_dependents(ctx, &mut tx, &done.iter().copied().collect::<Vec<_>>())?;
    tx.commit()?;
    wake_all(ctx, wake);
    let failed_uuids: Vec<Uuid> = req.uuids.iter().copied().filter(|u| !done.contains(u)).collect();
    Ok(Reply::json(&TasksCancelByUuidsResp { cancelled_count: done.len() as u64, failed_uuids }))
}
