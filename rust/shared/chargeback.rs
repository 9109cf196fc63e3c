//! What the `local_share` fallback admitted while Redis was away, owed to the
//! cluster-wide cells once Redis answers again.
//!
//! [`ChargeBook`] is plain bookkeeping (no I/O): the limiter adds what the
//! local share admitted (and takes off what it refunded there), then, on the
//! first Redis reply after an outage, [`ChargeBook::take`] hands out one
//! [`Batch`] per (deployment, model) scope to charge with the `CHARGE` script.
//! A batch that Redis did not confirm goes back with [`ChargeBook::failed`]
//! and is sent again, under the same id, at the next recovery: the script
//! applies an id once, so a batch whose reply was lost is not charged twice.
//! What the fallback admits meanwhile starts a new batch (a new id).

use std::collections::{BTreeMap, HashMap};

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
    /// A charge is running (one at a time).
    in_flight: bool,
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
            in_flight: false,
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

    /// Whether a charge could start now: something is owed and no charge
    /// is running.
    pub fn ready(&self) -> bool {
        !self.in_flight && self.has_work()
    }

    /// Units owed in all (owed and unconfirmed batches).
    pub fn units_owed(&self) -> f64 {
        if self.pid != std::process::id() {
            return 0.0;
        }
        let owed: f64 = self.owed.values().flat_map(|k| k.values()).sum();
        owed + self.retry.iter().map(Batch::total).sum::<f64>()
    }

    /// Start a charge: the batches to send (the unconfirmed ones first, with
    /// their ids, then one new batch per scope owed), or nothing when a charge
    /// is running already or nothing is owed. `member` names this process.
    pub fn take(&mut self, member: &str) -> Vec<Batch> {
        self.own();
        if self.in_flight || !self.has_work() {
            return Vec::new();
        }
        self.in_flight = true;
        let mut out = std::mem::take(&mut self.retry);
        let mut scopes: Vec<_> = self.owed.drain().collect();
        scopes.sort_by(|a, b| a.0.cmp(&b.0));
        for (scope, keys) in scopes {
            let units: Vec<(String, f64)> = keys.into_iter().filter(|(_, u)| *u > DUST).collect();
            if units.is_empty() {
                continue;
            }
            self.next += 1;
            out.push(Batch {
                id: format!("{member}:cb{}", self.next),
                scope,
                units,
            });
        }
        out
    }

    /// Redis did not confirm `batch`: keep it for the next recovery (same id).
    pub fn failed(&mut self, batch: Batch) {
        if self.pid == std::process::id() {
            self.retry.push(batch);
        }
    }

    /// The charge started by [`Self::take`] is over (each batch confirmed or
    /// handed back with [`Self::failed`]).
    pub fn finish(&mut self) {
        self.in_flight = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owed_units_become_one_batch_per_scope_and_are_cleared() {
        let mut book = ChargeBook::new();
        assert!(!book.has_work() && book.take("m").is_empty());
        book.add("d/a", "d/a:rpm", 1.0);
        book.add("d/a", "d/a:rpm", 2.0);
        book.add("d/a", "d/a:tpm_in", 300.0);
        book.add("d/b", "d/b:rpm", 1.0);
        book.add("d/b", "d/b:rpm", f64::NAN); // ignored
        book.add("d/b", "d/b:rpm", -4.0); // ignored
        assert_eq!(book.units_owed(), 304.0);
        let batches = book.take("m");
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].scope, "d/a");
        assert_eq!(
            batches[0].units,
            vec![
                ("d/a:rpm".to_string(), 3.0),
                ("d/a:tpm_in".to_string(), 300.0)
            ]
        );
        assert_eq!(batches[1].units, vec![("d/b:rpm".to_string(), 1.0)]);
        assert_ne!(batches[0].id, batches[1].id);
        // One charge at a time: a second take while it runs hands out nothing.
        book.add("d/a", "d/a:rpm", 1.0);
        assert!(book.has_work() && !book.ready());
        assert!(book.take("m").is_empty());
        book.finish();
        // Confirmed batches are gone; what came meanwhile is a new batch.
        let next = book.take("m");
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].units, vec![("d/a:rpm".to_string(), 1.0)]);
        assert!(![&batches[0].id, &batches[1].id].contains(&&next[0].id));
        book.finish();
        assert!(!book.has_work() && book.units_owed() == 0.0);
    }

    #[test]
    fn a_failed_batch_is_sent_again_with_its_id() {
        let mut book = ChargeBook::new();
        book.add("d/a", "d/a:rpm", 5.0);
        let first = book.take("m").pop().unwrap();
        book.failed(first.clone());
        book.finish();
        assert_eq!(book.units_owed(), 5.0);
        book.add("d/a", "d/a:rpm", 2.0); // admitted in the next outage
        let again = book.take("m");
        assert_eq!(again.len(), 2);
        assert_eq!(again[0], first); // same id: Redis applies it at most once
        assert_eq!(again[1].units, vec![("d/a:rpm".to_string(), 2.0)]);
        assert_ne!(again[1].id, first.id);
        book.finish();
        assert!(!book.has_work());
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
        assert!(book.take("m").is_empty());
        // Units already in a batch stay owed (the batch may be applied).
        book.add("d/a", "d/a:rpm", 3.0);
        let b = book.take("m");
        book.give_back("d/a", "d/a:rpm", 3.0);
        book.failed(b[0].clone());
        book.finish();
        assert_eq!(book.units_owed(), 3.0);
    }
}
