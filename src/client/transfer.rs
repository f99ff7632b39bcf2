//! Moving object bytes between local files and the presigned URLs the coordinator hands
//! out, in constant memory at any size, with a progress bar on a terminal.
//!
//! ```ignore
//! use mito::client::transfer::{download, Progress};
//! let agent = mito::client::http::agent(&mito::tls::Tls::new(None, |_| {}).unwrap());
//! let pb = Progress::new("Downloading to out.bin", Some(1 << 20), true);
//! let n = download(&agent, "http://127.0.0.1:5000/...signed...", std::path::Path::new("out.bin"), &pb).unwrap();
//! pb.finish();
//! ```
//!
//! Downloads go to a hidden `.part` file next to the destination and are renamed into place
//! only when complete and of the announced length, so an interrupted transfer never leaves a
//! truncated file under the real name. Uploads send an exact `Content-Length` (presigned PUTs
//! are signed for it).

use super::Error;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Whether stderr is a terminal (where progress bars go).
pub(crate) fn stderr_is_tty() -> bool {
    std::io::stderr().is_terminal()
}

/// A byte counter drawn as `label [=====>    ] 1.2 MB / 3.4 MB  5.6 MB/s  ETA 3s` on stderr.
pub(crate) struct Progress {
    label: String,
    total: Option<u64>,
    done: AtomicU64,
    start: Instant,
    enabled: bool,
    last: Mutex<Option<Instant>>,
}

impl Progress {
    pub(crate) fn new(label: &str, total: Option<u64>, enabled: bool) -> Progress {
        Progress {
            label: label.to_string(),
            total,
            done: AtomicU64::new(0),
            start: Instant::now(),
            enabled,
            last: Mutex::new(None),
        }
    }

    pub(crate) fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
        if !self.enabled {
            return;
        }
        let Ok(mut last) = self.last.lock() else { return };
        // Redraw at most ten times a second.
        if last.is_some_and(|t| t.elapsed() < Duration::from_millis(100)) {
            return;
        }
        *last = Some(Instant::now());
        self.draw(false);
    }

    /// Draws the final state and ends the line.
    pub(crate) fn finish(&self) {
        if self.enabled {
            self.draw(true);
        }
    }

    fn draw(&self, last: bool) {
        let line = self.render();
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{line}\x1b[K{}", if last { "\n" } else { "" });
        let _ = err.flush();
    }

    /// The bar as text (without the carriage return).
    pub(crate) fn render(&self) -> String {
        let done = self.done.load(Ordering::Relaxed);
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let rate = done as f64 / secs;
        let mut s = format!("{} ", self.label);
        match self.total {
            Some(total) if total > 0 => {
                let frac = (done as f64 / total as f64).min(1.0);
                let width = 24;
                let full = (frac * width as f64) as usize;
                let bar: String = (0..width)
                    .map(|i| {
                        if i < full {
                            '='
                        } else if i == full {
                            '>'
                        } else {
                            ' '
                        }
                    })
                    .collect();
                s.push_str(&format!("[{bar}] {} / {}", human_bytes(done), human_bytes(total)));
                let left = total.saturating_sub(done);
                let eta = if rate > 0.0 { format!("{}s", (left as f64 / rate).ceil() as u64) } else { "?".into() };
                s.push_str(&format!("  {}/s  ETA {eta}", human_bytes(rate as u64)));
            }
            _ => s.push_str(&format!("{}  {}/s", human_bytes(done), human_bytes(rate as u64))),
        }
        s
    }
}

/// Sizes in decimal units: `999 B`, `1.5 kB`, `12.3 MB`.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The message of an object-store error body: S3's XML `<Message>`, or the text itself.
pub(crate) fn storage_message(body: &str) -> String {
    if let (Some(a), Some(b)) = (body.find("<Message>"), body.find("</Message>")) {
        if a + 9 <= b {
            return body[a + 9..b].to_string();
        }
    }
    super::http::server_message(body)
}

fn storage_error(what: &str, e: ureq::Error) -> Error {
    match e {
        ureq::Error::Status(code, resp) => {
            let mut body = String::new();
            let _ = resp.into_reader().take(64 << 10).read_to_string(&mut body);
            Error::Storage { what: what.to_string(), status: code, message: storage_message(&body) }
        }
        // The transport error's text may include the URL; keep signatures out of the message.
        ureq::Error::Transport(t) => Error::Transport(transport_error(what, &t)),
    }
}

/// A transport failure without the URL (ureq's own text would include the signature).
pub(crate) fn transport_error(what: &str, t: &ureq::Transport) -> String {
    if let Some(m) = crate::tls::explain(t) {
        return format!("{what}: {m}");
    }
    let cause = std::error::Error::source(t).map(|e| e.to_string()).or_else(|| t.message().map(str::to_string));
    match cause {
        Some(m) => format!("{what}: {}: {m}", t.kind()),
        None => format!("{what}: {}", t.kind()),
    }
}

