//! `mito coordinator --check-config`: the check a service manager runs before starting the
//! coordinator. It reports what would be used, or what is wrong, and touches nothing.

use crate::harness::*;
use std::net::TcpListener;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

/// A config file in `home` naming the test keys (copied next to it, by relative path) and
/// the given database URL and data directory.
fn write_config(home: &Path, db_url: &str, data_dir: &Path) -> std::path::PathBuf {
    let (private, public) = keys();
    std::fs::copy(private, home.join("private.pem")).unwrap();
    std::fs::copy(public, home.join("public.pem")).unwrap();
    let cfg = home.join("mito.toml");
    std::fs::write(
        &cfg,
        format!(
            "[coordinator]\nbind = \"127.0.0.1:5999\"\ndb_url = \"{db_url}\"\ndata_dir = \"{}\"\n\
             access_token_private_path = \"private.pem\"\naccess_token_public_path = \"public.pem\"\n",
            data_dir.display()
        ),
    )
    .unwrap();
    cfg
}

/// Runs the check with `extra` flags; fails the test if it takes more than 10 s.
fn check(home: &Path, cfg: &Path, extra: &[&str]) -> (Option<i32>, String, String, Duration) {
    let started = Instant::now();
    let mut cmd = mito(home);
    cmd.arg("coordinator").arg("--config").arg(cfg).arg("--check-config").args(extra);
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("run mito");
    let pid = child.id();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(10));
        // SAFETY: signals the child started above; harmless if it already exited.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    });
    let out: Output = child.wait_with_output().unwrap();
    drop(killer);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "--check-config hung");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        took,
    )
}

#[test]
fn check_config_reports_a_good_configuration_without_connecting_or_creating_anything() {
    let home = TempDir::new("check");
    // A "database" that would see any connection attempt.
    let db = TcpListener::bind("127.0.0.1:0").unwrap();
    db.set_nonblocking(true).unwrap();
    let db_url = format!("postgres://mito@127.0.0.1:{}/mito", db.local_addr().unwrap().port());
    let data = home.path().join("state/data");
    let cfg = write_config(home.path(), &db_url, &data);
    let (code, out, err, _) = check(home.path(), &cfg, &[]);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("configuration OK"), "{out}");
    assert!(out.contains("127.0.0.1:5999"), "names the bind address: {out}");
    assert!(out.contains(&home.path().join("private.pem").display().to_string()), "names the key: {out}");
    assert!(out.contains(&data.join("objects").display().to_string()), "names the store: {out}");
    assert!(db.accept().is_err(), "--check-config must not connect to the database");
    assert!(!home.path().join("state").exists(), "--check-config must not create data_dir");
    assert!(!home.path().join(".cache").exists(), "--check-config must not write logs");
}

#[test]
fn check_config_fails_on_missing_or_mismatched_keys_naming_the_file() {
    let home = TempDir::new("check");
    let cfg = write_config(home.path(), "postgres://mito@127.0.0.1:1/mito", &home.path().join("data"));
    let (code, _, err, _) = check(home.path(), &cfg, &["--access-token-private-path", "absent.pem"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("absent.pem") && err.contains("openssl genpkey"), "{err}");

    // Another key pair's private half next to this public key: not a pair.
    let other = home.path().join("other.pem");
    let ok = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(ok.success());
    let (code, _, err, _) = check(home.path(), &cfg, &["--access-token-private-path", other.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("are not a key pair"), "{err}");
}

#[test]
fn check_config_fails_on_a_bad_database_url_or_an_unusable_data_dir() {
    let home = TempDir::new("check");
    let cfg = write_config(home.path(), "postgres://mito@127.0.0.1:1/mito", &home.path().join("data"));
    let (code, _, err, _) = check(home.path(), &cfg, &["--db", "postgres://u:secret@h:notaport/db"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("db_url"), "names the key: {err}");
    assert!(!err.contains("secret"), "the password stays out of the message: {err}");

    let file = home.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let (code, _, err, _) = check(home.path(), &cfg, &["--data-dir", file.join("sub").to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("data_dir") && err.contains("not a directory"), "{err}");

    let (code, _, err, _) = check(home.path(), &cfg, &["--s3", "not a url"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("s3_url"), "{err}");
}
