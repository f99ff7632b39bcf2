//! `tasks submit`, `tasks submit-many` and `tasks change`: building a task's spec from
//! the command line (environment, resources, watch) and sending it.

use super::super::args::{Args, Spec};
use super::super::output::print_json;
use super::super::task_args::{set, uuid_arg};
use super::super::{CommandResult, Error, Flow, Session};
use super::duration_arg;
use super::wait::wait;
use crate::api::*;
use crate::opts::OptSpec;
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;

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
const ARRAY: OptSpec = OptSpec::opt(
    "array",
    None,
    "START-END[:STEP][%K]",
    "Submit one task per index (END included, at most 10000), each with MITO_ARRAY_INDEX and MITO_ARRAY_ID in its \
     environment and the label array:<ID>; %K lets at most K of them run at once",
);
const ARRAY_SUBST: OptSpec =
    OptSpec::flag("array-subst", None, "With --array, replace {i} in the command's arguments by the index");
const WATCH: OptSpec =
    OptSpec::opt("watch", None, "UUID,STATE", "Start only once that task reaches STATE (e.g. ExecSpawned)");
const RETRIES: OptSpec = OptSpec::opt(
    "retries",
    None,
    "N",
    "Run the task again up to N more times when an attempt fails (default 0, at most 100)",
);
const RETRY_ON: OptSpec = OptSpec::opt(
    "retry-on",
    None,
    "OUTCOMES",
    "With --retries, which outcomes retry, comma-separated: failure (non-zero exit), timeout, lost (its worker \
     died or was removed) (default all three)",
);
const RETRY_BACKOFF: OptSpec = OptSpec::opt(
    "retry-backoff",
    None,
    "DURATION",
    "With --retries, the wait before the first retry, doubled for each next one, with jitter, at most 1h (default 0s)",
);
const AFTER: OptSpec = OptSpec::opt(
    "after",
    None,
    "UUIDS",
    "Start only after these tasks, comma-separated, all ended Finished with exit status 0; if one fails or is \
     cancelled, this task is cancelled",
);
const AFTER_ANY: OptSpec = OptSpec::opt(
    "after-any",
    None,
    "UUIDS",
    "Start only after these tasks, comma-separated, all ended, however they ended",
);

pub(super) const SUBMIT: Spec = Spec {
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
        ARRAY,
        ARRAY_SUBST,
        RETRIES,
        RETRY_ON,
        RETRY_BACKOFF,
        AFTER,
        AFTER_ANY,
        OptSpec::flag("wait", None, "Wait until the task is done; the exit status says whether it succeeded"),
        OptSpec::opt("wait-timeout", None, "DURATION", "With --wait, give up after this long (exit status 124)"),
    ],
};
pub(super) const SUBMIT_MANY: Spec = Spec {
    name: "tasks submit-many",
    usage: "",
    about: "Submit every task of a JSON file (an array of task requests, as POST /tasks takes them)",
    flags: &[OptSpec::opt("file", Some('f'), "FILE", "The JSON file")],
};
pub(super) const CHANGE: Spec = Spec {
    name: "tasks change",
    usage: "<UUID> [-- <COMMAND>...]",
    about: "Change a task that has not started; options not given stay as they are",
    flags: &[TAGS, TIMEOUT, PRIORITY, ENVS, TERMINAL, WATCH],
};

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
    a.list("resources").iter().map(|r| parse_resource(r).map_err(|e| a.usage(e.to_string()))).collect()
}

/// What is wrong with a `-r` resource; `spec` is the value as given.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ResourceError {
    Shape { spec: String },
    NotUuid { spec: String, uuid: String },
    NotArtifactType { spec: String, ty: String },
    LocalPath { spec: String, local: String },
}

impl std::fmt::Display for ResourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResourceError::Shape { spec } => {
                write!(f, "-r {spec:?} is not attachment=<KEY>:<LOCAL_PATH> or artifact=<UUID>:<TYPE>:<LOCAL_PATH>")
            }
            ResourceError::NotUuid { spec, uuid } => write!(f, "{uuid:?} in -r {spec:?} is not a UUID"),
            ResourceError::NotArtifactType { spec, ty } => {
                write!(f, "{ty:?} in -r {spec:?} is not an artifact type: result, exec-log or std-log")
            }
            ResourceError::LocalPath { spec, local } => {
                write!(f, "the local path {local:?} in -r {spec:?} must be relative and without '..'")
            }
        }
    }
}

impl std::error::Error for ResourceError {}

