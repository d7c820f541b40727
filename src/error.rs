//! The one error shape of the crate: `Error<Kind>`, one kind enum per operation.
//!
//! Callers match on [`Error::kind`]; the source, when there is one, says what lay
//! beneath (an I/O error, a NATS error, a decode error).

use std::fmt;

/// A boxed, thread-safe error used as the cause of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error of one operation, typed by its kind.
///
/// ```no_run
/// # async fn demo(store: jetsource::EventStore) {
/// use jetsource::store::AppendErrorKind;
/// # let append = jetsource::store::Append::new("person", "42", jetsource::store::ExpectedVersion::NoStream, vec![]);
/// match store.append(append).await {
///     Ok(appended) => println!("stored up to {}", appended.last_seq),
///     Err(e) if matches!(e.kind(), AppendErrorKind::Conflict { .. }) => println!("reload and retry"),
///     Err(e) => eprintln!("{e}"),
/// }
/// # }
/// ```
pub struct Error<Kind> {
    kind: Kind,
    source: Option<BoxError>,
}

impl<Kind> Error<Kind> {
    /// An error of `kind` with no underlying cause.
    pub fn new(kind: Kind) -> Self {
        Self { kind, source: None }
    }

    /// An error of `kind` caused by `source`.
    pub fn with_source(kind: Kind, source: impl Into<BoxError>) -> Self {
        Self {
            kind,
            source: Some(source.into()),
        }
    }

    /// What went wrong, to match on.
    pub fn kind(&self) -> &Kind {
        &self.kind
    }

    /// Consumes the error, returning its kind.
    pub fn into_kind(self) -> Kind {
        self.kind
    }
}

impl<Kind: fmt::Display> fmt::Display for Error<Kind> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {}", self.kind, source),
            None => write!(f, "{}", self.kind),
        }
    }
}

impl<Kind: fmt::Display> fmt::Debug for Error<Kind> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<Kind: fmt::Display> std::error::Error for Error<Kind> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl<Kind> From<Kind> for Error<Kind> {
    fn from(kind: Kind) -> Self {
        Self::new(kind)
    }
}
