//! The route table: which endpoint a method and path name, who may call it, and the
//! handler that serves it.
//!
//! Matching follows the peer: no trailing slashes, static segments beat captures, an
//! existing path with another method is 405, anything else 404. Authentication runs
//! before the body is read, so a bad token wins over a bad body.

mod admin;
mod groups;
mod misc;
pub mod tasks;
mod users;
pub mod worker_api;
mod workers;

use super::auth::{self, AuthUser, AuthWorker};
use super::error::ApiError;
use super::server::{Call, Reply};
use super::Ctx;
use tiny_http::Method;
use uuid::Uuid;

/// Every endpoint, with its path parameters.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Health,
    Login,
    Auth,
    Redis,
    ChangePassword(String),
    UserGroups,
    CreateGroup,
    GetGroup(String),
    UpdateGroupUsers(String),
    RemoveGroupUsersByQuery(String),
    RemoveGroupUsers(String),
    AdminCreateUser,
    AdminDeleteUser(String),
    AdminChangePassword(String),
    AdminGroupQuota(String),
    AdminUserState(String),
    AdminStorageQuota(String),
    AdminShutdown,
    SubmitTask,
    SubmitTasks,
    GetTask(Uuid),
    ChangeTask(Uuid),
    CancelTask(Uuid),
    TaskLabels(Uuid),
    QueryTasks,
    CancelTasks,
    CancelTaskList,
    RegisterWorker,
    Unregister,
    Heartbeat,
    FetchTask,
    ReportTask,
    WorkerGetTask(Uuid),
    GetWorker(Uuid),
    ShutdownWorker(Uuid),
    WorkerTags(Uuid),
    WorkerLabels(Uuid),
    WorkerGroups(Uuid),
    RemoveWorkerGroupsByQuery(Uuid),
    RemoveWorkerGroups(Uuid),
    QueryWorkers,
    ShutdownWorkers,
    ShutdownWorkerList,
    AdminShutdownWorker(Uuid),
}

fn uuid_param(s: &str) -> Result<Uuid, ApiError> {
    s.parse().map_err(|e| ApiError::BadPath(format!("{s:?} is not a UUID: {e}")))
}

/// Who must be calling.
enum Guard {
    Anyone,
    User,
    Admin,
    Worker,
}

/// The authenticated caller.
pub enum Principal {
    Anonymous,
    User(AuthUser),
    Worker(AuthWorker),
}

impl Principal {
    fn user(&self) -> Result<&AuthUser, ApiError> {
        match self {
            Principal::User(u) => Ok(u),
            _ => Err(ApiError::Internal("route expected a user".into())),
        }
    }

    fn worker(&self) -> Result<&AuthWorker, ApiError> {
        match self {
            Principal::Worker(w) => Ok(w),
            _ => Err(ApiError::Internal("route expected a worker".into())),
        }
    }
}

/// What a request leads to.
pub enum Outcome {
    Reply(Reply),
    /// A long-poll fetch with nothing to hand out yet.
    Park { worker_id: i64, deadline: std::time::Instant },
}

macro_rules! on {
    ($method:expr, $($m:ident => $e:expr),+ $(,)?) => {
        match $method {
            $(Method::$m => Ok($e),)+
            _ => Err(ApiError::MethodNotAllowed),
        }
    };
}

