//! Private Redis topologies for the failover tests: a master with a replica
//! watched by three sentinels, and a Redis Cluster of three masters with a
//! replica each. Every process runs on a free loopback port in a temporary
//! directory and is killed when its handle drops; the shared Redis on 6379
//! is never touched.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One `redis-server` (or sentinel) process.
pub struct Node {
    child: Option<Child>,
    pub port: u16,
}

impl Node {
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: the process is gone at once, as a crashed host.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn have_redis() -> bool {
    ["redis-server", "redis-sentinel", "redis-cli"]
        .iter()
        .all(|c| {
            Command::new(c)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        })
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16) {
    let until = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn(program: &str, config: &Path, port: u16) -> Node {
    let child = Command::new(program)
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {program}: {e}"));
    wait_port(port);
    Node {
        child: Some(child),
        port,
    }
}

/// Starts a redis-server from a config file with `lines` added.
fn server(dir: &Path, name: &str, lines: &[String]) -> Node {
    let port = free_port();
    let home = dir.join(name);
    std::fs::create_dir_all(&home).unwrap();
    let mut conf = format!(
        "port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndir {}\n",
        home.display()
    );
    for l in lines {
        conf.push_str(l);
        conf.push('\n');
    }
    let file = home.join("redis.conf");
    std::fs::write(&file, conf).unwrap();
    spawn("redis-server", &file, port)
}

/// Runs redis-cli and returns its standard output.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub const MASTER_NAME: &str = "popgate-test";

/// A master, its replica and three sentinels (quorum 2) that fail over
/// after the master is unreachable for one second.
pub struct SentinelSet {
    pub master: Node,
    pub replica: Node,
    pub sentinels: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl SentinelSet {
    pub fn start() -> SentinelSet {
        let dir = tempfile::tempdir().unwrap();
        let master = server(dir.path(), "master", &[]);
        let replica = server(
            dir.path(),
            "replica",
            &[format!("replicaof 127.0.0.1 {}", master.port)],
        );
        wait_for("the replica to sync", Duration::from_secs(20), || {
            cli(replica.port, &["info", "replication"]).contains("master_link_status:up")
        });
        let sentinels = (0..3)
            .map(|i| {
                let port = free_port();
                let home = dir.path().join(format!("sentinel{i}"));
                std::fs::create_dir_all(&home).unwrap();
                let file = home.join("sentinel.conf");
                std::fs::write(
                    &file,
                    format!(
                        "port {port}\nbind 127.0.0.1\ndir {home}\n\
                         sentinel monitor {MASTER_NAME} 127.0.0.1 {m} 2\n\
                         sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                         sentinel failover-timeout {MASTER_NAME} 4000\n\
                         sentinel parallel-syncs {MASTER_NAME} 1\n",
                        home = home.display(),
                        m = master.port
                    ),
                )
                .unwrap();
                spawn("redis-sentinel", &file, port)
            })
            .collect::<Vec<_>>();
        for s in &sentinels {
            wait_for(
                "the sentinels to see each other and the replica",
                Duration::from_secs(30),
                || {
                    let info = cli(s.port, &["sentinel", "master", MASTER_NAME]);
                    let field = |name: &str| {
                        let mut lines = info.lines();
                        while let Some(l) = lines.next() {
                            if l == name {
                                return lines.next().unwrap_or("").to_string();
                            }
                        }
                        String::new()
                    };
                    field("num-other-sentinels") == "2" && field("num-slaves") == "1"
                },
            );
        }
        SentinelSet {
            master,
            replica,
            sentinels,
            _dir: dir,
        }
    }

    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels.iter().map(Node::url).collect()
    }

    /// The port the sentinels now name as master.
    pub fn master_port(&self) -> Option<u16> {
        let out = cli(
            self.sentinels[0].port,
            &["sentinel", "get-master-addr-by-name", MASTER_NAME],
        );
        out.lines().nth(1)?.trim().parse().ok()
    }
}

/// Three masters, each with one replica, `cluster-node-timeout` one second.
pub struct Cluster {
    pub nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let nodes: Vec<Node> = (0..6)
            .map(|i| {
                server(
                    dir.path(),
                    &format!("node{i}"),
                    &[
                        "cluster-enabled yes".into(),
                        "cluster-config-file nodes.conf".into(),
                        "cluster-node-timeout 1000".into(),
                    ],
                )
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "1", "--cluster-yes"]);
        let out = Command::new("redis-cli")
            .args(&args)
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for n in &nodes {
            wait_for("the cluster to be ok", Duration::from_secs(30), || {
                cli(n.port, &["cluster", "info"]).contains("cluster_state:ok")
            });
        }
        // A replica can take over only once it has synced with its master.
        wait_for("every replica to sync", Duration::from_secs(30), || {
            let synced = nodes
                .iter()
                .filter(|n| {
                    let info = cli(n.port, &["info", "replication"]);
                    info.contains("role:slave") && info.contains("master_link_status:up")
                })
                .count();
            synced == 3
        });
        Cluster { nodes, _dir: dir }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    /// The index of the master node serving `key`.
    pub fn master_of(&self, key: &str) -> usize {
        let ask = 0;
        let slot: u16 = cli(self.nodes[ask].port, &["cluster", "keyslot", key])
            .trim()
            .parse()
            .unwrap();
        let shards = cli(self.nodes[ask].port, &["cluster", "slots"]);
        // redis-cli prints CLUSTER SLOTS flattened: start, end, then host
        // and port (and id) of the master, then of its replicas.
        let lines: Vec<&str> = shards.lines().map(str::trim).collect();
        let mut i = 0;
        while i + 3 < lines.len() {
            if let (Ok(start), Ok(end)) = (lines[i].parse::<u16>(), lines[i + 1].parse::<u16>())
                && lines[i + 2] == "127.0.0.1"
                && (start..=end).contains(&slot)
            {
                let port: u16 = lines[i + 3].parse().unwrap();
                return self.nodes.iter().position(|n| n.port == port).unwrap();
            }
            i += 1;
        }
        panic!("no master for slot {slot} in {shards}");
    }
}
