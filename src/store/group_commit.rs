//! Group commit: concurrent appends to different aggregates share one atomic batch.
//!
//! What it packs is decided by two measured costs (nats-server 2.15.1, this kind of
//! 2-core machine): a single-message publish is ~0.2 ms and pipelines (47k/s lazy,
//! 4.5k/s with `sync_interval: always`, one fsync each), while an ADR-50 atomic
//! batch costs a fixed ~3 ms whatever its size, and the server commits only ~300 of
//! them per second. So:
//! - appends of several events (which need a batch anyway) are packed together;
//! - single-event appends go out as pipelined single publishes, each atomic by
//!   itself, unless at least `batch_singles_from` of them are queued, when one batch
//!   (one fsync) beats that many fsyncs.
//!
//! The appender takes whatever is queued when one of its `max_in_flight` slots frees
//! up, so the slower the server, the larger the groups. It lingers (at most
//! `linger`) only when it already saw company, so a lone caller pays nothing. Two
//! appends to one aggregate never share a batch: the server can only check the
//! expected sequence of a subject's first message in a batch.

use super::append::{AppendError, AppendErrorKind, Appended, Prepared};
use super::{appended_at, EventStore};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Bounds of one group-commit batch.
///
/// ```
/// let cfg = jetsource::store::GroupCommitConfig { linger: std::time::Duration::ZERO, ..Default::default() };
/// assert_eq!(cfg.max_events, 1000);
/// ```
#[derive(Debug, Clone)]
pub struct GroupCommitConfig {
    /// Most events in one batch (the server allows 1000).
    pub max_events: usize,
    /// Most bytes in one batch.
    pub max_bytes: usize,
    /// How long a batch that already holds more than one append waits for more.
    pub linger: Duration,
    /// Groups awaiting their acks at once; while all are out, new appends queue up
    /// and join the next group.
    pub max_in_flight: usize,
    /// How many single-event appends must be queued together before they are sent
    /// as one atomic batch instead of pipelined single publishes.
    pub batch_singles_from: usize,
    /// How many single-event appends may skip the queue and publish at once: there
    /// is nothing to batch them with, and the queue's hop costs more than it saves.
    /// Past this many in flight they queue up and can be batched.
    pub direct_singles: usize,
}

impl GroupCommitConfig {
    /// Bounds tuned for the server's durability mode. With every write fsynced
    /// (~0.25 ms each, one at a time) a ~3 ms batch pays off from about a dozen
    /// appends, so all but a lone caller queue up. With lazy fsync single publishes
    /// pipeline so fast that only very large groups are worth a batch.
    pub fn for_durability(durability: crate::nats_server::Durability) -> Self {
        match durability {
            crate::nats_server::Durability::Safe => GroupCommitConfig::default(),
            crate::nats_server::Durability::Fast => GroupCommitConfig {
                batch_singles_from: 400,
                direct_singles: 400,
                ..Default::default()
            },
        }
    }
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        GroupCommitConfig {
            max_events: 1000,
            max_bytes: 8 * 1024 * 1024,
            linger: Duration::from_micros(100),
            max_in_flight: 4,
            batch_singles_from: 12,
            direct_singles: 1,
        }
    }
}

struct Job {
    store: EventStore,
    prepared: Prepared,
    reply: oneshot::Sender<Result<Appended, AppendError>>,
}

#[derive(Debug, Clone)]
pub(crate) struct Handle {
    tx: mpsc::Sender<Job>,
}

pub(crate) fn start(cfg: GroupCommitConfig) -> Handle {
    let (tx, rx) = mpsc::channel(16 * 1024);
    tokio::spawn(run(rx, cfg));
    Handle { tx }
}

impl Handle {
    pub(crate) async fn submit(
        &self,
        store: &EventStore,
        prepared: Prepared,
    ) -> Result<Appended, AppendError> {
        let (reply, outcome) = oneshot::channel();
        let job = Job {
            store: store.clone(),
            prepared,
            reply,
        };
        let gone = || AppendError::new(AppendErrorKind::Unavailable);
        self.tx.send(job).await.map_err(|_| gone())?;
        outcome.await.map_err(|_| gone())?
    }
}

struct Batch {
    jobs: Vec<Job>,
    subjects: HashSet<String>,
    events: usize,
    bytes: usize,
}

impl Batch {
    fn new(first: Job) -> Batch {
        let mut b = Batch {
            jobs: Vec::new(),
            subjects: HashSet::new(),
            events: 0,
            bytes: 0,
        };
        b.push(first);
        b
    }

