//! The bounded per-process output buffer and cursors reading it.
//!
//! Output of stdout and stderr is kept as one combined stream of chunks with byte offsets.
//! The buffer holds at most `capacity` bytes (plus one read). With a *blocking consumer*
//! attached (the client that started the process with a streaming response, or `exec`),
//! unconsumed data is never dropped: the pumps stop reading the pipes instead, so the
//! process blocks on write. Without one, the oldest chunks are dropped and later readers
//! see a `gap`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use hutch_api::process::{ProcessEvent, StreamKind};
use tokio::sync::watch;

use crate::reaper::ExitStatus;

/// Default buffer capacity per process.
pub const OUTPUT_CAPACITY: usize = 1024 * 1024;

/// How a process ended, as recorded once all its output was collected.
#[derive(Debug, Clone, Copy)]
pub struct ExitInfo {
    /// Exit code or signal.
    pub status: ExitStatus,
    /// Killed because its timeout passed.
    pub timed_out: bool,
    /// When the exit was observed.
    pub finished_at: DateTime<Utc>,
    /// Run time in milliseconds.
    pub duration_ms: u64,
}

#[derive(Debug)]
struct Chunk {
    offset: u64,
    kind: StreamKind,
    data: Bytes,
}

#[derive(Debug, Default)]
struct State {
    chunks: VecDeque<Chunk>,
    /// Offset of the oldest byte still buffered.
    start: u64,
    /// Offset one past the newest byte.
    end: u64,
    size: usize,
    /// Position of the blocking consumer, if one is attached.
    consumer: Option<u64>,
    exit: Option<ExitInfo>,
}

/// A process's output buffer.
#[derive(Debug)]
pub struct Output {
    state: Mutex<State>,
    changed: watch::Sender<u64>,
    space: watch::Sender<u64>,
    capacity: usize,
}

/// One item read from the buffer.
#[derive(Debug, Clone)]
pub enum OutputEvent {
    /// Bytes of one stream starting at `offset`.
    Data {
        /// Which stream.
        kind: StreamKind,
        /// Offset of the first byte in the combined stream.
        offset: u64,
        /// The bytes.
        data: Bytes,
    },
    /// Data between the reader's position and `offset` was dropped.
    Gap {
        /// First offset still available.
        offset: u64,
        /// Bytes skipped.
        skipped: u64,
    },
    /// The process exited (always last).
    Exit(ExitInfo),
}

impl OutputEvent {
    /// The wire form.
    pub fn to_wire(&self) -> ProcessEvent {
        match self {
            OutputEvent::Data { kind, offset, data } => {
                let data = String::from_utf8_lossy(data).into_owned();
                match kind {
                    StreamKind::Stdout => ProcessEvent::Stdout {
                        offset: *offset,
                        data,
                    },
                    StreamKind::Stderr => ProcessEvent::Stderr {
                        offset: *offset,
                        data,
                    },
                }
            }
            OutputEvent::Gap { offset, skipped } => ProcessEvent::Gap {
                offset: *offset,
                skipped: *skipped,
            },
            OutputEvent::Exit(e) => ProcessEvent::Exit {
                exit_code: e.status.code,
                signal: e.status.signal,
                duration_ms: e.duration_ms,
                timed_out: e.timed_out,
            },
        }
    }
}

enum Read {
    Event(OutputEvent),
    Pending,
    Done,
}

