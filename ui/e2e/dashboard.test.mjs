// End-to-end tests of the dashboard in headless Chromium (Debian's, driven
// by playwright-core) against a real `weft serve`. Started by
// tests/dashboard.rs, which passes:
//   WEFT_URL           the server's address
//   WEFT_ADMIN_KEY     the operator key of tenant `default`
//   WEFT_TESTKIT       path of the testkit component to upload
//   WEFT_SCREENSHOTS   where to save screenshots of the main screens
//   WEFT_CHROMIUM      the Chromium executable (default /usr/bin/chromium)
// Every screenshotted screen is also checked with axe-core; the last test
// fails on console errors, requests to other origins, and serious or
// critical accessibility findings.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { chromium } from "playwright-core";

const URL = process.env.WEFT_URL;
const ADMIN = process.env.WEFT_ADMIN_KEY;
const SHOTS = process.env.WEFT_SCREENSHOTS;
const TESTKIT = process.env.WEFT_TESTKIT;
assert.ok(URL && ADMIN && SHOTS && TESTKIT, "WEFT_URL, WEFT_ADMIN_KEY, WEFT_SCREENSHOTS and WEFT_TESTKIT are set");
mkdirSync(SHOTS, { recursive: true });

const AXE = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

let browser;
let page;
// Console errors and uncaught exceptions, with the HTTP errors the tests
// provoke on purpose listed in `expected` and removed at the end.
const consoleErrors = [];
const offOrigin = [];

