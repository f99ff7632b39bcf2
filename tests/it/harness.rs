//! The test harness: a private PostgreSQL for the whole test process, a fresh database per
//! test, and the real `mito` binary started on a free loopback port.
//!
//! ```ignore
//! let c = Coordinator::start();           // fresh database, admin token ready
//! let (status, body) = c.admin().get("/users/groups");
//! ```
//!
//! PostgreSQL: the server named by `MITO_TEST_DATABASE_URL` when set; otherwise `initdb` and
//! `postgres` in a temp directory on a free port (as the `postgres` user when we are root).
//! Every process started here dies with the test process (PR_SET_PDEATHSIG), and the temp
//! directory is removed by a watchdog once the test process is gone.

#![allow(dead_code)]

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_mito");

/// A free TCP port on 127.0.0.1 (free when asked; callers retry on a lost race).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port").local_addr().unwrap().port()
}

/// A directory removed when dropped.
pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "mito-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Makes a child die with the test process.
pub(crate) fn die_with_parent(cmd: &mut Command, sig: libc::c_int) {
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, sig);
            Ok(())
        });
    }
}

struct Postgres {
    /// URL of a database we may CREATE DATABASE from, and the base for new ones.
    admin_url: String,
}

pub(crate) fn find_pg_bin(name: &str) -> PathBuf {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join(name);
        if p.exists() {
            return p;
        }
    }
    if let Ok(rd) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> =
            rd.flatten().map(|e| e.path().join("bin").join(name)).filter(|p| p.exists()).collect();
        versions.sort();
        if let Some(p) = versions.pop() {
            return p;
        }
    }
    PathBuf::from(name)
}

pub(crate) fn postgres_ids() -> Option<(u32, u32)> {
    // SAFETY: getpwnam with a valid C string; the result is read at once.
    unsafe {
        if libc::geteuid() != 0 {
            return None;
        }
        let pw = libc::getpwnam(c"postgres".as_ptr());
        assert!(!pw.is_null(), "running as root needs a `postgres` user to run the test database");
        Some(((*pw).pw_uid, (*pw).pw_gid))
    }
}

