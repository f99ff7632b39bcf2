//! The command line: help, version, one-line errors with status 2, config layering.

use crate::harness::*;
use std::process::Output;

fn run(home: &TempDir, args: &[&str]) -> Output {
    mito(home.path()).args(args).output().expect("run mito")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn coordinator_help_lists_every_seed_option() {
    let home = TempDir::new("cli");
    for flag in ["-h", "--help"] {
        let o = run(&home, &["coordinator", flag]);
        assert!(o.status.success());
        let (out, _) = text(&o);
        for opt in [
            "-b, --bind <BIND>",
            "--config <CONFIG>",
            "--db <DB_URL>",
            "--s3 <S3_URL>",
            "--s3-access-key <S3_ACCESS_KEY>",
            "--s3-secret-key <S3_SECRET_KEY>",
            "--redis <REDIS_URL>",
            "--redis-worker-password <REDIS_WORKER_PASSWORD>",
            "--redis-client-password <REDIS_CLIENT_PASSWORD>",
            "--admin-user <ADMIN_USER>",
            "--admin-password <ADMIN_PASSWORD>",
            "--access-token-private-path <ACCESS_TOKEN_PRIVATE_PATH>",
            "--access-token-public-path <ACCESS_TOKEN_PUBLIC_PATH>",
            "--access-token-expires-in <ACCESS_TOKEN_EXPIRES_IN>",
            "--heartbeat-timeout <HEARTBEAT_TIMEOUT>",
            "--log-path <LOG_PATH>",
            "--file-log",
            "-h, --help",
            "-V, --version",
            "--s3-region <S3_REGION>",
            "--s3-force-path-style",
            "--artifacts-bucket <ARTIFACTS_BUCKET>",
            "--attachments-bucket <ATTACHMENTS_BUCKET>",
            "--redis-skip-acl-rules",
        ] {
            assert!(out.contains(opt), "`mito coordinator {flag}` lacks {opt}:\n{out}");
        }
    }
}

#[test]
fn every_level_has_help_and_version() {
    let home = TempDir::new("cli");
    for args in [&["--help"][..], &["-h"], &["worker", "--help"], &["client", "-h"], &["manager", "--help"]] {
        let o = run(&home, args);
        assert!(o.status.success(), "{args:?}");
        assert!(!o.stdout.is_empty(), "{args:?} printed nothing");
    }
    for args in [&["-V"][..], &["--version"], &["coordinator", "-V"], &["worker", "--version"]] {
        let o = run(&home, args);
        assert!(o.status.success());
        assert!(text(&o).0.starts_with("mito "), "{args:?}: {:?}", text(&o));
    }
}

#[test]
fn unknown_flags_and_missing_values_exit_2_with_one_line() {
    let home = TempDir::new("cli");
    for args in [
        &["coordinator", "--no-such-flag"][..],
        &["coordinator", "--bind"],
        &["coordinator", "-x"],
        &["coordinator", "stray"],
        &["frobnicate"],
        &[],
    ] {
        let o = run(&home, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let (_, err) = text(&o);
        assert!(!err.trim().is_empty(), "{args:?} gave no message");
        if !args.is_empty() {
            assert_eq!(err.trim().lines().count(), 1, "{args:?} gave more than one line: {err}");
        }
    }
    let (_, err) = text(&run(&home, &["coordinator", "--bind"]));
    assert!(err.contains("--bind"), "{err}");
}

#[test]
fn a_missing_config_file_is_an_error() {
    let home = TempDir::new("cli");
    let o = run(&home, &["coordinator", "--config", "/nonexistent/mito.toml"]);
    assert_eq!(o.status.code(), Some(2));
    let (_, err) = text(&o);
    assert!(err.contains("/nonexistent/mito.toml") && err.contains("does not exist"), "{err}");
}

#[test]
fn a_bad_value_names_the_key_its_source_and_the_format() {
    let home = TempDir::new("cli");
    let cfg = home.path().join("c.toml");
    std::fs::write(&cfg, "[coordinator]\nheartbeat_timeout = \"soonish\"\n").unwrap();
    let o = run(&home, &["coordinator", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let (_, err) = text(&o);
    assert!(err.contains("heartbeat_timeout") && err.contains("c.toml") && err.contains("\"600s\""), "{err}");

    let o = mito(home.path()).args(["coordinator"]).env("MITO_BIND", "not-an-address").output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let (_, err) = text(&o);
    assert!(err.contains("bind") && err.contains("MITO_BIND"), "{err}");

    let o = run(&home, &["coordinator", "--access-token-expires-in", "7 fortnights"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("--access-token-expires-in"), "{:?}", text(&o));

    std::fs::write(&cfg, "[coordinator\n").unwrap();
    let o = run(&home, &["coordinator", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("not valid TOML"), "{:?}", text(&o));
}

#[test]
fn missing_keys_explain_the_openssl_commands() {
    let home = TempDir::new("cli");
    let o = run(&home, &["coordinator", "--db", "postgres://127.0.0.1:1/x", "--access-token-private-path", "nope.pem"]);
    assert_eq!(o.status.code(), Some(1));
    let (_, err) = text(&o);
    assert!(err.contains("nope.pem"), "{err}");
    assert!(err.contains("openssl genpkey -algorithm ed25519 -out private.pem"), "{err}");
    assert!(err.contains("openssl pkey -in private.pem -pubout -out public.pem"), "{err}");
}

/// Layers: the global file, then ./config.toml, then MITO_ env, then flags; relative paths
/// in a file resolve against the file's directory.
#[test]
fn config_layers_override_in_order() {
    let db = TestDb::new();
    let home = TempDir::new("layers");
    let (private, public) = keys();
    let global_dir = home.path().join(".config/mitosis");
    std::fs::create_dir_all(&global_dir).unwrap();
    let keydir = home.path().join("keys");
    std::fs::create_dir_all(&keydir).unwrap();
    std::fs::copy(private, keydir.join("k.pem")).unwrap();
    std::fs::copy(public, keydir.join("k.pub.pem")).unwrap();
    let p1 = free_port();
    let p2 = free_port();
    // The global file sets keys (relative to itself) and a bind that ./config.toml overrides.
    std::fs::write(
        global_dir.join("config.toml"),
        "[coordinator]\nbind = \"127.0.0.1:1\"\naccess_token_private_path = \"../../keys/k.pem\"\naccess_token_public_path = \"../../keys/k.pub.pem\"\nadmin_password = \"from-global\"\n",
    )
    .unwrap();
    std::fs::write(
        home.path().join("config.toml"),
        format!("[coordinator]\nbind = \"127.0.0.1:{p1}\"\ndb_url = \"{}\"\n", db.url),
    )
    .unwrap();
    let mut child = mito(home.path())
        .args(["coordinator", "--data-dir", "data"])
        .env("MITO_ADMIN_PASSWORD", "from-env")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{p1}");
    let mut up = false;
    for _ in 0..600 {
        if http(&url, "GET", "/health", None, None).0 == 200 {
            up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let login = |pw: &str| {
        let body = serde_json::json!({"username": "mitosis_admin", "md5_password": mito::api::md5_password(pw)});
        http(&url, "POST", "/login", None, Some(&body.to_string())).0
    };
    let (a, b) = (login("from-env"), login("from-global"));
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(up, "not up on ./config.toml's port: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!((a, b), (200, 401), "env must override the global file");

    // A flag overrides ./config.toml.
    let mut c2 = mito(home.path())
        .args(["coordinator", "-b", &format!("127.0.0.1:{p2}")])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url2 = format!("http://127.0.0.1:{p2}");
    let mut up2 = false;
    for _ in 0..600 {
        if http(&url2, "GET", "/health", None, None).0 == 200 {
            up2 = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = c2.kill();
    let _ = c2.wait();
    assert!(up2, "the --bind flag did not override ./config.toml");
}
