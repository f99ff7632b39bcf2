//! `workers ...`: find workers, change their tags, labels and group roles, and stop them.

use super::args::{Args, Command, Group, Spec};
use super::output::{list, opt, print_json, ts};
use super::task_args::{uuid_arg, uuid_list, FILTER_LABELS, FILTER_TAGS};
use super::{CommandResult, Error, Flow, Session};
use crate::api::*;
use crate::opts::OptSpec;
use std::collections::{BTreeMap, BTreeSet};

const FORCE: OptSpec =
    OptSpec::flag("force", Some('f'), "Stop at once (the running task is requeued) instead of after the current task");
/// The group whose workers a filter means (not `task_args::FILTER_GROUP`: workers are not in a group, groups
/// have roles on them).
const FILTER_GROUP: OptSpec = OptSpec::opt("group", Some('g'), "GROUP_NAME", "The group (default: your own)");
const ROLES: OptSpec =
    OptSpec::opt("roles", Some('r'), "ROLES", "The group's roles on the worker: read, write, admin (comma-separated)");
const CREATOR: OptSpec = OptSpec::opt("creator", None, "USERNAME", "Registered by this user");

const GET: Spec = Spec { name: "workers get", usage: "<UUID>", about: "Show a worker", flags: &[] };
const QUERY: Spec = Spec {
    name: "workers query",
    usage: "",
    about: "Find the workers a group has a role on",
    flags: &[
        FILTER_GROUP,
        ROLES,
        FILTER_TAGS,
        FILTER_LABELS,
        CREATOR,
        OptSpec::flag("verbose", Some('v'), "Show every field"),
        OptSpec::flag("count", None, "Only count"),
    ],
};
const CANCEL: Spec = Spec {
    name: "workers cancel",
    usage: "<UUID>",
    about: "Stop a worker (after its current task unless --force)",
    flags: &[FORCE],
};
const CANCEL_MANY: Spec = Spec {
    name: "workers cancel-many",
    usage: "",
    about: "Stop the workers that match a filter (those the group administers)",
    flags: &[FILTER_GROUP, ROLES, FILTER_TAGS, FILTER_LABELS, CREATOR, FORCE],
};
const CANCEL_LIST: Spec =
    Spec { name: "workers cancel-list", usage: "<UUID,...>", about: "Stop the listed workers", flags: &[FORCE] };
const UPDATE_TAGS: Spec =
    Spec { name: "workers update-tags", usage: "<UUID> <TAG>...", about: "Replace a worker's tags", flags: &[] };
const UPDATE_LABELS: Spec =
    Spec { name: "workers update-labels", usage: "<UUID> <LABEL>...", about: "Replace a worker's labels", flags: &[] };
const UPDATE_ROLES: Spec = Spec {
    name: "workers update-roles",
    usage: "<UUID> <GROUP:ROLE>...",
    about: "Give groups a role on a worker (read, write: its tasks run there, admin: manages it)",
    flags: &[],
};
const REMOVE_ROLES: Spec =
    Spec { name: "workers remove-roles", usage: "<UUID> <GROUP>...", about: "Take groups off a worker", flags: &[] };

const WORKERS: Group = Group {
    name: "workers",
    about: "Query and manage workers",
    commands: &[
        Command::cmd("get", "Show a worker", &GET, get),
        Command::cmd("query", "Find the workers serving a group", &QUERY, query),
        Command::cmd("cancel", "Stop a worker", &CANCEL, cancel),
        Command::cmd("cancel-many", "Stop the workers that match a filter", &CANCEL_MANY, cancel_many),
        Command::cmd("cancel-list", "Stop the listed workers", &CANCEL_LIST, cancel_list),
        Command::cmd("update-tags", "Replace a worker's tags", &UPDATE_TAGS, |s, a| replace_tags_or_labels(s, a, true)),
        Command::cmd("update-labels", "Replace a worker's labels", &UPDATE_LABELS, |s, a| {
            replace_tags_or_labels(s, a, false)
        }),
        Command::cmd("update-roles", "Give groups a role on a worker", &UPDATE_ROLES, update_roles),
        Command::cmd("remove-roles", "Take groups off a worker", &REMOVE_ROLES, remove_roles),
    ],
    aliases: &[],
};

