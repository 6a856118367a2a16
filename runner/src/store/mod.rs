//! The runner's durable state: one embedded database file (redb) under the runner's state
//! directory. Plans, approvals and seen ticket ids live here and survive restarts, SIGKILL
//! included: a write transaction is durable (fsync'd) when its commit returns, and every check
//! that must be atomic (a ticket's first use, an approval's one execution) is one transaction.
//!
//! Records are JSON values in tables of `&str -> &[u8]`, so a record type can gain fields
//! without a migration. Sessions are not here: an MCP session lives in the runner's memory and
//! ends with the process anyway.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Ticket ids (`jti`) seen, with their expiry (unix seconds).
const SEEN_TICKETS: TableDefinition<&str, u64> = TableDefinition::new("seen_tickets");

/// A JSON table of the store.
#[derive(Clone, Copy)]
pub struct Table(TableDefinition<'static, &'static str, &'static [u8]>, &'static str);

/// Stored plans by artifact hash (`sha256:<hex>`): the provenance of every plan run that made
/// that artifact (see [`crate::plans`]).
pub const PLANS: Table = Table(TableDefinition::new("plans"), "plans");
/// Approvals by id (see [`crate::approvals`]).
pub const APPROVALS: Table = Table(TableDefinition::new("approvals"), "approvals");
/// The latest approval id of each approval key (one call by one requester under one policy).
pub const APPROVAL_KEYS: Table = Table(TableDefinition::new("approval_keys"), "approval_keys");
/// The approvals that are pending, by id, with their expiry: what `approvals list` and the
/// webhook's redelivery read, so neither scans every approval ever made.
pub const PENDING_APPROVALS: Table = Table(TableDefinition::new("pending_approvals"), "pending_approvals");

/// Unix seconds as RFC 3339 UTC (`2026-12-02T07:36:40Z`).
pub fn rfc3339(unix: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(i64::try_from(unix).unwrap_or(i64::MAX)).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| unix.to_string())
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database: {0}")]
    Db(#[from] redb::Error),
    #[error("state database record {key:?} in {table}: {source}")]
    Record {
        table: &'static str,
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                Self::Db(e.into())
            }
        }
    )*};
}
db_err!(redb::DatabaseError, redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

pub struct Store {
    db: Database,
    /// The second (unix) of the last pruning of `seen_tickets`: it is pruned at most once a
    /// second, as pruning scans the whole table (every ticket id of the last TTL seconds).
    pruned_at: AtomicU64,
}

/// Who asked: the workload, and the user it acted for when a verified token named one (a user
/// is an issuer and a subject). Plans and approvals belong to a requester.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Requester {
    pub workload: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_iss: Option<String>,
}

impl Requester {
    pub fn of(claims: &portcullis_core::ticket::Claims) -> Self {
        Self { workload: claims.sub.clone(), user: claims.user.clone(), user_iss: claims.user_iss.clone() }
    }

    /// The same person: both have a user, with the same issuer and subject.
    pub fn same_user(&self, other: &Requester) -> bool {
        self.user.is_some() && self.user == other.user && self.user_iss == other.user_iss
    }

    /// `user@issuer via workload`, or the workload alone.
    pub fn describe(&self) -> String {
        match &self.user {
            Some(user) => format!("user {user} ({}) via {}", self.user_iss.as_deref().unwrap_or("?"), self.workload),
            None => format!("workload {} (no user)", self.workload),
        }
    }
}

/// A write transaction over JSON tables: read, decide and write, then commit once.
pub struct Txn(redb::WriteTransaction);

impl Txn {
    pub fn get<T: DeserializeOwned>(&self, table: Table, key: &str) -> Result<Option<T>, StoreError> {
        let t = self.0.open_table(table.0)?;
        let value = t.get(key)?;
        value.map(|v| decode(table, key, v.value())).transpose()
    }

    pub fn put<T: Serialize>(&mut self, table: Table, key: &str, value: &T) -> Result<(), StoreError> {
        let bytes = encode(table, key, value)?;
        self.0.open_table(table.0)?.insert(key, bytes.as_slice())?;
        Ok(())
    }

    pub fn remove(&mut self, table: Table, key: &str) -> Result<(), StoreError> {
        self.0.open_table(table.0)?.remove(key)?;
        Ok(())
    }

    /// Removes every record of a table.
    pub fn clear(&mut self, table: Table) -> Result<(), StoreError> {
        self.0.open_table(table.0)?.retain(|_, _| false)?;
        Ok(())
    }

    /// Every record of a table, with its key, in key order.
    pub fn entries<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<(String, T)>, StoreError> {
        entries(&self.0.open_table(table.0)?, table)
    }
}

