//! The raw codec: the line is the message, the level is guessed from its
//! first words.

use serde_json::Map;

use super::{guess_level, Decoded};

pub(super) fn decode(line: &str) -> Decoded {
    Decoded { ts: None, level: guess_level(line).to_string(), message: line.to_string(), fields: Map::new() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_line_and_guesses() {
        let d = decode("E0102 03:04:05.000 ERROR: connection reset");
        assert_eq!(d.message, "E0102 03:04:05.000 ERROR: connection reset");
        assert_eq!(d.level, "error");
        assert!(d.ts.is_none());
        assert!(d.fields.is_empty());
        assert_eq!(decode("").level, "info");
        assert_eq!(decode("panic: runtime error: index out of range").level, "fatal");
        assert_eq!(decode("[débogage] 日本語 Warning: été").level, "warn");
    }
}