/// `attachment=<KEY>:<LOCAL_PATH>` or `artifact=<UUID>:<TYPE>:<LOCAL_PATH>`.
pub(super) fn parse_resource(r: &str) -> Result<RemoteResourceDownload, ResourceError> {
    let spec = || r.to_string();
    let (kind, rest) = r.split_once('=').ok_or_else(|| ResourceError::Shape { spec: spec() })?;
    let parts: Vec<&str> = rest.split(':').collect();
    let (remote_file, local) = match (kind.trim().to_ascii_lowercase().as_str(), parts.as_slice()) {
        ("attachment", [key, local]) => {
            (RemoteResource::Attachment { key: super::super::attachments::clean_key(key) }, *local)
        }
        ("artifact", [uuid, ty, local]) => {
            let uuid =
                Uuid::parse_str(uuid).map_err(|_| ResourceError::NotUuid { spec: spec(), uuid: uuid.to_string() })?;
            let content_type = ArtifactContentType::parse(ty)
                .or_else(|| ArtifactContentType::parse(&ty.to_ascii_lowercase()))
                .ok_or_else(|| ResourceError::NotArtifactType { spec: spec(), ty: ty.to_string() })?;
            (RemoteResource::Artifact { uuid, content_type }, *local)
        }
        _ => return Err(ResourceError::Shape { spec: spec() }),
    };
    if local.is_empty() || local.starts_with('/') || local.split('/').any(|s| s == "..") {
        return Err(ResourceError::LocalPath { spec: spec(), local: local.to_string() });
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

/// `--retries`, `--retry-on` and `--retry-backoff` as a policy (none without `--retries`).
fn retries(a: &Args) -> Result<Option<RetryPolicy>, Error> {
    let Some(max) = a.parsed::<u32>("retries", "a whole number of retries")? else {
        if a.value("retry-on").is_some() || a.value("retry-backoff").is_some() {
            return Err(a.usage("--retry-on and --retry-backoff need --retries N".into()));
        }
        return Ok(None);
    };
    let on = match a.value("retry-on") {
        None => RetryOn::every(),
        Some(_) => a
            .list("retry-on")
            .iter()
            .map(|o| {
                RetryOn::parse(o).ok_or_else(|| {
                    a.usage(format!("--retry-on {o:?} is not one of failure, timeout, lost (comma-separated)"))
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let backoff = match a.value("retry-backoff") {
        Some(b) => duration_arg(a, "--retry-backoff", b)?,
        None => Duration::ZERO,
    };
    Ok(Some(RetryPolicy { max, on, backoff }))
}

/// A comma-separated list of task uuids.
fn uuids(a: &Args, flag: &str) -> Result<Vec<Uuid>, Error> {
    a.list(flag).iter().map(|u| uuid_arg(a, u)).collect()
}

pub(super) fn submit(s: &mut Session, a: &Args) -> CommandResult {
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
        retries: retries(a)?,
        after: uuids(a, "after")?,
        after_any: uuids(a, "after-any")?,
    };
    let wait_timeout = a.value("wait-timeout").map(|t| duration_arg(a, "--wait-timeout", t)).transpose()?;
    if let Some(spec) = a.value("array") {
        let mut array = crate::api::array::parse(spec).map_err(|e| a.usage(e.to_string()))?;
        array.subst = a.has("array-subst");
        return submit_array(s, a, req, array, wait_timeout);
    }
    if a.has("array-subst") {
        return Err(a.usage("--array-subst needs --array".into()));
    }
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
        return Ok(Flow::Continue);
    }
    if !s.json(a) {
        println!("Task submitted with id {} in group {} and a global uuid {}", resp.task_id, req.group_name, resp.uuid);
    }
    wait(s, a, &[resp.uuid], wait_timeout)?;
    Ok(Flow::Continue)
}

/// `tasks submit --array`: the whole array in one request.
fn submit_array(
    s: &mut Session,
    a: &Args,
    req: SubmitTaskReq,
    array: ArraySpec,
    wait_timeout: Option<Duration>,
) -> CommandResult {
    let group = req.group_name.clone();
    let r = s.http.post("/tasks/submit", &TasksSubmitReq { tasks: vec![req], array: Some(array) })?;
    let resp: TasksSubmitResp = r.parse()?;
    let id = resp.array_id.ok_or_else(|| {
        Error::Failed(
            "the coordinator answered without an array id: it does not support arrays (a mitosis coordinator?)".into(),
        )
    })?;
    let uuids: Vec<Uuid> = resp.results.iter().filter_map(|r| r.as_ref().ok().map(|t| t.uuid)).collect();
    if s.json(a) && !a.has("wait") {
        print_json(&r.json()?);
    } else if !s.json(a) {
        println!("Array {id} submitted in group {group}: {} tasks", uuids.len());
    }
    if a.has("wait") {
        wait(s, a, &uuids, wait_timeout)?;
    }
    Ok(Flow::Continue)
}

pub(super) fn submit_many(s: &mut Session, a: &Args) -> CommandResult {
    a.exact(&[])?;
    let file = a.value("file").ok_or_else(|| a.usage("missing -f <FILE>".into()))?;
    let text = std::fs::read_to_string(file).map_err(Error::file("cannot read", file))?;
    let tasks: Vec<SubmitTaskReq> = serde_json::from_str(&text)
        .map_err(|e| Error::Failed(format!("{file} is not a JSON array of task requests: {e}")))?;
    if tasks.is_empty() {
        return Err(Error::Failed(format!("{file} holds no tasks")));
    }
    let r = s.http.post("/tasks/submit", &TasksSubmitReq { tasks, array: None })?;
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
    Ok(Flow::Continue)
}

pub(super) fn change(s: &mut Session, a: &Args) -> CommandResult {
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
    Ok(Flow::Continue)
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
        assert!(matches!(parse_resource("attachment=k:../x"), Err(ResourceError::LocalPath { .. })));
        let e = parse_resource("attachment=k:/abs").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"the local path "/abs" in -r "attachment=k:/abs" must be relative and without '..'"#
        );
        assert_eq!(parse_resource("file=k:x"), Err(ResourceError::Shape { spec: "file=k:x".into() }));
        let e = parse_resource("artifact=nope:result:x").unwrap_err();
        assert_eq!(e.to_string(), r#""nope" in -r "artifact=nope:result:x" is not a UUID"#);
        let e = parse_resource("artifact=123e4567-e89b-12d3-a456-426614174000:log:x").unwrap_err();
        assert!(matches!(e, ResourceError::NotArtifactType { ref ty, .. } if ty == "log"), "{e}");
    }
}
