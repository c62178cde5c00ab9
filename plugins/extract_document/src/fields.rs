//! Finding fields in document text with patterns: parties (named roles,
//! "between X and Y", company suffixes), dates (ISO, "12 March 2026",
//! "March 12, 2026", "12.03.2026"), amounts (currency code or symbol before
//! or after the number) and email addresses.

use std::sync::LazyLock;

use regex::Regex;
use weft_sdk::{Value, json};

pub struct Found {
    pub title: Option<String>,
    pub parties: Vec<Value>,
    pub dates: Vec<Value>,
    pub amounts: Vec<Value>,
    pub emails: Vec<String>,
}

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

static ROLE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?im)^\s*(party\s+[a-z0-9]+|buyer|seller|client|customer|supplier|vendor|contractor|consultant|landlord|tenant|lessor|lessee|employer|employee|licensor|licensee|provider|purchaser)\s*:\s*(.+?)\s*$").expect("valid regex")
});
static BETWEEN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?is)\bbetween\s+(.{2,80}?)\s*(?:\([^)]*\)\s*)?,?\s+and\s+(.{2,80}?)\s*(?:\(|,|\.\s|\.$|;|\n)").expect("valid regex")
});
static COMPANY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b((?:[A-Z][\w&'-]*\s+){0,4}[A-Z][\w&'-]*\s+(?:Inc\.?|Ltd\.?|LLC|LLP|AS|ASA|GmbH|AG|AB|plc|PLC|Corp\.?|Corporation|Limited|S\.A\.|B\.V\.|Co\.))(?:\W|$)").expect("valid regex")
});
static ISO_DATE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(\d{4})-(\d{2})-(\d{2})\b").expect("valid regex"));
static DAY_MONTH_YEAR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?(jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?,?\s+(\d{4})\b").expect("valid regex")
});
static MONTH_DAY_YEAR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})\b").expect("valid regex")
});
static DOTTED_DATE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(\d{1,2})\.(\d{1,2})\.(\d{4})\b").expect("valid regex"));
static AMOUNT_BEFORE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(USD|EUR|GBP|NOK|SEK|DKK|CHF|JPY|CAD|AUD|\$|€|£|¥)\s?(\d{1,3}(?:[, ]\d{3})+(?:\.\d{1,2})?|\d+(?:\.\d{1,2})?)").expect("valid regex")
});
static AMOUNT_AFTER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(\d{1,3}(?:[, ]\d{3})+(?:\.\d{1,2})?|\d+(?:\.\d{1,2})?)\s?(USD|EUR|GBP|NOK|SEK|DKK|CHF|JPY|CAD|AUD|kr)\b").expect("valid regex")
});
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b").expect("valid regex")
});

fn month_number(name: &str) -> Option<u32> {
    let name = name.to_ascii_lowercase();
    MONTHS
        .iter()
        .position(|m| m.starts_with(&name[..3.min(name.len())]))
        .map(|i| i as u32 + 1)
}

fn valid_date(year: i32, month: u32, day: u32) -> Option<String> {
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => return None,
    };
    (day >= 1 && day <= days && (1000..=9999).contains(&year))
        .then(|| format!("{year:04}-{month:02}-{day:02}"))
}

fn clean_name(name: &str) -> String {
    let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
    name.trim_matches(|c: char| c == ',' || c == '"' || c == '“' || c == '”' || c.is_whitespace())
        .trim_start_matches("the ")
        .to_owned()
}

fn currency(symbol: &str) -> &str {
    match symbol {
        "$" => "USD",
        "€" => "EUR",
        "£" => "GBP",
        "¥" => "JPY",
        "kr" => "NOK",
        code => code,
    }
}

