//! What the client returns: a [`Response`] (CGI head parsed, body streamed,
//! `STDERR` to a line sink) or a [`RawResponse`] (records passed through
//! untouched, for relaying FastCGI to FastCGI).

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_core::Stream;

use super::ClientError;
use super::exchange::{EndStatus, Exchange, Frame};
use super::request::StderrSink;
use crate::proto::ResponseHead;

/// Splits `STDERR` bytes into lines for a [`StderrSink`]; a line longer
/// than the limit is passed on in pieces of the limit.
pub(crate) struct StderrLines {
    sink: StderrSink,
    partial: BytesMut,
    max_line: usize,
}

impl StderrLines {
    pub(crate) fn new(sink: StderrSink, max_line: usize) -> Self {
        Self {
            sink,
            partial: BytesMut::new(),
            max_line: max_line.max(1),
        }
    }

    pub(crate) fn push(&mut self, mut data: &[u8]) {
        while let Some(i) = data.iter().position(|&b| b == b'\n') {
            let (line, rest) = data.split_at(i);
            data = &rest[1..];
            if self.partial.is_empty() {
                self.emit(line);
            } else {
                self.append(line);
                let whole = std::mem::take(&mut self.partial);
                self.emit(&whole);
            }
        }
        self.append(data);
    }

    fn append(&mut self, mut data: &[u8]) {
        while self.partial.len() + data.len() > self.max_line {
            let take = self.max_line - self.partial.len();
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            let piece = std::mem::take(&mut self.partial);
            (self.sink)(&piece);
        }
        self.partial.extend_from_slice(data);
    }

    fn emit(&self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        for piece in line.chunks(self.max_line) {
            (self.sink)(piece);
        }
    }

    /// Passes on an unterminated last line.
    pub(crate) fn flush(&mut self) {
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            self.emit(&rest);
        }
    }
}

/// A response whose CGI head has been parsed; the body streams.
#[derive(Debug)]
pub struct Response {
    head: ResponseHead,
    body: ResponseBody,
}

impl Response {
    pub(crate) fn new(head: ResponseHead, body: ResponseBody) -> Self {
        Self { head, body }
    }

    /// HTTP status (from `Status:`, `Location:` → 302, else 200).
    pub fn status(&self) -> u16 {
        self.head.status
    }

    /// The parsed head.
    pub fn head(&self) -> &ResponseHead {
        &self.head
    }

    /// The body, to read from.
    pub fn body_mut(&mut self) -> &mut ResponseBody {
        &mut self.body
    }

    /// Head and body apart.
    pub fn into_parts(self) -> (ResponseHead, ResponseBody) {
        (self.head, self.body)
    }

    /// Reads the whole body into memory. For tests and small responses;
    /// a web server streams the body instead.
    pub async fn collect(mut self) -> Result<(ResponseHead, Bytes, EndStatus), ClientError> {
        let mut all = BytesMut::new();
        while let Some(chunk) = self.body.chunk().await {
            all.extend_from_slice(&chunk?);
        }
        let end = self.body.end_status().ok_or(ClientError::Closed)?;
        Ok((self.head, all.freeze(), end))
    }
}

