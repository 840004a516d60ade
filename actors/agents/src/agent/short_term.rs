//! Short-term memory: a bounded window of recent notes per agent instance (kept in the
//! agent's snapshot), each with a TTL, and the consolidation policy that moves notes into
//! long-term memory — when saved explicitly, when important enough, or when repeated.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Notes kept at most.
pub const SHORT_TERM_LEN_MAX: usize = 64;
/// A note lives this long unless consolidated (1 hour).
pub const SHORT_TERM_TTL_MS: u64 = 3_600_000;
/// Importance from which a note is consolidated at once.
pub const CONSOLIDATE_IMPORTANCE: f32 = 0.7;
/// Repetitions after which a note is consolidated.
pub const CONSOLIDATE_REPEATS: u32 = 3;

/// One short-term note.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Note {
    /// The text.
    pub text: String,
    /// 0.0..=1.0.
    pub importance: f32,
    /// First seen, Unix ms.
    pub created_ms: u64,
    /// Last seen, Unix ms (the TTL counts from here).
    pub seen_ms: u64,
    /// Times it was noted.
    pub repeats: u32,
    /// Already moved to long-term memory.
    pub consolidated: bool,
}

/// Why a note goes to long-term memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Saved explicitly.
    Saved,
    /// Important enough.
    Important,
    /// Repeated often enough.
    Repeated,
}

/// The window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ShortTerm {
    notes: VecDeque<Note>,
}

fn normalise(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

impl ShortTerm {
    /// Notes `text`; returns it when it is now due for consolidation (once per note). A
    /// repeated text raises the existing note's count and importance instead of adding one.
    pub fn note(
        &mut self,
        text: &str,
        importance: f32,
        save: bool,
        now_ms: u64,
    ) -> Option<(Note, Reason)> {
        self.expire(now_ms);
        let key = normalise(text);
        if key.is_empty() {
            return None;
        }
        let index = match self.notes.iter().position(|n| normalise(&n.text) == key) {
            Some(i) => {
                let n = &mut self.notes[i];
                n.repeats += 1;
                n.seen_ms = now_ms;
                n.importance = n.importance.max(importance);
                i
            }
            None => {
                if self.notes.len() >= SHORT_TERM_LEN_MAX {
                    self.notes.pop_front();
                }
                self.notes.push_back(Note {
                    text: text.trim().to_string(),
                    importance: importance.clamp(0.0, 1.0),
                    created_ms: now_ms,
                    seen_ms: now_ms,
                    repeats: 1,
                    consolidated: false,
                });
                self.notes.len() - 1
            }
        };
        let n = &mut self.notes[index];
        if n.consolidated {
            return None;
        }
        let reason = if save {
            Reason::Saved
        } else if n.importance >= CONSOLIDATE_IMPORTANCE {
            Reason::Important
        } else if n.repeats >= CONSOLIDATE_REPEATS {
            Reason::Repeated
        } else {
            return None;
        };
        n.consolidated = true;
        Some((n.clone(), reason))
    }

    /// Drops notes not seen within the TTL.
    pub fn expire(&mut self, now_ms: u64) {
        self.notes
            .retain(|n| now_ms.saturating_sub(n.seen_ms) < SHORT_TERM_TTL_MS);
    }

    /// The latest `k` notes, newest first.
    pub fn recent(&self, k: usize) -> Vec<&Note> {
        self.notes.iter().rev().take(k).collect()
    }

    /// Notes held.
    pub fn len(&self) -> usize {
        self.notes.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.notes.is_empty()
    }
}

/// Reads what a message asks to remember: the text after "remember that" / "remember:"
/// / "note that" (case-insensitive), if any.
pub fn explicit_save(text: &str) -> Option<&str> {
    // Case-insensitive on the original text: lower-casing can change byte offsets.
    static MARKER: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(?i)(?:remember that |remember: |note that )")
            .expect("a valid built-in pattern")
    });
    let m = MARKER.find(text)?;
    let rest = text[m.end()..].trim();
    (!rest.is_empty()).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consolidates_once_by_save_importance_or_repetition_and_expires() {
        let mut st = ShortTerm::default();
        assert!(st.note("the build is green", 0.2, false, 0).is_none());
        assert!(st.note("The build is  green", 0.2, false, 1).is_none());
        let (n, why) = st
            .note("the build is green", 0.2, false, 2)
            .expect("third time");
        assert_eq!((why, n.repeats), (Reason::Repeated, 3));
        assert!(
            st.note("the build is green", 0.2, false, 3).is_none(),
            "only once"
        );
        assert_eq!(
            st.note("prod is down", 0.9, false, 4).map(|x| x.1),
            Some(Reason::Important)
        );
        assert_eq!(
            st.note("call bob", 0.1, true, 5).map(|x| x.1),
            Some(Reason::Saved)
        );
        assert_eq!(st.len(), 3);
        st.expire(SHORT_TERM_TTL_MS + 10);
        assert!(st.is_empty());
        for i in 0..(SHORT_TERM_LEN_MAX + 5) {
            st.note(&format!("n{i}"), 0.0, false, 100);
        }
        assert_eq!(st.len(), SHORT_TERM_LEN_MAX);
        assert_eq!(
            explicit_save("Please remember that the vault code is 12"),
            Some("the vault code is 12")
        );
        assert_eq!(explicit_save("nothing here"), None);
        assert_eq!(explicit_save("İ REMEMBER THAT éa"), Some("éa"));
    }
}
