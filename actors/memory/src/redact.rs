//! The optional privacy filter: masks secrets and personal data in a text before it is
//! stored or embedded. Patterns: API keys and tokens (OpenAI/Anthropic `sk-…`, AWS access key
//! ids, GitHub and Slack tokens, bearer tokens, private-key blocks), e-mail addresses, and card
//! numbers (13–19 digits, spaces or dashes allowed, checked with Luhn so that ordinary long
//! numbers survive). Each match becomes `[REDACTED:<kind>]`.

use std::sync::LazyLock;

use regex::Regex;

struct Pattern {
    kind: &'static str,
    re: Regex,
}

static PATTERNS: LazyLock<Vec<Pattern>> = LazyLock::new(|| {
    let p = |kind, re: &str| Pattern {
        kind,
        // The patterns are constants checked by the tests below.
        re: Regex::new(re).expect("a valid built-in pattern"),
    };
    vec![
        p(
            "private_key",
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
        ),
        p("api_key", r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_\-]{16,}"),
        p("api_key", r"\bAKIA[0-9A-Z]{16}\b"),
        p("api_key", r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),
        p("api_key", r"\bxox[baprs]-[A-Za-z0-9\-]{10,}"),
        p("api_key", r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]{20,}=*"),
        p(
            "email",
            r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b",
        ),
    ]
});

static CARD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(?:\d[ \-]?){12,18}\d\b").expect("a valid built-in pattern"));

fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// `text` with secrets and personal data masked, and how many were masked.
pub fn redact(text: &str) -> (String, usize) {
    let mut out = text.to_string();
    let mut count = 0;
    for p in PATTERNS.iter() {
        let replaced =
            p.re.replace_all(&out, |_: &regex::Captures<'_>| {
                count += 1;
                format!("[REDACTED:{}]", p.kind)
            })
            .into_owned();
        out = replaced;
    }
    let replaced = CARD
        .replace_all(&out, |c: &regex::Captures<'_>| {
            let m = &c[0];
            let digits: Vec<u32> = m.chars().filter_map(|ch| ch.to_digit(10)).collect();
            if (13..=19).contains(&digits.len()) && luhn(&digits) {
                count += 1;
                "[REDACTED:card]".to_string()
            } else {
                m.to_string()
            }
        })
        .into_owned();
    (replaced, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keys_emails_and_valid_card_numbers_only() {
        let text = "mail bob@example.com, key sk-proj-abcdefghijklmnop1234, aws AKIAABCDEFGHIJKLMNOP, \
                    card 4111 1111 1111 1111, order 1234567890123, Authorization: Bearer abcdefghijklmnopqrstuvwxyz";
        let (out, n) = redact(text);
        assert!(!out.contains("bob@example.com"));
        assert!(!out.contains("sk-proj"));
        assert!(!out.contains("AKIA"));
        assert!(!out.contains("4111"));
        assert!(!out.contains("abcdefghijklmnopqrstuvwxyz"));
        // Not a valid card number: kept.
        assert!(out.contains("1234567890123"));
        assert_eq!(n, 5, "{out}");
        assert!(out.contains("[REDACTED:email]") && out.contains("[REDACTED:card]"));
        let (same, none) = redact("nothing to hide here: 42 apples");
        assert_eq!(
            (same.as_str(), none),
            ("nothing to hide here: 42 apples", 0)
        );
    }
}
