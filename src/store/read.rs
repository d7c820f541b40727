//! Reading: paged batched direct gets, and an ordered consumer for long reads.
//!
//! A read starts with a `$JS.API.DIRECT.GET.<stream>` request with `next_by_subj`
//! and `batch`; the server answers with up to a page of messages and an
//! end-of-batch status carrying how many remain. A short read (an aggregate's
//! events, most often) ends there or a page or two later, one round trip each and
//! no server state. When more than [`CONSUMER_AFTER`] remain after a page, the
//! rest comes from an ephemeral ordered consumer from the next sequence: creating
//! it costs about a millisecond, and each message then costs the server a quarter
//! of what a direct get's reply does (it sends the stored headers as they are,
//! where a direct get adds six). If the consumer cannot be made (a user without
//! the right to create one), the read goes on with direct gets.

use super::envelope::{names, MalformedEvent, RecordedEvent};
use super::{EventStore, Position};
use crate::error::Error;
use crate::subjects::{validate_aggregate_name, validate_id, InvalidToken};
use async_nats::jetstream::consumer::pull;
use async_nats::Message;
use chrono::{DateTime, Utc};
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use serde_json::{json, Value};
use std::collections::{HashSet, VecDeque};
use std::fmt;

/// What went wrong reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadErrorKind {
    /// The aggregate type or id cannot be a subject token.
    InvalidName {
        /// `aggregate` or `id`.
        what: &'static str,
        /// Why.
        reason: InvalidToken,
    },
    /// A stored message is not a valid event (it names its sequence).
    Malformed(MalformedEvent),
    /// No answer in time.
    TimedOut,
    /// The server or stream is not reachable.
    Unavailable,
    /// Reading on would replay more events than a bounded read may (time
    /// travel far from any snapshot).
    TooLong {
        /// The most events the read may replay.
        limit: u64,
    },
    /// The server answered with an error status.
    Store {
        /// Status code.
        code: u16,
        /// The server's description.
        description: String,
    },
}

impl fmt::Display for ReadErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidName { what, reason } => write!(f, "invalid {what}: it {reason}"),
            Self::Malformed(m) => write!(f, "{m}"),
            Self::TimedOut => write!(f, "read timed out"),
            Self::Unavailable => write!(f, "event store unavailable"),
            Self::TooLong { limit } => write!(
                f,
                "more than {limit} events to replay from the nearest snapshot: pick a later point"
            ),
            Self::Store { code, description } => {
                write!(f, "store refused the read ({code}): {description}")
            }
        }
    }
}

/// Error of the read operations of [`EventStore`].
pub type ReadError = Error<ReadErrorKind>;

/// Events of one aggregate type, optionally of some event types, stored in a time
/// range. Skipped events are filtered by header: their bodies are never decoded.
///
/// ```
/// let q = jetsource::store::TypeQuery::new("person").types(["OfferAccepted"]);
/// assert_eq!(q.aggregate, "person");
/// ```
#[derive(Debug, Clone)]
pub struct TypeQuery {
    /// Aggregate type.
    pub aggregate: String,
    /// Event types to keep; empty keeps all.
    pub event_types: HashSet<String>,
    /// Stored at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Stored at or before this instant.
    pub until: Option<DateTime<Utc>>,
}

impl TypeQuery {
    /// All events of `aggregate`.
    pub fn new(aggregate: impl Into<String>) -> TypeQuery {
        TypeQuery {
            aggregate: aggregate.into(),
            event_types: HashSet::new(),
            since: None,
            until: None,
        }
    }
    /// Only these event types.
    pub fn types<I: IntoIterator<Item = S>, S: Into<String>>(mut self, types: I) -> TypeQuery {
        self.event_types = types.into_iter().map(Into::into).collect();
        self
    }
    /// Stored at or after `since`.
    pub fn since(mut self, since: DateTime<Utc>) -> TypeQuery {
        self.since = Some(since);
        self
    }
    /// Stored at or before `until`.
    pub fn until(mut self, until: DateTime<Utc>) -> TypeQuery {
        self.until = Some(until);
        self
    }
}

