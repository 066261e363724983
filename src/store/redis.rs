//! The Redis store, for several replicas sharing sessions and execution records.
//!
//! Layout under the configured prefix `P`:
//! * `P:s:<id>`: a hash `{v: version, d: session metadata JSON, st: sealed
//!   state, lj: last committed job, lr: last keyed response}`, expiring with the session; replaced only
//!   by a Lua compare-and-set on `v`. Listing reads `v` and `d` only, never
//!   the sealed states.
//! * `P:i:<org>\0<subject>`: a sorted set of the principal's session ids by creation
//!   time, for listing, read newest first in pages of 100 until the page asked
//!   for is full (stale members are removed lazily).
//! * `P:e:<id>`: an execution record's JSON, expiring with the record.
//! * `P:jobs`: a stream of queued async jobs read by the consumer group `workers`;
//!   a delivered job stays pending (leased) until acked, its lease is renewed by
//!   `XCLAIM … JUSTID`, and `XAUTOCLAIM` hands a job whose lease lapsed (its
//!   replica died) to another replica.
//! * `P:rl:<bucket>`: a rate-limit bucket's theoretical arrival time (ms, on
//!   Redis's clock), expiring when the bucket is full again; read and written
//!   by one script per check ([`GCRA`]), so every replica counts against one
//!   bucket.
//! * `P:sl:<key>`: open stream slots, a sorted set of ids by lease expiry.
//!
//! On a Redis Cluster (several URLs, or `cluster = true`) every operation
//! touches one key: the one script with two keys ([`CREATE`]) runs as two
//! single-key steps, and listing reads sessions with one request each instead
//! of a pipeline (a pipeline must stay in one slot). So no key needs a hash tag,
//! and records spread over every primary.
//!
//! The connection is made lazily and re-made by the connection manager, so the
//! gateway starts and keeps serving cursor chat while Redis is down; every
//! operation is bounded by a timeout and fails as `Unavailable`.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use tokio::sync::Mutex;

use super::rate::{Bucket, Tokens};
use super::{Claim, ExecutionRecord, Lease, SessionFilter, SessionRecord, Store, StoreError};

const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a principal's session index lives after its last write.
const INDEX_TTL_MS: i64 = 8 * 86_400 * 1000;

/// Set the optional fields `st` (ARGV[6]), `lj` (ARGV[7]) and `lr`
/// (ARGV[8]): an empty value deletes one.
const OPTIONAL: &str = r"
local function set_optional(key, st, lj, lr)
  if st == '' then redis.call('HDEL', key, 'st') else redis.call('HSET', key, 'st', st) end
  if lj == '' then redis.call('HDEL', key, 'lj') else redis.call('HSET', key, 'lj', lj) end
  if lr == '' then redis.call('HDEL', key, 'lr') else redis.call('HSET', key, 'lr', lr) end
end
";

/// Create a session (KEYS[1]) and index it (KEYS[2]) in one step.
const CREATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'v', 0, 'd', ARGV[1])
set_optional(KEYS[1], ARGV[6], ARGV[7], ARGV[8])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 1
";

/// [`CREATE`]'s two halves, for a Redis Cluster, where the session and its
/// principal's index live in different slots: the session (KEYS[1]) …
const CREATE_SESSION: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'v', 0, 'd', ARGV[1])
set_optional(KEYS[1], ARGV[6], ARGV[7], ARGV[8])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

/// … then its index entry (KEYS[1]; ARGV as for [`CREATE`]).
const INDEX_SESSION: &str = r"
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
";

const REPLACE: &str = r"
local v = redis.call('HGET', KEYS[1], 'v')
if (not v) or tonumber(v) ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'v', tonumber(ARGV[1]) + 1, 'd', ARGV[2])
set_optional(KEYS[1], ARGV[6], ARGV[7], ARGV[8])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";

/// One step on a rate-limit bucket (the arithmetic of
/// [`super::rate::gcra`], on Redis's clock so that replicas agree). KEYS[1]:
/// the bucket; ARGV: units per minute, cost, and `t` (take if it fits), `f`
/// (take into debt) or `p` (peek: would one unit fit). Returns allowed,
/// remaining, retry-after ms and reset ms.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local window = 60000
local interval = window / tonumber(ARGV[1])
local op = ARGV[3]
local cost = tonumber(ARGV[2])
if op == 'p' then cost = 1 end
local tat = now
local stored = redis.call('GET', KEYS[1])
if stored then tat = math.max(tonumber(stored), now) end
local new = tat + cost * interval
local allowed = (new - now) <= window
local level = tat
if op == 'f' or (op == 't' and allowed) then
  level = new
  redis.call('SET', KEYS[1], string.format('%.3f', new), 'PX', math.ceil(new - now) + 1)
