/**
 * Captures what Redis holds for a failed test (src/check/redis-state.ts shows it): the keys the
 * test named with key()/freshKey() and those the learner's commands touched, and only keys under
 * this run's prefix, so a run against a user's REDIS_URL never reads anything of theirs.
 */
import {
  CAPTURE,
  candidateKeys,
  type KeyState,
  type RedisState,
} from "../src/check/redis-state.ts";
import { newClient } from "../src/redis/client.ts";
import { ctx, namedKeys, type Redis } from "./kit.ts";
import { sent } from "./wire.ts";

/** Where the current test began: names and commands before it belong to earlier tests. */
let testStart = { named: 0, seq: 0 };
/** Names built while the check file loaded, before any test: every test may use them. */
let moduleNames: number | undefined;

export function markTestStart(): void {
  moduleNames ??= namedKeys.length;
  testStart = { named: namedKeys.length, seq: sent().at(-1)?.seq ?? 0 };
}

function entries(list: ({ id: string; message: Record<string, string> } | null)[] | null) {
  return (list ?? []).flatMap((e) => (e ? [{ id: e.id, fields: { ...e.message } }] : []));
}

async function streamState(redis: Redis, key: string): Promise<KeyState> {
  const info = await redis.xInfoStream(key);
  const first = await redis.xRange(key, "-", "+", { COUNT: CAPTURE.entries });
  const last = entries(await redis.xRevRange(key, "+", "-", { COUNT: CAPTURE.entries })).reverse();
  const groups = await redis.xInfoGroups(key);
  const shown = groups.slice(0, CAPTURE.groups);
  return {
    key,
    type: "stream",
    length: Number(info?.length ?? 0),
    lastId: String(info?.["last-generated-id"] ?? ""),
    first: entries(first),
    last,
    moreGroups: groups.length - shown.length,
    groups: await Promise.all(
      shown.map(async (g) => {
        const name = String(g.name);
        const entries = await redis.xPendingRange(key, name, "-", "+", CAPTURE.pending);
        return {
          name,
          lastDeliveredId: String(g["last-delivered-id"]),
          lag: typeof g.lag === "number" ? g.lag : null,
          pending: Number(g.pending),
          consumers: Number(g.consumers),
          entries: entries.map((p) => ({
            id: p.id,
            consumer: p.consumer,
            idleMs: p.millisecondsSinceLastDelivery,
            deliveries: p.deliveriesCounter,
          })),
        };
      }),
    ),
  };
}

async function keyState(redis: Redis, key: string, type: string): Promise<KeyState> {
  switch (type) {
    case "stream":
      return streamState(redis, key);
    case "hash": {
      const length = await redis.hLen(key);
      const fields: Record<string, string> = {};
      for await (const batch of redis.hScanIterator(key, { COUNT: CAPTURE.fields })) {
        for (const { field, value } of batch) {
          if (Object.keys(fields).length < CAPTURE.fields) fields[field] = value;
        }
        if (Object.keys(fields).length >= CAPTURE.fields) break;
      }
      return { key, type, fields, moreFields: length - Object.keys(fields).length };
    }
    case "string": {
      const value = (await redis.getRange(key, 0, CAPTURE.stringChars)) ?? "";
      const truncated = value.length > CAPTURE.stringChars;
      return { key, type, value: value.slice(0, CAPTURE.stringChars), truncated };
    }
    case "list":
      return { key, type, length: await redis.lLen(key) };
    case "set":
      return { key, type, length: await redis.sCard(key) };
    case "zset":
      return { key, type, length: await redis.zCard(key) };
    default:
      return { key, type, length: 0 };
  }
}

/** What Redis holds now for the current test; undefined when none of its keys exist. */
export async function captureState(): Promise<RedisState | undefined> {
  const named = [...namedKeys.slice(0, moduleNames ?? 0), ...namedKeys.slice(testStart.named)];
  const touched = sent((c) => c.seq > testStart.seq).map((c) => c.args.slice(1));
  const candidates = candidateKeys(named, touched, ctx.prefix);
  if (candidates.length === 0) return undefined;
  // The check's own name keeps this connection out of "what your code sent".
  const redis: Redis = newClient({
    url: ctx.redisUrl,
    name: `wb:check:state:${ctx.runId}`,
    socket: { reconnectStrategy: false, connectTimeout: 1000 },
  });
  redis.on("error", () => {});
  try {
    await redis.connect();
    const found: { key: string; type: string }[] = [];
    for (const key of candidates) {
      const type = await redis.type(key);
      if (type !== "none") found.push({ key, type: String(type) });
    }
    if (found.length === 0) return undefined;
    const shown = found.slice(0, CAPTURE.keys);
    const keys: KeyState[] = [];
    for (const { key, type } of shown) keys.push(await keyState(redis, key, type));
    return { keys, moreKeys: found.length - shown.length };
  } finally {
    redis.destroy();
  }
}
