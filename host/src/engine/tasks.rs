//! People in the loop: when a human step (`collect_inputs`,
//! `request_user_action`) with `assignees` pauses, one task per assignee,
//! each with a signed link mailed through the outbox; answers through the
//! link resume the step; reminders and expiry run on the stored clock.
//!
//! Everything here happens in the background task loop or in a request,
//! never on the scheduler's path: the loop notices a new pause (a row in
//! `task_rounds` marks each pause as seen, so its tasks are created once
//! across hosts), closes tasks whose step stopped waiting, and sends the
//! reminders and expiries that are due. Every change to a task is made
//! under its run's lock, the same lock every change to the run takes.
//!
//! A link is `<public url>/t/<task id>.<signature>`: the signature is an
//! HMAC of the task id and its nonce under a key derived from the
//! operator's secrets key, so no token is stored, every host accepts every
//! link, and a new nonce (reassign) kills the old link.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::advance::{self, Event};
use super::definition::{COLLECT_INPUTS, Problem, REQUEST_USER_ACTION, StepDef};
use super::template::{self, Scope};
use super::{Engine, EngineError, rfc3339};
use crate::db::runs::{AttemptRow, AttemptStatus, RunRow, RunStatus, StepRow, StepStatus};
use crate::db::state::{OutboxMessage, OutboxStatus};
use crate::db::tasks::{self as store, TaskRow};
use crate::db::{self, DbError};

/// The config keys of a human step that make it a task.
pub const TASK_KEYS: [&str; 8] = [
    "assignees",
    "title",
    "description",
    "completion",
    "remind_after_ms",
    "max_reminders",
    "expires_after_ms",
    "on_expiry",
];

/// Most assignees of one step.
pub const MAX_ASSIGNEES: usize = 50;
/// Most reminders per task.
pub const MAX_REMINDERS: i64 = 20;
/// Reminders when `remind_after_ms` is given without `max_reminders`.
pub const DEFAULT_MAX_REMINDERS: i64 = 3;
/// Shortest `remind_after_ms` and `expires_after_ms`.
pub const MIN_DELAY_MS: u64 = 1000;
/// Longest `remind_after_ms` and `expires_after_ms`: a year.
pub const MAX_DELAY_MS: u64 = 366 * 24 * 3600 * 1000;
/// Most reminders a task gets, automatic and by hand together.
const MAX_MANUAL_REMINDERS: i64 = 50;
/// Longest title and description, in characters.
const MAX_TITLE: usize = 200;
const MAX_DESCRIPTION: usize = 10_000;

/// A task step's config, rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskConfig {
    pub assignees: Vec<String>,
    pub title: String,
    pub description: Option<String>,
    pub completion: Completion,
    pub remind_after_ms: Option<i64>,
    pub max_reminders: i64,
    pub expires_after_ms: Option<i64>,
    pub on_expiry: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// One assignee's answer completes the step.
    Any,
    /// Every assignee must answer; a decline by anyone declines.
    All,
}

impl Completion {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Any => "any",
            Self::All => "all",
        }
    }
}

fn is_template(value: &Value) -> bool {
    value.as_str().is_some_and(|s| s.contains("{{"))
}

/// The keys a human step's config may have.
fn allowed_keys(uses: &str) -> Vec<&'static str> {
    let own: &[&str] = if uses == COLLECT_INPUTS {
        &["schema"]
    } else {
        &["actions", "decline"]
    };
    own.iter().chain(TASK_KEYS.iter()).copied().collect()
}

/// Checks a human step's config at save: known keys only, and every task
/// setting that is not a template well formed.
pub fn check_config(id: &str, uses: &str, config: Option<&Value>, problems: &mut Vec<Problem>) {
    let Some(config) = config else { return };
    let Some(map) = config.as_object() else {
        problems.push(Problem::step(id, "config must be an object".into()));
        return;
    };
    let allowed = allowed_keys(uses);
    for key in map.keys() {
        if !allowed.contains(&key.as_str()) {
            let hint = match key.as_str() {
                "assignee" | "assigned_to" | "to" => " (did you mean \"assignees\", a list?)",
                _ => "",
            };
            problems.push(Problem::step(
                id,
                format!(
                    "config.{key} is not a setting of {uses}{hint}; the settings are {}",
                    allowed.join(", ")
                ),
            ));
        }
    }
    if !map.contains_key("assignees") {
        if let Some(key) = TASK_KEYS.iter().find(|k| map.contains_key(**k)) {
            problems.push(Problem::step(
                id,
                format!("config.{key} needs config.assignees (who the task is for)"),
            ));
        }
        return;
    }
    let actions: Vec<&str> = map
        .get("actions")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Err(e) = parse(config, &actions, true) {
        problems.push(Problem::step(id, e));
    }
}

