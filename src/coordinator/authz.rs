//! Who may do what: the named checks every handler calls before it acts.
//!
//! ```ignore
//! let group_id = authorize_group(&mut db, user, "lab", UserGroupRole::Write)?;
//! ```
//!
//! A caller who is not in a group learns nothing about it: a missing group and a group
//! they are not in give the same 403.

use super::auth::AuthUser;
use super::error::ApiError;
use crate::api::UserGroupRole;

/// The caller's role in `group`, with the group's id; None if the group does not exist or
/// the caller is not a member.
pub fn group_role(
    db: &mut impl postgres::GenericClient,
    user: &AuthUser,
    group: &str,
) -> Result<Option<(i64, UserGroupRole)>, ApiError> {
    let row = db.query_opt(
        "SELECT g.id, ug.role FROM groups g JOIN user_group ug ON ug.group_id = g.id
         WHERE g.group_name = $1 AND ug.user_id = $2",
        &[&group, &user.id],
    )?;
    Ok(row.and_then(|r| UserGroupRole::from_code(r.get(1)).map(|role| (r.get(0), role))))
}

/// Requires at least role `min` in `group`; returns the group's id and the caller's role.
pub fn authorize_group(
    db: &mut impl postgres::GenericClient,
    user: &AuthUser,
    group: &str,
    min: UserGroupRole,
) -> Result<(i64, UserGroupRole), ApiError> {
    match group_role(db, user, group)? {
        None => Err(ApiError::Forbidden(format!(
            "you are not a member of group {group} (or it does not exist)"
        ))),
        Some((_, role)) if role < min => Err(ApiError::Forbidden(format!(
            "this needs the {min} role in group {group}; you have {role}"
        ))),
        Some(found) => Ok(found),
    }
}
