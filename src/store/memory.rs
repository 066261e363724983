//! The embedded store: bounded maps with TTLs, for a single replica.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{Claim, ExecutionRecord, Lease, SessionFilter, SessionRecord, Store, StoreError};

#[derive(Debug)]
pub struct MemoryStore {
    max_entries: usize,
    inner: Mutex<Inner>,
    job_ready: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<String, SessionRecord>,
    executions: HashMap<String, ExecutionRecord>,
    /// Waiting jobs; a taken job leaves the queue (nothing survives this process anyway).
    jobs: std::collections::VecDeque<(String, String)>,
    next_job_id: u64,
    /// Single-use keys: (answer, result, expiry).
    once: HashMap<String, (String, Option<String>, i64)>,
}

impl Inner {
    fn purge(&mut self, now: i64) {
        self.sessions.retain(|_, s| s.expires_at > now);
        self.executions.retain(|_, e| e.expires_at > now);
        self.once.retain(|_, o| o.2 > now);
    }

    fn len(&self) -> usize {
        self.sessions.len() + self.executions.len() + self.once.len()
    }
}

impl MemoryStore {
    pub fn new(max_entries: usize) -> Self {
        Self {
            max_entries,
            inner: Mutex::new(Inner::default()),
            job_ready: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, StoreError> {
        self.inner
            .lock()
            .map_err(|_| StoreError::Unavailable("memory store lock poisoned".into()))
    }

    /// Make room for one more entry, purging expired ones when full.
    fn room(&self, inner: &mut Inner, now: i64) -> Result<(), StoreError> {
        if inner.len() >= self.max_entries {
            inner.purge(now);
        }
        if inner.len() >= self.max_entries {
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
        self.room(&mut inner, now)?;
        inner.sessions.insert(rec.id.clone(), rec);
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
        match inner.sessions.get(&rec.id) {
            Some(current) if current.version == expected && current.expires_at > now => {
                rec.version = expected + 1;
                inner.sessions.insert(rec.id.clone(), rec);
                Ok(())
            }
            _ => Err(StoreError::Conflict),
        }
    }

    async fn delete_session(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.lock()?.sessions.remove(id).is_some())
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
            .filter(|s| {
                s.expires_at > now
                    && s.org == f.org
                    && s.subject == f.subject
                    && f.user_id
                        .as_ref()
                        .is_none_or(|u| s.user_id.as_ref() == Some(u))
                    && f.session_group
                        .as_ref()
                        .is_none_or(|g| s.session_group.as_ref() == Some(g))
                    && f.model.as_ref().is_none_or(|m| &s.model == m)
            })
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
        if !inner.executions.contains_key(&rec.id) {
            self.room(&mut inner, now)?;
        }
        inner.executions.insert(rec.id.clone(), rec);
        Ok(())
    }

    async fn advance_execution(&self, rec: ExecutionRecord, now: i64) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        match inner.executions.get_mut(&rec.id) {
            Some(current) if current.expires_at > now && current.status.may_become(rec.status) => {
                *current = rec;
                Ok(true)
            }
            _ => Ok(false),
        }
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
        self.lock()?.executions.remove(id);
        Ok(())
    }

    async fn enqueue(&self, payload: String, max_queued: usize) -> Result<(), StoreError> {
        {
            let mut inner = self.lock()?;
            if inner.jobs.len() >= max_queued {
                return Err(StoreError::Full);
            }
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
            if let Some((id, payload)) = self.lock()?.jobs.pop_front() {
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
                self.room(&mut inner, now)?;
                inner.once.insert(
                    key.to_owned(),
                    (answer.to_owned(), None, now + ttl_secs as i64),
                );
                Ok(Claim::New)
            }
        }
    }

    async fn finish_once(
        &self,
        key: &str,
        result: String,
        _ttl_secs: u64,
        _now: i64,
    ) -> Result<(), StoreError> {
        if let Some(o) = self.lock()?.once.get_mut(key) {
            o.1 = Some(result);
        }
        Ok(())
    }

    async fn release_once(&self, key: &str) -> Result<(), StoreError> {
        self.lock()?.once.remove(key);
        Ok(())
    }

    async fn health(&self) -> (&'static str, bool) {
        ("memory", true)
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
            version: 0,
        }
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
