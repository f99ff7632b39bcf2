//! A small W3C WebDriver client for the dashboard tests: it starts `chromedriver` on a free
//! loopback port, opens one headless Chromium session, and stops both (by pid) on drop.

use crate::harness::{die_with_parent, free_port, TempDir};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A web element reference is an object with one key that starts with this (the W3C
/// name is `element-6066-11e4-a6ab-c16c9ab5f8ec`; ChromeDriver has used others).
const ELEMENT_PREFIX: &str = "element-6066-11e4-";

fn find_bin(env: &str, candidates: &[&str]) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        return PathBuf::from(p);
    }
    for c in candidates {
        if std::path::Path::new(c).exists() {
            return PathBuf::from(c);
        }
    }
    panic!(
        "the dashboard tests need Chromium and ChromeDriver: `apt-get install chromium chromium-driver` \
         (.ci/run does), or set {env}"
    )
}

pub(crate) struct Browser {
    driver: Child,
    base: String,
    session: String,
    _profile: TempDir,
}

impl Browser {
    /// A headless Chromium with a window of `width` × `height` CSS pixels.
    pub(crate) fn start(width: u32, height: u32) -> Browser {
        let chromedriver = find_bin("MITO_TEST_CHROMEDRIVER", &["/usr/bin/chromedriver"]);
        let chromium = find_bin("MITO_TEST_CHROMIUM", &["/usr/bin/chromium", "/usr/bin/chromium-browser"]);
        let port = free_port();
        let mut cmd = Command::new(chromedriver);
        cmd.arg(format!("--port={port}")).arg("--allowed-ips=127.0.0.1").stdout(Stdio::null()).stderr(Stdio::null());
        die_with_parent(&mut cmd, libc::SIGKILL);
        let driver = cmd.spawn().expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while ureq::get(&format!("{base}/status")).timeout(Duration::from_secs(2)).call().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start on {base}");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = TempDir::new("chromium-profile");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--no-first-run", "--disable-extensions", "--disable-background-networking",
                         format!("--user-data-dir={}", profile.path().display()),
                         format!("--window-size={width},{height}")]
            }
        }}});
        let mut b = Browser { driver, base, session: String::new(), _profile: profile };
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {v}")).to_string();
        b
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let req = ureq::request(method, &url).timeout(Duration::from_secs(60));
        let resp = match body {
            Some(b) => req.send_json(b),
            None if method == "POST" => req.send_json(json!({})),
            None => req.call(),
        };
        let text = match resp {
            Ok(r) => r.into_string().unwrap(),
            Err(ureq::Error::Status(code, r)) => {
                panic!("webdriver {method} {path}: {code} {}", r.into_string().unwrap())
            }
            Err(e) => panic!("webdriver {method} {path}: {e}"),
        };
        serde_json::from_str::<Value>(&text).unwrap()["value"].clone()
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub(crate) fn goto(&self, url: &str) {
        self.call("POST", &self.s("/url"), Some(json!({"url": url})));
    }

    /// Runs a script in the page and returns its value.
    pub(crate) fn eval(&self, script: &str, args: Value) -> Value {
        self.call("POST", &self.s("/execute/sync"), Some(json!({"script": script, "args": args})))
    }

    /// The element `css` selects, waiting up to 10 s for it to appear.
    pub(crate) fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.eval("const e = document.querySelector(arguments[0]); return e ? e : null;", json!([css]));
            let id = v.as_object().and_then(|o| o.iter().find(|(k, _)| k.starts_with(ELEMENT_PREFIX)));
            if let Some(id) = id.and_then(|(_, id)| id.as_str()) {
                return id.to_string();
            }
            assert!(Instant::now() < deadline, "no element {css:?} in the page:\n{}", self.text("body"));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) fn click(&self, css: &str) {
        let id = self.find(css);
        self.call("POST", &self.s(&format!("/element/{id}/click")), None);
    }

    pub(crate) fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.call("POST", &self.s(&format!("/element/{id}/clear")), None);
        self.call("POST", &self.s(&format!("/element/{id}/value")), Some(json!({"text": text})));
    }

    /// Chooses a local file in an `<input type="file">` (the browser runs on this machine).
    pub(crate) fn choose_file(&self, css: &str, path: &std::path::Path) {
        let id = self.find(css);
        self.call("POST", &self.s(&format!("/element/{id}/value")), Some(json!({"text": path.to_str().unwrap()})));
    }

    /// The text of the first element `css` selects ("" if none).
    pub(crate) fn text(&self, css: &str) -> String {
        let v = self.eval("const e = document.querySelector(arguments[0]); return e ? e.innerText : '';", json!([css]));
        v.as_str().unwrap_or_default().to_string()
    }

    /// Waits up to `within` for `check` to hold on the text of `css`.
    pub(crate) fn wait_text(&self, css: &str, within: Duration, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let t = self.text(css);
            if check(&t) {
                return t;
            }
            assert!(Instant::now() < deadline, "{css}: text {t:?} never matched; page:\n{}", self.text("body"));
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub(crate) fn accept_dialogs(&self) {
        // The page asks before cancelling; the tests answer yes.
        self.eval("window.confirm = () => true;", json!([]));
    }

    /// A PNG screenshot of the window.
    pub(crate) fn screenshot(&self) -> Vec<u8> {
        let v = self.call("GET", &self.s("/screenshot"), None);
        decode_base64(v.as_str().unwrap())
    }

    pub(crate) fn set_window(&self, width: u32, height: u32) {
        self.call("POST", &self.s("/window/rect"), Some(json!({"width": width, "height": height})));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = ureq::delete(&format!("{}/session/{}", self.base, self.session))
                .timeout(Duration::from_secs(10))
                .call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn decode_base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let v: Vec<u32> = chunk.iter().map(|c| val(*c) as u32).collect();
        let n = v.iter().enumerate().fold(0u32, |acc, (i, x)| acc | (x << (18 - 6 * i)));
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}
