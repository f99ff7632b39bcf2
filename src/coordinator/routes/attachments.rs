//! Attachments: files a group keeps for its tasks, under object key `{group}/{key}` in the
//! attachments bucket.
//!
//! ```text
//! POST /groups/lab/attachments {"key":"in/data.bin","content_length":1024}  -> {"exist":false,"url":"<PUT url>"}
//! GET  /groups/lab/download/attachments/in/data.bin                      -> {"url":"<GET url>","size":1024}
//! ```
//!
//! Members may read (metadata, queries, downloads); Write or Admin may upload and delete.
//! The space is charged to the group when the upload URL is issued; a delete gives it back
//! but is refused for an hour after an upload, while its URL may still be in use (admins
//! may delete at any time).

use super::objects::{lock_group_for_upload, origin, page, release};
use crate::api::{
    AttachmentContentType, AttachmentDownloadItem, AttachmentMetadata, AttachmentQueryInfo,
    AttachmentsDeleteByFilterReq, AttachmentsDeleteByFilterResp, AttachmentsDeleteByKeysReq,
    AttachmentsDeleteByKeysResp, AttachmentsDownloadByFilterReq, AttachmentsDownloadByKeysReq,
    AttachmentsDownloadListResp, AttachmentsQueryReq, AttachmentsQueryResp, RemoteResourceDownloadResp, Timestamp,
    UploadAttachmentReq, UploadAttachmentResp, UserGroupRole,
};
use crate::coordinator::auth::AuthUser;
use crate::coordinator::authz::authorize_group;
use crate::coordinator::error::ApiError;
use crate::coordinator::http::{Call, Reply};
use crate::coordinator::limits::{check_list, MAX_OBJECT_LIST};
use crate::coordinator::storage::{self, download_ttl, Bucket, UPLOAD_TTL};
use crate::coordinator::Ctx;
use std::time::Duration;

const SINGLE: Duration = Duration::from_secs(3600);
const BATCH: Duration = Duration::from_secs(86_400);

/// The object key of attachment `key` of `group`, checked (400 with the reason).
pub(crate) fn object_key(group: &str, key: &str) -> Result<String, ApiError> {
    let full = format!("{group}/{key}");
    storage::validate_key(&full).map_err(|e| ApiError::bad(format!("Invalid attachment key {key:?}: {e}")))?;
    Ok(full)
}

/// `POST /groups/{g}/attachments`: reserves the space and returns a PUT URL.
pub(crate) fn upload(ctx: &Ctx, call: &Call, user: &AuthUser, group: &str) -> Result<Reply, ApiError> {
    let req: UploadAttachmentReq = call.json()?;
    let object = object_key(group, &req.key)?;
    let mut db = ctx.pool.get()?;
    let mut tx = db.transaction()?;
    let (group_id, _) = authorize_group(&mut tx, user, group, UserGroupRole::Write)?;
    let budget = lock_group_for_upload(&mut tx, group_id)?;
    let old: Option<i64> = tx
        .query_opt("SELECT size FROM attachments WHERE group_id = $1 AND key = $2 FOR UPDATE", &[&group_id, &req.key])?
        .map(|r| r.get("size"));
    let recorded = budget.charge(&mut tx, old, req.content_length)?;
    tx.execute(
        "INSERT INTO attachments (group_id, key, content_type, size) VALUES ($1, $2, $3, $4)
         ON CONFLICT (group_id, key) DO UPDATE SET size = EXCLUDED.size, updated_at = now()",
        &[&group_id, &req.key, &AttachmentContentType::NoSet.code(), &recorded],
    )?;
    let url =
        ctx.storage.presign_put(&origin(ctx, call), Bucket::Attachments, &object, req.content_length, UPLOAD_TTL)?;
    tx.commit()?;
    Ok(Reply::json(&UploadAttachmentResp { exist: old.is_some(), url }))
}

fn no_attachment(key: &str) -> ApiError {
    ApiError::NotFound(format!("Attachment {key}"))
}