/// The streamed body of a [`Response`]: `STDOUT` after the head, chunk by
/// chunk as the records arrive. Dropping it before the end closes the
/// connection (the application stops at its next write).
pub struct ResponseBody {
    first: Option<Bytes>,
    exchange: Option<Exchange>,
    stderr: StderrLines,
    end: Option<EndStatus>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("finished", &self.exchange.is_none())
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl ResponseBody {
    pub(crate) fn new(first: Bytes, exchange: Exchange, stderr: StderrLines) -> Self {
        let end = exchange.end;
        Self {
            first: (!first.is_empty()).then_some(first),
            exchange: end.is_none().then_some(exchange),
            stderr,
            end,
        }
    }

    /// Polls for the next chunk; `None` at the end of the body.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, ClientError>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        loop {
            let Some(ex) = self.exchange.as_mut() else {
                return Poll::Ready(None);
            };
            match ex.poll_frame(cx) {
                Poll::Ready(Ok(Some(Frame::Stdout(b)))) => return Poll::Ready(Some(Ok(b))),
                Poll::Ready(Ok(Some(Frame::Stderr(b)))) => self.stderr.push(&b),
                Poll::Ready(Ok(None)) => {
                    self.stderr.flush();
                    self.end = ex.end;
                    self.exchange = None;
                    return Poll::Ready(None);
                }
                Poll::Ready(Err(e)) => {
                    self.stderr.flush();
                    self.exchange = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// The next chunk; `None` at the end of the body.
    pub async fn chunk(&mut self) -> Option<Result<Bytes, ClientError>> {
        poll_fn(|cx| self.poll_chunk(cx)).await
    }

    /// How the application ended the request, once the body is read.
    pub fn end_status(&self) -> Option<EndStatus> {
        self.end
    }

    /// Tells the application the client went away (`FCGI_ABORT_REQUEST`,
    /// sent with the next poll), for a caller that reads the rest of the
    /// body to keep the connection. Only once the request body is sent;
    /// whether it was queued. php-fpm and php-cgi ignore it; TQServer's
    /// embedded PHP makes `connection_aborted()` 1 and ends the script at
    /// its next output unless it called `ignore_user_abort(true)`.
    pub fn abort(&mut self) -> bool {
        self.exchange.as_mut().is_some_and(Exchange::abort)
    }
}

impl Stream for ResponseBody {
    type Item = Result<Bytes, ClientError>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_chunk(cx)
    }
}

/// A response passed through as records: `STDOUT` and `STDERR` frames in
/// the order they arrived, nothing parsed. For relaying to another
/// FastCGI peer (TQServer behind nginx).
pub struct RawResponse {
    first: Option<Frame>,
    exchange: Option<Exchange>,
    end: Option<EndStatus>,
}

impl std::fmt::Debug for RawResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawResponse")
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl RawResponse {
    pub(crate) fn new(first: Option<Frame>, exchange: Exchange) -> Self {
        let end = exchange.end;
        Self {
            first,
            exchange: end.is_none().then_some(exchange),
            end,
        }
    }

    /// Polls for the next frame; `None` after `END_REQUEST`.
    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame, ClientError>>> {
        if let Some(f) = self.first.take() {
            return Poll::Ready(Some(Ok(f)));
        }
        let Some(ex) = self.exchange.as_mut() else {
            return Poll::Ready(None);
        };
        match ex.poll_frame(cx) {
            Poll::Ready(Ok(Some(f))) => Poll::Ready(Some(Ok(f))),
            Poll::Ready(Ok(None)) => {
                self.end = ex.end;
                self.exchange = None;
                Poll::Ready(None)
            }
            Poll::Ready(Err(e)) => {
                self.exchange = None;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// The next frame; `None` after `END_REQUEST`.
    pub async fn frame(&mut self) -> Option<Result<Frame, ClientError>> {
        poll_fn(|cx| self.poll_frame(cx)).await
    }

    /// How the application ended the request, once every frame is read.
    pub fn end_status(&self) -> Option<EndStatus> {
        self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn stderr_is_split_into_lines_across_records_and_bounded() {
        let got = Arc::new(Mutex::new(Vec::<String>::new()));
        let g = got.clone();
        let sink: StderrSink = Arc::new(move |l: &[u8]| {
            g.lock().unwrap().push(String::from_utf8_lossy(l).into());
        });
        let mut lines = StderrLines::new(sink, 8);
        lines.push(b"PHP Warn");
        lines.push(b"ing\r\nsecond\nthis line is long\nta");
        lines.push(b"il");
        lines.flush();
        assert_eq!(
            *got.lock().unwrap(),
            [
                "PHP Warn", "ing", "second", "this lin", "e is lon", "g", "tail"
            ]
        );
    }
}
