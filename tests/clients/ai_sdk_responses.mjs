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
import { generateText, streamText } from 'ai';
import { createOpenAI } from '@ai-sdk/openai';

import {
  GATEWAY_KEY, GATEWAY_URL, MODEL, aiConsume, aiErrorCases, aiOptions, aiReasoningCases, aiSteps,
  aiToolCases, aiUsage, runCases, tag,
} from './common.mjs';

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
const options = aiOptions(provider(MODEL));
const { common, streamCommon } = options;
/** The system prompt of the text cases; the test checks it reached upstream. */
const SYSTEM = 'You answer questions about the weather.';

/** The provider's metadata the test reads: the response id (resp_...) of a step. */
const responseId = (meta) => meta?.openai?.responseId ?? null;

/** A step as aiSteps shows it, plus its reasoning and its response id. */
const steps = (list) => aiSteps(list, (s) => ({
  reasoningText: s.reasoningText ?? null, responseId: responseId(s.providerMetadata),
}));

const cases = {
  async generate_text() {
    const r = await generateText({ ...common, system: SYSTEM, prompt: `Say hello ${tag('generate_text')}` });
    return {
      text: r.text, finishReason: r.finishReason, usage: aiUsage(r.usage),
      responseId: responseId(r.providerMetadata),
    };
  },

  async stream_text() {
    const r = streamText({ ...streamCommon, system: SYSTEM, prompt: `Say hello ${tag('stream_text')}` });
    const seen = await aiConsume(r);
    return {
      ...seen, text: await r.text, finishReason: await r.finishReason, usage: aiUsage(await r.usage),
      responseId: responseId(await r.providerMetadata),
    };
  },

  // The tool round trips also report what the SDK sent (the call and its output go back whole).
  ...aiToolCases(options, { steps, before: () => { sent.length = 0; }, after: () => ({ sentInputs: sentInputs() }) }),
  ...aiReasoningCases(options),

  // Prompt-cache reads and writes: inputTokens includes both, inputTokenDetails splits them.
  async generate_cache() {
    const r = await generateText({ ...common, prompt: `[[cache]] hi ${tag('generate_cache')}` });
    return { text: r.text, finishReason: r.finishReason, usage: aiUsage(r.usage) };
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
      firstText: first.text, text: second.text, usage: aiUsage(second.usage),
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
      firstText: first.text, firstId: id, text: second.text, usage: aiUsage(second.usage),
      secondId: responseId(second.providerMetadata),
      sent: sent.map((q) => ({
        path: q.path, input: q.body?.input, previousResponseId: q.body?.previous_response_id ?? null,
      })),
    };
  },

  ...aiErrorCases(options),
};

await runCases('ai-openai-responses', cases);
