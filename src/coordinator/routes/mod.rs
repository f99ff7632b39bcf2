//! The route table: which endpoint a method and path name, who may call it, and the
//! handler that serves it.
//!
//! Matching follows the peer: no trailing slashes, static segments beat captures, an
//! existing path with another method is 405, anything else 404. Authentication runs
//! before the body is read, so a bad token wins over a bad body.

mod admin;
mod groups;
mod misc;
mod users;

use super::auth::{self, AuthUser};
use super::error::ApiError;
use super::server::{Call, Reply};
use super::Ctx;
use tiny_http::Method;

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
}

/// Who must be calling.
enum Guard {
    Anyone,
    User,
    Admin,
}

/// The authenticated caller.
pub enum Principal {
    Anonymous,
    User(AuthUser),
}

impl Principal {
    fn user(&self) -> Result<&AuthUser, ApiError> {
        match self {
            Principal::User(u) => Ok(u),
            Principal::Anonymous => Err(ApiError::Internal("route expected a user".into())),
        }
    }
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
        | E::AdminShutdown => Guard::Admin,
        _ => Guard::User,
    }
}

/// Checks the caller's token as the endpoint requires.
pub fn authenticate(ctx: &Ctx, endpoint: &Endpoint, call: &Call) -> Result<Principal, ApiError> {
    let need_admin = match guard(endpoint) {
        Guard::Anyone => return Ok(Principal::Anonymous),
        Guard::User => false,
        Guard::Admin => true,
    };
    let token = auth::bearer(call)?;
    let claims = ctx.keys.verify(&token)?;
    let mut db = ctx.pool.get()?;
    auth::authenticate_user(&mut db, &claims, need_admin).map(Principal::User)
}

/// Runs the endpoint's handler.
pub fn dispatch(ctx: &Ctx, endpoint: Endpoint, call: &Call, who: Principal) -> Result<Reply, ApiError> {
    use Endpoint as E;
    match endpoint {
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
    }
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