fn start_private_postgres() -> Postgres {
    let dir = std::env::temp_dir().join(format!("mito-test-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ids = postgres_ids();
    if let Some((uid, gid)) = ids {
        let c = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
        // SAFETY: chown on a path we just created.
        unsafe { libc::chown(c.as_ptr(), uid, gid) };
    }
    let as_pg = move |cmd: &mut Command| {
        if let Some((uid, gid)) = ids {
            cmd.uid(uid).gid(gid);
        }
    };
    let data = dir.join("data");
    let mut init = Command::new(find_pg_bin("initdb"));
    init.args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync", "-D"]).arg(&data);
    init.stdout(Stdio::null()).stderr(Stdio::piped());
    as_pg(&mut init);
    let out = init.output().expect("run initdb (is the PostgreSQL server installed?)");
    assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));

    // Remove the directory once this test process is gone.
    let me = std::process::id();
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!("while kill -0 {me} 2>/dev/null; do sleep 1; done; sleep 2; rm -rf '{}'", dir.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();

    for _attempt in 0..5 {
        let port = free_port();
        let (tx, rx) = std::sync::mpsc::channel();
        let data = data.clone();
        let dir = dir.clone();
        // The server must be spawned from a thread that lives as long as the process,
        // because PR_SET_PDEATHSIG fires when the spawning thread exits.
        std::thread::Builder::new()
            .name("test-postgres".into())
            .spawn(move || {
                let mut cmd = Command::new(find_pg_bin("postgres"));
                cmd.arg("-D").arg(&data).args(["-p", &port.to_string(), "-k"]).arg(&dir).args([
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=500",
                    "-c",
                    "shared_buffers=64MB",
                ]);
                cmd.stdin(Stdio::null()).stdout(Stdio::null());
                cmd.stderr(
                    std::fs::File::create(dir.join(format!("postgres-{port}.log")))
                        .map(Stdio::from)
                        .unwrap_or(Stdio::null()),
                );
                as_pg(&mut cmd);
                die_with_parent(&mut cmd, libc::SIGINT);
                let child = cmd.spawn();
                let ok = child.is_ok();
                tx.send(child.map(|c| c.id()).map_err(|e| e.to_string())).unwrap();
                if ok {
                    loop {
                        std::thread::park();
                    }
                }
            })
            .unwrap();
        rx.recv().unwrap().expect("start postgres");
        let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if postgres::Client::connect(&url, postgres::NoTls).is_ok() {
                return Postgres { admin_url: url };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    panic!("the private PostgreSQL did not come up; see {}/postgres-*.log", dir.display());
}

fn postgres() -> &'static Postgres {
    static PG: OnceLock<Postgres> = OnceLock::new();
    PG.get_or_init(|| match std::env::var("MITO_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Postgres { admin_url: url },
        _ => start_private_postgres(),
    })
}

/// A database of its own for one test, dropped afterwards.
pub(crate) struct TestDb {
    pub url: String,
    name: String,
    /// Dropped with this value (false for a second handle on someone else's database).
    owned: bool,
}

impl TestDb {
    pub(crate) fn new() -> TestDb {
        static N: AtomicUsize = AtomicUsize::new(0);
        let pg = postgres();
        let name = format!("mito_t{}_{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
        let mut c = postgres::Client::connect(&pg.admin_url, postgres::NoTls).expect("connect to the test PostgreSQL");
        c.batch_execute(&format!("CREATE DATABASE {name}")).expect("create a test database");
        let base = pg.admin_url.rsplit_once('/').map(|(b, _)| b).unwrap_or(&pg.admin_url);
        TestDb { url: format!("{base}/{name}"), name, owned: true }
    }

    /// Another handle on an existing database (e.g. for a second coordinator); it does
    /// not drop the database.
    pub(crate) fn from_url(url: &str) -> TestDb {
        TestDb { url: url.to_string(), name: String::new(), owned: false }
    }

    /// A direct connection, for tests that look at or tamper with the database.
    pub(crate) fn connect(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).expect("connect to the test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        if let Ok(mut c) = postgres::Client::connect(&postgres().admin_url, postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

/// An Ed25519 key pair made with the openssl commands the README shows, shared by the process.
pub(crate) fn keys() -> &'static (PathBuf, PathBuf) {
    static KEYS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("mito-test-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let private = dir.join("private.pem");
        let public = dir.join("public.pem");
        let ok = Command::new("openssl").args(["genpkey", "-algorithm", "ed25519", "-out"]).arg(&private).status();
        assert!(ok.map(|s| s.success()).unwrap_or(false), "openssl genpkey failed (is openssl installed?)");
        let ok =
            Command::new("openssl").args(["pkey", "-pubout", "-in"]).arg(&private).arg("-out").arg(&public).status();
        assert!(ok.map(|s| s.success()).unwrap_or(false), "openssl pkey failed");
        (private, public)
    })
}

/// A `mito` command with a clean environment: no MITO_* variables, HOME and XDG dirs in a
/// temp directory, run from that directory.
pub(crate) fn mito(home: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("MITO_") || k.starts_with("XDG_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", home).env("MITO_LOG", "info").env("NO_COLOR", "1").current_dir(home);
    cmd
}

/// A running coordinator on its own database.
pub(crate) struct Coordinator {
    pub child: Option<Child>,
    pub url: String,
    pub port: u16,
    pub db: TestDb,
    pub home: TempDir,
    pub admin_token: String,
    pub log: PathBuf,
}

impl Coordinator {
    /// Starts a coordinator on a fresh database and logs the admin in.
    pub(crate) fn start() -> Coordinator {
        Self::start_with(TestDb::new(), &[])
    }

    /// Starts one on `db` with extra flags (a lost race for the port is retried).
    pub(crate) fn start_with(db: TestDb, extra: &[&str]) -> Coordinator {
        let home = TempDir::new("coord");
        let log = home.path().join("coordinator.log");
        let mut c = Coordinator { child: None, url: String::new(), port: 0, db, home, admin_token: String::new(), log };
        for _ in 0..5 {
            c.port = free_port();
            c.url = format!("http://127.0.0.1:{}", c.port);
            c.child = Some(spawn_coordinator(&c.home, &c.db.url, c.port, extra, &c.log));
            if c.wait_ready(Duration::from_secs(60)) {
                c.admin_token = c.login("mitosis_admin", "mitosis_admin");
                return c;
            }
            c.stop();
            assert!(c.log_text().contains("cannot listen"), "coordinator did not come up:\n{}", c.log_text());
        }
        panic!("no free port for the coordinator:\n{}", c.log_text());
    }

    /// Waits until /health answers and the log says this coordinator listens on its port;
    /// false if the process died or time ran out. The log matters: two tests can be handed
    /// the same free port, and then the one whose coordinator failed to bind would
    /// otherwise take the other's /health for its own and run against the wrong database.
    pub(crate) fn wait_ready(&mut self, within: Duration) -> bool {
        let listening = format!("listening on http://127.0.0.1:{} ", self.port);
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    return false;
                }
            }
            if http(&self.url, "GET", "/health", None, None).0 == 200 && self.log_text().contains(&listening) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Logs a user in (retain = true, so other tokens stay valid) and returns the token.
    pub(crate) fn login(&self, user: &str, password: &str) -> String {
        let body =
            serde_json::json!({"username": user, "md5_password": mito::api::md5_password(password), "retain": true});
        let (s, b) = http(&self.url, "POST", "/login", None, Some(&body.to_string()));
        assert_eq!(s, 200, "login {user} failed: {b}");
        serde_json::from_str::<serde_json::Value>(&b).unwrap()["token"].as_str().unwrap().to_string()
    }

    pub(crate) fn as_token(&self, token: &str) -> Api {
        Api { base: self.url.clone(), token: Some(token.to_string()) }
    }

    pub(crate) fn admin(&self) -> Api {
        self.as_token(&self.admin_token)
    }

    pub(crate) fn anon(&self) -> Api {
        Api { base: self.url.clone(), token: None }
    }

    /// Creates a user (through the admin API) and returns an API handle logged in as it.
    pub(crate) fn user(&self, name: &str) -> Api {
        let body = serde_json::json!({"username": name, "md5_password": mito::api::md5_password(&format!("{name}-pw")), "admin": false});
        let (s, b) = self.admin().post("/admin/users", &body);
        assert_eq!(s, 200, "create user {name}: {b}");
        self.as_token(&self.login(name, &format!("{name}-pw")))
    }

    /// Sends a signal and waits for the exit status.
    pub(crate) fn signal(&mut self, sig: libc::c_int) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(child.id() as i32, sig) };
        wait_timeout(child, Duration::from_secs(20))
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn spawn_coordinator(home: &TempDir, db_url: &str, port: u16, extra: &[&str], log: &Path) -> Child {
    let (private, public) = keys();
    let mut cmd = mito(home.path());
    cmd.arg("coordinator")
        .args(["--db", db_url, "--bind", &format!("127.0.0.1:{port}")])
        .arg("--access-token-private-path")
        .arg(private)
        .arg("--access-token-public-path")
        .arg(public)
        .arg("--data-dir")
        .arg(home.path().join("data"))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log).map(Stdio::from).unwrap());
    die_with_parent(&mut cmd, libc::SIGKILL);
    cmd.spawn().expect("start mito coordinator")
}

