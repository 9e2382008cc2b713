//! The task that owns a worker's php-fpm master: it starts it, waits for
//! it to be ready (php-fpm's own "ready to handle connections", then a
//! ping), restarts it with backoff ([`Policy::PHP_FPM`]) when it exits,
//! reloads it with SIGUSR2, and stops it (SIGQUIT, the grace period,
//! SIGKILL). Every step publishes a [`MasterState`]; see LIFECYCLE.md.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{FpmMaster, MasterState, Prepared, ping};
use crate::config::Supervision;
use crate::logging::{WorkerLog, forward_lines};
use crate::php::LifecycleError;
use crate::process;
use crate::supervise::{Backoff, Policy};

/// Pings after php-fpm said it is ready, before it counts as not
/// answering (the socket is bound before the line is logged; one is
/// normally enough).
const PINGS: u32 = 5;

/// A SIGUSR2 reload asked of the supervising task.
pub(super) struct Reload {
    /// The configuration php-fpm reloads with (already written and checked).
    pub(super) prepared: Prepared,
    /// What requests use once php-fpm has reloaded.
    pub(super) master: Arc<FpmMaster>,
    /// The outcome, for whoever asked.
    pub(super) done: oneshot::Sender<Result<(), LifecycleError>>,
}

/// A SIGUSR2 reload waiting for php-fpm to come back.
struct InProgress {
    done: oneshot::Sender<Result<(), LifecycleError>>,
    /// `FpmEvents::ready` before the signal.
    before: u64,
    until: Instant,
    /// The master requests used before; its idle connections go once
    /// php-fpm is back.
    old: Arc<FpmMaster>,
}

/// How one run of the master ended.
enum Ended {
    /// Stopped on purpose: the task ends.
    Stopped,
    /// It exited, could not start, or never got ready: restart after the
    /// backoff.
    Failed(String),
}

/// Runs `prepared` until `stop`, restarting it as often as it fails.
pub(super) async fn run(
    mut prepared: Prepared,
    mut master: Arc<FpmMaster>,
    mut reloads: mpsc::UnboundedReceiver<Reload>,
    supervision: Supervision,
    log: WorkerLog,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new(supervision.restart_delay, Policy::PHP_FPM);
    let state = master.state.clone();
    loop {
        state.send_replace(MasterState::Starting);
        let started = Instant::now();
        let ended = run_once(
            &mut prepared,
            &mut master,
            &mut reloads,
            &supervision,
            &log,
            &stop,
        )
        .await;
        master.client.close_idle();
        match ended {
            Ended::Stopped => {
                state.send_replace(MasterState::Stopped);
                return;
            }
            Ended::Failed(why) => {
                state.send_replace(MasterState::Restarting);
                let delay = backoff.failed(Some(started.elapsed()));
                log.error(&format!("{why}; restarting php-fpm in {delay:?}"));
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => {
                        state.send_replace(MasterState::Stopped);
                        return;
                    }
                }
            }
        }
    }
}

