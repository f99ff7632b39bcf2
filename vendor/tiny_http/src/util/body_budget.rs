//! The process-wide memory budget for request bodies read ahead on connection threads
//! (mito patch).
//!
//! Every connection thread may read a body of up to `prebuffer` bytes before the request
//! is handed out, and up to `max_connections` connections may be open, so without a shared
//! bound hostile clients could make the server hold `max_connections × prebuffer` bytes.
//! A connection thread reserves the body's size here before it reads a byte of it and
//! gives the reservation back when the buffer is dropped (on every path, unwinding
//! included, since the reservation is a guard that lives beside the buffer).

use std::io::{self, Read};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Bodies up to this size may use the whole budget; larger ones only all but an eighth of
/// it, so a flood of large uploads leaves room for the small requests (heartbeats, polls)
/// the server must keep answering.
pub(crate) const SMALL_BODY: usize = 64 * 1024;

#[derive(Debug)]
pub(crate) struct BodyBudget {
    total: usize,
    used: Mutex<usize>,
    freed: Condvar,
}

/// A poisoned lock only means another thread panicked while holding it; the count inside
/// is still whole (it is changed in one assignment).
fn lock(m: &Mutex<usize>) -> MutexGuard<'_, usize> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl BodyBudget {
    pub(crate) fn new(total: usize) -> Arc<BodyBudget> {
        Arc::new(BodyBudget {
            total,
            used: Mutex::new(0),
            freed: Condvar::new(),
        })
    }

    /// How much may be in use once a reservation has grown to `size` bytes.
    fn ceiling(&self, size: usize) -> usize {
        if size <= SMALL_BODY {
            self.total
        } else {
            self.total - self.total / 8
        }
    }

    /// Adds `extra` bytes to a reservation that will then hold `size` bytes, waiting until
    /// `deadline` for others to release memory. False when it did not fit in time (or can
    /// never fit).
    fn take(&self, extra: usize, size: usize, deadline: Instant) -> bool {
        let ceiling = self.ceiling(size);
        if extra > ceiling {
            return false;
        }
        let mut used = lock(&self.used);
        loop {
            if *used <= ceiling - extra {
                *used += extra;
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            used = self
                .freed
                .wait_timeout(used, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn give_back(&self, n: usize) {
        if n == 0 {
            return;
        }
        let mut used = lock(&self.used);
        *used = used.saturating_sub(n);
        drop(used);
        self.freed.notify_all();
    }

    /// Bytes reserved right now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        *lock(&self.used)
    }
}

/// A share of the budget, released when dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Arc<BodyBudget>,
    size: usize,
}

impl Reservation {
    /// Reserves `size` bytes, waiting at most `wait` for room.
    pub(crate) fn new(budget: &Arc<BodyBudget>, size: usize, wait: Duration) -> Option<Self> {
        let mut r = Reservation {
            budget: budget.clone(),
            size: 0,
        };
        r.grow_to(size, wait).then_some(r)
    }

    /// Grows the reservation to `size` bytes, waiting at most `wait` for room.
    pub(crate) fn grow_to(&mut self, size: usize, wait: Duration) -> bool {
        if size <= self.size {
            return true;
        }
        let deadline = Instant::now() + wait;
        if !self.budget.take(size - self.size, size, deadline) {
            return false;
        }
        self.size = size;
        true
    }

    #[cfg(test)]
    pub(crate) fn size(&self) -> usize {
        self.size
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give_back(self.size);
    }
}

/// A body read ahead, with the share of the budget it holds until it is dropped.
pub(crate) struct BudgetedBody {
    body: io::Cursor<Vec<u8>>,
    _reservation: Reservation,
}

impl BudgetedBody {
    pub(crate) fn new(body: Vec<u8>, reservation: Reservation) -> Self {
        BudgetedBody {
            body: io::Cursor::new(body),
            _reservation: reservation,
        }
    }
}

impl BudgetedBody {
    pub(crate) fn len(&self) -> usize {
        self.body.get_ref().len()
    }
}

impl Read for BudgetedBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.body.read(buf)
    }
}

