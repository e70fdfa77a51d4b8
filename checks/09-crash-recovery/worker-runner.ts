/**
 * Runs the learner's startWorker() in a process of its own (see checks/worker-process.ts), so
 * the check can SIGKILL it mid-task. Not a check: it cannot use the kit, which needs vitest.
 *
 * Its handler reports each task it starts and then works for WORKER_TASK_MS, long enough that
 * the kill always lands after the read and before the XACK.
 */
import { pathToFileURL } from "node:url";
import { createClient, type RedisClientType } from "redis";

type Redis = RedisClientType<{}, {}, {}, 3, {}>;

interface Task {
  id: string;
  fields: Record<string, string>;
}

interface Exercise {
  startWorker(
    client: Redis,
    options: {
      stream: string;
      group: string;
      consumer: string;
      handle(task: Task): Promise<void>;
      claimIdleMs: number;
      blockMs?: number;
    },
  ): { stop(): Promise<void> };
}

function report(event: string, fields: Record<string, unknown> = {}): void {
  process.stdout.write(`@@workbook ${JSON.stringify({ event, ...fields })}\n`);
}

function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: this script is started by a check.`);
  return value;
}

// A learner's worker loop that fails in the background (a TODO left in a helper, say) reports
// it like any other error instead of dying with a stack trace.
process.on("unhandledRejection", (error) => {
  report("error", { message: error instanceof Error ? error.message : String(error) });
  process.exit(1);
});

try {
  const exercise = (await import(pathToFileURL(env("WORKBOOK_TARGET")).href)) as Exercise;
  const client: Redis = createClient({
    url: env("WORKBOOK_REDIS_URL"),
    name: env("WORKER_CLIENT_NAME"),
    socket: { reconnectStrategy: false },
  });
  client.on("error", () => {});
  await client.connect();
  const taskMs = Number(env("WORKER_TASK_MS"));
  exercise.startWorker(client, {
    stream: env("WORKER_STREAM"),
    group: env("WORKER_GROUP"),
    consumer: env("WORKER_CONSUMER"),
    claimIdleMs: Number(env("WORKER_CLAIM_IDLE_MS")),
    blockMs: 100,
    async handle(task) {
      report("handling", { id: task.id, docId: task.fields?.docId });
      await new Promise((resolve) => setTimeout(resolve, taskMs));
    },
  });
  report("started");
} catch (error) {
  report("error", { message: (error as Error).message });
  process.exit(1);
}
