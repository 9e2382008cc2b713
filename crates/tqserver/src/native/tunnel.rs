//! Bytes both ways between a client and an instance after an upgrade
//! (WebSocket), or nothing moves for the idle timeout. A client that
//! closes its half has the instance's write half shut down in turn (the
//! instance may still answer, say its close frame); an instance that
//! closes ends the tunnel, the client's write half shut down, as nginx
//! ends it: a close is passed on, never held.
//!
//! At the end of a shutdown's grace period ([`Cut`]) a WebSocket is
//! closed properly: the frames each way are followed as they pass (their
//! headers only), and at the next frame boundary each side gets a close
//! frame with code 1001 (going away), the client's unmasked, the
//! instance's masked as a client's must be (RFC 6455 §5.3). Other
//! upgraded protocols are closed.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::http::Cut;

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

/// How a tunnel ends at a shutdown: when `cut` fires, and whether it
/// carries WebSocket frames (to be ended with close frames).
pub struct Ending {
    /// The listener's end of grace.
    pub cut: Cut,
    /// `Upgrade: websocket`.
    pub websocket: bool,
}

/// Longest wait, once cut, for the frames in passage to end before the
/// close frames go (or, for other protocols, before the tunnel closes).
const CUT_WAIT: Duration = Duration::from_millis(300);

/// Copies until the instance has closed (after the client, if the client
/// closed first); an error when either side fails or nothing is sent
/// either way for `idle`. At `ending`'s cut, closes as
/// the module says.
/// `count(up, down)` is told of every write, as it happens (metrics).
pub async fn copy<A, B>(
    client: &mut A,
    instance: &mut B,
    idle: Duration,
    ending: &Ending,
    count: impl Fn(u64, u64),
) -> io::Result<Copied>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut up_buf = vec![0u8; CHUNK];
    let mut down_buf = vec![0u8; CHUNK];
    let mut up_open = true;
    let mut copied = Copied::default();
    let (mut up_frames, mut down_frames) = (Frames::default(), Frames::default());
    // Once cut: the close frames not yet sent, to the instance and to the client.
    let mut closing: Option<(bool, bool)> = None;
    let give_up = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(give_up);
    // The idle timer is armed once and looked at when it fires (not made
    // anew for every message): the tunnel is idle when nothing moved
    // since `idle` before that.
    let mut moved = tokio::time::Instant::now();
    let idle_check = tokio::time::sleep(idle);
    tokio::pin!(idle_check);
    // Made once: a wait on the cut made anew for every message would lock
    // the token's list of waiters twice a message.
    let cut = ending.cut.cut();
    tokio::pin!(cut);
    loop {
        if let Some((to_instance, to_client)) = closing.as_mut() {
            if *to_instance && up_frames.at_boundary() {
                instance.write_all(&masked_going_away()).await?;
                *to_instance = false;
            }
            if *to_client && down_frames.at_boundary() {
                client.write_all(&GOING_AWAY).await?;
                *to_client = false;
            }
            if !*to_instance && !*to_client {
                let _ = instance.shutdown().await;
                let _ = client.shutdown().await;
                return Ok(copied);
            }
        }
        let (up_on, down_on) = match closing {
            Some((i, c)) => (up_open && i, c),
            None => (up_open, true),
        };
        tokio::select! {
            r = client.read(&mut up_buf), if up_on => match r? {
                0 => {
                    up_open = false;
                    let _ = instance.shutdown().await;
                    if let Some((i, _)) = closing.as_mut() {
                        *i = false;
                    }
                }
                n => {
                    moved = tokio::time::Instant::now();
                    instance.write_all(&up_buf[..n]).await?;
                    up_frames.feed(&up_buf[..n]);
                    copied.up += n as u64;
                    count(n as u64, 0);
                }
            },
            r = instance.read(&mut down_buf), if down_on => match r? {
                // The instance is done: nothing more the client sends can
                // go anywhere, so the tunnel ends (as nginx ends it).
                0 => {
                    if let Some((_, true)) = closing {
                        if down_frames.at_boundary() {
                            let _ = client.write_all(&GOING_AWAY).await;
                        }
                    }
                    let _ = client.shutdown().await;
                    return Ok(copied);
                }
                n => {
                    moved = tokio::time::Instant::now();
                    client.write_all(&down_buf[..n]).await?;
                    down_frames.feed(&down_buf[..n]);
                    copied.down += n as u64;
                    count(0, n as u64);
                }
            },
            () = &mut cut, if closing.is_none() => {
                if !ending.websocket {
                    return Err(io::Error::other("closed at the end of the shutdown grace period"));
                }
                closing = Some((up_open, true));
                give_up.as_mut().reset(tokio::time::Instant::now() + CUT_WAIT);
            }
            () = &mut give_up => {
                return Err(io::Error::other(
                    "a frame still in passage at the end of the shutdown grace period",
                ));
            }
            () = &mut idle_check => {
                let quiet_until = moved + idle;
                if tokio::time::Instant::now() >= quiet_until {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("nothing sent either way for {idle:?}"),
                    ));
                }
                idle_check.as_mut().reset(quiet_until);
            }
        }
    }
}

