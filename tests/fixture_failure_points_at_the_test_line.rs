//! A failing given/when/then reports the test's own line, not the fixture's.
//! Its own test binary, because it installs a panic hook.

mod support;

use jetsource::fixture::AggregateFixture;
use std::sync::{Arc, Mutex};
use support::{Ledger, LedgerCommand, LedgerEvent};

#[test]
fn fixture_failure_points_at_the_test_line() {
    let location = Arc::new(Mutex::new(None));
    let seen = location.clone();
    std::panic::set_hook(Box::new(move |info| {
        *seen.lock().unwrap() = info.location().map(|l| (l.file().to_string(), l.line()));
    }));
    let expected_line = line!() + 4;
    let result = std::panic::catch_unwind(|| {
        AggregateFixture::<Ledger>::given([LedgerEvent::Opened { owner: "o".into() }])
            .when(LedgerCommand::Credit(1))
            .then_expect_events([]);
    });
    let _ = std::panic::take_hook();
    assert!(result.is_err(), "the wrong expectation must fail");
    let (file, line) = location.lock().unwrap().clone().expect("a panic location");
    assert!(
        file.ends_with("fixture_failure_points_at_the_test_line.rs"),
        "{file}"
    );
    assert_eq!(line, expected_line);
}
