//! The task that owns one php-cgi child: its readiness probe
//! (`FCGI_GET_VALUES`), the pool's control messages, its stop, and
//! reaping it — telling our own stops from crashes and kill -9.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use tqserver_fastcgi::Client;

use super::launch::{self, Launcher};
use super::state::Control;
use super::{Inner, RETIRE_GRACE};
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
    launch::forward_stderr(&mut child, &inner.log, launcher.program());
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

/// Owns one connection of a shared pool (`shared_memory`) and the master's
/// child it is bound to: php-cgi's child serves the connection it accepted
/// until it is closed, so the connection stands for the child. The first
/// request on it is the pid script, which names that child; then the
/// connection is a process of the pool like any other, and the child is
/// signalled by its pid (SIGTERM to retire it, SIGKILL at
/// `request_timeout`), after which the master forks a replacement from its
/// warm memory.
pub(super) async fn run_shared(
    inner: Arc<Inner>,
    id: u64,
    client: Client,
    master: u32,
    mut control: mpsc::UnboundedReceiver<Control>,
    launcher: Arc<Launcher>,
) {
    let script = launcher.pid_script().map(Path::to_path_buf);
    // Until a child is free to accept this connection the answer waits in
    // the listen queue: only a master that is gone is a start failure.
    let named = async {
        let script = script.ok_or("not a shared pool")?;
        loop {
            match tokio::time::timeout(Duration::from_secs(5), pid_of(&client, &script)).await {
                Ok(r) => return r,
                Err(_) if alive(master) => {
                    // Forked on demand: the child asked for may have taken
                    // another connection (one the pool opened again to a
                    // child that had gone): ask for one more.
                    if launcher.on_demand() {
                        let _ = launcher.fork_child();
                    }
                    continue;
                }
                Err(_) => {
                    return Err(format!(
                        "the {} master (pid {master}) is gone",
                        launcher.program()
                    ));
                }
            }
        }
    };
    let pid = tokio::select! {
        r = named => match r {
            Ok(pid) if child_of(pid, master) => pid,
            Ok(pid) => {
                client.close_idle();
                inner.on_exit(id, &format!("the pid script answered {pid}, not a child of the master (pid {master})"), false);
                return;
            }
            Err(why) => {
                client.close_idle();
                inner.on_exit(id, &format!("not answering FastCGI: {why}"), false);
                return;
            }
        },
        _ = control.recv() => {
            client.close_idle();
            inner.on_exit(id, "stopped before it answered", true);
            return;
        }
    };
    inner.set_pid(id, pid);
    inner.on_ready(id);
    let (status, by_us) = loop {
        tokio::select! {
            () = tokio::time::sleep(super::TICK) => {
                if !child_of(pid, master) {
                    client.close_idle();
                    break ("exited (no longer a child of the php-cgi master)".to_string(), false);
                }
            }
            c = control.recv() => match c {
                // Abandoned mid-request: the child may still run the
                // script (ignore_user_abort, WordPress's cron). This
                // connection ends; the child goes back to accept() once
                // the script is done, and the pool's next connection binds
                // to whichever child is free.
                Some(Control::Recheck) => {
                    client.close_idle();
                    break ("released after an abandoned request".to_string(), true);
                }
                Some(Control::Kill) => {
                    signal(pid, Signal::SIGKILL);
                    client.close_idle();
                    gone(pid, master, RETIRE_GRACE).await;
                    break ("killed".to_string(), true);
                }
                Some(Control::Terminate) | None => {
                    // The signal first: php-cgi checks for it before its
                    // next accept(), so the closed connection cannot be
                    // followed by another it would take and then drop.
                    signal(pid, Signal::SIGTERM);
                    client.close_idle();
                    if !gone(pid, master, RETIRE_GRACE).await {
                        inner.log.error(&format!(
                            "{} (pid {pid}) did not stop within {RETIRE_GRACE:?} of SIGTERM; it was killed",
                            launcher.program()
                        ));
                        signal(pid, Signal::SIGKILL);
                        gone(pid, master, RETIRE_GRACE).await;
                    }
                    break ("stopped".to_string(), true);
                }
            },
        }
    };
    drop(launcher);
    inner.on_exit(id, &status, by_us);
}

/// The pid the pid script answers with over `client`'s connection.
async fn pid_of(client: &Client, script: &Path) -> Result<u32, String> {
    let script = script.to_string_lossy().into_owned();
    let params = tqserver_fastcgi::Params::new()
        .with("GATEWAY_INTERFACE", "CGI/1.1")
        .with("SERVER_PROTOCOL", "HTTP/1.1")
        .with("REQUEST_METHOD", "GET")
        .with("SCRIPT_FILENAME", script)
        .with("SCRIPT_NAME", "/tqserver-pid.php")
        .with("REQUEST_URI", "/tqserver-pid.php")
        .with("QUERY_STRING", "")
        // php-cgi's cgi.force_redirect.
        .with("REDIRECT_STATUS", "200")
        // The embedded runtime answers this itself (a worker script would
        // take the request for its own); php-cgi runs the pid script.
        .with(tqserver_php::serve::PID_PROBE, "1");
    let resp = client
        .request(tqserver_fastcgi::client::Request::new(params))
        .await
        .map_err(|e| e.to_string())?;
    let (_, mut body) = resp.into_parts();
    let mut text = Vec::new();
    while let Some(chunk) = body.chunk().await {
        text.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
    }
    // The pid is the last thing written (after any auto_prepend_file's
    // output).
    let text = String::from_utf8_lossy(&text);
    let digits: String = text
        .trim_end()
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits.parse().map_err(|_| {
        format!(
            "the pid script answered {:?}",
            text.chars().take(200).collect::<String>()
        )
    })
}

/// The parent of `pid` from /proc, if it runs (exists and is not a
/// zombie).
fn running_parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid …"; comm may hold spaces and parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    if fields.next()? == "Z" {
        return None;
    }
    fields.next()?.parse().ok()
}

/// Whether `pid` runs as a child of `parent` (so a pid reused by another
/// process is not taken for it).
fn child_of(pid: u32, parent: u32) -> bool {
    running_parent(pid) == Some(parent)
}

/// Whether `pid` runs.
fn alive(pid: u32) -> bool {
    running_parent(pid).is_some()
}

fn signal(pid: u32, s: Signal) {
    if pid > 1 {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), s);
    }
}

/// Waits up to `grace` for `pid` to stop being `master`'s child.
async fn gone(pid: u32, master: u32, grace: Duration) -> bool {
    let until = tokio::time::Instant::now() + grace;
    while child_of(pid, master) {
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}
