//! The CPU thread pool through a frame. A frame runs on a thread of rayon's pool ([`on_pool`]),
//! or, once [`frames_on_the_calling_thread`] was called (the threaded WebAssembly module: its
//! Worker computes beside a pool one thread short), on the thread that starts it. On flex the
//! pool's other threads spend the frame waiting for its passes without ever sleeping (a
//! [`Crew`]), and the frame's thread waits for their share of a pass without sleeping either: a
//! sleeping thread must be woken, slow in WebAssembly (`Atomics.wait`, where rayon's waits give
//! up spinning at once) and on a virtual machine whose idle core must be woken too.

#[cfg(feature = "threads")]
use std::cell::Cell;
#[cfg(feature = "threads")]
use std::sync::{Arc, Mutex};
#[cfg(feature = "threads")]
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use burn::tensor::Device;

/// Threads these kernels compute on: rayon's pool (flex's too), or 1 without `threads`.
pub fn threads() -> usize {
    #[cfg(feature = "threads")]
    return rayon::current_num_threads() + usize::from(CALLER_COMPUTES.load(Ordering::Relaxed));
    #[cfg(not(feature = "threads"))]
    1
}

/// From now on a frame started outside the pool runs on the thread that starts it, the pool's
/// threads its crew (the pool then one thread short of the cores: [`threads`] counts the caller):
/// the caller neither sleeps while the pool runs the frame nor waits to be woken after it.
#[cfg(feature = "threads")]
pub fn frames_on_the_calling_thread() {
    CALLER_COMPUTES.store(true, Ordering::Relaxed);
}

#[cfg(feature = "threads")]
static CALLER_COMPUTES: AtomicBool = AtomicBool::new(false);

/// `work` on a thread of the CPU pool (with `threads`), the caller waiting: the kernels' passes
/// inside it then start from a thread of the pool, which takes a share of each pass itself. On
/// flex the pool's other threads join its passes as a [`Crew`] until `work` ends; after
/// [`frames_on_the_calling_thread`], `work` runs on the caller and every thread of the pool
/// joins.
pub fn on_pool<R: Send>(device: &Device, work: impl FnOnce() -> R + Send) -> R {
    #[cfg(feature = "threads")]
    {
        let with_crew = super::on_flex_outside_training(device) && threads() > 1;
        if with_crew && CALLER_COMPUTES.load(Ordering::Relaxed) && rayon::current_thread_index().is_none() {
            let crew = Arc::new(Crew::default());
            let members = Arc::clone(&crew);
            rayon::spawn_broadcast(move |_| members.serve());
            return crew.lead(work);
        }
        let crew = Crew::default();
        rayon::scope(|scope| {
            if !with_crew {
                return work();
            }
            crew.gather(scope);
            crew.lead(work)
        })
    }
    #[cfg(not(feature = "threads"))]
    {
        let _ = device;
        work()
    }
}

/// `work` (on `device`; on the CPU its readbacks are ready at once) driven to its end by
/// [`on_pool`].
pub fn finish_on_pool<F: Future<Output: Send> + Send>(device: &Device, work: F) -> F::Output {
    on_pool(device, || futures_lite::future::block_on(work))
}

/// `work(i)` for each `i` in `0..count`, shared out among the threads: among the frame's
/// [`Crew`] where this thread runs a frame on flex, else by rayon.
pub fn each_index(count: usize, work: impl Fn(usize) + Send + Sync) {
    #[cfg(feature = "threads")]
    if count > 1 {
        if let Some(crew) = CurrentCrew::idle() {
            crew.share(count, &work);
        } else {
            use rayon::prelude::*;
            (0..count).into_par_iter().for_each(work);
        }
        return;
    }
    (0..count).for_each(work);
}

/// Threads of the pool kept waiting for a frame's passes ([`on_pool`]) at this moment: the other
/// threads while a frame runs on flex, else none. For the tests.
pub fn threads_kept_awake() -> usize {
    #[cfg(feature = "threads")]
    return THREADS_KEPT_AWAKE.load(Ordering::Acquire);
    #[cfg(not(feature = "threads"))]
    0
}

#[cfg(feature = "threads")]
static THREADS_KEPT_AWAKE: AtomicUsize = AtomicUsize::new(0);

/// The pool's other threads through one frame: each looks for a pass of the frame to join, or
/// else for rayon's work, until the frame ends; none sleeps (width 1/8 at 128x64 in Chromium, two
/// threads: 20-26 ms a frame with the pool asleep between passes, 15.6-16.3 kept awake).
#[cfg(feature = "threads")]
#[derive(Default)]
struct Crew {
    /// The pass being shared out (a [`Pass`] on the frame thread's stack), or null.
    pass: AtomicPtr<Pass<'static>>,
    /// Threads holding `pass` at this moment: the frame's thread takes its pass back only once
    /// none does.
    holders: AtomicUsize,
    /// The frame has ended.
    done: AtomicBool,
}

