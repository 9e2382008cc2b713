//! Which worker a local connection comes from, found from the socket
//! itself rather than from anything the worker says: the kernel's socket
//! table gives the connecting socket's inode, `/proc/*/fd` the process
//! holding it, and its parents lead to the process TQServer started (a
//! native instance, a php-fpm master, a php-cgi), which TQServer
//! recorded with its worker when it started it (`process::worker_of`;
//! else the `WORKER_NAME` of the environment it was started with). A
//! worker's own child that rewrites its environment cannot change that.
//!
//! Linux only, and a scan of /proc per connection: milliseconds, which an
//! outgoing call made through a proxy that logs it can afford.

use std::net::SocketAddr;
use std::path::Path;

/// Who opened the connection from `peer` to `local` (the proxy's
/// address): the worker and the pid holding the socket, when found.
pub fn find(peer: SocketAddr, local: SocketAddr) -> Option<(String, u32)> {
    let inode = socket_inode(peer, local)?;
    let pid = holder(inode)?;
    let me = std::process::id();
    let mut p = pid;
    // At most a few dozen generations; a loop is never followed forever.
    for _ in 0..64 {
        let parent = parent_of(p)?;
        if parent == me {
            // TQServer's own record first: a child may overwrite its
            // environment (php-fpm's process titles do).
            return crate::process::worker_of(p)
                .or_else(|| worker_name(p))
                .map(|w| (w, pid));
        }
        if parent <= 1 {
            return None;
        }
        p = parent;
    }
    None
}

/// The inode of the TCP socket whose local end is `peer` and remote end
/// `local`, from /proc/net/tcp or tcp6.
fn socket_inode(peer: SocketAddr, local: SocketAddr) -> Option<u64> {
    let (want_l, want_r) = (hex_addr(peer), hex_addr(local));
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[1] == want_l && f[2] == want_r {
                return f[9].parse().ok().filter(|i| *i != 0);
            }
        }
    }
    None
}

/// An address as /proc/net/tcp writes it: the IP's 32-bit words in host
/// order as hex, a colon, the port as hex.
fn hex_addr(a: SocketAddr) -> String {
    match a {
        SocketAddr::V4(v) => format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(v.ip().octets()),
            v.port()
        ),
        SocketAddr::V6(v) => {
            let o = v.ip().octets();
            let words: String = o
                .chunks(4)
                .map(|c| format!("{:08X}", u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
                .collect();
            format!("{words}:{:04X}", v.port())
        }
    }
}

/// The process with a descriptor on socket `inode`.
fn holder(inode: u64) -> Option<u32> {
    let want = format!("socket:[{inode}]");
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(e.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == want.as_str()) {
                return Some(pid);
            }
        }
    }
    None
}

/// Field 4 of /proc/<pid>/stat.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// `WORKER_NAME` in the environment `pid` was started with.
fn worker_name(pid: u32) -> Option<String> {
    let env = std::fs::read(Path::new("/proc").join(pid.to_string()).join("environ")).ok()?;
    env.split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(b"WORKER_NAME="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_the_kernel_does() {
        // 127.0.0.1:8080 on a little-endian machine.
        if cfg!(target_endian = "little") {
            assert_eq!(hex_addr("127.0.0.1:8080".parse().unwrap()), "0100007F:1F90");
            assert_eq!(
                hex_addr("[::1]:80".parse().unwrap()),
                "00000000000000000000000001000000:0050"
            );
        }
    }

    #[test]
    fn a_socket_of_this_process_is_found_and_its_parent_read() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let inode = socket_inode(c.local_addr().unwrap(), l.local_addr().unwrap()).unwrap();
        assert_eq!(holder(inode), Some(std::process::id()));
        assert!(parent_of(std::process::id()).is_some());
    }
}