end
local remaining = math.floor((window - (level - now)) / interval)
if remaining < 0 then remaining = 0 end
local retry = 0
if not allowed then retry = math.ceil(new - now - window) end
return {allowed and 1 or 0, remaining, retry, math.ceil(level - now)}
";

/// Open a stream slot. KEYS[1]: the slots (ids by lease expiry); ARGV: id,
/// most slots, lease ms. Slots whose lease passed (their replica died) are
/// dropped first.
const OPEN_SLOT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
";

/// Most index entries one listing reads (newest first).
const MAX_LIST_SCAN: isize = 20_000;

/// Creating the consumer group is idempotent (`BUSYGROUP` is ignored).
const ENSURE_GROUP: &str = "redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')\n";

const ENQUEUE: &str = r"
local pending = redis.call('XPENDING', KEYS[1], ARGV[1])[1]
if redis.call('XLEN', KEYS[1]) - pending >= tonumber(ARGV[3]) then return 0 end
redis.call('XADD', KEYS[1], '*', 'job', ARGV[2])
return 1
";

const FIELD: &str = r"
local function job_field(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'job' then return fields[i + 1] end
  end
  return ''
end
";

const NEXT: &str = r"
local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1, 'STREAMS', KEYS[1], '>')
if not r then return false end
local e = r[1][2][1]
return {e[1], job_field(e[2])}
";

const RECLAIM: &str = r"
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], '0-0', 'COUNT', 1)
local e = r[2][1]
if not e then return false end
local p = redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1)
return {e[1], job_field(e[2]), p[1][4]}
";

/// Replace an execution record only if its status may move to the new one
/// (pending 0 < running 1 < complete = failed 2, terminal).
const ADVANCE: &str = r"
local d = redis.call('GET', KEYS[1])
if not d then return 0 end
local rank = {pending = 0, running = 1, complete = 2, failed = 2}
local from = rank[cjson.decode(d)['status']]
local to = rank[ARGV[2]]
if from == nil or to == nil or from >= 2 or to < from then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
";

/// Whether consumer ARGV[2] holds job ARGV[3] (it is pending for it).
const OWNS: &str = r"
local function owns()
  return #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2]) == 1
end
";

/// Renew a lease (reset its idle time) only for its holder.
const RENEW: &str = r"
if not owns() then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
";

/// Ack and delete a job only for its holder.
const ACK: &str = r"
if not owns() then return 0 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
return 1
";

/// Jobs in the stream not yet delivered to a worker (leased ones excluded).
const DEPTH: &str = r"
local pending = redis.call('XPENDING', KEYS[1], ARGV[1])[1]
return redis.call('XLEN', KEYS[1]) - pending
";

const GROUP: &str = "workers";