async function call(method, path, body, key = ADMIN) {
  const response = await fetch(`${URL}${path}`, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

async function publish(definition) {
  const created = await call("POST", "/v1/workflows", definition);
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const published = await call("POST", `/v1/workflows/${definition.key}/publish`, { version: "0.1.0" });
  assert.equal(published.status, 200, JSON.stringify(published.body));
}

async function startRun(workflow, input = {}) {
  const run = await call("POST", "/v1/runs", { workflow, input });
  assert.equal(run.status, 202, JSON.stringify(run.body));
  return run.body.id;
}

async function waitForStatus(id, wanted) {
  for (let i = 0; i < 200; i++) {
    const run = await call("GET", `/v1/runs/${id}`);
    if (run.body.status === wanted) return run.body;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`run ${id} never reached ${wanted}`);
}

// Accessibility problems axe-core finds on each screenshotted screen
// (serious and critical ones fail the last test).
const violations = [];
let screensChecked = 0;

async function shot(name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
  // Evaluated through the debugging protocol, so the page's CSP still
  // forbids any script the page itself did not load.
  const found = await page.evaluate(async (source) => {
    if (!window.axe) (0, eval)(source);
    const result = await window.axe.run(document, { resultTypes: ["violations"] });
    return result.violations
      .filter((v) => v.impact === "serious" || v.impact === "critical")
      .map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).join(", ")})`);
  }, AXE);
  violations.push(...found.map((v) => `${name}: ${v}`));
  screensChecked += 1;
}

/** A section link in the top navigation. */
function nav(name) {
  return page.getByRole("navigation", { name: "Sections" }).getByRole("link", { name, exact: true });
}

async function signIn(key) {
  await page.goto(`${URL}/`);
  await page.getByLabel("API key").fill(key);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("navigation", { name: "Sections" }).waitFor();
}

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.WEFT_CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
  page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  page.setDefaultTimeout(15_000);
  page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
  page.on("pageerror", (e) => consoleErrors.push(`uncaught: ${e.message}`));
  page.on("request", (r) => {
    if (!r.url().startsWith(URL) && !r.url().startsWith("data:")) offOrigin.push(r.url());
  });
});

after(async () => {
  await browser?.close();
});

test("a wrong key is refused and the right one signs in", async () => {
  await page.goto(`${URL}/`);
  assert.match(page.url(), /\/ui\/$/);
  await shot("sign-in");
  await page.getByLabel("API key").fill("wft_live_not_a_key");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").filter({ hasText: "401" }).waitFor();
  await signIn(ADMIN);
  await page.getByRole("heading", { name: "Runs" }).waitFor();
});

test("uploading a bad file shows the API's validation error; a component uploads", async () => {
  await nav("Plugins").click();
  await page.getByRole("heading", { name: "Plugins", level: 1 }).waitFor();
  // A file that is not WebAssembly, dropped on the drop zone.
  const dropped = await page.evaluateHandle(() => {
    const data = new DataTransfer();
    data.items.add(new File(["definitely not wasm"], "notes.wasm", { type: "application/wasm" }));
    return data;
  });
  await page.locator(".dropzone").dispatchEvent("drop", { dataTransfer: dropped });
  const problem = page.getByRole("alert").filter({ hasText: "400" });
  await problem.waitFor();
  assert.match(await problem.innerText(), /magic bytes/);
  await shot("plugin-upload-error");
  // A real component through the file chooser.
  await page.setInputFiles("#component-file", TESTKIT);
  await page.getByRole("status").filter({ hasText: "Uploaded testkit@" }).waitFor();
  await page.getByRole("link", { name: "testkit", exact: true }).first().waitFor();
  await page.getByRole("searchbox").fill("send");
  await page.getByRole("link", { name: "send_email" }).waitFor();
  await shot("plugins");
});

test("a run started from the UI's input form completes and the graph shows it", async () => {
  await publish({
    key: "greet",
    name: "Greet someone",
    input_schema: {
      type: "object",
      required: ["name"],
      properties: { name: { type: "string", title: "Name" }, times: { type: "integer" } },
    },
    steps: [
      { id: "hello", uses: "testkit@0", config: { mode: "echo" } },
      { id: "log", uses: "testkit@0", config: { mode: "log", lines: 2 }, depends_on: ["hello"] },
      { id: "reply", uses: "testkit@0", config: { mode: "echo" }, depends_on: ["hello"] },
      { id: "done", uses: "testkit@0", config: { mode: "echo" }, depends_on: ["log", "reply"] },
    ],
  });
  await nav("Workflows").click();
  await page.getByRole("link", { name: "greet" }).click();
  await page.getByRole("heading", { name: "Greet someone" }).waitFor();
  await page.getByLabel("Name").fill("Ada");
  await page.getByRole("spinbutton", { name: "times" }).fill("3");
  await shot("workflow");
  await page.getByRole("button", { name: "Start run" }).click();
  await page.waitForURL(/#\/runs\/[0-9a-f-]+$/);
  // Live: the page follows the run's events until it ends.
  await page.locator(".heading .status.s-completed").waitFor();
  for (const step of ["hello", "log", "reply", "done"]) {
    await page.locator(`.dag [data-step="${step}"].n-completed`).waitFor();
  }
  const id = page.url().split("/").pop();
  const run = await call("GET", `/v1/runs/${id}`);
  assert.deepEqual(run.body.input, { name: "Ada", times: 3 });
  // Keyboard: focus a node and press Enter to open the step.
  await page.locator('.dag [data-step="log"]').focus();
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: /Step log/ }).waitFor();
  assert.match(await page.locator(".logs").first().innerText(), /line 0/);
  await shot("run-completed");
});

test("the run list filters by status and workflow and updates live", async () => {
  await nav("Runs").click();
  await page.locator("table.runs tbody tr").first().waitFor();
  await page.getByLabel("Workflow").selectOption("greet");
  await page.getByLabel("Status").selectOption("completed");
  await page.waitForURL(/status=completed/);
  await page.locator(".live.on").waitFor();
  const before = await page.locator("table.runs tbody tr").count();
  // A run started elsewhere appears without a reload.
  const id = await startRun("greet", { name: "Grace" });
  await page.locator(`tr[data-run="${id}"][data-status="completed"]`).waitFor();
  assert.equal(await page.locator("table.runs tbody tr").count(), before + 1);
  await page.getByLabel("Status").selectOption("failed");
  await page.getByText("No runs match these filters").waitFor();
  await page.getByLabel("Status").selectOption("");
  await shot("runs");
});

test("a paused run is resumed through the form generated from its schema", async () => {
  await publish({
    key: "approve-spend",
    name: "Approve spend",
    steps: [
      {
        id: "details",
        uses: "collect_inputs",
        config: {
          schema: {
            type: "object",
            required: ["amount", "approver"],
            properties: { amount: { type: "integer", minimum: 1 }, approver: { type: "string" }, urgent: { type: "boolean" } },
          },
        },
      },
      { id: "record", uses: "testkit@0", config: { mode: "echo" }, depends_on: ["details"] },
    ],
  });
  const id = await startRun("approve-spend");
  await waitForStatus(id, "paused");
  await page.goto(`${URL}/ui/#/runs/${id}`);
  await page.getByRole("heading", { name: "Provide the input this step waits for" }).waitFor();
  await page.getByLabel("amount").fill("0");
  await page.getByLabel("approver").fill("Lin");
  await shot("run-paused");
  await page.getByRole("button", { name: "Submit" }).click();
  // The server checks the data against the schema; its answer is shown as is.
  await page.getByRole("alert").filter({ hasText: "minimum" }).waitFor();
  await page.getByLabel("amount").fill("120");
  await page.getByLabel("urgent").check();
  await page.getByRole("button", { name: "Submit" }).click();
  await page.locator(".heading .status.s-completed").waitFor();
  const run = await call("GET", `/v1/runs/${id}`);
  assert.deepEqual(run.body.steps.find((s) => s.id === "details").output, { amount: 120, approver: "Lin", urgent: true });
});

