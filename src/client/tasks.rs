//! `tasks ...`: submit, query, change and cancel tasks; and, beyond mitosis, `tasks wait`
//! (block until tasks are done; the exit status says whether they all succeeded) and
//! `tasks logs` (print a task's captured stdout and stderr). Artifacts are in artifacts.rs.
//!
//! ```text
//! tasks submit -g lab -t gpu --timeout 1h -- python train.py
//! tasks submit --terminal --wait -- sh -c 'echo hi'     # waits, exit status = success
//! tasks wait 7f0c... 1a2b... --timeout 30m
//! ```

use super::args::{Args, Group, Spec};
use super::output::{list, opt, print_json, ts};
use super::task_args::{
    filter, set, uuid_arg, uuid_list, CREATORS, EXIT, F_GROUP, F_LABELS, F_TAGS, LIMIT, OFFSET, PRIO, REPORTER, STATES,
};
use super::{artifacts, parse, Error, Flow, Res, Session};
use crate::api::*;
use crate::opts::OptSpec;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use uuid::Uuid;

const TASKS: Group = Group {
    name: "tasks",
    about: "Submit, query, wait for and manage tasks and their artifacts",
    subs: &[
        ("submit", "Submit a task"),
        ("submit-many", "Submit the tasks of a JSON file"),
        ("get", "Show a task"),
        ("query", "Find tasks"),
        ("wait", "Wait until tasks are done; the exit status says whether all succeeded"),
        ("logs", "Print a task's captured stdout and stderr"),
        ("cancel", "Cancel a task that has not started"),
        ("cancel-many", "Cancel the tasks that match a filter"),
        ("cancel-list", "Cancel the listed tasks"),
        ("update-labels", "Replace a task's labels"),
        ("change", "Change a task that has not started"),
        ("artifacts", "Files tasks produced (result, exec-log, std-log)"),
    ],
};

const GROUP: OptSpec = OptSpec::opt("group", Some('g'), "GROUP_NAME", "The group (default: your own)");
const TAGS: OptSpec = OptSpec::opt("tags", Some('t'), "TAGS", "Tags, comma-separated (a worker must have all of them)");
const LABELS: OptSpec = OptSpec::opt("labels", Some('l'), "LABELS", "Labels, comma-separated");
const TIMEOUT: OptSpec = OptSpec::opt("timeout", None, "TIMEOUT", "How long the task may run (default 10min)");
const PRIORITY: OptSpec = OptSpec::opt("priority", Some('p'), "PRIORITY", "Larger runs first (default 0)");
const ENVS: OptSpec = OptSpec::opt("envs", Some('e'), "KEY=VALUE", "Environment variables, comma-separated");
const TERMINAL: OptSpec =
    OptSpec::flag("terminal", None, "Capture stdout and stderr as the std-log artifact (see `tasks logs`)");
const RESOURCES: OptSpec = OptSpec::opt(
    "resources",
    Some('r'),
    "RESOURCES",
    "Files to fetch before running, comma-separated: attachment=<KEY>:<LOCAL_PATH> or artifact=<UUID>:<TYPE>:<LOCAL_PATH>",
);
const WATCH: OptSpec =
    OptSpec::opt("watch", None, "UUID,STATE", "Start only once that task reaches STATE (e.g. ExecSpawned)");

const VERBOSE: OptSpec = OptSpec::flag("verbose", Some('v'), "Show every field, not only the uuid");
const COUNT: OptSpec = OptSpec::flag("count", None, "Only count");

const SUBMIT: Spec = Spec {
    name: "tasks submit",
    usage: "-- <COMMAND>...",
    about: "Submit a task. The command (after --) runs without a shell: use -- sh -c '...' for one",
    flags: &[
        GROUP,
        TAGS,
        LABELS,
        TIMEOUT,
        PRIORITY,
        ENVS,
        TERMINAL,
        RESOURCES,
        WATCH,
        OptSpec::flag("wait", None, "Wait until the task is done; the exit status says whether it succeeded"),
        OptSpec::opt("wait-timeout", None, "DURATION", "With --wait, give up after this long (exit status 124)"),
    ],
};
const SUBMIT_MANY: Spec = Spec {
    name: "tasks submit-many",
    usage: "",
    about: "Submit every task of a JSON file (an array of task requests, as POST /tasks takes them)",
    flags: &[OptSpec::opt("file", Some('f'), "FILE", "The JSON file")],
};
const GET: Spec =
    Spec { name: "tasks get", usage: "<UUID>", about: "Show a task, its result and artifacts", flags: &[] };
