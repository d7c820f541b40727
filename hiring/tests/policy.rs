//! The shipped policy (dev/policy.toml) and the NATS accounts made from it
//! (dev/nats-accounts.conf), tried as the applications and attackers would: the
//! actor is the caller's NATS identity, each role sends only its commands, and an
//! application sees nothing but its own replies.

use futures::StreamExt;
use hiring::{Organization, Person};
use jetsource::nats_server::Durability;
use jetsource::node::{Node, NodeConfig, RunningNode};
use jetsource::testing::TestServer;
use jetsource::{EventStore, Policy, StoreConfig, Subjects};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const POLICY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../dev/policy.toml");
const ACCOUNTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../dev/nats-accounts.conf");

fn policy() -> Policy {
    Policy::load(POLICY.as_ref()).unwrap()
}

/// The shipped accounts with each `$X_PASSWORD` replaced by `x-secret`.
fn accounts() -> String {
    let mut text = std::fs::read_to_string(ACCOUNTS).unwrap();
    for name in ["JETSOURCE", "HR_PORTAL", "CAREERS_SITE"] {
        let secret = format!("\"{}-secret\"", name.to_lowercase());
        text = text.replace(&format!("${name}_PASSWORD"), &secret);
    }
    text
}

async fn connect(server: &TestServer, user: &str) -> async_nats::Client {
    let options =
        async_nats::ConnectOptions::with_user_and_password(user.into(), format!("{user}-secret"));
    jetsource::connect_with(&server.url(), options)
        .await
        .unwrap()
}

struct Deployment {
    server: TestServer,
    store: EventStore,
    _node: RunningNode,
}

async fn deployment() -> Deployment {
    let server = TestServer::start_with_config(Durability::Fast, &accounts());
    let store = EventStore::open(connect(&server, "jetsource").await, StoreConfig::default())
        .await
        .unwrap();
    let config = NodeConfig {
        policy: Some(Arc::new(policy())),
        ..Default::default()
    };
    let node = Node::new(store.clone(), config)
        .register::<Person>(Default::default())
        .register::<Organization>(Default::default())
        .start()
        .await
        .unwrap();
    Deployment {
        server,
        store,
        _node: node,
    }
}

/// The reply's status code (None for an accepted command or an answered query)
/// and body.
async fn request(
    client: &async_nats::Client,
    subject: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> (Option<u16>, Value) {
    let mut h = async_nats::HeaderMap::new();
    for (name, value) in headers {
        h.insert(*name, *value);
    }
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        client.request_with_headers(subject.to_string(), h, body.to_string().into()),
    )
    .await
    .expect("a reply within 5 s")
    .expect("a reply");
    let code = reply
        .headers
        .as_ref()
        .and_then(|h| h.get(async_nats::service::NATS_SERVICE_ERROR_CODE))
        .map(|v| v.as_str().parse().unwrap());
    (code, serde_json::from_slice(&reply.payload).unwrap())
}

fn ada() -> Value {
    json!({"id": "ada", "name": "Ada", "email": "ada@example.org"})
}

#[tokio::test]
async fn the_shipped_accounts_are_what_the_policy_generates() {
    let shipped = std::fs::read_to_string(ACCOUNTS).unwrap();
    assert_eq!(
        shipped,
        policy().nats_config(&Subjects::default()),
        "dev/nats-accounts.conf is stale: run `jetsource policy nats-config dev/policy.toml > dev/nats-accounts.conf`"
    );
}

#[tokio::test]
async fn the_actor_is_the_callers_nats_identity_not_a_header() {
    let d = deployment().await;
    let hr = connect(&d.server, "hr_portal").await;

    // A forged Nats-Request-Info is replaced by the server's on the way through
    // the import, so the node still sees hr_portal.
    let forged = r#"{"acc":"JETSOURCE","user":"jetsource"}"#;
    let (code, ack) = request(
        &hr,
        "cmd.person.Register",
        ada(),
        &[
            ("Nats-Request-Info", forged),
            ("Jetsource-On-Behalf-Of", "clerk-17"),
        ],
    )
    .await;
    assert_eq!(code, None, "{ack}");
    let events = d.store.read_aggregate("person", "ada", 0).await.unwrap();
    assert_eq!(events[0].metadata.actor.as_deref(), Some("hr_portal"));
    assert_eq!(events[0].metadata.on_behalf_of.as_deref(), Some("clerk-17"));

    // Naming an actor is refused outright rather than silently dropped.
    let body = json!({"id": "bob", "name": "Bob", "email": "bob@example.org"});
    let (code, reply) = request(
        &hr,
        "cmd.person.Register",
        body,
        &[("Jetsource-Actor", "admin@corp")],
    )
    .await;
    assert_eq!(code, Some(403), "{reply}");
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Jetsource-Actor"));
    let bob = d.store.read_aggregate("person", "bob", 0).await.unwrap();
    assert!(bob.is_empty(), "a refused command stores nothing");
}

