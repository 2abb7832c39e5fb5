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

/// Lowers the calling I/O thread's priority by `WEBSOCKET_IO_NICE` nice
/// steps (default 5; 0 leaves it) below the thread that started the engine.
/// The Tcl thread is where the work per message is, and when it shares a
/// core with the I/O threads (one core, or a busy machine) an I/O thread
/// that preempts it at every incoming packet cuts its batches short. With 200 connections echoing through one pinned core
/// (median of 6 interleaved runs): normal priority 65k msg/s, nice 5 ~90k,
/// SCHED_BATCH (no wake-up preemption at all) ~94k. Batch made the round
/// trip with the peer on the same core 7% slower than nice 5 (29.5 against
/// 27.4 µs, node ws 29.9): a woken batch thread waits for the Tcl thread to
/// yield. Linux's nice is per thread; elsewhere this does nothing.
fn yield_to_interpreters() {
    #[cfg(target_os = "linux")]
    {
        let nice = std::env::var("WEBSOCKET_IO_NICE")
            .ok()
            .and_then(|v| v.trim().parse::<i32>().ok())
            .unwrap_or(DEFAULT_IO_NICE)
            .clamp(0, 19);
        if nice > 0 {
            // A refusal (seccomp, an exotic kernel) leaves the thread as it was.
            let _ = crate::sys::lower_thread_priority(nice);
        }
    }
}

const DEFAULT_IO_NICE: i32 = 5;

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
