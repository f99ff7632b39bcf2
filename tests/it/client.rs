//! `mito client` against a real coordinator: logging in and the credentials file, every
//! command's plain and `--json` output, exit statuses, interactive mode.

use crate::harness::*;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Output, Stdio};

/// Runs `mito client -c <coordinator> ARGS` from `home` with stdin closed (not a terminal).
pub(crate) fn client(c: &Coordinator, home: &TempDir, args: &[&str]) -> Output {
    mito(home.path())
        .arg("client")
        .args(["-c", &c.url])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run mito client")
}

/// Runs the client with `input` on stdin.
pub(crate) fn client_stdin(c: &Coordinator, home: &TempDir, args: &[&str], input: &str) -> Output {
    let mut child = mito(home.path())
        .arg("client")
        .args(["-c", &c.url])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mito client");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

pub(crate) fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout.
pub(crate) fn ok(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(0), "stdout: {}\nstderr: {}", out(o), err(o));
    out(o)
}

/// Asserts success and parses stdout as one JSON document.
pub(crate) fn ok_json(o: &Output) -> serde_json::Value {
    let s = ok(o);
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("--json output is not JSON ({e}): {s}"))
}

/// Asserts failure with `code` and returns stderr.
pub(crate) fn fails(o: &Output, code: i32) -> String {
    assert_eq!(o.status.code(), Some(code), "stdout: {}\nstderr: {}", out(o), err(o));
    let e = err(o);
    assert!(!e.trim().is_empty(), "a failure without a message");
    e
}

/// A home whose credentials file holds a valid admin token.
pub(crate) fn admin_home(c: &Coordinator) -> TempDir {
    let home = TempDir::new("client");
    ok(&client(c, &home, &["-u", "mitosis_admin", "-p", "mitosis_admin", "--retain"]));
    home
}

#[test]
fn login_caches_a_private_token_that_later_runs_reuse() {
    let c = Coordinator::start();
    let home = TempDir::new("client");
    let o = client(&c, &home, &["-u", "mitosis_admin", "-p", "mitosis_admin", "auth"]);
    assert_eq!(ok(&o).trim(), "Currently logged in as mitosis_admin");
    let cred = home.path().join(".config/mitosis/credentials");
    let text = std::fs::read_to_string(&cred).expect("the credentials file is written");
    assert!(text.starts_with("mitosis_admin:") && !text.ends_with('\n'), "{text:?}");
    assert_eq!(std::fs::metadata(&cred).unwrap().permissions().mode() & 0o777, 0o600);
    // No user, no password: the cached token is used.
    let v = ok_json(&client(&c, &home, &["--json", "auth"]));
    assert_eq!(v["username"], "mitosis_admin");
    // A bare run just logs in.
    assert_eq!(ok(&client(&c, &home, &[])).trim(), "Logged in as mitosis_admin");
    // An explicit credential path is honoured too.
    let p = home.path().join("elsewhere/creds");
    ok(&client(&c, &home, &["--credential-path", p.to_str().unwrap(), "-u", "mitosis_admin", "-p", "mitosis_admin"]));
    assert!(std::fs::read_to_string(&p).unwrap().starts_with("mitosis_admin:"));
}

#[test]
fn without_a_token_or_terminal_the_client_says_what_to_give() {
    let c = Coordinator::start();
    let home = TempDir::new("client");
    let e = fails(&client(&c, &home, &["auth"]), 1);
    assert!(e.contains("not a terminal") && e.contains("--password"), "{e}");
    let e = fails(&client(&c, &home, &["-u", "mitosis_admin", "auth"]), 1);
    assert!(e.contains("--password"), "{e}");
    let e = fails(&client(&c, &home, &["-u", "mitosis_admin", "-p", "wrong", "auth"]), 1);
    assert!(e.contains("Wrong credentials"), "{e}");
    // A stale token falls back to logging in.
    let cred = home.path().join(".config/mitosis/credentials");
    std::fs::create_dir_all(cred.parent().unwrap()).unwrap();
    std::fs::write(&cred, "mitosis_admin:bm90LWEtdG9rZW4=").unwrap();
    ok(&client(&c, &home, &["-p", "mitosis_admin", "auth"]));
}

