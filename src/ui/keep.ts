/** `npm run check -- --keep`: after a failed run, what stays in Redis and how to look at it. */
import { createClient } from "redis";
import type { Lesson } from "../catalog.ts";
import type { Verdict } from "../check/verdict.ts";
import { KEEP_SECONDS, recordKept, recordKeptServer } from "../redis/kept.ts";
import type { RedisTarget } from "../redis/target.ts";
import { tlsSocketOptions } from "../redis/tls.ts";

/** Enough names to start from; the SCAN/KEYS command printed finds the rest. */
const SHOWN = 20;

/** The keys under `prefix`, sorted, at most `limit` of them, and how many there are. */
async function keysUnder(
  url: string,
  prefix: string,
  limit = SHOWN,
): Promise<{ names: string[]; total: number }> {
  const client = createClient({
    url,
    name: "wb:keep",
    socket: { reconnectStrategy: false, ...tlsSocketOptions(url) },
  });
  client.on("error", () => {});
  const names: string[] = [];
  try {
    await client.connect();
    for await (const keys of client.scanIterator({ MATCH: `${prefix}*`, COUNT: 500 })) {
      names.push(...keys);
    }
  } finally {
    client.destroy();
  }
  return { names: names.sort().slice(0, limit), total: names.length };
}

/**
 * Keeps the server (private) or just the keys (REDIS_URL) of a failed check and returns the
 * lines that tell the learner where they are, how to look, and how to end it.
 */
export async function keepFailedRun(
  redis: RedisTarget,
  prefix: string,
  lesson: Lesson,
): Promise<string[]> {
  const { names, total } = await keysUnder(redis.url, prefix).catch(() => ({
    names: [],
    total: 0,
  }));
  const check = { prefix, lesson: lesson.number };
  let where: string;
  let look: string;
  let end: string;
  if (redis.kind === "private" && redis.keep && redis.port !== undefined) {
    recordKeptServer(redis.port, redis.keep(KEEP_SECONDS), check);
    where = `the private redis-server on 127.0.0.1:${redis.port} is still running`;
    look = `npm run redis-cli -- KEYS '${prefix}*'`;
    end = `Stop it: npm run redis-cli -- --stop (or it stops at your next check, or after ${KEEP_SECONDS / 60} minutes unused).`;
  } else {
    recordKept({ kind: "external", ...check });
    where = `its keys stay on REDIS_URL (${redis.display})`;
    look = `npm run redis-cli -- SCAN 0 MATCH '${prefix}*' COUNT 1000`;
    end = `Delete them: npm run redis-cli -- --stop (your next check deletes them too).`;
  }
  const shown = names.map((name) => `  ${name}`);
  const more = total > names.length ? [`  ... and ${total - names.length} more`] : [];
  return [
    "",
    `Kept for you to look at: ${where}.`,
    total > 0
      ? `The check's ${total} key${total === 1 ? "" : "s"} (prefix ${prefix}):`
      : `The check left no keys under its prefix ${prefix}.`,
    ...shown,
    ...more,
    `Look: ${look}`,
    `      npm run redis-cli          (a session: type commands, quit to leave)`,
    end,
  ];
}

/** Why --keep kept nothing: only a check that ran and failed leaves something worth a look. */
export function nothingKept(verdict: Verdict): string {
  if (verdict.status === "passed") return "--keep: the check passed, so nothing was kept.";
  if (verdict.status === "skipped") return "--keep: the check was skipped, so nothing was kept.";
  return "--keep: nothing was kept, because the check stopped before it ran your code against Redis.";
}
