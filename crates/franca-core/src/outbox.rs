//! A session's outbound queue: the router pushes, the transport task that owns the socket pops.
//!
//! Bounded like a channel, but with no memory while empty. A tokio mpsc channel allocates its
//! first 32-slot block and its padded shared state up front, about 2 KiB per session, which
//! was a fifth of an idle session's footprint (bench/RESULTS.md, M1). Here the queue is a
//! `VecDeque` behind a mutex that is only ever held for a push or a pop, and it gives its
//! buffer back when drained.

use crate::session::Outbound;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// Capacity a drained queue may keep; a larger buffer (after a burst) is freed.
const KEEP: usize = 8;

/// Why a push was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The queue holds its maximum; the item is given back.
    Full(Outbound),
    /// The receiving task is gone.
    Closed(Outbound),
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Outbound>,
    /// The receiver was dropped: nobody will ever pop again.
    closed: bool,
}

/// The sending side, owned by the [`Session`](crate::Session).
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    ready: Notify,
    max: usize,
}

impl Outbox {
    /// A queue of at most `max` items (a close may go one over, see [`Outbox::push_close`]).
    pub fn new(max: usize) -> Arc<Outbox> {
        Arc::new(Outbox {
            state: Mutex::default(),
            ready: Notify::new(),
            max,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it, and the queue is consistent between operations.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue an item unless the queue is full or the receiver gone.
    pub fn push(&self, item: Outbound) -> Result<(), Refused> {
        let mut s = self.lock();
        if s.closed {
            return Err(Refused::Closed(item));
        }
        if s.queue.len() >= self.max {
            return Err(Refused::Full(item));
        }
        s.queue.push_back(item);
        drop(s);
        // A stored permit if the task is not waiting yet, so no wake-up is lost.
        self.ready.notify_one();
        Ok(())
    }

    /// Queue a close even when the queue is full: a stream that must end (a slow reader, a
    /// removed account) has to hear about it. At most one close is held beyond the limit.
    pub fn push_close(&self, item: Outbound) {
        let mut s = self.lock();
        if s.closed {
            return;
        }
        let already = s.queue.len() >= self.max
            && s.queue
                .back()
                .is_some_and(|o| matches!(o, Outbound::Close(..)));
        if !already {
            s.queue.push_back(item);
        }
        drop(s);
        self.ready.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// The receiving half; one per outbox.
    pub fn receiver(self: &Arc<Self>) -> Receiver {
        Receiver(self.clone())
    }
}

/// The receiving side, owned by the transport task. Dropping it closes the outbox.
#[derive(Debug)]
pub struct Receiver(Arc<Outbox>);

impl Receiver {
    /// The next item, if one is queued.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        let mut s = self.0.lock();
        let item = s.queue.pop_front();
        if s.queue.is_empty() && s.queue.capacity() > KEEP {
            s.queue = VecDeque::new();
        }
        item
    }

    /// Wait for the next item.
    pub async fn recv(&mut self) -> Outbound {
        loop {
            if let Some(item) = self.try_recv() {
                return item;
            }
            self.0.ready.notified().await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.closed = true;
        // What is still queued is not delivered; free it now rather than with the session.
        s.queue = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use franca_proto::errors::StreamError;

    fn xml(s: &str) -> Outbound {
        Outbound::Xml(Arc::from(s))
    }

    #[tokio::test]
    async fn items_arrive_in_order_and_wake_the_receiver() {
        let outbox = Outbox::new(4);
        let mut rx = outbox.receiver();
        let waiting = tokio::spawn(async move {
            let first = rx.recv().await;
            let second = rx.recv().await;
            (first, second)
        });
        tokio::task::yield_now().await;
        outbox.push(xml("<a/>")).expect("room");
        outbox.push(xml("<b/>")).expect("room");
        let (first, second) = waiting.await.expect("receiver task");
        assert_eq!((first, second), (xml("<a/>"), xml("<b/>")));
    }

    #[test]
    fn a_full_queue_refuses_but_still_takes_one_close() {
        let outbox = Outbox::new(2);
        let mut rx = outbox.receiver();
        outbox.push(xml("1")).expect("room");
        outbox.push(xml("2")).expect("room");
        assert_eq!(outbox.push(xml("3")), Err(Refused::Full(xml("3"))));
        let close = || Outbound::Close(StreamError::PolicyViolation, None);
        outbox.push_close(close());
        outbox.push_close(close());
        let drained: Vec<_> = std::iter::from_fn(|| rx.try_recv()).collect();
        assert_eq!(drained, vec![xml("1"), xml("2"), close()]);
    }

    #[test]
    fn dropping_the_receiver_closes_and_frees() {
        let outbox = Outbox::new(2);
        let rx = outbox.receiver();
        outbox.push(xml("1")).expect("room");
        drop(rx);
        assert!(outbox.is_closed());
        assert_eq!(outbox.push(xml("2")), Err(Refused::Closed(xml("2"))));
        assert!(outbox.lock().queue.capacity() == 0);
    }

    #[test]
    fn a_drained_queue_gives_its_buffer_back() {
        let outbox = Outbox::new(1000);
        let mut rx = outbox.receiver();
        for _ in 0..100 {
            outbox.push(xml("x")).expect("room");
        }
        while rx.try_recv().is_some() {}
        assert!(outbox.lock().queue.capacity() <= KEEP);
    }
}
