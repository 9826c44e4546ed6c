//! Scheduled runbooks: when they run (expressions, time zones, windows)
//! and the clock they are measured with.

pub mod calendar;
pub mod expr;
pub mod scheduler;
pub mod windows;

pub use expr::{parse_tz, ExprError, ScheduleExpr};
pub use scheduler::{next_run, plan, Clock, Decision, Facts, ManualClock, Planned, SystemClock};
