//! `groups ...`: create groups, show them, manage members; `groups attachments` lives in
//! attachments.rs.

use super::args::{Args, Command, Group, Spec};
use super::http::enc;
use super::output::{print_json, ts};
use super::transfer::human_bytes;
use super::{attachments, CommandResult, Flow, Session};
use crate::api::{CreateGroupReq, GroupQueryInfo, RemoveUserGroupRoleReq, UpdateUserGroupRoleReq, UserGroupRole};
use std::collections::BTreeMap;

const CREATE: Spec =
    Spec { name: "groups create", usage: "<GROUP>", about: "Create a group; you become its admin", flags: &[] };
const GET: Spec = Spec {
    name: "groups get",
    usage: "<GROUP>",
    about: "Show a group (members are listed for its admins)",
    flags: &[],
};
const UPDATE: Spec = Spec {
    name: "groups update-user",
    usage: "<GROUP> <USER:ROLE>...",
    about: "Add users to a group or change their role (read, write or admin)",
    flags: &[],
};
const REMOVE: Spec =
    Spec { name: "groups remove-user", usage: "<GROUP> <USER>...", about: "Remove users from a group", flags: &[] };

const GROUPS: Group = Group {
    name: "groups",
    about: "Groups, their members and attachments",
    commands: &[
        Command::cmd("create", "Create a group (you become its admin)", &CREATE, create),
        Command::cmd("get", "Show a group", &GET, get),
        Command::cmd("update-user", "Add members or change their roles", &UPDATE, update_user),
        Command::cmd("remove-user", "Remove members", &REMOVE, remove_user),
        Command::group("attachments", "Files stored in a group, usable as task resources", attachments::run),
    ],
    aliases: &[],
};

pub(super) fn run(s: &mut Session, words: &[String]) -> CommandResult {
    GROUPS.run(s, words)
}

fn create(s: &mut Session, a: &Args) -> CommandResult {
    let pos = a.exact(&["GROUP"])?;
    s.http.post("/groups", &CreateGroupReq { group_name: pos[0].clone() })?;
    if !s.json(a) {
        println!("Group {} created", pos[0]);
    }
    Ok(Flow::Continue)
}

fn get(s: &mut Session, a: &Args) -> CommandResult {
    let pos = a.exact(&["GROUP"])?;
    let r = s.http.get(&format!("/groups/{}", enc(&pos[0], false)))?;
    if s.json(a) {
        print_json(&r.json()?);
    } else {
        show(&r.parse()?);
    }
    Ok(Flow::Continue)
}

fn update_user(s: &mut Session, a: &Args) -> CommandResult {
    let pos = a.all_pos();
    if pos.len() < 2 {
        return Err(a.usage(format!("missing <{}>", if pos.is_empty() { "GROUP" } else { "USER:ROLE" })));
    }
    let mut relations = BTreeMap::new();
    for item in &pos[1..] {
        let (user, role) =
            item.split_once(':').ok_or_else(|| a.usage(format!("{item:?} is not USER:ROLE (e.g. alice:write)")))?;
        let role = parse_role(role)
            .ok_or_else(|| a.usage(format!("{role:?} in {item:?} is not a role: read, write or admin")))?;
        relations.insert(user.to_string(), role);
    }
    s.http.put(&format!("/groups/{}/users", enc(&pos[0], false)), &UpdateUserGroupRoleReq { relations })?;
    if !s.json(a) {
        println!("Updated {} members of group {}", pos.len() - 1, pos[0]);
    }
    Ok(Flow::Continue)
}

fn remove_user(s: &mut Session, a: &Args) -> CommandResult {
    let pos = a.all_pos();
    if pos.len() < 2 {
        return Err(a.usage(format!("missing <{}>", if pos.is_empty() { "GROUP" } else { "USER" })));
    }
    let users = pos[1..].iter().cloned().collect();
    s.http.post(&format!("/groups/{}/users/remove", enc(&pos[0], false)), &RemoveUserGroupRoleReq { users })?;
    if !s.json(a) {
        println!("Removed {} members from group {}", pos.len() - 1, pos[0]);
    }
    Ok(Flow::Continue)
}

/// A role in any case (`Read`, `write`, `ADMIN`, `Write`...).
pub(super) fn parse_role(s: &str) -> Option<UserGroupRole> {
    UserGroupRole::ALL.iter().find(|r| r.as_str().eq_ignore_ascii_case(s.trim())).copied()
}

fn show(g: &GroupQueryInfo) {
    println!("Group {}", g.group_name);
    println!("  Created by {} at {}, updated at {}", g.creator_username, ts(&g.created_at), ts(&g.updated_at));
    println!("  State: {}", g.state);
    println!("  Tasks: {}", g.task_count);
    println!(
        "  Storage(used/total): {} / {}",
        human_bytes(g.storage_used.max(0) as u64),
        human_bytes(g.storage_quota.max(0) as u64)
    );
    println!("  Workers: {}", g.worker_count);
    if let Some(users) = &g.users_in_group {
        println!("  Users in the group:");
        for (u, r) in users {
            println!("   > {u} = {r}");
        }
    }
}
