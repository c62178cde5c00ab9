"""Weft step plugins in Python: a thin layer over the bindings
componentize-py generates for the `weft:plugin/step-plugin` world.

Config, input and output are Python values (parsed from and serialised to
JSON); a step fails by raising `Retryable`, `Fatal` or `InvalidInput` (any
other exception is a fatal error naming it); the host's capabilities are
plain functions.

    import weft_sdk as weft

    def run(ctx, config, input):
        weft.log("info", f"hello {config['name']}")
        return {"greeting": f"Hello, {config['name']}!"}

    Step = weft.plugin(name="hello", version="0.1.0", description="Greets.",
                       config_schema={"type": "object"}, run=run)

Build: `componentize-py -d wit -w step-plugin componentize app -o hello.wasm`
(with this package on the path: `-p <dir holding weft_sdk>`).
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, outgoing_handler, store, streams
from wit_world.imports import wasi_http_types as http_types
from wit_world.imports import weft_plugin_types as types


class StepError(Exception):
    """Base of the errors a step raises to fail its attempt."""


class Retryable(StepError):
    """A transient failure: the host retries if the step's policy allows."""


class Fatal(StepError):
    """A permanent failure: not retried."""


class InvalidInput(StepError):
    """The config or input makes no sense for this plugin: not retried."""


_LEVELS = {
    "trace": host.LogLevel.TRACE,
    "debug": host.LogLevel.DEBUG,
    "info": host.LogLevel.INFO,
    "warn": host.LogLevel.WARN,
    "error": host.LogLevel.ERROR,
}


def log(level, message):
    """Appends a line to the attempt's log (`trace` … `error`)."""
    host.log(_LEVELS[level], str(message))


def progress(percent, note=""):
    host.progress(max(0, min(100, int(percent))), note)


def secret(name):
    """The tenant's secret, or None if it does not exist or is not granted."""
    return host.secret(name)


def read_file(file_id):
    """An uploaded file's bytes; raises Fatal naming the problem."""
    try:
        return host.read_file(file_id)
    except Err as e:
        raise Fatal(e.value) from None


def _addresses(value):
    return [value] if isinstance(value, str) else list(value)


def send_mail(to, subject, body, cc=()):
    """Queues a message in the outbox (once per attempt position); its id.
    `to` and `cc` are an address or a list of them."""
    try:
        return host.send_mail(host.Mail(_addresses(to), _addresses(cc), subject, body))
    except Err as e:
        raise Fatal(e.value) from None


def notify(title, body="", level="info", audience="", link=""):
    try:
        return host.notify(host.Notification(title, body, level, audience, link))
    except Err as e:
        raise Fatal(e.value) from None


class Response:
    """An HTTP response, read whole: `status`, `headers` (lowercase name to
    a list of values), `body` (bytes), and `text()` / `json()`."""

    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return _loads(self.body)


_METHODS = {
    "GET": http_types.Method_Get, "HEAD": http_types.Method_Head,
    "POST": http_types.Method_Post, "PUT": http_types.Method_Put,
    "DELETE": http_types.Method_Delete, "OPTIONS": http_types.Method_Options,
    "PATCH": http_types.Method_Patch,
}


def _http_error(code):
    if isinstance(code, http_types.ErrorCode_HttpRequestDenied):
        return Fatal("request denied: the plugin is not granted this host")
    name = type(code).__name__.removeprefix("ErrorCode_")
    return Retryable(f"http transport error: {name}")


