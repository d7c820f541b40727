//! W3C trace context across the system: a command's `traceparent` rides on its
//! events ([`Metadata::traceparent`](crate::Metadata::traceparent)), a projection
//! or saga works on an event inside a span continuing that trace, and the commands
//! a saga sends carry it on. So one trace shows a flow from a client's first
//! command through every event, view update and saga step.
//!
//! The spans are `tracing` spans. When a process exports OpenTelemetry
//! (`--otlp-endpoint`), each is a span of the trace, parented on the context it
//! continues, and what goes onward names that span as the parent; without an
//! exporter the context is carried on unchanged, so the trace id still ties the
//! flow together in the events.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `tracing` target of every span that continues a trace; an exporter
/// (`--otlp-endpoint`) records these only, so untraced work costs it nothing.
pub const TARGET: &str = "jetsource::trace";

/// The `traceparent` header.
pub const TRACEPARENT: &str = crate::store::headers::TRACEPARENT;
/// The `tracestate` header.
pub const TRACESTATE: &str = crate::store::headers::TRACESTATE;
/// Longest `tracestate` carried (the W3C limit is 32 members of ~256 bytes; 512
/// bytes is what the spec asks every vendor to keep).
pub const MAX_TRACESTATE: usize = 512;

/// A parsed W3C trace context.
///
/// ```
/// use jetsource::telemetry::trace::TraceContext;
/// let t = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None).unwrap();
/// assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert!(t.sampled());
/// assert!(TraceContext::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01", None).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    span: SpanContext,
    state: Option<String>,
    /// The `traceparent` header for `span`, written once.
    header: String,
}

impl TraceContext {
    /// Reads a `traceparent` (version `00`, or a later version's first four
    /// fields) and an optional `tracestate`; an error says what is wrong.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Result<TraceContext, String> {
        let traceparent = traceparent.trim();
        let mut fields = traceparent.split('-');
        let (Some(version), Some(trace), Some(parent), Some(flags)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err("is not version-traceid-parentid-flags".into());
        };
        let has_more = fields.next().is_some();
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !hex(version, 2) || version == "ff" || (version == "00" && has_more) {
            return Err(format!("has an unusable version {version:?}"));
        }
        if !hex(trace, 32) || trace.bytes().all(|b| b == b'0') {
            return Err("has no valid trace id (32 lowercase hex digits, not all zero)".into());
        }
        if !hex(parent, 16) || parent.bytes().all(|b| b == b'0') {
            return Err("has no valid parent id (16 lowercase hex digits, not all zero)".into());
        }
        if !hex(flags, 2) {
            return Err("has no valid flags (2 hex digits)".into());
        }
        let trace_id = TraceId::from_hex(trace).map_err(|e| e.to_string())?;
        let span_id = SpanId::from_hex(parent).map_err(|e| e.to_string())?;
        let flags = u8::from_str_radix(flags, 16).map_err(|e| e.to_string())?;
        let state = tracestate
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= MAX_TRACESTATE)
            .map(str::to_string);
        let trace_state = state
            .as_deref()
            .and_then(|s| s.parse::<TraceState>().ok())
            .unwrap_or_default();
        Ok(TraceContext::new(
            SpanContext::new(
                trace_id,
                span_id,
                TraceFlags::new(flags & 1),
                true,
                trace_state,
            ),
            state,
        ))
    }

    fn new(span: SpanContext, state: Option<String>) -> TraceContext {
        let header = format!(
            "00-{}-{}-{:02x}",
            span.trace_id(),
            span.span_id(),
            span.trace_flags().to_u8()
        );
        TraceContext {
            span,
            state,
            header,
        }
    }

    /// The context an event carries, if it carries a valid one.
    pub fn of(metadata: &crate::Metadata) -> Option<TraceContext> {
        let parent = metadata.traceparent.as_deref()?;
        TraceContext::parse(parent, metadata.tracestate.as_deref()).ok()
    }

    /// The trace id, 32 hex digits.
    pub fn trace_id(&self) -> String {
        self.span.trace_id().to_string()
    }

    /// Whether the caller samples this trace (flag `01`): only sampled work is
    /// recorded as spans; an unsampled context is carried on unchanged.
    pub fn sampled(&self) -> bool {
        self.span.is_sampled()
    }

    /// The `traceparent` header value.
    pub fn traceparent(&self) -> &str {
        &self.header
    }

    /// The `tracestate` header value, if any.
    pub fn tracestate(&self) -> Option<&str> {
        self.state.as_deref()
    }

    /// Makes `span` continue this trace (a no-op unless OpenTelemetry records it).
    pub fn continue_in(&self, span: &tracing::Span) {
        let parent = opentelemetry::Context::new().with_remote_span_context(self.span.clone());
        // Only fails when no OpenTelemetry layer records spans: nothing to parent.
        let _ = span.set_parent(parent);
    }

    /// What goes onward from work done in `span` under this context: `span`
    /// itself as the parent when OpenTelemetry records it, else this context.
    pub fn onward(&self, span: &tracing::Span) -> TraceContext {
        let own = span.context().span().span_context().clone();
        if own.is_valid() && own.trace_id() == self.span.trace_id() {
            TraceContext::new(own, self.state.clone())
        } else {
            self.clone()
        }
    }

    /// Writes `traceparent` (and `tracestate`) into `metadata`.
    pub fn write(&self, metadata: &mut crate::Metadata) {
        metadata.traceparent = Some(self.header.clone());
        metadata.tracestate = self.state.clone();
    }
}

/// A span for handling `event` in `consumer`, continuing the event's trace;
/// `None` for an event without a sampled one (no span is made: untraced work
/// costs nothing, and what goes onward carries the event's context unchanged).
pub(crate) fn event_span(
    consumer: &str,
    event: &crate::RecordedEvent,
) -> Option<(tracing::Span, TraceContext)> {
    let context = TraceContext::of(&event.metadata).filter(TraceContext::sampled)?;
    let span = tracing::info_span!(
        target: TARGET,
        "handle event",
        consumer,
        event_type = %event.event_type,
        seq = event.seq,
        trace_id = %context.trace_id(),
    );
    context.continue_in(&span);
    Some((span, context))
}
