//! `groups attachments ...`: files kept in a group (task resources), moved straight to and
//! from object storage through presigned URLs.
//!
//! ```text
//! groups attachments upload data.csv inputs/          # key inputs/data.csv in your group
//! groups attachments upload -s data.csv lab/inputs/   # key inputs/data.csv in group lab
//! groups attachments download -s lab/inputs/data.csv  # saved as ./data.csv
//! ```

use super::args::{Args, Command, Group, Spec};
use super::http::{enc, typed};
use super::output::{print_json, ts};
use super::transfer::{self, human_bytes, Job, Progress};
use super::{CommandResult, Error, Flow, Session};
use crate::opts::OptSpec;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const GROUP: OptSpec = OptSpec::opt("group", Some('g'), "GROUP", "The group (default: your own)");
const SMART: OptSpec = OptSpec::flag("smart", Some('s'), "Take the group from the key's first path segment");
const PROGRESS_BAR: OptSpec = OptSpec::flag("pb", None, "Show a progress bar even when stderr is not a terminal");
const OUT: OptSpec =
    OptSpec::opt("output-path", Some('o'), "OUTPUT_PATH", "Where to save (an existing directory keeps the file name)");
const DIR: OptSpec =
    OptSpec::opt("output-dir", Some('o'), "DIR", "The directory to save into (default .); files keep their names");
const NO_DOWNLOAD: OptSpec = OptSpec::flag("no-download", None, "Only print the download URLs");
const KEY: OptSpec = OptSpec::opt("key", Some('k'), "KEY", "Only keys containing this text");
const LIMIT: OptSpec = OptSpec::opt("limit", None, "LIMIT", "At most this many");
const OFFSET: OptSpec = OptSpec::opt("offset", None, "OFFSET", "Skip this many first");
const CONCURRENT: OptSpec = OptSpec::opt("concurrent", None, "N", "Download N files at a time (default 1)");
const COUNT: OptSpec = OptSpec::flag("count", None, "Only count");

const UPLOAD: Spec = Spec {
    name: "groups attachments upload",
    usage: "<LOCAL_FILE> [KEY]",
    about:
        "Upload a file as an attachment. KEY defaults to the file name; a KEY ending in / gets the file name appended",
    flags: &[GROUP, PROGRESS_BAR, SMART],
};
const DOWNLOAD: Spec = Spec {
    name: "groups attachments download",
    usage: "<KEY>",
    about: "Download an attachment (by default to ./KEY, or ./<file name> with --smart)",
    flags: &[GROUP, OUT, NO_DOWNLOAD, PROGRESS_BAR, SMART],
};
const GET: Spec = Spec {
    name: "groups attachments get",
    usage: "<KEY>",
    about: "Show an attachment's size and times",
    flags: &[GROUP, SMART],
};
const DELETE: Spec = Spec {
    name: "groups attachments delete",
    usage: "<KEY>",
    about: "Delete an attachment (not within an hour of its last upload)",
    flags: &[GROUP, SMART],
};
const QUERY: Spec = Spec {
    name: "groups attachments query",
    usage: "",
    about: "List a group's attachments",
    flags: &[GROUP, KEY, LIMIT, OFFSET, COUNT],
};
const DOWNLOAD_MANY: Spec = Spec {
    name: "groups attachments download-many",
    usage: "",
    about: "Download the attachments that match a filter, each to DIR/<file name>",
    flags: &[GROUP, KEY, LIMIT, OFFSET, DIR, NO_DOWNLOAD, PROGRESS_BAR, CONCURRENT],
};
const DOWNLOAD_LIST: Spec = Spec {
    name: "groups attachments download-list",
    usage: "<KEY>...",
    about: "Download the listed attachments, each to DIR/<file name>",
    flags: &[GROUP, DIR, NO_DOWNLOAD, PROGRESS_BAR, CONCURRENT],
};
const DELETE_MANY: Spec = Spec {
    name: "groups attachments delete-many",
    usage: "",
    about: "Delete the attachments that match a filter (recently uploaded ones are kept)",
    flags: &[GROUP, KEY, LIMIT, OFFSET],
};
const DELETE_LIST: Spec = Spec {
    name: "groups attachments delete-list",
    usage: "<KEY>...",
    about: "Delete the listed attachments",
    flags: &[GROUP],
};

