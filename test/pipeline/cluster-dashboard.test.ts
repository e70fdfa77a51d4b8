/**
 * `npm run pipeline -- --cluster --chaos --dashboard`: one page for every partition of the
 * local cluster. A tab joining mid-run (as lesson 04 teaches: live first, then the snapshot) sees
 * the workers of every partition, documents of every partition, the failover in the log, and at
 * the end counts that are the audit's; the page's server is gone with the run.
 */
import { randomUUID } from "node:crypto";
import { expect, test } from "vitest";
import type { DocStatus } from "../../src/pipeline/dashboard/status.ts";
import { redisServerVersion } from "../../src/redis/server.ts";
import { openEvents } from "../support/events-stream.ts";
import { listening } from "../support/listening.ts";
import { processesWithEnv } from "../support/sandbox.ts";
import { waitFor } from "../support/wait.ts";
import { ended, runPipeline } from "./run-cli.ts";

test.skipIf(!redisServerVersion())(
  "--cluster --chaos --dashboard: one page, every partition's workers and documents, the failover, the audit's counts at the end",
  async () => {
    const mark = randomUUID();
    // Batched, as a chaos run on the cluster usually is: one at a time, the partition whose
    // primary failed over would wait out WAIT's timeout on every write (no replica left).
    const run = runPipeline(
      [
        ...["--cluster", "--chaos", "--dashboard", "--docs", "150", "--workers", "3"],
        ...["--latency", "40", "--json"],
      ],
      mark,
    );
    const printed = await waitFor(() => /Dashboard http:\/\//.test(run.output.stderr), 60_000);
    expect(printed, run.output.stderr).toBe(true);
    const port = Number(/Dashboard http:\/\/127\.0\.0\.1:(\d+)\//.exec(run.output.stderr)?.[1]);
    const tab = openEvents(port);
    const hello = (await tab.next("hello")).data as {
      counters: { workers: { slot: string }[] };
      log: { text: string }[];
    };
    const tags = new Set(hello.counters.workers.map((w) => /^(\{p\d+\})\//.exec(w.slot)?.[1]));
    expect(tags.size, JSON.stringify(hello.counters.workers)).toBe(3);
    expect(tags.has(undefined)).toBe(false);
    await tab.next("snapshot");
    const end = (await tab.next("end")).data as Record<string, number | boolean>;

    const { code, audit, context } = await ended(run);
    expect(code, context).toBe(0);
    expect(end).toMatchObject({
      ok: true,
      accepted: audit.accepted,
      completed: audit.completed,
      deadLettered: audit.deadLettered,
      lost: 0,
      duplicated: 0,
    });
    // Snapshot and live statuses merged per document: every accepted one, of every partition.
    const latest = new Map<string, DocStatus>();
    for (const { event, data } of tab.seen) {
      const statuses =
        event === "snapshot"
          ? (data as DocStatus[])
          : event === "status"
            ? [data as DocStatus]
            : [];
      for (const status of statuses) latest.set(status.doc, status);
    }
    expect(latest.size).toBe(audit.accepted);
    // The chaos failover is in the page's log, whether the tab joined before or after it.
    const lines = [
      ...hello.log,
      ...tab.seen.filter((e) => e.event === "log").map((e) => e.data as { text: string }),
    ].map((line) => line.text);
    expect(
      lines.filter((text) => /serves slot/.test(text)),
      lines.join("\n"),
    ).toHaveLength(1);
    tab.close();
    expect(await listening(port), "the dashboard's port").toBe(false);
    expect(await waitFor(() => processesWithEnv(mark).length === 0, 10_000), "processes left").toBe(
      true,
    );
  },
  90_000,
);
