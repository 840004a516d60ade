//! Plans: the JSON a planner answers with, parsed and validated into steps that form a
//! dependency graph without cycles.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The most steps in a plan.
pub const PLAN_STEPS_MAX: usize = 32;
/// The longest step id (ids become part of agent instance keys).
pub const STEP_ID_LEN_MAX: usize = 24;
/// The longest step description, in bytes.
pub const STEP_DESCRIPTION_LEN_MAX: usize = 4096;

/// A plan: steps, each naming the capability that should do it and the steps it needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The steps, in the planner's order.
    pub steps: Vec<PlanStep>,
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanStep {
    /// Unique within the plan: 1..=24 of `a-z A-Z 0-9 _ -`.
    pub id: String,
    /// What to do.
    pub description: String,
    /// The capability an agent needs to do it.
    pub capability: String,
    /// Steps whose results this one needs.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// A person must approve the step before it runs.
    #[serde(default)]
    pub approval: bool,
}

impl PlanStep {
    /// A step without dependencies.
    pub fn new(
        id: impl Into<String>,
        capability: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            description: description.into(),
            capability: capability.into(),
            depends_on: Vec::new(),
            approval: false,
        }
    }

    /// Adds dependencies.
    #[must_use]
    pub fn after(mut self, ids: &[&str]) -> Self {
        self.depends_on.extend(ids.iter().map(|s| (*s).to_string()));
        self
    }

    /// Requires approval.
    #[must_use]
    pub fn with_approval(mut self) -> Self {
        self.approval = true;
        self
    }
}

/// The shape a planner may also answer with: a bare list of steps.
#[derive(Deserialize)]
#[serde(untagged)]
enum PlanJson {
    Plan(Plan),
    Steps(Vec<PlanStep>),
}

impl Plan {
    /// Parses a planner's answer: a JSON object `{"steps": [...]}` or a bare list of steps,
    /// possibly wrapped in a Markdown code fence or surrounded by prose, then validates it.
    ///
    /// # Errors
    /// Says what is wrong, in words a planner model can act on.
    pub fn parse(text: &str) -> Result<Self, String> {
        let json = extract_json(text).ok_or_else(|| {
            "the answer holds no JSON object; answer with {\"steps\": [...]} only".to_string()
        })?;
        let plan = match serde_json::from_str::<PlanJson>(json) {
            Ok(PlanJson::Plan(p)) => p,
            Ok(PlanJson::Steps(steps)) => Self { steps },
            Err(e) => {
                return Err(format!(
                    "the plan is not {{\"steps\": [{{\"id\", \"description\", \"capability\", \"depends_on\"}}]}}: {e}"
                ));
            }
        };
        plan.validate()?;
        Ok(plan)
    }

    /// Checks step count, ids, descriptions, capabilities, dependencies and cycles.
    ///
    /// # Errors
    /// Names the first problem found.
    pub fn validate(&self) -> Result<(), String> {
        if self.steps.is_empty() {
            return Err("the plan has no steps".into());
        }
        if self.steps.len() > PLAN_STEPS_MAX {
            return Err(format!(
                "the plan has {} steps; at most {PLAN_STEPS_MAX} are allowed",
                self.steps.len()
            ));
        }
        let mut ids = BTreeSet::new();
        for s in &self.steps {
            validate_step_id(&s.id)?;
            if !ids.insert(s.id.as_str()) {
                return Err(format!("step id {:?} is used twice", s.id));
            }
            if s.description.trim().is_empty() {
                return Err(format!("step {:?} has no description", s.id));
            }
            if s.description.len() > STEP_DESCRIPTION_LEN_MAX {
                return Err(format!(
                    "step {:?} has a description longer than {STEP_DESCRIPTION_LEN_MAX} bytes",
                    s.id
                ));
            }
            if s.capability.trim().is_empty() {
                return Err(format!("step {:?} names no capability", s.id));
            }
        }
        for s in &self.steps {
            for d in &s.depends_on {
                if d == &s.id {
                    return Err(format!("step {:?} depends on itself", s.id));
                }
                if !ids.contains(d.as_str()) {
                    return Err(format!("step {:?} depends on unknown step {d:?}", s.id));
                }
            }
        }
        self.order().map(|_| ())
    }

    /// Step indices in an order where every step comes after its dependencies.
    ///
    /// # Errors
    /// Names the steps on a dependency cycle.
    pub fn order(&self) -> Result<Vec<usize>, String> {
        let index: BTreeMap<&str, usize> = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.as_str(), i))
            .collect();
        let mut waiting: Vec<usize> = self.steps.iter().map(|s| s.depends_on.len()).collect();
        let mut dependents = vec![Vec::new(); self.steps.len()];
        for (i, s) in self.steps.iter().enumerate() {
            for d in &s.depends_on {
                if let Some(&j) = index.get(d.as_str()) {
                    dependents[j].push(i);
                }
            }
        }
        let mut ready: Vec<usize> = (0..self.steps.len()).filter(|&i| waiting[i] == 0).collect();
        let mut out = Vec::with_capacity(self.steps.len());
        while let Some(i) = ready.pop() {
            out.push(i);
            for &j in &dependents[i] {
                waiting[j] -= 1;
                if waiting[j] == 0 {
                    ready.push(j);
                }
            }
        }
        if out.len() == self.steps.len() {
            Ok(out)
        } else {
            let cyclic: Vec<&str> = (0..self.steps.len())
                .filter(|&i| waiting[i] > 0)
                .map(|i| self.steps[i].id.as_str())
                .collect();
            Err(format!(
                "the steps {cyclic:?} depend on each other in a cycle"
            ))
        }
    }
}

