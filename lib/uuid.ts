// The one check of "is this a UUID" for ids that come from outside a typed path: notification payloads and job
// payloads, which are trusted for nothing beyond their shape.

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Whether `value` is a UUID in its canonical 8-4-4-4-12 hexadecimal form. */
export const isUuid = (value: unknown): value is string => typeof value === "string" && uuidPattern.test(value);