const QUERY: Spec = Spec {
    name: "tasks query",
    usage: "",
    about: "Find tasks",
    flags: &[CREATORS, F_GROUP, F_TAGS, F_LABELS, STATES, EXIT, PRIO, REPORTER, LIMIT, OFFSET, VERBOSE, COUNT],
};
const WAIT: Spec = Spec {
    name: "tasks wait",
    usage: "<UUID>...",
    about: "Wait until the tasks are done (finished or cancelled, result recorded). Exit status: 0 all succeeded, \
            3 some did not (non-zero exit, timeout, cancelled...), 124 out of time",
    flags: &[OptSpec::opt("timeout", None, "DURATION", "Give up after this long (default: wait as long as it takes)")],
};
const LOGS: Spec = Spec {
    name: "tasks logs",
    usage: "<UUID>",
    about: "Print a task's captured stdout (to stdout) and stderr (to stderr); the task needs --terminal",
    flags: &[OptSpec::flag("stdout", None, "Only stdout"), OptSpec::flag("stderr", None, "Only stderr")],
};
const CANCEL: Spec =
    Spec { name: "tasks cancel", usage: "<UUID>", about: "Cancel a task that has not started", flags: &[] };
const CANCEL_MANY: Spec = Spec {
    name: "tasks cancel-many",
    usage: "",
    about: "Cancel the tasks that match a filter (only ready or pending ones)",
    flags: &[CREATORS, F_GROUP, F_TAGS, F_LABELS, STATES, EXIT, PRIO],
};
const CANCEL_LIST: Spec =
    Spec { name: "tasks cancel-list", usage: "<UUID,...>", about: "Cancel the listed tasks", flags: &[] };
const UPDATE_LABELS: Spec =
    Spec { name: "tasks update-labels", usage: "<UUID> [LABEL]...", about: "Replace a task's labels", flags: &[] };
const CHANGE: Spec = Spec {
    name: "tasks change",
    usage: "<UUID> [-- <COMMAND>...]",
    about: "Change a task that has not started; options not given stay as they are",
    flags: &[TAGS, TIMEOUT, PRIORITY, ENVS, TERMINAL, WATCH],
};

