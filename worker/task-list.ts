// The tasks this worker runs, one module per task under worker/tasks/. Each task declares its payload type in the
// GraphileWorker.Tasks interface so `add_job` callers and the task agree on it.
import type { TaskList } from "graphile-worker";

export const taskList: TaskList = {};