/// `GET /groups/{g}/attachments/{*key}`: size and times.
pub(crate) fn metadata(ctx: &Ctx, user: &AuthUser, group: &str, key: &str) -> Result<Reply, ApiError> {
    let mut db = ctx.pool.get()?;
    let (group_id, _) = authorize_group(&mut *db, user, group, UserGroupRole::Read)?;
    let row = db
        .query_opt(
            "SELECT size, created_at, updated_at FROM attachments WHERE group_id = $1 AND key = $2",
            &[&group_id, &key],
        )?
        .ok_or_else(|| no_attachment(key))?;
    Ok(Reply::json(&AttachmentMetadata {
        content_type: AttachmentContentType::NoSet,
        size: row.get("size"),
        created_at: Timestamp(row.get("created_at")),
        updated_at: Timestamp(row.get("updated_at")),
    }))
}

/// `POST /groups/{g}/attachments/query`: keys containing `key`, paged, or their count.
pub(crate) fn query(ctx: &Ctx, call: &Call, user: &AuthUser, group: &str) -> Result<Reply, ApiError> {
    let req: AttachmentsQueryReq = call.json()?;
    let mut db = ctx.pool.get()?;
    let (group_id, _) = authorize_group(&mut *db, user, group, UserGroupRole::Read)?;
    let needle = req.key.unwrap_or_default();
    if req.count {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM attachments WHERE group_id = $1 AND strpos(key, $2) > 0",
                &[&group_id, &needle],
            )?
            .get("count");
        return Ok(Reply::json(&AttachmentsQueryResp {
            count: n as u64,
            attachments: vec![],
            group_name: group.into(),
        }));
    }
    let (limit, offset) = page(req.limit, req.offset)?;
    let rows = db.query(
        "SELECT key, size, created_at, updated_at FROM attachments
         WHERE group_id = $1 AND strpos(key, $2) > 0 ORDER BY key LIMIT $3 OFFSET $4",
        &[&group_id, &needle, &limit, &offset],
    )?;
    let attachments: Vec<AttachmentQueryInfo> = rows
        .iter()
        .map(|r| AttachmentQueryInfo {
            key: r.get("key"),
            content_type: AttachmentContentType::NoSet,
            size: r.get("size"),
            created_at: Timestamp(r.get("created_at")),
            updated_at: Timestamp(r.get("updated_at")),
        })
        .collect();
    Ok(Reply::json(&AttachmentsQueryResp { count: attachments.len() as u64, attachments, group_name: group.into() }))
}

/// `GET /groups/{g}/download/attachments/{*key}`: a GET URL for one attachment.
pub(crate) fn download(ctx: &Ctx, call: &Call, user: &AuthUser, group: &str, key: &str) -> Result<Reply, ApiError> {
    let mut db = ctx.pool.get()?;
    let (group_id, _) = authorize_group(&mut *db, user, group, UserGroupRole::Read)?;
    download_in(ctx, call, &mut db, group_id, group, key)
}

/// A GET URL for attachment `key` of a group the caller may read.
pub(crate) fn download_in(
    ctx: &Ctx,
    call: &Call,
    db: &mut postgres::Client,
    group_id: i64,
    group: &str,
    key: &str,
) -> Result<Reply, ApiError> {
    let size: i64 = db
        .query_opt("SELECT size FROM attachments WHERE group_id = $1 AND key = $2", &[&group_id, &key])?
        .ok_or_else(|| no_attachment(key))?
        .get("size");
    let object = object_key(group, key)?;
    let url = ctx.storage.presign_get(&origin(ctx, call), Bucket::Attachments, &object, download_ttl(size, SINGLE))?;
    Ok(Reply::json(&RemoteResourceDownloadResp { url, size }))
}

fn download_list(ctx: &Ctx, call: &Call, group: &str, rows: Vec<postgres::Row>) -> Result<Reply, ApiError> {
    let origin = origin(ctx, call);
    let mut downloads = Vec::with_capacity(rows.len());
    for r in rows {
        let (key, size): (String, i64) = (r.get("key"), r.get("size"));
        let object = object_key(group, &key)?;
        let url = ctx.storage.presign_get(&origin, Bucket::Attachments, &object, download_ttl(size, BATCH))?;
        downloads.push(AttachmentDownloadItem { key, url, size });
    }
    Ok(Reply::json(&AttachmentsDownloadListResp { downloads, group_name: group.into() }))
}

