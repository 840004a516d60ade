//! The offline `scripted` provider: deterministic answers from a script, for examples, the
//! quickstart when no LLM is configured, and tests of agent logic.
//!
//! Every text it produces starts with [`SCRIPTED_LABEL`], so nobody mistakes it for a model.
//! It is stateless: the answer depends only on the request (rules are matched against the
//! last message and the number of assistant turns so far), so a restarted agent gets the
//! same answers.
//!
//! Without a matching rule it:
//! - answers a tool result by quoting it;
//! - with a `calculator` tool offered and an arithmetic expression in the last user message,
//!   calls the tool;
//! - asked for JSON by a system prompt that mentions a plan, returns a two-step plan
//!   (`research`, then `write`) for the task;
//! - asked by an agent for its running summary, returns a short one quoting the latest
//!   words;
//! - otherwise echoes the last user message.

use serde::{Deserialize, Serialize};

use super::{
    ChatMessage, ChatRequest, ChatResponse, Delta, DeltaSink, FinishReason, LlmError, Provider,
    Role, ToolCall, Usage, word_count,
};

/// The prefix of every text the scripted provider writes.
pub const SCRIPTED_LABEL: &str = "[scripted]";
/// The most rules a script may hold.
pub const SCRIPT_RULES_MAX: usize = 1024;
/// How agents' summariser prompts start (`agent::context::SUMMARY_PROMPT`).
const SUMMARY_PROMPT_START: &str = "You maintain the running summary of a long conversation";
/// Words of the conversation a scripted summary quotes.
const SUMMARY_WORDS: usize = 24;

/// When a [`ScriptRule`] applies. All given conditions must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScriptMatch {
    /// The last user message contains this text.
    pub user_contains: Option<String>,
    /// The system prompt contains this text.
    pub system_contains: Option<String>,
    /// The last message is a tool result containing this text.
    pub tool_result_contains: Option<String>,
    /// The number of assistant messages already in the conversation.
    pub turn: Option<u32>,
}

/// A scripted tool call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptToolCall {
    /// The tool's name.
    pub name: String,
    /// Its arguments as JSON text (written as is, so a test can send malformed JSON).
    pub arguments: String,
}

/// One rule: a condition and the answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptRule {
    /// When it applies.
    #[serde(default)]
    pub when: ScriptMatch,
    /// The answer's text (the label is prepended).
    #[serde(default)]
    pub text: String,
    /// Tool calls to request.
    #[serde(default)]
    pub tool_calls: Vec<ScriptToolCall>,
}

/// A script: rules tried in order; the first match answers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// The rules.
    #[serde(default)]
    pub rules: Vec<ScriptRule>,
}

impl Script {
    /// Parses a script from TOML (`[[rules]]` tables with `when`, `text`, `tool_calls`).
    ///
    /// # Errors
    /// The TOML error, or too many rules.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let script: Self = toml::from_str(text).map_err(|e| format!("invalid script: {e}"))?;
        if script.rules.len() > SCRIPT_RULES_MAX {
            return Err(format!(
                "a script holds at most {SCRIPT_RULES_MAX} rules, got {}",
                script.rules.len()
            ));
        }
        Ok(script)
    }
}

/// The offline, deterministic provider.
#[derive(Debug)]
pub struct ScriptedProvider {
    name: String,
    script: Script,
}

impl ScriptedProvider {
    /// A scripted provider called `name`.
    pub fn new(name: impl Into<String>, script: Script) -> Self {
        Self {
            name: name.into(),
            script,
        }
    }

