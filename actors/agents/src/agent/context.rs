//! Fitting an agent's context to its model's window.
//!
//! Before every LLM call the agent sends: the system prompt (always whole), the retrieved
//! memory (trimmed to its share), the running summary of older turns, and the latest turns.
//! The usable window ([`ContextWindow::usable`]) is split as:
//! - the system prompt: what it takes, at most half (a longer one is refused with a clear
//!   error rather than sent);
//! - memory snippets: at most a fifth, best-ranked first;
//! - the running summary: a fifth, reserved;
//! - the conversation: the rest.
//!
//! When the conversation outgrows its share (or [`CONVERSATION_LEN_MAX`] messages), the
//! oldest whole turns are folded into the running summary by the model itself, down to half
//! the share, so compaction happens once every several turns rather than on each. A summariser
//! that fails or times out leaves the summary as it was and the old turns are dropped
//! (truncation), with an event saying so: an agent never gets stuck on its own history. The
//! current turn is never folded; its longest tool results are cut instead, and a message that
//! alone does not fit is refused.
//!
//! Only what is sent is compacted: every task's input and answer stay in the agent's
//! transcript (`super::transcript`).

use std::time::Duration;

use aios_llm::tokens::{ContextWindow, MESSAGE_OVERHEAD_TOKENS, Tokenizer};
use aios_llm::{ChatMessage, Role};

/// The most messages an agent keeps in its working conversation; more are folded into the
/// summary like an overlong conversation.
pub const CONVERSATION_LEN_MAX: usize = 256;
/// How long the summariser may take before the agent truncates instead.
pub const SUMMARY_TIMEOUT: Duration = Duration::from_secs(60);
/// The summariser's instructions; the scripted provider recognises them.
pub const SUMMARY_PROMPT: &str = "You maintain the running summary of a long conversation \
between a user and an AI agent. Write a new summary that merges the summary so far with the \
new part of the conversation. Keep facts, names, numbers, decisions, open questions and the \
user's preferences; drop small talk. Write plain prose, no preamble.";

/// How the usable window is shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Budgets {
    /// Memory snippets, at most.
    pub memory: u64,
    /// The running summary, reserved.
    pub summary: u64,
    /// The usable window.
    usable: u64,
    /// The system prompt's tokens.
    system: u64,
}

impl Budgets {
    /// The budgets of a window, given the system prompt's tokens.
    ///
    /// # Errors
    /// A system prompt that takes more than half the usable window.
    pub(crate) fn new(window: ContextWindow, system_tokens: u64) -> Result<Self, String> {
        let usable = window.usable();
        if system_tokens > usable / 2 {
            return Err(format!(
                "the system prompt takes about {system_tokens} tokens, more than half of the \
                 {usable} a prompt may use in this model's window of {}",
                window.len
            ));
        }
        Ok(Self {
            memory: usable / 5,
            summary: usable / 5,
            usable,
            system: system_tokens,
        })
    }

    /// The most the summariser's request may take (its answer is reserved too).
    pub(crate) fn summariser_input(&self) -> u64 {
        self.usable.saturating_sub(self.summary)
    }

    /// The conversation's share once memory took `memory_used` tokens.
    pub(crate) fn conversation_after(&self, memory_used: u64) -> u64 {
        self.usable
            .saturating_sub(self.system)
            .saturating_sub(memory_used.min(self.memory))
            .saturating_sub(self.summary)
    }
}

/// The memory snippets that fit `budget` tokens, best-ranked (first) kept, and the tokens
/// they take as the prompt lists them.
pub(crate) fn trim_snippets(
    snippets: Vec<String>,
    budget: u64,
    tok: Tokenizer,
) -> (Vec<String>, u64) {
    let mut used = 0;
    let mut kept = Vec::new();
    for s in snippets {
        let cost = tok.count(&s) + 1;
        if used + cost > budget {
            break;
        }
        used += cost;
        kept.push(s);
    }
    (kept, used)
}

/// Where the kept tail of `conversation` starts so that it takes at most `keep` tokens and
/// at most `len_max` messages: the start of a turn (a user message), never after
/// `turn_start` (the current turn is kept whole). 0 when nothing can go.
pub(crate) fn cut_point(
    conversation: &[ChatMessage],
    keep: u64,
    len_max: usize,
    turn_start: usize,
    tok: Tokenizer,
) -> usize {
    let turn_start = turn_start.min(conversation.len());
    let mut best = turn_start;
    let mut acc = tok.count_messages(&conversation[turn_start..]);
    for i in (0..turn_start).rev() {
        acc += tok.count_message(&conversation[i]);
        if acc > keep || conversation.len() - i > len_max {
            break;
        }
        if conversation[i].role == Role::User {
            best = i;
        }
    }
    best
}

