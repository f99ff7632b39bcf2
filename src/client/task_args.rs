//! Flags and argument readers shared by several client command groups: the task filter
//! (query, cancel-many and the artifact batch commands) and UUID / artifact-type
//! positionals (tasks, artifacts, workers, admin). It imports no command module, so the
//! command modules never need to import each other for these.

use super::args::Args;
use super::{Error, Session};
use crate::api::{ArtifactContentType, TaskFilter, TaskState};
use crate::opts::OptSpec;
use std::collections::BTreeSet;
use uuid::Uuid;

pub(super) const CREATORS: OptSpec =
    OptSpec::opt("creators", Some('c'), "CREATORS", "Created by these users, comma-separated");
pub(super) const FILTER_GROUP: OptSpec =
    OptSpec::opt("group", Some('g'), "GROUP_NAME", "In this group (default: your own)");
pub(super) const FILTER_TAGS: OptSpec = OptSpec::opt("tags", Some('t'), "TAGS", "Having all these tags");
pub(super) const FILTER_LABELS: OptSpec = OptSpec::opt("labels", Some('l'), "LABELS", "Having all these labels");
pub(super) const STATES: OptSpec = OptSpec::opt(
    "states",
    Some('s'),
    "STATES",
    "In these states: pending, ready, running, finished, cancelled, unknown",
);
pub(super) const EXIT_STATUS: OptSpec = OptSpec::opt(
    "exit-status",
    Some('e'),
    "EXIT_STATUS",
    "Exit status test: 0, !=0, <, <=, >, >= followed by a number",
);
pub(super) const FILTER_PRIORITY: OptSpec =
    OptSpec::opt("priority", Some('p'), "PRIORITY", "Priority test, as for --exit-status");
pub(super) const REPORTER: OptSpec = OptSpec::opt("reporter-uuid", None, "UUID", "Committed by this worker");
pub(super) const LIMIT: OptSpec = OptSpec::opt("limit", None, "LIMIT", "At most this many");
pub(super) const OFFSET: OptSpec = OptSpec::opt("offset", None, "OFFSET", "Skip this many first");

pub(super) fn uuid_arg(a: &Args, s: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(s.trim()).map_err(|_| a.usage(format!("{s:?} is not a UUID")))
}

pub(super) fn content_type_arg(a: &Args, s: &str) -> Result<ArtifactContentType, Error> {
    ArtifactContentType::parse(s)
        .or_else(|| ArtifactContentType::parse(&s.to_ascii_lowercase()))
        .ok_or_else(|| a.usage(format!("{s:?} is not an artifact type: result, exec-log or std-log")))
}

/// UUIDs given as positionals, each possibly a comma list.
pub(super) fn uuid_list(a: &Args) -> Result<Vec<Uuid>, Error> {
    uuids_in(a, &a.all_pos())
}

/// The UUIDs in `words`, each possibly a comma list; at least one.
pub(super) fn uuids_in(a: &Args, words: &[String]) -> Result<Vec<Uuid>, Error> {
    let v: Vec<Uuid> = words
        .iter()
        .flat_map(|w| w.split(',').map(str::trim).filter(|x| !x.is_empty()).map(str::to_string).collect::<Vec<_>>())
        .map(|w| uuid_arg(a, &w))
        .collect::<Result<_, _>>()?;
    if v.is_empty() {
        return Err(a.usage("missing <UUID>".into()));
    }
    Ok(v)
}

pub(super) fn set(v: Vec<String>) -> BTreeSet<String> {
    v.into_iter().collect()
}

/// The task filter flags shared by query, cancel-many and the artifact batch commands;
/// the group defaults to the caller's own.
pub(super) fn filter(s: &Session, a: &Args) -> Result<TaskFilter, Error> {
    let states = match a.opt_list("states") {
        None => None,
        Some(v) => Some(
            v.iter()
                .map(|st| {
                    TaskState::ALL.iter().copied().find(|x| x.as_str().eq_ignore_ascii_case(st)).ok_or_else(|| {
                        a.usage(format!(
                            "-s {st:?} is not a state: pending, ready, running, finished, cancelled or unknown"
                        ))
                    })
                })
                .collect::<Result<BTreeSet<_>, _>>()?,
        ),
    };
    Ok(TaskFilter {
        creator_usernames: a.opt_list("creators").map(set),
        group_name: Some(a.value("group").map(str::to_string).unwrap_or_else(|| s.user.clone())),
        tags: a.opt_list("tags").map(set),
        labels: a.opt_list("labels").map(set),
        states,
        exit_status: a.value("exit-status").map(str::to_string),
        priority: a.value("priority").map(str::to_string),
    })
}

/// `--reporter-uuid`, which query and the artifact batch commands add to the filter.
pub(super) fn reporter(a: &Args) -> Result<Option<Uuid>, Error> {
    a.value("reporter-uuid").map(|u| uuid_arg(a, u)).transpose()
}
