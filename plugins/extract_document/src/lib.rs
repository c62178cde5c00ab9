//! `extract_document`: reads an uploaded PDF or plain-text document through
//! the host's file capability, extracts its text inside the component (PDF
//! parsing with lopdf), and finds structured fields: title, parties, dates,
//! amounts and email addresses.
//!
//! Field finding is pattern-based and says so: every field carries the text
//! it was found in, so a person can check it.

mod fields;

use weft_sdk::{Plugin, PluginInfo, StepContext, StepError, Value, export_plugin, host, json};

/// Text longer than this is cut in the output (the fields are found in all
/// of it); `text_truncated` says so.
const MAX_TEXT_CHARS: usize = 20_000;

struct ExtractDocument;

/// The file id from config, or from the input (`file_id`, `file.id`, or
/// `attachment.id`).
fn file_id(config: &Value, input: &Value) -> Result<String, StepError> {
    let candidates = [
        &config["file_id"],
        &input["file_id"],
        &input["file"]["id"],
        &input["attachment"]["id"],
        &input["attachment"],
    ];
    candidates
        .into_iter()
        .find_map(|v| v.as_str().map(str::to_owned))
        .ok_or_else(|| StepError::invalid_input("no file id: set config.file_id or input.file_id"))
}

struct Extracted {
    kind: &'static str,
    text: String,
    pages: Option<usize>,
    title: Option<String>,
}

fn pdf_string(object: &lopdf::Object) -> Option<String> {
    match object {
        lopdf::Object::String(bytes, _) => {
            let text = if bytes.starts_with(&[0xFE, 0xFF]) {
                let units: Vec<u16> = bytes[2..]
                    .chunks_exact(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect();
                String::from_utf16_lossy(&units)
            } else {
                bytes.iter().map(|&b| b as char).collect()
            };
            let text = text.trim().to_owned();
            (!text.is_empty()).then_some(text)
        }
        _ => None,
    }
}

fn extract_pdf(bytes: &[u8]) -> Result<Extracted, StepError> {
    let document = lopdf::Document::load_mem(bytes)
        .map_err(|e| StepError::invalid_input(format!("the PDF could not be parsed: {e}")))?;
    if document.is_encrypted() {
        return Err(StepError::invalid_input("the PDF is encrypted"));
    }
    let pages: Vec<u32> = document.get_pages().keys().copied().collect();
    let mut text = String::new();
    for (i, page) in pages.iter().enumerate() {
        host::progress(((i * 100) / pages.len().max(1)) as u8, "extracting text");
        match document.extract_text(&[*page]) {
            Ok(page_text) => {
                text.push_str(&page_text);
                text.push('\n');
            }
            Err(e) => host::warn(&format!("page {page}: no text extracted: {e}")),
        }
    }
    let title = document
        .trailer
        .get(b"Info")
        .ok()
        .and_then(|info| document.dereference(info).ok())
        .and_then(|(_, info)| info.as_dict().ok().cloned())
        .and_then(|info| info.get(b"Title").ok().and_then(pdf_string));
    Ok(Extracted {
        kind: "pdf",
        text,
        pages: Some(pages.len()),
        title,
    })
}

fn extract(bytes: &[u8]) -> Result<Extracted, StepError> {
    if bytes.starts_with(b"%PDF-") {
        return extract_pdf(bytes);
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(Extracted {
            kind: "text",
            text: text.to_owned(),
            pages: None,
            title: None,
        }),
        Err(_) => Err(StepError::invalid_input(
            "unsupported document: neither a PDF nor UTF-8 text",
        )),
    }
}

impl Plugin for ExtractDocument {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "extract_document",
            env!("CARGO_PKG_VERSION"),
            "Extracts the text of an uploaded PDF or text document and finds its title, parties, dates and amounts.",
        )
        .config_schema(json!({
            "type": "object",
            "properties": {
                "file_id": {"type": "string", "description": "Id of an uploaded file; default: input.file_id"}
            }
        }))
        .input_schema(json!({
            "type": "object",
            "properties": {"file_id": {"type": "string"}}
        }))
        .output_schema(json!({
            "type": "object",
            "properties": {
                "kind": {"enum": ["pdf", "text"]},
                "pages": {"type": ["integer", "null"]},
                "title": {"type": ["string", "null"]},
                "parties": {"type": "array"},
                "dates": {"type": "array"},
                "amounts": {"type": "array"},
                "emails": {"type": "array"},
                "word_count": {"type": "integer"},
                "text": {"type": "string"},
                "text_truncated": {"type": "boolean"}
            }
        }))
        .capability("files")
    }

    fn run(_ctx: &StepContext, config: Value, input: Value) -> Result<Value, StepError> {
        let id = file_id(&config, &input)?;
        let bytes = host::read_file(&id).map_err(|e| {
            if e.starts_with("denied") {
                StepError::fatal(e)
            } else {
                StepError::invalid_input(format!("file {id}: {e}"))
            }
        })?;
        let extracted = extract(&bytes)?;
        let found = fields::find(&extracted.text);
        let title = extracted.title.or(found.title);
        let char_count = extracted.text.chars().count();
        let text: String = extracted.text.chars().take(MAX_TEXT_CHARS).collect();
        host::progress(100, "done");
        Ok(json!({
            "file_id": id,
            "kind": extracted.kind,
            "pages": extracted.pages,
            "title": title,
            "parties": found.parties,
            "dates": found.dates,
            "amounts": found.amounts,
            "emails": found.emails,
            "word_count": extracted.text.split_whitespace().count(),
            "text": text,
            "text_truncated": char_count > MAX_TEXT_CHARS,
        }))
    }
}

export_plugin!(ExtractDocument);
