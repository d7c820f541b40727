//! Liveness and readiness of one process.

use std::sync::{Arc, Mutex};

/// What a process is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Connecting, opening the store, reading its checkpoint.
    Starting,
    /// A node answering commands and queries.
    Serving,
    /// A projection or saga instance holding its lease and running.
    Active,
    /// A projection or saga instance waiting to take over the lease.
    Standby,
    /// Shutting down.
    Stopping,
}

impl Role {
    /// A role in which the process does what it is for (a standby's job is to
    /// wait, so it is ready too).
    pub fn is_ready(self) -> bool {
        matches!(self, Role::Serving | Role::Active | Role::Standby)
    }
}

/// Shared view of a process's health, set by its runtime and read by `/healthz`,
/// `/readyz` and systemd's readiness notification.
///
/// ```no_run
/// # async fn demo(client: async_nats::Client) {
/// let health = jetsource::telemetry::Health::new(client);
/// health.set_role(jetsource::telemetry::Role::Standby);
/// assert!(health.report().ready || !health.report().nats_connected);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Health {
    role: Arc<Mutex<(Role, Option<String>)>>,
    client: async_nats::Client,
}

/// What `/readyz` answers, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// Ready: a ready role and a connected client.
    pub ready: bool,
    /// The role.
    pub role: Role,
    /// The consumer a projection or saga runs as, when it has one.
    pub consumer: Option<String>,
    /// Whether the NATS connection is up.
    pub nats_connected: bool,
}

impl Health {
    /// A starting process over `client`.
    pub fn new(client: async_nats::Client) -> Health {
        Health {
            role: Arc::new(Mutex::new((Role::Starting, None))),
            client,
        }
    }

    /// Moves to `role`.
    pub fn set_role(&self, role: Role) {
        self.lock().0 = role;
    }

    /// Moves to `role` as `consumer` (`proj_<name>`, `saga_<name>`).
    pub fn set_consumer_role(&self, role: Role, consumer: &str) {
        *self.lock() = (role, Some(consumer.to_string()));
    }

    /// The role now.
    pub fn role(&self) -> Role {
        self.lock().0
    }

    /// The whole picture.
    pub fn report(&self) -> Report {
        let (role, consumer) = self.lock().clone();
        let nats_connected =
            self.client.connection_state() == async_nats::connection::State::Connected;
        Report {
            ready: role.is_ready() && nats_connected,
            role,
            consumer,
            nats_connected,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Role, Option<String>)> {
        // A panic while holding it cannot leave the pair half-written.
        self.role.lock().unwrap_or_else(|e| e.into_inner())
    }
}
