// variant: A log class whose append is XADD then XTRIM MAXLEN ~ in one execAsPipeline(), pages by adding one to the sequence with BigInt, replies parsed from sendCommand
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

/** Go-style: a small log type with explicit methods. */
class AuditLog {
  constructor(
    private readonly client: Redis,
    private readonly key: string,
  ) {}

  async append(event: DocEvent, maxLen: number): Promise<string> {
    // XADD then XTRIM ~ in one pipeline round trip, on every append.
    const [id] = await this.client
      .multi()
      .xAdd(this.key, "*", { docId: event.docId, stage: event.stage, status: event.status })
      .xTrim(this.key, "MAXLEN", maxLen, { strategyModifier: "~" })
      .execAsPipeline();
    return String(id);
  }

  static nextId(id: string): string {
    // Older servers have no "(": add one to the sequence by hand.
    const [ms, seq] = id.split("-");
    return `${ms}-${BigInt(seq ?? "0") + 1n}`;
  }

  static decode(raw: unknown[]): LogEntry[] {
    const out: LogEntry[] = [];
    for (const item of raw) {
      const [id, fields] = item as [string, string[]];
      const map: Record<string, string> = {};
      for (let i = 0; i + 1 < fields.length; i += 2) map[fields[i] ?? ""] = fields[i + 1] ?? "";
      out.push({
        id,
        event: { docId: map.docId ?? "", stage: map.stage ?? "", status: map.status ?? "" },
      });
    }
    return out;
  }

  async page(after: string | null, count: number): Promise<LogEntry[]> {
    const start = after === null ? "-" : AuditLog.nextId(after);
    const raw = await this.client.sendCommand([
      "XRANGE",
      this.key,
      start,
      "+",
      "COUNT",
      String(count),
    ]);
    return AuditLog.decode((raw ?? []) as unknown as unknown[]);
  }

  async newest(count: number): Promise<LogEntry[]> {
    const raw = await this.client.sendCommand([
      "XREVRANGE",
      this.key,
      "+",
      "-",
      "COUNT",
      String(count),
    ]);
    return AuditLog.decode((raw ?? []) as unknown as unknown[]);
  }

  async expire(maxAgeMs: number): Promise<number> {
    const cutoff = Date.now() - maxAgeMs;
    return Number(await this.client.sendCommand(["XTRIM", this.key, "MINID", "=", String(cutoff)]));
  }
}

export function appendEvent(client: Redis, stream: string, event: DocEvent, maxLen: number) {
  return new AuditLog(client, stream).append(event, maxLen);
}
export function readPage(client: Redis, stream: string, after: string | null, count: number) {
  return new AuditLog(client, stream).page(after, count);
}
export function latest(client: Redis, stream: string, count: number) {
  return new AuditLog(client, stream).newest(count);
}
export function trimOlderThan(client: Redis, stream: string, maxAgeMs: number) {
  return new AuditLog(client, stream).expire(maxAgeMs);
}
