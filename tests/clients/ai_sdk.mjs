// The Vercel AI SDK (`ai`) against the gateway, through one of its three providers:
//
//   node ai_sdk.mjs openai-compatible   @ai-sdk/openai-compatible  (baseURL <gateway>/v1, includeUsage)
//   node ai_sdk.mjs anthropic           @ai-sdk/anthropic          (baseURL <gateway>/v1)
//   node ai_sdk.mjs openai-chat         @ai-sdk/openai, createOpenAI(...).chat(model)
//
// Why it exists: the AI SDK is how many apps (and agents built on them) talk to an OpenAI- or
// Anthropic-compatible endpoint; its providers parse streams, usage and tool calls with their
// own strict schemas, so this is where a gateway's small deviations show.  Run by
// tests/test_node_clients.py; environment and output are described in common.mjs.
import { generateText, isStepCount, jsonSchema, streamText, tool } from 'ai';
import { createAnthropic } from '@ai-sdk/anthropic';
import { createOpenAI } from '@ai-sdk/openai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';

import {
  CALL_MARKER, GATEWAY_KEY, GATEWAY_URL, MODEL, READ_FILE_SCHEMA, describeError, runCases, tag,
  toolOutput,
} from './common.mjs';

const PROVIDERS = {
  'openai-compatible': () => createOpenAICompatible({
    name: 'gateway', baseURL: `${GATEWAY_URL}/v1`, apiKey: GATEWAY_KEY, includeUsage: true,
  })(MODEL),
  anthropic: () => createAnthropic({ baseURL: `${GATEWAY_URL}/v1`, apiKey: GATEWAY_KEY })(MODEL),
  'openai-chat': () => createOpenAI({ baseURL: `${GATEWAY_URL}/v1`, apiKey: GATEWAY_KEY }).chat(MODEL),
};

const which = process.argv[2];
if (!PROVIDERS[which]) {
  process.stderr.write(`usage: node ai_sdk.mjs ${Object.keys(PROVIDERS).join('|')}\n`);
  process.exit(2);
}
// Warnings (e.g. "unknown model, max output tokens limited to 4096") are not what is tested.
globalThis.AI_SDK_LOG_WARNINGS = false;
const model = PROVIDERS[which]();
// onError: stream errors are read from fullStream below; the default handler only logs them.
const common = { model, maxRetries: 0 };
const streamCommon = { ...common, onError: () => {} };
// Anthropic models only think when asked to; the others get reasoning without options.
const thinking = which === 'anthropic'
  ? { providerOptions: { anthropic: { thinking: { type: 'enabled', budgetTokens: 1024 } } } }
  : {};

function usage(u) {
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

function steps(list) {
  return list.map((s) => ({
    finishReason: s.finishReason,
    text: s.text,
    toolCalls: s.toolCalls.map((c) => ({ id: c.toolCallId, name: c.toolName, input: c.input })),
    toolResults: s.toolResults.map((r) => ({ id: r.toolCallId, name: r.toolName, output: r.output })),
    usage: usage(s.usage),
  }));
}

const readFile = () => ({
  read_file: tool({
    description: 'Read a file',
    inputSchema: jsonSchema(READ_FILE_SCHEMA),
    execute: async (input) => toolOutput(input),
  }),
});

/** A whole streamText run as the app sees it: every part type seen, errors from the stream. */
async function consume(result) {
  const types = [];
  const errors = [];
  let streamed = '';
  for await (const part of result.fullStream) {
    if (types.at(-1) !== part.type) types.push(part.type);
    if (part.type === 'text-delta') streamed += part.text;
    if (part.type === 'error') errors.push(describeError(part.error));
  }
  return { types, errors, streamed };
}

const cases = {
  async generate_text() {
    const r = await generateText({ ...common, prompt: `Say hello ${tag('generate_text')}` });
    return { text: r.text, finishReason: r.finishReason, usage: usage(r.usage) };
  },

  async stream_text() {
    const r = streamText({ ...streamCommon, prompt: `Say hello ${tag('stream_text')}` });
    const seen = await consume(r);
    return {
      ...seen, text: await r.text, finishReason: await r.finishReason, usage: usage(await r.usage),
    };
  },

  async generate_tool_round_trip() {
    const r = await generateText({
      ...common, tools: readFile(), stopWhen: isStepCount(3),
      prompt: `${CALL_MARKER} read a.txt ${tag('generate_tool_round_trip')}`,
    });
    return {
      text: r.text, finishReason: r.finishReason, usage: usage(r.usage), steps: steps(r.steps),
    };
  },

  async stream_tool_round_trip() {
    const r = streamText({
      ...streamCommon, tools: readFile(), stopWhen: isStepCount(3),
      prompt: `${CALL_MARKER} read a.txt ${tag('stream_tool_round_trip')}`,
    });
    const seen = await consume(r);
    return {
      ...seen, text: await r.text, finishReason: await r.finishReason,
      usage: usage(await r.usage), steps: steps(await r.steps),
    };
  },

  async stream_reasoning() {
    const r = streamText({ ...streamCommon, ...thinking, prompt: `[[reasoning]] 2+2? ${tag('stream_reasoning')}` });
    const seen = await consume(r);
    const last = await r.finalStep;
    return {
      ...seen, text: await r.text, reasoningText: last.reasoningText ?? null,
      usage: usage(await r.usage),
    };
  },

  async generate_reasoning() {
    const r = await generateText({ ...common, ...thinking, prompt: `[[reasoning]] 2+2? ${tag('generate_reasoning')}` });
    return { text: r.text, reasoningText: r.finalStep.reasoningText ?? null, usage: usage(r.usage) };
  },

  async generate_error_429() {
    try {
      const r = await generateText({ ...common, prompt: `[[error_first:429]] hi ${tag('generate_error_429')}` });
      return { unexpectedSuccess: true, text: r.text };
    } catch (e) {
      return { thrown: describeError(e) };
    }
  },

  async stream_error_429() {
    const r = streamText({ ...streamCommon, prompt: `[[error_first:429]] hi ${tag('stream_error_429')}` });
    const seen = await consume(r);
    return seen;
  },
};

await runCases(`ai-${which}`, cases);
