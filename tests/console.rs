//! The console in a real browser: Debian's chromium, driven through
//! chromedriver (WebDriver) against a real brookd. Create a topic, send
//! with brookctl and see the count rise on the overview, find the message
//! by key, reset a group to a time and see its lag change. A screenshot of
//! each page is saved under `target/tmp/console-screenshots/`. `.ci/run`
//! installs chromium and chromium-driver and sets `BROOK_REQUIRE_BROWSER`,
//! so there a missing browser fails the test; elsewhere it says it skipped.

mod common;

use common::{base_env, Brookd};
use fantoccini::{Client, ClientBuilder, Locator};
use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A chromedriver child on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; .ci/run installs it)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver { child, url: format!("http://127.0.0.1:{port}") }
    }

    async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                // The machine's network is closed: no background traffic.
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                    "--no-first-run", "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--window-size=1280,900"],
            }),
        );
        ClientBuilder::rustls().expect("tls").capabilities(caps).connect(&self.url).await.expect("a browser session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn shots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("screenshot");
    std::fs::write(shots().join(format!("{name}.png")), png).expect("save screenshot");
}

/// The text of `css`, once it satisfies `ok` (re-reading `reload` each
/// try when given).
async fn text_when(browser: &Client, reload: Option<&str>, css: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Some(url) = reload {
            // The same URL again is only a fragment: reload the page.
            browser.goto(url).await.expect("goto");
            browser.refresh().await.expect("reload");
        }
        if let Ok(element) = browser.find(Locator::Css(css)).await {
            last = element.text().await.unwrap_or_default();
            if ok(&last) {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!("{css} never became what was expected; last {last:?}");
}

/// The page renders after its data arrives: wait for the element.
async fn fill(browser: &Client, css: &str, text: &str) {
    let field = browser.wait().for_element(Locator::Css(css)).await.expect(css);
    field.clear().await.expect("clear");
    field.send_keys(text).await.expect("type");
}

async fn click(browser: &Client, css: &str) {
    browser.wait().for_element(Locator::Css(css)).await.expect(css).click().await.expect("click");
}

fn ctl(broker: &Brookd, args: &[&str], stdin: &str) {
    let mut child = Command::new(common::bin("brookctl"))
        .arg("--addr")
        .arg(&broker.addr)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("brookctl");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("brookctl");
    assert!(out.status.success(), "brookctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Whether chromedriver and chromium are here (a failure when CI said
/// they must be).
fn browser_installed() -> bool {
    let found = Command::new("chromedriver").arg("--version").output().is_ok_and(|o| o.status.success())
        && std::path::Path::new("/usr/bin/chromium").exists();
    if !found {
        assert!(
            std::env::var_os("BROOK_REQUIRE_BROWSER").is_none(),
            "chromium and chromium-driver are required here (BROOK_REQUIRE_BROWSER is set)"
        );
        eprintln!("skipped: no chromium/chromedriver (apt-get install chromium chromium-driver; .ci/run does)");
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_a_real_browser() {
    if !browser_installed() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = base_env(dir.path(), "std");
    env.push(("BROOK_HTTP__CONSOLE_WRITES".into(), "true".into()));
    env.push(("BROOK_GROUPS__OFFSET_FLUSH_INTERVAL_MS".into(), "200".into()));
    let broker = Brookd::start(&env);
    let web = format!("http://{}", broker.http_addr.clone().expect("http listener"));
    let driver = Driver::start();
    let browser = driver.browser().await;

    // Create a topic.
    browser.goto(&format!("{web}/#/topics")).await.expect("topics page");
    fill(&browser, "#topic-name", "shop").await;
    fill(&browser, "#topic-queues", "2").await;
    click(&browser, "#topic-create").await;
    browser.wait().for_element(Locator::Css(r#"tr[data-topic="shop"]"#)).await.expect("the new topic listed");
    screenshot(&browser, "topics").await;

    // Send from brookctl: the overview's count rises.
    browser.goto(&format!("{web}/#/overview")).await.expect("overview");
    let before: u64 = text_when(&browser, None, "#stored-15m", |t| t.parse::<u64>().is_ok()).await.parse().unwrap_or(0);
    ctl(&broker, &["send", "shop", "--key", "order-7", "paid"], "");
    let lines: String = (0..20).map(|i| format!("filler {i}\n")).collect();
    ctl(&broker, &["send", "shop", "--stdin"], &lines);
    let after = text_when(&browser, None, "#stored-15m", |t| t.parse::<u64>().is_ok_and(|n| n >= before + 21)).await;
    println!("overview: records stored in 15 min {before} → {after}");
    text_when(&browser, None, "#oldest", |t| t.starts_with("20")).await;
    screenshot(&browser, "overview").await;

    // Find the message by key.
    browser.goto(&format!("{web}/#/messages")).await.expect("messages page");
    fill(&browser, "#key-topic", "shop").await;
    fill(&browser, "#key-key", "order-7").await;
    click(&browser, "#key-search").await;
    text_when(&browser, None, "#found-count", |t| t == "1 found").await;
    let body = browser.find(Locator::Css("#found td.body")).await.expect("body cell").text().await.expect("text");
    assert_eq!(body, "paid");
    screenshot(&browser, "messages").await;
    let id = browser.find(Locator::Css("#found tr.message")).await.expect("row").attr("data-id").await.expect("id");
    let id = id.expect("a message id");
    browser.goto(&format!("{web}/#/message/{id}")).await.expect("message page");
    browser.wait().for_element(Locator::Css("#message")).await.expect("the message shown");
    screenshot(&browser, "message").await;

    // A group reads everything; reset to an hour ago, and its lag is back.
    ctl(&broker, &["consume", "shop", "--group", "billing", "--from", "earliest", "--count", "21"], "");
    let group_page = format!("{web}/#/group/billing");
    text_when(&browser, Some(&group_page), "#group-lag", |t| t == "0").await;
    let an_hour_ago = (brook_proto::time::now_ms() - 3_600_000).to_string();
    fill(&browser, "#reset-topic", "shop").await;
    fill(&browser, "#reset-time", &an_hour_ago).await;
    click(&browser, "#reset-go").await;
    text_when(&browser, None, "#group-lag", |t| t == "21").await;
    screenshot(&browser, "group").await;

    // Each page, once its own content is there.
    for (page, mark) in [("topic/shop", "#queues"), ("groups", "#groups"), ("cluster", "#brokers")] {
        browser.goto(&format!("{web}/#/{page}")).await.expect("page");
        browser.wait().for_element(Locator::Css(mark)).await.expect("the page's content");
        screenshot(&browser, &page.replace('/', "-")).await;
    }
    // A refusal is shown, not swallowed.
    browser.goto(&format!("{web}/#/topics")).await.expect("topics page");
    fill(&browser, "#topic-name", "bad name!").await;
    click(&browser, "#topic-create").await;
    text_when(&browser, None, "#error", |t| t.contains("InvalidName")).await;
    println!("screenshots in {}", shots().display());
    browser.close().await.expect("close");
}

fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let (status, _, body) = common::http::request(addr, method, path, body);
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_only_reads_unless_writes_are_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&base_env(dir.path(), "std"));
    let web = broker.http_addr.clone().expect("http listener");
    let (status, page) = http(&web, "GET", "/", "");
    assert_eq!(status, 200);
    assert!(page.contains("brook console"));
    let (status, body) = http(&web, "POST", "/api/topics", r#"{"name":"shop","queues":2}"#);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("console_writes"), "{body}");
    let (status, _) = http(&web, "GET", "/api/topics/shop", "");
    assert_eq!(status, 404, "nothing was created");
    let (status, body) = http(&web, "POST", "/api/groups/g/reset", r#"{"topic":"shop","time_ms":0}"#);
    assert_eq!(status, 403, "{body}");
    let (status, body) = http(&web, "GET", "/api/topics/no%20such", "");
    assert_eq!(status, 400, "an invalid name is refused as brookctl's is: {body}");
    assert!(body.contains("InvalidName"), "{body}");
    let (status, body) = http(&web, "GET", "/api/overview", "");
    assert_eq!(status, 200);
    let overview: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(overview["console_writes"], false);
    assert_eq!(overview["status"]["writable"], true);
}