/// Events still to read after a page, above which the read switches to an
/// ordered consumer (see the module docs).
pub const CONSUMER_AFTER: u64 = 1000;

/// The first page of a read: most reads are short (an aggregate's events), and a
/// long one should not pay for a full page of direct gets (each costs the server
/// about four times a consumer's delivery) before it switches.
const FIRST_PAGE: usize = 200;

/// Ordered consumers one store runs for long reads at once; a long read beyond
/// them stays with direct gets.
pub(crate) const LONG_READS: usize = 16;

/// The ordered consumer reading the rest of a long read; deleted from the
/// server when dropped (a read that ends early must not leave it there).
struct LongRead {
    messages: pull::Ordered,
    stream: async_nats::jetstream::stream::Stream<()>,
    name: String,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for LongRead {
    fn drop(&mut self) {
        let (stream, name) = (self.stream.clone(), std::mem::take(&mut self.name));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = stream.delete_consumer(&name).await;
            });
        }
    }
}

/// A paging position over one subject filter.
struct Cursor {
    store: EventStore,
    filter: String,
    next_seq: u64,
    start_time: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    types: HashSet<String>,
    remaining: usize,
    buf: VecDeque<Result<RecordedEvent, ReadError>>,
    done: bool,
    /// Whether the first page has been asked for.
    started: bool,
    /// The rest of a long read, once it has switched.
    consumer: Option<LongRead>,
}

impl Cursor {
    fn new(store: &EventStore, filter: String, after_seq: u64) -> Cursor {
        Cursor {
            store: store.clone(),
            filter,
            next_seq: after_seq + 1,
            start_time: None,
            until: None,
            types: HashSet::new(),
            remaining: usize::MAX,
            buf: VecDeque::new(),
            done: false,
            started: false,
            consumer: None,
        }
    }