/// Finds the endpoint for a method and the decoded path segments.
pub fn resolve(method: &Method, segs: &[&str]) -> Result<Endpoint, ApiError> {
    use Endpoint as E;
    let s = |x: &str| x.to_string();
    if segs.iter().any(|x| x.is_empty()) {
        return Err(ApiError::NoRoute);
    }
    match segs {
        ["health"] => on!(method, Get => E::Health),
        ["login"] => on!(method, Post => E::Login),
        ["auth"] => on!(method, Get => E::Auth),
        ["redis"] => on!(method, Get => E::Redis),
        ["users", "groups"] => on!(method, Get => E::UserGroups),
        ["users", u, "password"] => on!(method, Post => E::ChangePassword(s(u))),
        ["groups"] => on!(method, Post => E::CreateGroup),
        ["groups", g] => on!(method, Get => E::GetGroup(s(g))),
        ["groups", g, "users"] => on!(method,
            Put => E::UpdateGroupUsers(s(g)),
            Delete => E::RemoveGroupUsersByQuery(s(g)),
        ),
        ["groups", g, "users", "remove"] => on!(method, Post => E::RemoveGroupUsers(s(g))),
        ["admin", "users"] => on!(method, Post => E::AdminCreateUser),
        ["admin", "users", u] => on!(method, Delete => E::AdminDeleteUser(s(u))),
        ["admin", "users", u, "password"] => on!(method, Post => E::AdminChangePassword(s(u))),
        ["admin", "users", u, "group-quota"] => on!(method, Post => E::AdminGroupQuota(s(u))),
        ["admin", "users", u, "state"] => on!(method, Post => E::AdminUserState(s(u))),
        ["admin", "groups", g, "storage-quota"] => on!(method, Post => E::AdminStorageQuota(s(g))),
        ["admin", "shutdown"] => on!(method, Post => E::AdminShutdown),
        ["admin", "workers", w] => on!(method, Delete => E::AdminShutdownWorker(uuid_param(w)?)),
        ["tasks"] => on!(method, Post => E::SubmitTask),
        ["tasks", "submit"] => on!(method, Post => E::SubmitTasks),
        ["tasks", "query"] => on!(method, Post => E::QueryTasks),
        ["tasks", "cancel"] => on!(method, Post => E::CancelTasks),
        ["tasks", "cancel", "list"] => on!(method, Post => E::CancelTaskList),
        ["tasks", t] => {
            let t = uuid_param(t);
            on!(method, Get => E::GetTask(t?), Put => E::ChangeTask(t?), Delete => E::CancelTask(t?))
        }
        ["tasks", t, "labels"] => on!(method, Put => E::TaskLabels(uuid_param(t)?)),
        ["workers"] => on!(method, Post => E::RegisterWorker, Delete => E::Unregister),
        ["workers", "heartbeat"] => on!(method, Post => E::Heartbeat),
        ["workers", "tasks"] => on!(method, Get => E::FetchTask, Post => E::ReportTask),
        ["workers", "query"] => on!(method, Post => E::QueryWorkers),
        ["workers", "shutdown"] => on!(method, Post => E::ShutdownWorkers),
        ["workers", "shutdown", "list"] => on!(method, Post => E::ShutdownWorkerList),
        ["workers", "tasks", t] => on!(method, Get => E::WorkerGetTask(uuid_param(t)?)),
        ["workers", w] => {
            let w = uuid_param(w);
            on!(method, Get => E::GetWorker(w?), Delete => E::ShutdownWorker(w?))
        }
        ["workers", w, "tags"] => on!(method, Put => E::WorkerTags(uuid_param(w)?)),
        ["workers", w, "labels"] => on!(method, Put => E::WorkerLabels(uuid_param(w)?)),
        ["workers", w, "groups"] => {
            let w = uuid_param(w);
            on!(method, Put => E::WorkerGroups(w?), Delete => E::RemoveWorkerGroupsByQuery(w?))
        }
        ["workers", w, "groups", "remove"] => on!(method, Delete => E::RemoveWorkerGroups(uuid_param(w)?)),
        _ => Err(ApiError::NoRoute),
    }
}

fn guard(e: &Endpoint) -> Guard {
    use Endpoint as E;
    match e {
        E::Health | E::Login => Guard::Anyone,
        E::AdminCreateUser
        | E::AdminDeleteUser(_)
        | E::AdminChangePassword(_)
        | E::AdminGroupQuota(_)
        | E::AdminUserState(_)
        | E::AdminStorageQuota(_)
        | E::AdminShutdown
        | E::AdminShutdownWorker(_) => Guard::Admin,
        E::Unregister | E::Heartbeat | E::FetchTask | E::ReportTask | E::WorkerGetTask(_) => Guard::Worker,
        _ => Guard::User,
    }
}

/// Checks the caller's token as the endpoint requires.
pub fn authenticate(ctx: &Ctx, endpoint: &Endpoint, call: &Call) -> Result<Principal, ApiError> {
    let g = guard(endpoint);
    if let Guard::Anyone = g {
        return Ok(Principal::Anonymous);
    }
    let token = auth::bearer(call)?;
    let claims = ctx.keys.verify(&token)?;
    let mut db = ctx.pool.get()?;
    match g {
        Guard::Worker => auth::authenticate_worker(&mut db, &claims).map(Principal::Worker),
        _ => auth::authenticate_user(&mut db, &claims, matches!(g, Guard::Admin)).map(Principal::User),
    }
}

