//! From a step's raw output to the lines that leave the runner: split into lines, secrets
//! masked, and capped in size.
//!
//! Masking works on whole lines, so a secret written in two pieces is joined before it is
//! looked for. A line too long to hold is emitted in pieces, but never cut inside or right
//! before a possible secret: the last `longest secret - 1` bytes always wait for more output.

use std::collections::VecDeque;

/// What replaces every secret.
pub const MASK: &str = "********";

/// One line of a step's log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogLine {
    /// 1-based; lines cut by the size cap leave a gap.
    pub number: u64,
    /// Milliseconds since the step started.
    pub elapsed_ms: u64,
    pub text: String,
}

/// Finds and replaces secret values, in the forms a step might print them: as they are, each
/// line of a multi-line secret, base64, and URL-encoded.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    patterns: Vec<Vec<u8>>,
    first_bytes: Vec<bool>,
    longest: usize,
}

impl Masker {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        let mut add = |p: &str| {
            let p = p.trim_end_matches('\r');
            if !p.is_empty() && !patterns.iter().any(|q| q == p.as_bytes()) {
                patterns.push(p.as_bytes().to_vec());
            }
        };
        for secret in secrets {
            add(secret);
            if secret.contains('\n') {
                secret
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .for_each(&mut add);
            }
            if !secret.is_empty() {
                add(&base64(secret.as_bytes()));
                add(base64(secret.as_bytes()).trim_end_matches('='));
                add(&url_encode(secret));
            }
        }
        // Longest first, so a secret that contains another is masked whole.
        patterns.sort_by_key(|p| std::cmp::Reverse(p.len()));
        let mut first_bytes = vec![false; 256];
        for p in &patterns {
            first_bytes[usize::from(p[0])] = true;
        }
        let longest = patterns.first().map_or(0, Vec::len);
        Self {
            patterns,
            first_bytes,
            longest,
        }
    }

    /// How many trailing bytes could be the start of a secret that continues in the next write.
    pub fn holdback(&self) -> usize {
        self.longest.saturating_sub(1)
    }

    fn match_at(&self, text: &[u8], i: usize) -> Option<usize> {
        if !self.first_bytes[usize::from(text[i])] {
            return None;
        }
        self.patterns
            .iter()
            .find(|p| text[i..].starts_with(p))
            .map(Vec::len)
    }

    /// Replaces every secret in `text`.
    pub fn mask(&self, text: &[u8]) -> Vec<u8> {
        if self.patterns.is_empty() {
            return text.to_vec();
        }
        let mut out = Vec::with_capacity(text.len());
        let mut i = 0;
        while i < text.len() {
            match self.match_at(text, i) {
                Some(len) => {
                    out.extend_from_slice(MASK.as_bytes());
                    i += len;
                }
                None => {
                    out.push(text[i]);
                    i += 1;
                }
            }
        }
        out
    }

    /// The largest cut at or before `cut` that does not split a secret found in `text`.
    fn safe_cut(&self, text: &[u8], cut: usize) -> usize {
        let mut i = 0;
        while i < cut {
            match self.match_at(text, i) {
                Some(len) if i + len > cut => return i,
                Some(len) => i += len,
                None => i += 1,
            }
        }
        cut
    }
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (k, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if k <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Splits output into lines and masks them. Feed it chunks as they arrive; it hands out
/// complete, masked lines (without their `\n`).
#[derive(Debug)]
pub struct LineSplitter {
    buffer: Vec<u8>,
    max_line: usize,
    masker: Masker,
}

impl LineSplitter {
    pub fn new(masker: Masker, max_line: usize) -> Self {
        Self {
            buffer: Vec::new(),
            max_line: max_line.max(masker.holdback() + 1).max(16),
            masker,
        }
    }

    pub fn push(&mut self, chunk: &[u8], out: &mut impl FnMut(String)) {
        self.buffer.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(offset) = self.buffer[start..].iter().position(|&b| b == b'\n') {
            let end = start + offset;
            let line = &self.buffer[start..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            // The whole line is known: mask it first, then cutting cannot expose a secret.
            let masked = self.masker.mask(line);
            let mut piece = masked.as_slice();
            while piece.len() > self.max_line {
                let mut cut = self.max_line;
                while cut > 0 && (piece[cut] & 0xC0) == 0x80 {
                    cut -= 1;
                }
                out(text(&piece[..cut]));
                piece = &piece[cut..];
            }
            out(text(piece));
            start = end + 1;
        }
        self.buffer.drain(..start);
        while self.buffer.len() > self.max_line {
            let mut cut = self.buffer.len() - self.masker.holdback();
            cut = self.masker.safe_cut(&self.buffer, cut.min(self.max_line));
            while cut > 0 && cut < self.buffer.len() && (self.buffer[cut] & 0xC0) == 0x80 {
                cut -= 1;
            }
            if cut == 0 {
                break;
            }
            out(text(&self.masker.mask(&self.buffer[..cut])));
            self.buffer.drain(..cut);
        }
    }

    /// The last line, if the output did not end with `\n`.
    pub fn finish(&mut self, out: &mut impl FnMut(String)) {
        if !self.buffer.is_empty() {
            let rest = std::mem::take(&mut self.buffer);
            out(text(&self.masker.mask(&rest)));
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Caps a step's log: past `limit` bytes it keeps the head (first half) and the tail (last
/// half), and says how much was cut between them.
#[derive(Debug)]
pub struct LogCap {
    limit: u64,
    head_bytes: u64,
    tail: VecDeque<LogLine>,
    tail_bytes: u64,
    cut_lines: u64,
    cut_bytes: u64,
}

impl LogCap {
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            head_bytes: 0,
            tail: VecDeque::new(),
            tail_bytes: 0,
            cut_lines: 0,
            cut_bytes: 0,
        }
    }

    /// Returns the line if it is to be sent now; lines of the tail wait for `finish`.
    pub fn admit(&mut self, line: LogLine) -> Option<LogLine> {
        let size = line.text.len() as u64 + 1;
        if self.head_bytes + size <= self.limit / 2 && self.tail.is_empty() {
            self.head_bytes += size;
            return Some(line);
        }
        self.tail_bytes += size;
        self.tail.push_back(line);
        while self.tail_bytes > self.limit / 2 {
            let Some(dropped) = self.tail.pop_front() else {
                break;
            };
            let size = dropped.text.len() as u64 + 1;
            self.tail_bytes -= size;
            self.cut_lines += 1;
            self.cut_bytes += size;
        }
        None
    }

    /// The tail, preceded by a line that says what was cut, if anything was.
    pub fn finish(&mut self, elapsed_ms: u64) -> Vec<LogLine> {
        let mut out = Vec::with_capacity(self.tail.len() + 1);
        if self.cut_lines > 0 {
            let first_kept = self.tail.front().map_or(0, |l| l.number);
            out.push(LogLine {
                number: first_kept.saturating_sub(1),
                elapsed_ms,
                text: format!(
                    "[gantry] {} lines ({} bytes) cut here: a step's log keeps its first and last {} bytes",
                    self.cut_lines,
                    self.cut_bytes,
                    self.limit / 2
                ),
            });
        }
        out.extend(self.tail.drain(..));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(masker: Masker, max_line: usize, chunks: &[&[u8]]) -> Vec<String> {
        let mut splitter = LineSplitter::new(masker, max_line);
        let mut lines = Vec::new();
        for chunk in chunks {
            splitter.push(chunk, &mut |l| lines.push(l));
        }
        splitter.finish(&mut |l| lines.push(l));
        lines
    }

    #[test]
    fn splits_lines_across_writes_and_strips_cr() {
        assert_eq!(
            split(Masker::default(), 1024, &[b"a\r\nb", b"c\nd"]),
            ["a", "bc", "d"]
        );
        assert_eq!(split(Masker::default(), 1024, &[b"\n\n"]), ["", ""]);
    }

    #[test]
    fn masks_secrets_split_across_writes() {
        let masker = Masker::new(["hunter2secret"]);
        let lines = split(masker, 1024, &[b"token=hunt", b"er2sec", b"ret end\n"]);
        assert_eq!(lines, ["token=******** end"]);
    }

    #[test]
    fn masks_multiline_base64_and_url_forms() {
        let masker = Masker::new([
            "-----BEGIN KEY-----\nabc123xyz\n-----END KEY-----",
            "p@ss w/rd",
        ]);
        let out = split(
            masker,
            1024,
            &[
                b"-----BEGIN KEY-----\nabc123xyz\n-----END KEY-----\n",
                b"url=p%40ss%20w%2Frd b64=cEBzcyB3L3Jk\n",
            ],
        );
        assert_eq!(
            out,
            [
                "********",
                "********",
                "********",
                "url=******** b64=********"
            ]
        );
    }

    #[test]
    fn long_lines_are_cut_but_never_inside_or_before_a_secret() {
        let secret = "S3CR3TVALUE";
        let masker = Masker::new([secret]);
        let mut input = "x".repeat(30).into_bytes();
        input.extend_from_slice(b"S3CR3T");
        let mut rest = b"VALUE".to_vec();
        rest.extend_from_slice(&"y".repeat(40).into_bytes());
        rest.push(b'\n');
        let lines = split(masker, 32, &[&input, &rest]);
        let joined = lines.concat();
        assert!(!joined.contains("S3CR3T"), "{lines:?}");
        assert!(joined.contains(MASK), "{lines:?}");
        for line in &lines {
            assert!(line.len() <= 40, "{lines:?}");
        }
    }

    #[test]
    fn binary_output_does_not_break_anything() {
        let lines = split(
            Masker::new(["abc"]),
            8,
            &[&[0xff, 0xfe, 0, 1, 2, 0xc3], &[0xa9, b'\n']],
        );
        assert_eq!(lines.concat(), "\u{fffd}\u{fffd}\u{0}\u{1}\u{2}é");
    }

    #[test]
    fn cap_keeps_head_and_tail_and_says_what_was_cut() {
        let mut cap = LogCap::new(40);
        let mut sent = Vec::new();
        for n in 1..=20u64 {
            let line = LogLine {
                number: n,
                elapsed_ms: 0,
                text: format!("line {n:02}"),
            };
            sent.extend(cap.admit(line));
        }
        sent.extend(cap.finish(5));
        let texts: Vec<&str> = sent.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts[..2], ["line 01", "line 02"]);
        assert!(
            texts[2].starts_with("[gantry] 16 lines (128 bytes) cut here"),
            "{texts:?}"
        );
        assert_eq!(texts[3..], ["line 19", "line 20"]);
        let mut small = LogCap::new(1000);
        assert!(
            small
                .admit(LogLine {
                    number: 1,
                    elapsed_ms: 0,
                    text: "x".into()
                })
                .is_some()
        );
        assert!(small.finish(0).is_empty());
    }
}
