//! The decision, apart from any engine: where to go from the current count.
//!
//! `up` never lowers the count and `down` never raises it, whatever the bounds say (a trigger
//! for "load high" must not shrink a service that someone scaled above --max by hand); `to`
//! goes to its target, clamped. A clamp that leaves the count where it is, is a deliberate
//! no-op. `heal` goes back up to the count the last scaling decided (its caller reads it from
//! the state file): it never lowers the count, so after a scale-down (whose recorded count is
//! the lower one) the container that stopped is not brought back.

use std::fmt;

/// What the caller asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Action {
    /// Add STEP (default 1).
    Up,
    /// Remove STEP (default 1).
    Down,
    /// Go to TARGET.
    To,
    /// Set the CPU and memory limits (--cpus, --memory): vertical scaling.
    Resize,
    /// Restore the count the last scaling decided (none recorded: --min); never lower it.
    Heal,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Up => "up",
            Action::Down => "down",
            Action::To => "to",
            Action::Resize => "resize",
            Action::Heal => "heal",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// --min and --max (min ≤ max, checked when parsing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub min: u32,
    pub max: u32,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Scale to `to`; `detail` says whether a bound cut the step short.
    Scale { to: u32, detail: String },
    /// The bounds leave nothing to do.
    Clamped { detail: String },
    /// Already at the asked count.
    Noop { detail: String },
}

/// Decide for `action` with its number (`amount`: STEP, TARGET, or for heal the recorded
/// count) from `current`.
pub fn plan(action: Action, amount: u32, current: u32, b: Bounds) -> Plan {
    let wanted = match action {
        Action::Up => current.saturating_add(amount),
        Action::Down => current.saturating_sub(amount),
        Action::To | Action::Heal => amount,
        // Not a count: see crate::resize.
        Action::Resize => current,
    };
    if action == Action::Heal && wanted.clamp(b.min, b.max) <= current {
        return Plan::Noop {
            detail: format!(
                "{current} running and the last scaling decided {wanted}: nothing to heal"
            ),
        };
    }
    let to = wanted.clamp(b.min, b.max);
    let cut = if to == wanted {
        String::new()
    } else if to == b.max {
        format!("{wanted} is above max {}: clamped to {to}", b.max)
    } else {
        format!("{wanted} is below min {}: clamped to {to}", b.min)
    };
    let wrong_way = match action {
        Action::Up => to < current,
        Action::Down => to > current,
        Action::To | Action::Heal | Action::Resize => false,
    };
    if wrong_way {
        let why = match action {
            Action::Up => format!("{current} is already above max {}", b.max),
            _ => format!("{current} is already below min {}", b.min),
        };
        return Plan::Clamped {
            detail: format!("{why}; {action} never scales the other way"),
        };
    }
    if to == current {
        return if cut.is_empty() {
            Plan::Noop {
                detail: format!("already at {current}"),
            }
        } else {
            Plan::Clamped { detail: cut }
        };
    }
    Plan::Scale { to, detail: cut }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Bounds = Bounds { min: 1, max: 5 };

    fn to(p: Plan) -> Option<u32> {
        match p {
            Plan::Scale { to, .. } => Some(to),
            _ => None,
        }
    }

    #[test]
    fn steps_within_bounds() {
        assert_eq!(to(plan(Action::Up, 1, 1, B)), Some(2));
        assert_eq!(to(plan(Action::Up, 2, 1, B)), Some(3));
        assert_eq!(to(plan(Action::Down, 1, 3, B)), Some(2));
        assert_eq!(to(plan(Action::To, 4, 1, B)), Some(4));
    }

    #[test]
    fn bounds_cut_steps_short() {
        let p = plan(Action::Up, 3, 4, B);
        assert_eq!(
            p,
            Plan::Scale {
                to: 5,
                detail: "7 is above max 5: clamped to 5".into()
            }
        );
        assert_eq!(to(plan(Action::Down, 9, 3, B)), Some(1));
        assert_eq!(to(plan(Action::To, 0, 3, B)), Some(1));
        assert_eq!(to(plan(Action::To, 99, 3, B)), Some(5));
        // Below min, up goes at least to min.
        assert_eq!(
            to(plan(Action::Up, 1, 0, Bounds { min: 3, max: 5 })),
            Some(3)
        );
    }

    #[test]
    fn clamps_to_the_same_count_are_no_ops() {
        assert_eq!(
            plan(Action::Up, 1, 5, B),
            Plan::Clamped {
                detail: "6 is above max 5: clamped to 5".into()
            }
        );
        assert_eq!(
            plan(Action::Down, 1, 1, B),
            Plan::Clamped {
                detail: "0 is below min 1: clamped to 1".into()
            }
        );
        assert_eq!(
            plan(Action::To, 3, 3, B),
            Plan::Noop {
                detail: "already at 3".into()
            }
        );
        assert!(matches!(plan(Action::To, 9, 5, B), Plan::Clamped { .. }));
    }

    #[test]
    fn never_the_wrong_way() {
        // Someone scaled to 8 by hand: "up" must not bring it down to max.
        assert!(matches!(plan(Action::Up, 1, 8, B), Plan::Clamped { .. }));
        // Everything crashed: "down" must not start containers to reach min.
        assert!(matches!(plan(Action::Down, 1, 0, B), Plan::Clamped { .. }));
        // But down from above max goes down, as far as max at least.
        assert_eq!(to(plan(Action::Down, 1, 8, B)), Some(5));
    }

    #[test]
    fn heal_only_restores_upwards() {
        // One of three died: back to three.
        assert_eq!(to(plan(Action::Heal, 3, 2, B)), Some(3));
        // Everything died: back to the decided count, at least min.
        assert_eq!(to(plan(Action::Heal, 2, 0, B)), Some(2));
        assert_eq!(to(plan(Action::Heal, 0, 0, B)), Some(1));
        // A scale-down recorded the lower count: the stopped container stays stopped.
        assert_eq!(
            plan(Action::Heal, 2, 2, B),
            Plan::Noop {
                detail: "2 running and the last scaling decided 2: nothing to heal".into()
            }
        );
        // More than decided (by hand): heal never removes any.
        assert!(matches!(plan(Action::Heal, 2, 4, B), Plan::Noop { .. }));
        // A decision above today's max is restored only up to max.
        assert_eq!(to(plan(Action::Heal, 9, 2, B)), Some(5));
        assert!(matches!(plan(Action::Heal, 9, 5, B), Plan::Noop { .. }));
    }

    #[test]
    fn no_overflow() {
        let wide = Bounds {
            min: 0,
            max: u32::MAX,
        };
        assert_eq!(
            to(plan(Action::Up, u32::MAX, u32::MAX - 1, wide)),
            Some(u32::MAX)
        );
        assert_eq!(to(plan(Action::Down, u32::MAX, 3, wide)), Some(0));
    }
}
