//! `tasks artifacts ...`: the archives a task leaves behind (`result`, `exec-log`,
//! `std-log`), moved straight to and from object storage through presigned URLs; and the
//! streaming reader `tasks logs` uses on the std-log archive.

use super::args::{Args, Command, Group, Spec};
use super::attachments::{bar, destination, run_batch, upload_through, url_and_size};
use super::output::print_json;
use super::task_args::{
    self, content_type_arg, uuid_arg, CREATORS, EXIT_STATUS, FILTER_GROUP, FILTER_LABELS, FILTER_PRIORITY, FILTER_TAGS,
    REPORTER, STATES,
};
use super::transfer::{self, Job, Progress};
use super::{CommandResult, Error, Flow, Session};
use crate::api::{ArtifactContentType, ArtifactsDownloadByFilterReq};
use crate::opts::OptSpec;
use serde_json::{json, Value};
use std::io::Read;
use std::path::PathBuf;

const PROGRESS_BAR: OptSpec = OptSpec::flag("pb", None, "Show a progress bar even when stderr is not a terminal");
const OUT: OptSpec =
    OptSpec::opt("output-path", Some('o'), "OUTPUT_PATH", "Where to save (an existing directory keeps the file name)");
const DIR: OptSpec = OptSpec::opt(
    "output-dir",
    Some('o'),
    "DIR",
    "The directory to save into (default .); files are named <uuid>.tar.gz",
);
const NO_DOWNLOAD: OptSpec = OptSpec::flag("no-download", None, "Only print the download URLs");
const CONCURRENT: OptSpec = OptSpec::opt("concurrent", None, "N", "Download N files at a time (default 1)");
const ATTEMPT: OptSpec = OptSpec::opt(
    "attempt",
    None,
    "K",
    "The artifact of attempt K (1 for the first) of a task with retries, saved by default as \
     ./<type>-attempt-K.tar.gz; without it, the newest attempt's",
);

const UPLOAD: Spec = Spec {
    name: "tasks artifacts upload",
    usage: "<LOCAL_FILE> <UUID> <CONTENT_TYPE>",
    about: "Upload a file as a task's artifact (result, exec-log or std-log)",
    flags: &[PROGRESS_BAR],
};
const DOWNLOAD: Spec = Spec {
    name: "tasks artifacts download",
    usage: "<UUID> <CONTENT_TYPE>",
    about: "Download a task's artifact (by default to ./<type>.tar.gz)",
    flags: &[OUT, ATTEMPT, NO_DOWNLOAD, PROGRESS_BAR],
};
const DELETE: Spec = Spec {
    name: "tasks artifacts delete",
    usage: "<UUID> <CONTENT_TYPE>",
    about: "Delete a task's artifact",
    flags: &[],
};
const DOWNLOAD_MANY: Spec = Spec {
    name: "tasks artifacts download-many",
    usage: "<CONTENT_TYPE>",
    about: "Download one artifact type of the tasks that match a filter",
    flags: &[
        CREATORS,
        FILTER_GROUP,
        FILTER_TAGS,
        FILTER_LABELS,
        STATES,
        EXIT_STATUS,
        FILTER_PRIORITY,
        REPORTER,
        DIR,
        NO_DOWNLOAD,
        PROGRESS_BAR,
        CONCURRENT,
    ],
};
const DOWNLOAD_LIST: Spec = Spec {
    name: "tasks artifacts download-list",
    usage: "<CONTENT_TYPE> <UUID>...",
    about: "Download one artifact type of the listed tasks",
    flags: &[DIR, NO_DOWNLOAD, PROGRESS_BAR, CONCURRENT],
};
const DELETE_MANY: Spec = Spec {
    name: "tasks artifacts delete-many",
    usage: "<CONTENT_TYPE>",
    about: "Delete one artifact type of the tasks that match a filter",
    flags: &[CREATORS, FILTER_GROUP, FILTER_TAGS, FILTER_LABELS, STATES, EXIT_STATUS, FILTER_PRIORITY, REPORTER],
};
const DELETE_LIST: Spec = Spec {
    name: "tasks artifacts delete-list",
    usage: "<CONTENT_TYPE> <UUID>...",
    about: "Delete one artifact type of the listed tasks",
    flags: &[],
};

const ARTIFACTS: Group = Group {
    name: "tasks artifacts",
    about: "Files tasks produced: result, exec-log and std-log archives",
    commands: &[
        Command::cmd("upload", "Upload a file as a task's artifact", &UPLOAD, upload),
        Command::cmd("download", "Download a task's artifact", &DOWNLOAD, download),
        Command::cmd("delete", "Delete a task's artifact", &DELETE, delete),
        Command::cmd(
            "download-many",
            "Download one artifact type of the tasks that match a filter",
            &DOWNLOAD_MANY,
            |s, a| download_batch(s, a, false),
        ),
        Command::cmd("download-list", "Download one artifact type of the listed tasks", &DOWNLOAD_LIST, |s, a| {
            download_batch(s, a, true)
        }),
        Command::cmd(
            "delete-many",
            "Delete one artifact type of the tasks that match a filter",
            &DELETE_MANY,
            |s, a| delete_batch(s, a, false),
        ),
        Command::cmd("delete-list", "Delete one artifact type of the listed tasks", &DELETE_LIST, |s, a| {
            delete_batch(s, a, true)
        }),
    ],
    aliases: &[],
};

