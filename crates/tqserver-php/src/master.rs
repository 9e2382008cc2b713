//! The PHP master: starts PHP once, then forks `PHP_FCGI_CHILDREN`
//! children that accept FastCGI connections on file descriptor 0, and
//! forks a replacement whenever one exits, as php-cgi's master does.
//!
//! Signals: the master waits for SIGCHLD, SIGTERM, SIGINT and SIGQUIT with
//! them blocked (`sigwait`, no handlers). A child keeps the stop signals
//! blocked and reads them from a signalfd whenever it waits for a
//! connection or the next request on one (serve.rs): SIGTERM ends an idle
//! child at once and a busy one right after its request; a worker script
//! sees `tqserver_handle_request()` return false and ends as it chooses.

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
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
    mode: Mode,
}

/// What the children run.
#[derive(Default)]
struct Mode {
    /// `--worker PATH`: worker mode, this script (absolute).
    worker: Option<String>,
    /// `--root DIR`: the document root (the worker script's
    /// `DOCUMENT_ROOT`).
    root: Option<String>,
    /// `--script-name NAME`: the worker script's `SCRIPT_NAME`.
    script_name: Option<String>,
    /// `--max-memory BYTES`: a worker whose script holds more after a
    /// request is replaced.
    max_memory: Option<usize>,
    /// `--on-demand FIFO`: fork one child per byte TQServer writes to this
    /// FIFO and never replace one (TQServer's dynamic and ondemand
    /// managers decide); each child serves one connection, then exits.
    on_demand: Option<String>,
}

