//! Step logs, stored in chunks of consecutive lines (one chunk per batch a runner sends),
//! never one row per line: appending is one insert, reading a page touches the few chunks
//! that hold it, and deleting a step's log deletes a handful of rows.

use std::sync::Arc;

use gantry_proto::LogLine;
use serde::Serialize;

use crate::queue::LeaseError;
use crate::{Result, Store, StoreError, db};

/// A stored line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredLine {
    pub number: u64,
    pub elapsed_ms: u64,
    pub text: String,
}

/// The highest line number a step's log may have: far beyond any log (a runner caps a step's
/// output long before), within what the database's `BIGINT` and a browser's numbers hold
/// exactly. A number read from a request is brought within it before it reaches SQL, where
/// one cast to a negative `BIGINT` would make a reader loop for ever.
pub const MAX_LINE_NUMBER: u64 = 1 << 53;

/// The chunks that hold line `$2` or later: the range starts at the one holding `$2`, found
/// through the primary key (step, first line), so that a long log's thousands of chunks
/// before it are not looked at one by one.
const FROM_CHUNK: &str = "first_line >= COALESCE((SELECT MAX(c.first_line) FROM log_chunks c \
     WHERE c.step_id = $1 AND c.first_line <= $2), 0) AND first_line + line_count > $2";

/// What one window of a log search found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogSearch {
    /// Matching lines, in order: their numbers and text.
    pub matches: Vec<(u64, String)>,
    /// Where to go on from when the window ended before the log did (a bound was reached).
    pub next: Option<u64>,
    /// The last line the window looked at (0 when it looked at none).
    pub searched_to: u64,
}

/// How far one window of a search may go.
#[derive(Debug, Clone, Copy)]
pub struct SearchBounds {
    pub max_matches: usize,
    pub max_lines: u64,
}

/// Finds lines in a run of lines joined by `\n`.
pub trait LineMatcher: Sync {
    /// The matching lines of `text`, in order: each line's index in it (from 0) and its text.
    fn matching_lines<'t>(&self, text: &'t str) -> Vec<(usize, &'t str)>;
}

/// Where line `index` (from 0) of `text` starts, if it has that many lines.
fn line_start(text: &str, index: usize) -> Option<usize> {
    if index == 0 {
        return Some(0);
    }
    text.match_indices('\n')
        .nth(index - 1)
        .map(|(at, _)| at + 1)
}

/// The first `max` lines of `text` (all of them when it has fewer), and how many they are.
fn first_lines(text: &str, max: u64) -> (&str, u64) {
    let mut count = 1;
    for (at, _) in text.match_indices('\n') {
        if count == max {
            return (&text[..at], count);
        }
        count += 1;
    }
    (text, count)
}

/// Splits lines into runs of consecutive numbers (a capped log jumps from head to tail).
fn runs(lines: &[LogLine]) -> Vec<&[LogLine]> {
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..=lines.len() {
        if i == lines.len() || lines[i].number != lines[i - 1].number + 1 {
            if start < i {
                runs.push(&lines[start..i]);
            }
            start = i;
        }
    }
    runs
}

impl Store {
    /// Appends lines to a leased stage's step. Lines already stored (a batch sent again)
    /// are kept as they were.
    pub async fn append_logs(
        &self,
        stage: i64,
        epoch: i64,
        step: &str,
        lines: &[LogLine],
    ) -> Result<(), LeaseError> {
        let step_id: Option<i64> = db::query_scalar(
            "SELECT st.id FROM steps st JOIN stages s ON s.id = st.stage_id \
             WHERE s.id = $1 AND s.lease_epoch = $2 AND s.status = 'running' AND st.name = $3",
        )
        .bind(stage)
        .bind(epoch)
        .bind(step)
        .fetch_optional(&self.pool)
        .await?;
        let Some(step_id) = step_id else {
            self.lease_cancelled(stage, epoch).await?;
            return Err(LeaseError::NoSuchStep {
                stage,
                step: step.to_owned(),
            });
        };
        if let Some(line) = lines
            .iter()
            .find(|l| !(1..=MAX_LINE_NUMBER).contains(&l.number))
        {
            return Err(LeaseError::LineOutOfRange {
                step: step.to_owned(),
                number: line.number,
            });
        }
        self.insert_chunks(step_id, lines).await?;
        self.publish(crate::Event::LinesStored {
            stage,
            step: step.to_owned(),
            lines: Some(Arc::from(lines)),
        })
        .await;
        Ok(())
    }

