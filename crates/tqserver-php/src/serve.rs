//! The FastCGI side of a worker process: connections accepted on the
//! master's listening socket, records decoded with tqserver-fastcgi's
//! sans-IO codec over blocking sockets, one request at a time (a PHP
//! process runs one script at a time, as php-cgi's children do;
//! `FCGI_MPXS_CONNS` is 0). The request body is read as PHP asks for it,
//! never buffered whole.
//!
//! [`Server`] is pulled: [`Server::next_request`] blocks until a request's
//! CGI variables are in, PHP runs it through [`php::Io`], and
//! [`Server::end_request`] completes it. Classic mode runs a script for
//! each request; worker mode calls the same two from inside the worker
//! script's `tqserver_handle_request()`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use bytes::BytesMut;
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::signal::SigSet;
use nix::sys::signalfd::{SfdFlags, SignalFd};
use tqserver_fastcgi::proto::record::{
    self, KEEP_CONN, encode_end_request, encode_stream, encode_stream_end, encode_unknown_type,
};
use tqserver_fastcgi::proto::{Body, ParamsCollector, ProtocolStatus, Record, Role, StreamKind};
use tqserver_fastcgi::{Limits, Params};

use crate::php;

/// Output buffered before it is written to the socket (PHP's own output
/// buffer sits in front of this one).
const OUT_HIGH_WATER: usize = 64 << 10;
/// Read size.
const READ_CHUNK: usize = 64 << 10;
/// Request body read ahead of PHP at most while looking for an abort.
const AHEAD: usize = 1 << 20;

/// The CGI variable TQServer's shared pool sends to learn which process
/// accepted its connection; answered with the pid, without PHP (a worker
/// script would take any request as its own).
pub const PID_PROBE: &str = "TQSERVER_PID_PROBE";

/// A worker process's requests: the listening socket, the connection being
/// served, and the stop signals (a signalfd: they stay blocked, and a
/// request always finishes before the process stops).
pub struct Server {
    listener: OwnedFd,
    stop: SignalFd,
    conn: Option<Conn>,
    stopping: bool,
    /// The worker script is to end and boot again (worker mode).
    recycle: bool,
    /// `php.worker_max_memory`: after a request that leaves the worker
    /// script holding more, it ends and boots again (worker mode).
    max_memory: Option<usize>,
    /// Serve one connection, then stop (the master forks on demand).
    one_connection: bool,
    accepted: u64,
    served: u64,
}

/// Whether a wait found data or a stop signal.
enum Woke {
    Readable,
    Stop,
}

impl Server {
    /// Serves connections accepted on `listener` (non-blocking, shared
    /// with the master's other children) until one of `stop_signals`
    /// (blocked in this process) arrives.
    pub fn new(
        listener: OwnedFd,
        stop_signals: &SigSet,
        max_memory: Option<usize>,
        one_connection: bool,
    ) -> nix::Result<Self> {
        let stop = SignalFd::with_flags(stop_signals, SfdFlags::SFD_NONBLOCK)?;
        Ok(Self {
            listener,
            stop,
            conn: None,
            stopping: false,
            recycle: false,
            max_memory,
            one_connection,
            accepted: 0,
            served: 0,
        })
    }

    /// How many requests this process has completed.
    pub fn served(&self) -> u64 {
        self.served
    }

    /// Whether a stop signal arrived (the process is to end).
    pub fn stopping(&self) -> bool {
        self.stopping
    }

    /// Whether the worker script was told to end so that a fresh one
    /// boots (`max_memory`); clears it.
    pub fn take_recycle(&mut self) -> bool {
        std::mem::take(&mut self.recycle)
    }

