//! The task that owns one php-cgi child: its readiness probe
//! (`FCGI_GET_VALUES`), the pool's control messages, its stop, and
//! reaping it — telling our own stops from crashes and kill -9.

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use tqserver_fastcgi::Client;

use super::launch::{self, Launcher};
use super::state::Control;
use super::{Inner, RETIRE_GRACE};
use crate::logging::forward_lines;
use crate::process::describe_exit;

/// Owns one php-cgi child: readiness probe, control messages, reaping.
pub(super) async fn run(
    inner: Arc<Inner>,
    id: u64,
    started: launch::Started,
    client: Client,
    mut control: mpsc::UnboundedReceiver<Control>,
    launcher: Arc<Launcher>,
) {
    let launch::Started {
        mut child,
        address,
        port,
        socket_file,
    } = started;
    let pid = child.id().unwrap_or(0);
    if let Some(err) = child.stderr.take() {
        let log = inner.log.clone();
        forward_lines(err, move |line| {
            log.emit(tracing::Level::WARN, &format!("php-cgi[{pid}]: {line}"));
        });
    }
    // Ready once php-cgi answers FCGI_GET_VALUES on its socket (it closes
    // that connection afterwards; requests open their own). The same probe
    // tells when an abandoned request's script is done: php-cgi serves one
    // connection at a time.
    let wait = inner.supervision.health_check_wait;
    // What we sent, to tell our own stops from crashes and kill -9.
    let mut sent = Sent::Nothing;
    let mut starting = true;
    let (status, by_us) = 'life: loop {
        let probe = async {
            let answer = client.get_values(&["FCGI_MPXS_CONNS"]);
            if starting {
                tokio::time::timeout(wait, answer).await
            } else {
                // request_timeout (the manager's tick) bounds the wait.
                Ok(answer.await)
            }
        };
        tokio::select! {
            r = probe => {
                if matches!(r, Ok(Ok(_))) {
                    starting = false;
                    inner.on_ready(id);
                } else {
                    let why = match r {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer within {wait:?} (supervision.health_check_wait_timeout_ms)"),
                    };
                    // Dead, or not php-cgi: gone either way. At start, a
                    // start failure whoever ended it.
                    let _ = child.start_kill();
                    let s = child.wait().await;
                    let status = if starting {
                        format!("not answering FastCGI on {address}: {why}")
                    } else {
                        describe_exit(&s)
                    };
                    break 'life (status, false);
                }
            }
            s = child.wait() => break 'life (describe_exit(&s), false),
            c = control.recv() => {
                let s = stop_child(&mut child, c, &client, &inner, &mut sent).await;
                break 'life (describe_exit(&s), sent.explains(&s));
            }
        }
        // Running: until it exits, is stopped, or is to be checked again.
        tokio::select! {
            s = child.wait() => break 'life (describe_exit(&s), false),
            c = control.recv() => match c {
                Some(Control::Recheck) => {}
                c => {
                    let s = stop_child(&mut child, c, &client, &inner, &mut sent).await;
                    break 'life (describe_exit(&s), sent.explains(&s));
                }
            },
        }
    };
    // Anything left of its process group goes too.
    drop(child);
    launcher.forget(port, socket_file.as_deref());
    inner.on_exit(id, &status, by_us);
}

/// The signals the pool sent a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Nothing,
    Term,
    TermThenKill,
    Kill,
}

impl Sent {
    /// Whether what we sent explains this exit. A SIGKILL we did not send
    /// (kill -9 while we waited for a SIGTERM) is not ours.
    fn explains(self, status: &std::io::Result<std::process::ExitStatus>) -> bool {
        use std::os::unix::process::ExitStatusExt;
        let Ok(status) = status else {
            return false;
        };
        match (self, status.signal()) {
            (Sent::Nothing, _) => false,
            (Sent::Kill | Sent::TermThenKill, _) => true,
            (Sent::Term, None) => true,
            (Sent::Term, Some(s)) => s == Signal::SIGTERM as i32,
        }
    }
}

/// Stops the child as asked and reaps it.
async fn stop_child(
    child: &mut tokio::process::Child,
    c: Option<Control>,
    client: &Client,
    inner: &Inner,
    sent: &mut Sent,
) -> std::io::Result<std::process::ExitStatus> {
    if let Some(Control::Kill) = c {
        *sent = Sent::Kill;
        let _ = child.start_kill();
        return child.wait().await;
    }
    // Terminate, or the pool is gone. php-cgi waits for the next request
    // on our kept-alive connection and notices SIGTERM only back in
    // accept(): close the connection first.
    client.close_idle();
    *sent = Sent::Term;
    let pid = child.id().unwrap_or(0);
    let grace = RETIRE_GRACE.min(
        inner
            .supervision
            .shutdown_grace
            .max(Duration::from_millis(100)),
    );
    let stopped = crate::process::stop(child, Signal::SIGTERM, grace).await;
    if stopped.escalated {
        inner.log.error(&format!(
            "php-cgi (pid {pid}) did not stop within {grace:?} of SIGTERM; it was killed"
        ));
        *sent = Sent::TermThenKill;
    }
    match stopped.status {
        Some(s) => s,
        None => child.wait().await,
    }
}
