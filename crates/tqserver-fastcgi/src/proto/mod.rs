//! The FastCGI 1.0 protocol without I/O: records, name-value pairs and the
//! CGI response head. Everything here is a pure function over bytes, which
//! is what the fuzz targets and the property tests call.
//!
//! Spec: <https://fastcgi-archives.github.io/FastCGI_Specification.html>
//! (section numbers in comments refer to it).

pub mod params;
pub mod record;
pub mod response_head;

pub use params::{Params, ParamsCollector};
pub use record::{Body, ProtocolStatus, Record, RecordType, Role, StreamKind, decode};
pub use response_head::{HeadError, HeadParser, ResponseHead};

/// Bounds on everything a peer can make us buffer. Each default is chosen
/// to be far above what real peers send, and small enough that a hostile
/// peer cannot exhaust memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Total bytes of one request's `PARAMS` stream. Default 1 MiB
    /// ([`DEFAULT_MAX_PARAMS_BYTES`]); nginx refuses more than 64 KiB.
    pub max_params_bytes: usize,
    /// Records in one request's `PARAMS` stream. Default 4096.
    pub max_params_records: usize,
    /// Name-value pairs in one request. Default 4096.
    pub max_params_pairs: usize,
    /// Bytes of a CGI response head. Default 64 KiB (nginx's default
    /// `fastcgi_buffer_size` is 4 KiB or 8 KiB).
    pub max_head_bytes: usize,
    /// Header lines in a CGI response head. Default 1000.
    pub max_head_fields: usize,
    /// Longest `STDERR` line handed to the log; longer lines are cut into
    /// pieces of this size. Default 16 KiB.
    pub max_stderr_line: usize,
}

/// Default of [`Limits::max_params_bytes`].
pub const DEFAULT_MAX_PARAMS_BYTES: usize = 1 << 20;
/// Default of [`Limits::max_params_records`].
pub const DEFAULT_MAX_PARAMS_RECORDS: usize = 4096;
/// Default of [`Limits::max_params_pairs`].
pub const DEFAULT_MAX_PARAMS_PAIRS: usize = 4096;
/// Default of [`Limits::max_head_bytes`].
pub const DEFAULT_MAX_HEAD_BYTES: usize = 64 << 10;
/// Default of [`Limits::max_head_fields`].
pub const DEFAULT_MAX_HEAD_FIELDS: usize = 1000;
/// Default of [`Limits::max_stderr_line`].
pub const DEFAULT_MAX_STDERR_LINE: usize = 16 << 10;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_params_bytes: DEFAULT_MAX_PARAMS_BYTES,
            max_params_records: DEFAULT_MAX_PARAMS_RECORDS,
            max_params_pairs: DEFAULT_MAX_PARAMS_PAIRS,
            max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
            max_head_fields: DEFAULT_MAX_HEAD_FIELDS,
            max_stderr_line: DEFAULT_MAX_STDERR_LINE,
        }
    }
}

/// Bytes that are not valid FastCGI, or that exceed a [`Limits`] bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The version byte is not 1.
    #[error("unsupported FastCGI version {0} (only version 1 exists)")]
    UnsupportedVersion(u8),
    /// A fixed-size record has the wrong content length.
    #[error("record of type {record_type} has content length {len}, expected {expected}")]
    BadRecordLength {
        /// Type byte of the record.
        record_type: u8,
        /// Length found.
        len: usize,
        /// Length the spec requires.
        expected: usize,
    },
    /// A record to encode does not fit in the 16-bit length.
    #[error("record content of {len} bytes does not fit in one record (max 65535)")]
    RecordTooLong {
        /// Content length asked for.
        len: usize,
    },
    /// Name-value pairs that do not parse.
    #[error("malformed name-value pairs: {0}")]
    MalformedParams(&'static str),
    /// The `PARAMS` stream is larger than [`Limits::max_params_bytes`].
    #[error("the PARAMS stream is larger than {limit} bytes")]
    ParamsTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The `PARAMS` stream has more records than [`Limits::max_params_records`].
    #[error("the PARAMS stream has more than {limit} records")]
    TooManyRecords {
        /// The limit.
        limit: usize,
    },
    /// More pairs than [`Limits::max_params_pairs`].
    #[error("more than {limit} name-value pairs")]
    TooManyParams {
        /// The limit.
        limit: usize,
    },
    /// A record arrived where the protocol does not allow it.
    #[error("unexpected record: {0}")]
    Unexpected(String),
}
