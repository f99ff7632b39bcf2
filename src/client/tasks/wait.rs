//! `tasks wait` (poll until tasks are done; the exit status says whether they all
//! succeeded) and `tasks logs` (a task's captured stdout and stderr).

use super::super::args::{Args, Spec};
use super::super::output::print_json;
use super::super::task_args::uuid_arg;
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
    usage: "<UUID>...",
    about: "Wait until the tasks are done (finished or cancelled, result recorded). Exit status: 0 all succeeded, \
            3 some did not (non-zero exit, timeout, cancelled...), 124 out of time",
    flags: &[OptSpec::opt("timeout", None, "DURATION", "Give up after this long (default: wait as long as it takes)")],
};
pub(super) const LOGS: Spec = Spec {
    name: "tasks logs",
    usage: "<UUID>",
    about: "Print a task's captured stdout (to stdout) and stderr (to stderr); the task needs --terminal",
    flags: &[OptSpec::flag("stdout", None, "Only stdout"), OptSpec::flag("stderr", None, "Only stderr")],
};

/// `tasks wait`: the uuids may be given as separate words or comma lists.
pub(super) fn wait_cmd(s: &mut Session, a: &Args) -> CommandResult {
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
