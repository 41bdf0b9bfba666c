//! A small W3C WebDriver client for headless Chromium through `chromedriver` (Debian's
//! `chromium` and `chromium-driver`), and the axe-core accessibility check. Missing tools
//! fail the test with what to install; nothing is skipped silently.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The axe-core build `scripts/setup` downloads (pinned version and checksum).
pub const AXE_VERSION: &str = "4.10.2";

/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for n in names {
            let p = dir.join(n);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// The axe-core script, or a panic saying how to get it.
pub fn axe_source() -> String {
    let path = std::env::var("FLEXPHOTO_AXE_JS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("../target/vendor/axe-{AXE_VERSION}.min.js"))
        });
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "axe-core is missing at {} ({e}): run scripts/setup (it downloads axe-core {AXE_VERSION} from the npm registry), or set FLEXPHOTO_AXE_JS",
            path.display()
        )
    })
}

/// What to wait for after an action.
#[derive(Debug, Clone, Copy)]
pub enum Until<'a> {
    /// The page text contains this.
    Text(&'a str),
    /// A script returns true: (what it waits for, the script).
    Script(&'a str, &'a str),
    /// An element matches this CSS selector.
    Element(&'a str),
}

/// A running chromedriver with one headless Chromium session.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    /// Where screenshots go.
    pub shots: PathBuf,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium window of `width`×`height`.
    pub async fn start(width: u32, height: u32) -> Browser {
        let driver_bin = find_program(&["chromedriver"]).unwrap_or_else(|| {
            panic!("chromedriver is not installed: apt-get install chromium chromium-driver (scripts/setup does)")
        });
        let chrome = find_program(&["chromium", "chromium-browser", "google-chrome"])
            .unwrap_or_else(|| {
                panic!("chromium is not installed: apt-get install chromium chromium-driver (scripts/setup does)")
            });
        let port = crate::ports::free_port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if http.get(format!("{base}/status")).send().await.is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not answer");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chrome.display().to_string(),
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--disable-gpu", format!("--window-size={width},{height}")],
            },
            "timeouts": {"script": 60000, "pageLoad": 60000},
        }}});
        let r: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("session JSON");
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver refused a session: {r}"))
            .to_owned();
        let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ui-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        Browser {
            driver,
            base,
            session,
            http,
            shots,
        }
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("webdriver request");
        let v: Value = resp.json().await.expect("webdriver JSON");
        if v["value"].get("error").is_some() {
            panic!("webdriver {path}: {}", v["value"]);
        }
        v["value"].clone()
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns its value.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Runs an async script: it calls `arguments[arguments.length - 1]` with its result.
    pub async fn js_async(&self, script: &str) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/async",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// The first element matching `css`, waiting up to `timeout` for it.
    pub async fn find(&self, css: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let url = format!("{}/session/{}/element", self.base, self.session);
            let v: Value = self
                .http
                .post(&url)
                .json(&json!({"using": "css selector", "value": css}))
                .send()
                .await
                .expect("find")
                .json()
                .await
                .expect("find JSON");
            if let Some(id) = v["value"][ELEMENT].as_str() {
                return id.to_owned();
            }
            if Instant::now() > deadline {
                let text = self.page_text().await;
                panic!("no element {css:?} after {timeout:?}; page text:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the first element matching `css`.
    pub async fn click(&self, css: &str) {
        let id = self.find(css, Duration::from_secs(10)).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Sets each field, given as (CSS selector, text), waiting up to `timeout` for it: a file
    /// input gets the paths (newline-separated) as they are, any other field is cleared
    /// first, then typed into.
    pub async fn fill(&self, fields: &[(&str, &str)], timeout: Duration) {
        for (css, text) in fields {
            let id = self.find(css, timeout).await;
            let kind = self
                .cmd(
                    reqwest::Method::GET,
                    &format!("/element/{id}/property/type"),
                    None,
                )
                .await;
            if kind != "file" {
                self.cmd(
                    reqwest::Method::POST,
                    &format!("/element/{id}/clear"),
                    Some(json!({})),
                )
                .await;
            }
            self.cmd(
                reqwest::Method::POST,
                &format!("/element/{id}/value"),
                Some(json!({ "text": text })),
            )
            .await;
        }
    }

    /// Waits up to `timeout` for `until`; panics with what it waited for and the page text.
    pub async fn wait_until(&self, until: Until<'_>, timeout: Duration) {
        match until {
            Until::Text(t) => self.wait_text(t, timeout).await,
            Until::Script(what, script) => self.wait_for(what, script, timeout).await,
            Until::Element(css) => {
                self.find(css, timeout).await;
            }
        }
    }

    /// Clicks the first element matching `css`, then waits for `until`.
    pub async fn click_until(&self, css: &str, until: Until<'_>, timeout: Duration) {
        self.click(css).await;
        self.wait_until(until, timeout).await;
    }

    /// The usual form step: [`fill`](Self::fill) the fields, click `submit`, wait for
    /// `until` (each within `timeout`).
    pub async fn fill_and_submit(
        &self,
        fields: &[(&str, &str)],
        submit: &str,
        until: Until<'_>,
        timeout: Duration,
    ) {
        self.fill(fields, timeout).await;
        self.click_until(submit, until, timeout).await;
    }

    /// The page's visible text.
    pub async fn page_text(&self) -> String {
        self.js(
            "return document.body ? document.body.innerText : ''",
            vec![],
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Waits until the script returns true; panics with `what` and the page text.
    pub async fn wait_for(&self, what: &str, script: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.js(script, vec![]).await == Value::Bool(true) {
                return;
            }
            if Instant::now() > deadline {
                let text = self.page_text().await;
                panic!("timed out waiting for {what}; page text:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// Waits until the page text contains `needle`.
    pub async fn wait_text(&self, needle: &str, timeout: Duration) {
        let script = format!(
            "return document.body.innerText.includes({})",
            serde_json::to_string(needle).unwrap()
        );
        self.wait_for(&format!("text {needle:?}"), &script, timeout)
            .await;
    }

    /// Saves a PNG screenshot as `{name}.png` in the screenshot folder.
    pub async fn screenshot(&self, name: &str) {
        use base64_decode as b64;
        let v = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        let png = b64(v.as_str().unwrap_or_default());
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    /// Resizes the window.
    pub async fn resize(&self, width: u32, height: u32) {
        self.cmd(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .await;
    }

    /// Runs axe-core in the page and returns its serious and critical violations, as text.
    pub async fn axe_serious(&self, axe: &str) -> Vec<String> {
        self.js(&format!("{axe}\n;return true;"), vec![]).await;
        let v = self
            .js_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, { resultTypes: ['violations'] })
                   .then(r => done(r.violations
                       .filter(v => v.impact === 'serious' || v.impact === 'critical')
                       .map(v => `${v.impact} ${v.id}: ${v.help} — ${v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(' | ')}`)))
                   .catch(e => done(['axe failed: ' + e]));",
            )
            .await;
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Ends the session and stops chromedriver.
    pub async fn quit(mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}

/// Decodes standard base64 (screenshots), without a dependency.
fn base64_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        buf = (buf << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    out
}