pub(super) fn run(s: &mut Session, words: &[String]) -> CommandResult {
    ARTIFACTS.run(s, words)
}

fn delete(s: &mut Session, a: &Args) -> CommandResult {
    let pos = a.exact(&["UUID", "CONTENT_TYPE"])?;
    let (uuid, ct) = (uuid_arg(a, &pos[0])?, content_type_arg(a, &pos[1])?);
    s.http.delete(&format!("/tasks/{uuid}/artifacts/{ct}"))?;
    if !s.json(a) {
        println!("Artifact {ct} of task {uuid} deleted");
    }
    Ok(Flow::Continue)
}

fn upload(s: &mut Session, a: &Args) -> CommandResult {
    let pos = a.exact(&["LOCAL_FILE", "UUID", "CONTENT_TYPE"])?;
    let local = PathBuf::from(&pos[0]);
    let (uuid, ct) = (uuid_arg(a, &pos[1])?, content_type_arg(a, &pos[2])?);
    let meta = std::fs::metadata(&local).map_err(Error::file("cannot read", &local))?;
    if meta.is_dir() {
        return Err(Error::Failed(format!(
            "{} is a directory; upload a file (e.g. a tar archive of it)",
            local.display()
        )));
    }
    let len = meta.len();
    let body = json!({"content_type": ct, "content_length": len});
    let exist = upload_through(s, a, &format!("/tasks/{uuid}/artifacts"), &body, &local, len)?;
    if s.json(a) {
        print_json(&json!({"uuid": uuid, "content_type": ct, "size": len, "exist": exist}));
    } else if exist {
        println!("Artifact already exists on server, replaced it: {ct} of task {uuid} ({len} B)");
    } else {
        println!("Artifact uploaded successfully: {ct} of task {uuid} ({len} B)");
    }
    Ok(Flow::Continue)
}

fn download(s: &mut Session, a: &Args) -> CommandResult {
    let pos = a.exact(&["UUID", "CONTENT_TYPE"])?;
    let (uuid, ct) = (uuid_arg(a, &pos[0])?, content_type_arg(a, &pos[1])?);
    let attempt: Option<u32> = a.parsed("attempt", "an attempt number (1 for the first)")?;
    let (path, name) = match attempt {
        Some(0) => return Err(a.usage("--attempt counts from 1 (the first attempt)".into())),
        Some(k) => (format!("/tasks/{uuid}/attempts/{k}/download/artifacts/{ct}"), format!("{ct}-attempt-{k}.tar.gz")),
        None => (format!("/tasks/{uuid}/download/artifacts/{ct}"), ct.file_name().to_string()),
    };
    let r = s.http.get(&path)?.json()?;
    let (url, size) = url_and_size(&r)?;
    if a.has("no-download") {
        if s.json(a) {
            print_json(&with_attempt(json!({"uuid": uuid, "content_type": ct, "url": url, "size": size}), attempt));
        } else {
            println!("Artifact URL: {url}");
        }
        return Ok(Flow::Continue);
    }
    let dest = destination(a.value("output-path"), &name, &name);
    let pb = Progress::new(&format!("Downloading to {}", dest.display()), Some(size), bar(a));
    let n = transfer::download(s.http.agent(), &url, &dest, &pb);
    pb.finish();
    let n = n?;
    if s.json(a) {
        print_json(&with_attempt(json!({"uuid": uuid, "content_type": ct, "size": n, "path": dest}), attempt));
    } else {
        println!("Artifact of size {n}B downloaded to {}", dest.display());
    }
    Ok(Flow::Continue)
}

/// A download's JSON summary, with `attempt` when one was asked for.
fn with_attempt(mut v: Value, attempt: Option<u32>) -> Value {
    if let (Some(k), Some(m)) = (attempt, v.as_object_mut()) {
        m.insert("attempt".into(), k.into());
    }
    v
}

/// `<CONTENT_TYPE> <UUID>...` for the list forms.
fn type_and_uuids(a: &Args) -> Result<(ArtifactContentType, Vec<uuid::Uuid>), Error> {
    let pos = a.all_pos();
    let Some(first) = pos.first() else { return Err(a.usage("missing <CONTENT_TYPE>".into())) };
    let ct = content_type_arg(a, first)?;
    let uuids = task_args::uuids_in(a, &pos[1..])?;
    Ok((ct, uuids))
}

/// The task filter plus `content_type`, as the artifact batch routes take it.
fn filter_body(s: &Session, a: &Args, content_type: ArtifactContentType) -> Result<Value, Error> {
    let req = ArtifactsDownloadByFilterReq {
        filter: task_args::filter(s, a)?,
        reporter_uuid: task_args::reporter(a)?,
        content_type,
    };
    artifact_filter_body(&req)
}

