/** The cluster dashboard's merging, without Redis: counters, dead-letter cursors, buttons. */
import type { IncomingMessage } from "node:http";
import { expect, test } from "vitest";
import { spreadActions } from "../../src/pipeline/dashboard/actions.ts";
import { HttpError } from "../../src/pipeline/dashboard/http.ts";
import { addCounters, mergedSide } from "../../src/pipeline/dashboard/partitions.ts";
import type { RedisSide, StageCounters } from "../../src/pipeline/dashboard/redis-side.ts";

const counter = (waiting: number, lagMs: number): StageCounters => ({
  stage: "ocr",
  waiting,
  pending: 1,
  retried: 2,
  lagMs,
});

test("stage counters add up over the partitions; the oldest wait is the longest", () => {
  expect(addCounters([[counter(3, 10)], [counter(4, 50)], [counter(0, 0)]])).toEqual([
    { stage: "ocr", waiting: 7, pending: 3, retried: 6, lagMs: 50 },
  ]);
});

test("dead letters are read on from each partition's own cursor", async () => {
  const letters: Record<number, { id: string; doc: string; reason: string }[]> = {
    0: [{ id: "1-0", doc: "a", reason: "x" }],
    1: [
      { id: "5-0", doc: "b", reason: "y" },
      { id: "6-0", doc: "c", reason: "z" },
    ],
  };
  const asked: string[][] = [[], []];
  const side = (i: number) =>
    ({
      deadLetters: async (after: string) => {
        asked[i]?.push(after);
        return (letters[i] ?? []).filter((l) => after === "-" || l.id > after);
      },
    }) as unknown as RedisSide;
  const merged = mergedSide([side(0), side(1)]);
  const first = await merged.deadLetters("-");
  expect(first.map((l) => l.doc)).toEqual(["a", "b", "c"]);
  expect(await merged.deadLetters(first.at(-1)?.id ?? "-")).toEqual([]);
  expect(asked).toEqual([
    ["-", "1-0"],
    ["-", "6-0"],
  ]);
});

test("a kill goes on to the next partition when one has no worker; the worker is named <tag>/<slot>", async () => {
  const calls: number[] = [];
  const partition = (i: number, hasWorker: boolean) => ({
    "/actions/kill": async () => {
      calls.push(i);
      if (!hasWorker) throw new HttpError(409, "No worker is running right now.");
      return { slot: "1", pid: 100 + i };
    },
  });
  const spread = spreadActions([partition(0, false), partition(1, true)], ["{p0}", "{p1}"]);
  const req = {} as IncomingMessage;
  expect(await spread["/actions/kill"]?.(req)).toEqual({ slot: "{p1}/1", pid: 101 });
  expect(calls).toEqual([0, 1]);
});
