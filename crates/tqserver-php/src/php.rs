//! The boundary with libphp: starting PHP, and running one request with
//! its CGI variables and its I/O. All of the project's FFI is here; each
//! `unsafe` block says why it holds.

use std::ffi::{CString, c_char, c_int, c_void};

/// What a running request reads and writes; implemented by the FastCGI
/// connection ([`crate::serve`]).
pub trait Io {
    /// Part of the response (CGI head first). False when the client is gone.
    fn write(&mut self, bytes: &[u8]) -> bool;
    /// Send what was written so far. False when the client is gone.
    fn flush(&mut self) -> bool;
    /// Up to `buf.len()` bytes of the request body; 0 at its end.
    fn read_body(&mut self, buf: &mut [u8]) -> usize;
    /// `fastcgi_finish_request()`: the response is complete.
    fn finish(&mut self);
    /// A message for the request's error log.
    fn log(&mut self, message: &[u8]);
    /// Worker mode: blocks until the next request's CGI variables are in;
    /// `None` when the worker script is to stop.
    fn next_request(&mut self) -> Option<tqserver_fastcgi::Params> {
        None
    }
    /// Worker mode: the request is over; `memory` is what the worker
    /// script holds now (bytes of PHP's heap in use).
    fn end_request(&mut self, _status: i32, _memory: usize) {}
}

/// Whether PHP is linked in.
#[cfg(tq_php)]
pub const AVAILABLE: bool = true;
/// Whether PHP is linked in.
#[cfg(not(tq_php))]
pub const AVAILABLE: bool = false;

/// Why a request could not run.
#[derive(Debug)]
pub enum RunError {
    /// A CGI variable held a NUL byte (no web server sends one).
    Nul,
    /// PHP could not start the request.
    Startup,
}

#[cfg(tq_php)]
mod ffi {
    use std::ffi::{c_char, c_int, c_void};

    #[repr(C)]
    pub struct Param {
        pub name: *const c_char,
        pub value: *const c_char,
        pub value_len: usize,
    }

    #[repr(C)]
    pub struct IoTable {
        pub ctx: *mut c_void,
        pub write: extern "C" fn(*mut c_void, *const c_char, usize) -> c_int,
        pub flush: extern "C" fn(*mut c_void) -> c_int,
        pub read_body: extern "C" fn(*mut c_void, *mut c_char, usize) -> usize,
        pub finish: extern "C" fn(*mut c_void),
        pub log: extern "C" fn(*mut c_void, *const c_char, usize),
        pub next: extern "C" fn(*mut c_void, *mut *const Param, *mut usize) -> c_int,
        pub end: extern "C" fn(*mut c_void, c_int, usize),
    }

    unsafe extern "C" {
        pub fn tq_php_startup(ini: *const c_char, ini_file: *const c_char) -> c_int;
        pub fn tq_php_version() -> *const c_char;
        pub fn tq_php_run(
            params: *const Param,
            n: usize,
            io: *const IoTable,
            app_status: *mut c_int,
        ) -> c_int;
        pub fn tq_php_run_worker(
            boot: *const Param,
            n: usize,
            io: *const IoTable,
            app_status: *mut c_int,
        ) -> c_int;
    }
}

/// CGI variables as C strings, and the table sapi.c reads them through.
#[cfg(tq_php)]
#[derive(Default)]
struct Held {
    owned: Vec<(CString, CString)>,
    table: Vec<ffi::Param>,
}

#[cfg(tq_php)]
impl Held {
    fn new<'a>(params: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Result<Self, RunError> {
        let mut owned = Vec::new();
        for (n, v) in params {
            let n = CString::new(n).map_err(|_| RunError::Nul)?;
            let v = CString::new(v).map_err(|_| RunError::Nul)?;
            owned.push((n, v));
        }
        // The CStrings' buffers do not move when `owned` does.
        let table = owned
            .iter()
            .map(|(n, v)| ffi::Param {
                name: n.as_ptr(),
                value: v.as_ptr(),
                value_len: v.as_bytes().len(),
            })
            .collect();
        Ok(Self { owned, table })
    }
}

/// What a callback's ctx points to: the request's I/O, and (worker mode)
/// the CGI variables of the request being run.
#[cfg(tq_php)]
struct Ctx<'a> {
    io: &'a mut dyn Io,
    held: Held,
}

