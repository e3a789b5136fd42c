//! Replies a module sends for requests the router never made (issue 11,
//! finding 5). A reply for a call that was cancelled or timed out is a
//! race and is dropped quietly; one whose id was never issued on the link
//! breaks the protocol. After [`ALLOWANCE`] of those the link is ended,
//! so that a flooding module's callers fail at once instead of waiting out
//! their deadlines, and its restart policy applies.

use std::sync::atomic::{AtomicU32, Ordering};

/// How many replies for requests never made a module may send.
pub(crate) const ALLOWANCE: u32 = 16;

/// Counts one link's replies for ids it was never sent.
#[derive(Debug, Default)]
pub(crate) struct Unsolicited {
    seen: AtomicU32,
}

impl Unsolicited {
    /// Judges a reply for `id` that no call waits for, when the next id to
    /// issue is `next_id`: `Err` with the reason once the allowance is spent.
    pub(crate) fn note(&self, id: u64, next_id: u64) -> Result<(), String> {
        if id != 0 && id < next_id {
            return Ok(()); // issued once: a reply racing its cancel or deadline
        }
        let seen = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        if seen > ALLOWANCE {
            return Err(format!("it sent {seen} replies for requests never made, such as id {id}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_for_issued_ids_are_a_race_and_others_are_allowed_only_a_few() {
        let u = Unsolicited::default();
        for _ in 0..1000 {
            assert!(u.note(5, 10).is_ok(), "a late reply for an issued id");
        }
        for n in 0..ALLOWANCE {
            assert!(u.note(10 + u64::from(n), 10).is_ok());
        }
        let err = u.note(99, 10).unwrap_err();
        assert!(err.contains("never made") && err.contains("99"), "{err}");
    }
}
