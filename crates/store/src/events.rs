//! News of what the store committed. Every write that changes a build, a stage, a step, a
//! log, the delivery queue, the outbox or the schedules publishes its [`Event`] after its
//! transaction commits: to this process's subscribers at once and, on PostgreSQL, by
//! `NOTIFY` to every other server sharing the database. Live logs, the dispatcher (runners
//! waiting for work or for a cancel), the notifier and the background workers subscribe;
//! no handler wakes anything itself.
//!
//! Subscribe before reading what the news is about, so nothing committed in between is
//! missed. An event is a wake-up, not a record: a subscriber that lags, or news lost with a
//! broken `LISTEN` connection, is made up for by reading the store (every subscriber also
//! looks now and then).

use std::sync::Arc;

use gantry_proto::LogLine;
use tokio::sync::broadcast;

use crate::db;
use crate::{Pool, Store};

/// Something the store committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Stages became claimable (a build was queued or approved, a stage's dependencies or
    /// locks freed it, a lost runner's stage went back to the queue).
    Queued,
    /// A build was asked to stop: runners watching its stages' leases are told.
    Cancelled { build: i64 },
    /// A build's status may have changed: the notifier looks.
    BuildChanged { build: i64 },
    /// Lines of a step's log were stored. From this server they come with the lines; from
    /// another server without, to be read from the store.
    LinesStored {
        stage: i64,
        step: String,
        lines: Option<Arc<[LogLine]>>,
    },
    /// A step ended: its log is complete.
    StepEnded { stage: i64, step: String },
    /// A stage ended (its runner reported, or its lease was reaped): every step's log is
    /// complete.
    StageEnded { stage: i64 },
    /// A webhook delivery waits to be processed.
    DeliveryQueued,
    /// A delivery was processed, or let go to be tried later: the next one of its
    /// repository may go, and a worker is free.
    DeliveryDone,
    /// A message waits in the outbox.
    MessageQueued,
    /// A schedule was added or removed.
    ScheduleChanged,
}

/// The `NOTIFY` channel all events travel on between servers.
pub(crate) const EVENTS_CHANNEL: &str = "gantry_events";

/// How many events a subscriber may fall behind before it is told it lagged.
const CAPACITY: usize = 4096;

impl Event {
    /// `INSTANCE KIND [ID [STEP]]`: the step name last, as it may hold spaces. Lines travel
    /// without their text (a `NOTIFY` payload is small; the store holds them).
    pub(crate) fn to_payload(&self, instance: &str) -> String {
        let tail = match self {
            Event::Queued => "queued".to_owned(),
            Event::Cancelled { build } => format!("cancelled {build}"),
            Event::BuildChanged { build } => format!("build {build}"),
            Event::LinesStored { stage, step, .. } => format!("lines {stage} {step}"),
            Event::StepEnded { stage, step } => format!("step {stage} {step}"),
            Event::StageEnded { stage } => format!("stage {stage}"),
            Event::DeliveryQueued => "delivery".to_owned(),
            Event::DeliveryDone => "delivered".to_owned(),
            Event::MessageQueued => "message".to_owned(),
            Event::ScheduleChanged => "schedule".to_owned(),
        };
        format!("{instance} {tail}")
    }

    /// The event and the instance that sent it; `None` for a payload this version does not
    /// know (a newer server's).
    pub(crate) fn from_payload(payload: &str) -> Option<(&str, Self)> {
        let mut parts = payload.splitn(4, ' ');
        let instance = parts.next()?;
        let kind = parts.next()?;
        let id = parts.next().map(str::parse::<i64>);
        let step = parts.next().map(str::to_owned);
        let event = match (kind, id, step) {
            ("queued", None, None) => Event::Queued,
            ("cancelled", Some(Ok(build)), None) => Event::Cancelled { build },
            ("build", Some(Ok(build)), None) => Event::BuildChanged { build },
            ("lines", Some(Ok(stage)), Some(step)) => Event::LinesStored {
                stage,
                step,
                lines: None,
            },
            ("step", Some(Ok(stage)), Some(step)) => Event::StepEnded { stage, step },
            ("stage", Some(Ok(stage)), None) => Event::StageEnded { stage },
            ("delivery", None, None) => Event::DeliveryQueued,
            ("delivered", None, None) => Event::DeliveryDone,
            ("message", None, None) => Event::MessageQueued,
            ("schedule", None, None) => Event::ScheduleChanged,
            _ => return None,
        };
        Some((instance, event))
    }
}

/// The sending side, shared by every clone of a [`Store`].
#[derive(Debug)]
pub(crate) struct Events {
    sender: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(CAPACITY).0,
        }
    }
}

impl Events {
    /// News from another server, passed to this one's subscribers.
    pub(crate) fn forward(&self, event: Event) {
        let _ = self.sender.send(event);
    }
}

impl Store {
    /// Everything the store commits from now on, here and on other servers sharing the
    /// database.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.sender.subscribe()
    }

    /// Tells this server's subscribers, then the other servers'. Called after the commit.
    pub(crate) async fn publish(&self, event: Event) {
        self.publish_all(vec![event]).await;
    }

    /// Several events of one commit, in order: to other servers in one `NOTIFY`, a line each
    /// (no event's text holds a line break: step names cannot).
    pub(crate) async fn publish_all(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        if let Pool::Postgres(pool) = &self.pool {
            let payload: Vec<String> = events
                .iter()
                .map(|event| event.to_payload(&self.instance))
                .collect();
            if let Err(e) = db::query("SELECT pg_notify($1, $2)")
                .bind(EVENTS_CHANNEL)
                .bind(payload.join("\n"))
                .execute(pool)
                .await
            {
                tracing::warn!(error = %e, "NOTIFY failed; other servers catch up at their next look at the store");
            }
        }
        for event in events {
            let _ = self.events.sender.send(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_travel_as_text_and_back_without_their_lines() {
        let lines: Arc<[LogLine]> = Arc::from(vec![LogLine {
            number: 1,
            elapsed_ms: 0,
            text: "hi".into(),
        }]);
        for (sent, received) in [
            (Event::Queued, Event::Queued),
            (Event::Cancelled { build: 3 }, Event::Cancelled { build: 3 }),
            (
                Event::BuildChanged { build: 4 },
                Event::BuildChanged { build: 4 },
            ),
            (
                Event::LinesStored {
                    stage: 7,
                    step: "unit tests".into(),
                    lines: Some(lines),
                },
                Event::LinesStored {
                    stage: 7,
                    step: "unit tests".into(),
                    lines: None,
                },
            ),
            (
                Event::StepEnded {
                    stage: 7,
                    step: "build".into(),
                },
                Event::StepEnded {
                    stage: 7,
                    step: "build".into(),
                },
            ),
            (
                Event::StageEnded { stage: 9 },
                Event::StageEnded { stage: 9 },
            ),
            (Event::DeliveryQueued, Event::DeliveryQueued),
            (Event::DeliveryDone, Event::DeliveryDone),
            (Event::MessageQueued, Event::MessageQueued),
            (Event::ScheduleChanged, Event::ScheduleChanged),
        ] {
            let payload = sent.to_payload("abc-1");
            assert_eq!(Event::from_payload(&payload), Some(("abc-1", received)));
        }
    }

    #[test]
    fn unknown_or_broken_payloads_are_ignored() {
        for payload in [
            "abc",
            "abc stage",
            "abc stage x",
            "abc queued 3",
            "abc lines 7",
            "abc rocket 1",
        ] {
            assert_eq!(Event::from_payload(payload), None, "{payload}");
        }
    }
}