/// Reads from `src` into `buf` until it holds `upto` bytes or `src` ends, growing `buf`'s
/// capacity with what arrives (doubling from 64 KiB) but never beyond `upto`, and growing
/// `reservation` first (waiting at most `wait` each time) so that the buffer never holds
/// more than is reserved for it. `Ok(false)` when the budget had no room in time.
pub(crate) fn read_upto<R: Read>(
    src: &mut R,
    buf: &mut Vec<u8>,
    upto: usize,
    reservation: &mut Reservation,
    wait: Duration,
) -> io::Result<bool> {
    while buf.len() < upto {
        let step = buf.len().max(SMALL_BODY).min(upto - buf.len());
        if !reservation.grow_to(buf.capacity().max(buf.len() + step), wait) {
            return Ok(false);
        }
        buf.reserve_exact(step);
        let before = buf.len();
        // With exactly `step` bytes of room and at most `step` to read, read_to_end never
        // grows the buffer itself.
        src.take(step as u64).read_to_end(buf)?;
        if buf.len() - before < step {
            break;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn reservations_wait_for_room_and_come_back_on_drop() {
        let budget = BodyBudget::new(1024 * 1024);
        let wait = Duration::from_millis(50);
        let a = Reservation::new(&budget, 600 * 1024, wait).unwrap();
        // Large bodies may use at most seven eighths of the budget.
        assert!(Reservation::new(&budget, 400 * 1024, wait).is_none());
        // Small ones may use the rest.
        let small = Reservation::new(&budget, 64 * 1024, wait).unwrap();
        assert_eq!(budget.used(), 664 * 1024);
        drop(a);
        let mut b = Reservation::new(&budget, 400 * 1024, wait).unwrap();
        assert!(b.grow_to(800 * 1024, wait));
        assert!(!b.grow_to(900 * 1024, wait));
        assert_eq!(b.size(), 800 * 1024);
        drop(small);
        drop(b);
        assert_eq!(budget.used(), 0);
        assert!(Reservation::new(&budget, 2 * 1024 * 1024, wait).is_none());
    }

    #[test]
    fn a_waiting_reservation_gets_memory_freed_by_another_thread() {
        let budget = BodyBudget::new(1024 * 1024);
        let a = Reservation::new(&budget, 800 * 1024, Duration::ZERO).unwrap();
        let other = budget.clone();
        let t = std::thread::spawn(move || {
            Reservation::new(&other, 800 * 1024, Duration::from_secs(5)).map(|r| r.size())
        });
        std::thread::sleep(Duration::from_millis(50));
        drop(a);
        assert_eq!(t.join().unwrap(), Some(800 * 1024));
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn read_upto_keeps_the_capacity_within_the_limit() {
        let budget = BodyBudget::new(1024 * 1024);
        let wait = Duration::from_millis(10);
        let data = vec![7u8; 300 * 1024];
        let mut buf = Vec::new();
        let mut r = Reservation::new(&budget, 0, wait).unwrap();
        assert!(read_upto(&mut &data[..], &mut buf, 200 * 1024, &mut r, wait).unwrap());
        assert_eq!(buf.len(), 200 * 1024);
        assert!(buf.capacity() <= r.size() && r.size() <= 200 * 1024);
        let mut buf = Vec::new();
        let mut r2 = Reservation::new(&budget, 0, wait).unwrap();
        assert!(read_upto(&mut &data[..10], &mut buf, 200 * 1024, &mut r2, wait).unwrap());
        assert_eq!(buf.len(), 10);
        // Growing stops at the budget: 7/8 of 1 MiB minus the 200 KiB held above.
        let mut buf = Vec::new();
        let mut r3 = Reservation::new(&budget, 0, wait).unwrap();
        let big = vec![1u8; 1024 * 1024];
        assert!(!read_upto(&mut &big[..], &mut buf, 1024 * 1024, &mut r3, wait).unwrap());
        assert!(buf.capacity() <= r3.size());
        drop((r, r2, r3));
        assert_eq!(budget.used(), 0);
    }
}
