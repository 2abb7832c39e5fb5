//! One tokio runtime per process, started on first use and stopped at exit.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tokio::runtime::{Builder, Handle, Runtime};

static RUNTIME: Mutex<Option<Runtime>> = Mutex::new(None);
static HANDLE: OnceLock<Handle> = OnceLock::new();

/// Worker threads at most: the Tcl thread is the usual bottleneck and needs
/// a core of its own. `WEBSOCKET_WORKERS` overrides it.
const WORKERS: usize = 2;

/// No more workers than the CPUs this process may run on: a process pinned
/// to one core (taskset, a cgroup quota) with two workers spends its time
/// waking the second one to steal work (measured: ~10% more CPU per message
/// with 200 connections echoing through one pinned core).
fn workers() -> usize {
    let cpus = std::thread::available_parallelism().map_or(WORKERS, |n| n.get());
    std::env::var("WEBSOCKET_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| (1..=64).contains(n))
        .unwrap_or(WORKERS.min(cpus))
}

/// Puts the calling I/O thread in Linux's SCHED_BATCH class unless
/// `WEBSOCKET_IO_SCHED=normal`: a batch thread that wakes up does not preempt
/// the running thread, it waits for its turn. The Tcl thread is where the
/// work per message is, and when it shares a core with the I/O threads
/// (one core, or a busy machine) a preemption per incoming packet cuts its
/// batches short: measured with 200 connections echoing through one pinned
/// core, context switches per message 0.22 -> 0.05, server CPU per message
/// -15%, throughput +20% (median of 6 interleaved runs). The I/O threads
/// still get their fair share of the core, and an idle core runs them at
/// once, so round trips at window 1 do not change.
fn yield_to_interpreters() {
    #[cfg(target_os = "linux")]
    {
        if std::env::var("WEBSOCKET_IO_SCHED").as_deref() == Ok("normal") {
            return;
        }
        // A refusal (seccomp, an exotic kernel) leaves the thread as it was.
        let _ = crate::sys::set_batch_scheduling();
    }
}

pub fn handle() -> Handle {
    HANDLE
        .get_or_init(|| {
            let rt = Builder::new_multi_thread()
                .worker_threads(workers())
                .thread_name("websocket-io")
                .on_thread_start(yield_to_interpreters)
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
