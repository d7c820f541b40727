//! A view's checkpoint names one event of one stream. Finding (issue 14): after a
//! power cut in `fast` mode the stream came back empty and new events reused
//! sequences 1.. that earlier acks had handed out, so a projection checkpointed
//! past them would have skipped them. Deleting and recreating the stream does
//! the same to a checkpoint, and is what these tests do.

mod support;

use jetsource::projection::{status, ProjectionRunner, RunnerErrorKind};
use jetsource::testing::TestServer;
use jetsource::{EventStore, StoreConfig};
use std::time::{Duration, Instant};

/// Applies everything in the stream to `person_directory` in this process.
async fn directory_caught_up(store: &EventStore) {
    let mut runner =
        ProjectionRunner::new(store.clone(), hiring::PersonDirectory, Default::default())
            .await
            .unwrap();
    let last = store.last_seq().await.unwrap();
    while runner.checkpoint() < last {
        runner.step().await.unwrap();
    }
}

/// Registers people `new<i>` for `i` in `ids`.
async fn register_new(store: &EventStore, ids: std::ops::Range<usize>) {
    let repository =
        jetsource::Repository::<hiring::Person>::new(store.clone(), Default::default());
    for i in ids {
        let cmd = hiring::PersonCommand::Register {
            name: format!("New {i}"),
            email: format!("new{i}@x.org"),
        };
        repository
            .execute(&format!("new{i}"), &cmd, &jetsource::Metadata::default())
            .await
            .unwrap();
    }
}

/// Deletes the event stream and makes it anew (what a lost stream looks like to
/// a process that comes back), with `people` new people in it.
async fn stream_recreated_with(
    store: &EventStore,
    server: &TestServer,
    people: usize,
) -> EventStore {
    store.jetstream().delete_stream("EVENTS").await.unwrap();
    let client = jetsource::connect(&server.url()).await.unwrap();
    let store = EventStore::open(client, StoreConfig::default())
        .await
        .unwrap();
    register_new(&store, 0..people).await;
    store
}

fn stream_changed(e: &jetsource::projection::RunnerError) -> Option<(u64, String)> {
    match e.kind() {
        RunnerErrorKind::StreamChanged(c) => Some((c.checkpoint, c.found.clone())),
        _ => None,
    }
}

#[tokio::test]
async fn a_projection_checkpointed_past_a_recreated_stream_would_skip_its_events() {
    let server = TestServer::start_with(jetsource::nats_server::Durability::Fast);
    let store = support::open_store(&server).await;
    support::register_people(&store, 30).await;
    directory_caught_up(&store).await;

    // The stream comes back shorter than the checkpoint: no event at 30.
    let store = stream_recreated_with(&store, &server, 10).await;
    let refused = ProjectionRunner::new(store.clone(), hiring::PersonDirectory, Default::default())
        .await
        .unwrap_err();
    assert_eq!(
        stream_changed(&refused),
        Some((30, "no event".into())),
        "{refused}"
    );

    // New events reach past the checkpoint: the event at 30 is another one.
    register_new(&store, 10..40).await;
    let refused = ProjectionRunner::new(store.clone(), hiring::PersonDirectory, Default::default())
        .await
        .unwrap_err();
    let (at, found) = stream_changed(&refused).expect("a changed stream");
    assert_eq!(at, 30);
    assert!(found.starts_with("an event stored at"), "{found}");

    // `status` says so, and `status --check` fails on it.
    let shown = status::consumer(&store, "proj_person_directory")
        .await
        .unwrap()
        .expect("the consumer is listed");
    assert!(shown.stream_changed.is_some(), "{shown:?}");
    let check = support::run(&server.url(), &["status", "--check"]);
    assert_eq!(check.status.code(), Some(2));
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(text.contains("STREAM CHANGED"), "{text}");
}

