//! `tasks get` and `tasks query`: finding tasks and showing them in words.

use super::super::args::{Args, Spec};
use super::super::output::{list, opt, print_json, ts};
use super::super::task_args::{
    array_tasks, filter, reporter, uuid_arg, CREATORS, EXIT_STATUS, FILTER_ARRAY, FILTER_GROUP, FILTER_LABELS,
    FILTER_PRIORITY, FILTER_TAGS, LIMIT, OFFSET, REPORTER, STATES,
};
use super::super::{CommandResult, Flow, Session};
use crate::api::*;
use crate::opts::OptSpec;
use std::time::Duration;

const VERBOSE: OptSpec = OptSpec::flag("verbose", Some('v'), "Show every field, not only the uuid");
const COUNT: OptSpec = OptSpec::flag("count", None, "Only count");

pub(super) const GET: Spec = Spec {
    name: "tasks get",
    usage: "<UUID> | --array <ARRAY_ID>",
    about: "Show a task, its result and artifacts; or an array's tasks counted by state and exit status",
    flags: &[FILTER_GROUP, FILTER_ARRAY],
};
pub(super) const QUERY: Spec = Spec {
    name: "tasks query",
    usage: "",
    about: "Find tasks",
    flags: &[
        CREATORS,
        FILTER_GROUP,
        FILTER_TAGS,
        FILTER_LABELS,
        FILTER_ARRAY,
        STATES,
        EXIT_STATUS,
        FILTER_PRIORITY,
        REPORTER,
        LIMIT,
        OFFSET,
        VERBOSE,
        COUNT,
    ],
};

pub(super) fn get(s: &mut Session, a: &Args) -> CommandResult {
    if a.value("array").is_some() {
        return get_array(s, a);
    }
    let pos = a.exact(&["UUID"])?;
    let uuid = uuid_arg(a, &pos[0])?;
    let r = s.http.get(&format!("/tasks/{uuid}"))?;
    if s.json(a) {
        print_json(&r.json()?);
        return Ok(Flow::Continue);
    }
    let t: TaskQueryResp = r.parse()?;
    show(&t.info);
    if let Some(note) = &t.info.note {
        println!("  Note: {note}");
    }
    for at in &t.attempts {
        println!(
            "  Attempt {}: {}{}, worker {}, started {}, ended {}",
            at.attempt,
            at.outcome,
            at.result.as_ref().map(|r| format!(" ({})", describe_result(r))).unwrap_or_default(),
            at.worker.map(|w| w.to_string()).unwrap_or_else(|| "-".into()),
            at.started_at.as_ref().map(ts).unwrap_or_else(|| "-".into()),
            ts(&at.ended_at)
        );
        for art in &at.artifacts {
            println!(
                "    Artifact: {} of size {}B (tasks artifacts download {} {} --attempt {})",
                art.content_type.file_name(),
                art.size,
                t.info.uuid,
                art.content_type,
                at.attempt
            );
        }
    }
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
    Ok(Flow::Continue)
}

/// `tasks get --array`: how many of the array's tasks are in each state, and how the
/// finished ones ended.
fn get_array(s: &mut Session, a: &Args) -> CommandResult {
    a.exact(&[])?;
    let tasks = array_tasks(s, a, None)?;
    let mut states: std::collections::BTreeMap<String, usize> = Default::default();
    let mut results: std::collections::BTreeMap<String, usize> = Default::default();
    for t in &tasks {
        *states.entry(t.state.to_string()).or_default() += 1;
        if let Some(r) = &t.result {
            *results.entry(describe_result(r)).or_default() += 1;
        }
    }
    if s.json(a) {
        print_json(&serde_json::json!({"tasks": tasks.len(), "states": states, "results": results}));
        return Ok(Flow::Continue);
    }
    println!("Array {}: {} tasks", a.value("array").unwrap_or_default(), tasks.len());
    for (state, n) in &states {
        println!("  {state}: {n}");
    }
    for (result, n) in &results {
        println!("  ended with {result}: {n}");
    }
    Ok(Flow::Continue)
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
pub(super) fn describe_result(r: &TaskResultSpec) -> String {
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

pub(super) fn query(s: &mut Session, a: &Args) -> CommandResult {
    a.exact(&[])?;
    let req = TasksQueryReq {
        filter: filter(s, a)?,
        reporter_uuid: reporter(a)?,
        limit: a.parsed("limit", "a whole number")?,
        offset: a.parsed("offset", "a whole number")?,
        count: a.has("count"),
    };
    let r = s.http.post("/tasks/query", &req)?;
    if s.json(a) {
        print_json(&r.json()?);
        return Ok(Flow::Continue);
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
    Ok(Flow::Continue)
}

#[cfg(test)]
mod tests {
    use super::*;

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