    fn into_stream(self) -> BoxStream<'static, Result<RecordedEvent, ReadError>> {
        futures::stream::unfold(self, |mut c| async move {
            loop {
                if let Some(item) = c.buf.pop_front() {
                    return Some((item, c));
                }
                if c.done {
                    return None;
                }
                if let Err(e) = c.fill().await {
                    c.done = true;
                    return Some((Err(e), c));
                }
            }
        })
        .boxed()
    }

    /// Fetches one page into the buffer. A message that is not an event ends the
    /// page with its error, after the good events before it.
    async fn fill(&mut self) -> Result<(), ReadError> {
        let mut page = self.store.config().read_page.min(self.remaining).max(1);
        if self.consumer.is_some() {
            return self.fill_from_consumer(page).await;
        }
        if !self.started {
            self.started = true;
            page = page.min(FIRST_PAGE);
        }
        let mut request = json!({"next_by_subj": self.filter, "batch": page});
        match self.start_time.take() {
            Some(t) => request["start_time"] = json!(t.to_rfc3339()),
            None => request["seq"] = json!(self.next_seq),
        }
        let (messages, pending) = self.store.direct_get(&request, true).await?;
        if pending == 0 || messages.is_empty() {
            self.done = true;
        }
        for msg in &messages {
            let (seq, stored_at) = stored_position(msg)?;
            let subject = header(msg, "Nats-Subject").unwrap_or_default();
            if !self.take(subject, msg, seq, stored_at) {
                break;
            }
        }
        if !self.done && pending > CONSUMER_AFTER {
            self.consumer = self
                .store
                .ordered_consumer(&self.filter, self.next_seq)
                .await;
        }
        Ok(())
    }

    /// Reads up to `page` messages of the ordered consumer into the buffer; the
    /// read ends with the message after which none were pending.
    async fn fill_from_consumer(&mut self, page: usize) -> Result<(), ReadError> {
        let timeout = self.store.config().request_timeout;
        for _ in 0..page {
            let Some(consumer) = self.consumer.as_mut() else {
                break;
            };
            let msg = match tokio::time::timeout(timeout, consumer.messages.next()).await {
                Ok(Some(Ok(msg))) => msg,
                Ok(Some(Err(e))) => {
                    return Err(ReadError::with_source(ReadErrorKind::Unavailable, e))
                }
                Ok(None) => return Err(ReadError::new(ReadErrorKind::Unavailable)),
                Err(_) => return Err(ReadError::new(ReadErrorKind::TimedOut)),
            };
            let info = msg
                .info()
                .map_err(|e| ReadError::with_source(ReadErrorKind::Unavailable, e))?;
            let (seq, pending) = (info.stream_sequence, info.pending);
            let stored_at = DateTime::from_timestamp_nanos(
                i64::try_from(info.published.unix_timestamp_nanos()).unwrap_or(i64::MAX),
            );
            if pending == 0 {
                self.done = true;
            }
            if !self.take(&msg.subject, &msg, seq, Some(stored_at)) || self.done {
                break;
            }
        }
        if self.done {
            self.consumer = None; // deletes it now rather than when the reader drops
        }
        Ok(())
    }

    /// Buffers one stored message as an event unless a filter skips it; `false`
    /// when the read has ended (a limit, the end of the time range, or a message
    /// that is not an event, which is buffered as the read's error).
    fn take(
        &mut self,
        subject: &str,
        msg: &Message,
        seq: u64,
        stored_at: Option<DateTime<Utc>>,
    ) -> bool {
        self.next_seq = seq + 1;
        if self
            .until
            .is_some_and(|until| stored_at.is_some_and(|t| t > until))
        {
            self.done = true;
            return false;
        }
        if !self.types.is_empty() {
            let event_type = msg.headers.as_ref().and_then(|h| h.get(names::EVENT_TYPE));
            if !event_type.is_some_and(|t| self.types.contains(t.as_str())) {
                return true;
            }
        }
        let event = self.store.to_event(subject, msg, seq, stored_at);
        let failed = event.is_err();
        self.buf.push_back(event);
        self.remaining -= 1;
        if failed || self.remaining == 0 {
            self.done = true;
            return false;
        }
        true
    }
}

fn header<'a>(msg: &'a Message, name: &str) -> Option<&'a str> {
    msg.headers.as_ref()?.get(name).map(|v| v.as_str())
}

fn stored_position(msg: &Message) -> Result<(u64, Option<DateTime<Utc>>), ReadError> {
    let seq = header(msg, "Nats-Sequence")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            ReadError::new(ReadErrorKind::Store {
                code: 0,
                description: "direct get reply without Nats-Sequence".into(),
            })
        })?;
    let stored_at = header(msg, "Nats-Time-Stamp")
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    Ok((seq, stored_at))
}

fn check_names(aggregate: &str, id: Option<&str>) -> Result<(), ReadError> {
    validate_aggregate_name(aggregate).map_err(|reason| {
        ReadError::new(ReadErrorKind::InvalidName {
            what: "aggregate",
            reason,
        })
    })?;
    if let Some(id) = id {
        validate_id(id)
            .map_err(|reason| ReadError::new(ReadErrorKind::InvalidName { what: "id", reason }))?;
    }
    Ok(())
}

