//! KV buckets jetsource keeps beside the event stream: opened if they exist,
//! created with the given configuration if not.

use async_nats::jetstream::context::CreateKeyValueError;
use async_nats::jetstream::{self, kv};

/// The bucket `config.bucket`, created with `config` when it does not exist yet.
/// An existing bucket is used as it is, also one another process created with
/// another configuration between our look and our create (a node and a
/// projection starting together both make the view's bucket: the loser's create
/// fails with "stream name already in use", and it must use the winner's).
pub(crate) async fn ensure(
    js: &jetstream::Context,
    config: kv::Config,
) -> Result<kv::Store, CreateKeyValueError> {
    if let Ok(kv) = js.get_key_value(&config.bucket).await {
        return Ok(kv);
    }
    let bucket = config.bucket.clone();
    match js.create_key_value(config).await {
        Ok(kv) => Ok(kv),
        Err(create) => js.get_key_value(&bucket).await.map_err(|_| create),
    }
}

/// A plain bucket: one value per key, file storage, `replicas` copies.
pub(crate) fn plain(name: impl Into<String>, replicas: usize) -> kv::Config {
    kv::Config {
        bucket: name.into(),
        history: 1,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// The plain bucket `name` beside `store`'s stream (its replica count), created
/// if missing.
pub(crate) async fn open_plain(
    store: &super::EventStore,
    name: impl Into<String>,
) -> Result<kv::Store, CreateKeyValueError> {
    ensure(store.jetstream(), plain(name, store.config().replicas)).await
}