test("a failed step shows its error and is retried from the UI", async () => {
  await publish({
    key: "charge-card",
    name: "Charge a card",
    steps: [
      { id: "charge", uses: "testkit@0", config: { mode: "flaky", times: 1 } },
      { id: "receipt", uses: "testkit@0", config: { mode: "echo" }, depends_on: ["charge"] },
    ],
  });
  const id = await startRun("charge-card");
  await waitForStatus(id, "failed");
  await page.goto(`${URL}/ui/#/runs/${id}`);
  await page.locator(".heading .status.s-failed").waitFor();
  await page.locator('.dag [data-step="charge"].n-failed').waitFor();
  const failure = page.locator(".step-detail .card.failure");
  await failure.waitFor();
  assert.match(await failure.innerText(), /attempt 1 fails/);
  await shot("run-failed");
  await page.getByRole("button", { name: "Retry step" }).click();
  await page.locator(".heading .status.s-completed").waitFor();
  await page.locator('.dag [data-step="receipt"].n-completed').waitFor();
  const run = await call("GET", `/v1/runs/${id}`);
  assert.equal(run.body.steps.find((s) => s.id === "charge").attempts, 2);
});

test("a key without runs:control sees no controls, and the API refuses it", async () => {
  const key = await call("POST", "/v1/api-keys", { name: "viewer", scopes: ["runs:read", "workflows:read", "plugins:read"] });
  assert.equal(key.status, 201);
  const id = await startRun("approve-spend");
  await waitForStatus(id, "paused");
  await page.getByRole("button", { name: "Sign out" }).click();
  await signIn(key.body.key);
  await page.goto(`${URL}/ui/#/runs/${id}`);
  await page.getByText("This key cannot resume runs").waitFor();
  assert.equal(await page.getByRole("button", { name: "Cancel run" }).count(), 0);
  assert.equal(await page.getByRole("button", { name: "Submit" }).count(), 0);
  const refused = await call("POST", `/v1/runs/${id}/cancel`, undefined, key.body.key);
  assert.equal(refused.status, 403);
  await nav("Workflows").click();
  await page.getByRole("link", { name: "greet" }).click();
  await page.getByRole("heading", { name: "Greet someone" }).waitFor();
  assert.equal(await page.getByRole("button", { name: "Start run" }).count(), 0);
  assert.equal(await page.getByRole("button", { name: /Archive|Publish/ }).count(), 0);
  await page.getByRole("button", { name: "Sign out" }).click();
  await signIn(ADMIN);
});