/// Waits for a child to exit, up to `within`.
pub(crate) fn wait_timeout(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// One HTTP request; returns (status, body). Status 0 means no connection.
pub(crate) fn http(base: &str, method: &str, path: &str, token: Option<&str>, json: Option<&str>) -> (u16, String) {
    http_raw(
        base,
        method,
        path,
        &[("Authorization", token.map(|t| format!("Bearer {t}")))],
        json.map(|j| ("application/json", j)),
    )
}

/// A request with chosen headers (None values are left out) and an optional typed body.
pub(crate) fn http_raw(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, Option<String>)],
    body: Option<(&str, &str)>,
) -> (u16, String) {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();
    let mut req = agent.request(method, &format!("{base}{path}"));
    for (k, v) in headers {
        if let Some(v) = v {
            req = req.set(k, v);
        }
    }
    let result = match body {
        Some((ct, b)) => req.set("Content-Type", ct).send_string(b),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(_) => return (0, String::new()),
    };
    let status = resp.status();
    let mut s = String::new();
    let _ = resp.into_reader().take(10 << 20).read_to_string(&mut s);
    (status, s)
}

/// A caller of the HTTP API, with or without a token.
#[derive(Clone)]
pub(crate) struct Api {
    pub base: String,
    pub token: Option<String>,
}

impl Api {
    pub(crate) fn get(&self, path: &str) -> (u16, String) {
        http(&self.base, "GET", path, self.token.as_deref(), None)
    }
    pub(crate) fn delete(&self, path: &str) -> (u16, String) {
        http(&self.base, "DELETE", path, self.token.as_deref(), None)
    }
    pub(crate) fn post(&self, path: &str, body: &serde_json::Value) -> (u16, String) {
        http(&self.base, "POST", path, self.token.as_deref(), Some(&body.to_string()))
    }
    pub(crate) fn put(&self, path: &str, body: &serde_json::Value) -> (u16, String) {
        http(&self.base, "PUT", path, self.token.as_deref(), Some(&body.to_string()))
    }
    pub(crate) fn post_raw(&self, path: &str, content_type: &str, body: &str) -> (u16, String) {
        http_raw(
            &self.base,
            "POST",
            path,
            &[("Authorization", self.token.as_ref().map(|t| format!("Bearer {t}")))],
            Some((content_type, body)),
        )
    }
}

