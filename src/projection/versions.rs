//! View versions: which bucket a projection's queries read.
//!
//! Version 1 lives in `view_<name>` with consumer `proj_<name>`; version N > 1 in
//! `view_<name>_vN` with `proj_<name>_vN`. KV `view_versions` holds the active
//! version under the projection's name (absent: 1). A rebuild fills the next
//! version from sequence 1 and flips this key only once it has caught up, so the
//! old version answers until then.

use crate::store::EventStore;
use async_nats::jetstream::kv;

/// The bucket naming each projection's active version.
pub const BUCKET: &str = "view_versions";

/// `view_<name>` or `view_<name>_v<version>`.
pub fn bucket_name(projection: &str, version: u32) -> String {
    match version {
        0 | 1 => format!("view_{projection}"),
        v => format!("view_{projection}_v{v}"),
    }
}

/// The view bucket a projection consumer writes (`proj_x_v2` → `view_x_v2`), or
/// `None` for a consumer that is no projection's.
///
/// ```
/// use jetsource::projection::versions::bucket_of_consumer;
/// assert_eq!(bucket_of_consumer("proj_offers_v2").as_deref(), Some("view_offers_v2"));
/// assert_eq!(bucket_of_consumer("saga_hiring"), None);
/// ```
pub fn bucket_of_consumer(consumer: &str) -> Option<String> {
    consumer
        .strip_prefix("proj_")
        .map(|rest| format!("view_{rest}"))
}

/// `proj_<name>` or `proj_<name>_v<version>`: the consumer of `projection`'s
/// `version`.
///
/// ```
/// assert_eq!(jetsource::projection::versions::consumer_name("offers", 2), "proj_offers_v2");
/// ```
pub fn consumer_name(projection: &str, version: u32) -> String {
    match version {
        0 | 1 => format!("proj_{projection}"),
        v => format!("proj_{projection}_v{v}"),
    }
}

/// What went wrong reading or switching a view's active version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionsErrorKind {
    /// The registry bucket could not be opened or created.
    Bucket,
    /// The active version could not be read.
    Read,
    /// The active version could not be written.
    Write,
}

impl std::fmt::Display for VersionsErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VersionsErrorKind::Bucket => write!(f, "the {BUCKET} bucket could not be opened"),
            VersionsErrorKind::Read => write!(f, "the active view version could not be read"),
            VersionsErrorKind::Write => write!(f, "the active view version could not be written"),
        }
    }
}

/// Error of [`active`] and [`set_active`].
pub type VersionsError = crate::error::Error<VersionsErrorKind>;

pub(crate) async fn registry(store: &EventStore) -> Result<kv::Store, VersionsError> {
    crate::store::buckets::open_plain(store, BUCKET)
        .await
        .map_err(|e| VersionsError::with_source(VersionsErrorKind::Bucket, e))
}

/// The version queries read now.
pub async fn active(store: &EventStore, projection: &str) -> Result<u32, VersionsError> {
    let kv = registry(store).await?;
    Ok(kv
        .get(projection)
        .await
        .map_err(|e| VersionsError::with_source(VersionsErrorKind::Read, e))?
        .and_then(|b| super::storage::decode_number(&b))
        .unwrap_or(1))
}

/// Makes `version` the one queries read.
pub async fn set_active(
    store: &EventStore,
    projection: &str,
    version: u32,
) -> Result<(), VersionsError> {
    let kv = registry(store).await?;
    kv.put(projection, super::storage::encode_number(version))
        .await
        .map(|_| ())
        .map_err(|e| VersionsError::with_source(VersionsErrorKind::Write, e))
}

/// Whether `consumer` is a projection version that queries no longer read (a
/// rebuild switched to a newer one), given every projection's active version.
///
/// ```
/// use jetsource::projection::versions::is_retired;
/// let active = [("offers".to_string(), 2)];
/// assert!(is_retired("proj_offers", &active));
/// assert!(!is_retired("proj_offers_v2", &active));
/// assert!(!is_retired("proj_people", &active));
/// ```
pub fn is_retired(consumer: &str, active: &[(String, u32)]) -> bool {
    active.iter().any(|(projection, version)| {
        consumer != consumer_name(projection, *version)
            && (consumer == consumer_name(projection, 1)
                || consumer
                    .strip_prefix(&format!("proj_{projection}_v"))
                    .is_some_and(|v| v.parse::<u32>().is_ok_and(|v| v > 1)))
    })
}

/// Every projection's active version, as registered (projections never
/// rebuilt are not listed: theirs is 1).
pub async fn all_active(store: &EventStore) -> Result<Vec<(String, u32)>, VersionsError> {
    use futures::TryStreamExt;
    let kv = registry(store).await?;
    fn read<E: Into<crate::error::BoxError>>(e: E) -> VersionsError {
        VersionsError::with_source(VersionsErrorKind::Read, e)
    }
    let keys: Vec<String> = kv
        .keys()
        .await
        .map_err(read)?
        .try_collect()
        .await
        .map_err(read)?;
    let mut active = Vec::with_capacity(keys.len());
    for key in keys {
        let version = kv
            .get(&key)
            .await
            .map_err(read)?
            .and_then(|b| super::storage::decode_number(&b))
            .unwrap_or(1);
        active.push((key, version));
    }
    Ok(active)
}

/// Deletes the versions of `projection` older than the active one (their view
/// buckets, checkpoints inside, and their consumers on the event stream) and
/// returns the versions that had something to delete (one whose deletion failed
/// is not listed: run it again). A rebuild in progress is a
/// newer version and is left alone; nodes and the projection's process have
/// followed the switch already (they watch [`BUCKET`]).
///
/// ```no_run
/// # async fn demo(store: jetsource::EventStore) {
/// let dropped = jetsource::projection::versions::drop_retired(&store, "offers").await.unwrap();
/// # }
/// ```
pub async fn drop_retired(store: &EventStore, projection: &str) -> Result<Vec<u32>, VersionsError> {
    let active = active(store, projection).await?;
    let events = store
        .jetstream()
        .get_stream(&store.config().stream)
        .await
        .map_err(|e| VersionsError::with_source(VersionsErrorKind::Write, e))?;
    let mut dropped = Vec::new();
    for version in 1..active {
        let consumer = events
            .delete_consumer(&consumer_name(projection, version))
            .await
            .is_ok();
        let bucket = store
            .jetstream()
            .delete_key_value(bucket_name(projection, version))
            .await
            .is_ok();
        if consumer || bucket {
            dropped.push(version);
        }
    }
    Ok(dropped)
}