impl Store {
    /// Opens (or creates) the database file. Its directory must exist; the file is the
    /// runner's alone: its directory (the runner state dir) is created 0700, which guards it
    /// whatever mode the database file gets.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path)?;
        // Create every table up front, so readers never meet a missing one.
        let txn = db.begin_write()?;
        txn.open_table(SEEN_TICKETS)?;
        for table in [PLANS, APPROVALS, APPROVAL_KEYS, PENDING_APPROVALS] {
            txn.open_table(table.0)?;
        }
        txn.commit()?;
        Ok(Self { db, pruned_at: AtomicU64::new(0) })
    }

    /// Records a ticket id's first use in one durable transaction; `false` if it was seen
    /// before. Entries past their expiry (plus `leeway`) are pruned on the way, at most once a
    /// second: such a ticket is refused as expired anyway, so an entry kept a second longer
    /// changes no answer.
    pub fn first_use_of_ticket(&self, jti: &str, exp: u64, now: u64, leeway: u64) -> Result<bool, StoreError> {
        let txn = self.db.begin_write()?;
        // Only one write transaction runs at a time, so this read-and-set races with no other.
        let prune = self.pruned_at.load(Ordering::Relaxed) != now;
        let fresh = {
            let mut seen = txn.open_table(SEEN_TICKETS)?;
            if prune {
                seen.retain(|_, e| e.saturating_add(leeway) >= now)?;
            }
            let fresh = seen.get(jti)?.is_none();
            if fresh {
                seen.insert(jti, exp)?;
            }
            fresh
        };
        txn.commit()?;
        if prune {
            self.pruned_at.store(now, Ordering::Relaxed);
        }
        Ok(fresh)
    }

    pub fn get<T: DeserializeOwned>(&self, table: Table, key: &str) -> Result<Option<T>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(table.0)?;
        let value = t.get(key)?;
        value.map(|v| decode(table, key, v.value())).transpose()
    }

    /// Every record of a table, with its key, in key order.
    pub fn entries<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<(String, T)>, StoreError> {
        entries(&self.db.begin_read()?.open_table(table.0)?, table)
    }

    /// Runs `f` in one write transaction and commits (durably) only if it returns `Ok`.
    pub fn write<T, E: From<StoreError>>(&self, f: impl FnOnce(&mut Txn) -> Result<T, E>) -> Result<T, E> {
        let mut txn = Txn(self.db.begin_write().map_err(StoreError::from)?);
        let out = f(&mut txn)?;
        txn.0.commit().map_err(StoreError::from)?;
        Ok(out)
    }
}

fn entries<T: DeserializeOwned>(t: &impl ReadableTable<&'static str, &'static [u8]>, table: Table) -> Result<Vec<(String, T)>, StoreError> {
    let mut out = Vec::new();
    for entry in t.iter()? {
        let (k, v) = entry?;
        out.push((k.value().to_owned(), decode(table, k.value(), v.value())?));
    }
    Ok(out)
}

fn decode<T: DeserializeOwned>(table: Table, key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Record { table: table.1, key: key.to_owned(), source })
}

fn encode<T: Serialize>(table: Table, key: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Record { table: table.1, key: key.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableTableMetadata;

    #[test]
    fn a_ticket_id_is_used_once_even_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let store = Store::open(&path).unwrap();
            assert!(store.first_use_of_ticket("a", 100, 90, 1).unwrap());
            assert!(!store.first_use_of_ticket("a", 100, 95, 1).unwrap());
        }
        let store = Store::open(&path).unwrap();
        assert!(!store.first_use_of_ticket("a", 100, 96, 1).unwrap(), "forgotten after a reopen");
        // Long past its expiry the entry is pruned (the verifier refuses such a ticket anyway).
        assert!(store.first_use_of_ticket("a", 100, 200, 1).unwrap());
    }

    #[test]
    fn seen_ticket_ids_stay_bounded_by_the_ticket_lifetime() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let (ttl, leeway, per_second) = (30, 1, 5);
        let live = || store.db.begin_read().unwrap().open_table(SEEN_TICKETS).unwrap().len().unwrap();
        for now in 1000..1100u64 {
            for i in 0..per_second {
                assert!(store.first_use_of_ticket(&format!("{now}-{i}"), now + ttl, now, leeway).unwrap());
            }
            // Pruned once a second: what is left is the tickets of the last ttl + leeway + 1 seconds.
            assert!(live() <= (ttl + leeway + 1) * per_second, "{} ids kept at {now}", live());
        }
        assert_eq!(live(), (ttl + leeway + 1) * per_second);
        // A second later, even one call prunes what expired meanwhile.
        assert!(store.first_use_of_ticket("late", 1130, 1100, leeway).unwrap());
        assert_eq!(live(), (ttl + leeway + 1) * per_second + 1 - per_second);
    }

    #[test]
    fn a_failed_write_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let r: Result<(), StoreError> = store.write(|t| {
            t.put(PLANS, "k", &serde_json::json!({"x": 1}))?;
            Err(StoreError::Db(redb::Error::Corrupted("test".into())))
        });
        assert!(r.is_err());
        assert_eq!(store.get::<serde_json::Value>(PLANS, "k").unwrap(), None);
        store.write(|t| t.put(PLANS, "k", &serde_json::json!({"x": 2}))).unwrap();
        assert_eq!(store.get::<serde_json::Value>(PLANS, "k").unwrap(), Some(serde_json::json!({"x": 2})));
    }
}