/// One pass: `work(i)` for each `i` in `0..count`, each taken by whichever thread comes first.
#[cfg(feature = "threads")]
struct Pass<'a> {
    work: &'a (dyn Fn(usize) + Sync),
    count: usize,
    next: AtomicUsize,
    /// The first panic of a piece, resumed on the frame's thread.
    panic: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

#[cfg(feature = "threads")]
impl Pass<'_> {
    /// Pieces, one at a time, until none is left.
    fn take_pieces(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.count {
                return;
            }
            if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.work)(i))) {
                self.panic.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(panic);
            }
        }
    }
}

#[cfg(feature = "threads")]
impl Crew {
    /// Every other thread of the pool into the crew until the frame is dismissed.
    fn gather<'s>(&'s self, scope: &rayon::Scope<'s>) {
        let frame_thread = rayon::current_thread_index();
        for _ in 1..rayon::current_num_threads() {
            scope.spawn(move |_| {
                // Taken back by the frame's own thread (while it waits inside rayon's work), a
                // member would wait above the frame's work, which could then never end.
                if rayon::current_thread_index() != frame_thread {
                    self.serve();
                }
            });
        }
    }

    /// `work` on this thread as the frame the crew serves; the crew dismissed when it returns or
    /// panics.
    fn lead<R>(&self, work: impl FnOnce() -> R) -> R {
        let _done = Dismiss(self);
        let _current = CurrentCrew::set(self);
        work()
    }

    /// A member's wait: the frame's passes, or rayon's work (another frame's, or rayon's own
    /// passes within this frame) until the frame ends.
    fn serve(&self) {
        THREADS_KEPT_AWAKE.fetch_add(1, Ordering::AcqRel);
        while !self.done.load(Ordering::Acquire) {
            if !self.pass.load(Ordering::Relaxed).is_null() {
                // Announced before the pass is read again: the frame's thread, having taken it
                // back, waits for every announced holder.
                self.holders.fetch_add(1, Ordering::SeqCst);
                let pass = self.pass.load(Ordering::SeqCst);
                // SAFETY: the pass outlives every holder (`share` waits for them).
                if let Some(pass) = unsafe { pass.as_ref() } {
                    pass.take_pieces();
                }
                self.holders.fetch_sub(1, Ordering::SeqCst);
            } else if rayon::yield_now() != Some(rayon::Yield::Executed) {
                std::hint::spin_loop();
            }
        }
        THREADS_KEPT_AWAKE.fetch_sub(1, Ordering::AcqRel);
    }

    /// `work(i)` for each `i` in `0..count` among the crew, this thread taking pieces too; returns
    /// once every piece is done.
    fn share(&self, count: usize, work: &(dyn Fn(usize) + Sync)) {
        let pass = Pass { work, count, next: AtomicUsize::new(0), panic: Mutex::new(None) };
        self.pass.store(std::ptr::from_ref(&pass).cast_mut().cast(), Ordering::SeqCst);
        pass.take_pieces();
        self.pass.store(std::ptr::null_mut(), Ordering::SeqCst);
        // The last pieces end on the threads that took them.
        while self.holders.load(Ordering::SeqCst) != 0 {
            std::hint::spin_loop();
        }
        if let Some(panic) = pass.panic.into_inner().unwrap_or_else(|e| e.into_inner()) {
            std::panic::resume_unwind(panic);
        }
    }
}

/// Dismisses the crew when dropped: when the frame returns or panics.
#[cfg(feature = "threads")]
struct Dismiss<'a>(&'a Crew);

#[cfg(feature = "threads")]
impl Drop for Dismiss<'_> {
    fn drop(&mut self) {
        self.0.done.store(true, Ordering::Release);
    }
}

#[cfg(feature = "threads")]
thread_local! {
    /// The crew of the frame this thread runs, or null.
    static CURRENT_CREW: Cell<*const Crew> = const { Cell::new(std::ptr::null()) };
}

/// This thread's crew while a frame runs on it; the one before (a frame that this thread took
/// up while waiting inside another) when dropped.
#[cfg(feature = "threads")]
struct CurrentCrew(*const Crew);

#[cfg(feature = "threads")]
impl CurrentCrew {
    fn set(crew: &Crew) -> Self {
        Self(CURRENT_CREW.replace(crew))
    }

    /// This thread's crew, where it has no pass out already (a pass inside a piece of another
    /// goes to rayon).
    fn idle<'a>() -> Option<&'a Crew> {
        // SAFETY: set only while the frame owning the crew runs on this thread, below its stack.
        let crew = unsafe { CURRENT_CREW.get().as_ref()? };
        crew.pass.load(Ordering::Relaxed).is_null().then_some(crew)
    }
}

#[cfg(feature = "threads")]
impl Drop for CurrentCrew {
    fn drop(&mut self) {
        CURRENT_CREW.set(self.0);
    }
}