const CLAIM: &str = r"
local a = redis.call('HGET', KEYS[1], 'a')
if not a then
  redis.call('HSET', KEYS[1], 'a', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {'new', ''}
end
if a ~= ARGV[1] then return {'conflict', ''} end
local r = redis.call('HGET', KEYS[1], 'r')
if not r then return {'pending', ''} end
return {'repeat', r}
";

pub struct RedisStore {
    client: Client,
    prefix: String,
    conn: std::sync::Mutex<Conn>,
    /// Held by the one caller making a connection; the others wait at most
    /// for that attempt (bounded), never for a queue of them.
    connecting: Mutex<()>,
}

/// A single primary, a primary found through Redis Sentinel, or a Redis Cluster.
enum Client {
    Single(redis::Client),
    Sentinel(Box<Mutex<redis::sentinel::SentinelClient>>),
    Cluster(Box<redis::cluster::ClusterClient>),
}

/// A connection to either kind of deployment: the single-primary connection
/// manager (reconnects by itself), or the cluster connection (routes each
/// command by its key's slot, follows MOVED and ASK, reconnects to nodes).
#[derive(Clone)]
pub(crate) enum Connection {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Connection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(cmd, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// The connection, or when the last attempt to make one failed.
#[derive(Default)]
struct Conn {
    connection: Option<Connection>,
    failed_at: Option<tokio::time::Instant>,
}

/// After a failed connect, calls fail at once for this long instead of each
/// trying again: an outage costs callers nothing but an error.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never print it.
        let topology = match self.client {
            Client::Single(_) => "single",
            Client::Sentinel(_) => "sentinel",
            Client::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("topology", &topology)
            .finish()
    }
}

/// The connection manager's bounds: a short connect, the operation timeout,
/// and `retries` reconnects before an error.
fn manager_config(retries: usize) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(OP_TIMEOUT))
        .set_number_of_retries(retries)
        .set_max_delay(Duration::from_millis(500))
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// ARGV of [`CREATE`]: data, ttl ms, created at, id, index ttl ms, st, lj, lr.
type CreateArgs = (String, i64, i64, String, i64, String, String, String);

fn ttl_ms(expires_at: i64, now: i64) -> i64 {
    ((expires_at - now) * 1000).max(1)
}

impl RedisStore {
    /// A store for one primary at `url` (`redis://` or `rediss://`,
    /// credentials in the URL); no I/O yet.
    pub fn new(url: &str, prefix: &str) -> Result<Self, StoreError> {
        Self::open(&[url.to_owned()], false, prefix)
    }

    /// A store for `nodes`: one primary, or with `cluster` (or several
    /// nodes) the seed nodes of a Redis Cluster. No I/O yet.
    pub fn open(nodes: &[String], cluster: bool, prefix: &str) -> Result<Self, StoreError> {
        Self::open_with(nodes, cluster, None, prefix)
    }

    /// [`open`](Self::open), or with `sentinel_master` the Sentinels at
    /// `nodes` that name the primary of that master group. The primary is
    /// asked for on connect and again after any failure, so a failover moves
    /// the store to the new primary. It uses the credentials, database and
    /// TLS of the first URL.
    pub fn open_with(
        nodes: &[String],
        cluster: bool,
        sentinel_master: Option<&str>,
        prefix: &str,
    ) -> Result<Self, StoreError> {
        let invalid = |_| StoreError::Unavailable("invalid Redis URL".into());
        let client = if let Some(master) = sentinel_master {
            use redis::IntoConnectionInfo;
            let first = nodes
                .first()
                .map(String::as_str)
                .unwrap_or_default()
                .into_connection_info()
                .map_err(invalid)?;
            let mut node = redis::sentinel::SentinelNodeConnectionInfo::default()
                .set_redis_connection_info(first.redis_settings().clone());
            if let redis::ConnectionAddr::TcpTls { insecure, .. } = first.addr() {
                node = node.set_tls_mode(if *insecure {
                    redis::TlsMode::Insecure
                } else {
                    redis::TlsMode::Secure
                });
            }
            Client::Sentinel(Box::new(Mutex::new(
                redis::sentinel::SentinelClient::build(
                    nodes.iter().map(String::as_str).collect(),
                    master.to_owned(),
                    Some(node),
                    redis::sentinel::SentinelServerType::Master,
                )
                .map_err(invalid)?,
            )))
        } else if cluster || nodes.len() > 1 {
            Client::Cluster(Box::new(
                redis::cluster::ClusterClient::builder(nodes.iter().map(String::as_str))
                    .connection_timeout(Duration::from_millis(500))
                    .response_timeout(OP_TIMEOUT)
                    .retries(2)
                    .build()
                    .map_err(invalid)?,
            ))
        } else {
            let url = nodes.first().map(String::as_str).unwrap_or_default();
            Client::Single(redis::Client::open(url).map_err(invalid)?)
        };
        Ok(Self {
            client,
            prefix: prefix.to_owned(),
            conn: std::sync::Mutex::new(Conn::default()),
            connecting: Mutex::new(()),
        })
    }

    fn is_cluster(&self) -> bool {
        matches!(self.client, Client::Cluster(_))
    }

    /// The connection if there is one; `Err` while a recent connect failed.
    fn current(&self) -> Result<Option<Connection>, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = &conn.connection {
            return Ok(Some(c.clone()));
        }
        if conn
            .failed_at
            .is_some_and(|at| at.elapsed() < RECONNECT_AFTER)
        {
            return Err(unavailable("not connected (the last attempt failed)"));
        }
        Ok(None)
    }

    /// The shared connection, made on first use. No lock is held across the
    /// connect that callers other than the one connecting would queue behind
    /// for longer than that one (bounded) attempt.
    async fn conn(&self) -> Result<Connection, StoreError> {
        if let Some(c) = self.current()? {
            return Ok(c);
        }
        let _one = tokio::time::timeout(OP_TIMEOUT, self.connecting.lock())
            .await
            .map_err(|_| unavailable("connect timed out"))?;
        // Another caller may have connected (or failed) while this one waited.
        if let Some(c) = self.current()? {
            return Ok(c);
        }
        let result = self.connect().await;
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Ok(c) => {
                conn.connection = Some(c.clone());
                conn.failed_at = None;
            }
            Err(_) => conn.failed_at = Some(tokio::time::Instant::now()),
        }
        result
    }

    async fn connect(&self) -> Result<Connection, StoreError> {
        let connect = async {
            match &self.client {
                Client::Single(client) => client
                    .get_connection_manager_with_config(manager_config(1))
                    .await
                    .map(Connection::Single),
                // No reconnecting to a primary that may be gone: a failure
                // asks the Sentinels again (`forget_primary`).
                Client::Sentinel(sentinel) => {
                    let primary = sentinel.lock().await.async_get_client().await?;
                    primary
                        .get_connection_manager_with_config(manager_config(0))
                        .await
                        .map(Connection::Single)
                }
                Client::Cluster(client) => {
                    client.get_async_connection().await.map(Connection::Cluster)
                }
            }
        };
        tokio::time::timeout(OP_TIMEOUT, connect)
            .await
            .map_err(|_| unavailable("connect timed out"))?
            .map_err(unavailable)
    }

    /// Run one Redis operation under the timeout.
    async fn run<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.conn().await?;
        match tokio::time::timeout(OP_TIMEOUT, op(conn)).await {
            Err(_) => {
                self.forget_primary();
                Err(unavailable("operation timed out"))
            }
            Ok(Err(e)) => {
                if e.is_io_error()
                    || e.is_connection_refusal()
                    || e.is_connection_dropped()
                    || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
                {
                    self.forget_primary();
                }
                Err(unavailable(e))
            }
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// Behind Sentinel, drop the connection after a failure that may mean a
    /// failover (the primary gone, or now a read-only replica): the next call
    /// asks the Sentinels for the primary again.
    fn forget_primary(&self) {
        if matches!(self.client, Client::Sentinel(_)) {
            let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
            conn.connection = None;
        }
    }

    /// Run `script` (RENEW or ACK) on `lease` for `consumer`; `Conflict` when
    /// another consumer holds the job now.
    async fn owned(&self, script: &str, consumer: &str, lease: &Lease) -> Result<(), StoreError> {
        let (key, consumer, id) = (self.jobs_key(), consumer.to_owned(), lease.id.clone());
        let script = Script::new(&format!("{OWNS}{script}"));
        let done: i64 = self
            .run(|mut c| async move {
                script
                    .key(key)
                    .arg(GROUP)
                    .arg(consumer)
                    .arg(id)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        if done == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict)
        }
    }

    fn session_key(&self, id: &str) -> String {
        format!("{}:s:{id}", self.prefix)
    }

    fn index_key(&self, org: &str, subject: &str) -> String {
        format!("{}:i:{org}\u{0}{subject}", self.prefix)
    }

    fn execution_key(&self, id: &str) -> String {
        format!("{}:e:{id}", self.prefix)
    }

    /// Run [`GCRA`] on the bucket `key`.
    async fn gcra(
        &self,
        key: &str,
        per_minute: u64,
        cost: u64,
        op: &'static str,
    ) -> Result<Bucket, StoreError> {
        let k = format!("{}:rl:{key}", self.prefix);
        let (allowed, remaining, retry, reset): (i64, i64, i64, i64) = self
            .run(|mut c| async move {
                Script::new(GCRA)
                    .key(k)
                    .arg(per_minute.max(1))
                    .arg(cost)
                    .arg(op)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let ms = |v: i64| Duration::from_millis(v.max(0) as u64);
        Ok(Bucket {
            allowed: allowed == 1,
            remaining: remaining.max(0) as u64,
            retry_after: ms(retry),
            reset: ms(reset),
        })
    }

    fn once_key(&self, key: &str) -> String {
        format!("{}:o:{key}", self.prefix)
    }

    fn jobs_key(&self) -> String {
        format!("{}:jobs", self.prefix)
    }

    fn decode(v: Option<u64>, d: Option<String>) -> Result<Option<SessionRecord>, StoreError> {
        let (Some(v), Some(d)) = (v, d) else {
            return Ok(None);
        };
        let mut rec: SessionRecord = serde_json::from_str(&d)
            .map_err(|e| unavailable(format!("corrupt session record: {e}")))?;
        rec.version = v;
        Ok(Some(rec))
    }

    /// A whole record from its fields (records written before the state had
    /// its own field keep it inside `d`).
    fn decode_full(
        v: Option<u64>,
        d: Option<String>,
        st: Option<String>,
        lj: Option<String>,
        lr: Option<String>,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let Some(mut rec) = Self::decode(v, d)? else {
            return Ok(None);
        };
        if st.is_some() {
            rec.sealed = st;
        }
        let pair = |field: String| -> Result<(String, String), StoreError> {
            serde_json::from_str(&field)
                .map_err(|e| unavailable(format!("corrupt session record: {e}")))
        };
        if let Some(lj) = lj {
            rec.last_job = Some(pair(lj)?);
        }
        if let Some(lr) = lr {
            rec.last_response = Some(pair(lr)?);
        }
        Ok(Some(rec))
    }
}

fn encode<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| unavailable(format!("encoding: {e}")))
}

