//! The last 24 hours of the room, for the dashboard's chart: one sample a minute of the heat
//! service's status, in a bounded ring. It only watches the status the heat service already
//! publishes; it decides nothing and is lost on restart (the chart then starts again).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::heat::HeatStatus;

/// One sample a minute...
pub const SAMPLE_EVERY: Duration = Duration::from_secs(60);
/// ...for 24 hours: the ring never holds more.
pub const CAPACITY: usize = 24 * 60;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Unix time, seconds.
    pub t: u64,
    /// `None` while the reading was not trusted.
    pub room_celsius: Option<f64>,
    pub setpoint_celsius: f64,
    pub power_watts: f64,
    pub slots: usize,
}

/// Shared, bounded history. Cheap to clone.
#[derive(Clone, Default)]
pub struct History {
    ring: Arc<Mutex<VecDeque<Sample>>>,
}

impl History {
    /// Keeps `sample` if a minute has passed since the last one kept.
    pub fn record(&self, sample: Sample) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring
            .back()
            .is_some_and(|last| sample.t < last.t.saturating_add(SAMPLE_EVERY.as_secs()))
        {
            return;
        }
        if ring.len() >= CAPACITY {
            ring.pop_front();
        }
        ring.push_back(sample);
    }

    /// Every sample, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.iter().cloned().collect()
    }

    /// Records every status the heat service publishes (it publishes each control period);
    /// ends when the service stops and drops its sender.
    pub async fn follow(self, mut status: watch::Receiver<HeatStatus>) {
        loop {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let sample = {
                let s = status.borrow_and_update();
                Sample {
                    t: now,
                    room_celsius: s.room_celsius,
                    setpoint_celsius: s.setpoint_celsius,
                    power_watts: s.power_watts,
                    slots: s.slots,
                }
            };
            self.record(sample);
            if status.changed().await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: u64, room: f64) -> Sample {
        Sample {
            t,
            room_celsius: Some(room),
            setpoint_celsius: 20.0,
            power_watts: 10.0,
            slots: 1,
        }
    }

    #[test]
    fn one_sample_a_minute_and_never_more_than_a_day() {
        let h = History::default();
        h.record(at(1000, 18.0));
        h.record(at(1030, 19.0));
        assert_eq!(h.samples().len(), 1);
        h.record(at(1060, 19.5));
        assert_eq!(h.samples().len(), 2);
        assert_eq!(h.samples()[1].room_celsius, Some(19.5));
        for i in 0..(CAPACITY as u64 * 2) {
            h.record(at(2000 + i * 60, 20.0));
        }
        let s = h.samples();
        assert_eq!(s.len(), CAPACITY);
        let span = s[s.len() - 1].t - s[0].t;
        assert!(span < 24 * 3600, "{span}");
    }
}
