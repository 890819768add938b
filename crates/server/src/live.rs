//! Live logs: log lines fan out from the runner's batch to every reader of that step as
//! they arrive, beside being stored. A reader subscribes first and then reads what is
//! stored, so nothing falls between the two; line numbers drop the overlap.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use gantry_proto::LogLine;
use tokio::sync::broadcast;

#[derive(Debug, Clone)]
pub enum LiveEvent {
    Lines(Arc<Vec<LogLine>>),
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

    pub fn publish(&self, stage: i64, step: &str, lines: Vec<LogLine>) {
        let channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = channels.get(&(stage, step.to_owned())) {
            let _ = sender.send(LiveEvent::Lines(Arc::new(lines)));
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
            vec![LogLine {
                number: 1,
                elapsed_ms: 0,
                text: "hi".into(),
            }],
        );
        live.publish(2, "test", vec![]);
        live.stage_ended(1);
        match reader.recv().await.expect("lines") {
            LiveEvent::Lines(lines) => assert_eq!(lines[0].text, "hi"),
            LiveEvent::End => panic!("lines come first"),
        }
        assert!(matches!(reader.recv().await.expect("end"), LiveEvent::End));
    }
}