/// A session's fields: its metadata JSON (without the large fields, so
/// that listing reads little), the state, the last job's result and the
/// last keyed turn's response ('' when absent). The response has a field of
/// its own, which versions before it neither read nor remove.
fn encode_session(mut rec: SessionRecord) -> Result<(String, String, String, String), StoreError> {
    let st = rec.sealed.take().unwrap_or_default();
    let pair = |p: Option<(String, String)>| p.map_or(Ok(String::new()), |p| encode(&p));
    let lj = pair(rec.last_job.take())?;
    let lr = pair(rec.last_response.take())?;
    Ok((encode(&rec)?, st, lj, lr))
}

#[async_trait::async_trait]
impl Store for RedisStore {
    async fn create_session(&self, rec: SessionRecord, now: i64) -> Result<(), StoreError> {
        let (key, index) = (
            self.session_key(&rec.id),
            self.index_key(&rec.org, &rec.subject),
        );
        let (ttl, created_at, id) = (ttl_ms(rec.expires_at, now), rec.created_at, rec.id.clone());
        let (data, st, lj, lr) = encode_session(rec)?;
        // ARGV of CREATE and its halves.
        let argv = (data, ttl, created_at, id, INDEX_TTL_MS, st, lj, lr);
        fn args(call: &mut redis::ScriptInvocation<'_>, v: &CreateArgs) {
            call.arg(&v.0)
                .arg(v.1)
                .arg(v.2)
                .arg(&v.3)
                .arg(v.4)
                .arg(&v.5)
                .arg(&v.6)
                .arg(&v.7);
        }
        let created: i64 = if self.is_cluster() {
            // Two slots: the session first, then its index entry. A session
            // left unindexed by a failure in between is removed again (or
            // expires); an index entry without its session is skipped and
            // pruned by listing.
            let (key2, argv2) = (key.clone(), argv.clone());
            let created: i64 = self
                .run(|mut c| async move {
                    let script = Script::new(&format!("{OPTIONAL}{CREATE_SESSION}"));
                    let mut call = script.key(key2);
                    args(&mut call, &argv2);
                    call.invoke_async(&mut c).await
                })
                .await?;
            if created == 1 {
                let indexed: Result<i64, _> = self
                    .run(|mut c| async move {
                        let script = Script::new(INDEX_SESSION);
                        let mut call = script.key(index);
                        args(&mut call, &argv);
                        call.invoke_async(&mut c).await
                    })
                    .await;
                if let Err(e) = indexed {
                    let _ = self
                        .run(|mut c| async move { c.del::<_, i64>(key).await })
                        .await;
                    return Err(e);
                }
            }
            created
        } else {
            self.run(|mut c| async move {
                let script = Script::new(&format!("{OPTIONAL}{CREATE}"));
                let mut call = script.key(key);
                call.key(index);
                args(&mut call, &argv);
                call.invoke_async(&mut c).await
            })
            .await?
        };
        if created == 1 {
            Ok(())
        } else {
            Err(StoreError::Exists)
        }
    }

