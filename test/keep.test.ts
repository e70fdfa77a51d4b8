/**
 * `npm run check -- --keep`: a failed check leaves Redis and its keys to look at (the server
 * outliving the command on purpose), a passing one keeps nothing, and what was kept ends at the
 * next check or with `npm run redis-cli -- --stop`.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { createClient } from "redis";
import { afterAll, expect, test } from "vitest";
import type { Kept } from "../src/redis/kept.ts";
import { connectRaw } from "../src/redis/raw.ts";
import { startPrivateServer } from "../src/redis/server.ts";
import { cli } from "./support/cli.ts";
import { scratchDir } from "./support/sandbox.ts";

const scratch = scratchDir("keep");
/** Each test runs a whole check and a few commands; a loaded machine takes minutes for that. */
const SLOW = 240_000;
let boxes = 0;
const envs: Record<string, string>[] = [];
function box(extra: Record<string, string> = {}) {
  const env = { WORKBOOK_WORKSPACE: join(scratch.dir, String(boxes++)), ...extra };
  envs.push(env);
  return { env, state: join(env.WORKBOOK_WORKSPACE, ".kept-redis.json") };
}
afterAll(() => {
  for (const env of envs) cli(["redis-cli", "--stop"], env);
  scratch.remove();
}, SLOW);

/** Whether a server listens on `port`. */
async function answers(port: number): Promise<boolean> {
  try {
    (await connectRaw("127.0.0.1", port)).close();
    return true;
  } catch {
    return false;
  }
}

function keptIn(state: string): Kept {
  return JSON.parse(readFileSync(state, "utf8")) as Kept;
}

test(
  "a failed check keeps its server and keys after the command exits, says how to look, and --stop ends it",
  async () => {
    const { env, state } = box();
    const run = cli(["check", "08", "--starter", "--keep"], env);
    expect(run.code, run.err).toBe(1);
    const prefix = /prefix (wb:[0-9a-f]+:)/.exec(run.out)?.[1] ?? "";
    expect(prefix).not.toBe("");
    expect(run.out).toContain(`npm run redis-cli -- KEYS '${prefix}*'`);
    expect(run.out).toContain("npm run redis-cli -- --stop");
    const kept = keptIn(state);
    expect(kept).toMatchObject({ kind: "private", prefix, lesson: "08" });
    expect(await answers(kept.port ?? 0)).toBe(true);

    const listed = cli(["redis-cli", "KEYS", `${prefix}*`], env);
    const keys = listed.out.trim().split("\n");
    expect(keys.length).toBeGreaterThan(0);
    for (const key of keys) {
      expect(key.startsWith(prefix)).toBe(true);
      expect(run.out).toContain(key);
    }

    const stop = cli(["redis-cli", "--stop"], env);
    expect(stop.out).toContain(`Stopped the kept redis-server on port ${kept.port}`);
    expect(await answers(kept.port ?? 0)).toBe(false);
    expect(existsSync(state)).toBe(false);
    expect(existsSync(kept.dir ?? "")).toBe(false);
  },
  SLOW,
);

test(
  "a passing check keeps nothing and stops the server kept before it",
  async () => {
    const { env, state } = box();
    cli(["redis-cli", "PING"], env);
    const before = keptIn(state);
    const run = cli(["check", "01", "--solution", "--keep"], env);
    expect(run.code, run.out).toBe(0);
    expect(run.out).not.toContain("Kept for you");
    expect(run.out).toContain("the check passed, so nothing was kept");
    expect(existsSync(state)).toBe(false);
    expect(await answers(before.port ?? 0)).toBe(false);
  },
  SLOW,
);

test(
  "against REDIS_URL it keeps only the check's prefixed keys, and --stop deletes them",
  async () => {
    const server = await startPrivateServer();
    try {
      const { env, state } = box({ REDIS_URL: server.url });
      const run = cli(["check", "08", "--starter", "--keep"], env);
      expect(run.code, run.err).toBe(1);
      const prefix = /prefix (wb:[0-9a-f]+:)/.exec(run.out)?.[1] ?? "";
      expect(run.out).toContain("Delete them: npm run redis-cli -- --stop");
      expect(keptIn(state)).toEqual({ kind: "external", prefix, lesson: "08" });
      const client = createClient({ url: server.url });
      await client.connect();
      try {
        const kept = await client.keys(`${prefix}*`);
        expect(kept.length).toBeGreaterThan(0);
        expect(cli(["redis-cli", "--stop"], env).out).toContain(
          `Deleted the ${kept.length} kept keys ${prefix}*`,
        );
        expect(await client.keys(`${prefix}*`)).toEqual([]);
      } finally {
        client.destroy();
      }
    } finally {
      await server.stop();
    }
  },
  SLOW,
);
