//! What the `local_share` fallback admitted while Redis was away, owed to the
//! cluster-wide cells once Redis answers again.
//!
//! [`ChargeBook`] is plain bookkeeping (no I/O): the limiter adds what the
//! local share admitted (and takes off what it refunded there), then, on the
//! first Redis reply for a (deployment, model) scope after an outage,
//! [`ChargeBook::take`] hands out that scope's [`Batch`]es to charge with the
//! `CHARGE` script. Per scope, since a scope's keys live on one shard: on a
//! Redis Cluster with a master down, a reply from another master says nothing
//! about this scope's.
//! A batch that Redis did not confirm goes back with [`ChargeBook::failed`]
//! and is sent again, under the same id, at the next recovery: the script
//! applies an id once, so a batch whose reply was lost is not charged twice.
//! What the fallback admits meanwhile starts a new batch (a new id).

use std::collections::{BTreeMap, HashMap, HashSet};

/// Units below this are not worth a charge (float dust of add/refund pairs).
const DUST: f64 = 1e-9;

/// One charge to send: its id (applied at most once by Redis), its scope,
/// and the units owed per limiter key.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Unique per batch and process: `<member>:cb<n>`.
    pub id: String,
    /// The `<deployment>/<model>` of every key of the batch.
    pub scope: String,
    /// `(limiter key, units)`, units > 0, keys sorted.
    pub units: Vec<(String, f64)>,
}

impl Batch {
    /// Units of the batch, summed over its keys.
    pub fn total(&self) -> f64 {
        self.units.iter().map(|(_, u)| u).sum()
    }
}

/// The owed units and the batches not yet confirmed (see the module docs).
#[derive(Debug)]
pub struct ChargeBook {
    /// The process the book belongs to: a forked child starts with an empty
    /// book (the parent charges what it admitted).
    pid: u32,
    /// scope -> key -> units owed, not yet in a batch.
    owed: HashMap<String, BTreeMap<String, f64>>,
    /// Batches sent and not confirmed: sent again with the same id.
    retry: Vec<Batch>,
    /// Scopes with a charge running (one at a time per scope).
    in_flight: HashSet<String>,
    next: u64,
}

impl Default for ChargeBook {
    fn default() -> Self {
        Self::new()
    }
}

impl ChargeBook {
    /// An empty book of this process.
    pub fn new() -> Self {
        Self {
            pid: std::process::id(),
            owed: HashMap::new(),
            retry: Vec::new(),
            in_flight: HashSet::new(),
            next: 0,
        }
    }

    fn own(&mut self) {
        let pid = std::process::id();
        if self.pid != pid {
            *self = Self::new();
        }
    }

    /// The fallback admitted `units` on `key` of `scope`.
    pub fn add(&mut self, scope: &str, key: &str, units: f64) {
        self.own();
        if !(units.is_finite() && units > 0.0) {
            return;
        }
        *self
            .owed
            .entry(scope.to_string())
            .or_default()
            .entry(key.to_string())
            .or_insert(0.0) += units;
    }

    /// The fallback gave `units` back on `key` (a refund of a local booking):
    /// less is owed, never below nothing. Units already in a batch stay owed.
    pub fn give_back(&mut self, scope: &str, key: &str, units: f64) {
        self.own();
        if !(units.is_finite() && units > 0.0) {
            return;
        }
        let Some(keys) = self.owed.get_mut(scope) else {
            return;
        };
        if let Some(u) = keys.get_mut(key) {
            *u -= units;
            if *u <= DUST {
                keys.remove(key);
            }
        }
        if keys.is_empty() {
            self.owed.remove(scope);
        }
    }

    /// Whether anything is owed or waiting for a retry.
    pub fn has_work(&self) -> bool {
        self.pid == std::process::id() && (!self.owed.is_empty() || !self.retry.is_empty())
    }

    /// Whether a charge of `scope` could start now: something of it is owed
    /// and no charge of it is running.
    pub fn ready(&self, scope: &str) -> bool {
        self.pid == std::process::id()
            && !self.in_flight.contains(scope)
            && (self.owed.contains_key(scope) || self.retry.iter().any(|b| b.scope == scope))
    }

    /// Units owed in all (owed and unconfirmed batches).
    pub fn units_owed(&self) -> f64 {
        if self.pid != std::process::id() {
            return 0.0;
        }
        let owed: f64 = self.owed.values().flat_map(|k| k.values()).sum();
        let total = owed + self.retry.iter().map(Batch::total).sum::<f64>();
        // an empty f64 sum is -0.0: report a plain 0 when nothing is owed
        if total > 0.0 {
            total
        } else {
            0.0
        }
    }