    /// The answer to `request`, without streaming.
    pub fn answer(&self, request: &ChatRequest) -> ChatResponse {
        let last = request.messages.last();
        let last_user = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map_or("", |m| m.content.as_str());
        let system: String = request
            .messages
            .iter()
            .filter(|m| m.role == Role::System)
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        let turn = request
            .messages
            .iter()
            .filter(|m| m.role == Role::Assistant)
            .count() as u32;
        let last_tool = last.filter(|m| m.role == Role::Tool);
        let rule = self.script.rules.iter().find(|r| {
            let w = &r.when;
            w.user_contains
                .as_ref()
                .is_none_or(|t| last_user.contains(t.as_str()))
                && w.system_contains
                    .as_ref()
                    .is_none_or(|t| system.contains(t.as_str()))
                && w.tool_result_contains
                    .as_ref()
                    .is_none_or(|t| last_tool.is_some_and(|m| m.content.contains(t.as_str())))
                && w.turn.is_none_or(|n| n == turn)
        });
        let (text, calls) = match rule {
            Some(r) => (
                labelled(&r.text),
                r.tool_calls
                    .iter()
                    .map(|c| (c.name.clone(), c.arguments.clone()))
                    .collect(),
            ),
            None => default_answer(request, last_user, &system, last_tool),
        };
        let tool_calls: Vec<ToolCall> = calls
            .into_iter()
            .enumerate()
            .map(|(i, (name, arguments))| ToolCall {
                id: format!("scripted-{turn}-{i}"),
                name,
                arguments,
            })
            .collect();
        let input_tokens = request
            .messages
            .iter()
            .map(|m| word_count(&m.content))
            .sum::<u64>();
        let output_tokens = word_count(&text) + tool_calls.len() as u64;
        ChatResponse {
            finish: if tool_calls.is_empty() {
                FinishReason::Stop
            } else {
                FinishReason::ToolCalls
            },
            message: ChatMessage {
                role: Role::Assistant,
                content: text,
                tool_calls,
                tool_call_id: None,
            },
            usage: Usage {
                input_tokens,
                output_tokens,
                reported: true,
            },
            model: request.model.clone(),
        }
    }
}

fn labelled(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!("{SCRIPTED_LABEL} {text}")
    }
}

type Calls = Vec<(String, String)>;

fn default_answer(
    request: &ChatRequest,
    last_user: &str,
    system: &str,
    last_tool: Option<&ChatMessage>,
) -> (String, Calls) {
    if let Some(result) = last_tool {
        return (
            labelled(&format!("The tool returned: {}", result.content)),
            Vec::new(),
        );
    }
    let has_calculator = request.tools.iter().any(|t| t.name == "calculator");
    if has_calculator && let Some(expr) = arithmetic_in(last_user) {
        let args = serde_json::json!({ "expression": expr }).to_string();
        return (String::new(), vec![("calculator".to_string(), args)]);
    }
    if request.json_mode && system.to_ascii_lowercase().contains("plan") {
        let task = section(last_user, "Task: ").unwrap_or(last_user.trim());
        let plan = serde_json::json!({"steps": [
            {"id": "research", "description": format!("Research: {task}"), "capability": "research", "depends_on": []},
            {"id": "write", "description": format!("Write the answer to: {task}"), "capability": "write", "depends_on": ["research"]},
        ]});
        return (plan.to_string(), Vec::new());
    }
    // An agent folding older turns into its running summary.
    if system.starts_with(SUMMARY_PROMPT_START) {
        let new_part = last_user
            .split_once("New part of the conversation:\n")
            .map_or(last_user, |(_, rest)| rest);
        let lines = new_part.lines().count();
        let words: Vec<&str> = last_user.split_whitespace().collect();
        let tail = words[words.len().saturating_sub(SUMMARY_WORDS)..].join(" ");
        return (
            labelled(&format!("summary of {lines} lines, ending: {tail}")),
            Vec::new(),
        );
    }
    // Orchestration prompts: a step, or composing the answer from the steps.
    if let Some(step) = last_user
        .find("Your step (")
        .and_then(|at| section(&last_user[at..], "): "))
    {
        return (labelled(&format!("done: {step}")), Vec::new());
    }
    if last_user.starts_with("Every step of the plan is done") {
        let task = section(last_user, "Task: ").unwrap_or("the task");
        let results = last_user.matches("\n## ").count();
        return (
            labelled(&format!(
                "answer to {task:?}, composed from {results} step results"
            )),
            Vec::new(),
        );
    }
    (
        labelled(&format!("{} received: {last_user}", request.model)),
        Vec::new(),
    )
}

