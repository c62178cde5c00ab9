"""`send_email_py`: the `send_email` catalog plugin written in Python —
queues a message in the tenant's outbox through the host's mail capability.
The host keys it by the attempt's idempotency key, so a retried attempt
never sends twice; it is delivered by SMTP when the operator configured
SMTP. It behaves as the Rust plugin does: the same config, checks,
messages and output."""

import json

import weft_sdk as weft

# Longest subject accepted, in bytes; mail servers fold or reject longer ones.
MAX_SUBJECT = 998
# At most this many recipients across `to` and `cc`.
MAX_RECIPIENTS = 100


# Rust's `char::is_whitespace` (Unicode White_Space); `str.isspace` also
# takes the separators \x1c–\x1f.
_WHITESPACE = set("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
                  "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")


def _json(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def is_plausible_address(address):
    local, at, domain = address.rpartition("@")
    return (
        bool(at)
        and local != ""
        and "." in domain
        and not domain.startswith(".")
        and not domain.endswith(".")
        and not any(c in _WHITESPACE or c in "<>," for c in address)
    )


def addresses(config, field):
    value = config.get(field)
    if value is None:
        return []
    if isinstance(value, str):
        found = [value]
    elif isinstance(value, list):
        found = []
        for item in value:
            if not isinstance(item, str):
                raise weft.InvalidInput(f"{field} must list strings, found {_json(item)}")
            found.append(item)
    else:
        raise weft.InvalidInput(f"{field} must be a string or a list of strings, found {_json(value)}")
    for address in found:
        if not is_plausible_address(address):
            raise weft.InvalidInput(f"{field} has {_json(address)}, which is not an email address")
    return found


def text(config, field):
    value = config.get(field)
    if isinstance(value, str):
        return value
    if value is None:
        raise weft.InvalidInput(f"{field} is required")
    return _json(value)


def run(ctx, config, input):
    if not isinstance(config, dict):
        config = {}
    to = addresses(config, "to")
    cc = addresses(config, "cc")
    if not to:
        raise weft.InvalidInput("to must name at least one recipient")
    if len(to) + len(cc) > MAX_RECIPIENTS:
        raise weft.InvalidInput(f"at most {MAX_RECIPIENTS} recipients, found {len(to) + len(cc)}")
    subject = text(config, "subject")
    if len(subject.encode()) > MAX_SUBJECT or "\r" in subject or "\n" in subject:
        raise weft.InvalidInput(f"subject must be one line of at most {MAX_SUBJECT} bytes")
    body = text(config, "body")
    recipients = len(to) + len(cc)
    try:
        message_id = weft.send_mail(to, subject, body, cc)
    except weft.Fatal as e:
        raise weft.Retryable(f"mail capability: {e}") from None
    weft.log("info", f"queued message {message_id} for {recipients} recipient(s)")
    return {"message_id": message_id, "recipients": recipients}


Step = weft.plugin(
    name="send_email_py",
    version="1.0.0",
    description="Sends an email through the tenant's outbox; retried attempts never send twice. (send_email, in Python.)",
    config_schema={
        "type": "object",
        "required": ["to", "subject", "body"],
        "properties": {
            "to": {"type": ["string", "array"], "items": {"type": "string"}, "description": "Recipient address or addresses"},
            "cc": {"type": ["string", "array"], "items": {"type": "string"}},
            "subject": {"type": "string", "maxLength": MAX_SUBJECT},
            "body": {"type": "string", "description": "Plain-text body"},
        },
    },
    output_schema={
        "x-weft-role": "delivery",
        "type": "object",
        "required": ["message_id"],
        "properties": {"message_id": {"type": "string"}, "recipients": {"type": "integer"}},
    },
    capabilities=["mail"],
    run=run,
)
