//! A minimal W3C WebDriver client for chromedriver (headless Chromium): new session, navigate,
//! tabs, script execution and screenshots, over plain HTTP/1.1 with JSON bodies.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A chromedriver process and one browser session, both ended on drop.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    pub profile: std::path::PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One request to chromedriver; the `value` of its answer, or the error it reports.
fn call(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    // chromedriver keeps the connection open: read the head, then Content-Length bytes.
    let mut resp = Vec::new();
    let mut chunk = [0u8; 65536];
    let (head_end, len) = loop {
        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("chromedriver closed the connection".into());
        }
        resp.extend_from_slice(&chunk[..n]);
        if let Some(i) = resp.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&resp[..i]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or("no Content-Length from chromedriver")?;
            break (i + 4, len);
        }
    };
    while resp.len() < head_end + len {
        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("chromedriver closed the connection mid-body".into());
        }
        resp.extend_from_slice(&chunk[..n]);
    }
    let v: Value = serde_json::from_slice(&resp[head_end..head_end + len]).map_err(|e| e.to_string())?;
    let value = v.get("value").cloned().unwrap_or(Value::Null);
    if let Some(err) = value.get("error") {
        return Err(format!("{err}: {}", value.get("message").unwrap_or(&Value::Null)));
    }
    Ok(value)
}

impl Browser {
    /// Starts chromedriver and a headless Chromium that plays media without a user gesture.
    pub fn start(tag: &str) -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver (Debian: chromium-driver)");
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(20), "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = std::env::temp_dir().join(format!("uavstream-webdriver-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {"args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--autoplay-policy=no-user-gesture-required", "--window-size=800,600",
            "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
            "--disable-backgrounding-occluded-windows",
            format!("--user-data-dir={}", profile.display()),
        ]}}}});
        let mut b = Browser { driver, port, session: String::new(), profile };
        let v = call(port, "POST", "/session", Some(&caps)).expect("a WebDriver session");
        b.session = v["sessionId"].as_str().expect("sessionId").to_owned();
        b
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        call(self.port, method, &format!("/session/{}{path}", self.session), body)
    }

    pub fn navigate(&self, url: &str) {
        self.call("POST", "/url", Some(&json!({ "url": url }))).expect("navigate");
    }

    /// Runs `script` (a function body) in the current tab and returns its value.
    pub fn run(&self, script: &str) -> Value {
        self.call("POST", "/execute/sync", Some(&json!({"script": script, "args": []})))
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Runs an async script: `script` calls `arguments[0](result)` when done.
    pub fn run_async(&self, script: &str) -> Value {
        self.call("POST", "/execute/async", Some(&json!({"script": script, "args": []})))
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Opens a new tab and switches to it; its handle.
    pub fn new_tab(&self) -> String {
        let v = self.call("POST", "/window/new", Some(&json!({"type": "tab"}))).expect("new tab");
        let handle = v["handle"].as_str().expect("handle").to_owned();
        self.switch_to(&handle);
        handle
    }

    pub fn current_tab(&self) -> String {
        self.call("GET", "/window", None).expect("window handle").as_str().unwrap_or_default().to_owned()
    }

    pub fn switch_to(&self, handle: &str) {
        self.call("POST", "/window", Some(&json!({ "handle": handle }))).expect("switch tab");
    }

    /// A PNG of the current tab.
    pub fn screenshot(&self) -> Vec<u8> {
        let v = self.call("GET", "/screenshot", None).expect("screenshot");
        let b64 = v.as_str().expect("base64 PNG");
        let mut out = vec![0u8; b64.len()];
        let n = uavstream::wbuf::decode_base64(b64.as_bytes(), &mut out).expect("valid base64");
        out.truncate(n);
        out
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = call(self.port, "DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
