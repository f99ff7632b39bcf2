//! The list of parked fetches, indexed three ways so that neither a wake-up nor the
//! deadline sweep looks at fetches it does not concern: by what the worker may run (its
//! class), by worker, and by deadline.
//!
//! With thousands of idle workers parked, a scan of the whole list per wake-up (and one per
//! deadline, which come every few hundred microseconds when thousands of long polls are
//! spread over their wait) held the list's lock for most of the time and delayed every
//! submit's hand-over; here a wake-up costs a look per class, and a deadline a few
//! B-tree steps.

use super::Parked;
use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

/// What a worker may run: its groups and tags, sorted. Workers of one class may run the
/// same tasks, so once a claim for one of them finds nothing, the others need not be asked.
pub(super) type Class = (Vec<i64>, Vec<String>);

pub(super) fn class_of(groups: &[i64], tags: &[String]) -> Class {
    let (mut g, mut t) = (groups.to_vec(), tags.to_vec());
    g.sort_unstable();
    t.sort_unstable();
    (g, t)
}

/// One parked fetch and its class.
struct Entry {
    parked: Parked,
    class: Class,
}

#[derive(Default)]
pub(super) struct ParkedSet {
    next_id: u64,
    entries: HashMap<u64, Entry>,
    /// The fetches of each class, oldest first (ids grow with each parking).
    by_class: HashMap<Class, BTreeSet<u64>>,
    by_worker: HashMap<i64, Vec<u64>>,
    deadlines: BTreeSet<(Instant, u64)>,
}

impl ParkedSet {
    pub(super) fn insert(&mut self, parked: Parked) {
        let id = self.next_id;
        self.next_id += 1;
        let class = class_of(&parked.how.groups, &parked.how.tags);
        self.by_class.entry(class.clone()).or_default().insert(id);
        self.by_worker.entry(parked.how.worker_id).or_default().push(id);
        self.deadlines.insert((parked.how.deadline, id));
        self.entries.insert(id, Entry { parked, class });
    }

    fn remove(&mut self, id: u64) -> Option<Parked> {
        let Entry { parked, class } = self.entries.remove(&id)?;
        if let Some(ids) = self.by_class.get_mut(&class) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_class.remove(&class);
            }
        }
        if let Some(ids) = self.by_worker.get_mut(&parked.how.worker_id) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.by_worker.remove(&parked.how.worker_id);
            }
        }
        self.deadlines.remove(&(parked.how.deadline, id));
        Some(parked)
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Distinct workers with a parked fetch.
    pub(super) fn workers(&self) -> usize {
        self.by_worker.len()
    }

    /// The earliest deadline.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(d, _)| *d)
    }

    /// Takes the fetches whose deadline is at or before `until`.
    pub(super) fn take_expired(&mut self, until: Instant) -> Vec<Parked> {
        let mut out = Vec::new();
        while let Some(&(d, id)) = self.deadlines.first() {
            if d > until {
                break;
            }
            match self.remove(id) {
                Some(p) => out.push(p),
                None => {
                    self.deadlines.pop_first();
                }
            }
        }
        out
    }

    pub(super) fn take_all(&mut self) -> Vec<Parked> {
        let out = std::mem::take(&mut self.entries).into_values().map(|e| e.parked).collect();
        *self = ParkedSet { next_id: self.next_id, ..Default::default() };
        out
    }

    /// The classes with a fetch in `group`, or all of them.
    pub(super) fn classes(&self, group: Option<i64>) -> Vec<Class> {
        self.by_class
            .keys()
            .filter(|(groups, _)| group.map_or(true, |g| groups.binary_search(&g).is_ok()))
            .cloned()
            .collect()
    }

    /// Takes the oldest fetch of `class`.
    pub(super) fn take_oldest(&mut self, class: &Class) -> Option<Parked> {
        let id = *self.by_class.get(class)?.first()?;
        self.remove(id)
    }

    /// Takes the oldest fetch of `worker` whose class is not in `skip`.
    pub(super) fn take_of_worker(&mut self, worker: i64, skip: &std::collections::HashSet<Class>) -> Option<Parked> {
        let id = *self.by_worker.get(&worker)?.iter().find(|id| !skip.contains(&self.entries[*id].class))?;
        self.remove(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::auth::WorkerToken;
    use crate::coordinator::scheduler::ParkAs;
    use std::time::Duration;

    fn parked(worker_id: i64, groups: &[i64], tags: &[&str], deadline: Instant) -> Parked {
        Parked {
            req: tiny_http::TestRequest::new().into(),
            how: ParkAs {
                worker: WorkerToken { uuid: uuid::Uuid::new_v4() },
                worker_id,
                deadline,
                groups: groups.to_vec(),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                seq: 0,
            },
            since: Instant::now(),
            route: None,
        }
    }

    #[test]
    fn wake_ups_find_their_fetches_by_class_worker_and_deadline() {
        let t = Instant::now();
        let mut set = ParkedSet::default();
        set.insert(parked(1, &[7, 3], &["b", "a"], t + Duration::from_secs(3)));
        set.insert(parked(2, &[3, 7], &["a", "b"], t + Duration::from_secs(1)));
        set.insert(parked(3, &[8], &[], t + Duration::from_secs(2)));
        assert_eq!((set.len(), set.workers()), (3, 3));

        // Workers 1 and 2 share a class whatever the order of their groups and tags.
        let ab = class_of(&[3, 7], &["a".into(), "b".into()]);
        assert_eq!(set.classes(Some(7)), vec![ab.clone()]);
        assert!(set.classes(Some(9)).is_empty());
        assert_eq!(set.classes(None).len(), 2);
        assert_eq!(set.next_deadline(), Some(t + Duration::from_secs(1)));

        // Oldest first within a class; a worker is skipped when its class is exhausted.
        let exhausted: std::collections::HashSet<Class> = [ab.clone()].into();
        assert!(set.take_of_worker(2, &exhausted).is_none());
        assert_eq!(set.take_oldest(&ab).map(|p| p.how.worker_id), Some(1));
        assert_eq!(set.take_of_worker(2, &Default::default()).map(|p| p.how.worker_id), Some(2));
        assert!(set.take_oldest(&ab).is_none());
        assert_eq!(set.classes(None).len(), 1, "an emptied class is forgotten");

        // Deadlines: only those due are taken, and every index forgets them.
        set.insert(parked(4, &[8], &[], t + Duration::from_secs(5)));
        let expired = set.take_expired(t + Duration::from_secs(2));
        assert_eq!(expired.iter().map(|p| p.how.worker_id).collect::<Vec<_>>(), vec![3]);
        assert_eq!((set.len(), set.workers()), (1, 1));
        assert_eq!(set.next_deadline(), Some(t + Duration::from_secs(5)));
        assert_eq!(set.take_all().len(), 1);
        assert_eq!((set.len(), set.workers(), set.next_deadline()), (0, 0, None));
        assert!(set.classes(None).is_empty());
    }
}
