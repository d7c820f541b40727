//! Payload codecs: JSON and CBOR, named by `Content-Type`, so one stream may hold both.

use serde_json::Value;
use std::fmt;
use std::str::FromStr;

/// How an event body is written. Reading always follows the stored `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Codec {
    /// `application/json`, the default.
    #[default]
    Json,
    /// `application/cbor`: smaller and faster for binary-heavy bodies.
    Cbor,
}

/// A body could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(String);

impl Codec {
    /// The MIME type written to `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Codec::Json => "application/json",
            Codec::Cbor => "application/cbor",
        }
    }

    /// The codec named by a `Content-Type` value (parameters such as `; charset` ignored).
    pub fn from_content_type(content_type: &str) -> Option<Codec> {
        match content_type.split(';').next().unwrap_or("").trim() {
            "application/json" => Some(Codec::Json),
            "application/cbor" => Some(Codec::Cbor),
            _ => None,
        }
    }

    /// Encodes any serializable value.
    pub fn encode<T: serde::Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, CodecError> {
        match self {
            Codec::Json => serde_json::to_vec(value).map_err(|e| CodecError(e.to_string())),
            Codec::Cbor => {
                let mut out = Vec::new();
                ciborium::into_writer(value, &mut out).map_err(|e| CodecError(e.to_string()))?;
                Ok(out)
            }
        }
    }

    /// Decodes bytes into a JSON value, the neutral form upcasters work on.
    pub fn decode_value(self, bytes: &[u8]) -> Result<Value, CodecError> {
        self.decode(bytes)
    }

    /// Decodes bytes into any deserializable type.
    pub fn decode<T: serde::de::DeserializeOwned>(self, bytes: &[u8]) -> Result<T, CodecError> {
        match self {
            Codec::Json => serde_json::from_slice(bytes).map_err(|e| CodecError(e.to_string())),
            Codec::Cbor => ciborium::from_reader(bytes).map_err(|e| CodecError(e.to_string())),
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Codec::Json => "json",
            Codec::Cbor => "cbor",
        })
    }
}

impl FromStr for Codec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Codec::Json),
            "cbor" => Ok(Codec::Cbor),
            other => Err(format!("unknown codec {other:?} (json or cbor)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_codecs_round_trip_a_value() {
        let v = serde_json::json!({"name": "Ada", "n": 3, "tags": ["a", "b"], "none": null});
        for codec in [Codec::Json, Codec::Cbor] {
            let bytes = codec.encode(&v).unwrap();
            assert_eq!(codec.decode_value(&bytes).unwrap(), v, "{codec}");
            assert_eq!(Codec::from_content_type(codec.content_type()), Some(codec));
        }
        assert_eq!(
            Codec::from_content_type("application/json; charset=utf-8"),
            Some(Codec::Json)
        );
        assert_eq!(Codec::from_content_type("text/plain"), None);
    }
}
