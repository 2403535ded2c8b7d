// Which model a job runs with (worker/organization-llm.ts): the deployment's by default; a template's or the
// organization's model on the deployment's key only when LLM_ALLOWED_MODELS allows it; the organization's own key
// opened only for that organization, and a key that cannot be opened is LLM_AUTH without a word of the key.
import { LlmError, type LlmOptions } from "../../lib/llm/index.ts";
import { generateSealingKey, parseSealingKeys, seal, sealContexts } from "../../lib/sealing.ts";
import { organizationLlm, type OrganizationLlmRow } from "../../worker/organization-llm.ts";
import { createLlmProvider } from "../../lib/llm/index.ts";

const deployment: LlmOptions & { allowedModels: string[] | null } = {
  provider: "openai",
  baseUrl: "http://127.0.0.1:9/v1",
  apiKey: "sk-deployment",
  model: "base-model",
  timeoutMs: 1000,
  contextTokens: null,
  maxRetries: 0,
  allowedModels: ["cheap-model"],
};
const keys = parseSealingKeys(`k1:${generateSealingKey()}`);
const none: OrganizationLlmRow = { llm_provider: null, llm_model: null, llm_key_id: null, llm_nonce: null, llm_ciphertext: null };
const orgA = "00000000-0000-4000-8000-00000000000a";
const orgB = "00000000-0000-4000-8000-00000000000b";

const choose = organizationLlm({ deployment, defaultProvider: createLlmProvider(deployment), keys });

async function refusal(promise: Promise<unknown>): Promise<LlmError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(LlmError);
    return error as LlmError;
  }
  throw new Error("expected a refusal");
}

test("without settings, the deployment's model; an allowed model on its key; any other model is LLM_REJECTED", async () => {
  expect((await choose(orgA, none)).model).toBe("base-model");
  expect((await choose(orgA, { ...none, llm_model: "cheap-model" })).model).toBe("cheap-model");
  const refused = await refusal(choose(orgA, { ...none, llm_model: "costly-model" }));
  expect(refused.code).toBe("LLM_REJECTED");
  expect(refused.message).toContain("costly-model");
  // Also when the organization names the deployment's provider without a key of its own.
  expect((await refusal(choose(orgA, { ...none, llm_provider: "openai", llm_model: "costly-model" }))).code).toBe("LLM_REJECTED");
});

test("the organization's own key opens any model of another provider, for that organization only; elsewhere it is LLM_AUTH without the key", async () => {
  const sealed = await seal(keys, "sk-org-a-secret", sealContexts.llm(orgA));
  const row: OrganizationLlmRow = {
    llm_provider: "anthropic",
    llm_model: "costly-model",
    llm_key_id: sealed.keyId,
    llm_nonce: sealed.nonce,
    llm_ciphertext: sealed.ciphertext,
  };
  expect((await choose(orgA, row)).model).toBe("costly-model");
  // On the deployment's endpoint, the operator's allowed models hold whatever key is sent.
  expect((await refusal(choose(orgA, { ...row, llm_provider: "openai" }))).code).toBe("LLM_REJECTED");
  expect((await choose(orgA, { ...row, llm_provider: "openai", llm_model: "cheap-model" })).model).toBe("cheap-model");
  const copied = await refusal(choose(orgB, row));
  expect(copied.code).toBe("LLM_AUTH");
  expect(copied.message).not.toContain("sk-org-a-secret");
  const noKeys = organizationLlm({ deployment, defaultProvider: createLlmProvider(deployment), keys: null });
  expect((await refusal(noKeys(orgA, row))).code).toBe("LLM_AUTH");
});
