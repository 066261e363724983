//! The embedded store: maps with TTLs for a single replica, bounded both in
//! entries and in bytes (a session's sealed state and metadata, an
//! execution's result, a single-use record's answer and result are counted
//! as they are stored), so that a few huge records cannot exhaust memory.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{
    Bucket, Claim, ExecutionRecord, Lease, SessionFilter, SessionRecord, Store, StoreError, Tokens,
};

/// Bytes counted for a record beyond its variable-length fields.
const RECORD_OVERHEAD: usize = 256;

#[derive(Debug)]
pub struct MemoryStore {
    max_entries: usize,
    max_bytes: usize,
    inner: Mutex<Inner>,
    job_ready: tokio::sync::Notify,
    /// Rate-limit counters (this replica's own).
    limits: super::rate::Local,
}

/// A single-use key's answer, result and expiry.
type Once = (String, Option<String>, i64);

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<String, SessionRecord>,
    executions: HashMap<String, ExecutionRecord>,
    /// Waiting jobs; a taken job leaves the queue (nothing survives this process anyway).
    jobs: std::collections::VecDeque<(String, String)>,
    next_job_id: u64,
    once: HashMap<String, Once>,
    /// The bytes of everything held, by the `*_bytes` functions below
    /// (queued job payloads included).
    bytes: usize,
    /// When expired records were last purged (at most once a second).
    purged_at: i64,
}

fn opt(s: &Option<String>) -> usize {
    s.as_ref().map_or(0, String::len)
}

fn session_bytes(s: &SessionRecord) -> usize {
    RECORD_OVERHEAD
        + s.id.len()
        + s.org.len()
        + s.agent_id.len()
        + s.subject.len()
        + opt(&s.user_id)
        + opt(&s.session_group)
        + s.metadata.as_ref().map_or(0, |m| m.to_string().len())
        + s.title.len()
        + s.model.len()
        + s.status.len()
        + opt(&s.sealed)
        + s.jobs.iter().map(String::len).sum::<usize>()
        + s.last_job.as_ref().map_or(0, |(a, b)| a.len() + b.len())
        + s.keys.iter().map(|(m, _)| m.len() + 8).sum::<usize>()
        + s.last_response
            .as_ref()
            .map_or(0, |(a, b)| a.len() + b.len())
}

fn execution_bytes(e: &ExecutionRecord) -> usize {
    RECORD_OVERHEAD
        + e.id.len()
        + e.org.len()
        + e.subject.len()
        + e.agent_id.len()
        + e.session_id.len()
        + opt(&e.result)
        + e.error.as_ref().map_or(0, |(a, b)| a.len() + b.len())
        + opt(&e.fingerprint)
}

fn once_bytes(key: &str, o: &Once) -> usize {
    RECORD_OVERHEAD + key.len() + o.0.len() + opt(&o.1)
}

impl Inner {
    /// Drop expired records, subtracting what they held. A full store asked
    /// again within the same second is not scanned again.
    fn purge(&mut self, now: i64) {
        if now <= self.purged_at {
            return;
        }
        self.purged_at = now;
        let mut freed = 0usize;
        self.sessions.retain(|_, s| {
            let keep = s.expires_at > now;
            if !keep {
                freed += session_bytes(s);
            }
            keep
        });
        self.executions.retain(|_, e| {
            let keep = e.expires_at > now;
            if !keep {
                freed += execution_bytes(e);
            }
            keep
        });
        self.once.retain(|k, o| {
            let keep = o.2 > now;
            if !keep {
                freed += once_bytes(k, o);
            }
            keep
        });
        self.bytes = self.bytes.saturating_sub(freed);
    }

    fn len(&self) -> usize {
        self.sessions.len() + self.executions.len() + self.once.len()
    }

    fn put_session(&mut self, rec: SessionRecord) {
        self.bytes += session_bytes(&rec);
        if let Some(old) = self.sessions.insert(rec.id.clone(), rec) {
            self.bytes = self.bytes.saturating_sub(session_bytes(&old));
        }
    }

