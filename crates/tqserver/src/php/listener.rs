//! TQServer as a FastCGI server (`fastcgi.listen`): nginx, Caddy or Apache
//! point `fastcgi_pass` here instead of at php-fpm. Each request is checked
//! (document root containment, `limit_extensions`), then forwarded with the
//! web server's params untouched to the worker's backend, and the records
//! are streamed back unparsed. `ping_path` and `status_path` are answered
//! as php-fpm answers them.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tqserver_fastcgi::client::{Frame, Request as FcgiRequest, RequestBody};
use tqserver_fastcgi::server::{self, Request, ResponseWriter};
use tqserver_fastcgi::{Address, Handler, ServerConfig};

use super::cgi::RequestInfo;
use super::cgi::status::Query;
use super::fpm;
use super::script::{self, DocRoot, Target};
use super::upstream::{SendError, SharedUpstream, Upstream};
use crate::config::FastcgiListener;
use crate::logging::WorkerLog;

/// A bound listener, not yet serving.
pub struct Bound {
    socket: Socket,
    conf: FastcgiListener,
}

enum Socket {
    Tcp(TcpListener),
    Unix(UnixListener, std::path::PathBuf),
}

impl Drop for Socket {
    fn drop(&mut self) {
        if let Self::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Bound {
    /// Binds `conf.listen` now, before any PHP process starts, so a busy
    /// address fails the start with a clear error.
    pub async fn bind(conf: &FastcgiListener) -> std::io::Result<Self> {
        let socket = match &conf.listen {
            Address::Tcp(a) => Socket::Tcp(TcpListener::bind(a.as_str()).await?),
            Address::Unix(p) => {
                let l = UnixListener::bind(p)?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(conf.mode))?;
                Socket::Unix(l, p.clone())
            }
        };
        Ok(Self {
            socket,
            conf: conf.clone(),
        })
    }

    /// Where it listens (the real port when bound to port 0).
    pub fn local_addr(&self) -> std::io::Result<Address> {
        Ok(match &self.socket {
            Socket::Tcp(l) => l.local_addr()?.into(),
            Socket::Unix(_, p) => Address::Unix(p.clone()),
        })
    }

    /// Serves until `stop`, then waits up to `grace` for requests in
    /// progress.
    pub async fn serve(
        self,
        upstream: Arc<SharedUpstream>,
        log: WorkerLog,
        stop: CancellationToken,
        grace: Duration,
    ) {
        let front = Arc::new(Front {
            conf: self.conf,
            upstream,
            log: log.clone(),
        });
        let config = Arc::new(ServerConfig::default());
        let mut conns = JoinSet::new();
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => break,
                a = accept(&self.socket, &front.conf.allowed_clients) => a,
            };
            match accepted {
                Ok(Some(io)) => {
                    let (h, c) = (front.clone(), config.clone());
                    conns.spawn(async move {
                        let r = match io {
                            Conn::Tcp(s) => server::serve_connection(s, h, c).await,
                            Conn::Unix(s) => server::serve_connection(s, h, c).await,
                        };
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "FastCGI connection ended with an error");
                        }
                    });
                }
                Ok(None) => {} // refused: not in allowed_clients
                Err(e) => {
                    log.error(&format!("FastCGI accept failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            while conns.try_join_next().is_some() {}
        }
        drop(self.socket);
        let drain = async { while conns.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, drain).await.is_err() {
            conns.abort_all();
        }
    }
}

enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(socket: &Socket, allowed: &[IpAddr]) -> std::io::Result<Option<Conn>> {
    match socket {
        Socket::Tcp(l) => {
            let (s, peer) = l.accept().await?;
            let ip = peer.ip().to_canonical();
            let ok = if allowed.is_empty() {
                ip.is_loopback()
            } else {
                allowed.contains(&ip)
            };
            if !ok {
                // As php-fpm: the connection is closed, a line is logged.
                tracing::warn!(%peer, "FastCGI connection refused: not in fastcgi.allowed_clients");
                return Ok(None);
            }
            s.set_nodelay(true)?;
            Ok(Some(Conn::Tcp(s)))
        }
        Socket::Unix(l, _) => Ok(Some(Conn::Unix(l.accept().await?.0))),
    }
}

struct Front {
    conf: FastcgiListener,
    upstream: Arc<SharedUpstream>,
    log: WorkerLog,
}

/// A CGI response TQServer writes itself.
async fn answer(out: &mut ResponseWriter, status: &str, content_type: &str, body: &str) {
    let head = format!(
        "Status: {status}\r\nContent-Type: {content_type}\r\n\
         Expires: Thu, 01 Jan 1970 00:00:00 GMT\r\n\
         Cache-Control: no-cache, no-store, must-revalidate, max-age=0\r\n\r\n"
    );
    let _ = out.write_stdout(head).await;
    let _ = out.write_stdout(body.to_string()).await;
}

/// Why a script is not run.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    NotFound,
    Denied(&'static str),
}

/// A script that passed [`check_script`]: the file checked (what PHP is
/// told to run, never the raw name: `link/../x.php` is `x.php` to the
/// check and somewhere else to the kernel) and any path info that
/// followed it in SCRIPT_FILENAME.
#[derive(Debug, PartialEq, Eq)]
struct Checked {
    file: std::path::PathBuf,
    path_info: String,
}

/// SCRIPT_FILENAME must name a file inside the document root (symlinks
/// resolved by the kernel) with an allowed extension. Trailing path info
/// (`/index.php/extra`, for PHP's `cgi.fix_pathinfo`) is allowed.
fn check_script(doc: &DocRoot, filename: &str, exts: &[String]) -> Result<Checked, Refusal> {
    let root = doc.path().to_string_lossy();
    let rel = match filename.strip_prefix(root.as_ref()) {
        Some(r) if r.is_empty() || r.starts_with('/') => r,
        _ => return Err(Refusal::Denied("outside the worker's document_root")),
    };
    // resolve() takes a URL path: keep '%' literal.
    let rel = rel.replace('%', "%25");
    let allowed = |p: &std::path::Path| {
        let name = p.to_string_lossy();
        exts.iter().any(|e| name.ends_with(e.as_str()))
    };
    match script::resolve(doc, &rel, false) {
        Target::Script {
            file, path_info, ..
        } if allowed(&file) => Ok(Checked { file, path_info }),
        Target::Static(o) if allowed(&o.path) => Ok(Checked {
            file: o.path,
            path_info: String::new(),
        }),
        Target::Script { .. } | Target::Static(_) => {
            Err(Refusal::Denied("extension not in fastcgi.limit_extensions"))
        }
        Target::AddSlash(_) | Target::NotFound => Err(Refusal::NotFound),
        Target::Forbidden => Err(Refusal::Denied("resolves outside the document_root")),
        Target::BadRequest(why) => Err(Refusal::Denied(why)),
    }
}

impl Handler for Front {
    async fn handle(&self, req: Request, mut out: ResponseWriter) -> u32 {
        let upstream = self.upstream.get();
        let (mut params, stdin) = req.into_parts();
        let script_name = params
            .get_str("SCRIPT_NAME")
            .unwrap_or_default()
            .to_string();
        if self.conf.ping_path.as_deref() == Some(script_name.as_str()) {
            answer(&mut out, "200 OK", "text/plain", &self.conf.ping_response).await;
            return 0;
        }
        let is_status = self.conf.status_path.as_deref() == Some(script_name.as_str());
        if is_status {
            match &upstream {
                Upstream::Cgi(c) => {
                    let query = params.get_str("QUERY_STRING").unwrap_or_default();
                    let q = Query::parse(query);
                    let body = c.pool.snapshot().render(q);
                    answer(&mut out, "200 OK", q.content_type(), &body).await;
                    return 0;
                }
                Upstream::Fpm(_) => {
                    // php-fpm's own status page, under TQServer's private path.
                    for k in ["SCRIPT_NAME", "SCRIPT_FILENAME", "DOCUMENT_URI"] {
                        params.set(k, fpm::STATUS_PATH);
                    }
                }
            }
        } else {
            let filename = params
                .get_str("SCRIPT_FILENAME")
                .unwrap_or_default()
                .to_string();
            let exts = &self.conf.limit_extensions;
            match check_script(&upstream.roots().main, &filename, exts) {
                Ok(checked) => {
                    use std::os::unix::ffi::OsStrExt as _;
                    params.set(
                        "SCRIPT_FILENAME",
                        Bytes::copy_from_slice(checked.file.as_os_str().as_bytes()),
                    );
                    if !checked.path_info.is_empty() && params.get("PATH_INFO").is_none() {
                        params.set("PATH_INFO", checked.path_info);
                    }
                }
                Err(r) => {
                    return match r {
                        Refusal::NotFound => {
                            self.log
                                .error(&format!("FastCGI: primary script unknown: {filename:?}"));
                            answer(&mut out, "404 Not Found", "text/plain", "File not found.\n")
                                .await;
                            0
                        }
                        Refusal::Denied(why) => {
                            self.log.error(&format!(
                                "FastCGI: access to the script {filename:?} has been denied ({why})"
                            ));
                            answer(&mut out, "403 Forbidden", "text/plain", "Access denied.\n")
                                .await;
                            0
                        }
                    };
                }
            }
        }
        // Taken now: the params move into the request.
        let info = RequestInfo {
            method: params.get_str("REQUEST_METHOD").unwrap_or("").to_string(),
            uri: params.get_str("REQUEST_URI").unwrap_or("").to_string(),
            script: params.get_str("SCRIPT_FILENAME").unwrap_or("").to_string(),
            content_length: params
                .get_str("CONTENT_LENGTH")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        };
        let body = RequestBody::from_stream(stdin);
        let sent = upstream
            .send_raw(FcgiRequest::new(params).body(body), || info)
            .await;
        let (mut raw, mut lease) = match sent {
            Ok(r) => r,
            Err(e) => {
                let status = e.status();
                let text = match &e {
                    SendError::Pool(_) => "The PHP pool is busy or unavailable.\n",
                    SendError::Client {
                        timed_out: true, ..
                    } => "PHP did not finish within php.pool.request_timeout.\n",
                    _ if status == StatusCode::GATEWAY_TIMEOUT => "PHP did not answer in time.\n",
                    _ if status == StatusCode::BAD_GATEWAY => {
                        "The PHP process ended without answering.\n"
                    }
                    _ => "The request cannot be passed to PHP.\n",
                };
                let status = format!(
                    "{} {}",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or_default()
                );
                self.log.error(&format!("FastCGI: {status}: {e}"));
                answer(&mut out, &status, "text/plain", text).await;
                return 0;
            }
        };
        while let Some(frame) = raw.frame().await {
            let written = match frame {
                Ok(Frame::Stdout(b)) => out.write_stdout(b).await,
                Ok(Frame::Stderr(b)) => out.write_stderr(b).await,
                Err(e) => {
                    // The head may be out already: say it on STDERR, which
                    // the web server logs, and end the request.
                    self.log
                        .error(&format!("FastCGI: response from PHP failed: {e}"));
                    let _ = out
                        .write_stderr(Bytes::from(format!("tqserver: PHP response failed: {e}\n")))
                        .await;
                    return 1;
                }
            };
            if written.is_err() {
                // The web server went away; the lease retires the process.
                return server::ABORTED_APP_STATUS;
            }
        }
        let end = raw.end_status();
        if let (Some(l), Some(_)) = (lease.as_mut(), end) {
            l.finish();
        }
        end.map_or(0, |e| e.app_status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_are_checked_against_root_and_extensions() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("index.php"), "<?php").unwrap();
        std::fs::write(root.join("notes.txt"), "x").unwrap();
        let doc = DocRoot::open(&root, crate::config::Symlinks::Inside);
        let php = vec![".php".to_string()];
        let r = root.display();
        let ok = |file: &str, info: &str| {
            Ok(Checked {
                file: root.join(file),
                path_info: info.into(),
            })
        };
        assert_eq!(
            check_script(&doc, &format!("{r}/index.php"), &php),
            ok("index.php", "")
        );
        assert_eq!(
            check_script(&doc, &format!("{r}/index.php/extra/path"), &php),
            ok("index.php", "/extra/path")
        );
        assert_eq!(
            check_script(&doc, &format!("{r}/x/../index.php"), &php),
            ok("index.php", "")
        );
        assert_eq!(
            check_script(&doc, &format!("{r}/missing.php"), &php),
            Err(Refusal::NotFound)
        );
        assert!(matches!(
            check_script(&doc, &format!("{r}/notes.txt"), &php),
            Err(Refusal::Denied(_))
        ));
        assert!(matches!(
            check_script(&doc, "/etc/passwd", &php),
            Err(Refusal::Denied(_))
        ));
        assert!(matches!(
            check_script(&doc, &format!("{r}/../x.php"), &php),
            Err(Refusal::Denied(_))
        ));
        assert!(matches!(
            check_script(&doc, &format!("{r}x/index.php"), &php),
            Err(Refusal::Denied(_))
        ));
        let txt = vec![".txt".to_string()];
        assert_eq!(
            check_script(&doc, &format!("{r}/notes.txt"), &txt),
            ok("notes.txt", "")
        );
    }
}
