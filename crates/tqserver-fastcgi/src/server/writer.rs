//! The write side of a server connection: one task owns the socket's write
//! half and turns messages from request handlers into records. Handlers
//! never touch the socket, so a handler cancelled mid-write (on
//! `ABORT_REQUEST`) cannot leave half a record behind.

use std::collections::HashMap;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::proto::record;
use crate::proto::{ProtocolStatus, StreamKind};
use crate::write_queue::WriteQueue;

/// A message to the writer task.
#[derive(Debug)]
pub(crate) enum Out {
    /// A request started; records for `(id, generation)` are accepted until its `End`.
    Begin { id: u16, generation: u64 },
    /// Stream bytes (`STDOUT` / `STDERR`) of a request.
    Stream {
        id: u16,
        generation: u64,
        kind: StreamKind,
        data: Bytes,
    },
    /// The request ended: close its streams, send `END_REQUEST`.
    End {
        id: u16,
        generation: u64,
        app_status: u32,
        protocol_status: ProtocolStatus,
    },
    /// Already-encoded records (management answers, refusals).
    Raw(Bytes),
    /// Write everything queued so far, then close the connection.
    Close,
}

/// Stop collecting messages and write once this much is queued.
const BATCH_BYTES: usize = 256 << 10;

/// Per-request bookkeeping of the writer.
struct Live {
    generation: u64,
    stderr_used: bool,
}

/// Runs until `Close`, a write error, or every sender is gone.
pub(crate) async fn run<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::Receiver<Out>) {
    let mut q = WriteQueue::default();
    let mut live: HashMap<u16, Live> = HashMap::new();
    let mut closing = false;
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Out::Begin { id, generation } => {
                    live.insert(
                        id,
                        Live {
                            generation,
                            stderr_used: false,
                        },
                    );
                }
                Out::Stream {
                    id,
                    generation,
                    kind,
                    data,
                } => {
                    // Late output of an aborted request (or of a request id
                    // already reused) is dropped here.
                    if let Some(l) = live.get_mut(&id).filter(|l| l.generation == generation) {
                        l.stderr_used |= kind == StreamKind::Stderr;
                        q.stream(kind, id, data);
                    }
                }
                Out::End {
                    id,
                    generation,
                    app_status,
                    protocol_status,
                } => {
                    if live.get(&id).is_some_and(|l| l.generation == generation) {
                        let l = live.remove(&id).expect("checked");
                        record::encode_stream_end(&mut q.tail, StreamKind::Stdout, id);
                        if l.stderr_used {
                            record::encode_stream_end(&mut q.tail, StreamKind::Stderr, id);
                        }
                        record::encode_end_request(&mut q.tail, id, app_status, protocol_status);
                    }
                }
                Out::Raw(b) => q.push(b),
                Out::Close => closing = true,
            }
            if q.len() < BATCH_BYTES && !closing {
                next = rx.try_recv().ok();
            }
        }
        if q.write_all(&mut w).await.is_err() {
            // The peer is gone; handlers learn it when their sends fail.
            return;
        }
        if closing {
            break;
        }
    }
    let _ = w.flush().await;
    let _ = w.shutdown().await;
}
