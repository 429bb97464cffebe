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

impl IdlePoll {
    /// Polls for the window from now.
    fn arm(&self) {
        self.until.set(Instant::now() + self.window);
        if let Some(waker) = self.sleeping.borrow_mut().take() {
            waker.wake();
        }
    }
}

/// `f` with this thread's poll, if it has one.
fn this_thread(f: impl FnOnce(&IdlePoll)) {
    POLL.with(|poll| {
        if let Some(poll) = poll.borrow().as_ref() {
            f(poll);
        }
    });
}

/// A send of connection `conn` (any number that tells connections apart)
/// was answered on this thread: when the answer before went to the same
/// connection, poll for the window from now (nothing on a thread without a
/// poll).
pub fn answered(conn: usize) {
    this_thread(|poll| {
        if poll.last.replace(conn) == conn {
            poll.arm();
        }
    });
}

/// Something is due on this thread soon (a round's end): poll for the
/// window from now.
pub fn keep_awake() {
    this_thread(IdlePoll::arm);
}

/// Polls the current thread's runtime for `window` after each
/// [`answered`] that qualifies and each [`keep_awake`]; runs until dropped (the thread's runtime
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
    let mut turns = 0;
    this_thread(|poll| turns = poll.turns.get());
    turns
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(60)).await;
    }

    /// Runs `test` on a thread whose poll has the given window (and has
    /// started).
    async fn with_poll(window: Duration, test: impl Future<Output = ()>) {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                tokio::task::spawn_local(run(window));
                settle().await;
                test.await;
            })
            .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn polls_for_the_window_after_an_answer_and_then_sleeps() {
        with_poll(Duration::from_millis(20), async {
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
        with_poll(Duration::from_millis(20), async {
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
        with_poll(Duration::from_millis(20), async {
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
        with_poll(Duration::ZERO, async {
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
        with_poll(Duration::from_secs(3600), async {
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
