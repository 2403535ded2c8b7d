// Templates through GraphQL: global templates shipped and readable by all, organization templates written by
// admins, placeholder validation (BAD_TEMPLATE), immutable versions that outlive edits and deletion, and previews
// that replace placeholders as plain text.
import { query } from "../support/database.ts";
import { codeOf, useQuireServer } from "../support/server.ts";
import { createTenant, type Tenant } from "../support/tenants.ts";

let t: Tenant;
const fx = useQuireServer();
beforeAll(async () => {
  t = await createTenant(fx.db, "Templates");
});

const { gql } = fx;
const create = (token: string, template: Record<string, unknown>) =>
  gql(token, "mutation ($t: TemplateInput!) { createTemplate(input: { template: $t }) { template { rowId name version } } }", { t: template });

test("three global templates ship, and every member reads them", async () => {
  const body = await gql(t.members.viewer.accessToken, "{ globalTemplates(orderBy: NAME_ASC) { nodes { name version } } }");
  expect(body.data).toEqual({
    globalTemplates: {
      nodes: [
        { name: "Action items", version: 1 },
        { name: "Executive summary", version: 1 },
        { name: "Key points", version: 1 },
      ],
    },
  });
});

test("admins write organization templates; members and viewers read them", async () => {
  const created = await create(t.members.admin.accessToken, { name: "Release notes", body: "Release notes for {{document.title}}" });
  expect(created.data!.createTemplate).toMatchObject({ template: { name: "Release notes", version: 1 } });
  expect(codeOf(await create(t.members.member.accessToken, { name: "Nope", body: "x" }))).toBe("FORBIDDEN");
  const list = await gql(t.members.viewer.accessToken, "{ templates(orderBy: NAME_ASC) { nodes { name } } }");
  expect(list.data).toEqual({ templates: { nodes: [{ name: "Release notes" }, { name: "Templates digest" }] } });
});

test.each([
  ["an unknown placeholder", "Hello {{user.password}}", "Unknown placeholder {{user.password}}"],
  ["stray braces", "Hello {{document.title}} }}", "Unbalanced {{ or }}"],
  ["an unclosed placeholder", "Hello {{document.title", "Unbalanced {{ or }}"],
])("a body with %s is BAD_TEMPLATE, naming the problem, and saves nothing", async (_label, templateBody, message) => {
  const body = await create(t.members.owner.accessToken, { name: `Broken ${message.length}`, body: templateBody });
  expect(codeOf(body)).toBe("BAD_TEMPLATE");
  expect(body.errors![0]!.message).toContain(message);
  expect(await query(fx.db.name, "select 1 from app_public.templates where body = $1", [templateBody], "root")).toEqual([]);
});

test("editing keeps every version; deleting the template keeps its versions", async () => {
  const created = (await create(t.members.admin.accessToken, { name: "Versioned", body: "v1 {{document.title}}" })).data!.createTemplate as {
    template: { rowId: string };
  };
  const id = created.template.rowId;
  const edit = (patch: Record<string, unknown>) =>
    gql(
      t.members.admin.accessToken,
      "mutation ($id: UUID!, $p: TemplatePatch!) { updateTemplate(input: { rowId: $id, patch: $p }) { template { version } } }",
      { id, p: patch },
    );
  expect((await edit({ body: "v2 {{document.content}}" })).data).toEqual({ updateTemplate: { template: { version: 2 } } });
  expect((await edit({ body: "v2 {{document.content}}" })).data).toEqual({ updateTemplate: { template: { version: 2 } } }); // no change, no version
  const versions = () =>
    query<{ version: number; body: string; template_id: string | null }>(
      fx.db.name,
      "select version, body, template_id from app_public.template_versions where name = 'Versioned' order by version",
      [],
      "root",
    );
  expect((await versions()).map((v) => [v.version, v.body])).toEqual([
    [1, "v1 {{document.title}}"],
    [2, "v2 {{document.content}}"],
  ]);
  expect(
    (await gql(t.members.admin.accessToken, "mutation ($id: UUID!) { deleteTemplate(input: { rowId: $id }) { clientMutationId } }", { id })).errors,
  ).toBeUndefined();
  expect((await versions()).map((v) => [v.version, v.template_id])).toEqual([
    [1, null],
    [2, null],
  ]);
  // Nobody edits a version through the API.
  expect(
    codeOf(
      await gql(
        t.members.owner.accessToken,
        'mutation { updateTemplateVersion(input: { rowId: "00000000-0000-4000-8000-000000000000", patch: {} }) { clientMutationId } }',
      ),
    ),
  ).toBe("BAD_REQUEST");
});

