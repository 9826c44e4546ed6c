//! Scheduled runbooks: when they run (expressions, time zones, windows)
//! and the clock they are measured with.

pub mod expr;

pub use expr::{parse_tz, ExprError, ScheduleExpr};
