//! Keeps the log writer's thread polling its sockets and channels for a
//! moment (`server.idle_poll_us`) instead of going to sleep in
//! `epoll_wait` at once, when what it waits for is due within the moment:
//! on virtual machines waking a thread whose vCPU has gone idle costs tens
//! of microseconds, more than the rest of a small send (BENCHMARKS.md, "An
//! eighth sitting"). Seastar's `--idle-poll-time-us` does the same for its
//! reactors. Two waits qualify:
//! - after a send of a connection that sends alone (answered twice in a
//!   row) is answered: its next send comes one client turnaround later.
//!   Where many connections take turns the thread seldom sleeps anyway,
//!   and polling after every answer took CPU the clients on the same cores
//!   needed (16 synchronous producers under async flush lost 3–12 %);
//! - while an fdatasync round that holds appends runs (sync flush): its end
//!   is the answers' start.
//!
//! The poll is bounded by the window, so an idle broker sleeps as before,
//! and each turn gives the CPU to any other runnable thread first.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

thread_local! {
    /// The poll of the thread this runs on, if it has one.
    static POLL: RefCell<Option<Rc<IdlePoll>>> = const { RefCell::new(None) };
}

/// One thread's poll window.
struct IdlePoll {
    window: Duration,
    /// Polls until then.
    until: Cell<Instant>,
    /// The poll's task, when it sleeps.
    sleeping: RefCell<Option<Waker>>,
    /// The connection answered last.
    last: Cell<usize>,
    /// Turns polled so far (for tests and the curious).
    turns: Cell<u64>,
}

/// A send of connection `conn` (any number that tells connections apart)
/// was answered on this thread: when the answer before went to the same
/// connection, poll for the window from now (nothing on a thread without a
/// poll).
pub fn answered(conn: usize) {
    POLL.with(|poll| {
        if let Some(poll) = poll.borrow().as_ref() {
            if poll.last.replace(conn) != conn {
                return;
            }
            poll.until.set(Instant::now() + poll.window);
            if let Some(waker) = poll.sleeping.borrow_mut().take() {
                waker.wake();
            }
        }
    });
}

/// Something is due on this thread soon (a round's end): poll for the
/// window from now.
pub fn keep_awake() {
    POLL.with(|poll| {
        if let Some(poll) = poll.borrow().as_ref() {
            poll.until.set(Instant::now() + poll.window);
            if let Some(waker) = poll.sleeping.borrow_mut().take() {
                waker.wake();
            }
        }
    });
}

/// Polls the current thread's runtime for `window` after each
/// [`answered`] on this thread; runs until dropped (the thread's runtime
/// stops). A zero window polls never.
pub async fn run(window: Duration) {
    if window.is_zero() {
        return;
    }
    let poll = Rc::new(IdlePoll {
        window,
        until: Cell::new(Instant::now()),
        sleeping: RefCell::new(None),
        last: Cell::new(0),
        turns: Cell::new(0),
    });
    POLL.with(|p| *p.borrow_mut() = Some(poll.clone()));
    let _installed = Uninstall;
    loop {
        poll_fn(|cx| {
            if Instant::now() < poll.until.get() {
                return Poll::Ready(());
            }
            *poll.sleeping.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        while Instant::now() < poll.until.get() {
            poll.turns.set(poll.turns.get() + 1);
            // Another runnable thread on this CPU (the syncer's, a
            // client's) goes first: the poll only takes what is idle.
            std::thread::yield_now();
            // The runtime, with a task yielding, checks its sockets and
            // timers without blocking and comes back here.
            tokio::task::yield_now().await;
        }
    }
}

/// Takes the poll off its thread when its task ends.
struct Uninstall;

impl Drop for Uninstall {
    fn drop(&mut self) {
        let _ = POLL.try_with(|p| p.borrow_mut().take());
    }
}

/// Turns the current thread's poll has run (0 without one).
#[cfg(test)]
fn turns() -> u64 {
    POLL.with(|p| p.borrow().as_ref().map_or(0, |p| p.turns.get()))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(60)).await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn polls_for_the_window_after_an_answer_and_then_sleeps() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                tokio::task::spawn_local(run(Duration::from_millis(20)));
                settle().await;
                assert_eq!(turns(), 0, "nothing answered: no polling");
                answered(1);
                answered(1);
                settle().await;
                let after_one = turns();
                assert!(after_one > 0, "a connection answered twice in a row starts the poll");
                settle().await;
                assert_eq!(turns(), after_one, "the poll stops when its window has passed");
                answered(1);
                settle().await;
                assert!(turns() > after_one, "its next answer starts it again");
            })
            .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn connections_taking_turns_start_no_poll() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                tokio::task::spawn_local(run(Duration::from_millis(20)));
                settle().await;
                for conn in [1, 2, 3, 1, 2, 3] {
                    answered(conn);
                }
                settle().await;
                assert_eq!(turns(), 0);
            })
            .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn keeping_awake_polls_for_the_window() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                tokio::task::spawn_local(run(Duration::from_millis(20)));
                settle().await;
                keep_awake();
                settle().await;
                let polled = turns();
                assert!(polled > 0);
                settle().await;
                assert_eq!(turns(), polled, "and then sleeps");
            })
            .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_zero_window_never_polls() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                tokio::task::spawn_local(run(Duration::ZERO));
                settle().await;
                answered(1);
                answered(1);
                keep_awake();
                settle().await;
                assert_eq!(turns(), 0);
            })
            .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_socket_is_served_while_the_thread_polls() {
        // The poll must not starve the thread's other tasks: a request
        // arriving inside the window is read and answered.
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                tokio::task::spawn_local(run(Duration::from_secs(3600)));
                settle().await;
                answered(1);
                answered(1);
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
                let addr = listener.local_addr().expect("addr");
                tokio::task::spawn_local(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let (mut s, _) = listener.accept().await.expect("accept");
                    let mut b = [0u8; 4];
                    s.read_exact(&mut b).await.expect("read");
                    s.write_all(&b).await.expect("write");
                });
                let echoed = tokio::task::spawn_blocking(move || {
                    use std::io::{Read, Write};
                    let mut c = std::net::TcpStream::connect(addr).expect("connect");
                    c.write_all(b"ping").expect("write");
                    let mut b = [0u8; 4];
                    c.read_exact(&mut b).expect("read");
                    b
                });
                let echoed = tokio::time::timeout(Duration::from_secs(10), echoed).await;
                assert_eq!(echoed.expect("served in time").expect("client"), *b"ping");
                assert!(turns() > 0);
            })
            .await;
    }
}
