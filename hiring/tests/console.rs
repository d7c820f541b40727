//! `jetsource console` in a real headless browser: Debian's chromium driven
//! through chromedriver by fantoccini. Every failed check saves a screenshot
//! (its path is in the failure message) under `target/console-screenshots/`.

mod support;

use fantoccini::{Client, ClientBuilder, Locator};
use jetsource::store::{Append, Codec, ExpectedVersion, Metadata, NewEvent};
use jetsource::testing::{free_port, TestServer};
use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{send, wait_for_nodes};

/// A chromedriver child and a headless chromium session through it.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    /// Kills chromedriver's whole process group: killing chromedriver alone left
    /// chromium running after every test.
    fn drop(&mut self) {
        if let Some(group) = rustix::process::Pid::from_raw(self.driver.id() as i32) {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = self.driver.wait();
    }
}

/// The browser, or `None` (skipped, said on stderr) without chromedriver outside CI.
async fn browser() -> Option<Browser> {
    let driver = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !std::path::Path::new(&driver).exists() || !std::path::Path::new(&chromium).exists() {
        assert!(
            std::env::var("CI").is_err(),
            "CI needs {driver} and {chromium} (apt-get install chromium chromium-driver)"
        );
        eprintln!("skipped: no {driver} or {chromium} (apt-get install chromium chromium-driver)");
        return None;
    }
    let port = free_port();
    let driver = Command::new(driver)
        .arg(format!("--port={port}"))
        // Its own process group, with the chromium it starts: see `Drop`.
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(client) => break client,
            Err(e) if Instant::now() > deadline => panic!("no browser session: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    Some(Browser {
        client,
        driver,
        _profile: profile,
    })
}

impl Browser {
    /// Waits (10 s) until the text of `css` satisfies `check`; else saves a
    /// screenshot named after `what` and panics with its path.
    async fn wait_text(&self, what: &str, css: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = String::new();
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                last = element.text().await.unwrap_or_default();
                if check(&last) {
                    return last;
                }
            }
            if Instant::now() > deadline {
                self.fail(what, &format!("{css} shows {last:?}")).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn fail(&self, what: &str, why: &str) -> ! {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("../console-screenshots");
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(format!("{}.png", what.replace(' ', "_")));
        match self.client.screenshot().await {
            Ok(png) => {
                let _ = std::fs::write(&path, png);
                panic!("{what}: {why}; screenshot: {}", path.display())
            }
            Err(e) => panic!("{what}: {why}; no screenshot: {e}"),
        }
    }

    async fn click(&self, what: &str, css: &str) {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => {
                if let Err(e) = element.click().await {
                    self.fail(what, &format!("clicking {css}: {e}")).await;
                }
            }
            Err(e) => self.fail(what, &format!("no {css}: {e}")).await,
        }
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.client.find(Locator::Css(css)).await.expect(css);
        element.clear().await.expect("clear");
        element.send_keys(text).await.expect("type");
    }
}

