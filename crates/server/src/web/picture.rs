//! A build as a picture: its stages as boxes in columns by `depends_on` (a stage stands right
//! of every stage it waits for), arrows from each dependency, its steps inside each box; and
//! a timeline of its steps, so where the time went shows at a glance. The geometry is worked
//! out here; `build.html` draws it as SVG and plain DOM (nothing is loaded from elsewhere).

use std::collections::HashMap;

use gantry_store::{Stage, Step};

const BOX_WIDTH: i64 = 210;
const COLUMN_GAP: i64 = 70;
const ROW_GAP: i64 = 18;
const HEAD: i64 = 30;
const STEP_ROW: i64 = 22;
const MARGIN: i64 = 12;

pub(super) struct PictureStep {
    pub y: i64,
    pub name: String,
    /// The name as it fits in the box.
    pub short_name: String,
    pub status: &'static str,
    pub href: String,
}

pub(super) struct PictureBox {
    pub x: i64,
    pub y: i64,
    pub height: i64,
    pub number: i64,
    pub name: String,
    pub short_name: String,
    pub status: &'static str,
    /// The names of the stages it waits for, comma-separated (read by tests and tools).
    pub depends_on: String,
    pub steps: Vec<PictureStep>,
}

pub(super) struct PictureEdge {
    pub from: String,
    pub to: String,
    /// The SVG path from the dependency's right side to the stage's left side.
    pub path: String,
}

pub(super) struct Picture {
    pub width: i64,
    pub height: i64,
    pub box_width: i64,
    pub boxes: Vec<PictureBox>,
    pub edges: Vec<PictureEdge>,
}

/// `name` cut to `chars` characters with an ellipsis, so it stays inside its box (the whole
/// name is the box's tooltip).
fn fitted(name: &str, chars: usize) -> String {
    if name.chars().count() <= chars {
        return name.to_owned();
    }
    let mut cut: String = name.chars().take(chars - 1).collect();
    cut.push('…');
    cut
}

/// How far right a stage stands: one column past the furthest stage it waits for.
fn columns(stages: &[(Stage, Vec<Step>)], index: &HashMap<&str, usize>) -> Vec<usize> {
    let mut column: Vec<Option<usize>> = vec![None; stages.len()];
    // Dependencies were checked for cycles when the pipeline was compiled; the depth bound
    // keeps a stored plan written otherwise from looping.
    fn place(
        i: usize,
        stages: &[(Stage, Vec<Step>)],
        index: &HashMap<&str, usize>,
        column: &mut Vec<Option<usize>>,
        depth: usize,
    ) -> usize {
        if let Some(c) = column[i] {
            return c;
        }
        let c = if depth > stages.len() {
            0
        } else {
            stages[i]
                .0
                .depends_on
                .iter()
                .filter_map(|d| index.get(d.as_str()))
                .map(|&d| place(d, stages, index, column, depth + 1) + 1)
                .max()
                .unwrap_or(0)
        };
        column[i] = Some(c);
        c
    }
    (0..stages.len())
        .map(|i| place(i, stages, index, &mut column, 0))
        .collect()
}

/// Where each stage is in the build, by name.
fn by_name(stages: &[(Stage, Vec<Step>)]) -> HashMap<&str, usize> {
    stages
        .iter()
        .enumerate()
        .map(|(i, (stage, _))| (stage.name.as_str(), i))
        .collect()
}

pub(super) fn picture(base: &str, stages: &[(Stage, Vec<Step>)]) -> Picture {
    let index = by_name(stages);
    let columns = columns(stages, &index);
    let mut next_y: Vec<i64> = vec![MARGIN; columns.iter().max().map_or(0, |c| c + 1)];
    let mut boxes = Vec::new();
    for ((stage, steps), &column) in stages.iter().zip(&columns) {
        let x = MARGIN + column as i64 * (BOX_WIDTH + COLUMN_GAP);
        let y = next_y[column];
        let height = HEAD + STEP_ROW * steps.len() as i64 + 8;
        next_y[column] = y + height + ROW_GAP;
        boxes.push(PictureBox {
            x,
            y,
            height,
            number: stage.number,
            name: stage.name.clone(),
            short_name: fitted(&stage.name, 24),
            status: stage.status.as_str(),
            depends_on: stage.depends_on.join(","),
            steps: steps
                .iter()
                .enumerate()
                .map(|(i, step)| PictureStep {
                    y: y + HEAD + STEP_ROW * i as i64 + 15,
                    name: step.name.clone(),
                    short_name: fitted(&step.name, 25),
                    status: step.status.as_str(),
                    href: format!("{base}/{}/{}", stage.number, step.number),
                })
                .collect(),
        });
    }
    let mut edges = Vec::new();
    for ((stage, _), to) in stages.iter().zip(&boxes) {
        for from in stage
            .depends_on
            .iter()
            .filter_map(|d| index.get(d.as_str()))
            .map(|&i| &boxes[i])
        {
            let (x1, y1) = (from.x + BOX_WIDTH, from.y + HEAD / 2);
            let (x2, y2) = (to.x, to.y + HEAD / 2);
            let bend = (x2 - x1) / 2;
            edges.push(PictureEdge {
                from: from.name.clone(),
                to: to.name.clone(),
                path: format!(
                    "M{x1},{y1} C{},{y1} {},{y2} {},{y2}",
                    x1 + bend,
                    x2 - bend,
                    x2 - 6
                ),
            });
        }
    }
    Picture {
        width: next_y.len() as i64 * (BOX_WIDTH + COLUMN_GAP) - COLUMN_GAP + 2 * MARGIN,
        height: next_y.iter().max().copied().unwrap_or(MARGIN) - ROW_GAP + MARGIN,
        box_width: BOX_WIDTH,
        boxes,
        edges,
    }
}

