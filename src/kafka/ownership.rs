//! Which tenants this replica owns: those whose partition (see `partition`) of the input
//! topics the consumer group assigned to it and whose state it has restored. gRPC calls for
//! any other tenant are answered `UNAVAILABLE` naming the partition and, when known, the
//! replica that owns it (see `owners`), so the caller can retry there.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use crate::model::TenantId;
use crate::runtime::{CallError, Placement, Serves};

#[derive(Default)]
struct Inner {
    ready: HashSet<i32>,
    /// Partitions restored here whose inputs written before the takeover are still being
    /// read (see `handover::take_over`): not served until they are.
    catching_up: HashSet<i32>,
    /// Partitions whose state failed to restore (their input is not read).
    failed: HashSet<i32>,
    /// Partitions with changes since their last snapshot.
    dirty: HashSet<i32>,
    /// The advertised gRPC address of each partition's owner, as the owners announce it.
    owners: HashMap<i32, String>,
}

pub struct Ownership {
    partitions: i32,
    /// This replica's advertised gRPC address (empty: not advertised).
    me: String,
    inner: RwLock<Inner>,
}

impl Ownership {
    pub fn new(partitions: i32, me: String) -> Arc<Self> {
        Arc::new(Self {
            partitions,
            me,
            inner: RwLock::default(),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner
            .read()
            .expect("no panic while holding the ownership lock")
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner
            .write()
            .expect("no panic while holding the ownership lock")
    }

    pub fn partition_of(&self, tenant: &str) -> i32 {
        super::partition::partition_of(tenant, self.partitions)
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// The partition's state is restored here and what was written to its inputs before is
    /// being read: it is not served yet, and calls for it are not forwarded elsewhere.
    pub fn catching_up(&self, partition: i32) {
        let mut inner = self.write();
        inner.failed.remove(&partition);
        inner.catching_up.insert(partition);
        if !self.me.is_empty() {
            inner.owners.insert(partition, self.me.clone());
        }
    }

    /// The partition's state is restored and caught up: its tenants are served here.
    pub fn ready(&self, partition: i32) {
        let mut inner = self.write();
        inner.failed.remove(&partition);
        inner.catching_up.remove(&partition);
        inner.ready.insert(partition);
        if !self.me.is_empty() {
            inner.owners.insert(partition, self.me.clone());
        }
    }

    pub fn failed(&self, partition: i32) {
        self.write().failed.insert(partition);
    }

    /// The partition went to another replica (or this one stops).
    pub fn released(&self, partition: i32) {
        let mut inner = self.write();
        inner.ready.remove(&partition);
        inner.catching_up.remove(&partition);
        inner.failed.remove(&partition);
        inner.dirty.remove(&partition);
        if inner.owners.get(&partition) == Some(&self.me) {
            inner.owners.remove(&partition);
        }
    }

    pub fn owned(&self) -> Vec<i32> {
        let mut owned: Vec<i32> = self.read().ready.iter().copied().collect();
        owned.sort_unstable();
        owned
    }

    pub fn is_owned(&self, partition: i32) -> bool {
        self.read().ready.contains(&partition)
    }

    /// Restored here: served, or still catching up.
    pub fn is_taken(&self, partition: i32) -> bool {
        let inner = self.read();
        inner.ready.contains(&partition) || inner.catching_up.contains(&partition)
    }

    /// The partitions restored here (served or still catching up), in order.
    pub fn taken(&self) -> Vec<i32> {
        let inner = self.read();
        let mut taken: Vec<i32> = inner.ready.union(&inner.catching_up).copied().collect();
        taken.sort_unstable();
        taken
    }

    /// Marks the partition as changed since its last snapshot.
    pub fn touch(&self, partition: i32) {
        if !self.read().dirty.contains(&partition) {
            self.write().dirty.insert(partition);
        }
    }

    /// Takes the changed flag of a partition.
    pub fn take_dirty(&self, partition: i32) -> bool {
        self.write().dirty.remove(&partition)
    }

    /// Another replica announced that it owns `partition` (see `owners`).
    pub fn announced(&self, partition: i32, address: String) {
        let mut inner = self.write();
        if !inner.ready.contains(&partition) && !inner.catching_up.contains(&partition) {
            inner.owners.insert(partition, address);
        }
    }

    /// The advertised address of the partition's owner, if known and not this replica.
    pub fn owner_of(&self, partition: i32) -> Option<String> {
        let inner = self.read();
        if inner.ready.contains(&partition) || inner.catching_up.contains(&partition) {
            return None;
        }
        inner.owners.get(&partition).cloned()
    }
}

impl Serves for Ownership {
    fn check(&self, tenant: &TenantId) -> Result<(), CallError> {
        let partition = self.partition_of(tenant.as_str());
        let inner = self.read();
        if inner.ready.contains(&partition) {
            drop(inner);
            self.touch(partition);
            return Ok(());
        }
        let why = if inner.failed.contains(&partition) {
            "its state could not be restored here; see this replica's log".to_owned()
        } else if inner.catching_up.contains(&partition) {
            "it was just taken over here and what was written before (sends, cancels, \
             consents, inbound messages) is still being read; retry shortly"
                .to_owned()
        } else {
            match inner.owners.get(&partition) {
                Some(owner) => format!("another replica owns it; call {owner}"),
                None => "no replica has announced it yet (a rebalance is under way)".to_owned(),
            }
        };
        Err(CallError::Elsewhere {
            tenant: tenant.to_string(),
            partition,
            why,
        })
    }
}

impl Placement for Ownership {
    fn partition_of(&self, tenant: &str) -> i32 {
        Ownership::partition_of(self, tenant)
    }

    fn is_owned(&self, partition: i32) -> bool {
        Ownership::is_owned(self, partition)
    }

    fn owner_of(&self, partition: i32) -> Option<String> {
        Ownership::owner_of(self, partition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_restored_partitions_are_served_and_others_name_their_owner() {
        let o = Ownership::new(12, "10.0.0.1:50051".into());
        let acme = TenantId::new("acme");
        let p = o.partition_of("acme");
        let Err(CallError::Elsewhere { why, .. }) = o.check(&acme) else {
            panic!("not served before its partition is restored");
        };
        assert!(why.contains("rebalance"), "{why}");
        o.announced(p, "10.0.0.2:50051".into());
        let Err(CallError::Elsewhere { partition, why, .. }) = o.check(&acme) else {
            panic!("owned elsewhere");
        };
        assert_eq!(partition, p);
        assert!(why.contains("10.0.0.2:50051"), "names the owner: {why}");
        assert_eq!(o.owner_of(p).as_deref(), Some("10.0.0.2:50051"));

        o.ready(p);
        assert_eq!(o.check(&acme), Ok(()));
        assert!(
            o.take_dirty(p),
            "a call marks the partition for the next snapshot"
        );
        assert!(!o.take_dirty(p));
        assert_eq!(o.owner_of(p), None, "served here");

        o.released(p);
        assert!(o.check(&acme).is_err());
        assert_eq!(o.owned(), Vec::<i32>::new());
    }

    #[test]
    fn a_partition_catching_up_is_not_served_nor_forwarded() {
        let o = Ownership::new(12, "10.0.0.1:50051".into());
        let acme = TenantId::new("acme");
        let p = o.partition_of("acme");
        // The dead owner's announcement is still the last one heard.
        o.announced(p, "10.0.0.2:50051".into());
        o.catching_up(p);
        let Err(CallError::Elsewhere { why, .. }) = o.check(&acme) else {
            panic!("not served while catching up");
        };
        assert!(why.contains("still being read"), "{why}");
        assert_eq!(o.owner_of(p), None, "not forwarded to the old owner");
        o.announced(p, "10.0.0.2:50051".into());
        assert_eq!(o.owner_of(p), None, "a late announcement does not move it");
        assert!(!o.is_owned(p) && o.is_taken(p));
        assert_eq!((o.owned(), o.taken()), (vec![], vec![p]));

        o.ready(p);
        assert_eq!(o.check(&acme), Ok(()));
        assert_eq!((o.owned(), o.taken()), (vec![p], vec![p]));
        o.released(p);
        assert!(!o.is_taken(p));
    }
}
