//! The web interface in a real browser: headless Chromium driven over WebDriver
//! (chromedriver) against a daemon on 127.0.0.1. Each test signs in with a real key, works
//! through the interface as a user would, checks what the page shows, and saves a screenshot
//! under the target directory (`<target>/tmp/ui-screenshots/`).
//!
//! Without Chromium and chromedriver these tests say so loudly and pass, except under
//! `CI=true`, where they fail: `.ci/run` installs both (Debian's `chromium` and
//! `chromium-driver`). `CHROMIUM` and `CHROMEDRIVER` name other binaries.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::daemon::daemon_config;
use aios_runtime::daemon::Daemon;
use aios_testkit::eventually;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// How long a test waits for something to appear on the page.
const WAIT: Duration = Duration::from_secs(20);

/// A chromedriver child and a browser session on it; both go away on drop.
struct Browser {
    client: Client,
    driver: Child,
    name: &'static str,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn binary(env: &str, default: &str) -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var(env).unwrap_or_else(|_| default.to_string()));
    path.exists().then_some(path)
}

/// A browser at 1280×800, or `None` (with a loud message) when Chromium is absent outside CI.
async fn browser(name: &'static str) -> Option<Browser> {
    let (Some(driver), Some(chromium)) = (
        binary("CHROMEDRIVER", "/usr/bin/chromedriver"),
        binary("CHROMIUM", "/usr/bin/chromium"),
    ) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but chromium or chromedriver is missing: .ci/run installs them"
        );
        eprintln!(
            "\n!!! SKIPPED {name}: no /usr/bin/chromium or /usr/bin/chromedriver \
             (apt-get install chromium chromium-driver, or set CHROMIUM and CHROMEDRIVER)\n"
        );
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let driver = Command::new(driver)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,800", "--no-first-run", "--disable-extensions"],
        }),
    );
    // chromedriver takes a moment to listen: retry the session until it does.
    let deadline = Instant::now() + WAIT;
    let client = loop {
        match ClientBuilder::rustls()
            .expect("tls")
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no WebDriver session: {e}"),
        }
    };
    Some(Browser {
        client,
        driver,
        name,
    })
}

impl Browser {
    /// Saves a screenshot as `<target>/tmp/ui-screenshots/<test>-<step>.png`.
    async fn shot(&self, step: &str) {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let png = self.client.screenshot().await.expect("screenshot");
        let path = dir.join(format!("{}-{step}.png", self.name));
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
    }