pub fn run(s: &mut Session, words: &[String]) -> Res {
    let Some((cmd, rest)) = TASKS.sub(words)? else { return Ok(Flow::Continue) };
    if cmd == "artifacts" {
        return artifacts::run(s, rest);
    }
    let spec = match cmd {
        "submit" => &SUBMIT,
        "submit-many" => &SUBMIT_MANY,
        "get" => &GET,
        "query" => &QUERY,
        "wait" => &WAIT,
        "logs" => &LOGS,
        "cancel" => &CANCEL,
        "cancel-many" => &CANCEL_MANY,
        "cancel-list" => &CANCEL_LIST,
        "update-labels" => &UPDATE_LABELS,
        "change" => &CHANGE,
        other => return Err(TASKS.unknown(other)),
    };
    let Some(a) = parse(spec, rest)? else { return Ok(Flow::Continue) };
    match cmd {
        "submit" => submit(s, &a),
        "submit-many" => submit_many(s, &a),
        "get" => get(s, &a),
        "query" => query(s, &a),
        "wait" => {
            let uuids = a
                .all_pos()
                .iter()
                .flat_map(|w| w.split(',').map(str::to_string).collect::<Vec<_>>())
                .filter(|w| !w.is_empty())
                .map(|w| uuid_arg(&a, &w))
                .collect::<Result<Vec<_>, _>>()?;
            if uuids.is_empty() {
                return Err(a.usage("missing <UUID>".into()));
            }
            let timeout = a.value("timeout").map(|t| duration_arg(&a, "--timeout", t)).transpose()?;
            wait(s, &a, &uuids, timeout)
        }
        "logs" => logs(s, &a),
        "cancel" => {
            let pos = a.exact(&["UUID"])?;
            let uuid = uuid_arg(&a, &pos[0])?;
            s.http.delete(&format!("/tasks/{uuid}"))?;
            if !s.json(&a) {
                println!("Task {uuid} cancelled");
            }
            Ok(())
        }
        "cancel-many" => {
            a.exact(&[])?;
            let f = filter(s, &a)?;
            let req = TasksCancelByFilterReq {
                creator_usernames: f.creator_usernames,
                group_name: f.group_name,
                tags: f.tags,
                labels: f.labels,
                states: f.states,
                exit_status: f.exit_status,
                priority: f.priority,
            };
            let r = s.http.post("/tasks/cancel", &req)?;
            if s.json(&a) {
                print_json(&r.json()?);
            } else {
                let r: TasksCancelByFilterResp = r.parse()?;
                println!("Cancelled {} tasks in group {}", r.cancelled_count, r.group_name);
            }
            Ok(())
        }
        "cancel-list" => {
            let uuids = uuid_list(&a)?;
            let r = s.http.post("/tasks/cancel/list", &TasksCancelByUuidsReq { uuids })?;
            if s.json(&a) {
                print_json(&r.json()?);
            } else {
                let r: TasksCancelByUuidsResp = r.parse()?;
                println!("Cancelled {} tasks", r.cancelled_count);
                if !r.failed_uuids.is_empty() {
                    println!(
                        "Failed to cancel {} tasks: {}",
                        r.failed_uuids.len(),
                        list(&r.failed_uuids.iter().map(Uuid::to_string).collect::<Vec<_>>())
                    );
                }
            }
            Ok(())
        }
        "update-labels" => {
            let pos = a.all_pos();
            let Some(first) = pos.first() else { return Err(a.usage("missing <UUID>".into())) };
            let uuid = uuid_arg(&a, first)?;
            let labels: BTreeSet<String> = pos[1..].iter().cloned().collect();
            s.http.put(&format!("/tasks/{uuid}/labels"), &UpdateTaskLabelsReq { labels: labels.clone() })?;
            if !s.json(&a) {
                println!("Labels of task {uuid} set to {}", list(&labels.into_iter().collect::<Vec<_>>()));
            }
            Ok(())
        }
        _ => change(s, &a),
    }
    .map(|()| Flow::Continue)
}

fn duration_arg(a: &Args, flag: &str, s: &str) -> Result<Duration, Error> {
    humantime::parse_duration(s.trim())
        .map_err(|_| a.usage(format!("{flag} {s:?} is not a duration (e.g. 90s, 10m, 2h)")))
}

fn envs(a: &Args) -> Result<BTreeMap<String, String>, Error> {
    a.list("envs")
        .into_iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(a.usage(format!("-e {kv:?} is not KEY=VALUE"))),
        })
        .collect()
}

fn resources(a: &Args) -> Result<Vec<RemoteResourceDownload>, Error> {
    a.list("resources").iter().map(|r| parse_resource(r).map_err(|e| a.usage(e))).collect()
}

/// `attachment=<KEY>:<LOCAL_PATH>` or `artifact=<UUID>:<TYPE>:<LOCAL_PATH>`.
pub fn parse_resource(r: &str) -> Result<RemoteResourceDownload, String> {
    let bad = || format!("-r {r:?} is not attachment=<KEY>:<LOCAL_PATH> or artifact=<UUID>:<TYPE>:<LOCAL_PATH>");
    let (kind, rest) = r.split_once('=').ok_or_else(bad)?;
    let parts: Vec<&str> = rest.split(':').collect();
    let (remote_file, local) = match (kind.trim().to_ascii_lowercase().as_str(), parts.as_slice()) {
        ("attachment", [key, local]) => {
            (RemoteResource::Attachment { key: super::attachments::clean_key(key) }, *local)
        }
        ("artifact", [uuid, ty, local]) => {
            let uuid = Uuid::parse_str(uuid).map_err(|_| format!("{uuid:?} in -r {r:?} is not a UUID"))?;
            let content_type = ArtifactContentType::parse(ty)
                .or_else(|| ArtifactContentType::parse(&ty.to_ascii_lowercase()))
                .ok_or_else(|| format!("{ty:?} in -r {r:?} is not an artifact type: result, exec-log or std-log"))?;
            (RemoteResource::Artifact { uuid, content_type }, *local)
        }
        _ => return Err(bad()),
    };
    if local.is_empty() || local.starts_with('/') || local.split('/').any(|s| s == "..") {
        return Err(format!("the local path {local:?} in -r {r:?} must be relative and without '..'"));
    }
    Ok(RemoteResourceDownload { remote_file, local_path: local.to_string() })
}

