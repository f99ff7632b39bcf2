//! Files in and out of a task: resources downloaded before the run, and the result, exec
//! and terminal-output archives (`.tar.gz`) uploaded after it.
//!
//! ```ignore
//! let packed = artifacts::pack(&dirs, terminal_output)?;     // [(ArtifactContentType, path, size)]
//! artifacts::upload(&net, task_id, &packed, deadline)?;
//! ```
//!
//! Archive layout, as mitosis has it: `result.tar.gz` holds `result/...`, `exec-log.tar.gz`
//! holds `exec-log/...`, `std-log.tar.gz` holds `std-log/stdout.log` and `std-log/stderr.log`.
//! Empty directories produce no archive; `std-log` exists whenever terminal output was asked for.

use super::error::WorkerError;
use super::net::{redact, CallError, Net};
use crate::api::{
    ArtifactContentType, RemoteResource, RemoteResourceDownload, ReportTaskOp, ReportTaskReq, ReportTaskResp,
};
use flate2::write::GzEncoder;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The directories one task uses, all under the worker's cache directory.
#[derive(Debug, Clone)]
pub(crate) struct Dirs {
    pub root: PathBuf,
    pub result: PathBuf,
    pub exec: PathBuf,
    pub resource: PathBuf,
    /// Where stdout.log and stderr.log are written.
    pub std: PathBuf,
    pub new_task: PathBuf,
    /// The uid and gid tasks run as when not the worker's: they own result, exec,
    /// resource and new_task.json, nothing else.
    pub task_owner: Option<(u32, u32)>,
}

impl Dirs {
    pub(crate) fn new(root: PathBuf, task_owner: Option<(u32, u32)>) -> Dirs {
        Dirs {
            task_owner,
            result: root.join("result"),
            exec: root.join("exec"),
            resource: root.join("resource"),
            std: root.join("std"),
            new_task: root.join("new_task.json"),
            root,
        }
    }

    /// Empties everything a previous task left and recreates the directories.
    pub(crate) fn reset(&self) -> std::io::Result<()> {
        if self.root.exists() {
            for entry in std::fs::read_dir(&self.root)? {
                let p = entry?.path();
                let r =
                    if p.is_dir() && !p.is_symlink() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
                r.map_err(|e| std::io::Error::new(e.kind(), format!("cannot remove {}: {e}", p.display())))?;
            }
        }
        // Private to the worker's user; with a task user, the two top levels only let it
        // pass through (0711) to the directories it owns.
        let top = if self.task_owner.is_some() { 0o711 } else { 0o700 };
        fn ctx(d: &Path) -> impl FnOnce(std::io::Error) -> std::io::Error + '_ {
            move |e| std::io::Error::new(e.kind(), format!("cannot create {}: {e}", d.display()))
        }
        std::fs::DirBuilder::new().recursive(true).mode(top).create(&self.root).map_err(ctx(&self.root))?;
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(top)).map_err(ctx(&self.root))?;
        for d in [&self.result, &self.exec, &self.resource, &self.std] {
            std::fs::DirBuilder::new().mode(0o700).create(d).map_err(ctx(d))?;
        }
        if let Some((uid, gid)) = self.task_owner {
            // Created here, so that the task can write it but not replace it with a link
            // to something only the worker may read.
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&self.new_task)
                .map_err(ctx(&self.new_task))?;
            for p in [&self.result, &self.exec, &self.resource, &self.new_task] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).map_err(ctx(p))?;
            }
        }
        Ok(())
    }

    /// Gives `dir` (the directory above the root, `<cache>/mitosis`, which holds every
    /// worker's directory) the same mode as the root. Only for that directory: it is ours.
    pub(crate) fn restrict(&self, dir: &Path) -> std::io::Result<()> {
        let mode = if self.task_owner.is_some() { 0o711 } else { 0o700 };
        std::fs::DirBuilder::new().recursive(true).mode(mode).create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
    }

    /// With a task user: checks that it can reach the working directory, i.e. that every
    /// directory above `<cache>/mitosis` lets others through.
    pub(crate) fn check_reachable(&self) -> Result<(), WorkerError> {
        let Some((uid, _)) = self.task_owner else { return Ok(()) };
        let Some(top) = self.root.parent() else { return Ok(()) };
        for d in top.ancestors().skip(1) {
            let Ok(meta) = std::fs::metadata(d) else { continue };
            if meta.uid() != uid && meta.permissions().mode() & 0o001 == 0 {
                return Err(WorkerError::Untraversable {
                    dir: d.to_path_buf(),
                    mode: meta.permissions().mode() & 0o7777,
                    root: self.root.clone(),
                });
            }
        }
        Ok(())
    }
}

