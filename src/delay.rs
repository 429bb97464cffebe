//! Delayed delivery as a producer asks for it — a delay level, a delay in
//! ms, or an exact time, read from the message's reserved properties — and
//! where such a message waits until it is due: queue `L - 1` of the schedule
//! topic for level `L` (one FIFO per level, due in arrival order), or the
//! timer topic for everything else. The waiting record keeps its real topic
//! and queue in properties and its due time in the tag-code field.

use crate::config::Config;
use crate::error::{Error, Result};
use brook_proto::system::{
    PROP_DELAY_LEVEL, PROP_DELAY_MS, PROP_DELIVER_AT, PROP_REAL_QUEUE, PROP_REAL_TOPIC, SCHEDULE_TOPIC, TIMER_TOPIC,
};
use brook_proto::Message;

/// When a message is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delay {
    /// After delay level `L` (1-based).
    Level(u32),
    /// At this time, ms since the epoch.
    At(i64),
}

/// Where a delayed message waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parked {
    /// System topic.
    pub topic: &'static str,
    /// Queue within it.
    pub queue: u32,
    /// When it is due.
    pub due: i64,
}

/// The broker's delay levels and limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelayPolicy {
    levels_ms: Vec<u64>,
    max_delay_ms: u64,
}

impl DelayPolicy {
    /// From `delay_levels` and `max_delay`.
    pub fn from_config(config: &Config) -> Result<Self> {
        Ok(Self { levels_ms: config.delay_levels_ms()?, max_delay_ms: config.max_delay_ms()? })
    }

    /// Each level's delay in ms (index 0 is level 1).
    pub fn levels_ms(&self) -> &[u64] {
        &self.levels_ms
    }