def http(method, url, headers=None, body=None):
    """Sends an HTTP request through the host (which lets it through only
    to granted hosts) and reads the whole response. Raises `InvalidInput`
    for a bad URL, `Fatal` ("request denied") for a host the plugin is not
    granted, `Retryable` when the request fails in transit."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("http", "https"):
        raise InvalidInput(f"invalid url: {url!r} must start with http:// or https://")
    end = min([i for i in (rest.find(c) for c in "/?#") if i >= 0], default=len(rest))
    authority, path = rest[:end], rest[end:].split("#", 1)[0]
    if not authority:
        raise InvalidInput(f"invalid url: {url!r} has no host")
    if not path.startswith("/"):
        path = "/" + path
    fields = http_types.Fields()
    for name, value in (headers or {}).items():
        try:
            fields.append(name, value.encode() if isinstance(value, str) else value)
        except Err:
            raise InvalidInput(f"header {name!r} is not allowed") from None
    request = http_types.OutgoingRequest(fields)
    upper = method.upper()
    try:
        request.set_method(_METHODS[upper]() if upper in _METHODS else http_types.Method_Other(upper))
        request.set_scheme(http_types.Scheme_Https() if scheme == "https" else http_types.Scheme_Http())
        request.set_authority(authority)
        request.set_path_with_query(path)
    except Err:
        raise InvalidInput(f"invalid url: {url!r} was refused") from None
    outgoing = request.body()
    try:
        pending = outgoing_handler.handle(request, None)
    except Err as e:
        raise _http_error(e.value) from None
    data = body.encode() if isinstance(body, str) else (body or b"")
    with outgoing.write() as stream:
        try:
            for i in range(0, len(data), 4096):
                stream.blocking_write_and_flush(data[i:i + 4096])
        except Err:
            pass  # the response says why
    try:
        http_types.OutgoingBody.finish(outgoing, None)
    except Err as e:
        raise _http_error(e.value) from None
    while (got := pending.get()) is None:
        with pending.subscribe() as ready:
            ready.block()
    if isinstance(got, Err):
        raise Retryable("http transport error: response already taken")
    if isinstance(got.value, Err):
        raise _http_error(got.value.value)
    response = got.value.value
    found = {}
    for name, value in response.headers().entries():
        found.setdefault(name.lower(), []).append(value.decode("latin-1"))
    incoming = response.consume()
    chunks = []
    with incoming.stream() as body_stream:
        while True:
            try:
                chunks.append(body_stream.blocking_read(65536))
            except Err as e:
                if isinstance(e.value, streams.StreamError_Closed):
                    break
                raise Retryable("http transport error: reading the response body failed") from None
    return Response(response.status(), found, b"".join(chunks))


def _kv_error(error):
    """The text of a `wasi:keyvalue` error."""
    if isinstance(error, store.Error_NoSuchStore):
        return "no such store"
    if isinstance(error, store.Error_AccessDenied):
        return "access denied"
    return str(getattr(error, "value", error))


class _Kv:
    """The tenant's key-value store: values are bytes (str is stored as
    UTF-8), with JSON helpers. Errors raise `Retryable` naming the problem."""

    def _call(self, bucket, op, *args):
        try:
            return getattr(store.open(bucket), op)(*args)
        except Err as e:
            # Retryable, as the Rust SDK's `?` makes it: the store may be
            # back on the next attempt.
            raise Retryable(f"key-value store {bucket!r}: {_kv_error(e.value)}") from None

    def get(self, key, bucket="default"):
        return self._call(bucket, "get", key)

    def set(self, key, value, bucket="default"):
        if isinstance(value, str):
            value = value.encode()
        self._call(bucket, "set", key, value)

    def delete(self, key, bucket="default"):
        self._call(bucket, "delete", key)

    def keys(self, bucket="default"):
        found, cursor = [], None
        while True:
            page = self._call(bucket, "list_keys", cursor)
            found.extend(page.keys)
            if page.cursor is None:
                return found
            cursor = page.cursor

    def get_json(self, key, bucket="default"):
        value = self.get(key, bucket)
        return None if value is None else json.loads(value)

    def set_json(self, key, value, bucket="default"):
        self.set(key, _dumps(value), bucket)


kv = _Kv()


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def _loads(text):
    return json.loads(text, parse_constant=_reject_constant)


def _dumps(value):
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


_STEP_ERRORS = (types.StepError_Retryable, types.StepError_Fatal, types.StepError_InvalidInput)


def _schema(value):
    return json.dumps(value if value is not None else {})


def plugin(name, version, description, run, config_schema=None,
           input_schema=None, output_schema=None, capabilities=()):
    """The class to export as `Step` from the app module: componentize-py
    exports it as the world's `step` interface. `run(ctx, config, input)`
    returns the output; `ctx` has tenant, run_id, step_id, attempt and
    idempotency_key. Schemas are JSON Schema documents as Python values
    (default: anything)."""
    schema = _schema
    info = types.PluginInfo(name, version, description, schema(config_schema),
                            schema(input_schema), schema(output_schema),
                            list(capabilities))

    class Step(exports.Step):
        def describe(self):
            return info

        def run(self, ctx, config, input):
            try:
                config_value = _loads(config) if config else {}
            except ValueError as e:
                raise Err(types.StepError_InvalidInput(f"config is not JSON: {e}"))
            try:
                input_value = _loads(input) if input else {}
            except ValueError as e:
                raise Err(types.StepError_InvalidInput(f"input is not JSON: {e}"))
            try:
                output = run(ctx, config_value, input_value)
                text = _dumps(output)
            except Retryable as e:
                raise Err(types.StepError_Retryable(str(e)))
            except InvalidInput as e:
                raise Err(types.StepError_InvalidInput(str(e)))
            except StepError as e:
                raise Err(types.StepError_Fatal(str(e)))
            except Err as e:
                if isinstance(e.value, _STEP_ERRORS):
                    raise
                raise Err(types.StepError_Fatal(f"host call failed: {e.value}"))
            except (TypeError, ValueError) as e:
                if "output" not in locals():
                    raise Err(types.StepError_Fatal(f"{type(e).__name__}: {e}"))
                raise Err(types.StepError_Fatal(f"the output is not JSON: {e}"))
            except Exception as e:
                raise Err(types.StepError_Fatal(f"{type(e).__name__}: {e}"))
            return text

    return Step