fn dir_is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).map(|mut r| r.next().is_none()).unwrap_or(true)
}

/// Packs what the task produced; returns the archives made, with their sizes.
pub(super) fn pack(dirs: &Dirs, terminal_output: bool) -> std::io::Result<Vec<(ArtifactContentType, PathBuf, u64)>> {
    let mut out = Vec::new();
    for (ct, dir, prefix) in
        [(ArtifactContentType::Result, &dirs.result, "result"), (ArtifactContentType::ExecLog, &dirs.exec, "exec-log")]
    {
        if dir_is_empty(dir) {
            continue;
        }
        let path = dirs.root.join(ct.file_name());
        write_archive(&path, |b| b.append_dir_all(prefix, dir))?;
        out.push((ct, path.clone(), std::fs::metadata(&path)?.len()));
    }
    if terminal_output {
        let path = dirs.root.join(ArtifactContentType::StdLog.file_name());
        write_archive(&path, |b| {
            for name in ["stdout.log", "stderr.log"] {
                append_log(b, &format!("std-log/{name}"), &dirs.std.join(name))?;
            }
            Ok(())
        })?;
        out.push((ArtifactContentType::StdLog, path.clone(), std::fs::metadata(&path)?.len()));
    }
    Ok(out)
}

fn write_archive(
    path: &Path,
    fill: impl FnOnce(&mut tar::Builder<GzEncoder<BufWriter<File>>>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let f = BufWriter::new(std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?);
    let mut b = tar::Builder::new(GzEncoder::new(f, flate2::Compression::default()));
    // Symlinks are archived as links, never followed out of the directory.
    b.follow_symlinks(false);
    fill(&mut b)?;
    b.into_inner()?.finish()?.flush()
}

/// Appends a log file (streamed, not read into memory); a missing file is an empty entry.
fn append_log(b: &mut tar::Builder<GzEncoder<BufWriter<File>>>, name: &str, path: &Path) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o664);
    header.set_entry_type(tar::EntryType::Regular);
    match File::open(path) {
        Ok(f) => {
            // The task may have gone, but a straggler could still be writing: take the size
            // now and copy exactly that much.
            let len = f.metadata()?.len();
            header.set_size(len);
            header.set_cksum();
            b.append_data(&mut header, name, std::io::Read::take(f, len))
        }
        Err(_) => {
            header.set_size(0);
            header.set_cksum();
            b.append_data(&mut header, name, std::io::empty())
        }
    }
}

/// Why uploading stopped early.
#[derive(Debug)]
pub(super) enum UploadError {
    /// The window closed.
    Timeout,
    /// 401 or the worker is stopping: the caller stops too.
    Fatal(CallError),
}

