//! One accepted connection: reads records, demultiplexes them into
//! requests, polls each request's handler in this task, and answers
//! management records. Output goes through the writer task (`writer.rs`).

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch};

use super::request::{Request, ResponseWriter, Stdin};
use super::writer::{self, Out};
use super::{Handler, ServerConfig, ServerError};
use crate::proto::record::{self, KEEP_CONN, NULL_REQUEST_ID};
use crate::proto::{
    self, Body, Params, ParamsCollector, ProtoError, ProtocolStatus, Record, Role, StreamKind,
};

/// App status sent in `END_REQUEST` for a request aborted by the web server.
pub const ABORTED_APP_STATUS: u32 = 1;
/// App status sent in `END_REQUEST` when the handler panicked: the request
/// still ends, so the web server answers instead of waiting forever.
pub const PANICKED_APP_STATUS: u32 = 2;

/// Messages queued to the writer before it blocks senders.
const OUT_QUEUE: usize = 64;

enum Live {
    /// Collecting `PARAMS`.
    Params {
        role: Role,
        keep_conn: bool,
        collector: ParamsCollector,
    },
    /// The handler runs.
    Running {
        generation: u64,
        stdin: Option<mpsc::Sender<Bytes>>,
        data: Option<mpsc::Sender<Bytes>>,
        abort: Option<oneshot::Sender<()>>,
    },
}

struct Conn<H> {
    handler: Arc<H>,
    config: Arc<ServerConfig>,
    live: HashMap<u16, Live>,
    out: mpsc::Sender<Out>,
    /// Handlers of this connection's requests, polled by its task.
    handlers: Handlers,
    /// An input chunk its request's queue had no room for: no more records
    /// are read until it is delivered (the handler reads at its pace).
    pending: Option<PendingInput>,
    next_generation: u64,
    /// A request without `FCGI_KEEP_CONN` was seen: close when idle.
    close_when_idle: bool,
    /// The server is shutting down: no new requests.
    draining: bool,
}

