//! How long to wait before the next attempt to reach a peer: doubling
//! from a first delay up to a cap, reset after a success.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Backoff {
        assert!(first <= max, "the first delay is at most the cap");
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// Reconnecting to a server: 100 ms doubling to 2 s.
    pub fn reconnect() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(2))
    }

    /// The delay to wait now; the one after is twice as long, up to the
    /// cap.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// The delay the next call returns, without advancing.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Whether the delays have reached the cap.
    pub fn at_max(&self) -> bool {
        self.next >= self.max
    }

    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_to_the_cap_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<u128> = (0..4).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350]);
        assert!(backoff.at_max());
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }
}
