//! The one clock gantry goes by: the system's, or one a test sets (`Clock::manual`), so
//! leases, schedules and retention can be tested across days in milliseconds. The store
//! holds it (`Store::with_clock`) and stamps every row with it; the server reads the same.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    pub fn system() -> Self {
        Clock::default()
    }

    /// A clock that stands at `now_ms` (milliseconds since the epoch) until it is set or
    /// moved; clones share it.
    pub fn manual(now_ms: i64) -> Self {
        Clock {
            manual: Some(Arc::new(AtomicI64::new(now_ms))),
        }
    }

    pub fn now_ms(&self) -> i64 {
        match &self.manual {
            Some(at) => at.load(Ordering::SeqCst),
            None => crate::now_ms(),
        }
    }

    /// Moves a manual clock on (a system clock ignores it).
    pub fn advance(&self, by: Duration) {
        if let Some(at) = &self.manual {
            at.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
        }
    }

    /// Sets a manual clock (a system clock ignores it).
    pub fn set(&self, now_ms: i64) {
        if let Some(at) = &self.manual {
            at.store(now_ms, Ordering::SeqCst);
        }
    }
}