/// A close frame from the server: code 1001, going away.
const GOING_AWAY: [u8; 4] = [0x88, 0x02, 0x03, 0xE9];

/// A close frame from a client (masked): code 1001.
fn masked_going_away() -> [u8; 8] {
    let key = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x5a5a_5a5a, |d| d.subsec_nanos())
        .to_le_bytes();
    [
        0x88,
        0x82,
        key[0],
        key[1],
        key[2],
        key[3],
        0x03 ^ key[0],
        0xE9 ^ key[1],
    ]
}

/// Where a stream of WebSocket frames is: inside a header (its bytes so
/// far) or a payload (the bytes left of it).
#[derive(Debug, Default)]
struct Frames {
    head: [u8; 14],
    have: usize,
    left: u64,
}

impl Frames {
    /// Follows `bytes` as they pass.
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.left > 0 {
                let n = usize::try_from(self.left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.left -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            self.head[self.have] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            if let Some(len) = self.payload_length() {
                self.left = len;
                self.have = 0;
            }
        }
    }

    /// The payload length once the header is complete.
    fn payload_length(&self) -> Option<u64> {
        if self.have < 2 {
            return None;
        }
        let h = &self.head;
        let len7 = h[1] & 0x7f;
        let extended = match len7 {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if h[1] & 0x80 != 0 { 4 } else { 0 };
        if self.have < 2 + extended + mask {
            return None;
        }
        Some(match len7 {
            126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
            127 => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
            n => u64::from(n),
        })
    }

    /// Between two frames.
    fn at_boundary(&self) -> bool {
        self.left == 0 && self.have == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_boundaries_are_followed_across_reads_of_any_size() {
        // A masked 5-byte text frame, an unmasked 300-byte binary frame
        // (16-bit length), an empty ping, a 70,000-byte frame (64-bit).
        let mut wire = vec![0x81, 0x85, 1, 2, 3, 4, b'h', b'e', b'l', b'l', b'o'];
        wire.extend_from_slice(&[0x82, 126, 0x01, 0x2c]);
        wire.extend(std::iter::repeat_n(7u8, 300));
        wire.extend_from_slice(&[0x89, 0x00]);
        wire.extend_from_slice(&[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        wire.extend(std::iter::repeat_n(9u8, 70_000));
        let ends = [11, 11 + 4 + 300, 11 + 304 + 2, wire.len()];
        for step in [1, 2, 3, 7, 64, 1000, wire.len()] {
            let mut f = Frames::default();
            let mut at = 0;
            for piece in wire.chunks(step) {
                f.feed(piece);
                at += piece.len();
                assert_eq!(f.at_boundary(), ends.contains(&at), "step {step}, at {at}");
            }
        }
        // Partial headers are not boundaries.
        let mut f = Frames::default();
        f.feed(&[0x82, 126, 0x01]);
        assert!(!f.at_boundary());
        f.feed(&[0x00]);
        assert!(!f.at_boundary());
        f.feed(&[0u8; 256]);
        assert!(f.at_boundary());
    }
}
