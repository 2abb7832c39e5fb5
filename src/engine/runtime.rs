//! One tokio runtime per process, started on first use and stopped at exit.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tokio::runtime::{Builder, Handle, Runtime};

static RUNTIME: Mutex<Option<Runtime>> = Mutex::new(None);
static HANDLE: OnceLock<Handle> = OnceLock::new();

/// Worker threads: the machine has few cores and the Tcl thread needs one.
const WORKERS: usize = 2;

pub fn handle() -> Handle {
    HANDLE
        .get_or_init(|| {
            let rt = Builder::new_multi_thread()
                .worker_threads(WORKERS)
                .thread_name("websocket-io")
                .enable_all()
                .build()
                .expect("cannot start the websocket I/O runtime");
            let h = rt.handle().clone();
            *RUNTIME.lock().unwrap_or_else(|e| e.into_inner()) = Some(rt);
            h
        })
        .clone()
}

/// Stops the runtime, giving tasks a moment to flush close frames.
pub fn shutdown() {
    let rt = RUNTIME.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(rt) = rt {
        rt.shutdown_timeout(Duration::from_millis(200));
    }
}
