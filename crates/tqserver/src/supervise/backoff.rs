//! Restart delays: the first is `workers.restart_delay_ms`; each failure
//! in a row doubles it, up to the policy's cap; the policy says what
//! counts as recovering (and so starts the count again).
//!
//! The policies differ on purpose, and are named so a reader sees why:
//! php-fpm is one master that restarts its own children, so a master that
//! ran a minute was healthy; a php-cgi process is one of many, so one
//! finished request proves the pool works; a native instance that ran ten
//! seconds was not crash-looping.

use std::time::Duration;

/// When a failure streak is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reset {
    /// The process ran at least this long before it failed.
    AfterRunning(Duration),
    /// Something succeeded (the caller says what: a finished request).
    OnSuccess,
}

/// How delays grow and when they start over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The longest delay.
    pub max: Duration,
    /// What ends a streak.
    pub reset: Reset,
}

impl Policy {
    /// php-fpm's master: up to 30 s; a master that ran 60 s was healthy.
    pub const PHP_FPM: Self = Self {
        max: Duration::from_secs(30),
        reset: Reset::AfterRunning(Duration::from_secs(60)),
    };
    /// A process of TQServer's php-cgi pool: up to 5 s (the pool must
    /// come back quickly once the cause is gone); a finished request ends
    /// the streak.
    pub const PHP_CGI: Self = Self {
        max: Duration::from_secs(5),
        reset: Reset::OnSuccess,
    };
    /// A native worker's instance: up to 30 s; one that ran 10 s was not
    /// crash-looping. (The worker gives up after `workers.max_restarts`
    /// failures in a row: [`Backoff::failures`].)
    pub const NATIVE: Self = Self {
        max: Duration::from_secs(30),
        reset: Reset::AfterRunning(Duration::from_secs(10)),
    };
}

/// A failure streak and the delay it asks for.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    policy: Policy,
    failures: u32,
}

impl Backoff {
    /// Starts with no failure; the first delay is `first`.
    pub fn new(first: Duration, policy: Policy) -> Self {
        Self {
            first,
            policy,
            failures: 0,
        }
    }

    /// One more failure, by something that ran `ran` (`None` when that
    /// does not apply); returns the delay before the next try:
    /// `first · 2^(n−1)` after n failures in a row, at most the policy's
    /// cap.
    pub fn failed(&mut self, ran: Option<Duration>) -> Duration {
        if let (Reset::AfterRunning(stable), Some(ran)) = (self.policy.reset, ran) {
            if ran >= stable {
                self.failures = 0;
            }
        }
        self.failures = self.failures.saturating_add(1);
        self.first
            .saturating_mul(1 << (self.failures - 1).min(16))
            .min(self.policy.max)
    }

    /// The streak is over (a request finished, an instance is ready).
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The policy in force.
    pub fn policy(&self) -> Policy {
        self.policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_streaks_end_by_policy() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), Policy::PHP_CGI);
        let d: Vec<_> = (0..8).map(|_| b.failed(None)).collect();
        assert_eq!(
            d,
            [100, 200, 400, 800, 1600, 3200, 5000, 5000]
                .map(ms)
                .to_vec()
        );
        b.succeeded();
        assert_eq!(b.failed(None), ms(100));

        let mut f = Backoff::new(ms(100), Policy::PHP_FPM);
        for _ in 0..10 {
            f.failed(Some(ms(10)));
        }
        assert_eq!(f.failed(Some(ms(10))), Duration::from_secs(30));
        // A master that ran a minute starts a new streak.
        assert_eq!(f.failed(Some(Duration::from_secs(60))), ms(100));
        assert_eq!(f.failures(), 1);

        let mut n = Backoff::new(ms(100), Policy::NATIVE);
        n.failed(Some(ms(1)));
        assert_eq!(n.failed(Some(Duration::from_secs(9))), ms(200));
        assert_eq!(n.failed(Some(Duration::from_secs(10))), ms(100));
    }
}
