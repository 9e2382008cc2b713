//! One FastCGI connection of a worker process: records decoded with
//! tqserver-fastcgi's sans-IO codec over a blocking socket, one request at
//! a time (a PHP process runs one script at a time, as php-cgi's children
//! do; `FCGI_MPXS_CONNS` is 0). The request body is read as PHP asks for
//! it, never buffered whole.

use std::fs::File;
use std::io::{Read, Write};

use bytes::BytesMut;
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

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The web server closed it (or asked for it closed after a request).
    Closed,
    /// Bytes that are not FastCGI, or a broken socket.
    Broken(String),
}

/// A connection being served.
pub struct Conn {
    sock: File,
    inbuf: BytesMut,
    /// Where reads land (allocated and zeroed once per connection).
    scratch: Vec<u8>,
    out: BytesMut,
    /// The request being run, and whether its STDIN has ended.
    id: u16,
    stdin_done: bool,
    /// Body bytes read from a record but not yet given to PHP.
    pending: bytes::Bytes,
    finished: bool,
    broken: bool,
    eof: bool,
}

impl Conn {
    /// Serves `sock` until the web server closes it. `idle` is called
    /// before each wait for a new request (the master's children unblock
    /// SIGTERM there); false skips the wait.
    pub fn serve(sock: File, idle: &mut dyn FnMut() -> bool) -> End {
        let mut c = Conn {
            sock,
            inbuf: BytesMut::with_capacity(READ_CHUNK),
            scratch: vec![0; READ_CHUNK],
            out: BytesMut::with_capacity(16 << 10),
            id: 0,
            stdin_done: true,
            pending: bytes::Bytes::new(),
            finished: false,
            broken: false,
            eof: false,
        };
        c.run(idle)
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

    fn run(&mut self, idle: &mut dyn FnMut() -> bool) -> End {
        loop {
            if self.inbuf.is_empty() && !self.eof {
                idle();
            }
            let rec = match self.next_record() {
                Ok(Some(r)) => r,
                Ok(None) => return End::Closed,
                Err(e) => return End::Broken(e),
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
                        return End::Broken("cannot answer FCGI_GET_VALUES".into());
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
                            return End::Broken("write failed".into());
                        }
                        continue;
                    }
                    match self.request(rec.request_id) {
                        Ok(()) if flags & KEEP_CONN != 0 && !self.broken => {}
                        Ok(()) => return End::Closed,
                        Err(e) => return End::Broken(e),
                    }
                }
                // Not ours (a request already ended, or never begun).
                Body::AbortRequest | Body::Stream { .. } => {}
                Body::Unrecognized { record_type, .. } => {
                    encode_unknown_type(&mut self.out, record_type);
                    if !self.send() {
                        return End::Broken("write failed".into());
                    }
                }
                Body::EndRequest { .. } | Body::GetValuesResult(_) | Body::UnknownType(_) => {
                    return End::Broken("a record only an application sends".into());
                }
            }
        }
    }

    /// One request: its PARAMS, then PHP, then the end of the response;
    /// what is left of its STDIN is read and dropped.
    fn request(&mut self, id: u16) -> Result<(), String> {
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
                    return Ok(());
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
        self.stdin_done = false;
        self.pending = bytes::Bytes::new();
        self.finished = false;
        let pairs: Vec<(&[u8], &[u8])> = params.iter().map(|(n, v)| (&n[..], &v[..])).collect();
        let status = match php::run(&pairs, self) {
            Ok(s) => s,
            Err(php::RunError::Nul) => {
                php::Io::write(
                    self,
                    b"Status: 400 Bad Request\r\nContent-Type: text/plain\r\n\r\nA CGI variable holds a NUL byte.\n",
                );
                0
            }
            Err(php::RunError::Startup) => {
                php::Io::write(
                    self,
                    b"Status: 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\nPHP could not start the request.\n",
                );
                1
            }
        };
        if !self.finished {
            self.end(status);
        }
        // The rest of the body, which the script did not read.
        let mut sink = [0u8; 8192];
        while !self.stdin_done && self.read_stdin(&mut sink) > 0 {}
        if self.broken {
            return Err("the web server went away".into());
        }
        Ok(())
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

    fn read_stdin(&mut self, buf: &mut [u8]) -> usize {
        loop {
            if !self.pending.is_empty() {
                let n = buf.len().min(self.pending.len());
                buf[..n].copy_from_slice(&self.pending[..n]);
                bytes::Buf::advance(&mut self.pending, n);
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
                    }
                    self.pending = data;
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
        if self.broken {
            return false;
        }
        encode_stream(&mut self.out, StreamKind::Stdout, self.id, bytes);
        self.out.len() < OUT_HIGH_WATER || self.send()
    }

    fn flush(&mut self) -> bool {
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
        self.end(0);
    }

    fn log(&mut self, message: &[u8]) {
        if !self.finished && !self.broken {
            let mut line = message.to_vec();
            line.push(b'\n');
            encode_stream(&mut self.out, StreamKind::Stderr, self.id, &line);
        }
    }
}