    /// The first element matching `css`, waiting for it to appear.
    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(e) => e,
            Err(e) => {
                self.shot("failure").await;
                panic!("{css} did not appear: {e}");
            }
        }
    }

    /// Waits until the text of the first element matching `css` contains `needle`.
    async fn wait_text(&self, css: &str, needle: &str) -> String {
        self.wait_text_where(css, &format!("{needle:?}"), |t| t.contains(needle))
            .await
    }

    /// Waits until the text of the first element matching `css` passes `ok` (`what` says
    /// what it waits for); an element re-rendered meanwhile is found again.
    async fn wait_text_where(&self, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        let mut last = String::new();
        loop {
            if let Ok(e) = self.client.find(Locator::Css(css)).await
                && let Ok(t) = e.text().await
            {
                if ok(&t) {
                    return t;
                }
                last = t;
            }
            if Instant::now() > deadline {
                self.shot("failure").await;
                panic!("{css} never said {what}; last: {last:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Types into the control matching `css`, replacing what it holds.
    async fn fill(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        e.clear().await.expect("clear");
        e.send_keys(text).await.expect("type");
    }

    /// Clicks the button inside `scope` whose text is `text`, waiting for it to appear.
    async fn click_button(&self, scope: &str, text: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let buttons = self
                .client
                .find_all(Locator::Css(&format!("{scope} button")))
                .await
                .unwrap_or_default();
            for b in buttons {
                if b.text().await.is_ok_and(|t| t.trim() == text)
                    && b.is_enabled().await.unwrap_or(false)
                {
                    b.click().await.expect("click");
                    return;
                }
            }
            if Instant::now() > deadline {
                self.shot("failure").await;
                panic!("no enabled button {text:?} in {scope}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn click(&self, css: &str) {
        self.find(css).await.click().await.expect("click");
    }

    /// Opens the interface and signs in with `key`; waits for the navigation.
    async fn sign_in(&self, base: &str, key: &str) {
        self.client.goto(base).await.expect("open");
        self.fill("form.signin input[name=key]", key).await;
        self.click("form.signin button[type=submit]").await;
        self.find("nav#nav").await;
    }

    /// Goes to `#/<hash>` of the signed-in interface.
    async fn go(&self, hash: &str) {
        self.client
            .execute("location.hash = arguments[0]", vec![json!(hash)])
            .await
            .expect("navigate");
    }

    /// The page's recorded script errors and CSP violations: none are expected.
    async fn assert_no_errors(&self) {
        let errors = self
            .client
            .execute("return window.aios ? window.aios.errors : []", vec![])
            .await
            .expect("read errors");
        assert_eq!(errors, json!([]), "the page recorded errors");
    }
}

/// The end of every test: the page recorded no errors; the browser and the daemon stop.
async fn finish(b: Browser, d: Daemon) {
    b.assert_no_errors().await;
    let _ = b.client.clone().close().await;
    d.shutdown().await.expect("shutdown");
}

async fn api(
    base: &str,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let mut r = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(key);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.expect("request");
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {v}");
    v
}

async fn start() -> (tempfile::TempDir, Daemon, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (d, first) = Daemon::start(daemon_config(dir.path()), None)
        .await
        .expect("start");
    let admin = first.expect("first start creates an admin key").secret;
    let base = format!("http://{}", d.addr);
    (dir, d, base, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_create_an_agent_and_chat_with_a_streamed_reply() {
    let Some(b) = browser("chat").await else {
        return;
    };
    let (_dir, d, base, admin) = start().await;

    // A wrong key is refused with the daemon's reason, and nothing else is shown.
    b.client.goto(&base).await.unwrap();
    b.fill("form.signin input[name=key]", "aios_000000000000_nope")
        .await;
    b.click("form.signin button[type=submit]").await;
    b.wait_text(".signin-status", "refused").await;
    b.shot("sign-in-refused").await;
    b.sign_in(&base, &admin).await;
    b.wait_text("header.top .who", "admin").await;

    // Create an agent through the form.
    b.go("#/agents").await;
    b.click_button("aios-page-agents", "New agent").await;
    b.fill("dialog input[name=name]", "calc").await;
    let role = b.find("dialog [name=role]").await;
    if role.tag_name().await.unwrap() == "select" {
        role.select_by_value("executor").await.expect("role");
    } else {
        role.clear().await.unwrap();
        role.send_keys("executor").await.unwrap();
    }
    b.fill("dialog [name=system_prompt]", "You add numbers.")
        .await;
    b.fill("dialog [name=tools]", "calculator").await;
    b.shot("new-agent").await;
    b.click_button("dialog", "Create").await;
    b.find("[data-agent=\"calc\"]").await;
    let def = api(&base, &admin, reqwest::Method::GET, "/v1/agents/calc", None).await;
    assert_eq!(def["tools"], json!(["calculator"]), "{def}");
    b.shot("agents").await;

    // Chat: the tool call, its result and the streamed answer appear as they happen.
    b.go("#/chat/calc").await;
    b.wait_text("aios-page-chat .live", "live").await;
    b.fill("aios-page-chat textarea[name=content]", "what is 6*7")
        .await;
    b.click_button("aios-page-chat", "Send").await;
    b.wait_text("aios-page-chat .msg.user", "what is 6*7").await;
    b.wait_text("aios-page-chat .msg.tool", "calculator").await;
    let answer = b
        .wait_text("aios-page-chat .msg.assistant[data-final=\"true\"]", "42")
        .await;
    assert!(answer.contains("[scripted]"), "{answer}");
    // The answer arrived in pieces as the model produced them, before the final event.
    let pieces = b
        .find("aios-page-chat .msg.assistant[data-final=\"true\"]")
        .await
        .attr("data-tokens")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(
        pieces.parse::<u32>().unwrap_or(0) > 1,
        "streamed in {pieces:?} pieces"
    );
    b.shot("chat").await;
    finish(b, d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_actor_shows_its_restart_in_the_live_tree() {
    let Some(b) = browser("tree").await else {
        return;
    };
    let (_dir, d, base, admin) = start().await;
    // An agent instance to kill: created and woken through the API.
    api(
        &base,
        &admin,
        reqwest::Method::POST,
        "/v1/agents",
        Some(json!({"name": "victim", "role": "executor", "model": "scripted/demo", "system_prompt": "Hi."})),
    )
    .await;
    api(
        &base,
        &admin,
        reqwest::Method::POST,
        "/v1/agents/victim/messages",
        Some(json!({"content": "hello"})),
    )
    .await;
    let tree = api(&base, &admin, reqwest::Method::GET, "/v1/tree", None).await;
    let path = first_worker(&tree["agents"]).expect("an agent instance in the tree");

    b.sign_in(&base, &admin).await;
    b.go("#/tree").await;
    b.wait_text("aios-page-tree .live", "live").await;
    let node = format!("aios-page-tree .node[data-path=\"{path}\"]");
    b.wait_text(&format!("{node} .restarts"), "restarts 0")
        .await;
    b.click(&format!("{node} button.danger")).await;
    b.click("dialog.confirm button.danger").await;
    let clicked = Instant::now();
    // The restart reaches the page over the tree's WebSocket and the node is reloaded.
    b.wait_text(&format!("{node} .restarts"), "restarts 1")
        .await;
    b.wait_text(&format!("{node} .state"), "gen 2").await;
    eprintln!(
        "restart visible {:?} after the kill was confirmed",
        clicked.elapsed()
    );
    b.wait_text("aios-page-tree .events", "restarted").await;
    b.shot("restarted").await;
    finish(b, d).await;
}

/// The path of the first worker in a `/v1/tree` group (nested supervisors searched).
fn first_worker(nodes: &Value) -> Option<String> {
    for n in nodes.as_array()? {
        if n["kind"] == "Worker" {
            return n["path"].as_str().map(str::to_string);
        }
        if let Some(p) = first_worker(&n["children"]) {
            return Some(p);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_stops_working_after_its_overlap_window() {
    let Some(b) = browser("keys").await else {
        return;
    };
    let (_dir, d, base, admin) = start().await;
    let created = api(
        &base,
        &admin,
        reqwest::Method::POST,
        "/v1/keys",
        Some(json!({"name": "ci-bot", "role": "operator"})),
    )
    .await;
    let old_secret = created["secret"].as_str().expect("secret").to_string();
    let id = created["id"]
        .as_str()
        .or_else(|| created["key"]["id"].as_str())
        .expect("id")
        .to_string();

    b.sign_in(&base, &admin).await;
    b.go("#/keys").await;
    let row = format!("aios-page-keys [data-key-id=\"{id}\"]");
    b.click_button(&row, "Rotate").await;
    b.fill("dialog input[name=overlap_s]", "3").await;
    b.click_button("dialog", "Rotate").await;
    let new_secret = b.wait_text("code.secret", "aios_").await.trim().to_string();
    assert_ne!(new_secret, old_secret);
    b.shot("rotated").await;

    // Within the window both keys work; after it, the old one is refused at sign-in.
    b.client
        .execute("window.aios.signOut()", vec![])
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        b.client.goto(&base).await.unwrap();
        b.fill("form.signin input[name=key]", &old_secret).await;
        b.click("form.signin button[type=submit]").await;
        // Either signed in (still in the window) or refused at sign-in. Read in one script,
        // as the page may change between two WebDriver calls (signed in, then signed out
        // by a 401 once the window closes).
        let outcome = loop {
            let v = b
                .client
                .execute(
                    "const e = document.querySelector('form.signin .signin-status .error');
                     if (e) return 'refused:' + e.textContent;
                     return document.querySelector('nav#nav') ? 'in' : '';",
                    vec![],
                )
                .await
                .expect("read the outcome");
            if v != json!("") {
                break v.as_str().unwrap_or_default().to_string();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if let Some(text) = outcome.strip_prefix("refused:") {
            // Refused at sign-in; or signed in, then signed out when the window closed
            // (the next attempt is then refused).
            if text.contains("refused") {
                break;
            }
            assert!(text.contains("Signed out"), "{text}");
        }
        assert!(
            Instant::now() < deadline,
            "the old key still works after 30 s"
        );
        b.client
            .execute("window.aios.signOut()", vec![])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    b.shot("old-key-refused").await;
    b.sign_in(&base, &new_secret).await;
    b.wait_text("header.top .who", "operator").await;
    finish(b, d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_search_shows_scored_results() {
    let Some(b) = browser("memory").await else {
        return;
    };
    let (_dir, d, base, admin) = start().await;
    api(
        &base,
        &admin,
        reqwest::Method::POST,
        "/v1/memory/namespaces",
        Some(json!({"name": "notes"})),
    )
    .await;
    b.sign_in(&base, &admin).await;
    b.go("#/memory/notes").await;
    b.fill(
        "aios-page-memory textarea[name=texts]",
        "The cat sat on the mat.\nRust has no garbage collector.\nSled is an embedded database.",
    )
    .await;
    b.click_button("aios-page-memory", "Add").await;
    // The page's write is acknowledged (the API answers with them) before the search runs.
    eventually("the items to arrive", WAIT, || async {
        let found = api(
            &base,
            &admin,
            reqwest::Method::POST,
            "/v1/memory/namespaces/notes/search",
            Some(json!({"query": "embedded database", "k": 5})),
        )
        .await;
        found
            .to_string()
            .contains("Sled is an embedded database.")
            .then_some(())
    })
    .await;
    b.fill(
        "aios-page-memory input[name=query]",
        "garbage collector in Rust",
    )
    .await;
    b.click_button("aios-page-memory", "Search").await;
    let first = b
        .wait_text("aios-page-memory .result", "garbage collector")
        .await;
    let score = b
        .find("aios-page-memory .result .score")
        .await
        .text()
        .await
        .unwrap();
    let score: f64 = score.trim().parse().expect("a numeric score");
    assert!(score > 0.0 && score <= 1.0001, "{score} in {first}");
    // The shards and what they hold (a single node: all here).
    let shards = b
        .wait_text("aios-page-memory .mem-shards", "this node")
        .await;
    assert!(
        shards.contains("exact") && shards.contains("up"),
        "{shards}"
    );
    // A placement set from the card is saved and shown (without a cluster it has no effect).
    b.fill("aios-page-memory form.mem-place input[name=tags]", "ssd")
        .await;
    b.click_button("aios-page-memory form.mem-place", "Place")
        .await;
    b.wait_text("aios-page-memory .mem-shards", "Placed on nodes tagged ssd")
        .await;
    let placement = || {
        api(
            &base,
            &admin,
            reqwest::Method::GET,
            "/v1/memory/namespaces/notes/placement",
            None,
        )
    };
    assert_eq!(placement().await["tags"], json!(["ssd"]));
    // Least loaded, ticked in the same form.
    b.click("aios-page-memory form.mem-place input[name=least_loaded]")
        .await;
    b.click_button("aios-page-memory form.mem-place", "Place")
        .await;
    b.wait_text(
        "aios-page-memory .mem-shards",
        "the nodes hosting the fewest shards",
    )
    .await;
    assert_eq!(placement().await["least_loaded"], json!(true));
    b.shot("search").await;
    finish(b, d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_interface_reconnects_after_the_daemon_restarts_and_fits_a_narrow_window() {
    let Some(b) = browser("reconnect").await else {
        return;
    };
    let (dir, d, base, admin) = start().await;
    let addr = d.addr;
    b.sign_in(&base, &admin).await;
    b.go("#/tree").await;
    b.wait_text("aios-page-tree .live", "live").await;
    d.shutdown().await.expect("shutdown");
    b.wait_text("aios-page-tree .live", "reconnecting").await;
    b.shot("daemon-down").await;
    let mut c = daemon_config(dir.path());
    c.listen = addr;
    let (d, _) = Daemon::start(c, None)
        .await
        .expect("restart on the same port");
    b.wait_text("aios-page-tree .live", "live").await;

    // A narrow window: the navigation folds behind a menu button that still works.
    b.client.set_window_size(420, 800).await.unwrap();
    b.go("#/dashboard").await;
    // Outside a cluster the dashboard counts this node alone (from /v1/cluster/nodes).
    b.wait_text("aios-page-dashboard .stats", "Nodes\n1").await;
    let nav = b.find("nav#nav").await;
    assert!(
        !nav.is_displayed().await.unwrap(),
        "the navigation is folded"
    );
    b.click("button.menu-toggle").await;
    assert!(b.find("nav#nav").await.is_displayed().await.unwrap());
    b.shot("narrow").await;
    b.click("nav#nav a[data-view=\"settings\"]").await;
    b.find("aios-page-settings select[name=theme]").await;
    finish(b, d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_made_in_the_interface_fires_and_is_paused_there() {
    let Some(b) = browser("schedules").await else {
        return;
    };
    let (_dir, d, base, admin) = start().await;
    for (name, role, cap) in [
        ("planner", "planner", "plan"),
        ("researcher", "researcher", "research"),
        ("writer", "executor", "write"),
    ] {
        api(
            &base,
            &admin,
            reqwest::Method::POST,
            "/v1/agents",
            Some(json!({"name": name, "role": role, "model": "scripted/demo",
                "system_prompt": "You help.", "capabilities": [{"name": cap}]})),
        )
        .await;
    }
    b.sign_in(&base, &admin).await;
    b.go("#/schedules").await;
    b.fill("aios-page-schedules input[name=name]", "ui-every")
        .await;
    b.fill("aios-page-schedules input[name=cron]", "* * * * * *")
        .await;
    b.fill(
        "aios-page-schedules textarea[name=task]",
        "Report from the interface",
    )
    .await;
    b.fill("aios-page-schedules input[name=planner]", "planner")
        .await;
    b.shot("new-schedule").await;
    b.click_button("aios-page-schedules form", "Create").await;
    let row = "aios-page-schedules tr[data-schedule-name=\"ui-every\"]";
    b.wait_text(row, "cron * * * * * * (UTC)").await;

    // It fires every second: once the API counts two firings, the page shows them.
    eventually("the schedule to fire twice", WAIT, || async {
        let list = api(&base, &admin, reqwest::Method::GET, "/v1/schedules", None).await;
        if list["items"][0]["fired"].as_u64().unwrap_or(0) >= 2 {
            Ok(())
        } else {
            Err(list.to_string())
        }
    })
    .await;
    b.click_button("aios-page-schedules section", "Refresh")
        .await;
    // The refresh re-renders the table: the cell is read until the new one shows.
    b.wait_text_where(
        &format!("{row} td[data-label=\"Fired\"]"),
        "two firings or more",
        |t| t.trim().parse::<u64>().unwrap_or(0) >= 2,
    )
    .await;

    // Paused from its row.
    b.click_button(row, "Pause").await;
    b.wait_text(row, "paused").await;
    let list = api(&base, &admin, reqwest::Method::GET, "/v1/schedules", None).await;
    assert_eq!(list["items"][0]["paused"], true, "{list}");
    b.shot("schedules").await;

    // Its last run opens on the Runs page.
    b.click(&format!("{row} td[data-label=\"Last run\"] a"))
        .await;
    b.wait_text("aios-page-runs", "Report from the interface")
        .await;

    // Deleted, after a confirmation.
    b.go("#/schedules").await;
    b.click_button(row, "Delete").await;
    b.click_button("dialog", "Confirm").await;
    eventually("the schedule to be deleted", WAIT, || async {
        let list = api(&base, &admin, reqwest::Method::GET, "/v1/schedules", None).await;
        list["items"]
            .as_array()
            .is_some_and(Vec::is_empty)
            .then_some(())
    })
    .await;
    finish(b, d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_s_busy_policy_is_set_in_its_form_and_its_history_is_shown() {
    let Some(b) = browser("agent-history").await else {
        return;
    };
    let (_dir, d, base, admin) = start().await;
    b.sign_in(&base, &admin).await;
    b.go("#/agents").await;
    b.click_button("aios-page-agents", "New agent").await;
    b.fill("dialog input[name=name]", "keeper").await;
    b.fill("dialog [name=system_prompt]", "You keep notes.")
        .await;
    b.click("dialog details.advanced summary").await;
    b.find("dialog select[name=on_busy_policy]")
        .await
        .select_by_value("reject")
        .await
        .expect("policy");
    b.shot("busy-policy").await;
    b.click_button("dialog", "Create").await;
    b.find("[data-agent=\"keeper\"]").await;
    let def = api(
        &base,
        &admin,
        reqwest::Method::GET,
        "/v1/agents/keeper",
        None,
    )
    .await;
    assert_eq!(def["on_busy"]["policy"], "reject", "{def}");

    // Two tasks, then the agent's page lists both with their answers, oldest first.
    for text in ["first note: buy milk", "second note: call Ann"] {
        api(
            &base,
            &admin,
            reqwest::Method::POST,
            "/v1/agents/keeper/messages",
            Some(json!({"content": text})),
        )
        .await;
    }
    b.go("#/agents/keeper").await;
    b.wait_text("aios-page-agents", "refuse it (reject)").await;
    let history = b
        .wait_text("aios-page-agents .agent-history", "second note: call Ann")
        .await;
    assert!(history.contains("first note: buy milk"), "{history}");
    assert!(history.contains("[scripted]"), "{history}");
    let first = b
        .find("aios-page-agents .agent-history tr[data-seq=\"0\"]")
        .await
        .text()
        .await
        .unwrap();
    assert!(first.contains("first note"), "{first}");
    b.shot("history").await;
    finish(b, d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_page_lists_entries_and_every_node_s_log_merged() {
    let Some(b) = browser("audit").await else {
        return;
    };
    let (_dir, d, base, admin) = start().await;
    api(
        &base,
        &admin,
        reqwest::Method::POST,
        "/v1/memory/namespaces",
        Some(json!({"name": "audited"})),
    )
    .await;
    b.sign_in(&base, &admin).await;
    b.go("#/audit").await;
    b.wait_text(
        "aios-page-audit .audit-results",
        "POST /v1/memory/namespaces",
    )
    .await;
    // Every node's log merged by time (one node here, named `aios` by default): each entry
    // names its node.
    b.fill("aios-page-audit input[name=node]", "*").await;
    b.click_button("aios-page-audit", "Apply").await;
    b.wait_text("aios-page-audit .audit-summary", "of every node")
        .await;
    let rows = b
        .wait_text(
            "aios-page-audit .audit-results",
            "POST /v1/memory/namespaces",
        )
        .await;
    assert!(rows.contains("Node") && rows.contains("aios"), "{rows}");
    b.shot("audit-merged").await;
    finish(b, d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_grants_a_tool_to_one_tenant_s_agent_and_the_tenant_sees_it() {
    let Some(b) = browser("grants").await else {
        return;
    };
    let (_dir, d, base, admin) = start().await;
    let acme = api(
        &base,
        &admin,
        reqwest::Method::POST,
        "/v1/keys",
        Some(json!({"name": "acme admin", "role": "admin", "tenant": "acme"})),
    )
    .await["secret"]
        .as_str()
        .expect("secret")
        .to_string();

    // The operator tenant's admin grants `web_fetch` to acme's agent `writer`.
    b.sign_in(&base, &admin).await;
    b.go("#/tools").await;
    b.wait_text("aios-page-tools", "MCP servers").await;
    b.click_button("aios-page-tools", "Grant tools").await;
    b.fill("dialog input[name=tenant]", "acme").await;
    b.fill("dialog input[name=agent]", "writer").await;
    b.fill("dialog input[name=tools]", "web_fetch").await;
    b.click_button("dialog", "Grant").await;
    let grants = api(
        &base,
        &admin,
        reqwest::Method::GET,
        "/v1/tools/grants",
        None,
    )
    .await;
    let id = grants["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["source"] == "api")
        .expect("the grant made in the form")["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        grants["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["id"] == id.as_str())
            .unwrap()["agent"],
        "acme.writer"
    );
    b.wait_text(
        &format!("aios-page-tools [data-grant=\"{id}\"]"),
        "agent acme.writer",
    )
    .await;
    b.shot("granted").await;

    // acme's admin sees the grant as its own agent's, and no MCP servers or revoke button.
    b.client
        .execute("window.aios.signOut()", vec![])
        .await
        .unwrap();
    b.sign_in(&base, &acme).await;
    b.go("#/tools").await;
    let row = b
        .wait_text(
            &format!("aios-page-tools [data-grant=\"{id}\"]"),
            "agent writer",
        )
        .await;
    assert!(row.contains("web_fetch"), "{row}");
    let page = b.find("aios-page-tools").await.text().await.unwrap();
    assert!(!page.contains("MCP servers"), "{page}");
    assert!(!page.contains("Revoke"), "{page}");
    b.shot("tenant-view").await;

    // Back as the operator: revoked in the interface, gone from the API.
    b.client
        .execute("window.aios.signOut()", vec![])
        .await
        .unwrap();
    b.sign_in(&base, &admin).await;
    b.go("#/tools").await;
    b.click_button(&format!("aios-page-tools [data-grant=\"{id}\"]"), "Revoke")
        .await;
    b.click_button("dialog", "Revoke").await;
    eventually("the grant to be revoked", WAIT, || async {
        let grants = api(
            &base,
            &admin,
            reqwest::Method::GET,
            "/v1/tools/grants",
            None,
        )
        .await;
        (!grants.to_string().contains(&id)).then_some(())
    })
    .await;
    finish(b, d).await;
}