pub(super) fn run(s: &mut Session, words: &[String]) -> CommandResult {
    WORKERS.run(s, words)
}

fn shutdown_op(a: &Args) -> WorkerShutdownOp {
    if a.has("force") {
        WorkerShutdownOp::Force
    } else {
        WorkerShutdownOp::Graceful
    }
}

fn cancel(s: &mut Session, a: &Args) -> CommandResult {
    let pos = a.exact(&["UUID"])?;
    let uuid = uuid_arg(a, &pos[0])?;
    s.http.delete(&format!("/workers/{uuid}?op={}", shutdown_op(a).as_str().to_ascii_lowercase()))?;
    if !s.json(a) {
        println!("Worker {uuid} {}", if a.has("force") { "stopped" } else { "asked to stop after its current task" });
    }
    Ok(Flow::Continue)
}

fn cancel_many(s: &mut Session, a: &Args) -> CommandResult {
    a.exact(&[])?;
    let req = WorkersShutdownByFilterReq {
        group_name: Some(group(s, a)),
        role: roles(a)?,
        tags: a.opt_list("tags").map(|v| v.into_iter().collect()),
        labels: a.opt_list("labels").map(|v| v.into_iter().collect()),
        creator_username: a.value("creator").map(str::to_string),
        op: shutdown_op(a),
    };
    let r = s.http.post("/workers/shutdown", &req)?;
    if s.json(a) {
        print_json(&r.json()?);
    } else {
        let r: WorkersShutdownByFilterResp = r.parse()?;
        println!("Shutdown {} workers in group {}", r.shutdown_count, r.group_name);
    }
    Ok(Flow::Continue)
}

fn cancel_list(s: &mut Session, a: &Args) -> CommandResult {
    let uuids = uuid_list(a)?;
    let r = s.http.post("/workers/shutdown/list", &WorkersShutdownByUuidsReq { uuids, op: shutdown_op(a) })?;
    if s.json(a) {
        print_json(&r.json()?);
    } else {
        let r: WorkersShutdownByUuidsResp = r.parse()?;
        println!("Shutdown {} workers", r.shutdown_count);
        if !r.failed_uuids.is_empty() {
            let v: Vec<String> = r.failed_uuids.iter().map(|u| u.to_string()).collect();
            println!("Failed to shut down {} workers: {}", v.len(), v.join(", "));
        }
    }
    Ok(Flow::Continue)
}

/// `update-tags` (tags true) and `update-labels`: the same replacement on two fields.
fn replace_tags_or_labels(s: &mut Session, a: &Args, tags: bool) -> CommandResult {
    let (uuid, items) = uuid_and_items(a, if tags { "TAG" } else { "LABEL" })?;
    let set: BTreeSet<String> = items.into_iter().collect();
    if tags {
        s.http.put(&format!("/workers/{uuid}/tags"), &ReplaceWorkerTagsReq { tags: set.clone() })?;
    } else {
        s.http.put(&format!("/workers/{uuid}/labels"), &ReplaceWorkerLabelsReq { labels: set.clone() })?;
    }
    if !s.json(a) {
        let what = if tags { "Tags" } else { "Labels" };
        println!("{what} of worker {uuid} set to {}", list(&set.into_iter().collect::<Vec<_>>()));
    }
    Ok(Flow::Continue)
}

fn update_roles(s: &mut Session, a: &Args) -> CommandResult {
    let (uuid, items) = uuid_and_items(a, "GROUP:ROLE")?;
    let mut relations = BTreeMap::new();
    for item in &items {
        let (g, r) =
            item.split_once(':').ok_or_else(|| a.usage(format!("{item:?} is not GROUP:ROLE (e.g. lab:write)")))?;
        let role = GroupWorkerRole::ALL
            .iter()
            .copied()
            .find(|x| x.as_str().eq_ignore_ascii_case(r))
            .ok_or_else(|| a.usage(format!("{r:?} in {item:?} is not a role: read, write or admin")))?;
        relations.insert(g.to_string(), role);
    }
    s.http.put(&format!("/workers/{uuid}/groups"), &UpdateGroupWorkerRoleReq { relations })?;
    if !s.json(a) {
        println!("Updated {} group roles of worker {uuid}", items.len());
    }
    Ok(Flow::Continue)
}

