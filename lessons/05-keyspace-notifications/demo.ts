/**
 * Demo for lesson 05: two workers take leases; one keeps renewing, one stalls. Redis announces
 * the stalled lease's expiry on __keyevent@<db>__:expired. Run it with `npm run demo -- 05`.
 */
import kleur from "kleur";
import { createClient, type RedisClientType } from "redis";

type Redis = RedisClientType<{}, {}, {}, 3, {}>;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const RENEW = `
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0`;

export default async function demo(redisUrl: string, prefix: string): Promise<void> {
  if (process.env.REDIS_URL) {
    console.log(
      "This demo turns on keyspace notifications with CONFIG SET, which it only does on the\nworkbook's private server. Unset REDIS_URL to run it.",
    );
    return;
  }
  const started = Date.now();
  const log = (who: string, text: string) =>
    console.log(`${kleur.dim(`${String(Date.now() - started).padStart(5)} ms`)}  ${who}  ${text}`);
  const redis: Redis = createClient({ url: redisUrl, name: "demo:workers" });
  redis.on("error", (error: Error) => console.error(kleur.red(error.message)));
  await redis.connect();
  const watcher = redis.duplicate({ name: "demo:lease-watcher" });
  watcher.on("error", (error: Error) => console.error(kleur.red(error.message)));
  const leases = `${prefix}lease:`;
  const [original = ""] = Object.values(await redis.configGet("notify-keyspace-events"));
  try {
    await redis.configSet("notify-keyspace-events", `${original}Ex`);
    const db = redis.options?.database ?? 0;
    const channel = `__keyevent@${db}__:expired`;
    await watcher.connect();
    await watcher.subscribe(channel, (expiredKey) => {
      if (!expiredKey.startsWith(leases)) return;
      const docId = expiredKey.slice(leases.length);
      log(
        kleur.red().bold("watcher "),
        `${expiredKey} expired: ${docId} stalled, back to the queue`,
      );
    });
    log(
      kleur.cyan().bold("watcher "),
      `CONFIG SET notify-keyspace-events Ex; SUBSCRIBE ${channel}`,
    );

    const take = async (worker: string, docId: string, ttl: number) => {
      const ok = await redis.set(`${leases}${docId}`, worker, {
        condition: "NX",
        expiration: { type: "PX", value: ttl },
      });
      log(kleur.bold(worker.padEnd(8)), `SET ${leases}${docId} ${worker} PX ${ttl} NX → ${ok}`);
    };
    await take("ocr-1", "contract-17", 800);
    await take("ocr-2", "nda-4", 800);
    const stolen = await redis.set(`${leases}nda-4`, "ocr-3", {
      condition: "NX",
      expiration: { type: "PX", value: 800 },
    });
    log(kleur.bold("ocr-3   "), `SET ${leases}nda-4 ocr-3 PX 800 NX → ${stolen} (already held)`);
    log(
      kleur.yellow().bold("ocr-2   "),
      kleur.yellow("stalls: a stuck OCR call, no more renewals"),
    );

    for (let i = 0; i < 6; i++) {
      await sleep(300);
      const renewed = await redis.eval(RENEW, {
        keys: [`${leases}contract-17`],
        arguments: ["ocr-1", "800"],
      });
      log(kleur.bold("ocr-1   "), `renews contract-17 → ${renewed === 1 ? "extended" : "lost"}`);
    }
    log(
      kleur.green().bold("ocr-1   "),
      "finishes contract-17 and deletes its lease (DEL fires no expired event)",
    );
    await redis.del(`${leases}contract-17`);
    await sleep(200);
    console.log(
      kleur.dim(
        "\nThe event comes when Redis notices the expiry (active expiry runs about 10 times a second),\nand like all pub/sub it reaches only a watcher that is listening at that moment.",
      ),
    );
  } finally {
    await redis.configSet("notify-keyspace-events", original).catch(() => {});
    if (watcher.isOpen) await watcher.close();
    await redis.close();
  }
}