    pub(crate) async fn insert_chunks(&self, step_id: i64, lines: &[LogLine]) -> Result<()> {
        for run in runs(lines) {
            let text = run
                .iter()
                .map(|l| l.text.as_str())
                .collect::<Vec<_>>()
                .join("\n");
            let times =
                serde_json::to_string(&run.iter().map(|l| l.elapsed_ms).collect::<Vec<_>>())
                    .expect("numbers serialise");
            db::query(
                "INSERT INTO log_chunks (step_id, first_line, line_count, text, times) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (step_id, first_line) DO NOTHING",
            )
            .bind(step_id)
            .bind(run[0].number as i64)
            .bind(run.len() as i64)
            .bind(text)
            .bind(times)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())?;
        }
        Ok(())
    }

    /// Lines numbered `from` and after, at most `limit`, in order.
    pub async fn read_log(&self, step_id: i64, from: u64, limit: usize) -> Result<Vec<StoredLine>> {
        let mut out = Vec::new();
        let mut next = from.clamp(1, MAX_LINE_NUMBER + 1);
        while out.len() < limit {
            // A page needs few chunks: each may hold a thousand lines or more.
            let sql = sqlx::AssertSqlSafe(format!(
                "SELECT first_line, line_count, text, times FROM log_chunks \
                 WHERE step_id = $1 AND {FROM_CHUNK} ORDER BY first_line LIMIT 4"
            ));
            let chunks: Vec<(i64, i64, String, String)> = db::query_as(sql)
                .bind(step_id)
                .bind(next as i64)
                .fetch_all(&self.pool)
                .await?;
            if chunks.is_empty() {
                break;
            }
            for (first, _count, text, times) in chunks {
                let times: Vec<u64> = serde_json::from_str(&times)
                    .map_err(|e| StoreError::corrupt("log line times", e))?;
                for (i, line) in text.split('\n').enumerate() {
                    let number = first as u64 + i as u64;
                    if number < next || out.len() >= limit {
                        continue;
                    }
                    out.push(StoredLine {
                        number,
                        elapsed_ms: times.get(i).copied().unwrap_or(0),
                        text: line.to_owned(),
                    });
                    next = number + 1;
                }
            }
        }
        Ok(out)
    }

    /// Lines from `from` on that `matcher` finds, in order, within `bounds`: a search of a
    /// long log goes window by window, each reading a bounded part of it. The matcher sees a
    /// chunk's lines at once (joined by `\n`), so a fast search runs over whole chunks.
    pub async fn search_log(
        &self,
        step_id: i64,
        from: u64,
        bounds: SearchBounds,
        matcher: &dyn LineMatcher,
    ) -> Result<LogSearch> {
        let mut found = LogSearch::default();
        let mut next = from.clamp(1, MAX_LINE_NUMBER + 1);
        let mut looked = 0u64;
        loop {
            let sql = sqlx::AssertSqlSafe(format!(
                "SELECT first_line, text FROM log_chunks \
                 WHERE step_id = $1 AND {FROM_CHUNK} ORDER BY first_line LIMIT 16"
            ));
            let chunks: Vec<(i64, String)> = db::query_as(sql)
                .bind(step_id)
                .bind(next as i64)
                .fetch_all(&self.pool)
                .await?;
            if chunks.is_empty() {
                return Ok(found);
            }
            for (first, text) in chunks {
                if looked >= bounds.max_lines {
                    found.next = Some(next);
                    return Ok(found);
                }
                // This chunk's lines from `next` on, as many as the window may still read.
                let from_line = next.max(first as u64);
                let skip = (from_line - first as u64) as usize;
                let Some(start) = line_start(&text, skip) else {
                    continue;
                };
                let (part, count) = first_lines(&text[start..], bounds.max_lines - looked);
                for (index, line) in matcher.matching_lines(part) {
                    let number = from_line + index as u64;
                    if found.matches.len() >= bounds.max_matches {
                        found.next = Some(number);
                        return Ok(found);
                    }
                    found.matches.push((number, line.to_owned()));
                    found.searched_to = number;
                }
                looked += count;
                found.searched_to = from_line + count - 1;
                next = found.searched_to + 1;
            }
        }
    }

    /// The number of the step's last stored line (0 for none). A capped log skips numbers,
    /// so this may exceed the count.
    pub async fn log_last_line(&self, step_id: i64) -> Result<u64> {
        let last: Option<i64> = db::query_scalar(
            "SELECT CAST(MAX(first_line + line_count - 1) AS BIGINT) FROM log_chunks WHERE step_id = $1"
        )
        .bind(step_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(last.unwrap_or(0).max(0) as u64)
    }

    /// How many lines the step's log holds.
    pub async fn log_line_count(&self, step_id: i64) -> Result<u64> {
        let count: Option<i64> = db::query_scalar(
            "SELECT CAST(SUM(line_count) AS BIGINT) FROM log_chunks WHERE step_id = $1",
        )
        .bind(step_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(count.unwrap_or(0).max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(number: u64) -> LogLine {
        LogLine {
            number,
            elapsed_ms: 0,
            text: number.to_string(),
        }
    }

    #[test]
    fn a_chunk_is_cut_at_line_boundaries() {
        let text = "a\nbb\nccc";
        assert_eq!(line_start(text, 0), Some(0));
        assert_eq!(line_start(text, 2), Some(5));
        assert_eq!(line_start(text, 3), None);
        assert_eq!(first_lines(text, 2), ("a\nbb", 2));
        assert_eq!(first_lines(text, 9), ("a\nbb\nccc", 3));
        assert_eq!(first_lines(&text[5..], 1), ("ccc", 1));
    }

    #[test]
    fn batches_split_where_line_numbers_jump() {
        let lines: Vec<LogLine> = [1, 2, 3, 10, 11, 20].into_iter().map(line).collect();
        let runs: Vec<Vec<u64>> = runs(&lines)
            .iter()
            .map(|r| r.iter().map(|l| l.number).collect())
            .collect();
        assert_eq!(runs, vec![vec![1, 2, 3], vec![10, 11], vec![20]]);
        assert!(super::runs(&[]).is_empty());
    }
}