/// `POST /groups/{g}/download/attachments`: GET URLs (valid 24 h) for keys containing `key`.
pub(crate) fn download_by_filter(ctx: &Ctx, call: &Call, user: &AuthUser, group: &str) -> Result<Reply, ApiError> {
    let req: AttachmentsDownloadByFilterReq = call.json()?;
    let mut db = ctx.pool.get()?;
    let (group_id, _) = authorize_group(&mut *db, user, group, UserGroupRole::Read)?;
    let (limit, offset) = page(req.limit, req.offset)?;
    let rows = db.query(
        "SELECT key, size FROM attachments WHERE group_id = $1 AND strpos(key, $2) > 0
         ORDER BY key LIMIT $3 OFFSET $4",
        &[&group_id, &req.key.unwrap_or_default(), &limit, &offset],
    )?;
    download_list(ctx, call, group, rows)
}

/// `POST /groups/{g}/download/attachments/list`: GET URLs for the named keys that exist.
pub(crate) fn download_by_keys(ctx: &Ctx, call: &Call, user: &AuthUser, group: &str) -> Result<Reply, ApiError> {
    let req: AttachmentsDownloadByKeysReq = call.json()?;
    if req.keys.is_empty() {
        return Err(ApiError::bad("Empty keys: name at least one attachment"));
    }
    check_list("keys", req.keys.len(), MAX_OBJECT_LIST)?;
    let mut db = ctx.pool.get()?;
    let (group_id, _) = authorize_group(&mut *db, user, group, UserGroupRole::Read)?;
    let rows = db.query(
        "SELECT key, size FROM attachments WHERE group_id = $1 AND key = ANY($2) ORDER BY key",
        &[&group_id, &req.keys],
    )?;
    download_list(ctx, call, group, rows)
}

/// Why one attachment was not deleted.
enum Skip {
    Missing,
    Recent,
    Store(ApiError),
}

/// Deletes one attachment in its own transaction: the object first, then (only if that
/// worked) the row and the charged space, so a store failure leaves everything as it was.
fn delete_one(ctx: &Ctx, group_id: i64, group: &str, key: &str, by_admin: bool) -> Result<Result<(), Skip>, ApiError> {
    // A key that fails the check was never stored.
    let Ok(object) = object_key(group, key) else { return Ok(Err(Skip::Missing)) };
    let mut db = ctx.pool.get()?;
    let mut tx = db.transaction()?;
    let row = tx.query_opt(
        "SELECT size, updated_at > now() - interval '1 hour' AS recent FROM attachments
         WHERE group_id = $1 AND key = $2 FOR UPDATE",
        &[&group_id, &key],
    )?;
    let Some(row) = row else { return Ok(Err(Skip::Missing)) };
    if row.get::<_, bool>("recent") && !by_admin {
        return Ok(Err(Skip::Recent));
    }
    if let Err(e) = ctx.storage.delete(Bucket::Attachments, &object) {
        return Ok(Err(Skip::Store(e)));
    }
    tx.execute("DELETE FROM attachments WHERE group_id = $1 AND key = $2", &[&group_id, &key])?;
    release(&mut tx, group_id, row.get("size"))?;
    tx.commit()?;
    Ok(Ok(()))
}

fn single_delete(ctx: &Ctx, group_id: i64, group: &str, key: &str, by_admin: bool) -> Result<Reply, ApiError> {
    match delete_one(ctx, group_id, group, key, by_admin)? {
        Ok(()) => Ok(Reply::ok()),
        Err(Skip::Missing) => Err(no_attachment(key)),
        Err(Skip::Recent) => Err(ApiError::bad("Cannot delete attachment that has been updated in the last hour")),
        Err(Skip::Store(e)) => Err(e),
    }
}