    /// Start a charge of `scope`: its batches to send (the unconfirmed ones
    /// first, with their ids, then one new batch of what is owed), or nothing
    /// when a charge of it is running already or nothing of it is owed.
    /// `member` names this process. End it with [`Self::finish`].
    pub fn take(&mut self, member: &str, scope: &str) -> Vec<Batch> {
        self.own();
        if !self.ready(scope) {
            return Vec::new();
        }
        self.in_flight.insert(scope.to_string());
        let (mut out, rest): (Vec<Batch>, Vec<Batch>) = std::mem::take(&mut self.retry)
            .into_iter()
            .partition(|b| b.scope == scope);
        self.retry = rest;
        if let Some(keys) = self.owed.remove(scope) {
            let units: Vec<(String, f64)> = keys.into_iter().filter(|(_, u)| *u > DUST).collect();
            if !units.is_empty() {
                self.next += 1;
                out.push(Batch {
                    id: format!("{member}:cb{}", self.next),
                    scope: scope.to_string(),
                    units,
                });
            }
        }
        out
    }

    /// Redis did not confirm `batch`: keep it for the next recovery (same id).
    pub fn failed(&mut self, batch: Batch) {
        if self.pid == std::process::id() {
            self.retry.push(batch);
        }
    }

    /// The charge of `scope` started by [`Self::take`] is over (each batch
    /// confirmed or handed back with [`Self::failed`]).
    pub fn finish(&mut self, scope: &str) {
        self.in_flight.remove(scope);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owed_units_become_one_batch_per_scope_and_are_cleared() {
        let mut book = ChargeBook::new();
        assert!(!book.has_work() && book.take("m", "d/a").is_empty());
        book.add("d/a", "d/a:rpm", 1.0);
        book.add("d/a", "d/a:rpm", 2.0);
        book.add("d/a", "d/a:tpm_in", 300.0);
        book.add("d/b", "d/b:rpm", 1.0);
        book.add("d/b", "d/b:rpm", f64::NAN); // ignored
        book.add("d/b", "d/b:rpm", -4.0); // ignored
        assert_eq!(book.units_owed(), 304.0);
        assert!(book.ready("d/a") && book.ready("d/b") && !book.ready("d/c"));
        let a = book.take("m", "d/a");
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].scope, "d/a");
        assert_eq!(
            a[0].units,
            vec![
                ("d/a:rpm".to_string(), 3.0),
                ("d/a:tpm_in".to_string(), 300.0)
            ]
        );
        // Another scope is charged on its own (its shard answered).
        assert_eq!(book.units_owed(), 1.0);
        let b = book.take("m", "d/b");
        assert_eq!(b[0].units, vec![("d/b:rpm".to_string(), 1.0)]);
        assert_ne!(a[0].id, b[0].id);
        book.finish("d/b");
        // One charge at a time per scope: a second take while it runs hands out nothing.
        book.add("d/a", "d/a:rpm", 1.0);
        assert!(book.has_work() && !book.ready("d/a"));
        assert!(book.take("m", "d/a").is_empty());
        book.finish("d/a");
        // Confirmed batches are gone; what came meanwhile is a new batch.
        let next = book.take("m", "d/a");
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].units, vec![("d/a:rpm".to_string(), 1.0)]);
        assert!(![&a[0].id, &b[0].id].contains(&&next[0].id));
        book.finish("d/a");
        assert!(!book.has_work() && book.units_owed() == 0.0);
    }

    #[test]
    fn a_failed_batch_is_sent_again_with_its_id() {
        let mut book = ChargeBook::new();
        book.add("d/a", "d/a:rpm", 5.0);
        book.add("d/b", "d/b:rpm", 1.0);
        let first = book.take("m", "d/a").pop().unwrap();
        book.failed(first.clone());
        book.finish("d/a");
        assert_eq!(book.units_owed(), 6.0);
        book.add("d/a", "d/a:rpm", 2.0); // admitted in the next outage
        let again = book.take("m", "d/a");
        assert_eq!(again.len(), 2);
        assert_eq!(again[0], first); // same id: Redis applies it at most once
        assert_eq!(again[1].units, vec![("d/a:rpm".to_string(), 2.0)]);
        assert_ne!(again[1].id, first.id);
        book.finish("d/a");
        assert!(!book.ready("d/a") && book.ready("d/b"));
        assert_eq!(book.units_owed(), 1.0);
    }

    #[test]
    fn refunds_reduce_what_is_owed_never_below_nothing() {
        let mut book = ChargeBook::new();
        book.add("d/a", "d/a:tpm_in", 100.0);
        book.give_back("d/a", "d/a:tpm_in", 40.0);
        assert_eq!(book.units_owed(), 60.0);
        book.give_back("d/a", "d/a:tpm_in", 500.0);
        book.give_back("d/x", "d/x:rpm", 1.0); // nothing owed there
        assert!(!book.has_work() && book.units_owed() == 0.0);
        assert!(book.take("m", "d/a").is_empty());
        // Units already in a batch stay owed (the batch may be applied).
        book.add("d/a", "d/a:rpm", 3.0);
        let b = book.take("m", "d/a");
        book.give_back("d/a", "d/a:rpm", 3.0);
        book.failed(b[0].clone());
        book.finish("d/a");
        assert_eq!(book.units_owed(), 3.0);
    }
}