/// Reads a rendered task config (`lenient`: templates not yet rendered
/// pass, for checks at save). `None` when the step names no assignees.
fn parse(config: &Value, actions: &[&str], lenient: bool) -> Result<TaskConfig, String> {
    let skip = |v: &Value| lenient && is_template(v);
    let assignees = match &config["assignees"] {
        v if skip(v) => Vec::new(),
        Value::Array(list) => {
            let mut out = Vec::new();
            for item in list {
                match item {
                    v if skip(v) => {}
                    Value::String(s) if !s.trim().is_empty() && s.len() <= 320 => {
                        let s = s.trim().to_owned();
                        if !out.contains(&s) {
                            out.push(s);
                        }
                    }
                    other => {
                        return Err(format!(
                            "config.assignees: each assignee is an email address or a user id (1-320 characters), found {other}"
                        ));
                    }
                }
            }
            if out.is_empty() && (!lenient || list.is_empty()) {
                return Err("config.assignees is empty: name at least one assignee".into());
            }
            if out.len() > MAX_ASSIGNEES {
                return Err(format!(
                    "config.assignees: at most {MAX_ASSIGNEES} assignees, found {}",
                    out.len()
                ));
            }
            out
        }
        other => {
            return Err(format!(
                "config.assignees must be a list of email addresses or user ids, found {other}"
            ));
        }
    };
    let text = |key: &str, max: usize| -> Result<Option<String>, String> {
        match &config[key] {
            Value::Null => Ok(None),
            v if skip(v) => Ok(None),
            Value::String(s) if s.chars().count() <= max => Ok(Some(s.clone())),
            Value::String(_) => Err(format!("config.{key} is longer than {max} characters")),
            other => Err(format!("config.{key} must be text, found {other}")),
        }
    };
    let title = text("title", MAX_TITLE)?.unwrap_or_default();
    let description = text("description", MAX_DESCRIPTION)?;
    let completion = match &config["completion"] {
        Value::Null => Completion::Any,
        v if skip(v) => Completion::Any,
        Value::String(s) if s == "any" => Completion::Any,
        Value::String(s) if s == "all" => Completion::All,
        other => {
            return Err(format!(
                "config.completion must be \"any\" or \"all\", found {other}"
            ));
        }
    };
    let delay = |key: &str| -> Result<Option<i64>, String> {
        match &config[key] {
            Value::Null => Ok(None),
            v if skip(v) => Ok(None),
            v => match v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            {
                Some(ms) if (MIN_DELAY_MS..=MAX_DELAY_MS).contains(&ms) => {
                    Ok(Some(i64::try_from(ms).unwrap_or(i64::MAX)))
                }
                _ => Err(format!(
                    "config.{key} must be a number of milliseconds from {MIN_DELAY_MS} to {MAX_DELAY_MS} (a year), found {v}"
                )),
            },
        }
    };
    let remind_after_ms = delay("remind_after_ms")?;
    let expires_after_ms = delay("expires_after_ms")?;
    let max_reminders = match &config["max_reminders"] {
        Value::Null => {
            if remind_after_ms.is_some() {
                DEFAULT_MAX_REMINDERS
            } else {
                0
            }
        }
        v if skip(v) => 0,
        v => match v.as_i64() {
            Some(n) if (0..=MAX_REMINDERS).contains(&n) => n,
            _ => {
                return Err(format!(
                    "config.max_reminders must be 0 to {MAX_REMINDERS}, found {v}"
                ));
            }
        },
    };
    if max_reminders > 0 && config.get("remind_after_ms").is_none() {
        return Err("config.max_reminders needs config.remind_after_ms".into());
    }
    let on_expiry = match &config["on_expiry"] {
        Value::Null => json!("fail"),
        v if skip(v) => json!("fail"),
        Value::String(s) if s == "fail" || s == "decline" => json!(s),
        Value::Object(map) if map.len() == 1 && map.get("action").is_some_and(Value::is_string) => {
            let action = map["action"].as_str().unwrap_or_default();
            let templated = lenient && action.contains("{{");
            if !templated && !actions.contains(&action) {
                return Err(format!(
                    "config.on_expiry.action {action:?} is not one of the step's actions {actions:?}"
                ));
            }
            json!({"action": action})
        }
        other => {
            return Err(format!(
                "config.on_expiry must be \"fail\", \"decline\" or {{\"action\": \"<one of the actions>\"}}, found {other}"
            ));
        }
    };
    if config.get("on_expiry").is_some() && config.get("expires_after_ms").is_none() {
        return Err("config.on_expiry needs config.expires_after_ms".into());
    }
    Ok(TaskConfig {
        assignees,
        title,
        description,
        completion,
        remind_after_ms,
        max_reminders,
        expires_after_ms,
        on_expiry,
    })
}

/// The step's config rendered for its tasks; `None` when it names no
/// assignees.
fn render_config(
    step_def: &StepDef,
    run: &RunRow,
    steps: &[StepRow],
) -> Result<Option<(TaskConfig, Value)>, String> {
    let Some(config) = &step_def.config else {
        return Ok(None);
    };
    if config.get("assignees").is_none() {
        return Ok(None);
    }
    let rendered = advance::with_scope(run, steps, None, |scope| {
        let mut rendered = template::render(config, scope).map_err(|e| format!("config: {e}"))?;
        // Values put into the description are text, never Markdown: a run's
        // input cannot add links or headings to the page.
        if let Some(text) = config["description"].as_str() {
            rendered["description"] = json!(render_description(text, scope)?);
        }
        Ok::<_, String>(rendered)
    })?;
    let actions = actions_of(&rendered);
    let parsed = parse(
        &rendered,
        &actions.iter().map(String::as_str).collect::<Vec<_>>(),
        false,
    )?;
    let mut parsed = parsed;
    if parsed.title.is_empty() {
        parsed.title = step_def.id.clone();
    }
    let form = if step_def.uses == COLLECT_INPUTS {
        json!({"schema": rendered.get("schema").cloned().unwrap_or(json!({"type": "object"}))})
    } else {
        json!({"actions": actions, "decline": declines_of(&rendered)})
    };
    Ok(Some((parsed, form)))
}

