// The official `openai` Node SDK against the gateway's /v1/chat/completions.
//
// Why it exists: the Node SDK (and the many tools built on it) parses streams with its own
// accumulator -- `chat.completions.stream()` rebuilds the message chunk by chunk and throws on
// chunks that do not fit -- and maps HTTP errors to typed classes; the Python tests cannot show
// those.  Run by tests/test_node_clients.py; environment and output are described in common.mjs.
import OpenAI from 'openai';

import {
  CALL_MARKER, GATEWAY_KEY, GATEWAY_URL, MODEL, READ_FILE_SCHEMA, describeError, runCases, tag,
  toolOutput,
} from './common.mjs';

const client = new OpenAI({ baseURL: `${GATEWAY_URL}/v1`, apiKey: GATEWAY_KEY, maxRetries: 0, timeout: 20000 });
const TOOLS = [{ type: 'function', function: { name: 'read_file', description: 'Read a file', parameters: READ_FILE_SCHEMA } }];
const user = (text) => [{ role: 'user', content: text }];
const STREAM = { stream: true, stream_options: { include_usage: true } };

function usage(u) {
  if (!u) return null;
  return {
    prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens, total_tokens: u.total_tokens,
    cached_tokens: u.prompt_tokens_details?.cached_tokens ?? null,
    reasoning_tokens: u.completion_tokens_details?.reasoning_tokens ?? null,
  };
}

const calls = (list) => (list || []).map((c) => ({
  id: c.id, type: c.type, name: c.function.name, arguments: c.function.arguments,
  input: JSON.parse(c.function.arguments),
}));

/** What a whole (non-streamed) completion showed. */
function whole(r) {
  const m = r.choices[0].message;
  return {
    object: r.object, text: m.content, reasoning: m.reasoning_content ?? null,
    toolCalls: calls(m.tool_calls), finishReason: r.choices[0].finish_reason, usage: usage(r.usage),
    message: m,
  };
}

/** A stream read chunk by chunk, the way most apps do it. */
async function accumulate(stream) {
  let text = '';
  let reasoning = '';
  let finishReason = null;
  let last = null;
  let chunks = 0;
  const byIndex = new Map();
  for await (const chunk of stream) {
    chunks += 1;
    if (chunk.usage) last = chunk.usage;
    for (const c of chunk.choices) {
      text += c.delta?.content ?? '';
      reasoning += c.delta?.reasoning_content ?? '';
      for (const tc of c.delta?.tool_calls ?? []) {
        const entry = byIndex.get(tc.index) ?? { id: null, type: 'function', function: { name: '', arguments: '' } };
        entry.id = tc.id ?? entry.id;
        entry.function.name += tc.function?.name ?? '';
        entry.function.arguments += tc.function?.arguments ?? '';
        byIndex.set(tc.index, entry);
      }
      finishReason = c.finish_reason ?? finishReason;
    }
  }
  const toolCalls = [...byIndex.values()];
  return {
    chunks, text, reasoning: reasoning || null, toolCalls: calls(toolCalls), finishReason, usage: usage(last),
    message: { role: 'assistant', content: text || null, ...(toolCalls.length ? { tool_calls: toolCalls } : {}) },
  };
}

/** The SDK's stream helper: events as it emits them, then finalChatCompletion(). */
async function helper(params) {
  const stream = client.chat.completions.stream({ ...params, stream_options: { include_usage: true } });
  let deltas = '';
  stream.on('content.delta', ({ delta }) => { deltas += delta; });
  const final = await stream.finalChatCompletion();
  return { ...whole(final), contentDeltas: deltas };
}

/** The conversation after the model asked for the tool: its message, then our result. */
function withResult(prompt, answer) {
  return [
    ...user(prompt),
    answer.message,
    ...answer.toolCalls.map((c) => ({ role: 'tool', tool_call_id: c.id, content: toolOutput(c.input) })),
  ];
}

const strip = ({ message, ...rest }) => rest;

async function expectError(fn) {
  try {
    const r = await fn();
    return { unexpectedSuccess: true, result: r };
  } catch (e) {
    return { thrown: describeError(e), isRateLimitError: e instanceof OpenAI.RateLimitError,
      isAPIError: e instanceof OpenAI.APIError };
  }
}

const cases = {
  async create_whole() {
    return strip(whole(await client.chat.completions.create({
      model: MODEL, messages: user(`Say hello ${tag('create_whole')}`),
    })));
  },

  async create_stream() {
    return strip(await accumulate(await client.chat.completions.create({
      model: MODEL, messages: user(`Say hello ${tag('create_stream')}`), ...STREAM,
    })));
  },

  async stream_helper() {
    return strip(await helper({ model: MODEL, messages: user(`Say hello ${tag('stream_helper')}`) }));
  },

  async tools_whole() {
    const prompt = `${CALL_MARKER} read a.txt ${tag('tools_whole')}`;
    const first = whole(await client.chat.completions.create({ model: MODEL, messages: user(prompt), tools: TOOLS }));
    const second = whole(await client.chat.completions.create({
      model: MODEL, messages: withResult(prompt, first), tools: TOOLS,
    }));
    return { first: strip(first), second: strip(second) };
  },

  async tools_stream() {
    const prompt = `${CALL_MARKER} read a.txt ${tag('tools_stream')}`;
    const first = await accumulate(await client.chat.completions.create({
      model: MODEL, messages: user(prompt), tools: TOOLS, ...STREAM,
    }));
    const second = await accumulate(await client.chat.completions.create({
      model: MODEL, messages: withResult(prompt, first), tools: TOOLS, ...STREAM,
    }));
    return { first: strip(first), second: strip(second) };
  },

  async stream_helper_tools() {
    const prompt = `${CALL_MARKER} read a.txt ${tag('stream_helper_tools')}`;
    const first = await helper({ model: MODEL, messages: user(prompt), tools: TOOLS });
    const second = await helper({ model: MODEL, messages: withResult(prompt, first), tools: TOOLS });
    return { first: strip(first), second: strip(second) };
  },

  async reasoning_whole() {
    return strip(whole(await client.chat.completions.create({
      model: MODEL, messages: user(`[[reasoning]] 2+2? ${tag('reasoning_whole')}`),
    })));
  },

  async reasoning_stream() {
    return strip(await accumulate(await client.chat.completions.create({
      model: MODEL, messages: user(`[[reasoning]] 2+2? ${tag('reasoning_stream')}`), ...STREAM,
    })));
  },

  async error_429_whole() {
    return expectError(() => client.chat.completions.create({
      model: MODEL, messages: user(`[[error_first:429]] hi ${tag('error_429_whole')}`),
    }));
  },

  async error_429_stream() {
    return expectError(async () => accumulate(await client.chat.completions.create({
      model: MODEL, messages: user(`[[error_first:429]] hi ${tag('error_429_stream')}`), ...STREAM,
    })));
  },
};

await runCases('openai-node', cases);