impl Output {
    /// An empty buffer; `blocking_consumer` attaches a consumer at offset 0 from the start.
    pub fn new(capacity: usize, blocking_consumer: bool) -> Self {
        Output {
            state: Mutex::new(State {
                consumer: blocking_consumer.then_some(0),
                ..State::default()
            }),
            changed: watch::Sender::new(0),
            space: watch::Sender::new(0),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn has_space(&self, st: &State) -> bool {
        match st.consumer {
            None => true,
            Some(c) => st.end.saturating_sub(c) < self.capacity as u64,
        }
    }

    /// Wait until the pumps may read more (only blocks while a blocking consumer lags).
    pub async fn wait_for_space(&self) {
        let mut rx = self.space.subscribe();
        loop {
            rx.borrow_and_update();
            if self.has_space(&self.lock()) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Append bytes read from one stream.
    pub fn push(&self, kind: StreamKind, data: Bytes) {
        if data.is_empty() {
            return;
        }
        {
            let mut st = self.lock();
            let offset = st.end;
            st.end += data.len() as u64;
            st.size += data.len();
            st.chunks.push_back(Chunk { offset, kind, data });
            while st.size > self.capacity {
                let Some(front) = st.chunks.front() else {
                    break;
                };
                let front_end = front.offset + front.data.len() as u64;
                if st.consumer.is_some_and(|c| c < front_end) {
                    break;
                }
                let len = front.data.len();
                st.chunks.pop_front();
                st.size -= len;
            }
            st.start = st.chunks.front().map(|c| c.offset).unwrap_or(st.end);
        }
        self.changed.send_modify(|v| *v += 1);
    }

    /// Record the exit; nothing is pushed after this.
    pub fn finish(&self, exit: ExitInfo) {
        self.lock().exit = Some(exit);
        self.changed.send_modify(|v| *v += 1);
    }

    /// The exit, once recorded.
    pub fn exit(&self) -> Option<ExitInfo> {
        self.lock().exit
    }

    /// Total bytes produced so far.
    pub fn end(&self) -> u64 {
        self.lock().end
    }

    /// Notified on every push and on exit.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Wait until the exit is recorded.
    pub async fn wait_exit(&self) -> ExitInfo {
        let mut rx = self.subscribe();
        loop {
            rx.borrow_and_update();
            if let Some(e) = self.exit() {
                return e;
            }
            if rx.changed().await.is_err() {
                // The sender lives in `self`, so this cannot happen; avoid spinning anyway.
                std::future::pending::<()>().await;
            }
        }
    }

    fn detach_consumer(&self) {
        self.lock().consumer = None;
        self.space.send_modify(|v| *v += 1);
    }

    fn advance_consumer(&self, pos: u64) {
        {
            let mut st = self.lock();
            if let Some(c) = st.consumer.as_mut() {
                *c = (*c).max(pos);
            }
        }
        self.space.send_modify(|v| *v += 1);
    }

    fn read_at(&self, pos: u64) -> Read {
        let st = self.lock();
        if pos < st.start {
            return Read::Event(OutputEvent::Gap {
                offset: st.start,
                skipped: st.start - pos,
            });
        }
        if pos < st.end {
            // Chunks are sorted by offset: binary search for the one containing `pos`.
            let idx = st
                .chunks
                .partition_point(|c| c.offset + c.data.len() as u64 <= pos);
            if let Some(c) = st.chunks.get(idx) {
                let skip = (pos - c.offset) as usize;
                return Read::Event(OutputEvent::Data {
                    kind: c.kind,
                    offset: pos,
                    data: c.data.slice(skip..),
                });
            }
        }
        match st.exit {
            Some(e) => Read::Event(OutputEvent::Exit(e)),
            None if pos >= st.end => Read::Pending,
            None => Read::Done,
        }
    }
}

/// A reader of a process's output from some offset.
#[derive(Debug)]
pub struct Cursor {
    out: Arc<Output>,
    pos: u64,
    follow: bool,
    blocking: bool,
    rx: watch::Receiver<u64>,
    done: bool,
}

impl Cursor {
    /// Read from `offset`. `follow` waits for live output (ending with the exit);
    /// `blocking` marks this cursor as the (already attached) blocking consumer.
    pub fn new(out: Arc<Output>, offset: u64, follow: bool, blocking: bool) -> Self {
        let rx = out.subscribe();
        Cursor {
            out,
            pos: offset,
            follow,
            blocking,
            rx,
            done: false,
        }
    }

    /// The next event, or `None` at the end.
    pub async fn next(&mut self) -> Option<OutputEvent> {
        if self.done {
            return None;
        }
        loop {
            self.rx.borrow_and_update();
            match self.out.read_at(self.pos) {
                Read::Event(ev) => {
                    match &ev {
                        OutputEvent::Data { offset, data, .. } => {
                            self.pos = offset + data.len() as u64;
                            if self.blocking {
                                self.out.advance_consumer(self.pos);
                            }
                        }
                        OutputEvent::Gap { offset, .. } => self.pos = *offset,
                        OutputEvent::Exit(_) => self.done = true,
                    }
                    return Some(ev);
                }
                Read::Pending if self.follow => {
                    if self.rx.changed().await.is_err() {
                        self.done = true;
                        return None;
                    }
                }
                Read::Pending | Read::Done => {
                    self.done = true;
                    return None;
                }
            }
        }
    }
}

impl Drop for Cursor {
    fn drop(&mut self) {
        if self.blocking {
            self.out.detach_consumer();
        }
    }
}

/// Length of an incomplete UTF-8 sequence at the end of `buf` (0..=3), held back so chunks
/// never split a character.
pub fn incomplete_utf8_tail(buf: &[u8]) -> usize {
    for i in 1..=buf.len().min(3) {
        let b = buf[buf.len() - i];
        if b & 0xC0 == 0x80 {
            continue;
        }
        let needed = match b {
            0xF0.. => 4,
            0xE0.. => 3,
            0xC0.. => 2,
            _ => return 0,
        };
        return if needed > i { i } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit() -> ExitInfo {
        ExitInfo {
            status: ExitStatus {
                code: Some(0),
                signal: None,
            },
            timed_out: false,
            finished_at: Utc::now(),
            duration_ms: 1,
        }
    }

    #[tokio::test]
    async fn reads_in_order_and_ends_with_exit() {
        let out = Arc::new(Output::new(100, false));
        out.push(StreamKind::Stdout, Bytes::from_static(b"hello "));
        out.push(StreamKind::Stderr, Bytes::from_static(b"world"));
        out.finish(exit());
        let mut c = Cursor::new(out.clone(), 3, true, false);
        match c.next().await.unwrap() {
            OutputEvent::Data { offset, data, kind } => {
                assert_eq!(
                    (offset, &data[..], kind),
                    (3, &b"lo "[..], StreamKind::Stdout)
                );
            }
            e => panic!("{e:?}"),
        }
        assert!(matches!(
            c.next().await.unwrap(),
            OutputEvent::Data { offset: 6, .. }
        ));
        assert!(matches!(c.next().await.unwrap(), OutputEvent::Exit(_)));
        assert!(c.next().await.is_none());
    }

    #[tokio::test]
    async fn drops_old_chunks_without_consumer() {
        let out = Arc::new(Output::new(10, false));
        for _ in 0..5 {
            out.push(StreamKind::Stdout, Bytes::from_static(b"abcd"));
        }
        let mut c = Cursor::new(out.clone(), 0, false, false);
        match c.next().await.unwrap() {
            OutputEvent::Gap { offset, skipped } => assert_eq!((offset, skipped), (12, 12)),
            e => panic!("{e:?}"),
        }
        assert!(matches!(
            c.next().await.unwrap(),
            OutputEvent::Data { offset: 12, .. }
        ));
        assert!(matches!(
            c.next().await.unwrap(),
            OutputEvent::Data { offset: 16, .. }
        ));
        assert!(c.next().await.is_none(), "no follow: ends without exit");
    }

    #[tokio::test]
    async fn blocking_consumer_keeps_data() {
        let out = Arc::new(Output::new(8, true));
        out.push(StreamKind::Stdout, Bytes::from_static(b"abcdef"));
        assert!(out.has_space(&out.lock()));
        out.push(StreamKind::Stdout, Bytes::from_static(b"ghij"));
        assert!(!out.has_space(&out.lock()));
        let mut c = Cursor::new(out.clone(), 0, true, true);
        assert!(matches!(
            c.next().await.unwrap(),
            OutputEvent::Data { offset: 0, .. }
        ));
        assert!(out.has_space(&out.lock()));
        drop(c);
        assert!(out.lock().consumer.is_none());
    }

    #[test]
    fn utf8_tail() {
        assert_eq!(incomplete_utf8_tail(b"abc"), 0);
        let e = "é".as_bytes();
        assert_eq!(incomplete_utf8_tail(&e[..1]), 1);
        assert_eq!(incomplete_utf8_tail(e), 0);
        let s = "€".as_bytes();
        assert_eq!(incomplete_utf8_tail(&s[..2]), 2);
        assert_eq!(incomplete_utf8_tail(s), 0);
    }
}