/// A description's templates rendered with their values' Markdown
/// escaped.
fn render_description(text: &str, scope: &Scope<'_>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start..].find("}}") else {
            break;
        };
        out.push_str(&rest[..start]);
        let expression = &rest[start..start + len + 2];
        let value = template::render(&json!(expression), scope)
            .map_err(|e| format!("config.description: {e}"))?;
        let text = match value {
            Value::String(s) => s,
            Value::Null => String::new(),
            other => other.to_string(),
        };
        out.push_str(&crate::api::task_page::escape_markdown(&text));
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn actions_of(config: &Value) -> Vec<String> {
    config["actions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The actions that decline the run (`decline` in the config, default
/// `["decline"]`).
pub fn declines_of(config: &Value) -> Vec<String> {
    match config["decline"].as_array() {
        Some(list) => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        None => vec!["decline".to_owned()],
    }
}

/// What a person answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A `collect_inputs` form's data.
    Data(Value),
    /// One of a `request_user_action` step's actions.
    Action(String),
}

/// Why a link does not lead to an open task.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Unknown, forged or tampered with: nothing to show.
    #[error("this link is not valid")]
    NotFound,
    /// The task is closed: answered, expired or revoked.
    #[error("this task is {}", .0.status)]
    Closed(Box<TaskRow>),
    /// The answer does not fit the task (the form's schema, an unknown
    /// action): the page shows the problems.
    #[error("{}", .0.iter().map(|(_, m)| m.as_str()).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<(String, String)>),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<DbError> for LinkError {
    fn from(e: DbError) -> Self {
        Self::Engine(e.into())
    }
}

/// An action on a task through the API.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskAction {
    Remind,
    Reassign(String),
    Revoke,
}

/// How a step waiting on tasks ends.
enum Finish {
    /// Completed with this output.
    Output(Value),
    /// Completed with this output, and the run declined with `data`.
    Declined { output: Value, data: Value },
    /// Failed with this error.
    Failed(Value),
}

impl Engine {
    /// The base of task links (`--public-url`), without a trailing slash.
    fn public_url(&self) -> &str {
        self.config.public_url.trim_end_matches('/')
    }

    /// The token of a task's link; `None` without a secrets key.
    pub fn link_token(&self, task: &TaskRow) -> Option<String> {
        let secrets = self.config.secrets.as_ref()?;
        let id = uuid::Uuid::parse_str(&task.id).ok()?;
        let tag = secrets.sign_link(&link_message(&task.id, &task.nonce));
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        Some(format!("{}.{}", id.simple(), b64.encode(tag)))
    }

    /// The link a task's assignee opens.
    pub fn task_link(&self, task: &TaskRow) -> Option<String> {
        self.link_token(task)
            .map(|token| format!("{}/t/{token}", self.public_url()))
    }