test("previewTemplate renders a document with an organization or global template, as plain text", async () => {
  const doc = (
    await gql(
      t.members.member.accessToken,
      'mutation { createDocument(input: { document: { title: "Plan {{date}}", content: "Body mentions {{organization.name}}" } }) { document { rowId } } }',
    )
  ).data!.createDocument as { document: { rowId: string } };
  const [global] = await query<{ id: string }>(fx.db.name, "select id from app_public.global_templates where name = 'Key points'", [], "root");
  const [own] = await query<{ id: string }>(
    fx.db.name,
    "select id from app_public.templates where org_id = $1 and name = 'Templates digest'",
    [t.orgId],
    "root",
  );
  const preview = (templateId: string) =>
    gql(t.members.viewer.accessToken, "query ($t: UUID!, $d: UUID!) { previewTemplate(templateId: $t, documentId: $d) }", {
      t: templateId,
      d: doc.document.rowId,
    });
  expect((await preview(own!.id)).data).toEqual({ previewTemplate: "Summarize Plan {{date}} for Templates:\nBody mentions {{organization.name}}" });
  expect(((await preview(global!.id)).data!.previewTemplate as string).startsWith('List the key points of "Plan {{date}}"')).toBe(true);
});

test("another organization's template or document previews exactly like a nonexistent one", async () => {
  const other = await createTenant(fx.db, "Other Templates");
  const [theirTemplate] = await query<{ id: string }>(fx.db.name, "select id from app_public.templates where org_id = $1", [other.orgId], "root");
  const [myDocument] = await query<{ id: string }>(fx.db.name, "select id from app_public.documents where org_id = $1 limit 1", [t.orgId], "root");
  const preview = (templateId: string) =>
    gql(t.members.owner.accessToken, "query ($t: UUID!, $d: UUID!) { previewTemplate(templateId: $t, documentId: $d) }", { t: templateId, d: myDocument!.id });
  const cross = await preview(theirTemplate!.id);
  expect(codeOf(cross)).toBe("NOT_FOUND");
  expect(cross).toEqual(await preview("00000000-0000-4000-8000-000000000000"));
});

describe("bounded rendering", () => {
  test.each([
    ["{{document.content}} twice", "{{document.content}}\n---\n{{ document.content }}", "{{document.content}} may appear only once"],
    ["more than 20 placeholders", "{{document.title}} ".repeat(21), "at most 20 placeholders"],
  ])("a body with %s is BAD_TEMPLATE, naming the problem, and saves nothing", async (_label, templateBody, message) => {
    const body = await create(t.members.owner.accessToken, { name: `Amplifier ${message.length}`, body: templateBody });
    expect(codeOf(body)).toBe("BAD_TEMPLATE");
    expect(body.errors![0]!.message).toContain(message);
    expect(await query(fx.db.name, "select 1 from app_public.templates where body = $1", [templateBody], "root")).toEqual([]);
    // A global template is held to the same rule.
    await expect(
      query(fx.db.name, "insert into app_public.global_templates (name, body) values ('Amplifier', $1)", [templateBody], "root"),
    ).rejects.toMatchObject({ code: "BADTM" });
  });

  test("a template saved before the rule, repeating the content, renders TOO_LARGE instead of a multiple of the document", async () => {
    const content = "c".repeat(1024 * 1024); // 1 MiB
    const created = await gql(
      t.members.member.accessToken,
      'mutation ($c: String!) { createDocument(input: { document: { title: "Big", content: $c } }) { document { rowId } } }',
      { c: content },
    );
    const documentId = (created.data!.createDocument as { document: { rowId: string } }).document.rowId;
    // The body check is a trigger: written past it as the owner (with triggers off), as a pre-existing row would be.
    const [template] = await query<{ id: string }>(
      fx.db.name,
      `with t as (insert into app_public.templates (org_id, name, body) values ($1, 'Hundredfold', 'x') returning id)
       select id from t`,
      [t.orgId],
      "root",
    );
    await query(fx.db.name, "alter table app_public.templates disable trigger user", [], "root");
    try {
      await query(fx.db.name, "update app_public.templates set body = $2 where id = $1", [template!.id, "{{document.content}}".repeat(100)], "root");
    } finally {
      await query(fx.db.name, "alter table app_public.templates enable trigger user", [], "root");
    }
    const preview = await gql(t.members.viewer.accessToken, "query ($t: UUID!, $d: UUID!) { previewTemplate(templateId: $t, documentId: $d) }", {
      t: template!.id,
      d: documentId,
    });
    expect(codeOf(preview)).toBe("TOO_LARGE");
    expect(preview.errors![0]!.message).toMatch(/use \{\{document\.content\}\} only once/);
    // The same function renders the summarize job's prompt.
    await expect(
      query(fx.db.name, "select app_public.render_template($1, 'T', $2, 'Org')", ["{{document.content}}".repeat(100), content], "root"),
    ).rejects.toMatchObject({ code: "TOOLG" });
    const [once] = await query<{ n: number }>(
      fx.db.name,
      "select octet_length(app_public.render_template($1, 'T', $2, 'Org')) as n",
      ["<{{document.content}}>", content],
      "root",
    );
    expect(once!.n).toBe(1024 * 1024 + 2);
  });
});