fn parse(args: &[OsString]) -> Result<Args, String> {
    let mut out = Args {
        version: false,
        ini_file: None,
        settings: Vec::new(),
        mode: Mode::default(),
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
            "--worker" => out.mode.worker = Some(it.next().ok_or("--worker needs a script")?),
            "--root" => out.mode.root = Some(it.next().ok_or("--root needs a folder")?),
            "--script-name" => {
                out.mode.script_name = Some(it.next().ok_or("--script-name needs a name")?);
            }
            "--on-demand" => {
                out.mode.on_demand = Some(it.next().ok_or("--on-demand needs a FIFO")?);
            }
            "--max-memory" => {
                let v = it.next().ok_or("--max-memory needs a number of bytes")?;
                out.mode.max_memory = Some(
                    v.parse()
                        .map_err(|_| format!("--max-memory {v}: not a number of bytes"))?,
                );
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if out.mode.worker.is_some() && (out.mode.root.is_none() || out.mode.script_name.is_none()) {
        return Err("--worker needs --root and --script-name".into());
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
    // The children poll before accept(): a connection another child took
    // first must not leave this one blocked in accept(), deaf to SIGTERM.
    // (The flag is on the socket all children share; accepted sockets do
    // not inherit it.)
    let _ = nix::fcntl::fcntl(
        std::io::stdin().as_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    match &args.mode.on_demand {
        Some(fifo) => run_on_demand(fifo, &set, &args.mode),
        None => run(children, &set, &args.mode),
    }
}

/// Fork on demand: a child for each byte read from `fifo`, none replaced.
fn run_on_demand(fifo: &str, set: &SigSet, mode: &Mode) -> ExitCode {
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let asks = match nix::fcntl::open(
        fifo,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) {
        Ok(fd) => File::from(fd),
        Err(e) => {
            eprintln!("tqserver php: cannot open {fifo}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let signals = match SignalFd::with_flags(set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tqserver php: signalfd: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Closed in every child: they are the master's.
    let masters = [asks.as_raw_fd(), signals.as_raw_fd()];
    let mut live: Vec<Pid> = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        let mut fds = [
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(asks.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                eprintln!("tqserver php: poll: {e}");
                return ExitCode::FAILURE;
            }
        }
        while let Ok(Some(info)) = signals.read_signal() {
            if info.ssi_signo == Signal::SIGCHLD as u32 {
                reap(&mut live);
            } else {
                stop(&mut live);
                return ExitCode::SUCCESS;
            }
        }
        loop {
            match (&asks).read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    for _ in 0..n {
                        match spawn(mode, set, &masters) {
                            Ok(pid) => live.push(pid),
                            Err(e) => eprintln!("tqserver php: fork failed: {e}"),
                        }
                    }
                }
            }
        }
    }
}

fn ignore_sigpipe() {
    // SAFETY: SIG_IGN installs no handler code; nothing else in this
    // single-threaded process changes SIGPIPE's disposition.
    let _ =
        unsafe { nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigIgn) };
}

fn run(n: usize, set: &SigSet, mode: &Mode) -> ExitCode {
    let mut live: Vec<Pid> = Vec::with_capacity(n);
    let mut quick_deaths = 0u32;
    loop {
        while live.len() < n {
            match spawn(mode, set, &[]) {
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

/// Forks a child; `close` are the master's own descriptors, closed in it.
fn spawn(mode: &Mode, stop: &SigSet, close: &[RawFd]) -> nix::Result<Pid> {
    // SAFETY: the master is single-threaded (PHP is built without ZTS and
    // the master starts no threads), so the child may run any code.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => {
            for fd in close {
                let _ = nix::unistd::close(*fd);
            }
            child(mode, stop)
        }
    }
}

/// A child: serves requests on fd 0 until a stop signal; never returns.
fn child(mode: &Mode, stop: &SigSet) -> ! {
    // The master's death ends its children (TQServer starts a new one).
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    // Every signal but the stop signals unblocked; those stay blocked and
    // are read from a signalfd between requests (serve.rs).
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(stop), None);
    // SAFETY: fd 0 is the listening socket TQServer gave the master; this
    // process owns its copy and nothing else closes it.
    let listener = unsafe { OwnedFd::from_raw_fd(0) };
    let pid = std::process::id();
    let mut server =
        match serve::Server::new(listener, stop, mode.max_memory, mode.on_demand.is_some()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("tqserver php[{pid}]: signalfd: {e}");
                std::process::exit(1);
            }
        };
    let Some(script) = &mode.worker else {
        classic(&mut server);
        std::process::exit(0);
    };
    // parse() requires both with --worker.
    let root = mode.root.as_deref().unwrap_or_default();
    let name = mode.script_name.as_deref().unwrap_or_default();
    let boot: [(&[u8], &[u8]); 4] = [
        (b"SCRIPT_FILENAME", script.as_bytes()),
        (b"SCRIPT_NAME", name.as_bytes()),
        (b"DOCUMENT_ROOT", root.as_bytes()),
        (b"GATEWAY_INTERFACE", b"CGI/1.1"),
    ];
    // The worker script runs until it ends; exit(), a fatal error or
    // max_memory end it with its request answered, and it boots again in
    // this process (PHP's request shutdown frees all it held), so the
    // connection TQServer keeps to this process stays good. Only a stop
    // signal, or a script that ends before it handles a request, ends the
    // process.
    loop {
        let before = server.served();
        let ended = php::run_worker(&boot, &mut server);
        let recycled = server.take_recycle();
        if server.stopping() {
            std::process::exit(0);
        }
        match ended {
            Ok(_) if server.served() == before && !recycled => {
                eprintln!(
                    "tqserver php[{pid}]: the worker script {script} ended before it handled a request; it must loop on tqserver_handle_request()"
                );
                std::process::exit(1);
            }
            Ok(_) => {}
            Err(_) => {
                eprintln!("tqserver php[{pid}]: PHP could not start the worker script {script}");
                std::process::exit(1);
            }
        }
    }
}

/// Classic mode: every request runs its script from scratch.
fn classic(server: &mut serve::Server) {
    while let Some(params) = server.next_request() {
        let pairs: Vec<(&[u8], &[u8])> = params.iter().map(|(n, v)| (&n[..], &v[..])).collect();
        let status = match php::run(&pairs, server) {
            Ok(s) => s,
            // (RunError::Nul cannot come: serve.rs answers a NUL byte
            // with 400 before PHP sees the request.)
            Err(php::RunError::Startup | php::RunError::Nul) => {
                php::Io::write(
                    server,
                    b"Status: 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\nPHP could not start the request.\n",
                );
                1
            }
        };
        server.end_request(status, 0);
    }
}
