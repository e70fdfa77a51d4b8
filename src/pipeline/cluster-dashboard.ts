/**
 * `--cluster --dashboard`: one page for every partition. Each partition's run joins with its
 * Redis (its relay), keys, workers and uploads; once all have joined, the dashboard starts with
 * a subscriber on each partition's channel, and each run gets a stand-in that forwards its
 * worker events. The cluster run, not a partition, ends the page: with the combined audit, once
 * every partition is done.
 */
import type { Audit } from "./audit.ts";
import { type Dashboard, type DashboardPartition, startDashboard } from "./dashboard/index.ts";

export interface ClusterDashboard {
  /** For partition `index` (its tag `tag`): what its runPipeline calls instead of starting one. */
  join(index: number, tag: string): (part: Omit<DashboardPartition, "tag">) => Promise<Dashboard>;
  /** The page's URL, once every partition has joined. */
  started: Promise<string>;
  /** A failover or a relay that moved, in the page's log (once the page is up). */
  note(text: string): void;
  finish(audit: Audit): Promise<void>;
  close(): Promise<void>;
}

export function clusterDashboard(options: {
  partitions: number;
  port: number;
  signal: AbortSignal;
}): ClusterDashboard {
  const joined = new Map<number, DashboardPartition>();
  let starting: Promise<Dashboard> | undefined;
  let resolveAll: (dashboard: Dashboard) => void = () => {};
  let rejectAll: (error: Error) => void = () => {};
  const whole = new Promise<Dashboard>((resolve, reject) => {
    resolveAll = resolve;
    rejectAll = reject;
  });
  // A partition that failed before joining must not leave the others waiting.
  const abandon = () => rejectAll(new Error("stopped"));
  options.signal.addEventListener("abort", abandon, { once: true });
  whole.catch(() => {});
  whole.finally(() => options.signal.removeEventListener("abort", abandon)).catch(() => {});
  return {
    join: (index, tag) => async (part) => {
      joined.set(index, { ...part, tag });
      if (joined.size === options.partitions) {
        const partitions = [...joined].sort(([a], [b]) => a - b).map(([, p]) => p);
        starting = startDashboard({
          port: options.port,
          clientName: "pipeline:dashboard-",
          partitions,
        });
        starting.then(resolveAll, rejectAll);
      }
      const dashboard = await whole;
      return {
        url: dashboard.url,
        named: (id, name) => dashboard.named(id, name),
        workerEvent: (event) => dashboard.workerEvent(event, index),
        redisRestart: (phase) => dashboard.redisRestart(phase),
        clusterEvent: (text) => dashboard.clusterEvent(text),
        // The cluster run finishes and closes the page for all partitions.
        finish: async () => {},
        close: async () => {},
      };
    },
    started: whole.then((d) => d.url),
    note(text) {
      whole.then(
        (d) => d.clusterEvent(text),
        () => {},
      );
    },
    async finish(audit) {
      await (await whole).finish(audit);
    },
    async close() {
      // Started even if the run was stopped meanwhile: then it is closed here all the same.
      const dashboard = await starting?.catch(() => undefined);
      await dashboard?.close();
    },
  };
}
