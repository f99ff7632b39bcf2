//! `admin ...`: commands for administrators (users, quotas, forced deletions, shutdown).

use super::args::{Args, Command, Group, Spec};
use super::http::enc;
use super::output::print_json;
use super::users::{arg_or_ask, ask};
use super::{attachments, task_args, CommandResult, Error, Flow, Session};
use crate::api::{
    self, AdminChangePasswordReq, ChangeGroupStorageQuotaReq, ChangeUserGroupQuota, ChangeUserStateReq, CreateUserReq,
    ShutdownReq, UserState,
};
use crate::opts::OptSpec;

const CREATE: Spec = Spec {
    name: "admin users create",
    usage: "[USERNAME] [PASSWORD]",
    about: "Create a user, with a personal group of the same name (asks for what is not given)",
    flags: &[OptSpec::flag("admin", None, "Make the user an administrator")],
};
const DELETE: Spec = Spec { name: "admin users delete", usage: "<USERNAME>", about: "Delete a user", flags: &[] };
const PASSWORD: Spec = Spec {
    name: "admin users change-password",
    usage: "[USERNAME] [NEW_PASSWORD]",
    about: "Set a user's password (signs the user out everywhere)",
    flags: &[],
};
const GROUP_QUOTA: Spec = Spec {
    name: "admin users group-quota",
    usage: "<USERNAME> <GROUP_QUOTA>",
    about: "Change how many groups a user may create: N or =N sets, +N adds, -N subtracts",
    flags: &[],
};
const STATE: Spec = Spec {
    name: "admin users state",
    usage: "<USERNAME> <STATE>",
    about: "Set a user's state: Active, Locked or Deleted",
    flags: &[],
};
const SHUTDOWN: Spec = Spec {
    name: "admin shutdown",
    usage: "<SECRET>",
    about: "Stop the coordinator (the secret is in the coordinator's log)",
    flags: &[],
};
const STORAGE_QUOTA: Spec = Spec {
    name: "admin groups storage-quota",
    usage: "<GROUP_NAME> <STORAGE_QUOTA>",
    about: "Change a group's storage quota: 10GB or =10GB sets, +1GiB adds, -500MB subtracts (write `-- -500MB`)",
    flags: &[],
};
const ATT_DELETE: Spec = Spec {
    name: "admin groups attachments delete",
    usage: "<KEY>",
    about: "Delete an attachment of any group, even a recent one",
    flags: &[
        OptSpec::opt("group", Some('g'), "GROUP", "The group (default: your own)"),
        OptSpec::flag("smart", Some('s'), "Take the group from the key's first path segment"),
    ],
};
const ART_DELETE: Spec = Spec {
    name: "admin tasks artifacts delete",
    usage: "<UUID> <CONTENT_TYPE>",
    about: "Delete an artifact of any task (result, exec-log or std-log), even a recent one",
    flags: &[],
};
const WORKER_CANCEL: Spec = Spec {
    name: "admin workers cancel",
    usage: "<UUID>",
    about: "Stop any worker, gracefully (after its task) or at once with --force (its task is requeued)",
    flags: &[OptSpec::flag("force", Some('f'), "Stop at once")],
};

const ADMIN: Group = Group {
    name: "admin",
    about: "Administrator commands (users, quotas, shutdown)",
    commands: &[
        Command::group("users", "Create and delete users, reset passwords, set group quotas", |s, w| USERS.run(s, w)),
        Command::group("groups", "Storage quotas and attachments of any group", |s, w| GROUPS.run(s, w)),
        Command::group("tasks", "Artifacts of any task", |s, w| TASKS.run(s, w)),
        Command::group("workers", "Stop any worker", |s, w| WORKERS.run(s, w)),
        Command::cmd("shutdown", "Stop the coordinator", &SHUTDOWN, shutdown),
    ],
    aliases: &[],
};