fn remove_roles(s: &mut Session, a: &Args) -> CommandResult {
    let (uuid, items) = uuid_and_items(a, "GROUP")?;
    let query: Vec<String> = items.iter().map(|g| format!("groups={}", super::http::enc(g, false))).collect();
    s.http.delete(&format!("/workers/{uuid}/groups?{}", query.join("&")))?;
    if !s.json(a) {
        println!("Removed {} groups from worker {uuid}", items.len());
    }
    Ok(Flow::Continue)
}

fn group(s: &Session, a: &Args) -> String {
    a.value("group").map(str::to_string).unwrap_or_else(|| s.user.clone())
}

fn roles(a: &Args) -> Result<Option<BTreeSet<GroupWorkerRole>>, Error> {
    a.opt_list("roles")
        .map(|v| {
            v.iter()
                .map(|r| {
                    GroupWorkerRole::ALL
                        .iter()
                        .copied()
                        .find(|x| x.as_str().eq_ignore_ascii_case(r))
                        .ok_or_else(|| a.usage(format!("-r {r:?} is not a role: read, write or admin")))
                })
                .collect()
        })
        .transpose()
}

fn uuid_and_items(a: &Args, what: &str) -> Result<(uuid::Uuid, Vec<String>), Error> {
    let pos = a.all_pos();
    let Some(first) = pos.first() else { return Err(a.usage("missing <UUID>".into())) };
    let uuid = uuid_arg(a, first)?;
    if pos.len() < 2 {
        return Err(a.usage(format!("missing <{what}>")));
    }
    Ok((uuid, pos[1..].to_vec()))
}

fn get(s: &mut Session, a: &Args) -> CommandResult {
    let pos = a.exact(&["UUID"])?;
    let uuid = uuid_arg(a, &pos[0])?;
    let r = s.http.get(&format!("/workers/{uuid}"))?;
    if s.json(a) {
        print_json(&r.json()?);
        return Ok(Flow::Continue);
    }
    let w: WorkerQueryResp = r.parse()?;
    show(&w.info);
    let groups: Vec<String> = w.groups.iter().map(|(g, r)| format!("{g} ({r})")).collect();
    println!("  Accessible groups: {}", list(&groups));
    Ok(Flow::Continue)
}

fn show(w: &WorkerQueryInfo) {
    println!("Worker {}", w.worker_id);
    println!("  Tags: {}", list(&w.tags));
    println!("  Labels: {}", list(&w.labels));
    println!("  State: {}", w.state);
    println!("  Created by {} at {}, updated at {}", w.creator_username, ts(&w.created_at), ts(&w.updated_at));
    println!("  Last heartbeat: {}", ts(&w.last_heartbeat));
    println!("  Assigned task: {}", opt(&w.assigned_task_id));
}

fn query(s: &mut Session, a: &Args) -> CommandResult {
    a.exact(&[])?;
    let req = WorkersQueryReq {
        group_name: Some(group(s, a)),
        role: roles(a)?,
        tags: a.opt_list("tags").map(|v| v.into_iter().collect()),
        labels: a.opt_list("labels").map(|v| v.into_iter().collect()),
        creator_username: a.value("creator").map(str::to_string),
        count: a.has("count"),
    };
    let r = s.http.post("/workers/query", &req)?;
    if s.json(a) {
        print_json(&r.json()?);
        return Ok(Flow::Continue);
    }
    let r: WorkersQueryResp = r.parse()?;
    println!("Found {} workers in group {}", r.count, r.group_name);
    for w in &r.workers {
        if a.has("verbose") {
            show(w);
        } else {
            println!("{}", w.worker_id);
        }
    }
    Ok(Flow::Continue)
}
