//! Reading a JSON Lines file from its end: the last record (to recover the chain's head) and
//! the last record of some kind (the ingester's offset), without reading the whole file.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

const CHUNK: u64 = 64 * 1024;

/// The complete lines of `file[..end]`, last first, each with its byte offset (without its
/// `\n`). `end` must be 0 or just after a `\n`.
pub(crate) struct RevLines<'a> {
    file: &'a File,
    /// `buf` holds the file's bytes `[buf_start, buf_start + buf.len())`, ending in `\n`.
    buf: Vec<u8>,
    buf_start: u64,
}

impl<'a> RevLines<'a> {
    pub(crate) fn new(file: &'a File, end: u64) -> Self {
        Self { file, buf: Vec::new(), buf_start: end }
    }

    fn fill(&mut self) -> io::Result<()> {
        let n = CHUNK.min(self.buf_start);
        let start = self.buf_start - n;
        let mut chunk = vec![0u8; n as usize];
        self.file.read_exact_at(&mut chunk, start)?;
        chunk.extend_from_slice(&self.buf);
        self.buf = chunk;
        self.buf_start = start;
        Ok(())
    }
}

impl Iterator for RevLines<'_> {
    type Item = io::Result<(u64, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.buf.is_empty() && self.buf_start == 0 {
                return None;
            }
            // The current line ends at the buffer's last byte (its `\n`).
            let body_end = self.buf.len().saturating_sub(1);
            let previous_newline = self.buf.get(..body_end).and_then(|b| b.iter().rposition(|&c| c == b'\n'));
            match previous_newline {
                Some(i) => {
                    let line = self.buf.get(i + 1..body_end).unwrap_or_default().to_vec();
                    self.buf.truncate(i + 1);
                    return Some(Ok((self.buf_start + i as u64 + 1, line)));
                }
                None if self.buf_start == 0 => {
                    let line = self.buf.get(..body_end).unwrap_or_default().to_vec();
                    self.buf.clear();
                    return Some(Ok((0, line)));
                }
                None => {
                    if let Err(e) = self.fill() {
                        self.buf.clear();
                        self.buf_start = 0;
                        return Some(Err(e));
                    }
                }
            }
        }
    }
}

/// The length of `file`'s complete lines: its length, or less when its last line has no `\n`
/// (a write cut short by a crash).
pub(crate) fn complete_len(file: &File, len: u64) -> io::Result<u64> {
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let mut chunk = vec![0u8; (end - start) as usize];
        file.read_exact_at(&mut chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|&c| c == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    #[test]
    fn lines_come_last_first_with_offsets() {
        let long = "x".repeat(200_000);
        let text = format!("a\n\n{long}\nbc\n");
        let f = file_with(text.as_bytes());
        let lines: Vec<(u64, Vec<u8>)> = RevLines::new(&f, text.len() as u64).map(Result::unwrap).collect();
        let want = vec![(200_004, b"bc".to_vec()), (3, long.into_bytes()), (2, b"".to_vec()), (0, b"a".to_vec())];
        assert_eq!(lines, want);
        assert_eq!(RevLines::new(&f, 0).count(), 0);
    }

    #[test]
    fn a_torn_last_line_is_not_complete() {
        let f = file_with(b"one\ntwo\nthr");
        assert_eq!(complete_len(&f, 11).unwrap(), 8);
        let f = file_with(b"no newline at all");
        assert_eq!(complete_len(&f, 17).unwrap(), 0);
        let f = file_with(b"ok\n");
        assert_eq!(complete_len(&f, 3).unwrap(), 3);
    }
}