#[cfg(tq_php)]
fn io_table(ctx: &mut Ctx<'_>) -> ffi::IoTable {
    ffi::IoTable {
        ctx: std::ptr::from_mut(ctx).cast::<c_void>(),
        write: cb_write,
        flush: cb_flush,
        read_body: cb_read_body,
        finish: cb_finish,
        log: cb_log,
        next: cb_next,
        end: cb_end,
    }
}

/// Starts PHP (module start-up, once per master): `settings` as `-d`
/// lines after the php.ini files, `ini_file` instead of the embed SAPI's
/// php.ini.
#[cfg(tq_php)]
pub fn startup(settings: &[(String, String)], ini_file: Option<&str>) -> Result<(), String> {
    let mut ini = String::new();
    for (k, v) in settings {
        if k.contains(['\n', '\0', '=']) || v.contains(['\n', '\0']) {
            return Err(format!("-d {k}={v}: no line breaks or NUL bytes"));
        }
        ini.push_str(&format!("{k}={v}\n"));
    }
    let ini = CString::new(ini).map_err(|e| e.to_string())?;
    let file = ini_file
        .map(CString::new)
        .transpose()
        .map_err(|e| e.to_string())?;
    // SAFETY: both strings are NUL-terminated and outlive the call (PHP
    // copies them: sapi.c copies `ini`, strdup's `ini_file`); this is the
    // process's only start-up, before any request, on its only thread.
    let r = unsafe {
        ffi::tq_php_startup(
            ini.as_ptr(),
            file.as_ref().map_or(std::ptr::null(), |f| f.as_ptr()),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err("PHP's module start-up failed (see the lines above)".into())
    }
}

/// Starts PHP: not built in.
#[cfg(not(tq_php))]
pub fn startup(_: &[(String, String)], _: Option<&str>) -> Result<(), String> {
    Err(NOT_BUILT.into())
}

/// What to say when PHP is not linked in.
pub const NOT_BUILT: &str = "this tqserver was built without embedded PHP: install libphp8.2-embed and php8.2-dev (Debian) and build it again";

/// The PHP version linked in.
pub fn version() -> String {
    #[cfg(tq_php)]
    {
        // SAFETY: tq_php_version returns PHP_VERSION, a static C string.
        let v = unsafe { std::ffi::CStr::from_ptr(ffi::tq_php_version()) };
        v.to_string_lossy().into_owned()
    }
    #[cfg(not(tq_php))]
    {
        "none".into()
    }
}

/// Runs one request from scratch: its script (`SCRIPT_FILENAME`) with
/// these CGI variables, its I/O through `io`. The script's exit status.
#[cfg(tq_php)]
pub fn run(params: &[(&[u8], &[u8])], io: &mut dyn Io) -> Result<i32, RunError> {
    let held = Held::new(params.iter().copied())?;
    let mut ctx = Ctx {
        io,
        held: Held::default(),
    };
    let table = io_table(&mut ctx);
    let mut status: c_int = 0;
    // SAFETY: `held` (the strings and the table pointing into them),
    // `table` and `ctx` all live until the call returns; sapi.c keeps no
    // pointer past it (`current` is reset before returning).
    let r = unsafe { ffi::tq_php_run(held.table.as_ptr(), held.table.len(), &table, &mut status) };
    drop(held.owned);
    if r == 0 {
        Ok(status)
    } else {
        Err(RunError::Startup)
    }
}

/// Worker mode: runs the worker script (`SCRIPT_FILENAME` of `boot`, the
/// CGI variables it starts with) once; each `tqserver_handle_request()`
/// it calls takes the next request from [`Io::next_request`] and ends it
/// with [`Io::end_request`]. Returns the script's exit status when it
/// ends (it returned, exited, or a fatal error ended it).
#[cfg(tq_php)]
pub fn run_worker(boot: &[(&[u8], &[u8])], io: &mut dyn Io) -> Result<i32, RunError> {
    let held = Held::new(boot.iter().copied())?;
    let mut ctx = Ctx {
        io,
        held: Held::default(),
    };
    let table = io_table(&mut ctx);
    let mut status: c_int = 0;
    // SAFETY: as in `run`; the requests' variables live in `ctx.held`,
    // replaced only by the next cb_next, when sapi.c is done with them.
    let r = unsafe {
        ffi::tq_php_run_worker(held.table.as_ptr(), held.table.len(), &table, &mut status)
    };
    drop(held.owned);
    if r == 0 {
        Ok(status)
    } else {
        Err(RunError::Startup)
    }
}

/// Worker mode: not built in.
#[cfg(not(tq_php))]
pub fn run_worker(_: &[(&[u8], &[u8])], _: &mut dyn Io) -> Result<i32, RunError> {
    Err(RunError::Startup)
}

/// Runs one request: not built in.
#[cfg(not(tq_php))]
pub fn run(_: &[(&[u8], &[u8])], _: &mut dyn Io) -> Result<i32, RunError> {
    Err(RunError::Startup)
}

/// The `Ctx` behind a callback's ctx.
///
/// # Safety
/// `ctx` is the table's ctx of a [`run`] or [`run_worker`] still running.
#[cfg(tq_php)]
unsafe fn ctx_of<'a, 'b>(ctx: *mut c_void) -> &'a mut Ctx<'b> {
    // SAFETY: per the contract, ctx points to the running call's `Ctx`,
    // which that call does not touch meanwhile; PHP calls back on this
    // thread only, one callback at a time.
    unsafe { &mut *ctx.cast::<Ctx<'b>>() }
}

/// The `Io` behind a callback's ctx.
///
/// # Safety
/// As [`ctx_of`].
#[cfg(tq_php)]
unsafe fn io_of<'a>(ctx: *mut c_void) -> &'a mut dyn Io {
    // SAFETY: per the contract.
    unsafe { &mut *ctx_of(ctx).io }
}

#[cfg(tq_php)]
extern "C" fn cb_write(ctx: *mut c_void, buf: *const c_char, len: usize) -> c_int {
    if len == 0 {
        return 1;
    }
    // SAFETY: sapi.c passes its request's ctx and a buffer of `len` bytes
    // it owns for the duration of the call.
    let (io, bytes) = unsafe {
        (
            io_of(ctx),
            std::slice::from_raw_parts(buf.cast::<u8>(), len),
        )
    };
    c_int::from(io.write(bytes))
}

#[cfg(tq_php)]
extern "C" fn cb_flush(ctx: *mut c_void) -> c_int {
    // SAFETY: as cb_write.
    c_int::from(unsafe { io_of(ctx) }.flush())
}

#[cfg(tq_php)]
extern "C" fn cb_read_body(ctx: *mut c_void, buf: *mut c_char, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    // SAFETY: sapi.c passes PHP's buffer of `len` writable bytes.
    let (io, out) = unsafe {
        (
            io_of(ctx),
            std::slice::from_raw_parts_mut(buf.cast::<u8>(), len),
        )
    };
    io.read_body(out)
}

#[cfg(tq_php)]
extern "C" fn cb_finish(ctx: *mut c_void) {
    // SAFETY: as cb_write.
    unsafe { io_of(ctx) }.finish();
}

#[cfg(tq_php)]
extern "C" fn cb_log(ctx: *mut c_void, msg: *const c_char, len: usize) {
    // SAFETY: as cb_write.
    let (io, bytes) = unsafe {
        (
            io_of(ctx),
            std::slice::from_raw_parts(msg.cast::<u8>(), len),
        )
    };
    io.log(bytes);
}

#[cfg(tq_php)]
extern "C" fn cb_next(ctx: *mut c_void, params: *mut *const ffi::Param, n: *mut usize) -> c_int {
    // SAFETY: sapi.c passes its ctx and two places to write to.
    let ctx = unsafe { ctx_of(ctx) };
    loop {
        let Some(next) = ctx.io.next_request() else {
            return 0;
        };
        // serve.rs answers a NUL byte with 400 before; never here.
        let Ok(held) = Held::new(next.iter().map(|(n, v)| (&n[..], &v[..]))) else {
            ctx.io.end_request(0, 0);
            continue;
        };
        ctx.held = held;
        // SAFETY: the out-pointers are sapi.c's locals; the table lives in
        // ctx.held until the next cb_next.
        unsafe {
            *params = ctx.held.table.as_ptr();
            *n = ctx.held.table.len();
        }
        return 1;
    }
}

#[cfg(tq_php)]
extern "C" fn cb_end(ctx: *mut c_void, status: c_int, memory: usize) {
    // SAFETY: as cb_write.
    unsafe { io_of(ctx) }.end_request(status, memory);
}
