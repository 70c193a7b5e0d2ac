//! What to keep, what to delete, and what to restore from, given the checkpoints found in a
//! checkpoint directory.
//!
//! A checkpoint folder is *complete* when its metadata file exists and every file it names
//! has the checksum it records; *incomplete* when it has no metadata (the job stopped while
//! taking it, or another attempt is writing it); *corrupt* when the metadata or a state file
//! does not check out. Only complete checkpoints are restored; a newer incomplete or corrupt
//! one is skipped and reported, never used.

use std::collections::BTreeSet;

use crate::tracker::CheckpointId;

/// What a look at one checkpoint folder found.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Validity {
    /// Metadata present and every checksum matches.
    Complete,
    /// No metadata: never finished.
    Incomplete,
    /// Metadata or a state file unreadable or with the wrong checksum; why.
    Corrupt(String),
}

/// Which checkpoint a job should restore from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreChoice {
    /// Restore from `id`; `skipped` are newer checkpoints that could not be used, and why.
    Restore {
        /// The checkpoint to restore.
        id: CheckpointId,
        /// Newer checkpoints passed over, with the reason.
        skipped: Vec<(CheckpointId, String)>,
    },
    /// There are no checkpoints at all: start from the beginning.
    Nothing,
    /// There are checkpoints, but none is complete.
    NoneUsable {
        /// Every checkpoint found, with why it cannot be used.
        skipped: Vec<(CheckpointId, String)>,
    },
}

fn why(validity: &Validity) -> Option<String> {
    match validity {
        Validity::Complete => None,
        Validity::Incomplete => Some("incomplete (no metadata)".to_string()),
        Validity::Corrupt(reason) => Some(format!("corrupt: {reason}")),
    }
}

/// The newest complete checkpoint among `found`, and the newer ones that were passed over.
pub fn choose_restore(found: &[(CheckpointId, Validity)]) -> RestoreChoice {
    let mut newest_first: Vec<&(CheckpointId, Validity)> = found.iter().collect();
    newest_first.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
    let mut skipped = Vec::new();
    for (id, validity) in newest_first {
        match why(validity) {
            None => return RestoreChoice::Restore { id: *id, skipped },
            Some(reason) => skipped.push((*id, reason)),
        }
    }
    if skipped.is_empty() {
        RestoreChoice::Nothing
    } else {
        RestoreChoice::NoneUsable { skipped }
    }
}

/// The checkpoints to delete: every one older than the oldest of the newest `num_retained`
/// complete checkpoints, whatever its state, except those still `in_progress`. Incomplete
/// or corrupt checkpoints newer than that are kept (one may be in progress elsewhere, and a
/// corrupt one is evidence worth keeping until it ages out).
///
/// Later, files shared between checkpoints (deltas, regional references, a sink's long-open
/// upload) must also be kept while any retained checkpoint names them; today every
/// checkpoint's files live in its own folder.
pub fn to_delete(
    found: &[(CheckpointId, Validity)],
    in_progress: &BTreeSet<CheckpointId>,
    num_retained: usize,
) -> Vec<CheckpointId> {
    let mut complete: Vec<CheckpointId> = found
        .iter()
        .filter(|(_, v)| *v == Validity::Complete)
        .map(|(id, _)| *id)
        .collect();
    complete.sort_unstable_by(|a, b| b.cmp(a));
    let Some(&oldest_kept) = complete.get(num_retained.max(1) - 1).or(complete.last()) else {
        return Vec::new();
    };
    let mut doomed: Vec<CheckpointId> = found
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| *id < oldest_kept && !in_progress.contains(id))
        .collect();
    doomed.sort_unstable();
    doomed.dedup();
    doomed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_takes_the_newest_complete_and_reports_what_it_skipped() {
        let found = vec![
            (1, Validity::Complete),
            (2, Validity::Complete),
            (3, Validity::Corrupt("crc mismatch in v0-s1.arrow".into())),
            (4, Validity::Incomplete),
        ];
        match choose_restore(&found) {
            RestoreChoice::Restore { id, skipped } => {
                assert_eq!(id, 2);
                assert_eq!(skipped.len(), 2);
                assert_eq!(skipped[0].0, 4);
                assert!(skipped[1].1.contains("crc mismatch"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(choose_restore(&[]), RestoreChoice::Nothing);
        assert!(matches!(
            choose_restore(&[(7, Validity::Incomplete)]),
            RestoreChoice::NoneUsable { .. }
        ));
    }

    #[test]
    fn retention_keeps_the_newest_complete_ones() {
        let found: Vec<_> = (1..=6)
            .map(|id| {
                let validity = if id == 5 {
                    Validity::Incomplete
                } else {
                    Validity::Complete
                };
                (id, validity)
            })
            .collect();
        assert_eq!(to_delete(&found, &BTreeSet::new(), 3), vec![1, 2]);
        assert_eq!(to_delete(&found, &BTreeSet::from([2]), 3), vec![1]);
        assert_eq!(to_delete(&found, &BTreeSet::new(), 1), vec![1, 2, 3, 4, 5]);
        assert_eq!(to_delete(&found, &BTreeSet::new(), 10), Vec::<u64>::new());
        let nothing_complete = vec![(1, Validity::Incomplete)];
        assert!(to_delete(&nothing_complete, &BTreeSet::new(), 3).is_empty());
    }
}
