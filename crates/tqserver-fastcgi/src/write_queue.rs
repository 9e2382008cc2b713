//! Output waiting to be written, shared by client and server connections:
//! record headers and small payloads are copied into one buffer, large
//! payloads are kept by reference and written with `writev`, so a request
//! body or a response chunk is never copied in user space.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWrite;

use crate::proto::StreamKind;
use crate::proto::record::{STREAM_CHUNK_LEN, VERSION_1};

/// Payloads at least this long are written from the caller's buffer.
const COPY_BELOW: usize = 4 << 10;
/// `writev` gets at most this many slices per call (Linux `IOV_MAX` is 1024).
const MAX_SLICES: usize = 64;

#[derive(Debug, Default)]
pub(crate) struct WriteQueue {
    segs: VecDeque<Bytes>,
    segs_len: usize,
    /// Bytes being assembled; encoders may append to it directly.
    pub(crate) tail: BytesMut,
}

impl WriteQueue {
    /// Bytes queued.
    pub(crate) fn len(&self) -> usize {
        self.segs_len + self.tail.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops everything queued.
    pub(crate) fn clear(&mut self) {
        self.segs.clear();
        self.segs_len = 0;
        self.tail.clear();
    }

    /// Appends bytes: copied when small, by reference when large.
    pub(crate) fn push(&mut self, b: Bytes) {
        if b.len() < COPY_BELOW {
            self.tail.extend_from_slice(&b);
            return;
        }
        self.seal();
        self.segs_len += b.len();
        self.segs.push_back(b);
    }

    fn seal(&mut self) {
        if !self.tail.is_empty() {
            let t = self.tail.split().freeze();
            self.segs_len += t.len();
            self.segs.push_back(t);
        }
    }

    /// Appends `data` as stream records (split at [`STREAM_CHUNK_LEN`]),
    /// payloads by reference. Empty `data` appends nothing.
    pub(crate) fn stream(&mut self, kind: StreamKind, id: u16, data: Bytes) {
        let ty = kind.record_type() as u8;
        let mut at = 0;
        while at < data.len() {
            let n = (data.len() - at).min(STREAM_CHUNK_LEN);
            let pad = (8 - (n & 7)) & 7;
            self.tail.extend_from_slice(&[
                VERSION_1,
                ty,
                (id >> 8) as u8,
                id as u8,
                (n >> 8) as u8,
                n as u8,
                pad as u8,
                0,
            ]);
            self.push(data.slice(at..at + n));
            self.tail.extend_from_slice(&[0u8; 8][..pad]);
            at += n;
        }
    }

    /// One `writev` of what is queued; `Ready(Ok(n))` with the bytes written.
    pub(crate) fn poll_write<W: AsyncWrite + ?Sized>(
        &mut self,
        mut w: Pin<&mut W>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        self.seal();
        let n = {
            let slices: Vec<IoSlice<'_>> = self
                .segs
                .iter()
                .take(MAX_SLICES)
                .map(|s| IoSlice::new(s))
                .collect();
            if slices.is_empty() {
                return Poll::Ready(Ok(0));
            }
            ready!(w.as_mut().poll_write_vectored(cx, &slices))?
        };
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        self.segs_len -= n;
        let mut left = n;
        while left > 0 {
            let front = self.segs.front_mut().expect("wrote no more than queued");
            if front.len() <= left {
                left -= front.len();
                self.segs.pop_front();
            } else {
                front.advance(left);
                left = 0;
            }
        }
        Poll::Ready(Ok(n))
    }

    /// Writes everything queued.
    pub(crate) async fn write_all<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        w: &mut W,
    ) -> io::Result<()> {
        while !self.is_empty() {
            poll_fn(|cx| self.poll_write(Pin::new(&mut *w), cx)).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Record, record};

    #[tokio::test]
    async fn queued_records_decode_as_encoded_and_survive_short_writes() {
        let big = Bytes::from(vec![9u8; 150_000]);
        let mut q = WriteQueue::default();
        record::encode_begin_request(&mut q.tail, 1, crate::proto::Role::Responder, 1);
        q.stream(StreamKind::Stdout, 1, Bytes::from_static(b"small"));
        q.stream(StreamKind::Stdout, 1, big.clone());
        record::encode_stream_end(&mut q.tail, StreamKind::Stdout, 1);
        let total = q.len();
        // A writer that takes 1000 bytes at a time.
        let (mut a, mut b) = tokio::io::duplex(1000);
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut b, &mut all)
                .await
                .unwrap();
            all
        });
        q.write_all(&mut a).await.unwrap();
        drop(a);
        let all = reader.await.unwrap();
        assert_eq!(all.len(), total);
        let mut buf = BytesMut::from(&all[..]);
        let mut data = Vec::new();
        while let Some(Record { body, .. }) = record::decode(&mut buf).unwrap() {
            if let crate::proto::Body::Stream { data: d, .. } = body {
                data.extend_from_slice(&d);
            }
        }
        assert_eq!(&data[..5], b"small");
        assert_eq!(&data[5..], &big[..]);
    }
}
