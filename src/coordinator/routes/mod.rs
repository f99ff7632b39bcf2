//! The route table: which endpoint a method and path name, who may call it, and the
//! handler that serves it.
//!
//! Matching follows the peer: no trailing slashes, static segments beat captures, an
//! existing path with another method is 405, anything else 404. Authentication runs
//! before the body is read, so a bad token wins over a bad body.

mod admin;
mod groups;
mod live_log;
pub(crate) use live_log::forget_committed_logs;
mod misc;
pub(super) mod tasks;
mod users;
pub(super) mod worker_api;
mod workers;
// ---- object storage
pub(super) mod artifacts;
pub(super) mod attachments;
mod objects;
// ---- end object storage

use super::auth::{self, AuthUser, AuthWorker, WorkerToken};
use super::error::ApiError;
use super::http::{Call, Reply};
use super::storage::ObjectRequest;
use super::Ctx;
use tiny_http::Method;
use uuid::Uuid;

/// Declares [`Endpoint`] and its names: each variant's name is the `route` label of the
/// request metrics (bounded, unlike raw paths), found by a `match` the compiler keeps
/// complete as variants are added.
macro_rules! endpoints {
    ($($(#[$meta:meta])* $variant:ident $(($($param:ty),+))?,)+) => {
        /// Every endpoint, with its path parameters.
        #[derive(Debug, Clone)]
        pub(crate) enum Endpoint {
            $($(#[$meta])* $variant $(($($param),+))?,)+
        }

        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        #[repr(usize)]
        enum Index {
            $($variant,)+
        }

        impl Endpoint {
            /// Every variant's name, by [`Endpoint::index`].
            pub(crate) const NAMES: &'static [&'static str] = &[$(stringify!($variant)),+];

            /// This variant's position in [`Endpoint::NAMES`].
            pub(crate) fn index(&self) -> usize {
                match self {
                    $(Endpoint::$variant { .. } => Index::$variant as usize,)+
                }
            }
        }
    };
}

endpoints! {
    Health,
    /// A file of the dashboard (`/ui/...`).
    Ui(String),
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
    SummarizeTasks,
    CancelTasks,
    CancelTaskList,
    RegisterWorker,
    Unregister,
    Heartbeat,
    FetchTask,
    ReportTask,
    WorkerGetTask(Uuid),
    ShipTaskLog(Uuid),
    TaskLog(Uuid),
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
    Metrics,
    GroupStats(String),
    // ---- object storage: (group, key), (task uuid, content type) as in the path
    UploadAttachment(String),
    QueryAttachments(String),
    AttachmentMetadata(String, String),
    DeleteAttachment(String, String),
    DownloadAttachment(String, String),
    DownloadAttachmentsByFilter(String),
    DownloadAttachmentsByKeys(String),
    DeleteAttachmentsByFilter(String),
    DeleteAttachmentsByKeys(String),
    UploadArtifact(String),
    DeleteArtifact(String, String),
    DownloadArtifact(String, String),
    /// (task uuid, attempt number, content type): an earlier attempt's artifact.
    DownloadAttemptArtifact(String, String, String),
    DownloadArtifactsByFilter,
    DownloadArtifactsByUuids,
    DeleteArtifactsByFilter,
    DeleteArtifactsByUuids,
    WorkerArtifact(String, String),
    WorkerAttachment(String, String),
    AdminDeleteAttachment(String, String),
    AdminDeleteArtifact(String, String),
    /// A local-store object URL; its signature is the authorization.
    Object(ObjectRequest),
    // ---- end object storage
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
    /// A worker whose existence the handler's own statement checks.
    WorkerToken,
    /// A user whose standing (exists, Active, token not revoked) the handler's own
    /// statement checks.
    UserToken,
}

/// The authenticated caller.
pub(super) enum Principal {
    Anonymous,
    User(AuthUser),
    Worker(AuthWorker),
    WorkerToken(WorkerToken),
    /// A user token with a good signature, not yet checked against the database.
    UserToken(auth::Claims),
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

    fn user_token(&self) -> Result<&auth::Claims, ApiError> {
        match self {
            Principal::UserToken(c) => Ok(c),
            _ => Err(ApiError::Internal("route expected a user token".into())),
        }
    }

    fn worker_token(&self) -> Result<WorkerToken, ApiError> {
        match self {
            Principal::WorkerToken(w) => Ok(*w),
            _ => Err(ApiError::Internal("route expected a worker token".into())),
        }
    }
}

/// What a request leads to.
pub(super) enum Outcome {
    Reply(Reply),
    /// A long-poll fetch with nothing to hand out yet.
    Park(super::scheduler::ParkAs),
    /// A local object store transfer: it streams and answers by itself.
    Object(ObjectRequest),
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
pub(super) fn resolve(method: &Method, segs: &[&str]) -> Result<Endpoint, ApiError> {
    use Endpoint as E;
    let s = |x: &str| x.to_string();
    // `/ui/` ends with an empty segment: the dashboard's page.
    if let ["ui", rest @ ..] = segs {
        return on!(method, Get => E::Ui(rest.join("/")));
    }
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
        ["groups", g, "stats"] => on!(method, Get => E::GroupStats(s(g))),
        ["metrics"] => on!(method, Get => E::Metrics),
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
        ["tasks", "summary"] => on!(method, Post => E::SummarizeTasks),
        ["tasks", "cancel"] => on!(method, Post => E::CancelTasks),
        ["tasks", "cancel", "list"] => on!(method, Post => E::CancelTaskList),
        ["tasks", t] => {
            let t = uuid_param(t);
            on!(method, Get => E::GetTask(t?), Put => E::ChangeTask(t?), Delete => E::CancelTask(t?))
        }
        ["tasks", t, "labels"] => on!(method, Put => E::TaskLabels(uuid_param(t)?)),
        ["tasks", t, "log"] => on!(method, Get => E::TaskLog(uuid_param(t)?)),
        ["workers", "tasks", t, "log"] => on!(method, Post => E::ShipTaskLog(uuid_param(t)?)),
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
        _ => resolve_storage(method, segs),
    }
}

// ---- object storage routes. Static segments come before captures, so
// `/tasks/download/...` is never read as `/tasks/{uuid}/...` and `attachments/query` is
// never a key.
fn resolve_storage(method: &Method, segs: &[&str]) -> Result<Endpoint, ApiError> {
    use Endpoint as E;
    let s = |x: &str| x.to_string();
    let key = |rest: &[&str]| rest.join("/");
    match segs {
        ["groups", g, "attachments"] => on!(method, Post => E::UploadAttachment(s(g))),
        ["groups", g, "attachments", "query"] => on!(method, Post => E::QueryAttachments(s(g))),
        ["groups", g, "attachments", rest @ ..] if !rest.is_empty() => on!(method,
            Get => E::AttachmentMetadata(s(g), key(rest)),
            Delete => E::DeleteAttachment(s(g), key(rest)),
        ),
        ["groups", g, "download", "attachments"] => on!(method, Post => E::DownloadAttachmentsByFilter(s(g))),
        ["groups", g, "download", "attachments", "list"] => on!(method, Post => E::DownloadAttachmentsByKeys(s(g))),
        ["groups", g, "download", "attachments", rest @ ..] if !rest.is_empty() => {
            on!(method, Get => E::DownloadAttachment(s(g), key(rest)))
        }
        ["groups", g, "delete", "attachments"] => on!(method, Post => E::DeleteAttachmentsByFilter(s(g))),
        ["groups", g, "delete", "attachments", "list"] => on!(method, Post => E::DeleteAttachmentsByKeys(s(g))),
        ["tasks", "download", "artifacts"] => on!(method, Post => E::DownloadArtifactsByFilter),
        ["tasks", "download", "artifacts", "list"] => on!(method, Post => E::DownloadArtifactsByUuids),
        ["tasks", "delete", "artifacts"] => on!(method, Post => E::DeleteArtifactsByFilter),
        ["tasks", "delete", "artifacts", "list"] => on!(method, Post => E::DeleteArtifactsByUuids),
        ["tasks", u, "artifacts"] => on!(method, Post => E::UploadArtifact(s(u))),
        ["tasks", u, "artifacts", ct] => on!(method, Delete => E::DeleteArtifact(s(u), s(ct))),
        ["tasks", u, "download", "artifacts", ct] => on!(method, Get => E::DownloadArtifact(s(u), s(ct))),
        ["tasks", u, "attempts", n, "download", "artifacts", ct] => {
            on!(method, Get => E::DownloadAttemptArtifact(s(u), s(n), s(ct)))
        }
        ["workers", "tasks", u, "artifacts", ct] => on!(method, Get => E::WorkerArtifact(s(u), s(ct))),
        ["workers", "tasks", u, "attachments", rest @ ..] if !rest.is_empty() => {
            on!(method, Get => E::WorkerAttachment(s(u), key(rest)))
        }
        ["admin", "groups", g, "attachments", rest @ ..] if !rest.is_empty() => {
            on!(method, Delete => E::AdminDeleteAttachment(s(g), key(rest)))
        }
        ["admin", "tasks", u, "artifacts", ct] => on!(method, Delete => E::AdminDeleteArtifact(s(u), s(ct))),
        ["objects", bucket, rest @ ..] if !rest.is_empty() => {
            let obj = ObjectRequest { bucket: s(bucket), key: key(rest) };
            on!(method, Get => E::Object(obj.clone()), Put => E::Object(obj))
        }
        _ => Err(ApiError::NoRoute),
    }
}
// ---- end object storage routes

fn guard(e: &Endpoint) -> Guard {
    use Endpoint as E;
    match e {
        // `/metrics` takes the metrics token besides admins' tokens: it checks by itself.
        E::Health | E::Ui(_) | E::Login | E::Object(_) | E::Metrics => Guard::Anyone,
        E::WorkerArtifact(..) | E::WorkerAttachment(..) => Guard::Worker,
        E::AdminDeleteAttachment(..) | E::AdminDeleteArtifact(..) => Guard::Admin,
        E::AdminCreateUser
        | E::AdminDeleteUser(_)
        | E::AdminChangePassword(_)
        | E::AdminGroupQuota(_)
        | E::AdminUserState(_)
        | E::AdminStorageQuota(_)
        | E::AdminShutdown
        | E::AdminShutdownWorker(_) => Guard::Admin,
        E::Heartbeat | E::FetchTask | E::ReportTask => Guard::WorkerToken,
        E::SubmitTask | E::SubmitTasks => Guard::UserToken,
        E::Unregister | E::WorkerGetTask(_) | E::ShipTaskLog(_) => Guard::Worker,
        _ => Guard::User,
    }
}

/// Checks the caller's token as the endpoint requires.
pub(super) fn authenticate(ctx: &Ctx, endpoint: &Endpoint, call: &Call) -> Result<Principal, ApiError> {
    let g = guard(endpoint);
    if let Guard::Anyone = g {
        return Ok(Principal::Anonymous);
    }
    let token = auth::bearer(call)?;
    let claims = ctx.tokens.verify(&ctx.keys, &token)?;
    match g {
        Guard::WorkerToken => return WorkerToken::from_claims(&claims).map(Principal::WorkerToken),
        Guard::UserToken => return auth::unexpired(&claims).map(|()| Principal::UserToken(claims)),
        _ => {}
    }
    let mut db = ctx.pool.get()?;
    match g {
        Guard::Worker => auth::authenticate_worker(&mut db, WorkerToken::from_claims(&claims)?).map(Principal::Worker),
        _ => auth::authenticate_user(&mut db, &claims, matches!(g, Guard::Admin)).map(Principal::User),
    }
}

/// Runs the endpoint's handler. For a caller the handler checks in its own statement,
/// a failure that statement may never have reached (a bad body, an invalid item) is
/// preceded by the full check, so a bad token wins over a bad request on every route.
pub(super) fn dispatch(ctx: &Ctx, endpoint: Endpoint, call: &Call, who: Principal) -> Result<Outcome, ApiError> {
    let out = run_handler(ctx, endpoint, call, &who);
    if let Err(e) = &out {
        let already_told = matches!(
            e,
            ApiError::InvalidToken
                | ApiError::WrongCredentials
                | ApiError::PermissionDenied
                | ApiError::Unavailable(_)
                | ApiError::Internal(_)
        );
        if !already_told {
            confirm(ctx, &who)?;
        }
    }
    out
}

/// The database check a deferred principal skipped ([`Guard::WorkerToken`], [`Guard::UserToken`]).
fn confirm(ctx: &Ctx, who: &Principal) -> Result<(), ApiError> {
    match who {
        Principal::WorkerToken(w) => auth::authenticate_worker(&mut ctx.pool.get()?, *w).map(|_| ()),
        Principal::UserToken(c) => auth::authenticate_user(&mut ctx.pool.get()?, c, false).map(|_| ()),
        _ => Ok(()),
    }
}

fn run_handler(ctx: &Ctx, endpoint: Endpoint, call: &Call, who: &Principal) -> Result<Outcome, ApiError> {
    use Endpoint as E;
    if let E::FetchTask = endpoint {
        return Ok(match worker_api::fetch(ctx, call, who.worker_token()?)? {
            worker_api::Fetch::Now(r) => Outcome::Reply(r),
            worker_api::Fetch::Park(p) => Outcome::Park(p),
        });
    }
    let reply = match endpoint {
        E::Health => misc::health(),
        E::Ui(path) => super::ui::serve(&path, &ctx.ui_policy),
        E::Login => misc::login(ctx, call),
        E::Auth => misc::auth(who.user()?),
        E::Redis => misc::redis(ctx),
        E::ChangePassword(u) => users::change_password(ctx, call, who.user()?, &u),
        E::UserGroups => users::groups(ctx, who.user()?),
        E::CreateGroup => groups::create(ctx, call, who.user()?),
        E::GetGroup(g) => groups::get(ctx, who.user()?, &g),
        E::GroupStats(g) => groups::stats(ctx, call, who.user()?, &g),
        E::Metrics => super::metrics::authorize(ctx, call).map(|()| super::metrics::scrape(ctx)),
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
        E::SubmitTask => tasks::submit(ctx, call, who.user_token()?),
        E::SubmitTasks => tasks::submit_batch(ctx, call, who.user_token()?),
        E::GetTask(t) => tasks::get(ctx, who.user()?, t),
        E::ChangeTask(t) => tasks::change(ctx, call, who.user()?, t),
        E::CancelTask(t) => tasks::cancel(ctx, who.user()?, t),
        E::TaskLabels(t) => tasks::labels(ctx, call, who.user()?, t),
        E::QueryTasks => tasks::query(ctx, call, who.user()?),
        E::SummarizeTasks => tasks::summary(ctx, call, who.user()?),
        E::CancelTasks => tasks::cancel_by_filter(ctx, call, who.user()?),
        E::CancelTaskList => tasks::cancel_by_list(ctx, call, who.user()?),
        E::RegisterWorker => workers::register(ctx, call, who.user()?),
        E::Unregister => worker_api::unregister(ctx, who.worker()?),
        E::Heartbeat => worker_api::heartbeat(ctx, call, who.worker_token()?),
        E::FetchTask => Err(ApiError::Internal("fetch is handled above".into())),
        E::ReportTask => worker_api::report(ctx, call, who.worker_token()?),
        E::WorkerGetTask(t) => worker_api::get_task(ctx, who.worker()?, t),
        E::ShipTaskLog(t) => live_log::ship(ctx, call, who.worker()?, t),
        E::TaskLog(t) => live_log::read(ctx, call, who.user()?, t),
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
        // ---- object storage
        E::UploadAttachment(g) => attachments::upload(ctx, call, who.user()?, &g),
        E::QueryAttachments(g) => attachments::query(ctx, call, who.user()?, &g),
        E::AttachmentMetadata(g, k) => attachments::metadata(ctx, who.user()?, &g, &k),
        E::DeleteAttachment(g, k) => attachments::delete(ctx, who.user()?, &g, &k),
        E::DownloadAttachment(g, k) => attachments::download(ctx, call, who.user()?, &g, &k),
        E::DownloadAttachmentsByFilter(g) => attachments::download_by_filter(ctx, call, who.user()?, &g),
        E::DownloadAttachmentsByKeys(g) => attachments::download_by_keys(ctx, call, who.user()?, &g),
        E::DeleteAttachmentsByFilter(g) => attachments::delete_by_filter(ctx, call, who.user()?, &g),
        E::DeleteAttachmentsByKeys(g) => attachments::delete_by_keys(ctx, call, who.user()?, &g),
        E::UploadArtifact(u) => artifacts::upload(ctx, call, who.user()?, &u),
        E::DeleteArtifact(u, ct) => artifacts::delete(ctx, who.user()?, &u, &ct),
        E::DownloadArtifact(u, ct) => artifacts::download(ctx, call, who.user()?, &u, &ct),
        E::DownloadAttemptArtifact(u, n, ct) => artifacts::download_attempt(ctx, call, who.user()?, &u, &n, &ct),
        E::DownloadArtifactsByFilter => artifacts::download_by_filter(ctx, call, who.user()?),
        E::DownloadArtifactsByUuids => artifacts::download_by_uuids(ctx, call, who.user()?),
        E::DeleteArtifactsByFilter => artifacts::delete_by_filter(ctx, call, who.user()?),
        E::DeleteArtifactsByUuids => artifacts::delete_by_uuids(ctx, call, who.user()?),
        E::WorkerArtifact(u, ct) => artifacts::worker_download(ctx, call, who.worker()?, &u, &ct),
        E::WorkerAttachment(u, k) => artifacts::worker_attachment(ctx, call, who.worker()?, &u, &k),
        E::AdminDeleteAttachment(g, k) => attachments::admin_delete(ctx, &g, &k),
        E::AdminDeleteArtifact(u, ct) => artifacts::admin_delete(ctx, &u, &ct),
        E::Object(obj) => return Ok(Outcome::Object(obj)),
        // ---- end object storage
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

    #[test]
    fn storage_routes_prefer_static_segments() {
        assert!(matches!(r(Method::Get, "/groups/g/attachments/query"), Err(ApiError::MethodNotAllowed)));
        assert!(matches!(r(Method::Get, "/groups/g/download/attachments/list"), Err(ApiError::MethodNotAllowed)));
        assert!(
            matches!(r(Method::Get, "/groups/g/attachments/a/b/c"), Ok(Endpoint::AttachmentMetadata(g, k)) if g == "g" && k == "a/b/c")
        );
        assert!(matches!(r(Method::Post, "/tasks/download/artifacts"), Ok(Endpoint::DownloadArtifactsByFilter)));
        assert!(matches!(r(Method::Post, "/tasks/x/artifacts"), Ok(Endpoint::UploadArtifact(u)) if u == "x"));
        assert!(matches!(r(Method::Put, "/objects/b/k/x"), Ok(Endpoint::Object(o)) if o.key == "k/x"));
        assert!(matches!(r(Method::Delete, "/objects/b/k"), Err(ApiError::MethodNotAllowed)));
        assert!(matches!(r(Method::Get, "/objects/b"), Err(ApiError::NoRoute)));
    }
}