    async fn get_session(&self, id: &str, now: i64) -> Result<Option<SessionRecord>, StoreError> {
        let key = self.session_key(id);
        type Fields = (
            Option<u64>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let (v, d, st, lj, lr): Fields = self
            .run(|mut c| async move {
                redis::cmd("HMGET")
                    .arg(key)
                    .arg("v")
                    .arg("d")
                    .arg("st")
                    .arg("lj")
                    .arg("lr")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(Self::decode_full(v, d, st, lj, lr)?.filter(|s| s.expires_at > now))
    }

    async fn replace_session(
        &self,
        rec: SessionRecord,
        expected: u64,
        now: i64,
    ) -> Result<(), StoreError> {
        let key = self.session_key(&rec.id);
        let ttl = ttl_ms(rec.expires_at, now);
        let (data, st, lj, lr) = encode_session(rec)?;
        let replaced: i64 = self
            .run(|mut c| async move {
                Script::new(&format!("{OPTIONAL}{REPLACE}"))
                    .key(key)
                    .arg(expected)
                    .arg(data)
                    .arg(ttl)
                    .arg("")
                    .arg("")
                    .arg(st)
                    .arg(lj)
                    .arg(lr)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        if replaced == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict)
        }
    }

    async fn delete_session(&self, id: &str) -> Result<bool, StoreError> {
        let Some(rec) = self.get_session(id, i64::MIN).await? else {
            return Ok(false);
        };
        let (key, index, member) = (
            self.session_key(id),
            self.index_key(&rec.org, &rec.subject),
            id.to_owned(),
        );
        let removed: i64 = self
            .run(|mut c| async move {
                let removed: i64 = c.del(key).await?;
                let _: i64 = c.zrem(index, member).await?;
                Ok(removed)
            })
            .await?;
        Ok(removed == 1)
    }

    async fn list_sessions(
        &self,
        f: &SessionFilter,
        now: i64,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let index = self.index_key(&f.org, &f.subject);
        let mut found = Vec::new();
        let mut stale = Vec::new();
        let mut matched = 0usize;
        let mut start: isize = 0;
        'pages: while start < MAX_LIST_SCAN {
            let (idx, stop) = (index.clone(), start + 99);
            let ids: Vec<String> = self
                .run(|mut c| async move { c.zrevrange(idx, start, stop).await })
                .await?;
            if ids.is_empty() {
                break;
            }
            start += ids.len() as isize;
            let keys: Vec<String> = ids.iter().map(|id| self.session_key(id)).collect();
            let cluster = self.is_cluster();
            let rows: Vec<(Option<u64>, Option<String>)> = self
                .run(|mut c| async move {
                    if cluster {
                        // The sessions live in many slots: one request each,
                        // sent together (a pipeline must stay in one slot).
                        let reads = keys.iter().map(|k| {
                            let mut c = c.clone();
                            async move {
                                redis::cmd("HMGET")
                                    .arg(k)
                                    .arg("v")
                                    .arg("d")
                                    .query_async::<(Option<u64>, Option<String>)>(&mut c)
                                    .await
                            }
                        });
                        futures_util::future::try_join_all(reads).await
                    } else {
                        let mut pipe = redis::pipe();
                        for k in &keys {
                            pipe.cmd("HMGET").arg(k).arg("v").arg("d");
                        }
                        pipe.query_async(&mut c).await
                    }
                })
                .await?;
            for (id, (v, d)) in ids.iter().zip(rows) {
                match Self::decode(v, d)? {
                    None => stale.push(id.clone()),
                    Some(s) if f.matches(&s, now) => {
                        matched += 1;
                        if matched > f.offset {
                            found.push(s);
                            if found.len() == f.limit {
                                break 'pages;
                            }
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        if !stale.is_empty() {
            let _ = self
                .run(|mut c| async move {
                    let n: i64 = c.zrem(index, stale).await?;
                    Ok(n)
                })
                .await;
        }
        Ok(found)
    }

    async fn put_execution(&self, rec: ExecutionRecord, now: i64) -> Result<(), StoreError> {
        let data = encode(&rec)?;
        let key = self.execution_key(&rec.id);
        let ttl = ttl_ms(rec.expires_at, now) as u64;
        self.run(|mut c| async move {
            let _: () = c.pset_ex(key, data, ttl).await?;
            Ok(())
        })
        .await
    }

    async fn advance_execution(&self, rec: ExecutionRecord, now: i64) -> Result<bool, StoreError> {
        let data = encode(&rec)?;
        let key = self.execution_key(&rec.id);
        let ttl = ttl_ms(rec.expires_at, now);
        let status = rec.status.as_str();
        let done: i64 = self
            .run(|mut c| async move {
                Script::new(ADVANCE)
                    .key(key)
                    .arg(data)
                    .arg(status)
                    .arg(ttl)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(done == 1)
    }

    async fn get_execution(
        &self,
        id: &str,
        now: i64,
    ) -> Result<Option<ExecutionRecord>, StoreError> {
        let key = self.execution_key(id);
        let data: Option<String> = self.run(|mut c| async move { c.get(key).await }).await?;
        match data {
            None => Ok(None),
            Some(d) => {
                let rec: ExecutionRecord = serde_json::from_str(&d)
                    .map_err(|e| unavailable(format!("corrupt execution record: {e}")))?;
                Ok(Some(rec).filter(|r| r.expires_at > now))
            }
        }
    }

    async fn delete_execution(&self, id: &str) -> Result<(), StoreError> {
        let key = self.execution_key(id);
        self.run(|mut c| async move {
            let _: i64 = c.del(key).await?;
            Ok(())
        })
        .await
    }

    async fn enqueue(&self, payload: String, max_queued: usize) -> Result<(), StoreError> {
        let key = self.jobs_key();
        let queued: i64 = self
            .run(|mut c| async move {
                Script::new(&format!("{ENSURE_GROUP}{ENQUEUE}"))
                    .key(key)
                    .arg(GROUP)
                    .arg(payload)
                    .arg(max_queued)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        if queued == 1 {
            Ok(())
        } else {
            Err(StoreError::Full)
        }
    }

    async fn next_job(&self, consumer: &str, wait: Duration) -> Result<Option<Lease>, StoreError> {
        // Polled without BLOCK: a blocked command would stall the shared multiplexed connection.
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let (key, consumer) = (self.jobs_key(), consumer.to_owned());
            let next: Option<(String, String)> = self
                .run(|mut c| async move {
                    Script::new(&format!("{ENSURE_GROUP}{FIELD}{NEXT}"))
                        .key(key)
                        .arg(GROUP)
                        .arg(consumer)
                        .invoke_async(&mut c)
                        .await
                })
                .await?;
            if let Some((id, payload)) = next {
                return Ok(Some(Lease {
                    id,
                    payload,
                    deliveries: 1,
                }));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            tokio::time::sleep((deadline - now).min(Duration::from_millis(200))).await;
        }
    }

    async fn renew(&self, consumer: &str, lease: &Lease) -> Result<(), StoreError> {
        self.owned(RENEW, consumer, lease).await
    }

    async fn ack(&self, consumer: &str, lease: &Lease) -> Result<(), StoreError> {
        self.owned(ACK, consumer, lease).await
    }

    async fn reclaim(
        &self,
        consumer: &str,
        min_idle: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let (key, consumer) = (self.jobs_key(), consumer.to_owned());
        let idle_ms = min_idle.as_millis() as u64;
        let claimed: Option<(String, String, u64)> = self
            .run(|mut c| async move {
                Script::new(&format!("{ENSURE_GROUP}{FIELD}{RECLAIM}"))
                    .key(key)
                    .arg(GROUP)
                    .arg(consumer)
                    .arg(idle_ms)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(claimed.map(|(id, payload, deliveries)| Lease {
            id,
            payload,
            deliveries,
        }))
    }

    async fn claim_once(
        &self,
        key: &str,
        answer: &str,
        ttl_secs: u64,
        _now: i64,
    ) -> Result<Claim, StoreError> {
        let (k, answer) = (self.once_key(key), answer.to_owned());
        let (state, result): (String, String) = self
            .run(|mut c| async move {
                Script::new(CLAIM)
                    .key(k)
                    .arg(answer)
                    .arg(ttl_secs * 1000)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(match state.as_str() {
            "new" => Claim::New,
            "conflict" => Claim::Conflict,
            "pending" => Claim::Repeat(None),
            _ => Claim::Repeat(Some(result)),
        })
    }

    async fn finish_once(
        &self,
        key: &str,
        result: String,
        ttl_secs: u64,
        _now: i64,
    ) -> Result<(), StoreError> {
        let k = self.once_key(key);
        self.run(|mut c| async move {
            let _: i64 = c.hset(&k, "r", result).await?;
            let _: i64 = c.pexpire(&k, (ttl_secs * 1000) as i64).await?;
            Ok(())
        })
        .await
    }

    async fn release_once(&self, key: &str) -> Result<(), StoreError> {
        let k = self.once_key(key);
        self.run(|mut c| async move {
            let _: i64 = c.del(k).await?;
            Ok(())
        })
        .await
    }

    async fn queue_depth(&self) -> Result<u64, StoreError> {
        let key = self.jobs_key();
        let waiting: i64 = self
            .run(|mut c| async move {
                Script::new(&format!("{ENSURE_GROUP}{DEPTH}"))
                    .key(key)
                    .arg(GROUP)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(waiting.max(0) as u64)
    }

    async fn count_request(&self, key: &str, per_minute: u64) -> Result<Bucket, StoreError> {
        self.gcra(key, per_minute, 1, "t").await
    }

    async fn meter_tokens(
        &self,
        key: &str,
        per_minute: u64,
        how: Tokens,
    ) -> Result<Bucket, StoreError> {
        match how {
            Tokens::Peek => self.gcra(key, per_minute, 1, "p").await,
            Tokens::Charge(n) => self.gcra(key, per_minute, n, "f").await,
        }
    }

    async fn open_slot(
        &self,
        key: &str,
        id: &str,
        max: u64,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let (k, id) = (format!("{}:sl:{key}", self.prefix), id.to_owned());
        let lease_ms = lease.as_millis().max(1) as u64;
        let opened: i64 = self
            .run(|mut c| async move {
                Script::new(OPEN_SLOT)
                    .key(k)
                    .arg(id)
                    .arg(max)
                    .arg(lease_ms)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(opened == 1)
    }

    async fn close_slot(&self, key: &str, id: &str) -> Result<(), StoreError> {
        let (k, id) = (format!("{}:sl:{key}", self.prefix), id.to_owned());
        self.run(|mut c| async move {
            let _: i64 = c.zrem(k, id).await?;
            Ok(())
        })
        .await
    }

    async fn health(&self) -> (&'static str, bool) {
        let ping =
            self.run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await });
        let up = matches!(
            tokio::time::timeout(Duration::from_millis(500), ping).await,
            Ok(Ok(_))
        );
        ("redis", up)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> SessionRecord {
        serde_json::from_value(serde_json::json!({
            "id": "s", "org": "o", "agent_id": "a", "subject": "u", "user_id": null,
            "session_group": null, "metadata": null, "title": "", "model": "", "status": "active",
            "created_at": 1, "updated_at": 1, "expires_at": 2, "message_count": 0,
            "total_tokens": 0, "sealed": null, "version": 0
        }))
        .unwrap()
    }

    /// The job's result and the keyed response each in a field of their
    /// own, out of `d`, the job's as earlier versions wrote and read it.
    #[test]
    fn large_fields_are_kept_apart_and_read_back() {
        let job = ("job-1".to_owned(), "sealed-result".to_owned());
        let response = ("idem:k:f".to_owned(), "sealed-response".to_owned());
        for (last_job, last_response) in [
            (None, None),
            (Some(job.clone()), None),
            (None, Some(response.clone())),
            (Some(job.clone()), Some(response.clone())),
        ] {
            let mut rec = record();
            rec.last_job.clone_from(&last_job);
            rec.last_response.clone_from(&last_response);
            let (d, st, lj, lr) = encode_session(rec).unwrap();
            assert!(!d.contains("sealed-"), "large fields stay out of d: {d}");
            let old: Option<(String, String)> =
                (!lj.is_empty()).then(|| serde_json::from_str(&lj).unwrap());
            assert_eq!(old, last_job, "lj is the job's pair alone");
            let some = |f: String| (!f.is_empty()).then_some(f);
            let back = RedisStore::decode_full(Some(3), Some(d), Some(st), some(lj), some(lr))
                .unwrap()
                .unwrap();
            assert_eq!(
                (back.last_job, back.last_response),
                (last_job, last_response)
            );
        }
    }
}