/// One step on the timeline: where its bar starts and how wide it is, in percent of the
/// build's span.
pub(super) struct TimelineRow {
    pub stage: String,
    pub step: String,
    pub status: &'static str,
    pub href: String,
    pub left: String,
    pub width: String,
    pub took: String,
}

pub(super) struct Timeline {
    pub rows: Vec<TimelineRow>,
    /// The span the bars share, said as a duration.
    pub span: String,
}

/// The steps that started, on one time axis from the first start to the last end (`now` for
/// those still running).
pub(super) fn timeline(base: &str, stages: &[(Stage, Vec<Step>)], now: i64) -> Option<Timeline> {
    let started: Vec<(&Stage, &Step, i64, i64)> = stages
        .iter()
        .flat_map(|(stage, steps)| steps.iter().map(move |step| (stage, step)))
        .filter_map(|(stage, step)| {
            let start = step.started_at?;
            Some((
                stage,
                step,
                start,
                step.finished_at.unwrap_or(now).max(start),
            ))
        })
        .collect();
    let first = started.iter().map(|s| s.2).min()?;
    let last = started.iter().map(|s| s.3).max()?;
    let span = (last - first).max(1) as f64;
    let percent = |ms: f64| format!("{:.2}%", (ms / span * 100.0).clamp(0.0, 100.0));
    Some(Timeline {
        rows: started
            .into_iter()
            .map(|(stage, step, start, end)| TimelineRow {
                stage: stage.name.clone(),
                step: step.name.clone(),
                status: step.status.as_str(),
                href: format!("{base}/{}/{}", stage.number, step.number),
                left: percent((start - first) as f64),
                // A bar never vanishes: the shortest is still seen.
                width: percent(((end - start) as f64).max(span * 0.004)),
                took: crate::human::duration_ms(end - start),
            })
            .collect(),
        span: crate::human::duration_ms(last - first),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_store::Status;

    fn stage(number: i64, name: &str, depends_on: &[&str]) -> (Stage, Vec<Step>) {
        let stage = Stage {
            id: number,
            build_id: 1,
            number,
            name: name.into(),
            status: Status::Success,
            error: None,
            depends_on: depends_on.iter().map(|d| (*d).to_owned()).collect(),
            labels: Default::default(),
            platform: String::new(),
            backend: gantry_pipeline::model::PipelineType::Docker,
            runner: None,
            created_at: 0,
            started_at: None,
            finished_at: None,
            locks: vec![],
            concurrency: None,
            approval: None,
            decided_by: None,
        };
        let step = Step {
            id: number,
            stage_id: number,
            number: 1,
            name: format!("{name}-step"),
            kind: gantry_pipeline::StepKind::Commands,
            status: Status::Success,
            exit_code: Some(0),
            error: None,
            started_at: Some(1_000 * number),
            finished_at: Some(1_000 * number + 500),
        };
        (stage, vec![step])
    }

    #[test]
    fn a_stage_stands_right_of_every_stage_it_waits_for() {
        let stages = [
            stage(1, "build", &[]),
            stage(2, "test", &["build"]),
            // A name may hold a comma: arrows come from the names, not from a joined list.
            stage(3, "lint, fast", &["build"]),
            stage(4, "publish", &["test", "lint, fast"]),
            stage(5, "docs", &[]),
        ];
        assert_eq!(columns(&stages, &by_name(&stages)), [0, 1, 1, 2, 0]);
        let picture = picture("/acme/app/1", &stages);
        let xs: Vec<i64> = picture.boxes.iter().map(|b| b.x).collect();
        assert!(xs[0] == xs[4] && xs[0] < xs[1] && xs[1] == xs[2] && xs[2] < xs[3]);
        // Boxes of one column do not overlap.
        assert!(picture.boxes[2].y >= picture.boxes[1].y + picture.boxes[1].height);
        let edges: Vec<(&str, &str)> = picture
            .edges
            .iter()
            .map(|e| (e.from.as_str(), e.to.as_str()))
            .collect();
        assert_eq!(
            edges,
            [
                ("build", "test"),
                ("build", "lint, fast"),
                ("test", "publish"),
                ("lint, fast", "publish")
            ]
        );
        assert_eq!(picture.boxes[3].steps[0].href, "/acme/app/1/4/1");
        assert!(picture.width >= xs[3] + BOX_WIDTH);
    }

    #[test]
    fn the_timeline_spans_the_first_start_to_the_last_end() {
        let stages = [stage(1, "a", &[]), stage(2, "b", &["a"])];
        let timeline = timeline("/x", &stages, 0).expect("steps ran");
        let bars: Vec<(&str, &str)> = timeline
            .rows
            .iter()
            .map(|r| (r.left.as_str(), r.width.as_str()))
            .collect();
        // From 1,000 to 2,500 ms: a at 0 for 500 ms, b at 1,000 ms for 500 ms.
        assert_eq!(bars, [("0.00%", "33.33%"), ("66.67%", "33.33%")]);
        assert_eq!(timeline.span, "1s");
    }
}
