//! `tasks wait` (poll until tasks are done; the exit status says whether they all
//! succeeded) and `tasks logs` (a task's captured stdout and stderr).

use super::super::args::{Args, Spec};
use super::super::output::print_json;
use super::super::task_args::{array_tasks, uuid_arg, FILTER_ARRAY, FILTER_GROUP};
use super::super::{artifacts, attachments, CommandResult, Error, Flow, Session};
use super::duration_arg;
use super::show::describe_result;
use crate::api::*;
use crate::opts::OptSpec;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use uuid::Uuid;

pub(super) const WAIT: Spec = Spec {
    name: "tasks wait",
    usage: "<UUID>... | --array <ARRAY_ID>",
    about: "Wait until the tasks are done (finished or cancelled, result recorded). Exit status: 0 all succeeded, \
            3 some did not (non-zero exit, timeout, cancelled...), 124 out of time",
    flags: &[
        OptSpec::opt("timeout", None, "DURATION", "Give up after this long (default: wait as long as it takes)"),
        FILTER_GROUP,
        FILTER_ARRAY,
    ],
};
pub(super) const LOGS: Spec = Spec {
    name: "tasks logs",
    usage: "<UUID>",
    about: "Print a task's captured stdout (to stdout) and stderr (to stderr); the task needs --terminal",
    flags: &[
        OptSpec::flag("stdout", None, "Only stdout"),
        OptSpec::flag("stderr", None, "Only stderr"),
        OptSpec::flag(
            "follow",
            Some('f'),
            "Print the output as the running task writes it (mito workers), then exit with the task's exit code",
        ),
    ],
};

/// `tasks wait`: the uuids may be given as separate words or comma lists.
pub(super) fn wait_cmd(s: &mut Session, a: &Args) -> CommandResult {
    if a.value("array").is_some() {
        a.exact(&[])?;
        let timeout = a.value("timeout").map(|t| duration_arg(a, "--timeout", t)).transpose()?;
        return wait_array(s, a, timeout);
    }
    let uuids = a
        .all_pos()
        .iter()
        .flat_map(|w| w.split(',').map(str::to_string).collect::<Vec<_>>())
        .filter(|w| !w.is_empty())
        .map(|w| uuid_arg(a, &w))
        .collect::<Result<Vec<_>, _>>()?;
    if uuids.is_empty() {
        return Err(a.usage("missing <UUID>".into()));
    }
    let timeout = a.value("timeout").map(|t| duration_arg(a, "--timeout", t)).transpose()?;
    wait(s, a, &uuids, timeout)?;
    Ok(Flow::Continue)
}

/// `tasks wait --array`: one query per poll for the whole array, however large.
fn wait_array(s: &mut Session, a: &Args, timeout: Option<Duration>) -> CommandResult {
    let start = Instant::now();
    let mut interval = Duration::from_millis(200);
    loop {
        let tasks = array_tasks(s, a, None)?;
        if tasks.is_empty() {
            return Err(Error::Failed(format!(
                "array {} has no tasks in this group (give -g GROUP if it is in another)",
                a.value("array").unwrap_or_default()
            )));
        }
        let pending = tasks.iter().filter(|t| !is_done(t)).count();
        if pending == 0 {
            let failed = tasks.iter().filter(|t| !succeeded(t)).count();
            if s.json(a) {
                print_json(&json!({"tasks": tasks.len(), "failed": failed, "succeeded": failed == 0}));
            } else {
                println!("Array done: {} tasks, {} succeeded, {failed} did not", tasks.len(), tasks.len() - failed);
            }
            if failed > 0 {
                eprintln!("error: {failed} of {} tasks did not succeed", tasks.len());
                return Err(Error::Exit(3));
            }
            return Ok(Flow::Continue);
        }
        if let Some(limit) = timeout {
            let elapsed = start.elapsed();
            if elapsed >= limit {
                eprintln!("error: timed out with {pending} of {} tasks not done", tasks.len());
                return Err(Error::Exit(124));
            }
            interval = interval.min(limit - elapsed);
        }
        std::thread::sleep(interval);
        interval = (interval * 3 / 2).min(Duration::from_secs(2));
    }
}

