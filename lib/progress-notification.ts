// The wire format of streamed LLM text between the worker that sends it (worker/job-progress.ts) and the servers
// that hand it to jobProgress subscribers (server/job-progress.ts): one NOTIFY on quire_job_progress per piece, its
// payload a JSON object. NOTIFY payloads are limited to 8000 bytes: a piece's text is at most 1000 characters, which
// JSON escaping (at most 6 bytes a character) keeps under 6000 bytes.

export const jobProgressChannel = "quire_job_progress";

/** Characters of text per notification. */
export const progressPieceMaxChars = 1000;

/** What one notification carries. */
export interface ProgressNotification {
  readonly jobId: string;
  readonly orgId: string;
  /** The run that wrote it: a new run's text replaces the previous run's. */
  readonly runId: string;
  /** Where `text` starts in the run's text so far, in UTF-16 units. */
  readonly offset: number;
  readonly text: string;
}
