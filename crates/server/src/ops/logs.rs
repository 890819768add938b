//! Searching logs: one step's (window by window, so that the first matches of a long log come
//! at once and the rest follow) and a repository's recent builds' ("when did this start
//! failing?"). Both are bounded in what they read, what they return and how long they take,
//! and both are for readers of the repository only.

use std::time::{Duration, Instant};

use gantry_api::{LogHit, RepoLogSearch, StepLogSearch};
use gantry_store::{BuildFilter, LineMatcher, SearchBounds};

use super::builds::StepAt;
use crate::AppState;
use crate::access::{self, Identity, Need};
use crate::error::{OpError, OpResult};

/// The longest pattern a search takes.
const MAX_PATTERN: usize = 256;
/// What one window of a step's search may return, and read at most (`lines=` asks for less,
/// so that a first window answers at once).
const STEP_WINDOW_MATCHES: usize = 5_000;
pub const STEP_WINDOW_LINES: u64 = 250_000;
/// How many builds a search across builds looks at, at most and by default.
pub const MAX_BUILDS: i64 = 200;
const DEFAULT_BUILDS: i64 = 20;
/// How many hits a search across builds returns, and how many of one step.
const MAX_HITS: usize = 200;
const HITS_PER_STEP: usize = 5;
/// How much of one step's log a search across builds reads.
const LINES_PER_STEP: u64 = 1_000_000;
/// How long a search across builds may take.
const REPO_DEADLINE: Duration = Duration::from_secs(10);
/// How many searches across builds one server runs at once; more are refused (429).
pub const REPO_SEARCHES_AT_ONCE: usize = 2;
/// How much of a hit's line is returned.
const HIT_TEXT: usize = 500;

/// What to look for: text (case-insensitive unless asked) or a regular expression, both as
/// a `regex` (linear time in the text, size-limited), run over whole chunks of a log at once
/// so that its literal search finds candidate lines fast; each candidate line is then
/// checked alone, so that no match spans two lines.
pub struct Pattern(regex::Regex);

impl Pattern {
    pub fn new(query: &str, case: bool, regex: bool) -> OpResult<Self> {
        if query.is_empty() {
            return Err(OpError::invalid_field("q", "say what to search for: `q=`"));
        }
        if query.chars().count() > MAX_PATTERN {
            return Err(OpError::invalid_field(
                "q",
                format!("a search is at most {MAX_PATTERN} characters"),
            ));
        }
        let source = if regex {
            query.to_owned()
        } else {
            regex::escape(query)
        };
        regex::RegexBuilder::new(&source)
            .case_insensitive(!case)
            .multi_line(true)
            .size_limit(1 << 20)
            .dfa_size_limit(4 << 20)
            .nest_limit(50)
            .build()
            .map(Pattern)
            .map_err(|e| {
                let why = match e {
                    regex::Error::CompiledTooBig(_) => "it is too large".to_owned(),
                    e => e.to_string(),
                };
                OpError::invalid_field("q", format!("`{query}` is not a regular expression: {why}"))
            })
    }

    pub fn matches(&self, line: &str) -> bool {
        self.0.is_match(line)
    }
}

impl LineMatcher for Pattern {
    fn matching_lines<'t>(&self, text: &'t str) -> Vec<(usize, &'t str)> {
        let mut found = Vec::new();
        // `pos` is always a line's start; `counted` is where `index` was last counted to.
        let (mut pos, mut counted, mut index) = (0, 0, 0);
        while pos <= text.len() {
            let Some(hit) = self.0.find_at(text, pos) else {
                break;
            };
            let start = text[pos..hit.start()]
                .rfind('\n')
                .map_or(pos, |at| pos + at + 1);
            let end = text[hit.start()..]
                .find('\n')
                .map_or(text.len(), |at| hit.start() + at);
            index += text[counted..start].matches('\n').count();
            counted = start;
            let line = &text[start..end];
            if self.matches(line) {
                found.push((index, line));
            }
            pos = end + 1;
        }
        found
    }
}