    /// Blocks until the next request's CGI variables are in; `None` when
    /// the process is to stop (a stop signal, a broken listening socket)
    /// or the worker script to boot again (`max_memory`). Connections the web server closes are replaced
    /// by the next one accepted.
    pub fn next_request(&mut self) -> Option<Params> {
        loop {
            if self.stopping || self.recycle {
                return None;
            }
            if self.conn.is_none() {
                if self.one_connection && self.accepted > 0 {
                    // Its connection is over: so is this process.
                    self.stopping = true;
                    return None;
                }
                if let Woke::Stop = wait(&self.stop, &mut self.stopping, self.listener.as_fd()) {
                    return None;
                }
                match nix::sys::socket::accept(&self.listener) {
                    Ok(fd) => {
                        self.accepted += 1;
                        self.conn = Some(Conn::new(File::from(fd)));
                    }
                    // Another child took it, or a signal.
                    Err(
                        nix::errno::Errno::EAGAIN
                        | nix::errno::Errno::EINTR
                        | nix::errno::Errno::ECONNABORTED,
                    ) => continue,
                    Err(e) => {
                        eprintln!("tqserver php[{}]: accept: {e}", std::process::id());
                        self.stopping = true;
                        return None;
                    }
                }
            }
            let mut conn = self.conn.take()?;
            if conn.inbuf.is_empty()
                && !conn.eof
                && matches!(
                    wait(&self.stop, &mut self.stopping, conn.sock.as_fd()),
                    Woke::Stop
                )
            {
                return None;
            }
            // Closed or broken: the next connection.
            let Ok(Some(params)) = conn.next_request() else {
                continue;
            };
            // Answered here, without PHP: which process this is, or
            // variables no web server sends.
            let answer = if params.get(PID_PROBE).is_some() {
                format!("Content-Type: text/plain\r\n\r\n{}", std::process::id()).into_bytes()
            } else if params.iter().any(|(n, v)| n.contains(&0) || v.contains(&0)) {
                b"Status: 400 Bad Request\r\nContent-Type: text/plain\r\n\r\nA CGI variable holds a NUL byte.\n".to_vec()
            } else {
                self.conn = Some(conn);
                return Some(params);
            };
            php::Io::write(&mut conn, &answer);
            conn.end(0);
            conn.drain();
            if conn.keep {
                self.conn = Some(conn);
            }
        }
    }

    /// Completes the request [`Server::next_request`] returned: the end of
    /// its response (unless `fastcgi_finish_request()` sent it), what is
    /// left of its body read and dropped. `memory`: what the worker script
    /// holds now (worker mode; 0 otherwise).
    pub fn end_request(&mut self, status: i32, memory: usize) {
        self.served += 1;
        if let Some(mut conn) = self.conn.take() {
            if conn.active {
                if !conn.finished {
                    conn.end(status);
                }
                conn.drain();
                conn.active = false;
            }
            if conn.keep && !conn.broken {
                self.conn = Some(conn);
            }
        }
        if let Some(max) = self.max_memory {
            if memory > max {
                eprintln!(
                    "tqserver php[{}]: the worker script holds {memory} bytes after its request, above php.worker_max_memory ({max}); it ends and boots again",
                    std::process::id()
                );
                self.recycle = true;
            }
        }
    }
}

