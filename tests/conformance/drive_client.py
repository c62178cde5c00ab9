"""Drives Weft through a client openapi-python-client generated from
/openapi.json (package `weft_client` on PYTHONPATH): create workflow →
publish → start run → read run, a file upload and a few list reads, each
answer parsed by the generated models. Leaves the data behind for
Schemathesis to find. Usage: drive_client.py <base url> <operator key>.
"""

import io
import sys

from weft_client import AuthenticatedClient
from weft_client.api.data import put_kv
from weft_client.api.files import upload_files
from weft_client.api.runs import get_runs, list_runs, start
from weft_client.api.workflows import create_workflows, get_workflows, publish
from weft_client.models import (
    DefinitionDoc,
    FileOut,
    FileUpload,
    GetRunsView,
    ProblemDoc,
    Publish,
    RunOut,
    StartRun,
    WorkflowOut,
)
from weft_client.types import File, Unset


def expect(response, status, model):
    """The parsed body of `response`, checked for status and type."""
    assert response.status_code == status, (response.status_code, response.content)
    assert isinstance(response.parsed, model), (type(response.parsed), response.content)
    return response.parsed


def main(url, key):
    client = AuthenticatedClient(base_url=url, token=key, raise_on_unexpected_status=True)

    # Create and publish a workflow of one plugin step and one that pauses.
    definition = DefinitionDoc.from_dict(
        {
            "key": "client_check",
            "name": "Client check",
            "description": "driven by the generated client",
            "input_schema": {"type": "object", "required": ["items"]},
            "steps": [
                {
                    "id": "count",
                    "uses": "transform@1",
                    "config": {"expression": "{n: (.items | length)}"},
                    "retry": {"max_attempts": 2, "backoff": {"initial_ms": 10}},
                    "timeout_ms": 10000,
                },
                {"id": "later", "uses": "wait", "config": {"duration_ms": 1}, "depends_on": ["count"], "if": True},
            ],
        }
    )
    created = expect(create_workflows.sync_detailed(client=client, body=definition), 201, WorkflowOut)
    assert created.status == "draft", created
    published = expect(
        publish.sync_detailed("client_check", client=client, body=Publish(version=created.version)), 200, WorkflowOut
    )
    assert published.status == "published", published
    read = expect(get_workflows.sync_detailed("client_check", client=client, version="published"), 200, WorkflowOut)
    assert read.published_version == created.version, read

    # Start a run and wait for it; 936.0 is an integer to JSON Schema.
    body = StartRun.from_dict({"workflow": "client_check", "input": {"items": [1, 2, 3]}, "wait_ms": 30000.0})
    started = start.sync_detailed(client=client, body=body)
    assert started.status_code in (200, 202), (started.status_code, started.content)
    run = expect(get_runs.sync_detailed(started.parsed.id, client=client), 200, RunOut)
    for _ in range(300):
        if run.status not in ("pending", "running"):
            break
        run = expect(get_runs.sync_detailed(run.id, client=client), 200, RunOut)
    assert run.status == "completed", run.to_dict()
    assert run.error is None, run.error
    assert run.result is not None, run.to_dict()
    steps = {step.id: step for step in run.steps}
    assert steps["count"].output == {"n": 3}, steps["count"].to_dict()
    attempt = steps["count"].attempt_log[0]
    assert attempt.status == "completed" and attempt.error is None, attempt.to_dict()
    # The compact view leaves the logs out; the full one has them.
    assert isinstance(attempt.logs, Unset), attempt.logs
    full = expect(get_runs.sync_detailed(run.id, client=client, view=GetRunsView.FULL), 200, RunOut)
    attempt = {step.id: step for step in full.steps}["count"].attempt_log[0]
    assert attempt.logs is None or isinstance(attempt.logs, list), attempt.logs

    # A second, paused run, and a list read with query parameters.
    start.sync_detailed(client=client, body=StartRun.from_dict({"workflow": "client_check", "input": {"items": []}}))
    page = list_runs.sync(client=client, workflow="client_check", limit=1)
    assert len(page.items) == 1 and page.next_cursor, page.to_dict()

    # A problem answer parses as one.
    missing = get_runs.sync_detailed("no-such-run", client=client)
    assert missing.status_code == 404 and isinstance(missing.parsed, ProblemDoc), missing.content

    # Multipart: a file upload.
    form = FileUpload(file=File(payload=io.BytesIO(b"hello"), file_name="hello.txt", mime_type="text/plain"))
    stored = expect(upload_files.sync_detailed(client=client, body=form), 201, FileOut)
    assert stored.size == 5, stored

    # Something in the key-value store.
    stored_kv = put_kv.sync_detailed("default", "greeting", client=client, body=["any", {"json": 1}])
    assert stored_kv.status_code == 200, stored_kv.content
    print(f"generated client: workflow {created.key} published, run {run.id} {run.status}, file {stored.id}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
