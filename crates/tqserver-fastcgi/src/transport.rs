//! Where FastCGI travels: TCP or Unix sockets, behind one [`Address`],
//! one [`Stream`] and one [`Listener`] type shared by client and server.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// A FastCGI endpoint: `127.0.0.1:9000`, `localhost:9000`, or
/// `unix:/run/php/fpm.sock` (a bare absolute path also means a Unix socket,
/// as in php-fpm's `listen`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// `host:port`, resolved at connect time.
    Tcp(String),
    /// Path of a Unix domain socket.
    Unix(PathBuf),
}

/// An address string that is neither `host:port` nor a socket path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid FastCGI address {0:?}: expected host:port, unix:/path or /path")]
pub struct AddressError(pub String);

impl FromStr for Address {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(AddressError(s.into()));
            }
            return Ok(Self::Unix(path.into()));
        }
        if s.starts_with('/') {
            return Ok(Self::Unix(s.into()));
        }
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Self::Tcp(s.into()))
            }
            _ => Err(AddressError(s.into())),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Self {
        Self::Tcp(a.to_string())
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(a) => f.write_str(a),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl Address {
    /// Opens a connection. TCP connections get `TCP_NODELAY`: FastCGI
    /// writes whole records and waits for answers, the worst case for Nagle.
    pub async fn connect(&self) -> io::Result<Stream> {
        match self {
            Self::Tcp(a) => {
                let s = TcpStream::connect(a.as_str()).await?;
                s.set_nodelay(true)?;
                Ok(Stream::Tcp(s))
            }
            Self::Unix(p) => Ok(Stream::Unix(UnixStream::connect(p).await?)),
        }
    }

    /// Binds a listener. A Unix socket path that exists is an error, not
    /// silently replaced: another server may own it.
    pub async fn bind(&self) -> io::Result<Listener> {
        match self {
            Self::Tcp(a) => Ok(Listener::Tcp(TcpListener::bind(a.as_str()).await?)),
            Self::Unix(p) => Ok(Listener::Unix(UnixListener::bind(p)?, p.clone())),
        }
    }
}

/// A connected FastCGI byte stream.
#[derive(Debug)]
pub enum Stream {
    /// TCP.
    Tcp(TcpStream),
    /// Unix domain socket.
    Unix(UnixStream),
}

impl Stream {
    /// The same socket, registered with the current runtime's reactor
    /// instead of the one it was registered with.
    pub fn reregister(self) -> io::Result<Self> {
        Ok(match self {
            Self::Tcp(s) => Self::Tcp(TcpStream::from_std(s.into_std()?)?),
            Self::Unix(s) => Self::Unix(UnixStream::from_std(s.into_std()?)?),
        })
    }

    /// Non-blocking check of an idle connection: true when the peer has
    /// closed it (or sent bytes nobody asked for, which makes it unusable).
    pub fn is_closed_by_peer(&self) -> bool {
        let mut probe = [0u8; 1];
        let r = match self {
            Self::Tcp(s) => s.try_read(&mut probe),
            Self::Unix(s) => s.try_read(&mut probe),
        };
        !matches!(r, Err(ref e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Tcp($s) => {
                let $s = Pin::new($s);
                $e
            }
            Stream::Unix($s) => {
                let $s = Pin::new($s);
                $e
            }
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write_vectored(cx, bufs))
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }
}

/// A bound FastCGI listener.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// Unix domain socket, with its path (removed when the listener drops).
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Accepts one connection (TCP ones get `TCP_NODELAY`).
    pub async fn accept(&self) -> io::Result<Stream> {
        match self {
            Self::Tcp(l) => {
                let (s, _) = l.accept().await?;
                s.set_nodelay(true)?;
                Ok(Stream::Tcp(s))
            }
            Self::Unix(l, _) => Ok(Stream::Unix(l.accept().await?.0)),
        }
    }

    /// The address clients should connect to (the real port when bound to port 0).
    pub fn local_addr(&self) -> io::Result<Address> {
        match self {
            Self::Tcp(l) => Ok(l.local_addr()?.into()),
            Self::Unix(_, p) => Ok(Address::Unix(p.clone())),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Self::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_like_php_fpm_listen() {
        assert_eq!(
            "127.0.0.1:9000".parse(),
            Ok(Address::Tcp("127.0.0.1:9000".into()))
        );
        assert_eq!("[::1]:9000".parse(), Ok(Address::Tcp("[::1]:9000".into())));
        assert_eq!(
            "unix:/run/a.sock".parse(),
            Ok(Address::Unix("/run/a.sock".into()))
        );
        assert_eq!(
            "/run/a.sock".parse(),
            Ok(Address::Unix("/run/a.sock".into()))
        );
        for bad in ["9000", "host:", "host:99999", "unix:", ""] {
            assert!(bad.parse::<Address>().is_err(), "{bad}");
        }
        assert_eq!(Address::Unix("/x.sock".into()).to_string(), "unix:/x.sock");
    }
}
