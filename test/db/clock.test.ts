// The window clock (app_private.clock_now()): tests move it forward instead of sleeping, and nobody else can.
import { createTestDatabase, query, roles, type TestDatabase } from "../support/database.ts";

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

const ahead = async (role?: string) => (await query<{ ahead: string }>(db.name, "select (app_private.clock_now() - now())::text as ahead", [], role))[0]!.ahead;

test("it is now() until moved; a superuser moves it, and back", async () => {
  expect(await ahead()).toBe("00:00:00");
  await query(db.name, "update app_private.clock set offset_by = interval '90 seconds'", [], "root");
  try {
    expect(await ahead()).toBe("00:01:30");
  } finally {
    await query(db.name, "update app_private.clock set offset_by = interval '0'", [], "root");
  }
  expect(await ahead()).toBe("00:00:00");
});

test("API roles cannot touch it, the owner changes nothing outside a definer function, and it never runs behind", async () => {
  // The authenticator logs in and switches to the others, as the API does.
  for (const role of [roles.authenticator, roles.authenticated, roles.anonymous]) {
    const asRole = role === roles.authenticator ? "" : `set role ${role}; `;
    await expect(query(db.name, `${asRole}update app_private.clock set offset_by = interval '1 hour'`, [], roles.authenticator)).rejects.toMatchObject({
      code: "42501",
    });
  }
  expect(await query(db.name, "update app_private.clock set offset_by = interval '1 hour' returning 1")).toEqual([]);
  expect(await query(db.name, "select offset_by::text as offset_by from app_private.clock", [], "root")).toEqual([{ offset_by: "00:00:00" }]);
  await expect(query(db.name, "update app_private.clock set offset_by = interval '-1 second'", [], "root")).rejects.toMatchObject({ code: "23514" });
});
