//! Progress lines from a running job, bounded on their way out of the sandbox.
//!
//! A job reports progress by writing lines to a channel its backend gives it: the local
//! backend opens a pipe as the job's fd [`PROGRESS_FD`] and names it in
//! [`PROGRESS_FD_ENV`]; another backend (a pod) may read the same lines from its log. The
//! backend hands that byte stream to [`forward`], which passes each line to the job's sink
//! ([`super::JobSpec::progress`]) within [`ProgressLimits`]:
//!
//! - A line is at most `max_line_bytes` long (the rest, up to its newline, is discarded); it
//!   is decoded as UTF-8 (invalid bytes become U+FFFD), control characters are removed, outer
//!   whitespace is trimmed, and a blank line is skipped. Nothing but these strings leaves.
//! - At most `max_messages` lines reach the sink per job; later ones are dropped.
//! - At most `per_second` lines per second reach the sink (after a burst of `burst`).
//! - The job never waits for the consumer. A line that cannot go at once (the sink is full or
//!   the rate is used up) waits as the one pending line, and a newer line replaces it: the
//!   consumer is *coalesced* to the latest state, never sent a backlog. At the end of the
//!   stream the pending line is offered once more without waiting (and without the rate) and
//!   dropped if the sink is full. The stream is read to its end whatever the sink does.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc::{self, Sender};
use tokio::time::Instant;

/// The job's descriptor for progress lines (local backend).
pub const PROGRESS_FD: i32 = 3;
/// The environment variable that names [`PROGRESS_FD`] inside the job.
pub const PROGRESS_FD_ENV: &str = "PORTCULLIS_PROGRESS_FD";

/// Bounds on what one job's progress may cost the runner and its consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressLimits {
    /// Longest line passed on, in bytes of UTF-8.
    pub max_line_bytes: usize,
    /// Most lines passed on per job.
    pub max_messages: u64,
    /// Sustained lines per second (at least 1).
    pub per_second: u32,
    /// Lines that may go at once before the rate applies (at least 1).
    pub burst: u32,
}

impl Default for ProgressLimits {
    fn default() -> Self {
        ProgressLimits {
            max_line_bytes: 1024,
            max_messages: 1000,
            per_second: 10,
            burst: 10,
        }
    }
}

/// What happened to a job's progress lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProgressStats {
    /// Non-blank lines the job wrote.
    pub lines: u64,
    /// Lines handed to the sink.
    pub delivered: u64,
    /// Pending lines replaced by a newer one (slow consumer or rate).
    pub coalesced: u64,
    /// Lines dropped past `max_messages`, or pending at the end with the sink full.
    pub dropped: u64,
    /// Lines cut at `max_line_bytes`.
    pub truncated: u64,
}

/// Reads `reader` to its end, passing its lines to `sink` within `limits` (see the module
/// docs). Without a sink the lines are read and discarded, so the job behaves the same
/// whether or not anybody listens. A sink whose receiver is gone counts as none.
pub async fn forward<R: AsyncRead + Unpin>(
    mut reader: R,
    sink: Option<Sender<String>>,
    limits: ProgressLimits,
) -> io::Result<ProgressStats> {
    let mut state = Forwarder {
        limits,
        stats: ProgressStats::default(),
        pending: None,
        bucket: Bucket::new(&limits),
    };
    let mut splitter = Splitter::new(limits.max_line_bytes);
    let mut sink = sink;
    let mut chunk = vec![0u8; 8 << 10];
    loop {
        let ready_at = state.bucket.ready_at();
        let deliver = async {
            match &sink {
                Some(tx) if state.pending.is_some() => {
                    tokio::time::sleep_until(ready_at).await;
                    Some(tx.reserve().await)
                }
                _ => std::future::pending().await,
            }
        };
        // Not biased: a job writing without pause must not starve delivery.
        let receiver_gone = tokio::select! {
            read = reader.read(&mut chunk) => {
                let n = read?;
                if n == 0 {
                    break;
                }
                for line in splitter.push(&chunk[..n]) {
                    state.accept(line);
                }
                false
            }
            permit = deliver => match permit {
                Some(Ok(permit)) => {
                    if let Some(line) = state.pending.take() {
                        permit.send(line);
                        state.stats.delivered += 1;
                        state.bucket.take();
                    }
                    false
                }
                _ => true,
            },
        };
        // Nobody listens any more.
        if receiver_gone {
            sink = None;
        }
    }
    if let Some(line) = splitter.finish() {
        state.accept(line);
    }
    state.stats.truncated = splitter.truncated;
    if let Some(line) = state.pending.take() {
        match sink.as_ref().map(|tx| tx.try_send(line)) {
            Some(Ok(())) => state.stats.delivered += 1,
            Some(Err(mpsc::error::TrySendError::Full(_))) => state.stats.dropped += 1,
            Some(Err(mpsc::error::TrySendError::Closed(_))) | None => {}
        }
    }
    Ok(state.stats)
}