/// Checks a step id: 1..=[`STEP_ID_LEN_MAX`] of `a-z A-Z 0-9 _ -`.
///
/// # Errors
/// Says what is allowed.
pub fn validate_step_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= STEP_ID_LEN_MAX
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "step id {id:?} must be 1..={STEP_ID_LEN_MAX} characters of a-z, A-Z, 0-9, '_', '-'"
        ))
    }
}

/// The JSON value in `text`: the whole text, the inside of a code fence, or the span from
/// the first `{` or `[` to the last matching closer.
fn extract_json(text: &str) -> Option<&str> {
    let t = text.trim();
    let t = match t.find("```") {
        Some(start) => {
            let after = &t[start + 3..];
            let body_start = after.find('\n').map_or(0, |n| n + 1);
            let body = &after[body_start..];
            body.find("```").map_or(body, |end| &body[..end]).trim()
        }
        None => t,
    };
    let open = t.find(['{', '['])?;
    let closer = if t.as_bytes()[open] == b'{' { '}' } else { ']' };
    let close = t.rfind(closer)?;
    (close > open).then(|| &t[open..=close])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_objects_lists_fences_and_prose() {
        let obj = r#"{"steps":[{"id":"a","description":"do a","capability":"research"},
            {"id":"b","description":"do b","capability":"write","depends_on":["a"],"approval":true}]}"#;
        let p = Plan::parse(obj).expect("object");
        assert_eq!(p.steps.len(), 2);
        assert!(p.steps[1].approval);
        let fenced = format!("Here is the plan:\n```json\n{obj}\n```\nDone.");
        assert_eq!(Plan::parse(&fenced).expect("fenced"), p);
        let list = r#"[{"id":"a","description":"x","capability":"c"}]"#;
        assert_eq!(Plan::parse(list).expect("list").steps[0].id, "a");
    }

    #[test]
    fn rejects_bad_plans_with_reasons() {
        let cases = [
            ("no json here", "no JSON"),
            (r#"{"steps":[]}"#, "no steps"),
            (
                r#"{"steps":[{"id":"a b","description":"x","capability":"c"}]}"#,
                "step id",
            ),
            (
                r#"{"steps":[{"id":"a","description":"x","capability":"c"},{"id":"a","description":"y","capability":"c"}]}"#,
                "used twice",
            ),
            (
                r#"{"steps":[{"id":"a","description":" ","capability":"c"}]}"#,
                "no description",
            ),
            (
                r#"{"steps":[{"id":"a","description":"x","capability":""}]}"#,
                "no capability",
            ),
            (
                r#"{"steps":[{"id":"a","description":"x","capability":"c","depends_on":["z"]}]}"#,
                "unknown step",
            ),
            (
                r#"{"steps":[{"id":"a","description":"x","capability":"c","depends_on":["b"]},{"id":"b","description":"y","capability":"c","depends_on":["a"]}]}"#,
                "cycle",
            ),
            (r#"{"plan": 1}"#, "is not"),
        ];
        for (text, want) in cases {
            let err = Plan::parse(text).expect_err(text);
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    fn dag() -> impl Strategy<Value = Plan> {
        (1usize..20).prop_flat_map(|n| {
            proptest::collection::vec(
                proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
                n,
            )
            .prop_map(move |deps| Plan {
                steps: deps
                    .iter()
                    .enumerate()
                    .map(|(i, ds)| {
                        let mut s = PlanStep::new(format!("s{i}"), "c", "d");
                        if i > 0 {
                            let mut set: Vec<String> =
                                ds.iter().map(|d| format!("s{}", d.index(i))).collect();
                            set.sort();
                            set.dedup();
                            s.depends_on = set;
                        }
                        s
                    })
                    .collect(),
            })
        })
    }

    proptest! {
        #[test]
        fn every_dag_orders_dependencies_first(plan in dag()) {
            prop_assert!(plan.validate().is_ok());
            let order = plan.order().expect("acyclic");
            let pos: BTreeMap<&str, usize> = order
                .iter()
                .enumerate()
                .map(|(p, &i)| (plan.steps[i].id.as_str(), p))
                .collect();
            for s in &plan.steps {
                for d in &s.depends_on {
                    prop_assert!(pos[d.as_str()] < pos[s.id.as_str()]);
                }
            }
        }

        #[test]
        fn a_back_edge_is_a_cycle(plan in dag(), pick in any::<prop::sample::Index>()) {
            let mut plan = plan;
            let n = plan.steps.len();
            // Make some step with a dependency also a dependency of the step it depends on.
            let i = pick.index(n);
            if let Some(d) = plan.steps[i].depends_on.first().cloned() {
                let j = plan.steps.iter().position(|s| s.id == d).expect("dep exists");
                let id = plan.steps[i].id.clone();
                plan.steps[j].depends_on.push(id);
                prop_assert!(plan.validate().expect_err("cycle").contains("cycle"));
            }
        }
    }
}