#[tokio::test]
async fn the_console_shows_the_system_live_and_takes_actions_with_the_token() {
    let Some(browser) = browser().await else {
        return;
    };
    let server = TestServer::start();
    let url = server.url();
    let client = jetsource::connect(&url).await.unwrap();
    let _node = support::start(&url, &["node"]);
    let _directory = support::start(&url, &["project", "person_directory"]);
    let _saga = support::start(&url, &["saga", "hiring"]);
    let listen = format!("127.0.0.1:{}", free_port());
    let _console = support::start(
        &url,
        &[
            "console",
            "--listen",
            &listen,
            "--actions",
            "--action-token",
            "s3cret",
        ],
    );
    wait_for_nodes(&client, 1).await;
    support::acme_and_ada(&client).await;
    send(
        &client,
        "cmd.person.ChangeName",
        json!({"id": "ada", "name": "Ada Lovelace"}),
    )
    .await;
    let offer = json!({"id": "acme", "position_id": "eng", "person_id": "ada", "offer_id": "o1", "expires_at": "2099-01-01T00:00:00Z"});
    send(&client, "cmd.organization.ExtendOffer", offer).await;
    // An event the directory cannot apply (a person never registered): parked.
    let store = support::open_store(&server).await;
    let ghost = NewEvent::encode(
        "NameChanged",
        1,
        &json!({"name": "Nobody"}),
        Codec::Json,
        Metadata::default(),
    )
    .unwrap();
    store
        .append(Append::new(
            "person",
            "ghost",
            ExpectedVersion::NoStream,
            vec![ghost],
        ))
        .await
        .unwrap();

    let page = format!("http://{listen}/");
    let deadline = Instant::now() + Duration::from_secs(20);
    while browser.client.goto(&page).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the console never answered on {page}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The event stream, live: a command sent now shows up without a reload.
    browser
        .wait_text("the events", "#events tbody", |t| {
            t.contains("PersonRegistered") && t.contains("OfferExtended")
        })
        .await;
    send(
        &client,
        "cmd.person.Register",
        json!({"id": "bob", "name": "Bob", "email": "bob@example.org"}),
    )
    .await;
    browser
        .wait_text("a new event", "#events tbody", |t| t.contains("bob"))
        .await;
    // Filtered by aggregate.
    browser.type_into("#filter-aggregate", "organization").await;
    browser.click("filter", "#filter-apply").await;
    browser
        .wait_text("the filter", "#events tbody", |t| {
            t.contains("PositionOpened") && !t.contains("PersonRegistered")
        })
        .await;

    // An aggregate's history and its state at an earlier version (time travel).
    browser.type_into("#pick-aggregate", "person").await;
    browser.type_into("#pick-id", "ada").await;
    browser.click("open ada", "#pick-open").await;
    browser
        .wait_text("ada now", "#aggregate-state", |t| {
            t.contains("Ada Lovelace")
        })
        .await;
    browser
        .wait_text("ada's history", "#history tbody", |t| {
            t.contains("NameChanged")
        })
        .await;
    browser
        .client
        .execute("const v = document.getElementById('version'); v.value = 1; v.dispatchEvent(new Event('change'));", vec![])
        .await
        .unwrap();
    browser
        .wait_text("ada at version 1", "#aggregate-state", |t| {
            t.contains("\"Ada\"") && !t.contains("Lovelace")
        })
        .await;

    // Consumers with checkpoint and lag, nodes, the saga's instance by stage.
    browser
        .wait_text("the directory", "#consumers tbody", |t| {
            t.contains("proj_person_directory") && t.contains("saga_hiring")
        })
        .await;
    browser
        .wait_text("the nodes", "#nodes tbody", |t| t.contains("0.1.0"))
        .await;
    browser
        .wait_text("the saga", "#sagas tbody", |t| {
            t.contains("o1") && t.contains("recorded")
        })
        .await;

    // The parked event, retried then discarded with the token; refused without it.
    let first_parking = browser
        .wait_text("the parked event", "#parked tbody", |t| {
            t.contains("proj_person_directory") && t.contains("NameChanged")
        })
        .await;
    browser
        .click(
            "discard without the token",
            "#parked button[data-action=discard]",
        )
        .await;
    browser
        .wait_text("refused", "#action-result", |t| t.contains("refused"))
        .await;
    browser.type_into("#token", "s3cret").await;
    let typed = browser
        .client
        .execute("return document.getElementById('token').value", vec![])
        .await
        .unwrap();
    assert_eq!(typed, json!("s3cret"));
    browser
        .click("retry", "#parked button[data-action=retry]")
        .await;
    browser
        .wait_text("retried", "#action-result", |t| t.starts_with("retry:"))
        .await;
    // The retry fails again and parks it anew (a new DLQ entry, so a new row:
    // the old row may still show until the page refreshes); then it goes for good.
    browser
        .wait_text("parked again", "#parked tbody", |t| {
            t.contains("NameChanged") && t != first_parking
        })
        .await;
    browser
        .click("discard", "#parked button[data-action=discard]")
        .await;
    browser
        .wait_text("discarded", "#action-result", |t| t.starts_with("discard:"))
        .await;
    browser
        .wait_text("nothing parked", "#parked tbody", |t| t.trim().is_empty())
        .await;
}

#[tokio::test]
async fn a_console_without_actions_refuses_them() {
    let server = TestServer::start();
    let listen = format!("127.0.0.1:{}", free_port());
    let _console = support::start(&server.url(), &["console", "--listen", &listen]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let overview = loop {
        if let Ok((200, body)) = jetsource::testing::http_get(&listen, "/api/overview").await {
            break serde_json::from_str::<Value>(&body).unwrap();
        }
        assert!(Instant::now() < deadline, "the console never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(overview["actions"], false, "{overview}");
    let mut stream = tokio::net::TcpStream::connect(&listen).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"POST /api/dlq/1/discard HTTP/1.0\r\nAuthorization: Bearer guess\r\n\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.0 403"), "{reply}");
}