/// The text after the first `marker`, up to the next blank line (or line end for a step).
fn section<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
    let start = text.find(marker)? + marker.len();
    let rest = &text[start..];
    let end = rest
        .find("\n\n")
        .or_else(|| rest.find('\n'))
        .unwrap_or(rest.len());
    Some(rest[..end].trim()).filter(|s| !s.is_empty())
}

/// The longest run of characters that looks like arithmetic and holds an operator.
fn arithmetic_in(text: &str) -> Option<String> {
    let is_expr = |c: char| c.is_ascii_digit() || " +-*/().^%".contains(c);
    let mut best = "";
    for candidate in text.split(|c: char| !is_expr(c)) {
        let t = candidate.trim();
        if t.len() > best.len()
            && t.chars().any(|c| c.is_ascii_digit())
            && t.chars().any(|c| "+-*/^%".contains(c))
        {
            best = t;
        }
    }
    (!best.is_empty()).then(|| best.to_string())
}

#[async_trait::async_trait]
impl Provider for ScriptedProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn chat(
        &self,
        request: &ChatRequest,
        stream: Option<DeltaSink>,
    ) -> Result<ChatResponse, LlmError> {
        let response = self.answer(request);
        if let Some(sink) = stream {
            for word in response.message.content.split_inclusive(' ') {
                let _ = sink.send(Delta::Text(word.to_string())).await;
            }
            for c in &response.message.tool_calls {
                let _ = sink
                    .send(Delta::ToolCallStarted {
                        id: c.id.clone(),
                        name: c.name.clone(),
                    })
                    .await;
            }
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ToolSpec;

    fn req(messages: Vec<ChatMessage>) -> ChatRequest {
        ChatRequest {
            model: "demo".into(),
            messages,
            ..ChatRequest::default()
        }
    }

    #[test]
    fn rules_match_in_order_and_answers_are_labelled() {
        let script = Script::from_toml(
            r#"
            [[rules]]
            when = { user_contains = "weather", turn = 0 }
            tool_calls = [{ name = "weather", arguments = '{"city":"Oslo"}' }]
            [[rules]]
            when = { tool_result_contains = "rain" }
            text = "Take an umbrella."
            "#,
        )
        .expect("valid script");
        let p = ScriptedProvider::new("scripted", script);
        let first = p.answer(&req(vec![ChatMessage::user("weather in Oslo?")]));
        assert_eq!(first.finish, FinishReason::ToolCalls);
        assert_eq!(first.message.tool_calls[0].arguments, r#"{"city":"Oslo"}"#);
        let mut convo = vec![ChatMessage::user("weather in Oslo?"), first.message.clone()];
        convo.push(ChatMessage::tool_result("scripted-0-0", "rain"));
        let second = p.answer(&req(convo));
        assert_eq!(second.message.content, "[scripted] Take an umbrella.");
        assert_eq!(second.usage.output_tokens, 4);
    }

    #[test]
    fn defaults_call_the_calculator_and_make_plans() {
        let p = ScriptedProvider::new("scripted", Script::default());
        let mut r = req(vec![ChatMessage::user("what is 12 * (3 + 4)?")]);
        r.tools.push(ToolSpec {
            name: "calculator".into(),
            description: String::new(),
            parameters: serde_json::json!({}),
        });
        let a = p.answer(&r);
        assert_eq!(
            a.message.tool_calls[0].arguments,
            r#"{"expression":"12 * (3 + 4)"}"#
        );
        let mut plan = req(vec![
            ChatMessage::system("You are a planner; answer with a JSON plan."),
            ChatMessage::user("compare sled and rocksdb"),
        ]);
        plan.json_mode = true;
        let a = p.answer(&plan);
        let v: serde_json::Value = serde_json::from_str(&a.message.content).expect("json plan");
        assert_eq!(v["steps"].as_array().map(Vec::len), Some(2));
        assert!(
            p.answer(&req(vec![ChatMessage::user("hello")]))
                .message
                .content
                .starts_with(SCRIPTED_LABEL)
        );
        assert!(Script::from_toml("[[rules]]\nbogus = 1").is_err());
    }
}