#[tokio::test]
async fn each_role_sends_only_its_commands_and_asks_only_its_queries() {
    let d = deployment().await;
    let hr = connect(&d.server, "hr_portal").await;
    let careers = connect(&d.server, "careers_site").await;
    let internal = connect(&d.server, "jetsource").await;

    let (code, _) = request(&hr, "cmd.person.Register", ada(), &[]).await;
    assert_eq!(code, None, "a recruiter registers people");
    let (code, reply) = request(&careers, "cmd.person.Register", ada(), &[]).await;
    assert_eq!(code, Some(403), "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("careers_site may not send command person.Register"),
        "{reply}"
    );

    // The saga's own steps: no application may send them, jetsource's account may.
    let offer = json!({"id": "ada", "offer_id": "o-1", "organization_id": "acme",
        "position_id": "eng-1", "expires_at": "2030-01-01T00:00:00Z"});
    for client in [&hr, &careers] {
        let (code, reply) = request(client, "cmd.person.RecordOffer", offer.clone(), &[]).await;
        assert_eq!(code, Some(403), "{reply}");
    }
    let hire = json!({"id": "acme", "offer_id": "o-1"});
    let (code, _) = request(&hr, "cmd.organization.Hire", hire.clone(), &[]).await;
    assert_eq!(
        code,
        Some(403),
        "an application cannot hire without the saga"
    );
    let (code, reply) = request(&internal, "cmd.person.RecordOffer", offer, &[]).await;
    assert_ne!(code, Some(403), "{reply}");
    let (code, reply) = request(&internal, "cmd.organization.Hire", hire, &[]).await;
    assert_ne!(code, Some(403), "{reply}");

    // A candidate answers offers (here refused by the domain, not by the policy)
    // and reads people but not organizations.
    let accept = json!({"id": "ada", "offer_id": "o-404"});
    let (code, reply) = request(&careers, "cmd.person.AcceptOffer", accept, &[]).await;
    assert!(matches!(code, Some(404 | 409)), "{code:?} {reply}");
    let (code, reply) = request(&careers, "qry.person.get", json!({"id": "ada"}), &[]).await;
    assert_eq!(code, None, "{reply}");
    let (code, _) = request(&careers, "qry.organization.get", json!({"id": "acme"}), &[]).await;
    assert_eq!(code, Some(403));
    let (code, _) = request(&careers, "qry.system.status", json!({}), &[]).await;
    assert_eq!(code, Some(403));
}

#[tokio::test]
async fn an_application_sees_nothing_but_its_own_replies() {
    let d = deployment().await;
    let hr = connect(&d.server, "hr_portal").await;
    let attacker = connect(&d.server, "careers_site").await;

    // Everything the attacker may subscribe to, plus what it may not.
    let mut inboxes = attacker.subscribe("_INBOX.>").await.unwrap();
    let mut commands = attacker.subscribe("cmd.>").await.unwrap();
    let mut everything = attacker.subscribe(">").await.unwrap();
    attacker.flush().await.unwrap();

    // The victim's traffic: a command and its reply, and the node's own
    // JetStream traffic behind it.
    let (code, _) = request(&hr, "cmd.person.Register", ada(), &[]).await;
    assert_eq!(code, None);
    // A reply aimed at the victim's inbox lands in the attacker's own account.
    let mut victim_inbox = hr.subscribe("_INBOX.victim").await.unwrap();
    hr.flush().await.unwrap();
    attacker
        .publish_with_reply(
            "qry.person.get",
            "_INBOX.victim",
            json!({"id": "ada"}).to_string().into(),
        )
        .await
        .unwrap();
    attacker.flush().await.unwrap();

    let seen = tokio::time::timeout(Duration::from_millis(500), victim_inbox.next()).await;
    assert!(
        seen.is_err(),
        "the victim's inbox got a reply it never asked for"
    );
    // The attacker's own (misdirected) query reply is all it may see.
    let mut own = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), inboxes.next()).await {
        own.push(m);
    }
    assert_eq!(own.len(), 1, "only the attacker's own query reply");
    assert_eq!(own[0].subject.as_str(), "_INBOX.victim");
    for denied in [&mut commands, &mut everything] {
        let got = tokio::time::timeout(Duration::from_millis(100), denied.next()).await;
        assert!(
            !matches!(got, Ok(Some(_))),
            "a subscription outside _INBOX.> must receive nothing"
        );
    }

    // Nor can it reach the event store: no JetStream in its account, no publish
    // outside commands and queries.
    let js = async_nats::jetstream::new(attacker.clone());
    let info = tokio::time::timeout(Duration::from_secs(2), js.query_account()).await;
    assert!(!matches!(info, Ok(Ok(_))), "JetStream reachable: {info:?}");
    attacker
        .publish("events.person.ada", "forged".into())
        .await
        .unwrap();
    attacker.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let events = d.store.read_aggregate("person", "ada", 0).await.unwrap();
    assert_eq!(events.len(), 1, "only the command's event is stored");
}
