//! Bytes both ways between a client and an instance after an upgrade
//! (WebSocket), or nothing moves for the idle timeout. A client that
//! closes its half has the instance's write half shut down in turn (the
//! instance may still answer, say its close frame); an instance that
//! closes ends the tunnel, the client's write half shut down, as nginx
//! ends it: a close is passed on, never held.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes copied: client → instance, instance → client.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// From the client to the instance.
    pub up: u64,
    /// From the instance to the client.
    pub down: u64,
}

/// Read buffer per direction.
const CHUNK: usize = 16 * 1024;

/// Copies until the instance has closed (after the client, if the client
/// closed first); an error when either side fails or nothing is sent
/// either way for `idle` (zero: no limit).
/// `count(up, down)` is told of every write, as it happens (metrics).
pub async fn copy<A, B>(
    client: &mut A,
    instance: &mut B,
    idle: Duration,
    count: impl Fn(u64, u64),
) -> io::Result<Copied>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let idle = if idle.is_zero() {
        Duration::from_secs(86_400 * 365)
    } else {
        idle
    };
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut ir, mut iw) = tokio::io::split(instance);
    let mut up_buf = vec![0u8; CHUNK];
    let mut down_buf = vec![0u8; CHUNK];
    let mut up_open = true;
    let mut copied = Copied::default();
    loop {
        tokio::select! {
            r = cr.read(&mut up_buf), if up_open => match r? {
                0 => {
                    up_open = false;
                    let _ = iw.shutdown().await;
                }
                n => {
                    iw.write_all(&up_buf[..n]).await?;
                    copied.up += n as u64;
                    count(n as u64, 0);
                }
            },
            r = ir.read(&mut down_buf) => match r? {
                // The instance is done: nothing more the client sends can
                // go anywhere, so the tunnel ends (as nginx ends it).
                0 => {
                    let _ = cw.shutdown().await;
                    return Ok(copied);
                }
                n => {
                    cw.write_all(&down_buf[..n]).await?;
                    copied.down += n as u64;
                    count(0, n as u64);
                }
            },
            () = tokio::time::sleep(idle) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("nothing sent either way for {idle:?}"),
                ));
            }
        }
    }
}
