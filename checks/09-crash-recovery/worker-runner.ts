/**
 * Runs the learner's startWorker() in a process of its own (see checks/worker-process.ts), so
 * the check can kill it at a known step. Not a check: it cannot use the kit, which needs vitest.
 *
 * Its handler reports each task it handles. With WORKER_DIE_BEFORE_XACK=n the process reports
 * the nth XACK its connections send ("dying", with the command's arguments) and SIGKILLs itself
 * before that XACK reaches Redis: the work is done, the acknowledgement never arrives.
 */
// First, so that every connection the learner's code opens goes through the fault kit (and
// WORKBOOK_FAULT works here).
import "../wire.ts";
import { pathToFileURL } from "node:url";
import { createClient, type RedisClientType } from "redis";
import { before, command } from "../wire.ts";

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
  ): Promise<{ stop(): Promise<void> }>;
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
const dieBefore = Number(process.env.WORKER_DIE_BEFORE_XACK ?? 0);
if (dieBefore > 0) {
  before(
    command("XACK"),
    (xack) => {
      report("dying", { args: xack.args });
      process.kill(process.pid, "SIGKILL");
    },
    { nth: dieBefore },
  );
}

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
  await exercise.startWorker(client, {
    stream: env("WORKER_STREAM"),
    group: env("WORKER_GROUP"),
    consumer: env("WORKER_CONSUMER"),
    claimIdleMs: Number(env("WORKER_CLAIM_IDLE_MS")),
    blockMs: 100,
    async handle(task) {
      report("handled", { id: task.id, docId: task.fields?.docId });
    },
  });
  report("started");
} catch (error) {
  report("error", { message: (error as Error).message });
  process.exit(1);
}
