// Shared plumbing of the Node client scripts (ai_sdk.mjs, openai_node.mjs, anthropic_node.mjs)
// that tests/test_node_clients.py runs against a real gunicorn and the fake upstream.
//
// Each script runs every case of ONE client against ONE gateway URL in a single process (node
// start-up is the expensive part) and prints ONE JSON document on stdout:
//   {"client": ..., "model": ..., "cases": {"<case>": {...what the client showed...}}}
// A case that throws is reported as {"error": describeError(e)} instead of aborting the run, so
// the pytest side can report a result per case.
//
// Inputs (environment):
//   GATEWAY_URL  the gateway's root URL, e.g. http://127.0.0.1:8123 (no /v1)
//   GATEWAY_KEY  the key the client sends to the gateway
//   MODEL        the model id to ask for
//   CASE_TAG     a prefix put in every prompt as "(case <CASE_TAG>/<case>)" so the test can tell
//                which upstream request belongs to which case (default: the client name)
//   CASES        optional comma-separated subset of cases to run (for debugging by hand)
//   CASE_TIMEOUT_MS  per-case limit (default 20000)

export const GATEWAY_URL = need('GATEWAY_URL').replace(/\/+$/, '');
export const GATEWAY_KEY = need('GATEWAY_KEY');
export const MODEL = need('MODEL');

function need(name) {
  const value = process.env[name];
  if (!value) {
    process.stderr.write(`missing environment variable ${name}\n`);
    process.exit(2);
  }
  return value;
}

/** The tool every tool case offers, as a JSON schema. */
export const READ_FILE_SCHEMA = {
  type: 'object',
  properties: { file_path: { type: 'string' } },
  required: ['file_path'],
};
/** What the client-side tool returns; the fake answers "The tool said: " + this. */
export const toolOutput = (input) => `contents of ${input.file_path}`;
/** The prompt marker that makes the fake call read_file once, then answer with the result. */
export const CALL_MARKER = '[[call:read_file={"file_path":"a.txt"}]]';

/** The text put into every prompt of case ``name`` (see CASE_TAG above). */
export function tag(name) {
  return `(case ${process.env.CASE_TAG || 'node'}/${name})`;
}

/** What the test needs to know about an error a client raised. */
export function describeError(e) {
  if (e === null || typeof e !== 'object') return { class: typeof e, message: String(e) };
  const out = {
    class: e.constructor?.name ?? null,
    name: e.name ?? null,
    status: e.status ?? e.statusCode ?? null,
    message: String(e.message ?? e).slice(0, 2000),
  };
  if (e.type) out.type = e.type;                              // @anthropic-ai/sdk error.type
  if (e.responseBody) out.responseBody = String(e.responseBody).slice(0, 2000);  // AI SDK
  if (e.error && typeof e.error === 'object') out.body = e.error;  // openai / anthropic SDKs
  if (e.cause) out.cause = describeError(e.cause);
  if (e.lastError) out.lastError = describeError(e.lastError);     // AI SDK RetryError
  if (Array.isArray(e.errors)) out.errors = e.errors.map(describeError);
  return out;
}

function withTimeout(promise, ms, name) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`case ${name} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

/**
 * Runs ``cases`` ({name: async () => result}) one after the other, then prints the JSON
 * document and exits.  Errors a case expects (error cases) are caught by the case itself and
 * returned as data; anything else thrown is recorded as {"error": ...}.
 */
export async function runCases(client, cases) {
  const only = (process.env.CASES || '').split(',').map((s) => s.trim()).filter(Boolean);
  const timeout = Number(process.env.CASE_TIMEOUT_MS || 20000);
  const results = {};
  for (const [name, fn] of Object.entries(cases)) {
    if (only.length && !only.includes(name)) continue;
    const started = Date.now();
    try {
      results[name] = await withTimeout(Promise.resolve().then(fn), timeout, name);
    } catch (e) {
      results[name] = { error: describeError(e) };
      process.stderr.write(`[${client}] case ${name} threw: ${e?.stack ?? e}\n`);
    }
    results[name].ms = Date.now() - started;
  }
  // exit once written: do not wait for the clients' keep-alive sockets
  process.stdout.write(JSON.stringify({ client, model: MODEL, cases: results }) + '\n',
    () => process.exit(0));
}
