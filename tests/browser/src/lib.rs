//! Test harness: a real Chromium, driven through its WebDriver
//! (chromedriver), both from the operating system's packages
//! (`tests/setup.sh` installs `chromium` and `chromium-driver`). Each
//! browser gets its own profile directory and its own chromedriver on a free
//! port; dropping it ends both. Starting fails with a message that says what
//! is missing; the helpers panic with what they could not do, for tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// Where the binaries are, unless the environment says otherwise.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A headless Chromium under WebDriver.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    /// Where [`Browser::screenshot`] writes.
    shots: PathBuf,
}

fn installed(var: &str, default: &str) -> Result<String, String> {
    let path = std::env::var(var).unwrap_or_else(|_| default.to_string());
    if Path::new(&path).exists() {
        Ok(path)
    } else {
        Err(format!(
            "{path} is not installed: the web tests drive a real Chromium; \
             tests/setup.sh installs the packages chromium and chromium-driver (or set {var})"
        ))
    }
}

/// The top of the repository (screenshots and npm packages live in target/).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A free loopback port.
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session; screenshots go
    /// to `target/web-screenshots/`.
    pub async fn start() -> Result<Self, String> {
        let chromium = installed("CLEW_CHROMIUM", CHROMIUM)?;
        let chromedriver = installed("CLEW_CHROMEDRIVER", CHROMEDRIVER)?;
        let port = free_port()?;
        let mut driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {chromedriver}: {e}"))?;
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::get(format!("{url}/status")).await.is_err() {
            if Instant::now() > deadline {
                let _ = driver.kill();
                return Err(format!("chromedriver did not answer on {url} within 30 s"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().map_err(|e| format!("no profile directory: {e}"))?;
        // Chromium's own calls home are off: this machine's network is closed,
        // and no request may leave the page's origin anyway.
        let args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1280,900".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": chromium, "args": args }),
        );
        let client = match ClientBuilder::native()
            .capabilities(caps)
            .connect(&url)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                let _ = driver.kill();
                return Err(format!("no Chromium session through {chromedriver}: {e}"));
            }
        };
        let shots = repo_root().join("target/web-screenshots");
        std::fs::create_dir_all(&shots).map_err(|e| format!("screenshot directory: {e}"))?;
        Ok(Browser {
            client,
            driver,
            _profile: profile,
            shots,
        })
    }

    /// Goes to `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    /// The first element matching `css`.
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css} on the page: {e}"))
    }

    /// Clicks the first element matching `css`.
    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
    }

    /// Moves focus to the first element matching `css` and presses `key`
    /// there, as someone using only the keyboard would (`\u{E007}` is
    /// Enter in WebDriver's key codes).
    pub async fn press(&self, css: &str, key: &str) {
        self.find(css).await;
        self.client
            .execute(
                "document.querySelector(arguments[0]).focus(); return true",
                vec![Value::String(css.to_string())],
            )
            .await
            .unwrap_or_else(|e| panic!("cannot focus {css}: {e}"));
        self.client
            .active_element()
            .await
            .unwrap_or_else(|e| panic!("no active element: {e}"))
            .send_keys(key)
            .await
            .unwrap_or_else(|e| panic!("cannot press a key on {css}: {e}"));
    }

    /// Clicks the first element matching `css`, which leads to another
    /// page, and waits until that page has loaded.
    pub async fn follow(&self, css: &str) {
        self.script("window.clewLeaving = true; return true").await;
        self.click(css).await;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let arrived = self
                .client
                .execute(
                    "return !window.clewLeaving && document.readyState === 'complete'",
                    vec![],
                )
                .await
                .ok()
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            if arrived {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "clicking {css} led to no new page within 15 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Types `text` into the field matching `css` (after clearing it).
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field
            .clear()
            .await
            .unwrap_or_else(|e| panic!("cannot clear {css}: {e}"));
        field
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("cannot type into {css}: {e}"));
    }

    /// The text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap_or_default()
    }

    /// Waits (up to 10 s, while a navigation completes) for the first
    /// element matching `css` to contain `needle`; its text.
    pub async fn wait_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = match self.client.find(Locator::Css(css)).await {
                Ok(e) => e.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if text.contains(needle) {
                return text;
            }
            if Instant::now() > deadline {
                let url = self.url().await;
                let main = match self.client.find(Locator::Css("main")).await {
                    Ok(e) => e.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                panic!("{css} never said {needle:?} on {url}; it says {text:?}; the page:\n{main}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The texts of every element matching `css`.
    pub async fn texts(&self, css: &str) -> Vec<String> {
        let mut out = Vec::new();
        for e in self
            .client
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_default()
        {
            out.push(e.text().await.unwrap_or_default());
        }
        out
    }

    /// The page's whole DOM, serialised.
    pub async fn dom(&self) -> String {
        self.script("return document.documentElement.outerHTML")
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Runs `js` in the page; its return value.
    pub async fn script(&self, js: &str) -> Value {
        self.client
            .execute(js, vec![])
            .await
            .unwrap_or_else(|e| panic!("the script failed: {e}\n{js}"))
    }

    /// The current address.
    pub async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    /// Every address the page loaded (navigation and resources), from the
    /// browser's Resource Timing; `data:` URLs (inline content, fetched
    /// from nowhere) left out.
    pub async fn requests(&self) -> Vec<String> {
        self.script(
            "return performance.getEntries().map(e => e.name)\
             .filter(n => n.includes(':') && !n.startsWith('data:'))",
        )
        .await
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
    }

    /// The serious and critical accessibility violations axe-core (from
    /// the npm registry, installed by `tests/setup.sh`) finds on the page,
    /// one line each: rule, help, and the elements.
    pub async fn axe_violations(&self) -> Vec<String> {
        let path = repo_root().join("target/web-npm/node_modules/axe-core/axe.min.js");
        let axe = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; tests/setup.sh installs axe-core from services/web/package-lock.json",
                path.display()
            )
        });
        // Injected by the driver, not by the page: the page's CSP allows
        // no script but its own.
        self.client
            .execute(&format!("{axe}\n;return true;"), vec![])
            .await
            .unwrap_or_else(|e| panic!("axe-core did not load: {e}"));
        let found = self
            .script(
                "return axe.run(document, { resultTypes: ['violations'] }).then(r => r.violations\
                 .filter(v => v.impact === 'serious' || v.impact === 'critical')\
                 .map(v => `${v.impact} ${v.id}: ${v.help} at ${v.nodes.map(n => n.target.join(' ')).join(', ')}`))",
            )
            .await;
        found
            .as_array()
            .unwrap_or_else(|| panic!("axe-core gave no list of violations: {found}"))
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Presses Tab from the top of the page until focus has visited every
    /// visible control (links, buttons, fields, disclosure summaries, any
    /// element made focusable, such as a drawn graph's boxes) or
    /// comes round again; the controls never reached, described.
    pub async fn controls_keyboard_misses(&self) -> Vec<String> {
        let total = self
            .script(
                "const all = [...document.querySelectorAll('a[href], button, input, select, textarea, summary, [tabindex]:not([tabindex=\"-1\"])')]\
                 .filter(e => e.getClientRects().length > 0 && e.checkVisibility({ checkVisibilityCSS: true }) && !e.disabled && e.type !== 'hidden');\
                 all.forEach((e, i) => e.dataset.kb = i);\
                 window.kbSeen = new Set();\
                 document.addEventListener('focusin', ev => { if (ev.target.dataset.kb) kbSeen.add(ev.target.dataset.kb); });\
                 document.activeElement && document.activeElement.blur();\
                 return all.length",
            )
            .await
            .as_u64()
            .unwrap_or(0);
        assert!(total > 0, "the page has no control to reach");
        for _ in 0..(total + 3) {
            let focused = self
                .client
                .active_element()
                .await
                .unwrap_or_else(|e| panic!("no active element: {e}"));
            focused
                .send_keys("\u{E004}")
                .await
                .unwrap_or_else(|e| panic!("cannot press Tab: {e}"));
        }
        let missed = self
            .script(
                "return [...document.querySelectorAll('[data-kb]')].filter(e => !kbSeen.has(e.dataset.kb))\
                 .map(e => e.outerHTML.slice(0, 120))",
            )
            .await;
        missed
            .as_array()
            .unwrap_or_else(|| panic!("no list of missed controls: {missed}"))
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The text content of every element matching `css`, shown or not
    /// (a closed `<details>` hides its contents from [`Browser::texts`]).
    pub async fn contents(&self, css: &str) -> Vec<String> {
        let found = self
            .client
            .execute(
                "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)",
                vec![serde_json::Value::from(css)],
            )
            .await
            .unwrap_or_else(|e| panic!("cannot read {css}: {e}"));
        found
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|v| v.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Saves a screenshot of the viewport as `<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("no screenshot: {e}"));
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }
}

impl Browser {
    /// Ends the session (Chromium exits) and chromedriver.
    pub async fn quit(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