const USERS: Group = Group {
    name: "admin users",
    about: "Manage users",
    commands: &[
        Command::cmd("create", "Create a user", &CREATE, create_user),
        Command::cmd("delete", "Delete a user", &DELETE, delete_user),
        Command::cmd("change-password", "Set a user's password", &PASSWORD, change_password),
        Command::cmd("group-quota", "Change how many groups a user may create", &GROUP_QUOTA, group_quota),
        Command::cmd("state", "Lock or unlock a user (Active, Locked, Deleted)", &STATE, user_state),
    ],
    aliases: &[],
};

const GROUPS: Group = Group {
    name: "admin groups",
    about: "Manage any group",
    commands: &[
        Command::cmd("storage-quota", "Change a group's storage quota", &STORAGE_QUOTA, storage_quota),
        Command::group("attachments", "Delete any attachment", |s, w| GROUP_ATTACHMENTS.run(s, w)),
    ],
    aliases: &[],
};

const GROUP_ATTACHMENTS: Group = Group {
    name: "admin groups attachments",
    about: "Delete any attachment",
    commands: &[Command::cmd("delete", "Delete one attachment", &ATT_DELETE, delete_attachment)],
    aliases: &[],
};

const TASKS: Group = Group {
    name: "admin tasks",
    about: "Artifacts of any task",
    commands: &[Command::group("artifacts", "Delete any task's artifact", |s, w| TASK_ARTIFACTS.run(s, w))],
    aliases: &[],
};

const TASK_ARTIFACTS: Group = Group {
    name: "admin tasks artifacts",
    about: "Artifacts of any task",
    commands: &[Command::cmd("delete", "Delete an artifact", &ART_DELETE, delete_artifact)],
    aliases: &[],
};

const WORKERS: Group = Group {
    name: "admin workers",
    about: "Stop any worker",
    commands: &[Command::cmd("cancel", "Stop a worker", &WORKER_CANCEL, cancel_worker)],
    aliases: &[],
};

pub(super) fn run(s: &mut Session, words: &[String]) -> CommandResult {
    ADMIN.run(s, words)
}

fn create_user(s: &mut Session, a: &Args) -> CommandResult {
    let pos = a.at_most(2)?;
    let name = arg_or_ask(pos.first(), "Username: ", false)?;
    if !api::valid_name(&name) {
        return Err(a.usage(format!("{name:?} is not a valid username: 1 to 255 letters, digits, '-' or '_'")));
    }
    let pw = arg_or_ask(pos.get(1), &format!("Password for {name}: "), true)?;
    let req = CreateUserReq { username: name.clone(), md5_password: api::md5_password(&pw), admin: a.has("admin") };
    s.http.post("/admin/users", &req)?;
    if !s.json(a) {
        println!("User {name} created{}", if a.has("admin") { " (administrator)" } else { "" });
    }
    Ok(Flow::Continue)
}

fn delete_user(s: &mut Session, a: &Args) -> CommandResult {
    let [name] = <[String; 1]>::try_from(a.exact(&["USERNAME"])?).map_err(|_| a.usage("one username".into()))?;
    let r = s.http.delete(&format!("/admin/users/{}", enc(&name, false)))?;
    if s.json(a) {
        print_json(&r.json()?);
    } else {
        println!("User {name} deleted");
    }
    Ok(Flow::Continue)
}

fn change_password(s: &mut Session, a: &Args) -> CommandResult {
    let pos = a.at_most(2)?;
    let name = arg_or_ask(pos.first(), "Username: ", false)?;
    let pw = match pos.get(1) {
        Some(p) => p.clone(),
        None => ask(&format!("New password for {name}: "), true)?,
    };
    let req = AdminChangePasswordReq { new_md5_password: api::md5_password(&pw) };
    s.http.post(&format!("/admin/users/{}/password", enc(&name, false)), &req)?;
    if !s.json(a) {
        println!("Password changed for {name}");
    }
    Ok(Flow::Continue)
}

fn group_quota(s: &mut Session, a: &Args) -> CommandResult {
    let pos = a.exact(&["USERNAME", "GROUP_QUOTA"])?;
    api::quota::QuotaChange::parse(&pos[1], api::quota::parse_count).map_err(|e| a.usage(e.to_string()))?;
    let req = ChangeUserGroupQuota { group_quota: pos[1].clone() };
    let r = s.http.post(&format!("/admin/users/{}/group-quota", enc(&pos[0], false)), &req)?;
    if s.json(a) {
        print_json(&r.json()?);
    } else {
        let q: api::UserGroupQuotaResp = r.parse()?;
        println!("Successfully updated user group quota to {}", q.group_quota);
    }
    Ok(Flow::Continue)
}

