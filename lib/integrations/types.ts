// What the Notion and Confluence clients return for pages, in one shape so the sync code treats both alike, and
// the few helpers both use to read the services' JSON without trusting it: a field of the wrong type reads as
// absent, never as a crash or an `any`.

/** A page as a listing shows it. */
export interface PageRef {
  /** The service's id of the page. */
  readonly externalId: string;
  readonly title: string;
  /** Where a person opens the page. */
  readonly url: string;
  readonly lastEditedAt: Date | null;
  /** The parent page (or database / block) id; null at the top of a workspace or space. */
  readonly parentId?: string | null;
}

export interface PageList {
  readonly pages: readonly PageRef[];
  /** Pass as `cursor` for the next page of results; null after the last. */
  readonly nextCursor: string | null;
}

/** A page a publisher created or rewrote. */
export interface PublishedPage {
  readonly externalId: string;
  readonly url: string;
}

export type JsonRecord = Readonly<Record<string, unknown>>;

/** `value` as an object (arrays and null read as an empty one). */
export const record = (value: unknown): JsonRecord => (typeof value === "object" && value !== null && !Array.isArray(value) ? (value as JsonRecord) : {});

/** `value` if it is a string, else undefined. */
export const text = (value: unknown): string | undefined => (typeof value === "string" ? value : undefined);

/** `value` if it is an array, else an empty one. */
export const array = (value: unknown): readonly unknown[] => (Array.isArray(value) ? value : []);

/** An ISO timestamp as a Date; null when absent or unparseable. */
export function dateOf(value: unknown): Date | null {
  if (typeof value !== "string") return null;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}