#[tokio::test]
async fn a_running_projection_stops_applying_when_its_stream_is_recreated_and_follows_the_rebuild()
{
    let server = TestServer::start_with(jetsource::nats_server::Durability::Fast);
    let store = support::open_store(&server).await;
    support::register_people(&store, 30).await;
    let url = server.url();
    let _projection = support::start(&url, &["project", "person_directory"]);
    let v1 = |store: EventStore| async move {
        jetsource::projection::storage::applied(&store, "view_person_directory")
            .await
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while v1(store.clone()).await < 30 {
        assert!(Instant::now() < deadline, "version 1 never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let store = stream_recreated_with(&store, &server, 40).await;
    // The running projection loses its consumer, comes back, and refuses: its
    // checkpoint stays where it was, nothing of the new stream is applied.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(v1(store.clone()).await, 30);
    let rows = support::view_rows(&store, "view_person_directory").await;
    assert!(
        !rows.keys().any(|k| k.contains("new")),
        "nothing of the new stream applied"
    );

    // A rebuild makes version 2 from the new stream; the process follows it.
    let rebuilt = support::run_ok(&url, &["project", "person_directory", "--rebuild"]);
    assert!(rebuilt.contains("version 2 built and active"), "{rebuilt}");
    support::register_people(&store, 5).await;
    let last = store.last_seq().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v2 = jetsource::projection::storage::applied(&store, "view_person_directory_v2")
            .await
            .unwrap_or(0);
        if v2 >= last {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the process did not follow version 2: {v2} of {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let shown = status::consumer(&store, "proj_person_directory_v2")
        .await
        .unwrap()
        .expect("listed");
    assert_eq!(shown.stream_changed, None);
}

#[tokio::test]
async fn a_saga_checkpointed_past_a_recreated_stream_refuses_to_start() {
    use jetsource::client::Client;
    use jetsource::saga::{SagaErrorKind, SagaRunner};
    let server = TestServer::start_with(jetsource::nats_server::Durability::Fast);
    let store = support::open_store(&server).await;
    support::register_people(&store, 30).await;
    let client = || Client::new(store.client().clone(), jetsource::Subjects::default());
    let mut runner = SagaRunner::new(store.clone(), client(), hiring::Hiring, Default::default())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while runner.checkpoint() < 30 {
        assert!(
            Instant::now() < deadline,
            "the saga never read the 30 events"
        );
        runner.step().await.unwrap();
    }
    drop(runner);

    let store = stream_recreated_with(&store, &server, 40).await;
    let client = Client::new(store.client().clone(), jetsource::Subjects::default());
    let refused = SagaRunner::new(store.clone(), client, hiring::Hiring, Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(refused.kind(), SagaErrorKind::StreamChanged(c) if c.checkpoint == 30),
        "{refused}"
    );
    let shown = status::consumer(&store, "saga_hiring")
        .await
        .unwrap()
        .expect("listed");
    assert!(shown.stream_changed.is_some(), "{shown:?}");

    // The process says why in one line and exits 1.
    let out = support::run(&server.url(), &["saga", "hiring"]);
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("the saga refuses to go on"), "{said}");
}

/// What a power cut in `fast` mode does: the server dies, the unsynced tail of
/// the stream's block is lost, and the server comes back with the stream short
/// of what it acknowledged. Here the block is cut in half while it is down.
fn power_cut(server: &mut TestServer) {
    server.stop();
    let msgs = server.store_dir().join("jetstream/$G/streams/EVENTS/msgs");
    let block = msgs.join("1.blk");
    let size = std::fs::metadata(&block).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&block)
        .unwrap();
    file.set_len(size / 2).unwrap();
    let _ = std::fs::remove_file(msgs.join("index.db"));
    server.restart();
}

/// The durable consumer survives such a cut with its position, so a projection
/// that only reconnects (no error reaches it) would be handed the new events
/// after its old position and never the ones that reused the lost sequences.
#[tokio::test]
async fn a_running_projection_notices_a_power_cut_that_shortened_its_stream() {
    let mut server = TestServer::start_with(jetsource::nats_server::Durability::Fast);
    let store = support::open_store(&server).await;
    support::register_people(&store, 300).await;
    let _projection = support::start(&server.url(), &["project", "person_directory"]);
    let applied = |store: EventStore| async move {
        jetsource::projection::storage::applied(&store, "view_person_directory")
            .await
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while applied(store.clone()).await < 300 {
        assert!(Instant::now() < deadline, "never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    power_cut(&mut server);
    let store = support::open_store(&server).await;
    let left = store.last_seq().await.unwrap();
    assert!(left < 300, "the cut left {left} events");
    register_new(&store, 0..300).await;
    assert!(
        store.last_seq().await.unwrap() > 300,
        "new events reuse the lost sequences"
    );

    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        applied(store.clone()).await,
        300,
        "nothing applied past the cut"
    );
    let rows = support::view_rows(&store, "view_person_directory").await;
    assert!(
        !rows.keys().any(|k| k.contains("new")),
        "nothing of the new events applied"
    );
    let shown = status::consumer(&store, "proj_person_directory")
        .await
        .unwrap()
        .expect("listed");
    assert!(shown.stream_changed.is_some(), "{shown:?}");
}
