//! Stop strings over streamed text: text is released as soon as it can no longer be the start of a stop string,
//! and a matched stop string (and anything after it) is never released.

/// Watches streamed text for stop strings.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Text received but not yet released, because it might begin a stop string.
    pending: String,
    stopped: bool,
}

impl StopMatcher {
    /// Empty stop strings are ignored.
    pub fn new(stops: &[String]) -> Self {
        StopMatcher { stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(), ..Default::default() }
    }

    /// Whether a stop string was seen.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Add streamed text; returns the text that is now safe to show.
    pub fn push(&mut self, text: &str) -> String {
        if self.stopped {
            return String::new();
        }
        self.pending.push_str(text);
        if let Some(at) = self.stops.iter().filter_map(|s| self.pending.find(s.as_str())).min() {
            self.stopped = true;
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return out;
        }
        // Hold back the longest tail of `pending` that is a proper prefix of some stop string.
        let hold = self
            .stops
            .iter()
            .map(|s| {
                (1..s.len().min(self.pending.len() + 1))
                    .rev()
                    .find(|&n| s.is_char_boundary(n) && self.pending.ends_with(&s[..n]))
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        let cut = self.pending.len() - hold;
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        out
    }

    /// The end of the stream: release whatever was held back.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut out = String::new();
        for p in pieces {
            out += &m.push(p);
        }
        out += &m.finish();
        (out, m.stopped())
    }

    #[test]
    fn stop_string_split_across_pieces_is_not_emitted() {
        assert_eq!(run(&["\nUSER:"], &["Hi", " there\nUS", "ER: more"]), ("Hi there".into(), true));
    }

    #[test]
    fn near_miss_is_released() {
        assert!(run(&["STOP"], &["ST", "OP", "!"]).1);
        assert_eq!(run(&["STOP"], &["ST", "AR"]), ("STAR".into(), false));
    }

    #[test]
    fn text_is_released_as_soon_as_it_is_safe() {
        let mut m = StopMatcher::new(&["xyz".to_string()]);
        assert_eq!(m.push("abcx"), "abc");
        assert_eq!(m.push("a"), "xa");
    }

    #[test]
    fn multibyte_stop_strings() {
        assert_eq!(run(&["。"], &["你好", "。再见"]), ("你好".into(), true));
        assert_eq!(run(&["é!"], &["caf", "é", "?"]), ("café?".into(), false));
    }

    #[test]
    fn no_stops_passes_everything() {
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
    }
}
