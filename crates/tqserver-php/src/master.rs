//! The PHP master: starts PHP once, then forks `PHP_FCGI_CHILDREN`
//! children that accept FastCGI connections on file descriptor 0, and
//! forks a replacement whenever one exits, as php-cgi's master does.
//!
//! Signals: the master waits for SIGCHLD, SIGTERM, SIGINT and SIGQUIT with
//! them blocked (`sigwait`, no handlers). A child keeps SIGTERM blocked
//! while it runs a request and unblocks it only while it waits for a
//! connection or the next request on one (`ppoll`): SIGTERM ends an idle
//! child at once and a busy one right after its request.

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};

use crate::{php, serve};

/// The signals that stop the master, and an idle child.
const STOP_SIGNALS: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGQUIT];

/// How long stopping children may take before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Parsed command line.
struct Args {
    version: bool,
    ini_file: Option<String>,
    settings: Vec<(String, String)>,
}

fn parse(args: &[OsString]) -> Result<Args, String> {
    let mut out = Args {
        version: false,
        ini_file: None,
        settings: Vec::new(),
    };
    let mut it = args.iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(a) = it.next() {
        match a.as_str() {
            "-v" => out.version = true,
            "-c" => out.ini_file = Some(it.next().ok_or("-c needs a php.ini path")?),
            "-d" => {
                let kv = it.next().ok_or("-d needs key=value")?;
                let (k, v) = kv.split_once('=').ok_or("-d needs key=value")?;
                out.settings.push((k.to_string(), v.to_string()));
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(out)
}

/// `tqserver __tqserver-php …`: the arguments after [`crate::ARG`].
pub fn main(args: &[OsString]) -> ExitCode {
    let args = match parse(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tqserver php: {e}");
            return ExitCode::from(64);
        }
    };
    if !php::AVAILABLE {
        eprintln!("tqserver php: {}", php::NOT_BUILT);
        return ExitCode::from(69);
    }
    if args.version {
        println!("PHP {} {}", php::version(), crate::VERSION_MARK);
        return ExitCode::SUCCESS;
    }
    let children: usize = std::env::var("PHP_FCGI_CHILDREN")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(1);
    // Block before PHP starts, so no signal finds a default disposition
    // in a half-made master.
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    for s in STOP_SIGNALS {
        set.add(s);
    }
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None) {
        eprintln!("tqserver php: cannot block signals: {e}");
        return ExitCode::FAILURE;
    }
    // A client that went away must not kill the process that wrote to it.
    ignore_sigpipe();
    if let Err(e) = php::startup(&args.settings, args.ini_file.as_deref()) {
        eprintln!("tqserver php: {e}");
        return ExitCode::FAILURE;
    }
    run(children, &set)
}

fn ignore_sigpipe() {
    // SAFETY: SIG_IGN installs no handler code; nothing else in this
    // single-threaded process changes SIGPIPE's disposition.
    let _ =
        unsafe { nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigIgn) };
}

fn run(n: usize, set: &SigSet) -> ExitCode {
    let mut live: Vec<Pid> = Vec::with_capacity(n);
    let mut quick_deaths = 0u32;
    loop {
        while live.len() < n {
            match spawn() {
                Ok(pid) => live.push(pid),
                Err(e) => {
                    eprintln!("tqserver php: fork failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    break;
                }
            }
        }
        let sig = match set.wait() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("tqserver php: sigwait: {e}");
                return ExitCode::FAILURE;
            }
        };
        match sig {
            Signal::SIGCHLD => {
                let reaped = reap(&mut live);
                if reaped > 0 && live.is_empty() {
                    quick_deaths += 1;
                    // Children dying as fast as they are forked: slow down.
                    if quick_deaths > 5 {
                        std::thread::sleep(Duration::from_millis(500));
                    }
                } else {
                    quick_deaths = 0;
                }
            }
            _ => {
                stop(&mut live);
                return ExitCode::SUCCESS;
            }
        }
    }
}

/// Reaps every exited child; how many.
fn reap(live: &mut Vec<Pid>) -> usize {
    let mut n = 0;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return n,
            Ok(status) => {
                if let Some(pid) = status.pid() {
                    live.retain(|p| *p != pid);
                    n += 1;
                }
            }
        }
    }
}

fn stop(live: &mut Vec<Pid>) {
    for p in live.iter() {
        let _ = kill(*p, Signal::SIGTERM);
    }
    let until = Instant::now() + STOP_GRACE;
    while !live.is_empty() && Instant::now() < until {
        reap(live);
        std::thread::sleep(Duration::from_millis(5));
    }
    for p in live.iter() {
        let _ = kill(*p, Signal::SIGKILL);
    }
    while !live.is_empty() {
        if reap(live) == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn spawn() -> nix::Result<Pid> {
    // SAFETY: the master is single-threaded (PHP is built without ZTS and
    // the master starts no threads), so the child may run any code.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => {
            child();
        }
    }
}

/// A child: accept on fd 0, serve, repeat; never returns.
fn child() -> ! {
    // The master's death ends its children (TQServer starts a new one).
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    // Every signal but the stop signals unblocked at once; those only
    // while idle (ppoll's mask).
    let mut keep = SigSet::empty();
    for s in STOP_SIGNALS {
        keep.add(s);
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&keep), None);
    let idle_mask = SigSet::empty();
    // SAFETY: fd 0 is the listening socket TQServer gave the master; this
    // process owns its copy and nothing else closes it.
    let listener = unsafe { OwnedFd::from_raw_fd(0) };
    loop {
        if !wait_readable(listener.as_fd(), &idle_mask) {
            continue;
        }
        let fd = match nix::sys::socket::accept(&listener) {
            Ok(fd) => fd,
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => continue,
            Err(e) => {
                eprintln!("tqserver php[{}]: accept: {e}", std::process::id());
                std::process::exit(1);
            }
        };
        let sock = File::from(fd);
        let idle = sock.try_clone().ok();
        let _ = serve::Conn::serve(sock, &mut || {
            idle.as_ref()
                .is_none_or(|s| wait_readable(s.as_fd(), &idle_mask))
        });
    }
}

/// Waits until `fd` is readable, with SIGTERM & co. unblocked meanwhile
/// (their default action ends the idle process).
fn wait_readable(fd: BorrowedFd<'_>, mask: &SigSet) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    matches!(ppoll(&mut fds, None, Some(*mask)), Ok(n) if n > 0)
}
