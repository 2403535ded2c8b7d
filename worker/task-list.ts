// The tasks this worker runs, one module per task under worker/tasks/. Each task declares its payload type in the
// GraphileWorker.Tasks interface so `add_job` callers and the task agree on it.
import type { TaskList } from "graphile-worker";
import type { Mailer } from "../lib/mailer.ts";
import { makeSendEmail } from "./tasks/send_email.ts";

export interface TaskDependencies {
  readonly mailer: Mailer;
}

export function makeTaskList({ mailer }: TaskDependencies): TaskList {
  return { send_email: makeSendEmail(mailer) as TaskList[string] };
}
