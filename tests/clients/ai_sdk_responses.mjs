// The Vercel AI SDK (`ai`) against the gateway's Responses API (`POST /v1/responses`), through
// @ai-sdk/openai's default model: `createOpenAI({ baseURL: <gateway>/v1 })(id)` is an
// OpenAIResponsesLanguageModel (the `.chat(id)` model of ai_sdk.mjs is Chat Completions).
//
//   node ai_sdk_responses.mjs
//
// Why it exists: the Responses API is what the provider's default `openai(id)` talks (the
// pinned @ai-sdk/openai's `createLanguageModel` is `createResponsesModel`), so every app that
// points the OpenAI provider at a compatible base URL without `.chat` lands on /v1/responses.  The provider parses the SSE events and the response object with strict zod
// schemas (ids on every item, `created_at`, `item_id` on deltas, usage numbers ...) and, with
// its default `store: true`, refers to earlier output items by id (`item_reference`) instead of
// resending them.  Run by tests/test_node_responses_clients.py; environment and output are
// described in common.mjs.
import { generateText, isStepCount, jsonSchema, streamText, tool } from 'ai';
import { createOpenAI } from '@ai-sdk/openai';

import {
  CALL_MARKER, GATEWAY_KEY, GATEWAY_URL, MODEL, READ_FILE_SCHEMA, describeError, runCases, tag,
  toolOutput,
} from './common.mjs';

// Warnings (e.g. "unknown model") are not what is tested.
globalThis.AI_SDK_LOG_WARNINGS = false;
// What the SDK sends the gateway (path and JSON body of each request), for the cases that
// check how it continues a conversation.
const sent = [];
async function recordingFetch(url, init) {
  sent.push({ path: new URL(url).pathname, body: init?.body ? JSON.parse(init.body) : null });
  return fetch(url, init);
}
/** The item types of each request's ``input`` since ``sent`` was last emptied. */
const sentInputs = () => sent.map((q) => (q.body?.input ?? []).map((i) => i.type ?? 'message'));
const provider = createOpenAI({ baseURL: `${GATEWAY_URL}/v1`, apiKey: GATEWAY_KEY, fetch: recordingFetch });
const model = provider(MODEL);
const common = { model, maxRetries: 0 };
// onError: stream errors are read from fullStream below; the default handler only logs them.
const streamCommon = { ...common, onError: () => {} };
/** The system prompt of the text cases; the test checks it reached upstream. */
const SYSTEM = 'You answer questions about the weather.';

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

/** The provider's metadata the test reads: the response id (resp_...) of a step. */
const responseId = (meta) => meta?.openai?.responseId ?? null;

