//! A std-only HTTP/1.1 worker for TQServer's hot-reload tests (builds in
//! about a second). The test rewrites VERSION and expects the new value.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

const VERSION: &str = "v1";

fn serve(stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 {
                return Ok(());
            }
            if h == "\r\n" || h == "\n" {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let text = format!("{VERSION} {path}\n");
        let (ctype, text) = if path == "/page" {
            ("text/html", format!("<html><body><p>{VERSION}</p></body></html>"))
        } else {
            ("text/plain", text)
        };
        write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        )?;
    }
}

fn main() {
    let port = std::env::var("WORKER_PORT").expect("WORKER_PORT");
    let listener = TcpListener::bind(("127.0.0.1", port.parse::<u16>().unwrap())).unwrap();
    println!("rustw {VERSION} on {port}");
    for s in listener.incoming().flatten() {
        std::thread::spawn(move || serve(s));
    }
}
