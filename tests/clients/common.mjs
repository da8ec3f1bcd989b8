// Shared plumbing of the Node client scripts (ai_sdk.mjs, ai_sdk_responses.mjs, openai_node.mjs,
// anthropic_node.mjs) that tests/node_harness.py runs against a real gunicorn and the fake
// upstream (for tests/test_node_clients.py and tests/test_node_responses_clients.py).
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
import { generateText, isStepCount, jsonSchema, streamText, tool } from 'ai';

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

// ---- the AI SDK scripts (ai_sdk.mjs, ai_sdk_responses.mjs) -------------------------------------

/**
 * The options every AI SDK case starts from, for ``model``: ``common`` (no retries: an error case
 * must see the first error) and ``streamCommon`` for streamText (onError: stream errors are read
 * from fullStream by aiConsume; the default handler only logs them).  Also silences the SDK's
 * warnings (e.g. "unknown model, max output tokens limited to 4096"): they are not what is tested.
 */
export function aiOptions(model) {
  globalThis.AI_SDK_LOG_WARNINGS = false;
  const common = { model, maxRetries: 0 };
  return { common, streamCommon: { ...common, onError: () => {} } };
}

/** A LanguageModelUsage as the test reads it (null for a number the provider did not give). */
export function aiUsage(u) {
  return {
    inputTokens: u?.inputTokens ?? null,
    outputTokens: u?.outputTokens ?? null,
    totalTokens: u?.totalTokens ?? null,
    noCacheTokens: u?.inputTokenDetails?.noCacheTokens ?? null,
    cacheReadTokens: u?.inputTokenDetails?.cacheReadTokens ?? null,
    cacheWriteTokens: u?.inputTokenDetails?.cacheWriteTokens ?? null,
    reasoningTokens: u?.outputTokenDetails?.reasoningTokens ?? null,
  };
}

/** The steps of a run: finish reason, text, tool calls and results, usage, plus ``more(step)``. */
export function aiSteps(list, more = () => ({})) {
  return list.map((s) => ({
    finishReason: s.finishReason,
    text: s.text,
    toolCalls: s.toolCalls.map((c) => ({ id: c.toolCallId, name: c.toolName, input: c.input })),
    toolResults: s.toolResults.map((r) => ({ id: r.toolCallId, name: r.toolName, output: r.output })),
    usage: aiUsage(s.usage),
    ...more(s),
  }));
}

/** The read_file tool of the tool cases, executed by the SDK itself (toolOutput). */
const aiReadFile = () => ({
  read_file: tool({
    description: 'Read a file',
    inputSchema: jsonSchema(READ_FILE_SCHEMA),
    execute: async (input) => toolOutput(input),
  }),
});

/**
 * A whole streamText run as the app sees it: every part type seen (repeats folded), the text
 * and reasoning deltas, errors from the stream.
 */
export async function aiConsume(result) {
  const types = [];
  const errors = [];
  let streamed = '';
  let reasoning = '';
  for await (const part of result.fullStream) {
    if (types.at(-1) !== part.type) types.push(part.type);
    if (part.type === 'text-delta') streamed += part.text;
    if (part.type === 'reasoning-delta') reasoning += part.text;
    if (part.type === 'error') errors.push(describeError(part.error));
  }
  return { types, errors, streamed, streamedReasoning: reasoning };
}

/**
 * The tool round trips (the fake calls read_file, the SDK runs it and sends the result back, the
 * fake answers with it).  A script's own additions: ``steps`` shows the steps (default aiSteps),
 * ``before()`` runs before each run, ``after()`` returns more fields for its result.
 */
export function aiToolCases({ common, streamCommon }, { steps = aiSteps, before = () => {}, after = () => ({}) } = {}) {
  const toolRun = (name) => ({
    tools: aiReadFile(), stopWhen: isStepCount(3), prompt: `${CALL_MARKER} read a.txt ${tag(name)}`,
  });
  return {
    async generate_tool_round_trip() {
      before();
      const r = await generateText({ ...common, ...toolRun('generate_tool_round_trip') });
      return {
        text: r.text, finishReason: r.finishReason, usage: aiUsage(r.usage), steps: steps(r.steps),
        ...after(),
      };
    },

    async stream_tool_round_trip() {
      before();
      const r = streamText({ ...streamCommon, ...toolRun('stream_tool_round_trip') });
      const seen = await aiConsume(r);
      return {
        ...seen, text: await r.text, finishReason: await r.finishReason,
        usage: aiUsage(await r.usage), steps: steps(await r.steps), ...after(),
      };
    },
  };
}

/**
 * The reasoning cases (the fake answers "4" after the reasoning "Let me think."); ``thinking``:
 * the options that make the provider's model think (Anthropic models only think when asked to).
 */
export function aiReasoningCases({ common, streamCommon }, thinking = {}) {
  return {
    async generate_reasoning() {
      const r = await generateText({ ...common, ...thinking, prompt: `[[reasoning]] 2+2? ${tag('generate_reasoning')}` });
      return {
        text: r.text, reasoningText: r.finalStep.reasoningText ?? null, usage: aiUsage(r.usage),
        reasoningParts: r.finalStep.reasoning.map((p) => p.text),
      };
    },

    async stream_reasoning() {
      const r = streamText({ ...streamCommon, ...thinking, prompt: `[[reasoning]] 2+2? ${tag('stream_reasoning')}` });
      const seen = await aiConsume(r);
      const last = await r.finalStep;
      return {
        ...seen, text: await r.text, reasoningText: last.reasoningText ?? null,
        usage: aiUsage(await r.usage),
      };
    },
  };
}

/** The 429 cases: the upstream refuses before any output; generateText throws, a stream errs. */
export function aiErrorCases({ common, streamCommon }) {
  return {
    async generate_error_429() {
      try {
        const r = await generateText({ ...common, prompt: `[[error_first:429]] hi ${tag('generate_error_429')}` });
        return { unexpectedSuccess: true, text: r.text };
      } catch (e) {
        return { thrown: describeError(e) };
      }
    },

    async stream_error_429() {
      return aiConsume(streamText({ ...streamCommon, prompt: `[[error_first:429]] hi ${tag('stream_error_429')}` }));
    },
  };
}
