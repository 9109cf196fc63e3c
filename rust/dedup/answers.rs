//! What the deduplicator answers: the codes and [`Join`] of a join, the
//! [`Resolved`] followers of a `complete` / `fail` / `cancel`, and the
//! counters.

/// Code of [`Join::Leader`] (run the request).
pub const LEADER: u8 = 0;
/// Code of [`Join::Follower`] (wait to be woken).
pub const FOLLOWER: u8 = 1;
/// Code of [`Join::Done`] (a completed value within the window).
pub const DONE: u8 = 2;
/// Set in the ticket of an untracked leader (the map was full of in-flight keys).
pub const UNTRACKED_BIT: u64 = 1 << 62;

/// What a [`join`](super::RequestDeduplicator::join) decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Join<V> {
    /// Run the request, then `complete` or `fail` with this ticket.
    Leader(u64),
    /// Wait; this ticket is returned by the leader's `complete` / `fail`
    /// (or promoted to leader by a transient failure).
    Follower(u64),
    /// A result completed within the window.
    Done(V),
}

impl<V> Join<V> {
    /// [`LEADER`], [`FOLLOWER`] or [`DONE`].
    pub fn code(&self) -> u8 {
        match self {
            Join::Leader(_) => LEADER,
            Join::Follower(_) => FOLLOWER,
            Join::Done(_) => DONE,
        }
    }
}

/// Counters of a deduplicator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DedupStats {
    /// Joins that led (including untracked ones).
    pub joins_leader: u64,
    /// Joins that followed a leader in flight.
    pub joins_follower: u64,
    /// Joins answered from the window.
    pub hits_window: u64,
    /// Followers promoted to leader after a transient failure.
    pub promotions: u64,
    /// `fail` calls by a tracked leader (transient or not).
    pub failures: u64,
    /// `complete` calls by a tracked leader.
    pub completions: u64,
    /// Followers that left (`cancel` or `leave`).
    pub leaves: u64,
    /// Leaders (or promoted followers) that cancelled, handing the lead on.
    pub cancels: u64,
    /// Leaders that ran untracked because in-flight keys filled the map.
    pub untracked: u64,
    /// Completed entries evicted to make room.
    pub evictions: u64,
    /// Completed entries dropped at the end of their window.
    pub expirations: u64,
}

/// The followers a [`complete`](super::RequestDeduplicator::complete),
/// [`fail`](super::RequestDeduplicator::fail) or
/// [`cancel`](super::RequestDeduplicator::cancel) resolved, each with its waiter
/// (`None` for a follower that joined without one). Returned rather than
/// woken under the map's lock: waking may run arbitrary code.
#[derive(Debug)]
pub struct Resolved<W> {
    /// Followers to wake with the leader's value (`complete`) or error
    /// (non-transient `fail`), oldest first.
    pub followers: Vec<(u64, Option<W>)>,
    /// The follower promoted to leader: it runs the request now and
    /// `complete`s, `fail`s or `cancel`s with its own ticket.
    pub promoted: Option<(u64, Option<W>)>,
}

impl<W> Default for Resolved<W> {
    fn default() -> Self {
        Self {
            followers: Vec::new(),
            promoted: None,
        }
    }
}

impl<W> Resolved<W> {
    /// The tickets of the resolved followers, oldest first.
    pub fn tickets(&self) -> Vec<u64> {
        self.followers.iter().map(|(t, _)| *t).collect()
    }

    /// The promoted follower's ticket, if any.
    pub fn promoted_ticket(&self) -> Option<u64> {
        self.promoted.as_ref().map(|(t, _)| *t)
    }

    /// Whether nobody was resolved.
    pub fn is_empty(&self) -> bool {
        self.followers.is_empty() && self.promoted.is_none()
    }
}