/// Uploads each archive: the `Upload` report op gives a presigned URL, then a PUT with
/// Content-Length. 403/404 from the coordinator skip the rest (quota, task gone).
pub(super) fn upload(
    net: &Net,
    task_id: i64,
    packed: &[(ArtifactContentType, PathBuf, u64)],
    deadline: Instant,
) -> Result<(), UploadError> {
    for (ct, path, size) in packed {
        let req = ReportTaskReq { id: task_id, op: ReportTaskOp::Upload { content_type: *ct, content_length: *size } };
        let what = format!("asking where to upload {}", ct.file_name());
        let resp: Result<ReportTaskResp, _> =
            net.call_json(&what, Some(deadline), || net.request("POST", "/workers/tasks").send_json(&req));
        let url = match resp {
            Ok(ReportTaskResp { url: Some(u) }) => u,
            Ok(ReportTaskResp { url: None }) => {
                log::debug!("no upload URL for {}; skipped", ct.file_name());
                continue;
            }
            Err(CallError::Timeout(_)) => return Err(UploadError::Timeout),
            Err(e @ (CallError::Unauthorized | CallError::Stopped)) => return Err(UploadError::Fatal(e)),
            Err(CallError::Status(s @ (403 | 404), m)) => {
                log::warn!("upload of {} refused ({s}: {m}); the task's other artifacts are skipped", ct.file_name());
                return Ok(());
            }
            Err(e) => {
                log::error!("{what}: {e}; skipped");
                continue;
            }
        };
        let put = net.call(&format!("uploading {} to {}", ct.file_name(), redact(&url)), Some(deadline), || {
            let f = File::open(path).map_err(ureq::Error::from)?;
            net.agent.put(&url).set("Content-Length", &size.to_string()).timeout(Duration::from_secs(600)).send(f)
        });
        match put {
            Ok(_) => log::debug!("uploaded {} ({size} bytes)", ct.file_name()),
            Err(CallError::Timeout(_)) => return Err(UploadError::Timeout),
            Err(CallError::Stopped) => return Err(UploadError::Fatal(CallError::Stopped)),
            // A 401 here comes from storage (an expired URL), not from the coordinator.
            Err(e) => log::error!("uploading {} failed: {e}; skipped", ct.file_name()),
        }
    }
    Ok(())
}

/// The answer to a resource URL request.
#[derive(Debug, serde::Deserialize)]
struct DownloadResp {
    url: String,
    #[allow(dead_code)]
    size: i64,
}

/// Why a resource could not be had.
#[derive(Debug)]
pub(super) enum FetchError {
    NotFound(String),
    Forbidden(String),
    Timeout(String),
    Fatal(CallError),
}

/// A resource's place under `resource/`, refusing absolute paths and `..`.
pub(super) fn local_target(resource_dir: &Path, local_path: &str) -> Option<PathBuf> {
    let p = Path::new(local_path);
    let ok = !local_path.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    ok.then(|| resource_dir.join(p))
}

/// Downloads every resource into `resource_dir` before `deadline`.
pub(super) fn fetch_resources(
    net: &Net,
    task: Uuid,
    resources: &[RemoteResourceDownload],
    resource_dir: &Path,
    deadline: Instant,
) -> Result<(), FetchError> {
    for r in resources {
        let path = match &r.remote_file {
            RemoteResource::Artifact { uuid, content_type } => {
                format!("/workers/tasks/{uuid}/artifacts/{content_type}")
            }
            RemoteResource::Attachment { key } => format!("/workers/tasks/{task}/attachments/{}", encode_key(key)),
        };
        let Some(target) = local_target(resource_dir, &r.local_path) else {
            return Err(FetchError::Forbidden(format!(
                "local path {:?} is not a relative path inside the resource directory",
                r.local_path
            )));
        };
        let what = format!("locating resource {path}");
        let resp: DownloadResp = match net.call_json(&what, Some(deadline), || net.request("GET", &path).call()) {
            Ok(r) => r,
            Err(CallError::Status(404, m)) => return Err(FetchError::NotFound(format!("{path}: {m}"))),
            Err(CallError::Status(403, m)) => return Err(FetchError::Forbidden(format!("{path}: {m}"))),
            Err(CallError::Timeout(m)) => return Err(FetchError::Timeout(format!("{path}: {m}"))),
            Err(CallError::Status(s, m)) => return Err(FetchError::Forbidden(format!("{path}: {s} {m}"))),
            Err(e) => return Err(FetchError::Fatal(e)),
        };
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| FetchError::Forbidden(format!("cannot create {}: {e}", parent.display())))?;
        }
        download(net, &resp.url, &target, deadline)?;
        log::debug!("resource {path} saved as {}", target.display());
    }
    Ok(())
}

