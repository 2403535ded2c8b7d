// `npm run config-docs`: writes docs/configuration.md and .env.example from lib/config-reference.ts, the one place
// configuration is documented. test/lib/config.test.ts fails when either is stale.
import { writeFile } from "node:fs/promises";
import { configurationMarkdown, envExample } from "../lib/config-reference.ts";

await writeFile(new URL("../docs/configuration.md", import.meta.url), configurationMarkdown());
await writeFile(new URL("../.env.example", import.meta.url), envExample());
console.log("wrote docs/configuration.md and .env.example");