#[test]
fn an_unreachable_coordinator_is_a_clear_failure() {
    let home = TempDir::new("client");
    let url = format!("http://127.0.0.1:{}", free_port());
    let o = mito(home.path())
        .args(["client", "-c", &url, "-u", "a", "-p", "b", "auth"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = err(&o);
    assert!(e.contains("cannot connect") && e.contains(&url), "{e}");
    let o = mito(home.path()).args(["client", "-c", "127.0.0.1:5000", "auth"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("http://"), "{}", err(&o));
}

#[test]
fn help_needs_no_coordinator_and_mistakes_exit_2() {
    let home = TempDir::new("client");
    for args in [
        &["client", "--help"][..],
        &["client", "tasks", "--help"],
        &["client", "tasks", "submit", "-h"],
        &["client", "help", "groups"],
        &["client", "groups", "attachments", "upload", "--help"],
        &["client", "admin", "users", "create", "--help"],
        &["client", "workers", "--help"],
    ] {
        let o = mito(home.path()).args(args).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", err(&o));
        assert!(out(&o).contains("Usage:"), "{args:?}: {}", out(&o));
    }
    let o = mito(home.path()).args(["client", "tasks", "submit", "--help"]).output().unwrap();
    for flag in [
        "--group",
        "--tags",
        "--labels",
        "--timeout",
        "--priority",
        "--envs",
        "--terminal",
        "--resources",
        "--watch",
        "--wait",
        "--json",
    ] {
        assert!(out(&o).contains(flag), "tasks submit --help lacks {flag}");
    }
}

#[test]
fn usage_mistakes_exit_2_after_login() {
    let c = Coordinator::start();
    let home = admin_home(&c);
    for args in [
        &["tasks", "get", "not-a-uuid"][..],
        &["tasks", "submit"],
        &["groups"],
        &["groups", "frobnicate"],
        &["tasks", "query", "--nope"],
        &["tasks", "query", "-s", "sleeping"],
        &["tasks", "submit", "-r", "attachment=k:../x", "--", "true"],
        &["tasks", "submit", "--watch", "123e4567-e89b-12d3-a456-426614174000,Sleeping", "--", "true"],
        &["admin", "users", "group-quota", "alice", "lots"],
        &["groups", "update-user", "g", "alice:owner"],
    ] {
        let e = fails(&client(&c, &home, args), 2);
        assert!(e.contains("--help"), "{args:?}: {e}");
    }
}

#[test]
fn users_groups_and_admin_commands_work_in_text_and_json() {
    let c = Coordinator::start();
    let admin = admin_home(&c);
    let o = ok(&client(&c, &admin, &["admin", "users", "create", "alice", "alice-pw"]));
    assert!(o.contains("User alice created"), "{o}");
    ok(&client(&c, &admin, &["admin", "users", "create", "bob", "bob-pw", "--admin"]));
    let e = fails(&client(&c, &admin, &["admin", "users", "create", "alice", "x"]), 1);
    assert!(e.contains("409") && e.contains("alice"), "{e}");

    let alice = TempDir::new("client");
    ok(&client(&c, &alice, &["-u", "alice", "-p", "alice-pw"]));
    assert!(ok(&client(&c, &alice, &["groups", "create", "lab"])).contains("Group lab created"));
    ok(&client(&c, &alice, &["groups", "update-user", "lab", "bob:write"]));
    let g = ok_json(&client(&c, &alice, &["groups", "get", "lab", "--json"]));
    assert_eq!(g["group_name"], "lab");
    assert_eq!(g["users_in_group"]["bob"], "Write");
    let text = ok(&client(&c, &alice, &["groups", "get", "lab"]));
    assert!(text.contains("Storage(used/total)") && text.contains("> bob = Write"), "{text}");
    let mine = ok_json(&client(&c, &alice, &["--json", "users", "groups"]));
    assert_eq!(mine["groups"]["lab"], "Admin");
    let text = ok(&client(&c, &alice, &["users", "my-groups"]));
    assert!(text.contains("Currently in 2 groups") && text.contains("Have Admin access for group lab"), "{text}");
    ok(&client(&c, &alice, &["groups", "remove-user", "lab", "bob"]));
    let g = ok_json(&client(&c, &alice, &["--json", "groups", "get", "lab"]));
    assert!(g["users_in_group"].get("bob").is_none(), "{g}");

    // Failures carry the server's message and exit 1.
    let e = fails(&client(&c, &alice, &["groups", "get", "nosuch"]), 1);
    assert!(e.contains("nosuch") || e.contains("not found"), "{e}");
    let e = fails(&client(&c, &alice, &["admin", "users", "delete", "bob"]), 1);
    assert!(e.contains("403") && e.contains("Permission denied"), "{e}");

    // Quotas.
    let o = ok(&client(&c, &admin, &["admin", "users", "group-quota", "alice", "+2"]));
    assert!(o.contains("Successfully updated user group quota to 10"), "{o}");
    let q = ok_json(&client(&c, &admin, &["--json", "admin", "users", "group-quota", "alice", "=3"]));
    assert_eq!(q["group_quota"], 3);
    let q = ok_json(&client(&c, &admin, &["--json", "admin", "groups", "storage-quota", "lab", "10GB"]));
    assert_eq!(q["storage_quota"], 10_000_000_000i64);
    let q = ok_json(&client(&c, &admin, &["--json", "admin", "groups", "storage-quota", "lab", "-1GB"]));
    assert_eq!(q["storage_quota"], 9_000_000_000i64);
    let q = ok_json(&client(&c, &admin, &["--json", "admin", "groups", "storage-quota", "lab", "--", "-1GB"]));
    assert_eq!(q["storage_quota"], 8_000_000_000i64);

    // Passwords: alice changes hers (the cached token is replaced), the admin resets it.
    ok(&client(&c, &alice, &["users", "change-password", "alice-pw", "alice-pw2"]));
    assert_eq!(ok_json(&client(&c, &alice, &["--json", "auth"]))["username"], "alice");
    ok(&client(&c, &admin, &["admin", "users", "change-password", "alice", "alice-pw3"]));
    let fresh = TempDir::new("client");
    ok(&client(&c, &fresh, &["-u", "alice", "-p", "alice-pw3", "auth"]));
    let s = ok_json(&client(&c, &admin, &["--json", "admin", "users", "state", "alice", "locked"]));
    assert_eq!(s["state"], "Locked");
    let s = ok_json(&client(&c, &admin, &["--json", "admin", "users", "delete", "alice"]));
    assert_eq!(s["state"], "Deleted");
}

#[test]
fn interactive_mode_runs_lines_until_quit() {
    let c = Coordinator::start();
    let home = admin_home(&c);
    let o = client_stdin(&c, &home, &["-i"], "auth\n\n# a comment\ngroups create 'g1'\nquit\nauth\n");
    let s = ok(&o);
    assert_eq!(s.matches("Currently logged in as mitosis_admin").count(), 1, "{s}");
    assert!(s.contains("Group g1 created"), "{s}");
    // A command given with -i runs first; a failing line is reported, the rest still runs,
    // and the exit status says something failed.
    let o = client_stdin(
        &c,
        &home,
        &["-i", "auth"],
        "groups get nosuch\nlogin mitosis_admin mitosis_admin --retain\nauth\n",
    );
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert_eq!(out(&o).matches("Currently logged in as").count(), 2, "{}", out(&o));
    assert!(err(&o).contains("nosuch"), "{}", err(&o));
    let o = client_stdin(&c, &home, &["-i"], "echo 'unterminated\n");
    assert!(err(&o).contains("unterminated"), "{}", err(&o));
}

#[test]
fn login_switches_user_for_the_rest_of_the_session() {
    let c = Coordinator::start();
    let home = admin_home(&c);
    ok(&client(&c, &home, &["admin", "users", "create", "carol", "carol-pw"]));
    let o = client_stdin(&c, &home, &["-i"], "login carol carol-pw\nauth\ngroups get carol\n");
    let s = ok(&o);
    assert!(
        s.contains("Logged in as carol") && s.contains("Currently logged in as carol") && s.contains("Group carol"),
        "{s}"
    );
}

#[test]
fn cmd_runs_a_local_shell_command() {
    let c = Coordinator::start();
    let home = admin_home(&c);
    let s = ok(&client(&c, &home, &["cmd", "--", "echo", "hello", "from", "$0"]));
    assert!(s.starts_with("hello from"), "{s}");
    let s = ok(&client(&c, &home, &["cmd", "-s", "--", "echo $0", "zero"]));
    assert_eq!(s.trim(), "zero");
    fails(&client(&c, &home, &["cmd", "--", "exit", "3"]), 1);
}

/// Runs `mito client ARGS` on a pseudo-terminal (util-linux `script`), typing each input
/// line once the output shows its cue; returns everything the terminal showed.
fn on_terminal(c: &Coordinator, home: &TempDir, args: &str, steps: &[(&str, &str)]) -> String {
    use std::io::Read;
    use std::sync::{Arc, Mutex};
    let cmd = format!("{BIN} client -c {} {args}", c.url);
    let mut child = mito(home.path())
        .env("TERM", "dumb")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_script(&cmd);
    let seen = Arc::new(Mutex::new(String::new()));
    let mut stdout = child.stdout.take().unwrap();
    let s2 = seen.clone();
    let reader = std::thread::Builder::new()
        .name("pty-reader".into())
        .spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s2.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut from = 0;
    for (cue, line) in steps {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let s = seen.lock().unwrap().clone();
            if let Some(i) = s[from..].find(cue) {
                from += i + cue.len();
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no {cue:?} on the terminal:\n{s}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
    }
    let status = wait_timeout(&mut child, std::time::Duration::from_secs(30)).expect("the client ends");
    drop(stdin);
    let _ = reader.join();
    let s = seen.lock().unwrap().clone();
    assert!(status.success(), "{s}");
    s
}

trait SpawnScript {
    fn spawn_script(&mut self, cmd: &str) -> std::process::Child;
}

impl SpawnScript for std::process::Command {
    /// Runs `cmd` under `script`, which gives it a pseudo-terminal for stdin and stdout.
    fn spawn_script(&mut self, cmd: &str) -> std::process::Child {
        let mut s = std::process::Command::new("script");
        s.args(["-qefc", cmd, "/dev/null"]);
        for (k, v) in self.get_envs() {
            match v {
                Some(v) => s.env(k, v),
                None => s.env_remove(k),
            };
        }
        if let Some(d) = self.get_current_dir() {
            s.current_dir(d);
        }
        s.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        s.spawn().expect("run `script` (util-linux) for a pseudo-terminal")
    }
}

#[test]
fn on_a_terminal_the_client_asks_for_the_password_without_echo() {
    let c = Coordinator::start();
    let home = TempDir::new("client");
    let shown = on_terminal(&c, &home, "-u mitosis_admin auth", &[("Password for mitosis_admin: ", "mitosis_admin")]);
    assert!(shown.contains("Currently logged in as mitosis_admin"), "{shown}");
    let after_prompt = shown.split("Password for mitosis_admin: ").nth(1).unwrap_or_default();
    assert!(!after_prompt.starts_with("mitosis_admin"), "the password was echoed:\n{shown}");
}

#[test]
fn on_a_terminal_interactive_mode_shows_the_prompt() {
    let c = Coordinator::start();
    let home = admin_home(&c);
    let shown = on_terminal(&c, &home, "-i", &[("[mito::client]> ", "auth"), ("[mito::client]> ", "quit")]);
    assert!(shown.contains("Logged in as mitosis_admin. Client is running in interactive mode."), "{shown}");
    assert!(shown.contains("Currently logged in as mitosis_admin"), "{shown}");
}
