//! Value rules shared by the domain's aggregates.

/// Longest name or title accepted, in characters.
pub const MAX_NAME: usize = 200;

/// A trimmed, non-empty name of at most [`MAX_NAME`] characters without control characters.
///
/// ```
/// assert_eq!(hiring::validate::name("  Ada  "), Some("Ada".to_string()));
/// assert_eq!(hiring::validate::name("   "), None);
/// ```
pub fn name(raw: &str) -> Option<String> {
    let t = raw.trim();
    (!t.is_empty() && t.chars().count() <= MAX_NAME && !t.chars().any(char::is_control))
        .then(|| t.to_string())
}

/// A plausible email address, lower-cased: one `@`, a non-empty local part, a
/// dotted domain, no whitespace, at most 254 bytes.
///
/// ```
/// assert_eq!(hiring::validate::email("Ada@Example.org"), Some("ada@example.org".to_string()));
/// assert_eq!(hiring::validate::email("ada@localhost"), None);
/// ```
pub fn email(raw: &str) -> Option<String> {
    let e = raw.trim().to_lowercase();
    let (local, domain) = e.split_once('@')?;
    let ok = e.len() <= 254
        && !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then_some(e)
}

/// An id that can be a subject token and a KV key part.
pub fn id(raw: &str) -> bool {
    jetsource::subjects::validate_id(raw).is_ok()
}