impl EventStore {
    /// One aggregate's events after stream sequence `after_seq` (0: all), in order.
    ///
    /// ```no_run
    /// # async fn demo(store: jetsource::EventStore) -> Result<(), jetsource::store::ReadError> {
    /// for event in store.read_aggregate("person", "42", 0).await? {
    ///     println!("v{} {}", event.version, event.event_type);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn read_aggregate(
        &self,
        aggregate: &str,
        id: &str,
        after_seq: u64,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        self.stream_aggregate(aggregate, id, after_seq)
            .try_collect()
            .await
    }

    /// At most `limit` of one aggregate's events after `after_seq`.
    pub(crate) async fn read_aggregate_limit(
        &self,
        aggregate: &str,
        id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        check_names(aggregate, Some(id))?;
        let mut cursor = Cursor::new(self, self.subjects().aggregate(aggregate, id), after_seq);
        cursor.remaining = limit;
        cursor.into_stream().try_collect().await
    }

    /// The events command `command_id` stored on one aggregate, if it is inside
    /// the stream's duplicate window: what a retry of it is answered with.
    ///
    /// With `from_seq` (the sequence the server reported for the command's first
    /// event) it reads from there; without, it scans the aggregate's events stored
    /// within the window (plus a minute of clock slack), never older ones.
    ///
    /// ```no_run
    /// # async fn demo(store: jetsource::EventStore) -> Result<(), jetsource::store::ReadError> {
    /// let original = store.find_command("person", "42", "c-1", None).await?;
    /// println!("{} events", original.len());
    /// # Ok(()) }
    /// ```
    pub async fn find_command(
        &self,
        aggregate: &str,
        id: &str,
        command_id: &str,
        from_seq: Option<u64>,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        check_names(aggregate, Some(id))?;
        let mut cursor = Cursor::new(
            self,
            self.subjects().aggregate(aggregate, id),
            from_seq.map_or(0, |s| s.saturating_sub(1)),
        );
        if from_seq.is_none() {
            let window = self.config().duplicate_window + std::time::Duration::from_secs(60);
            cursor.start_time = chrono::Duration::from_std(window)
                .ok()
                .and_then(|w| Utc::now().checked_sub_signed(w));
        }
        let mut events = cursor.into_stream();
        let mut found = Vec::new();
        while let Some(event) = events.try_next().await? {
            if event.metadata.command_id.as_deref() == Some(command_id) {
                found.push(event);
            } else if !found.is_empty() {
                break; // A command's events are contiguous on its subject.
            }
        }
        Ok(found)
    }

    /// One aggregate's events after `after_seq` as a stream, a page at a time: for
    /// histories too long to hold at once.
    ///
    /// ```no_run
    /// # async fn demo(store: jetsource::EventStore) -> Result<(), jetsource::store::ReadError> {
    /// use futures::TryStreamExt;
    /// let mut events = store.stream_aggregate("person", "42", 0);
    /// while let Some(event) = events.try_next().await? {
    ///     println!("{}", event.event_type);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn stream_aggregate(
        &self,
        aggregate: &str,
        id: &str,
        after_seq: u64,
    ) -> BoxStream<'static, Result<RecordedEvent, ReadError>> {
        if let Err(e) = check_names(aggregate, Some(id)) {
            return futures::stream::once(async { Err(e) }).boxed();
        }
        Cursor::new(self, self.subjects().aggregate(aggregate, id), after_seq).into_stream()
    }

    /// The global log: every event from stream sequence `from_seq` on, in order.
    ///
    /// ```no_run
    /// # async fn demo(store: jetsource::EventStore) {
    /// use futures::StreamExt;
    /// let first_ten: Vec<_> = store.read_all(1).take(10).collect().await;
    /// # }
    /// ```
    pub fn read_all(&self, from_seq: u64) -> BoxStream<'static, Result<RecordedEvent, ReadError>> {
        Cursor::new(
            self,
            self.subjects().all_events(),
            from_seq.saturating_sub(1),
        )
        .into_stream()
    }

    /// Events of one aggregate type, filtered by event type and stored time.
    ///
    /// ```no_run
    /// # async fn demo(store: jetsource::EventStore) {
    /// use futures::StreamExt;
    /// let monday = chrono::Utc::now() - chrono::Duration::days(3);
    /// let query = jetsource::store::TypeQuery::new("person").types(["OfferAccepted"]).since(monday);
    /// let accepted: Vec<_> = store.read_by_type(query).collect().await;
    /// # }
    /// ```
    pub fn read_by_type(
        &self,
        query: TypeQuery,
    ) -> BoxStream<'static, Result<RecordedEvent, ReadError>> {
        if let Err(e) = check_names(&query.aggregate, None) {
            return futures::stream::once(async { Err(e) }).boxed();
        }
        let mut cursor = Cursor::new(self, self.subjects().aggregate_type(&query.aggregate), 0);
        cursor.start_time = query.since;
        cursor.until = query.until;
        cursor.types = query.event_types;
        cursor.into_stream()
    }

    /// Where an aggregate stands now, from its last event; `None` if it has none.
    pub async fn last_position(
        &self,
        aggregate: &str,
        id: &str,
    ) -> Result<Option<Position>, ReadError> {
        check_names(aggregate, Some(id))?;
        let request = json!({"last_by_subj": self.subjects().aggregate(aggregate, id)});
        let (mut messages, _) = self.direct_get(&request, false).await?;
        let Some(msg) = messages.pop() else {
            return Ok(None);
        };
        let event = self.direct_event(&msg)?;
        Ok(Some(Position {
            seq: event.seq,
            version: event.version,
        }))
    }

    /// The stream's last sequence (0 when empty): how far the whole store has come.
    pub async fn last_seq(&self) -> Result<u64, ReadError> {
        Ok(self.stream_end().await?.0)
    }

    /// The stream's last sequence and when its message was stored (`(0, None)`
    /// when empty): where a caught-up reader stands, and which event that is.
    pub(crate) async fn stream_end(&self) -> Result<(u64, Option<DateTime<Utc>>), ReadError> {
        let mut stream = self
            .jetstream()
            .get_stream(&self.config().stream)
            .await
            .map_err(|e| ReadError::with_source(ReadErrorKind::Unavailable, e))?;
        let info = stream
            .info()
            .await
            .map_err(|e| ReadError::with_source(ReadErrorKind::Unavailable, e))?;
        let last = info.state.last_timestamp;
        let stored_at = DateTime::from_timestamp(last.unix_timestamp(), last.nanosecond());
        Ok(match info.state.last_sequence {
            0 => (0, None),
            seq => (seq, stored_at),
        })
    }

    /// When the message at `seq` was stored, if the stream has one there (read
    /// without decoding it: a parked, unreadable event has a time too).
    pub(crate) async fn stored_at(&self, seq: u64) -> Result<Option<DateTime<Utc>>, ReadError> {
        let (mut messages, _) = self.direct_get(&json!({"seq": seq}), false).await?;
        match messages.pop() {
            Some(msg) => Ok(stored_position(&msg)?.1),
            None => Ok(None),
        }
    }

    /// The event at one stream sequence, if there is one.
    pub async fn read_seq(&self, seq: u64) -> Result<Option<RecordedEvent>, ReadError> {
        let (mut messages, _) = self.direct_get(&json!({"seq": seq}), false).await?;
        match messages.pop() {
            Some(msg) => self.direct_event(&msg).map(Some),
            None => Ok(None),
        }
    }

    /// Parses a direct get's reply (its position and subject in its headers) into
    /// an event.
    fn direct_event(&self, msg: &Message) -> Result<RecordedEvent, ReadError> {
        let (seq, stored_at) = stored_position(msg)?;
        let subject = header(msg, "Nats-Subject").unwrap_or_default();
        self.to_event(subject, msg, seq, stored_at)
    }

    /// Parses a message stored on `subject` into an event.
    fn to_event(
        &self,
        subject: &str,
        msg: &Message,
        seq: u64,
        stored_at: Option<DateTime<Utc>>,
    ) -> Result<RecordedEvent, ReadError> {
        let malformed = |reason: String| {
            ReadError::new(ReadErrorKind::Malformed(MalformedEvent { seq, reason }))
        };
        let (aggregate, id) = self
            .subjects()
            .parse_event_subject(subject)
            .ok_or_else(|| malformed(format!("subject {subject:?} is not an event subject")))?;
        let h = msg
            .headers
            .as_ref()
            .ok_or_else(|| malformed("no headers".into()))?;
        RecordedEvent::from_parts(
            seq,
            subject,
            aggregate,
            id,
            h,
            msg.payload.clone(),
            stored_at,
        )
        .map_err(|m| ReadError::new(ReadErrorKind::Malformed(m)))
    }

    /// An ephemeral ordered consumer over `filter` from stream sequence `from`, or
    /// `None` if the server would not make one or [`LONG_READS`] are running (the
    /// read then stays with direct gets).
    async fn ordered_consumer(&self, filter: &str, from: u64) -> Option<LongRead> {
        use async_nats::jetstream::consumer::DeliverPolicy;
        let permit = self.inner.long_reads.clone().try_acquire_owned().ok()?;
        let stream = self
            .jetstream()
            .get_stream_no_info(&self.config().stream)
            .await
            .ok()?;
        let name = format!("jetsource_read_{}", uuid::Uuid::new_v4().simple());
        let config = pull::OrderedConfig {
            name: Some(name.clone()),
            filter_subject: filter.to_string(),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ..Default::default()
        };
        let consumer = tokio::time::timeout(
            self.config().request_timeout,
            stream.create_consumer(config),
        )
        .await
        .ok()?
        .map_err(|e| tracing::debug!(error = %e, "long read stays with direct gets"))
        .ok()?;
        let messages = consumer.messages().await.ok()?;
        Some(LongRead {
            messages,
            stream,
            name,
            _permit: permit,
        })
    }

    /// One direct-get request on the event stream; `batched` requests end with an
    /// EOB status. Returns the messages and how many more match after them.
    async fn direct_get(
        &self,
        request: &Value,
        batched: bool,
    ) -> Result<(Vec<Message>, u64), ReadError> {
        self.direct_get_on(&self.inner.config.stream, request, batched)
            .await
    }

    /// [`direct_get`](Self::direct_get) on any stream of the store's account (a
    /// view's KV bucket, say), through the same reply multiplexer.
    pub(crate) async fn direct_get_on(
        &self,
        stream: &str,
        request: &Value,
        batched: bool,
    ) -> Result<(Vec<Message>, u64), ReadError> {
        let inner = &self.inner;
        inner
            .counters
            .reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut route = inner.mux.route();
        let subject = format!("$JS.API.DIRECT.GET.{stream}");
        let body = serde_json::to_vec(request).expect("a JSON value serializes");
        inner
            .client
            .publish_with_reply(subject, route.subject.clone(), body.into())
            .await
            .map_err(|e| ReadError::with_source(ReadErrorKind::Unavailable, e))?;
        let mut messages = Vec::new();
        loop {
            let msg = tokio::time::timeout(inner.config.request_timeout, route.replies.recv())
                .await
                .map_err(|_| ReadError::new(ReadErrorKind::TimedOut))?
                .ok_or_else(|| ReadError::new(ReadErrorKind::Unavailable))?;
            match msg.status.map(|s| s.as_u16()) {
                None => {
                    let pending = header(&msg, "Nats-Num-Pending").and_then(|p| p.parse().ok());
                    messages.push(msg);
                    if !batched {
                        return Ok((messages, pending.unwrap_or(0)));
                    }
                }
                // End of batch: how many remain is on the status message.
                Some(204) => {
                    let pending = header(&msg, "Nats-Num-Pending")
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(0);
                    return Ok((messages, pending));
                }
                Some(404) => return Ok((messages, 0)),
                Some(503) => return Err(ReadError::new(ReadErrorKind::Unavailable)),
                Some(code) => {
                    return Err(ReadError::new(ReadErrorKind::Store {
                        code,
                        description: msg.description.clone().unwrap_or_default(),
                    }))
                }
            }
        }
    }
}
