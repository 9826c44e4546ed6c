//! One expect engine for any byte stream: a streaming matcher with a
//! bounded search window, timeout and EOF as outcomes, ANSI and `\r\n`
//! normalization, and a transcript of what was read and sent.

pub mod normalize;
mod patterns;
mod transport;

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

pub use normalize::Normalizer;
pub use patterns::{Found, Pattern, PatternSet};
pub use transport::{wait_readable, FdTransport, ReadResult, Transport};

/// Tuning of an [`Expecter`].
#[derive(Debug, Clone, Copy)]
pub struct ExpectOptions {
    /// How much unmatched output is kept (for `before` and error messages).
    pub window: usize,
    /// The longest match that may straddle two reads; each read is searched
    /// together with this many bytes before it.
    pub lookback: usize,
    /// Remove ANSI escapes and turn `\r\n` into `\n` before matching.
    pub normalize: bool,
}

impl Default for ExpectOptions {
    fn default() -> Self {
        // A 2 KiB lookback is Tcl expect's match_max: prompts and markers
        // are far shorter.
        Self {
            window: 256 * 1024,
            lookback: 2 * 1024,
            normalize: true,
        }
    }
}

/// A successful match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    /// Index of the pattern that matched.
    pub index: usize,
    /// Output between the previous match and this one (at most `window` bytes).
    pub before: String,
    pub matched: String,
    pub captures: Vec<Option<String>>,
}

/// How an `expect` call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Matched(Matched),
    /// Nothing matched within the timeout; `tail` is the last output seen.
    Timeout {
        waited: Duration,
        tail: String,
    },
    /// The stream ended; `before` is what came after the last match.
    Eof {
        before: String,
    },
}

/// Drives one transport.
pub struct Expecter<T: Transport> {
    transport: T,
    opts: ExpectOptions,
    buf: Vec<u8>,
    searched: usize,
    normalizer: Normalizer,
    chunk: Vec<u8>,
    eof: bool,
    transcript: Option<BufWriter<File>>,
    /// Secrets masked out of the transcript (what `login` and `send` of a
    /// secret sent, and anything the other side echoes back).
    masker: drydock_runtime::secrets::Secrets,
    /// Holds back the tail of what was read until it cannot be the start
    /// of a secret completed by the next read.
    stream_mask: drydock_runtime::secrets::StreamMask,
    bytes_read: u64,
}

impl<T: Transport> Drop for Expecter<T> {
    /// The transcript's held-back tail, masked.
    fn drop(&mut self) {
        if let Some(t) = &mut self.transcript {
            let _ = t.write_all(&self.stream_mask.finish(&self.masker));
            let _ = t.flush();
        }
    }
}

impl<T: Transport> Expecter<T> {
    pub fn new(transport: T, opts: ExpectOptions) -> Self {
        Self {
            transport,
            opts,
            buf: Vec::new(),
            searched: 0,
            normalizer: Normalizer::default(),
            chunk: vec![0u8; 64 * 1024],
            eof: false,
            transcript: None,
            masker: drydock_runtime::secrets::Secrets::new(),
            stream_mask: Default::default(),
            bytes_read: 0,
        }
    }

    /// Records everything read (raw) and sent (marked) in `path`, with
    /// the execution's secrets masked.
    pub fn record_transcript(
        &mut self,
        path: &Path,
        secrets: &drydock_runtime::secrets::Secrets,
    ) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        self.transcript = Some(BufWriter::new(f));
        self.masker = secrets.clone();
        Ok(())
    }

    pub fn describe(&self) -> String {
        self.transport.describe()
    }

    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Bytes read from the stream so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Sends bytes.
    pub fn send(&mut self, data: &[u8]) -> io::Result<()> {
        if let Some(t) = &mut self.transcript {
            writeln!(
                t,
                "\n--- sent {} bytes: {:?} ---",
                data.len(),
                self.masker.mask(&String::from_utf8_lossy(data))
            )?;
            t.flush()?;
        }
        self.transport.send(data)
    }

    /// The last `n` lines of output not yet consumed by a match.
    pub fn tail_lines(&self, n: usize) -> String {
        let text = String::from_utf8_lossy(&self.buf);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Drops output not consumed yet (e.g. before sending a command).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.searched = 0;
    }

    /// Reads until one of `patterns` matches, the stream ends, or `timeout` passes.
    pub fn expect(&mut self, patterns: &PatternSet, timeout: Duration) -> io::Result<Outcome> {
        let start = Instant::now();
        self.searched = 0;
        loop {
            let from = self.searched.saturating_sub(self.opts.lookback);
            if let Some(found) = patterns.find_from(&self.buf, from) {
                return Ok(Outcome::Matched(self.take_match(found)));
            }
            self.searched = self.buf.len();
            if self.eof {
                let before = String::from_utf8_lossy(&self.buf).into_owned();
                self.clear();
                return Ok(Outcome::Eof { before });
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Ok(Outcome::Timeout {
                    waited: start.elapsed(),
                    tail: self.tail_lines(10),
                });
            }
            match self.transport.read_timeout(&mut self.chunk, left)? {
                ReadResult::Data(n) => self.absorb(n)?,
                ReadResult::Eof => self.eof = true,
                ReadResult::Timeout => {}
            }
        }
    }

    fn absorb(&mut self, n: usize) -> io::Result<()> {
        self.bytes_read += n as u64;
        if let Some(t) = &mut self.transcript {
            t.write_all(&self.stream_mask.push(&self.masker, &self.chunk[..n]))?;
        }
        if self.opts.normalize {
            self.normalizer.push(&self.chunk[..n], &mut self.buf);
        } else {
            self.buf.extend_from_slice(&self.chunk[..n]);
        }
        // Keep memory flat: past twice the window, drop the oldest output
        // (amortized: each byte is moved at most once).
        if self.buf.len() > 2 * self.opts.window {
            let drop = self.buf.len() - self.opts.window;
            self.buf.drain(..drop);
            self.searched = self.searched.saturating_sub(drop);
        }
        Ok(())
    }

    fn take_match(&mut self, found: Found) -> Matched {
        let before = String::from_utf8_lossy(&self.buf[..found.start]).into_owned();
        let matched = String::from_utf8_lossy(&self.buf[found.start..found.end]).into_owned();
        self.buf.drain(..found.end);
        self.searched = 0;
        Matched {
            index: found.pattern,
            before,
            matched,
            captures: found.captures,
        }
    }
}

