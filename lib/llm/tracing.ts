// A tracing span for every request to the language model (each retry its own), nested in the job that asked for it,
// named and attributed after OpenTelemetry's GenAI conventions: provider, model, output budget, token counts and the
// LlmError code of a failure. Never the prompt, the source text or the answer.
import { SpanKind } from "@opentelemetry/api";
import { withSpan } from "../tracing.ts";
import { LlmError, type LlmProvider } from "./provider.ts";

export function traceLlm(provider: LlmProvider): LlmProvider {
  return {
    name: provider.name,
    model: provider.model,
    contextTokens: provider.contextTokens,
    complete(request) {
      const attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider.name,
        "gen_ai.request.model": provider.model,
        "gen_ai.request.max_tokens": request.maxOutputTokens,
      };
      return withSpan(
        `chat ${provider.model}`,
        attributes,
        async (span) => {
          try {
            const completion = await provider.complete(request);
            span.setAttributes({
              "gen_ai.response.model": completion.model,
              "gen_ai.usage.input_tokens": completion.promptTokens,
              "gen_ai.usage.output_tokens": completion.completionTokens,
            });
            return completion;
          } catch (error) {
            if (error instanceof LlmError) span.setAttribute("error.type", error.code);
            throw error;
          }
        },
        SpanKind.CLIENT,
      );
    },
  };
}