const ATTACHMENTS: Group = Group {
    name: "groups attachments",
    about: "Files stored in a group, usable as task resources",
    commands: &[
        Command::cmd("upload", "Upload a file", &UPLOAD, upload),
        Command::cmd("download", "Download a file", &DOWNLOAD, download),
        Command::cmd("get", "Show an attachment's size and times", &GET, get),
        Command::cmd("delete", "Delete an attachment", &DELETE, delete),
        Command::cmd("query", "List attachments", &QUERY, query),
        Command::cmd("download-many", "Download the attachments that match a filter", &DOWNLOAD_MANY, |s, a| {
            download_batch(s, a, false)
        }),
        Command::cmd("download-list", "Download the listed attachments", &DOWNLOAD_LIST, |s, a| {
            download_batch(s, a, true)
        }),
        Command::cmd("delete-many", "Delete the attachments that match a filter", &DELETE_MANY, |s, a| {
            delete_batch(s, a, false)
        }),
        Command::cmd("delete-list", "Delete the listed attachments", &DELETE_LIST, |s, a| delete_batch(s, a, true)),
    ],
    aliases: &[],
};

pub(super) fn run(s: &mut Session, words: &[String]) -> CommandResult {
    ATTACHMENTS.run(s, words)
}

/// A key made tidy: `.` segments and doubled slashes dropped, `..` resolved, no leading `/`.
pub(super) fn clean_key(key: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in key.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut k = parts.join("/");
    if key.ends_with('/') && !k.is_empty() {
        k.push('/');
    }
    k
}

/// The group and key an attachment argument names (`-g`, `--smart`, or your own group).
pub(super) fn resolve(s: &Session, group: Option<&str>, key: &str, smart: bool) -> Result<(String, String), Error> {
    let key = clean_key(key);
    if let Some(g) = group {
        return Ok((g.to_string(), key));
    }
    if smart {
        return match key.split_once('/') {
            Some((g, k)) if !k.is_empty() => Ok((g.to_string(), k.to_string())),
            _ => Err(Error::Usage(format!("with --smart the key must be GROUP/KEY, but {key:?} has no group part"))),
        };
    }
    Ok((s.user.clone(), key))
}

fn base(group: &str) -> String {
    format!("/groups/{}", enc(group, false))
}

/// Whether to draw a progress bar: asked for with `--pb`, or stderr is a terminal.
pub(super) fn bar(a: &Args) -> bool {
    a.has("pb") || transfer::stderr_is_tty()
}

/// Asks the coordinator for an upload URL (`POST path` with `body`) and streams `local`
/// (`len` bytes) to it. Returns whether the object existed already.
pub(super) fn upload_through(
    s: &mut Session,
    a: &Args,
    path: &str,
    body: &Value,
    local: &Path,
    len: u64,
) -> Result<bool, Error> {
    let r = s.http.post(path, body)?.json()?;
    let url = r["url"].as_str().ok_or_else(|| Error::Failed("the coordinator gave no upload URL".into()))?;
    let pb = Progress::new(&format!("Uploading from {}", local.display()), Some(len), bar(a));
    let done = transfer::upload(s.http.agent(), url, local, len, &pb);
    pb.finish();
    done?;
    Ok(r["exist"].as_bool().unwrap_or(false))
}

fn upload(s: &mut Session, a: &Args) -> CommandResult {
    let pos = a.at_most(2)?;
    let Some(local) = pos.first() else { return Err(a.usage("missing <LOCAL_FILE>".into())) };
    let local = PathBuf::from(local);
    let meta = std::fs::metadata(&local).map_err(Error::file("cannot read", &local))?;
    if meta.is_dir() {
        return Err(Error::Failed(format!(
            "{} is a directory; upload a file (e.g. a tar archive of it)",
            local.display()
        )));
    }
    let file_name = local.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let given = pos.get(1).cloned();
    let (group, key) = match (a.value("group"), a.has("smart"), given) {
        (None, true, Some(k)) => match k.split_once('/') {
            Some((g, rest)) => (g.to_string(), rest.to_string()),
            None => (k, String::new()),
        },
        (g, _, k) => (g.map(str::to_string).unwrap_or_else(|| s.user.clone()), k.unwrap_or_default()),
    };
    let key = if key.is_empty() || key.ends_with('/') { format!("{key}{file_name}") } else { key };
    let key = clean_key(&key);
    if key.is_empty() || key.ends_with('/') {
        return Err(a.usage(format!("cannot make an attachment key from {:?}", pos.get(1))));
    }
    let len = meta.len();
    let body = json!({"key": key, "content_length": len});
    let exist = upload_through(s, a, &format!("{}/attachments", base(&group)), &body, &local, len)?;
    if s.json(a) {
        print_json(&json!({"group_name": group, "key": key, "size": len, "exist": exist}));
    } else if exist {
        println!("Attachment already exists on server, replaced it: {key} in group {group} ({len} B)");
    } else {
        println!("Attachment uploaded successfully: {key} in group {group} ({len} B)");
    }
    Ok(Flow::Continue)
}

/// Where a single download goes: `-o` (a directory keeps `name`), else `default`.
pub(super) fn destination(out: Option<&str>, name: &str, default: &str) -> PathBuf {
    match out {
        Some(o) if Path::new(o).is_dir() => Path::new(o).join(name),
        Some(o) => PathBuf::from(o),
        None => PathBuf::from(default),
    }
}