    /// The task a token stands for, if its signature holds.
    async fn task_of_token(&self, conn: &mut db::Conn, token: &str) -> Result<TaskRow, LinkError> {
        let secrets = self.config.secrets.as_ref().ok_or(LinkError::NotFound)?;
        let (id, tag) = token.split_once('.').ok_or(LinkError::NotFound)?;
        // Only the form links are made in: 32 lowercase hex digits.
        if id.len() != 32 || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(LinkError::NotFound);
        }
        let id = uuid::Uuid::try_parse(id)
            .map_err(|_| LinkError::NotFound)?
            .hyphenated()
            .to_string();
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| LinkError::NotFound)?;
        let task = store::get(conn, None, &id)
            .await?
            .ok_or(LinkError::NotFound)?;
        if !secrets.verify_link(&link_message(&task.id, &task.nonce), &tag) {
            return Err(LinkError::NotFound);
        }
        Ok(task)
    }

    /// Opens a link: the task, marked viewed the first time.
    pub async fn open_link(&self, token: &str) -> Result<TaskRow, LinkError> {
        let now = self.now_ms();
        let task = {
            let mut conn = self.db.reader().await?;
            self.task_of_token(&mut conn, token).await?
        };
        let task = past_expiry(task, now);
        if task.status != "open" {
            return if task.is_open() {
                Ok(task)
            } else {
                Err(LinkError::Closed(Box::new(task)))
            };
        }
        let mut tx = self.db.begin().await?;
        let run = db::runs::locked_run(&mut tx, Some(&task.tenant_id), &task.run_id)
            .await?
            .ok_or(LinkError::NotFound)?;
        let Some(task) = store::get(&mut tx, None, &task.id).await? else {
            return Err(LinkError::NotFound);
        };
        let mut task = past_expiry(task, now);
        if !task.is_open() {
            return Err(LinkError::Closed(Box::new(task)));
        }
        if task.status == "open" {
            task.status = "viewed".into();
            task.viewed_at = Some(now);
            store::update(&mut tx, &task).await?;
            let viewed = [task_event(&task, "task.viewed", json!({}))];
            append_events(&mut tx, &run, &viewed, now).await?;
            tx.commit().await.map_err(DbError::from)?;
            self.changed(&task.run_id);
        }
        Ok(task)
    }

    /// Answers a task through its link. On success the task as answered.
    pub async fn answer_link(&self, token: &str, answer: Answer) -> Result<TaskRow, LinkError> {
        let now = self.now_ms();
        let task = {
            let mut conn = self.db.reader().await?;
            self.task_of_token(&mut conn, token).await?
        };
        let mut tx = self.db.begin().await?;
        let mut run = db::runs::locked_run(&mut tx, Some(&task.tenant_id), &task.run_id)
            .await?
            .ok_or(LinkError::NotFound)?;
        let Some(task) = store::get(&mut tx, None, &task.id).await? else {
            return Err(LinkError::NotFound);
        };
        let mut task = past_expiry(task, now);
        if !task.is_open() {
            return Err(LinkError::Closed(Box::new(task)));
        }
        let fits = match &answer {
            Answer::Data(_) => task.kind == COLLECT_INPUTS,
            Answer::Action(_) => task.kind == REQUEST_USER_ACTION,
        };
        if !fits {
            let wanted = if task.kind == REQUEST_USER_ACTION {
                "choose one of the actions"
            } else {
                "fill in the form"
            };
            return Err(LinkError::Invalid(vec![(
                String::new(),
                format!("this task needs you to {wanted}"),
            )]));
        }
        let definition = self.definition_for_run(&run).await?;
        let original_run = run.clone();
        let original = db::runs::steps_of(&mut tx, &run.id).await?;
        let mut steps = original.clone();
        let Some(index) = steps.iter().position(|s| {
            s.step_id == task.step_id
                && s.status == StepStatus::Paused
                && s.started_at == Some(task.round)
        }) else {
            // The step stopped waiting; the loop closes the task soon.
            task.status = "revoked".into();
            task.reason = Some("the step no longer waits for an answer".into());
            return Err(LinkError::Closed(Box::new(task)));
        };
        let form: Value = serde_json::from_str(&task.form).unwrap_or(Value::Null);
        let declined = match &answer {
            Answer::Data(data) => {
                let schema = form.get("schema").cloned().unwrap_or(json!({}));
                let problems = form_problems(&schema, data);
                if !problems.is_empty() {
                    return Err(LinkError::Invalid(problems));
                }
                false
            }
            Answer::Action(action) => {
                if !actions_of(&form).contains(action) {
                    return Err(LinkError::Invalid(vec![(
                        String::new(),
                        format!("{action:?} is not one of this task's actions"),
                    )]));
                }
                declines_of(&form).contains(action)
            }
        };
        let answer_json = match &answer {
            Answer::Data(data) => json!({"data": data}),
            Answer::Action(action) => json!({"action": action}),
        };
        task.status = if declined { "declined" } else { "completed" }.into();
        task.answer = Some(answer_json.to_string());
        task.answered_at = Some(now);
        task.ended_at = Some(now);
        store::update(&mut tx, &task).await?;
        let mut events = vec![task_event(
            &task,
            if declined {
                "task.declined"
            } else {
                "task.completed"
            },
            answer_json.clone(),
        )];
        // The answer in the step's attempt log: who, when, what.
        let step = &mut steps[index];
        step.attempts += 1;
        let attempt = answer_attempt(step, &task, &answer_json, now);
        let round = store::of_round(&mut tx, &run.id, &task.step_id, task.round).await?;
        let others_open: Vec<TaskRow> = round
            .into_iter()
            .filter(|t| t.id != task.id && t.is_open())
            .collect();
        let finish = match (&answer, task.completion.as_str()) {
            (Answer::Action(action), _) if declined => Some(Finish::Declined {
                output: json!({"action": action}),
                data: json!({"step": task.step_id, "action": action, "by": task.assignee}),
            }),
            (_, "all") => {
                all_answers(&store::of_round(&mut tx, &run.id, &task.step_id, task.round).await?)
                    .map(Finish::Output)
            }
            (Answer::Data(data), _) => Some(Finish::Output(data.clone())),
            (Answer::Action(action), _) => Some(Finish::Output(json!({"action": action}))),
        };
        let mut closed = Vec::new();
        if let Some(finish) = finish {
            for mut other in others_open {
                other.status = "revoked".into();
                other.reason = Some(format!("answered by {}", task.assignee));
                other.ended_at = Some(now);
                store::update(&mut tx, &other).await?;
                events.push(task_event(
                    &other,
                    "task.revoked",
                    json!({"reason": other.reason}),
                ));
                closed.push(other);
            }
            events.extend(finish_step(&mut run, &mut steps, index, finish, now));
            if !run.status.is_terminal() {
                events.extend(advance::advance(&definition, &mut run, &mut steps, now));
            }
        }
        db::runs::Writes::default()
            .insert_attempts(std::slice::from_ref(&attempt))
            .execute(&mut tx)
            .await?;
        self.commit_changes(tx, &original_run, &run, &original, &steps, &events, now)
            .await?;
        Ok(task)
    }

    /// A tenant's task through the API.
    pub async fn get_task(&self, tenant: &str, id: &str) -> Result<TaskRow, EngineError> {
        let mut conn = self.db.reader().await?;
        store::get(&mut conn, Some(tenant), id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("task {id:?}")))
    }

    /// Reminds, reassigns or revokes a tenant's open task.
    pub async fn act_on_task(
        &self,
        tenant: &str,
        id: &str,
        action: TaskAction,
    ) -> Result<TaskRow, EngineError> {
        let now = self.now_ms();
        let task = self.get_task(tenant, id).await?;
        let mut tx = self.db.begin().await?;
        let run = db::runs::locked_run(&mut tx, Some(tenant), &task.run_id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("task {id:?}")))?;
        let mut task = store::get(&mut tx, Some(tenant), id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("task {id:?}")))?;
        if !task.is_open() {
            return Err(EngineError::Conflict(format!(
                "task {id} is {}: only open or viewed tasks can be reminded, reassigned or revoked",
                task.status
            )));
        }
        let mut events = Vec::new();
        let result = match action {
            TaskAction::Remind => {
                if !looks_like_email(&task.assignee) {
                    return Err(EngineError::Conflict(format!(
                        "task {id}'s assignee {:?} is not an email address, so there is no mail to send: deliver its link yourself",
                        task.assignee
                    )));
                }
                if task.reminders_sent >= MAX_MANUAL_REMINDERS {
                    return Err(EngineError::Conflict(format!(
                        "task {id} was already reminded {} times",
                        task.reminders_sent
                    )));
                }
                task.reminders_sent += 1;
                self.queue_mail(&mut tx, &task, Mail::Reminder, now).await?;
                store::update(&mut tx, &task).await?;
                events.push(task_event(
                    &task,
                    "task.reminded",
                    json!({"reminder": task.reminders_sent, "manual": true}),
                ));
                task
            }
            TaskAction::Revoke => {
                task.status = "revoked".into();
                task.reason = Some("revoked".into());
                task.ended_at = Some(now);
                store::update(&mut tx, &task).await?;
                events.push(task_event(
                    &task,
                    "task.revoked",
                    json!({"reason": "revoked"}),
                ));
                // With `completion: all`, the last open task revoked and
                // the others answered: the step has all it will get.
                let round = store::of_round(&mut tx, &run.id, &task.step_id, task.round).await?;
                if task.completion == "all"
                    && let Some(output) = all_answers(&round)
                {
                    let mut run = run;
                    let events = std::mem::take(&mut events);
                    self.finish_paused(
                        &mut tx,
                        &mut run,
                        &task,
                        Some(Finish::Output(output)),
                        events,
                        now,
                    )
                    .await?;
                    tx.commit().await.map_err(DbError::from)?;
                    self.changed(&run.id);
                    self.wake.notify_one();
                    return Ok(task);
                }
                task
            }
            TaskAction::Reassign(assignee) => {
                let assignee = assignee.trim().to_owned();
                if assignee.is_empty() || assignee.len() > 320 {
                    return Err(EngineError::InvalidInput(
                        "assignee must be an email address or a user id (1-320 characters)".into(),
                    ));
                }
                task.status = "revoked".into();
                task.reason = Some(format!("reassigned to {assignee}"));
                task.ended_at = Some(now);
                store::update(&mut tx, &task).await?;
                events.push(task_event(
                    &task,
                    "task.revoked",
                    json!({"reason": task.reason}),
                ));
                let mut new = task.clone();
                new.id = uuid::Uuid::now_v7().to_string();
                new.assignee = assignee;
                new.status = "open".into();
                new.reason = None;
                new.nonce = nonce();
                new.reminders_sent = 0;
                new.created_at = now;
                new.viewed_at = None;
                new.ended_at = None;
                new.next_reminder_at = task
                    .remind_after_ms
                    .filter(|_| task.max_reminders > 0)
                    .map(|ms| now.saturating_add(ms));
                store::insert(&mut tx, &new).await?;
                self.queue_mail(&mut tx, &new, Mail::Created, now).await?;
                events.push(task_event(
                    &new,
                    "task.created",
                    json!({"assignee": new.assignee, "reassigned_from": task.assignee}),
                ));
                new
            }
        };
        append_events(&mut tx, &run, &events, now).await?;
        tx.commit().await.map_err(DbError::from)?;
        self.changed(&run.id);
        self.task_wake.notify_one();
        Ok(result)
    }

    /// Creates, closes, reminds and expires tasks until shutdown. A pass
    /// looks at the runs that changed since the last one (their new
    /// pauses, their tasks whose step stopped waiting) and at the
    /// reminders and expiries due; once a minute, and whenever changes
    /// were missed, it looks at every paused step and open task instead,
    /// so thousands of runs waiting on people cost nothing between. Passes
    /// run when something changed or is due, at most ten a second.
    pub(crate) async fn run_tasks(self: Arc<Self>, shutdown: CancellationToken) {
        const SWEEP: Duration = Duration::from_secs(60);
        let changed: Arc<std::sync::Mutex<Changed>> = Arc::default();
        {
            // Collects the ids of changed runs (this host's, and other
            // hosts' through `peers`) as they come.
            let mut changes = self.subscribe();
            let changed = changed.clone();
            let engine = self.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    let received = tokio::select! {
                        r = changes.recv() => r,
                        () = stop.cancelled() => return,
                    };
                    match received {
                        Ok(change) => {
                            super::lock(&changed).runs.insert(change.id);
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            super::lock(&changed).missed = true;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                    engine.task_wake.notify_one();
                }
            });
        }
        let mut last_sweep: Option<std::time::Instant> = None;
        loop {
            let Changed { runs, missed } = std::mem::take(&mut *super::lock(&changed));
            let sweep = missed || last_sweep.is_none_or(|t| t.elapsed() >= SWEEP);
            if sweep {
                last_sweep = Some(std::time::Instant::now());
            }
            let runs: Vec<String> = runs.into_iter().collect();
            let scope = if sweep { None } else { Some(&runs[..]) };
            if let Err(e) = self.tasks_pass(scope).await {
                tracing::warn!(error = %e, "task loop");
            }
            let next = match self.db.reader().await {
                Ok(mut conn) => store::next_due(&mut conn).await.ok().flatten(),
                Err(_) => None,
            };
            let wait = next.map_or(1000, |t| (t - self.now_ms()).clamp(100, 1000));
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
                () = shutdown.cancelled() => return,
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(wait as u64 - 100)) => {}
                () = self.task_wake.notified() => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// One pass of the task loop over the runs `changed` (every run when
    /// `None`): new pauses get their tasks, tasks whose step stopped
    /// waiting close; then the reminders and expiries due.
    pub async fn tasks_pass(&self, changed: Option<&[String]>) -> Result<(), EngineError> {
        const BATCH: i64 = 100;
        let (rounds, stale) = {
            let mut conn = self.db.reader().await?;
            match changed {
                None => (
                    store::new_rounds(&mut conn, BATCH).await?,
                    store::stale(&mut conn, BATCH).await?,
                ),
                Some(runs) => (
                    store::new_rounds_of(&mut conn, runs).await?,
                    store::stale_of(&mut conn, runs).await?,
                ),
            }
        };
        // One item's failure is logged and the rest go on: a bad row must
        // not hold every tenant's tasks back.
        for (run_id, step_id, round) in rounds {
            if let Err(e) = self.open_round(&run_id, &step_id, round).await {
                tracing::warn!(run = %run_id, step = %step_id, error = %e, "creating tasks");
            }
        }
        for (run_id, task_id) in stale {
            if let Err(e) = self.close_stale(&run_id, &task_id).await {
                tracing::warn!(task = %task_id, error = %e, "closing a task");
            }
        }
        let now = self.now_ms();
        let due = {
            let mut conn = self.db.reader().await?;
            store::due(&mut conn, now, BATCH).await?
        };
        for (run_id, task_id) in due {
            if let Err(e) = self.task_due(&run_id, &task_id, now).await {
                tracing::warn!(task = %task_id, error = %e, "a task's reminder or expiry");
            }
        }
        Ok(())
    }

    /// Creates the tasks of one pause of a human step (once: the round's
    /// row is claimed in the same transaction).
    async fn open_round(&self, run_id: &str, step_id: &str, round: i64) -> Result<(), EngineError> {
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        let Some(mut run) = db::runs::locked_run(&mut tx, None, run_id).await? else {
            return Ok(());
        };
        let original = db::runs::steps_of(&mut tx, run_id).await?;
        let Some(index) = original.iter().position(|s| {
            s.step_id == step_id && s.status == StepStatus::Paused && s.started_at == Some(round)
        }) else {
            return Ok(());
        };
        if !store::claim_round(&mut tx, run_id, step_id, round).await? {
            return Ok(());
        }
        let definition = self.definition_for_run(&run).await?;
        let Some(step_def) = definition.step(step_id) else {
            tx.commit().await.map_err(DbError::from)?;
            return Ok(());
        };
        let original_run = run.clone();
        let mut steps = original.clone();
        let mut events = Vec::new();
        match render_config(step_def, &run, &steps) {
            Ok(None) => {}
            Ok(Some((config, form))) => {
                for assignee in &config.assignees {
                    let task = TaskRow {
                        id: uuid::Uuid::now_v7().to_string(),
                        tenant_id: run.tenant_id.clone(),
                        run_id: run.id.clone(),
                        step_id: step_id.to_owned(),
                        round,
                        workflow_key: run.workflow_key.clone(),
                        kind: step_def.uses.clone(),
                        assignee: assignee.clone(),
                        status: "open".into(),
                        title: config.title.clone(),
                        description: config.description.clone(),
                        form: form.to_string(),
                        completion: config.completion.as_str().into(),
                        nonce: nonce(),
                        answer: None,
                        reason: None,
                        remind_after_ms: config.remind_after_ms,
                        max_reminders: config.max_reminders,
                        reminders_sent: 0,
                        next_reminder_at: config
                            .remind_after_ms
                            .filter(|_| config.max_reminders > 0)
                            .map(|ms| now.saturating_add(ms)),
                        expires_at: config.expires_after_ms.map(|ms| now.saturating_add(ms)),
                        on_expiry: config.on_expiry.to_string(),
                        created_at: now,
                        viewed_at: None,
                        answered_at: None,
                        ended_at: None,
                    };
                    store::insert(&mut tx, &task).await?;
                    self.queue_mail(&mut tx, &task, Mail::Created, now).await?;
                    events.push(task_event(
                        &task,
                        "task.created",
                        json!({"assignee": task.assignee, "expires_at": task.expires_at.map(rfc3339)}),
                    ));
                }
            }
            Err(message) => {
                let error = json!({"kind": "invalid_input", "message": message});
                events.extend(finish_step(
                    &mut run,
                    &mut steps,
                    index,
                    Finish::Failed(error),
                    now,
                ));
                events.extend(advance::advance(&definition, &mut run, &mut steps, now));
            }
        }
        self.commit_changes(tx, &original_run, &run, &original, &steps, &events, now)
            .await?;
        Ok(())
    }

    /// Closes an open task whose step no longer waits (resumed through the
    /// API, cancelled, its run ended).
    async fn close_stale(&self, run_id: &str, task_id: &str) -> Result<(), EngineError> {
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        let Some(run) = db::runs::locked_run(&mut tx, None, run_id).await? else {
            return Ok(());
        };
        let Some(mut task) = store::get(&mut tx, None, task_id).await? else {
            return Ok(());
        };
        let steps = db::runs::steps_of(&mut tx, run_id).await?;
        let step = steps.iter().find(|s| s.step_id == task.step_id);
        if !task.is_open()
            || step
                .is_some_and(|s| s.status == StepStatus::Paused && s.started_at == Some(task.round))
        {
            return Ok(());
        }
        let reason = match step {
            Some(s) => format!("the step is {} without this task's answer", s.status),
            None => "the step is gone".into(),
        };
        task.status = "revoked".into();
        task.reason = Some(reason.clone());
        task.ended_at = Some(now);
        store::update(&mut tx, &task).await?;
        let events = [task_event(&task, "task.revoked", json!({"reason": reason}))];
        append_events(&mut tx, &run, &events, now).await?;
        tx.commit().await.map_err(DbError::from)?;
        self.changed(run_id);
        Ok(())
    }

    /// Sends a task's due reminder, or expires it (and every open task of
    /// its step's pause) and applies `on_expiry`.
    async fn task_due(&self, run_id: &str, task_id: &str, now: i64) -> Result<(), EngineError> {
        let mut tx = self.db.begin().await?;
        let Some(mut run) = db::runs::locked_run(&mut tx, None, run_id).await? else {
            return Ok(());
        };
        let Some(mut task) = store::get(&mut tx, None, task_id).await? else {
            return Ok(());
        };
        if task.next_due_at().is_none_or(|t| t > now) {
            return Ok(());
        }
        let mut events = Vec::new();
        if task.expires_at.is_some_and(|t| t <= now) {
            let round = store::of_round(&mut tx, run_id, &task.step_id, task.round).await?;
            for mut t in round.into_iter().filter(TaskRow::is_open) {
                t.status = "expired".into();
                t.reason = Some("no answer before it expired".into());
                t.ended_at = Some(now);
                store::update(&mut tx, &t).await?;
                events.push(task_event(
                    &t,
                    "task.expired",
                    json!({"expired_at": t.expires_at.map(rfc3339)}),
                ));
            }
            let finish = on_expiry(&task);
            self.finish_paused(&mut tx, &mut run, &task, Some(finish), events, now)
                .await?;
        } else {
            task.reminders_sent += 1;
            task.next_reminder_at = match task.remind_after_ms {
                Some(ms) if task.reminders_sent < task.max_reminders => {
                    Some(now.saturating_add(ms))
                }
                _ => None,
            };
            self.queue_mail(&mut tx, &task, Mail::Reminder, now).await?;
            store::update(&mut tx, &task).await?;
            events.push(task_event(
                &task,
                "task.reminded",
                json!({"reminder": task.reminders_sent, "manual": false}),
            ));
            append_events(&mut tx, &run, &events, now).await?;
        }
        tx.commit().await.map_err(DbError::from)?;
        self.changed(run_id);
        self.wake.notify_one();
        Ok(())
    }

    /// Ends the step `task` waits on with `finish` if it still waits on
    /// that pause, advances the run, and writes it with `events`.
    async fn finish_paused(
        &self,
        tx: &mut db::Conn,
        run: &mut RunRow,
        task: &TaskRow,
        finish: Option<Finish>,
        mut events: Vec<Event>,
        now: i64,
    ) -> Result<(), EngineError> {
        let definition = self.definition_for_run(run).await?;
        let original_run = run.clone();
        let original = db::runs::steps_of(tx, &run.id).await?;
        let mut steps = original.clone();
        let paused = steps.iter().position(|s| {
            s.step_id == task.step_id
                && s.status == StepStatus::Paused
                && s.started_at == Some(task.round)
        });
        if let (Some(index), Some(finish)) = (paused, finish) {
            events.extend(finish_step(run, &mut steps, index, finish, now));
            if !run.status.is_terminal() {
                events.extend(advance::advance(&definition, run, &mut steps, now));
            }
        }
        self.write_changes(tx, &original_run, run, &original, &steps, &events, now)
            .await
    }

    /// Queues a task's mail (exactly once: keyed by the task and what it
    /// is). An assignee that is not an email address gets none: the link
    /// is in the API for the tenant to deliver.
    async fn queue_mail(
        &self,
        conn: &mut db::Conn,
        task: &TaskRow,
        mail: Mail,
        now: i64,
    ) -> Result<(), DbError> {
        if !looks_like_email(&task.assignee) {
            return Ok(());
        }
        let Some(link) = self.task_link(task) else {
            tracing::warn!(task = %task.id, "no secrets key: task links cannot be signed");
            return Ok(());
        };
        let (key, subject, opening) = match mail {
            Mail::Created => (
                format!("task:{}:created", task.id),
                task.title.clone(),
                format!("The workflow \"{}\" is waiting for you.", task.workflow_key),
            ),
            Mail::Reminder => (
                format!("task:{}:reminder:{}", task.id, task.reminders_sent),
                format!("Reminder: {}", task.title),
                format!(
                    "A reminder: the workflow \"{}\" is still waiting for you.",
                    task.workflow_key
                ),
            ),
        };
        let what = if task.kind == REQUEST_USER_ACTION {
            "review it and choose"
        } else {
            "fill in the form"
        };
        let mut body = format!("Hello,\n\n{opening}\n\n{}\n", task.title);
        if let Some(description) = &task.description {
            body.push_str(&format!("\n{description}\n"));
        }
        body.push_str(&format!("\nOpen this link to {what}:\n{link}\n\n"));
        body.push_str(&format!(
            "The link is for {} alone and can be used once.",
            task.assignee
        ));
        if let Some(at) = task.expires_at {
            body.push_str(&format!(" It expires at {}.", rfc3339(at)));
        }
        body.push('\n');
        db::state::outbox_put(
            conn,
            &OutboxMessage {
                tenant_id: task.tenant_id.clone(),
                key,
                message_id: uuid::Uuid::now_v7().to_string(),
                run_id: Some(task.run_id.clone()),
                step_id: Some(task.step_id.clone()),
                to: vec![task.assignee.clone()],
                cc: Vec::new(),
                subject,
                body,
                status: OutboxStatus::Queued,
                attempts: 0,
                last_error: None,
                created_at: now,
                sent_at: None,
                next_attempt_at: now,
            },
        )
        .await?;
        Ok(())
    }
}