/// Serves one connection until the peer closes it, a request without
/// `FCGI_KEEP_CONN` completes, or `shutdown` turns true and the
/// connection's requests are done.
pub(crate) async fn serve<S, H>(
    io: S,
    handler: Arc<H>,
    config: Arc<ServerConfig>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ServerError>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
    H: Handler,
{
    let (mut reader, w) = tokio::io::split(io);
    let (out, out_rx) = mpsc::channel(OUT_QUEUE);
    let writer = tokio::spawn(writer::run(w, out_rx));
    let mut conn = Conn {
        handler,
        config,
        live: HashMap::new(),
        out,
        handlers: Handlers::default(),
        pending: None,
        next_generation: 0,
        close_when_idle: false,
        draining: *shutdown.borrow(),
    };
    let mut rbuf = BytesMut::with_capacity(16 << 10);
    let mut reading = true;
    let result = loop {
        if (conn.close_when_idle || conn.draining || !reading) && conn.live.is_empty() {
            break Ok(());
        }
        tokio::select! {
            biased;
            Some((id, generation)) = std::future::poll_fn(|cx| conn.handlers.poll_next(cx)) => {
                if matches!(conn.live.get(&id), Some(Live::Running { generation: g, .. }) if *g == generation) {
                    conn.live.remove(&id);
                }
            }
            (id, delivered) = pending_delivery(&mut conn.pending), if conn.pending.is_some() => {
                conn.pending = None;
                if !delivered {
                    conn.close_input(id);
                }
            }
            changed = shutdown.changed(), if !conn.draining => {
                // A dropped sender means the server is gone: drain too.
                let _ = changed;
                conn.draining = true;
            }
            r = next_record(&mut reader, &mut rbuf), if reading && conn.pending.is_none() => match r {
                Ok(Some(rec)) => {
                    if let Err(e) = conn.on_record(rec).await {
                        break Err(e);
                    }
                }
                Ok(None) => {
                    // The web server closed (or half-closed) its side: no
                    // more input. Requests that were complete finish and
                    // answer; the others see their input end early.
                    reading = false;
                    conn.end_inputs();
                }
                Err(e) => break Err(e),
            },
        }
    };
    if result.is_err() {
        // Protocol error or broken connection: stop every handler.
        conn.live.clear();
    }
    let _ = conn.out.send(Out::Close).await;
    drop(conn);
    let _ = writer.await;
    result
}

/// Reads until a whole record is buffered. Cancel-safe: bytes read land in
/// `rbuf` and are decoded on the next call.
async fn next_record<R: AsyncRead + Unpin>(
    reader: &mut R,
    rbuf: &mut BytesMut,
) -> Result<Option<Record>, ServerError> {
    loop {
        if let Some(rec) = proto::decode(rbuf)? {
            return Ok(Some(rec));
        }
        rbuf.reserve(16 << 10);
        if reader.read_buf(rbuf).await? == 0 {
            return if rbuf.is_empty() {
                Ok(None)
            } else {
                Err(ServerError::Protocol(ProtoError::Unexpected(
                    "connection closed in the middle of a record".into(),
                )))
            };
        }
    }
}

impl<H: Handler> Conn<H> {
    /// Sends already-encoded records. (A free function of the sender, not a
    /// `&self` method: `Conn` holds handler futures, which are not `Sync`.)
    async fn raw(out: &mpsc::Sender<Out>, f: impl FnOnce(&mut BytesMut)) {
        let mut b = BytesMut::with_capacity(32);
        f(&mut b);
        let _ = out.send(Out::Raw(b.freeze())).await;
    }

    async fn refuse(&mut self, id: u16, status: ProtocolStatus) {
        Self::raw(&self.out, |b| record::encode_end_request(b, id, 0, status)).await;
    }

    /// The pending chunk's handler stopped reading (or its stream ended):
    /// no more input goes to it.
    fn close_input(&mut self, id: u16) {
        if let Some(Live::Running { stdin, data, .. }) = self.live.get_mut(&id) {
            *stdin = None;
            *data = None;
        }
    }

    fn end_inputs(&mut self) {
        // Dropping the senders ends every input stream as incomplete;
        // requests still collecting params can never start.
        self.live.retain(|_, l| match l {
            Live::Params { .. } => false,
            Live::Running { stdin, data, .. } => {
                *stdin = None;
                *data = None;
                true
            }
        });
    }

    async fn on_record(&mut self, rec: Record) -> Result<(), ServerError> {
        let id = rec.request_id;
        match rec.body {
            Body::BeginRequest { role, flags } => self.on_begin(id, role, flags).await,
            Body::Stream { kind, data } => self.on_stream(id, kind, data).await,
            Body::AbortRequest => {
                match self.live.remove(&id) {
                    Some(Live::Running {
                        generation,
                        stdin,
                        data,
                        abort,
                    }) => {
                        drop((stdin, data));
                        if let Some(a) = abort {
                            let _ = a.send(());
                        }
                        // Keep it live until its task has sent END_REQUEST,
                        // so the id is not reused before that.
                        self.live.insert(
                            id,
                            Live::Running {
                                generation,
                                stdin: None,
                                data: None,
                                abort: None,
                            },
                        );
                    }
                    Some(Live::Params { .. }) => {
                        Self::raw(&self.out, |b| {
                            record::encode_end_request(
                                b,
                                id,
                                ABORTED_APP_STATUS,
                                ProtocolStatus::RequestComplete,
                            )
                        })
                        .await;
                    }
                    None => {}
                }
                Ok(())
            }
            Body::GetValues(asked) => {
                let answer = self.values(&asked);
                Self::raw(&self.out, |b| {
                    let _ = record::encode_get_values_result(b, &answer);
                })
                .await;
                Ok(())
            }
            Body::Unrecognized { record_type, .. } => {
                if id == NULL_REQUEST_ID {
                    Self::raw(&self.out, |b| record::encode_unknown_type(b, record_type)).await;
                }
                // Spec §4.2 defines the answer only for management records;
                // an unknown application record is ignored.
                Ok(())
            }
            // Records only an application sends: a confused peer, ignore.
            Body::EndRequest { .. } | Body::GetValuesResult(_) | Body::UnknownType(_) => Ok(()),
        }
    }

    fn values(&self, asked: &Params) -> Params {
        let c = &self.config;
        let mut answer = Params::new();
        for (name, _) in asked.iter() {
            let v = match name.as_ref() {
                b"FCGI_MAX_CONNS" => c.max_connections.to_string(),
                b"FCGI_MAX_REQS" => c
                    .max_connections
                    .saturating_mul(c.max_requests_per_connection)
                    .to_string(),
                b"FCGI_MPXS_CONNS" => u8::from(c.multiplex).to_string(),
                // Spec §4.1: unknown names are left out of the answer.
                _ => continue,
            };
            answer.push(name.clone(), v);
        }
        answer
    }

    async fn on_begin(&mut self, id: u16, role: Role, flags: u8) -> Result<(), ServerError> {
        if id == NULL_REQUEST_ID {
            return Err(ProtoError::Unexpected("BEGIN_REQUEST with request id 0".into()).into());
        }
        if self.live.contains_key(&id) {
            return Err(ProtoError::Unexpected(format!(
                "BEGIN_REQUEST for request {id}, which is in progress"
            ))
            .into());
        }
        let keep_conn = flags & KEEP_CONN != 0;
        if !keep_conn {
            self.close_when_idle = true;
        }
        let refusal = if self.draining {
            Some(ProtocolStatus::Overloaded)
        } else if !self.config.multiplex && !self.live.is_empty() {
            Some(ProtocolStatus::CantMpxConn)
        } else if self.live.len() >= self.config.max_requests_per_connection {
            Some(ProtocolStatus::Overloaded)
        } else if matches!(role, Role::Other(_)) {
            Some(ProtocolStatus::UnknownRole)
        } else {
            None
        };
        if let Some(status) = refusal {
            self.refuse(id, status).await;
            return Ok(());
        }
        self.live.insert(
            id,
            Live::Params {
                role,
                keep_conn,
                collector: ParamsCollector::new(self.config.limits),
            },
        );
        Ok(())
    }

    async fn on_stream(
        &mut self,
        id: u16,
        kind: StreamKind,
        data: Bytes,
    ) -> Result<(), ServerError> {
        let Some(live) = self.live.get_mut(&id) else {
            // Spec §3.3: records for requests that are not active are ignored
            // (input still in flight after an abort, for example).
            return Ok(());
        };
        match (live, kind) {
            (Live::Params { collector, .. }, StreamKind::Params) => {
                if !data.is_empty() {
                    return collector.push(data).map_err(Into::into);
                }
                let Some(Live::Params {
                    role,
                    keep_conn,
                    collector,
                }) = self.live.remove(&id)
                else {
                    unreachable!("matched above")
                };
                let params = collector.finish()?;
                self.start(id, role, keep_conn, params).await;
                Ok(())
            }
            (Live::Running { stdin, .. }, StreamKind::Stdin) => {
                self.pending = forward(id, stdin, data);
                Ok(())
            }
            (Live::Running { data: sender, .. }, StreamKind::Data) => {
                self.pending = forward(id, sender, data);
                Ok(())
            }
            (Live::Running { .. }, StreamKind::Params) => Ok(()),
            (_, kind) => Err(ProtoError::Unexpected(format!(
                "{kind:?} record for request {id} at the wrong time"
            ))
            .into()),
        }
    }

    async fn start(&mut self, id: u16, role: Role, keep_conn: bool, params: Params) {
        let generation = self.next_generation;
        self.next_generation += 1;
        let depth = self.config.input_queue.max(1);
        let (stdin_tx, stdin_rx) = mpsc::channel(depth);
        // Only the Filter role has a DATA stream; for the others it is
        // complete and empty from the start.
        let (data_tx, data) = if role == Role::Filter {
            let (tx, rx) = mpsc::channel(depth);
            (Some(tx), Stdin::new(rx))
        } else {
            (None, Stdin::finished())
        };
        let (abort_tx, abort_rx) = oneshot::channel::<()>();
        let _ = self.out.send(Out::Begin { id, generation }).await;
        let req = Request {
            id,
            role,
            keep_conn,
            params,
            stdin: Stdin::new(stdin_rx),
            data,
        };
        let writer = ResponseWriter {
            id,
            generation,
            out: self.out.clone(),
        };
        let handler = self.handler.clone();
        let out = self.out.clone();
        // Polled by the connection's own task, not spawned: a request is
        // served without a task hand-over (handlers of one connection share
        // its task; spawn inside a handler for CPU-heavy work).
        self.handlers.push(Box::pin(async move {
            let app_status = tokio::select! {
                status = CatchUnwind(Box::pin(handler.handle(req, writer))) => {
                    status.unwrap_or_else(|_| {
                        tracing::error!(request_id = id, "FastCGI handler panicked; ending the request");
                        PANICKED_APP_STATUS
                    })
                }
                // Aborted by the web server, or the connection failed.
                _ = abort_rx => ABORTED_APP_STATUS,
            };
            let _ = out
                .send(Out::End {
                    id,
                    generation,
                    app_status,
                    protocol_status: ProtocolStatus::RequestComplete,
                })
                .await;
            (id, generation)
        }));
        self.live.insert(
            id,
            Live::Running {
                generation,
                stdin: Some(stdin_tx),
                data: data_tx,
                abort: Some(abort_tx),
            },
        );
    }
}

/// Turns a panic while polling the handler into an error value, so the
/// request still gets its `END_REQUEST`.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, ()>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(move || fut.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(())),
        }
    }
}