/// Streams `url` into `dest` (parents created); returns the byte count.
pub(crate) fn download(agent: &ureq::Agent, url: &str, dest: &Path, pb: &Progress) -> Result<u64, Error> {
    let what = format!("downloading to {}", dest.display());
    let resp = agent.get(url).call().map_err(|e| storage_error(&what, e))?;
    let expected: Option<u64> = resp.header("Content-Length").and_then(|v| v.trim().parse().ok());
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(Error::file("cannot create directory", dir))?;
    }
    let part = part_path(dest);
    let result = (|| -> Result<u64, Error> {
        let mut file = std::fs::File::create(&part).map_err(Error::file("cannot create", &part))?;
        let mut reader = resp.into_reader();
        let mut buf = vec![0u8; 256 << 10];
        let mut total = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::Failed(format!("{what}: the transfer broke off after {total} bytes: {e}")))
                }
            };
            file.write_all(&buf[..n]).map_err(Error::file("writing", &part))?;
            total += n as u64;
            pb.add(n as u64);
        }
        if let Some(len) = expected.filter(|l| *l != total) {
            return Err(Error::Failed(format!("{what}: got {total} bytes of {len}; try again")));
        }
        file.sync_all().map_err(Error::file("writing", &part))?;
        std::fs::rename(&part, dest).map_err(Error::file("cannot move the download to", dest))?;
        Ok(total)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    result
}

fn part_path(dest: &Path) -> PathBuf {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "download".into());
    dest.with_file_name(format!(".{name}.{}.part", std::process::id()))
}

/// Streams the first `len` bytes of `src` to a presigned PUT `url`.
pub(crate) fn upload(agent: &ureq::Agent, url: &str, src: &Path, len: u64, pb: &Progress) -> Result<(), Error> {
    let what = format!("uploading {}", src.display());
    let file = std::fs::File::open(src).map_err(Error::file("cannot open", src))?;
    let reader = Counting { inner: file.take(len), pb };
    agent
        .put(url)
        .set("Content-Length", &len.to_string())
        .set("Content-Type", "application/octet-stream")
        .send(reader)
        .map_err(|e| storage_error(&what, e))?;
    Ok(())
}

struct Counting<'a, R> {
    inner: R,
    pb: &'a Progress,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pb.add(n as u64);
        Ok(n)
    }
}

/// One file of a batch download.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    /// What the file is, for messages (a key or a task uuid).
    pub name: String,
    pub url: String,
    pub dest: PathBuf,
    pub size: u64,
}

/// Refuses a batch in which two jobs would write the same local file (e.g. keys `a/x.txt`
/// and `b/x.txt` both saved as `x.txt`): one would silently overwrite the other while both
/// were reported downloaded. Checked before anything is downloaded.
pub(crate) fn check_distinct_destinations(jobs: &[Job]) -> Result<(), Error> {
    let mut seen: std::collections::HashMap<&Path, &str> = std::collections::HashMap::new();
    let mut clashes = Vec::new();
    for j in jobs {
        if let Some(first) = seen.insert(&j.dest, &j.name) {
            clashes.push(format!("{first} and {} would both be saved as {}", j.name, j.dest.display()));
        }
    }
    if clashes.is_empty() {
        return Ok(());
    }
    const SHOWN: usize = 5;
    let more = clashes.len().saturating_sub(SHOWN);
    let mut msg = format!("nothing was downloaded: {}", clashes[..clashes.len().min(SHOWN)].join("; "));
    if more > 0 {
        msg.push_str(&format!("; and {more} more"));
    }
    msg.push_str(
        ". Narrow the batch (e.g. with --key) so the file names differ, or download those one at a time with `download -o <PATH>`",
    );
    Err(Error::Failed(msg))
}