/// Runs changed since the task loop's last pass.
#[derive(Debug, Default)]
struct Changed {
    runs: std::collections::HashSet<String>,
    /// Some changes were missed (the channel lagged): sweep everything.
    missed: bool,
}

#[derive(Debug, Clone, Copy)]
enum Mail {
    Created,
    Reminder,
}

/// A task whose expiry has passed is shown and refused as expired even
/// before the task loop gets to it.
fn past_expiry(mut task: TaskRow, now: i64) -> TaskRow {
    if task.is_open() && task.expires_at.is_some_and(|t| t <= now) {
        task.status = "expired".into();
    }
    task
}

fn looks_like_email(s: &str) -> bool {
    s.split_once('@')
        .is_some_and(|(user, host)| !user.is_empty() && host.contains('.') && !s.contains(' '))
}

fn nonce() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

fn link_message(id: &str, nonce: &str) -> Vec<u8> {
    format!("task\0{id}\0{nonce}").into_bytes()
}

fn task_event(task: &TaskRow, kind: &'static str, mut data: Value) -> Event {
    data["task_id"] = json!(task.id);
    if data.get("assignee").is_none() {
        data["assignee"] = json!(task.assignee);
    }
    Event::step(kind, &task.step_id, data)
}

/// Appends a run's events (its lock is held).
async fn append_events(
    conn: &mut db::Conn,
    run: &RunRow,
    events: &[Event],
    now: i64,
) -> Result<(), DbError> {
    let rows = super::scheduler::event_rows(run, events);
    db::runs::Writes::default()
        .append_events(&rows, now)
        .execute(conn)
        .await
}