fn download(s: &mut Session, a: &Args) -> CommandResult {
    let pos = a.exact(&["KEY"])?;
    let (group, key) = resolve(s, a.value("group"), &pos[0], a.has("smart"))?;
    let r = s.http.get(&format!("{}/download/attachments/{}", base(&group), enc(&key, true)))?.json()?;
    let (url, size) = url_and_size(&r)?;
    if a.has("no-download") {
        if s.json(a) {
            print_json(&json!({"group_name": group, "key": key, "url": url, "size": size}));
        } else {
            println!("Attachment URL: {url}");
        }
        return Ok(Flow::Continue);
    }
    let name = key.rsplit('/').next().unwrap_or(&key).to_string();
    let default = if a.has("smart") { name.clone() } else { key.clone() };
    let dest = destination(a.value("output-path"), &name, &default);
    let pb = Progress::new(&format!("Downloading to {}", dest.display()), Some(size), bar(a));
    let n = transfer::download(s.http.agent(), &url, &dest, &pb);
    pb.finish();
    let n = n?;
    if s.json(a) {
        print_json(&json!({"group_name": group, "key": key, "size": n, "path": dest}));
    } else {
        println!("Attachment of size {n}B downloaded to {}", dest.display());
    }
    Ok(Flow::Continue)
}

pub(super) fn url_and_size(r: &Value) -> Result<(String, u64), Error> {
    let url = r["url"].as_str().ok_or_else(|| Error::Failed("the coordinator gave no download URL".into()))?;
    Ok((url.to_string(), r["size"].as_i64().unwrap_or(0).max(0) as u64))
}

fn get(s: &mut Session, a: &Args) -> CommandResult {
    let pos = a.exact(&["KEY"])?;
    let (group, key) = resolve(s, a.value("group"), &pos[0], a.has("smart"))?;
    let r = s.http.get(&format!("{}/attachments/{}", base(&group), enc(&key, true)))?.json()?;
    if s.json(a) {
        print_json(&r);
        return Ok(Flow::Continue);
    }
    let created: crate::api::Timestamp = typed(&r["created_at"], "the attachment")?;
    let updated: crate::api::Timestamp = typed(&r["updated_at"], "the attachment")?;
    println!("Attachment {key} in group {group}");
    println!("  Size: {}B", r["size"].as_i64().unwrap_or(0));
    println!("  Created at {}, updated at {}", ts(&created), ts(&updated));
    Ok(Flow::Continue)
}

fn delete(s: &mut Session, a: &Args) -> CommandResult {
    let pos = a.exact(&["KEY"])?;
    let (group, key) = resolve(s, a.value("group"), &pos[0], a.has("smart"))?;
    s.http.delete(&format!("{}/attachments/{}", base(&group), enc(&key, true)))?;
    if !s.json(a) {
        println!("Attachment {key} of group {group} deleted");
    }
    Ok(Flow::Continue)
}

/// `{key?, limit?, offset?}` from the filter flags.
fn filter(a: &Args) -> Result<serde_json::Map<String, Value>, Error> {
    let mut m = serde_json::Map::new();
    if let Some(k) = a.value("key") {
        m.insert("key".into(), json!(k));
    }
    if let Some(l) = a.parsed::<u64>("limit", "a whole number")? {
        m.insert("limit".into(), json!(l));
    }
    if let Some(o) = a.parsed::<u64>("offset", "a whole number")? {
        m.insert("offset".into(), json!(o));
    }
    Ok(m)
}

fn query(s: &mut Session, a: &Args) -> CommandResult {
    a.exact(&[])?;
    let group = a.value("group").map(str::to_string).unwrap_or_else(|| s.user.clone());
    let mut body = filter(a)?;
    body.insert("count".into(), json!(a.has("count")));
    let r = s.http.post(&format!("{}/attachments/query", base(&group)), &body)?.json()?;
    if s.json(a) {
        print_json(&r);
        return Ok(Flow::Continue);
    }
    println!("Found {} attachments in group {}", r["count"], r["group_name"].as_str().unwrap_or(&group));
    for att in r["attachments"].as_array().into_iter().flatten() {
        let updated: Option<crate::api::Timestamp> = typed(&att["updated_at"], "the attachment query").ok();
        println!(
            "{}  {}  {}",
            att["key"].as_str().unwrap_or("?"),
            human_bytes(att["size"].as_i64().unwrap_or(0).max(0) as u64),
            updated.map(|t| ts(&t)).unwrap_or_default()
        );
    }
    Ok(Flow::Continue)
}