/// One window of a search of a step's log, from line `from` on.
pub async fn search_step(
    state: &AppState,
    who: Option<&Identity>,
    at: StepAt<'_>,
    pattern: &Pattern,
    (from, lines): (u64, u64),
) -> OpResult<StepLogSearch> {
    let (_, build, _, step) = super::builds::step(state, who, at).await?;
    let total = state.store.log_last_line(step.id).await?;
    if build.logs_removed_at.is_some() {
        return Ok(StepLogSearch {
            matches: Vec::new(),
            next: None,
            searched_to: 0,
            total,
            ended: true,
        });
    }
    let found = state
        .store
        .search_log(
            step.id,
            from,
            SearchBounds {
                max_matches: STEP_WINDOW_MATCHES,
                max_lines: lines.clamp(1, STEP_WINDOW_LINES),
            },
            pattern,
        )
        .await?;
    Ok(StepLogSearch {
        matches: found.matches.into_iter().map(|(n, _)| n).collect(),
        next: found.next,
        searched_to: found.searched_to,
        total: total.max(found.searched_to),
        ended: step.status.is_final(),
    })
}

/// What to search across builds.
#[derive(Debug, Default, Clone)]
pub struct RepoSearch {
    pub branch: Option<String>,
    /// Only builds created at or after this (milliseconds since the epoch).
    pub since: Option<i64>,
    /// How many of the newest builds to look at.
    pub last: Option<i64>,
}

/// The newest builds' steps that printed a matching line, newest build first.
pub async fn search_repo(
    state: &AppState,
    who: Option<&Identity>,
    (owner, name): (&str, &str),
    pattern: &Pattern,
    query: RepoSearch,
) -> OpResult<RepoLogSearch> {
    let (repo, _) = access::authorize(state, who, owner, name, Need::Read).await?;
    let Ok(_running) = state.repo_searches.try_acquire() else {
        return Err(OpError::Busy(format!(
            "this server already runs {REPO_SEARCHES_AT_ONCE} searches across builds; try again in a few seconds"
        )));
    };
    let last = query.last.unwrap_or(DEFAULT_BUILDS);
    if !(1..=MAX_BUILDS).contains(&last) {
        return Err(OpError::invalid_field(
            "last",
            format!("search the last 1 to {MAX_BUILDS} builds"),
        ));
    }
    let builds = state
        .store
        .list_builds(
            repo.id,
            &BuildFilter {
                branch: query.branch.filter(|b| !b.is_empty()),
                limit: last,
                ..BuildFilter::default()
            },
        )
        .await?;
    let started = Instant::now();
    let mut found = RepoLogSearch {
        hits: Vec::new(),
        builds_searched: 0,
        stopped: None,
    };
    let bounds = SearchBounds {
        max_matches: HITS_PER_STEP,
        max_lines: LINES_PER_STEP,
    };
    'builds: for build in builds {
        if query.since.is_some_and(|since| build.created_at < since) {
            break;
        }
        if build.logs_removed_at.is_some() {
            found.builds_searched += 1;
            continue;
        }
        for (stage, steps) in state.store.stages_with_steps(build.id).await? {
            for step in steps {
                if found.hits.len() >= MAX_HITS {
                    found.stopped = Some(format!("stopped at {MAX_HITS} matching lines"));
                    break 'builds;
                }
                if started.elapsed() > REPO_DEADLINE {
                    found.stopped = Some(format!(
                        "stopped after {} s: narrow the search with `branch`, `since` or `last`",
                        REPO_DEADLINE.as_secs()
                    ));
                    break 'builds;
                }
                let lines = state.store.search_log(step.id, 1, bounds, pattern).await?;
                for (line, text) in lines.matches {
                    found.hits.push(LogHit {
                        build: build.number,
                        branch: build.branch.clone(),
                        commit: build.commit.clone(),
                        status: build.status,
                        created_at: build.created_at,
                        stage: stage.name.clone(),
                        step: step.name.clone(),
                        line,
                        text: text.chars().take(HIT_TEXT).collect(),
                        link: format!(
                            "{}/{}/{}/{}/{}#L{line}",
                            state.config.server_url,
                            repo.full_name(),
                            build.number,
                            stage.number,
                            step.number
                        ),
                    });
                }
            }
        }
        found.builds_searched += 1;
    }
    Ok(found)
}