/// Parses a JSON body, with the body in the panic message when it is not JSON.
pub(crate) fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// The `msg` of an error body.
pub(crate) fn msg(body: &str) -> String {
    json(body)["msg"].as_str().unwrap_or_default().to_string()
}

/// A private redis-server for the process (admin password "adminpw"), started on first use.
pub(crate) fn redis_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        for _ in 0..5 {
            let port = free_port();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("test-redis".into())
                .spawn(move || {
                    let mut cmd = Command::new("redis-server");
                    cmd.args([
                        "--port",
                        &port.to_string(),
                        "--bind",
                        "127.0.0.1",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--requirepass",
                        "adminpw",
                    ]);
                    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
                    die_with_parent(&mut cmd, libc::SIGKILL);
                    let ok = cmd.spawn().map(|_| ()).map_err(|e| e.to_string());
                    let started = ok.is_ok();
                    tx.send(ok).unwrap();
                    if started {
                        loop {
                            std::thread::park();
                        }
                    }
                })
                .unwrap();
            rx.recv().unwrap().expect("start redis-server (is it installed?)");
            let url = format!("redis://:adminpw@127.0.0.1:{port}");
            for _ in 0..100 {
                if let Ok(c) = redis::Client::open(url.as_str()) {
                    if let Ok(mut con) = c.get_connection() {
                        if redis::cmd("PING").query::<String>(&mut con).is_ok() {
                            return url;
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("redis-server did not come up");
    })
}

// ---------------------------------------------------------------- S3 (object storage tests)

/// Credentials of the test S3 server.
pub(crate) const S3_ACCESS_KEY: &str = "mito-test-access";
pub(crate) const S3_SECRET_KEY: &str = "mito-test-secret-key";

/// The s3s-fs binary: `$MITO_TEST_S3S_FS`, else `/opt/s3s-fs/bin/s3s-fs`, else on PATH.
pub(crate) fn s3s_fs_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MITO_TEST_S3S_FS").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let opt = PathBuf::from("/opt/s3s-fs/bin/s3s-fs");
    if opt.exists() {
        return opt;
    }
    PathBuf::from("s3s-fs")
}

/// An S3-compatible server that checks SigV4 signatures and presigned-URL expiry
/// (s3s-fs: objects in a temp directory), on a free loopback port.
pub(crate) struct S3Server {
    pub url: String,
    pub port: u16,
    pub root: TempDir,
    pid: Option<u32>,
}

impl S3Server {
    /// Starts a private server (for tests that stop it); most tests share [`s3_server`].
    pub(crate) fn start() -> S3Server {
        let mut s = S3Server { url: String::new(), port: 0, root: TempDir::new("s3"), pid: None };
        for _ in 0..5 {
            s.port = free_port();
            if s.launch() {
                return s;
            }
        }
        panic!("s3s-fs did not come up (binary {}); install it with\n  cargo install s3s-fs --version 0.14.1 --features binary --locked --root /opt/s3s-fs", s3s_fs_bin().display());
    }

    /// Starts the server process on `self.port`; true once it accepts connections.
    fn launch(&mut self) -> bool {
        self.url = format!("http://127.0.0.1:{}", self.port);
        let (tx, rx) = std::sync::mpsc::channel();
        let (port, root) = (self.port, self.root.path().to_path_buf());
        // Spawned from a thread that lives until the server exits: PR_SET_PDEATHSIG fires
        // when the spawning thread ends.
        std::thread::Builder::new()
            .name("test-s3s-fs".into())
            .spawn(move || {
                let mut cmd = Command::new(s3s_fs_bin());
                cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
                    .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
                    .arg(&root);
                cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
                die_with_parent(&mut cmd, libc::SIGKILL);
                match cmd.spawn() {
                    Ok(mut child) => {
                        let _ = tx.send(Ok(child.id()));
                        let _ = child.wait();
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            })
            .unwrap();
        let pid = rx.recv().unwrap().unwrap_or_else(|e| {
            panic!("cannot run s3s-fs ({}): {e}; install it with\n  cargo install s3s-fs --version 0.14.1 --features binary --locked --root /opt/s3s-fs", s3s_fs_bin().display())
        });
        self.pid = Some(pid);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            // SAFETY: signal 0 only checks that our child still exists.
            if unsafe { libc::kill(pid as i32, 0) } != 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop();
        false
    }

    /// Kills the server (its data stays in `root`).
    pub(crate) fn stop(&mut self) {
        if let Some(pid) = self.pid.take() {
            // SAFETY: killing the child we started, by its pid.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts it again on the same port and data.
    pub(crate) fn restart(&mut self) {
        assert!(self.launch(), "s3s-fs did not come back on port {}", self.port);
    }

    /// Coordinator flags that use this server, with buckets of their own (so parallel
    /// tests never share objects).
    pub(crate) fn coordinator_flags(&self) -> Vec<String> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{}-{n}", std::process::id());
        vec![
            "--s3".into(),
            self.url.clone(),
            "--s3-access-key".into(),
            S3_ACCESS_KEY.into(),
            "--s3-secret-key".into(),
            S3_SECRET_KEY.into(),
            "--artifacts-bucket".into(),
            format!("art-{tag}"),
            "--attachments-bucket".into(),
            format!("att-{tag}"),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The S3 server shared by the test process, started on first use.
pub(crate) fn s3_server() -> &'static S3Server {
    static S3: OnceLock<S3Server> = OnceLock::new();
    S3.get_or_init(S3Server::start)
}

/// A registered worker, talking with its own token.
pub(crate) struct TestWorker {
    pub uuid: String,
    pub api: Api,
}

impl TestWorker {
    /// Fetches a task at once (no long-poll); None when there is none.
    pub(crate) fn fetch(&self) -> Option<serde_json::Value> {
        let (s, b) = self.api.get("/workers/tasks");
        assert_eq!(s, 200, "fetch: {b}");
        let v = json(&b);
        (!v.is_null()).then_some(v)
    }

    pub(crate) fn report(&self, id: i64, op: serde_json::Value) -> (u16, String) {
        self.api.post("/workers/tasks", &serde_json::json!({"id": id, "op": op}))
    }

    /// Reports Finish and commits with `exit_status`.
    pub(crate) fn complete(&self, task: &serde_json::Value, exit_status: i32) {
        let id = task["id"].as_i64().unwrap();
        assert_eq!(self.report(id, serde_json::json!("Finish")).0, 200);
        let (s, b) = self.report(id, serde_json::json!({"Commit": {"exit_status": exit_status, "msg": null}}));
        assert_eq!(s, 200, "commit: {b}");
    }
}

impl Coordinator {
    /// Registers a worker as `user` with these tags and group entries.
    pub(crate) fn worker(&self, user: &Api, tags: &[&str], groups: &[&str]) -> TestWorker {
        let (s, b) = user.post("/workers", &serde_json::json!({"tags": tags, "labels": [], "groups": groups}));
        assert_eq!(s, 200, "register: {b}");
        let v = json(&b);
        TestWorker {
            uuid: v["worker_id"].as_str().unwrap().to_string(),
            api: Api { base: self.url.clone(), token: Some(v["token"].as_str().unwrap().to_string()) },
        }
    }
}

/// A task submission body.
pub(crate) fn task(group: &str, args: &[&str], tags: &[&str], priority: i32) -> serde_json::Value {
    serde_json::json!({
        "group_name": group, "tags": tags, "labels": [], "timeout": "10m", "priority": priority,
        "task_spec": {"args": args}
    })
}

/// Submits a task and returns its uuid.
pub(crate) fn submit(api: &Api, body: &serde_json::Value) -> String {
    let (s, b) = api.post("/tasks", body);
    assert_eq!(s, 200, "submit: {b}");
    json(&b)["uuid"].as_str().unwrap().to_string()
}

// ---------------------------------------------------------------- TLS (https tests)

/// A private CA made at test time with the openssl command line (which the tests need for
/// the coordinator's keys anyway), a server certificate it signed for 127.0.0.1 and
/// localhost, and a second CA that signed nothing here.
pub(crate) struct TestCa {
    pub dir: PathBuf,
    /// The CA's certificate (PEM): what `--ca-file` names.
    pub ca: PathBuf,
    /// Another CA's certificate: trusting it must not make the server trusted.
    pub other_ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

const TEST_CA_CONFIG: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = mito test
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!("openssl {args:?} failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => panic!("cannot run openssl (is it installed?): {e}"),
    }
}

/// The test CA, made once per test process.
pub(crate) fn test_ca() -> &'static TestCa {
    static CA: OnceLock<TestCa> = OnceLock::new();
    CA.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("mito-test-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("openssl.cnf"), TEST_CA_CONFIG).unwrap();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        for name in ["ca", "other-ca"] {
            let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
            let mut args = vec!["req", "-x509", "-config", "openssl.cnf", "-extensions", "ca", "-days", "2"];
            args.extend(ec);
            let subject = format!("/CN=mito {name}");
            args.extend(["-subj", &subject, "-keyout", &key, "-out", &pem]);
            openssl(&dir, &args);
        }
        let mut args = vec!["req", "-new", "-config", "openssl.cnf", "-subj", "/CN=127.0.0.1"];
        args.extend(ec);
        args.extend(["-keyout", "server.key", "-out", "server.csr"]);
        openssl(&dir, &args);
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                "2",
                "-days",
                "2",
                "-extfile",
                "openssl.cnf",
                "-extensions",
                "server",
                "-out",
                "server.pem",
            ],
        );
        TestCa {
            ca: dir.join("ca.pem"),
            other_ca: dir.join("other-ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            dir,
        }
    })
}

/// A TLS-terminating proxy on a free loopback port in front of a plain TCP service, with
/// the test CA's server certificate: what a reverse proxy does for a real coordinator or
/// S3 service. Bytes pass unchanged (the `Host` header stays the proxy's address, which
/// presigned S3 URLs are signed for).
pub(crate) struct TlsProxy {
    pub port: u16,
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// Connections whose TLS handshake succeeded.
    pub handshakes: std::sync::Arc<AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl TlsProxy {
    /// Starts a proxy to `127.0.0.1:upstream_port`.
    pub(crate) fn start(upstream_port: u16) -> TlsProxy {
        use ureq::rustls::pki_types::pem::PemObject;
        use ureq::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let ca = test_ca();
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(&ca.server_cert).unwrap().collect::<Result<_, _>>().unwrap();
        let key = PrivateKeyDer::from_pem_file(&ca.server_key).unwrap();
        let config = ureq::rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            ureq::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let config = std::sync::Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let handshakes = std::sync::Arc::new(AtomicUsize::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (h, s) = (handshakes.clone(), stop.clone());
        std::thread::Builder::new()
            .name(format!("test-tls-proxy-{port}"))
            .spawn(move || {
                while !s.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((tcp, _)) => {
                            let (config, h) = (config.clone(), h.clone());
                            std::thread::spawn(move || {
                                let _ = tls_proxy_connection(tcp, upstream_port, config, &h);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
            .unwrap();
        TlsProxy { port, url: format!("https://127.0.0.1:{port}"), handshakes, stop }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// One client connection: the handshake, then bytes both ways until either side closes or
/// a minute passes with no traffic.
fn tls_proxy_connection(
    mut tcp: std::net::TcpStream,
    upstream_port: u16,
    config: std::sync::Arc<ureq::rustls::ServerConfig>,
    handshakes: &AtomicUsize,
) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    tcp.set_nonblocking(false)?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut conn = ureq::rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    handshakes.fetch_add(1, Ordering::SeqCst);
    let mut up = std::net::TcpStream::connect(("127.0.0.1", upstream_port))?;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        // Plaintext may be waiting already: the handshake's last read can carry the request.
        loop {
            match conn.reader().read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => up.write_all(&buf[..n])?,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        while conn.wants_write() {
            conn.write_tls(&mut tcp)?;
        }
        let mut fds = [
            libc::pollfd { fd: tcp.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: up.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: two valid pollfd entries that live across the call.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, 60_000) } <= 0 {
            return Ok(());
        }
        if fds[0].revents != 0 {
            if conn.read_tls(&mut tcp)? == 0 {
                return Ok(());
            }
            conn.process_new_packets().map_err(std::io::Error::other)?;
        }
        if fds[1].revents != 0 {
            let n = up.read(&mut buf)?;
            if n == 0 {
                conn.send_close_notify();
                while conn.wants_write() {
                    conn.write_tls(&mut tcp)?;
                }
                return Ok(());
            }
            let mut rest = &buf[..n];
            while !rest.is_empty() {
                let written = conn.writer().write(rest)?;
                rest = &rest[written..];
                while conn.wants_write() {
                    conn.write_tls(&mut tcp)?;
                }
            }
        }
    }
}