fn download(net: &Net, url: &str, target: &Path, deadline: Instant) -> Result<(), FetchError> {
    let what = format!("downloading {}", redact(url));
    // Retried as a whole: a connection lost mid-body starts the file again.
    let mut backoff = super::net::Backoff::new(Duration::from_millis(250), net.retry_cap);
    loop {
        let resp = match net.call(&what, Some(deadline), || net.agent.get(url).call()) {
            Ok(r) => r,
            Err(CallError::Timeout(m)) => return Err(FetchError::Timeout(m)),
            Err(CallError::Stopped) => return Err(FetchError::Fatal(CallError::Stopped)),
            Err(e) => return Err(FetchError::Forbidden(format!("{}: {e}", redact(url)))),
        };
        let mut f = File::create(target)
            .map_err(|e| FetchError::Forbidden(format!("cannot write {}: {e}", target.display())))?;
        match std::io::copy(&mut resp.into_reader(), &mut f) {
            Ok(_) => return Ok(()),
            Err(e) => {
                let delay = backoff.next_delay();
                if Instant::now() + delay >= deadline {
                    return Err(FetchError::Timeout(format!("{}: {e}", redact(url))));
                }
                log::warn!("{what} broke off ({e}); retrying in {:.1}s", delay.as_secs_f64());
                if net.shutdown.sleep(delay) {
                    return Err(FetchError::Fatal(CallError::Stopped));
                }
            }
        }
    }
}

/// Percent-encodes an attachment key for the URL path, keeping `/` as the separator.
fn encode_key(key: &str) -> String {
    let mut s = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn tmp(name: &str) -> Dirs {
        let d = std::env::temp_dir().join(format!("mito-art-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let dirs = Dirs::new(d, None);
        dirs.reset().unwrap();
        dirs
    }

    fn entries(path: &Path) -> Vec<(String, String)> {
        let gz = flate2::read::GzDecoder::new(File::open(path).unwrap());
        let mut a = tar::Archive::new(gz);
        let mut v = vec![];
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut body = String::new();
            e.read_to_string(&mut body).unwrap();
            v.push((name, body));
        }
        v
    }

    #[test]
    fn archives_use_the_mitosis_layout() {
        let d = tmp("layout");
        std::fs::create_dir_all(d.result.join("sub")).unwrap();
        std::fs::write(d.result.join("sub/a.txt"), "A").unwrap();
        std::fs::write(d.std.join("stdout.log"), "out").unwrap();
        let packed = pack(&d, true).unwrap();
        let kinds: Vec<_> = packed.iter().map(|p| p.0).collect();
        assert_eq!(
            kinds,
            vec![ArtifactContentType::Result, ArtifactContentType::StdLog],
            "empty exec/ gives no archive"
        );
        let r = entries(&packed[0].1);
        assert!(r.iter().any(|(n, b)| n == "result/sub/a.txt" && b == "A"), "{r:?}");
        let s = entries(&packed[1].1);
        assert_eq!(s, vec![("std-log/stdout.log".into(), "out".into()), ("std-log/stderr.log".into(), String::new())]);
        assert!(pack(&d, false).unwrap().iter().all(|p| p.0 != ArtifactContentType::StdLog));
    }

    #[test]
    fn reset_empties_and_recreates_every_directory() {
        let d = tmp("reset");
        std::fs::write(d.result.join("x"), "1").unwrap();
        std::fs::write(&d.new_task, "{}").unwrap();
        d.reset().unwrap();
        assert!(dir_is_empty(&d.result) && d.resource.is_dir() && !d.new_task.exists());
    }

    #[test]
    fn local_paths_stay_inside_the_resource_dir() {
        let base = Path::new("/r");
        assert_eq!(local_target(base, "a/b.txt"), Some(PathBuf::from("/r/a/b.txt")));
        assert_eq!(local_target(base, "../x"), None);
        assert_eq!(local_target(base, "/etc/passwd"), None);
        assert_eq!(local_target(base, ""), None);
    }

    #[test]
    fn attachment_keys_are_encoded_but_keep_slashes() {
        assert_eq!(encode_key("dir/a b.txt"), "dir/a%20b.txt");
    }
}
