//! Subject names and the rules for the tokens in them (DESIGN "Wire contract").
//!
//! Every subject may carry a prefix (default none); [`Subjects`] builds them all so
//! that no other module formats a subject by hand.

use std::fmt;

/// Longest aggregate id accepted, in bytes. Long enough for any UUID or natural key,
/// short enough that a subject stays far below the server's limits.
pub const MAX_ID_LEN: usize = 256;

/// Why a name cannot be used as an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidToken {
    /// The token is empty.
    Empty,
    /// The token is longer than [`MAX_ID_LEN`].
    TooLong(usize),
    /// The token holds a character outside the id alphabet.
    BadChar(char),
}

impl fmt::Display for InvalidToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidToken::Empty => write!(f, "is empty"),
            InvalidToken::TooLong(n) => write!(f, "is {n} bytes long (at most {MAX_ID_LEN})"),
            InvalidToken::BadChar(c) => write!(
                f,
                "contains {c:?} (ids are ASCII letters, digits, '-', '_' and '=')"
            ),
        }
    }
}

/// True for the characters an id may hold: one alphabet that is safe as a subject
/// token and as a KV key (and so in every key built from ids: rows, saga
/// instances, snapshots), so an id a command accepts works everywhere it travels.
pub fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '=')
}

/// Checks that `id` is usable as an aggregate id (and as any other id a command
/// carries): 1 to [`MAX_ID_LEN`] characters of [`is_id_char`].
///
/// ```
/// assert!(jetsource::subjects::validate_id("0192f1c2-7d4e-7000-8000-000000000001").is_ok());
/// assert!(jetsource::subjects::validate_id("a.b").is_err());
/// assert!(jetsource::subjects::validate_id("a:b").is_err());
/// ```
pub fn validate_id(id: &str) -> Result<(), InvalidToken> {
    if id.is_empty() {
        return Err(InvalidToken::Empty);
    }
    if id.len() > MAX_ID_LEN {
        return Err(InvalidToken::TooLong(id.len()));
    }
    match id.chars().find(|c| !is_id_char(*c)) {
        Some(c) => Err(InvalidToken::BadChar(c)),
        None => Ok(()),
    }
}

/// Checks that `key` is a key a KV bucket accepts: dot-separated tokens of ASCII
/// letters, digits, `-`, `_`, `=` and `/`, no empty token.
///
/// ```
/// assert!(jetsource::subjects::validate_kv_key("person.p-1").is_ok());
/// assert!(jetsource::subjects::validate_kv_key("person.a:b").is_err());
/// assert!(jetsource::subjects::validate_kv_key("person..x").is_err());
/// ```
pub fn validate_kv_key(key: &str) -> Result<(), InvalidToken> {
    if key.split('.').any(str::is_empty) {
        return Err(InvalidToken::Empty);
    }
    match key
        .chars()
        .find(|c| !(is_id_char(*c) || matches!(c, '.' | '/')))
    {
        Some(c) => Err(InvalidToken::BadChar(c)),
        None => Ok(()),
    }
}

/// Checks that `name` is a snake_case aggregate name (`person`, `organization`).
///
/// ```
/// assert!(jetsource::subjects::validate_aggregate_name("order_line").is_ok());
/// assert!(jetsource::subjects::validate_aggregate_name("Person").is_err());
/// ```
pub fn validate_aggregate_name(name: &str) -> Result<(), InvalidToken> {
    if name.is_empty() {
        return Err(InvalidToken::Empty);
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        Some(c) => Err(InvalidToken::BadChar(c)),
        None => Ok(()),
    }
}

/// Builds every subject of the wire contract under one optional prefix.
///
/// ```
/// let s = jetsource::Subjects::new("");
/// assert_eq!(s.aggregate("person", "42"), "events.person.42");
/// assert_eq!(s.aggregate_type("person"), "events.person.*");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    /// Subjects under `prefix`; an empty prefix means none, a prefix without a
    /// trailing dot gets one (`"acme"` -> `acme.events.person.42`).
    pub fn new(prefix: &str) -> Self {
        let prefix = if prefix.is_empty() || prefix.ends_with('.') {
            prefix.to_string()
        } else {
            format!("{prefix}.")
        };
        Self { prefix }
    }

    /// The prefix, with its trailing dot, or empty.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `events.>`: what the `EVENTS` stream captures.
    pub fn all_events(&self) -> String {
        format!("{}events.>", self.prefix)
    }

    /// `events.<aggregate>.<id>`: one aggregate's events.
    pub fn aggregate(&self, aggregate: &str, id: &str) -> String {
        format!("{}events.{aggregate}.{id}", self.prefix)
    }

    /// `events.<aggregate>.*`: every aggregate of one type.
    pub fn aggregate_type(&self, aggregate: &str) -> String {
        format!("{}events.{aggregate}.*", self.prefix)
    }

    /// Splits an event subject into (aggregate, id), or `None` if it is not one.
    pub fn parse_event_subject<'a>(&self, subject: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = subject
            .strip_prefix(&self.prefix)?
            .strip_prefix("events.")?;
        let (aggregate, id) = rest.split_once('.')?;
        (!id.contains('.')).then_some((aggregate, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_with_subject_metacharacters_are_refused() {
        for bad in [
            "",
            "a.b",
            "a*",
            "a>",
            "a b",
            "a\tb",
            "a\nb",
            "a:b",
            "ünïcode-42",
        ] {
            assert!(validate_id(bad).is_err(), "{bad:?} must be refused");
        }
        assert_eq!(
            validate_id(&"x".repeat(MAX_ID_LEN + 1)),
            Err(InvalidToken::TooLong(MAX_ID_LEN + 1))
        );
        assert!(validate_id("Ada_Lovelace-1815=").is_ok());
    }

    #[test]
    fn prefix_gets_one_dot_and_parses_back() {
        let s = Subjects::new("acme");
        assert_eq!(s.aggregate("person", "7"), "acme.events.person.7");
        assert_eq!(Subjects::new("acme.").all_events(), "acme.events.>");
        assert_eq!(
            s.parse_event_subject("acme.events.person.7"),
            Some(("person", "7"))
        );
        assert_eq!(s.parse_event_subject("events.person.7"), None);
    }
}