/// The conversation as plain text for the summariser.
pub(crate) fn render(messages: &[ChatMessage]) -> String {
    let mut out = String::new();
    for m in messages {
        let who = match m.role {
            Role::System => "System",
            Role::User => "User",
            Role::Assistant => "Assistant",
            Role::Tool => "Tool result",
        };
        if !m.content.is_empty() {
            out.push_str(who);
            out.push_str(": ");
            out.push_str(&m.content);
            out.push('\n');
        }
        for c in &m.tool_calls {
            out.push_str("Assistant called ");
            out.push_str(&c.name);
            out.push('(');
            out.push_str(&c.arguments);
            out.push_str(")\n");
        }
    }
    out
}

/// Which end of a text to keep when cutting it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Keep {
    /// The beginning.
    Head,
    /// The end.
    Tail,
}

const CUT_MARK: &str = "[…]";

/// `text` cut to at most `max` tokens (with a mark where it was cut), keeping `keep`.
pub(crate) fn cut_text(text: &str, max: u64, keep: Keep, tok: Tokenizer) -> String {
    if tok.count(text) <= max {
        return text.to_string();
    }
    let room = max.saturating_sub(tok.count(CUT_MARK) + 1);
    let bounds: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain([text.len()])
        .collect();
    let piece = |n: usize| match keep {
        Keep::Head => &text[..bounds[n]],
        Keep::Tail => &text[bounds[bounds.len() - 1 - n]..],
    };
    // The most characters whose tokens fit: counts grow with the characters kept.
    let (mut lo, mut hi) = (0usize, bounds.len() - 1);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if tok.count(piece(mid)) <= room {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    match keep {
        Keep::Head => format!("{} {CUT_MARK}", piece(lo)),
        Keep::Tail => format!("{CUT_MARK} {}", piece(lo)),
    }
}

/// The summariser's request: the summary so far and the turns to fold in, cut to
/// `input_budget` tokens (the latest part of the turns kept), asking for at most
/// `summary_budget` tokens.
pub(crate) fn summary_messages(
    previous: &str,
    old: &[ChatMessage],
    input_budget: u64,
    summary_budget: u64,
    tok: Tokenizer,
) -> Vec<ChatMessage> {
    let previous = if previous.is_empty() {
        "(none yet)"
    } else {
        previous
    };
    let head = format!("Summary so far:\n{previous}\n\nNew part of the conversation:\n");
    let room = input_budget.saturating_sub(tok.count(&head) + MESSAGE_OVERHEAD_TOKENS);
    let turns = cut_text(&render(old), room, Keep::Tail, tok);
    // Words run about 1.3 tokens in English.
    let words = (summary_budget * 3 / 4).max(16);
    vec![
        ChatMessage::system(format!("{SUMMARY_PROMPT} Use at most {words} words.")),
        ChatMessage::user(format!("{head}{turns}")),
    ]
}

/// Cuts the longest tool results of `turn` (the current turn) until the turn takes at most
/// `budget` tokens; returns whether it does.
pub(crate) fn shrink_tool_results(turn: &mut [ChatMessage], budget: u64, tok: Tokenizer) -> bool {
    loop {
        let total = tok.count_messages(turn);
        if total <= budget {
            return true;
        }
        let Some((i, size)) = turn
            .iter()
            .enumerate()
            .filter(|(_, m)| m.role == Role::Tool)
            .map(|(i, m)| (i, tok.count(&m.content)))
            .max_by_key(|&(_, size)| size)
        else {
            return false;
        };
        let excess = total - budget;
        if size <= 8 {
            return false;
        }
        let target = size.saturating_sub(excess).max(8).min(size - 1);
        turn[i].content = cut_text(&turn[i].content, target, Keep::Head, tok);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Tokenizer = Tokenizer::Words;

    fn turns(n: usize, words: usize) -> Vec<ChatMessage> {
        let text = |i: usize| vec![format!("w{i}"); words].join(" ");
        (0..n)
            .flat_map(|i| [ChatMessage::user(text(i)), ChatMessage::assistant(text(i))])
            .collect()
    }

    #[test]
    fn budgets_share_the_window_and_refuse_a_huge_system_prompt() {
        let w = ContextWindow {
            len: 10_000,
            tokenizer: W,
        };
        let b = Budgets::new(w, 100).expect("fits");
        let usable = w.usable();
        assert_eq!(b.memory, usable / 5);
        assert_eq!(b.conversation_after(0), usable - 100 - usable / 5);
        assert_eq!(
            b.conversation_after(u64::MAX),
            usable - 100 - 2 * (usable / 5)
        );
        let e = Budgets::new(w, usable).unwrap_err();
        assert!(e.contains("system prompt"), "{e}");
    }

    #[test]
    fn snippets_are_kept_in_rank_order_within_budget() {
        let s = vec!["a b c".to_string(), "d e".into(), "f".into()];
        let (kept, used) = trim_snippets(s.clone(), 7, W);
        assert_eq!(kept, vec!["a b c".to_string(), "d e".into()]);
        assert_eq!(used, 7);
        assert!(trim_snippets(s, 3, W).0.is_empty());
    }

    #[test]
    fn the_cut_falls_on_a_turn_start_and_keeps_the_current_turn() {
        let c = turns(10, 10); // each message 14 tokens, each turn 28
        let last_turn = c.len() - 2;
        // Room for three turns.
        let cut = cut_point(&c, 3 * 28, usize::MAX, last_turn, W);
        assert_eq!(cut, c.len() - 6);
        assert_eq!(c[cut].role, Role::User);
        // No room at all: the current turn stays.
        assert_eq!(cut_point(&c, 0, usize::MAX, last_turn, W), last_turn);
        // The message bound: at most 4 messages kept.
        assert_eq!(cut_point(&c, u64::MAX, 4, last_turn, W), c.len() - 4);
        // Everything fits.
        assert_eq!(cut_point(&c, u64::MAX, usize::MAX, last_turn, W), 0);
    }

    #[test]
    fn cutting_text_keeps_the_asked_end_within_budget() {
        let text = (0..100)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let head = cut_text(&text, 10, Keep::Head, W);
        assert!(W.count(&head) <= 10, "{head}");
        assert!(head.starts_with("w0 w1") && head.ends_with(CUT_MARK));
        let tail = cut_text(&text, 10, Keep::Tail, W);
        assert!(W.count(&tail) <= 10 && tail.ends_with("w99"), "{tail}");
        assert_eq!(cut_text("short", 10, Keep::Head, W), "short");
        let est = cut_text(&"日本語".repeat(50), 20, Keep::Head, Tokenizer::Estimate);
        assert!(Tokenizer::Estimate.count(&est) <= 20);
    }

    #[test]
    fn the_summary_request_fits_its_budget() {
        let old = turns(50, 20);
        let m = summary_messages("earlier facts", &old, 200, 50, W);
        assert_eq!(m.len(), 2);
        assert!(m[0].content.starts_with(SUMMARY_PROMPT));
        assert!(m[1].content.contains("earlier facts"));
        assert!(W.count_messages(&m[1..]) <= 200);
        // The latest turn survives the cut.
        assert!(m[1].content.contains("w49"));
    }

    #[test]
    fn the_scripted_provider_answers_the_summariser_briefly() {
        use aios_llm::ChatRequest;
        use aios_llm::scripted::{Script, ScriptedProvider};
        let messages = summary_messages("", &turns(40, 30), 5000, 100, W);
        let answer = ScriptedProvider::new("s", Script::default()).answer(&ChatRequest {
            model: "demo".into(),
            messages,
            ..ChatRequest::default()
        });
        let text = answer.message.content;
        assert!(text.contains("summary of 80 lines"), "{text}");
        assert!(W.count(&text) < 40, "{text}");
    }

    #[test]
    fn tool_results_of_the_current_turn_are_cut_to_fit() {
        let mut turn = vec![
            ChatMessage::user("look it up"),
            ChatMessage::tool_result("c1", vec!["x"; 500].join(" ")),
            ChatMessage::tool_result("c2", vec!["y"; 50].join(" ")),
        ];
        assert!(shrink_tool_results(&mut turn, 120, W));
        assert!(W.count_messages(&turn) <= 120);
        assert_eq!(turn[0].content, "look it up");
        let mut huge = vec![ChatMessage::user(vec!["z"; 500].join(" "))];
        assert!(!shrink_tool_results(&mut huge, 120, W));
    }
}
