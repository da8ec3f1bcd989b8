// The official `@anthropic-ai/sdk` Node SDK against the gateway's /v1/messages.
//
// Why it exists: the Node SDK's MessageStream rebuilds the message from the SSE events and
// throws on events out of order (a delta for a block that was never started, a missing
// message_start...), parses tool input from input_json_delta pieces, and maps HTTP errors to
// typed classes -- the same code path as the TypeScript agents built on it.  Run by
// tests/test_node_clients.py; environment and output are described in common.mjs.
import Anthropic from '@anthropic-ai/sdk';

import {
  CALL_MARKER, GATEWAY_KEY, GATEWAY_URL, MODEL, READ_FILE_SCHEMA, describeError, runCases, tag,
  toolOutput,
} from './common.mjs';

const client = new Anthropic({ baseURL: GATEWAY_URL, apiKey: GATEWAY_KEY, maxRetries: 0, timeout: 20000 });
const TOOLS = [{ name: 'read_file', description: 'Read a file', input_schema: READ_FILE_SCHEMA }];
const THINKING = { max_tokens: 4096, thinking: { type: 'enabled', budget_tokens: 1024 } };
const user = (text) => [{ role: 'user', content: text }];
const base = { model: MODEL, max_tokens: 1024 };

function usage(u) {
  if (!u) return null;
  return {
    input_tokens: u.input_tokens ?? null, output_tokens: u.output_tokens ?? null,
    cache_read_input_tokens: u.cache_read_input_tokens ?? null,
    cache_creation_input_tokens: u.cache_creation_input_tokens ?? null,
  };
}

/** What a Message (create's answer or the stream helper's finalMessage) showed. */
function message(m) {
  return {
    type: m.type, role: m.role,
    blocks: m.content.map((b) => b.type),
    text: m.content.filter((b) => b.type === 'text').map((b) => b.text).join(''),
    thinking: m.content.filter((b) => b.type === 'thinking').map((b) => b.thinking).join('') || null,
    toolCalls: m.content.filter((b) => b.type === 'tool_use').map((b) => ({ id: b.id, name: b.name, input: b.input })),
    stopReason: m.stop_reason, usage: usage(m.usage),
    content: m.content,
  };
}

/** A raw `stream: true` response read event by event, accumulated by hand. */
async function raw(stream) {
  const events = [];
  const blocks = [];
  let start = null;
  let delta = null;
  for await (const ev of stream) {
    events.push(ev.type === 'content_block_delta' ? `${ev.type}:${ev.delta.type}` : ev.type);
    if (ev.type === 'message_start') start = ev.message;
    if (ev.type === 'content_block_start') blocks[ev.index] = { ...ev.content_block, json: '' };
    if (ev.type === 'content_block_delta') {
      const b = blocks[ev.index];
      if (ev.delta.type === 'text_delta') b.text += ev.delta.text;
      if (ev.delta.type === 'thinking_delta') b.thinking += ev.delta.thinking;
      if (ev.delta.type === 'input_json_delta') b.json += ev.delta.partial_json;
    }
    if (ev.type === 'message_delta') delta = ev;
  }
  const content = blocks.map(({ json, ...b }) => (b.type === 'tool_use' ? { ...b, input: json ? JSON.parse(json) : {} } : b));
  return {
    events: events.filter((e, i) => e !== events[i - 1]),
    ...message({ ...start, content, stop_reason: delta?.delta?.stop_reason ?? null,
      usage: { ...start?.usage, ...delta?.usage } }),
    startUsage: usage(start?.usage),
  };
}

/** The SDK's stream helper: its derived events, then finalMessage(). */
async function helper(params) {
  const stream = client.messages.stream(params);
  let text = '';
  let thinking = '';
  stream.on('text', (t) => { text += t; });
  stream.on('thinking', (t) => { thinking += t; });
  const final = await stream.finalMessage();
  return { ...message(final), textEvents: text, thinkingEvents: thinking || null };
}

/** The conversation after the model asked for the tool: its turn, then our results. */
function withResult(prompt, answer) {
  return [
    ...user(prompt),
    { role: 'assistant', content: answer.content },
    { role: 'user', content: answer.toolCalls.map((c) => ({ type: 'tool_result', tool_use_id: c.id, content: toolOutput(c.input) })) },
  ];
}

const strip = ({ content, ...rest }) => rest;

async function expectError(fn) {
  try {
    const r = await fn();
    return { unexpectedSuccess: true, result: strip(r) };
  } catch (e) {
    return { thrown: describeError(e), isRateLimitError: e instanceof Anthropic.RateLimitError,
      isAPIError: e instanceof Anthropic.APIError };
  }
}

const cases = {
  async create_whole() {
    return strip(message(await client.messages.create({ ...base, messages: user(`Say hello ${tag('create_whole')}`) })));
  },

  async create_stream() {
    return strip(await raw(await client.messages.create({
      ...base, messages: user(`Say hello ${tag('create_stream')}`), stream: true,
    })));
  },

  async stream_helper() {
    return strip(await helper({ ...base, messages: user(`Say hello ${tag('stream_helper')}`) }));
  },

  async tools_whole() {
    const prompt = `${CALL_MARKER} read a.txt ${tag('tools_whole')}`;
    const first = message(await client.messages.create({ ...base, messages: user(prompt), tools: TOOLS }));
    const second = message(await client.messages.create({ ...base, messages: withResult(prompt, first), tools: TOOLS }));
    return { first: strip(first), second: strip(second) };
  },

  async tools_stream() {
    const prompt = `${CALL_MARKER} read a.txt ${tag('tools_stream')}`;
    const first = await raw(await client.messages.create({ ...base, messages: user(prompt), tools: TOOLS, stream: true }));
    const second = await raw(await client.messages.create({
      ...base, messages: withResult(prompt, first), tools: TOOLS, stream: true,
    }));
    return { first: strip(first), second: strip(second) };
  },

  async stream_helper_tools() {
    const prompt = `${CALL_MARKER} read a.txt ${tag('stream_helper_tools')}`;
    const first = await helper({ ...base, messages: user(prompt), tools: TOOLS });
    const second = await helper({ ...base, messages: withResult(prompt, first), tools: TOOLS });
    return { first: strip(first), second: strip(second) };
  },

  async reasoning_whole() {
    return strip(message(await client.messages.create({
      ...base, ...THINKING, messages: user(`[[reasoning]] 2+2? ${tag('reasoning_whole')}`),
    })));
  },

  async reasoning_stream_helper() {
    return strip(await helper({ ...base, ...THINKING, messages: user(`[[reasoning]] 2+2? ${tag('reasoning_stream_helper')}`) }));
  },

  async error_429_whole() {
    return expectError(async () => message(await client.messages.create({
      ...base, messages: user(`[[error_first:429]] hi ${tag('error_429_whole')}`),
    })));
  },

  async error_429_stream() {
    return expectError(async () => raw(await client.messages.create({
      ...base, messages: user(`[[error_first:429]] hi ${tag('error_429_stream')}`), stream: true,
    })));
  },

  async error_429_stream_helper() {
    return expectError(() => helper({ ...base, messages: user(`[[error_first:429]] hi ${tag('error_429_stream_helper')}`) }));
  },
};

await runCases('anthropic-node', cases);
