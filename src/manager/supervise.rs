//! `mito manager run COUNT`: the foreground supervisor (under systemd, or in a terminal).
//! It keeps COUNT workers running, each in a session of its own that gets SIGTERM should
//! the supervisor die, and copies their output to its stderr with each line prefixed by
//! the worker's index (`[2] ...`).
//!
//! A worker that exits non-zero or is killed by a signal is started again after a pause
//! that doubles from 1 s up to 60 s (and is back to 1 s once a worker has run for a
//! minute). One that exits 0 (stopped by a signal someone sent it) or with
//! [`crate::worker::EXIT_REMOVED`] (the coordinator removed it, or its lifetime ended) is
//! left stopped, and the supervisor says so. SIGTERM or SIGINT is passed on to every
//! worker; the supervisor waits for them to stop (SIGKILL after 60 s) and exits 0. When
//! no worker is left to keep running, it exits too.

use super::launch::Launch;
use super::ManagerError;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A worker that ran this long before failing is restarted after the first backoff again.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// How long stopping workers get before SIGKILL.
const STOP_WAIT: Duration = Duration::from_secs(60);

/// One of the COUNT places the supervisor keeps filled.
struct Slot {
    index: usize,
    child: Option<Child>,
    started: Instant,
    /// When to start it again; None while it runs or once it is left stopped.
    restart_at: Option<Instant>,
    backoff: Duration,
}

pub(super) fn run(state: &Path, count: usize, launch: &Launch) -> Result<(), ManagerError> {
    if let Err(e) = crate::logging::init_late() {
        eprintln!("mito manager run: {e}");
    }
    for i in 0..count {
        launch.config(i)?;
    }
    let signals = crate::signal::listen();
    let mut slots: Vec<Slot> = (0..count)
        .map(|index| Slot {
            index,
            child: None,
            started: Instant::now(),
            restart_at: Some(Instant::now()),
            backoff: FIRST_BACKOFF,
        })
        .collect();
    log::info!("supervising {count} workers (SIGTERM or SIGINT stops them all)");
    let mut stopping: Option<Instant> = None;
    loop {
        if let Ok(sig) = signals.recv_timeout(Duration::from_millis(100)) {
            log::info!(
                "received {}; passing it on to every worker and waiting for them to stop",
                crate::signal::name(sig)
            );
            stopping.get_or_insert_with(Instant::now);
            for slot in &mut slots {
                slot.restart_at = None;
                if let Some(c) = &slot.child {
                    // SAFETY: kill(2) on our own child, not yet reaped, so its pid is still its own.
                    unsafe { libc::kill(c.id() as i32, sig) };
                }
            }
        }
        for slot in &mut slots {
            let Some(child) = slot.child.as_mut() else { continue };
            let Ok(Some(status)) = child.try_wait() else { continue };
            slot.child = None;
            if stopping.is_some() {
                log::info!("worker {} stopped ({})", slot.index, describe(status));
            } else {
                after_exit(slot, status);
            }
        }
        if let Some(since) = stopping {
            if slots.iter().all(|s| s.child.is_none()) {
                log::info!("every worker has stopped");
                return Ok(());
            }
            if since.elapsed() > STOP_WAIT {
                for slot in &mut slots {
                    if let Some(c) = slot.child.as_mut() {
                        log::warn!("worker {} is still running after {}s; killing it", slot.index, STOP_WAIT.as_secs());
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                }
                return Ok(());
            }
            continue;
        }
        let now = Instant::now();
        for slot in &mut slots {
            if slot.child.is_none() && slot.restart_at.is_some_and(|t| t <= now) {
                slot.restart_at = None;
                if let Err(e) = start(state, slot, launch) {
                    log::error!("{e}; trying again in {}s", slot.backoff.as_secs());
                    slot.restart_at = Some(now + slot.backoff);
                    slot.backoff = (slot.backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        if slots.iter().all(|s| s.child.is_none() && s.restart_at.is_none()) {
            log::info!("no worker is left to keep running; exiting");
            return Ok(());
        }
    }
}

/// Decides what follows a worker's exit: a restart after its backoff, or none.
fn after_exit(slot: &mut Slot, status: ExitStatus) {
    let i = slot.index;
    match status.code() {
        Some(0) => log::info!("worker {i} exited with status 0 (stopped by a signal sent to it); not restarting it"),
        Some(crate::worker::EXIT_REMOVED) => log::warn!(
            "worker {i} was removed by the coordinator or its lifetime ended (exit status {}); not restarting it",
            crate::worker::EXIT_REMOVED
        ),
        _ => {
            if slot.started.elapsed() >= STABLE_AFTER {
                slot.backoff = FIRST_BACKOFF;
            }
            log::warn!("worker {i} {}; restarting it in {}s", describe(status), slot.backoff.as_secs());
            slot.restart_at = Some(Instant::now() + slot.backoff);
            slot.backoff = (slot.backoff * 2).min(MAX_BACKOFF);
        }
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => status.to_string(),
    }
}

fn start(state: &Path, slot: &mut Slot, launch: &Launch) -> Result<(), ManagerError> {
    let i = slot.index;
    let cache = state.join("run").join(i.to_string()).join("cache");
    crate::private_files::create_dir_all(&cache)
        .map_err(|e| ManagerError::State(format!("cannot create {}: {e}", cache.display())))?;
    let mut cmd = launch.command(i, &cache, true);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| ManagerError::Start(format!("cannot start worker {i}: {e}")))?;
    launch.hand_over(&mut child);
    if let Some(out) = child.stdout.take() {
        copy_lines(i, out);
    }
    if let Some(err) = child.stderr.take() {
        copy_lines(i, err);
    }
    log::info!("started worker {i} (pid {})", child.id());
    slot.child = Some(child);
    slot.started = Instant::now();
    Ok(())
}

/// Copies a worker's output to our stderr line by line, each line prefixed `[i] `; a line
/// longer than 64 KiB is cut into pieces, so memory stays bounded.
fn copy_lines(index: usize, from: impl Read + Send + 'static) {
    let spawned = std::thread::Builder::new().name(format!("worker-{index}-log")).spawn(move || {
        let mut reader = BufReader::new(from);
        let mut line = Vec::new();
        loop {
            line.clear();
            match (&mut reader).take(64 * 1024).read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if !line.ends_with(b"\n") {
                        line.push(b'\n');
                    }
                    let mut err = std::io::stderr().lock();
                    let _ = err.write_all(format!("[{index}] ").as_bytes()).and_then(|()| err.write_all(&line));
                }
            }
        }
    });
    if let Err(e) = spawned {
        log::warn!("cannot copy the output of worker {index}: {e}");
    }
}