/// The attempt row recording an answer.
fn answer_attempt(step: &StepRow, task: &TaskRow, answer: &Value, now: i64) -> AttemptRow {
    let line = crate::runtime::LogLine {
        level: "info",
        message: format!(
            "answered by {} through the task link at {}: {answer}",
            task.assignee,
            rfc3339(now)
        ),
        at: chrono::DateTime::from_timestamp_millis(now).unwrap_or_default(),
    };
    AttemptRow {
        run_id: step.run_id.clone(),
        step_id: step.step_id.clone(),
        attempt: step.attempts,
        status: AttemptStatus::Completed,
        host: None,
        started_at: task.created_at,
        ended_at: Some(now),
        error_kind: None,
        error: None,
        logs: serde_json::to_string(&[line]).ok(),
        input: Some(json!({"task_id": task.id, "assignee": task.assignee}).to_string()),
    }
}

/// What expiry does to a task's step (`on_expiry`).
fn on_expiry(task: &TaskRow) -> Finish {
    let on_expiry: Value = serde_json::from_str(&task.on_expiry).unwrap_or(json!("fail"));
    let form: Value = serde_json::from_str(&task.form).unwrap_or(Value::Null);
    match (&on_expiry, on_expiry["action"].as_str()) {
        (_, Some(action)) if declines_of(&form).iter().any(|d| d == action) => Finish::Declined {
            output: json!({"action": action, "expired": true}),
            data: json!({"step": task.step_id, "action": action, "reason": "expired"}),
        },
        (_, Some(action)) => Finish::Output(json!({"action": action, "expired": true})),
        (Value::String(s), _) if s == "decline" => Finish::Declined {
            output: json!({"declined": true, "reason": "expired"}),
            data: json!({"step": task.step_id, "reason": "expired"}),
        },
        _ => Finish::Failed(json!({
            "kind": "expired",
            "message": format!("nobody answered step {:?} before its tasks expired", task.step_id),
        })),
    }
}