pub fn find(text: &str) -> Found {
    let title = text
        .lines()
        .map(str::trim)
        .find(|l| l.len() >= 3 && l.chars().any(char::is_alphabetic))
        .map(|l| l.chars().take(200).collect());

    let mut parties: Vec<Value> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut add_party = |name: String, role: Option<String>, source: &str| {
        if name.len() < 2 || name.len() > 120 || !seen.insert(name.to_lowercase()) {
            return;
        }
        parties.push(json!({ "name": name, "role": role, "found_in": source }));
    };
    for c in ROLE.captures_iter(text) {
        add_party(clean_name(&c[2]), Some(c[1].to_lowercase()), c[0].trim());
    }
    for c in BETWEEN.captures_iter(text) {
        add_party(clean_name(&c[1]), None, c[0].trim());
        add_party(clean_name(&c[2]), None, c[0].trim());
    }
    for c in COMPANY.captures_iter(text) {
        add_party(clean_name(&c[1]), None, c[1].trim());
    }

    let mut dates = Vec::new();
    let mut push_date = |source: &str, iso: Option<String>| {
        if let Some(iso) = iso
            && !dates
                .iter()
                .any(|d: &Value| d["date"] == iso.as_str() && d["text"] == source)
        {
            dates.push(json!({ "text": source, "date": iso }));
        }
    };
    for c in ISO_DATE.captures_iter(text) {
        push_date(
            &c[0],
            valid_date(
                c[1].parse().unwrap_or(0),
                c[2].parse().unwrap_or(0),
                c[3].parse().unwrap_or(0),
            ),
        );
    }
    for c in DAY_MONTH_YEAR.captures_iter(text) {
        let month = month_number(&c[2]).unwrap_or(0);
        push_date(
            &c[0],
            valid_date(c[3].parse().unwrap_or(0), month, c[1].parse().unwrap_or(0)),
        );
    }
    for c in MONTH_DAY_YEAR.captures_iter(text) {
        let month = month_number(&c[1]).unwrap_or(0);
        push_date(
            &c[0],
            valid_date(c[3].parse().unwrap_or(0), month, c[2].parse().unwrap_or(0)),
        );
    }
    for c in DOTTED_DATE.captures_iter(text) {
        push_date(
            &c[0],
            valid_date(
                c[3].parse().unwrap_or(0),
                c[2].parse().unwrap_or(0),
                c[1].parse().unwrap_or(0),
            ),
        );
    }

    let mut amounts = Vec::new();
    let mut push_amount = |source: &str, symbol: &str, number: &str| {
        let value: String = number
            .chars()
            .filter(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        amounts
            .push(json!({ "text": source.trim(), "currency": currency(symbol), "value": value }));
    };
    for c in AMOUNT_BEFORE.captures_iter(text) {
        push_amount(&c[0], &c[1], &c[2]);
    }
    for c in AMOUNT_AFTER.captures_iter(text) {
        push_amount(&c[0], &c[2], &c[1]);
    }

    let mut emails: Vec<String> = EMAIL
        .find_iter(text)
        .map(|m| m.as_str().to_owned())
        .collect();
    emails.dedup();

    Found {
        title,
        parties,
        dates,
        amounts,
        emails,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_fields_in_a_contract() {
        let text = "SERVICE AGREEMENT\n\
            This Agreement is made on 3 March 2026 between Acme Widgets Inc. and Globex Ltd.\n\
            Client: Globex Ltd\n\
            Supplier: Acme Widgets Inc.\n\
            The fee is USD 12,500.00 payable by 2026-04-01, plus 300 EUR in expenses.\n\
            Term ends December 31, 2026 or 15.01.2027. Contact legal@acme.example.com.";
        let found = find(text);
        assert_eq!(found.title.as_deref(), Some("SERVICE AGREEMENT"));
        let names: Vec<&str> = found
            .parties
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(names.contains(&"Globex Ltd"), "{names:?}");
        assert!(names.contains(&"Acme Widgets Inc."), "{names:?}");
        let dates: Vec<&str> = found
            .dates
            .iter()
            .filter_map(|d| d["date"].as_str())
            .collect();
        for expected in ["2026-03-03", "2026-04-01", "2026-12-31", "2027-01-15"] {
            assert!(dates.contains(&expected), "{expected} not in {dates:?}");
        }
        let values: Vec<(&str, &str)> = found
            .amounts
            .iter()
            .map(|a| {
                (
                    a["currency"].as_str().unwrap(),
                    a["value"].as_str().unwrap(),
                )
            })
            .collect();
        assert!(values.contains(&("USD", "12500.00")), "{values:?}");
        assert!(values.contains(&("EUR", "300")), "{values:?}");
        assert_eq!(found.emails, ["legal@acme.example.com"]);
    }

    #[test]
    fn rejects_impossible_dates() {
        assert_eq!(valid_date(2026, 2, 30), None);
        assert_eq!(valid_date(2024, 2, 29).as_deref(), Some("2024-02-29"));
        let found = find("due 2026-13-45 or 31.02.2026");
        assert!(found.dates.is_empty());
    }
}