/// Runs the endpoint's handler.
pub fn dispatch(ctx: &Ctx, endpoint: Endpoint, call: &Call, who: Principal) -> Result<Outcome, ApiError> {
    use Endpoint as E;
    if let E::FetchTask = endpoint {
        let w = who.worker()?;
        return Ok(match worker_api::fetch(ctx, call, w)? {
            worker_api::Fetch::Now(r) => Outcome::Reply(r),
            worker_api::Fetch::Park(deadline) => Outcome::Park { worker_id: w.id, deadline },
        });
    }
    let reply = match endpoint {
        E::Health => misc::health(),
        E::Login => misc::login(ctx, call),
        E::Auth => misc::auth(who.user()?),
        E::Redis => misc::redis(ctx),
        E::ChangePassword(u) => users::change_password(ctx, call, who.user()?, &u),
        E::UserGroups => users::groups(ctx, who.user()?),
        E::CreateGroup => groups::create(ctx, call, who.user()?),
        E::GetGroup(g) => groups::get(ctx, who.user()?, &g),
        E::UpdateGroupUsers(g) => groups::update_users(ctx, call, who.user()?, &g),
        E::RemoveGroupUsersByQuery(g) => {
            let users = call.query_all("users")?;
            groups::remove_users(ctx, who.user()?, &g, users)
        }
        E::RemoveGroupUsers(g) => {
            let req: crate::api::RemoveUserGroupRoleReq = call.json()?;
            groups::remove_users(ctx, who.user()?, &g, req.users.into_iter().collect())
        }
        E::AdminCreateUser => admin::create_user(ctx, call),
        E::AdminDeleteUser(u) => admin::delete_user(ctx, &u),
        E::AdminChangePassword(u) => admin::change_password(ctx, call, &u),
        E::AdminGroupQuota(u) => admin::group_quota(ctx, call, &u),
        E::AdminUserState(u) => admin::user_state(ctx, call, &u),
        E::AdminStorageQuota(g) => admin::storage_quota(ctx, call, &g),
        E::AdminShutdown => admin::shutdown(ctx, call),
        E::SubmitTask => tasks::submit(ctx, call, who.user()?),
        E::SubmitTasks => tasks::submit_batch(ctx, call, who.user()?),
        E::GetTask(t) => tasks::get(ctx, who.user()?, t),
        E::ChangeTask(t) => tasks::change(ctx, call, who.user()?, t),
        E::CancelTask(t) => tasks::cancel(ctx, who.user()?, t),
        E::TaskLabels(t) => tasks::labels(ctx, call, who.user()?, t),
        E::QueryTasks => tasks::query(ctx, call, who.user()?),
        E::CancelTasks => tasks::cancel_by_filter(ctx, call, who.user()?),
        E::CancelTaskList => tasks::cancel_by_list(ctx, call, who.user()?),
        E::RegisterWorker => workers::register(ctx, call, who.user()?),
        E::Unregister => worker_api::unregister(ctx, who.worker()?),
        E::Heartbeat => worker_api::heartbeat(ctx, call, who.worker()?),
        E::FetchTask => Err(ApiError::Internal("fetch is handled above".into())),
        E::ReportTask => worker_api::report(ctx, call, who.worker()?),
        E::WorkerGetTask(t) => worker_api::get_task(ctx, who.worker()?, t),
        E::GetWorker(w) => workers::get(ctx, who.user()?, w),
        E::ShutdownWorker(w) => workers::shutdown_one(ctx, call, Some(who.user()?), w),
        E::AdminShutdownWorker(w) => workers::shutdown_one(ctx, call, None, w),
        E::WorkerTags(w) => workers::tags(ctx, call, who.user()?, w),
        E::WorkerLabels(w) => workers::labels(ctx, call, who.user()?, w),
        E::WorkerGroups(w) => workers::update_groups(ctx, call, who.user()?, w),
        E::RemoveWorkerGroupsByQuery(w) => {
            let groups = call.query_all("groups")?;
            workers::remove_groups(ctx, who.user()?, w, groups)
        }
        E::RemoveWorkerGroups(w) => workers::remove_groups_body(ctx, call, who.user()?, w),
        E::QueryWorkers => workers::query(ctx, call, who.user()?),
        E::ShutdownWorkers => workers::shutdown_by_filter(ctx, call, who.user()?),
        E::ShutdownWorkerList => workers::shutdown_by_list(ctx, call, who.user()?),
    }?;
    Ok(Outcome::Reply(reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(m: Method, p: &str) -> Result<Endpoint, ApiError> {
        let segs: Vec<&str> = p.trim_start_matches('/').split('/').collect();
        resolve(&m, &segs)
    }

    #[test]
    fn static_segments_win_and_methods_matter() {
        assert!(matches!(r(Method::Get, "/users/groups"), Ok(Endpoint::UserGroups)));
        assert!(matches!(r(Method::Post, "/users/groups"), Err(ApiError::MethodNotAllowed)));
        assert!(matches!(r(Method::Post, "/users/bob/password"), Ok(Endpoint::ChangePassword(u)) if u == "bob"));
        assert!(matches!(r(Method::Get, "/groups/"), Err(ApiError::NoRoute)));
        assert!(matches!(r(Method::Get, "/nope"), Err(ApiError::NoRoute)));
        assert!(matches!(r(Method::Delete, "/groups/g/users"), Ok(Endpoint::RemoveGroupUsersByQuery(_))));
    }
}