/// Waits until `fd` is readable or a stop signal is pending (`stopping`
/// is then set).
fn wait(stop: &SignalFd, stopping: &mut bool, fd: BorrowedFd<'_>) -> Woke {
    if *stopping {
        return Woke::Stop;
    }
    let mut fds = [
        PollFd::new(fd, PollFlags::POLLIN),
        PollFd::new(stop.as_fd(), PollFlags::POLLIN),
    ];
    loop {
        match poll(&mut fds, nix::poll::PollTimeout::NONE) {
            Ok(_) => {
                if fds[1].revents().is_some_and(|r| !r.is_empty()) {
                    *stopping = true;
                    return Woke::Stop;
                }
                if fds[0].revents().is_some_and(|r| !r.is_empty()) {
                    return Woke::Readable;
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => {
                *stopping = true;
                return Woke::Stop;
            }
        }
    }
}

impl php::Io for Server {
    fn write(&mut self, bytes: &[u8]) -> bool {
        match self.conn.as_mut() {
            Some(c) if c.active => c.write(bytes),
            // Outside a request (a worker script booting): the log.
            _ => {
                log_outside(bytes);
                true
            }
        }
    }

    fn flush(&mut self) -> bool {
        match self.conn.as_mut() {
            Some(c) if c.active => c.flush(),
            _ => true,
        }
    }

    fn read_body(&mut self, buf: &mut [u8]) -> usize {
        match self.conn.as_mut() {
            Some(c) if c.active => c.read_body(buf),
            _ => 0,
        }
    }

    fn finish(&mut self) {
        if let Some(c) = self.conn.as_mut().filter(|c| c.active) {
            c.finish();
        }
    }

    fn log(&mut self, message: &[u8]) {
        match self.conn.as_mut() {
            Some(c) if c.active => c.log(message),
            _ => log_outside(message),
        }
    }

    fn next_request(&mut self) -> Option<Params> {
        Server::next_request(self)
    }

    fn end_request(&mut self, status: i32, memory: usize) {
        Server::end_request(self, status, memory);
    }
}

/// Output or a message with no request to go to: the process's stderr,
/// which TQServer logs as the worker's.
fn log_outside(bytes: &[u8]) {
    let mut err = std::io::stderr().lock();
    let text = String::from_utf8_lossy(bytes);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let _ = writeln!(err, "{line}");
    }
}

/// One FastCGI connection.
struct Conn {
    sock: File,
    inbuf: BytesMut,
    /// Where reads land (allocated and zeroed once per connection).
    scratch: Vec<u8>,
    out: BytesMut,
    /// The request being run, and whether its STDIN has ended.
    id: u16,
    active: bool,
    keep: bool,
    stdin_done: bool,
    /// Body bytes read from a record but not yet given to PHP.
    /// (A queue: an abort check reads records ahead of PHP.)
    pending: std::collections::VecDeque<bytes::Bytes>,
    finished: bool,
    broken: bool,
    /// The web server sent FCGI_ABORT_REQUEST: the client is gone; the
    /// script's output is dropped, the request still ends properly.
    aborted: bool,
    eof: bool,
}

impl Conn {
    fn new(sock: File) -> Self {
        Conn {
            sock,
            inbuf: BytesMut::with_capacity(READ_CHUNK),
            scratch: vec![0; READ_CHUNK],
            out: BytesMut::with_capacity(16 << 10),
            id: 0,
            active: false,
            keep: true,
            stdin_done: true,
            pending: std::collections::VecDeque::new(),
            finished: false,
            broken: false,
            aborted: false,
            eof: false,
        }
    }

    /// Whether the web server aborted the request (FCGI_ABORT_REQUEST, or
    /// the connection closed):
    /// records that arrived meanwhile are read without waiting, the body's
    /// kept for PHP (up to [`AHEAD`] bytes ahead of it).
    fn check_abort(&mut self) -> bool {
        if self.aborted || self.eof || self.broken {
            return self.aborted;
        }
        let ahead: usize = self.pending.iter().map(bytes::Bytes::len).sum();
        if ahead >= AHEAD {
            return false;
        }
        match nix::sys::socket::recv(
            self.sock.as_fd().as_raw_fd(),
            &mut self.scratch,
            nix::sys::socket::MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(0) => {
                // The web server gave up on the request and closed the
                // connection (the client left before the answer began).
                self.eof = true;
                self.aborted = true;
            }
            Ok(n) => self.inbuf.extend_from_slice(&self.scratch[..n]),
            Err(_) => {}
        }
        loop {
            match record::decode(&mut self.inbuf) {
                Ok(Some(rec)) if rec.request_id == self.id => match rec.body {
                    Body::AbortRequest => self.aborted = true,
                    Body::Stream {
                        kind: StreamKind::Stdin,
                        data,
                    } if !self.stdin_done => {
                        if data.is_empty() {
                            self.stdin_done = true;
                        } else {
                            self.pending.push_back(data);
                        }
                    }
                    _ => {}
                },
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    self.broken = true;
                    break;
                }
            }
        }
        self.aborted
    }

    fn next_record(&mut self) -> Result<Option<Record>, String> {
        loop {
            match record::decode(&mut self.inbuf) {
                Ok(Some(r)) => return Ok(Some(r)),
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
            if self.eof {
                return if self.inbuf.is_empty() {
                    Ok(None)
                } else {
                    Err("the connection ended inside a record".into())
                };
            }
            match self.sock.read(&mut self.scratch) {
                Ok(0) => self.eof = true,
                Ok(n) => self.inbuf.extend_from_slice(&self.scratch[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    fn send(&mut self) -> bool {
        if self.broken {
            return false;
        }
        if !self.out.is_empty() {
            if self.sock.write_all(&self.out).is_err() {
                self.broken = true;
                return false;
            }
            self.out.clear();
        }
        true
    }

    /// Records until a request's PARAMS are complete; `None` when the web
    /// server closed the connection.
    fn next_request(&mut self) -> Result<Option<Params>, String> {
        loop {
            let Some(rec) = self.next_record()? else {
                return Ok(None);
            };
            match rec.body {
                Body::GetValues(asked) => {
                    let mut values = Params::new();
                    for (name, _) in asked.iter() {
                        let v: &[u8] = match &name[..] {
                            b"FCGI_MAX_CONNS" | b"FCGI_MAX_REQS" => b"1",
                            b"FCGI_MPXS_CONNS" => b"0",
                            _ => continue,
                        };
                        values.push(name.clone(), bytes::Bytes::from_static(v));
                    }
                    if record::encode_get_values_result(&mut self.out, &values).is_err()
                        || !self.send()
                    {
                        return Err("cannot answer FCGI_GET_VALUES".into());
                    }
                }
                Body::BeginRequest { role, flags } => {
                    if role != Role::Responder {
                        encode_end_request(
                            &mut self.out,
                            rec.request_id,
                            0,
                            ProtocolStatus::UnknownRole,
                        );
                        if !self.send() {
                            return Err("write failed".into());
                        }
                        continue;
                    }
                    self.keep = flags & KEEP_CONN != 0;
                    if let Some(params) = self.params(rec.request_id)? {
                        return Ok(Some(params));
                    }
                }
                // Not ours (a request already ended, or never begun).
                Body::AbortRequest | Body::Stream { .. } => {}
                Body::Unrecognized { record_type, .. } => {
                    encode_unknown_type(&mut self.out, record_type);
                    if !self.send() {
                        return Err("write failed".into());
                    }
                }
                Body::EndRequest { .. } | Body::GetValuesResult(_) | Body::UnknownType(_) => {
                    return Err("a record only an application sends".into());
                }
            }
        }
    }

    /// A request's PARAMS; `None` when it was aborted before they ended.
    fn params(&mut self, id: u16) -> Result<Option<Params>, String> {
        let mut collector = ParamsCollector::new(Limits::default());
        let params = loop {
            let rec = self
                .next_record()?
                .ok_or("the connection ended inside PARAMS")?;
            match rec.body {
                Body::Stream {
                    kind: StreamKind::Params,
                    data,
                } if rec.request_id == id => {
                    if data.is_empty() {
                        break collector.finish().map_err(|e| e.to_string())?;
                    }
                    collector.push(data).map_err(|e| e.to_string())?;
                }
                Body::AbortRequest if rec.request_id == id => {
                    encode_end_request(&mut self.out, id, 0, ProtocolStatus::RequestComplete);
                    self.send();
                    return Ok(None);
                }
                Body::BeginRequest { .. } => {
                    encode_end_request(
                        &mut self.out,
                        rec.request_id,
                        0,
                        ProtocolStatus::CantMpxConn,
                    );
                    self.send();
                }
                _ => {}
            }
        };
        self.id = id;
        self.active = true;
        self.aborted = false;
        self.stdin_done = false;
        self.pending.clear();
        self.finished = false;
        Ok(Some(params))
    }

    fn end(&mut self, status: i32) {
        encode_stream_end(&mut self.out, StreamKind::Stdout, self.id);
        encode_end_request(
            &mut self.out,
            self.id,
            status as u32,
            ProtocolStatus::RequestComplete,
        );
        self.send();
        self.finished = true;
    }

    /// The rest of the body, which the script did not read.
    fn drain(&mut self) {
        let mut sink = [0u8; 8192];
        while !self.stdin_done && self.read_stdin(&mut sink) > 0 {}
        self.active = false;
    }

    fn read_stdin(&mut self, buf: &mut [u8]) -> usize {
        loop {
            if let Some(front) = self.pending.front_mut() {
                let n = buf.len().min(front.len());
                buf[..n].copy_from_slice(&front[..n]);
                bytes::Buf::advance(front, n);
                if front.is_empty() {
                    self.pending.pop_front();
                }
                return n;
            }
            if self.stdin_done {
                return 0;
            }
            let rec = match self.next_record() {
                Ok(Some(r)) => r,
                _ => {
                    self.stdin_done = true;
                    self.broken = true;
                    return 0;
                }
            };
            match rec.body {
                Body::Stream {
                    kind: StreamKind::Stdin,
                    data,
                } if rec.request_id == self.id => {
                    if data.is_empty() {
                        self.stdin_done = true;
                    } else {
                        self.pending.push_back(data);
                    }
                }
                Body::AbortRequest if rec.request_id == self.id => {
                    // The client went away: the script's writes now fail.
                    self.stdin_done = true;
                    self.broken = true;
                }
                _ => {}
            }
        }
    }
}

impl php::Io for Conn {
    fn write(&mut self, bytes: &[u8]) -> bool {
        if self.broken || self.aborted {
            return false;
        }
        encode_stream(&mut self.out, StreamKind::Stdout, self.id, bytes);
        self.out.len() < OUT_HIGH_WATER || self.flush()
    }

    fn flush(&mut self) -> bool {
        if self.check_abort() {
            // Nothing more goes to a client that is gone.
            self.out.clear();
            return false;
        }
        self.send()
    }

    fn read_body(&mut self, buf: &mut [u8]) -> usize {
        // PHP takes a short read for the end of the body
        // (sapi_read_post_block): fill the buffer unless the body ends.
        let mut n = 0;
        while n < buf.len() {
            let got = self.read_stdin(&mut buf[n..]);
            if got == 0 {
                break;
            }
            n += got;
        }
        n
    }

    fn finish(&mut self) {
        if !self.finished {
            self.end(0);
        }
    }

    fn log(&mut self, message: &[u8]) {
        if !self.finished && !self.broken {
            let mut line = message.to_vec();
            line.push(b'\n');
            encode_stream(&mut self.out, StreamKind::Stderr, self.id, &line);
        }
    }
}
