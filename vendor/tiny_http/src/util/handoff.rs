//! mito patch: a one-time hand-over of a value from one thread to another, in place of a
//! `std::sync::mpsc` channel used once. Each request set up three such channels (its body
//! reader, its response writer's turn, and the signal that it is done); a channel costs an
//! allocation of a block of 31 slots and, at every send, a wake-up call whether or not
//! anyone waits, while this costs one small allocation and wakes only a thread that waits.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

struct Slot<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
}

struct State<T> {
    value: Option<T>,
    /// The giving side is gone (it gave, or was dropped without giving).
    closed: bool,
    /// The taking side waits on `ready`.
    waiting: bool,
}

/// A poisoned lock only means another thread panicked while holding it; the plain data
/// inside is still whole.
fn lock<T>(slot: &Slot<T>) -> MutexGuard<'_, State<T>> {
    slot.state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The giving side: gives once; dropped without giving, the taker gets `None`.
pub(crate) struct Give<T>(Option<Arc<Slot<T>>>);

/// The taking side.
pub(crate) struct Take<T>(Arc<Slot<T>>);

pub(crate) fn handoff<T>() -> (Give<T>, Take<T>) {
    let slot = Arc::new(Slot {
        state: Mutex::new(State {
            value: None,
            closed: false,
            waiting: false,
        }),
        ready: Condvar::new(),
    });
    (Give(Some(slot.clone())), Take(slot))
}

impl<T> Give<T> {
    /// Hands `value` over (a second call does nothing).
    pub(crate) fn give(&mut self, value: T) {
        self.close(Some(value));
    }

    fn close(&mut self, value: Option<T>) {
        if let Some(slot) = self.0.take() {
            let mut state = lock(&slot);
            if value.is_some() {
                state.value = value;
            }
            state.closed = true;
            let wake = state.waiting;
            drop(state);
            if wake {
                slot.ready.notify_one();
            }
        }
    }
}

impl<T> Drop for Give<T> {
    fn drop(&mut self) {
        self.close(None);
    }
}

impl<T> Take<T> {
    /// Waits for the value; `None` once the giving side is gone without giving (or the
    /// value was taken before).
    pub(crate) fn take(&self) -> Option<T> {
        let mut state = lock(&self.0);
        loop {
            if let Some(value) = state.value.take() {
                return Some(value);
            }
            if state.closed {
                return None;
            }
            state.waiting = true;
            state = self.0.ready.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::handoff;

    #[test]
    fn a_value_given_on_another_thread_arrives_and_a_dropped_giver_closes() {
        let (mut give, take) = handoff();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            give.give(7);
        });
        assert_eq!(take.take(), Some(7));
        assert_eq!(take.take(), None);
        t.join().unwrap();
        let (give, take) = handoff::<u8>();
        drop(give);
        assert_eq!(take.take(), None);
    }
}