function steps(list) {
  return list.map((s) => ({
    finishReason: s.finishReason,
    text: s.text,
    reasoningText: s.reasoningText ?? null,
    toolCalls: s.toolCalls.map((c) => ({ id: c.toolCallId, name: c.toolName, input: c.input })),
    toolResults: s.toolResults.map((r) => ({ id: r.toolCallId, name: r.toolName, output: r.output })),
    usage: usage(s.usage),
    responseId: responseId(s.providerMetadata),
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
  let reasoning = '';
  for await (const part of result.fullStream) {
    if (types.at(-1) !== part.type) types.push(part.type);
    if (part.type === 'text-delta') streamed += part.text;
    if (part.type === 'reasoning-delta') reasoning += part.text;
    if (part.type === 'error') errors.push(describeError(part.error));
  }
  return { types, errors, streamed, streamedReasoning: reasoning };
}

const cases = {
  async generate_text() {
    const r = await generateText({ ...common, system: SYSTEM, prompt: `Say hello ${tag('generate_text')}` });
    return {
      text: r.text, finishReason: r.finishReason, usage: usage(r.usage),
      responseId: responseId(r.providerMetadata),
    };
  },

  async stream_text() {
    const r = streamText({ ...streamCommon, system: SYSTEM, prompt: `Say hello ${tag('stream_text')}` });
    const seen = await consume(r);
    return {
      ...seen, text: await r.text, finishReason: await r.finishReason, usage: usage(await r.usage),
      responseId: responseId(await r.providerMetadata),
    };
  },

  async generate_tool_round_trip() {
    sent.length = 0;
    const r = await generateText({
      ...common, tools: readFile(), stopWhen: isStepCount(3),
      prompt: `${CALL_MARKER} read a.txt ${tag('generate_tool_round_trip')}`,
    });
    return {
      text: r.text, finishReason: r.finishReason, usage: usage(r.usage), steps: steps(r.steps),
      sentInputs: sentInputs(),
    };
  },

  async stream_tool_round_trip() {
    sent.length = 0;
    const r = streamText({
      ...streamCommon, tools: readFile(), stopWhen: isStepCount(3),
      prompt: `${CALL_MARKER} read a.txt ${tag('stream_tool_round_trip')}`,
    });
    const seen = await consume(r);
    return {
      ...seen, text: await r.text, finishReason: await r.finishReason,
      usage: usage(await r.usage), steps: steps(await r.steps), sentInputs: sentInputs(),
    };
  },

  async generate_reasoning() {
    const r = await generateText({ ...common, prompt: `[[reasoning]] 2+2? ${tag('generate_reasoning')}` });
    return {
      text: r.text, reasoningText: r.finalStep.reasoningText ?? null, usage: usage(r.usage),
      reasoningParts: r.finalStep.reasoning.map((p) => p.text),
    };
  },

  async stream_reasoning() {
    const r = streamText({ ...streamCommon, prompt: `[[reasoning]] 2+2? ${tag('stream_reasoning')}` });
    const seen = await consume(r);
    const last = await r.finalStep;
    return {
      ...seen, text: await r.text, reasoningText: last.reasoningText ?? null,
      usage: usage(await r.usage),
    };
  },

  // Prompt-cache reads and writes: inputTokens includes both, inputTokenDetails splits them.
  async generate_cache() {
    const r = await generateText({ ...common, prompt: `[[cache]] hi ${tag('generate_cache')}` });
    return { text: r.text, finishReason: r.finishReason, usage: usage(r.usage) };
  },

  // A chat app's second turn: the first answer's messages go back as history.  With the
  // provider's default store: true, the assistant text goes as {type: "item_reference", id}.
  async history_second_turn() {
    const first = await generateText({ ...common, prompt: `Say hello ${tag('history_second_turn')}` });
    const messages = [
      { role: 'user', content: `Say hello ${tag('history_second_turn')}` },
      ...first.response.messages,
      { role: 'user', content: `[[echo]] and again ${tag('history_second_turn')}` },
    ];
    sent.length = 0;
    const second = await generateText({ ...common, messages });
    return {
      firstText: first.text, text: second.text, usage: usage(second.usage),
      // the ids the SDK keeps of the first answer's items (providerOptions.openai.itemId)
      firstItemIds: first.response.messages.flatMap((m) => (Array.isArray(m.content) ? m.content : [])
        .map((p) => p.providerOptions?.openai?.itemId ?? null)),
      sent: sent.map((q) => ({ path: q.path, input: q.body?.input, store: q.body?.store ?? null })),
    };
  },

  // The same second turn through the server-side conversation: previousResponseId.
  async previous_response_id() {
    const first = await generateText({ ...common, prompt: `Say hello ${tag('previous_response_id')}` });
    const id = responseId(first.providerMetadata);
    sent.length = 0;
    const second = await generateText({
      ...common, prompt: `[[echo]] and again ${tag('previous_response_id')}`,
      providerOptions: { openai: { previousResponseId: id } },
    });
    return {
      firstText: first.text, firstId: id, text: second.text, usage: usage(second.usage),
      secondId: responseId(second.providerMetadata),
      sent: sent.map((q) => ({
        path: q.path, input: q.body?.input, previousResponseId: q.body?.previous_response_id ?? null,
      })),
    };
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
    return consume(r);
  },
};

await runCases('ai-openai-responses', cases);
