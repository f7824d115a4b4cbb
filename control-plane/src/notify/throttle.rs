//! The quiet window: a tenant reminded within it is not reminded again until it ends.

use std::time::Duration;

use crate::clock::Time;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Remind now.
    Now,
    /// Hold what failed until then.
    HoldUntil(Time),
}

pub(crate) fn decide(last_reminder: Option<Time>, now: Time, window: Duration) -> Decision {
    match last_reminder {
        Some(last) if last.plus(window) > now => Decision::HoldUntil(last.plus(window)),
        _ => Decision::Now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn at(seconds: i64) -> Time {
        Time { seconds, nanos: 0 }
    }

    #[test]
    fn a_tenant_never_reminded_is_reminded_now() {
        assert_eq!(decide(None, at(1000), HOUR), Decision::Now);
    }

    #[test]
    fn a_tenant_reminded_within_the_window_is_held_until_it_ends() {
        assert_eq!(
            decide(Some(at(1000)), at(1000 + 3599), HOUR),
            Decision::HoldUntil(at(1000 + 3600))
        );
    }

    #[test]
    fn a_tenant_is_reminded_again_once_the_window_has_passed() {
        assert_eq!(decide(Some(at(1000)), at(1000 + 3600), HOUR), Decision::Now);
    }

    #[test]
    fn a_last_reminder_in_the_future_still_holds_until_its_window_ends() {
        // A clock stepped back must not open the window early.
        assert_eq!(
            decide(Some(at(5000)), at(1000), HOUR),
            Decision::HoldUntil(at(5000 + 3600))
        );
    }
}