/// `DELETE /groups/{g}/attachments/{*key}` (Write or Admin; not within an hour of an upload).
pub(crate) fn delete(ctx: &Ctx, user: &AuthUser, group: &str, key: &str) -> Result<Reply, ApiError> {
    let (group_id, _) = {
        let mut db = ctx.pool.get()?;
        authorize_group(&mut *db, user, group, UserGroupRole::Write)?
    };
    single_delete(ctx, group_id, group, key, false)
}

/// `DELETE /admin/groups/{g}/attachments/{*key}`: any time.
pub(crate) fn admin_delete(ctx: &Ctx, group: &str, key: &str) -> Result<Reply, ApiError> {
    let group_id: i64 = {
        let mut db = ctx.pool.get()?;
        db.query_opt("SELECT id FROM groups WHERE group_name = $1", &[&group])?
            .ok_or_else(|| ApiError::NotFound(format!("Group {group}")))?
            .get("id")
    };
    single_delete(ctx, group_id, group, key, true)
}

/// Deletes `keys` one by one; after a store failure the rest are not tried (each would
/// wait for the same unreachable store). Returns (deleted, not deleted).
fn delete_many(ctx: &Ctx, group_id: i64, group: &str, keys: Vec<String>) -> Result<(u64, Vec<String>), ApiError> {
    let mut deleted = 0;
    let mut failed = Vec::new();
    let mut store_down = false;
    for key in keys {
        if store_down {
            failed.push(key);
            continue;
        }
        match delete_one(ctx, group_id, group, &key, false)? {
            Ok(()) => deleted += 1,
            Err(skip) => {
                store_down = matches!(skip, Skip::Store(_));
                failed.push(key);
            }
        }
    }
    Ok((deleted, failed))
}

/// `POST /groups/{g}/delete/attachments`: deletes the keys containing `key` (paged),
/// skipping those uploaded within the hour.
pub(crate) fn delete_by_filter(ctx: &Ctx, call: &Call, user: &AuthUser, group: &str) -> Result<Reply, ApiError> {
    let req: AttachmentsDeleteByFilterReq = call.json()?;
    let (group_id, keys) = {
        let mut db = ctx.pool.get()?;
        let (group_id, _) = authorize_group(&mut *db, user, group, UserGroupRole::Write)?;
        let (limit, offset) = page(req.limit, req.offset)?;
        check_list("the page of keys to delete (limit)", limit as usize, MAX_OBJECT_LIST)?;
        let rows = db.query(
            "SELECT key FROM attachments WHERE group_id = $1 AND strpos(key, $2) > 0
             ORDER BY key LIMIT $3 OFFSET $4",
            &[&group_id, &req.key.unwrap_or_default(), &limit, &offset],
        )?;
        (group_id, rows.iter().map(|r| r.get("key")).collect())
    };
    let (deleted_count, _) = delete_many(ctx, group_id, group, keys)?;
    Ok(Reply::json(&AttachmentsDeleteByFilterResp { deleted_count, group_name: group.into() }))
}

/// `POST /groups/{g}/delete/attachments/list`: deletes the named keys; `failed_keys` lists
/// those missing, too recent, or not deleted because the store failed.
pub(crate) fn delete_by_keys(ctx: &Ctx, call: &Call, user: &AuthUser, group: &str) -> Result<Reply, ApiError> {
    let req: AttachmentsDeleteByKeysReq = call.json()?;
    if req.keys.is_empty() {
        return Err(ApiError::bad("Empty keys: name at least one attachment"));
    }
    check_list("keys", req.keys.len(), MAX_OBJECT_LIST)?;
    let group_id = {
        let mut db = ctx.pool.get()?;
        authorize_group(&mut *db, user, group, UserGroupRole::Write)?.0
    };
    let (deleted_count, failed_keys) = delete_many(ctx, group_id, group, req.keys)?;
    Ok(Reply::json(&AttachmentsDeleteByKeysResp { deleted_count, failed_keys, group_name: group.into() }))
}
