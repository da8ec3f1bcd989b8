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
import { generateText, streamText } from 'ai';
import { createAnthropic } from '@ai-sdk/anthropic';
import { createOpenAI } from '@ai-sdk/openai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';

import {
  GATEWAY_KEY, GATEWAY_URL, MODEL, aiConsume, aiErrorCases, aiOptions, aiReasoningCases,
  aiToolCases, aiUsage, runCases, tag,
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
const options = aiOptions(PROVIDERS[which]());
const { common, streamCommon } = options;
// Anthropic models only think when asked to; the others get reasoning without options.
const thinking = which === 'anthropic'
  ? { providerOptions: { anthropic: { thinking: { type: 'enabled', budgetTokens: 1024 } } } }
  : {};

const cases = {
  async generate_text() {
    const r = await generateText({ ...common, prompt: `Say hello ${tag('generate_text')}` });
    return { text: r.text, finishReason: r.finishReason, usage: aiUsage(r.usage) };
  },

  async stream_text() {
    const r = streamText({ ...streamCommon, prompt: `Say hello ${tag('stream_text')}` });
    const seen = await aiConsume(r);
    return {
      ...seen, text: await r.text, finishReason: await r.finishReason, usage: aiUsage(await r.usage),
    };
  },

  ...aiToolCases(options),
  ...aiReasoningCases(options, thinking),
  ...aiErrorCases(options),
};

await runCases(`ai-${which}`, cases);