    fn remove_session(&mut self, id: &str) -> bool {
        match self.sessions.remove(id) {
            Some(old) => {
                self.bytes = self.bytes.saturating_sub(session_bytes(&old));
                true
            }
            None => false,
        }
    }

    fn put_execution(&mut self, rec: ExecutionRecord) {
        self.bytes += execution_bytes(&rec);
        if let Some(old) = self.executions.insert(rec.id.clone(), rec) {
            self.bytes = self.bytes.saturating_sub(execution_bytes(&old));
        }
    }

    fn remove_execution(&mut self, id: &str) {
        if let Some(old) = self.executions.remove(id) {
            self.bytes = self.bytes.saturating_sub(execution_bytes(&old));
        }
    }

    fn put_once(&mut self, key: String, o: Once) {
        self.bytes += once_bytes(&key, &o);
        if let Some(old) = self.once.insert(key.clone(), o) {
            self.bytes = self.bytes.saturating_sub(once_bytes(&key, &old));
        }
    }

    fn remove_once(&mut self, key: &str) {
        if let Some(old) = self.once.remove(key) {
            self.bytes = self.bytes.saturating_sub(once_bytes(key, &old));
        }
    }
}

impl MemoryStore {
    pub fn new(max_entries: usize) -> Self {
        Self::with_limits(max_entries, usize::MAX)
    }

    pub fn with_limits(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            max_entries,
            max_bytes,
            inner: Mutex::new(Inner::default()),
            job_ready: tokio::sync::Notify::new(),
            limits: super::rate::Local::default(),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, StoreError> {
        self.inner
            .lock()
            .map_err(|_| StoreError::Unavailable("memory store lock poisoned".into()))
    }

    /// Make room for `new` more entries and `grow` more bytes, purging expired
    /// records when full.
    fn room(&self, inner: &mut Inner, new: usize, grow: usize, now: i64) -> Result<(), StoreError> {
        let fits = |inner: &Inner| {
            inner.len() + new <= self.max_entries
                && inner.bytes.saturating_add(grow) <= self.max_bytes
        };
        if !fits(inner) {
            inner.purge(now);
        }
        if !fits(inner) {
            return Err(StoreError::Full);
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn create_session(&self, rec: SessionRecord, now: i64) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        if inner
            .sessions
            .get(&rec.id)
            .is_some_and(|s| s.expires_at > now)
        {
            return Err(StoreError::Exists);
        }
        self.room(&mut inner, 1, session_bytes(&rec), now)?;
        inner.remove_session(&rec.id);
        inner.put_session(rec);
        Ok(())
    }

    async fn get_session(&self, id: &str, now: i64) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self
            .lock()?
            .sessions
            .get(id)
            .filter(|s| s.expires_at > now)
            .cloned())
    }

    async fn replace_session(
        &self,
        mut rec: SessionRecord,
        expected: u64,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        let old = match inner.sessions.get(&rec.id) {
            Some(current) if current.version == expected && current.expires_at > now => {
                session_bytes(current)
            }
            _ => return Err(StoreError::Conflict),
        };
        self.room(&mut inner, 0, session_bytes(&rec).saturating_sub(old), now)?;
        // A purge may have removed it (it was live: it cannot have expired).
        if !inner.sessions.contains_key(&rec.id) {
            return Err(StoreError::Conflict);
        }
        rec.version = expected + 1;
        inner.put_session(rec);
        Ok(())
    }

