// variant: A StageWatch class; the pattern escaped character by character; PUBSUB NUMSUB and NUMPAT through sendCommand over the unique channels.
import type { RedisClientType } from "redis";

export type Redis = RedisClientType<{}, {}, {}, 3, {}>;
export interface StatusEvent {
  docId: string;
  stage: string;
  at: number;
}

const FAMILY = "docs:status:";
export const stageChannel = (prefix: string, stage: string) => prefix + FAMILY + stage;

const GLOB_SPECIAL = new Set(["*", "?", "[", "]", "\\"]);
export function allStagesPattern(prefix: string): string {
  let out = "";
  for (const ch of prefix) out += GLOB_SPECIAL.has(ch) ? `\\${ch}` : ch;
  return `${out}${FAMILY}*`;
}

class StageWatch {
  readonly pattern: string;
  private active = false;
  constructor(
    private readonly sub: Redis,
    prefix: string,
    private readonly onEvent: (channel: string, event: StatusEvent) => void,
  ) {
    this.pattern = allStagesPattern(prefix);
  }
  private readonly deliver = (message: string, channel: string): void => {
    let event: StatusEvent;
    try {
      event = JSON.parse(message);
    } catch {
      console.warn(`skipping non-JSON message on ${channel}`);
      return;
    }
    try {
      this.onEvent(channel, event);
    } catch (err) {
      console.warn(`onEvent failed for ${channel}:`, err);
    }
  };
  async start(): Promise<void> {
    await this.sub.pSubscribe(this.pattern, this.deliver);
    this.active = true;
  }
  readonly stop = async (): Promise<void> => {
    if (!this.active) return;
    this.active = false;
    await this.sub.pUnsubscribe(this.pattern, this.deliver);
  };
}

export async function watchAllStages(
  subscriber: Redis,
  prefix: string,
  onEvent: (channel: string, event: StatusEvent) => void,
): Promise<() => Promise<void>> {
  const watch = new StageWatch(subscriber, prefix, onEvent);
  await watch.start();
  return watch.stop;
}

export async function countSubscribers(client: Redis, channels: string[]) {
  const unique = [...new Set(channels)];
  const reply = (await client.sendCommand(["PUBSUB", "NUMSUB", ...unique])) as unknown[];
  const byName = new Map<string, number>();
  for (let i = 0; i + 1 < reply.length; i += 2) byName.set(String(reply[i]), Number(reply[i + 1]));
  const channelsOut: Record<string, number> = {};
  for (const c of channels) channelsOut[c] = byName.get(c) ?? 0;
  const patterns = Number(await client.sendCommand(["PUBSUB", "NUMPAT"]));
  return { channels: channelsOut, patterns };
}
