//! The `jetsource` binary: the reference domain (Person, Organization, their views
//! and the hiring saga) as an app, the README's commands. Everything but the demo
//! story is the library's [`jetsource::App`].

mod demo;

use hiring::directory::PersonDirectory;
use hiring::views::{OffersView, OrganizationsView};
use hiring::{Hiring, Organization, Person};
use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    jetsource::App::new("jetsource")
        .aggregate::<Person>()
        .aggregate::<Organization>()
        .projection(PersonDirectory)
        .projection(OrganizationsView)
        .projection(OffersView)
        .saga(Hiring)
        .demo(Arc::new(|nats, stack| Box::pin(demo::run(nats, stack))))
        .run()
}