    fn fits(&self, job: &Job, cfg: &GroupCommitConfig) -> bool {
        !self.subjects.contains(&job.prepared.subject)
            && self.events + job.prepared.msgs.len() <= cfg.max_events
            && self.bytes + job.prepared.bytes <= cfg.max_bytes
    }

    fn full(&self, cfg: &GroupCommitConfig) -> bool {
        self.events >= cfg.max_events || self.bytes >= cfg.max_bytes
    }

    fn push(&mut self, job: Job) {
        self.subjects.insert(job.prepared.subject.clone());
        self.events += job.prepared.msgs.len();
        self.bytes += job.prepared.bytes;
        self.jobs.push(job);
    }

    /// Adds `job` or sets it aside for the next batch.
    fn offer(&mut self, job: Job, cfg: &GroupCommitConfig, later: &mut VecDeque<Job>) {
        if self.fits(&job, cfg) {
            self.push(job);
        } else {
            later.push_back(job);
        }
    }
}

async fn run(mut rx: mpsc::Receiver<Job>, cfg: GroupCommitConfig) {
    let slots = Arc::new(Semaphore::new(cfg.max_in_flight.max(1)));
    let mut carried: VecDeque<Job> = VecDeque::new();
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match carried.pop_front() {
            Some(job) => job,
            None => match rx.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let mut batch = Batch::new(first);
        let mut later = VecDeque::new();
        while let Some(job) = carried.pop_front() {
            batch.offer(job, &cfg, &mut later);
        }
        while !batch.full(&cfg) {
            match rx.try_recv() {
                Ok(job) => batch.offer(job, &cfg, &mut later),
                Err(_) => break,
            }
        }
        if batch.jobs.len() > 1 && !cfg.linger.is_zero() {
            // tokio's timers tick in milliseconds, too coarse for a sub-millisecond
            // linger: yield to the callers instead, until the deadline.
            let deadline = Instant::now() + cfg.linger;
            while !batch.full(&cfg) && Instant::now() < deadline {
                match rx.try_recv() {
                    Ok(job) => batch.offer(job, &cfg, &mut later),
                    Err(mpsc::error::TryRecvError::Empty) => tokio::task::yield_now().await,
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                }
            }
        }
        carried = later;
        let batch_singles_from = cfg.batch_singles_from;
        tokio::spawn(async move {
            commit(batch, batch_singles_from).await;
            drop(slot);
        });
    }
}

async fn commit(batch: Batch, batch_singles_from: usize) {
    let (singles, multis): (Vec<Job>, Vec<Job>) = batch
        .jobs
        .into_iter()
        .partition(|j| j.prepared.msgs.len() == 1);
    if singles.len() >= batch_singles_from {
        commit_jobs(singles.into_iter().chain(multis).collect()).await;
        return;
    }
    let alone = futures::future::join_all(singles.into_iter().map(|job| commit_jobs(vec![job])));
    if multis.is_empty() {
        alone.await;
    } else {
        futures::future::join(alone, commit_jobs(multis)).await;
    }
}

/// Sends jobs as one batch. When one stale or repeated append fails it (storing
/// nothing), the halves are retried on their own, down to single appends, so only
/// the guilty one gets the error and the innocent pay about log2(n) extra batches.
fn commit_jobs(mut jobs: Vec<Job>) -> futures::future::BoxFuture<'static, ()> {
    Box::pin(async move {
        if jobs.len() == 1 {
            let job = jobs.pop().expect("one job");
            let outcome = job.store.publish_one(&job.prepared).await;
            let _ = job.reply.send(outcome);
            return;
        }
        let store = jobs[0].store.clone();
        let msgs: Vec<_> = jobs.iter().flat_map(|j| j.prepared.msgs.iter()).collect();
        store.count_batch();
        store.count_group_commit(jobs.len());
        let result = store.send(&msgs, None).await;
        let total = msgs.len() as u64;
        match result {
            Ok(ack) if !ack.duplicate => {
                store.count_appends(jobs.len() as u64);
                let mut last = ack.last_seq - total;
                for job in jobs {
                    last += job.prepared.msgs.len() as u64;
                    let _ = job.reply.send(Ok(appended_at(&job.prepared, last, false)));
                }
            }
            Err(e)
                if !matches!(
                    e.kind(),
                    AppendErrorKind::Conflict { .. } | AppendErrorKind::DuplicateEventId
                ) =>
            {
                for job in jobs {
                    let _ = job.reply.send(Err(AppendError::new(e.kind().clone())));
                }
            }
            _ => {
                store.count_split();
                let second = jobs.split_off(jobs.len() / 2);
                futures::future::join(commit_jobs(jobs), commit_jobs(second)).await;
            }
        }
    })
}
