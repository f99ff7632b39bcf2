//! Shipping a running task's output to the coordinator as it is written, so that
//! `mito client tasks logs --follow` shows it live. Only for tasks with
//! `terminal_output`, whose stdout and stderr go to files: a `log-shipper` thread reads
//! what was appended to each and sends it (`POST /workers/tasks/{uuid}/log`).
//!
//! Best effort and bounded: at most [`CHUNK`] bytes per stream per call, one round every
//! [`EVERY`], each call with a short timeout and no retry (the std-log artifact, uploaded
//! after the task, is the complete record). A failed call is tried again next round from
//! the same offset.

use super::net::Net;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use uuid::Uuid;

/// Bytes per call, the coordinator's limit.
const CHUNK: usize = 64 << 10;
/// Time between rounds: output shows up in well under a second.
const EVERY: Duration = Duration::from_millis(300);
/// One call's time limit.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Calls per stream once the task has ended, to send what it wrote last (about 1 MiB,
/// what the coordinator keeps anyway).
const FINAL_CALLS: usize = 16;

/// The shipper of one task's output; [`Shipper::finish`] sends the rest and stops it.
pub(crate) struct Shipper {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct Stream {
    name: &'static str,
    path: PathBuf,
    sent: u64,
}

impl Shipper {
    pub(crate) fn start(net: Arc<Net>, uuid: Uuid, stdout: PathBuf, stderr: PathBuf) -> Shipper {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let thread = std::thread::Builder::new()
            .name("log-shipper".into())
            .spawn(move || {
                let mut streams = [
                    Stream { name: "stdout", path: stdout, sent: 0 },
                    Stream { name: "stderr", path: stderr, sent: 0 },
                ];
                // An empty chunk at 0 says live output is coming (and starts it afresh).
                for s in &streams {
                    send(&net, uuid, s, &[]);
                }
                while !flag.load(Ordering::SeqCst) && !net.shutdown.is_set() {
                    for s in &mut streams {
                        ship_some(&net, uuid, s);
                    }
                    net.shutdown.sleep(EVERY);
                }
                for s in &mut streams {
                    for _ in 0..FINAL_CALLS {
                        if !ship_some(&net, uuid, s) {
                            break;
                        }
                    }
                }
            })
            .map_err(|e| log::warn!("cannot start the log shipper: {e}; the task's output is not shown live"))
            .ok();
        Shipper { done, thread }
    }

    /// Sends what the task wrote last and stops the thread (before the task's Finish
    /// report, so a follower that sees the task end has all of its output).
    pub(crate) fn finish(mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends the next chunk of `s`, if any; true if a full chunk went (more may be waiting).
fn ship_some(net: &Net, uuid: Uuid, s: &mut Stream) -> bool {
    let Ok(mut f) = std::fs::File::open(&s.path) else { return false };
    if f.seek(SeekFrom::Start(s.sent)).is_err() {
        return false;
    }
    let mut buf = Vec::with_capacity(CHUNK);
    if f.take(CHUNK as u64).read_to_end(&mut buf).is_err() || buf.is_empty() {
        return false;
    }
    if send(net, uuid, s, &buf) {
        s.sent += buf.len() as u64;
        return buf.len() == CHUNK;
    }
    false
}

fn send(net: &Net, uuid: Uuid, s: &Stream, bytes: &[u8]) -> bool {
    let offset = if bytes.is_empty() { 0 } else { s.sent };
    let path = format!("/workers/tasks/{uuid}/log?stream={}&offset={offset}", s.name);
    match net
        .request("POST", &path)
        .timeout(CALL_TIMEOUT)
        .set("Content-Type", "application/octet-stream")
        .send_bytes(bytes)
    {
        Ok(_) => true,
        Err(e) => {
            log::debug!("shipping task {uuid}'s {} failed: {}", s.name, super::net::describe(&e));
            false
        }
    }
}