test("schedules show their next fire time; webhooks their deliveries", async () => {
  const schedule = await call("POST", "/v1/schedules", { workflow: "greet", cron: "0 9 * * 1-5", timezone: "Europe/Oslo", input: { name: "team" } });
  assert.equal(schedule.status, 201, JSON.stringify(schedule.body));
  await nav("Schedules").click();
  await page.getByRole("cell", { name: "0 9 * * 1-5" }).waitFor();
  assert.match(await page.locator("table").innerText(), /Europe\/Oslo/);
  await shot("schedules");
  const hook = await call("POST", "/v1/webhooks", { url: "http://127.0.0.1:9/hook", events: ["run.completed"] });
  assert.equal(hook.status, 201, JSON.stringify(hook.body));
  await startRun("greet", { name: "hook" });
  // Nothing listens on port 9: the delivery fails and waits for a retry.
  for (let i = 0; ; i++) {
    const log = await call("GET", `/v1/webhooks/${hook.body.id}/deliveries`);
    if (log.body.items.some((d) => d.attempts > 0)) break;
    assert.ok(i < 100, "no delivery attempt within 10 s");
    await new Promise((r) => setTimeout(r, 100));
  }
  await nav("Webhooks").click();
  await page.getByRole("link", { name: "http://127.0.0.1:9/hook" }).click();
  await page.locator(".attempts strong", { hasText: "run.completed" }).waitFor();
  await page.getByRole("button", { name: "Redeliver" }).first().click();
  await shot("webhook");
});

