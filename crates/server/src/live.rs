//! Live logs: the store's news of a step's log ([`gantry_store::Event`]: lines stored, the
//! step or its stage ended) fans out to every reader of that step. A reader subscribes first
//! and then reads what is stored, so nothing falls between the two; line numbers drop the
//! overlap.
//!
//! Lines stored through this server come with the news; a runner may report to another
//! server sharing the database, whose news (by PostgreSQL `NOTIFY`) arrives without them as
//! [`LiveEvent::Stored`], and readers fetch the lines from the store, the one truth.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use gantry_proto::LogLine;
use gantry_store::Event;
use tokio::sync::broadcast;

#[derive(Debug, Clone)]
pub enum LiveEvent {
    Lines(Arc<[LogLine]>),
    /// Another server stored lines: read them from the store.
    Stored,
    /// The step (or its whole stage) ended: no more lines.
    End,
}

type Key = (i64, String);

#[derive(Debug, Default)]
pub struct LiveLogs {
    channels: Mutex<HashMap<Key, broadcast::Sender<LiveEvent>>>,
}

impl LiveLogs {
    pub fn subscribe(&self, stage: i64, step: &str) -> broadcast::Receiver<LiveEvent> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels
            .entry((stage, step.to_owned()))
            .or_insert_with(|| broadcast::channel(1024).0)
            .subscribe()
    }

    pub fn publish(&self, stage: i64, step: &str, lines: Arc<[LogLine]>) {
        let channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = channels.get(&(stage, step.to_owned())) {
            let _ = sender.send(LiveEvent::Lines(lines));
        }
    }

    /// Tells the step's readers that lines were stored elsewhere.
    pub fn stored(&self, stage: i64, step: &str) {
        let channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = channels.get(&(stage, step.to_owned())) {
            let _ = sender.send(LiveEvent::Stored);
        }
    }

    /// News was missed: every reader looks at the store.
    pub fn everything_stored(&self) {
        let channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        for sender in channels.values() {
            let _ = sender.send(LiveEvent::Stored);
        }
    }

    pub fn step_ended(&self, stage: i64, step: &str) {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = channels.remove(&(stage, step.to_owned())) {
            let _ = sender.send(LiveEvent::End);
        }
    }

    /// Ends every step of a stage (it finished, or its runner was lost).
    pub fn stage_ended(&self, stage: i64) {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels.retain(|(s, _), sender| {
            if *s == stage {
                let _ = sender.send(LiveEvent::End);
                false
            } else {
                true
            }
        });
    }
}

/// Passes the store's news of logs to this server's readers until shutdown.
pub async fn follow_store(state: Arc<crate::AppState>) {
    let mut news = state.store.subscribe();
    let live = &state.live;
    loop {
        let received = tokio::select! {
            _ = state.shutdown.cancelled() => return,
            received = news.recv() => received,
        };
        match received {
            Ok(Event::LinesStored {
                stage,
                step,
                lines: Some(lines),
            }) => live.publish(stage, &step, lines),
            Ok(Event::LinesStored {
                stage,
                step,
                lines: None,
            }) => live.stored(stage, &step),
            Ok(Event::StepEnded { stage, step }) => live.step_ended(stage, &step),
            Ok(Event::StageEnded { stage }) => live.stage_ended(stage),
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "log news came too fast; live readers read the store"
                );
                live.everything_stored();
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readers_get_lines_then_the_end() {
        let live = LiveLogs::default();
        let mut reader = live.subscribe(1, "test");
        live.publish(
            1,
            "test",
            Arc::from(vec![LogLine {
                number: 1,
                elapsed_ms: 0,
                text: "hi".into(),
            }]),
        );
        live.publish(2, "test", Arc::from(Vec::new()));
        live.stage_ended(1);
        match reader.recv().await.expect("lines") {
            LiveEvent::Lines(lines) => assert_eq!(lines[0].text, "hi"),
            other => panic!("lines come first, not {other:?}"),
        }
        assert!(matches!(reader.recv().await.expect("end"), LiveEvent::End));
    }
}
