//! Subject and body templates with `{placeholder}` fields.
//!
//! `{name}` where `name` is letters, digits and `_` is a placeholder and
//! must be one of [`PLACEHOLDERS`]: a typo fails the step before any mail
//! goes out. Any other brace is literal text. (There is no `{{` escape:
//! the host reads `{{…}}` as its own config template first.)

/// Every placeholder a template may use.
pub const PLACEHOLDERS: [&str; 9] = [
    "invoice_id",
    "customer",
    "customer_email",
    "amount",
    "currency",
    "due_date",
    "days_overdue",
    "as_of",
    "reminder_number",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Placeholder(&'static str),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Part>);

impl Template {
    /// Parses `text`; `field` names the config field in errors.
    pub fn parse(text: &str, field: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            literal.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let name_len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if name_len > 0 && after[name_len..].starts_with('}') {
                let name = &after[..name_len];
                let known = PLACEHOLDERS.iter().find(|p| **p == name).ok_or_else(|| {
                    format!(
                        "{field} has an unknown placeholder {{{name}}}; known: {}",
                        PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(" ")
                    )
                })?;
                if !literal.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut literal)));
                }
                parts.push(Part::Placeholder(known));
                rest = &after[name_len + 1..];
            } else {
                literal.push('{');
                rest = after;
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Self(parts))
    }

    /// The text with each placeholder replaced by `value(name)`.
    pub fn render(&self, value: impl Fn(&str) -> String) -> String {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Placeholder(name) => out.push_str(&value(name)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(text: &str) -> String {
        Template::parse(text, "body")
            .unwrap()
            .render(|name| format!("<{name}>"))
    }

    #[test]
    fn replaces_placeholders_and_keeps_other_braces() {
        let cases = [
            ("Invoice {invoice_id}", "Invoice <invoice_id>"),
            ("{amount} {currency}", "<amount> <currency>"),
            ("{ not a placeholder }", "{ not a placeholder }"),
            ("{\"json\": 1} {}", "{\"json\": 1} {}"),
            ("open {brace", "open {brace"),
            ("{{due_date}}", "{<due_date>}"),
            ("", ""),
            ("ünïcode {customer}!", "ünïcode <customer>!"),
        ];
        for (text, expected) in cases {
            assert_eq!(render(text), expected, "{text}");
        }
    }

    #[test]
    fn unknown_placeholders_are_errors_naming_the_field() {
        let e = Template::parse("Hi {custmer}", "subject").unwrap_err();
        assert!(
            e.starts_with("subject has an unknown placeholder {custmer}"),
            "{e}"
        );
        assert!(e.contains("{customer}"), "{e}");
        assert!(Template::parse("{Customer}", "body").is_err());
    }
}