fn watch(a: &Args) -> Result<Option<(Uuid, TaskExecState)>, Error> {
    let Some(w) = a.value("watch") else { return Ok(None) };
    let (u, st) = w.split_once(',').ok_or_else(|| a.usage(format!("--watch {w:?} is not UUID,STATE")))?;
    let uuid = uuid_arg(a, u)?;
    // mitosis turns a misspelled state into Unknown, which never comes: refuse it instead.
    let state = TaskExecState::ALL
        .iter()
        .copied()
        .find(|s| s.as_str().eq_ignore_ascii_case(st.trim()) && *s != TaskExecState::Unknown)
        .ok_or_else(|| a.usage(format!("--watch state {st:?} is not one of {}", TaskExecState::expected())))?;
    Ok(Some((uuid, state)))
}

fn submit(s: &mut Session, a: &Args) -> Result<(), Error> {
    let args = match &a.trailing {
        Some(t) => {
            if !a.pos.is_empty() {
                return Err(a.usage(format!("unexpected argument {:?} before --", a.pos[0])));
            }
            t.clone()
        }
        None => a.pos.clone(),
    };
    if args.is_empty() {
        return Err(a.usage("missing the command to run, e.g. `tasks submit -- echo hello`".into()));
    }
    let timeout = match a.value("timeout") {
        Some(t) => duration_arg(a, "--timeout", t)?,
        None => Duration::from_secs(600),
    };
    let req = SubmitTaskReq {
        group_name: a.value("group").map(str::to_string).unwrap_or_else(|| s.user.clone()),
        tags: set(a.list("tags")),
        labels: set(a.list("labels")),
        timeout,
        priority: a.parsed("priority", "a whole number")?.unwrap_or(0),
        task_spec: TaskSpec {
            args,
            envs: envs(a)?,
            resources: resources(a)?,
            terminal_output: a.has("terminal"),
            watch: watch(a)?,
        },
    };
    let wait_timeout = a.value("wait-timeout").map(|t| duration_arg(a, "--wait-timeout", t)).transpose()?;
    let r = s.http.post("/tasks", &req)?;
    let resp: SubmitTaskResp = r.parse()?;
    if !a.has("wait") {
        if s.json(a) {
            print_json(&r.json()?);
        } else {
            println!(
                "Task submitted with id {} in group {} and a global uuid {}",
                resp.task_id, req.group_name, resp.uuid
            );
        }
        return Ok(());
    }
    if !s.json(a) {
        println!("Task submitted with id {} in group {} and a global uuid {}", resp.task_id, req.group_name, resp.uuid);
    }
    wait(s, a, &[resp.uuid], wait_timeout)
}

fn submit_many(s: &mut Session, a: &Args) -> Result<(), Error> {
    a.exact(&[])?;
    let file = a.value("file").ok_or_else(|| a.usage("missing -f <FILE>".into()))?;
    let text = std::fs::read_to_string(file).map_err(|e| Error::Failed(format!("cannot read {file}: {e}")))?;
    let tasks: Vec<SubmitTaskReq> = serde_json::from_str(&text)
        .map_err(|e| Error::Failed(format!("{file} is not a JSON array of task requests: {e}")))?;
    if tasks.is_empty() {
        return Err(Error::Failed(format!("{file} holds no tasks")));
    }
    let r = s.http.post("/tasks/submit", &TasksSubmitReq { tasks })?;
    let resp: TasksSubmitResp = r.parse()?;
    let failed = resp.results.iter().filter(|r| r.is_err()).count();
    if s.json(a) {
        print_json(&r.json()?);
    } else {
        for item in &resp.results {
            match item {
                Ok(t) => println!("Task submitted with uuid {}", t.uuid),
                Err(e) => println!("Task submission failed: {}", e.msg),
            }
        }
        println!("Batch submission completed: {} succeeded, {failed} failed", resp.results.len() - failed);
    }
    if failed > 0 {
        return Err(Error::Failed(format!("{failed} of {} tasks were not submitted", resp.results.len())));
    }
    Ok(())
}

