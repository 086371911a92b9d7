//! Frames on the calling thread (`cpu::frames_on_the_calling_thread`, what the threaded
//! WebAssembly module does: the Worker that owns the network computes beside a pool one thread
//! short): the frame's work runs on the caller, the pool's threads serve its passes, and nothing
//! is left waiting after it. A binary of its own: the mode is for the whole process.

mod common;

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{soon, within_a_minute};
use rayon::prelude::*;
use rpl_web::backend::BackendKind;
use rpl_web::cpu::{each_index, frames_on_the_calling_thread, on_pool, threads, threads_kept_awake};

#[test]
fn frames_run_on_the_calling_thread_with_the_pool_as_crew() {
    rayon::ThreadPoolBuilder::new().num_threads(2).build_global().unwrap();
    frames_on_the_calling_thread();
    assert_eq!(threads(), 3, "the pool's two threads and the caller");
    let flex = BackendKind::Flex.device().unwrap();
    within_a_minute("a frame on the calling thread", move || {
        let caller = std::thread::current().id();
        let pieces = Mutex::new(Vec::new());
        let sum: u64 = on_pool(&flex, || {
            assert_eq!(std::thread::current().id(), caller, "the frame on the calling thread");
            assert!(soon(|| threads_kept_awake() == 2), "the pool's two threads serve the frame: {}", threads_kept_awake());
            for _ in 0..10 {
                each_index(12, |_| {
                    pieces.lock().unwrap().push(std::thread::current().id());
                    std::thread::sleep(std::time::Duration::from_micros(300));
                });
            }
            // rayon's own passes from the calling thread go to the pool, the crew among it.
            (0..1u64 << 20).into_par_iter().sum()
        });
        assert_eq!(sum, (1u64 << 20) * ((1 << 20) - 1) / 2);
        let pieces = pieces.into_inner().unwrap();
        assert_eq!(pieces.len(), 120, "each piece once");
        let threads: HashSet<_> = pieces.iter().collect();
        assert!(pieces.contains(&caller) && threads.len() >= 2, "pieces on the caller and the pool: {} thread(s)", threads.len());
        assert!(soon(|| threads_kept_awake() == 0), "the crew dismissed after the frame");

        let failed = std::panic::catch_unwind(|| on_pool(&flex, || each_index(64, |i| assert_ne!(i, 37, "piece 37 fails"))));
        let message = failed.expect_err("the piece's panic reaches the frame's caller");
        assert!(message.downcast_ref::<String>().is_some_and(|m| m.contains("piece 37 fails")), "the piece's own message");
        assert!(soon(|| threads_kept_awake() == 0), "the crew dismissed after a failed frame");
        let total = AtomicUsize::new(0);
        on_pool(&flex, || each_index(64, |i| _ = total.fetch_add(i, Ordering::Relaxed)));
        assert_eq!(total.into_inner(), 64 * 63 / 2, "the next frame's pass");
    });
}
