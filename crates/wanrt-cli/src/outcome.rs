//! How a `wanrt` run ends: one line on stderr and a non-zero status for any error (DESIGN.md),
//! also for a panic anywhere (a rayon worker's panic reaches the main thread and is caught
//! there; the hook keeps its message and location instead of printing a multi-line report), and
//! a quiet stop when stdout's reader went away (`wanrt … --json | head -c1`).

use std::io::Write;
use std::sync::Mutex;

/// Exit status of a process whose stdout was closed by its reader, as a tool killed by SIGPIPE
/// reports it (128 + 13). Nothing is printed: the reader asked for no more.
pub const BROKEN_PIPE_STATUS: i32 = 141;

static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Replaces the default panic report with a record of the message and location, printed by
/// [`finish`] as one line.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        let line = format!("{msg}{at}").replace('\n', " ");
        if let Ok(mut last) = LAST_PANIC.lock() {
            // The first panic is the cause; later ones (other workers unwinding) are echoes.
            last.get_or_insert(line);
        }
    }));
}

/// Runs the command, turning a panic into an error (no `panic = "abort"`: unwinding is what
/// lets a worker's panic become this one line).
pub fn guarded(f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            let msg = LAST_PANIC.lock().ok().and_then(|mut l| l.take()).unwrap_or_else(|| "panic".into());
            Err(anyhow::anyhow!("internal error (a bug in wanrt, please report it): {msg}"))
        }
    }
}

/// Whether the error (or any cause) is a write to a closed pipe.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// Prints `text` on stdout; a closed pipe is an error [`finish`] recognizes, not a panic (as
/// `println!` would make it).
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Ends the process for `result`: status 0, [`BROKEN_PIPE_STATUS`] silently, or 1 with the
/// error's chain of causes on one stderr line.
pub fn finish(result: anyhow::Result<()>) -> ! {
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) if is_broken_pipe(&e) => std::process::exit(BROKEN_PIPE_STATUS),
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            // stderr may be closed too: nothing more can be done then.
            let _ = writeln!(std::io::stderr(), "error: {msg}");
            std::process::exit(1);
        }
    }
}
