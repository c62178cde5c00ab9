//! Reading a step's config: typed accessors whose errors name the field.
//!
//! The host validates the rendered config against the plugin's config
//! schema, but a plugin also runs under `weft plugin run` and reads some
//! values from the input; these accessors give the same clear
//! [`StepError::InvalidInput`] either way.
//!
//! `null` counts as absent everywhere: an optional template that finds
//! nothing (`"{{input.note?}}"`) renders as `null`.
//!
//! ```
//! use weft_sdk::{config::Fields, json};
//! let config = json!({"title": "Hi", "items": [{"qty": 2}]});
//! let fields = Fields::of(&config, "");
//! fields.only(&["title", "items"])?;
//! assert_eq!(fields.required_str("title")?, "Hi");
//! let item = Fields::of(&config["items"][0], "items[0]");
//! assert_eq!(item.u64("qty", 1..=10)?, Some(2));
//! assert!(item.u64("qty", 5..=10).unwrap_err().to_string().contains("items[0].qty"));
//! # Ok::<(), weft_sdk::StepError>(())
//! ```

use std::ops::RangeInclusive;

use serde_json::Value;

use crate::StepError;

/// A JSON object read field by field; `path` prefixes field names in errors.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    value: &'a Value,
    /// Where this object sits in the config (`""` for the top level,
    /// `items[2]` for a nested one).
    path: &'a str,
}

impl<'a> Fields<'a> {
    pub fn of(value: &'a Value, path: &'a str) -> Self {
        Self { value, path }
    }

    /// The field's display name, with the object's path in front.
    pub fn name(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The field's value; `None` if it is missing or `null`.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.value.get(key).filter(|v| !v.is_null())
    }

    /// Fails unless the value is an object (or `null`) whose keys are all
    /// in `known`; mirrors `additionalProperties: false` in a schema.
    pub fn only(&self, known: &[&str]) -> Result<(), StepError> {
        let what = if self.path.is_empty() {
            "config"
        } else {
            self.path
        };
        match self.value {
            Value::Null => Ok(()),
            Value::Object(map) => match map.keys().find(|k| !known.contains(&k.as_str())) {
                None => Ok(()),
                Some(unknown) => Err(StepError::invalid_input(format!(
                    "{what} has an unknown field {unknown:?}; known fields: {}",
                    known.join(", ")
                ))),
            },
            other => Err(StepError::invalid_input(format!(
                "{what} must be an object, found {other}"
            ))),
        }
    }

    /// An optional string field.
    pub fn str(&self, key: &str) -> Result<Option<&'a str>, StepError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(StepError::invalid_input(format!(
                "{} must be a string, found {other}",
                self.name(key)
            ))),
        }
    }

    /// A required string field that is not blank.
    pub fn required_str(&self, key: &str) -> Result<&'a str, StepError> {
        match self.str(key)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            Some(_) => Err(StepError::invalid_input(format!(
                "{} must not be empty",
                self.name(key)
            ))),
            None => Err(StepError::invalid_input(format!(
                "{} is required",
                self.name(key)
            ))),
        }
    }

    /// An optional whole number within `range`.
    pub fn u64(&self, key: &str, range: RangeInclusive<u64>) -> Result<Option<u64>, StepError> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        match value.as_u64() {
            Some(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(StepError::invalid_input(format!(
                "{} must be a whole number from {} to {}, found {value}",
                self.name(key),
                range.start(),
                range.end()
            ))),
        }
    }

    /// An optional boolean field.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, StepError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(StepError::invalid_input(format!(
                "{} must be true or false, found {other}",
                self.name(key)
            ))),
        }
    }

    /// An optional list of strings.
    pub fn strings(&self, key: &str) -> Result<Option<Vec<&'a str>>, StepError> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        let not_strings = || {
            StepError::invalid_input(format!(
                "{} must be a list of strings, found {value}",
                self.name(key)
            ))
        };
        value
            .as_array()
            .ok_or_else(not_strings)?
            .iter()
            .map(|item| item.as_str().ok_or_else(not_strings))
            .collect::<Result<_, _>>()
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(e: StepError) -> String {
        match e {
            StepError::InvalidInput(m) => m,
            other => panic!("expected invalid input, got {other:?}"),
        }
    }

    #[test]
    fn null_counts_as_absent() {
        let config = json!({"a": null});
        let f = Fields::of(&config, "");
        assert_eq!(f.str("a").unwrap(), None);
        assert_eq!(f.u64("a", 0..=1).unwrap(), None);
        assert_eq!(f.bool("a").unwrap(), None);
        assert!(message(f.required_str("a").unwrap_err()).contains("a is required"));
        assert!(Fields::of(&Value::Null, "").only(&[]).is_ok());
    }

    #[test]
    fn errors_name_the_field_with_its_path() {
        let config = json!({"n": -1, "s": 3, "b": "yes", "blank": " ", "list": ["a", 1]});
        let f = Fields::of(&config, "items[1]");
        let cases = [
            (
                f.u64("n", 0..=9).unwrap_err(),
                "items[1].n must be a whole number",
            ),
            (f.str("s").unwrap_err(), "items[1].s must be a string"),
            (f.bool("b").unwrap_err(), "items[1].b must be true or false"),
            (
                f.required_str("blank").unwrap_err(),
                "items[1].blank must not be empty",
            ),
            (
                f.strings("list").unwrap_err(),
                "items[1].list must be a list of strings",
            ),
        ];
        for (error, expected) in cases {
            let m = message(error);
            assert!(m.contains(expected), "{m}");
        }
    }

    #[test]
    fn only_rejects_unknown_fields_and_non_objects() {
        let config = json!({"title": "x", "titel": "y"});
        let m = message(Fields::of(&config, "").only(&["title"]).unwrap_err());
        assert!(m.contains("\"titel\""), "{m}");
        let m = message(Fields::of(&json!([1]), "").only(&[]).unwrap_err());
        assert!(m.contains("config must be an object"), "{m}");
    }
}
