//! Forming requests from rows: rows, bytes and estimated tokens, whichever cap is reached
//! first, and a linger time.
//!
//! The operator hands each row's cost to [`Batcher::add`] in input order and sends a request
//! whenever the batcher says one is complete ([`Cut`]); [`Batcher::deadline`] says when the
//! rows gathered so far must go out even though no cap was reached (the linger), and
//! [`Batcher::flush`] takes them (at that deadline, at a barrier in drain mode, at the end
//! of input). A row larger than a cap on its own makes a request of its own: it is never
//! split and never refused here (the backend decides).

use crate::Millis;

/// What one row weighs in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RowCost {
    /// Bytes the row adds to the request body.
    pub bytes: u64,
    /// Tokens the row is estimated to cost (0 where the backend counts none).
    pub tokens: u64,
}

/// The caps of one request and the linger time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestCaps {
    /// Rows per request, at most (at least 1).
    pub rows: usize,
    /// Bytes per request, at most.
    pub bytes: u64,
    /// Estimated tokens per request, at most (`None`: no token cap).
    pub tokens: Option<u64>,
    /// How long the first row of a request may wait for others.
    pub linger: Millis,
}

impl Default for RequestCaps {
    /// The design's defaults: 32 rows, 4 MiB, no token cap, 5 ms.
    fn default() -> Self {
        Self {
            rows: 32,
            bytes: 4 << 20,
            tokens: None,
            linger: 5,
        }
    }
}

/// A request to send: the next `rows` rows gathered, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// Rows in the request.
    pub rows: usize,
}

/// Gathers rows into requests; see the module docs.
#[derive(Debug, Clone)]
pub struct Batcher {
    caps: RequestCaps,
    rows: usize,
    bytes: u64,
    tokens: u64,
    /// When the first row of the open request arrived.
    since: Option<Millis>,
}

impl Batcher {
    /// A batcher with `caps` (a row cap of 0 counts as 1).
    pub fn new(caps: RequestCaps) -> Self {
        Self {
            caps: RequestCaps {
                rows: caps.rows.max(1),
                ..caps
            },
            rows: 0,
            bytes: 0,
            tokens: 0,
            since: None,
        }
    }

    /// Rows gathered and not yet cut into a request.
    pub fn open_rows(&self) -> usize {
        self.rows
    }

    /// Adds the next row, arrived at `now`; returns the requests it completes, in order: the
    /// open request first when the row would push it past the byte or token cap, then the
    /// one the row fills to the row cap (or overflows on its own).
    pub fn add(&mut self, cost: RowCost, now: Millis) -> Vec<Cut> {
        let mut cuts = Vec::new();
        let over_bytes = self.bytes + cost.bytes > self.caps.bytes;
        let over_tokens = self
            .caps
            .tokens
            .is_some_and(|cap| self.tokens + cost.tokens > cap);
        if self.rows > 0 && (over_bytes || over_tokens) {
            cuts.extend(self.flush());
        }
        if self.rows == 0 {
            self.since = Some(now);
        }
        self.rows += 1;
        self.bytes += cost.bytes;
        self.tokens += cost.tokens;
        let full = self.rows >= self.caps.rows
            || self.bytes >= self.caps.bytes
            || self.caps.tokens.is_some_and(|cap| self.tokens >= cap);
        if full {
            cuts.extend(self.flush());
        }
        cuts
    }

    /// When the open request must go out although no cap was reached; `None` when no row
    /// waits.
    pub fn deadline(&self) -> Option<Millis> {
        self.since.map(|since| since + self.caps.linger)
    }

    /// The open request, if its linger ran out at `now`.
    pub fn poll(&mut self, now: Millis) -> Option<Cut> {
        match self.deadline() {
            Some(deadline) if now >= deadline => self.flush(),
            _ => None,
        }
    }

    /// The open request, whatever it holds (at the end of input); `None` when empty.
    pub fn flush(&mut self) -> Option<Cut> {
        if self.rows == 0 {
            return None;
        }
        let cut = Cut { rows: self.rows };
        self.rows = 0;
        self.bytes = 0;
        self.tokens = 0;
        self.since = None;
        Some(cut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(bytes: u64, tokens: u64) -> RowCost {
        RowCost { bytes, tokens }
    }

    fn sizes(cuts: &[Cut]) -> Vec<usize> {
        cuts.iter().map(|cut| cut.rows).collect()
    }

    #[test]
    fn the_row_cap_cuts_requests_of_that_many_rows() {
        let mut batcher = Batcher::new(RequestCaps {
            rows: 3,
            ..RequestCaps::default()
        });
        let cuts: Vec<Cut> = (0..7).flat_map(|t| batcher.add(row(10, 0), t)).collect();
        assert_eq!(sizes(&cuts), [3, 3]);
        assert_eq!(batcher.open_rows(), 1);
        assert_eq!(batcher.flush(), Some(Cut { rows: 1 }));
        assert_eq!(batcher.flush(), None);
    }

    #[test]
    fn a_row_that_would_pass_the_byte_or_token_cap_starts_the_next_request() {
        let mut batcher = Batcher::new(RequestCaps {
            rows: 100,
            bytes: 100,
            tokens: Some(50),
            linger: 5,
        });
        assert!(batcher.add(row(60, 10), 0).is_empty());
        // 60 + 50 bytes would pass 100: the open request goes first.
        assert_eq!(sizes(&batcher.add(row(50, 10), 1)), [1]);
        // 50 + 30 bytes fit; 20 + 35 tokens pass 50: cut before this row.
        assert!(batcher.add(row(30, 20), 2).is_empty());
        assert_eq!(sizes(&batcher.add(row(5, 35), 3)), [2]);
        // Exactly at the cap: full, cut with the row.
        assert_eq!(sizes(&batcher.add(row(95, 0), 4)), [2]);
    }

    #[test]
    fn a_row_larger_than_a_cap_goes_alone() {
        let mut batcher = Batcher::new(RequestCaps {
            rows: 10,
            bytes: 100,
            tokens: None,
            linger: 5,
        });
        assert!(batcher.add(row(10, 0), 0).is_empty());
        // The open request first, then the big row on its own.
        assert_eq!(sizes(&batcher.add(row(500, 0), 1)), [1, 1]);
        assert_eq!(batcher.open_rows(), 0);
    }

    #[test]
    fn a_trickle_goes_out_when_its_first_row_lingered_long_enough() {
        let mut batcher = Batcher::new(RequestCaps {
            rows: 32,
            linger: 5,
            ..RequestCaps::default()
        });
        assert_eq!(batcher.deadline(), None);
        batcher.add(row(1, 0), 100);
        batcher.add(row(1, 0), 103);
        assert_eq!(
            batcher.deadline(),
            Some(105),
            "from the first row, not the last"
        );
        assert_eq!(batcher.poll(104), None);
        assert_eq!(batcher.poll(105), Some(Cut { rows: 2 }));
        assert_eq!(batcher.deadline(), None);
        batcher.add(row(1, 0), 200);
        assert_eq!(batcher.deadline(), Some(205));
    }
}