/// The output of a step with `completion: all` once none of its tasks is
/// open and at least one was answered: every answer, oldest first, and
/// the latest action.
fn all_answers(round: &[TaskRow]) -> Option<Value> {
    if round.iter().any(TaskRow::is_open) {
        return None;
    }
    let mut answered: Vec<&TaskRow> = round.iter().filter(|t| t.status == "completed").collect();
    answered.sort_by_key(|t| t.answered_at);
    let answers: Vec<Value> = answered
        .iter()
        .map(|t| {
            let mut entry: Value =
                serde_json::from_str(t.answer.as_deref().unwrap_or("{}")).unwrap_or(json!({}));
            entry["assignee"] = json!(t.assignee);
            entry["answered_at"] = json!(t.answered_at.map(rfc3339));
            entry
        })
        .collect();
    let last = answers.last()?;
    Some(match last.get("action") {
        Some(action) => json!({"action": action, "answers": answers}),
        None => json!({"answers": answers}),
    })
}

/// Ends a paused step: completed, completed and the run declined, or failed.
fn finish_step(
    run: &mut RunRow,
    steps: &mut [StepRow],
    index: usize,
    finish: Finish,
    now: i64,
) -> Vec<Event> {
    let mut events = Vec::new();
    let step_id = steps[index].step_id.clone();
    match finish {
        Finish::Output(output) => {
            super::runs::complete(&mut steps[index], &output, now);
            events.push(Event::step(
                "step.completed",
                &step_id,
                json!({"resumed": true, "by": "task"}),
            ));
        }
        Finish::Declined { output, data } => {
            super::runs::complete(&mut steps[index], &output, now);
            events.push(Event::step(
                "step.completed",
                &step_id,
                json!({"resumed": true, "by": "task"}),
            ));
            advance::cancel_unstarted(steps, now, "declined", false);
            run.status = RunStatus::Declined;
            run.ended_at = Some(now);
            let mut event = data.clone();
            if let Some(step) = event.as_object_mut().and_then(|d| d.remove("step")) {
                event["step_id"] = step;
            }
            run.result = Some(json!({"declined": data}).to_string());
            events.push(Event::run("run.declined", event));
        }
        Finish::Failed(error) => {
            let step = &mut steps[index];
            step.status = StepStatus::Failed;
            step.ended_at = Some(now);
            step.error = Some(error.to_string());
            events.push(Event::step("step.failed", &step_id, error));
        }
    }
    events
}

/// The problems of a form's data against its schema, each with the field
/// it is about (a JSON pointer, empty for the whole form).
pub fn form_problems(schema: &Value, data: &Value) -> Vec<(String, String)> {
    match jsonschema::validator_for(schema) {
        Ok(validator) => validator
            .iter_errors(data)
            .map(|e| (e.instance_path.to_string(), e.to_string()))
            .collect(),
        Err(e) => vec![(String::new(), format!("the form's schema is invalid: {e}"))],
    }
}