impl<T: Transport> Expecter<T> {
    /// Bytes of output held right now (bounded by twice the window).
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn pair() -> (Expecter<FdTransport<UnixStream>>, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        (
            Expecter::new(FdTransport::new(a, "test stream"), ExpectOptions::default()),
            b,
        )
    }

    fn set(p: &[&str]) -> PatternSet {
        PatternSet::new(
            &p.iter()
                .map(|s| Pattern::Regex(s.to_string()))
                .collect::<Vec<_>>(),
        )
        .unwrap()
    }

    #[test]
    fn a_pattern_split_across_reads_matches() {
        let (mut ex, mut peer) = pair();
        let writer = std::thread::spawn(move || {
            peer.write_all(b"Debian GNU/Linux\r\nbox log").unwrap();
            std::thread::sleep(Duration::from_millis(50));
            peer.write_all(b"in: ").unwrap();
            peer
        });
        let out = ex
            .expect(&set(&["login: "]), Duration::from_secs(5))
            .unwrap();
        let Outcome::Matched(m) = out else {
            panic!("{out:?}")
        };
        assert_eq!(m.before, "Debian GNU/Linux\nbox ");
        assert_eq!(m.matched, "login: ");
        drop(writer.join());
    }

    #[test]
    fn the_earliest_of_several_matches_wins_and_the_rest_stays() {
        let (mut ex, mut peer) = pair();
        peer.write_all(b"\x1b[0mPassword: then login: ").unwrap();
        let out = ex
            .expect(&set(&["login: ", "Password: "]), Duration::from_secs(5))
            .unwrap();
        let Outcome::Matched(m) = out else {
            panic!("{out:?}")
        };
        assert_eq!(m.index, 1);
        let out = ex
            .expect(&set(&["login: "]), Duration::from_secs(5))
            .unwrap();
        let Outcome::Matched(m) = out else {
            panic!("{out:?}")
        };
        assert_eq!(m.before, "then ");
    }

    #[test]
    fn timeout_and_eof_are_outcomes() {
        let (mut ex, mut peer) = pair();
        peer.write_all(b"booting...\nstill booting\n").unwrap();
        let out = ex
            .expect(&set(&["login:"]), Duration::from_millis(200))
            .unwrap();
        match out {
            Outcome::Timeout { waited, tail } => {
                assert!(waited >= Duration::from_millis(200));
                assert!(tail.contains("still booting"), "{tail}");
            }
            other => panic!("{other:?}"),
        }
        peer.write_all(b"kernel panic").unwrap();
        drop(peer);
        let out = ex
            .expect(&set(&["login:"]), Duration::from_secs(5))
            .unwrap();
        assert_eq!(
            out,
            Outcome::Eof {
                before: "booting...\nstill booting\nkernel panic".into()
            }
        );
    }

    #[test]
    fn a_hundred_megabytes_without_a_match_keep_memory_flat() {
        let (mut ex, mut peer) = pair();
        let writer = std::thread::spawn(move || {
            let line = b"[   12.345678] systemd[1]: Started Some Service That Logs A Lot.\r\n";
            let block: Vec<u8> = line.iter().cycle().take(1 << 20).copied().collect();
            for _ in 0..100 {
                peer.write_all(&block).unwrap();
            }
            peer.write_all(b"\r\nfinally login: ").unwrap();
        });
        let patterns = set(&["never-a", "login: ", "never-b"]);
        let mut max = 0;
        loop {
            let out = ex.expect(&patterns, Duration::from_millis(50)).unwrap();
            max = max.max(ex.buffered_bytes());
            match out {
                Outcome::Matched(m) => {
                    assert_eq!(m.index, 1);
                    assert!(m.before.len() <= 2 * ExpectOptions::default().window);
                    break;
                }
                Outcome::Timeout { .. } => continue,
                Outcome::Eof { .. } => panic!("stream ended without a match"),
            }
        }
        writer.join().unwrap();
        assert!(ex.bytes_read() > 100 << 20);
        assert!(
            max <= 2 * ExpectOptions::default().window + 64 * 1024,
            "held {max} bytes"
        );
    }
}
