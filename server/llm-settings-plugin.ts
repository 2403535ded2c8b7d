// setLlmSettings: an organization's own language model (admins). The API key is sealed here with SEALING_KEYS,
// bound to the organization, before it reaches the database (app_hidden.set_llm_settings), and is never readable
// back: llmSettings shows only whether there is one. The key is checked for shape only; a key the provider refuses
// fails the jobs that use it with LLM_AUTH, never anyone else's. clearLlmSettings comes from the database.
import { access, context, list } from "postgraphile/grafast";
import { sideEffectWithPgClient } from "postgraphile/@dataplan/pg";
import { extendSchema, gql } from "postgraphile/utils";
import type { Config } from "../lib/config.ts";
import { QuireError } from "../lib/quire-error.ts";
import { seal, sealContexts } from "../lib/sealing.ts";
import { signedInClaims } from "./request-origin.ts";

interface SetLlmSettingsInput {
  provider?: string | null;
  model?: string | null;
  apiKey?: string | null;
  keepApiKey?: boolean | null;
}

/** An API key as providers issue them: printable ASCII without spaces, at most 500 characters. */
const apiKeyPattern = /^[\x21-\x7e]{8,500}$/;

export function makeLlmSettingsPlugin(config: Config) {
  return extendSchema((build) => {
    const settings = build.pgResources.llm_settings;
    if (!settings) throw new Error("the llm_settings table is not exposed");
    return {
      typeDefs: gql`
        input SetLlmSettingsInput {
          "extractive (offline), openai (any OpenAI-compatible service) or anthropic; null: the deployment's provider."
          provider: String
          "The model; null: the provider's default."
          model: String
          """
          The organization's API key for the provider, sealed at rest and never shown again. Omit it (with keepApiKey)
          to keep the stored one; omit both to use none (the deployment's key, when the provider is the deployment's).
          """
          apiKey: String
          "Keep the stored key (the provider must not change)."
          keepApiKey: Boolean = false
        }
        type SetLlmSettingsPayload {
          llmSettings: LlmSetting
        }
        extend type Mutation {
          "Chooses the organization's own provider, model and API key for summaries and answers. Admins."
          setLlmSettings(input: SetLlmSettingsInput!): SetLlmSettingsPayload
        }
      `,
      objects: {
        Mutation: {
          plans: {
            setLlmSettings: (_$root, args) => {
              const $id = sideEffectWithPgClient(build.pgExecutor, list([args.getRaw("input"), context()]), async (client, [input, ctx]) => {
                const { orgId } = signedInClaims(ctx);
                const given = input as SetLlmSettingsInput;
                const apiKey = given.apiKey ?? null;
                if (apiKey !== null && !apiKeyPattern.test(apiKey)) {
                  throw new QuireError("BADIN", "The API key must be 8 to 500 printable characters without spaces.");
                }
                const keys = config.integrations.sealingKeys;
                if (apiKey !== null && !keys) throw new QuireError("BADIN", "This server cannot keep API keys (SEALING_KEYS is unset).");
                const sealed = apiKey !== null && keys ? await seal(keys, apiKey, sealContexts.llm(orgId)) : null;
                const { rows } = await client.query<{ id: string }>({
                  text: "select id from app_hidden.set_llm_settings($1, $2, $3, $4, $5, $6)",
                  values: [
                    given.provider ?? null,
                    given.model ?? null,
                    given.keepApiKey === true,
                    sealed?.keyId ?? null,
                    sealed?.nonce ?? null,
                    sealed?.ciphertext ?? null,
                  ],
                });
                return rows[0]!.id;
              });
              return list([$id]);
            },
          },
        },
        SetLlmSettingsPayload: {
          plans: { llmSettings: ($r) => settings.get({ id: access($r, 0) }) },
        },
      },
    };
  }, "QuireLlmSettingsPlugin");
}
