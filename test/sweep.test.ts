/**
 * The temporary directories of runs that were killed or timed out are removed at the next start;
 * those of runs still alive, and directories that are not ours, are left alone.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, expect, test } from "vitest";
import { startPrivateServer } from "../src/redis/server.ts";
import { startTime, sweepDeadScratch } from "../src/scratch.ts";
import { scratchDir } from "./support/sandbox.ts";

const scratch = scratchDir("sweep");
afterAll(() => scratch.remove());

/** The pid of a process that has ended. */
function deadPid(): number {
  return Number(spawnSync("sh", ["-c", "echo $$"], { encoding: "utf8" }).stdout.trim());
}

/** A directory under `parent` named `name`, owned by `owner` (none: no record). */
function made(parent: string, name: string, owner?: { pid: number; start?: string }): string {
  const dir = join(parent, name);
  mkdirSync(join(dir, "tmp", "Xy12", "ssr"), { recursive: true });
  if (owner) writeFileSync(join(dir, "workbook-owner"), JSON.stringify(owner));
  return dir;
}

test("only the directories of dead runs are removed", () => {
  const parent = join(scratch.dir, "unit");
  mkdirSync(parent);
  const dead = deadPid();
  const me = { pid: process.pid, start: startTime(process.pid) };
  const removed = [
    made(parent, "workbook-check-dead01", { pid: dead }),
    made(parent, "workbook-redis-dead02", { pid: dead }),
    // Our pid, but a different process: the one that had it before us.
    made(parent, "workbook-check-reuse1", { pid: process.pid, start: "1" }),
  ];
  const kept = [
    made(parent, "workbook-check-alive1", me),
    made(parent, "workbook-redis-alive2", me),
    made(parent, "workbook-check-norec1"),
    made(parent, "somebody-else-dead01", { pid: dead }),
  ];
  expect(sweepDeadScratch(parent).sort()).toEqual(removed.sort());
  for (const dir of removed) expect(existsSync(dir), dir).toBe(false);
  for (const dir of kept) expect(existsSync(dir), dir).toBe(true);
});

test("starting a private server sweeps first", async () => {
  const parent = join(scratch.dir, "start");
  mkdirSync(parent);
  const left = made(parent, "workbook-check-left01", { pid: deadPid() });
  const saved = process.env.TMPDIR;
  process.env.TMPDIR = parent;
  try {
    const server = await startPrivateServer();
    expect(existsSync(left)).toBe(false);
    expect(readdirSync(parent).filter((name) => name.startsWith("workbook-redis-"))).toHaveLength(
      1,
    );
    await server.stop();
    expect(readdirSync(parent)).toEqual([]);
  } finally {
    if (saved === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = saved;
  }
});
