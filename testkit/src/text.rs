//! Text helpers shared by the protocols: what counts as prompt text, word counting, chunking.

use serde_json::Value;

/// Pushes every text of a message content: a string, the `text` of blocks, and (recursively) the
/// `content` of blocks such as Anthropic `tool_result`.
pub(crate) fn collect_content<'a>(content: &'a Value, out: &mut Vec<&'a str>) {
    match content {
        Value::String(text) => out.push(text),
        Value::Array(blocks) => {
            for block in blocks {
                match block {
                    Value::String(text) => out.push(text),
                    Value::Object(fields) => {
                        if let Some(Value::String(text)) = fields.get("text") {
                            out.push(text);
                        }
                        if let Some(inner) = fields.get("content") {
                            collect_content(inner, out);
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// The prompt texts of a chat request: every message content plus the Anthropic `system`.
pub(crate) fn prompt_texts(body: &Value) -> Vec<&str> {
    let mut out = Vec::new();
    collect_content(&body["system"], &mut out);
    if let Some(messages) = body["messages"].as_array() {
        for message in messages {
            collect_content(&message["content"], &mut out);
        }
    }
    out
}

/// The text of the last `role: "user"` message (block texts joined by a space).
pub(crate) fn last_user_text(body: &Value) -> String {
    let Some(messages) = body["messages"].as_array() else {
        return String::new();
    };
    let Some(last) = messages.iter().rev().find(|m| m["role"] == "user") else {
        return String::new();
    };
    let mut out = Vec::new();
    collect_content(&last["content"], &mut out);
    out.join(" ")
}

/// Whitespace-separated words.
pub(crate) fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

/// Splits text into one-word chunks that keep their whitespace, so that concatenating them
/// restores the text exactly ("a  b c" → "a  ", "b ", "c").
pub(crate) fn word_chunks(text: &str) -> Vec<&str> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut prev_ws = false;
    for (i, c) in text.char_indices() {
        let ws = c.is_whitespace();
        if !ws && prev_ws && i > start {
            chunks.push(&text[start..i]);
            start = i;
        }
        prev_ws = ws;
    }
    if start < text.len() {
        chunks.push(&text[start..]);
    }
    chunks
}

/// Splits text into fragments of at most `max_chars` characters.
pub(crate) fn fragments(text: &str, max_chars: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut count = 0;
    for (i, _) in text.char_indices() {
        if count == max_chars {
            out.push(&text[start..i]);
            start = i;
            count = 0;
        }
        count += 1;
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// Seconds as text with at most 3 decimals and no trailing zeros ("0.05", "2", "1.5").
pub(crate) fn format_secs(secs: f64) -> String {
    let secs = if secs.is_finite() && secs > 0.0 {
        secs
    } else {
        0.0
    };
    let text = format!("{secs:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text.is_empty() {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

/// FNV-1a 64-bit hash.
pub(crate) fn fnv1a(seed: u8, bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in std::iter::once(&seed).chain(bytes) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// A deterministic unit vector of dimension 8 for a text.
pub(crate) fn embedding(text: &str) -> Vec<f64> {
    let raw: Vec<f64> = (0u8..8)
        .map(|j| {
            let h = fnv1a(j, text.as_bytes());
            // Top 53 bits → [0, 1) → [-1, 1).
            (h >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        raw.iter().map(|x| x / norm).collect()
    } else {
        raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_chunks_restore_text() {
        for text in ["", "a", "hello world", "  lead  and trail  ", "é ü\nx\ty"] {
            let chunks = word_chunks(text);
            assert_eq!(chunks.concat(), text);
            assert!(chunks.iter().all(|c| words(c) <= 1), "{chunks:?}");
        }
        assert_eq!(word_chunks("a  b c"), vec!["a  ", "b ", "c"]);
    }

    #[test]
    fn fragments_are_short_and_complete() {
        let text = r#"{"city":"Zürich","n":1}"#;
        let frags = fragments(text, 4);
        assert_eq!(frags.concat(), text);
        assert!(frags.iter().all(|f| f.chars().count() <= 4));
        assert!(fragments("", 4).is_empty());
    }

    #[test]
    fn secs_format() {
        assert_eq!(format_secs(0.05), "0.05");
        assert_eq!(format_secs(2.0), "2");
        assert_eq!(format_secs(1.5), "1.5");
        assert_eq!(format_secs(0.0), "0");
        assert_eq!(format_secs(0.1234), "0.123");
    }

    #[test]
    fn prompt_text_covers_blocks_and_tool_results() {
        let body = serde_json::json!({
            "system": "be brief",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "one two"}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"a": "x y"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "three"}]},
                {"role": "tool", "tool_call_id": "t", "content": "four five"}
            ]
        });
        let texts = prompt_texts(&body);
        assert_eq!(texts.iter().map(|t| words(t)).sum::<usize>(), 7);
        assert_eq!(last_user_text(&body), "three");
    }
}