/// An input chunk waiting for room in its request's queue.
struct PendingInput {
    id: u16,
    delivery: Pin<Box<dyn Future<Output = bool> + Send>>,
}

/// Resolves when the pending chunk was delivered (true) or its handler
/// stopped reading (false).
async fn pending_delivery(pending: &mut Option<PendingInput>) -> (u16, bool) {
    match pending.as_mut() {
        Some(p) => (p.id, p.delivery.as_mut().await),
        None => std::future::pending().await,
    }
}

/// Hands one input record to its request: an empty record ends the stream.
/// A full queue gives back the delivery to wait for.
fn forward(id: u16, sender: &mut Option<mpsc::Sender<Bytes>>, data: Bytes) -> Option<PendingInput> {
    let tx = sender.as_ref()?;
    let end = data.is_empty();
    match tx.try_send(data) {
        Ok(()) if !end => None,
        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {
            // The stream is complete, or the handler stopped reading.
            *sender = None;
            None
        }
        Err(mpsc::error::TrySendError::Full(data)) => {
            let tx = tx.clone();
            if end {
                *sender = None;
            }
            Some(PendingInput {
                id,
                delivery: Box::pin(async move { tx.send(data).await.is_ok() && !end }),
            })
        }
    }
}

/// The handlers of one connection's requests: few (usually one), polled
/// together by the connection's task whenever any of them is woken.
#[derive(Default)]
struct Handlers {
    futures: Vec<HandlerFuture>,
}

/// A request's handler, ending with its request id and generation.
type HandlerFuture = Pin<Box<dyn Future<Output = (u16, u64)> + Send>>;

impl Handlers {
    fn push(&mut self, f: HandlerFuture) {
        self.futures.push(f);
    }

    /// The next handler to finish, with its request id and generation;
    /// pending while there is none (or none is done).
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<(u16, u64)>> {
        for i in 0..self.futures.len() {
            if let Poll::Ready(done) = self.futures[i].as_mut().poll(cx) {
                drop(self.futures.swap_remove(i));
                return Poll::Ready(Some(done));
            }
        }
        Poll::Pending
    }
}
