// Shared re-reads for live subscriptions. Every delivered LiveEvent is executed once per subscriber, and each
// execution reads the row it names under that subscriber's RLS: one transaction (begin and settings, select,
// commit) per subscriber per event. Subscribers of one organization with one member role see exactly the same
// rows, so their reads made within the same tick are run here in ONE transaction, with the settings of one of
// them (the representative); identical queries (text, values, array mode) run once and every caller gets a copy
// of the result; different queries run one after another in that transaction.
//
// Why (organization, member role) is enough. Every SELECT policy a subscription can reach from a LiveEvent
// (migrations/committed: jobs, documents, summaries, integrations, usage_records, integration_sync_runs,
// summary_publications, templates, template_versions, memberships, organizations, live_events: `org_id =
// current_org_id()`; invitations and audit_events: the same and `current_member_role() >= 'admin'`; global
// templates: everyone) depends on the organization and the member role only. The one policy naming the user,
// users' `id = current_user_id() or id in (members of current_org_id())`, gives every member of an organization
// the same set, since the caller is always one of the members (enter_context joins the membership). The only
// computed columns (documents_content_length, documents_excerpt) are pure. A policy or computed column that reads
// current_user_id() some other way would make this module wrong: keep this list in step with the migrations.
// Three tables do read it: a person's own questions, answers and answer_citations (`asked_by = current_user_id()`).
// A shared transaction refuses any query that names one of them (NotSharable): that caller reads again in its own
// transaction, the others keep the shared results. What one person asked is never answered from another's read.
//
// Why the claims are not trusted for that. The group key is the claims' organization and role (and the database
// role), but a token's role claim can be stale (a role change does not end the session) and a session can end at
// any moment (the socket is closed on its NOTIFY, which arrives later). So a caller other than the representative
// gets the shared result only when, in that same transaction, its membership has the role the representative's
// verified context has (the first statement, which also runs the representative's app_hidden.enter_context), and,
// after it, its session is still live (app_private.ended_sessions, as the server's own role). A caller that fails
// either check, and every caller when the shared transaction fails (the representative's session was revoked:
// enter_context raises LOGIN; or any query fails), runs its own callback on its own, with its own settings, as if
// this module did not exist: one bad session never fails the others, and a revoked session reads nothing.
//
// Only reads are shared: this wraps the withPgClient of subscriptions over a WebSocket (server/context.ts), and a
// callback that asks for a nested transaction or the raw connection (what mutations do) is refused in the shared
// transaction, which then falls back as above.
import type { PgClientQuery, PgClientResult, WithPgClient } from "postgraphile/@dataplan/pg";
import type { NodePostgresPgClient } from "postgraphile/adaptors/pg";
import type pg from "pg";

/** Which of the given sessions have ended (revoked, expired, membership, user or organization gone). */
export type EndedSessions = (sessionIds: readonly string[]) => Promise<ReadonlySet<string>>;

/** EndedSessions over `pool`, the server's own role (app_private.ended_sessions is granted to it only). */
export const endedSessionsIn =
  (pool: pg.Pool): EndedSessions =>
  async (sessionIds) => {
    if (sessionIds.length === 0) return new Set();
    const { rows } = await pool.query<{ id: string }>({ text: "select id::text from app_private.ended_sessions($1::uuid[]) as id", values: [sessionIds] });
    return new Set(rows.map((r) => r.id));
  };

/**
 * What sharing did, since the process started: `callers` calls made through shareReads, run in `transactions`
 * transactions (shared or not), of which `shared` ran more than one caller; `fallbacks` callers ran again on their
 * own after a failed shared transaction or check. For tests and metrics.
 */
export const sharedReadCounts = { callers: 0, transactions: 0, shared: 0, fallbacks: 0 };

type Settings = Record<string, string | undefined>;

