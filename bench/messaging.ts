/**
 * What the lessons' advice costs and buys, measured on the private server: PUBLISH fan-out
 * versus XADD, and consumer-group throughput by batch size (the COUNT of XREADGROUP).
 */
import { createClient } from "redis";
import { startPrivateServer } from "../src/redis/server.ts";
import { printTable, timed } from "./table.ts";

const MESSAGES = Number(process.env.BENCH_MESSAGES ?? 20_000);
const server = await startPrivateServer();
const client = createClient({ url: server.url });
await client.connect();

async function publishWith(subscribers: number) {
  const subs = await Promise.all(
    Array.from({ length: subscribers }, async () => {
      const sub = client.duplicate();
      await sub.connect();
      let received = 0;
      await sub.subscribe("bench:status", () => {
        received++;
      });
      return { sub, count: () => received };
    }),
  );
  const [, ms] = await timed(async () => {
    const sends: Promise<number>[] = [];
    for (let i = 0; i < MESSAGES; i++) sends.push(client.publish("bench:status", `{"doc":${i}}`));
    await Promise.all(sends);
    while (subs.some((s) => s.count() < MESSAGES)) await new Promise((r) => setTimeout(r, 5));
  });
  for (const s of subs) s.sub.destroy();
  return {
    operation: `PUBLISH to ${subscribers} subscriber(s)`,
    messages: MESSAGES,
    ms,
    "msg/s": (MESSAGES / ms) * 1000,
  };
}

async function xadd() {
  await client.del("bench:tasks");
  const [, ms] = await timed(async () => {
    const sends: Promise<string>[] = [];
    for (let i = 0; i < MESSAGES; i++)
      sends.push(client.xAdd("bench:tasks", "*", { doc: String(i) }));
    await Promise.all(sends);
  });
  return { operation: "XADD", messages: MESSAGES, ms, "msg/s": (MESSAGES / ms) * 1000 };
}

async function consume(count: number) {
  await client.del("bench:tasks");
  const adds: Promise<string>[] = [];
  for (let i = 0; i < MESSAGES; i++) adds.push(client.xAdd("bench:tasks", "*", { doc: String(i) }));
  await Promise.all(adds);
  await client.xGroupCreate("bench:tasks", "workers", "0");
  const [, ms] = await timed(async () => {
    let done = 0;
    while (done < MESSAGES) {
      const reply = await client.xReadGroup(
        "workers",
        "w1",
        { key: "bench:tasks", id: ">" },
        { COUNT: count },
      );
      const messages = reply?.[0]?.messages ?? [];
      if (messages.length === 0) break;
      await client.xAck(
        "bench:tasks",
        "workers",
        messages.map((m: { id: string }) => m.id),
      );
      done += messages.length;
    }
  });
  return {
    operation: `XREADGROUP COUNT ${count} + XACK`,
    messages: MESSAGES,
    ms,
    "msg/s": (MESSAGES / ms) * 1000,
  };
}

try {
  const rows = [await publishWith(1), await publishWith(3), await xadd()];
  for (const count of [1, 10, 100]) rows.push(await consume(count));
  printTable(
    `Messaging throughput (${MESSAGES} messages, private redis-server ${server.version})`,
    rows,
  );
} finally {
  client.destroy();
  await server.stop();
}
