// The password hasher sheds load early: a caller who would wait longer than maxWaitMs for a hashing slot is turned
// away at once with RATE_LIMITED (RLIMT), never queued behind a storm; those admitted all get their answer.
import { createPasswordHasher } from "../../lib/passwords.ts";
import { QuireError } from "../../lib/quire-error.ts";

test("callers beyond the expected wait are refused at once with RLIMT, before any queued hash finishes", async () => {
  const hasher = createPasswordHasher({ cost: 10, concurrency: 1, maxWaitMs: 100, dutyPercent: 100 });
  // One hash first, so the hasher knows what a turn costs.
  const hash = await hasher.hash("correct horse battery");
  const order: string[] = [];
  const attempts = Array.from({ length: 20 }, (_, i) =>
    hasher.verify("correct horse battery", hash).then(
      (ok) => order.push(`verified:${ok}:${i}`),
      (error: unknown) => {
        order.push(`refused:${i}`);
        expect(error).toBeInstanceOf(QuireError);
        expect(error).toMatchObject({ code: "RLIMT", extensions: { retryAfterSeconds: expect.any(Number) } });
      },
    ),
  );
  await Promise.all(attempts);
  const refused = order.filter((o) => o.startsWith("refused"));
  const verified = order.filter((o) => o.startsWith("verified"));
  expect(refused.length).toBeGreaterThan(0);
  expect(verified.length).toBeGreaterThan(0);
  expect(verified.every((o) => o.startsWith("verified:true"))).toBe(true);
  expect(refused.length + verified.length).toBe(20);
  // Refusals came first: nobody waited in a queue only to be turned away.
  expect(order.slice(0, refused.length).every((o) => o.startsWith("refused"))).toBe(true);
});
