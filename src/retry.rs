//! The one retry policy: exponential backoff from a first delay, doubling up to a cap. The Slack
//! client, the token Secret writer, the claim and the controller's watches all wait with it;
//! each names its own first delay and cap here, so they can be read side by side.

use std::time::Duration;

/// Exponential backoff: `first`, then twice as long each time, never longer than `max`.
#[derive(Clone, Debug)]
pub struct Backoff {
    first: Duration,
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            next: first,
            max,
        }
    }

    /// A lost race on a grant's status: retried almost at once.
    pub const fn conflict() -> Self {
        Self::new(Duration::from_millis(20), Duration::from_millis(320))
    }

    /// Writing the token Secret through an API server outage.
    pub const fn secret_write() -> Self {
        Self::new(Duration::from_millis(250), Duration::from_secs(5))
    }

    /// Re-establishing the controller's watches: within seconds of an API server outage
    /// (kube's default goes to 30 s).
    pub const fn watch() -> Self {
        Self::new(Duration::from_millis(500), Duration::from_secs(5))
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(self.next_delay())
    }
}

impl kube::runtime::utils::Backoff for Backoff {
    fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<_> = (0..4).map(|_| backoff.next_delay()).collect();
        assert_eq!(
            delays,
            [100, 200, 350, 350].map(Duration::from_millis).to_vec()
        );
        kube::runtime::utils::Backoff::reset(&mut backoff);
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }
}
