/**
 * Pub/sub fan-out, the way the pipeline broadcasts status events: publish-to-receive latency
 * at a steady rate for 1, 10 and 50 subscribers, and the highest rate every subscriber still
 * receives in full. Publisher and subscribers share this one process (one connection each), so
 * the latencies include its event loop: a floor for what separate processes would see.
 *
 *   npm run bench -- pubsub-fanout     BENCH_FANOUT_RATE=1000 BENCH_FANOUT_SECONDS=3
 *   (also BENCH_FANOUT_SUBSCRIBERS=1,10,50 and BENCH_FANOUT_RATES=1000,2000,... for the ramp)
 */
import { setTimeout as sleep } from "node:timers/promises";
import { createClient } from "redis";
import { startPrivateServer } from "../src/redis/server.ts";
import { percentile, printTable } from "./table.ts";

const SUBSCRIBERS = (process.env.BENCH_FANOUT_SUBSCRIBERS ?? "1,10,50").split(",").map(Number);
const STEADY_RATE = Number(process.env.BENCH_FANOUT_RATE ?? 1_000);
const SECONDS = Number(process.env.BENCH_FANOUT_SECONDS ?? 3);
const RATES = (process.env.BENCH_FANOUT_RATES ?? "1000,2000,5000,10000,20000,50000,100000")
  .split(",")
  .map(Number);
/** How long a step may take to deliver its last messages before the missing ones count as lost. */
const GRACE_MS = 2_000;
const CHANNEL = "bench:events";
/** About the size of one of the pipeline's status events. */
const EVENT = JSON.stringify({ doc: "0123456789abcdef", stage: "classify", state: "done", at: 0 });

const server = await startPrivateServer();
const publisher = createClient({ url: server.url, name: "bench:publisher" });
await publisher.connect();

interface Step {
  sent: number;
  /** Messages per second the publisher actually got out. */
  achieved: number;
  /** Deliveries missing once the grace period was over, over all subscribers. */
  lost: number;
  latenciesMs: number[];
}

async function subscribe(count: number) {
  const received = new Array<number>(count).fill(0);
  let latenciesMs: number[] = [];
  // Late deliveries of an earlier step must not count for this one.
  let stepNo = 0;
  const subscribers = await Promise.all(
    received.map(async (_, i) => {
      const subscriber = publisher.duplicate();
      subscriber.on("error", () => {});
      await subscriber.connect();
      await subscriber.subscribe(CHANNEL, (message) => {
        const [step, sentAt] = message.split(" ", 2);
        if (Number(step) !== stepNo) return;
        received[i] = (received[i] ?? 0) + 1;
        latenciesMs.push(performance.now() - Number(sentAt));
      });
      return subscriber;
    }),
  );
  return {
    /** Publishes at `rate` for `seconds`, then waits for every delivery (or the grace period). */
    async step(rate: number, seconds: number): Promise<Step> {
      received.fill(0);
      latenciesMs = [];
      stepNo++;
      const start = performance.now();
      let sent = 0;
      let elapsed = 0;
      while (elapsed < seconds * 1000) {
        const due = Math.floor((rate * elapsed) / 1000) - sent;
        for (let k = 0; k < due; k++, sent++) {
          publisher.publish(CHANNEL, `${stepNo} ${performance.now()} ${EVENT}`).catch(() => {});
        }
        await sleep(1);
        elapsed = performance.now() - start;
      }
      await publisher.ping();
      const achieved = (sent / (performance.now() - start)) * 1000;
      const deadline = performance.now() + GRACE_MS;
      while (received.some((n) => n < sent) && performance.now() < deadline) await sleep(10);
      const lost = received.reduce((sum, n) => sum + (sent - n), 0);
      return { sent, achieved, lost, latenciesMs: latenciesMs.sort((a, b) => a - b) };
    },
    close: () => {
      for (const subscriber of subscribers) subscriber.destroy();
    },
  };
}

const rows: Record<string, string | number>[] = [];
try {
  for (const count of SUBSCRIBERS) {
    const fanout = await subscribe(count);
    try {
      const steady = await fanout.step(STEADY_RATE, SECONDS);
      // The highest rate the publisher kept up (95%) with every message delivered to everyone.
      let highest = 0;
      for (const rate of RATES) {
        const step = await fanout.step(rate, 1);
        if (step.lost > 0 || step.achieved < rate * 0.95) break;
        highest = rate;
      }
      rows.push({
        subscribers: count,
        "msg/s (steady)": STEADY_RATE,
        deliveries: steady.latenciesMs.length,
        lost: steady.lost,
        "p50 ms": percentile(steady.latenciesMs, 50),
        "p99 ms": percentile(steady.latenciesMs, 99),
        "max ms": steady.latenciesMs.at(-1) ?? 0,
        "highest msg/s, no loss": highest > 0 ? highest : `< ${RATES[0]}`,
      });
    } finally {
      fanout.close();
    }
  }
  printTable(
    `Pub/sub fan-out: publish-to-receive latency at ${STEADY_RATE} msg/s for ${SECONDS} s, then rates up to ${RATES.at(-1)} msg/s for 1 s each (redis-server ${server.version})`,
    rows,
  );
} finally {
  publisher.destroy();
  await server.stop();
}
