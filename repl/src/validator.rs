//! Tells reedline when a Rhai entry is unfinished (an open block, string or
//! call), so Enter continues it on the next line instead of running it.

use reedline::{ValidationResult, Validator};
use rhai::{Engine, ParseErrorType};

/// Multi-line input for Rhai.
pub struct RhaiValidator {
    engine: Engine,
}

impl Default for RhaiValidator {
    fn default() -> Self {
        Self {
            engine: Engine::new_raw(),
        }
    }
}

impl RhaiValidator {
    /// Whether `line` is a complete entry.
    pub fn is_complete(&self, line: &str) -> bool {
        match self.engine.compile(line) {
            Ok(_) => true,
            Err(e) => {
                !matches!(
                    e.err_type(),
                    ParseErrorType::UnexpectedEOF | ParseErrorType::MissingToken(..)
                ) || line.ends_with("\n\n")
            }
        }
    }
}

impl Validator for RhaiValidator {
    fn validate(&self, line: &str) -> ValidationResult {
        if self.is_complete(line) {
            ValidationResult::Complete
        } else {
            ValidationResult::Incomplete
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_blocks_continue_and_errors_complete() {
        let v = RhaiValidator::default();
        for (line, complete) in [
            ("let x = 1;", true),
            ("if x > 1 {", false),
            ("fn f(a) {\n a + 1", false),
            ("fn f(a) {\n a + 1\n}", true),
            ("let = 3;", true),
            ("if x {\n\n", true),
        ] {
            assert_eq!(v.is_complete(line), complete, "{line:?}");
        }
    }
}
