//! `tasks cancel`, `cancel-many`, `cancel-list` and `update-labels`: changes to tasks
//! that are already submitted.

use super::super::args::{Args, Spec};
use super::super::output::{list, print_json};
use super::super::task_args::{
    filter, uuid_arg, uuid_list, CREATORS, EXIT_STATUS, FILTER_GROUP, FILTER_LABELS, FILTER_PRIORITY, FILTER_TAGS,
    STATES,
};
use super::super::{CommandResult, Flow, Session};
use crate::api::*;
use std::collections::BTreeSet;
use uuid::Uuid;

pub(super) const CANCEL: Spec =
    Spec { name: "tasks cancel", usage: "<UUID>", about: "Cancel a task that has not started", flags: &[] };
pub(super) const CANCEL_MANY: Spec = Spec {
    name: "tasks cancel-many",
    usage: "",
    about: "Cancel the tasks that match a filter (only ready or pending ones)",
    flags: &[CREATORS, FILTER_GROUP, FILTER_TAGS, FILTER_LABELS, STATES, EXIT_STATUS, FILTER_PRIORITY],
};
pub(super) const CANCEL_LIST: Spec =
    Spec { name: "tasks cancel-list", usage: "<UUID,...>", about: "Cancel the listed tasks", flags: &[] };
pub(super) const UPDATE_LABELS: Spec =
    Spec { name: "tasks update-labels", usage: "<UUID> [LABEL]...", about: "Replace a task's labels", flags: &[] };

pub(super) fn cancel(s: &mut Session, a: &Args) -> CommandResult {
    let pos = a.exact(&["UUID"])?;
    let uuid = uuid_arg(a, &pos[0])?;
    s.http.delete(&format!("/tasks/{uuid}"))?;
    if !s.json(a) {
        println!("Task {uuid} cancelled");
    }
    Ok(Flow::Continue)
}

pub(super) fn cancel_many(s: &mut Session, a: &Args) -> CommandResult {
    a.exact(&[])?;
    let req = TasksCancelByFilterReq { filter: filter(s, a)? };
    let r = s.http.post("/tasks/cancel", &req)?;
    if s.json(a) {
        print_json(&r.json()?);
    } else {
        let r: TasksCancelByFilterResp = r.parse()?;
        println!("Cancelled {} tasks in group {}", r.cancelled_count, r.group_name);
    }
    Ok(Flow::Continue)
}

pub(super) fn cancel_list(s: &mut Session, a: &Args) -> CommandResult {
    let uuids = uuid_list(a)?;
    let r = s.http.post("/tasks/cancel/list", &TasksCancelByUuidsReq { uuids })?;
    if s.json(a) {
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
    Ok(Flow::Continue)
}

pub(super) fn update_labels(s: &mut Session, a: &Args) -> CommandResult {
    let pos = a.all_pos();
    let Some(first) = pos.first() else { return Err(a.usage("missing <UUID>".into())) };
    let uuid = uuid_arg(a, first)?;
    let labels: BTreeSet<String> = pos[1..].iter().cloned().collect();
    s.http.put(&format!("/tasks/{uuid}/labels"), &UpdateTaskLabelsReq { labels: labels.clone() })?;
    if !s.json(a) {
        println!("Labels of task {uuid} set to {}", list(&labels.into_iter().collect::<Vec<_>>()));
    }
    Ok(Flow::Continue)
}
