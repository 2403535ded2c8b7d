// Stops the embedded PostgreSQL global-setup started, if it did. The template database stays until the next run.
export default async function globalTeardown(): Promise<void> {
  await globalThis.quireTestEmbedded?.stop();
}
