/**
 * How the processes sharing a check's tests (./shards.ts) divide them, with files in the run's
 * shared directory made with O_EXCL, which one machine's file system orders for every process:
 * a test goes to the process that claims it first, and a test that must have the server to
 * itself waits until no other process is inside a test, while the others wait for it.
 */
import { closeSync, existsSync, openSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";

const ALONE_LOCK = "alone.lock";
const BUSY = "busy-";

function create(file: string): boolean {
  try {
    closeSync(openSync(file, "wx"));
    return true;
  } catch {
    return false;
  }
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Whether this process is the first to claim test `id`, and so the one to run it. */
export function claim(dir: string, id: string): boolean {
  return create(join(dir, `claim-${id}`));
}

/** Waits until no test that must run alone is running; returns how to say this one ended. */
export async function enterShared(dir: string, me: string): Promise<() => void> {
  const mine = join(dir, `${BUSY}${me}`);
  for (;;) {
    // Marked busy first, then the lock looked at: a process taking the lock takes it first and
    // then waits for the busy marks, so the two can never both go ahead.
    create(mine);
    if (!existsSync(join(dir, ALONE_LOCK))) return () => rmSync(mine, { force: true });
    rmSync(mine, { force: true });
    await pause(10);
  }
}

/** Waits until no other process is inside a test, and keeps them out until this one ends. */
export async function enterAlone(dir: string, me: string): Promise<() => void> {
  const lock = join(dir, ALONE_LOCK);
  while (!create(lock)) await pause(10);
  const others = () => readdirSync(dir).some((f) => f.startsWith(BUSY) && f !== `${BUSY}${me}`);
  while (others()) await pause(10);
  return () => rmSync(lock, { force: true });
}