/// `since=`: a date (`2026-11-30`), a time (RFC 3339), or an age (`36h`, `7d`) before
/// `now`; all in milliseconds since the epoch.
pub fn parse_since(text: &str, now: i64) -> OpResult<i64> {
    let text = text.trim();
    let age = |unit: i64| {
        text[..text.len() - 1]
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(|n| now - n.saturating_mul(unit))
    };
    let parsed = match text.chars().last() {
        Some('d') => age(86_400_000),
        Some('h') => age(3_600_000),
        _ => chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| t.timestamp_millis())
            .ok()
            .or_else(|| {
                chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                    .ok()
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .map(|t| t.and_utc().timestamp_millis())
            }),
    };
    parsed.ok_or_else(|| {
        OpError::invalid_field(
            "since",
            format!("`{text}` is not a date (2026-11-30), a time (RFC 3339) or an age (36h, 7d)"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_found_ignoring_case_unless_asked() {
        let plain = Pattern::new("Error:", false, false).expect("valid");
        assert!(plain.matches("build ERROR: it broke"));
        assert!(plain.matches("error:"));
        assert!(!plain.matches("errors"));
        let exact = Pattern::new("Error:", true, false).expect("valid");
        assert!(!exact.matches("error: x"));
        assert!(exact.matches("an Error: x"));
        let unicode = Pattern::new("ÉCHEC", false, false).expect("valid");
        assert!(unicode.matches("test échec"));
        let special = Pattern::new("a.b(c)", false, false).expect("valid");
        assert!(special.matches("x a.b(c) y") && !special.matches("axb(c)"));
    }

    /// Lines are found in a chunk at once, each whole, never a match across two.
    #[test]
    fn matching_lines_of_a_chunk_are_found_with_their_index() {
        let text = "first\nan error: one\nmiddle\nerror: two\nend error\n\nlast";
        let plain = Pattern::new("error", false, false).expect("valid");
        assert_eq!(
            plain.matching_lines(text),
            [(1, "an error: one"), (3, "error: two"), (4, "end error")]
        );
        let anchored = Pattern::new("^error", false, true).expect("valid");
        assert_eq!(anchored.matching_lines(text), [(3, "error: two")]);
        // `\s` would reach over the line's end: such a match is not a line's.
        let across = Pattern::new(r"middle\serror", false, true).expect("valid");
        assert!(across.matching_lines(text).is_empty());
        let empty_line = Pattern::new("^$", false, true).expect("valid");
        assert_eq!(empty_line.matching_lines(text), [(5, "")]);
        let end = Pattern::new("last", true, false).expect("valid");
        assert_eq!(end.matching_lines(text), [(6, "last")]);
    }

    #[test]
    fn regular_expressions_are_checked_and_bounded() {
        let re = Pattern::new(r"^test \w+ \.\.\. FAILED$", false, true).expect("valid");
        assert!(re.matches("test parse ... FAILED"));
        assert!(!re.matches("test parse ... ok"));
        let Err(bad) = Pattern::new("(unclosed", false, true) else {
            panic!("an unclosed group is refused")
        };
        assert!(
            bad.to_string().contains("is not a regular expression"),
            "{bad}"
        );
        assert!(Pattern::new("", false, false).is_err());
        assert!(Pattern::new(&"a".repeat(MAX_PATTERN + 1), false, false).is_err());
        // A pattern that would compile to a huge program is refused, not built.
        assert!(Pattern::new(r"(?:x{1000}){1000}", false, true).is_err());
    }

    #[test]
    fn since_takes_dates_times_and_ages() {
        let now = 1_000_000_000_000;
        assert_eq!(parse_since("7d", now).ok(), Some(now - 7 * 86_400_000));
        assert_eq!(parse_since("36h", now).ok(), Some(now - 36 * 3_600_000));
        assert_eq!(parse_since("2026-11-30", now).ok(), Some(1_795_996_800_000));
        assert_eq!(
            parse_since("2026-11-30T12:00:00Z", now).ok(),
            Some(1_795_996_800_000 + 43_200_000)
        );
        assert!(parse_since("last week", now).is_err());
        assert!(parse_since("-3d", now).is_err());
    }
}
