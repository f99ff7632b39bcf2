//! Logging in (the credentials file, `GET /auth`, `POST /login`), `auth`, `login` and the
//! `users` commands, and the terminal prompts they may need.

use super::args::{Args, Command, Group, Spec};
use super::http::Http;
use super::output::print_json;
use super::{CommandResult, Error, Flow, Session};
use crate::api::{self, GroupsQueryResp, UserChangePasswordReq, UserChangePasswordResp, UserLoginReq, UserLoginResp};
use crate::config::ClientConfig;
use crate::credentials;
use crate::opts::OptSpec;
use std::io::IsTerminal;

/// Makes sure of a valid token: the cached one if `GET /auth` accepts it, else a login.
pub(super) fn setup(cfg: ClientConfig, tls: &crate::tls::Tls, json: bool) -> Result<Session, Error> {
    let mut http = Http::new(&cfg.coordinator_addr, tls);
    // The user of a stale cached token is who logs in when -u is not given.
    let mut cached_user = None;
    if let Some((user, token)) = credentials::load(&cfg.credential_path, cfg.user.as_deref()) {
        http.token = Some(token);
        let (status, body) = http.status_of("GET", "/auth")?;
        if status == 200 && body.trim() == user {
            return Ok(Session { http, user, cfg, json });
        }
        if status >= 500 {
            return Err(Error::Failed(format!(
                "GET /auth: the coordinator failed ({status}: {}); try again later",
                super::http::server_message(&body)
            )));
        }
        http.token = None;
        cached_user = Some(user);
    }
    let user = match cfg.user.clone().or(cached_user) {
        Some(u) => u,
        None => prompt("Username: ", &cfg)?,
    };
    let password = match &cfg.password {
        Some(p) => p.clone(),
        None => prompt_password(&format!("Password for {user}: "), &cfg, &user)?,
    };
    let token = login_request(&http, &user, &password, cfg.retain)?;
    store(&cfg, &user, &token);
    http.token = Some(token);
    Ok(Session { http, user, cfg, json })
}

/// A session that never talks to anyone, for printing help.
pub(super) fn offline_session() -> Session {
    let cfg = ClientConfig {
        coordinator_addr: "http://127.0.0.1:5000".into(),
        credential_path: std::path::PathBuf::from("/dev/null"),
        user: None,
        password: None,
        retain: false,
        ca_file: None,
    };
    // Help never connects, so the system's roots are never read.
    let tls = crate::tls::Tls::new(None, |_| {}).expect("no CA file to read");
    Session { http: Http::new(&cfg.coordinator_addr, &tls), user: String::new(), cfg, json: false }
}

fn login_request(http: &Http, user: &str, password: &str, retain: bool) -> Result<String, Error> {
    let req = UserLoginReq { username: user.to_string(), md5_password: api::md5_password(password), retain };
    let resp: UserLoginResp = http
        .post("/login", &req)
        .map_err(|e| match e {
            e @ (Error::Usage(_) | Error::Exit(_)) => e,
            e => Error::Failed(format!("cannot log in as {user}: {e}")),
        })?
        .parse()?;
    Ok(resp.token)
}

fn store(cfg: &ClientConfig, user: &str, token: &str) {
    if let Err(e) = credentials::store(&cfg.credential_path, user, token) {
        eprintln!(
            "warning: cannot save the token in {}: {e}; you will have to log in again next time",
            cfg.credential_path.display()
        );
    }
}

pub(super) fn stdin_is_tty_pub() -> bool {
    stdin_is_tty()
}

fn stdin_is_tty() -> bool {
    std::io::stdin().is_terminal()
}

fn no_terminal(what: &str, cfg: &ClientConfig) -> Error {
    Error::Failed(format!(
        "no valid token in {} and no {what} given, and stdin is not a terminal to ask for it; \
         give -u/--user and -p/--password (or MITO_USER and MITO_PASSWORD)",
        cfg.credential_path.display()
    ))
}

/// Reads a line from the terminal; refuses when stdin is not one.
fn prompt(label: &str, cfg: &ClientConfig) -> Result<String, Error> {
    if !stdin_is_tty() {
        return Err(no_terminal("username", cfg));
    }
    ask(label, false)
}

fn prompt_password(label: &str, cfg: &ClientConfig, _user: &str) -> Result<String, Error> {
    if !stdin_is_tty() {
        return Err(no_terminal("password", cfg));
    }
    ask(label, true)
}