/// Whether a task is done: archived with its result.
fn is_done(t: &TaskQueryInfo) -> bool {
    matches!(t.state, TaskState::Finished | TaskState::Cancelled) && t.result.is_some()
}

fn succeeded(t: &TaskQueryInfo) -> bool {
    t.state == TaskState::Finished && t.result.is_some_and(|r| r.exit_status == 0 && r.msg.is_none())
}

/// Polls until every task is done or time runs out; the exit status tells the outcome.
pub(super) fn wait(s: &mut Session, a: &Args, uuids: &[Uuid], timeout: Option<Duration>) -> Result<(), Error> {
    let start = Instant::now();
    let mut pending: Vec<Uuid> = uuids.to_vec();
    let mut done: BTreeMap<Uuid, (TaskQueryInfo, Value)> = BTreeMap::new();
    let mut interval = Duration::from_millis(200);
    loop {
        let mut still = Vec::new();
        for u in &pending {
            let r = s.http.get(&format!("/tasks/{u}"))?;
            let v = r.json()?;
            let t: TaskQueryResp = r.parse()?;
            if is_done(&t.info) {
                if !s.json(a) {
                    let verdict = if succeeded(&t.info) { "succeeded" } else { "failed" };
                    let result = t.info.result.as_ref().map(describe_result).unwrap_or_default();
                    println!("Task {u} {verdict}: {} with {result}", t.info.state);
                }
                done.insert(*u, (t.info, v["info"].clone()));
            } else {
                still.push(*u);
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if let Some(limit) = timeout {
            let elapsed = start.elapsed();
            if elapsed >= limit {
                break;
            }
            interval = interval.min(limit - elapsed);
        }
        std::thread::sleep(interval);
        interval = (interval * 3 / 2).min(Duration::from_secs(2));
    }
    let all_ok = pending.is_empty() && done.values().all(|(t, _)| succeeded(t));
    if s.json(a) {
        let tasks: Vec<Value> = uuids.iter().filter_map(|u| done.get(u).map(|(_, v)| v.clone())).collect();
        print_json(&json!({"tasks": tasks, "pending": pending, "succeeded": all_ok}));
    }
    if !pending.is_empty() {
        let p: Vec<String> = pending.iter().map(Uuid::to_string).collect();
        eprintln!(
            "error: timed out after {} waiting for {}",
            humantime::format_duration(timeout.unwrap_or_default()),
            p.join(", ")
        );
        return Err(Error::Exit(124));
    }
    if !all_ok {
        let failed = done.values().filter(|(t, _)| !succeeded(t)).count();
        eprintln!("error: {failed} of {} tasks did not succeed", done.len());
        return Err(Error::Exit(3));
    }
    Ok(())
}

pub(super) fn logs(s: &mut Session, a: &Args) -> CommandResult {
    let pos = a.exact(&["UUID"])?;
    let uuid = uuid_arg(a, &pos[0])?;
    if a.has("follow") {
        return follow(s, a, uuid);
    }
    print_std_log(s, a, uuid)
}

/// How long a task may run without shipped output before the follower says there is no
/// live output (a mito worker ships an empty chunk as the task starts).
const NOT_LIVE_AFTER: Duration = Duration::from_secs(3);

/// `tasks logs --follow`: the output as it comes, then the task's exit code as ours.
fn follow(s: &mut Session, a: &Args, uuid: Uuid) -> CommandResult {
    let (want_out, want_err) = match (a.has("stdout"), a.has("stderr")) {
        (false, false) => (true, true),
        other => other,
    };
    let mut from = [0u64; 2];
    let mut ever_live = false;
    let mut running_since: Option<Instant> = None;
    let mut told = false;
    loop {
        let path = format!("/tasks/{uuid}/log?stdout={}&stderr={}&wait=2", from[0], from[1]);
        let asked = Instant::now();
        let v: crate::api::TaskLogResp = s.http.get(&path)?.parse()?;
        let news = v.stdout.next_offset > from[0] || v.stderr.next_offset > from[1];
        for (i, (p, want)) in [(&v.stdout, want_out), (&v.stderr, want_err)].into_iter().enumerate() {
            if p.offset > from[i] {
                eprintln!("[{} bytes of {} were dropped: too far behind]", p.offset - from[i], ["stdout", "stderr"][i]);
            }
            if want && !p.data.is_empty() {
                if i == 0 {
                    print!("{}", p.data);
                    let _ = std::io::Write::flush(&mut std::io::stdout());
                } else {
                    eprint!("{}", p.data);
                }
            }
            from[i] = p.next_offset;
        }
        ever_live |= v.live;
        if v.state == TaskState::Running {
            running_since.get_or_insert_with(Instant::now);
        }
        let quiet_too_long = running_since.is_some_and(|t| t.elapsed() >= NOT_LIVE_AFTER);
        if !ever_live && !told && (v.ended || quiet_too_long) {
            eprintln!(
                "live output is not available for task {uuid} (its worker does not ship it, as a mitosis worker, \
                 or the task runs without --terminal); waiting for its std-log artifact"
            );
            told = true;
        }
        if v.ended && !news {
            break;
        }
        // The coordinator answers at once when it may not wait: do not hammer it.
        if !news {
            std::thread::sleep(Duration::from_millis(500).saturating_sub(asked.elapsed()));
        }
    }
    let result = wait_result(s, uuid)?;
    if !ever_live {
        print_std_log(s, a, uuid)?;
    }
    match exit_code(&result) {
        0 => Ok(Flow::Continue),
        code => Err(Error::Exit(code)),
    }
}

/// The task's recorded result, once its commit has stored it.
fn wait_result(s: &mut Session, uuid: Uuid) -> Result<TaskResultSpec, Error> {
    let until = Instant::now() + Duration::from_secs(600);
    loop {
        let t: TaskQueryResp = s.http.get(&format!("/tasks/{uuid}"))?.parse()?;
        if let (true, Some(r)) = (is_done(&t.info), t.info.result) {
            return Ok(r);
        }
        if Instant::now() >= until {
            return Err(Error::Failed(format!("task {uuid} ended but its result was not recorded within 10 minutes")));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The exit code a shell would show for the task: its own, 128 + the signal that killed
/// it, or 3 when it did not run to its end (timeout, cancellation).
fn exit_code(r: &TaskResultSpec) -> i32 {
    if r.msg.is_some() {
        return 3;
    }
    let status = r.exit_status;
    if status & 0x7f == 0 {
        (status >> 8) & 0xff
    } else {
        128 + (status & 0x7f)
    }
}

/// Prints the task's std-log artifact.
fn print_std_log(s: &mut Session, a: &Args, uuid: Uuid) -> CommandResult {
    let r = match s.http.get(&format!("/tasks/{uuid}/download/artifacts/std-log")) {
        Ok(r) => r.json()?,
        Err(e) if e.is_not_found() => {
            return Err(Error::Failed(format!(
                "task {uuid} has no captured output ({e}); it must be submitted with --terminal, and its output is uploaded when it ends"
            )))
        }
        Err(e) => return Err(e),
    };
    let (url, _) = attachments::url_and_size(&r)?;
    let (want_out, want_err) = match (a.has("stdout"), a.has("stderr")) {
        (false, false) => (true, true),
        other => other,
    };
    let json = s.json(a);
    let mut captured: BTreeMap<&str, String> = BTreeMap::new();
    artifacts::read_std_log(s.http.agent(), &url, |name, reader| {
        let which = if name.ends_with("stdout.log") && want_out {
            "stdout"
        } else if name.ends_with("stderr.log") && want_err {
            "stderr"
        } else {
            return Ok(());
        };
        if json {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(reader, &mut buf)?;
            captured.insert(which, String::from_utf8_lossy(&buf).into_owned());
        } else if which == "stdout" {
            std::io::copy(reader, &mut std::io::stdout().lock())?;
        } else {
            std::io::copy(reader, &mut std::io::stderr().lock())?;
        }
        Ok(())
    })?;
    if json {
        print_json(&json!(captured));
    }
    Ok(Flow::Continue)
}
