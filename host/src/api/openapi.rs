//! The OpenAPI document's frame: title, the bearer scheme, and the problem
//! answers every operation can give. Routes document their own success
//! bodies and the problems only they give (a 409 on publish, a 422 naming
//! a step); it adds the ones that come from shared
//! machinery (the key check, the rate limiter, the JSON and query
//! extractors) so no route can forget them ([`finish`]), and gives every problem the
//! `application/problem+json` content type the server sends.

use utoipa::OpenApi;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::{ContentBuilder, HttpMethod, Ref, RefOr};

/// The content type of every error answer (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(OpenApi)]
#[openapi(
    info(title = "Weft", description = "A workflow host whose step types are sandboxed WebAssembly components."),
    modifiers(&SecurityAddon),
    security(("api_key" = [])),
)]
pub(super) struct ApiDoc;

struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// Finishes the document once the routes are merged into it: unique
/// operation ids and the problem answers of every operation.
pub(super) fn finish(openapi: &mut utoipa::openapi::OpenApi) {
    unique_operation_ids(openapi);
    for item in openapi.paths.paths.values_mut() {
        for method in METHODS {
            if let Some(operation) = operation_mut(item, method) {
                document_problems(operation);
            }
        }
    }
}

/// utoipa names an operation after its handler, and handlers of different
/// resources share names (`list`, `get`, `create`). OpenAPI wants operation
/// ids unique, and generated clients name their functions after them, so a
/// shared name gets the path's resource words: `list_runs`, `get_webhooks`.
fn unique_operation_ids(openapi: &mut utoipa::openapi::OpenApi) {
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for item in openapi.paths.paths.values_mut() {
        for method in METHODS {
            if let Some(id) = operation_mut(item, method).and_then(|o| o.operation_id.clone()) {
                *seen.entry(id).or_default() += 1;
            }
        }
    }
    for (path, item) in openapi.paths.paths.iter_mut() {
        let resource: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty() && *s != "v1" && !s.starts_with('{'))
            .map(|s| s.replace('-', "_"))
            .collect();
        for method in METHODS {
            if let Some(operation) = operation_mut(item, method)
                && let Some(id) = &operation.operation_id
                && seen.get(id).is_some_and(|n| *n > 1)
            {
                operation.operation_id = Some(format!("{id}_{}", resource.join("_")));
            }
        }
    }
}

const METHODS: [HttpMethod; 5] = [
    HttpMethod::Get,
    HttpMethod::Post,
    HttpMethod::Put,
    HttpMethod::Patch,
    HttpMethod::Delete,
];

fn operation_mut(
    item: &mut utoipa::openapi::PathItem,
    method: HttpMethod,
) -> Option<&mut Operation> {
    match method {
        HttpMethod::Get => item.get.as_mut(),
        HttpMethod::Post => item.post.as_mut(),
        HttpMethod::Put => item.put.as_mut(),
        HttpMethod::Patch => item.patch.as_mut(),
        HttpMethod::Delete => item.delete.as_mut(),
        _ => None,
    }
}

fn document_problems(operation: &mut Operation) {
    // A problem a route documented itself is sent as problem+json.
    for response in operation.responses.responses.values_mut() {
        if let RefOr::T(response) = response
            && let Some(content) = response.content.shift_remove("application/json")
        {
            if is_problem(&content) {
                response.content.insert(PROBLEM_JSON.into(), content);
            } else {
                response.content.insert("application/json".into(), content);
            }
        }
    }
    let secured = operation.security.as_ref().is_none_or(|requirements| {
        requirements.iter().any(|r| {
            serde_json::to_value(r).is_ok_and(|v| v.as_object().is_some_and(|o| !o.is_empty()))
        })
    });
    let params = operation.parameters.as_deref().unwrap_or_default();
    let in_path = params
        .iter()
        .any(|p| matches!(p.parameter_in, ParameterIn::Path));
    let in_query_or_header = params
        .iter()
        .any(|p| matches!(p.parameter_in, ParameterIn::Query | ParameterIn::Header));
    let idempotent = params
        .iter()
        .any(|p| matches!(p.parameter_in, ParameterIn::Header) && p.name == "Idempotency-Key");
    let body = operation.request_body.as_ref();
    let json_body = body.is_some_and(|b| b.content.contains_key("application/json"));
    let any_body = body.is_some();

    let mut add = |status: &str, description: &str| {
        operation
            .responses
            .responses
            .entry(status.into())
            .or_insert_with(|| RefOr::T(problem(description)));
    };
    if secured {
        add(
            "401",
            "Missing or invalid credentials (`Authorization: Bearer <key>` or `x-api-key`).",
        );
        add("403", "The key lacks the scope this operation needs.");
        add(
            "429",
            "Too many requests for this key; `Retry-After` says when to try again.",
        );
    }
    if in_query_or_header || any_body {
        add(
            "400",
            "A malformed request: a query parameter, header or body that cannot be read.",
        );
    }
    if in_path {
        add(
            "404",
            "Not found, or belongs to another tenant (never 403 across tenants).",
        );
    }
    if any_body {
        add("413", "The request body is larger than the limit.");
        add(
            "415",
            "The body is not of a content type this operation reads.",
        );
    }
    if idempotent {
        add(
            "409",
            "The `Idempotency-Key` was used with another body, or its first request is still being answered (`Retry-After`).",
        );
    }
    if json_body {
        add(
            "422",
            "The body is JSON but not a valid request (the detail says why).",
        );
    }
    // Retry-After on 429, and on the 409 of a key still in flight.
    let retry_after = if idempotent {
        &["409", "429"][..]
    } else {
        &["429"]
    };
    for status in retry_after {
        let Some(RefOr::T(response)) = operation.responses.responses.get_mut(*status) else {
            continue;
        };
        response
            .headers
            .entry("Retry-After".into())
            .or_insert_with(|| {
                utoipa::openapi::HeaderBuilder::new()
                    .schema(
                        utoipa::openapi::ObjectBuilder::new()
                            .schema_type(utoipa::openapi::schema::Type::Integer),
                    )
                    .description(Some("Seconds to wait."))
                    .build()
            });
    }
}

fn is_problem(content: &utoipa::openapi::Content) -> bool {
    matches!(&content.schema, Some(RefOr::Ref(r)) if r.ref_location.ends_with("/ProblemDoc"))
}

fn problem(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ProblemDoc")))
                .build(),
        )
        .build()
}