struct Forwarder {
    limits: ProgressLimits,
    stats: ProgressStats,
    pending: Option<String>,
    bucket: Bucket,
}

impl Forwarder {
    fn accept(&mut self, line: String) {
        self.stats.lines += 1;
        // A pending line is within the limit already; a newer one may take its place.
        if self.pending.is_none() && self.stats.delivered >= self.limits.max_messages {
            self.stats.dropped += 1;
        } else if self.pending.replace(line).is_some() {
            self.stats.coalesced += 1;
        }
    }
}

/// A token bucket: `burst` tokens, refilled at `per_second`.
struct Bucket {
    tokens: f64,
    burst: f64,
    per_second: f64,
    at: Instant,
}

impl Bucket {
    fn new(limits: &ProgressLimits) -> Bucket {
        let burst = f64::from(limits.burst.max(1));
        Bucket {
            tokens: burst,
            burst,
            per_second: f64::from(limits.per_second.max(1)),
            at: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let earned = now.duration_since(self.at).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.at = now;
    }

    /// When the next token is there (now, if one is).
    fn ready_at(&mut self) -> Instant {
        self.refill();
        if self.tokens >= 1.0 {
            self.at
        } else {
            self.at + std::time::Duration::from_secs_f64((1.0 - self.tokens) / self.per_second)
        }
    }

    fn take(&mut self) {
        self.refill();
        self.tokens = (self.tokens - 1.0).max(0.0);
    }
}

/// Splits a byte stream into cleaned lines, holding at most `max` bytes of a line.
struct Splitter {
    max: usize,
    current: Vec<u8>,
    cut: bool,
    truncated: u64,
}

impl Splitter {
    fn new(max: usize) -> Splitter {
        Splitter {
            max,
            current: Vec::new(),
            cut: false,
            truncated: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for piece in bytes.split_inclusive(|b| *b == b'\n') {
            let (body, complete) = match piece.strip_suffix(b"\n") {
                Some(body) => (body, true),
                None => (piece, false),
            };
            let room = self.max.saturating_sub(self.current.len());
            if body.len() > room {
                self.cut = true;
            }
            self.current
                .extend_from_slice(&body[..body.len().min(room)]);
            if complete {
                lines.extend(self.take());
            }
        }
        lines
    }

    /// The last line, if the stream did not end with a newline.
    fn finish(&mut self) -> Option<String> {
        self.take()
    }

    fn take(&mut self) -> Option<String> {
        let bytes = std::mem::take(&mut self.current);
        let cut = std::mem::replace(&mut self.cut, false);
        let (line, shortened) = clean(&bytes, self.max)?;
        if cut || shortened {
            self.truncated += 1;
        }
        Some(line)
    }
}

/// Lossy UTF-8, control characters removed (tabs become spaces), trimmed, at most `max`
/// bytes (and whether that cut it); `None` when nothing is left.
fn clean(bytes: &[u8], max: usize) -> Option<(String, bool)> {
    let text: String = String::from_utf8_lossy(bytes)
        .chars()
        .filter_map(|c| match c {
            '\t' => Some(' '),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect();
    let mut line = text.trim().to_string();
    // A replacement character for a multi-byte sequence cut at `max` can add a byte or two.
    let shortened = line.len() > max;
    if shortened {
        let mut end = max;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
    }
    (!line.is_empty()).then_some((line, shortened))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn run(
        input: &[u8],
        sink: Option<Sender<String>>,
        limits: ProgressLimits,
    ) -> ProgressStats {
        forward(input, sink, limits).await.unwrap()
    }

    /// A forwarder reading from the returned writer, as a job's pipe would be read.
    fn spawn_forward(
        tx: Sender<String>,
        limits: ProgressLimits,
    ) -> (
        tokio::io::DuplexStream,
        tokio::task::JoinHandle<io::Result<ProgressStats>>,
    ) {
        let (w, r) = tokio::io::duplex(1 << 16);
        (w, tokio::spawn(forward(r, Some(tx), limits)))
    }

    fn drain(rx: &mut mpsc::Receiver<String>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(line) = rx.try_recv() {
            out.push(line);
        }
        out
    }

    #[test]
    fn lines_are_cleaned_cut_and_blank_ones_skipped() {
        let mut splitter = Splitter::new(8);
        let input = b"one\r\n\n \t \n\x1b[31mred\x1b[0m\nabcdefghijkl\n\xff\xfe ok\nh\xc3\xa9h\xc3\xa9h\xc3\xa9\nlast";
        // In pieces that split lines and characters.
        let mut lines = Vec::new();
        for piece in input.chunks(5) {
            lines.extend(splitter.push(piece));
        }
        lines.extend(splitter.finish());
        assert_eq!(
            lines,
            [
                "one",
                "[31mred",
                "abcdefgh",
                "\u{fffd}\u{fffd} o",
                "h\u{e9}h\u{e9}h",
                "last"
            ]
        );
        assert_eq!(splitter.truncated, 4);
    }

    /// Lines that arrive one at a time reach a listening consumer one by one.
    #[tokio::test]
    async fn each_line_is_one_message() {
        let (tx, mut rx) = mpsc::channel(16);
        let (mut w, task) = spawn_forward(tx, ProgressLimits::default());
        for i in 0..3 {
            w.write_all(format!("step {i}\n").as_bytes()).await.unwrap();
            assert_eq!(
                rx.recv().await.as_deref(),
                Some(format!("step {i}").as_str())
            );
        }
        drop(w);
        let stats = task.await.unwrap().unwrap();
        assert_eq!(
            stats,
            ProgressStats {
                lines: 3,
                delivered: 3,
                ..ProgressStats::default()
            }
        );
    }

    /// A consumer that does not read: the reader still reaches the end, the sink holds what
    /// fits plus nothing more, and everything else was coalesced or dropped.
    #[tokio::test]
    async fn a_full_sink_never_stops_the_reader() {
        let (tx, mut rx) = mpsc::channel(2);
        let input: String = (0..10_000).map(|i| format!("step {i}\n")).collect();
        let stats = run(input.as_bytes(), Some(tx), ProgressLimits::default()).await;
        let lines = drain(&mut rx);
        assert!(lines.len() <= 2, "{lines:?}");
        assert_eq!(stats.lines, 10_000);
        assert_eq!(stats.delivered, lines.len() as u64, "{stats:?}");
        assert_eq!(
            stats.delivered + stats.coalesced + stats.dropped,
            stats.lines,
            "{stats:?}"
        );
    }

    /// At most `max_messages` lines reach even an eager consumer; the rest are dropped.
    #[tokio::test]
    async fn at_most_max_messages_reach_the_sink() {
        let (tx, mut rx) = mpsc::channel(1000);
        let limits = ProgressLimits {
            max_messages: 5,
            per_second: 1000,
            burst: 1000,
            ..ProgressLimits::default()
        };
        let (mut w, task) = spawn_forward(tx, limits);
        for i in 0..100 {
            w.write_all(format!("{i}\n").as_bytes()).await.unwrap();
            if i < 5 {
                assert_eq!(rx.recv().await, Some(i.to_string()));
            }
        }
        drop(w);
        let stats = task.await.unwrap().unwrap();
        assert_eq!(rx.recv().await, None, "nothing past the limit");
        assert_eq!(
            stats,
            ProgressStats {
                lines: 100,
                delivered: 5,
                dropped: 95,
                ..ProgressStats::default()
            }
        );
    }

    /// The rate holds in virtual time: a burst, then `per_second`; the lines between are
    /// coalesced into the latest one.
    #[tokio::test(start_paused = true)]
    async fn the_rate_coalesces_to_the_latest_line() {
        let (tx, mut rx) = mpsc::channel(1000);
        let limits = ProgressLimits {
            per_second: 2,
            burst: 1,
            ..ProgressLimits::default()
        };
        let (mut w, task) = spawn_forward(tx, limits);
        for i in 0..10 {
            w.write_all(format!("{i}\n").as_bytes()).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        drop(w);
        let stats = task.await.unwrap().unwrap();
        let lines: Vec<u32> = drain(&mut rx).iter().map(|l| l.parse().unwrap()).collect();
        // One second at 2/s after a burst of 1, plus the pending line at the end.
        assert!(lines.len() <= 4, "{lines:?}");
        assert_eq!(lines.first(), Some(&0));
        assert_eq!(
            lines.last(),
            Some(&9),
            "the latest line is never lost: {lines:?}"
        );
        assert_eq!(
            stats.delivered + stats.coalesced + stats.dropped,
            10,
            "{stats:?}"
        );
    }

    #[tokio::test]
    async fn without_a_sink_everything_is_read() {
        let input: String = (0..1000).map(|i| format!("{i}\n")).collect();
        let stats = run(input.as_bytes(), None, ProgressLimits::default()).await;
        assert_eq!(stats.lines, 1000);
        assert_eq!(stats.delivered, 0);
    }
}
