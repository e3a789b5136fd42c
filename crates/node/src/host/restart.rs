//! The restart policy, pure: whether a module that ended is started again,
//! and how long its next start waits. No clocks are read here; callers pass
//! the time, so tests can use any `Instant` they like.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use crate::manifest::RestartPolicy;

/// The first backoff after a crash; it doubles with each crash counted.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The longest backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How many crashes a module may have in how long.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    /// Crashes tolerated within `window`; one more spends the budget.
    pub(crate) limit: usize,
    pub(crate) window: Duration,
}

/// What to do about an instance that ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It exited cleanly or on request: nothing to count.
    Clean,
    /// Start it again: now (`eager`, for `restart = "always"`), or at the next call.
    Restart { eager: bool },
    /// Its policy is `never`: only a hand load starts it again.
    Never,
    /// It crashed `crashes` times within the window: only a hand load starts it again.
    Spent { crashes: usize },
}

/// The recent crashes of one module.
#[derive(Debug, Default)]
pub(crate) struct Crashes(VecDeque<Instant>);

impl Crashes {
    /// Counts an end at `now` and judges it under `policy` and `budget`.
    pub(crate) fn judge(
        &mut self,
        crashed: bool,
        policy: RestartPolicy,
        budget: Budget,
        now: Instant,
    ) -> Verdict {
        if !crashed {
            return Verdict::Clean;
        }
        self.0.push_back(now);
        while self.0.front().is_some_and(|t| now.duration_since(*t) > budget.window) {
            self.0.pop_front();
        }
        match policy {
            RestartPolicy::Never => Verdict::Never,
            _ if self.0.len() > budget.limit => Verdict::Spent { crashes: self.0.len() },
            policy => Verdict::Restart { eager: policy == RestartPolicy::Always },
        }
    }

    /// How long a start at `now` waits: a delay that doubles with each
    /// crash counted (100 ms, 200 ms, … up to 5 s), counted from the last.
    pub(crate) fn backoff(&self, now: Instant) -> Duration {
        let Some(last) = self.0.back() else { return Duration::ZERO };
        let doublings = self.0.len().min(7) as u32 - 1;
        let delay = (FIRST_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF);
        delay.saturating_sub(now.saturating_duration_since(*last))
    }

    /// Forgets every crash, as a hand unload does.
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Budget = Budget { limit: 5, window: Duration::from_secs(60) };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_clean_exit_is_not_counted() {
        let (mut crashes, now) = (Crashes::default(), Instant::now());
        for policy in [RestartPolicy::Never, RestartPolicy::OnFailure, RestartPolicy::Always] {
            assert_eq!(crashes.judge(false, policy, BUDGET, now), Verdict::Clean);
        }
        assert_eq!(crashes.backoff(now), Duration::ZERO);
    }

    #[test]
    fn a_crash_restarts_by_policy() {
        let now = Instant::now();
        let judge = |policy| Crashes::default().judge(true, policy, BUDGET, now);
        assert_eq!(judge(RestartPolicy::OnFailure), Verdict::Restart { eager: false });
        assert_eq!(judge(RestartPolicy::Always), Verdict::Restart { eager: true });
        assert_eq!(judge(RestartPolicy::Never), Verdict::Never);
    }

    #[test]
    fn one_crash_more_than_the_budget_spends_it() {
        let (mut crashes, t0) = (Crashes::default(), Instant::now());
        for i in 0..5 {
            let verdict = crashes.judge(true, RestartPolicy::Always, BUDGET, t0 + ms(i));
            assert_eq!(verdict, Verdict::Restart { eager: true }, "crash {i}");
        }
        assert_eq!(
            crashes.judge(true, RestartPolicy::Always, BUDGET, t0 + ms(5)),
            Verdict::Spent { crashes: 6 }
        );
    }

    #[test]
    fn crashes_older_than_the_window_are_forgotten() {
        let (mut crashes, t0) = (Crashes::default(), Instant::now());
        for i in 0..5 {
            crashes.judge(true, RestartPolicy::OnFailure, BUDGET, t0 + ms(i));
        }
        // A minute and more after the first five, the sixth is the only one in the window.
        let later = t0 + Duration::from_secs(61);
        assert_eq!(
            crashes.judge(true, RestartPolicy::OnFailure, BUDGET, later),
            Verdict::Restart { eager: false }
        );
        assert_eq!(
            crashes.judge(true, RestartPolicy::OnFailure, BUDGET, later),
            Verdict::Restart { eager: false }
        );
    }

    #[test]
    fn backoff_doubles_from_the_last_crash_up_to_five_seconds() {
        let (mut crashes, t0) = (Crashes::default(), Instant::now());
        let mut seen = Vec::new();
        for _ in 0..8 {
            crashes.judge(true, RestartPolicy::Always, Budget { limit: 100, ..BUDGET }, t0);
            seen.push(crashes.backoff(t0));
        }
        let expected = [100, 200, 400, 800, 1600, 3200, 5000, 5000].map(ms);
        assert_eq!(seen, expected);
        // Time since the last crash counts towards the wait.
        assert_eq!(crashes.backoff(t0 + ms(1000)), ms(4000));
        assert_eq!(crashes.backoff(t0 + Duration::from_secs(10)), Duration::ZERO);
        crashes.clear();
        assert_eq!(crashes.backoff(t0), Duration::ZERO);
    }
}