/// Prompts on stderr and reads one line from the terminal, without echo for secrets.
pub(super) fn ask(label: &str, secret: bool) -> Result<String, Error> {
    if !stdin_is_tty() {
        return Err(Error::Failed(format!(
            "`{}` must be given as an argument when stdin is not a terminal",
            label.trim_end_matches([':', ' '])
        )));
    }
    let Some(v) =
        crate::terminal::prompt_line(label, secret).map_err(|e| Error::Failed(format!("reading the terminal: {e}")))?
    else {
        return Err(Error::Failed("no input (end of file)".into()));
    };
    if v.is_empty() {
        return Err(Error::Failed(format!("{} cannot be empty", label.trim_end_matches([':', ' ']))));
    }
    Ok(v)
}

/// An argument, or asked for on the terminal.
pub(super) fn arg_or_ask(v: Option<&String>, label: &str, secret: bool) -> Result<String, Error> {
    match v {
        Some(v) => Ok(v.clone()),
        None => ask(label, secret),
    }
}

pub(super) const AUTH: Spec = Spec {
    name: "auth",
    usage: "",
    about: "Show who is logged in (checks the token with the coordinator)",
    flags: &[],
};

pub(super) fn auth(s: &mut Session, a: &Args) -> CommandResult {
    a.exact(&[])?;
    let name = s.http.get("/auth")?.body.trim().to_string();
    if s.json(a) {
        print_json(&serde_json::json!({ "username": name }));
    } else {
        println!("Currently logged in as {name}");
    }
    Ok(Flow::Continue)
}

pub(super) const LOGIN: Spec = Spec {
    name: "login",
    usage: "[USERNAME] [PASSWORD]",
    about: "Log in (as the current user, or another); the token is saved in the credentials file",
    flags: &[OptSpec::flag("retain", None, "Keep this user's other sessions signed in")],
};

pub(super) fn login(s: &mut Session, a: &Args) -> CommandResult {
    let pos = a.at_most(2)?;
    let user = match pos.first() {
        Some(u) => u.clone(),
        None if !s.user.is_empty() => s.user.clone(),
        None => ask("Username: ", false)?,
    };
    let password = arg_or_ask(pos.get(1), &format!("Password for {user}: "), true)?;
    let token = login_request(&s.http, &user, &password, a.has("retain") || s.cfg.retain)?;
    store(&s.cfg, &user, &token);
    s.http.token = Some(token);
    // Unlike mitosis, the session really becomes this user (default group included).
    s.user = user;
    if s.json(a) {
        print_json(&serde_json::json!({ "username": s.user }));
    } else {
        println!("Logged in as {}", s.user);
    }
    Ok(Flow::Continue)
}

const USERS: Group = Group {
    name: "users",
    about: "Your password and your groups",
    commands: &[
        Command::cmd("change-password", "Change your password", &CHANGE_PASSWORD, change_password),
        Command::cmd("groups", "List your groups and roles (alias my-groups)", &MY_GROUPS, my_groups),
    ],
    aliases: &[("my-groups", "groups")],
};

const CHANGE_PASSWORD: Spec = Spec {
    name: "users change-password",
    usage: "[ORIG_PASSWORD] [NEW_PASSWORD]",
    about: "Change your password (asks on the terminal for what is not given); other sessions are signed out",
    flags: &[],
};

const MY_GROUPS: Spec =
    Spec { name: "users groups", usage: "", about: "List the groups you are in, with your role", flags: &[] };

pub(super) fn run(s: &mut Session, words: &[String]) -> CommandResult {
    USERS.run(s, words)
}

fn change_password(s: &mut Session, a: &Args) -> CommandResult {
    let pos = a.at_most(2)?;
    let old = arg_or_ask(pos.first(), "Current password: ", true)?;
    let new = arg_or_ask(pos.get(1), "New password: ", true)?;
    if pos.get(1).is_none() {
        let again = ask("New password again: ", true)?;
        if again != new {
            return Err(Error::Failed("the two new passwords differ; nothing was changed".into()));
        }
    }
    let req =
        UserChangePasswordReq { old_md5_password: api::md5_password(&old), new_md5_password: api::md5_password(&new) };
    let resp: UserChangePasswordResp =
        s.http.post(&format!("/users/{}/password", super::http::enc(&s.user, false)), &req)?.parse()?;
    store(&s.cfg, &s.user, &resp.token);
    s.http.token = Some(resp.token);
    if !s.json(a) {
        println!("Password changed for {}", s.user);
    }
    Ok(Flow::Continue)
}

fn my_groups(s: &mut Session, a: &Args) -> CommandResult {
    a.exact(&[])?;
    let r = s.http.get("/users/groups")?;
    if s.json(a) {
        print_json(&r.json()?);
        return Ok(Flow::Continue);
    }
    let g: GroupsQueryResp = r.parse()?;
    println!("Currently in {} groups", g.groups.len());
    for (name, role) in &g.groups {
        println!("Have {role} access for group {name}");
    }
    Ok(Flow::Continue)
}