fn download_batch(s: &mut Session, a: &Args, by_list: bool) -> CommandResult {
    let group = a.value("group").map(str::to_string).unwrap_or_else(|| s.user.clone());
    let r = if by_list {
        let keys: Vec<String> = a.all_pos().iter().map(|k| clean_key(k)).collect();
        if keys.is_empty() {
            return Err(a.usage("missing <KEY>".into()));
        }
        s.http.post(&format!("{}/download/attachments/list", base(&group)), &json!({ "keys": keys }))?
    } else {
        a.exact(&[])?;
        s.http.post(&format!("{}/download/attachments", base(&group)), &filter(a)?)?
    }
    .json()?;
    let dir = PathBuf::from(a.value("output-dir").unwrap_or("."));
    let jobs = r["downloads"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let key = d["key"].as_str().unwrap_or_default().to_string();
            let name = key.rsplit('/').next().unwrap_or(&key).to_string();
            Job {
                dest: dir.join(name),
                url: d["url"].as_str().unwrap_or_default().to_string(),
                size: d["size"].as_i64().unwrap_or(0).max(0) as u64,
                name: key,
            }
        })
        .collect();
    run_batch(s, a, "Attachment", jobs)?;
    Ok(Flow::Continue)
}

/// Downloads (or, with --no-download, lists) a batch and reports each file; fails if any did.
pub(super) fn run_batch(s: &Session, a: &Args, what: &str, jobs: Vec<Job>) -> Result<(), Error> {
    if a.has("no-download") {
        if s.json(a) {
            let v: Vec<Value> = jobs.iter().map(|j| json!({"name": j.name, "url": j.url, "size": j.size})).collect();
            print_json(&json!({ "downloads": v }));
        } else {
            for j in &jobs {
                println!("{what} {}: {}", j.name, j.url);
            }
        }
        return Ok(());
    }
    transfer::check_distinct_destinations(&jobs)?;
    let concurrent = a.parsed::<usize>("concurrent", "a whole number")?.unwrap_or(1).max(1);
    let results = transfer::download_many(s.http.agent(), jobs, concurrent, bar(a));
    let mut failed = 0;
    let mut out = Vec::new();
    for (job, r) in &results {
        match r {
            Ok(n) => {
                if !s.json(a) {
                    println!("{what} {} of size {n}B downloaded to {}", job.name, job.dest.display());
                }
                out.push(json!({"name": job.name, "path": job.dest, "size": n}));
            }
            Err(e) => {
                failed += 1;
                let m = e.to_string();
                eprintln!("error: {what} {}: {m}", job.name);
                out.push(json!({"name": job.name, "path": job.dest, "error": m}));
            }
        }
    }
    if s.json(a) {
        print_json(&json!({ "downloads": out }));
    } else {
        println!("Downloaded {} of {} files", results.len() - failed, results.len());
    }
    if failed > 0 {
        return Err(Error::Failed(format!("{failed} of {} downloads failed", results.len())));
    }
    Ok(())
}

fn delete_batch(s: &mut Session, a: &Args, by_list: bool) -> CommandResult {
    let group = a.value("group").map(str::to_string).unwrap_or_else(|| s.user.clone());
    let r = if by_list {
        let keys: Vec<String> = a.all_pos().iter().map(|k| clean_key(k)).collect();
        if keys.is_empty() {
            return Err(a.usage("missing <KEY>".into()));
        }
        s.http.post(&format!("{}/delete/attachments/list", base(&group)), &json!({ "keys": keys }))?
    } else {
        a.exact(&[])?;
        s.http.post(&format!("{}/delete/attachments", base(&group)), &filter(a)?)?
    }
    .json()?;
    if s.json(a) {
        print_json(&r);
        return Ok(Flow::Continue);
    }
    println!("Deleted {} attachments in group {}", r["deleted_count"], r["group_name"].as_str().unwrap_or(&group));
    if let Some(failed) = r["failed_keys"].as_array().filter(|f| !f.is_empty()) {
        let keys: Vec<&str> = failed.iter().filter_map(Value::as_str).collect();
        println!("Failed to delete {} attachments: {}", keys.len(), keys.join(", "));
    }
    Ok(Flow::Continue)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_cleaned_like_paths() {
        assert_eq!(clean_key("a//b/./c"), "a/b/c");
        assert_eq!(clean_key("/a/../b"), "b");
        assert_eq!(clean_key("dir/"), "dir/");
        assert_eq!(clean_key("./x"), "x");
    }

    #[test]
    fn an_existing_directory_keeps_the_name() {
        let d = std::env::temp_dir();
        assert_eq!(destination(Some(d.to_str().unwrap()), "f.txt", "k/f.txt"), d.join("f.txt"));
        assert_eq!(destination(Some("/nonexistent/out.bin"), "f.txt", "x"), PathBuf::from("/nonexistent/out.bin"));
        assert_eq!(destination(None, "f.txt", "k/f.txt"), PathBuf::from("k/f.txt"));
    }
}