fn user_state(s: &mut Session, a: &Args) -> CommandResult {
    let pos = a.exact(&["USERNAME", "STATE"])?;
    let state = UserState::ALL
        .iter()
        .find(|st| st.as_str().eq_ignore_ascii_case(&pos[1]))
        .copied()
        .ok_or_else(|| a.usage(format!("{:?} is not a state: expected {}", pos[1], UserState::expected())))?;
    let r = s.http.post(&format!("/admin/users/{}/state", enc(&pos[0], false)), &ChangeUserStateReq { state })?;
    if s.json(a) {
        print_json(&r.json()?);
    } else {
        println!("User {} is now {state}", pos[0]);
    }
    Ok(Flow::Continue)
}

fn storage_quota(s: &mut Session, a: &Args) -> CommandResult {
    let pos = a.exact(&["GROUP_NAME", "STORAGE_QUOTA"])?;
    api::quota::QuotaChange::parse(&pos[1], api::quota::parse_size).map_err(|e| a.usage(e.to_string()))?;
    let req = ChangeGroupStorageQuotaReq { storage_quota: pos[1].clone() };
    let r = s.http.post(&format!("/admin/groups/{}/storage-quota", enc(&pos[0], false)), &req)?;
    if s.json(a) {
        print_json(&r.json()?);
    } else {
        let q: api::GroupStorageQuotaResp = r.parse()?;
        println!(
            "Successfully updated group storage quota to {} ({} bytes)",
            super::transfer::human_bytes(q.storage_quota.max(0) as u64),
            q.storage_quota
        );
    }
    Ok(Flow::Continue)
}

fn delete_attachment(s: &mut Session, a: &Args) -> CommandResult {
    let [key] = <[String; 1]>::try_from(a.exact(&["KEY"])?).map_err(|_| a.usage("one key".into()))?;
    let (group, key) = attachments::resolve(s, a.value("group"), &key, a.has("smart"))?;
    s.http.delete(&format!("/admin/groups/{}/attachments/{}", enc(&group, false), enc(&key, true)))?;
    if !s.json(a) {
        println!("Attachment {key} of group {group} deleted");
    }
    Ok(Flow::Continue)
}

fn delete_artifact(s: &mut Session, a: &Args) -> CommandResult {
    let pos = a.exact(&["UUID", "CONTENT_TYPE"])?;
    let uuid = task_args::uuid_arg(a, &pos[0])?;
    let ct = task_args::content_type_arg(a, &pos[1])?;
    s.http.delete(&format!("/admin/tasks/{uuid}/artifacts/{ct}"))?;
    if !s.json(a) {
        println!("Artifact {ct} of task {uuid} deleted");
    }
    Ok(Flow::Continue)
}

fn cancel_worker(s: &mut Session, a: &Args) -> CommandResult {
    let pos = a.exact(&["UUID"])?;
    let uuid = task_args::uuid_arg(a, &pos[0])?;
    let op = if a.has("force") { "force" } else { "graceful" };
    s.http.delete(&format!("/admin/workers/{uuid}?op={op}"))?;
    if !s.json(a) {
        println!("Worker {uuid} {}", if a.has("force") { "stopped" } else { "asked to stop after its current task" });
    }
    Ok(Flow::Continue)
}

fn shutdown(s: &mut Session, a: &Args) -> CommandResult {
    let pos = a.exact(&["SECRET"])?;
    s.http.post("/admin/shutdown", &ShutdownReq { secret: pos[0].clone() }).map_err(|e| match e {
        e @ (Error::Usage(_) | Error::Exit(_)) => e,
        e => Error::Failed(format!("{e} (is the secret the one in the coordinator's log?)")),
    })?;
    if !s.json(a) {
        println!("Coordinator shutdown successfully");
    }
    Ok(Flow::Quit)
}
