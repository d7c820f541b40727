//! Rebuilding a view without downtime: the next version is built from sequence 1
//! into its own bucket while the active one keeps answering, and queries switch
//! to it only once it has caught up.

use super::runner::{js_err, ProjectionRunner, RunnerConfig, RunnerError, RunnerErrorKind};
use super::{versions, Projection};
use crate::store::EventStore;

/// How far a rebuild has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Last stream sequence applied.
    pub applied: u64,
    /// The stream's last sequence when last looked at.
    pub target: u64,
    /// Nothing left to apply.
    pub caught_up: bool,
}

/// A rebuild in progress.
pub struct Rebuild<P: Projection> {
    store: EventStore,
    name: String,
    version: u32,
    runner: ProjectionRunner<P>,
    caught_up: bool,
}

impl<P: Projection> std::fmt::Debug for Rebuild<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rebuild")
            .field("projection", &self.name)
            .field("version", &self.version)
            .finish()
    }
}

impl<P: Projection> Rebuild<P> {
    /// Starts building the version after the active one, from nothing.
    pub async fn start(
        store: EventStore,
        projection: P,
        config: RunnerConfig,
    ) -> Result<Rebuild<P>, RunnerError> {
        let name = projection.name().to_string();
        let version = versions::active(&store, &name).await.map_err(js_err)? + 1;
        // Leftovers of an abandoned rebuild of this version go first.
        let js = store.jetstream();
        let consumer = versions::consumer_name(&name, version);
        if let Ok(stream) = js.get_stream(&store.config().stream).await {
            let _ = stream.delete_consumer(&consumer).await;
        }
        let _ = js
            .delete_key_value(versions::bucket_name(&name, version))
            .await;
        let runner = ProjectionRunner::new(
            store.clone(),
            projection,
            RunnerConfig { version, ..config },
        )
        .await?;
        Ok(Rebuild {
            store,
            name,
            version,
            runner,
            caught_up: false,
        })
    }

    /// The version being built.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Applies one more batch.
    pub async fn step(&mut self) -> Result<Progress, RunnerError> {
        let handled = self.runner.step().await?;
        let target = self.store.last_seq().await.map_err(js_err)?;
        self.caught_up = handled == 0 && self.runner.checkpoint() >= target;
        Ok(Progress {
            applied: self.runner.checkpoint(),
            target,
            caught_up: self.caught_up,
        })
    }

    /// Points queries at the new version. Only once caught up.
    pub async fn switch(self) -> Result<u32, RunnerError> {
        if !self.caught_up {
            return Err(RunnerErrorKind::NotCaughtUp {
                version: self.version,
            }
            .into());
        }
        versions::set_active(&self.store, &self.name, self.version)
            .await
            .map_err(js_err)?;
        Ok(self.version)
    }
}