/// Waits until php-fpm logs that it is ready (its "ready" count moves past
/// `before`), then until it answers a ping: within `wait`.
async fn became_ready(master: &FpmMaster, before: u64, wait: Duration) -> bool {
    let until = Instant::now() + wait;
    let mut ready = master.events.ready.subscribe();
    if !crate::supervise::ready::wait_for(&mut ready, wait, |n| *n > before).await {
        return false;
    }
    for _ in 0..PINGS {
        if ping(&master.client).await {
            return true;
        }
        if Instant::now() >= until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// One life of the master: spawn, get ready, serve (and reload) until it
/// exits or `stop`.
async fn run_once(
    prepared: &mut Prepared,
    master: &mut Arc<FpmMaster>,
    reloads: &mut mpsc::UnboundedReceiver<Reload>,
    supervision: &Supervision,
    log: &WorkerLog,
    stop: &CancellationToken,
) -> Ended {
    let before = *master.events.ready.borrow();
    let mut cmd = prepared.command();
    cmd.arg("-F").stdout(Stdio::piped()).stderr(Stdio::piped());
    // PDEATHSIG: php-fpm's master gets SIGTERM if TQServer dies (even by
    // SIGKILL) and takes its children down with it. `child` is dropped at
    // the end of this function, once reaped: what is left of its process
    // group goes then (process::Tied).
    let mut child = match process::spawn_tied(&mut cmd, Signal::SIGTERM) {
        Ok(c) => c,
        Err(e) => return Ended::Failed(format!("cannot start {}: {e}", prepared.binary.display())),
    };
    master.events.started(&prepared.worker.php.pool);
    if let Some(o) = child.stdout.take() {
        let l = log.clone();
        forward_lines(o, move |line| l.fpm_line(line));
    }
    if let Some(e) = child.stderr.take() {
        let (l, events) = (log.clone(), master.events.clone());
        forward_lines(e, move |line| {
            events.observe(line);
            l.fpm_line(line);
        });
    }
    let pid = child.id().unwrap_or(0);
    let wait = supervision.health_check_wait;
    let ready = tokio::select! {
        r = became_ready(master, before, wait) => r,
        status = child.wait() => {
            return Ended::Failed(format!(
                "php-fpm (pid {pid}) exited while starting: {}",
                process::describe_exit(&status)
            ));
        }
        () = stop.cancelled() => {
            process::stop(
                &mut child,
                Signal::SIGQUIT,
                process::grace_left(supervision.shutdown_grace),
            )
            .await;
            return Ended::Stopped;
        }
    };
    if !ready {
        process::stop(&mut child, Signal::SIGQUIT, Duration::from_millis(500)).await;
        return Ended::Failed(format!(
            "php-fpm (pid {pid}) did not answer its ping within {wait:?}"
        ));
    }
    master.state.send_replace(MasterState::Ready);
    log.info(&format!(
        "php-fpm ready (pid {pid}, {})",
        prepared.address()
    ));
    let mut reloading: Option<InProgress> = None;
    loop {
        tokio::select! {
            status = child.wait() => {
                let during = if reloading.is_some() { " while reloading" } else { "" };
                let why = format!("php-fpm (pid {pid}) exited{during}: {}", process::describe_exit(&status));
                if let Some(r) = reloading.take() {
                    let _ = r.done.send(Err(LifecycleError::Reload(why.clone())));
                }
                return Ended::Failed(why);
            }
            () = stop.cancelled() => {
                if let Some(r) = reloading.take() {
                    let _ = r.done.send(Err(LifecycleError::Reload("stopping".into())));
                }
                master.client.close_idle();
                process::stop(
                &mut child,
                Signal::SIGQUIT,
                process::grace_left(supervision.shutdown_grace),
            )
            .await;
                log.info(&format!("php-fpm (pid {pid}) stopped"));
                return Ended::Stopped;
            }
            Some(r) = reloads.recv(), if reloading.is_none() => {
                // From here on, a restart uses the new configuration too.
                *prepared = r.prepared;
                let old = std::mem::replace(master, r.master);
                log.info(&format!(
                    "reloading php-fpm (pid {pid}) with SIGUSR2: {}",
                    prepared.worker.php.pool.describe()
                ));
                reloading = Some(InProgress {
                    done: r.done,
                    before: *master.events.ready.borrow(),
                    until: Instant::now() + supervision.shutdown_grace + supervision.health_check_wait,
                    old,
                });
                master.state.send_replace(MasterState::Reloading);
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    Signal::SIGUSR2,
                );
            }
            ok = reloaded(master, reloading.as_ref()), if reloading.is_some() => {
                let Some(r) = reloading.take() else { continue };
                r.old.client.close_idle();
                master.state.send_replace(MasterState::Ready);
                if ok {
                    // Its new children, not logged at notice.
                    master.events.started(&prepared.worker.php.pool);
                }
                let _ = r.done.send(if ok {
                    Ok(())
                } else {
                    Err(LifecycleError::Reload(format!(
                        "php-fpm did not report ready within {:?} after SIGUSR2; it keeps running and is supervised",
                        supervision.shutdown_grace + supervision.health_check_wait
                    )))
                });
            }
        }
    }
}

/// Whether php-fpm came back from a reload before its deadline: its
/// children finish their requests, then the master starts again; ready
/// once it says so and answers a ping.
async fn reloaded(master: &FpmMaster, r: Option<&InProgress>) -> bool {
    let Some(r) = r else {
        return false;
    };
    let left = r.until.saturating_duration_since(Instant::now());
    became_ready(master, r.before, left).await
}
