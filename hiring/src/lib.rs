//! # hiring: jetsource's reference domain
//!
//! Person and Organization, pure (no I/O, no clock: every instant a rule needs
//! arrives on the command, stamped by the node), their views and the hiring saga:
//! the platform's first user, built only on `jetsource`'s public API. The
//! `jetsource` binary of the README (`src/bin/jetsource/`) is this domain served
//! with [`jetsource::App`]; `examples/` holds a typed client, the plain-NATS
//! walkthrough and the benchmark.
//!
//! - [`person`]: registration, contact details, offers received, employment.
//! - [`organization`]: positions, offers extended, hiring, members.
//! - [`validate`]: the value rules both share (names, emails, ids).
//! - [`directory`]: the `person_directory` projection (people by id and email).
//! - [`views`]: the `organizations` and `offers` projections.
//! - [`saga`]: the hiring saga, from an extended offer to a started employment.
//!
//! Commands are externally tagged serde enums of struct variants: the node turns
//! `cmd.person.Register` with body `{"id":…,"name":…,"email":…}` into
//! `PersonCommand::Register { name, email }` for aggregate `id`.

pub mod directory;
pub mod organization;
pub mod person;
pub mod saga;
pub mod validate;
pub mod views;

pub use directory::PersonDirectory;
pub use organization::{Organization, OrganizationCommand, OrganizationError, OrganizationEvent};
pub use person::{Person, PersonCommand, PersonError, PersonEvent};
pub use saga::{Hiring, HiringState};
pub use views::{OffersView, OrganizationsView};