    /// The delay `msg` asks for, checked, with the request properties taken
    /// out; `None` when it is due now.
    pub fn take_request(&self, msg: &mut Message, now: i64) -> Result<Option<Delay>> {
        let level = msg.properties.remove(PROP_DELAY_LEVEL);
        let delay_ms = msg.properties.remove(PROP_DELAY_MS);
        let at = msg.properties.remove(PROP_DELIVER_AT);
        let bad = |what: &str, value: &str| Error::InvalidArgument(format!("{what} {value:?} is not a number"));
        match (level, delay_ms, at) {
            (None, None, None) => Ok(None),
            (Some(level), None, None) => {
                let l: u32 = level.trim().parse().map_err(|_| bad(PROP_DELAY_LEVEL, &level))?;
                match l {
                    0 => Ok(None),
                    l if l as usize > self.levels_ms.len() => Err(Error::InvalidArgument(format!(
                        "delay level {l} does not exist; the broker has levels 1..={}",
                        self.levels_ms.len()
                    ))),
                    l => Ok(Some(Delay::Level(l))),
                }
            }
            (None, Some(ms), None) => {
                let ms: u64 = ms.trim().parse().map_err(|_| bad(PROP_DELAY_MS, &ms))?;
                self.at(now.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX)), now)
            }
            (None, None, Some(at)) => {
                let at: i64 = at.trim().parse().map_err(|_| bad(PROP_DELIVER_AT, &at))?;
                self.at(at, now)
            }
            _ => Err(Error::InvalidArgument(format!(
                "a message takes one of {PROP_DELAY_LEVEL}, {PROP_DELAY_MS} and {PROP_DELIVER_AT}"
            ))),
        }
    }

    fn at(&self, at: i64, now: i64) -> Result<Option<Delay>> {
        if at <= now {
            return Ok(None);
        }
        let ahead = (at - now) as u64;
        if ahead > self.max_delay_ms {
            return Err(Error::InvalidArgument(format!(
                "delivery {ahead} ms from now is beyond max_delay ({} ms)",
                self.max_delay_ms
            )));
        }
        Ok(Some(Delay::At(at)))
    }

    /// Rewrites `msg` (bound for `topic`/`queue`) to wait for `delay`, and
    /// says where it waits.
    pub fn park(&self, msg: &mut Message, topic: &str, queue: u32, delay: Delay, now: i64) -> Parked {
        let (parked_topic, parked_queue, due) = match delay {
            Delay::Level(l) => {
                let index = (l.max(1) as usize).min(self.levels_ms.len()) - 1;
                let ms = self.levels_ms.get(index).copied().unwrap_or(0);
                (SCHEDULE_TOPIC, index as u32, now.saturating_add(ms as i64))
            }
            Delay::At(at) => (TIMER_TOPIC, 0, at),
        };
        msg.properties.insert(PROP_REAL_TOPIC.into(), topic.to_string());
        msg.properties.insert(PROP_REAL_QUEUE.into(), queue.to_string());
        msg.properties.insert(PROP_DELIVER_AT.into(), due.to_string());
        if let Delay::Level(l) = delay {
            msg.properties.insert(PROP_DELAY_LEVEL.into(), l.to_string());
        }
        msg.topic = parked_topic.to_string();
        Parked { topic: parked_topic, queue: parked_queue, due }
    }

    /// The real destination of a parked message, with the delay properties
    /// taken out; `None` if it carries none.
    pub fn unpark(msg: &mut Message) -> Option<(String, u32)> {
        let topic = msg.properties.remove(PROP_REAL_TOPIC)?;
        let queue = msg.properties.remove(PROP_REAL_QUEUE).and_then(|q| q.parse().ok()).unwrap_or(0);
        for prop in [PROP_DELAY_LEVEL, PROP_DELAY_MS, PROP_DELIVER_AT] {
            msg.properties.remove(prop);
        }
        msg.topic.clone_from(&topic);
        Some((topic, queue))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> DelayPolicy {
        DelayPolicy::from_config(&Config::default()).expect("defaults")
    }

    #[test]
    fn requests_are_checked_and_taken_out() {
        let p = policy();
        let now = 1_000_000;
        let mut m = Message::new("t", "b").with_delay_level(3);
        assert_eq!(p.take_request(&mut m, now).expect("level"), Some(Delay::Level(3)));
        assert!(m.properties.is_empty());
        let mut m = Message::new("t", "b").with_delay_ms(250);
        assert_eq!(p.take_request(&mut m, now).expect("ms"), Some(Delay::At(now + 250)));
        let mut m = Message::new("t", "b").with_deliver_at(now - 5);
        assert_eq!(p.take_request(&mut m, now).expect("past"), None);
        let mut m = Message::new("t", "b").with_delay_level(19);
        assert!(p.take_request(&mut m, now).is_err());
        let mut m = Message::new("t", "b").with_delay_ms(4 * 86_400_000);
        let err = p.take_request(&mut m, now).expect_err("beyond max_delay");
        assert!(err.to_string().contains("max_delay"), "{err}");
        let mut m = Message::new("t", "b").with_delay_ms(5).with_delay_level(1);
        assert!(p.take_request(&mut m, now).is_err());
        let mut m = Message::new("t", "b").with_property(PROP_DELAY_MS, "soon");
        assert!(p.take_request(&mut m, now).is_err());
    }

    #[test]
    fn park_and_unpark_round_trip_the_destination() {
        let p = policy();
        let mut m = Message::new("orders", "b").with_property("k", "v");
        let parked = p.park(&mut m, "orders", 3, Delay::Level(2), 10_000);
        assert_eq!(parked, Parked { topic: SCHEDULE_TOPIC, queue: 1, due: 15_000 });
        assert_eq!(m.topic, SCHEDULE_TOPIC);
        assert_eq!(DelayPolicy::unpark(&mut m), Some(("orders".to_string(), 3)));
        assert_eq!(m.topic, "orders");
        assert_eq!(m.properties.len(), 1);
        let mut m = Message::new("orders", "b");
        assert_eq!(p.park(&mut m, "orders", 0, Delay::At(77), 10).topic, TIMER_TOPIC);
    }
}
