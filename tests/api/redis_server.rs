//! A real `redis-server` process on a free loopback port, stopped on drop.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How many times a server (or cluster) is started on newly chosen ports
/// when one exits at once: a port chosen free can be taken (by any
/// process's outgoing connection) before redis-server binds it.
const START_ATTEMPTS: u32 = 5;

/// Whether every node answers `PING`, polling up to 10 s; `false` as soon as
/// one has exited (it could not bind its port).
async fn serving(nodes: &mut [Child], ports: &[u16]) -> bool {
    for _ in 0..200 {
        if nodes
            .iter_mut()
            .any(|n| matches!(n.try_wait(), Ok(Some(_))))
        {
            return false;
        }
        let mut all = true;
        for &port in ports {
            if !query(port, &["PING"])
                .await
                .is_some_and(|v| text(&v).contains("PONG"))
            {
                all = false;
                break;
            }
        }
        if all {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn stop(nodes: &mut [Child]) {
    for n in nodes {
        let _ = n.kill();
        let _ = n.wait();
    }
}

/// `n` distinct free ports (held until all are chosen, then released).
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// Three distinct free ports, each with its cluster bus port (+10000) free too.
fn cluster_ports() -> Vec<u16> {
    loop {
        let ports = free_ports(3);
        let bus_free = ports.iter().all(|&p| {
            p <= 55_535 && std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok()
        });
        if bus_free {
            return ports;
        }
    }
}

impl RedisServer {
    pub async fn start() -> Self {
        for _ in 1..START_ATTEMPTS {
            let (port, dir) = (free_port(), tempfile::tempdir().unwrap());
            let mut child = Self::spawn(port, &dir);
            if serving(std::slice::from_mut(&mut child), &[port]).await {
                return Self {
                    child: Some(child),
                    port,
                    dir,
                };
            }
            stop(std::slice::from_mut(&mut child));
        }
        Self::start_on(free_port(), tempfile::tempdir().unwrap()).await
    }

    fn spawn(port: u16, dir: &tempfile::TempDir) -> Child {
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)")
    }

    /// Start on `port` (a restart keeps its port), waiting until it answers.
    async fn start_on(port: u16, dir: tempfile::TempDir) -> Self {
        let child = Self::spawn(port, &dir);
        let server = Self {
            child: Some(child),
            port,
            dir,
        };
        until(port, &["PING"], "PONG", 100).await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kill the server (SIGKILL) and wait for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start a fresh server on the same port.
    pub async fn restart(mut self) -> Self {
        self.kill();
        let port = self.port;
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        Self::start_on(port, dir).await
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A real Redis Cluster of three primaries (`redis-server --cluster-enabled
/// yes` three times, joined by `redis-cli --cluster create`), stopped on drop.
pub struct RedisCluster {
    nodes: Vec<Child>,
    pub ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    pub async fn start() -> Self {
        for attempt in 1..=START_ATTEMPTS {
            let dir = tempfile::tempdir().unwrap();
            let ports = cluster_ports();
            let mut nodes = Self::spawn(&ports, &dir);
            if serving(&mut nodes, &ports).await {
                return Self::join(Self {
                    nodes,
                    ports,
                    _dir: dir,
                })
                .await;
            }
            stop(&mut nodes);
            eprintln!(
                "redis cluster, attempt {attempt}: a node exited (its port was taken); new ports"
            );
        }
        panic!("no Redis Cluster started in {START_ATTEMPTS} attempts");
    }

    fn spawn(ports: &[u16], dir: &tempfile::TempDir) -> Vec<Child> {
        let mut nodes = Vec::new();
        for port in ports {
            let node_dir = dir.path().join(port.to_string());
            std::fs::create_dir_all(&node_dir).unwrap();
            nodes.push(
                Command::new("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args([
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                    ])
                    .args([
                        "--cluster-node-timeout",
                        "2000",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ])
                    .arg("--dir")
                    .arg(&node_dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("redis-server must be installed (scripts/test.sh installs it)"),
            );
        }
        nodes
    }

    /// Join the running nodes into one cluster and wait until all agree.
    async fn join(cluster: Self) -> Self {
        let addresses: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let out = tokio::process::Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .await
            .expect("redis-cli must be installed (it comes with redis-server)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Every node must agree the cluster is up before clients use it.
        for port in &cluster.ports {
            until(*port, &["CLUSTER", "INFO"], "cluster_state:ok", 200).await;
        }
        cluster
    }

    /// The seed nodes as `[store] url`: comma-separated, which selects the cluster client.
    pub fn url(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for mut node in self.nodes.drain(..) {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

/// A primary, one replica and one Sentinel watching them as `mymaster`
/// (quorum 1, a primary is down after 1 s), stopped on drop.
pub struct RedisSentinel {
    primary: Option<Child>,
    others: Vec<Child>,
    pub primary_port: u16,
    pub replica_port: u16,
    pub sentinel_port: u16,
    _dir: tempfile::TempDir,
}

async fn query(port: u16, args: &[&str]) -> Option<redis::Value> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
    let mut c = client.get_multiplexed_async_connection().await.ok()?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async::<redis::Value>(&mut c).await.ok()
}

fn text(v: &redis::Value) -> String {
    match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::VerbatimString { text, .. } => text.clone(),
        redis::Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(" "),
        other => format!("{other:?}"),
    }
}

/// Poll until `args` on `port` answers text containing `want`, at most
/// `tries` times, 50 ms apart.
async fn until(port: u16, args: &[&str], want: &str, tries: u32) {
    for _ in 0..tries {
        if let Some(v) = query(port, args).await
            && text(&v).contains(want)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{args:?} on port {port} never answered with {want:?}");
}

impl RedisSentinel {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ports = free_ports(3);
        let (primary_port, replica_port, sentinel_port) = (ports[0], ports[1], ports[2]);
        let server = |port: u16, extra: &[String]| {
            let node_dir = dir.path().join(port.to_string());
            std::fs::create_dir_all(&node_dir).unwrap();
            Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&node_dir)
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (scripts/test.sh installs it)")
        };
        let primary = server(primary_port, &[]);
        let replica = server(
            replica_port,
            &[
                "--replicaof".into(),
                "127.0.0.1".into(),
                primary_port.to_string(),
            ],
        );
        until(
            replica_port,
            &["INFO", "replication"],
            "master_link_status:up",
            600,
        )
        .await;
        // Sentinel rewrites its config file, so it gets its own copy.
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\n\
                 sentinel monitor mymaster 127.0.0.1 {primary_port} 1\n\
                 sentinel down-after-milliseconds mymaster 1000\n\
                 sentinel failover-timeout mymaster 5000\n"
            ),
        )
        .unwrap();
        let sentinel = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let me = Self {
            primary: Some(primary),
            others: vec![replica, sentinel],
            primary_port,
            replica_port,
            sentinel_port,
            _dir: dir,
        };
        // A failover needs the Sentinel to know the replica (from the primary's INFO).
        until(
            sentinel_port,
            &["SENTINEL", "REPLICAS", "mymaster"],
            &replica_port.to_string(),
            600,
        )
        .await;
        me
    }

    /// `[store] url`: the Sentinel.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.sentinel_port)
    }

    /// Wait until the replica has every write made so far, then SIGKILL the
    /// primary and wait until the Sentinel names the replica as the primary.
    pub async fn fail_over(&mut self) {
        let acked = query(self.primary_port, &["WAIT", "1", "5000"]).await;
        assert_eq!(
            acked,
            Some(redis::Value::Int(1)),
            "the replica has the writes"
        );
        if let Some(mut p) = self.primary.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
        until(
            self.sentinel_port,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"],
            &self.replica_port.to_string(),
            600,
        )
        .await;
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        for mut p in self.primary.take().into_iter().chain(self.others.drain(..)) {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}