test("publish, clone and archive from the workflow page", async () => {
  const created = await call("POST", "/v1/workflows", {
    key: "draft-flow",
    name: "Draft flow",
    steps: [{ id: "only", uses: "testkit@0", config: { mode: "echo" } }],
  });
  assert.equal(created.status, 201);
  await nav("Workflows").click();
  await page.getByRole("link", { name: "draft-flow" }).click();
  await page.getByRole("button", { name: "Publish 0.1.0" }).click();
  await page.locator(".heading .status.s-published").waitFor();
  await page.getByLabel("Clone as").fill("draft-flow-copy");
  await page.getByRole("button", { name: "Clone", exact: true }).click();
  await page.getByRole("heading", { name: "Draft flow" }).waitFor();
  await page.waitForURL(/#\/workflows\/draft-flow-copy$/);
  await page.getByRole("button", { name: "Archive" }).click();
  await page.getByRole("button", { name: "Unarchive" }).waitFor();
  const copy = await call("GET", "/v1/workflows/draft-flow-copy");
  assert.equal(copy.body.archived, true);
  const original = await call("GET", "/v1/workflows/draft-flow?version=published");
  assert.equal(original.body.version, "0.1.0");
});

test("a person approves through the action buttons; a run is terminated with a reason", async () => {
  await publish({
    key: "sign-off",
    name: "Sign off",
    steps: [
      { id: "decide", uses: "request_user_action", config: { actions: ["approve", "decline"], decline: ["decline"] } },
      { id: "after", uses: "testkit@0", config: { mode: "echo" }, depends_on: ["decide"] },
    ],
  });
  const approved = await startRun("sign-off");
  await waitForStatus(approved, "paused");
  await page.goto(`${URL}/ui/#/runs/${approved}`);
  await page.getByRole("heading", { name: "Choose an action" }).waitFor();
  await page.getByRole("button", { name: "approve" }).click();
  await page.locator(".heading .status.s-completed").waitFor();
  const run = await call("GET", `/v1/runs/${approved}`);
  assert.equal(run.body.steps.find((s) => s.id === "decide").output.action, "approve");

  const stopped = await startRun("sign-off");
  await waitForStatus(stopped, "paused");
  await page.goto(`${URL}/ui/#/runs/${stopped}`);
  await page.getByRole("button", { name: "Terminate…" }).click();
  await page.getByLabel("Reason").fill("duplicate request");
  await page.getByRole("button", { name: "Terminate now" }).click();
  await page.locator(".heading .status.s-terminated").waitFor();
  assert.equal(await page.getByRole("button", { name: "Cancel run" }).count(), 0);
});

test("grants are edited on the plugin's page", async () => {
  await nav("Plugins").click();
  await page.getByRole("link", { name: "testkit", exact: true }).first().click();
  await page.getByRole("heading", { name: "Grants" }).waitFor();
  await page.getByLabel("Allowed hosts").fill("api.example.com, hooks.example.org");
  await page.getByLabel("kv").check();
  await page.getByRole("button", { name: "Save grants" }).click();
  await page.getByRole("button", { name: "Save grants" }).and(page.locator(":disabled")).waitFor();
  const grants = await call("GET", "/v1/plugins/testkit/grants");
  assert.deepEqual(grants.body.granted.allowed_hosts, ["api.example.com", "hooks.example.org"]);
  assert.equal(grants.body.granted.kv, true);
  await shot("plugin");
});

/** The task links mailed for a run, by recipient, once `count` are queued. */
async function taskLinks(runId, count) {
  for (let i = 0; i < 200; i++) {
    const outbox = await call("GET", `/v1/outbox?run_id=${runId}`);
    const mails = outbox.body.items.filter((m) => /\/t\//.test(m.body));
    if (mails.length >= count) {
      return Object.fromEntries(mails.map((m) => [m.to[0], m.body.match(/https?:\/\/\S+\/t\/\S+/)[0]]));
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`run ${runId} never mailed ${count} task links`);
}

test("an assignee approves through the mailed link, with no key, once", async () => {
  await publish({ key: "link-approval", name: "Approval by link", steps: [
    { id: "approve", uses: "request_user_action", config: {
      actions: ["approve", "decline"], assignees: ["ann@example.com", "bob@example.com"],
      title: "Approve the purchase of 3 chairs", description: "Total **450 EUR**, supplier *Acme*." } },
    { id: "after", uses: "testkit@0", depends_on: ["approve"], config: { mode: "echo" } }] });
  const runId = await startRun("link-approval");
  const links = await taskLinks(runId, 2);

  // The dashboard lists both tasks and offers the controls.
  await page.goto(`${URL}/ui/#/tasks`);
  await page.getByRole("heading", { name: "Tasks", level: 1 }).waitFor();
  await page.getByRole("cell", { name: "bob@example.com" }).first().waitFor();
  await page.getByRole("cell", { name: "ann@example.com" }).first().waitFor();
  await shot("tasks");

  // Ann opens her link in the same browser, at a phone's width: no key.
  await page.setViewportSize({ width: 390, height: 800 });
  const opened = await page.goto(links["ann@example.com"]);
  assert.equal(opened.status(), 200);
  await page.getByRole("heading", { name: "Approve the purchase of 3 chairs" }).waitFor();
  assert.match(opened.headers()["content-security-policy"], /default-src 'self'/);
  assert.match(await page.locator(".description strong").innerText(), /450 EUR/);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `the task page scrolls sideways by ${overflow}px at 390px`);
  await shot("task-link");
  await page.getByRole("button", { name: "Approve" }).click();
  await page.getByRole("heading", { name: "Thank you" }).waitFor();
  await shot("task-answered");
  const run = await waitForStatus(runId, "completed");
  assert.equal(run.steps.find((s) => s.id === "approve").output.action, "approve");

  // The link again: already answered. Bob's: no longer needed. A tampered one: not found.
  const again = await page.goto(links["ann@example.com"]);
  await page.getByRole("heading", { name: "Already answered" }).waitFor();
  assert.equal(again.status(), 200);
  const bob = await page.goto(links["bob@example.com"]);
  assert.equal(bob.status(), 410);
  const link = links["ann@example.com"];
  const tampered = await page.goto(link.slice(0, -2) + (link.endsWith("AA") ? "BB" : "AA"));
  assert.equal(tampered.status(), 404);
  await page.getByRole("heading", { name: "This link is not valid" }).waitFor();
  assert.doesNotMatch(await page.content(), /chairs/);
  await shot("task-not-found");
  await page.setViewportSize({ width: 1280, height: 860 });
});

test("a form task refuses data against its nested schema and takes valid data as output", async () => {
  await publish({ key: "link-form", name: "Form by link", steps: [
    { id: "details", uses: "collect_inputs", config: {
      assignees: ["cy@example.com"], title: "Delivery details",
      schema: { type: "object", required: ["contact", "lines"], properties: {
        contact: { type: "object", required: ["name"], properties: {
          name: { type: "string", title: "Full name" }, phone: { type: "string" } } },
        lines: { type: "array", minItems: 1, items: { type: "object", required: ["sku", "qty"], properties: {
          sku: { type: "string" }, qty: { type: "integer", minimum: 1 } } } } } } } }] });
  const runId = await startRun("link-form");
  const links = await taskLinks(runId, 1);
  await page.goto(links["cy@example.com"]);
  await page.getByRole("heading", { name: "Delivery details" }).waitFor();
  await page.getByLabel("Full name").fill("Cy Young");
  await page.getByLabel("Sku").fill("CHAIR-1");
  await page.getByLabel("Qty").fill("0");
  // Enter submits the form (not the array's Add button).
  await page.getByLabel("Qty").press("Enter");
  const alert = page.getByRole("alert");
  await alert.waitFor();
  assert.match(await alert.innerText(), /0 is less than the minimum of 1/);
  assert.equal(await page.getByLabel("Full name").inputValue(), "Cy Young");
  await shot("task-form-invalid");
  await page.getByRole("button", { name: "Add line" }).click();
  await page.locator('input[name="f/lines/1/sku"]').fill("DESK-2");
  await page.locator('input[name="f/lines/1/qty"]').fill("1");
  await page.locator('input[name="f/lines/0/qty"]').fill("4");
  await page.getByRole("button", { name: "Submit" }).click();
  await page.getByRole("heading", { name: "Thank you" }).waitFor();
  const run = await waitForStatus(runId, "completed");
  assert.deepEqual(run.steps.find((s) => s.id === "details").output, {
    contact: { name: "Cy Young" }, lines: [{ sku: "CHAIR-1", qty: 4 }, { sku: "DESK-2", qty: 1 }] });
  await page.goto(`${URL}/ui/#/runs`);
  await page.getByRole("navigation", { name: "Sections" }).waitFor();
});

test("runs are filtered by label, paused and unpaused, and re-run from a step", async () => {
  await publish({
    key: "labelled-sleep",
    name: "Labelled sleep",
    labels: { customer: "{{input.customer}}" },
    steps: [
      { id: "nap", uses: "testkit@0", config: { mode: "sleep", ms: 1500 } },
      { id: "wake", uses: "testkit@0", config: { mode: "echo" }, depends_on: ["nap"] },
    ],
  });
  const id = await startRun("labelled-sleep", { customer: "c-42" });
  const other = await startRun("labelled-sleep", { customer: "c-7" });
  await page.goto(`${URL}/ui/#/runs`);
  await page.getByLabel("Labels").fill("customer:c-42");
  await page.getByRole("button", { name: "Filter" }).click();
  await page.waitForURL(/label=customer%3Ac-42/);
  await page.locator(`tr[data-run="${id}"]`).waitFor();
  assert.equal(await page.locator(`tr[data-run="${other}"]`).count(), 0);
  assert.equal(await page.locator("table.runs tbody tr").count(), 1);
  await shot("runs-by-label");

  // Paused while nap runs: wake is held until unpaused.
  await page.locator(`tr[data-run="${id}"] a`).first().click();
  await page.getByRole("button", { name: "Pause run" }).click();
  await page.getByRole("button", { name: "Unpause run" }).waitFor();
  await page.getByText("by an operator").waitFor();
  for (let i = 0; i < 100; i++) {
    const run = await call("GET", `/v1/runs/${id}`);
    if (run.body.steps.find((s) => s.id === "wake").status === "held") break;
    await new Promise((r) => setTimeout(r, 100));
  }
  await page.locator('.dag [data-step="wake"].n-held').waitFor();
  await shot("run-on-hold");
  await page.getByRole("button", { name: "Unpause run" }).click();
  await page.locator(".heading .status.s-completed").waitFor();

  // Re-run from wake: nap's record is kept.
  await page.getByLabel("Re-run from").selectOption("wake");
  await page.getByRole("button", { name: "Re-run", exact: true }).click();
  await page.waitForURL((u) => !u.hash.endsWith(id));
  await page.getByText("Re-run of").waitFor();
  await page.locator(".heading .status.s-completed").waitFor();
  const newId = page.url().split("/runs/")[1];
  const rerun = await call("GET", `/v1/runs/${newId}`);
  assert.equal(rerun.body.rerun_of, id);
  assert.equal(rerun.body.steps.find((s) => s.id === "nap").attempts, 0);
  assert.equal(rerun.body.labels.customer, "c-42");
});

test("a for_each step shows its item counts and lists its failed items", async () => {
  await publish({
    key: "map-items",
    name: "Map items",
    steps: [
      {
        id: "each", uses: "testkit@0", for_each: "{{input.list}}", max_parallel: 5,
        on_item_failure: "continue", config: { mode: "{{item}}", message: "item {{item_index}} refused" },
      },
    ],
  });
  const list = Array.from({ length: 30 }, (_, i) => (i === 12 ? "fail" : "context"));
  const id = await startRun("map-items", { list });
  await waitForStatus(id, "completed");
  await page.goto(`${URL}/ui/#/runs/${id}`);
  await page.locator('.dag [data-step="each"]').click();
  await page.getByRole("heading", { name: "Items", exact: true }).waitFor();
  await page.getByText("30 of 30 done").waitFor();
  await page.getByText("Show items").click();
  await page.getByLabel("Status", { exact: true }).selectOption("failed");
  const rows = page.locator("table.items-table tbody tr");
  for (let i = 0; i < 100 && (await rows.count()) !== 1; i++) await new Promise((r) => setTimeout(r, 100));
  assert.equal(await rows.count(), 1);
  await rows.getByText("item 12 refused").waitFor();
  await shot("map-items");
});

test("screens read at a phone's width", async () => {
  await page.setViewportSize({ width: 390, height: 800 });
  await nav("Runs").click();
  await page.locator("table.runs tbody tr").first().waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `the page scrolls sideways by ${overflow}px at 390px`);
  await shot("runs-narrow");
  await page.setViewportSize({ width: 1280, height: 860 });
});

test("no console errors and nothing fetched from another origin", () => {
  // The only errors allowed are the browser's notes on the HTTP errors the
  // tests provoke on purpose (the wrong key, the bad upload, the invalid
  // resume data, the used, unneeded and tampered task links).
  const unexpected = consoleErrors.filter(
    (e) => !/Failed to load resource: the server responded with a status of (401|400|404|409|410|422)/.test(e),
  );
  assert.deepEqual(unexpected, []);
  assert.deepEqual(offOrigin, []);
  assert.deepEqual(violations, []);
  assert.ok(screensChecked >= 10, `axe checked only ${screensChecked} screens`);
});
