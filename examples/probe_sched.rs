use async_nats::jetstream;
use futures::StreamExt;
#[tokio::main]
async fn main() {
    let server = jetsource::testing::TestServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let stream = js
        .create_stream(jetstream::stream::Config {
            name: "TIMERS".into(),
            subjects: vec!["timers.>".into()],
            allow_message_schedules: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let at = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let mut h = async_nats::HeaderMap::new();
    h.insert(
        "Nats-Schedule",
        format!(
            "@at {}",
            at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        )
        .as_str(),
    );
    h.insert("Nats-Schedule-Target", "timers.fired.hiring.o1.expiry");
    h.insert("X-Mine", "yes");
    let ack = js
        .publish_with_headers("timers.hiring.o1.expiry", h.clone(), "body".into())
        .await
        .unwrap()
        .await;
    println!("ack {ack:?}");
    // republish same schedule subject (replace)
    let ack = js
        .publish_with_headers("timers.hiring.o1.expiry", h, "body2".into())
        .await
        .unwrap()
        .await;
    println!("ack2 {ack:?}");
    let c = stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("c".into()),
            filter_subject: "timers.fired.>".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let t0 = std::time::Instant::now();
    let mut msgs = c.messages().await.unwrap();
    let m = msgs.next().await.unwrap().unwrap();
    println!(
        "fired after {:?} at {} (wanted {}) subj {} headers {:?} body {:?}",
        t0.elapsed(),
        chrono::Utc::now(),
        at,
        m.subject,
        m.headers,
        m.payload
    );
    let mut info = stream.clone();
    println!("{:?}", info.info().await.unwrap().state);
    // past time
    let mut h = async_nats::HeaderMap::new();
    h.insert(
        "Nats-Schedule",
        format!(
            "@at {}",
            (chrono::Utc::now() - chrono::Duration::seconds(10))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
        .as_str(),
    );
    h.insert("Nats-Schedule-Target", "timers.fired.hiring.o2.expiry");
    let ack = js
        .publish_with_headers("timers.hiring.o2.expiry", h, "past".into())
        .await
        .unwrap()
        .await;
    println!("past ack {ack:?}");
    let t0 = std::time::Instant::now();
    let m = tokio::time::timeout(std::time::Duration::from_secs(5), msgs.next()).await;
    println!(
        "past fired {:?} after {:?}",
        m.map(|m| m.unwrap().unwrap().subject.clone()),
        t0.elapsed()
    );
    // restart durability: schedule, stop server, restart after due
    let mut h = async_nats::HeaderMap::new();
    h.insert(
        "Nats-Schedule",
        format!(
            "@at {}",
            (chrono::Utc::now() + chrono::Duration::seconds(2))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
        .as_str(),
    );
    h.insert("Nats-Schedule-Target", "timers.fired.hiring.o3.expiry");
    js.publish_with_headers("timers.hiring.o3.expiry", h, "r".into())
        .await
        .unwrap()
        .await
        .unwrap();
    drop(msgs);
    let mut server = server;
    server.stop();
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    server.restart();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let mut stream = js.get_stream("TIMERS").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    println!("after restart {:?}", stream.info().await.unwrap().state);
    let m = stream
        .get_last_raw_message_by_subject("timers.fired.hiring.o3.expiry")
        .await;
    println!("o3 fired {:?}", m.map(|m| m.subject));
}