interface Caller {
  readonly settings: Settings;
  readonly callback: (client: NodePostgresPgClient) => unknown;
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

/** Asked of the shared transaction's client for a nested transaction or the raw connection: not a plain read. */
class NotSharable extends Error {}

/** The result of a caller whose read was not sharable: it reads again on its own. */
const notShared = Symbol("not shared");

/** Tables whose read policy depends on the user, not only the organization and role: their reads are never shared. */
const perUserTables = /\bapp_public"?\s*\.\s*"?(questions|answers|answer_citations)\b/i;

/** The settings that decide what RLS shows: organization, member role and database role. Null: not shared. */
function groupKeyOf(settings: Settings | null): string | null {
  const org = settings?.["jwt.claims.org_id"];
  const memberRole = settings?.["jwt.claims.role"];
  const role = settings?.["role"];
  if (!org || !memberRole || !role || !settings["jwt.claims.session_id"] || !settings["jwt.claims.user_id"]) return null;
  return JSON.stringify([org, memberRole, role]);
}

/** A copy of a result for one caller, so that no caller sees another's changes to rows. */
function copyOf<T>(result: PgClientResult<T>): PgClientResult<T> {
  return { ...result, rows: result.rows.map((row) => (Array.isArray(row) ? ([...row] as T) : { ...row })) };
}

/** The representative's client, answering identical queries once; refuses what is not a plain read. */
function sharingClient(client: NodePostgresPgClient): NodePostgresPgClient {
  const answers = new Map<string, Promise<PgClientResult<unknown>>>();
  const shared: NodePostgresPgClient = {
    async query<TData>(opts: PgClientQuery): Promise<PgClientResult<TData>> {
      if (perUserTables.test(opts.text)) throw new NotSharable("a read of a person's own rows is not shared");
      const key = JSON.stringify([opts.text, opts.values ?? [], opts.arrayMode ?? false]);
      let answer = answers.get(key);
      if (!answer) answers.set(key, (answer = client.query<unknown>(opts)));
      return copyOf((await answer) as PgClientResult<TData>);
    },
    withTransaction() {
      return Promise.reject(new NotSharable("a nested transaction is not a shared read"));
    },
    get rawClient(): NodePostgresPgClient["rawClient"] {
      throw new NotSharable("the raw connection is not a shared read");
    },
  };
  return shared;
}

/** Of the group's users, those whose membership has the role of the verified context; runs enter_context. */
const sameRoleMembers = `select m.user_id::text as user_id
                           from app_public.memberships m
                          where m.org_id = app_public.current_org_id() and m.user_id = any($1::uuid[])
                            and m.role = app_public.current_member_role()`;

/**
 * A withPgClient that runs the reads of callers of one (organization, member role), made within one tick, in one
 * transaction. `withPgClient` is the one every caller would otherwise use; `endedSessions` checks sessions after.
 */
export function shareReads(withPgClient: WithPgClient<NodePostgresPgClient>, endedSessions: EndedSessions): WithPgClient<NodePostgresPgClient> {
  let pending = new Map<string, Caller[]>();

  const alone = (caller: Caller) => {
    sharedReadCounts.transactions++;
    withPgClient(caller.settings, caller.callback).then(caller.resolve, caller.reject);
  };

  const runGroup = async (group: Caller[]) => {
    if (group.length === 1) return alone(group[0]!);
    const [representative] = group as [Caller, ...Caller[]];
    const others = group.slice(1);
    sharedReadCounts.transactions++;
    sharedReadCounts.shared++;
    let outcome: { results: unknown[]; sameRole: Set<string> };
    let ended: ReadonlySet<string>;
    try {
      outcome = await withPgClient(representative.settings, async (client) => {
        const userIds = group.map((c) => c.settings["jwt.claims.user_id"]!);
        const { rows } = await client.query<{ user_id: string }>({ text: sameRoleMembers, values: [userIds] });
        const sharing = sharingClient(client);
        // The callbacks' queries queue on the one connection; a failed one aborts the transaction for all.
        const settled = await Promise.allSettled(group.map(async (c) => c.callback(sharing)));
        // A read refused as not sharable changed nothing in the transaction: only its caller reads again alone.
        const failed = settled.find((s) => s.status === "rejected" && !(s.reason instanceof NotSharable));
        if (failed) throw (failed as PromiseRejectedResult).reason;
        return {
          results: settled.map((s) => (s.status === "fulfilled" ? s.value : notShared)),
          sameRole: new Set(rows.map((r) => r.user_id)),
        };
      });
      ended = await endedSessions(others.map((c) => c.settings["jwt.claims.session_id"]!));
    } catch {
      // The error is each caller's to meet again, or not, with its own settings.
      sharedReadCounts.fallbacks += group.length;
      group.forEach(alone);
      return;
    }
    if (outcome.results[0] === notShared) {
      sharedReadCounts.fallbacks++;
      alone(representative);
    } else {
      representative.resolve(outcome.results[0]);
    }
    others.forEach((caller, i) => {
      if (outcome.results[i + 1] === notShared) {
        sharedReadCounts.fallbacks++;
        alone(caller);
      } else if (outcome.sameRole.has(caller.settings["jwt.claims.user_id"]!) && !ended.has(caller.settings["jwt.claims.session_id"]!)) {
        caller.resolve(outcome.results[i + 1]);
      } else {
        sharedReadCounts.fallbacks++;
        alone(caller);
      }
    });
  };

  const flush = () => {
    const groups = pending;
    pending = new Map();
    for (const group of groups.values()) void runGroup(group);
  };

  return (pgSettings, callback) => {
    sharedReadCounts.callers++;
    const key = groupKeyOf(pgSettings);
    if (key === null) {
      sharedReadCounts.transactions++;
      return withPgClient(pgSettings, callback);
    }
    return new Promise((resolve, reject) => {
      if (pending.size === 0) setImmediate(flush);
      let group = pending.get(key);
      if (!group) pending.set(key, (group = []));
      group.push({ settings: pgSettings!, callback, resolve: resolve as (value: unknown) => void, reject });
    });
  };
}
