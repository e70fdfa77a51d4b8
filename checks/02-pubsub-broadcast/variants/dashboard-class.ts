// variant: A Dashboard class; PUBLISH through sendCommand; stop() closes without unsubscribing first.
import type { RedisClientType } from "redis";
export type Redis = RedisClientType<{}, {}, {}, 3, {}>;
export type Stage = "uploaded" | "ocr" | "ner" | "classification" | "embedding" | "done";
export interface StatusEvent {
  docId: string;
  stage: Stage;
  at: number;
}
export async function publishStatus(
  client: Redis,
  channel: string,
  event: StatusEvent,
): Promise<number> {
  const n = await client.sendCommand(["PUBLISH", channel, JSON.stringify(event)]);
  return Number(n);
}
class Dashboard {
  private sub: Redis;
  constructor(
    client: Redis,
    private channel: string,
    private onEvent: (e: StatusEvent) => void,
  ) {
    this.sub = client.duplicate({ name: `dash-${Math.random().toString(36).slice(2, 8)}` });
    this.sub.on("error", (err) => console.warn("dashboard", err));
  }
  private listener = (message: string) => {
    try {
      this.onEvent(JSON.parse(message));
    } catch (err) {
      console.warn("dashboard render", err);
    }
  };
  async open() {
    await this.sub.connect();
    try {
      await this.sub.subscribe(this.channel, this.listener);
    } catch (error) {
      this.sub.destroy();
      throw error;
    }
    return this;
  }
  stop = async () => {
    await this.sub.close();
  };
}
export async function openDashboard(
  client: Redis,
  channel: string,
  onEvent: (event: StatusEvent) => void,
): Promise<() => Promise<void>> {
  const d = await new Dashboard(client, channel, onEvent).open();
  return d.stop;
}
