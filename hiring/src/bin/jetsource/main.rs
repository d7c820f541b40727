//! The `jetsource` binary: the reference domain (Person, Organization, their views
//! and the hiring saga) as an app, the README's commands. Everything but the demo
//! story is the library's [`jetsource::App`].

mod demo;

use hiring::directory::PersonDirectory;
use hiring::views::{OffersView, OrganizationsView};
use hiring::{Hiring, Organization, Person};
use std::process::ExitCode;
use std::sync::Arc;

// mimalloc instead of glibc's malloc: the node allocates and frees many small
// buffers per command on every worker thread, where glibc's arenas spent ~18 %
// of the node's CPU (see the benchmark's node rows).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
