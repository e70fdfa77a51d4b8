// variant: Every command through sendCommand, replies parsed by hand, XTRIM MINID with an explicit "=".
import type { RedisClientType } from "redis";
export type Redis = RedisClientType<{}, {}, {}, 3, {}>;
export interface DocEvent {
  docId: string;
  stage: string;
  status: string;
}
export interface LogEntry {
  id: string;
  event: DocEvent;
}
type Raw = [string, string[]][];
function parse(raw: unknown): LogEntry[] {
  return ((raw as Raw | null) ?? []).map(([id, flat]) => {
    const m: Record<string, string> = {};
    for (let i = 0; i < flat.length; i += 2) m[String(flat[i])] = String(flat[i + 1]);
    return {
      id: String(id),
      event: { status: m.status ?? "", stage: m.stage ?? "", docId: m.docId ?? "" },
    };
  });
}
export async function appendEvent(
  client: Redis,
  stream: string,
  event: DocEvent,
  maxLen: number,
): Promise<string> {
  const id = await client.sendCommand([
    "XADD",
    stream,
    "MAXLEN",
    "~",
    String(maxLen),
    "*",
    "docId",
    event.docId,
    "stage",
    event.stage,
    "status",
    event.status,
  ]);
  return String(id);
}
export async function readPage(
  client: Redis,
  stream: string,
  after: string | null,
  count: number,
): Promise<LogEntry[]> {
  return parse(
    await client.sendCommand([
      "XRANGE",
      stream,
      after === null ? "-" : `(${after}`,
      "+",
      "COUNT",
      String(count),
    ]),
  );
}
export async function latest(client: Redis, stream: string, count: number): Promise<LogEntry[]> {
  return parse(await client.sendCommand(["XREVRANGE", stream, "+", "-", "COUNT", String(count)]));
}
export async function trimOlderThan(
  client: Redis,
  stream: string,
  maxAgeMs: number,
): Promise<number> {
  return Number(
    await client.sendCommand(["XTRIM", stream, "MINID", "=", String(Date.now() - maxAgeMs)]),
  );
}
