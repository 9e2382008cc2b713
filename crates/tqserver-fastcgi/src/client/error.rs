//! What can go wrong talking to a FastCGI application, classified so the
//! caller can pick the right HTTP status and metric label.

use std::io;
use std::time::Duration;

use crate::proto::{HeadError, ProtoError, ProtocolStatus};
use crate::transport::Address;

/// An error of [`Client`](super::Client).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection could not be opened.
    #[error("cannot connect to FastCGI application at {address}: {source}")]
    Connect {
        /// Where we tried.
        address: Address,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The connection was not established within `connect_timeout`.
    #[error("connecting to FastCGI application at {address} timed out after {timeout:?}")]
    ConnectTimeout {
        /// Where we tried.
        address: Address,
        /// The configured timeout.
        timeout: Duration,
    },
    /// Nothing was received (and nothing could be sent) for `read_timeout`.
    #[error("FastCGI application sent nothing for {0:?}")]
    ReadTimeout(Duration),
    /// A write made no progress for `write_timeout`.
    #[error("FastCGI application accepted no data for {0:?}")]
    WriteTimeout(Duration),
    /// The connection failed while in use (reset, broken pipe…).
    #[error("FastCGI connection failed: {0}")]
    Io(#[source] io::Error),
    /// The application closed the connection before ending the request
    /// (a crashed or killed PHP process looks like this).
    #[error("FastCGI application closed the connection before ending the request")]
    Closed,
    /// The application sent bytes that are not valid FastCGI.
    #[error("invalid FastCGI from the application: {0}")]
    Protocol(#[from] ProtoError),
    /// The CGI response head could not be parsed.
    #[error("invalid response from the application: {0}")]
    Head(#[from] HeadError),
    /// The application refused the request (`FCGI_OVERLOADED`,
    /// `FCGI_CANT_MPX_CONN`, `FCGI_UNKNOWN_ROLE`).
    #[error("FastCGI application refused the request: {0:?}")]
    Rejected(ProtocolStatus),
    /// A name-value pair is too large for one `PARAMS` record, and PHP
    /// rejects pairs that span records.
    #[error(
        "request parameter {name} takes {len} bytes; FastCGI applications such as PHP need each parameter to fit in one 65535-byte record"
    )]
    ParamTooLarge {
        /// Name of the parameter.
        name: String,
        /// Its encoded size.
        len: usize,
    },
    /// Reading the request body from its source failed (a downstream error:
    /// the client of the web server went away, not the application).
    #[error("reading the request body failed: {0}")]
    Body(#[source] io::Error),
}

/// The class of a [`ClientError`], for status codes and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Could not connect (502).
    Connect,
    /// A connect, read or write timeout (504).
    Timeout,
    /// The connection broke or was closed mid-request (502).
    Reset,
    /// The application answered with something invalid or refused (502).
    BadResponse,
    /// The request itself cannot be sent as it is (431 / 400).
    BadRequest,
    /// The downstream body source failed (the web server's client is gone).
    Downstream,
}

impl ClientError {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Connect { .. } => ErrorKind::Connect,
            Self::ConnectTimeout { .. } | Self::ReadTimeout(_) | Self::WriteTimeout(_) => {
                ErrorKind::Timeout
            }
            Self::Io(_) | Self::Closed => ErrorKind::Reset,
            Self::Protocol(_) | Self::Head(_) | Self::Rejected(_) => ErrorKind::BadResponse,
            Self::ParamTooLarge { .. } => ErrorKind::BadRequest,
            Self::Body(_) => ErrorKind::Downstream,
        }
    }

    /// Whether the application side failed (as opposed to our caller's
    /// request or body source).
    pub fn is_upstream(&self) -> bool {
        !matches!(self.kind(), ErrorKind::BadRequest | ErrorKind::Downstream)
    }

    /// Whether this is a timeout.
    pub fn is_timeout(&self) -> bool {
        self.kind() == ErrorKind::Timeout
    }

    /// A broken connection: the only errors that may be retried, and only
    /// on a reused connection before any response byte.
    pub(crate) fn is_connection_lost(&self) -> bool {
        matches!(self, Self::Io(_) | Self::Closed)
    }
}