/// The body the artifact batch routes take, as this client has always sent it: only the
/// fields that are set (sorted by name, as a JSON value's keys are).
fn artifact_filter_body(req: &ArtifactsDownloadByFilterReq) -> Result<Value, Error> {
    let mut v = serde_json::to_value(req).map_err(|e| Error::Failed(format!("cannot encode the filter: {e}")))?;
    if let Some(m) = v.as_object_mut() {
        m.retain(|_, x| !x.is_null());
    }
    Ok(v)
}

fn download_batch(s: &mut Session, a: &Args, by_list: bool) -> CommandResult {
    let (ct, r) = if by_list {
        let (ct, uuids) = type_and_uuids(a)?;
        (ct, s.http.post("/tasks/download/artifacts/list", &json!({"uuids": uuids, "content_type": ct}))?)
    } else {
        let pos = a.exact(&["CONTENT_TYPE"])?;
        let ct = content_type_arg(a, &pos[0])?;
        (ct, s.http.post("/tasks/download/artifacts", &filter_body(s, a, ct)?)?)
    };
    let r = r.json()?;
    let dir = PathBuf::from(a.value("output-dir").unwrap_or("."));
    let jobs = r["downloads"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let uuid = d["uuid"].as_str().unwrap_or_default().to_string();
            Job {
                dest: dir.join(format!("{uuid}.tar.gz")),
                url: d["url"].as_str().unwrap_or_default().to_string(),
                size: d["size"].as_i64().unwrap_or(0).max(0) as u64,
                name: uuid,
            }
        })
        .collect();
    run_batch(s, a, &format!("Artifact {ct} of task"), jobs)?;
    Ok(Flow::Continue)
}

fn delete_batch(s: &mut Session, a: &Args, by_list: bool) -> CommandResult {
    let r = if by_list {
        let (ct, uuids) = type_and_uuids(a)?;
        s.http.post("/tasks/delete/artifacts/list", &json!({"uuids": uuids, "content_type": ct}))?
    } else {
        let pos = a.exact(&["CONTENT_TYPE"])?;
        let ct = content_type_arg(a, &pos[0])?;
        s.http.post("/tasks/delete/artifacts", &filter_body(s, a, ct)?)?
    }
    .json()?;
    if s.json(a) {
        print_json(&r);
        return Ok(Flow::Continue);
    }
    println!("Deleted {} artifacts", r["deleted_count"]);
    if let Some(failed) = r["failed_uuids"].as_array().filter(|f| !f.is_empty()) {
        let v: Vec<&str> = failed.iter().filter_map(Value::as_str).collect();
        println!("Failed to delete {} artifacts: {}", v.len(), v.join(", "));
    }
    Ok(Flow::Continue)
}

/// Streams a std-log archive (gzip'd tar) from `url`, handing each entry to `f` by path.
pub(super) fn read_std_log(
    agent: &ureq::Agent,
    url: &str,
    mut f: impl FnMut(&str, &mut dyn Read) -> std::io::Result<()>,
) -> Result<(), Error> {
    let resp = agent.get(url).call().map_err(|e| match e {
        ureq::Error::Status(code, r) => {
            let mut body = String::new();
            let _ = r.into_reader().take(64 << 10).read_to_string(&mut body);
            Error::Storage {
                what: "downloading the std-log".into(),
                status: code,
                message: transfer::storage_message(&body),
            }
        }
        ureq::Error::Transport(t) => Error::Transport(transfer::transport_error("downloading the std-log", &t)),
    })?;
    let bad = |e: std::io::Error| Error::Failed(format!("the std-log archive cannot be read: {e}"));
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(resp.into_reader()));
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        f(&path, &mut entry).map_err(bad)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{TaskFilter, TaskState};

    /// The bytes the client sends, captured before the filter became one struct: the
    /// fields given, sorted by name, nulls left out.
    #[test]
    fn artifact_filter_body_is_the_set_fields_and_the_type() {
        let full = ArtifactsDownloadByFilterReq {
            filter: TaskFilter {
                creator_usernames: Some(["bob".to_string()].into()),
                group_name: Some("g".into()),
                tags: Some(["t".to_string()].into()),
                labels: Some(["l".to_string()].into()),
                states: Some([TaskState::Finished].into()),
                exit_status: Some("0".into()),
                priority: Some("<3".into()),
            },
            reporter_uuid: Some(uuid::Uuid::nil()),
            content_type: ArtifactContentType::StdLog,
        };
        let body = |req| serde_json::to_string(&artifact_filter_body(&req).unwrap()).unwrap();
        assert_eq!(
            body(full),
            r#"{"content_type":"std-log","creator_usernames":["bob"],"exit_status":"0","group_name":"g","labels":["l"],"priority":"<3","reporter_uuid":"00000000-0000-0000-0000-000000000000","states":["Finished"],"tags":["t"]}"#
        );
        let only_group = ArtifactsDownloadByFilterReq {
            filter: TaskFilter { group_name: Some("g".into()), ..Default::default() },
            reporter_uuid: None,
            content_type: ArtifactContentType::Result,
        };
        assert_eq!(body(only_group), r#"{"content_type":"result","group_name":"g"}"#);
    }
}