fn get(s: &mut Session, a: &Args) -> Result<(), Error> {
    let pos = a.exact(&["UUID"])?;
    let uuid = uuid_arg(a, &pos[0])?;
    let r = s.http.get(&format!("/tasks/{uuid}"))?;
    if s.json(a) {
        print_json(&r.json()?);
        return Ok(());
    }
    let t: TaskQueryResp = r.parse()?;
    show(&t.info);
    if t.artifacts.is_empty() {
        println!("  Artifacts: None");
    }
    for art in &t.artifacts {
        println!(
            "  Artifacts: {} of size {}B, created at {} and updated at {}",
            art.content_type.file_name(),
            art.size,
            ts(&art.created_at),
            ts(&art.updated_at)
        );
    }
    Ok(())
}

/// A shell-like rendering of a command line.
fn command_line(args: &[String]) -> String {
    args.iter()
        .map(|w| {
            if !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c)) {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a result means, in words.
pub fn describe_result(r: &TaskResultSpec) -> String {
    let status = r.exit_status;
    let code = if status & 0x7f == 0 {
        format!("exit code {}", (status >> 8) & 0xff)
    } else {
        format!("signal {}", status & 0x7f)
    };
    match r.msg {
        Some(m) => format!("{m} (exit status {status})"),
        None if status == 0 => "exit status 0".into(),
        None => format!("exit status {status} ({code})"),
    }
}

fn show(t: &TaskQueryInfo) {
    println!("Task {}", t.uuid);
    println!("  State: {}", t.state);
    println!("  Created by user {} as the #{} task in group {}", t.creator_username, t.task_id, t.group_name);
    println!("  Tags: {}", list(&t.tags));
    println!("  Labels: {}", list(&t.labels));
    println!(
        "  Timeout {} and priority {}",
        humantime::format_duration(Duration::from_secs(t.timeout.max(0) as u64)),
        t.priority
    );
    println!("  Created at {}, updated at {}", ts(&t.created_at), ts(&t.updated_at));
    println!("  Command: {}", command_line(&t.spec.args));
    if !t.spec.envs.is_empty() {
        let e: Vec<String> = t.spec.envs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("  Envs: {}", list(&e));
    }
    for r in &t.spec.resources {
        match &r.remote_file {
            RemoteResource::Attachment { key } => println!("  Resource: attachment {key} -> {}", r.local_path),
            RemoteResource::Artifact { uuid, content_type } => {
                println!("  Resource: artifact {content_type} of {uuid} -> {}", r.local_path)
            }
        }
    }
    if t.spec.terminal_output {
        println!("  Terminal output: captured");
    }
    if let Some((u, st)) = &t.spec.watch {
        println!("  Watch: {u} reaching {st}");
    }
    println!("  Result: {}", t.result.as_ref().map(describe_result).unwrap_or_else(|| "None".into()));
    if t.upstream_task_uuid.is_some() || t.downstream_task_uuid.is_some() {
        println!("  Upstream: {}, downstream: {}", opt(&t.upstream_task_uuid), opt(&t.downstream_task_uuid));
    }
    if let Some(r) = &t.reporter_uuid {
        println!("  Reported by worker {r}");
    }
}

fn query(s: &mut Session, a: &Args) -> Result<(), Error> {
    a.exact(&[])?;
    let req = filter(s, a)?;
    let r = s.http.post("/tasks/query", &req)?;
    if s.json(a) {
        print_json(&r.json()?);
        return Ok(());
    }
    let r: TasksQueryResp = r.parse()?;
    println!("Found {} tasks in group {}", r.count, r.group_name);
    for t in &r.tasks {
        if a.has("verbose") {
            show(t);
        } else {
            println!("{}", t.uuid);
        }
    }
    Ok(())
}

/// Whether a task is done: archived with its result.
fn is_done(t: &TaskQueryInfo) -> bool {
    matches!(t.state, TaskState::Finished | TaskState::Cancelled) && t.result.is_some()
}

fn succeeded(t: &TaskQueryInfo) -> bool {
    t.state == TaskState::Finished && t.result.is_some_and(|r| r.exit_status == 0 && r.msg.is_none())
}

/// Polls until every task is done or time runs out; the exit status tells the outcome.
pub fn wait(s: &mut Session, a: &Args, uuids: &[Uuid], timeout: Option<Duration>) -> Result<(), Error> {
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

fn logs(s: &mut Session, a: &Args) -> Result<(), Error> {
    let pos = a.exact(&["UUID"])?;
    let uuid = uuid_arg(a, &pos[0])?;
    let r = match s.http.get(&format!("/tasks/{uuid}/download/artifacts/std-log")) {
        Ok(r) => r.json()?,
        Err(Error::Failed(m)) if m.contains(" 404 ") => {
            return Err(Error::Failed(format!(
                "task {uuid} has no captured output ({m}); it must be submitted with --terminal, and its output is uploaded when it ends"
            )))
        }
        Err(e) => return Err(e),
    };
    let (url, _) = super::attachments::url_and_size(&r)?;
    let (want_out, want_err) = match (a.has("stdout"), a.has("stderr")) {
        (false, false) => (true, true),
        other => other,
    };
    let json = s.json(a);
    let mut captured: BTreeMap<&str, String> = BTreeMap::new();
    artifacts::read_std_log(&url, |name, reader| {
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
    Ok(())
}

fn change(s: &mut Session, a: &Args) -> Result<(), Error> {
    let pos = &a.pos;
    if pos.len() != 1 {
        return Err(a.usage(if pos.is_empty() {
            "missing <UUID>".into()
        } else {
            format!("unexpected argument {:?}", pos[1])
        }));
    }
    let uuid = uuid_arg(a, &pos[0])?;
    let spec_change = a.trailing.as_ref().is_some_and(|t| !t.is_empty())
        || a.value("envs").is_some()
        || a.has("terminal")
        || a.value("watch").is_some();
    // Start from the current spec so that resources (and anything not given) survive.
    let task_spec = if spec_change {
        let cur: TaskQueryResp = s.http.get(&format!("/tasks/{uuid}"))?.parse()?;
        let mut spec = cur.info.spec;
        if let Some(t) = a.trailing.as_ref().filter(|t| !t.is_empty()) {
            spec.args = t.clone();
        }
        if a.value("envs").is_some() {
            spec.envs = envs(a)?;
        }
        if a.has("terminal") {
            spec.terminal_output = true;
        }
        if a.value("watch").is_some() {
            spec.watch = watch(a)?;
        }
        Some(spec)
    } else {
        None
    };
    let req = ChangeTaskReq {
        tags: a.opt_list("tags").map(set),
        timeout: a.value("timeout").map(|t| duration_arg(a, "--timeout", t)).transpose()?,
        priority: a.parsed("priority", "a whole number")?,
        task_spec,
    };
    if req.tags.is_none() && req.timeout.is_none() && req.priority.is_none() && req.task_spec.is_none() {
        return Err(
            a.usage("nothing to change: give -t, --timeout, -p, -e, --terminal, --watch or -- <COMMAND>".into())
        );
    }
    s.http.put(&format!("/tasks/{uuid}"), &req)?;
    if !s.json(a) {
        println!("Task {uuid} changed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_parse_both_forms_and_refuse_escapes() {
        let r = parse_resource("attachment=data/x.csv:in/x.csv").unwrap();
        assert_eq!(r.remote_file, RemoteResource::Attachment { key: "data/x.csv".into() });
        assert_eq!(r.local_path, "in/x.csv");
        let r = parse_resource("artifact=123e4567-e89b-12d3-a456-426614174000:EXEC:logs").unwrap();
        assert!(matches!(r.remote_file, RemoteResource::Artifact { content_type: ArtifactContentType::ExecLog, .. }));
        assert!(parse_resource("attachment=k:../x").is_err());
        assert!(parse_resource("attachment=k:/abs").is_err());
        assert!(parse_resource("file=k:x").is_err());
        assert!(parse_resource("artifact=nope:result:x").is_err());
    }

    #[test]
    fn results_read_as_words() {
        assert_eq!(describe_result(&TaskResultSpec { exit_status: 0, msg: None }), "exit status 0");
        assert_eq!(describe_result(&TaskResultSpec { exit_status: 256, msg: None }), "exit status 256 (exit code 1)");
        assert!(describe_result(&TaskResultSpec { exit_status: 0, msg: Some(TaskResultMessage::ExecTimeout) })
            .starts_with("ExecTimeout"));
    }

    #[test]
    fn commands_are_shown_with_quotes_where_needed() {
        assert_eq!(command_line(&["echo".into(), "Hello, Mitosis!".into()]), "echo 'Hello, Mitosis!'");
    }
}