    async fn delete_session(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.lock()?.remove_session(id))
    }

    async fn list_sessions(
        &self,
        f: &SessionFilter,
        now: i64,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let inner = self.lock()?;
        let mut found: Vec<&SessionRecord> = inner
            .sessions
            .values()
            .filter(|s| f.matches(s, now))
            .collect();
        found.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.id.cmp(&a.id))
        });
        Ok(found
            .into_iter()
            .skip(f.offset)
            .take(f.limit)
            .cloned()
            .collect())
    }

    async fn put_execution(&self, rec: ExecutionRecord, now: i64) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        let (new, old) = match inner.executions.get(&rec.id) {
            Some(old) => (0, execution_bytes(old)),
            None => (1, 0),
        };
        self.room(
            &mut inner,
            new,
            execution_bytes(&rec).saturating_sub(old),
            now,
        )?;
        inner.put_execution(rec);
        Ok(())
    }

    async fn advance_execution(&self, rec: ExecutionRecord, now: i64) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        let old = match inner.executions.get(&rec.id) {
            Some(current) if current.expires_at > now && current.status.may_become(rec.status) => {
                execution_bytes(current)
            }
            _ => return Ok(false),
        };
        self.room(
            &mut inner,
            0,
            execution_bytes(&rec).saturating_sub(old),
            now,
        )?;
        inner.put_execution(rec);
        Ok(true)
    }

    async fn get_execution(
        &self,
        id: &str,
        now: i64,
    ) -> Result<Option<ExecutionRecord>, StoreError> {
        Ok(self
            .lock()?
            .executions
            .get(id)
            .filter(|e| e.expires_at > now)
            .cloned())
    }

    async fn delete_execution(&self, id: &str) -> Result<(), StoreError> {
        self.lock()?.remove_execution(id);
        Ok(())
    }

    async fn enqueue(&self, payload: String, max_queued: usize) -> Result<(), StoreError> {
        {
            let mut inner = self.lock()?;
            if inner.jobs.len() >= max_queued
                || inner.bytes.saturating_add(payload.len()) > self.max_bytes
            {
                return Err(StoreError::Full);
            }
            inner.bytes += payload.len();
            inner.next_job_id += 1;
            let id = inner.next_job_id.to_string();
            inner.jobs.push_back((id, payload));
        }
        self.job_ready.notify_one();
        Ok(())
    }

    async fn next_job(
        &self,
        _consumer: &str,
        wait: std::time::Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.job_ready.notified();
            let taken = {
                let mut inner = self.lock()?;
                let job = inner.jobs.pop_front();
                if let Some((_, payload)) = &job {
                    inner.bytes = inner.bytes.saturating_sub(payload.len());
                }
                job
            };
            if let Some((id, payload)) = taken {
                return Ok(Some(Lease {
                    id,
                    payload,
                    deliveries: 1,
                }));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(None);
            }
        }
    }

    async fn renew(&self, _consumer: &str, _lease: &Lease) -> Result<(), StoreError> {
        Ok(())
    }

    async fn ack(&self, _consumer: &str, _lease: &Lease) -> Result<(), StoreError> {
        Ok(())
    }

    async fn reclaim(
        &self,
        _consumer: &str,
        _min_idle: std::time::Duration,
    ) -> Result<Option<Lease>, StoreError> {
        // Jobs of a dead process die with it: there is nobody to reclaim from.
        Ok(None)
    }

    async fn claim_once(
        &self,
        key: &str,
        answer: &str,
        ttl_secs: u64,
        now: i64,
    ) -> Result<Claim, StoreError> {
        let mut inner = self.lock()?;
        match inner.once.get(key).filter(|o| o.2 > now) {
            Some((a, result, _)) if a == answer => Ok(Claim::Repeat(result.clone())),
            Some(_) => Ok(Claim::Conflict),
            None => {
                let once = (answer.to_owned(), None, now + ttl_secs as i64);
                self.room(&mut inner, 1, once_bytes(key, &once), now)?;
                inner.remove_once(key);
                inner.put_once(key.to_owned(), once);
                Ok(Claim::New)
            }
        }
    }

    async fn finish_once(
        &self,
        key: &str,
        result: String,
        _ttl_secs: u64,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        let Some(mut once) = inner.once.get(key).cloned() else {
            return Ok(());
        };
        self.room(&mut inner, 0, result.len(), now)?;
        once.1 = Some(result);
        inner.put_once(key.to_owned(), once);
        Ok(())
    }

    async fn release_once(&self, key: &str) -> Result<(), StoreError> {
        self.lock()?.remove_once(key);
        Ok(())
    }

    async fn queue_depth(&self) -> Result<u64, StoreError> {
        Ok(self.lock()?.jobs.len() as u64)
    }

    async fn health(&self) -> (&'static str, bool) {
        ("memory", true)
    }

    async fn count_request(&self, key: &str, per_minute: u64) -> Result<Bucket, StoreError> {
        Ok(self.limits.request(key, per_minute))
    }

    async fn meter_tokens(
        &self,
        key: &str,
        per_minute: u64,
        how: Tokens,
    ) -> Result<Bucket, StoreError> {
        Ok(self.limits.tokens(key, per_minute, how))
    }

    async fn open_slot(
        &self,
        key: &str,
        _id: &str,
        max: u64,
        _lease: std::time::Duration,
    ) -> Result<bool, StoreError> {
        // Slots live and die with this process: no lease is needed.
        Ok(self.limits.open_slot(key, max))
    }

    async fn close_slot(&self, key: &str, _id: &str) -> Result<(), StoreError> {
        self.limits.close_slot(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str, created: i64, expires: i64) -> SessionRecord {
        SessionRecord {
            id: id.into(),
            org: "o".into(),
            agent_id: String::new(),
            subject: "s".into(),
            user_id: None,
            session_group: None,
            metadata: None,
            title: String::new(),
            model: String::new(),
            status: "active".into(),
            created_at: created,
            updated_at: created,
            expires_at: expires,
            message_count: 0,
            total_tokens: 0,
            sealed: None,
            jobs: Vec::new(),
            last_job: None,
            keys: Vec::new(),
            last_response: None,
            version: 0,
        }
    }

    #[tokio::test]
    async fn the_store_counts_bytes_not_only_entries() {
        let store = MemoryStore::with_limits(1000, 64 * 1024);
        let big = |id: &str| {
            let mut s = session(id, 0, 100);
            s.metadata = Some(serde_json::json!({"blob": "x".repeat(20_000)}));
            s
        };
        for id in ["a", "b", "c"] {
            store.create_session(big(id), 1).await.unwrap();
        }
        assert_eq!(
            store.create_session(big("d"), 1).await,
            Err(StoreError::Full),
            "three 20 KB sessions fill 64 KiB long before 1000 entries"
        );
        assert!(store.delete_session("a").await.unwrap());
        store.create_session(big("d"), 1).await.unwrap();
        // Growing a record past the bound is refused as well.
        let mut grown = big("b");
        grown.metadata = Some(serde_json::json!({"blob": "x".repeat(40_000)}));
        assert_eq!(
            store.replace_session(grown, 0, 1).await,
            Err(StoreError::Full)
        );
        // Expired records make room.
        store.create_session(big("e"), 200).await.unwrap();
    }

    #[tokio::test]
    async fn compare_and_set_refuses_a_stale_version() {
        let store = MemoryStore::new(10);
        store.create_session(session("a", 0, 100), 0).await.unwrap();
        let rec = store.get_session("a", 1).await.unwrap().unwrap();
        store.replace_session(rec.clone(), 0, 1).await.unwrap();
        assert_eq!(
            store.replace_session(rec, 0, 1).await,
            Err(StoreError::Conflict)
        );
        assert_eq!(store.get_session("a", 1).await.unwrap().unwrap().version, 1);
    }

    #[tokio::test]
    async fn expired_records_are_invisible_and_purged_when_full() {
        let store = MemoryStore::new(2);
        store.create_session(session("a", 0, 10), 0).await.unwrap();
        store.create_session(session("b", 0, 100), 0).await.unwrap();
        assert_eq!(
            store.create_session(session("c", 0, 100), 5).await,
            Err(StoreError::Full)
        );
        assert!(store.get_session("a", 10).await.unwrap().is_none());
        store
            .create_session(session("c", 0, 100), 11)
            .await
            .unwrap();
        assert!(store.get_session("c", 11).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn listing_is_scoped_and_paged_newest_first() {
        let store = MemoryStore::new(100);
        for i in 0..5 {
            store
                .create_session(session(&format!("s{i}"), i, 100), 0)
                .await
                .unwrap();
        }
        let mut other = session("x", 9, 100);
        other.subject = "someone-else".into();
        store.create_session(other, 0).await.unwrap();
        let f = SessionFilter {
            org: "o".into(),
            subject: "s".into(),
            limit: 2,
            offset: 1,
            ..Default::default()
        };
        let ids: Vec<String> = store
            .list_sessions(&f, 0)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(ids, ["s3", "s2"]);
    }
}