/// Downloads every job with `concurrent` threads and one bar for the whole batch; every job
/// is tried, and each gets its result.
pub(crate) fn download_many(
    agent: &ureq::Agent,
    jobs: Vec<Job>,
    concurrent: usize,
    bar: bool,
) -> Vec<(Job, Result<u64, Error>)> {
    let total: u64 = jobs.iter().map(|j| j.size).sum();
    let pb = Arc::new(Progress::new(&format!("Downloading {} files", jobs.len()), Some(total), bar));
    let n = jobs.len();
    let (tx, rx) = crossbeam_channel::unbounded();
    for (i, j) in jobs.into_iter().enumerate() {
        let _ = tx.send((i, j));
    }
    drop(tx);
    let results = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let mut handles = Vec::new();
    for t in 0..concurrent.clamp(1, n.max(1)) {
        let (rx, pb, results, agent) = (rx.clone(), pb.clone(), results.clone(), agent.clone());
        let h = std::thread::Builder::new().name(format!("mito-download-{t}")).spawn(move || {
            // The channel holds a fixed set of jobs, so this loop ends when they run out.
            while let Ok((i, job)) = rx.try_recv() {
                let r = download(&agent, &job.url, &job.dest, &pb);
                if let Ok(mut v) = results.lock() {
                    v.push((i, job, r));
                }
            }
        });
        match h {
            Ok(h) => handles.push(h),
            Err(e) => log::warn!("cannot start a download thread: {e}"),
        }
    }
    if handles.is_empty() {
        // No thread could start: do the work here.
        while let Ok((i, job)) = rx.try_recv() {
            let r = download(agent, &job.url, &job.dest, &pb);
            if let Ok(mut v) = results.lock() {
                v.push((i, job, r));
            }
        }
    }
    for h in handles {
        let _ = h.join();
    }
    pb.finish();
    let mut v = std::mem::take(&mut *results.lock().unwrap_or_else(|p| p.into_inner()));
    v.sort_by_key(|(i, _, _)| *i);
    v.into_iter().map(|(_, j, r)| (j, r)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1500), "1.5 kB");
        assert_eq!(human_bytes(12_300_000), "12.3 MB");
    }

    #[test]
    fn the_bar_shows_bytes_rate_and_eta() {
        let pb = Progress::new("Uploading x", Some(2000), false);
        pb.add(1000);
        let s = pb.render();
        assert!(s.contains("1.0 kB / 2.0 kB") && s.contains("/s") && s.contains("ETA"), "{s}");
        assert!(s.contains("[============>"), "{s}");
    }

    /// A one-request HTTP server on loopback; `respond` sees the request and answers it.
    fn serve_once(respond: impl FnOnce(tiny_http::Request) + Send + 'static) -> String {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let addr = server.server_addr().to_ip().unwrap();
        std::thread::Builder::new()
            .name("test-object-store".into())
            .spawn(move || {
                if let Ok(Some(r)) = server.recv_timeout(Duration::from_secs(20)) {
                    respond(r);
                }
            })
            .unwrap();
        format!("http://{addr}/bucket/key?X-Amz-Signature=secret")
    }

    fn test_agent() -> ureq::Agent {
        crate::client::http::agent(&crate::tls::Tls::new(None, |_| {}).unwrap())
    }

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mito-transfer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn downloads_stream_into_place_and_count_bytes() {
        let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
        let expected = body.clone();
        let url = serve_once(move |r| {
            let _ = r.respond(tiny_http::Response::from_data(body));
        });
        let dest = temp("dl").join("sub/out.bin");
        let pb = Progress::new("x", Some(1_000_000), false);
        assert_eq!(download(&test_agent(), &url, &dest, &pb).unwrap(), 1_000_000);
        assert_eq!(std::fs::read(&dest).unwrap(), expected);
        assert!(pb.render().contains("1.0 MB / 1.0 MB"), "{}", pb.render());
        let leftovers: Vec<_> = std::fs::read_dir(dest.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no .part file stays behind");
        let _ = std::fs::remove_dir_all(temp("dl"));
    }

    #[test]
    fn a_failed_download_leaves_no_file_and_hides_the_signature() {
        let url = serve_once(|r| {
            let xml = "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>";
            let _ = r.respond(tiny_http::Response::from_string(xml).with_status_code(403));
        });
        let dest = temp("dlfail").join("out.bin");
        let e = match download(&test_agent(), &url, &dest, &Progress::new("x", None, false)) {
            Err(e @ Error::Storage { status: 403, .. }) => e.to_string(),
            other => panic!("{other:?}"),
        };
        assert!(e.contains("403") && e.contains("Request has expired") && !e.contains("secret"), "{e}");
        assert!(!dest.exists());
        let _ = std::fs::remove_dir_all(temp("dlfail"));
    }

    #[test]
    fn uploads_send_the_exact_length_unchunked() {
        let (tx, rx) = std::sync::mpsc::channel();
        let url = serve_once(move |mut r| {
            let len = r.headers().iter().find(|h| h.field.equiv("Content-Length")).map(|h| h.value.to_string());
            let chunked = r.headers().iter().any(|h| h.field.equiv("Transfer-Encoding"));
            let mut got = Vec::new();
            let _ = r.as_reader().read_to_end(&mut got);
            let _ = tx.send((len, chunked, got));
            let _ = r.respond(tiny_http::Response::empty(200));
        });
        let dir = temp("up");
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("in.bin");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 7) as u8).collect();
        std::fs::write(&src, &data).unwrap();
        let pb = Progress::new("x", Some(300_000), false);
        upload(&test_agent(), &url, &src, 300_000, &pb).unwrap();
        let (len, chunked, got) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(len.as_deref(), Some("300000"));
        assert!(!chunked);
        assert_eq!(got, data);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn s3_errors_give_their_message() {
        let xml =
            "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>";
        assert_eq!(storage_message(xml), "Request has expired");
    }
}
